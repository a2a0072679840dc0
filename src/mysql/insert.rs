//! Reading back the `INSERT` statements the dump writes, value by value: the
//! way a load changes values on their way into the server (the site's
//! address, at a restore under a new one) without writing every row twice.
//!
//! Only the exact form [`super::dump`] renders is read: `INSERT INTO `t`
//! (`a`,`b`) VALUES (…),(…)` with `NULL`, numbers as the text protocol gave
//! them, `b'0101'` bits, `'…'` text and `_binary'…'` bytes escaped by
//! [`super::sql::escape_into`]. Anything else is an error the caller answers
//! by loading the statement as it is. Each value's bytes are those the
//! server returned at the dump (what the table checksum hashed), so a
//! statement read here checksums exactly as the dump did (property-tested
//! against the renderer).

use std::borrow::Cow;
use std::ops::Range;

/// How a value is written in the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralKind {
    Null,
    Number,
    Bits,
    Text,
    Binary,
}

/// One value: its kind and where its literal is in the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal {
    pub kind: LiteralKind,
    pub span: Range<usize>,
}

/// An `INSERT` statement cut into its head (up to `VALUES `) and its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// `INSERT INTO … VALUES ` (the bytes before the first row).
    pub head: Range<usize>,
    pub table: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Literal>>,
}

/// Why a statement is not one this module reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("byte {at}: {what}")]
pub struct InsertSyntax {
    pub at: usize,
    pub what: &'static str,
}

impl Literal {
    /// The value as the server's text protocol gave it to the dump (`None`: NULL).
    pub fn value<'s>(&self, stmt: &'s [u8]) -> Option<Cow<'s, [u8]>> {
        let raw = &stmt[self.span.clone()];
        match self.kind {
            LiteralKind::Null => None,
            LiteralKind::Number => Some(Cow::Borrowed(raw)),
            LiteralKind::Bits => Some(Cow::Owned(bits_value(&raw[2..raw.len() - 1]))),
            LiteralKind::Text => Some(unescape(&raw[1..raw.len() - 1])),
            LiteralKind::Binary => Some(unescape(&raw[8..raw.len() - 1])),
        }
    }
}

/// Reads `stmt` when it is a data statement; `Ok(None)` for any other
/// statement (the `SET`s of a chunk's header).
pub fn parse(stmt: &[u8]) -> Result<Option<Insert>, InsertSyntax> {
    let start = stmt.len() - stmt.trim_ascii_start().len();
    if !stmt[start..].starts_with(b"INSERT INTO ") {
        return Ok(None);
    }
    let mut p = Parser {
        s: stmt,
        at: start + b"INSERT INTO ".len(),
    };
    let table = p.ident()?;
    p.expect(b" (")?;
    let mut columns = vec![p.ident()?];
    while p.eat(b",") {
        columns.push(p.ident()?);
    }
    p.expect(b") VALUES ")?;
    let head = start..p.at;
    let mut rows = Vec::new();
    loop {
        p.expect(b"(")?;
        let mut row = Vec::with_capacity(columns.len());
        row.push(p.literal()?);
        while p.eat(b",") {
            row.push(p.literal()?);
        }
        p.expect(b")")?;
        if row.len() != columns.len() {
            return Err(p.err("a row with another number of values than columns"));
        }
        rows.push(row);
        if !p.eat(b",") {
            break;
        }
    }
    p.eat(b";");
    if !stmt[p.at..].trim_ascii().is_empty() {
        return Err(p.err("more after the last row"));
    }
    Ok(Some(Insert {
        head,
        table,
        columns,
        rows,
    }))
}

struct Parser<'s> {
    s: &'s [u8],
    at: usize,
}

impl Parser<'_> {
    fn err(&self, what: &'static str) -> InsertSyntax {
        InsertSyntax { at: self.at, what }
    }

    fn eat(&mut self, token: &[u8]) -> bool {
        if self.s[self.at..].starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &'static [u8]) -> Result<(), InsertSyntax> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.err("not the form the dump writes"))
        }
    }

    /// A backquoted identifier (a doubled backquote is one).
    fn ident(&mut self) -> Result<String, InsertSyntax> {
        self.expect(b"`")?;
        let mut name = Vec::new();
        loop {
            match self.s.get(self.at) {
                None => return Err(self.err("an identifier without its closing backquote")),
                Some(b'`') if self.s.get(self.at + 1) == Some(&b'`') => {
                    name.push(b'`');
                    self.at += 2;
                }
                Some(b'`') => {
                    self.at += 1;
                    return String::from_utf8(name)
                        .map_err(|_| self.err("an identifier that is not UTF-8"));
                }
                Some(&c) => {
                    name.push(c);
                    self.at += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> Result<Literal, InsertSyntax> {
        let from = self.at;
        let kind = if self.eat(b"NULL") {
            LiteralKind::Null
        } else if self.eat(b"_binary'") {
            self.quoted()?;
            LiteralKind::Binary
        } else if self.eat(b"'") {
            self.quoted()?;
            LiteralKind::Text
        } else if self.eat(b"b'") {
            let n = self.s[self.at..]
                .iter()
                .take_while(|&&c| c == b'0' || c == b'1')
                .count();
            self.at += n;
            self.expect(b"'")?;
            if n % 8 != 0 && &self.s[from..self.at] != b"b'0'" {
                return Err(self.err("bits that are not whole bytes"));
            }
            LiteralKind::Bits
        } else {
            let n = self.s[self.at..]
                .iter()
                .take_while(|&&c| {
                    c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E')
                })
                .count();
            if n == 0 {
                return Err(self.err("a value that is none of the dump's literals"));
            }
            self.at += n;
            LiteralKind::Number
        };
        Ok(Literal {
            kind,
            span: from..self.at,
        })
    }

    /// The rest of a single-quoted string, through its closing quote.
    fn quoted(&mut self) -> Result<(), InsertSyntax> {
        let rest = &self.s[self.at..];
        let mut i = 0;
        loop {
            match memchr::memchr2(b'\\', b'\'', &rest[i..]) {
                None => return Err(self.err("a string without its closing quote")),
                Some(j) if rest[i + j] == b'\\' => {
                    if i + j + 1 >= rest.len() {
                        return Err(self.err("a string without its closing quote"));
                    }
                    i += j + 2;
                }
                Some(j) => {
                    self.at += i + j + 1;
                    return Ok(());
                }
            }
        }
    }
}

/// The bytes an escaped string literal's body stands for (the inverse of
/// [`super::sql::escape_into`], as the server's parser reads it).
pub fn unescape(body: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr(b'\\', body).is_none() {
        return Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while let Some(j) = memchr::memchr(b'\\', &body[i..]) {
        out.extend_from_slice(&body[i..i + j]);
        let Some(&c) = body.get(i + j + 1) else {
            // A lone backslash at the end (never in a literal the parser
            // accepts): kept as it is.
            out.push(b'\\');
            i = body.len();
            break;
        };
        out.push(match c {
            b'0' => 0,
            b'n' => b'\n',
            b'r' => b'\r',
            b'Z' => 0x1a,
            b't' => b'\t',
            b'b' => 8,
            c => c,
        });
        i += j + 2;
    }
    if i < body.len() {
        out.extend_from_slice(&body[i..]);
    }
    Cow::Owned(out)
}

/// `0101…` (whole bytes, or the lone `0` of an empty value) as bytes.
fn bits_value(digits: &[u8]) -> Vec<u8> {
    if digits.len() % 8 != 0 {
        return Vec::new();
    }
    digits
        .chunks(8)
        .map(|byte| byte.iter().fold(0u8, |acc, &d| (acc << 1) | (d - b'0')))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::sql::{bits_into, quote_ident, quoted_into};
    use proptest::prelude::*;

    /// A value and how the dump writes it.
    #[derive(Debug, Clone)]
    enum V {
        Null,
        Number(String),
        Bits(Vec<u8>),
        Text(Vec<u8>),
        Binary(Vec<u8>),
    }

    fn render(v: &V, out: &mut Vec<u8>) {
        match v {
            V::Null => out.extend_from_slice(b"NULL"),
            V::Number(n) => out.extend_from_slice(n.as_bytes()),
            V::Bits(b) => bits_into(out, b),
            V::Text(t) => quoted_into(out, t, false),
            V::Binary(t) => quoted_into(out, t, true),
        }
    }

    fn bytes_of(v: &V) -> Option<Vec<u8>> {
        match v {
            V::Null => None,
            V::Number(n) => Some(n.clone().into_bytes()),
            V::Bits(b) | V::Text(b) | V::Binary(b) => Some(b.clone()),
        }
    }

    fn value() -> impl Strategy<Value = V> {
        prop_oneof![
            Just(V::Null),
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                (-1e300f64..1e300).prop_map(|f| format!("{f:e}")),
                "-?[0-9]{1,30}\\.[0-9]{0,30}".prop_map(|s| s),
            ]
            .prop_map(V::Number),
            proptest::collection::vec(any::<u8>(), 0..4).prop_map(V::Bits),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(V::Text),
            "[a-z'\\\\\"\n\r,()`; ]{0,30}".prop_map(|s| V::Text(s.into_bytes())),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(V::Binary),
        ]
    }

    fn statement(table: &str, columns: &[String], rows: &[Vec<V>]) -> Vec<u8> {
        let list = columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(",");
        let mut s = format!("INSERT INTO {} ({list}) VALUES ", quote_ident(table)).into_bytes();
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                s.push(b',');
            }
            s.push(b'(');
            for (j, v) in row.iter().enumerate() {
                if j > 0 {
                    s.push(b',');
                }
                render(v, &mut s);
            }
            s.push(b')');
        }
        s
    }

    #[test]
    fn reads_each_literal_kind() {
        let s = b"INSERT INTO `wp_x` (`a`,`b``c`,`d`,`e`,`f`) VALUES (NULL,-1.5e-7,b'00000101','it\\'s\\n',_binary'\\0\\Z'),(1,2,b'0','',_binary'')";
        let ins = parse(s).unwrap().unwrap();
        assert_eq!(ins.table, "wp_x");
        assert_eq!(ins.columns, ["a", "b`c", "d", "e", "f"]);
        assert_eq!(
            &s[ins.head.clone()],
            b"INSERT INTO `wp_x` (`a`,`b``c`,`d`,`e`,`f`) VALUES "
        );
        let vals: Vec<Option<Vec<u8>>> = ins.rows[0]
            .iter()
            .map(|l| l.value(s).map(|v| v.into_owned()))
            .collect();
        assert_eq!(
            vals,
            [
                None,
                Some(b"-1.5e-7".to_vec()),
                Some(vec![5]),
                Some(b"it's\n".to_vec()),
                Some(vec![0, 0x1a])
            ]
        );
        assert_eq!(ins.rows[1][2].value(s).unwrap().len(), 0);
        assert_eq!(parse(b"SET SESSION unique_checks=0").unwrap(), None);
        // A lone backslash at the end is kept once, not the bytes before it twice.
        assert_eq!(unescape(b"ab\\ncd\\").as_ref(), b"ab\ncd\\");
    }

    #[test]
    fn refuses_what_the_dump_does_not_write() {
        for bad in [
            &b"INSERT INTO `t` (`a`) VALUES ('x"[..],
            b"INSERT INTO `t` (`a`) VALUES (x'00')",
            b"INSERT INTO `t` (`a`,`b`) VALUES (1)",
            b"INSERT INTO `t` (`a`) VALUES (1) ON DUPLICATE KEY UPDATE a=1",
            b"INSERT INTO `t` (`a`) VALUES (b'101')",
            b"INSERT INTO t (`a`) VALUES (1)",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        /// Whatever the dump renders reads back as the values it rendered,
        /// each literal's span being exactly its text.
        #[test]
        fn reads_back_what_the_dump_renders(
            table in "[a-z_`]{1,8}",
            width in 1usize..5,
            cells in proptest::collection::vec(value(), 1..40),
        ) {
            let columns: Vec<String> = (0..width).map(|i| format!("c`{i}")).collect();
            let rows: Vec<Vec<V>> = cells.chunks(width).filter(|r| r.len() == width).map(<[V]>::to_vec).collect();
            prop_assume!(!rows.is_empty());
            let s = statement(&table, &columns, &rows);
            let ins = parse(&s).unwrap().unwrap();
            prop_assert_eq!(&ins.columns, &columns);
            prop_assert_eq!(ins.rows.len(), rows.len());
            for (got, want) in ins.rows.iter().zip(&rows) {
                for (lit, v) in got.iter().zip(want) {
                    prop_assert_eq!(lit.value(&s).map(|b| b.into_owned()), bytes_of(v));
                    let mut alone = Vec::new();
                    render(v, &mut alone);
                    prop_assert_eq!(&s[lit.span.clone()], alone.as_slice());
                }
            }
        }
    }
}
