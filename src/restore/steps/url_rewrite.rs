//! url-rewrite: the site's address rewritten everywhere in the restored
//! database (serialised PHP and JSON safe).

use crate::exit::ExitCode;
use crate::restore::plan::StepKind;
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
    // The load rewrote the rows as it inserted them: report that, and cover
    // here only the tables it could not read.
    if let Some(done) = env
        .earlier
        .get(&StepKind::DatabaseLoad)
        .and_then(|s| s.get("url_rewrite"))
        .filter(|r| !r.is_null())
    {
        return after_stream(env, new, done).await;
    }
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
    let olds = addresses(olds, new);
    let mut tables = BTreeSet::new();
    let (changed, unparseable) = rewrite_after_load(env, &olds, new, None, &mut tables).await?;
    Ok(json!({
        "rewritten": true,
        "from": olds,
        "to": new,
        "rows_changed": changed,
        "rows_unparseable": unparseable,
        "tables": tables,
    }))
}

/// The site's old addresses, `home` first, without a trailing `/`, each
/// once, leaving out the new one.
pub(super) fn addresses(values: Vec<String>, new: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for old in values {
        let old = old.trim_end_matches('/').to_string();
        if !old.is_empty() && old != new && !out.contains(&old) {
            out.push(old);
        }
    }
    out
}

/// The set's own `home` and `siteurl` (read from its options table's
/// artifacts, before anything is loaded), as [`addresses`] orders them.
pub(super) async fn addresses_in_set(
    env: &StepEnv<'_>,
    new: &str,
) -> Result<Vec<String>, StepError> {
    let options = format!("{}options", env.ctx.cfg.database.table_prefix);
    let Some(table) = env
        .manifest
        .database
        .as_ref()
        .and_then(|d| d.tables.iter().find(|t| t.name == options))
    else {
        return Ok(Vec::new());
    };
    let (mut home, mut siteurl) = (None, None);
    crate::mysql::load::set_rows(
        &env.ctx.store,
        &env.catalog.key(&env.manifest.set_id, ""),
        table,
        &env.manifest.artifacts,
        |columns, values| {
            let at = |name: &str| columns.iter().position(|c| c == name);
            let (Some(n), Some(v)) = (at("option_name"), at("option_value")) else {
                return;
            };
            let value = values[v].map(|v| String::from_utf8_lossy(v).into_owned());
            match values[n] {
                Some(b"home") => home = value,
                Some(b"siteurl") => siteurl = value,
                _ => {}
            }
        },
    )
    .await
    .map_err(StepError::from)?;
    Ok(addresses(home.into_iter().chain(siteurl).collect(), new))
}

/// The rewrite after the load, one pass per old address (of `only` tables
/// when given); adds the tables it changed to `tables`.
async fn rewrite_after_load(
    env: &StepEnv<'_>,
    olds: &[String],
    new: &str,
    only: Option<&BTreeSet<String>>,
    tables: &mut BTreeSet<String>,
) -> Result<(u64, u64), StepError> {
    let (endpoint, database) = env.database()?;
    let (mut changed, mut unparseable) = (0, 0);
    for old in olds {
        let r = crate::wordpress::search_replace::rewrite_database(
            endpoint, database, old, new, false, only,
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
    Ok((changed, unparseable))
}

/// The load rewrote the rows: its report, and the rewrite after the load
/// for the tables whose statements it could not read. Those had some rows
/// rewritten already; a second pass would rewrite them again only when the
/// new address contains an old one, so then they are reported instead.
async fn after_stream(
    env: &StepEnv<'_>,
    new: &str,
    done: &serde_json::Value,
) -> Result<serde_json::Value, StepError> {
    let olds: Vec<String> = serde_json::from_value(done["from"].clone()).unwrap_or_default();
    let mut tables: BTreeSet<String> =
        serde_json::from_value(done["tables"].clone()).unwrap_or_default();
    let not_read: BTreeSet<String> =
        serde_json::from_value(done["not_read"].clone()).unwrap_or_default();
    let mut changed = done["rows_changed"].as_u64().unwrap_or(0);
    let mut unparseable = done["rows_unparseable"].as_u64().unwrap_or(0);
    env.log.line(format!(
        "{} -> {new}: rewritten as the rows were loaded: {changed} rows changed, {unparseable} could not be parsed (left as they were)",
        olds.join(", ")
    ));
    let mut left = Vec::new();
    if !not_read.is_empty() {
        if olds.iter().any(|old| new.contains(old.as_str())) {
            left = not_read.iter().cloned().collect();
            env.log.line(format!(
                "NOT REWRITTEN: tables {} hold statements the load could not read, and a second pass would rewrite their other rows again (the new address contains the old one); run `wpdr rewrite-url` on them by hand",
                left.join(", ")
            ));
        } else {
            env.log.line(format!(
                "tables {} hold statements the load could not read: rewritten now",
                not_read.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
            let (c, u) = rewrite_after_load(env, &olds, new, Some(&not_read), &mut tables).await?;
            changed += c;
            unparseable += u;
        }
    }
    Ok(json!({
        "rewritten": true,
        "in_load": true,
        "from": olds,
        "to": new,
        "rows_changed": changed,
        "rows_unparseable": unparseable,
        "tables": tables,
        "not_rewritten": left,
    }))
}
