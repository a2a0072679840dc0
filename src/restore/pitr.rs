//! A point-in-time database restore's two decisions, apart from who asks
//! for them: which set and which archived segments reach the point
//! ([`choose`]), and the replay of exactly the chosen transactions onto the
//! loaded set ([`replay`]). The order — choose, check the tools, load,
//! replay, seed replicas — is the job's (`jobs::restore`).

use super::RestoreError;
use crate::binlog::replay::{self, PitrPlan, Point, ReplayReport, ScratchDir};
use crate::catalog::{Catalog, Manifest};
use crate::mysql::Endpoint;
use crate::store::Store;

/// The set to load and, with a point, the replay plan that reaches it.
/// `set` is an id or `latest`; with a point, `latest` means the newest set
/// from which the archive reaches the point without a gap.
pub async fn choose(
    catalog: &Catalog<'_>,
    store: &Store,
    site_prefix: &str,
    set: &str,
    point: Option<&Point>,
) -> Result<(Manifest, Option<PitrPlan>), RestoreError> {
    let Some(point) = point else {
        return Ok((catalog.resolve(set).await?, None));
    };
    let named = if set == "latest" {
        None
    } else {
        Some(catalog.resolve(set).await?)
    };
    let sets = catalog.list().await?;
    let plan = replay::plan(store, site_prefix, &sets, named.as_ref(), point).await?;
    Ok((plan.set.clone(), Some(plan)))
}

/// Replays the plan's transactions of `source_db` into `database` on
/// `target`, which holds the plan's set, loaded and checked.
pub async fn replay(
    store: &Store,
    site_prefix: &str,
    plan: &PitrPlan,
    source_db: &str,
    target: &Endpoint,
    database: &str,
) -> Result<ReplayReport, RestoreError> {
    let started = std::time::Instant::now();
    let scratch = ScratchDir::new()?;
    let mut report = ReplayReport::default();
    let files =
        replay::select(store, site_prefix, plan, source_db, &scratch.0, &mut report).await?;
    replay::apply(&files, &scratch.0, target, source_db, database).await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
