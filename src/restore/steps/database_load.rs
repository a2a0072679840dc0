//! database-load: the set's database loaded into the target and every table
//! compared with the set (rows + checksums) before anything else touches it.

use crate::exit::ExitCode;
use crate::mysql::load::LoadOptions;
use crate::mysql::stream_rewrite::ValueRewrite;
use crate::restore::plan::StepKind;
use crate::restore::restore_db;
use crate::restore::step::{StepEnv, StepError};
use crate::wordpress::rewrite::UrlRewrites;
use serde_json::json;
use std::sync::Arc;

pub(super) async fn run(env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    let (endpoint, database) = env.database()?;
    // A new address is written as the rows go in (not by rewriting them
    // after), unless a replay follows: its transactions carry the old one.
    let mut addresses = Vec::new();
    let mut rewrite: Option<Arc<dyn ValueRewrite>> = None;
    if let (Some(new), None, true) = (
        env.targets.site_url.as_deref(),
        env.pitr,
        env.kinds.contains(&StepKind::UrlRewrite),
    ) {
        // A set whose options cannot be read here still restores: the
        // rewrite then runs after the load, reading them from the database.
        addresses = match super::url_rewrite::addresses_in_set(env, new).await {
            Ok(a) => a,
            Err(e) => {
                env.log.line(format!(
                    "the site's address could not be read from the set ({}): it is rewritten after the load",
                    e.message
                ));
                Vec::new()
            }
        };
        if let Some(r) = UrlRewrites::new(&addresses, new) {
            env.log.line(format!(
                "{} -> {new}: rewritten as the rows are loaded",
                addresses.join(", ")
            ));
            rewrite = Some(Arc::new(r));
        }
    }
    let opts = LoadOptions {
        connections: env.ctx.cfg.database.connections,
        // A database this restore started loading before is its own to replace.
        force: env.resumed,
        defer_indexes: true,
        load_data: true,
        rewrite: rewrite.clone(),
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
    let url_rewrite = rewrite.map(|_| rewrite_summary(env, &report, &addresses));
    Ok(json!({
        "database": database,
        "tables": report.tables.len(),
        "rows": rows,
        "statements": report.statements,
        "objects": report.objects_created,
        "url_rewrite": url_rewrite,
        // What the tables the rewrite changed were verified as (the checks
        // compare with this, not with the set).
        "checksums_at_load": report
            .tables
            .iter()
            .filter(|t| t.rewritten_rows.is_some())
            .map(|t| (t.table.clone(), t.found_checksum.clone()))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "point_in_time": env.pitr.map(|p| json!({
            "point": p.point,
            "replayed": replayed,
        })),
    }))
}

/// What the load's rewrite did, for the journal and the url-rewrite step
/// (counted per column, as the rewrite after a load counts), with every
/// value it could not rewrite and every table it could not read logged.
fn rewrite_summary(
    env: &StepEnv<'_>,
    report: &crate::mysql::load::LoadReport,
    addresses: &[String],
) -> serde_json::Value {
    let mut tables = Vec::new();
    let mut not_read = Vec::new();
    let (mut changed, mut unparseable) = (0u64, 0u64);
    for t in &report.rewritten {
        if t.rows_changed > 0 {
            tables.push(t.table.clone());
        }
        for c in &t.columns {
            changed += c.changed;
            unparseable += c.unparseable;
            for row in &c.unparseable_rows {
                env.log
                    .line(format!("UNPARSEABLE {}.{} {row}", t.table, c.column));
            }
        }
        if let Some(why) = &t.not_read {
            env.log.line(format!(
                "table {}: a statement the load could not read ({why}); the url-rewrite step covers the table",
                t.table
            ));
            not_read.push(t.table.clone());
        }
    }
    json!({
        "from": addresses,
        "to": env.targets.site_url,
        "rows_changed": changed,
        "rows_unparseable": unparseable,
        "tables": tables,
        "not_read": not_read,
    })
}
