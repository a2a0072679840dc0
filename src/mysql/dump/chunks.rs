//! Chunk planning: each table split into primary-key ranges sized from the
//! server's size estimate (not `COUNT(*)`), read inside the snapshot so the
//! ranges are the snapshot's own.

use super::discovery::TableInfo;
use super::table_read_err;
use crate::mysql::row_conn::RowConn;
use crate::mysql::sql::quote_ident;
use crate::mysql::MysqlError;

pub(super) struct Task {
    pub(super) table: usize,
    pub(super) chunk: usize,
    /// `WHERE` clause restricting the key range, empty for the whole table.
    pub(super) range: String,
    pub(super) weight: u64,
}

/// The chunks of the tables at `only` (indexes into `tables`); integer keys
/// are split into about `data_length / chunk_bytes` ranges, other tables are
/// one chunk.
pub(super) async fn plan(
    conn: &mut RowConn,
    tables: &[TableInfo],
    only: &[usize],
    chunk_bytes: u64,
) -> Result<Vec<Task>, MysqlError> {
    let mut tasks = Vec::new();
    for &i in only {
        let t = &tables[i];
        let chunks = (t.data_length / chunk_bytes.max(1)).clamp(1, 10_000);
        match (&t.int_key, chunks > 1) {
            (Some(key), true) => {
                let rows = conn
                    .text_rows(&format!(
                        "SELECT CAST(MIN({k}) AS CHAR), CAST(MAX({k}) AS CHAR) FROM {t}",
                        k = quote_ident(key),
                        t = t.table_ref()
                    ))
                    .await
                    .map_err(|e| table_read_err(&t.name, "reading the key range", e))?;
                let bounds = rows.into_iter().next().unwrap_or_default();
                let (lo, hi) = match (
                    bounds.first().cloned().flatten(),
                    bounds.get(1).cloned().flatten(),
                ) {
                    (Some(lo), Some(hi)) => (
                        lo.parse::<i128>().unwrap_or(0),
                        hi.parse::<i128>().unwrap_or(0),
                    ),
                    _ => (0, 0),
                };
                let k = quote_ident(key);
                let ranges = key_ranges(lo, hi, chunks);
                let n = ranges.len() as u64;
                for (c, range) in ranges.into_iter().enumerate() {
                    tasks.push(Task {
                        table: i,
                        chunk: c + 1,
                        range: range.where_clause(&k),
                        weight: t.data_length / n,
                    });
                }
            }
            _ => tasks.push(Task {
                table: i,
                chunk: 1,
                range: String::new(),
                weight: t.data_length,
            }),
        }
    }
    Ok(tasks)
}

/// One chunk's key range: `from <= key < to`, open at either end for the
/// first and last chunk (rows outside MIN..MAX at the snapshot cannot exist,
/// but open ends keep every row in some chunk whatever the bounds read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KeyRange {
    pub from: Option<i128>,
    pub to: Option<i128>,
}

impl KeyRange {
    fn where_clause(&self, key: &str) -> String {
        match (self.from, self.to) {
            (None, None) => String::new(),
            (None, Some(to)) => format!(" WHERE {key} < {to}"),
            (Some(from), None) => format!(" WHERE {key} >= {from}"),
            (Some(from), Some(to)) => format!(" WHERE {key} >= {from} AND {key} < {to}"),
        }
    }
}

/// Splits `lo..=hi` into at most `chunks` ranges of equal width (never more
/// ranges than keys), which together cover every integer.
pub(super) fn key_ranges(lo: i128, hi: i128, chunks: u64) -> Vec<KeyRange> {
    let span = (hi - lo + 1).max(1);
    let n = i128::from(chunks.max(1)).min(span);
    let step = (span + n - 1) / n;
    (0..n)
        .map(|c| KeyRange {
            from: (c > 0).then_some(lo + c * step),
            to: (c < n - 1).then_some(lo + (c + 1) * step),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk_of(ranges: &[KeyRange], key: i128) -> Vec<usize> {
        ranges
            .iter()
            .enumerate()
            .filter(|(_, r)| r.from.is_none_or(|f| key >= f) && r.to.is_none_or(|t| key < t))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn ranges_read_as_sql() {
        let r = key_ranges(1, 100, 4);
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].where_clause("`ID`"), " WHERE `ID` < 26");
        assert_eq!(r[1].where_clause("`ID`"), " WHERE `ID` >= 26 AND `ID` < 51");
        assert_eq!(r[3].where_clause("`ID`"), " WHERE `ID` >= 76");
        assert_eq!(
            key_ranges(5, 5, 8),
            vec![KeyRange {
                from: None,
                to: None
            }]
        );
    }

    proptest! {
        #[test]
        fn every_key_falls_in_exactly_one_range(
            lo in -1_000_000i128..1_000_000,
            width in 0i128..1_000_000,
            chunks in 1u64..200,
            probe in any::<prop::sample::Index>(),
        ) {
            let hi = lo + width;
            let ranges = key_ranges(lo, hi, chunks);
            prop_assert!(!ranges.is_empty() && ranges.len() as u64 <= chunks);
            let key = lo + probe.index(width as usize + 1) as i128;
            prop_assert_eq!(chunk_of(&ranges, key).len(), 1);
            // Keys outside the bounds read still land somewhere.
            prop_assert_eq!(chunk_of(&ranges, lo - 1).len(), 1);
            prop_assert_eq!(chunk_of(&ranges, hi + 1).len(), 1);
        }
    }
}
