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
//! Output: per table a schema artifact and data artifacts (chunks of primary-key
//! ranges), each plain SQL compressed with zstd, so `zstd -dc db/*.sql.zst |
//! mariadb NEWDB` restores a set without wpdr.

use super::checksum::TableChecksum;
use super::pipeline::{ArtifactWriter, BLOCK_BYTES};
use super::sql::{bits_into, escape_into, quote_ident};
use super::{exec, query_err, server_version, Endpoint, MysqlError};
use crate::catalog::{
    Artifact, BinlogPosition, Consistency, DatabaseSection, SchemaObject, TableEntry,
};
use crate::store::{Store, Written};
use bytes::Bytes;
use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

/// How a column's text-protocol value is written as a SQL literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Literal {
    Number,
    Bits,
    Text,
    Binary,
}

fn literal_kind(t: ColumnType, charset: u16) -> Literal {
    use ColumnType::*;
    match t {
        MYSQL_TYPE_DECIMAL
        | MYSQL_TYPE_NEWDECIMAL
        | MYSQL_TYPE_TINY
        | MYSQL_TYPE_SHORT
        | MYSQL_TYPE_LONG
        | MYSQL_TYPE_LONGLONG
        | MYSQL_TYPE_INT24
        | MYSQL_TYPE_FLOAT
        | MYSQL_TYPE_DOUBLE
        | MYSQL_TYPE_YEAR => Literal::Number,
        MYSQL_TYPE_BIT => Literal::Bits,
        MYSQL_TYPE_DATE
        | MYSQL_TYPE_NEWDATE
        | MYSQL_TYPE_TIME
        | MYSQL_TYPE_TIME2
        | MYSQL_TYPE_DATETIME
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIMESTAMP
        | MYSQL_TYPE_TIMESTAMP2
        | MYSQL_TYPE_JSON => Literal::Text,
        _ if charset == 63 => Literal::Binary,
        _ => Literal::Text,
    }
}

fn push_value(out: &mut Vec<u8>, kind: Literal, v: Option<&Value>) {
    match v {
        None | Some(Value::NULL) => out.extend_from_slice(b"NULL"),
        Some(Value::Bytes(b)) => match kind {
            Literal::Number => out.extend_from_slice(b),
            Literal::Bits => bits_into(out, b),
            Literal::Text => {
                out.push(b'\'');
                escape_into(out, b);
                out.push(b'\'');
            }
            Literal::Binary => {
                out.extend_from_slice(b"_binary'");
                escape_into(out, b);
                out.push(b'\'');
            }
        },
        // The text protocol returns only bytes or NULL; other variants are
        // rendered through their SQL form for completeness.
        Some(other) => out.extend_from_slice(other.as_sql(false).as_bytes()),
    }
}

fn value_bytes(v: Option<&Value>) -> Option<&[u8]> {
    match v {
        Some(Value::Bytes(b)) => Some(b.as_slice()),
        _ => None,
    }
}

/// A table as the snapshot sees it.
#[derive(Debug, Clone)]
pub(crate) struct TableInfo {
    pub name: String,
    pub engine: String,
    pub data_length: u64,
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
    /// The primary key's first column when it is an integer: chunks are ranges of it.
    pub int_key: Option<String>,
}

impl TableInfo {
    pub fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn order_by(&self) -> String {
        if self.primary_key.is_empty() {
            String::new()
        } else {
            format!(
                " ORDER BY {}",
                self.primary_key
                    .iter()
                    .map(|c| quote_ident(c))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
    }
}

/// Lists the base tables of `db` with their stored (non-generated) columns and keys.
pub(crate) async fn list_tables(conn: &mut Conn, db: &str) -> Result<Vec<TableInfo>, MysqlError> {
    let rows: Vec<(String, Option<String>, Option<u64>)> = conn
        .exec(
            "SELECT TABLE_NAME, ENGINE, DATA_LENGTH FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            (db,),
        )
        .await
        .map_err(|e| query_err("listing tables", e))?;
    let cols: Vec<(String, String, String, String, String)> = conn
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, EXTRA, IS_GENERATED FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (db,),
        )
        .await
        .or_else(|_| Ok::<_, mysql_async::Error>(Vec::new()))
        .map_err(|e| query_err("listing columns", e))?;
    let cols = if cols.is_empty() {
        // MySQL has no IS_GENERATED column; EXTRA says "VIRTUAL GENERATED" there.
        let plain: Vec<(String, String, String, String)> = conn
            .exec(
                "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, EXTRA FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, ORDINAL_POSITION",
                (db,),
            )
            .await
            .map_err(|e| query_err("listing columns", e))?;
        plain
            .into_iter()
            .map(|(t, c, d, e)| (t, c, d, e, String::new()))
            .collect()
    } else {
        cols
    };
    let keys: Vec<(String, String)> = conn
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND INDEX_NAME = 'PRIMARY' ORDER BY TABLE_NAME, SEQ_IN_INDEX",
            (db,),
        )
        .await
        .map_err(|e| query_err("listing primary keys", e))?;
    let mut out = Vec::new();
    for (name, engine, data_length) in rows {
        let mut columns = Vec::new();
        let mut types = Vec::new();
        for (t, c, dt, extra, generated) in cols.iter().filter(|c| c.0 == name) {
            let _ = t;
            let is_generated = generated.eq_ignore_ascii_case("ALWAYS")
                || extra.to_ascii_uppercase().contains("GENERATED")
                    && !extra.to_ascii_uppercase().contains("DEFAULT_GENERATED");
            if !is_generated {
                columns.push(c.clone());
                types.push((c.clone(), dt.to_ascii_lowercase()));
            }
        }
        let primary_key: Vec<String> = keys
            .iter()
            .filter(|k| k.0 == name)
            .map(|k| k.1.clone())
            .collect();
        // Ranges on the first key column partition the table whether or not the
        // key has more columns (wp_term_relationships: object_id, term_taxonomy_id).
        let int_key = primary_key.first().and_then(|first| {
            types
                .iter()
                .find(|(c, _)| c == first)
                .filter(|(_, dt)| {
                    matches!(
                        dt.as_str(),
                        "tinyint" | "smallint" | "mediumint" | "int" | "bigint"
                    )
                })
                .map(|(c, _)| c.clone())
        });
        out.push(TableInfo {
            name,
            engine: engine.unwrap_or_default(),
            data_length: data_length.unwrap_or(0),
            columns,
            primary_key,
            int_key,
        });
    }
    Ok(out)
}

/// One table in a dry-run plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedTable {
    pub name: String,
    pub engine: String,
    pub estimated_bytes: u64,
    /// The integer key that chunks are cut on, if any.
    pub split_by: Option<String>,
}

/// What a backup of `db` would read, without opening a snapshot.
pub async fn plan_tables(conn: &mut Conn, db: &str) -> Result<Vec<PlannedTable>, MysqlError> {
    Ok(list_tables(conn, db)
        .await?
        .into_iter()
        .map(|t| PlannedTable {
            name: t.name,
            engine: t.engine,
            estimated_bytes: t.data_length,
            split_by: t.int_key,
        })
        .collect())
}

/// Removes `DEFINER=user@host` so objects can be created on a server that lacks that account.
pub(crate) fn strip_definer(stmt: &str) -> String {
    let Some(at) = stmt.find("DEFINER=") else {
        return stmt.to_string();
    };
    let bytes = stmt.as_bytes();
    let mut i = at + "DEFINER=".len();
    let mut part = 0;
    while part < 2 && i < bytes.len() {
        if bytes[i] == b'`' || bytes[i] == b'\'' {
            let q = bytes[i];
            i += 1;
            while i < bytes.len() {
                if bytes[i] == q {
                    if i + 1 < bytes.len() && bytes[i + 1] == q {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
        } else {
            while i < bytes.len() && bytes[i] != b'@' && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
        }
        part += 1;
        if part == 1 && i < bytes.len() && bytes[i] == b'@' {
            i += 1;
        } else {
            break;
        }
    }
    let rest = stmt[i..].trim_start();
    format!("{}{}", &stmt[..at], rest)
}

/// A file name part derived from a table name: readable, safe in any store.
fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

struct Task {
    table: usize,
    chunk: usize,
    /// `WHERE` clause restricting the key range, empty for the whole table.
    range: String,
    weight: u64,
}

struct TaskResult {
    table: usize,
    chunk: usize,
    written: Written,
    sum: TableChecksum,
    max_statement: usize,
    raw_bytes: u64,
}

struct Snapshot {
    method: &'static str,
    blocked_ms: f64,
    binlog: Option<BinlogPosition>,
    gtid: Option<String>,
    slave_pos: Option<String>,
    /// The server's clock at the snapshot (no transaction in it committed later).
    at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The server's clock, the one binary log timestamps are taken from.
async fn server_now(conn: &mut Conn) -> Result<chrono::DateTime<chrono::Utc>, MysqlError> {
    let micros: Option<i64> = conn
        .query_first("SELECT CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)")
        .await
        .map_err(|e| query_err("reading the server's clock", e))?;
    micros
        .and_then(chrono::DateTime::from_timestamp_micros)
        .ok_or_else(|| MysqlError::Query {
            doing: "reading the server's clock".into(),
            detail: "no answer".into(),
        })
}

async fn start_snapshot(conn: &mut Conn) -> Result<(), MysqlError> {
    exec(
        conn,
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    )
    .await?;
    exec(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT").await
}

async fn master_status(conn: &mut Conn) -> Result<Option<BinlogPosition>, MysqlError> {
    let row: Option<Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(|e| query_err("SHOW MASTER STATUS", e))?;
    Ok(row.and_then(|r| {
        let file: Option<String> = r.get(0);
        let pos: Option<u64> = r.get(1);
        match (file, pos) {
            (Some(file), Some(position)) if !file.is_empty() => {
                Some(BinlogPosition { file, position })
            }
            _ => None,
        }
    }))
}

/// Opens the workers' snapshots at one shared point; see the module docs.
async fn open_snapshots(
    control: &mut Conn,
    workers: &mut [Conn],
    mariadb: bool,
) -> Result<Snapshot, MysqlError> {
    if workers.len() == 1 {
        let w = &mut workers[0];
        start_snapshot(w).await?;
        let rows: Vec<(String, String)> = w
            .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
            .await
            .map_err(|e| query_err("reading the snapshot's binlog position", e))?;
        let file = rows
            .iter()
            .find(|r| r.0.eq_ignore_ascii_case("Binlog_snapshot_file"))
            .map(|r| r.1.clone());
        let pos = rows
            .iter()
            .find(|r| r.0.eq_ignore_ascii_case("Binlog_snapshot_position"))
            .and_then(|r| r.1.parse::<u64>().ok());
        let binlog = match (file, pos) {
            (Some(file), Some(position)) if !file.is_empty() => {
                Some(BinlogPosition { file, position })
            }
            _ => None,
        };
        let gtid = match &binlog {
            Some(b) if mariadb => control
                .exec_first::<Option<String>, _, _>(
                    "SELECT BINLOG_GTID_POS(?, ?)",
                    (b.file.clone(), b.position),
                )
                .await
                .map_err(|e| query_err("BINLOG_GTID_POS", e))?
                .flatten(),
            _ => None,
        };
        let at = Some(server_now(w).await?);
        return Ok(Snapshot {
            method: "single-connection",
            blocked_ms: 0.0,
            binlog,
            gtid,
            slave_pos: None,
            at,
        });
    }
    exec(control, "SET SESSION lock_wait_timeout = 60").await?;
    let (method, lock, unlock) = if mariadb {
        (
            "backup-stage-block-commit",
            "BACKUP STAGE START",
            "BACKUP STAGE END",
        )
    } else {
        (
            "flush-tables-with-read-lock",
            "FLUSH TABLES WITH READ LOCK",
            "UNLOCK TABLES",
        )
    };
    exec(control, lock).await?;
    let held = Instant::now();
    let result = async {
        if mariadb {
            exec(control, "BACKUP STAGE BLOCK_COMMIT").await?;
        }
        let opened = futures::future::join_all(workers.iter_mut().map(start_snapshot)).await;
        for r in opened {
            r?;
        }
        let binlog = master_status(control).await?;
        let gtid: Option<String> = if mariadb {
            control
                .query_first("SELECT @@gtid_binlog_pos")
                .await
                .map_err(|e| query_err("reading @@gtid_binlog_pos", e))?
        } else {
            control
                .query_first::<Option<String>, _>("SELECT @@gtid_executed")
                .await
                .ok()
                .flatten()
                .flatten()
        };
        // On a replica, its SQL thread cannot commit either while blocked:
        // the primary's GTIDs applied so far are exactly the snapshot's.
        let slave_pos: Option<String> = if mariadb {
            control
                .query_first::<Option<String>, _>("SELECT @@gtid_slave_pos")
                .await
                .ok()
                .flatten()
                .flatten()
        } else {
            None
        };
        let at = server_now(control).await?;
        Ok::<_, MysqlError>((
            binlog,
            gtid.filter(|g| !g.is_empty()),
            slave_pos.filter(|g| !g.is_empty()),
            at,
        ))
    }
    .await;
    let end = exec(control, unlock).await;
    let blocked_ms = held.elapsed().as_secs_f64() * 1000.0;
    let (binlog, gtid, slave_pos, at) = result?;
    end?;
    Ok(Snapshot {
        method,
        blocked_ms,
        binlog,
        gtid,
        slave_pos,
        at: Some(at),
    })
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
    let mut tasks = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let chunks = (t.data_length / opts.chunk_bytes.max(1)).clamp(1, 10_000);
        match (&t.int_key, chunks > 1) {
            (Some(key), true) => {
                let bounds: Option<(Option<String>, Option<String>)> = workers[0]
                    .query_first(format!(
                        "SELECT CAST(MIN({k}) AS CHAR), CAST(MAX({k}) AS CHAR) FROM {t}",
                        k = quote_ident(key),
                        t = quote_ident(&t.name)
                    ))
                    .await
                    .map_err(|e| query_err(format!("reading key range of {}", t.name), e))?;
                let (lo, hi) = match bounds {
                    Some((Some(lo), Some(hi))) => (
                        lo.parse::<i128>().unwrap_or(0),
                        hi.parse::<i128>().unwrap_or(0),
                    ),
                    _ => (0, 0),
                };
                let span = hi - lo + 1;
                let n = (chunks as i128).min(span.max(1));
                let step = (span + n - 1) / n;
                let k = quote_ident(key);
                for c in 0..n {
                    let from = lo + c * step;
                    let to = from + step;
                    let range = match (c == 0, c == n - 1) {
                        (true, true) => String::new(),
                        (true, false) => format!(" WHERE {k} < {to}"),
                        (false, true) => format!(" WHERE {k} >= {from}"),
                        (false, false) => format!(" WHERE {k} >= {from} AND {k} < {to}"),
                    };
                    tasks.push(Task {
                        table: i,
                        chunk: c as usize + 1,
                        range,
                        weight: t.data_length / n as u64,
                    });
                }
            }
            _ => tasks.push(Task {
                table: i,
                chunk: 1,
                range: String::new(),
                weight: t.data_length,
            }),
        }
    }
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

async fn put_compressed(
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

async fn dump_chunk(
    conn: &mut Conn,
    table: &TableInfo,
    task: &Task,
    store: &Arc<Store>,
    set_key: &str,
    level: i32,
    progress: &Progress,
) -> Result<TaskResult, MysqlError> {
    let path = format!(
        "db/2-data-{:04}-{:05}-{}.sql.zst",
        task.table + 1,
        task.chunk,
        slug(&table.name)
    );
    let mut writer = ArtifactWriter::start(
        store.clone(),
        format!("{set_key}{path}"),
        path.clone(),
        level,
    );
    let outcome = write_chunk(conn, table, task, &mut writer, progress).await;
    match outcome {
        Ok((sum, max_statement)) => {
            let raw_bytes = writer.raw_bytes();
            let written = writer.finish().await?;
            Ok(TaskResult {
                table: task.table,
                chunk: task.chunk,
                written,
                sum,
                max_statement,
                raw_bytes,
            })
        }
        Err(e) => {
            drop(writer);
            Err(e)
        }
    }
}

async fn write_chunk(
    conn: &mut Conn,
    table: &TableInfo,
    task: &Task,
    writer: &mut ArtifactWriter,
    progress: &Progress,
) -> Result<(TableChecksum, usize), MysqlError> {
    let mut block: Vec<u8> = Vec::with_capacity(BLOCK_BYTES + STATEMENT_BYTES);
    block.extend_from_slice(
        format!(
            "-- wpdr data: table {} chunk {}\n{DATA_HEADER}",
            quote_ident(&table.name),
            task.chunk
        )
        .as_bytes(),
    );
    let mut sum = TableChecksum::default();
    let mut max_statement = 0usize;
    if table.columns.is_empty() {
        writer.write(block).await?;
        return Ok((sum, 0));
    }
    let insert_prefix = format!(
        "INSERT INTO {} ({}) VALUES ",
        quote_ident(&table.name),
        table.select_list()
    );
    let query = format!(
        "SELECT {} FROM {}{}{}",
        table.select_list(),
        quote_ident(&table.name),
        task.range,
        table.order_by()
    );
    let mut result = conn
        .query_iter(query.as_str())
        .await
        .map_err(|e| query_err(format!("reading {}", table.name), e))?;
    let kinds: Vec<Literal> = result
        .columns()
        .map(|cols| {
            cols.iter()
                .map(|c| literal_kind(c.column_type(), c.character_set()))
                .collect()
        })
        .unwrap_or_default();
    let mut statement_start: Option<usize> = None;
    while let Some(row) = result
        .next()
        .await
        .map_err(|e| query_err(format!("reading {}", table.name), e))?
    {
        sum.add_row((0..kinds.len()).map(|i| value_bytes(row.as_ref(i))));
        match statement_start {
            None => {
                statement_start = Some(block.len());
                block.extend_from_slice(insert_prefix.as_bytes());
            }
            Some(_) => block.push(b','),
        }
        block.push(b'(');
        for (i, kind) in kinds.iter().enumerate() {
            if i > 0 {
                block.push(b',');
            }
            push_value(&mut block, *kind, row.as_ref(i));
        }
        block.push(b')');
        if let Some(start) = statement_start {
            if block.len() - start >= STATEMENT_BYTES {
                max_statement = max_statement.max(block.len() - start);
                block.extend_from_slice(b";\n");
                statement_start = None;
                if block.len() >= BLOCK_BYTES {
                    let n = block.len() as u64;
                    writer
                        .write(std::mem::replace(
                            &mut block,
                            Vec::with_capacity(BLOCK_BYTES + STATEMENT_BYTES),
                        ))
                        .await?;
                    progress(n);
                }
            }
        }
    }
    if let Some(start) = statement_start {
        max_statement = max_statement.max(block.len() - start);
        block.extend_from_slice(b";\n");
    }
    let n = block.len() as u64;
    writer.write(block).await?;
    progress(n);
    Ok((sum, max_statement))
}

/// Orders views so that a view comes after the views it selects from.
fn order_views(mut views: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut ordered = Vec::new();
    while !views.is_empty() {
        let names: Vec<String> = views.iter().map(|v| v.0.clone()).collect();
        let ready = views.iter().position(|(name, def)| {
            !names
                .iter()
                .any(|other| other != name && def.contains(&quote_ident(other)))
        });
        // A cycle cannot exist between views; if the heuristic finds one, keep the order.
        let i = ready.unwrap_or(0);
        ordered.push(views.remove(i));
    }
    ordered
}

/// `SHOW CREATE <kind>` of a routine, trigger or event as a `;;`-delimited
/// block that recreates it under the `sql_mode` it was created with.
/// `body_column` is where the statement is in the SHOW output.
async fn object_block(
    conn: &mut Conn,
    kind: &str,
    name: &str,
    body_column: usize,
) -> Result<Option<String>, MysqlError> {
    let show = format!("SHOW CREATE {kind} {}", quote_ident(name));
    let row: Option<Row> = conn
        .query_first(&show)
        .await
        .map_err(|e| query_err(&show, e))?;
    let Some(row) = row else { return Ok(None) };
    let sql_mode: String = row.get(1).unwrap_or_default();
    let Some(create) = row.get::<Option<String>, _>(body_column).flatten() else {
        return Err(MysqlError::Privilege {
            user: String::new(),
            detail: format!("{show} returned no body; the backup user needs SELECT on mysql.proc (or to be the object's definer)"),
        });
    };
    Ok(Some(format!(
        "SET SESSION sql_mode='{sql_mode}' ;;\nDROP {kind} IF EXISTS {} ;;\n{} ;;\n",
        quote_ident(name),
        strip_definer(&create)
    )))
}

async fn dump_objects(
    conn: &mut Conn,
    db: &str,
    store: &Store,
    set_key: &str,
    level: i32,
) -> Result<(Vec<SchemaObject>, Vec<Written>), MysqlError> {
    let mut objects = Vec::new();
    let mut written = Vec::new();
    let header = "/*!40101 SET NAMES utf8mb4 */;\nDELIMITER ;;\n";

    // Routines first: views and triggers may call them.
    let routines: Vec<(String, String)> = conn
        .exec(
            "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? ORDER BY ROUTINE_TYPE, ROUTINE_NAME",
            (db,),
        )
        .await
        .map_err(|e| query_err("listing routines", e))?;
    let views: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME",
            (db,),
        )
        .await
        .map_err(|e| query_err("listing views", e))?;
    let triggers: Vec<String> = conn
        .exec(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER",
            (db,),
        )
        .await
        .map_err(|e| query_err("listing triggers", e))?;
    let events: Vec<String> = conn
        .exec(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? ORDER BY EVENT_NAME",
            (db,),
        )
        .await
        .map_err(|e| query_err("listing events", e))?;

    let mut routine_text = String::from(header);
    for (name, kind) in &routines {
        if let Some(block) = object_block(conn, kind, name, 2).await? {
            routine_text.push_str(&block);
            objects.push((
                kind.to_ascii_lowercase(),
                name.clone(),
                "db/3-routines.sql.zst",
            ));
        }
    }

    let mut view_defs = Vec::new();
    for name in &views {
        let show = format!("SHOW CREATE VIEW {}", quote_ident(name));
        let row: Option<Row> = conn
            .query_first(&show)
            .await
            .map_err(|e| query_err(&show, e))?;
        if let Some(def) = row.and_then(|r| r.get::<String, _>(1)) {
            view_defs.push((name.clone(), strip_definer(&def)));
        }
    }
    let mut view_text = String::from(header);
    for (name, def) in order_views(view_defs) {
        view_text.push_str(&format!(
            "DROP TABLE IF EXISTS {q} ;;\nDROP VIEW IF EXISTS {q} ;;\n{def} ;;\n",
            q = quote_ident(&name)
        ));
        objects.push(("view".into(), name, "db/4-views.sql.zst"));
    }

    let mut trigger_text = String::from(header);
    for name in &triggers {
        if let Some(block) = object_block(conn, "TRIGGER", name, 2).await? {
            trigger_text.push_str(&block);
            objects.push(("trigger".into(), name.clone(), "db/5-triggers.sql.zst"));
        }
    }

    let mut event_text = String::from(header);
    for name in &events {
        if let Some(block) = object_block(conn, "EVENT", name, 3).await? {
            event_text.push_str(&block);
            objects.push(("event".into(), name.clone(), "db/6-events.sql.zst"));
        }
    }

    for (path, text, count) in [
        ("db/3-routines.sql.zst", routine_text, routines.len()),
        ("db/4-views.sql.zst", view_text, views.len()),
        ("db/5-triggers.sql.zst", trigger_text, triggers.len()),
        ("db/6-events.sql.zst", event_text, events.len()),
    ] {
        if count > 0 {
            let text = format!("{text}DELIMITER ;\n");
            written.push(put_compressed(store, set_key, path, text.as_bytes(), level).await?);
        }
    }
    let objects = objects
        .into_iter()
        .map(|(kind, name, artifact)| SchemaObject {
            kind,
            name,
            artifact: artifact.to_string(),
        })
        .collect();
    Ok((objects, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_definers() {
        assert_eq!(
            strip_definer("CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW `v` AS select 1"),
            "CREATE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `v` AS select 1"
        );
        assert_eq!(
            strip_definer(
                "CREATE DEFINER=`we``ird`@`%` TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET @a=1"
            ),
            "CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET @a=1"
        );
        assert_eq!(
            strip_definer("CREATE VIEW v AS select 1"),
            "CREATE VIEW v AS select 1"
        );
    }

    #[test]
    fn views_are_ordered_after_their_dependencies() {
        let v = order_views(vec![
            ("b".into(), "CREATE VIEW `b` AS select * from `a`".into()),
            ("a".into(), "CREATE VIEW `a` AS select * from `t`".into()),
        ]);
        assert_eq!(v[0].0, "a");
    }

    #[test]
    fn literals_by_column_type() {
        let mut out = Vec::new();
        push_value(
            &mut out,
            Literal::Binary,
            Some(&Value::Bytes(vec![0, b'\'', 200])),
        );
        assert_eq!(out, b"_binary'\\0\\'\xc8'");
        out.clear();
        push_value(
            &mut out,
            Literal::Number,
            Some(&Value::Bytes(b"-1.50".to_vec())),
        );
        push_value(&mut out, Literal::Text, None);
        assert_eq!(out, b"-1.50NULL");
        assert_eq!(
            literal_kind(ColumnType::MYSQL_TYPE_BLOB, 63),
            Literal::Binary
        );
        assert_eq!(literal_kind(ColumnType::MYSQL_TYPE_BLOB, 45), Literal::Text);
        assert_eq!(
            literal_kind(ColumnType::MYSQL_TYPE_DATETIME, 63),
            Literal::Text
        );
    }
}
