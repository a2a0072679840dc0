//! The primary's binary log, archived continuously, and replayed for a
//! point-in-time restore.
//!
//! Data plane: [`event`] (raw events, transaction boundaries, CRC32),
//! [`segment`] (binlog files of whole transactions in the store) and
//! [`rollup`] (finished days' segment indexes gathered, so reading the
//! archive does not cost a request per segment).
//! Control plane: [`archive`] (follow the primary, resume by GTID, follow
//! failovers, record gaps), [`window`] (what can be restored to) and
//! [`replay`] (choose a set and the transactions after it; apply them).

pub mod archive;
pub mod chain;
pub mod claim;
pub mod event;
/// GTIDs are the server's (`mysql::gtid`); the archive and replay speak them.
pub use crate::mysql::gtid;
pub mod prune;
pub mod replay;
pub mod rollup;
pub mod segment;
pub mod window;

use crate::exit::{Classify, ExitCode};
use crate::mysql::MysqlError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    #[error(transparent)]
    Mysql(#[from] MysqlError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("the binary log of {server} no longer holds the archive's position {position} ({detail}). The archive has a gap from here; it was recorded and archiving goes on from what the server still has. Take a backup (`wpdr backup`) so a restore can start after the gap.")]
    Gap {
        server: String,
        position: String,
        detail: String,
    },
    #[error("the binary log of {server} went backwards after {position}: {detail}")]
    Rewound {
        server: String,
        position: String,
        detail: String,
    },
    #[error("the binary log stream from {server} broke: {detail}")]
    Stream { server: String, detail: String },
    #[error("{server} logs with binlog_format={format}: a replay filtered to the site's database can silently skip statements that name tables with another default database, so wpdr archives only row-based logs. Set binlog_format=ROW in the server's configuration (and SET GLOBAL binlog_format=ROW), then start the archive again.")]
    NotRowBased { server: String, format: String },
    #[error("no server takes writes: {details}. Check database.host and database.replicas, and that the primary runs with log_bin.")]
    NoPrimary { details: String },
    #[error("archive segment {key} is damaged: {detail}. Restore to a point before it, or from a set taken after it.")]
    Damaged { key: String, detail: String },
    #[error("spool file {path}: {detail}")]
    Spool { path: String, detail: String },
    #[error("cannot restore to {point}: {reason}. `wpdr sets recoverable` shows the window.")]
    NotRecoverable { point: String, reason: String },
    #[error("replaying the archived transactions into {target} failed: {detail}. The database holds the set's data but not the transactions after it: fix the cause and run the restore again with --force.")]
    Replay { target: String, detail: String },
}

/// Every `.json` object under `prefix`, parsed; one that does not parse is
/// `Damaged` (with `hint`: what to do about it), never skipped.
pub(crate) async fn read_all_json<T: serde::de::DeserializeOwned>(
    store: &crate::store::Store,
    prefix: &str,
    hint: &str,
) -> Result<Vec<T>, BinlogError> {
    let mut out = Vec::new();
    for o in store.list(prefix).await? {
        if !o.key.ends_with(".json") {
            continue;
        }
        let bytes = store.get_bytes(&o.key).await?;
        out.push(
            serde_json::from_slice(&bytes).map_err(|e| BinlogError::Damaged {
                key: o.key.clone(),
                detail: format!("{e}{hint}"),
            })?,
        );
    }
    Ok(out)
}

impl Classify for BinlogError {
    fn exit_code(&self) -> ExitCode {
        match self {
            BinlogError::Mysql(e) => e.exit_code(),
            BinlogError::Store(e) => e.exit_code(),
            BinlogError::Catalog(e) => e.exit_code(),
            BinlogError::Gap { .. } | BinlogError::Rewound { .. } => ExitCode::BinlogGap,
            BinlogError::Stream { .. } | BinlogError::NoPrimary { .. } => {
                ExitCode::DatabaseUnreachable
            }
            BinlogError::Damaged { .. } => ExitCode::Integrity,
            BinlogError::Spool { .. } => ExitCode::Internal,
            BinlogError::NotRecoverable { .. } => ExitCode::NotRecoverable,
            BinlogError::Replay { .. } | BinlogError::NotRowBased { .. } => ExitCode::Database,
        }
    }
    fn metric_label(&self) -> &'static str {
        match self {
            BinlogError::Mysql(e) => e.metric_label(),
            BinlogError::Store(e) => e.metric_label(),
            BinlogError::Catalog(e) => e.metric_label(),
            BinlogError::Gap { .. } | BinlogError::Rewound { .. } => "binlog_gap",
            BinlogError::Stream { .. } => "binlog_stream",
            BinlogError::NoPrimary { .. } => "binlog_no_primary",
            BinlogError::Damaged { .. } => "binlog_damaged",
            BinlogError::Spool { .. } => "binlog_spool",
            BinlogError::NotRecoverable { .. } => "not_recoverable",
            BinlogError::Replay { .. } => "binlog_replay",
            BinlogError::NotRowBased { .. } => "binlog_not_row_based",
        }
    }
}
