//! Consistent, parallel logical snapshot of one database into a backup set.
//!
//! Consistency: every worker connection opens `START TRANSACTION WITH
//! CONSISTENT SNAPSHOT` while commits are held still (MariaDB `BACKUP STAGE
//! BLOCK_COMMIT`, MySQL `FLUSH TABLES WITH READ LOCK`), so all of them see the
//! same point; the binlog file/position and GTID of that point are read while
//! commits are still held, and the time they were held is recorded. With one
//! connection no lock is needed: MariaDB reports the snapshot's own binlog
//! position (`binlog_snapshot_file/position`).
//!
//! The work is split by seam: which tables (`discovery`), the shared point
//! (`consistency`), the key ranges (`chunks`), rows to SQL (`render`), views
//! and routines (`objects`); this file runs them, with the worker pool.
//!
//! Output: per table a schema artifact and data artifacts (chunks of primary-key
//! ranges), each plain SQL compressed with zstd, so `zstd -dc db/*.sql.zst |
//! mariadb NEWDB` restores a set without wpdr.

mod chunks;
mod consistency;
mod discovery;
mod objects;
mod render;

use super::checksum::TableChecksum;
use super::sql::quote_ident;
use super::{query_err, server_version, Endpoint, MysqlError};
use crate::catalog::{Artifact, Consistency, DatabaseSection, TableEntry};
use crate::store::{Store, Written};
use bytes::Bytes;
use consistency::open_snapshots;
use discovery::{list_tables, slug};
pub use discovery::{plan_tables, PlannedTable};
use mysql_async::prelude::Queryable;
use objects::dump_objects;
use render::dump_chunk;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// A data statement grows to about this size before it is closed.
const STATEMENT_BYTES: usize = 1 << 20;

pub const DATA_HEADER: &str = "/*!40101 SET NAMES utf8mb4 */;\n\
SET SESSION time_zone='+00:00';\n\
SET SESSION sql_mode='NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION';\n\
SET SESSION foreign_key_checks=0;\n\
SET SESSION unique_checks=0;\n";

#[derive(Debug, Clone)]
pub struct DumpOptions {
    pub connections: usize,
    pub chunk_bytes: u64,
    pub compression_level: i32,
}

/// Called with uncompressed bytes as they are produced (for progress bars).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

pub struct DumpResult {
    pub section: DatabaseSection,
    pub artifacts: Vec<Artifact>,
    /// Estimated table bytes from the server (what progress was measured against).
    pub estimated_bytes: u64,
}

pub(super) struct TaskResult {
    pub(super) table: usize,
    pub(super) chunk: usize,
    pub(super) written: Written,
    pub(super) sum: TableChecksum,
    pub(super) max_statement: usize,
    pub(super) raw_bytes: u64,
}

/// Takes the snapshot of `database` and writes its artifacts under `set_key` (ending in '/').
pub async fn snapshot(
    endpoint: &Endpoint,
    database: &str,
    opts: &DumpOptions,
    store: Arc<Store>,
    set_key: &str,
    progress: Progress,
) -> Result<DumpResult, MysqlError> {
    let mut control = endpoint.connect(Some(database)).await?;
    let version = server_version(&mut control).await?;
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let tables = list_tables(&mut control, database).await?;
    let estimated_bytes = tables.iter().map(|t| t.data_length).sum();

    let mut workers = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        workers.push(endpoint.connect(Some(database)).await?);
    }
    let snap = match open_snapshots(&mut control, &mut workers, mariadb).await {
        Ok(s) => s,
        Err(MysqlError::Privilege { detail, .. }) if workers.len() > 1 => {
            tracing::warn!(%detail, "cannot hold commits for a shared snapshot (needs the RELOAD privilege); falling back to one connection");
            for w in workers.drain(1..) {
                let _ = w.disconnect().await;
            }
            open_snapshots(&mut control, &mut workers, mariadb).await?
        }
        Err(MysqlError::Privilege { user: _, detail }) => {
            return Err(MysqlError::Privilege {
                user: endpoint.user.clone(),
                detail,
            })
        }
        Err(e) => return Err(e),
    };
    let connections_used = workers.len();
    tracing::info!(
        method = snap.method,
        commits_blocked_ms = snap.blocked_ms,
        binlog = ?snap.binlog,
        gtid = ?snap.gtid,
        "snapshot opened"
    );

    let mut artifacts: Vec<Written> = Vec::new();
    let mut schema_paths = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let row: Option<(String, String)> = control
            .query_first(format!("SHOW CREATE TABLE {}", quote_ident(&t.name)))
            .await
            .map_err(|e| query_err(format!("SHOW CREATE TABLE {}", t.name), e))?;
        let create = row.map(|r| r.1).unwrap_or_default();
        let text = format!(
            "/*!40101 SET NAMES utf8mb4 */;\nSET SESSION sql_mode='NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION';\nSET SESSION foreign_key_checks=0;\nDROP TABLE IF EXISTS {};\n{};\n",
            quote_ident(&t.name),
            create
        );
        let path = format!("db/1-schema-{:04}-{}.sql.zst", i + 1, slug(&t.name));
        artifacts.push(
            put_compressed(
                &store,
                set_key,
                &path,
                text.as_bytes(),
                opts.compression_level,
            )
            .await?,
        );
        schema_paths.push(path);
    }

    // Plan chunks inside the snapshot (MIN/MAX are read at the snapshot's point).
    let mut tasks = chunks::plan(&mut workers[0], &tables, opts.chunk_bytes).await?;
    tasks.sort_by_key(|t| std::cmp::Reverse(t.weight));
    let queue = Arc::new(Mutex::new(VecDeque::from(tasks)));
    let tables_arc = Arc::new(tables.clone());

    let mut handles = Vec::new();
    for conn in workers.drain(..) {
        let queue = queue.clone();
        let tables = tables_arc.clone();
        let store = store.clone();
        let set_key = set_key.to_string();
        let progress = progress.clone();
        let level = opts.compression_level;
        handles.push(tokio::spawn(async move {
            let mut conn = conn;
            let mut results = Vec::new();
            loop {
                let task = match queue.lock() {
                    Ok(mut q) => q.pop_front(),
                    Err(_) => None,
                };
                let Some(task) = task else { break };
                match dump_chunk(
                    &mut conn,
                    &tables[task.table],
                    &task,
                    &store,
                    &set_key,
                    level,
                    &progress,
                )
                .await
                {
                    Ok(r) => results.push(r),
                    Err(e) => {
                        // Stop the other workers early: nothing more to gain.
                        if let Ok(mut q) = queue.lock() {
                            q.clear();
                        }
                        let _ = conn.disconnect().await;
                        return Err(e);
                    }
                }
            }
            let _ = conn.query_drop("COMMIT").await;
            let _ = conn.disconnect().await;
            Ok::<_, MysqlError>(results)
        }));
    }
    let mut results = Vec::new();
    let mut first_err = None;
    for h in handles {
        match h.await {
            Ok(Ok(r)) => results.extend(r),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(MysqlError::Query {
                    doing: "a dump worker".into(),
                    detail: e.to_string(),
                });
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }

    // Schema objects, created after the data on restore.
    let (objects, object_artifacts) = dump_objects(
        &mut control,
        database,
        &store,
        set_key,
        opts.compression_level,
    )
    .await?;
    artifacts.extend(object_artifacts);

    let charset: Option<(String, String)> = control
        .exec_first(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (database,),
        )
        .await
        .map_err(|e| query_err("reading the database's character set", e))?;
    let _ = control.disconnect().await;

    results.sort_by_key(|r| (r.table, r.chunk));
    let mut entries: Vec<TableEntry> = tables
        .iter()
        .zip(schema_paths)
        .map(|(t, schema)| TableEntry {
            name: t.name.clone(),
            engine: t.engine.clone(),
            columns: t.columns.clone(),
            primary_key: t.primary_key.clone(),
            rows: 0,
            checksum: String::new(),
            schema_artifact: schema,
            data_artifacts: Vec::new(),
        })
        .collect();
    let mut sums = vec![TableChecksum::default(); tables.len()];
    let mut max_statement = 0usize;
    let mut raw_bytes = 0u64;
    for r in results {
        sums[r.table].merge(r.sum);
        max_statement = max_statement.max(r.max_statement);
        raw_bytes += r.raw_bytes;
        let path = r
            .written
            .key
            .strip_prefix(set_key)
            .unwrap_or(&r.written.key)
            .to_string();
        entries[r.table].data_artifacts.push(path);
        artifacts.push(r.written);
    }
    for (e, s) in entries.iter_mut().zip(&sums) {
        e.rows = s.rows;
        e.checksum = s.hex();
    }
    let artifacts = artifacts
        .into_iter()
        .map(|w| Artifact {
            path: w.key.strip_prefix(set_key).unwrap_or(&w.key).to_string(),
            size: w.size,
            sha256: w.sha256,
        })
        .collect();
    let (default_charset, default_collation) = charset.unwrap_or_default();
    Ok(DumpResult {
        section: DatabaseSection {
            server_version: version,
            database: database.to_string(),
            source: endpoint.display(),
            default_charset,
            default_collation,
            consistency: Consistency {
                method: snap.method.to_string(),
                connections: connections_used,
                commits_blocked_ms: snap.blocked_ms,
            },
            binlog: snap.binlog,
            gtid_binlog_pos: snap.gtid,
            gtid_slave_pos: snap.slave_pos,
            snapshot_at: snap.at,
            read_from: None,
            max_statement_bytes: max_statement as u64,
            tables: entries,
            objects,
            raw_bytes,
        },
        artifacts,
        estimated_bytes,
    })
}

pub(super) async fn put_compressed(
    store: &Store,
    set_key: &str,
    path: &str,
    text: &[u8],
    level: i32,
) -> Result<Written, MysqlError> {
    let z = super::pipeline::compress(text, level).map_err(|e| MysqlError::Compression {
        path: path.to_string(),
        detail: e.to_string(),
    })?;
    Ok(store
        .put_bytes(&format!("{set_key}{path}"), Bytes::from(z))
        .await?)
}
