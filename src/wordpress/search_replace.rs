//! The site-URL rewrite applied to a whole database: every text column of
//! every table, rows found by a byte-exact LIKE on the server (one scan per
//! table over all its text columns), rewritten with [`Rewriter`]
//! (serialisation-safe) and written back by primary key in small
//! transactions, each row in the columns that changed. Rows are read in key order in pages, so memory stays bounded
//! and a rerun is harmless (the new URL no longer matches).

use super::rewrite::{Outcome, Rewriter};
use crate::exit::{Classify, ExitCode};
use crate::mysql::{Endpoint, MysqlError};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use serde::Serialize;
use std::collections::BTreeMap;

const PAGE: usize = 500;
/// Distinct values of a keyless column read at once (each may be large).
const VALUE_PAGE: usize = 100;
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
    let columns: Vec<(String, String)> = reader
        .exec(
            "SELECT c.TABLE_NAME, c.COLUMN_NAME FROM information_schema.COLUMNS c \
             JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
             WHERE c.TABLE_SCHEMA = ? AND t.TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') \
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
    let mut report = RewriteReport {
        from: from.to_string(),
        to: to.to_string(),
        dry_run,
        ..Default::default()
    };
    let needles: Vec<Vec<u8>> = [from.to_string(), from.replace('/', "\\/")]
        .into_iter()
        .map(String::into_bytes)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // The server finds candidate rows; each form of the old URL is one LIKE.
    let patterns: Vec<Vec<u8>> = needles.iter().map(|n| like_anywhere(n)).collect();
    // Columns grouped by table, in the schema's order.
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    for (table, column) in columns {
        match tables.last_mut() {
            Some((t, cols)) if *t == table => cols.push(column),
            _ => tables.push((table, vec![column])),
        }
    }
    for (table, columns) in tables {
        let pk = primary.get(&table).cloned().unwrap_or_default();
        // Never rewrite a key column: rows are found again by it.
        let columns: Vec<String> = columns.into_iter().filter(|c| !pk.contains(c)).collect();
        if columns.is_empty() {
            continue;
        }
        let mut cols: Vec<ColumnReport> = columns
            .iter()
            .map(|c| ColumnReport {
                table: table.clone(),
                column: c.clone(),
                ..Default::default()
            })
            .collect();
        let ctx = Pass {
            rewriter: &rewriter,
            patterns: &patterns,
            needles: &needles,
            dry_run,
        };
        if pk.is_empty() {
            for col in cols.iter_mut() {
                ctx.by_value(&mut reader, &mut writer, col).await?;
            }
        } else {
            ctx.by_key(&mut reader, &mut writer, &table, &pk, &mut cols)
                .await?;
        }
        for col in cols.into_iter().filter(|c| c.matched > 0) {
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

fn fail(t: &str, c: &str, e: mysql_async::Error) -> RewriteError {
    RewriteError::Query {
        table: t.to_string(),
        column: c.to_string(),
        detail: e.to_string(),
    }
}

/// What one rewrite pass over a table needs.
struct Pass<'a> {
    rewriter: &'a Rewriter,
    /// LIKE patterns, one per form of the old URL.
    patterns: &'a [Vec<u8>],
    /// The same forms as bytes, to tell which column of a row matched.
    needles: &'a [Vec<u8>],
    dry_run: bool,
}

impl Pass<'_> {
    fn holds(&self, value: &[u8]) -> bool {
        self.needles
            .iter()
            .any(|n| !n.is_empty() && value.windows(n.len()).any(|w| w == n.as_slice()))
    }

    fn matches(&self, column: &str) -> String {
        self.patterns
            .iter()
            .map(|_| format!("CAST({} AS BINARY) LIKE ?", qi(column)))
            .collect::<Vec<_>>()
            .join(" OR ")
    }

    /// A table without a primary key: identical values get identical
    /// rewrites, so each distinct value is updated by value. The distinct
    /// values are read a page at a time, in binary order, inside one
    /// consistent snapshot of the reader: memory stays bounded however many
    /// there are, and a value the writer just rewrote (which may still hold
    /// the old URL, when the new one contains it) is never seen again.
    async fn by_value(
        &self,
        reader: &mut Conn,
        writer: &mut Conn,
        col: &mut ColumnReport,
    ) -> Result<(), RewriteError> {
        let (table, column) = (col.table.clone(), col.column.clone());
        let c = qi(&column);
        let select = |after: bool| {
            format!(
                "SELECT DISTINCT {c} FROM {t} WHERE ({m}){more} ORDER BY CAST({c} AS BINARY) LIMIT {VALUE_PAGE}",
                t = qi(&table),
                m = self.matches(&column),
                more = if after {
                    format!(" AND CAST({c} AS BINARY) > ?")
                } else {
                    String::new()
                }
            )
        };
        let update = format!(
            "UPDATE {t} SET {c} = ? WHERE CAST({c} AS BINARY) = ?",
            t = qi(&table)
        );
        reader
            .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .map_err(|e| fail(&table, &column, e))?;
        let mut after: Option<Vec<u8>> = None;
        let result = async {
            loop {
                let mut params: Vec<Value> = self
                    .patterns
                    .iter()
                    .map(|p| Value::from(p.clone()))
                    .collect();
                if let Some(last) = &after {
                    params.push(Value::from(last.clone()));
                }
                let values: Vec<Option<Vec<u8>>> = reader
                    .exec(select(after.is_some()), params)
                    .await
                    .map_err(|e| fail(&table, &column, e))?;
                let n = values.len();
                let mut updates = Vec::new();
                for old in values.into_iter().flatten() {
                    col.matched += 1;
                    match self.rewriter.rewrite(&old) {
                        Outcome::Changed(new) => {
                            col.changed += 1;
                            updates.push(vec![Value::from(new), Value::from(old.clone())]);
                        }
                        Outcome::Unparseable(why) => note(
                            col,
                            String::from_utf8_lossy(&old[..old.len().min(60)]).into(),
                            why,
                        ),
                        Outcome::Unchanged => {}
                    }
                    after = Some(old);
                }
                if !self.dry_run && !updates.is_empty() {
                    apply(writer, &[(update.clone(), updates)])
                        .await
                        .map_err(|e| fail(&table, &column, e))?;
                }
                if n < VALUE_PAGE {
                    return Ok(());
                }
            }
        }
        .await;
        let _ = reader.query_drop("COMMIT").await;
        result
    }

    /// A keyed table: one scan in key order reads every text column of the
    /// rows where any holds the old URL (one pass over the table, not one
    /// per column), and each row is updated in the columns that changed.
    async fn by_key(
        &self,
        reader: &mut Conn,
        writer: &mut Conn,
        table: &str,
        pk: &[String],
        cols: &mut [ColumnReport],
    ) -> Result<(), RewriteError> {
        let key_list = pk.iter().map(|k| qi(k)).collect::<Vec<_>>().join(", ");
        let marks = vec!["?"; pk.len()].join(", ");
        let value_list = cols
            .iter()
            .map(|c| qi(&c.column))
            .collect::<Vec<_>>()
            .join(", ");
        let matches = cols
            .iter()
            .map(|c| self.matches(&c.column))
            .collect::<Vec<_>>()
            .join(" OR ");
        let cond = pk
            .iter()
            .map(|k| format!("{} = ?", qi(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let all = "*";
        let mut after: Option<Vec<Value>> = None;
        loop {
            let mut params: Vec<Value> = cols
                .iter()
                .flat_map(|_| self.patterns.iter().map(|p| Value::from(p.clone())))
                .collect();
            let page_filter = match &after {
                Some(last) => {
                    params.extend(last.iter().cloned());
                    format!(" AND ({key_list}) > ({marks})")
                }
                None => String::new(),
            };
            let sql = format!(
                "SELECT {key_list}, {value_list} FROM {t} WHERE ({matches}){page_filter} ORDER BY {key_list} LIMIT {PAGE}",
                t = qi(table)
            );
            let rows: Vec<Row> = reader
                .exec(sql, params)
                .await
                .map_err(|e| fail(table, all, e))?;
            let n = rows.len();
            // Updates grouped by which columns changed (one statement each).
            let mut updates: BTreeMap<Vec<usize>, Vec<Vec<Value>>> = BTreeMap::new();
            for row in rows {
                let mut vals = row.unwrap();
                let values = vals.split_off(pk.len());
                after = Some(vals.clone());
                let mut changed: Vec<(usize, Vec<u8>)> = Vec::new();
                for (i, value) in values.into_iter().enumerate() {
                    let Value::Bytes(old) = value else { continue };
                    if !self.holds(&old) {
                        continue;
                    }
                    let col = &mut cols[i];
                    col.matched += 1;
                    match self.rewriter.rewrite(&old) {
                        Outcome::Changed(new) => {
                            col.changed += 1;
                            changed.push((i, new));
                        }
                        Outcome::Unparseable(why) => {
                            let key = vals
                                .iter()
                                .map(|v| v.as_sql(false))
                                .collect::<Vec<_>>()
                                .join(",");
                            note(col, key, why);
                        }
                        Outcome::Unchanged => {}
                    }
                }
                if !changed.is_empty() {
                    let which: Vec<usize> = changed.iter().map(|(i, _)| *i).collect();
                    let mut p: Vec<Value> =
                        changed.into_iter().map(|(_, v)| Value::from(v)).collect();
                    p.extend(vals);
                    updates.entry(which).or_default().push(p);
                }
            }
            if !self.dry_run && !updates.is_empty() {
                let batches: Vec<(String, Vec<Vec<Value>>)> = updates
                    .into_iter()
                    .map(|(which, rows)| {
                        let set = which
                            .iter()
                            .map(|i| format!("{} = ?", qi(&cols[*i].column)))
                            .collect::<Vec<_>>()
                            .join(", ");
                        (format!("UPDATE {} SET {set} WHERE {cond}", qi(table)), rows)
                    })
                    .collect();
                apply(writer, &batches)
                    .await
                    .map_err(|e| fail(table, all, e))?;
            }
            if n < PAGE {
                return Ok(());
            }
        }
    }
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
    batches: &[(String, Vec<Vec<Value>>)],
) -> Result<(), mysql_async::Error> {
    let mut tx = conn.start_transaction(Default::default()).await?;
    for (sql, rows) in batches {
        tx.exec_batch(sql.as_str(), rows.clone()).await?;
    }
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
