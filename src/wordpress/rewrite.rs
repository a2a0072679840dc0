//! Replacing one site URL by another inside any value WordPress stores:
//! plain text, JSON (where `/` may be escaped as `\/`), and PHP-serialised
//! data, where every string carries its byte length and a naive replace
//! corrupts the value (WordPress then silently drops the whole option).
//! Serialised strings that themselves hold serialised data (double
//! serialisation is common in plugins) are rewritten recursively. A value that
//! looks serialised but does not parse is reported and left as it is.

use super::php::{self, Value};
pub use crate::mysql::stream_rewrite::Outcome;
use crate::mysql::stream_rewrite::ValueRewrite;

#[derive(Debug, Clone)]
pub struct Rewriter {
    /// (from, to) pairs: the plain form and the JSON `\/`-escaped form.
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Rewriter {
    pub fn new(from: &str, to: &str) -> Self {
        let mut pairs = vec![(from.as_bytes().to_vec(), to.as_bytes().to_vec())];
        let esc = |s: &str| s.replace('/', "\\/").into_bytes();
        if from.contains('/') {
            pairs.push((esc(from), esc(to)));
        }
        Rewriter { pairs }
    }

    /// The (from, to) byte pairs a value that is not serialised data is
    /// rewritten with, one after the other (what a server-side REPLACE of
    /// each pair in turn must do too).
    pub fn pairs(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.pairs
    }

    /// Cheap test: does the value hold the URL in any form?
    pub fn matches(&self, value: &[u8]) -> bool {
        self.pairs.iter().any(|(f, _)| find(value, f).is_some())
    }

    pub fn rewrite(&self, value: &[u8]) -> Outcome {
        if !self.matches(value) {
            return Outcome::Unchanged;
        }
        match self.rewrite_bytes(value, 0) {
            Ok(v) if v == value => Outcome::Unchanged,
            Ok(v) => Outcome::Changed(v),
            Err(why) => Outcome::Unparseable(why),
        }
    }

    fn rewrite_bytes(&self, value: &[u8], depth: usize) -> Result<Vec<u8>, String> {
        if !self.matches(value) {
            return Ok(value.to_vec());
        }
        if depth < 8 && is_serialised(value) {
            let mut v = php::parse(value).map_err(|e| e.to_string())?;
            self.rewrite_value(&mut v, depth)?;
            return Ok(php::serialise(&v));
        }
        Ok(self.replace_text(value))
    }

    fn rewrite_value(&self, v: &mut Value, depth: usize) -> Result<(), String> {
        match v {
            Value::Str(s) => {
                *s = self.rewrite_bytes(s, depth + 1)?;
            }
            Value::Array(pairs) | Value::Object { props: pairs, .. } => {
                for (k, val) in pairs.iter_mut() {
                    self.rewrite_value(k, depth)?;
                    self.rewrite_value(val, depth)?;
                }
            }
            Value::Custom { class, data } => {
                if self.matches(data) {
                    return Err(format!(
                        "custom-serialised object of class {} holds the URL in a format only its class can read",
                        String::from_utf8_lossy(class)
                    ));
                }
            }
            Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Ref { .. } => {}
        }
        Ok(())
    }

    fn replace_text(&self, value: &[u8]) -> Vec<u8> {
        let mut out = value.to_vec();
        for (from, to) in &self.pairs {
            out = replace_all(&out, from, to);
        }
        out
    }
}

/// Several addresses replaced by one, one after the other (a site's `home`
/// and `siteurl` may differ): what the rewrite after a load does with one
/// pass per address, applied to each value as it is loaded.
#[derive(Debug, Clone)]
pub struct UrlRewrites {
    rewriters: Vec<Rewriter>,
}

impl UrlRewrites {
    /// `None` when there is nothing to rewrite (no old address differs from `to`).
    pub fn new(from: &[String], to: &str) -> Option<Self> {
        let rewriters: Vec<Rewriter> = from
            .iter()
            .filter(|f| !f.is_empty() && f.as_str() != to)
            .map(|f| Rewriter::new(f, to))
            .collect();
        (!rewriters.is_empty()).then_some(UrlRewrites { rewriters })
    }
}

impl ValueRewrite for UrlRewrites {
    fn needles(&self) -> Vec<Vec<u8>> {
        self.rewriters
            .iter()
            .flat_map(|r| r.pairs().iter().map(|(from, _)| from.clone()))
            .collect()
    }

    /// Each address's rewrite on the previous one's result, as the passes
    /// after a load run: a value one of them cannot rewrite keeps what the
    /// others changed (and is reported only when none did).
    fn rewrite(&self, value: &[u8]) -> Outcome {
        let mut current: Option<Vec<u8>> = None;
        let mut unreadable = None;
        for r in &self.rewriters {
            match r.rewrite(current.as_deref().unwrap_or(value)) {
                Outcome::Changed(v) => current = Some(v),
                Outcome::Unparseable(why) => unreadable = Some(why),
                Outcome::Unchanged => {}
            }
        }
        match (current, unreadable) {
            (Some(v), _) => Outcome::Changed(v),
            (None, Some(why)) => Outcome::Unparseable(why),
            (None, None) => Outcome::Unchanged,
        }
    }
}

/// Serialised data as WordPress's `is_serialized()` sees it: a type tag, a
/// colon, and the right final character.
pub fn is_serialised(v: &[u8]) -> bool {
    if v == b"N;" {
        return true;
    }
    if v.len() < 4 || v[1] != b':' {
        return false;
    }
    match v[0] {
        b'a' | b'O' | b'C' => v.last() == Some(&b'}') && v[2].is_ascii_digit(),
        b's' => v.last() == Some(&b';') && v[2].is_ascii_digit(),
        b'i' | b'd' | b'b' => v.last() == Some(&b';'),
        _ => false,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(hay, needle)
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut rest = hay;
    while let Some(i) = find(rest, from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to);
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FROM: &str = "http://shop.example.com";
    const TO: &str = "https://staging.shop.example.com";

    fn changed(o: Outcome) -> String {
        match o {
            Outcome::Changed(v) => String::from_utf8(v).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn serialised_lengths_are_fixed() {
        let r = Rewriter::new(FROM, TO);
        let v = br#"a:2:{s:7:"siteurl";s:23:"http://shop.example.com";s:4:"logo";s:36:"http://shop.example.com/img/logo.png";}"#;
        let out = changed(r.rewrite(v));
        assert_eq!(
            out,
            r#"a:2:{s:7:"siteurl";s:32:"https://staging.shop.example.com";s:4:"logo";s:45:"https://staging.shop.example.com/img/logo.png";}"#
        );
        assert!(php::parse(out.as_bytes()).is_ok());
    }

    #[test]
    fn double_serialised_json_and_text() {
        let r = Rewriter::new(FROM, TO);
        let inner = r#"a:1:{s:3:"url";s:23:"http://shop.example.com";}"#;
        let outer = format!("s:{}:\"{inner}\";", inner.len());
        let out = changed(r.rewrite(outer.as_bytes()));
        let Value::Str(s) = php::parse(out.as_bytes()).unwrap() else {
            panic!()
        };
        let v = php::parse(&s).unwrap();
        assert_eq!(v.get("url").and_then(Value::as_str), Some(TO));
        let json = br#"{"home":"http:\/\/shop.example.com\/a"}"#;
        assert_eq!(
            changed(r.rewrite(json)),
            r#"{"home":"https:\/\/staging.shop.example.com\/a"}"#
        );
        assert_eq!(
            changed(r.rewrite(b"<a href=\"http://shop.example.com/x\">")),
            "<a href=\"https://staging.shop.example.com/x\">"
        );
        assert_eq!(r.rewrite(b"nothing here"), Outcome::Unchanged);
    }

    #[test]
    fn broken_serialisation_is_reported_not_patched() {
        let r = Rewriter::new(FROM, TO);
        // Length 99 is wrong: a naive replace would "work" and a parser must refuse.
        let bad = br#"a:1:{s:3:"url";s:99:"http://shop.example.com";}"#;
        assert!(matches!(r.rewrite(bad), Outcome::Unparseable(_)));
        let custom = br#"C:11:"ArrayObject":33:{x:i:0;a:0:{};http://shop.example.com}"#;
        assert!(matches!(r.rewrite(custom), Outcome::Unparseable(_)));
    }

    #[test]
    fn several_old_addresses_are_rewritten_one_after_the_other() {
        let from = vec![
            FROM.to_string(),
            "http://www.shop.example.com".to_string(),
            TO.to_string(),
        ];
        let r = UrlRewrites::new(&from, TO).unwrap();
        // The new address itself is no needle: a value holding only it is left alone.
        assert_eq!(r.needles().len(), 4);
        let v =
            br#"a:2:{i:0;s:23:"http://shop.example.com";i:1;s:27:"http://www.shop.example.com";}"#;
        let Outcome::Changed(out) = r.rewrite(v) else {
            panic!()
        };
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(r#"a:2:{{i:0;s:32:"{TO}";i:1;s:32:"{TO}";}}"#)
        );
        assert_eq!(r.rewrite(TO.as_bytes()), Outcome::Unchanged);
        let broken = br#"a:1:{s:3:"url";s:99:"http://shop.example.com";}"#;
        assert!(matches!(r.rewrite(broken), Outcome::Unparseable(_)));
        assert!(UrlRewrites::new(&[TO.to_string()], TO).is_none());
    }

    /// A PHP value whose strings sometimes contain the URL.
    fn value() -> impl Strategy<Value = Value> {
        let text = prop_oneof![
            "[a-z ]{0,8}".prop_map(|s| s.into_bytes()),
            "[a-z]{0,4}".prop_map(|s| format!("{s}{FROM}/{s}").into_bytes()),
            "[a-z]{0,4}".prop_map(|s| format!("x{}y", FROM.replace('/', "\\/"))
                .into_bytes()
                .into_iter()
                .chain(s.into_bytes())
                .collect()),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i32>().prop_map(|n| Value::Int(n.to_string())),
            text.prop_map(Value::Str),
        ];
        leaf.prop_recursive(3, 32, 5, |inner| {
            prop_oneof![
                proptest::collection::vec((inner.clone(), inner.clone()), 0..5)
                    .prop_map(Value::Array),
                inner.prop_map(|v| Value::Str(php::serialise(&v))),
            ]
        })
    }

    /// The model: the same value with the URL replaced in every string (and
    /// inside nested serialised strings, recursively).
    fn model(v: &Value, r: &Rewriter) -> Value {
        match v {
            Value::Str(s) => match php::parse(s) {
                Ok(inner) if is_serialised(s) && r.matches(s) => {
                    Value::Str(php::serialise(&model(&inner, r)))
                }
                _ => Value::Str(r.replace_text(s)),
            },
            Value::Array(p) => {
                Value::Array(p.iter().map(|(k, v)| (model(k, r), model(v, r))).collect())
            }
            other => other.clone(),
        }
    }

    proptest! {
        #[test]
        fn rewritten_values_parse_and_hold_the_new_url_everywhere(v in value()) {
            let r = Rewriter::new(FROM, TO);
            let bytes = php::serialise(&v);
            match r.rewrite(&bytes) {
                Outcome::Unchanged => prop_assert!(!r.matches(&bytes)),
                Outcome::Changed(out) => {
                    let parsed = php::parse(&out).unwrap();
                    prop_assert_eq!(parsed, model(&v, &r));
                    // Every occurrence went, unless it is part of the new URL.
                    let left = String::from_utf8_lossy(&out).replace(TO, "").replace(&TO.replace('/', "\\/"), "");
                    prop_assert!(!left.contains(FROM));
                }
                Outcome::Unparseable(why) => prop_assert!(false, "{}", why),
            }
        }
    }
}
