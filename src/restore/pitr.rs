//! A point-in-time database restore's two decisions, apart from who asks
//! for them: which set and which archived segments reach the point
//! ([`choose`]), and the replay of exactly the chosen transactions onto the
//! loaded set ([`replay`]), logged by the target only where that cannot
//! rewind its own GTID history. The order — choose, check the tools, load,
//! replay, seed replicas — is the job's (`jobs::restore`).

use super::RestoreError;
use crate::binlog::replay::{self, PitrPlan, Point, ReplayReport, ScratchDir};
use crate::catalog::{Catalog, Manifest, SetSummary};
use crate::mysql::gtid::GtidPos;
use crate::mysql::query_err;
use crate::mysql::Endpoint;
use crate::store::Store;
use mysql_async::prelude::Queryable;

/// The set to load and, with a point, the replay plan that reaches it.
/// `set` is an id or `latest`; with a point, `latest` means the newest set
/// from which the archive reaches the point without a gap.
pub async fn choose(
    catalog: &Catalog<'_>,
    store: &Store,
    archive_prefix: &str,
    set: &str,
    point: Option<&Point>,
) -> Result<(Manifest, Option<PitrPlan>), RestoreError> {
    let Some(point) = point else {
        return Ok((catalog.resolve_readable(set).await?, None));
    };
    let named = if set == "latest" {
        None
    } else {
        Some(SetSummary::from(&catalog.resolve_readable(set).await?))
    };
    let sets = catalog.summaries().await?;
    let plan = replay::plan(store, archive_prefix, &sets, named.as_ref(), point).await?;
    Ok((catalog.resolve_readable(&plan.set_id).await?, Some(plan)))
}

/// Replays the plan's transactions of `source_db` into `database` on
/// `target`, which holds the plan's set, loaded and checked.
pub async fn replay(
    store: &Store,
    archive_prefix: &str,
    plan: &PitrPlan,
    source_db: &str,
    target: &Endpoint,
    database: &str,
) -> Result<ReplayReport, RestoreError> {
    let started = std::time::Instant::now();
    let scratch = ScratchDir::new()?;
    let mut report = ReplayReport::default();
    let files = replay::select(
        store,
        archive_prefix,
        plan,
        source_db,
        &scratch.0,
        &mut report,
    )
    .await?;
    // Applied without being logged where logging would rewind the server's
    // own GTID history (see `replay::logging_for`).
    let (log_bin, server_pos) = binlog_state(target).await?;
    match replay::logging_for(log_bin, &server_pos, &report.first) {
        Ok(()) => report.logged = log_bin,
        Err(why) => {
            tracing::info!(target = %target.display(), %why, "the replay is applied without being logged");
            report.not_logged_because = Some(why);
        }
    }
    let disable_log_bin = report.not_logged_because.is_some();
    replay::apply(
        &files,
        &scratch.0,
        target,
        source_db,
        database,
        disable_log_bin,
    )
    .await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Whether the target logs (`@@log_bin`) and where its own history is
/// (`@@gtid_binlog_pos`).
async fn binlog_state(target: &Endpoint) -> Result<(bool, GtidPos), RestoreError> {
    let mut c = target.connect(None).await?;
    let row: Option<(u8, String)> = c
        .query_first("SELECT @@global.log_bin, @@global.gtid_binlog_pos")
        .await
        .map_err(|e| query_err("reading the target's binary log state", e))?;
    let _ = c.disconnect().await;
    let (log_bin, pos) = row.unwrap_or((0, String::new()));
    let pos = GtidPos::parse(&pos).map_err(|detail| crate::mysql::MysqlError::Query {
        doing: "reading the target's gtid_binlog_pos".into(),
        detail,
    })?;
    Ok((log_bin == 1, pos))
}
