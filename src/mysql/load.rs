//! Loads a set's database artifacts into a server and proves the result.
//!
//! Order: tables (schema), then each table's data chunks over N connections
//! with foreign-key and unique checks off (the artifacts say so) and binary
//! logging off when the user may; each table, as soon as its own chunks are
//! in, gets its deferred secondary indexes built and is re-read, its row
//! count and content checksum compared with the manifest — while other
//! tables still load ([`super::load_order`]). Last, routines, views,
//! triggers and events.

use super::checksum::{sum_hex, TableChecksum};
use super::load_order::{LoadQueue, LoadTask};
use super::pipeline::StatementReader;
use super::row_conn::RowConn;
use super::sql::quote_ident;
use super::stream_rewrite::{self, StreamRewrite, TableTally, ValueRewrite};
use super::workers::Workers;
use super::{exec, query_err, Endpoint, MysqlError};
use crate::catalog::{Artifact, DatabaseSection, TableEntry, TableKind};
use crate::store::Store;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct LoadOptions {
    pub connections: usize,
    /// Drop and recreate a target database that already holds objects.
    pub force: bool,
    /// Create plain secondary indexes after the data (a sorted bulk build)
    /// instead of maintaining them row by row during the load.
    pub defer_indexes: bool,
    /// Send data statements' rows as LOAD DATA LOCAL ([`super::load_data`])
    /// where the server allows it.
    pub load_data: bool,
    /// Values changed as they are loaded ([`super::stream_rewrite`]); each
    /// table's check then expects the set's rows with those changes.
    pub rewrite: Option<Arc<dyn ValueRewrite>>,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("connections", &self.connections)
            .field("force", &self.force)
            .field("defer_indexes", &self.defer_indexes)
            .field("load_data", &self.load_data)
            .field("rewrite", &self.rewrite.is_some())
            .finish()
    }
}

/// Called with compressed bytes of artifacts as they are loaded.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableCheck {
    pub table: String,
    pub expected_rows: u64,
    pub found_rows: u64,
    /// The set's checksum, moved by the rows the load's rewrite changed.
    pub expected_checksum: String,
    pub found_checksum: String,
    /// Rows the load's rewrite changed (none without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten_rows: Option<u64>,
}

impl TableCheck {
    pub fn ok(&self) -> bool {
        self.expected_rows == self.found_rows && self.expected_checksum == self.found_checksum
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub database: String,
    pub statements: u64,
    pub tables: Vec<TableCheck>,
    pub objects_created: usize,
    /// Wall time of each phase, in order: where a restore spends its time.
    pub phases: Vec<Phase>,
    /// Each table's share of the load (its phases overlap other tables').
    pub table_times: Vec<TableTime>,
    /// What the load's rewrite did, per table it changed or could not read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rewritten: Vec<TableTally>,
}

/// Where one table's restore time went. The phases of different tables
/// overlap, so these say which table holds the restore up: the one whose
/// `checked_at` is last, and what it spent on what.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableTime {
    pub table: String,
    /// Loading its rows: the sum over its chunks (which may run side by side).
    pub load_seconds: f64,
    /// Building its deferred secondary indexes.
    pub index_seconds: f64,
    /// Re-reading it and comparing it with the manifest.
    pub check_seconds: f64,
    /// When its check finished, counted from the start of the data phase.
    pub checked_at: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub seconds: f64,
}

/// Records phase durations as a restore goes.
struct Phases {
    list: Vec<Phase>,
    at: Instant,
}

impl Phases {
    fn new() -> Self {
        Phases {
            list: Vec::new(),
            at: Instant::now(),
        }
    }

    fn done(&mut self, name: &'static str) {
        self.record(name, Some(Instant::now()));
    }

    /// A phase that ended at `end` (None: it had nothing to do). Phases that
    /// overlapped count only the time after the previous one ended.
    fn record(&mut self, name: &'static str, end: Option<Instant>) {
        let end = end.unwrap_or(self.at).max(self.at);
        let seconds = (end - self.at).as_secs_f64();
        tracing::info!(phase = name, seconds, "restore phase done");
        self.list.push(Phase { name, seconds });
        self.at = end;
    }
}

impl LoadReport {
    pub fn mismatches(&self) -> Vec<&TableCheck> {
        self.tables.iter().filter(|t| !t.ok()).collect()
    }
}

/// What is already in a database: counts of tables, views and routines.
pub async fn describe_contents(conn: &mut Conn, db: &str) -> Result<Option<String>, MysqlError> {
    let tables: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
            (db,),
        )
        .await
        .map_err(|e| query_err("inspecting the target", e))?;
    let routines: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?",
            (db,),
        )
        .await
        .map_err(|e| query_err("inspecting the target", e))?;
    let (t, r) = (tables.unwrap_or(0), routines.unwrap_or(0));
    Ok(if t + r == 0 {
        None
    } else {
        Some(format!("{t} tables/views, {r} routines"))
    })
}

/// The statements to run instead of one read from an artifact (secondary
/// indexes deferred, values rewritten).
type StatementHook = Arc<dyn Fn(Vec<u8>) -> Vec<Vec<u8>> + Send + Sync>;

/// Runs the artifacts in `paths` over the connections, each artifact on one connection.
async fn run_artifacts(
    conns: Vec<Conn>,
    paths: Vec<(String, Option<(u64, String)>)>,
    store: Arc<Store>,
    set_key: &str,
    progress: Progress,
    hook: Option<StatementHook>,
) -> Result<(Vec<Conn>, u64), MysqlError> {
    let queue = Arc::new(Mutex::new(VecDeque::from(paths)));
    let mut handles = Workers::new();
    for mut conn in conns {
        let queue = queue.clone();
        let store = store.clone();
        let set_key = set_key.to_string();
        let progress = progress.clone();
        let hook = hook.clone();
        handles.spawn(async move {
            let mut statements = 0u64;
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some((path, expected)) = next else { break };
                let res = async {
                    let mut reader =
                        StatementReader::open(&store, &format!("{set_key}{path}"), &path, expected)
                            .await?;
                    run_statements(
                        &mut conn,
                        &mut reader,
                        &path,
                        &progress,
                        hook.as_ref(),
                        RowsAs::Insert,
                    )
                    .await
                }
                .await;
                match res {
                    Ok(n) => statements += n,
                    Err(e) => {
                        if let Ok(mut q) = queue.lock() {
                            q.clear();
                        }
                        return Err(e);
                    }
                }
            }
            Ok((conn, statements))
        });
    }
    join_loaders(handles).await
}

/// Waits for every load worker: their connections and statement counts, or
/// the first error (a worker that panicked is one).
async fn join_loaders(
    handles: Workers<Result<(Conn, u64), MysqlError>>,
) -> Result<(Vec<Conn>, u64), MysqlError> {
    let mut conns = Vec::new();
    let mut total = 0;
    let mut first_err = None;
    for h in handles.join().await {
        match h {
            Ok(Ok((c, n))) => {
                conns.push(c);
                total += n;
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(MysqlError::Query {
                    doing: "a load worker".into(),
                    detail: e.to_string(),
                });
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok((conns, total)),
    }
}

async fn run_statements(
    conn: &mut Conn,
    reader: &mut StatementReader,
    path: &str,
    progress: &Progress,
    hook: Option<&StatementHook>,
    rows_as: RowsAs,
) -> Result<u64, MysqlError> {
    let mut source = Statements {
        reader,
        hook,
        queued: VecDeque::new(),
        progress,
        reported: 0,
    };
    let mut n = 0u64;
    while let Some(stmt) = source.next().await? {
        let streamed = match rows_as {
            RowsAs::Insert => Ok(None),
            RowsAs::LoadData => stream_rows(conn, &mut source, &stmt, &mut n).await,
        };
        let failed = match streamed {
            Ok(Some(())) => {
                n += 1;
                continue;
            }
            Ok(None) => conn.query_drop(stmt.as_slice()).await.err(),
            Err(e) => Some(e),
        };
        if let Some(e) = failed {
            source.reader.check_rest().await?;
            let preview: String =
                String::from_utf8_lossy(&stmt[..stmt.len().min(120)]).into_owned();
            return Err(query_err(
                format!("loading {path} (statement {}: {preview}…)", n + 1),
                e,
            ));
        }
        n += 1;
    }
    Ok(n)
}

/// How a table's rows reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowsAs {
    /// The artifact's INSERT statements as they are.
    Insert,
    /// As LOAD DATA LOCAL, one for each run of statements that fit one
    /// layout.
    LoadData,
}

/// An artifact's statements as they are to run: read, passed through the
/// hook, with progress reported as the compressed bytes go by.
struct Statements<'a> {
    reader: &'a mut StatementReader,
    hook: Option<&'a StatementHook>,
    queued: VecDeque<Vec<u8>>,
    progress: &'a Progress,
    reported: u64,
}

impl Statements<'_> {
    async fn next(&mut self) -> Result<Option<Vec<u8>>, MysqlError> {
        loop {
            if let Some(s) = self.queued.pop_front() {
                return Ok(Some(s));
            }
            let Some(stmt) = self.reader.next().await? else {
                return Ok(None);
            };
            match self.hook {
                Some(h) => self.queued.extend(h(stmt)),
                None => self.queued.push_back(stmt),
            }
            if self.reader.compressed_read > self.reported {
                (self.progress)(self.reader.compressed_read - self.reported);
                self.reported = self.reader.compressed_read;
            }
        }
    }
}

/// Data statements sent as one `LOAD DATA LOCAL` per run of them that fits
/// one layout ([`super::load_data`]): `first` and the statements after it
/// stream through it while the server loads, until one does not fit (put
/// back for the caller). `Ok(None)`: `first` is no data statement the dump
/// writes, to run as SQL. `n` counts the statements streamed after `first`.
async fn stream_rows(
    conn: &mut Conn,
    source: &mut Statements<'_>,
    first: &[u8],
    n: &mut u64,
) -> Result<Option<()>, mysql_async::Error> {
    use super::load_data::{rows, Layout};
    let Some((layout, first_rows)) = super::insert::parse(first)
        .ok()
        .flatten()
        .and_then(|ins| Layout::of(&ins).map(|l| (l, rows(first, &ins))))
    else {
        return Ok(None);
    };
    // A few statements' rows in flight: bounded memory, and the next
    // statement is read and converted while the server loads this one.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(2);
    // Our rows only, whatever file name the server asks for; no other
    // LOCAL INFILE request finds a handler.
    conn.set_infile_handler(async move {
        let stream: mysql_async::InfileData =
            Box::pin(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            }));
        Ok(stream)
    });
    let feed = async {
        let fed: Result<(), MysqlError> = async {
            if tx.send(Ok(bytes::Bytes::from(first_rows))).await.is_err() {
                return Ok(());
            }
            loop {
                let Some(stmt) = source.next().await? else {
                    return Ok(());
                };
                let fitting = super::insert::parse(&stmt)
                    .ok()
                    .flatten()
                    .filter(|ins| layout.fits(ins))
                    .map(|ins| rows(&stmt, &ins));
                let Some(data) = fitting else {
                    source.queued.push_front(stmt);
                    return Ok(());
                };
                if tx.send(Ok(bytes::Bytes::from(data))).await.is_err() {
                    // The server stopped reading: its error is the query's.
                    return Ok(());
                }
                *n += 1;
            }
        }
        .await;
        if let Err(e) = &fed {
            // An artifact that fails to read ends the server's read as an
            // error, never as a short but complete-looking load.
            let _ = tx
                .send(Err(std::io::Error::other(format!(
                    "reading the artifact: {e}"
                ))))
                .await;
        }
        drop(tx);
        fed
    };
    let (loaded, fed) = tokio::join!(conn.query_drop(layout.sql()), feed);
    if let Err(e) = fed {
        return Err(mysql_async::Error::Other(Box::new(e)));
    }
    loaded.map(Some)
}

async fn open_loaders(endpoint: &Endpoint, db: &str, n: usize) -> Result<Vec<Conn>, MysqlError> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let mut c = endpoint.connect(Some(db)).await?;
        // Keep a restore out of the binary log when allowed (replicas are seeded separately).
        if c.query_drop("SET SESSION sql_log_bin = 0").await.is_err() {
            tracing::debug!(
                "cannot disable binary logging for the load session; continuing with it on"
            );
        }
        conns.push(c);
    }
    Ok(conns)
}

/// Loads `section` from the set under `set_key` into database `target_db`.
/// `artifacts` gives each artifact's size and SHA-256, checked while loading.
#[allow(clippy::too_many_arguments)]
pub async fn load(
    endpoint: &Endpoint,
    target_db: &str,
    section: &DatabaseSection,
    artifacts: &[Artifact],
    store: Arc<Store>,
    set_key: &str,
    opts: &LoadOptions,
    progress: Progress,
) -> Result<LoadReport, MysqlError> {
    let mut control = endpoint.connect(None).await?;
    let packet: Option<u64> = control
        .query_first("SELECT @@global.max_allowed_packet")
        .await
        .map_err(|e| query_err("reading max_allowed_packet", e))?;
    let need = section.max_statement_bytes + 4096;
    if let Some(have) = packet {
        if have < need {
            return Err(MysqlError::PacketTooSmall {
                have,
                need,
                need_rounded: need.div_ceil(1 << 20) << 20,
            });
        }
    }
    // LOAD DATA LOCAL only where the server takes it.
    let local_infile: Option<i64> = control
        .query_first("SELECT @@global.local_infile")
        .await
        .unwrap_or(None);
    let load_data = opts.load_data && local_infile == Some(1);
    if opts.load_data && !load_data {
        tracing::info!("the server disables local_infile: rows go as INSERT statements");
    }
    if let Some(what) = describe_contents(&mut control, target_db).await? {
        if !opts.force {
            return Err(MysqlError::TargetNotEmpty {
                name: target_db.to_string(),
                target: endpoint.display(),
                what,
            });
        }
        tracing::warn!(database = target_db, %what, "--force: dropping the target database");
        exec(
            &mut control,
            &format!("DROP DATABASE {}", quote_ident(target_db)),
        )
        .await?;
    }
    let mut create = format!("CREATE DATABASE IF NOT EXISTS {}", quote_ident(target_db));
    if !section.default_charset.is_empty() {
        create.push_str(&format!(" CHARACTER SET {}", section.default_charset));
    }
    if !section.default_collation.is_empty() {
        create.push_str(&format!(" COLLATE {}", section.default_collation));
    }
    exec(&mut control, &create).await?;
    let _ = control.disconnect().await;

    let mut phases = Phases::new();
    let conns = open_loaders(endpoint, target_db, opts.connections).await?;
    let by_path: std::collections::HashMap<&str, &Artifact> =
        artifacts.iter().map(|a| (a.path.as_str(), a)).collect();
    let expect = |p: &str| {
        let a = by_path.get(p);
        (p.to_string(), a.map(|a| (a.size, a.sha256.clone())))
    };
    let schema = section
        .tables
        .iter()
        .map(|t| expect(&t.schema_artifact))
        .collect();
    // Deferred index builds: (the table as CREATE TABLE names it, ALTER).
    let deferred: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let hook: Option<StatementHook> = if opts.defer_indexes {
        let deferred = deferred.clone();
        Some(Arc::new(move |stmt: Vec<u8>| {
            let Ok(text) = std::str::from_utf8(&stmt) else {
                return vec![stmt];
            };
            match defer_secondary_keys(text) {
                Some(d) => {
                    if let Ok(mut all) = deferred.lock() {
                        all.push((d.table, d.alter));
                    }
                    vec![d.create.into_bytes()]
                }
                None => vec![stmt],
            }
        }))
    } else {
        None
    };
    let (mut conns, s1) = run_artifacts(
        conns,
        schema,
        store.clone(),
        set_key,
        progress.clone(),
        hook,
    )
    .await?;
    let rows_as = match conns.first_mut() {
        Some(conn) if load_data => rows_as(conn, target_db, &section.tables).await?,
        _ => vec![RowsAs::Insert; section.tables.len()],
    };
    // The rewrite's columns are the target's, now that its tables exist.
    let rewrite = match (&opts.rewrite, conns.first_mut()) {
        (Some(rewrite), Some(conn)) => {
            let text = stream_rewrite::text_columns(conn, target_db)
                .await
                .map_err(|e| query_err("reading the target's text columns", e))?;
            let names: Vec<String> = section.tables.iter().map(|t| t.name.clone()).collect();
            Some(Arc::new(StreamRewrite::new(rewrite.clone(), &names, &text)))
        }
        _ => None,
    };

    // Each table's chunks (largest tables first, so the tail is short), then
    // its deferred index build and its check, overlapped across tables.
    let mut data: Vec<(usize, String)> = Vec::new();
    for (i, t) in section.tables.iter().enumerate() {
        for p in &t.data_artifacts {
            data.push((i, p.clone()));
        }
    }
    data.sort_by_key(|(i, _)| std::cmp::Reverse(section.tables[*i].rows));
    let mut alters: Vec<Option<String>> = vec![None; section.tables.len()];
    let mut unplaced = Vec::new();
    for (table, alter) in deferred.lock().map(|d| d.clone()).unwrap_or_default() {
        match section
            .tables
            .iter()
            .position(|t| quote_ident(&t.name) == table)
        {
            Some(i) if alters[i].is_none() => alters[i] = Some(alter),
            _ => unplaced.push(alter),
        }
    }
    let work = TableWork {
        tables: section.tables.clone(),
        chunks: data.iter().map(|(_, p)| expect(p)).collect(),
        alters,
        store: store.clone(),
        set_key: set_key.to_string(),
        progress: progress.clone(),
        rewrite: rewrite.clone(),
        rows_as,
        check_at: (endpoint.clone(), target_db.to_string()),
    };
    let order = data
        .iter()
        .enumerate()
        .map(|(chunk, (table, _))| (*table, chunk))
        .collect();
    let (conns, s2, tables, marks, table_times) = load_tables(conns, work, order).await?;
    // Index builds whose table was not recognised still run, after all rows.
    let mut conns = run_sql(conns, unplaced).await?;
    phases.record("data", marks.chunks);
    phases.record("indexes", marks.indexes);
    phases.record("verify", marks.checks);

    // Schema objects in their fixed order, on one connection.
    let mut object_paths: Vec<String> =
        section.objects.iter().map(|o| o.artifact.clone()).collect();
    object_paths.sort();
    object_paths.dedup();
    let mut s3 = 0;
    if let Some(first) = conns.pop() {
        let object_paths = object_paths.iter().map(|p| expect(p)).collect();
        let (mut back, n) =
            run_artifacts(vec![first], object_paths, store, set_key, progress, None).await?;
        conns.append(&mut back);
        s3 = n;
    }

    for c in conns {
        let _ = c.disconnect().await;
    }
    phases.done("objects");
    let rewritten = match &rewrite {
        Some(r) => (0..section.tables.len())
            .map(|i| r.tally(i))
            .filter(|t| t.rows_changed > 0 || t.not_read.is_some() || !t.columns.is_empty())
            .collect(),
        None => Vec::new(),
    };
    Ok(LoadReport {
        database: target_db.to_string(),
        statements: s1 + s2 + s3,
        tables,
        objects_created: section.objects.len(),
        phases: phases.list,
        table_times,
        rewritten,
    })
}

/// How each table's rows go, by what the target's tables are. As LOAD DATA
/// where it is faster: not into a table with an auto-increment column while
/// the server holds a table lock for each bulk insert into one
/// (innodb_autoinc_lock_mode 1, the default: the table's other connections
/// would wait, measured slower than INSERTs with 4 connections in
/// docs/BENCHMARKS.md), and not the history rows of system-versioned tables
/// (their periods are written with system_versioning_insert_history).
async fn rows_as(
    conn: &mut Conn,
    db: &str,
    tables: &[TableEntry],
) -> Result<Vec<RowsAs>, MysqlError> {
    let interleaved: Option<i64> = conn
        .query_first("SELECT @@global.innodb_autoinc_lock_mode")
        .await
        .unwrap_or(None);
    let auto_increment: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND EXTRA LIKE '%auto_increment%'",
            (db,),
        )
        .await
        .map_err(|e| query_err("reading the target's auto-increment columns", e))?;
    Ok(tables
        .iter()
        .map(|t| match t.kind {
            TableKind::Table if interleaved == Some(2) || !auto_increment.contains(&t.name) => {
                RowsAs::LoadData
            }
            _ => RowsAs::Insert,
        })
        .collect())
}

/// Reads the rows of one table straight from the set's artifacts, without
/// a server: `each` gets every row's values by the manifest's column names
/// (NULL as `None`). For small tables a restore must know about before it
/// loads (the site's own address, in its options).
pub async fn set_rows(
    store: &Store,
    set_key: &str,
    table: &TableEntry,
    artifacts: &[Artifact],
    mut each: impl FnMut(&[String], &[Option<&[u8]>]),
) -> Result<(), MysqlError> {
    for path in &table.data_artifacts {
        let expected = artifacts
            .iter()
            .find(|a| &a.path == path)
            .map(|a| (a.size, a.sha256.clone()));
        let mut reader =
            StatementReader::open(store, &format!("{set_key}{path}"), path, expected).await?;
        while let Some(stmt) = reader.next().await? {
            let ins = super::insert::parse(&stmt).map_err(|e| MysqlError::Artifact {
                path: path.clone(),
                detail: format!("a data statement wpdr cannot read back: {e}"),
            })?;
            let Some(ins) = ins else { continue };
            for row in &ins.rows {
                let values: Vec<_> = row.iter().map(|l| l.value(&stmt)).collect();
                let refs: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
                each(&ins.columns, &refs);
            }
        }
    }
    Ok(())
}

/// Runs independent statements over the connections in parallel.
async fn run_sql(conns: Vec<Conn>, statements: Vec<String>) -> Result<Vec<Conn>, MysqlError> {
    let queue = Arc::new(Mutex::new(VecDeque::from(statements)));
    let mut handles = Workers::new();
    for mut conn in conns {
        let queue = queue.clone();
        handles.spawn(async move {
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(sql) = next else { break };
                exec(&mut conn, &sql).await?;
            }
            Ok::<_, MysqlError>(conn)
        });
    }
    let mut out = Vec::new();
    for h in handles.join().await {
        match h {
            Ok(r) => out.push(r?),
            Err(e) => {
                return Err(MysqlError::Query {
                    doing: "building indexes".into(),
                    detail: e.to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// A `CREATE TABLE` without its plain secondary indexes, and the index build
/// that adds them once the rows are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredKeys {
    pub create: String,
    /// The table as the statement names it (quoted).
    pub table: String,
    pub alter: String,
}

/// Splits the plain secondary indexes (`KEY ...` lines) off a `CREATE TABLE`
/// as `SHOW CREATE TABLE` prints it. Tables with foreign keys, full-text or
/// spatial indexes, or anything unexpected are left whole (`None`).
pub fn defer_secondary_keys(create: &str) -> Option<DeferredKeys> {
    let body_start = create.find("CREATE TABLE `")?;
    if body_start != 0 && !create[..body_start].trim().is_empty() {
        return None;
    }
    if create.contains("FOREIGN KEY")
        || create.contains("FULLTEXT KEY")
        || create.contains("SPATIAL KEY")
    {
        return None;
    }
    let first_line = create.lines().next()?;
    let name = first_line
        .strip_prefix("CREATE TABLE ")?
        .strip_suffix(" (")?;
    let mut kept: Vec<&str> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let mut lines = create.lines();
    kept.push(lines.next()?);
    let mut tail: Vec<&str> = Vec::new();
    for line in lines.by_ref() {
        if line.starts_with(')') {
            tail.push(line);
            break;
        }
        if line.starts_with("  KEY `") {
            keys.push(line.trim().trim_end_matches(',').to_string());
        } else {
            kept.push(line);
        }
    }
    tail.extend(lines);
    if keys.is_empty() || tail.is_empty() || kept.len() < 2 {
        return None;
    }
    // The last definition must not end with a comma any more.
    let last = kept.len() - 1;
    let fixed_last = kept[last].trim_end_matches(',').to_string();
    let mut out = String::with_capacity(create.len());
    for l in &kept[..last] {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(&fixed_last);
    out.push('\n');
    out.push_str(&tail.join("\n"));
    let alter = format!(
        "ALTER TABLE {name} {}",
        keys.iter()
            .map(|k| format!("ADD {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Some(DeferredKeys {
        create: out,
        table: name.to_string(),
        alter,
    })
}

/// Re-reads every table and computes the same row count and checksum as the dump.
pub async fn verify_tables(
    endpoint: &Endpoint,
    database: &str,
    connections: usize,
    tables: &[TableEntry],
) -> Result<Vec<TableCheck>, MysqlError> {
    let mut conns = Vec::new();
    for _ in 0..connections.max(1) {
        conns.push(RowConn::connect(endpoint, database).await?);
    }
    let queue = Arc::new(Mutex::new(
        tables.iter().cloned().enumerate().collect::<VecDeque<_>>(),
    ));
    let mut handles = Workers::new();
    for mut conn in conns {
        let queue = queue.clone();
        handles.spawn(async move {
            let mut out = Vec::new();
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some((i, t)) = next else { break };
                out.push((i, check_table(&mut conn, &t, None).await?));
            }
            conn.disconnect().await;
            Ok::<_, MysqlError>(out)
        });
    }
    let mut all = Vec::new();
    for h in handles.join().await {
        match h {
            Ok(r) => all.extend(r?),
            Err(e) => {
                return Err(MysqlError::Query {
                    doing: "verifying tables".into(),
                    detail: e.to_string(),
                })
            }
        }
    }
    all.sort_by_key(|x| x.0);
    Ok(all.into_iter().map(|x| x.1).collect())
}

/// Re-reads one table and compares it with its manifest entry (moved by
/// what a rewrite during the load changed, when there was one).
async fn check_table(
    conn: &mut RowConn,
    t: &TableEntry,
    rewritten: Option<&TableTally>,
) -> Result<TableCheck, MysqlError> {
    // Rows kept elsewhere (FEDERATED, ...) are not the set's to check.
    let sum = match t.rows_not_stored {
        Some(_) => TableChecksum::default(),
        None => conn.table_checksum(t).await?,
    };
    let mut expected_checksum = t.checksum.clone();
    let mut rewritten_rows = None;
    if let Some(tally) = rewritten.filter(|r| r.rows_changed > 0) {
        // A checksum that is not hex cannot equal the table's anyway.
        if let Ok(set_sum) = u128::from_str_radix(&t.checksum, 16) {
            expected_checksum = sum_hex(tally.expected_sum(set_sum));
        }
        rewritten_rows = Some(tally.rows_changed);
    }
    Ok(TableCheck {
        table: t.name.clone(),
        expected_rows: t.rows,
        found_rows: sum.rows,
        expected_checksum,
        found_checksum: sum.hex(),
        rewritten_rows,
    })
}

/// What the per-table load works on.
struct TableWork {
    tables: Vec<TableEntry>,
    /// Data artifacts: path and (size, SHA-256) to check while reading.
    chunks: Vec<(String, Option<(u64, String)>)>,
    alters: Vec<Option<String>>,
    store: Arc<Store>,
    set_key: String,
    progress: Progress,
    rewrite: Option<Arc<StreamRewrite>>,
    /// How each table's rows go.
    rows_as: Vec<RowsAs>,
    /// Where a worker's checks connect (their own connection, the lean
    /// row reader where it can).
    check_at: (Endpoint, String),
}

/// When the last chunk, index build and check finished (None: there was none).
#[derive(Debug, Default, Clone, Copy)]
struct Marks {
    chunks: Option<Instant>,
    indexes: Option<Instant>,
    checks: Option<Instant>,
}

struct Shared {
    queue: LoadQueue,
    failed: bool,
    checks: Vec<Option<TableCheck>>,
    marks: Marks,
    times: Vec<TableTime>,
}

/// Loads every table's chunks, builds its deferred indexes and checks it,
/// each connection taking the next task [`LoadQueue`] has ready. The first
/// failure stops every worker at its next task.
async fn load_tables(
    conns: Vec<Conn>,
    work: TableWork,
    order: Vec<(usize, usize)>,
) -> Result<(Vec<Conn>, u64, Vec<TableCheck>, Marks, Vec<TableTime>), MysqlError> {
    let work = Arc::new(work);
    let began = Instant::now();
    let shared = Arc::new(Mutex::new(Shared {
        queue: LoadQueue::new(order, work.alters.iter().map(Option::is_some).collect()),
        failed: false,
        checks: vec![None; work.tables.len()],
        marks: Marks::default(),
        times: work
            .tables
            .iter()
            .map(|t| TableTime {
                table: t.name.clone(),
                ..TableTime::default()
            })
            .collect(),
    }));
    let notify = Arc::new(Notify::new());
    let poisoned = || MysqlError::Query {
        doing: "loading tables".into(),
        detail: "the load's shared state was poisoned by a panic".into(),
    };
    let mut handles = Workers::new();
    for mut conn in conns {
        let (work, shared, notify) = (work.clone(), shared.clone(), notify.clone());
        handles.spawn(async move {
            let mut statements = 0u64;
            let mut checker: Option<RowConn> = None;
            loop {
                let task = loop {
                    let notified = notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    let finished = {
                        let mut s = shared.lock().map_err(|_| poisoned())?;
                        if let Some(task) = s.queue.take().filter(|_| !s.failed) {
                            break task;
                        }
                        s.failed || s.queue.done()
                    };
                    if finished {
                        if let Some(c) = checker.take() {
                            c.disconnect().await;
                        }
                        return Ok((conn, statements));
                    }
                    notified.await;
                };
                let started = Instant::now();
                let outcome = run_task(&mut conn, &mut checker, &work, &task).await;
                {
                    let mut s = shared.lock().map_err(|_| poisoned())?;
                    match outcome {
                        Ok(done) => {
                            let now = Instant::now();
                            let took = (now - started).as_secs_f64();
                            match (&task, done) {
                                (LoadTask::Chunk { table, .. }, TaskDone::Statements(n)) => {
                                    statements += n;
                                    s.marks.chunks = Some(now);
                                    s.times[*table].load_seconds += took;
                                }
                                (LoadTask::Check { table }, TaskDone::Checked(check)) => {
                                    s.checks[*table] = Some(check);
                                    s.marks.checks = Some(now);
                                    let time = &mut s.times[*table];
                                    time.check_seconds += took;
                                    time.checked_at = (now - began).as_secs_f64();
                                    tracing::debug!(
                                        table = %time.table,
                                        load_seconds = time.load_seconds,
                                        index_seconds = time.index_seconds,
                                        check_seconds = time.check_seconds,
                                        checked_at = time.checked_at,
                                        "table restored"
                                    );
                                }
                                (LoadTask::Indexes { table }, _) => {
                                    s.marks.indexes = Some(now);
                                    s.times[*table].index_seconds += took;
                                }
                                // A task's answer is of its own kind.
                                _ => {}
                            }
                            s.queue.finished(&task);
                        }
                        Err(e) => {
                            s.failed = true;
                            drop(s);
                            notify.notify_waiters();
                            return Err(e);
                        }
                    }
                }
                notify.notify_waiters();
            }
        });
    }
    let (conns, total) = join_loaders(handles).await?;
    let s = shared.lock().map_err(|_| poisoned())?;
    let checks = s
        .checks
        .iter()
        .zip(&work.tables)
        .map(|(c, t)| {
            c.clone().ok_or_else(|| MysqlError::Query {
                doing: format!("checking {}", t.name),
                detail: "the load ended without checking this table".into(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((conns, total, checks, s.marks, s.times.clone()))
}

enum TaskDone {
    Statements(u64),
    Indexed,
    Checked(TableCheck),
}

async fn run_task(
    conn: &mut Conn,
    checker: &mut Option<RowConn>,
    work: &TableWork,
    task: &LoadTask,
) -> Result<TaskDone, MysqlError> {
    match *task {
        LoadTask::Chunk { chunk, table } => {
            let (path, expected) = &work.chunks[chunk];
            let mut reader = StatementReader::open(
                &work.store,
                &format!("{}{path}", work.set_key),
                path,
                expected.clone(),
            )
            .await?;
            let hook: Option<StatementHook> = work.rewrite.clone().map(|r| {
                let path = path.clone();
                Arc::new(move |stmt: Vec<u8>| r.statement(table, stmt, &path)) as StatementHook
            });
            let n = run_statements(
                conn,
                &mut reader,
                path,
                &work.progress,
                hook.as_ref(),
                work.rows_as[table],
            )
            .await?;
            Ok(TaskDone::Statements(n))
        }
        LoadTask::Indexes { table } => {
            if let Some(alter) = &work.alters[table] {
                exec(conn, alter).await?;
            }
            Ok(TaskDone::Indexed)
        }
        LoadTask::Check { table } => {
            let tally = work.rewrite.as_ref().map(|r| r.tally(table));
            let checker = match checker {
                Some(c) => c,
                None => {
                    let (endpoint, database) = &work.check_at;
                    checker.insert(RowConn::connect(endpoint, database).await?)
                }
            };
            Ok(TaskDone::Checked(
                check_table(checker, &work.tables[table], tally.as_ref()).await?,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defers_plain_secondary_keys_only() {
        let create = "CREATE TABLE `wp_postmeta` (\n  `meta_id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,\n  `meta_key` varchar(255) DEFAULT NULL,\n  PRIMARY KEY (`meta_id`),\n  UNIQUE KEY `u` (`meta_key`),\n  KEY `post_id` (`post_id`),\n  KEY `meta_key` (`meta_key`(191))\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";
        let DeferredKeys {
            create: c,
            alter: a,
            table,
        } = defer_secondary_keys(create).unwrap();
        assert_eq!(table, "`wp_postmeta`");
        assert_eq!(c, "CREATE TABLE `wp_postmeta` (\n  `meta_id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,\n  `meta_key` varchar(255) DEFAULT NULL,\n  PRIMARY KEY (`meta_id`),\n  UNIQUE KEY `u` (`meta_key`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4");
        assert_eq!(a, "ALTER TABLE `wp_postmeta` ADD KEY `post_id` (`post_id`), ADD KEY `meta_key` (`meta_key`(191))");
        assert!(defer_secondary_keys("CREATE TABLE `c` (\n  `a` int,\n  KEY `a` (`a`),\n  CONSTRAINT `f` FOREIGN KEY (`a`) REFERENCES `p` (`id`)\n) ENGINE=InnoDB").is_none());
        assert!(defer_secondary_keys("CREATE TABLE `t` (\n  `a` int\n) ENGINE=InnoDB").is_none());
        assert!(defer_secondary_keys("DROP TABLE IF EXISTS `t`").is_none());
    }
}
