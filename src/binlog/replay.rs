//! Point-in-time restore: pick the newest set before the point, then replay
//! the archived transactions after its GTID position up to the point.
//!
//! wpdr chooses the transactions itself, from the GTIDs and commit times it
//! indexed: it writes a binlog file holding exactly those transactions
//! (whole, byte for byte, CRC32 checked) and pipes it through
//! `mariadb-binlog | mariadb`, the server's own tools, as the operators do.
//! Selecting whole transactions by GTID makes the stop exact; letting
//! `--stop-datetime` cut the stream would stop at an event, possibly inside a
//! transaction, and count time by statement start rather than by commit.
//!
//! The point's meaning: `--to-gtid P` replays every transaction at or
//! before P (per domain); `--to-time T` replays, in commit order, every
//! transaction up to the first whose commit event is stamped T or later
//! (binary log timestamps are whole seconds on the server's clock).

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::archive::{read_head, Head};
use super::chain::{join, run_for, Run};
use super::event::{Fed, GroupTracker, RawEvent, BINLOG_MAGIC};
use super::gtid::GtidPos;
use super::rollup;
use super::segment::{self, SegmentIndex};
use super::BinlogError;
use crate::catalog::SetSummary;
use crate::mysql::Endpoint;
use crate::store::Store;

#[derive(Debug, Clone, PartialEq)]
pub enum Point {
    Time(DateTime<Utc>),
    Gtid(GtidPos),
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Point::Time(t) => write!(
                f,
                "{}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            Point::Gtid(g) => write!(f, "GTID {g}"),
        }
    }
}

impl Point {
    /// `2026-11-25T10:00:00Z` (or with an offset, or `2026-11-25 10:00:00` as UTC).
    pub fn parse_time(text: &str) -> Result<Point, String> {
        if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
            return Ok(Point::Time(t.with_timezone(&Utc)));
        }
        chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S")
            .map(|n| Point::Time(n.and_utc()))
            .map_err(|_| format!("'{text}' is not a time like 2026-11-25T10:00:00Z"))
    }

    /// The moment of a time point (`None` for a GTID position).
    pub fn time(&self) -> Option<DateTime<Utc>> {
        match self {
            Point::Time(t) => Some(*t),
            Point::Gtid(_) => None,
        }
    }

    pub fn parse_gtid(text: &str) -> Result<Point, String> {
        let p = GtidPos::parse(text)?;
        if p.is_empty() {
            return Err("an empty GTID position".into());
        }
        Ok(Point::Gtid(p))
    }
}

/// What a point-in-time restore will do.
#[derive(Debug, Clone, Serialize)]
pub struct PitrPlan {
    pub set_id: String,
    pub base: GtidPos,
    pub point: String,
    #[serde(skip)]
    pub target: Point,
    /// Segments holding transactions after the set (read in this order).
    pub segments: Vec<String>,
    #[serde(skip)]
    pub indexes: Vec<SegmentIndex>,
}

/// Chooses the set and segments for `point`. `sets` are newest first (as
/// `Catalog::list` gives them); `named` is the set the user named (None for
/// `latest`: the newest set that reaches the point).
pub async fn plan(
    store: &Store,
    site_prefix: &str,
    sets: &[SetSummary],
    named: Option<&SetSummary>,
    point: &Point,
) -> Result<PitrPlan, BinlogError> {
    // Choose on the days' summaries; read the segments only of the days applied.
    let archive = rollup::scan(store, site_prefix, &mut rollup::ScanCache::default()).await?;
    let head = read_head(store, site_prefix).await?;
    let runs: Vec<Run> = join(&archive.pieces(), head.as_ref().map(Head::vouch))
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    let not_recoverable = |reason: String| BinlogError::NotRecoverable {
        point: point.to_string(),
        reason,
    };
    let candidates: Vec<&SetSummary> = match named {
        Some(m) => vec![m],
        None => sets.iter().collect(),
    };
    let mut reasons = Vec::new();
    for m in candidates {
        let Some(base) = super::chain::set_position(m) else {
            reasons.push(format!("set {} recorded no GTID position", m.id));
            continue;
        };
        let before = match point {
            Point::Time(t) => m.snapshot_at < *t,
            Point::Gtid(g) => g.includes(&base),
        };
        if !before {
            reasons.push(format!("set {} is after the point", m.id));
            continue;
        }
        if matches!(point, Point::Gtid(g) if base.includes(g)) {
            return Ok(new_plan(m, base, point, Vec::new()));
        }
        let Some(run) = run_for(&runs, &base) else {
            reasons.push(format!(
                "no unbroken archive starts at or before set {}'s position {base}",
                m.id
            ));
            continue;
        };
        let reaches = match point {
            Point::Time(t) => run.covered_until >= *t,
            Point::Gtid(g) => run.end.includes(g),
        };
        if !reaches {
            reasons.push(format!(
                "the archive after set {} ends at {} ({})",
                m.id,
                run.covered_until
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                run.end
            ));
            continue;
        }
        let needed =
            chain_after(store, site_prefix, &archive, head.as_ref(), m, &base, point).await?;
        return Ok(new_plan(m, base, point, needed));
    }
    Err(not_recoverable(if reasons.is_empty() {
        "there is no backup set".into()
    } else {
        reasons.join("; ")
    }))
}

fn new_plan(m: &SetSummary, base: GtidPos, point: &Point, indexes: Vec<SegmentIndex>) -> PitrPlan {
    PitrPlan {
        set_id: m.id.clone(),
        base,
        point: point.to_string(),
        target: point.clone(),
        segments: indexes.iter().map(|s| s.name.clone()).collect(),
        indexes,
    }
}

/// The segments a replay after set `m` applies, in chain order: read from
/// the day before the set's snapshot on (the segment holding its position
/// closed after the snapshot; a day covers any clock skew between the
/// backup and the archiver), and from the whole archive when that is not enough.
async fn chain_after(
    store: &Store,
    site_prefix: &str,
    archive: &rollup::Archive,
    head: Option<&Head>,
    m: &SetSummary,
    base: &GtidPos,
    point: &Point,
) -> Result<Vec<SegmentIndex>, BinlogError> {
    let from_day = (m.snapshot_at - chrono::Duration::days(1)).date_naive();
    for from in [Some(from_day), None] {
        let segments = rollup::segments(store, site_prefix, archive, from).await?;
        let pieces: Vec<Run> = segments.iter().map(Run::of).collect();
        let runs = join(&pieces, head.map(Head::vouch));
        let found = runs
            .iter()
            .rev()
            .find(|(r, _)| base.includes(&r.start) && r.end.includes(base));
        if let Some((_, chain)) = found {
            return Ok(segments_for(&segments, chain, base, point));
        }
    }
    Err(BinlogError::NotRecoverable {
        point: point.to_string(),
        reason: format!(
            "the archive's days list an unbroken run from set {}'s position {base}, but its segments do not form one (were objects removed from the store by hand?). Restore a set as it is, or to a point another set reaches",
            m.id
        ),
    })
}

/// The chain's segments, in order, from the first with transactions after
/// `base` to the one where the point is reached.
fn segments_for(
    segments: &[SegmentIndex],
    chain: &[usize],
    base: &GtidPos,
    point: &Point,
) -> Vec<SegmentIndex> {
    let mut out = Vec::new();
    for s in chain.iter().map(|&i| &segments[i]) {
        if base.includes(&s.end) {
            continue;
        }
        if let Point::Time(t) = point {
            if s.first_commit >= *t {
                break;
            }
        }
        out.push(s.clone());
        if matches!(point, Point::Gtid(g) if s.end.includes(g)) {
            break;
        }
    }
    out
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ReplayReport {
    pub transactions: u64,
    pub segments: usize,
    pub first_gtid: Option<String>,
    pub last_gtid: Option<String>,
    pub last_commit: Option<DateTime<Utc>>,
    /// The position the restored database is at.
    pub position: String,
    pub seconds: f64,
    /// Whether the target server wrote the replayed transactions to its own
    /// binary log (under their original GTIDs); see [`logging_for`].
    pub logged: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_logged_because: Option<String>,
    /// The first chosen GTID of each domain.
    #[serde(skip)]
    pub first: GtidPos,
}

/// Writes the selected transactions as binlog files in `dir` (one per
/// segment, each with its Format_description event). Returns the files.
/// Only transactions that act on `source_db` are written (others on the same
/// server are left out and not counted; `mariadb-binlog --database` filters
/// the same way again when applying).
pub async fn select(
    store: &Store,
    site_prefix: &str,
    plan: &PitrPlan,
    source_db: &str,
    dir: &Path,
    report: &mut ReplayReport,
) -> Result<Vec<PathBuf>, BinlogError> {
    let mut files = Vec::new();
    let mut position = plan.base.clone();
    'segments: for (i, index) in plan.indexes.iter().enumerate() {
        // Streamed: one event in memory at a time; each group's events go to
        // the file as they come and are cut off again if it is not chosen.
        let mut stream = segment::EventStream::open(store, site_prefix, index).await?;
        let fde = stream.fde().clone();
        let checksum_len = if fde.fde_checksummed() { 4 } else { 0 };
        let mut tracker = GroupTracker::new(fde.fde_checksummed());
        let path = dir.join(format!("{i:05}.binlog"));
        let mut out = SelectedFile::create(&path, &fde)?;
        let mut group_start = out.len;
        let mut ours = false;
        let mut kept = false;
        let mut stop = false;
        while let Some(e) = stream.next_event().await? {
            match tracker.feed(&e) {
                Fed::Outside => {}
                Fed::Abandoned(_) => {
                    // The open group never ended: drop what it wrote.
                    out.truncate(group_start)?;
                    ours = e.database(checksum_len) == Some(source_db.as_bytes());
                    out.write(&e)?;
                }
                Fed::InGroup => {
                    ours |= e.database(checksum_len) == Some(source_db.as_bytes());
                    out.write(&e)?;
                }
                Fed::Completed(g) => {
                    ours |= e.database(checksum_len) == Some(source_db.as_bytes());
                    out.write(&e)?;
                    // Against the position reached so far, not only the
                    // set's: a GTID is applied at most once, whatever the
                    // segments hold.
                    let take = !position.contains(&g.gtid)
                        && match &plan.target {
                            Point::Gtid(p) => p.contains(&g.gtid),
                            Point::Time(t) => segment::from_unix(g.commit_time) < *t,
                        };
                    if matches!(plan.target, Point::Time(_)) && !take && !position.contains(&g.gtid)
                    {
                        stop = true;
                    }
                    if take {
                        position.advance(g.gtid);
                    }
                    if take && ours {
                        kept = true;
                        report.transactions += 1;
                        report.first_gtid.get_or_insert_with(|| g.gtid.to_string());
                        if report.first.get(g.gtid.domain).is_none() {
                            report.first.advance(g.gtid);
                        }
                        report.last_gtid = Some(g.gtid.to_string());
                        report.last_commit = Some(segment::from_unix(g.commit_time));
                    } else {
                        out.truncate(group_start)?;
                    }
                    group_start = out.len;
                    ours = false;
                    if stop {
                        break;
                    }
                }
            }
        }
        // A group still open at the end was never completed: not replayed.
        out.truncate(group_start)?;
        if kept {
            out.finish()?;
            files.push(path);
            report.segments += 1;
        } else {
            drop(out);
            let _ = std::fs::remove_file(&path);
        }
        if stop {
            break 'segments;
        }
    }
    report.position = position.to_string();
    Ok(files)
}

/// A binlog file being written for the replay: the magic, the segment's
/// Format_description event, then the chosen groups.
struct SelectedFile {
    path: PathBuf,
    file: std::fs::File,
    len: u64,
}

impl SelectedFile {
    fn create(path: &Path, fde: &RawEvent) -> Result<SelectedFile, BinlogError> {
        let mut f = SelectedFile {
            path: path.to_path_buf(),
            file: std::fs::File::create(path).map_err(|e| spool_err(path, e))?,
            len: 0,
        };
        f.write_bytes(BINLOG_MAGIC)?;
        f.write_bytes(&fde.0)?;
        Ok(f)
    }

    fn write(&mut self, e: &RawEvent) -> Result<(), BinlogError> {
        self.write_bytes(&e.0)
    }

    fn write_bytes(&mut self, b: &[u8]) -> Result<(), BinlogError> {
        self.file
            .write_all(b)
            .map_err(|e| spool_err(&self.path, e))?;
        self.len += b.len() as u64;
        Ok(())
    }

    fn truncate(&mut self, to: u64) -> Result<(), BinlogError> {
        if to == self.len {
            return Ok(());
        }
        use std::io::Seek;
        self.file
            .set_len(to)
            .and_then(|_| self.file.seek(std::io::SeekFrom::Start(to)).map(|_| ()))
            .map_err(|e| spool_err(&self.path, e))?;
        self.len = to;
        Ok(())
    }

    fn finish(self) -> Result<(), BinlogError> {
        self.file.sync_all().map_err(|e| spool_err(&self.path, e))
    }
}

fn spool_err(path: &Path, e: std::io::Error) -> BinlogError {
    BinlogError::Spool {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Applies binlog files to `database` on `target` with
/// `mariadb-binlog | mariadb`, keeping only events of `source_db` (renamed
/// to `database`). The password goes through a private option file, never
/// the command line.
/// Whether a replay may write its transactions to the target's binary log.
///
/// Replayed transactions carry their original GTIDs. On a server that has a
/// history of its own at or past them — the archived server itself, or any
/// server whose position in their domain is already beyond — logging them
/// would move its `gtid_binlog_pos` backwards, break the chain of whatever
/// archives it, and hand its replicas those GTIDs a second time: they are
/// then applied without being logged. On a fresh primary (no position in
/// their domains, or an older one) they become its history, so replicas
/// seeded after the replay start from the point restored.
pub fn logging_for(
    log_bin: bool,
    server_pos: &GtidPos,
    first_replayed: &GtidPos,
) -> Result<(), String> {
    if !log_bin {
        return Ok(());
    }
    for domain_first in first_replayed.iter() {
        if server_pos.contains(domain_first) {
            return Err(format!(
                "the server's own GTID position {server_pos} is at or past the first replayed transaction {domain_first}: logging the replay would rewind its history"
            ));
        }
    }
    Ok(())
}

/// The `mariadb` client's options for `database.tls` (the replay connects
/// as the restore did). The client has no CA-only check: the verify modes
/// both check the certificate and its host name.
pub fn client_tls_args(tls: &crate::config::TlsConfig) -> Vec<String> {
    use crate::config::TlsMode;
    let mut args = Vec::new();
    match tls.mode {
        TlsMode::Disabled => {
            args.push("--skip-ssl".to_string());
            return args;
        }
        TlsMode::Preferred => {}
        TlsMode::Required => args.push("--ssl".into()),
        TlsMode::VerifyCa | TlsMode::VerifyIdentity => {
            args.push("--ssl".into());
            args.push("--ssl-verify-server-cert".into());
        }
    }
    for (flag, file) in [
        ("--ssl-ca", &tls.ca_file),
        ("--ssl-cert", &tls.cert_file),
        ("--ssl-key", &tls.key_file),
    ] {
        if let Some(f) = file {
            args.push(format!("{flag}={}", f.display()));
        }
    }
    args
}

pub async fn apply(
    files: &[PathBuf],
    dir: &Path,
    target: &Endpoint,
    source_db: &str,
    database: &str,
    disable_log_bin: bool,
) -> Result<(), BinlogError> {
    if files.is_empty() {
        return Ok(());
    }
    let fail = |detail: String| BinlogError::Replay {
        target: target.display(),
        detail,
    };
    let (binlog_tool, client_tool) = tools().map_err(fail)?;
    let options = dir.join("client.cnf");
    write_private(
        &options,
        &format!(
            "[client]\nuser={}\npassword={}\n",
            option_value(&target.user),
            option_value(target.password.expose())
        ),
    )
    .map_err(|e| fail(format!("cannot write {}: {e}", options.display())))?;
    let mut binlog = std::process::Command::new(&binlog_tool);
    // mariadb-binlog filters on the original name, then renames.
    binlog
        .arg("--no-defaults")
        .arg(format!("--database={source_db}"));
    if disable_log_bin {
        // `SET sql_log_bin=0` first: applied, not written to the server's log.
        binlog.arg("--disable-log-bin");
    }
    if source_db != database {
        binlog.arg(format!("--rewrite-db={source_db}->{database}"));
    }
    binlog.args(files);
    let mut client = std::process::Command::new(&client_tool);
    client
        .arg(format!("--defaults-extra-file={}", options.display()))
        .arg("--binary-mode")
        .arg("--batch")
        .arg("--max-allowed-packet=1G");
    match &target.socket {
        Some(s) => {
            client.arg(format!("--socket={}", s.display()));
        }
        None => {
            client
                .arg(format!("--host={}", target.host))
                .arg(format!("--port={}", target.port))
                .arg("--protocol=TCP")
                .args(client_tls_args(&target.tls));
        }
    }
    client.arg(database);
    let outcome = tokio::task::spawn_blocking(move || pipe(binlog, client))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let _ = std::fs::remove_file(&options);
    outcome.map_err(fail)
}

fn pipe(
    mut producer: std::process::Command,
    mut consumer: std::process::Command,
) -> Result<(), String> {
    use std::process::Stdio;
    let mut p = producer
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", producer.get_program()))?;
    let out = p.stdout.take().ok_or("no stdout from mariadb-binlog")?;
    let c = consumer
        .stdin(Stdio::from(out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", consumer.get_program()))?;
    let c_out = c.wait_with_output().map_err(|e| e.to_string())?;
    let p_out = p.wait_with_output().map_err(|e| e.to_string())?;
    if !p_out.status.success() {
        return Err(format!(
            "mariadb-binlog failed ({}): {}",
            p_out.status,
            String::from_utf8_lossy(&p_out.stderr).trim()
        ));
    }
    if !c_out.status.success() {
        return Err(format!(
            "the mariadb client failed ({}): {}",
            c_out.status,
            String::from_utf8_lossy(&c_out.stderr).trim()
        ));
    }
    Ok(())
}

/// `mariadb-binlog` and the `mariadb` client, or what is wrong with them.
fn tools() -> Result<(PathBuf, PathBuf), String> {
    let binlog = tool("WPDR_MARIADB_BINLOG", &["mariadb-binlog", "mysqlbinlog"]).ok_or(
        "mariadb-binlog is not installed (Debian: apt install mariadb-client), or WPDR_MARIADB_BINLOG names a missing file",
    )?;
    let client = tool("WPDR_MARIADB_CLIENT", &["mariadb", "mysql"]).ok_or(
        "the mariadb client is not installed (Debian: apt install mariadb-client), or WPDR_MARIADB_CLIENT names a missing file",
    )?;
    Ok((binlog, client))
}

/// Checks, before anything is loaded, that the replay tools are there.
pub fn check_tools(target: &Endpoint) -> Result<(), BinlogError> {
    tools().map(|_| ()).map_err(|detail| BinlogError::Replay {
        target: target.display(),
        detail,
    })
}

fn tool(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// An option-file value, quoted so `#`, spaces and quotes survive.
fn option_value(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// A private scratch directory for the replay files, removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new() -> Result<Self, BinlogError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!(
            "wpdr-replay-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| BinlogError::Spool {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points() {
        assert_eq!(
            Point::parse_time("2026-11-25T10:00:00Z").unwrap(),
            Point::parse_time("2026-11-25 10:00:00").unwrap()
        );
        assert_eq!(
            Point::parse_time("2026-11-25T11:00:00+01:00").unwrap(),
            Point::parse_time("2026-11-25 10:00:00").unwrap()
        );
        assert!(Point::parse_time("yesterday").is_err());
        assert!(Point::parse_gtid("").is_err());
        assert!(Point::parse_gtid("0-1-5").is_ok());
        assert_eq!(option_value("a\"b#c"), "\"a\\\"b#c\"");
    }

    #[test]
    fn a_replay_is_logged_only_where_it_cannot_rewind_the_server() {
        let pos = |t: &str| GtidPos::parse(t).unwrap();
        // The archived server itself, far past the replayed transactions.
        let e = logging_for(true, &pos("0-1-80672"), &pos("0-1-38455")).unwrap_err();
        assert!(e.contains("0-1-80672") && e.contains("0-1-38455"), "{e}");
        // Exactly at the first replayed GTID: logging it again would repeat it.
        assert!(logging_for(true, &pos("0-1-38455"), &pos("0-1-38455")).is_err());
        // A fresh primary, or one behind in that domain, or in another domain only.
        assert!(logging_for(true, &pos(""), &pos("0-1-38455")).is_ok());
        assert!(logging_for(true, &pos("0-1-3"), &pos("0-1-38455")).is_ok());
        assert!(logging_for(true, &pos("1-7-900"), &pos("0-1-38455")).is_ok());
        // Any domain past its replayed transactions is enough to refuse.
        assert!(logging_for(true, &pos("0-1-3,1-1-50"), &pos("0-1-38455,1-1-10")).is_err());
        // A server that does not log has nothing to rewind.
        assert!(logging_for(false, &pos("0-1-80672"), &pos("0-1-38455")).is_ok());
    }
}
