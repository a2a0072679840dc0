//! The site-URL rewrite applied to a whole database: every text column of
//! every table, in two passes that never touch the same value.
//!
//! * Serialised values (what WordPress's `is_serialized()` accepts) that hold
//!   the URL are read in key order, a page at a time, rewritten in the client
//!   with [`Rewriter`] (string lengths fixed, nested data too) and written
//!   back a page per statement (`CASE` on the key), in one transaction per page.
//! * Every other value holding the URL is plain text or JSON, which the
//!   rewriter would only `REPLACE` pair by pair: the server does exactly that
//!   in place (`UPDATE … SET c = REPLACE(REPLACE(c, …), …)`), a key range at
//!   a time, so a table's bodies never cross the wire.
//!
//! Which pass a value belongs to is decided on the server by the same test
//! as [`super::rewrite::is_serialised`], over the stored bytes (tested to agree).
//! The serialised pass runs first: its output is serialised again, so the
//! plain pass never sees it, and each row is updated once even when the new
//! URL contains the old one. Memory stays bounded (pages), and a rerun is
//! harmless (the new URL no longer matches).

use super::rewrite::{is_serialised, Outcome, Rewriter};
use crate::exit::{Classify, ExitCode};
use crate::mysql::stream_rewrite::LISTED;
use crate::mysql::{Endpoint, MysqlError};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

const PAGE: usize = 500;
/// Bytes of new values one multi-row UPDATE carries at most (well under the
/// usual max_allowed_packet of 16 MiB).
const UPDATE_BYTES: usize = 4 << 20;
/// Keys one server-side statement covers, on tables with one integer key:
/// bounded transactions instead of one as large as the table.
const BULK_KEYS: i128 = 10_000;
/// Statements the server pass runs per table at most, however sparse its keys.
const MAX_RANGES: i128 = 1_000;
/// Distinct values of a keyless column read at once (each may be large).
const VALUE_PAGE: usize = 100;

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

/// Bytes as an SQL hex literal (a binary string: compared and replaced byte
/// for byte, whatever the column's collation).
fn hex_literal(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "''".to_string()
    } else {
        format!("X'{}'", hex::encode(bytes))
    }
}

/// [`is_serialised`] as SQL over the column's stored bytes. The two must
/// agree exactly, or a value would be rewritten by both passes or by neither
/// (tests/url_rewrite.rs checks them against each other on tricky values).
///
/// Only the first three characters and the last one are cast to bytes, not
/// the whole value (a copy per row of every post body): serialised data
/// starts with three ASCII bytes and ends with an ASCII one, and in UTF-8 an
/// ASCII byte is never part of another character, so the characters' test
/// and the bytes' test agree.
fn serialised_sql(column: &str) -> String {
    let c = qi(column);
    let head = format!("CAST(LEFT({c}, 3) AS BINARY)");
    let last = format!("CAST(RIGHT({c}, 1) AS BINARY)");
    let tag = format!("SUBSTRING({head}, 1, 1)");
    let digit = format!("SUBSTRING({head}, 3, 1) BETWEEN X'30' AND X'39'");
    format!(
        "((LENGTH({c}) = 2 AND {head} = X'4e3b') OR (LENGTH({c}) >= 4 AND SUBSTRING({head}, 2, 1) = X'3a' AND (\
         ({tag} IN (X'61', X'4f', X'43') AND {last} = X'7d' AND {digit}) OR \
         ({tag} = X'73' AND {last} = X'3b' AND {digit}) OR \
         ({tag} IN (X'69', X'64', X'62') AND {last} = X'3b'))))"
    )
}

/// Rewrites `from` to `to` in every text column of `database` (of the
/// tables in `only_tables`, when given).
pub async fn rewrite_database(
    endpoint: &Endpoint,
    database: &str,
    from: &str,
    to: &str,
    dry_run: bool,
    only_tables: Option<&BTreeSet<String>>,
) -> Result<RewriteReport, RewriteError> {
    let rewriter = Rewriter::new(from, to);
    let mut reader = endpoint.connect(Some(database)).await?;
    let mut writer = endpoint.connect(Some(database)).await?;
    let tables = crate::mysql::stream_rewrite::text_columns(&mut reader, database)
        .await
        .map_err(|e| fail("information_schema", "COLUMNS", e))?;
    let mut report = RewriteReport {
        from: from.to_string(),
        to: to.to_string(),
        dry_run,
        ..Default::default()
    };
    let needles: Vec<Vec<u8>> = rewriter.pairs().iter().map(|(f, _)| f.clone()).collect();
    // The server finds candidate rows; each form of the old URL is one LIKE.
    let patterns: Vec<String> = needles
        .iter()
        .map(|n| hex_literal(&like_anywhere(n)))
        .collect();
    for crate::mysql::stream_rewrite::TextColumns {
        table,
        columns,
        primary_key: pk,
    } in tables
    {
        if only_tables.is_some_and(|only| !only.contains(&table)) {
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
        ctx.in_place(&mut writer, &table, &pk, &mut cols).await?;
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
    /// LIKE patterns (hex literals), one per form of the old URL.
    patterns: &'a [String],
    dry_run: bool,
}

impl Pass<'_> {
    /// A value the client pass rewrites: it holds the URL and is serialised.
    fn holds(&self, value: &[u8]) -> bool {
        is_serialised(value) && self.rewriter.matches(value)
    }

    /// SQL: the column holds the URL in some form (byte for byte).
    fn holds_sql(&self, column: &str) -> String {
        let any = self
            .patterns
            .iter()
            // LIKE BINARY compares the stored bytes without copying the
            // value as CAST(… AS BINARY) does (twice as fast on post bodies).
            .map(|p| format!("{} LIKE BINARY {p}", qi(column)))
            .collect::<Vec<_>>()
            .join(" OR ");
        format!("({any})")
    }

    /// SQL: a value of the client pass ([`Pass::holds`]).
    fn matches(&self, column: &str) -> String {
        format!(
            "({} AND {})",
            self.holds_sql(column),
            serialised_sql(column)
        )
    }

    /// SQL: a value of the server pass: holds the URL, not serialised.
    fn plain(&self, column: &str) -> String {
        format!(
            "({} AND NOT {})",
            self.holds_sql(column),
            serialised_sql(column)
        )
    }

    /// The rewrite of a plain value, as the server runs it: the pairs'
    /// REPLACEs in the rewriter's order.
    fn replace_sql(&self, column: &str) -> String {
        self.rewriter
            .pairs()
            .iter()
            .fold(qi(column), |inner, (from, to)| {
                format!(
                    "REPLACE({inner}, {}, {})",
                    hex_literal(from),
                    hex_literal(to)
                )
            })
    }

    /// The server pass: every value that holds the URL and is not
    /// serialised is rewritten in place, a key range at a time when the
    /// table has one integer key (one statement otherwise). Each range is
    /// counted first, per column, for the report (and for a dry run, which
    /// stops there).
    async fn in_place(
        &self,
        conn: &mut Conn,
        table: &str,
        pk: &[String],
        cols: &mut [ColumnReport],
    ) -> Result<(), RewriteError> {
        let all = "*";
        let t = qi(table);
        let plain: Vec<String> = cols.iter().map(|c| self.plain(&c.column)).collect();
        let any = plain.join(" OR ");
        let sums = plain
            .iter()
            .map(|m| format!("COALESCE(SUM({m}), 0)"))
            .collect::<Vec<_>>()
            .join(", ");
        for within in key_ranges(conn, table, pk).await? {
            let counts: Option<Row> = conn
                .query_first(format!("SELECT {sums} FROM {t} WHERE ({any}){within}"))
                .await
                .map_err(|e| fail(table, all, e))?;
            let counts: Vec<u64> = counts
                .map(|row| {
                    row.unwrap()
                        .into_iter()
                        .map(|v| mysql_async::from_value_opt::<u64>(v).unwrap_or(0))
                        .collect()
                })
                .unwrap_or_default();
            if counts.iter().all(|n| *n == 0) {
                continue;
            }
            let mut sets = Vec::new();
            for ((col, n), m) in cols.iter_mut().zip(&counts).zip(&plain) {
                if *n > 0 {
                    // A plain value that holds the URL always changes.
                    col.matched += n;
                    col.changed += n;
                    let c = qi(&col.column);
                    sets.push(format!(
                        "{c} = IF({m}, {}, {c})",
                        self.replace_sql(&col.column)
                    ));
                }
            }
            if !self.dry_run {
                conn.query_drop(format!(
                    "UPDATE {t} SET {} WHERE ({any}){within}",
                    sets.join(", ")
                ))
                .await
                .map_err(|e| fail(table, all, e))?;
            }
        }
        Ok(())
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
        // Grouped by the stored bytes, not by the collation: `A` and `a`
        // variants are different values, each rewritten and counted by rows.
        // The group's bytes page the scan and find its rows again.
        let select = |after: bool| {
            format!(
                "SELECT MIN({c}), COUNT(*), CAST({c} AS BINARY) FROM {t} WHERE ({m}){more} \
                 GROUP BY CAST({c} AS BINARY) ORDER BY CAST({c} AS BINARY) LIMIT {VALUE_PAGE}",
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
                let mut params: Vec<Value> = Vec::new();
                if let Some(last) = &after {
                    params.push(Value::from(last.clone()));
                }
                let groups: Vec<(Option<Vec<u8>>, u64, Vec<u8>)> = reader
                    .exec(select(after.is_some()), params)
                    .await
                    .map_err(|e| fail(&table, &column, e))?;
                let n = groups.len();
                let mut updates = Vec::new();
                for (value, rows, stored) in groups {
                    if let Some(old) = value {
                        col.matched += rows;
                        match self.rewriter.rewrite(&old) {
                            Outcome::Changed(new) => {
                                col.changed += rows;
                                updates.push(vec![Value::from(new), Value::from(stored.clone())]);
                            }
                            Outcome::Unparseable(why) => note(
                                col,
                                rows,
                                String::from_utf8_lossy(&old[..old.len().min(60)]).into(),
                                why,
                            ),
                            Outcome::Unchanged => {}
                        }
                    }
                    after = Some(stored);
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
        let all = "*";
        let mut after: Option<Vec<Value>> = None;
        loop {
            let mut params: Vec<Value> = Vec::new();
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
            // Updates grouped by which columns changed: (key, new values).
            let mut updates: BTreeMap<Vec<usize>, Vec<KeyedUpdate>> = BTreeMap::new();
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
                            note(col, 1, key, why);
                        }
                        Outcome::Unchanged => {}
                    }
                }
                if !changed.is_empty() {
                    let which: Vec<usize> = changed.iter().map(|(i, _)| *i).collect();
                    let values = changed.into_iter().map(|(_, v)| v).collect();
                    updates
                        .entry(which)
                        .or_default()
                        .push(KeyedUpdate { key: vals, values });
                }
            }
            if !self.dry_run && !updates.is_empty() {
                let columns: Vec<&str> = cols.iter().map(|c| c.column.as_str()).collect();
                let statements = multi_row_updates(table, pk, &columns, updates);
                apply(writer, &statements)
                    .await
                    .map_err(|e| fail(table, all, e))?;
            }
            if n < PAGE {
                return Ok(());
            }
        }
    }
}

/// One row's rewrite: its key and the new values of the columns that changed.
struct KeyedUpdate {
    key: Vec<Value>,
    values: Vec<Vec<u8>>,
}

/// A page's rewrites as few statements: per set of changed columns,
/// `UPDATE t SET c = CASE <key> WHEN … THEN … ELSE c END, … WHERE <key> IN (…)`,
/// cut where the new values reach [`UPDATE_BYTES`]. One round trip per
/// statement instead of one per row.
fn multi_row_updates(
    table: &str,
    pk: &[String],
    columns: &[&str],
    updates: BTreeMap<Vec<usize>, Vec<KeyedUpdate>>,
) -> Vec<(String, Vec<Vec<Value>>)> {
    let key_list = pk.iter().map(|k| qi(k)).collect::<Vec<_>>().join(", ");
    let key_marks = format!("({})", vec!["?"; pk.len()].join(", "));
    let (case_on, when, key_in) = if pk.len() == 1 {
        (
            format!("CASE {key_list}"),
            "WHEN ?".to_string(),
            format!("{key_list} IN"),
        )
    } else {
        (
            "CASE".to_string(),
            format!("WHEN ({key_list}) = {key_marks}"),
            format!("({key_list}) IN"),
        )
    };
    let one_key = if pk.len() == 1 {
        "?".to_string()
    } else {
        key_marks
    };
    let mut statements = Vec::new();
    for (which, rows) in updates {
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some(row) = rows.next_if(|_| batch.is_empty() || bytes < UPDATE_BYTES) {
                bytes += row.values.iter().map(Vec::len).sum::<usize>();
                batch.push(row);
            }
            let mut params = Vec::new();
            let mut sets = Vec::new();
            for (slot, column) in which.iter().enumerate() {
                let c = qi(columns[*column]);
                let arms = vec![format!("{when} THEN ?"); batch.len()].join(" ");
                sets.push(format!("{c} = {case_on} {arms} ELSE {c} END"));
                for row in &batch {
                    params.extend(row.key.iter().cloned());
                    params.push(Value::from(row.values[slot].clone()));
                }
            }
            for row in &batch {
                params.extend(row.key.iter().cloned());
            }
            let keys = vec![one_key.as_str(); batch.len()].join(", ");
            statements.push((
                format!(
                    "UPDATE {} SET {} WHERE {key_in} ({keys})",
                    qi(table),
                    sets.join(", ")
                ),
                vec![params],
            ));
        }
    }
    statements
}

/// `rows` rows hold one value that could not be rewritten: counted by rows,
/// listed once.
fn note(col: &mut ColumnReport, rows: u64, key: String, why: String) {
    col.unparseable += rows;
    if col.unparseable_rows.len() < LISTED {
        col.unparseable_rows.push(format!("{key}: {why}"));
    }
}

/// The ranges [lo, hi) of the table's one integer key, [`BULK_KEYS`] wide,
/// from its smallest key to its largest, as WHERE conditions to append
/// (` AND k >= lo AND k < hi`); one empty condition (the whole table at
/// once) for any other key.
async fn key_ranges(
    conn: &mut Conn,
    table: &str,
    pk: &[String],
) -> Result<Vec<String>, RewriteError> {
    let whole = || Ok(vec![String::new()]);
    let [key] = pk else { return whole() };
    let k = qi(key);
    let bounds: Option<Row> = conn
        .exec_first(format!("SELECT MIN({k}), MAX({k}) FROM {}", qi(table)), ())
        .await
        .map_err(|e| fail(table, key, e))?;
    let int = |v: &Value| match v {
        Value::Int(i) => Some(i128::from(*i)),
        Value::UInt(u) => Some(i128::from(*u)),
        _ => None,
    };
    let Some((lo, hi)) = bounds.and_then(|row| {
        let v = row.unwrap();
        Some((int(v.first()?)?, int(v.get(1)?)?))
    }) else {
        return whole();
    };
    // Sparse keys (random ids) would make most ranges empty: at most
    // MAX_RANGES, wider ones then.
    let step = BULK_KEYS.max((hi - lo + MAX_RANGES) / MAX_RANGES);
    let mut ranges = Vec::new();
    let mut at = lo;
    while at <= hi {
        ranges.push(format!(" AND {k} >= {at} AND {k} < {}", at + step));
        at += step;
    }
    Ok(ranges)
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
