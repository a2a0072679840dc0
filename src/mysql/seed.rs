//! Replicas of a restored primary: each is seeded from a consistent
//! snapshot of the primary taken *after* the restore and any point-in-time
//! replay, and replicates from the GTID that snapshot records. Starting
//! replication from the set's own position instead (before the replay) is
//! the operator bug that re-applies or loses the replayed transactions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde::Serialize;

use super::dump::{snapshot, DumpOptions};
use super::load::{load, LoadOptions};
use super::sql::string_literal;
use super::topology::replica_health;
use super::{query_err, Endpoint, MysqlError};
use crate::store::{LocalStore, Store};

#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    pub replica: String,
    /// The primary's GTID position the replica was seeded at; replication starts after it.
    pub seeded_at: String,
    pub tables: usize,
    /// The replica had applied everything the primary held when checked.
    pub caught_up_to: String,
    pub seconds: f64,
}

/// The replicas' user logs in to the primary (its REPLICATION SLAVE grant
/// shows when the replica's IO thread starts); checked before a restore
/// loads anything, so a wrong password costs nothing.
pub async fn check_replication_user(
    primary: &Endpoint,
    replication: &crate::config::ReplicationUser,
) -> Result<(), MysqlError> {
    let as_replication = Endpoint {
        user: replication.user.clone(),
        password: replication.password.clone(),
        credentials_from: Endpoint::FROM_REPLICATION_USER,
        ..primary.clone()
    };
    let conn = as_replication.connect(None).await?;
    let _ = conn.disconnect().await;
    Ok(())
}

/// Seeds `replica` with `database` from `primary` and starts GTID
/// replication; returns once the replica has caught up. The replica
/// connects to the primary as `replication` (checked before anything is
/// seeded), never with the restore user's wider rights.
pub async fn seed_replica(
    primary: &Endpoint,
    database: &str,
    replica: &Endpoint,
    replication: &crate::config::ReplicationUser,
    opts: &LoadOptions,
    timeout: Duration,
) -> Result<SeedReport, MysqlError> {
    let started = Instant::now();
    if replica.display() == primary.display() {
        return Err(MysqlError::Query {
            doing: "seeding a replica".into(),
            detail: format!("{} is the primary itself", replica.display()),
        });
    }
    // The snapshot goes through a private local store (0700, removed on
    // every way out): the same consistent dump and verified load as a
    // backup and restore.
    let scratch = tempfile::Builder::new()
        .prefix("wpdr-seed-")
        .tempdir()
        .map_err(|e| MysqlError::Query {
            doing: "creating a private scratch directory for the seed".into(),
            detail: e.to_string(),
        })?;
    let dir = scratch.path().to_path_buf();
    let result = async {
        let store = Arc::new(Store::from(LocalStore::open(&dir).await?));
        let dump = snapshot(
            primary,
            database,
            &DumpOptions {
                connections: opts.connections,
                chunk_bytes: 64 << 20,
                compression_level: 1,
                // A replica needs every object its primary replicates.
                skip: Vec::new(),
                fence: None,
            },
            store.clone(),
            "seed/",
            Arc::new(|_| {}),
        )
        .await?;
        let Some(at) = dump.section.gtid_binlog_pos.clone() else {
            return Err(MysqlError::Query {
                doing: format!("seeding {} from {}", replica.display(), primary.display()),
                detail: "the primary has no binary log position: start it with log_bin (and a server_id) so replicas can follow it".into(),
            });
        };
        let report = load(
            replica,
            database,
            &dump.section,
            &dump.artifacts,
            store,
            "seed/",
            opts,
            Arc::new(|_| {}),
        )
        .await?;
        if let Some(t) = report.mismatches().first() {
            return Err(MysqlError::Query {
                doing: format!("seeding {}", replica.display()),
                detail: format!(
                    "table {} differs from the primary's snapshot after loading",
                    t.table
                ),
            });
        }
        Ok((at, report.tables.len()))
    }
    .await;
    drop(scratch);
    let (at, tables) = result?;

    let mut r = replica.connect(None).await?;
    let _ = r.query_drop("STOP SLAVE").await;
    let steps = [
        ("RESET SLAVE ALL".to_string(), "clearing the replica's old replication settings"),
        (format!("SET GLOBAL gtid_slave_pos = '{at}'"), "setting gtid_slave_pos to the snapshot's position (if it conflicts with the replica's own binary log, run RESET MASTER on the replica: it is being re-seeded)"),
    ];
    for (sql, doing) in &steps {
        r.query_drop(sql.as_str())
            .await
            .map_err(|e| query_err(*doing, e))?;
    }
    // The password is sent as a parameter-free literal; never logged or echoed.
    let change = format!(
        "CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={}, MASTER_USER='{}', MASTER_PASSWORD='{}', MASTER_USE_GTID=slave_pos",
        string_literal(&primary.host),
        primary.port,
        string_literal(&replication.user),
        string_literal(replication.password.expose())
    );
    r.query_drop(change.as_str())
        .await
        .map_err(|e| MysqlError::Query {
            doing: "CHANGE MASTER TO the restored primary".into(),
            detail: server_message(&e, replication.password.expose()),
        })?;
    r.query_drop("START SLAVE")
        .await
        .map_err(|e| query_err("START SLAVE", e))?;
    let _ = r.disconnect().await;

    // Caught up: both threads run and it has applied what the primary has now.
    let mut p = primary.connect(None).await?;
    let target: Option<String> = p
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .map_err(|e| query_err("reading the primary's @@gtid_binlog_pos", e))?;
    let _ = p.disconnect().await;
    let target = super::gtid::GtidPos::parse(target.as_deref().unwrap_or("")).unwrap_or_default();
    let deadline = Instant::now() + timeout;
    loop {
        let h = replica_health(replica, u64::MAX).await;
        let applied = h
            .gtid_slave_pos
            .as_deref()
            .and_then(|p| super::gtid::GtidPos::parse(p).ok())
            .unwrap_or_default();
        if h.io_running && h.sql_running && applied.includes(&target) {
            return Ok(SeedReport {
                replica: replica.display(),
                seeded_at: at,
                tables,
                caught_up_to: applied.to_string(),
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        if Instant::now() >= deadline {
            return Err(MysqlError::Query {
                doing: format!(
                    "waiting for replica {} to follow {}",
                    replica.display(),
                    primary.display()
                ),
                detail: h
                    .problem
                    .unwrap_or_else(|| format!("it applied {applied}, the primary is at {target}")),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The server's own message, with the password cut out should the server
/// quote the statement back.
fn server_message(e: &mysql_async::Error, password: &str) -> String {
    let text = match e {
        mysql_async::Error::Server(se) => format!("error {}: {}", se.code, se.message),
        other => other.to_string(),
    };
    if password.is_empty() {
        text
    } else {
        text.replace(password, "***")
    }
}
