//! Restore orchestration. Today: the database step (`restore db`); the
//! full-site restore will compose it with the media and cluster steps.

use crate::catalog::{Catalog, CatalogError, Manifest};
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
}

impl Classify for RestoreError {
    fn exit_code(&self) -> ExitCode {
        match self {
            RestoreError::Catalog(e) => e.exit_code(),
            RestoreError::Mysql(e) => e.exit_code(),
            RestoreError::NoDatabase { .. } => ExitCode::SetNotFound,
        }
    }
    fn metric_label(&self) -> &'static str {
        match self {
            RestoreError::Catalog(e) => e.metric_label(),
            RestoreError::Mysql(e) => e.metric_label(),
            RestoreError::NoDatabase { .. } => "no_database",
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
