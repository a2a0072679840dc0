//! database-load: the set's database loaded into the target and every table
//! compared with the set (rows + checksums) before anything else touches it.

use crate::exit::ExitCode;
use crate::mysql::load::LoadOptions;
use crate::restore::restore_db;
use crate::restore::step::{StepEnv, StepError};
use serde_json::json;
use std::sync::Arc;

pub(super) async fn run(env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    let (endpoint, database) = env.database()?;
    let opts = LoadOptions {
        connections: env.ctx.cfg.database.connections,
        // A database this restore started loading before is its own to replace.
        force: env.resumed,
        defer_indexes: true,
    };
    if env.resumed {
        env.log.line(format!(
            "an earlier attempt started this load: '{database}' is dropped and loaded again"
        ));
    }
    let report = restore_db(
        env.catalog,
        env.ctx.store.clone(),
        env.manifest,
        endpoint,
        database,
        &opts,
        Arc::new(|_| {}),
    )
    .await
    .map_err(StepError::from)?;
    let bad = report.mismatches();
    for t in &bad {
        env.log.line(format!(
            "MISMATCH {}: rows {} (expected {}), checksum {} (expected {})",
            t.table, t.found_rows, t.expected_rows, t.found_checksum, t.expected_checksum
        ));
    }
    let rows: u64 = report.tables.iter().map(|t| t.found_rows).sum();
    env.log.line(format!(
        "loaded {} tables, {rows} rows into '{database}' on {}",
        report.tables.len(),
        endpoint.display()
    ));
    // The set matches: now the archived transactions after it, up to the point.
    let replayed = match env.pitr {
        Some(plan) if bad.is_empty() => {
            let section =
                env.manifest.database.as_ref().ok_or_else(|| {
                    StepError::new("the set holds no database", ExitCode::Integrity)
                })?;
            let r = crate::restore::pitr::replay(
                &env.ctx.store,
                &env.ctx.cfg.binlog_prefix(),
                plan,
                &section.database,
                endpoint,
                database,
            )
            .await
            .map_err(StepError::from)?;
            env.log.line(format!(
                "replayed the binlog archive from the set to {}: {} transaction(s) from {} segment(s){}",
                plan.point,
                r.transactions,
                r.segments,
                r.not_logged_because
                    .as_deref()
                    .map(|why| format!(", not logged on the target ({why})"))
                    .unwrap_or_default()
            ));
            Some(r)
        }
        _ => None,
    };
    if !bad.is_empty() {
        return Err(StepError::new(
            format!(
                "{} table(s) differ from the set after loading: {}",
                bad.len(),
                bad.iter()
                    .map(|t| t.table.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ExitCode::RestoreMismatch,
        ));
    }
    Ok(json!({
        "database": database,
        "tables": report.tables.len(),
        "rows": rows,
        "statements": report.statements,
        "objects": report.objects_created,
        "point_in_time": env.pitr.map(|p| json!({
            "point": p.point,
            "replayed": replayed,
        })),
    }))
}
