//! The dump's `INSERT` statements sent to the server as `LOAD DATA LOCAL
//! INFILE` instead: the same rows, but the server reads tab-separated
//! fields rather than parsing SQL (1.6x faster for the rows on this
//! machine: docs/BENCHMARKS.md). The artifacts stay plain SQL; only the
//! load changes what it sends, and only where it pays (not into tables the
//! server locks whole for a bulk insert: `RowsAs` in load.rs).
//!
//! Each value keeps the bytes the dump's literal stands for: text fields
//! are the literal's body (its SQL escapes are also LOAD DATA escapes) with
//! tabs escaped, NULL is `\N`, numbers are as written; bytes of binary
//! columns go as hex through `UNHEX()` and bits as binary digits through
//! `CONV()`, so no character-set conversion ever touches them. The table
//! check after the load proves the result is the set's, as for SQL.

use super::insert::{Insert, LiteralKind};
use super::sql::quote_ident;

/// How a column's values travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// Numbers or text: the field itself.
    Plain,
    /// Bytes: hex, `UNHEX()` on the server.
    Hex,
    /// A BIT value: binary digits, `CONV()` on the server.
    Bits,
}

fn field_of(kind: LiteralKind) -> Option<Field> {
    match kind {
        LiteralKind::Null => None,
        LiteralKind::Number | LiteralKind::Text => Some(Field::Plain),
        LiteralKind::Binary => Some(Field::Hex),
        LiteralKind::Bits => Some(Field::Bits),
    }
}

/// What one `LOAD DATA` statement reads: a table, its columns, and how
/// each column's fields travel. Consecutive statements of a chunk that fit
/// the same layout stream through one `LOAD DATA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    table: String,
    columns: Vec<String>,
    /// `None`: only NULLs seen (the column goes plain).
    fields: Vec<Option<Field>>,
}

impl Layout {
    /// The layout of `ins`; `None` when a column mixes literal kinds the
    /// dump never mixes (the statement then goes as SQL).
    pub fn of(ins: &Insert) -> Option<Layout> {
        let mut fields: Vec<Option<Field>> = vec![None; ins.columns.len()];
        for row in &ins.rows {
            for (i, lit) in row.iter().enumerate() {
                let Some(f) = field_of(lit.kind) else {
                    continue;
                };
                match fields[i] {
                    None => fields[i] = Some(f),
                    Some(seen) if seen == f => {}
                    Some(_) => return None,
                }
            }
        }
        Some(Layout {
            table: ins.table.clone(),
            columns: ins.columns.clone(),
            fields,
        })
    }

    /// Whether `ins`'s rows can go through this layout's statement.
    pub fn fits(&self, ins: &Insert) -> bool {
        ins.table == self.table
            && ins.columns == self.columns
            && ins.rows.iter().all(|row| {
                row.iter()
                    .zip(&self.fields)
                    .all(|(lit, f)| match field_of(lit.kind) {
                        None => true,
                        Some(k) => k == f.unwrap_or(Field::Plain),
                    })
            })
    }

    /// The `LOAD DATA LOCAL INFILE` statement reading this layout's rows.
    pub fn sql(&self) -> String {
        let mut targets = Vec::with_capacity(self.columns.len());
        let mut sets = Vec::new();
        for (i, (column, field)) in self.columns.iter().zip(&self.fields).enumerate() {
            let c = quote_ident(column);
            match field.unwrap_or(Field::Plain) {
                Field::Plain => targets.push(c),
                Field::Hex => {
                    targets.push(format!("@v{i}"));
                    sets.push(format!("{c} = UNHEX(@v{i})"));
                }
                Field::Bits => {
                    targets.push(format!("@v{i}"));
                    sets.push(format!("{c} = CAST(CONV(@v{i}, 2, 10) AS UNSIGNED)"));
                }
            }
        }
        let mut sql = format!(
            "LOAD DATA LOCAL INFILE 'wpdr-rows' INTO TABLE {} CHARACTER SET utf8mb4 \
             FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({})",
            quote_ident(&self.table),
            targets.join(", ")
        );
        if !sets.is_empty() {
            sql.push_str(" SET ");
            sql.push_str(&sets.join(", "));
        }
        sql
    }
}

/// `ins`'s rows (read from `stmt`) as LOAD DATA input lines.
pub fn rows(stmt: &[u8], ins: &Insert) -> Vec<u8> {
    let mut rows = Vec::with_capacity(stmt.len());
    for row in &ins.rows {
        for (i, lit) in row.iter().enumerate() {
            if i > 0 {
                rows.push(b'\t');
            }
            let raw = &stmt[lit.span.clone()];
            match lit.kind {
                LiteralKind::Null => rows.extend_from_slice(b"\\N"),
                LiteralKind::Number => rows.extend_from_slice(raw),
                LiteralKind::Bits => {
                    let digits = &raw[2..raw.len() - 1];
                    rows.extend_from_slice(if digits.is_empty() { b"0" } else { digits });
                }
                LiteralKind::Text => text_field(&mut rows, &raw[1..raw.len() - 1]),
                LiteralKind::Binary => {
                    if let Some(v) = lit.value(stmt) {
                        rows.extend_from_slice(hex::encode(v).as_bytes());
                    }
                }
            }
        }
        rows.push(b'\n');
    }
    rows
}

/// A string literal's body as a LOAD DATA field: the dump's escapes
/// (`\0 \' \" \\ \n \r \Z`) mean the same to LOAD DATA; a tab, which the
/// dump leaves raw, would end the field and is escaped.
fn text_field(out: &mut Vec<u8>, body: &[u8]) {
    let mut rest = body;
    while let Some(i) = memchr::memchr(b'\t', rest) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(b"\\t");
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::insert::{parse, unescape};
    use proptest::prelude::*;

    /// How LOAD DATA reads one field back (ESCAPED BY '\\'): the SQL
    /// parser's escapes, and `\N` for NULL.
    fn read_field(f: &[u8]) -> Option<Vec<u8>> {
        (f != b"\\N").then(|| unescape(f).into_owned())
    }

    /// `stmt` (read as `ins`) as one LOAD DATA, as the load sends it.
    fn from_insert(stmt: &[u8], ins: &Insert) -> Option<(String, Vec<u8>)> {
        Layout::of(ins).map(|l| (l.sql(), rows(stmt, ins)))
    }

    #[test]
    fn each_kind_travels_its_way() {
        let s = b"INSERT INTO `t` (`n`,`s`,`b`,`x`,`z`) VALUES (-1.5,'a\tb\\'c\\n',_binary'\\0\xff',b'00000101',NULL),(2,'',_binary'',b'0',NULL)";
        let ins = parse(s).unwrap().unwrap();
        let ld = from_insert(s, &ins).unwrap();
        assert_eq!(
            ld.0,
            "LOAD DATA LOCAL INFILE 'wpdr-rows' INTO TABLE `t` CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' (`n`, `s`, @v2, @v3, `z`) SET `b` = UNHEX(@v2), `x` = CAST(CONV(@v3, 2, 10) AS UNSIGNED)"
        );
        assert_eq!(
            String::from_utf8_lossy(&ld.1),
            "-1.5\ta\\tb\\'c\\n\t00ff\t00000101\t\\N\n2\t\t\t0\t\\N\n"
        );
        let mixed = b"INSERT INTO `t` (`a`) VALUES ('x'),(_binary'y')";
        assert!(from_insert(mixed, &parse(mixed).unwrap().unwrap()).is_none());
    }

    #[test]
    fn later_statements_stream_through_a_layout_only_when_they_fit() {
        let read = |s: &'static [u8]| parse(s).unwrap().unwrap();
        let first = read(b"INSERT INTO `t` (`a`,`b`) VALUES (1,NULL),(2,NULL)");
        let layout = Layout::of(&first).unwrap();
        assert!(layout.fits(&read(b"INSERT INTO `t` (`a`,`b`) VALUES (3,'x'),(4,NULL)")));
        // b went plain: bytes there need another statement.
        assert!(!layout.fits(&read(b"INSERT INTO `t` (`a`,`b`) VALUES (5,_binary'x')")));
        assert!(!layout.fits(&read(b"INSERT INTO `u` (`a`,`b`) VALUES (1,2)")));
        assert!(!layout.fits(&read(b"INSERT INTO `t` (`a`,`c`) VALUES (1,2)")));
        let bytes = Layout::of(&read(b"INSERT INTO `t` (`a`,`b`) VALUES (1,_binary'x')")).unwrap();
        assert!(bytes.fits(&read(b"INSERT INTO `t` (`a`,`b`) VALUES (1,NULL)")));
        assert!(!bytes.fits(&read(b"INSERT INTO `t` (`a`,`b`) VALUES (1,'x')")));
    }

    proptest! {
        /// Every text value reads back from its field as the bytes the
        /// dump's literal stands for, and rows and fields split where they should.
        #[test]
        fn text_fields_read_back_as_the_values(values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..30)), 1..20)) {
            let mut s = b"INSERT INTO `t` (`a`,`b`) VALUES ".to_vec();
            for (i, v) in values.iter().enumerate() {
                if i > 0 { s.push(b','); }
                s.extend_from_slice(b"(1,");
                match v {
                    None => s.extend_from_slice(b"NULL"),
                    Some(v) => {
                        s.push(b'\'');
                        crate::mysql::sql::escape_into(&mut s, v);
                        s.push(b'\'');
                    }
                }
                s.push(b')');
            }
            let ins = parse(&s).unwrap().unwrap();
            let ld = from_insert(&s, &ins).unwrap();
            let lines: Vec<&[u8]> = ld.1.split(|&b| b == b'\n').collect();
            prop_assert_eq!(lines.len(), values.len() + 1);
            for (line, v) in lines.iter().zip(&values) {
                let fields: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
                prop_assert_eq!(fields.len(), 2);
                prop_assert_eq!(read_field(fields[1]), v.clone());
            }
        }
    }
}
