//! Discovery: what the database holds (tables, sequences, system-versioned
//! tables with their columns, keys and size estimates), what of it cannot be
//! taken, and each table's shape, compared across the snapshot's opening to
//! tell whether DDL ran while it opened.

use crate::catalog::{SkippedObject, TableKind};
use crate::mysql::sql::{from_clause, quote_ident};
use crate::mysql::{query_err, MysqlError};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::collections::BTreeMap;

/// A table as the snapshot sees it.
#[derive(Debug, Clone)]
pub(crate) struct TableInfo {
    pub name: String,
    pub kind: TableKind,
    pub engine: String,
    pub data_length: u64,
    /// What is read and stored: the non-generated columns, and for a
    /// system-versioned table its period columns last.
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
    /// The primary key's first column when it is an integer: chunks are ranges of it.
    pub int_key: Option<String>,
    /// Why the rows are not read (the engine keeps them elsewhere).
    pub rows_not_stored: Option<String>,
    /// Kind, engine, columns with their types and every index, as text: two
    /// equal shapes read on either side of the snapshot mean no DDL between.
    pub shape: String,
}

impl TableInfo {
    pub fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The table as read: a system-versioned table with its history.
    pub fn table_ref(&self) -> String {
        from_clause(&self.name, self.kind)
    }

    pub fn order_by(&self) -> String {
        if self.primary_key.is_empty() {
            String::new()
        } else {
            format!(
                " ORDER BY {}",
                self.primary_key
                    .iter()
                    .map(|c| quote_ident(c))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
    }

    /// Whether the InnoDB snapshot covers its rows; other engines' rows are
    /// the snapshot's only while commits (and with them their writes) are held.
    pub fn transactional(&self) -> bool {
        matches!(
            self.engine.to_ascii_lowercase().as_str(),
            "innodb" | "xtradb" | "rocksdb" | "tokudb"
        )
    }

    /// Whether the data pass reads it (sequences are read with their schema).
    pub fn has_data_chunks(&self) -> bool {
        self.kind != TableKind::Sequence && self.rows_not_stored.is_none()
    }
}

/// What a backup of the database takes and what it leaves out.
#[derive(Debug, Clone)]
pub(crate) struct Discovery {
    pub tables: Vec<TableInfo>,
    pub skipped: Vec<SkippedObject>,
}

impl Discovery {
    /// Names of the tables whose shape differs between two readings (added,
    /// dropped or altered), sorted.
    pub fn changed_since(&self, earlier: &Discovery) -> Vec<String> {
        let now: BTreeMap<&str, &str> = self
            .tables
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_str()))
            .collect();
        let then: BTreeMap<&str, &str> = earlier
            .tables
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_str()))
            .collect();
        let mut changed: Vec<String> = now
            .keys()
            .chain(then.keys())
            .filter(|n| now.get(*n) != then.get(*n))
            .map(|n| n.to_string())
            .collect();
        changed.sort();
        changed.dedup();
        changed
    }
}

/// Engines whose rows live outside this server (or nowhere): the set keeps
/// their definition only, and says so.
fn rows_kept_elsewhere(engine: &str) -> Option<String> {
    let e = engine.to_ascii_uppercase();
    let why = match e.as_str() {
        "FEDERATED" | "FEDERATEDX" | "CONNECT" | "SPIDER" => {
            "its engine reads the rows from another server; back that server up"
        }
        "MRG_MYISAM" | "MRG_MYSAM" | "MERGE" => {
            "a MERGE table's rows are those of the tables it merges, which are backed up"
        }
        "BLACKHOLE" => "a BLACKHOLE table keeps no rows",
        _ => return None,
    };
    Some(format!("{engine}: {why}"))
}

/// Whether `name` matches a `database.skip` pattern (`*` matches any run of
/// characters, everything else itself; names compare exactly).
pub(crate) fn skip_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// The pattern of `database.skip` that names `name`, if any.
pub(crate) fn skipped_by<'a>(skip: &'a [String], name: &str) -> Option<&'a str> {
    skip.iter()
        .map(String::as_str)
        .find(|p| skip_matches(p, name))
}

type ColumnRow = (String, String, String, String, String, Option<String>);
type TableRow = (String, String, Option<String>, Option<u64>, Option<String>);
type IndexRow = (String, String, u32, Option<String>, i64);

/// Lists what the snapshot takes of `db`. Objects it cannot take fail the
/// backup naming each, unless `skip` names them (then they are listed as
/// skipped); nothing is left out silently.
pub(crate) async fn discover(
    conn: &mut Conn,
    db: &str,
    skip: &[String],
) -> Result<Discovery, MysqlError> {
    let rows: Vec<TableRow> = conn
        .exec(
            "SELECT TABLE_NAME, TABLE_TYPE, ENGINE, DATA_LENGTH, TABLE_COMMENT FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_TYPE <> 'VIEW' ORDER BY TABLE_NAME",
            (db,),
        )
        .await
        .map_err(|e| query_err("listing tables", e))?;
    // GENERATION_EXPRESSION exists on MariaDB and MySQL alike; a system
    // period's columns say `ROW START` / `ROW END` there.
    let cols: Vec<ColumnRow> = conn
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, EXTRA, GENERATION_EXPRESSION \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (db,),
        )
        .await
        .map_err(|e| query_err("listing columns", e))?;
    let indexes: Vec<IndexRow> = conn
        .exec(
            "SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NON_UNIQUE FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
            (db,),
        )
        .await
        .map_err(|e| query_err("listing indexes", e))?;
    let engines: Vec<String> = conn
        .query("SELECT UPPER(ENGINE) FROM information_schema.ENGINES WHERE SUPPORT IN ('YES', 'DEFAULT')")
        .await
        .map_err(|e| query_err("listing storage engines", e))?;
    let mut columns_of: BTreeMap<&str, Vec<&ColumnRow>> = BTreeMap::new();
    for c in &cols {
        columns_of.entry(c.0.as_str()).or_default().push(c);
    }
    let mut indexes_of: BTreeMap<&str, Vec<&IndexRow>> = BTreeMap::new();
    for i in &indexes {
        indexes_of.entry(i.0.as_str()).or_default().push(i);
    }

    let mut tables = Vec::new();
    let mut skipped = Vec::new();
    let mut refused = Vec::new();
    let mut history_loadable: Option<bool> = None;
    for (name, table_type, engine, data_length, comment) in rows {
        let kind = match table_type.as_str() {
            "BASE TABLE" => Some(TableKind::Table),
            "SEQUENCE" => Some(TableKind::Sequence),
            "SYSTEM VERSIONED" => Some(TableKind::SystemVersioned),
            _ => None,
        };
        let label = kind.map_or("table", |k| match k {
            TableKind::Sequence => "sequence",
            _ => "table",
        });
        if let Some(pattern) = skipped_by(skip, &name) {
            skipped.push(SkippedObject {
                kind: label.into(),
                name: name.clone(),
                reason: format!("database.skip names it ('{pattern}')"),
            });
            continue;
        }
        let Some(kind) = kind else {
            refused.push(format!(
                "`{name}` is a {table_type}, which wpdr does not know how to back up"
            ));
            continue;
        };
        let Some(engine) = engine else {
            // information_schema has no engine for a table the server cannot open.
            refused.push(format!(
                "table `{name}` cannot be opened by the server ({})",
                comment.unwrap_or_default()
            ));
            continue;
        };
        if !engines.contains(&engine.to_ascii_uppercase()) {
            refused.push(format!(
                "table `{name}` uses the storage engine {engine}, which is not loaded on the server, so its rows cannot be read (INSTALL SONAME the engine's plugin)"
            ));
            continue;
        }
        if kind == TableKind::SystemVersioned {
            let loadable = match history_loadable {
                Some(v) => v,
                None => {
                    let v = conn
                        .query_first::<Option<String>, _>(
                            "SELECT @@system_versioning_insert_history",
                        )
                        .await
                        .is_ok();
                    history_loadable = Some(v);
                    v
                }
            };
            if !loadable {
                refused.push(format!(
                    "table `{name}` is system-versioned and this server cannot load its history back \
                     (system_versioning_insert_history needs MariaDB 10.11 or later), so the set would lose it"
                ));
                continue;
            }
        }
        let table_cols = columns_of.remove(name.as_str()).unwrap_or_default();
        let table_indexes = indexes_of.remove(name.as_str()).unwrap_or_default();
        let mut columns = Vec::new();
        let mut types = Vec::new();
        let mut period: Vec<String> = Vec::new();
        let mut shape = format!("{}|{engine}|", kind.label());
        for (_, c, data_type, column_type, extra, generation) in table_cols {
            shape.push_str(&format!("{c}:{column_type}:{extra}:{generation:?};"));
            let extra_upper = extra.to_ascii_uppercase();
            let generated =
                extra_upper.contains("GENERATED") && !extra_upper.contains("DEFAULT_GENERATED");
            let period_column = matches!(generation.as_deref(), Some("ROW START" | "ROW END"));
            if period_column && kind == TableKind::SystemVersioned {
                period.push(c.clone());
            } else if !generated {
                columns.push(c.clone());
                types.push((c.clone(), data_type.to_ascii_lowercase()));
            }
        }
        shape.push('|');
        let mut primary_key = Vec::new();
        for (_, index, seq, column, non_unique) in table_indexes {
            let column = column.clone().unwrap_or_default();
            shape.push_str(&format!("{index}:{seq}:{column}:{non_unique};"));
            if index == "PRIMARY" {
                primary_key.push(column);
            }
        }
        if kind == TableKind::SystemVersioned {
            // Implicit periods have no columns in information_schema; their
            // pseudo-columns are named ROW_START and ROW_END.
            if period.len() != 2 {
                period = vec!["ROW_START".into(), "ROW_END".into()];
            }
            columns.extend(period);
        }
        // Ranges on the first key column partition the table whether or not the
        // key has more columns (wp_term_relationships: object_id, term_taxonomy_id).
        let int_key = primary_key.first().and_then(|first| {
            types
                .iter()
                .find(|(c, _)| c == first)
                .filter(|(_, dt)| {
                    matches!(
                        dt.as_str(),
                        "tinyint" | "smallint" | "mediumint" | "int" | "bigint"
                    )
                })
                .map(|(c, _)| c.clone())
        });
        tables.push(TableInfo {
            rows_not_stored: rows_kept_elsewhere(&engine),
            name,
            kind,
            engine,
            data_length: data_length.unwrap_or(0),
            columns,
            primary_key,
            int_key,
            shape,
        });
    }
    if !refused.is_empty() {
        return Err(MysqlError::Unsupported {
            database: db.to_string(),
            objects: refused.join("; "),
        });
    }
    Ok(Discovery { tables, skipped })
}

/// One table in a dry-run plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedTable {
    pub name: String,
    /// `table`, `sequence` or `system-versioned table`.
    pub kind: String,
    pub engine: String,
    pub estimated_bytes: u64,
    /// The integer key that chunks are cut on, if any.
    pub split_by: Option<String>,
    /// Why the rows would not be read, if they would not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_not_stored: Option<String>,
}

/// What a backup of `db` would read and leave out, without opening a snapshot.
pub async fn plan_tables(
    conn: &mut Conn,
    db: &str,
    skip: &[String],
) -> Result<(Vec<PlannedTable>, Vec<SkippedObject>), MysqlError> {
    let found = discover(conn, db, skip).await?;
    let tables = found
        .tables
        .into_iter()
        .map(|t| PlannedTable {
            name: t.name,
            kind: t.kind.label().to_string(),
            engine: t.engine,
            estimated_bytes: t.data_length,
            split_by: t.int_key,
            rows_not_stored: t.rows_not_stored,
        })
        .collect();
    Ok((tables, found.skipped))
}

/// A file name part derived from a table name: readable, safe in any store.
pub(super) fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn skip_patterns() {
        assert!(skip_matches("wp_big_log", "wp_big_log"));
        assert!(!skip_matches("wp_big_log", "wp_big_log2"));
        assert!(skip_matches("wp_*_log", "wp_big_log"));
        assert!(skip_matches("*", ""));
        assert!(!skip_matches("wp_*", "xp_posts"));
        assert_eq!(skipped_by(&["a*".into(), "b".into()], "b"), Some("b"));
    }

    #[test]
    fn engines_with_rows_elsewhere() {
        assert!(rows_kept_elsewhere("FEDERATED").is_some());
        assert!(rows_kept_elsewhere("MRG_MyISAM").is_some());
        assert!(rows_kept_elsewhere("InnoDB").is_none());
        assert!(rows_kept_elsewhere("Aria").is_none());
    }

    proptest! {
        #[test]
        fn a_name_matches_itself_and_star_matches_all(name in "[a-z_0-9]{0,20}", cut in 0usize..20) {
            prop_assert!(skip_matches(&name, &name));
            prop_assert!(skip_matches("*", &name));
            let cut = cut.min(name.len());
            let prefix = format!("{}*", &name[..cut]);
            prop_assert!(skip_matches(&prefix, &name));
            let suffix = format!("*{}", &name[cut..]);
            prop_assert!(skip_matches(&suffix, &name));
        }
    }
}
