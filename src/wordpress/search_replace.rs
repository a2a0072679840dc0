//! The site-URL rewrite applied to a whole database: every text column of
//! every table, rows found by a byte-exact LIKE on the server, rewritten with
//! [`Rewriter`] (serialisation-safe) and written back by primary key in small
//! transactions. Rows are read in key order in pages, so memory stays bounded
//! and a rerun is harmless (the new URL no longer matches).

use super::rewrite::{Outcome, Rewriter};
use crate::exit::{Classify, ExitCode};
use crate::mysql::{Endpoint, MysqlError};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use serde::Serialize;
use std::collections::BTreeMap;

const PAGE: usize = 500;
/// Unparseable values listed by key per column; the count covers the rest.
const LISTED: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error(transparent)]
    Mysql(#[from] MysqlError),
    #[error("rewriting {table}.{column}: {detail}")]
    Query {
        table: String,
        column: String,
        detail: String,
    },
}

impl Classify for RewriteError {
    fn exit_code(&self) -> ExitCode {
        match self {
            RewriteError::Mysql(e) => e.exit_code(),
            RewriteError::Query { .. } => ExitCode::Database,
        }
    }
    fn metric_label(&self) -> &'static str {
        match self {
            RewriteError::Mysql(e) => e.metric_label(),
            RewriteError::Query { .. } => "url_rewrite",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ColumnReport {
    pub table: String,
    pub column: String,
    /// Rows whose value holds the old URL in some form.
    pub matched: u64,
    /// Rows rewritten (or, in a dry run, that would be).
    pub changed: u64,
    /// Rows that hold the URL but could not be rewritten safely (left as they were).
    pub unparseable: u64,
    /// Primary keys (or values) of the first unparseable rows, with why.
    pub unparseable_rows: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RewriteReport {
    pub from: String,
    pub to: String,
    pub dry_run: bool,
    pub rows_changed: u64,
    pub rows_unparseable: u64,
    /// Only columns where something matched.
    pub columns: Vec<ColumnReport>,
}

fn qi(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A LIKE pattern matching `needle` anywhere, with `\`, `%` and `_` escaped.
fn like_anywhere(needle: &[u8]) -> Vec<u8> {
    let mut p = vec![b'%'];
    for &b in needle {
        if matches!(b, b'\\' | b'%' | b'_') {
            p.push(b'\\');
        }
        p.push(b);
    }
    p.push(b'%');
    p
}

/// Rewrites `from` to `to` in every text column of `database`.
pub async fn rewrite_database(
    endpoint: &Endpoint,
    database: &str,
    from: &str,
    to: &str,
    dry_run: bool,
) -> Result<RewriteReport, RewriteError> {
    let rewriter = Rewriter::new(from, to);
    let mut reader = endpoint.connect(Some(database)).await?;
    let mut writer = endpoint.connect(Some(database)).await?;
    let fail = |t: &str, c: &str, e: mysql_async::Error| RewriteError::Query {
        table: t.to_string(),
        column: c.to_string(),
        detail: e.to_string(),
    };
    let columns: Vec<(String, String)> = reader
        .exec(
            "SELECT c.TABLE_NAME, c.COLUMN_NAME FROM information_schema.COLUMNS c \
             JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
             WHERE c.TABLE_SCHEMA = ? AND t.TABLE_TYPE = 'BASE TABLE' \
             AND c.DATA_TYPE IN ('char','varchar','tinytext','text','mediumtext','longtext','json','tinyblob','blob','mediumblob','longblob','binary','varbinary') \
             AND COALESCE(c.IS_GENERATED, 'NEVER') = 'NEVER' \
             ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
            (database,),
        )
        .await
        .map_err(|e| fail("information_schema", "COLUMNS", e))?;
    let keys: Vec<(String, String)> = reader
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (database,),
        )
        .await
        .map_err(|e| fail("information_schema", "KEY_COLUMN_USAGE", e))?;
    let mut primary: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (t, c) in keys {
        primary.entry(t).or_default().push(c);
    }
    // The server finds candidate rows; each form of the old URL is one LIKE.
    let patterns: Vec<Vec<u8>> = [from.to_string(), from.replace('/', "\\/")]
        .iter()
        .map(|f| like_anywhere(f.as_bytes()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut report = RewriteReport {
        from: from.to_string(),
        to: to.to_string(),
        dry_run,
        ..Default::default()
    };
    for (table, column) in columns {
        let pk = primary.get(&table).cloned().unwrap_or_default();
        // Never rewrite a key column: rows are found again by it.
        if pk.contains(&column) {
            continue;
        }
        let mut col = ColumnReport {
            table: table.clone(),
            column: column.clone(),
            ..Default::default()
        };
        let matches = patterns
            .iter()
            .map(|_| format!("CAST({} AS BINARY) LIKE ?", qi(&column)))
            .collect::<Vec<_>>()
            .join(" OR ");
        if pk.is_empty() {
            // No key: identical values get identical rewrites, so update by value.
            let sql = format!(
                "SELECT DISTINCT {c} FROM {t} WHERE {matches}",
                c = qi(&column),
                t = qi(&table)
            );
            let values: Vec<Option<Vec<u8>>> = reader
                .exec(sql, patterns.clone())
                .await
                .map_err(|e| fail(&table, &column, e))?;
            let mut updates = Vec::new();
            for old in values.into_iter().flatten() {
                col.matched += 1;
                match rewriter.rewrite(&old) {
                    Outcome::Changed(new) => {
                        col.changed += 1;
                        updates.push((new, old));
                    }
                    Outcome::Unparseable(why) => note(
                        &mut col,
                        String::from_utf8_lossy(&old[..old.len().min(60)]).into(),
                        why,
                    ),
                    Outcome::Unchanged => {}
                }
            }
            if !dry_run && !updates.is_empty() {
                let sql = format!(
                    "UPDATE {t} SET {c} = ? WHERE CAST({c} AS BINARY) = ?",
                    c = qi(&column),
                    t = qi(&table)
                );
                apply(
                    &mut writer,
                    &sql,
                    updates
                        .into_iter()
                        .map(|(n, o)| vec![Value::from(n), Value::from(o)])
                        .collect(),
                )
                .await
                .map_err(|e| fail(&table, &column, e))?;
            }
        } else {
            let key_list = pk.iter().map(|k| qi(k)).collect::<Vec<_>>().join(", ");
            let marks = vec!["?"; pk.len()].join(", ");
            let mut after: Option<Vec<Value>> = None;
            loop {
                let mut params: Vec<Value> =
                    patterns.iter().map(|p| Value::from(p.clone())).collect();
                let page_filter = match &after {
                    Some(last) => {
                        params.extend(last.iter().cloned());
                        format!(" AND ({key_list}) > ({marks})")
                    }
                    None => String::new(),
                };
                let sql = format!(
                    "SELECT {key_list}, {c} FROM {t} WHERE ({matches}){page_filter} ORDER BY {key_list} LIMIT {PAGE}",
                    c = qi(&column),
                    t = qi(&table)
                );
                let rows: Vec<Row> = reader
                    .exec(sql, params)
                    .await
                    .map_err(|e| fail(&table, &column, e))?;
                let n = rows.len();
                let mut updates = Vec::new();
                for row in rows {
                    let mut vals = row.unwrap();
                    let value = vals.pop().unwrap_or(Value::NULL);
                    after = Some(vals.clone());
                    let Value::Bytes(old) = value else { continue };
                    col.matched += 1;
                    match rewriter.rewrite(&old) {
                        Outcome::Changed(new) => {
                            col.changed += 1;
                            let mut p = vec![Value::from(new)];
                            p.extend(vals);
                            updates.push(p);
                        }
                        Outcome::Unparseable(why) => {
                            let key = vals
                                .iter()
                                .map(|v| v.as_sql(false))
                                .collect::<Vec<_>>()
                                .join(",");
                            note(&mut col, key, why);
                        }
                        Outcome::Unchanged => {}
                    }
                }
                if !dry_run && !updates.is_empty() {
                    let cond = pk
                        .iter()
                        .map(|k| format!("{} = ?", qi(k)))
                        .collect::<Vec<_>>()
                        .join(" AND ");
                    let sql = format!(
                        "UPDATE {t} SET {c} = ? WHERE {cond}",
                        c = qi(&column),
                        t = qi(&table)
                    );
                    apply(&mut writer, &sql, updates)
                        .await
                        .map_err(|e| fail(&table, &column, e))?;
                }
                if n < PAGE {
                    break;
                }
            }
        }
        if col.matched > 0 {
            report.rows_changed += col.changed;
            report.rows_unparseable += col.unparseable;
            if col.unparseable > 0 {
                tracing::warn!(table = %col.table, column = %col.column, rows = col.unparseable, "values hold the old URL but are not valid serialised data; left unchanged");
            }
            report.columns.push(col);
        }
    }
    Ok(report)
}

fn note(col: &mut ColumnReport, key: String, why: String) {
    col.unparseable += 1;
    if col.unparseable_rows.len() < LISTED {
        col.unparseable_rows.push(format!("{key}: {why}"));
    }
}

/// One transaction per page of updates.
async fn apply(
    conn: &mut Conn,
    sql: &str,
    rows: Vec<Vec<Value>>,
) -> Result<(), mysql_async::Error> {
    let mut tx = conn.start_transaction(Default::default()).await?;
    tx.exec_batch(sql, rows).await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_anywhere(b"a_b%c\\/d"), b"%a\\_b\\%c\\\\/d%".to_vec());
    }
}
