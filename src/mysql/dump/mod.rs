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
use super::sql::{quote_ident, select_stored};
use super::workers::Workers;
use super::{query_err, server_version, Endpoint, MysqlError};
use crate::catalog::{Artifact, Consistency, DatabaseSection, TableEntry, TableKind};
use crate::mysql::row_conn::RowConn;
use crate::store::{Store, Written};
use bytes::Bytes;
use consistency::{open_snapshots, release};
use discovery::{discover, slug, TableInfo};
pub use discovery::{plan_tables, PlannedTable};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
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
    /// `database.skip`: names (with `*`) of objects left out on purpose.
    pub skip: Vec<String>,
    /// The backup lock's fence, checked before each chunk is written: a run
    /// that lost its lock writes nothing more.
    pub fence: Option<crate::catalog::Fence>,
}

/// How far a dump is, for progress bars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpProgress {
    /// The server's estimate of the bytes about to be read, once the
    /// snapshot's tables are known; sent again by an attempt that starts over.
    Estimate(u64),
    /// Uncompressed SQL bytes written.
    Written(u64),
}

/// Called as the dump goes (cheap; from any worker).
pub type Progress = Arc<dyn Fn(DumpProgress) + Send + Sync>;

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

/// Snapshots started over when DDL changed the schema while one opened.
const SNAPSHOT_ATTEMPTS: usize = 3;

/// Takes the snapshot of `database` and writes its artifacts under `set_key`
/// (ending in '/'); see the module docs. DDL that changes a table while the
/// snapshot opens starts it over (up to [`SNAPSHOT_ATTEMPTS`] times); DDL that
/// breaks a table's read later fails it: the schema and the rows of a set are
/// always from one moment.
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
    let mut attempt = 1;
    loop {
        let result = snapshot_once(
            &mut control,
            endpoint,
            database,
            opts,
            &store,
            set_key,
            &progress,
            mariadb,
        )
        .await;
        match result {
            Err(MysqlError::SchemaChanged { tables, detail }) if attempt < SNAPSHOT_ATTEMPTS => {
                tracing::warn!(%tables, %detail, attempt, "the schema changed while the snapshot opened; starting it over");
                // Best effort: the writing side may not delete; what stays
                // is overwritten or, unnamed by the manifest, left to prune.
                if let Err(e) = store.delete_prefix(set_key).await {
                    tracing::info!(error = %e, "the first attempt's files stay for prune");
                }
                attempt += 1;
            }
            Ok(mut dumped) => {
                let _ = control.disconnect().await;
                dumped.section.server_version = version;
                return Ok(dumped);
            }
            Err(e) => return Err(e),
        }
    }
}

/// One attempt of [`snapshot`].
#[allow(clippy::too_many_arguments)]
async fn snapshot_once(
    control: &mut Conn,
    endpoint: &Endpoint,
    database: &str,
    opts: &DumpOptions,
    store: &Arc<Store>,
    set_key: &str,
    progress: &Progress,
    mariadb: bool,
) -> Result<DumpResult, MysqlError> {
    let before = discover(control, database, &opts.skip).await?;
    let tables = before.tables.clone();
    let estimated_bytes = tables.iter().map(|t| t.data_length).sum();
    progress(DumpProgress::Estimate(estimated_bytes));

    let mut workers = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        workers.push(RowConn::connect(endpoint, database).await?);
    }
    tracing::debug!(
        reader = workers.first().map(RowConn::reader),
        "dump workers connected"
    );
    let mut snap = match open_snapshots(control, &mut workers, mariadb).await {
        Ok(s) => s,
        Err(MysqlError::Privilege { detail, .. }) if workers.len() > 1 => {
            tracing::warn!(%detail, "cannot hold commits for a shared snapshot (needs the RELOAD privilege); falling back to one connection");
            for w in workers.drain(1..) {
                w.disconnect().await;
            }
            open_snapshots(control, &mut workers, mariadb).await?
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
        binlog = snap.binlog.as_ref().map(tracing::field::display),
        gtid = snap.gtid.as_deref(),
        "snapshot opened"
    );
    let pool = Pool {
        tables: Arc::new(tables.clone()),
        store: store.clone(),
        set_key: set_key.to_string(),
        level: opts.compression_level,
        progress: progress.clone(),
        fence: opts.fence.clone(),
    };

    // Non-transactional tables (MyISAM, Aria, ...) are outside the InnoDB
    // snapshot: their rows are the snapshot's only if read while commits,
    // their writes and DDL are held (BACKUP STAGE BLOCK_COMMIT / FTWRL).
    let (held, mut later): (Vec<usize>, Vec<usize>) = (0..tables.len())
        .filter(|&i| tables[i].has_data_chunks())
        .partition(|&i| !tables[i].transactional());
    let mut results = Vec::new();
    let mut not_at_snapshot = Vec::new();
    if !held.is_empty() {
        if snap.holds_commits() {
            let read = async {
                let tasks = chunks::plan(&mut workers[0], &tables, &held, opts.chunk_bytes).await?;
                pool.run(std::mem::take(&mut workers), tasks).await
            }
            .await;
            match read {
                Ok((back, r)) => {
                    workers = back;
                    results.extend(r);
                }
                Err(e) => {
                    let _ = release(control, &mut snap).await;
                    return Err(e);
                }
            }
        } else {
            not_at_snapshot = held.iter().map(|&i| tables[i].name.clone()).collect();
            later.extend(held);
            tracing::warn!(tables = %not_at_snapshot.join(", "), "non-transactional tables are read without commits held (one connection): their rows may be from later than the snapshot; the set records it");
        }
    }
    release(control, &mut snap).await?;
    tracing::info!(commits_blocked_ms = snap.blocked_ms, "commits released");

    let mut artifacts: Vec<Written> = Vec::new();
    let mut schema_paths = Vec::new();
    let mut sequence_sums: Vec<Option<TableChecksum>> = vec![None; tables.len()];
    for (i, t) in tables.iter().enumerate() {
        let (text, sum) = schema_text(control, t).await?;
        sequence_sums[i] = sum;
        let path = format!("db/1-schema-{:04}-{}.sql.zst", i + 1, slug(&t.name));
        artifacts.push(
            put_compressed(
                store,
                set_key,
                &path,
                text.as_bytes(),
                opts.compression_level,
            )
            .await?,
        );
        schema_paths.push(path);
    }
    // Read after the definitions: equal to the listing before the snapshot,
    // nothing changed from then until every definition above was read.
    let after = discover(control, database, &opts.skip).await?;
    let changed = after.changed_since(&before);
    if !changed.is_empty() {
        for w in workers {
            w.disconnect().await;
        }
        return Err(MysqlError::SchemaChanged {
            tables: changed.join(", "),
            detail: "tables were created, dropped or altered while the snapshot opened".into(),
        });
    }

    // Plan chunks inside the snapshot (MIN/MAX are read at the snapshot's point).
    let tasks = chunks::plan(&mut workers[0], &tables, &later, opts.chunk_bytes).await?;
    let (workers, rest) = pool.run(workers, tasks).await?;
    results.extend(rest);
    for mut w in workers {
        let _ = w.exec("COMMIT").await;
        w.disconnect().await;
    }

    // Schema objects, created after the data on restore.
    let (objects, object_artifacts, skipped_objects) = dump_objects(
        control,
        database,
        store,
        set_key,
        opts.compression_level,
        &opts.skip,
    )
    .await?;
    artifacts.extend(object_artifacts);
    let mut skipped = before.skipped;
    skipped.extend(skipped_objects);

    let charset: Option<(String, String)> = control
        .exec_first(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (database,),
        )
        .await
        .map_err(|e| query_err("reading the database's character set", e))?;

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
            kind: t.kind,
            rows_not_stored: t.rows_not_stored.clone(),
        })
        .collect();
    let mut sums: Vec<TableChecksum> = sequence_sums
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
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
            server_version: String::new(),
            database: database.to_string(),
            source: endpoint.display(),
            default_charset,
            default_collation,
            consistency: Consistency {
                method: snap.method.to_string(),
                connections: connections_used,
                commits_blocked_ms: snap.blocked_ms,
                not_at_snapshot,
            },
            binlog: snap.binlog,
            gtid_binlog_pos: snap.gtid,
            gtid_slave_pos: snap.slave_pos,
            snapshot_at: snap.at,
            read_from: None,
            max_statement_bytes: max_statement as u64,
            tables: entries,
            skipped,
            objects,
            raw_bytes,
        },
        artifacts,
        estimated_bytes,
    })
}

/// A table's schema artifact: its definition, and for a sequence the
/// `SETVAL` that gives it back its next value (read now, after the snapshot:
/// never behind it, so no value handed out before the set is handed out
/// again) with the checksum of the row it restores.
async fn schema_text(
    control: &mut Conn,
    t: &TableInfo,
) -> Result<(String, Option<TableChecksum>), MysqlError> {
    let what = match t.kind {
        TableKind::Sequence => "SEQUENCE",
        _ => "TABLE",
    };
    let show = format!("SHOW CREATE {what} {}", quote_ident(&t.name));
    let row: Option<(String, String)> = control
        .query_first(&show)
        .await
        .map_err(|e| table_read_err(&t.name, &show, e))?;
    let create = row.map(|r| r.1).unwrap_or_default();
    let mut text = format!(
        "/*!40101 SET NAMES utf8mb4 */;\nSET SESSION sql_mode='NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION';\nSET SESSION foreign_key_checks=0;\nDROP TABLE IF EXISTS {};\n{};\n",
        quote_ident(&t.name),
        create
    );
    if t.kind != TableKind::Sequence {
        return Ok((text, None));
    }
    let query = select_stored(&t.name, t.kind, &t.columns);
    let mut result = control
        .query_iter(query.as_str())
        .await
        .map_err(|e| table_read_err(&t.name, &query, e))?;
    let row = result
        .next()
        .await
        .map_err(|e| table_read_err(&t.name, &query, e))?;
    drop(result);
    let Some(row) = row else {
        return Err(MysqlError::Query {
            doing: format!("reading sequence {}", t.name),
            detail: "it returned no row".into(),
        });
    };
    let value = |column: &str| -> Option<String> {
        let i = t.columns.iter().position(|c| c == column)?;
        match row.as_ref(i) {
            Some(mysql_async::Value::Bytes(b)) => String::from_utf8(b.clone()).ok(),
            _ => None,
        }
    };
    let (Some(next), round) = (
        value("next_not_cached_value"),
        value("cycle_count").unwrap_or_else(|| "0".into()),
    ) else {
        return Err(MysqlError::Query {
            doing: format!("reading sequence {}", t.name),
            detail: "no next_not_cached_value column".into(),
        });
    };
    let mut sum = TableChecksum::default();
    sum.add_row((0..t.columns.len()).map(|i| match row.as_ref(i) {
        Some(mysql_async::Value::Bytes(b)) => Some(b.as_slice()),
        _ => None,
    }));
    text.push_str(&format!(
        "DO SETVAL({}, {next}, 0, {round});\n",
        quote_ident(&t.name)
    ));
    Ok((text, Some(sum)))
}

/// An error reading a table, where DDL since the snapshot (ALTER that
/// rebuilt it, DROP, a dropped or renamed column) says so plainly.
pub(super) fn table_read_err(table: &str, doing: &str, e: mysql_async::Error) -> MysqlError {
    match &e {
        // 1412: table definition has changed (rebuilt since the snapshot);
        // 1146: no such table; 1054: unknown column.
        mysql_async::Error::Server(se) if matches!(se.code, 1412 | 1146 | 1054) => {
            MysqlError::SchemaChanged {
                tables: table.to_string(),
                detail: format!("{doing}: {}", se.message),
            }
        }
        _ => query_err(format!("{doing} ({table})"), e),
    }
}

/// The workers' shared state: what they read and where they write.
struct Pool {
    tables: Arc<Vec<TableInfo>>,
    store: Arc<Store>,
    set_key: String,
    level: i32,
    progress: Progress,
    fence: Option<crate::catalog::Fence>,
}

impl Pool {
    /// Runs `tasks` (largest first) over the worker connections, each in its
    /// snapshot, and gives the connections back for the next pass. The first
    /// error stops the others early.
    async fn run(
        &self,
        workers: Vec<RowConn>,
        mut tasks: Vec<chunks::Task>,
    ) -> Result<(Vec<RowConn>, Vec<TaskResult>), MysqlError> {
        tasks.sort_by_key(|t| std::cmp::Reverse(t.weight));
        let queue = Arc::new(Mutex::new(VecDeque::from(tasks)));
        let mut handles = Workers::new();
        for conn in workers {
            let queue = queue.clone();
            let tables = self.tables.clone();
            let store = self.store.clone();
            let set_key = self.set_key.clone();
            let progress = self.progress.clone();
            let level = self.level;
            let fence = self.fence.clone();
            handles.spawn(async move {
                let mut conn = conn;
                let mut results = Vec::new();
                loop {
                    let task = match queue.lock() {
                        Ok(mut q) => q.pop_front(),
                        Err(_) => None,
                    };
                    let Some(task) = task else { break };
                    // A run that lost its lock writes nothing more.
                    let fenced = match &fence {
                        Some(f) => f.check().map_err(|e| MysqlError::LockLost {
                            detail: e.to_string(),
                        }),
                        None => Ok(()),
                    };
                    let chunk = match fenced {
                        Ok(()) => {
                            dump_chunk(
                                &mut conn,
                                &tables[task.table],
                                &task,
                                &store,
                                &set_key,
                                level,
                                &progress,
                            )
                            .await
                        }
                        Err(e) => Err(e),
                    };
                    match chunk {
                        Ok(r) => results.push(r),
                        Err(e) => {
                            if let Ok(mut q) = queue.lock() {
                                q.clear();
                            }
                            conn.disconnect().await;
                            return Err(e);
                        }
                    }
                }
                Ok::<_, MysqlError>((conn, results))
            });
        }
        let mut conns = Vec::new();
        let mut results = Vec::new();
        let mut first_err = None;
        for h in handles.join().await {
            match h {
                Ok(Ok((conn, r))) => {
                    conns.push(conn);
                    results.extend(r);
                }
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
            for c in conns {
                c.disconnect().await;
            }
            return Err(e);
        }
        Ok((conns, results))
    }
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
        .put_sealed(&format!("{set_key}{path}"), Bytes::from(z))
        .await?)
}
