//! PHP's `serialize()` format, natively: WordPress stores options, post meta
//! and widgets this way, with byte lengths in every string, so any change to a
//! string inside must rewrite its length. Parsing is exact (strings are bytes,
//! numbers keep their text) so `serialize(parse(x)) == x` for every valid `x`.

/// One PHP value. Numbers keep their original text so nothing is reformatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(String),
    Float(String),
    Str(Vec<u8>),
    Array(Vec<(Value, Value)>),
    Object {
        class: Vec<u8>,
        props: Vec<(Value, Value)>,
    },
    /// `C:` custom-serialised object: the payload is opaque to PHP itself.
    Custom {
        class: Vec<u8>,
        data: Vec<u8>,
    },
    /// `r:` / `R:` back-references.
    Ref {
        strong: bool,
        index: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not PHP-serialised data at byte {at}: {what}")]
pub struct ParseError {
    pub at: usize,
    pub what: &'static str,
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn fail<T>(&self, what: &'static str) -> Result<T, ParseError> {
        Err(ParseError { at: self.i, what })
    }

    fn expect(&mut self, b: u8) -> Result<(), ParseError> {
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            Ok(())
        } else {
            self.fail(match b {
                b':' => "expected ':'",
                b';' => "expected ';'",
                b'"' => "expected '\"'",
                b'{' => "expected '{'",
                b'}' => "expected '}'",
                _ => "unexpected byte",
            })
        }
    }

    /// Bytes up to (not including) `end`, which is consumed.
    fn until(&mut self, end: u8) -> Result<&'a [u8], ParseError> {
        let start = self.i;
        match self.s[start..].iter().position(|&b| b == end) {
            Some(n) => {
                self.i = start + n + 1;
                Ok(&self.s[start..start + n])
            }
            None => self.fail("unterminated value"),
        }
    }

    fn number(&mut self, end: u8, float: bool) -> Result<String, ParseError> {
        let text = self.until(end)?;
        let ok = !text.is_empty()
            && text.iter().all(|&b| {
                b.is_ascii_digit()
                    || b == b'-'
                    || b == b'+'
                    || (float && matches!(b, b'.' | b'e' | b'E' | b'N' | b'A' | b'I' | b'F'))
            });
        if !ok {
            return self.fail("bad number");
        }
        Ok(String::from_utf8_lossy(text).into_owned())
    }

    fn length(&mut self) -> Result<usize, ParseError> {
        let text = self.until(b':')?;
        std::str::from_utf8(text)
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .map_or_else(|| self.fail("bad length"), Ok)
    }

    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, ParseError> {
        self.expect(b'"')?;
        let end = self.i.checked_add(n).filter(|&e| e <= self.s.len());
        let Some(end) = end else {
            return self.fail("string length runs past the end");
        };
        let v = self.s[self.i..end].to_vec();
        self.i = end;
        self.expect(b'"')?;
        Ok(v)
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > 512 {
            return self.fail("nested too deeply");
        }
        let tag = match self.s.get(self.i) {
            Some(t) => *t,
            None => return self.fail("unexpected end"),
        };
        self.i += 1;
        if tag == b'N' {
            self.expect(b';')?;
            return Ok(Value::Null);
        }
        self.expect(b':')?;
        Ok(match tag {
            b'b' => match self.until(b';')? {
                b"0" => Value::Bool(false),
                b"1" => Value::Bool(true),
                _ => return self.fail("bad boolean"),
            },
            b'i' => Value::Int(self.number(b';', false)?),
            b'd' => Value::Float(self.number(b';', true)?),
            b's' => {
                let n = self.length()?;
                let v = self.bytes(n)?;
                self.expect(b';')?;
                Value::Str(v)
            }
            b'a' => {
                let n = self.length()?;
                Value::Array(self.pairs_at(n, depth)?)
            }
            b'O' => {
                let n = self.length()?;
                let class = self.bytes(n)?;
                self.expect(b':')?;
                let count = self.length()?;
                Value::Object {
                    class,
                    props: self.pairs_at(count, depth)?,
                }
            }
            b'C' => {
                let n = self.length()?;
                let class = self.bytes(n)?;
                self.expect(b':')?;
                let len = self.length()?;
                self.expect(b'{')?;
                let end = self.i.checked_add(len).filter(|&e| e <= self.s.len());
                let Some(end) = end else {
                    return self.fail("payload runs past the end");
                };
                let data = self.s[self.i..end].to_vec();
                self.i = end;
                self.expect(b'}')?;
                Value::Custom { class, data }
            }
            b'r' | b'R' => Value::Ref {
                strong: tag == b'R',
                index: self.number(b';', false)?,
            },
            _ => {
                self.i -= 2;
                return self.fail("unknown type tag");
            }
        })
    }

    fn pairs_at(&mut self, n: usize, depth: usize) -> Result<Vec<(Value, Value)>, ParseError> {
        self.expect(b'{')?;
        let mut out = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let v = self.value(depth + 1)?;
            out.push((k, v));
        }
        self.expect(b'}')?;
        Ok(out)
    }
}

/// Parses one complete serialised value (trailing bytes are an error).
pub fn parse(s: &[u8]) -> Result<Value, ParseError> {
    let mut p = Parser { s, i: 0 };
    let v = p.value(0)?;
    if p.i != s.len() {
        return p.fail("trailing bytes after the value");
    }
    Ok(v)
}

/// Does `s` look like a serialised value at all (cheap pre-check)?
pub fn looks_serialised(s: &[u8]) -> bool {
    matches!(
        s,
        [b'a' | b'O' | b's' | b'i' | b'd' | b'b' | b'C', b':', ..] | [b'N', b';']
    )
}

/// Serialises back; lengths are recomputed from the bytes.
pub fn serialise(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"N;"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"b:1;" } else { b"b:0;" }),
        Value::Int(n) => {
            out.extend_from_slice(b"i:");
            out.extend_from_slice(n.as_bytes());
            out.push(b';');
        }
        Value::Float(n) => {
            out.extend_from_slice(b"d:");
            out.extend_from_slice(n.as_bytes());
            out.push(b';');
        }
        Value::Str(s) => {
            out.extend_from_slice(format!("s:{}:\"", s.len()).as_bytes());
            out.extend_from_slice(s);
            out.extend_from_slice(b"\";");
        }
        Value::Array(pairs) => {
            out.extend_from_slice(format!("a:{}:", pairs.len()).as_bytes());
            write_pairs(pairs, out);
        }
        Value::Object { class, props } => {
            out.extend_from_slice(format!("O:{}:\"", class.len()).as_bytes());
            out.extend_from_slice(class);
            out.extend_from_slice(format!("\":{}:", props.len()).as_bytes());
            write_pairs(props, out);
        }
        Value::Custom { class, data } => {
            out.extend_from_slice(format!("C:{}:\"", class.len()).as_bytes());
            out.extend_from_slice(class);
            out.extend_from_slice(format!("\":{}:{{", data.len()).as_bytes());
            out.extend_from_slice(data);
            out.push(b'}');
        }
        Value::Ref { strong, index } => {
            out.extend_from_slice(if *strong { b"R:" } else { b"r:" });
            out.extend_from_slice(index.as_bytes());
            out.push(b';');
        }
    }
}

fn write_pairs(pairs: &[(Value, Value)], out: &mut Vec<u8>) {
    out.push(b'{');
    for (k, v) in pairs {
        write(k, out);
        write(v, out);
    }
    out.push(b'}');
}

impl Value {
    /// The value under string key `key` of an array or object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let pairs = match self {
            Value::Array(p) | Value::Object { props: p, .. } => p,
            _ => return None,
        };
        pairs
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == key.as_bytes()))
            .map(|(_, v)| v)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[(Value, Value)] {
        match self {
            Value::Array(p) | Value::Object { props: p, .. } => p,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wordpress_attachment_metadata_parses() {
        let meta = r#"a:5:{s:5:"width";i:1200;s:6:"height";i:800;s:4:"file";s:20:"2024/05/photo ü.jpg";s:5:"sizes";a:1:{s:9:"thumbnail";a:4:{s:4:"file";s:20:"photo ü-150x150.jpg";s:5:"width";i:150;s:6:"height";i:150;s:9:"mime-type";s:10:"image/jpeg";}}s:10:"image_meta";a:1:{s:8:"keywords";a:0:{}}}"#.as_bytes();
        let v = parse(meta).unwrap();
        assert_eq!(
            v.get("file").and_then(Value::as_str),
            Some("2024/05/photo ü.jpg")
        );
        let thumb = v.get("sizes").and_then(|s| s.get("thumbnail")).unwrap();
        assert_eq!(
            thumb.get("file").and_then(Value::as_str),
            Some("photo ü-150x150.jpg")
        );
        assert_eq!(serialise(&v), meta.to_vec());
    }

    #[test]
    fn broken_input_is_an_error_not_a_guess() {
        for bad in [
            &b"s:5:\"abc\";"[..],
            b"a:1:{s:1:\"a\";}",
            b"i:12",
            b"x:1;",
            b"s:3:\"abc\";junk",
            b"",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Int(n.to_string())),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| Value::Float(f.to_string())),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Str),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec((inner.clone(), inner.clone()), 0..6)
                    .prop_map(Value::Array),
                (
                    "[A-Za-z_]{1,10}",
                    proptest::collection::vec((inner.clone(), inner), 0..4)
                )
                    .prop_map(|(c, props)| Value::Object {
                        class: c.into_bytes(),
                        props
                    }),
            ]
        })
    }

    proptest! {
        #[test]
        fn serialise_then_parse_is_identity(v in value()) {
            let bytes = serialise(&v);
            prop_assert_eq!(parse(&bytes).unwrap(), v.clone());
            prop_assert_eq!(serialise(&parse(&bytes).unwrap()), bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&b);
        }
    }
}
