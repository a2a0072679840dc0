//! Values changed on their way into the server, inside the load: a restore
//! under a new address gets its rows with the new URL as they are inserted,
//! instead of loading a gigabyte of rows and then rewriting it in place
//! (which writes every matching row twice: InnoDB pages, undo and redo).
//!
//! Only statements that hold one of the rewrite's needles are read
//! ([`super::insert`]); the rest go to the server untouched. In a statement
//! that is read, only text and binary values of the target's text columns
//! that are not part of the primary key are offered to the rewrite — the
//! columns `wpdr rewrite-url` touches. Every row that changes moves its
//! table's expected checksum by (new row's hash − old row's hash), so the
//! table check after the load still proves every row: the rows as the set
//! holds them, with exactly the changes this rewrite made. A statement that
//! cannot be read is loaded as it is and its table is named, for the
//! rewrite after the load to cover.

use super::checksum::row_hash;
use super::insert::{self, LiteralKind};
use super::sql::{escape_into, quoted_into};
use memchr::memmem::Finder;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// A statement grows at most to this, or to its own size when larger,
/// before the rest of its rows go into another (a longer URL makes rows
/// longer; the server's packet limit was checked against the set's sizes).
const STATEMENT_LIMIT: usize = 1 << 20;
/// Unreadable values listed per column (here and by `rewrite-url`); the
/// count covers the rest.
pub const LISTED: usize = 20;

/// What one value's rewrite gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Changed(Vec<u8>),
    /// Holds what the rewrite looks for but could not be rewritten safely:
    /// left as it was, with why.
    Unparseable(String),
}

/// A change to stored values, applied one value at a time.
pub trait ValueRewrite: Send + Sync {
    /// Every value the rewrite changes contains one of these.
    fn needles(&self) -> Vec<Vec<u8>>;
    fn rewrite(&self, value: &[u8]) -> Outcome;
}

/// A table's text columns that a rewrite may change (not generated, not in
/// the primary key), and its primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextColumns {
    pub table: String,
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
}

/// Every base table's text columns in `database`, in the schema's order.
pub async fn text_columns(
    conn: &mut Conn,
    database: &str,
) -> Result<Vec<TextColumns>, mysql_async::Error> {
    let columns: Vec<(String, String)> = conn
        .exec(
            "SELECT c.TABLE_NAME, c.COLUMN_NAME FROM information_schema.COLUMNS c \
             JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
             WHERE c.TABLE_SCHEMA = ? AND t.TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') \
             AND c.DATA_TYPE IN ('char','varchar','tinytext','text','mediumtext','longtext','json','tinyblob','blob','mediumblob','longblob','binary','varbinary') \
             AND COALESCE(c.IS_GENERATED, 'NEVER') = 'NEVER' \
             ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
            (database,),
        )
        .await?;
    let keys: Vec<(String, String)> = conn
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (database,),
        )
        .await?;
    let mut primary: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (t, c) in keys {
        primary.entry(t).or_default().push(c);
    }
    let mut out: Vec<TextColumns> = Vec::new();
    for (table, column) in columns {
        let key = primary.get(&table).cloned().unwrap_or_default();
        if key.contains(&column) {
            continue;
        }
        match out.last_mut() {
            Some(t) if t.table == table => t.columns.push(column),
            _ => out.push(TextColumns {
                table,
                columns: vec![column],
                primary_key: key,
            }),
        }
    }
    Ok(out)
}

/// One column's part of a stream rewrite's report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ColumnTally {
    pub column: String,
    pub changed: u64,
    pub unparseable: u64,
    /// The first values left unchanged: the row's first value, and why.
    pub unparseable_rows: Vec<String>,
}

/// One table's part of a stream rewrite's report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TableTally {
    pub table: String,
    pub rows_changed: u64,
    pub columns: Vec<ColumnTally>,
    /// A statement that held a needle but could not be read: the table's
    /// rewrite is left to a pass after the load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_read: Option<String>,
    /// Σ hash of the rows as the set held them, of every changed row.
    #[serde(skip)]
    pub removed: u128,
    /// Σ hash of the same rows as loaded.
    #[serde(skip)]
    pub added: u128,
}

impl TableTally {
    /// The table's checksum once loaded: the set's, moved by each changed row.
    pub fn expected_sum(&self, set_sum: u128) -> u128 {
        set_sum.wrapping_sub(self.removed).wrapping_add(self.added)
    }

    fn column(&mut self, name: &str) -> &mut ColumnTally {
        let i = match self.columns.iter().position(|c| c.column == name) {
            Some(i) => i,
            None => {
                self.columns.push(ColumnTally {
                    column: name.to_string(),
                    ..Default::default()
                });
                self.columns.len() - 1
            }
        };
        &mut self.columns[i]
    }
}

/// A rewrite applied to a load's data statements, and what it did per table.
pub struct StreamRewrite {
    rewrite: Arc<dyn ValueRewrite>,
    /// The needles as they appear inside a string literal (escaped).
    finders: Vec<Finder<'static>>,
    /// Per table (the load's order): the columns offered to the rewrite.
    columns: Vec<BTreeSet<String>>,
    tallies: Vec<Mutex<TableTally>>,
}

impl StreamRewrite {
    /// `tables`: the load's tables in its order; `text`: the target's text
    /// columns (created from the set's schema).
    pub fn new(rewrite: Arc<dyn ValueRewrite>, tables: &[String], text: &[TextColumns]) -> Self {
        let finders = rewrite
            .needles()
            .into_iter()
            .filter(|n| !n.is_empty())
            .map(|n| {
                let mut escaped = Vec::new();
                escape_into(&mut escaped, &n);
                Finder::new(&escaped).into_owned()
            })
            .collect();
        let by_table: BTreeMap<&str, &TextColumns> =
            text.iter().map(|t| (t.table.as_str(), t)).collect();
        StreamRewrite {
            rewrite,
            finders,
            columns: tables
                .iter()
                .map(|t| {
                    by_table
                        .get(t.as_str())
                        .map(|c| c.columns.iter().cloned().collect())
                        .unwrap_or_default()
                })
                .collect(),
            tallies: tables
                .iter()
                .map(|t| {
                    Mutex::new(TableTally {
                        table: t.clone(),
                        ..Default::default()
                    })
                })
                .collect(),
        }
    }

    fn holds_needle(&self, bytes: &[u8]) -> bool {
        self.finders.iter().any(|f| f.find(bytes).is_some())
    }

    /// The statements to run instead of `stmt`, a data statement of table
    /// `table` (its index in the load). `where_` names the statement in a
    /// table's report when it cannot be read.
    pub fn statement(&self, table: usize, stmt: Vec<u8>, where_: &str) -> Vec<Vec<u8>> {
        let Some(columns) = self.columns.get(table) else {
            return vec![stmt];
        };
        if columns.is_empty() || !self.holds_needle(&stmt) {
            return vec![stmt];
        }
        let ins = match insert::parse(&stmt) {
            Ok(Some(ins)) => ins,
            Ok(None) => return vec![stmt],
            Err(e) => {
                if let Ok(mut t) = self.tallies[table].lock() {
                    t.not_read.get_or_insert_with(|| format!("{where_}: {e}"));
                }
                return vec![stmt];
            }
        };
        let offered: Vec<bool> = ins.columns.iter().map(|c| columns.contains(c)).collect();
        let mut tally = TableTally::default();
        let limit = stmt.len().max(STATEMENT_LIMIT);
        let head = &stmt[ins.head.clone()];
        let mut out = Vec::new();
        let mut current = head.to_vec();
        let mut in_current = 0usize;
        for row in &ins.rows {
            let mut new: Vec<Option<Vec<u8>>> = vec![None; row.len()];
            for (i, lit) in row.iter().enumerate() {
                if !offered[i]
                    || !matches!(lit.kind, LiteralKind::Text | LiteralKind::Binary)
                    || !self.holds_needle(&stmt[lit.span.clone()])
                {
                    continue;
                }
                let Some(value) = lit.value(&stmt) else {
                    continue;
                };
                match self.rewrite.rewrite(&value) {
                    Outcome::Changed(v) => {
                        tally.column(&ins.columns[i]).changed += 1;
                        new[i] = Some(v);
                    }
                    Outcome::Unparseable(why) => {
                        let first = row
                            .first()
                            .and_then(|l| l.value(&stmt))
                            .map(|v| String::from_utf8_lossy(&v[..v.len().min(60)]).into_owned())
                            .unwrap_or_else(|| "NULL".into());
                        let c = tally.column(&ins.columns[i]);
                        c.unparseable += 1;
                        if c.unparseable_rows.len() < LISTED {
                            c.unparseable_rows.push(format!("row {first}: {why}"));
                        }
                    }
                    Outcome::Unchanged => {}
                }
            }
            let changed = new.iter().any(Option::is_some);
            if changed {
                let old: Vec<Option<Cow<[u8]>>> = row.iter().map(|l| l.value(&stmt)).collect();
                tally.removed = tally
                    .removed
                    .wrapping_add(row_hash(old.iter().map(|v| v.as_deref())));
                tally.added = tally.added.wrapping_add(row_hash(
                    old.iter()
                        .zip(&new)
                        .map(|(o, n)| n.as_deref().or(o.as_deref())),
                ));
                tally.rows_changed += 1;
            }
            let row_bytes: usize = row.iter().map(|l| l.span.len() + 1).sum::<usize>()
                + new.iter().flatten().map(|v| v.len() * 2).sum::<usize>();
            if in_current > 0 && current.len() + row_bytes > limit {
                out.push(std::mem::replace(&mut current, head.to_vec()));
                in_current = 0;
            }
            if in_current > 0 {
                current.push(b',');
            }
            current.push(b'(');
            for (i, lit) in row.iter().enumerate() {
                if i > 0 {
                    current.push(b',');
                }
                match &new[i] {
                    Some(v) => quoted_into(&mut current, v, lit.kind == LiteralKind::Binary),
                    None => current.extend_from_slice(&stmt[lit.span.clone()]),
                }
            }
            current.push(b')');
            in_current += 1;
        }
        out.push(current);
        if let Ok(mut t) = self.tallies[table].lock() {
            t.rows_changed += tally.rows_changed;
            t.removed = t.removed.wrapping_add(tally.removed);
            t.added = t.added.wrapping_add(tally.added);
            for c in tally.columns {
                let into = t.column(&c.column);
                into.changed += c.changed;
                into.unparseable += c.unparseable;
                let room = LISTED.saturating_sub(into.unparseable_rows.len());
                into.unparseable_rows
                    .extend(c.unparseable_rows.into_iter().take(room));
            }
        }
        out
    }

    /// What the rewrite did to table `table` so far.
    pub fn tally(&self, table: usize) -> TableTally {
        self.tallies
            .get(table)
            .and_then(|t| t.lock().ok().map(|t| t.clone()))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::checksum::TableChecksum;
    use proptest::prelude::*;

    /// Replaces "old" by "NEW!" in plain values; a value starting with "!"
    /// that holds it is unreadable.
    struct Upper;
    impl ValueRewrite for Upper {
        fn needles(&self) -> Vec<Vec<u8>> {
            vec![b"old".to_vec()]
        }
        fn rewrite(&self, v: &[u8]) -> Outcome {
            let s = String::from_utf8_lossy(v);
            if !s.contains("old") {
                Outcome::Unchanged
            } else if s.starts_with('!') {
                Outcome::Unparseable("starts with !".into())
            } else {
                Outcome::Changed(s.replace("old", "NEW'\n").into_bytes())
            }
        }
    }

    fn rewriter(columns: &[&str]) -> StreamRewrite {
        StreamRewrite::new(
            Arc::new(Upper),
            &["t".to_string()],
            &[TextColumns {
                table: "t".into(),
                columns: columns.iter().map(|c| c.to_string()).collect(),
                primary_key: vec!["id".into()],
            }],
        )
    }

    /// The rows a statement inserts, as the server would give them back.
    fn rows_of(stmt: &[u8]) -> Vec<Vec<Option<Vec<u8>>>> {
        let ins = insert::parse(stmt).unwrap().unwrap();
        ins.rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|l| l.value(stmt).map(|v| v.into_owned()))
                    .collect()
            })
            .collect()
    }

    fn sum(rows: &[Vec<Option<Vec<u8>>>]) -> TableChecksum {
        let mut s = TableChecksum::default();
        for r in rows {
            s.add_row(r.iter().map(|v| v.as_deref()));
        }
        s
    }

    #[test]
    fn rewrites_offered_text_columns_only_and_moves_the_checksum() {
        let r = rewriter(&["a", "b"]);
        let stmt = b"INSERT INTO `t` (`id`,`a`,`b`,`c`) VALUES ('old',_binary'an old\\0','!old','old'),('x','y',NULL,'z')".to_vec();
        let before = sum(&rows_of(&stmt));
        let out = r.statement(0, stmt, "chunk 1");
        assert_eq!(out.len(), 1);
        assert_eq!(
            String::from_utf8_lossy(&out[0]),
            "INSERT INTO `t` (`id`,`a`,`b`,`c`) VALUES ('old',_binary'an NEW\\'\\n\\0','!old','old'),('x','y',NULL,'z')"
        );
        let tally = r.tally(0);
        assert_eq!(tally.rows_changed, 1);
        assert_eq!(tally.columns[0].changed, 1);
        assert_eq!(tally.columns[1].unparseable, 1);
        assert_eq!(
            tally.columns[1].unparseable_rows,
            ["row old: starts with !"]
        );
        let after = sum(&rows_of(&out[0]));
        assert_eq!(tally.expected_sum(before.sum), after.sum);
    }

    #[test]
    fn statements_without_the_needle_or_unreadable_pass_unchanged() {
        let r = rewriter(&["a"]);
        let plain = b"INSERT INTO `t` (`id`,`a`) VALUES (1,'nothing')".to_vec();
        assert_eq!(r.statement(0, plain.clone(), "c"), vec![plain]);
        let odd = b"INSERT INTO `t` (`id`,`a`) VALUES (1,CONCAT('old'))".to_vec();
        assert_eq!(r.statement(0, odd.clone(), "chunk 7"), vec![odd]);
        assert!(r.tally(0).not_read.unwrap().starts_with("chunk 7: byte"));
    }

    proptest! {
        /// However the rows are cut into statements, the statements hold
        /// every row once, in order, and the adjusted checksum is the loaded one.
        #[test]
        fn cut_statements_keep_every_row_and_the_sum(
            values in proptest::collection::vec(proptest::option::of("[a-z'\\\\ ]{0,12}(old)?[a-z]{0,4}"), 1..60),
            big in 0usize..3,
        ) {
            let r = rewriter(&["a"]);
            let mut stmt = b"INSERT INTO `t` (`id`,`a`) VALUES ".to_vec();
            for (i, v) in values.iter().enumerate() {
                if i > 0 { stmt.push(b','); }
                stmt.extend_from_slice(format!("({i},").as_bytes());
                match v {
                    None => stmt.extend_from_slice(b"NULL"),
                    Some(v) => {
                        stmt.push(b'\'');
                        // Padding makes some statements cross the limit.
                        let padded = format!("{v}{}", " ".repeat(big * 30_000));
                        escape_into(&mut stmt, padded.as_bytes());
                        stmt.push(b'\'');
                    }
                }
                stmt.push(b')');
            }
            let before = sum(&rows_of(&stmt));
            let out = r.statement(0, stmt, "c");
            let rows: Vec<_> = out.iter().flat_map(|s| rows_of(s)).collect();
            prop_assert_eq!(rows.len(), values.len());
            for (i, row) in rows.iter().enumerate() {
                prop_assert_eq!(row[0].clone(), Some(i.to_string().into_bytes()));
            }
            for s in &out {
                prop_assert!(s.len() <= STATEMENT_LIMIT.max(before.rows as usize * 70_000));
            }
            prop_assert_eq!(r.tally(0).expected_sum(before.sum), sum(&rows).sum);
        }
    }
}
