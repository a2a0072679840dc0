//! Rendering: rows read in the text protocol written as SQL statements
//! (literals by column type, without per-value allocation), checksummed,
//! compressed and stored as one data chunk.

use super::chunks::Task;
use super::discovery::{slug, TableInfo};
use super::{table_read_err, DumpProgress, Progress, TaskResult, DATA_HEADER, STATEMENT_BYTES};
use crate::catalog::TableKind;
use crate::mysql::checksum::{RowHasher, TableChecksum};
use crate::mysql::pipeline::{new_block, ArtifactWriter, BLOCK_BYTES};
use crate::mysql::row_conn::{driver_values, RowConn};
use crate::mysql::sql::{bits_into, quote_ident, quoted_into};
use crate::mysql::MysqlError;
use crate::store::Store;
use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
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

fn push_value(out: &mut Vec<u8>, kind: Literal, v: Option<&[u8]>) {
    match v {
        None => out.extend_from_slice(b"NULL"),
        Some(b) => match kind {
            Literal::Number => out.extend_from_slice(b),
            Literal::Bits => bits_into(out, b),
            Literal::Text => quoted_into(out, b, false),
            Literal::Binary => quoted_into(out, b, true),
        },
    }
}

/// Rows into extended INSERT statements, cut at [`STATEMENT_BYTES`], handed
/// out in blocks of about [`BLOCK_BYTES`]; the table's checksum on the way.
struct Statements {
    block: Vec<u8>,
    insert_prefix: String,
    kinds: Vec<Literal>,
    statement_start: Option<usize>,
    max_statement: usize,
    sum: TableChecksum,
}

impl Statements {
    /// Adds a row; a full block is handed back to be written. Whether the
    /// row held its columns' values is the reader's to say (`Values::finish`).
    fn push_row<'v>(&mut self, values: impl Iterator<Item = Option<&'v [u8]>>) -> Option<Vec<u8>> {
        let mut hash = RowHasher::new();
        let block = &mut self.block;
        match self.statement_start {
            None => {
                self.statement_start = Some(block.len());
                block.extend_from_slice(self.insert_prefix.as_bytes());
            }
            Some(_) => block.push(b','),
        }
        block.push(b'(');
        for (n, (kind, v)) in self.kinds.iter().zip(values).enumerate() {
            if n > 0 {
                block.push(b',');
            }
            hash.push(v);
            push_value(block, *kind, v);
        }
        self.sum.add_hash(hash.finish());
        block.push(b')');
        if let Some(start) = self.statement_start {
            if block.len() - start >= STATEMENT_BYTES {
                self.max_statement = self.max_statement.max(block.len() - start);
                block.extend_from_slice(b";\n");
                self.statement_start = None;
                if block.len() >= BLOCK_BYTES {
                    return Some(std::mem::replace(
                        block,
                        new_block(BLOCK_BYTES + STATEMENT_BYTES),
                    ));
                }
            }
        }
        None
    }

    /// The last block and the chunk's checksum and longest statement.
    fn finish(mut self) -> (Vec<u8>, TableChecksum, usize) {
        if let Some(start) = self.statement_start {
            self.max_statement = self.max_statement.max(self.block.len() - start);
            self.block.extend_from_slice(b";\n");
        }
        (self.block, self.sum, self.max_statement)
    }
}

async fn write_block(
    writer: &mut ArtifactWriter,
    block: Vec<u8>,
    progress: &Progress,
) -> Result<(), MysqlError> {
    let n = block.len() as u64;
    writer.write(block).await?;
    progress(DumpProgress::Written(n));
    Ok(())
}

pub(super) async fn dump_chunk(
    conn: &mut RowConn,
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
    conn: &mut RowConn,
    table: &TableInfo,
    task: &Task,
    writer: &mut ArtifactWriter,
    progress: &Progress,
) -> Result<(TableChecksum, usize), MysqlError> {
    let mut block = new_block(BLOCK_BYTES + STATEMENT_BYTES);
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
    if table.columns.is_empty() {
        writer.write(block).await?;
        return Ok((TableChecksum::default(), 0));
    }
    let query = format!(
        "SELECT {} FROM {}{}{}",
        table.select_list(),
        table.table_ref(),
        task.range,
        table.order_by()
    );
    let mut out = Statements {
        block,
        insert_prefix: format!(
            "INSERT INTO {} ({}) VALUES ",
            quote_ident(&table.name),
            table.select_list()
        ),
        kinds: Vec::new(),
        statement_start: None,
        max_statement: 0,
        sum: TableChecksum::default(),
    };
    let read_err = |e: mysql_async::Error| table_read_err(&table.name, "reading", e);
    match conn {
        RowConn::Wire(conn) => {
            let mut rows = conn.query(&query).await.map_err(|e| read_err(e.into()))?;
            out.kinds = rows
                .columns()
                .iter()
                .map(|c| literal_kind(c.column_type(), c.character_set()))
                .collect();
            while let Some(row) = rows.next().await.map_err(|e| read_err(e.into()))? {
                let mut values = row.values();
                let full = out.push_row(&mut values);
                values.finish().map_err(|e| read_err(e.into()))?;
                if let Some(full) = full {
                    write_block(writer, full, progress).await?;
                }
            }
        }
        RowConn::Driver(conn) => {
            let mut result = conn.query_iter(query.as_str()).await.map_err(read_err)?;
            out.kinds = result
                .columns()
                .map(|cols| {
                    cols.iter()
                        .map(|c| literal_kind(c.column_type(), c.character_set()))
                        .collect()
                })
                .unwrap_or_default();
            let n = out.kinds.len();
            while let Some(row) = result.next().await.map_err(read_err)? {
                if let Some(full) = out.push_row(driver_values(&row, n)) {
                    write_block(writer, full, progress).await?;
                }
            }
        }
    }
    let (block, sum, max_statement) = out.finish();
    write_block(writer, block, progress).await?;
    Ok((sum, max_statement))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_by_column_type() {
        let mut out = Vec::new();
        push_value(&mut out, Literal::Binary, Some(&[0, b'\'', 200]));
        assert_eq!(out, b"_binary'\\0\\'\xc8'");
        out.clear();
        push_value(&mut out, Literal::Number, Some(b"-1.50"));
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
