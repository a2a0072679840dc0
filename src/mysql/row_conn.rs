//! A connection that reads rows: the lean reader (`mysql::wire`) where it
//! can connect (plain or TLS, the usual authentication plugins), the driver
//! otherwise. Both run the same statements in the same session settings and
//! read the same text-protocol bytes: a set, or a table's checksum, does not
//! depend on which one read it. The dump's workers and the restore's checks
//! use it.

use super::checksum::TableChecksum;
use super::sql::select_stored;
use super::wire::WireConn;
use super::{query_err, Endpoint, MysqlError};
use crate::catalog::TableEntry;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// `WPDR_ROW_READER=driver` reads every row through the driver (a way
/// around a server the lean reader mis-serves; the tests read both ways).
const ROW_READER_ENV: &str = "WPDR_ROW_READER";

pub(crate) enum RowConn {
    Wire(WireConn),
    Driver(Conn),
}

impl RowConn {
    pub(crate) async fn connect(endpoint: &Endpoint, database: &str) -> Result<Self, MysqlError> {
        let driver_only = std::env::var(ROW_READER_ENV).is_ok_and(|v| v == "driver");
        if !driver_only {
            match WireConn::connect(endpoint, Some(database)).await {
                Ok(c) => return Ok(RowConn::Wire(c)),
                // The driver connects (or names the problem) instead.
                Err(e) => {
                    tracing::debug!(error = %e, "the lean row reader cannot connect; reading rows through the driver")
                }
            }
        }
        Ok(RowConn::Driver(endpoint.connect(Some(database)).await?))
    }

    /// Row count and content checksum of one table, as the dump computes
    /// them (the stored columns, in key order).
    pub(crate) async fn table_checksum(
        &mut self,
        t: &TableEntry,
    ) -> Result<TableChecksum, MysqlError> {
        let mut sum = TableChecksum::default();
        let query = select_stored(&t.name, t.kind, &t.columns);
        let err = |e: mysql_async::Error| query_err(format!("re-reading {}", t.name), e);
        match self {
            RowConn::Wire(c) => {
                let mut rows = c.query(&query).await.map_err(|e| err(e.into()))?;
                while let Some(row) = rows.next().await.map_err(|e| err(e.into()))? {
                    let mut values = row.values();
                    sum.add_row(&mut values);
                    values.finish().map_err(|e| err(e.into()))?;
                }
            }
            RowConn::Driver(c) => {
                let mut result = c.query_iter(query.as_str()).await.map_err(err)?;
                let width = t.columns.len();
                while let Some(row) = result.next().await.map_err(err)? {
                    sum.add_row(driver_values(&row, width));
                }
            }
        }
        Ok(sum)
    }

    /// Which reader this is, for the log.
    pub(crate) fn reader(&self) -> &'static str {
        match self {
            RowConn::Wire(_) => "wire",
            RowConn::Driver(_) => "driver",
        }
    }

    /// Runs a statement, naming it in the error.
    pub(crate) async fn exec(&mut self, sql: &str) -> Result<(), MysqlError> {
        match self {
            RowConn::Wire(c) => c.exec(sql).await.map_err(|e| query_err(sql, e.into())),
            RowConn::Driver(c) => crate::mysql::exec(c, sql).await,
        }
    }

    /// A small result's rows as text (`None` for NULL).
    pub(crate) async fn text_rows(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, mysql_async::Error> {
        let as_text = |v: Option<Vec<u8>>| v.map(|b| String::from_utf8_lossy(&b).into_owned());
        match self {
            RowConn::Wire(c) => Ok(c
                .query_rows(sql)
                .await?
                .into_iter()
                .map(|row| row.into_iter().map(as_text).collect())
                .collect()),
            RowConn::Driver(c) => {
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

    pub(crate) async fn disconnect(self) {
        match self {
            RowConn::Wire(c) => c.disconnect().await,
            RowConn::Driver(c) => {
                let _ = c.disconnect().await;
            }
        }
    }
}

/// A driver row's values as the text protocol sent them (bytes or NULL;
/// the text protocol has no other kind).
pub(crate) fn driver_values(
    row: &mysql_async::Row,
    n: usize,
) -> impl Iterator<Item = Option<&[u8]>> + Clone {
    (0..n).map(move |i| match row.as_ref(i) {
        Some(mysql_async::Value::Bytes(b)) => Some(b.as_slice()),
        _ => None,
    })
}
