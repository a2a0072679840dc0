//! Discovery: the tables of the database, their keys, columns and size
//! estimates, and the dry-run plan built from them.

use crate::mysql::sql::quote_ident;
use crate::mysql::{query_err, MysqlError};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// A table as the snapshot sees it.
#[derive(Debug, Clone)]
pub(crate) struct TableInfo {
    pub name: String,
    pub engine: String,
    pub data_length: u64,
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
    /// The primary key's first column when it is an integer: chunks are ranges of it.
    pub int_key: Option<String>,
}

impl TableInfo {
    pub fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(",")
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
}

/// Lists the base tables of `db` with their stored (non-generated) columns and keys.
pub(crate) async fn list_tables(conn: &mut Conn, db: &str) -> Result<Vec<TableInfo>, MysqlError> {
    let rows: Vec<(String, Option<String>, Option<u64>)> = conn
        .exec(
            "SELECT TABLE_NAME, ENGINE, DATA_LENGTH FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            (db,),
        )
        .await
        .map_err(|e| query_err("listing tables", e))?;
    let cols: Vec<(String, String, String, String, String)> = conn
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, EXTRA, IS_GENERATED FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (db,),
        )
        .await
        .or_else(|_| Ok::<_, mysql_async::Error>(Vec::new()))
        .map_err(|e| query_err("listing columns", e))?;
    let cols = if cols.is_empty() {
        // MySQL has no IS_GENERATED column; EXTRA says "VIRTUAL GENERATED" there.
        let plain: Vec<(String, String, String, String)> = conn
            .exec(
                "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, EXTRA FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, ORDINAL_POSITION",
                (db,),
            )
            .await
            .map_err(|e| query_err("listing columns", e))?;
        plain
            .into_iter()
            .map(|(t, c, d, e)| (t, c, d, e, String::new()))
            .collect()
    } else {
        cols
    };
    let keys: Vec<(String, String)> = conn
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND INDEX_NAME = 'PRIMARY' ORDER BY TABLE_NAME, SEQ_IN_INDEX",
            (db,),
        )
        .await
        .map_err(|e| query_err("listing primary keys", e))?;
    let mut out = Vec::new();
    for (name, engine, data_length) in rows {
        let mut columns = Vec::new();
        let mut types = Vec::new();
        for (t, c, dt, extra, generated) in cols.iter().filter(|c| c.0 == name) {
            let _ = t;
            let is_generated = generated.eq_ignore_ascii_case("ALWAYS")
                || extra.to_ascii_uppercase().contains("GENERATED")
                    && !extra.to_ascii_uppercase().contains("DEFAULT_GENERATED");
            if !is_generated {
                columns.push(c.clone());
                types.push((c.clone(), dt.to_ascii_lowercase()));
            }
        }
        let primary_key: Vec<String> = keys
            .iter()
            .filter(|k| k.0 == name)
            .map(|k| k.1.clone())
            .collect();
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
        out.push(TableInfo {
            name,
            engine: engine.unwrap_or_default(),
            data_length: data_length.unwrap_or(0),
            columns,
            primary_key,
            int_key,
        });
    }
    Ok(out)
}

/// One table in a dry-run plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedTable {
    pub name: String,
    pub engine: String,
    pub estimated_bytes: u64,
    /// The integer key that chunks are cut on, if any.
    pub split_by: Option<String>,
}

/// What a backup of `db` would read, without opening a snapshot.
pub async fn plan_tables(conn: &mut Conn, db: &str) -> Result<Vec<PlannedTable>, MysqlError> {
    Ok(list_tables(conn, db)
        .await?
        .into_iter()
        .map(|t| PlannedTable {
            name: t.name,
            engine: t.engine,
            estimated_bytes: t.data_length,
            split_by: t.int_key,
        })
        .collect())
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
