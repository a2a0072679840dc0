//! Restore orchestration: the database step (`restore db`), the cluster step
//! (`restore cluster`), and the plan (`plan`) a full-site restore follows.

pub mod cache;
pub mod drill;
pub mod journal;
pub mod pitr;
pub mod plan;
pub mod run;
pub(crate) mod step;
pub mod steps;
pub mod targets;

use crate::catalog::{ArtifactProblem, Catalog, CatalogError, Manifest};
use crate::exit::{Classify, ExitCode};
use crate::mysql::load::{self, LoadOptions, LoadReport, Progress};
use crate::mysql::{Endpoint, MysqlError};
use crate::store::Store;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Mysql(#[from] MysqlError),
    #[error("set '{id}' holds no database snapshot")]
    NoDatabase { id: String },
    #[error("set '{id}' holds no namespace objects (cluster.namespace was not configured when it was taken)")]
    NoCluster { id: String },
    #[error("set '{id}' holds sealed Secrets: set WPDR_SECRETS_KEY (or cluster.secrets_key_file) to the key used at backup, or pass --skip-secrets")]
    SecretsKeyMissing { id: String },
    #[error("the Secrets of set '{id}' cannot be opened: {source}")]
    Secrets {
        id: String,
        #[source]
        source: crate::cluster::seal::SealError,
    },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Binlog(#[from] crate::binlog::BinlogError),
}

impl Classify for RestoreError {
    fn exit_code(&self) -> ExitCode {
        match self {
            RestoreError::Catalog(e) => e.exit_code(),
            RestoreError::Mysql(e) => e.exit_code(),
            RestoreError::NoDatabase { .. } | RestoreError::NoCluster { .. } => {
                ExitCode::SetNotFound
            }
            RestoreError::SecretsKeyMissing { .. } => ExitCode::Config,
            RestoreError::Secrets { .. } => ExitCode::Integrity,
            RestoreError::Cluster(e) => e.exit_code(),
            RestoreError::Binlog(e) => e.exit_code(),
        }
    }
    fn metric_label(&self) -> &'static str {
        match self {
            RestoreError::Catalog(e) => e.metric_label(),
            RestoreError::Mysql(e) => e.metric_label(),
            RestoreError::NoDatabase { .. } => "no_database",
            RestoreError::NoCluster { .. } => "no_cluster",
            RestoreError::SecretsKeyMissing { .. } => "secrets_key_missing",
            RestoreError::Secrets { .. } => "secrets_unreadable",
            RestoreError::Cluster(e) => e.metric_label(),
            RestoreError::Binlog(e) => e.metric_label(),
        }
    }
}

/// Restores the database of `manifest` into `database` on `target`.
pub async fn restore_db(
    catalog: &Catalog<'_>,
    store: Arc<Store>,
    manifest: &Manifest,
    target: &Endpoint,
    database: &str,
    opts: &LoadOptions,
    progress: Progress,
) -> Result<LoadReport, RestoreError> {
    let section = manifest
        .database
        .as_ref()
        .ok_or_else(|| RestoreError::NoDatabase {
            id: manifest.set_id.clone(),
        })?;
    let set_key = catalog.key(&manifest.set_id, "");
    tracing::info!(set = %manifest.set_id, target = %target.display(), database, "database restore started");
    // Keep prune away from the set while it is read.
    let pin = catalog.pin(&manifest.set_id, "restore db", 12).await?;
    let report = load::load(
        target,
        database,
        section,
        &manifest.artifacts,
        store,
        &set_key,
        opts,
        progress,
    )
    .await;
    pin.release(catalog).await;
    Ok(report?)
}

/// What `restore cluster` did (or would do, in a dry run).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterRestore {
    pub namespace: String,
    pub dry_run: bool,
    pub objects: Vec<String>,
    pub pins: Vec<crate::cluster::apply::Pin>,
    pub warnings: Vec<String>,
    pub secrets_restored: usize,
}

pub struct ClusterRestoreOptions<'a> {
    pub namespace: &'a str,
    pub host_map: &'a [(String, String)],
    pub key: Option<&'a crate::cluster::seal::SealKey>,
    pub skip_secrets: bool,
    pub dry_run: bool,
    pub force: bool,
    /// False when the namespace is created elsewhere (GitOps), or the role may not create it.
    pub create_namespace: bool,
}

async fn read_artifact(
    catalog: &Catalog<'_>,
    manifest: &Manifest,
    path: &str,
) -> Result<Vec<u8>, RestoreError> {
    let key = catalog.key(&manifest.set_id, path);
    let (bytes, (size, sha)) = catalog
        .store()
        .get_with_digest(&key)
        .await
        .map_err(CatalogError::from)?;
    let problem = match manifest.artifact(path) {
        Some(a) => ArtifactProblem::check(a, size, &sha).map(|p| p.to_string()),
        None => Some("not listed in the manifest".to_string()),
    };
    if let Some(detail) = problem {
        return Err(RestoreError::Mysql(MysqlError::Artifact {
            path: path.to_string(),
            detail,
        }));
    }
    Ok(bytes.to_vec())
}

/// Applies the set's namespace objects into `opts.namespace`, images pinned to
/// the digests that ran, hosts mapped.
pub async fn restore_cluster(
    catalog: &Catalog<'_>,
    manifest: &Manifest,
    client: &kube::Client,
    opts: &ClusterRestoreOptions<'_>,
) -> Result<ClusterRestore, RestoreError> {
    let c = manifest
        .cluster
        .as_ref()
        .ok_or_else(|| RestoreError::NoCluster {
            id: manifest.set_id.clone(),
        })?;
    let compressed = read_artifact(catalog, manifest, &c.objects_artifact).await?;
    let json = zstd::decode_all(compressed.as_slice()).map_err(|e| MysqlError::Artifact {
        path: c.objects_artifact.clone(),
        detail: e.to_string(),
    })?;
    let objects: Vec<serde_json::Value> =
        serde_json::from_slice(&json).map_err(|e| MysqlError::Artifact {
            path: c.objects_artifact.clone(),
            detail: e.to_string(),
        })?;
    let secrets: Vec<serde_json::Value> = match (&c.secrets_artifact, opts.skip_secrets, opts.key) {
        (None, _, _) | (Some(_), true, _) => Vec::new(),
        // Sealed to the set's recipients: opened by the store like every artifact.
        (Some(path), false, _) if path.ends_with(".json.zst") => {
            let compressed = read_artifact(catalog, manifest, path).await?;
            let json =
                zstd::decode_all(compressed.as_slice()).map_err(|e| MysqlError::Artifact {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            serde_json::from_slice(&json).map_err(|e| MysqlError::Artifact {
                path: path.clone(),
                detail: e.to_string(),
            })?
        }
        (Some(_), false, None) => {
            return Err(RestoreError::SecretsKeyMissing {
                id: manifest.set_id.clone(),
            })
        }
        (Some(path), false, Some(key)) => {
            let sealed = read_artifact(catalog, manifest, path).await?;
            let plain = crate::cluster::seal::open(key, &sealed).map_err(|source| {
                RestoreError::Secrets {
                    id: manifest.set_id.clone(),
                    source,
                }
            })?;
            serde_json::from_slice(&plain).map_err(|e| MysqlError::Artifact {
                path: path.clone(),
                detail: e.to_string(),
            })?
        }
    };
    let secrets_restored = secrets.len();
    let rewritten = crate::cluster::apply::rewrite(
        objects,
        secrets,
        &c.images,
        &c.namespace,
        opts.namespace,
        opts.host_map,
    );
    let names: Vec<String> = rewritten
        .objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    crate::cluster::apply::check_target(client, opts.namespace, opts.force).await?;
    let objects = if opts.dry_run {
        names
    } else {
        crate::cluster::apply::apply(
            client,
            opts.namespace,
            &rewritten.objects,
            opts.create_namespace,
            &c.custom_resources,
        )
        .await?
    };
    Ok(ClusterRestore {
        namespace: opts.namespace.to_string(),
        dry_run: opts.dry_run,
        objects,
        pins: rewritten.pins,
        warnings: rewritten.warnings,
        secrets_restored,
    })
}
