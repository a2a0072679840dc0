//! Which server a backup reads: the primary, or the healthiest replica of a
//! primary/replica cluster (a nightly dump on the primary competes with the
//! site). A replica is usable only while both replication threads run and it
//! is within the lag bound; a stopped or lagging replica would give a set
//! that silently misses recent orders and comments.

use super::{query_err, Endpoint, MysqlError};
use crate::config::DatabaseConfig;
use mysql_async::prelude::Queryable;
use mysql_async::Row;
use serde::{Deserialize, Serialize};

/// What a replica reported about its replication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaHealth {
    /// `host:port`.
    pub replica: String,
    pub io_running: bool,
    pub sql_running: bool,
    /// `Seconds_Behind_Master`; `None` while a thread is stopped.
    pub lag_seconds: Option<u64>,
    /// The primary's GTIDs this replica has applied.
    pub gtid_slave_pos: Option<String>,
    /// Why it cannot be used (unreachable, not a replica, stopped, lagging).
    pub problem: Option<String>,
}

/// Where a backup reads from, and why.
#[derive(Debug, Clone)]
pub struct ReadSource {
    pub endpoint: Endpoint,
    pub role: &'static str,
    pub chosen: Option<ReplicaHealth>,
    /// Set when a replica was wanted but the primary is used.
    pub fallback_reason: Option<String>,
    pub checked: Vec<ReplicaHealth>,
}

fn column(row: &Row, names: &[&str]) -> Option<String> {
    let cols = row.columns_ref();
    names.iter().find_map(|n| {
        let i = cols
            .iter()
            .position(|c| c.name_str().eq_ignore_ascii_case(n))?;
        row.get_opt::<Option<String>, usize>(i)
            .and_then(|r| r.ok())
            .flatten()
    })
}

/// Asks one replica how it replicates, and judges it against `max_lag`.
pub async fn replica_health(endpoint: &Endpoint, max_lag: u64) -> ReplicaHealth {
    let replica = endpoint.display();
    let mut h = ReplicaHealth {
        replica: replica.clone(),
        io_running: false,
        sql_running: false,
        lag_seconds: None,
        gtid_slave_pos: None,
        problem: None,
    };
    let status = async {
        let mut c = endpoint.connect(None).await?;
        let row: Option<Row> = c
            .query_first("SHOW SLAVE STATUS")
            .await
            .map_err(|e| query_err("SHOW SLAVE STATUS", e))?;
        let pos: Option<String> = c
            .query_first("SELECT @@gtid_slave_pos")
            .await
            .map_err(|e| query_err("reading @@gtid_slave_pos", e))?;
        let _ = c.disconnect().await;
        Ok::<_, MysqlError>((row, pos))
    }
    .await;
    match status {
        Err(e) => h.problem = Some(e.to_string()),
        Ok((None, _)) => h.problem = Some("not a replica (SHOW SLAVE STATUS is empty)".into()),
        Ok((Some(row), pos)) => {
            let yes =
                |names: &[&str]| column(&row, names).is_some_and(|v| v.eq_ignore_ascii_case("yes"));
            h.io_running = yes(&["Slave_IO_Running", "Replica_IO_Running"]);
            h.sql_running = yes(&["Slave_SQL_Running", "Replica_SQL_Running"]);
            h.lag_seconds = column(&row, &["Seconds_Behind_Master", "Seconds_Behind_Source"])
                .and_then(|v| v.parse().ok());
            h.gtid_slave_pos = pos.filter(|p| !p.is_empty());
            let last_error = column(&row, &["Last_Error", "Last_SQL_Error"])
                .filter(|e| !e.is_empty())
                .or_else(|| column(&row, &["Last_IO_Error"]).filter(|e| !e.is_empty()));
            h.problem = match (h.io_running, h.sql_running, h.lag_seconds) {
                (true, true, Some(lag)) if lag <= max_lag => None,
                (true, true, Some(lag)) => {
                    Some(format!("{lag} s behind the primary (bound: {max_lag} s)"))
                }
                (io, sql, _) => Some(format!(
                    "replication is stopped (IO thread {}, SQL thread {}){}",
                    if io { "running" } else { "stopped" },
                    if sql { "running" } else { "stopped" },
                    last_error.map(|e| format!(": {e}")).unwrap_or_default()
                )),
            };
        }
    }
    h
}

/// Each configured replica, reached with the primary's user and password.
pub fn replica_endpoints(cfg: &DatabaseConfig) -> Vec<Endpoint> {
    let primary = Endpoint::from_config(cfg);
    cfg.topology
        .replicas
        .iter()
        .map(|(host, port)| {
            let mut e = primary.clone();
            e.host = host.clone();
            e.port = *port;
            e.socket = None;
            e
        })
        .collect()
}

/// The server that takes writes now: the configured primary if it is up and
/// writable, else a replica that was promoted (writable, not replicating).
/// Errors name what each server said.
pub async fn writable_primary(cfg: &DatabaseConfig) -> Result<Endpoint, String> {
    let mut problems = Vec::new();
    for e in std::iter::once(Endpoint::from_config(cfg)).chain(replica_endpoints(cfg)) {
        match primary_problem(&e).await {
            None => return Ok(e),
            Some(p) => problems.push(format!("{}: {p}", e.display())),
        }
    }
    Err(problems.join("; "))
}

async fn primary_problem(e: &Endpoint) -> Option<String> {
    let mut conn = match e.connect(None).await {
        Ok(c) => c,
        Err(err) => return Some(err.to_string()),
    };
    let flags: Result<Option<(u8, u8)>, _> =
        conn.query_first("SELECT @@read_only, @@log_bin").await;
    let problem = match flags {
        Err(err) => Some(format!("cannot read @@read_only: {err}")),
        Ok(None) => Some("no answer to SELECT @@read_only".into()),
        Ok(Some((_, 0))) => Some("binary logging is off (log_bin)".into()),
        Ok(Some((1, _))) => Some("read-only (a replica)".into()),
        Ok(Some(_)) => match conn.query::<Row, _>("SHOW SLAVE STATUS").await {
            // A replica whose primary is gone still tries to connect: not promoted yet.
            Ok(rows)
                if rows.iter().any(|r| {
                    matches!(
                        column(r, &["Slave_IO_Running"]).as_deref(),
                        Some("Yes" | "Connecting")
                    ) || column(r, &["Slave_SQL_Running"]).as_deref() == Some("Yes")
                }) =>
            {
                Some("is a replica (replication configured and running)".into())
            }
            Ok(_) => None,
            Err(err) => Some(format!("SHOW SLAVE STATUS failed: {err}")),
        },
    };
    let _ = conn.disconnect().await;
    problem
}

/// The server to back up from, as the configuration's topology says: the
/// least-lagging usable replica, else the primary when allowed, else an error
/// naming every replica's problem.
pub async fn choose(cfg: &DatabaseConfig) -> Result<ReadSource, MysqlError> {
    let primary = Endpoint::from_config(cfg);
    let t = &cfg.topology;
    if !t.read_from_replica {
        return Ok(ReadSource {
            endpoint: primary,
            role: "primary",
            chosen: None,
            fallback_reason: None,
            checked: Vec::new(),
        });
    }
    let mut checked = Vec::new();
    for e in replica_endpoints(cfg) {
        checked.push((
            e.clone(),
            replica_health(&e, t.max_replica_lag_seconds).await,
        ));
    }
    let best = checked
        .iter()
        .filter(|(_, h)| h.problem.is_none())
        .min_by_key(|(_, h)| h.lag_seconds.unwrap_or(u64::MAX))
        .cloned();
    let reports: Vec<ReplicaHealth> = checked.iter().map(|(_, h)| h.clone()).collect();
    match best {
        Some((endpoint, health)) => Ok(ReadSource {
            endpoint,
            role: "replica",
            chosen: Some(health),
            fallback_reason: None,
            checked: reports,
        }),
        None => {
            let details = reports
                .iter()
                .map(|h| {
                    format!(
                        "{}: {}",
                        h.replica,
                        h.problem.as_deref().unwrap_or("unusable")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            if t.fallback_to_primary {
                tracing::warn!(%details, "no usable replica; backing up from the primary as allowed");
                Ok(ReadSource {
                    endpoint: primary,
                    role: "primary",
                    chosen: None,
                    fallback_reason: Some(details),
                    checked: reports,
                })
            } else {
                Err(MysqlError::NoUsableReplica { details })
            }
        }
    }
}
