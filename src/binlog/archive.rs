//! `wpdr binlog archive`: follows the primary's binary log as a replica
//! would (COM_BINLOG_DUMP from a GTID position, MariaDB's
//! `@slave_connect_state`), and closes a segment at least every
//! `segment_seconds` or `segment_size`. Segments hold whole transactions
//! only; a restart or a failover resumes after the last archived
//! transaction, so there is no gap and no duplicate. When the server no
//! longer has that position (logs purged, or a failover to a server that
//! never had it) the gap is recorded in the store and reported by `status`
//! and the metrics; archiving goes on from the oldest position the server has.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::event::{
    Fed, GroupTracker, RawEvent, FORMAT_DESCRIPTION_EVENT, HEADER_LEN, HEARTBEAT_EVENT,
    INCIDENT_EVENT,
};
use super::gtid::GtidPos;
use super::rollup;
use super::segment::{SegmentIndex, SegmentSpool};
use super::BinlogError;
use crate::catalog::{Catalog, Fence};
use crate::config::Config;
use crate::mysql::{query_err, topology, Endpoint};
use crate::store::Store;

/// The store lock (under the site prefix) that keeps a site to one archiver.
pub const LOCK_NAME: &str = "binlog-lock.json";

/// How often the server sends a heartbeat while it has nothing new.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence longer than this means the connection is dead.
const SILENCE: Duration = Duration::from_secs(10);
/// ER_MASTER_FATAL_ERROR_READING_BINLOG: the position is not in the server's logs.
const ER_BINLOG_POSITION: u16 = 1236;

#[derive(Debug, Clone, Default)]
pub struct ArchiveOptions {
    /// Stop (after closing the open segment) once caught up with the primary.
    pub until_caught_up: bool,
    /// Stop after this long.
    pub run_for: Option<Duration>,
    /// Where the open segment is spooled (default: the system temp dir).
    pub spool_dir: Option<PathBuf>,
}

/// A recorded hole in the archive: transactions after `after` and before
/// `resumed_at` are not archived.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GapRecord {
    pub detected_at: DateTime<Utc>,
    pub server: String,
    pub after: GtidPos,
    pub resumed_at: GtidPos,
    pub detail: String,
    /// The server's history went backwards here: its log holds GTIDs twice,
    /// so following it by GTID is ambiguous and archiving stays stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rewound: bool,
}

/// The archiver's live state, rewritten on every segment and while idle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Head {
    pub server: String,
    /// The end of the archived chain.
    pub position: GtidPos,
    /// Every transaction committed before this had been archived.
    pub covered_until: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub host: String,
    pub pid: u32,
}

impl Head {
    /// What the idle archiver vouches for (see [`super::chain::join`]).
    pub fn vouch(&self) -> super::chain::Vouch<'_> {
        (&self.position, self.covered_until)
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ArchiveReport {
    pub segments: u64,
    pub transactions: u64,
    pub bytes: u64,
    pub gaps: Vec<GapRecord>,
    pub position: String,
    pub server: String,
}

pub fn gaps_prefix(site_prefix: &str) -> String {
    format!("{site_prefix}/binlog/gaps/")
}

pub fn gap_key(site_prefix: &str, detected_at: DateTime<Utc>) -> String {
    format!(
        "{}{}.json",
        gaps_prefix(site_prefix),
        detected_at.format("%Y%m%dT%H%M%S%3fZ")
    )
}

pub fn head_key(site_prefix: &str) -> String {
    format!("{site_prefix}/binlog/head.json")
}

pub async fn list_gaps(store: &Store, site_prefix: &str) -> Result<Vec<GapRecord>, BinlogError> {
    super::read_all_json(store, &gaps_prefix(site_prefix), "").await
}

pub async fn read_head(store: &Store, site_prefix: &str) -> Result<Option<Head>, BinlogError> {
    let key = head_key(site_prefix);
    if store.head(&key).await?.is_none() {
        return Ok(None);
    }
    let bytes = store.get_bytes(&key).await?;
    Ok(serde_json::from_slice(&bytes).ok())
}

enum Ended {
    /// Asked to stop, or caught up with `until_caught_up`.
    Stopped,
}

struct Follower<'a> {
    cfg: &'a Config,
    store: &'a Store,
    /// Where the archive is written: the site's prefix, or a shared server archive's.
    archive_prefix: String,
    opts: ArchiveOptions,
    position: GtidPos,
    report: ArchiveReport,
    last_head_write: Option<Instant>,
    /// The archive lock's fence: checked before every write, confirmed
    /// before every segment's commit.
    fence: Fence,
    /// Segments are never named before this (the day after the newest roll-up).
    name_floor: DateTime<Utc>,
    last_roll_up: Option<Instant>,
}

/// Runs the archive until `shutdown` turns true (or the options say stop),
/// holding the site's archive lock: two archivers would both write the
/// same transactions.
pub async fn archive(
    cfg: &Config,
    store: &Arc<Store>,
    opts: ArchiveOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<ArchiveReport, BinlogError> {
    // The lock (and, for a site's own archive, the sets it starts from) live
    // where the archive does: a shared archive's lock is the server's.
    let catalog = Catalog::new(store, &cfg.site, &cfg.binlog_prefix());
    let ttl = cfg.backup.lock_ttl_seconds;
    let mut lock = catalog.named_lock(LOCK_NAME, ttl, "binlog archive").await?;
    lock.keep_alive(store.clone(), ttl);
    let result = archive_locked(cfg, store, &catalog, opts, shutdown, lock.fence()).await;
    let _ = lock.release(store).await;
    result
}

async fn archive_locked(
    cfg: &Config,
    store: &Store,
    catalog: &Catalog<'_>,
    opts: ArchiveOptions,
    mut shutdown: watch::Receiver<bool>,
    fence: Fence,
) -> Result<ArchiveReport, BinlogError> {
    let archive_prefix = cfg.binlog_prefix();
    let archive = rollup::scan(store, &archive_prefix, &mut rollup::ScanCache::default()).await?;
    let mut position = match archive.newest() {
        Some(s) => s.end.clone(),
        None => match read_head(store, &archive_prefix).await? {
            // An earlier run was caught up before its first segment (a
            // shared archive starts with no set to start from).
            Some(head) => head.position,
            None => start_without_archive(cfg, catalog).await?,
        },
    };
    let name_floor = rollup::name_floor(archive.last_day());
    drop(archive);
    // A gap recorded at this position already moved the archive on (the run
    // that recorded it stopped before its first segment): do not record it twice.
    if let Some(g) = list_gaps(store, &archive_prefix)
        .await?
        .into_iter()
        .rev()
        .find(|g| g.after == position)
    {
        if g.rewound {
            return Err(BinlogError::Rewound {
                server: g.server,
                position: g.after.to_string(),
                detail: format!(
                    "{} (recorded {}). Archiving stays stopped: after the rewrite the server's log holds the same GTIDs twice, and following it by GTID could chain one history onto the other. Sets stay restorable. To archive again: turn on gtid_strict_mode on the server, purge its binary logs from before the rewrite, and archive under a new site or store prefix",
                    g.detail,
                    g.detected_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            });
        }
        position = g.resumed_at;
    }
    tracing::info!(position = %position, "binlog archive starting");
    let deadline = opts.run_for.map(|d| Instant::now() + d);
    let mut f = Follower {
        cfg,
        store,
        archive_prefix,
        opts,
        position,
        report: ArchiveReport::default(),
        last_head_write: None,
        fence,
        name_floor,
        last_roll_up: None,
    };
    f.roll_up_if_due().await?;
    let mut backoff = Duration::from_secs(1);
    loop {
        if *shutdown.borrow() || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let primary = match topology::writable_primary(&cfg.database).await {
            Ok(p) => p,
            Err(details) => {
                if f.opts.until_caught_up {
                    return Err(BinlogError::NoPrimary { details });
                }
                tracing::warn!(%details, "no writable primary; retrying");
                f.pause(&mut shutdown, backoff, deadline).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        f.report.server = primary.display();
        let segments_before = f.report.segments;
        let outcome = f.follow(&primary, &mut shutdown, deadline).await;
        if f.report.segments > segments_before {
            backoff = Duration::from_secs(1);
        }
        match outcome {
            Ok(Ended::Stopped) => break,
            Err(BinlogError::Gap {
                server,
                position,
                detail,
            }) => {
                // The server being behind the archive is not a purge: its
                // history went backwards (a reset, or old GTIDs logged again).
                let now = current_position(&primary).await?;
                if !now.includes(&f.position) {
                    let detail = format!(
                        "the server's position {now} is behind the archive's {}: its history went backwards (its binary log was reset, or old transactions were logged again) [{detail}]",
                        f.position
                    );
                    tracing::error!(%server, %position, %detail, "binlog history went backwards: recorded as a gap; archiving stops");
                    let at = f.position.clone();
                    f.record_gap(&primary, detail, at, true).await?;
                    break;
                }
                let resumed_at = oldest_position(&primary).await?;
                // The server's logs start at or before the archive's
                // position: it is there, so this is no purge. Never resume
                // behind the archive's own position (that would archive
                // transactions twice); retry and report instead.
                if f.position.includes(&resumed_at) {
                    let e = BinlogError::Stream {
                        server: server.clone(),
                        detail: format!(
                            "{detail} (the server's logs start at {resumed_at}, at or before the archive's {}: not recorded as a gap)",
                            f.position
                        ),
                    };
                    if f.opts.until_caught_up {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "binlog stream refused; retrying");
                    f.pause(&mut shutdown, backoff, deadline).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
                tracing::error!(%server, %position, %detail, "binlog archive gap");
                f.record_gap(&primary, detail, resumed_at, false).await?;
                backoff = Duration::from_secs(1);
            }
            // Behind the archive's own position the server's log no longer
            // tells one history: recorded, and archiving stops at the gap
            // (a later run refuses to go on, see above).
            Err(BinlogError::Rewound {
                server,
                position,
                detail,
            }) => {
                tracing::error!(%server, %position, %detail, "binlog history went backwards: recorded as a gap; archiving stops");
                let at = f.position.clone();
                f.record_gap(&primary, detail, at, true).await?;
                break;
            }
            // Credentials and privileges do not fix themselves: stop and say so.
            Err(
                e @ BinlogError::Mysql(
                    crate::mysql::MysqlError::Privilege { .. }
                    | crate::mysql::MysqlError::AuthFailed { .. },
                ),
            ) => return Err(e),
            Err(e @ (BinlogError::Stream { .. } | BinlogError::Mysql(_))) => {
                if f.opts.until_caught_up {
                    return Err(e);
                }
                tracing::warn!(error = %e, "binlog stream lost; resuming from the archived position");
                f.pause(&mut shutdown, backoff, deadline).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
    f.report.position = f.position.to_string();
    Ok(f.report)
}

/// With no segment and no head yet: start at the newest set (so the window
/// reaches back to it), or at the server's current position when there is
/// no set (always, for a shared archive: its sites' windows start at their
/// first set after it).
async fn start_without_archive(
    cfg: &Config,
    catalog: &Catalog<'_>,
) -> Result<GtidPos, BinlogError> {
    let newest = catalog
        .summaries()
        .await?
        .into_iter()
        .find_map(|m| super::chain::set_position(&m));
    if let Some(p) = newest {
        return Ok(p);
    }
    let primary = topology::writable_primary(&cfg.database)
        .await
        .map_err(|details| BinlogError::NoPrimary { details })?;
    current_position(&primary).await
}

/// The server's current position (`@@gtid_binlog_pos`).
async fn current_position(primary: &Endpoint) -> Result<GtidPos, BinlogError> {
    let mut conn = primary.connect(None).await?;
    let pos: Option<String> = conn
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .map_err(|e| query_err("reading @@gtid_binlog_pos", e))?;
    let _ = conn.disconnect().await;
    GtidPos::parse(pos.as_deref().unwrap_or("")).map_err(|detail| BinlogError::Stream {
        server: primary.display(),
        detail,
    })
}

impl Follower<'_> {
    async fn pause(
        &self,
        shutdown: &mut watch::Receiver<bool>,
        d: Duration,
        deadline: Option<Instant>,
    ) {
        let d = match deadline {
            Some(dl) => d.min(dl.saturating_duration_since(Instant::now())),
            None => d,
        };
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = shutdown.changed() => {}
        }
    }

    fn spool_dir(&self) -> PathBuf {
        self.opts
            .spool_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
    }

    /// Streams from `primary` until stopped or the stream fails; every
    /// complete segment is in the store when this returns.
    async fn follow(
        &mut self,
        primary: &Endpoint,
        shutdown: &mut watch::Receiver<bool>,
        deadline: Option<Instant>,
    ) -> Result<Ended, BinlogError> {
        let server = primary.display();
        let mut conn = primary.connect(None).await?;
        let format: Option<String> = conn
            .query_first("SELECT @@GLOBAL.binlog_format")
            .await
            .map_err(|e| query_err("reading @@binlog_format", e))?;
        let format = format.unwrap_or_default();
        if !format.eq_ignore_ascii_case("ROW") {
            return Err(BinlogError::NotRowBased { server, format });
        }
        let setup = [
            "SET @mariadb_slave_capability = 4".to_string(),
            format!("SET @slave_connect_state = '{}'", self.position),
            "SET @slave_gtid_strict_mode = 1".to_string(),
            "SET @slave_gtid_ignore_duplicates = 0".to_string(),
            format!("SET @master_heartbeat_period = {}", HEARTBEAT.as_nanos()),
        ];
        for q in &setup {
            conn.query_drop(q.as_str())
                .await
                .map_err(|e| query_err("preparing the binlog stream", e))?;
        }
        let mut stream = Conn::get_binlog_stream(
            conn,
            BinlogStreamRequest::new(self.cfg.database.binlog.server_id),
        )
        .await
        .map_err(|e| classify_stream_error(&server, &self.position, e, &self.cfg.database.user))?;
        tracing::info!(%server, position = %self.position, "following the binary log");

        let mut tracker = GroupTracker::new(true);
        let mut fde: Option<RawEvent> = None;
        let mut spool: Option<SegmentSpool> = None;
        let mut caught_up_at: Option<DateTime<Utc>> = None;
        let result = loop {
            let next = tokio::select! {
                n = tokio::time::timeout(SILENCE, stream.next()) => n,
                _ = shutdown.changed() => break Ok(Ended::Stopped),
                _ = tokio::time::sleep(deadline.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(Duration::from_secs(86_400))) => break Ok(Ended::Stopped),
            };
            let event = match next {
                Err(_) => {
                    break Err(BinlogError::Stream {
                        server: server.clone(),
                        detail: format!("no event or heartbeat for {} s", SILENCE.as_secs()),
                    })
                }
                Ok(None) => {
                    break Err(BinlogError::Stream {
                        server: server.clone(),
                        detail: "the server ended the stream".into(),
                    })
                }
                Ok(Some(Err(e))) => {
                    break Err(classify_stream_error(
                        &server,
                        &self.position,
                        e,
                        &self.cfg.database.user,
                    ))
                }
                Ok(Some(Ok(e))) => e,
            };
            let raw = match to_raw(&event) {
                Ok(r) => r,
                Err(detail) => {
                    break Err(BinlogError::Stream {
                        server: server.clone(),
                        detail,
                    })
                }
            };
            match raw.kind() {
                HEARTBEAT_EVENT if !tracker.in_group() => {
                    // Sent only once the server has nothing newer: caught up.
                    caught_up_at = Some(Utc::now());
                    if self.opts.until_caught_up {
                        // Nothing pending: the head alone records that the
                        // archive is complete up to now (and where the next
                        // run starts, before any segment exists).
                        let ended = if spool.is_none() {
                            self.write_head(&server, Utc::now()).await
                        } else {
                            self.close(&mut spool, &server, caught_up_at).await
                        };
                        if let Err(e) = ended {
                            break Err(e);
                        }
                        break Ok(Ended::Stopped);
                    }
                }
                FORMAT_DESCRIPTION_EVENT => {
                    tracker.set_checksummed(raw.fde_checksummed());
                    // Each new log file repeats the FDE; only a different
                    // format (body, without the checksum over the header) closes the segment.
                    let body = |e: &RawEvent| {
                        e.0.get(HEADER_LEN..e.0.len().saturating_sub(4))
                            .unwrap_or_default()
                            .to_vec()
                    };
                    let changed = fde.as_ref().is_none_or(|f| body(f) != body(&raw));
                    if changed {
                        if let Err(e) = self.close(&mut spool, &server, caught_up_at).await {
                            break Err(e);
                        }
                        fde = Some(raw);
                    }
                    continue;
                }
                INCIDENT_EVENT => {
                    // The primary itself says events are missing here.
                    if let Err(e) = self.close(&mut spool, &server, caught_up_at).await {
                        break Err(e);
                    }
                    break Err(BinlogError::Gap {
                        server: server.clone(),
                        position: self.position.to_string(),
                        detail: "the primary logged an incident (lost events)".into(),
                    });
                }
                _ => {}
            }
            match tracker.feed(&raw) {
                Fed::Outside => {}
                fed => {
                    if spool.is_none() {
                        let Some(f) = fde.as_ref() else {
                            break Err(BinlogError::Stream {
                                server: server.clone(),
                                detail: "a transaction arrived before the Format_description event"
                                    .into(),
                            });
                        };
                        match SegmentSpool::new(&self.spool_dir(), f, self.position.clone()) {
                            Ok(s) => spool = Some(s),
                            Err(e) => break Err(e),
                        }
                    }
                    let Some(s) = spool.as_mut() else { continue };
                    if matches!(fed, Fed::Abandoned(_)) {
                        if let Err(e) = s.rollback() {
                            break Err(e);
                        }
                    }
                    if let Err(e) = s.append(&raw) {
                        break Err(e);
                    }
                    if let Fed::Completed(g) = fed {
                        // A GTID at or before the position already reached in
                        // its domain: the server's history went backwards.
                        // Never chained on as a continuation.
                        if s.end.contains(&g.gtid) {
                            let reached = s.end.clone();
                            if let Err(e) = s.rollback() {
                                break Err(e);
                            }
                            if let Err(e) = self.close(&mut spool, &server, caught_up_at).await {
                                break Err(e);
                            }
                            break Err(BinlogError::Rewound {
                                server: server.clone(),
                                position: reached.to_string(),
                                detail: format!(
                                    "GTID {} goes backwards from {reached} in domain {}: the server logged old transactions again (a replay that wrote its transactions to this server's log, or a reset of its binary log)",
                                    g.gtid, g.gtid.domain
                                ),
                            });
                        }
                        s.commit(&g);
                    }
                }
            }
            if tracker.in_group() {
                continue;
            }
            let due = spool.as_ref().is_some_and(|s| {
                s.transactions > 0
                    && (s.committed_bytes() >= self.cfg.database.binlog.segment_bytes
                        || s.opened.elapsed()
                            >= Duration::from_secs(self.cfg.database.binlog.segment_seconds))
            });
            if due {
                if let Err(e) = self.close(&mut spool, &server, caught_up_at).await {
                    break Err(e);
                }
            } else if spool.is_none() && raw.kind() == HEARTBEAT_EVENT {
                // Nothing pending: the archive is complete up to now.
                let every = Duration::from_secs(self.cfg.database.binlog.segment_seconds);
                if self.last_head_write.is_none_or(|t| t.elapsed() >= every) {
                    if let Err(e) = self.write_head(&server, Utc::now()).await {
                        break Err(e);
                    }
                }
            }
        };
        // Whatever complete transactions are spooled go to the store before
        // the stream is given up (a half-received one is cut off).
        let closed = self.close(&mut spool, &server, caught_up_at).await;
        let _ = stream.close().await;
        match (result, closed) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(e),
            (Ok(r), Ok(())) => Ok(r),
        }
    }

    /// Uploads the spooled transactions as a segment and moves the position.
    async fn close(
        &mut self,
        spool: &mut Option<SegmentSpool>,
        server: &str,
        caught_up_at: Option<DateTime<Utc>>,
    ) -> Result<(), BinlogError> {
        let Some(mut s) = spool.take() else {
            return Ok(());
        };
        let covered = caught_up_at.unwrap_or_default();
        if let Some(index) = s
            .upload(
                self.store,
                &self.archive_prefix,
                server,
                covered,
                self.name_floor,
                Some(&self.fence),
            )
            .await?
        {
            self.commit_segment(&index, server).await?;
        }
        self.roll_up_if_due().await
    }

    /// Rolls up the finished days, at most once an hour. A store that fails
    /// it only delays the roll-up (readers list those days segment by
    /// segment meanwhile); a lost lock stops the archiver as everywhere.
    async fn roll_up_if_due(&mut self) -> Result<(), BinlogError> {
        if self
            .last_roll_up
            .is_some_and(|t| t.elapsed() < Duration::from_secs(3600))
        {
            return Ok(());
        }
        self.last_roll_up = Some(Instant::now());
        match rollup::roll_up(
            self.store,
            &self.archive_prefix,
            Utc::now(),
            Some(&self.fence),
        )
        .await
        {
            Ok(r) => {
                self.name_floor = self.name_floor.max(rollup::name_floor(r.last_day));
                if r.days > 0 {
                    tracing::info!(
                        days = r.days,
                        segments = r.segments,
                        orphans = r.orphans,
                        "binlog archive rolled up finished days"
                    );
                }
                Ok(())
            }
            Err(e @ BinlogError::Catalog(_)) => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "rolling up finished days failed; retried within the hour");
                Ok(())
            }
        }
    }

    async fn commit_segment(
        &mut self,
        index: &SegmentIndex,
        server: &str,
    ) -> Result<(), BinlogError> {
        tracing::info!(
            segment = %index.name,
            transactions = index.transactions,
            bytes = index.raw_bytes,
            end = %index.end,
            "binlog segment archived"
        );
        self.position = index.end.clone();
        self.report.segments += 1;
        self.report.transactions += index.transactions;
        self.report.bytes += index.stored_bytes;
        self.write_head(server, index.covered_until).await
    }

    async fn write_head(
        &mut self,
        server: &str,
        covered_until: DateTime<Utc>,
    ) -> Result<(), BinlogError> {
        let head = Head {
            server: server.to_string(),
            position: self.position.clone(),
            covered_until,
            updated_at: Utc::now(),
            host: hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            pid: std::process::id(),
        };
        let json = serde_json::to_vec_pretty(&head).unwrap_or_default();
        self.fence.check()?;
        self.store
            .put_bytes(&head_key(&self.archive_prefix), json.into())
            .await?;
        self.last_head_write = Some(Instant::now());
        Ok(())
    }

    /// Records the gap and moves the position to where archiving goes on.
    async fn record_gap(
        &mut self,
        primary: &Endpoint,
        detail: String,
        resumed_at: GtidPos,
        rewound: bool,
    ) -> Result<(), BinlogError> {
        let gap = GapRecord {
            detected_at: Utc::now(),
            server: primary.display(),
            after: self.position.clone(),
            resumed_at: resumed_at.clone(),
            detail,
            rewound,
        };
        let key = gap_key(&self.archive_prefix, gap.detected_at);
        let json = serde_json::to_vec_pretty(&gap).unwrap_or_default();
        self.fence.confirm(self.store).await?;
        self.store.put_bytes(&key, json.into()).await?;
        self.report.gaps.push(gap);
        self.position = resumed_at;
        Ok(())
    }
}

/// The GTID position at the start of the server's oldest binary log (from
/// its Gtid_list event): the earliest point archiving can go on from.
async fn oldest_position(primary: &Endpoint) -> Result<GtidPos, BinlogError> {
    let mut conn = primary.connect(None).await?;
    let logs: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| query_err("SHOW BINARY LOGS", e))?;
    let first: Option<String> = logs.first().and_then(|r| r.get_opt(0).and_then(|v| v.ok()));
    let Some(first) = first else {
        return Err(BinlogError::Stream {
            server: primary.display(),
            detail: "SHOW BINARY LOGS lists no log".into(),
        });
    };
    // A file name the server gave; SHOW statements take no placeholders.
    let events: Vec<mysql_async::Row> = conn
        .query(format!(
            "SHOW BINLOG EVENTS IN '{}' LIMIT 5",
            crate::mysql::sql::string_literal(&first)
        ))
        .await
        .map_err(|e| query_err("SHOW BINLOG EVENTS", e))?;
    let _ = conn.disconnect().await;
    for r in events {
        let kind: Option<String> = r.get_opt(2).and_then(|v| v.ok());
        let info: Option<String> = r.get_opt(5).and_then(|v| v.ok());
        if kind.as_deref() == Some("Gtid_list") {
            let list = info.unwrap_or_default();
            let list = list.trim().trim_start_matches('[').trim_end_matches(']');
            return GtidPos::parse(list).map_err(|detail| BinlogError::Stream {
                server: primary.display(),
                detail,
            });
        }
    }
    Err(BinlogError::Stream {
        server: primary.display(),
        detail: format!("{first} has no Gtid_list event"),
    })
}

/// The event as the bytes of a binlog file, checked against its CRC32.
fn to_raw(event: &mysql_async::binlog::events::Event) -> Result<RawEvent, String> {
    let mut bytes = Vec::with_capacity(event.header().event_size() as usize);
    event
        .write(mysql_async::binlog::BinlogVersion::Version4, &mut bytes)
        .map_err(|e| format!("cannot re-encode an event: {e}"))?;
    let raw = RawEvent::new(bytes)?;
    // `write` recomputes the checksum: it equals the received one only if
    // every byte arrived intact.
    if let Some(received) = event.checksum() {
        let n = raw.0.len();
        if raw.0[n - 4..] != received {
            return Err(format!(
                "event at log position {} fails its CRC32 (corrupted in transit)",
                raw.log_pos()
            ));
        }
    }
    Ok(raw)
}

/// Whether an error 1236 says the archive's position is not in the server's
/// binary logs (purged, or never there; a server behind the archive is
/// told apart by its caller). Error 1236 also reports a packet too large, a
/// log truncated or unreadable mid-event, or bogus data: those are stream
/// failures to retry and report, not holes in the archive.
fn position_not_in_logs(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "could not find first log file name",
        "not in the master's binlog",
        "is missing the gtid",
        "purged",
        "has more gtids than the master",
        "could not find gtid state",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

fn classify_stream_error(
    server: &str,
    position: &GtidPos,
    e: mysql_async::Error,
    user: &str,
) -> BinlogError {
    match &e {
        // ER_SPECIFIC_ACCESS_DENIED_ERROR, ER_ACCESS_DENIED_ERROR...
        mysql_async::Error::Server(se) if matches!(se.code, 1227 | 1045 | 1142 | 1044) => {
            BinlogError::Mysql(crate::mysql::MysqlError::Privilege {
                user: user.to_string(),
                detail: format!(
                    "reading the binary log of {server}: {}. The archive needs GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'",
                    se.message
                ),
            })
        }
        mysql_async::Error::Server(se)
            if se.code == ER_BINLOG_POSITION && position_not_in_logs(&se.message) =>
        {
            BinlogError::Gap {
                server: server.to_string(),
                position: position.to_string(),
                detail: se.message.clone(),
            }
        }
        _ => BinlogError::Stream {
            server: server.to_string(),
            detail: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_position_is_a_gap() {
        for gap in [
            "Could not find first log file name in binary log index file",
            "Error: connecting slave requested to start from GTID 0-1-100, which is not in the master's binlog",
            "The binlog on the master is missing the GTID 0-1-7 requested by the slave (even though a subsequent sequence number does exist), and GTID strict mode is enabled",
            "Error: Slave has more GTIDs than the master has, using the master's SERVER_ID as a hint",
        ] {
            assert!(position_not_in_logs(gap), "{gap}");
        }
        for stream in [
            "log event entry exceeded max_allowed_packet; Increase max_allowed_packet on master",
            "binlog truncated in the middle of event; consider out of disk space on master",
            "bogus data in log event",
            "Could not open log file",
        ] {
            assert!(!position_not_in_logs(stream), "{stream}");
        }
    }
}
