//! The backup job: what happens, in what order. Data movement lives in
//! `mysql` and `store`; this module holds the lock, names the set, and writes
//! the manifest last so that only a finished run produces a set.

use crate::catalog::{
    manifest::{ReadFrom, SiteSection},
    new_set_id, Artifact, Catalog, CatalogError, ClusterSection, FailedPart, Fence, Manifest,
    MediaSection, FORMAT_VERSION,
};
use crate::cluster::{inventory, seal, ClusterError};
use crate::config::Config;
use crate::exit::{Classify, ExitCode};
use crate::media::mirror::{Mirror, MirrorOptions, MirrorReport};
use crate::media::MediaError;
use crate::mysql::dump::{self, DumpOptions, Progress};
use crate::mysql::{Endpoint, MysqlError};
use crate::store::Store;
use crate::wordpress::answers;
use bytes::Bytes;
use chrono::Utc;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Mysql(#[from] MysqlError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Media(#[from] MediaError),
}

impl Classify for BackupError {
    fn exit_code(&self) -> ExitCode {
        match self {
            BackupError::Catalog(e) => e.exit_code(),
            BackupError::Mysql(e) => e.exit_code(),
            BackupError::Cluster(e) => e.exit_code(),
            BackupError::Media(e) => e.exit_code(),
        }
    }
    fn metric_label(&self) -> &'static str {
        match self {
            BackupError::Catalog(e) => e.metric_label(),
            BackupError::Mysql(e) => e.metric_label(),
            BackupError::Cluster(e) => e.metric_label(),
            BackupError::Media(e) => e.metric_label(),
        }
    }
}

/// The backup job: one set of the configured site; returns its committed manifest.
pub async fn backup(ctx: &super::JobContext, schedule: &str) -> Result<Manifest, super::JobError> {
    let manifest = ctx
        .cancellable(run(
            &ctx.cfg,
            ctx.store.clone(),
            schedule,
            ctx.progress.dump_sink(),
        ))
        .await?;
    // A site on a shared server archive claims the transactions its sets may
    // replay, before the archive's prune could take them.
    if let Some(archive) = &ctx.cfg.database.binlog.shared {
        let sets = ctx.catalog().summaries().await?;
        if let Err(e) = super::binlog_prune::renew_claim(ctx, archive, &sets, false).await {
            tracing::error!(set = %manifest.set_id, error = %e, "the set is committed, but its claim on the shared binlog archive was not written");
            return Err(e);
        }
    }
    Ok(manifest)
}

impl super::JobReport for Manifest {
    fn verdict(&self) -> super::Verdict {
        if self.failed_parts.is_empty() {
            return super::Verdict::ok(self.total_bytes(), self.artifacts.len() as u64);
        }
        let mut v = super::Verdict::failed(
            ExitCode::Partial,
            "partial",
            format!(
                "set {} committed without {}",
                self.set_id,
                self.failed_parts
                    .iter()
                    .map(|p| format!("{} ({})", p.part, p.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        );
        v.bytes = self.total_bytes();
        v.objects = self.artifacts.len() as u64;
        v
    }
}

/// A part that failed after the database was taken: recorded in the set
/// instead of discarding the database with it.
fn failed_part(part: &str, e: &BackupError) -> FailedPart {
    tracing::error!(part, error = %e, exit_code = e.exit_code().code(), "a part of the backup failed; the set is committed without it (partial)");
    FailedPart {
        part: part.to_string(),
        reason: e.to_string(),
        exit_code: e.exit_code().code(),
    }
}

/// What a backup would read: `backup --dry-run`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupPlan {
    pub dry_run: bool,
    pub site: String,
    pub server_version: String,
    pub database: String,
    pub connections: usize,
    pub tables: Vec<dump::PlannedTable>,
    /// The tables and sequences `database.skip` leaves out.
    pub skipped: Vec<crate::catalog::SkippedObject>,
}

/// Connects and lists the tables a backup would take, with sizes and how
/// each is split; writes nothing.
pub async fn plan(ctx: &super::JobContext) -> Result<BackupPlan, super::JobError> {
    ctx.cancellable(plan_inner(ctx)).await
}

async fn plan_inner(ctx: &super::JobContext) -> Result<BackupPlan, super::JobError> {
    let cfg = &ctx.cfg;
    let endpoint = Endpoint::from_config(&cfg.database);
    let mut conn = endpoint.connect(Some(&cfg.database.name)).await?;
    let server_version = crate::mysql::server_version(&mut conn).await?;
    let (tables, skipped) =
        dump::plan_tables(&mut conn, &cfg.database.name, &cfg.database.skip).await?;
    Ok(BackupPlan {
        dry_run: true,
        site: cfg.site.clone(),
        server_version,
        database: cfg.database.name.clone(),
        connections: cfg.database.connections,
        tables,
        skipped,
    })
}

/// Runs one backup of the configured site and returns the committed manifest.
pub async fn run(
    cfg: &Config,
    store: Arc<Store>,
    schedule: &str,
    progress: Progress,
) -> Result<Manifest, BackupError> {
    // Without a client the cluster part fails alone (the set says so); the
    // database is still taken.
    let kube = match &cfg.cluster.namespace {
        Some(_) => match kube::Client::try_default().await {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::error!(error = %e, "no Kubernetes client: the set will not hold the namespace's objects");
                None
            }
        },
        None => None,
    };
    run_with(cfg, store, schedule, progress, kube).await
}

/// Like [`run`], with the Kubernetes client given (tests pass kube-fake-client's).
pub async fn run_with(
    cfg: &Config,
    store: Arc<Store>,
    schedule: &str,
    progress: Progress,
    kube: Option<kube::Client>,
) -> Result<Manifest, BackupError> {
    let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
    let mut lock = catalog.lock(cfg.backup.lock_ttl_seconds, "backup").await?;
    lock.keep_alive(store.clone(), cfg.backup.lock_ttl_seconds);
    let fence = lock.fence();
    let result = run_locked(
        cfg,
        &catalog,
        store.clone(),
        schedule,
        progress,
        kube,
        &fence,
    )
    .await;
    if let Err(e) = lock.release(&store).await {
        tracing::warn!(error = %e, "could not release the backup lock; it expires on its own");
    }
    result
}

async fn run_locked(
    cfg: &Config,
    catalog: &Catalog<'_>,
    store: Arc<Store>,
    schedule: &str,
    progress: Progress,
    kube: Option<kube::Client>,
    fence: &Fence,
) -> Result<Manifest, BackupError> {
    let started_at = Utc::now();
    let set_id = new_set_id(started_at);
    let set_key = catalog.key(&set_id, "");
    tracing::info!(set = %set_id, site = %cfg.site, store = %store.describe(), "backup started");
    let source = crate::mysql::topology::choose(&cfg.database).await?;
    for h in &source.checked {
        tracing::info!(replica = %h.replica, lag = h.lag_seconds, problem = h.problem.as_deref(), "replica checked");
    }
    let endpoint = source.endpoint.clone();
    let opts = DumpOptions {
        connections: cfg.database.connections,
        chunk_bytes: cfg.backup.chunk_bytes,
        compression_level: cfg.backup.compression_level,
        skip: cfg.database.skip.clone(),
        fence: Some(fence.clone()),
    };
    let dumped = match dump::snapshot(
        &endpoint,
        &cfg.database.name,
        &opts,
        store.clone(),
        &set_key,
        progress,
    )
    .await
    {
        Ok(d) => d,
        Err(e) => {
            discard_partial(&store, &set_key).await;
            return Err(e.into());
        }
    };
    let mut dumped = dumped;
    if cfg.database.topology.read_from_replica {
        let s = &dumped.section;
        let primary_gtid = match source.role {
            // Read while commits were blocked; without that (one connection)
            // the replica's own binlog, which holds the primary's GTIDs
            // when it logs replicated events.
            "replica" => s
                .gtid_slave_pos
                .clone()
                .or_else(|| s.gtid_binlog_pos.clone()),
            _ => s.gtid_binlog_pos.clone(),
        };
        dumped.section.read_from = Some(ReadFrom {
            role: source.role.to_string(),
            server: source.endpoint.display(),
            lag_seconds: source.chosen.as_ref().and_then(|h| h.lag_seconds),
            primary_gtid,
            fallback_reason: source.fallback_reason.clone(),
        });
    }
    let mut artifacts = dumped.artifacts;
    // The site's answers right after the snapshot, before the (longer) media step.
    let site = match &cfg.wordpress_url {
        Some(url) => {
            let (section, artifact) = site_step(cfg, &store, &set_key, &endpoint, url).await;
            artifacts.extend(artifact);
            Some(section)
        }
        None => None,
    };
    // The media index after the database snapshot: every upload the snapshot
    // refers to was in the bucket before the snapshot, so it is in the index.
    // A part that fails from here on costs only itself: the set is
    // committed with the database and says what it lacks.
    let mut failed_parts = Vec::new();
    fence.check()?;
    let media = match &cfg.media {
        Some(_) => match media_step(cfg, &store, &set_key, &endpoint).await {
            Ok((section, artifact)) => {
                artifacts.push(artifact);
                Some(section)
            }
            Err(e) => {
                failed_parts.push(failed_part("media", &e));
                None
            }
        },
        None => None,
    };
    // Cluster objects after the database too.
    fence.check()?;
    let cluster = match &cfg.cluster.namespace {
        Some(ns) => {
            let inventory = match &kube {
                Some(client) => cluster_step(cfg, &store, &set_key, client, ns).await,
                None => Err(ClusterError::Client(
                    "no Kubernetes client could be made (KUBECONFIG, or the pod's service account); see the log"
                        .into(),
                )
                .into()),
            };
            match inventory {
                Ok((section, written)) => {
                    artifacts.extend(written);
                    Some(section)
                }
                Err(e) => {
                    failed_parts.push(failed_part("cluster", &e));
                    None
                }
            }
        }
        None => None,
    };
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        set_id: set_id.clone(),
        site: cfg.site.clone(),
        schedule: schedule.to_string(),
        started_at,
        finished_at: Utc::now(),
        wpdr_version: env!("CARGO_PKG_VERSION").to_string(),
        artifacts,
        database: Some(dumped.section),
        cluster,
        media,
        answers: site,
        failed_parts,
        encryption: store
            .keys()
            .seals()
            .then(|| crate::catalog::EncryptionSection {
                recipients: store.keys().recipients(),
            }),
        signature: None,
        // The manifest is the set's last write: a minute past its own
        // retention bounds every artifact's.
        retained_until: store
            .retained_until()
            .map(|t| t + chrono::Duration::minutes(1)),
    };
    // Every artifact must still be there: a run that stalled past its lock's
    // expiry could have had its files removed by a prune meanwhile.
    let present: std::collections::HashSet<String> = store
        .list(&set_key)
        .await
        .map_err(CatalogError::from)?
        .into_iter()
        .map(|o| o.key)
        .collect();
    if let Some(missing) = manifest
        .artifacts
        .iter()
        .find(|a| !present.contains(&catalog.key(&set_id, &a.path)))
    {
        return Err(BackupError::Catalog(CatalogError::SetIncomplete {
            id: format!(
                "{set_id} (artifact {} vanished before commit)",
                missing.path
            ),
        }));
    }
    // The commit is the one write that must never come from a run that lost
    // its lock: confirm it against the store right before.
    if let Err(e) = fence.confirm(&store).await {
        discard_partial(&store, &set_key).await;
        return Err(e.into());
    }
    catalog.commit(&manifest).await?;
    tracing::info!(set = %set_id, bytes = manifest.total_bytes(), "backup committed");
    Ok(manifest)
}

/// Captures what the live site answers (home, newest post, REST post list,
/// the newest upload) into `site/answers.json.zst`. A failure is recorded in
/// the section, not fatal: the data is the backup, the answers only a check.
async fn site_step(
    cfg: &Config,
    store: &Store,
    set_key: &str,
    endpoint: &Endpoint,
    url: &str,
) -> (SiteSection, Option<Artifact>) {
    const PATH: &str = "site/answers.json.zst";
    let captured_at = Utc::now();
    let upload = newest_upload(endpoint, &cfg.database.name, &cfg.database.table_prefix)
        .await
        .map(|file| {
            let uploads = cfg
                .media
                .as_ref()
                .map(|m| m.uploads_prefix.clone())
                .unwrap_or_else(|| "wp-content/uploads/".into());
            format!("/{uploads}{file}")
        });
    let result = async {
        let answers = answers::capture(url, upload.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        let json = serde_json::to_vec(&answers).map_err(|e| e.to_string())?;
        let compressed = crate::mysql::pipeline::compress(&json, cfg.backup.compression_level)
            .map_err(|e| e.to_string())?;
        let w = store
            .put_sealed(&format!("{set_key}{PATH}"), Bytes::from(compressed))
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((answers, w))
    }
    .await;
    match result {
        Ok((answers, w)) => (
            SiteSection {
                url: url.to_string(),
                captured_at,
                answers_artifact: Some(PATH.into()),
                answers: answers
                    .iter()
                    .map(|a| format!("{} {} ({})", a.name, a.path, a.status))
                    .collect(),
                error: None,
            },
            Some(Artifact {
                path: PATH.into(),
                size: w.size,
                sha256: w.sha256,
            }),
        ),
        Err(e) => {
            tracing::warn!(url, error = %e, "could not capture the site's answers; the set will not hold them");
            (
                SiteSection {
                    url: url.to_string(),
                    captured_at,
                    answers_artifact: None,
                    answers: Vec::new(),
                    error: Some(e),
                },
                None,
            )
        }
    }
}

/// The newest attachment's file (relative to the uploads directory).
async fn newest_upload(endpoint: &Endpoint, db: &str, prefix: &str) -> Option<String> {
    use mysql_async::prelude::Queryable;
    let mut c = endpoint.connect(Some(db)).await.ok()?;
    let q = format!(
        "SELECT meta_value FROM `{prefix}postmeta` WHERE meta_key = '_wp_attached_file' ORDER BY post_id DESC LIMIT 1"
    );
    let v: Option<String> = c.query_first(q).await.ok()?;
    let _ = c.disconnect().await;
    v.filter(|f| !f.is_empty() && !f.contains(".."))
}

/// Mirrors the uploads bucket and writes the set's media index, checking the
/// attachments the database refers to against it.
async fn media_step(
    cfg: &Config,
    store: &Arc<Store>,
    set_key: &str,
    endpoint: &Endpoint,
) -> Result<(MediaSection, Artifact), BackupError> {
    let Some(m) = &cfg.media else {
        return Err(MediaError::NotConfigured.into());
    };
    let expected = crate::media::attachments::expected_keys(
        endpoint,
        &cfg.database.name,
        &cfg.database.table_prefix,
        &m.uploads_prefix,
    )
    .await?;
    // The mirror's own lock, taken or not at once: while a media sync runs
    // (a first mirror can take hours) this set goes without media, partial,
    // instead of the database backup waiting for it.
    let catalog = Catalog::new(store, &cfg.site, &cfg.site_prefix());
    let mut lock = catalog
        .media_lock(cfg.backup.lock_ttl_seconds, "backup")
        .await?;
    lock.keep_alive(store.clone(), cfg.backup.lock_ttl_seconds);
    let result = mirror_for_set(m, store, set_key, cfg, expected.keys, lock.fence()).await;
    if let Err(e) = lock.release(store).await {
        tracing::warn!(error = %e, "could not release the media lock; it expires on its own");
    }
    let report = result?;
    let path = MEDIA_INDEX;
    let Some(index) = report.index.clone() else {
        return Err(MediaError::Records {
            key: path.into(),
            detail: "the mirror wrote no index".into(),
        }
        .into());
    };
    if report.missing_total > 0 {
        tracing::warn!(
            missing = report.missing_total,
            first = %report.missing.first().map(|m| m.key.as_str()).unwrap_or(""),
            "uploads the database refers to are not in the media bucket"
        );
    }
    if !expected.unreadable.is_empty() {
        tracing::warn!(
            posts = %expected.unreadable.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
            "attachment metadata that is not valid PHP serialisation: those attachments' sizes were not checked"
        );
    }
    let mut section = media_section(m, &report, path, m.seals(store.keys().seals()));
    section.unreadable_metadata = expected.unreadable;
    Ok((
        section,
        Artifact {
            path: path.to_string(),
            size: index.size,
            sha256: index.sha256,
        },
    ))
}

const MEDIA_INDEX: &str = "media/index.jsonl.zst";

/// One mirror run that writes the set's media index.
async fn mirror_for_set(
    m: &crate::config::MediaConfig,
    store: &Arc<Store>,
    set_key: &str,
    cfg: &Config,
    expected: std::collections::BTreeMap<String, u64>,
    fence: Fence,
) -> Result<MirrorReport, BackupError> {
    let mirror = Mirror::open(m, store.clone(), &cfg.site_prefix()).await?;
    let path = MEDIA_INDEX;
    let report = mirror
        .run(
            MirrorOptions {
                index_key: Some(format!("{set_key}{path}")),
                expected: Some(expected),
                fence: Some(fence),
                ..Default::default()
            },
            Arc::new(|_| {}),
        )
        .await?;
    Ok(report)
}

fn media_section(
    m: &crate::config::MediaConfig,
    r: &MirrorReport,
    path: &str,
    sealed: bool,
) -> MediaSection {
    MediaSection {
        sealed,
        source: r.source.clone(),
        offsite: r.offsite.clone(),
        retained_prefix: m.retained_prefix.clone(),
        index_artifact: path.to_string(),
        objects: r.indexed_objects,
        bytes: r.indexed_bytes,
        copied: r.copied,
        copied_bytes: r.copied_bytes,
        retained: r.retained,
        deleted: r.deleted,
        not_mirrored_total: r.failed_total,
        not_mirrored: r.failed.iter().map(|f| f.key.clone()).collect(),
        missing_total: r.missing_total,
        missing: r.missing.clone(),
        unreadable_metadata: Vec::new(),
        deletes_refused: r.deletes_refused.clone(),
    }
}

/// Records the namespace: sanitised objects, sealed Secrets, image digests.
async fn cluster_step(
    cfg: &Config,
    store: &Store,
    set_key: &str,
    client: &kube::Client,
    ns: &str,
) -> Result<(ClusterSection, Vec<Artifact>), BackupError> {
    let inv = inventory::collect_with(client, ns, &cfg.cluster.custom_resources).await?;
    let mut written = Vec::new();
    let put = |path: &'static str, bytes: Vec<u8>| async move {
        let w = store
            .put_sealed(&format!("{set_key}{path}"), Bytes::from(bytes))
            .await
            .map_err(CatalogError::from)?;
        Ok::<_, BackupError>(Artifact {
            path: path.to_string(),
            size: w.size,
            sha256: w.sha256,
        })
    };
    let json = serde_json::to_vec(&inv.objects).unwrap_or_default();
    let compressed = crate::mysql::pipeline::compress(&json, cfg.backup.compression_level)
        .map_err(|e| MysqlError::Compression {
            path: "cluster/objects.json.zst".into(),
            detail: e.to_string(),
        })?;
    written.push(put("cluster/objects.json.zst", compressed).await?);
    let (secrets_artifact, secrets_skipped) = match (
        &cfg.cluster.secrets_key,
        inv.secrets.is_empty(),
    ) {
        (_, true) => (None, None),
        (Some(key), false) => {
            let plain = serde_json::to_vec(&inv.secrets).unwrap_or_default();
            written.push(put("cluster/secrets.sealed", seal::seal(key, &plain)).await?);
            (Some("cluster/secrets.sealed".to_string()), None)
        }
        // Sealed to the recipients like every artifact: no second key needed.
        (None, false) if store.keys().seals() => {
            const PATH: &str = "cluster/secrets.json.zst";
            let plain = serde_json::to_vec(&inv.secrets).unwrap_or_default();
            let compressed = crate::mysql::pipeline::compress(&plain, cfg.backup.compression_level)
                .map_err(|e| MysqlError::Compression {
                    path: PATH.into(),
                    detail: e.to_string(),
                })?;
            written.push(put(PATH, compressed).await?);
            (Some(PATH.to_string()), None)
        }
        (None, false) => {
            tracing::warn!(
                secrets = inv.secrets.len(),
                "neither encryption.recipients nor a secrets key (WPDR_SECRETS_KEY or cluster.secrets_key_file) is configured: Secrets are NOT in this set"
            );
            (
                None,
                Some(
                    "neither encryption.recipients nor a secrets key (WPDR_SECRETS_KEY or cluster.secrets_key_file) is configured"
                        .to_string(),
                ),
            )
        }
    };
    Ok((
        ClusterSection {
            namespace: ns.to_string(),
            objects_artifact: "cluster/objects.json.zst".into(),
            objects: inv.objects.len(),
            secrets_artifact,
            secrets: if secrets_skipped.is_some() {
                0
            } else {
                inv.secrets.len()
            },
            secrets_skipped,
            exposed_credentials: inventory::exposed_credentials(&inv.objects),
            images: inv.images,
            custom_resources: cfg.cluster.custom_resources.clone(),
        },
        written,
    ))
}

/// Removes what a failed run wrote. Best effort: a run killed outright leaves
/// its files for `prune`, and they are invisible without a manifest anyway.
async fn discard_partial(store: &Store, set_key: &str) {
    if let Err(e) = store.delete_prefix(set_key).await {
        tracing::warn!(error = %e, "could not remove the partial artifacts; prune removes them later");
    }
}
