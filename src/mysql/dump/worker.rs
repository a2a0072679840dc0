//! A dump worker's connection: the lean row reader (`mysql::wire`) where it
//! serves the endpoint (a plain connection), the driver otherwise. Both run
//! the same statements in the same session settings and read the same
//! text-protocol bytes: the set does not depend on which one read it.

use crate::mysql::wire::WireConn;
use crate::mysql::{query_err, Endpoint, MysqlError};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// `WPDR_ROW_READER=driver` reads every row through the driver (a way
/// around a server the lean reader mis-serves; the tests read both ways).
const ROW_READER_ENV: &str = "WPDR_ROW_READER";

pub(super) enum Worker {
    Wire(WireConn),
    Driver(Conn),
}

impl Worker {
    pub(super) async fn connect(endpoint: &Endpoint, database: &str) -> Result<Self, MysqlError> {
        let driver_only = std::env::var(ROW_READER_ENV).is_ok_and(|v| v == "driver");
        if !driver_only && endpoint.connects_plain() {
            match WireConn::connect(endpoint, Some(database)).await {
                Ok(c) => return Ok(Worker::Wire(c)),
                // The driver connects (or names the problem) instead.
                Err(e) => {
                    tracing::debug!(error = %e, "the lean row reader cannot connect; reading rows through the driver")
                }
            }
        }
        Ok(Worker::Driver(endpoint.connect(Some(database)).await?))
    }

    /// Which reader this is, for the log.
    pub(super) fn reader(&self) -> &'static str {
        match self {
            Worker::Wire(_) => "wire",
            Worker::Driver(_) => "driver",
        }
    }

    /// Runs a statement, naming it in the error.
    pub(super) async fn exec(&mut self, sql: &str) -> Result<(), MysqlError> {
        match self {
            Worker::Wire(c) => c.exec(sql).await.map_err(|e| query_err(sql, e.into())),
            Worker::Driver(c) => crate::mysql::exec(c, sql).await,
        }
    }

    /// A small result's rows as text (`None` for NULL).
    pub(super) async fn text_rows(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, mysql_async::Error> {
        let as_text = |v: Option<Vec<u8>>| v.map(|b| String::from_utf8_lossy(&b).into_owned());
        match self {
            Worker::Wire(c) => Ok(c
                .query_rows(sql)
                .await?
                .into_iter()
                .map(|row| row.into_iter().map(as_text).collect())
                .collect()),
            Worker::Driver(c) => {
                let rows: Vec<mysql_async::Row> = c.query(sql).await?;
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        mysql_async::Row::unwrap(row)
                            .into_iter()
                            .map(|v| match v {
                                mysql_async::Value::NULL => None,
                                mysql_async::Value::Bytes(b) => as_text(Some(b)),
                                other => Some(other.as_sql(true)),
                            })
                            .collect()
                    })
                    .collect())
            }
        }
    }

    pub(super) async fn disconnect(self) {
        match self {
            Worker::Wire(c) => c.disconnect().await,
            Worker::Driver(c) => {
                let _ = c.disconnect().await;
            }
        }
    }
}
