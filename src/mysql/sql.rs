//! SQL text: literal encoding for dumps and a streaming statement splitter for loads.
//!
//! The dump writes plain SQL that the stock `mariadb` client can execute, so a
//! set can be restored without wpdr. The loader splits the same files into
//! statements itself (quotes, comments and `DELIMITER` aware) to run them in
//! parallel over several connections.

use crate::catalog::TableKind;

/// Quotes an identifier with backticks, doubling any backtick inside it.
pub fn quote_ident(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('`');
    for c in name.chars() {
        if c == '`' {
            s.push('`');
        }
        s.push(c);
    }
    s.push('`');
    s
}

/// For each byte, the letter after the backslash that escapes it; 0: none.
const ESCAPES: [u8; 256] = {
    let mut t = [0u8; 256];
    t[0] = b'0';
    t[b'\'' as usize] = b'\'';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[0x1a] = b'Z';
    t
};

/// Appends `bytes` as the body of a single-quoted string literal, with the
/// escapes the MySQL parser understands (with backslash escapes enabled, which
/// our files' `sql_mode` guarantees). Newlines are escaped too, so a data
/// statement never spans lines.
///
/// The dump's largest own cost after compression: eight bytes at a time are
/// tested for any byte that may need escaping and copied whole when none
/// does; only such words are looked up byte by byte (docs/BENCHMARKS.md).
pub fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 16);
    let mut start = 0;
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in words.by_ref() {
        let w = u64::from_le_bytes([
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]);
        if may_need_escape(w) {
            escape_bytes(out, bytes, &mut start, at, at + 8);
        }
        at += 8;
    }
    escape_bytes(out, bytes, &mut start, at, bytes.len());
    out.extend_from_slice(&bytes[start..]);
}

/// Escapes `bytes[from..to]` by table, flushing what precedes each escape
/// from `*start`.
#[inline]
fn escape_bytes(out: &mut Vec<u8>, bytes: &[u8], start: &mut usize, from: usize, to: usize) {
    for (offset, &b) in bytes[from..to].iter().enumerate() {
        let i = from + offset;
        let letter = ESCAPES[b as usize];
        if letter != 0 {
            out.extend_from_slice(&bytes[*start..i]);
            out.extend_from_slice(&[b'\\', letter]);
            *start = i + 1;
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `w` may need an escape: a control byte (below 0x20:
/// NUL, newline, return, ^Z and some that do not) or a quote or backslash.
/// Never false for a word that holds one (exact for "has a zero byte" and
/// "has a byte below n <= 128"; a word with none may still answer true).
#[inline]
fn may_need_escape(w: u64) -> bool {
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x;
    let quote = zero_in(w ^ (ONES * u64::from(b'\'')));
    let dquote = zero_in(w ^ (ONES * u64::from(b'"')));
    let backslash = zero_in(w ^ (ONES * u64::from(b'\\')));
    (below_space | quote | dquote | backslash) & HIGHS != 0
}

/// `bytes` as the string literal the dump writes: `'…'`, or `_binary'…'`
/// for a binary column (no character-set conversion on the way back in).
/// [`super::insert`] reads exactly this form back.
pub fn quoted_into(out: &mut Vec<u8>, bytes: &[u8], binary: bool) {
    out.extend_from_slice(if binary { b"_binary'" } else { b"'" });
    escape_into(out, bytes);
    out.push(b'\'');
}

/// `text` as the body of a single-quoted string literal (see [`escape_into`]).
pub fn string_literal(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    escape_into(&mut out, text.as_bytes());
    // Only ASCII escapes were inserted into valid UTF-8.
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends a BIT value (big-endian bytes from the text protocol) as `b'0101'`.
pub fn bits_into(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(b"b'");
    if bytes.is_empty() {
        out.push(b'0');
    }
    for b in bytes {
        for shift in (0..8).rev() {
            out.push(if (b >> shift) & 1 == 1 { b'1' } else { b'0' });
        }
    }
    out.push(b'\'');
}

/// Whether a line (without its newline) is a client-side `DELIMITER x` command;
/// returns the new delimiter.
fn delimiter_command(line: &[u8]) -> Option<Vec<u8>> {
    let t = trim(line);
    if t.len() > 10 && t[..9].eq_ignore_ascii_case(b"delimiter") && t[9].is_ascii_whitespace() {
        let d = trim(&t[10..]);
        if !d.is_empty() {
            return Some(d.to_vec());
        }
    }
    None
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// Drops plain comments before a statement (executable `/*!` ones stay: they are code).
fn strip_leading_comments(mut b: &[u8]) -> &[u8] {
    loop {
        b = trim(b);
        if b.starts_with(b"#")
            || (b.starts_with(b"--") && b.len() > 2 && b[2].is_ascii_whitespace())
        {
            match b.iter().position(|&c| c == b'\n') {
                Some(i) => b = &b[i + 1..],
                None => return &[],
            }
        } else if b.starts_with(b"/*") && !b.starts_with(b"/*!") {
            match b.windows(2).skip(2).position(|w| w == b"*/") {
                Some(i) => b = &b[i + 4..],
                None => return &[],
            }
        } else {
            return b;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Normal,
    Quote(u8),
    LineComment,
    BlockComment,
}

/// Splits a stream of SQL text into statements, incrementally: feed bytes with
/// [`Splitter::push`], take statements with [`Splitter::next_statement`], and
/// call [`Splitter::finish`] at the end. Statements that hold only comments and
/// whitespace are dropped (the server rejects them as empty queries).
#[derive(Debug)]
pub struct Splitter {
    buf: Vec<u8>,
    /// Start of the statement being scanned.
    start: usize,
    /// Next byte to scan.
    pos: usize,
    state: State,
    delimiter: Vec<u8>,
    /// Whether the current statement has any byte outside comments/whitespace.
    has_code: bool,
    /// Whether the current statement began with an executable `/*! ... */` comment.
    executable_comment: bool,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter {
            buf: Vec::new(),
            start: 0,
            pos: 0,
            state: State::Normal,
            delimiter: b";".to_vec(),
            has_code: false,
            executable_comment: false,
        }
    }
}

impl Splitter {
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.pos -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes held for a statement that is not complete yet.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    fn take(&mut self, end: usize, next: usize) -> Option<Vec<u8>> {
        let stmt = trim(strip_leading_comments(&self.buf[self.start..end])).to_vec();
        let keep = self.has_code || self.executable_comment;
        self.start = next;
        self.pos = next;
        self.has_code = false;
        self.executable_comment = false;
        if keep && !stmt.is_empty() {
            Some(stmt)
        } else {
            None
        }
    }

    /// The next complete statement, if the bytes pushed so far hold one.
    pub fn next_statement(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.scan()? {
                Some(s) => return Some(s),
                None => continue,
            }
        }
    }

    /// Scans forward; `None` = need more input, `Some(None)` = dropped an empty statement.
    fn scan(&mut self) -> Option<Option<Vec<u8>>> {
        let n = self.buf.len();
        while self.pos < n {
            let b = self.buf[self.pos];
            match self.state {
                State::Normal => {
                    if !self.has_code && !self.executable_comment && self.at_line_start() {
                        // A DELIMITER command needs its whole line.
                        let line_end = self.buf[self.pos..].iter().position(|&c| c == b'\n');
                        let probe_end = line_end.map_or(n, |e| self.pos + e);
                        let line = &self.buf[self.pos..probe_end];
                        let could_be = line.len() < 9
                            && b"delimiter".starts_with(&line.to_ascii_lowercase()[..])
                            || line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"delimiter");
                        if could_be {
                            match line_end {
                                None => return None,
                                Some(_) => {
                                    if let Some(d) = delimiter_command(line) {
                                        self.delimiter = d;
                                        let next = probe_end + 1;
                                        self.start = next;
                                        self.pos = next;
                                        return Some(None);
                                    }
                                }
                            }
                        }
                    }
                    if self.buf[self.pos..].starts_with(&self.delimiter) {
                        let end = self.pos;
                        let next = self.pos + self.delimiter.len();
                        return Some(self.take(end, next));
                    }
                    if self.delimiter.len() > 1 && self.delimiter.starts_with(&self.buf[self.pos..])
                    {
                        return None; // a delimiter may be split across pushes
                    }
                    match b {
                        b'\'' | b'"' | b'`' => {
                            self.state = State::Quote(b);
                            self.has_code = true;
                        }
                        b'#' => self.state = State::LineComment,
                        b'-' => {
                            if self.pos + 2 >= n {
                                return None;
                            }
                            if self.buf[self.pos + 1] == b'-'
                                && (self.buf[self.pos + 2].is_ascii_whitespace()
                                    || self.buf[self.pos + 2].is_ascii_control())
                            {
                                self.state = State::LineComment;
                            } else {
                                self.has_code = true;
                            }
                        }
                        b'/' => {
                            if self.pos + 2 >= n {
                                return None;
                            }
                            if self.buf[self.pos + 1] == b'*' {
                                if self.buf[self.pos + 2] == b'!' {
                                    self.executable_comment = true;
                                }
                                self.state = State::BlockComment;
                                self.pos += 1;
                            } else {
                                self.has_code = true;
                            }
                        }
                        c if c.is_ascii_whitespace() => {}
                        _ => self.has_code = true,
                    }
                }
                State::Quote(q) => {
                    // Straight to the next byte that matters: most of a data
                    // statement is inside quotes (a third of a restore's
                    // client CPU went here byte by byte).
                    let rest = &self.buf[self.pos..n];
                    let hit = if q == b'`' {
                        memchr::memchr(q, rest)
                    } else {
                        memchr::memchr2(b'\\', q, rest)
                    };
                    let Some(j) = hit else {
                        self.pos = n;
                        return None;
                    };
                    self.pos += j;
                    if self.buf[self.pos] == b'\\' && q != b'`' {
                        if self.pos + 1 >= n {
                            return None;
                        }
                        self.pos += 1;
                    } else {
                        self.state = State::Normal;
                    }
                }
                State::LineComment => {
                    let Some(j) = memchr::memchr(b'\n', &self.buf[self.pos..n]) else {
                        self.pos = n;
                        return None;
                    };
                    self.pos += j;
                    self.state = State::Normal;
                }
                State::BlockComment => {
                    if b == b'*' {
                        if self.pos + 1 >= n {
                            return None;
                        }
                        if self.buf[self.pos + 1] == b'/' {
                            self.state = State::Normal;
                            self.pos += 1;
                        }
                    }
                }
            }
            self.pos += 1;
        }
        None
    }

    fn at_line_start(&self) -> bool {
        self.pos == 0
            || self.buf[self.pos - 1] == b'\n'
            || trim(&self.buf[self.start..self.pos]).is_empty()
    }

    /// The final statement (one without a trailing delimiter), once input has ended.
    pub fn finish(&mut self) -> Result<Option<Vec<u8>>, String> {
        let mut rest = Vec::new();
        while let Some(s) = self.next_statement() {
            rest.push(s);
        }
        if !rest.is_empty() {
            return Err("finish called with statements still pending".into());
        }
        if matches!(self.state, State::Quote(_)) {
            return Err("input ended inside a quoted string: the file is truncated".into());
        }
        if matches!(self.state, State::BlockComment) {
            return Err("input ended inside a /* comment */: the file is truncated".into());
        }
        let end = self.buf.len();
        Ok(self.take(end, end))
    }
}

/// Splits a whole text at once (for small files and tests).
pub fn split_all(text: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut s = Splitter::default();
    s.push(text);
    let mut out = Vec::new();
    while let Some(st) = s.next_statement() {
        out.push(st);
    }
    if let Some(last) = s.finish()? {
        out.push(last);
    }
    Ok(out)
}

/// A table as a `FROM` clause: a system-versioned table with its history.
pub fn from_clause(name: &str, kind: TableKind) -> String {
    let q = quote_ident(name);
    match kind {
        TableKind::SystemVersioned => format!("{q} FOR SYSTEM_TIME ALL"),
        _ => q,
    }
}

/// The query that reads exactly what a set stores of a table: the dump's
/// checksum and a restore's verification read the same thing.
pub fn select_stored(name: &str, kind: TableKind, columns: &[String]) -> String {
    let list = if columns.is_empty() {
        "1".to_string()
    } else {
        columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!("SELECT {list} FROM {}", from_clause(name, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strs(v: Vec<Vec<u8>>) -> Vec<String> {
        v.into_iter()
            .map(|s| String::from_utf8(s).unwrap())
            .collect()
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(quote_ident("select"), "`select`");
    }

    #[test]
    fn splits_plain_statements_and_ignores_delimiters_in_quotes_and_comments() {
        let text = b"-- header\n/*!40101 SET NAMES utf8mb4 */;\nINSERT INTO t VALUES ('a;b', \"c;\", `d;`);\n# c;\n/* x; */ SELECT 1;\n-- trailing only\n";
        assert_eq!(
            strs(split_all(text).unwrap()),
            vec![
                "/*!40101 SET NAMES utf8mb4 */",
                "INSERT INTO t VALUES ('a;b', \"c;\", `d;`)",
                "SELECT 1",
            ]
        );
    }

    #[test]
    fn handles_delimiter_commands() {
        let text = b"DELIMITER ;;\nCREATE TRIGGER x BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 1; SET NEW.b = 2; END ;;\nDELIMITER ;\nSELECT 2;\n";
        assert_eq!(
            strs(split_all(text).unwrap()),
            vec![
                "CREATE TRIGGER x BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 1; SET NEW.b = 2; END",
                "SELECT 2",
            ]
        );
    }

    #[test]
    fn each_special_byte_gets_the_escape_the_client_tools_write() {
        let mut out = Vec::new();
        escape_into(&mut out, b"a\0'\"\\\n\r\x1ab\t");
        assert_eq!(out, b"a\\0\\'\\\"\\\\\\n\\r\\Zb\t".to_vec());
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        let text = br"INSERT INTO t VALUES ('it\'s; fine', 'a\\'); SELECT 'x''y;';";
        assert_eq!(
            strs(split_all(text).unwrap()),
            vec![
                r"INSERT INTO t VALUES ('it\'s; fine', 'a\\')",
                "SELECT 'x''y;'"
            ]
        );
    }

    #[test]
    fn truncated_string_is_an_error() {
        assert!(split_all(b"INSERT INTO t VALUES ('abc").is_err());
    }

    #[test]
    fn bits_render_as_binary_literals() {
        let mut v = Vec::new();
        bits_into(&mut v, &[0b101, 0xff]);
        assert_eq!(v, b"b'0000010111111111'");
    }

    /// `bytes` escaped by words and byte by byte.
    fn both_escapes(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut fast = Vec::new();
        escape_into(&mut fast, bytes);
        let mut slow = Vec::new();
        let mut start = 0;
        escape_bytes(&mut slow, bytes, &mut start, 0, bytes.len());
        slow.extend_from_slice(&bytes[start..]);
        (fast, slow)
    }

    /// Every byte value, at every position of a word: the escape by words
    /// equals the one byte by byte.
    #[test]
    fn word_scan_misses_no_byte() {
        for b in 0..=255u8 {
            for pos in 0..19 {
                let mut bytes = vec![b'a'; 19];
                bytes[pos] = b;
                let (fast, slow) = both_escapes(&bytes);
                assert_eq!(fast, slow, "byte {b:#x} at {pos}");
            }
        }
    }

    proptest! {
        #[test]
        fn escape_bytewise_and_by_words_agree(bytes in proptest::collection::vec(prop_oneof![any::<u8>(), Just(b'a'), Just(b'\'')], 0..100)) {
            let (fast, slow) = both_escapes(&bytes);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn escape_round_trips_and_has_no_raw_newline_or_bare_quote(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            escape_into(&mut out, &bytes);
            prop_assert!(!out.contains(&b'\n'));
            prop_assert_eq!(crate::mysql::insert::unescape(&out).into_owned(), bytes);
        }

        #[test]
        fn split_is_independent_of_how_input_is_chunked(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..20),
            cut in proptest::collection::vec(1usize..17, 1..50),
        ) {
            let mut text = Vec::new();
            let mut expected = Vec::new();
            for v in &values {
                let mut stmt = b"INSERT INTO `t;` VALUES ('".to_vec();
                escape_into(&mut stmt, v);
                stmt.extend_from_slice(b"')");
                expected.push(stmt.clone());
                text.extend_from_slice(&stmt);
                text.extend_from_slice(b";\n-- c;\n");
            }
            let mut s = Splitter::default();
            let mut got = Vec::new();
            let mut at = 0;
            let mut i = 0;
            while at < text.len() {
                let n = cut[i % cut.len()].min(text.len() - at);
                s.push(&text[at..at + n]);
                at += n;
                i += 1;
                while let Some(st) = s.next_statement() { got.push(st); }
            }
            if let Some(last) = s.finish().unwrap() { got.push(last); }
            prop_assert_eq!(got, expected);
        }
    }
}
