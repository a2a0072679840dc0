//! url-rewrite: the site's address rewritten everywhere in the restored
//! database (serialised PHP and JSON safe).

use crate::exit::ExitCode;
use crate::restore::step::{StepEnv, StepError};
use mysql_async::prelude::Queryable;
use serde_json::json;
use std::collections::BTreeSet;

pub(super) async fn run(env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    let Some(new) = env.targets.site_url.as_deref() else {
        env.log
            .line("no --site-url and no restore.site_url: the site keeps its address");
        return Ok(json!({"rewritten": false}));
    };
    let (endpoint, database) = env.database()?;
    let prefix = &env.ctx.cfg.database.table_prefix;
    let mut c = endpoint
        .connect(Some(database))
        .await
        .map_err(StepError::from)?;
    let q = format!(
        "SELECT option_value FROM `{prefix}options` WHERE option_name IN ('home', 'siteurl') ORDER BY option_name = 'home' DESC"
    );
    let olds: Vec<String> = c.query(q).await.map_err(|e| {
        StepError::new(
            format!("reading home/siteurl from {prefix}options: {e}"),
            ExitCode::Database,
        )
    })?;
    let _ = c.disconnect().await;
    let mut seen = BTreeSet::new();
    let mut tables = BTreeSet::new();
    let mut changed = 0u64;
    let mut unparseable = 0u64;
    for old in olds {
        let old = old.trim_end_matches('/').to_string();
        if old.is_empty() || old == new || !seen.insert(old.clone()) {
            continue;
        }
        let r = crate::wordpress::search_replace::rewrite_database(
            endpoint, database, &old, new, false,
        )
        .await
        .map_err(StepError::from)?;
        env.log.line(format!(
            "{old} -> {new}: {} rows changed, {} could not be parsed (left as they were)",
            r.rows_changed, r.rows_unparseable
        ));
        for col in &r.columns {
            if col.changed > 0 {
                tables.insert(col.table.clone());
            }
            for row in &col.unparseable_rows {
                env.log
                    .line(format!("UNPARSEABLE {}.{} {row}", col.table, col.column));
            }
        }
        changed += r.rows_changed;
        unparseable += r.rows_unparseable;
    }
    Ok(json!({
        "rewritten": true,
        "from": seen.into_iter().collect::<Vec<_>>(),
        "to": new,
        "rows_changed": changed,
        "rows_unparseable": unparseable,
        "tables": tables,
    }))
}
