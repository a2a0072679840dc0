//! Rendering: rows read in the text protocol written as SQL statements
//! (literals by column type, without per-value allocation), checksummed,
//! compressed and stored as one data chunk.

use super::chunks::Task;
use super::discovery::{slug, TableInfo};
use super::{table_read_err, DumpProgress, Progress, TaskResult, DATA_HEADER, STATEMENT_BYTES};
use crate::catalog::TableKind;
use crate::mysql::checksum::TableChecksum;
use crate::mysql::pipeline::{ArtifactWriter, BLOCK_BYTES};
use crate::mysql::sql::{bits_into, quote_ident, quoted_into};
use crate::mysql::MysqlError;
use crate::store::Store;
use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use std::sync::Arc;

/// How a column's text-protocol value is written as a SQL literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Literal {
    Number,
    Bits,
    Text,
    Binary,
}

fn literal_kind(t: ColumnType, charset: u16) -> Literal {
    use ColumnType::*;
    match t {
        MYSQL_TYPE_DECIMAL
        | MYSQL_TYPE_NEWDECIMAL
        | MYSQL_TYPE_TINY
        | MYSQL_TYPE_SHORT
        | MYSQL_TYPE_LONG
        | MYSQL_TYPE_LONGLONG
        | MYSQL_TYPE_INT24
        | MYSQL_TYPE_FLOAT
        | MYSQL_TYPE_DOUBLE
        | MYSQL_TYPE_YEAR => Literal::Number,
        MYSQL_TYPE_BIT => Literal::Bits,
        MYSQL_TYPE_DATE
        | MYSQL_TYPE_NEWDATE
        | MYSQL_TYPE_TIME
        | MYSQL_TYPE_TIME2
        | MYSQL_TYPE_DATETIME
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIMESTAMP
        | MYSQL_TYPE_TIMESTAMP2
        | MYSQL_TYPE_JSON => Literal::Text,
        _ if charset == 63 => Literal::Binary,
        _ => Literal::Text,
    }
}

fn push_value(out: &mut Vec<u8>, kind: Literal, v: Option<&Value>) {
    match v {
        None | Some(Value::NULL) => out.extend_from_slice(b"NULL"),
        Some(Value::Bytes(b)) => match kind {
            Literal::Number => out.extend_from_slice(b),
            Literal::Bits => bits_into(out, b),
            Literal::Text => quoted_into(out, b, false),
            Literal::Binary => quoted_into(out, b, true),
        },
        // The text protocol returns only bytes or NULL; other variants are
        // rendered through their SQL form for completeness.
        Some(other) => out.extend_from_slice(other.as_sql(false).as_bytes()),
    }
}

fn value_bytes(v: Option<&Value>) -> Option<&[u8]> {
    match v {
        Some(Value::Bytes(b)) => Some(b.as_slice()),
        _ => None,
    }
}

pub(super) async fn dump_chunk(
    conn: &mut Conn,
    table: &TableInfo,
    task: &Task,
    store: &Arc<Store>,
    set_key: &str,
    level: i32,
    progress: &Progress,
) -> Result<TaskResult, MysqlError> {
    let path = format!(
        "db/2-data-{:04}-{:05}-{}.sql.zst",
        task.table + 1,
        task.chunk,
        slug(&table.name)
    );
    let mut writer = ArtifactWriter::start(
        store.clone(),
        format!("{set_key}{path}"),
        path.clone(),
        level,
    );
    let outcome = write_chunk(conn, table, task, &mut writer, progress).await;
    match outcome {
        Ok((sum, max_statement)) => {
            let raw_bytes = writer.raw_bytes();
            let written = writer.finish().await?;
            Ok(TaskResult {
                table: task.table,
                chunk: task.chunk,
                written,
                sum,
                max_statement,
                raw_bytes,
            })
        }
        Err(e) => {
            drop(writer);
            Err(e)
        }
    }
}

async fn write_chunk(
    conn: &mut Conn,
    table: &TableInfo,
    task: &Task,
    writer: &mut ArtifactWriter,
    progress: &Progress,
) -> Result<(TableChecksum, usize), MysqlError> {
    let mut block: Vec<u8> = Vec::with_capacity(BLOCK_BYTES + STATEMENT_BYTES);
    block.extend_from_slice(
        format!(
            "-- wpdr data: table {} chunk {}\n{DATA_HEADER}",
            quote_ident(&table.name),
            task.chunk
        )
        .as_bytes(),
    );
    if table.kind == TableKind::SystemVersioned {
        // History rows keep their own period (MariaDB 10.11+).
        block.extend_from_slice(b"SET SESSION system_versioning_insert_history=1;\n");
    }
    let mut sum = TableChecksum::default();
    let mut max_statement = 0usize;
    if table.columns.is_empty() {
        writer.write(block).await?;
        return Ok((sum, 0));
    }
    let insert_prefix = format!(
        "INSERT INTO {} ({}) VALUES ",
        quote_ident(&table.name),
        table.select_list()
    );
    let query = format!(
        "SELECT {} FROM {}{}{}",
        table.select_list(),
        table.table_ref(),
        task.range,
        table.order_by()
    );
    let mut result = conn
        .query_iter(query.as_str())
        .await
        .map_err(|e| table_read_err(&table.name, "reading", e))?;
    let kinds: Vec<Literal> = result
        .columns()
        .map(|cols| {
            cols.iter()
                .map(|c| literal_kind(c.column_type(), c.character_set()))
                .collect()
        })
        .unwrap_or_default();
    let mut statement_start: Option<usize> = None;
    while let Some(row) = result
        .next()
        .await
        .map_err(|e| table_read_err(&table.name, "reading", e))?
    {
        sum.add_row((0..kinds.len()).map(|i| value_bytes(row.as_ref(i))));
        match statement_start {
            None => {
                statement_start = Some(block.len());
                block.extend_from_slice(insert_prefix.as_bytes());
            }
            Some(_) => block.push(b','),
        }
        block.push(b'(');
        for (i, kind) in kinds.iter().enumerate() {
            if i > 0 {
                block.push(b',');
            }
            push_value(&mut block, *kind, row.as_ref(i));
        }
        block.push(b')');
        if let Some(start) = statement_start {
            if block.len() - start >= STATEMENT_BYTES {
                max_statement = max_statement.max(block.len() - start);
                block.extend_from_slice(b";\n");
                statement_start = None;
                if block.len() >= BLOCK_BYTES {
                    let n = block.len() as u64;
                    writer
                        .write(std::mem::replace(
                            &mut block,
                            Vec::with_capacity(BLOCK_BYTES + STATEMENT_BYTES),
                        ))
                        .await?;
                    progress(DumpProgress::Written(n));
                }
            }
        }
    }
    if let Some(start) = statement_start {
        max_statement = max_statement.max(block.len() - start);
        block.extend_from_slice(b";\n");
    }
    let n = block.len() as u64;
    writer.write(block).await?;
    progress(DumpProgress::Written(n));
    Ok((sum, max_statement))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_by_column_type() {
        let mut out = Vec::new();
        push_value(
            &mut out,
            Literal::Binary,
            Some(&Value::Bytes(vec![0, b'\'', 200])),
        );
        assert_eq!(out, b"_binary'\\0\\'\xc8'");
        out.clear();
        push_value(
            &mut out,
            Literal::Number,
            Some(&Value::Bytes(b"-1.50".to_vec())),
        );
        push_value(&mut out, Literal::Text, None);
        assert_eq!(out, b"-1.50NULL");
        assert_eq!(
            literal_kind(ColumnType::MYSQL_TYPE_BLOB, 63),
            Literal::Binary
        );
        assert_eq!(literal_kind(ColumnType::MYSQL_TYPE_BLOB, 45), Literal::Text);
        assert_eq!(
            literal_kind(ColumnType::MYSQL_TYPE_DATETIME, 63),
            Literal::Text
        );
    }
}
