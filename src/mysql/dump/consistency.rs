//! The consistent snapshot: every worker's `START TRANSACTION WITH
//! CONSISTENT SNAPSHOT` opened while commits are held still, and the binlog
//! position, GTID and server time of that point read while they are.

use crate::catalog::BinlogPosition;
use crate::mysql::row_conn::RowConn;
use crate::mysql::{exec, query_err, MysqlError};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use std::time::Instant;

pub(super) struct Snapshot {
    pub(super) method: &'static str,
    /// How long commits were held, once released.
    pub(super) blocked_ms: f64,
    /// While commits are still held: the statement that releases them and
    /// since when (see [`release`]).
    held: Option<(&'static str, Instant)>,
    pub(super) binlog: Option<BinlogPosition>,
    pub(super) gtid: Option<String>,
    pub(super) slave_pos: Option<String>,
    /// The server's clock at the snapshot (no transaction in it committed later).
    pub(super) at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The server's clock, the one binary log timestamps are taken from.
async fn server_now(conn: &mut RowConn) -> Result<chrono::DateTime<chrono::Utc>, MysqlError> {
    let doing = "reading the server's clock";
    let rows = conn
        .text_rows("SELECT CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)")
        .await
        .map_err(|e| query_err(doing, e))?;
    rows.first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|micros| micros.parse::<i64>().ok())
        .and_then(chrono::DateTime::from_timestamp_micros)
        .ok_or_else(|| MysqlError::Query {
            doing: doing.into(),
            detail: "no answer".into(),
        })
}

async fn start_snapshot(conn: &mut RowConn) -> Result<(), MysqlError> {
    conn.exec("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await?;
    conn.exec("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
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
/// With more than one worker, commits (and with them writes to
/// non-transactional tables, and DDL) stay held until [`release`]: the
/// caller reads the non-transactional tables first.
pub(super) async fn open_snapshots(
    control: &mut Conn,
    workers: &mut [RowConn],
    mariadb: bool,
) -> Result<Snapshot, MysqlError> {
    if workers.len() == 1 {
        let w = &mut workers[0];
        start_snapshot(w).await?;
        let rows = w
            .text_rows("SHOW STATUS LIKE 'binlog_snapshot_%'")
            .await
            .map_err(|e| query_err("reading the snapshot's binlog position", e))?;
        let status = |name: &str| {
            rows.iter()
                .find(|r| {
                    r.first()
                        .cloned()
                        .flatten()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
                .and_then(|r| r.get(1).cloned().flatten())
        };
        let file = status("Binlog_snapshot_file");
        let pos = status("Binlog_snapshot_position").and_then(|p| p.parse::<u64>().ok());
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
            held: None,
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
        // Any connection's clock is the server's; commits are still held.
        let at = server_now(&mut workers[0]).await?;
        Ok::<_, MysqlError>((
            binlog,
            gtid.filter(|g| !g.is_empty()),
            slave_pos.filter(|g| !g.is_empty()),
            at,
        ))
    }
    .await;
    let (binlog, gtid, slave_pos, at) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = exec(control, unlock).await;
            return Err(e);
        }
    };
    Ok(Snapshot {
        method,
        blocked_ms: 0.0,
        held: Some((unlock, held)),
        binlog,
        gtid,
        slave_pos,
        at: Some(at),
    })
}

/// Lets commits go on again (a no-op when they were never held) and records
/// for how long they were held.
pub(super) async fn release(control: &mut Conn, snap: &mut Snapshot) -> Result<(), MysqlError> {
    if let Some((unlock, since)) = snap.held.take() {
        let result = exec(control, unlock).await;
        snap.blocked_ms = since.elapsed().as_secs_f64() * 1000.0;
        result?;
    }
    Ok(())
}

impl Snapshot {
    /// Whether commits are held now (non-transactional tables read now are the snapshot's).
    pub(super) fn holds_commits(&self) -> bool {
        self.held.is_some()
    }
}
