//! What the site answers: a few requests a visitor makes (the home page, the
//! newest post, the REST API's post list, a sample upload), captured at
//! backup from the live site and asked again of a restored one. Content is
//! compared, not status codes: each body is normalised (the site's own
//! address replaced by a placeholder, per-request nonces blanked) and hashed.
//! Text bodies are kept so a difference can be shown, not just reported.

use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use std::time::Duration;

const PHP_URLENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// Bodies kept for showing a difference; larger ones only by hash.
const KEEP_BODY_BYTES: usize = 2 << 20;
/// What a normalised body holds in place of the site's address.
pub const SITE_PLACEHOLDER: &str = "{{site}}";

#[derive(Debug, thiserror::Error)]
pub enum AnswersError {
    #[error("{url}: {detail}")]
    Request { url: String, detail: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// home, post, posts-api, upload.
    pub name: String,
    /// Relative to the site's address.
    pub path: String,
    pub status: u16,
    pub content_type: String,
    /// Of the normalised body.
    pub bytes: u64,
    pub sha256: String,
    /// The normalised body when it is text and not too large.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// One difference between what the site answered at backup and now.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub name: String,
    pub path: String,
    pub detail: String,
    /// The status differs (not only the content).
    pub status: bool,
}

pub fn client() -> Result<reqwest::Client, AnswersError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        // A redirect is part of the answer (and compared), not followed.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| AnswersError::Request {
            url: "-".into(),
            detail: e.to_string(),
        })
}

fn nonce_patterns() -> &'static [Regex] {
    static P: OnceLock<Vec<Regex>> = OnceLock::new();
    P.get_or_init(|| {
        [
            // wpApiSettings / inline scripts: "nonce":"0123abcdef"
            r#"(?i)(nonce\\?"\s*:\s*\\?")[0-9a-f]{10}"#,
            // links and forms: _wpnonce=0123abcdef, value="0123abcdef" after a nonce field
            r#"(?i)(_wpnonce=)[0-9a-f]{10}"#,
            r#"(?i)(name="_wpnonce"\s+value=")[0-9a-f]{10}"#,
        ]
        .iter()
        .filter_map(|p| Regex::new(p).ok())
        .collect()
    })
}

fn gravatar_shard() -> &'static Regex {
    static P: OnceLock<Regex> = OnceLock::new();
    P.get_or_init(|| Regex::new(r"\b[0-9]\.gravatar\.com").expect("a valid pattern"))
}

/// The body with the site's address (plain, JSON-escaped and URL-encoded)
/// replaced by [`SITE_PLACEHOLDER`] and nonces blanked, so two copies of one
/// site at different addresses answer the same text.
pub fn normalise(body: &str, site: &str) -> String {
    let site = site.trim_end_matches('/');
    let mut out = body.to_string();
    let forms = [
        site.to_string(),
        site.replace('/', "\\/"),
        // As PHP's urlencode() writes it (WordPress's oEmbed and share links).
        percent_encoding::utf8_percent_encode(site, PHP_URLENCODE).to_string(),
    ];
    for f in forms.iter().filter(|f| !f.is_empty()) {
        out = out.replace(f.as_str(), SITE_PLACEHOLDER);
    }
    for p in nonce_patterns() {
        out = p.replace_all(&out, "${1}NONCE").into_owned();
    }
    // WordPress picks a Gravatar shard (0-2) at random for an empty e-mail.
    out = gravatar_shard()
        .replace_all(&out, "N.gravatar.com")
        .into_owned();
    out
}

/// Asks the site at `site` (its address) for `path`.
pub async fn fetch(
    client: &reqwest::Client,
    site: &str,
    name: &str,
    path: &str,
) -> Result<Answer, AnswersError> {
    let url = format!("{}{}", site.trim_end_matches('/'), path);
    let fail = |detail: String| AnswersError::Request {
        url: url.clone(),
        detail,
    };
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| normalise(l, site));
    let raw = resp.bytes().await.map_err(|e| fail(e.to_string()))?;
    let text_like = location.is_some()
        || content_type.starts_with("text/")
        || content_type.contains("json")
        || content_type.contains("xml")
        || content_type.contains("javascript");
    let (hashed, body): (Vec<u8>, Option<String>) = match (text_like, std::str::from_utf8(&raw)) {
        (true, Ok(text)) => {
            let mut n = normalise(text, site);
            if let Some(l) = &location {
                n = format!("Location: {l}\n{n}");
            }
            let keep = (n.len() <= KEEP_BODY_BYTES).then(|| n.clone());
            (n.into_bytes(), keep)
        }
        _ => (raw.to_vec(), None),
    };
    Ok(Answer {
        name: name.to_string(),
        path: path.to_string(),
        status,
        content_type,
        bytes: hashed.len() as u64,
        sha256: hex::encode(Sha256::digest(&hashed)),
        body,
    })
}

/// The answers to keep for a site: home page, REST post list, the newest
/// post's page, and `upload` (a path under the site, e.g. an image the
/// media index holds) when given.
pub async fn capture(site: &str, upload: Option<&str>) -> Result<Vec<Answer>, AnswersError> {
    let client = client()?;
    let mut out = vec![settled(&client, site, "home", "/").await?];
    // `/wp-json/` routes only with pretty permalinks; `?rest_route=` always.
    let mut posts = settled(&client, site, "posts-api", "/wp-json/wp/v2/posts").await?;
    if !posts.content_type.contains("json") {
        posts = settled(&client, site, "posts-api", "/?rest_route=/wp/v2/posts").await?;
    }
    let post_path = posts.body.as_deref().and_then(newest_post_path);
    out.push(posts);
    if let Some(p) = post_path {
        out.push(settled(&client, site, "post", &p).await?);
    }
    if let Some(u) = upload {
        out.push(settled(&client, site, "upload", u).await?);
    }
    Ok(out)
}

/// The answer at `path`, after following the site's own redirects (a
/// canonical trailing slash, say): the final path is what gets recorded and
/// asked again, so the comparison is of content, not of a redirect.
async fn settled(
    client: &reqwest::Client,
    site: &str,
    name: &str,
    path: &str,
) -> Result<Answer, AnswersError> {
    let mut path = path.to_string();
    for _ in 0..3 {
        let a = fetch(client, site, name, &path).await?;
        let next = a
            .body
            .as_deref()
            .and_then(|b| b.lines().next())
            .and_then(|l| l.strip_prefix("Location: "))
            .and_then(|l| l.strip_prefix(SITE_PLACEHOLDER))
            .map(str::to_string);
        match next {
            Some(p) if (300..400).contains(&a.status) && !p.is_empty() && p != path => path = p,
            _ => return Ok(a),
        }
    }
    fetch(client, site, name, &path).await
}

/// The path of the first post in a (normalised) REST post list.
pub fn newest_post_path(normalised_posts: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(normalised_posts).ok()?;
    let link = v.as_array()?.first()?.get("link")?.as_str()?;
    let rest = link.strip_prefix(SITE_PLACEHOLDER)?;
    Some(if rest.is_empty() {
        "/".to_string()
    } else {
        rest.to_string()
    })
}

/// Asks the restored site at `site` the same requests and lists every
/// answer that differs from `expected`.
pub async fn compare(site: &str, expected: &[Answer]) -> Result<Vec<Difference>, AnswersError> {
    let client = client()?;
    let mut diffs = Vec::new();
    for e in expected {
        let found = fetch(&client, site, &e.name, &e.path).await?;
        if let Some(detail) = difference(e, &found) {
            diffs.push(Difference {
                name: e.name.clone(),
                path: e.path.clone(),
                detail,
                status: e.status != found.status,
            });
        }
    }
    Ok(diffs)
}

/// Why `found` is not the answer `expected` was, or `None` when it is.
pub fn difference(expected: &Answer, found: &Answer) -> Option<String> {
    if expected.status != found.status {
        return Some(format!(
            "status {} (at backup: {})",
            found.status, expected.status
        ));
    }
    if expected.sha256 == found.sha256 {
        return None;
    }
    let mut detail = format!(
        "content differs: {} bytes, SHA-256 {} (at backup: {} bytes, {})",
        found.bytes,
        &found.sha256[..12],
        expected.bytes,
        &expected.sha256[..12]
    );
    if let (Some(a), Some(b)) = (&expected.body, &found.body) {
        if let Some((line, was, now)) = a
            .lines()
            .zip(b.lines())
            .enumerate()
            .find(|(_, (x, y))| x != y)
            .map(|(i, (x, y))| (i + 1, x, y))
        {
            let cut = |s: &str| s.chars().take(160).collect::<String>();
            detail.push_str(&format!(
                "; first difference at line {line}: backup `{}`, now `{}`",
                cut(was),
                cut(now)
            ));
        } else {
            detail.push_str(&format!(
                "; one is a prefix of the other ({} vs {} lines)",
                a.lines().count(),
                b.lines().count()
            ));
        }
    }
    Some(detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_address_in_every_form_and_nonces_are_normalised() {
        let site = "http://127.0.0.1:8080";
        let body = r#"<a href="http://127.0.0.1:8080/post/">x</a> {"url":"http:\/\/127.0.0.1:8080\/"} share?u=http%3A%2F%2F127.0.0.1%3A8080 var s={"nonce":"0a1b2c3d4e"}; ?_wpnonce=abcdef0123 <img src='http://2.gravatar.com/avatar/'>"#;
        let n = normalise(body, site);
        assert!(!n.contains("127.0.0.1"), "{n}");
        assert!(
            n.contains(r#""nonce":"NONCE""#) && n.contains("_wpnonce=NONCE"),
            "{n}"
        );
        let other = body
            .replace("127.0.0.1:8080", "drill.example.org")
            .replace("127.0.0.1%3A8080", "drill.example.org");
        let other = other
            .replace("0a1b2c3d4e", "ffffffffff")
            .replace("abcdef0123", "0000000000")
            .replace("2.gravatar", "0.gravatar");
        assert_eq!(normalise(&other, "http://drill.example.org"), n);
    }

    #[test]
    fn the_newest_post_path_comes_from_the_rest_list() {
        let list = r#"[{"id":12,"link":"{{site}}/?p=12"},{"id":11,"link":"{{site}}/?p=11"}]"#;
        assert_eq!(newest_post_path(list).as_deref(), Some("/?p=12"));
        assert_eq!(newest_post_path("[]"), None);
        assert_eq!(newest_post_path("not json"), None);
    }

    fn answer(body: &str) -> Answer {
        Answer {
            name: "home".into(),
            path: "/".into(),
            status: 200,
            content_type: "text/html".into(),
            bytes: body.len() as u64,
            sha256: hex::encode(Sha256::digest(body.as_bytes())),
            body: Some(body.into()),
        }
    }

    #[test]
    fn a_difference_names_the_first_line_that_differs() {
        let a = answer("<h1>Shop</h1>\n<p>Post 12</p>\n");
        let b = answer("<h1>Shop</h1>\n<p>Error establishing a database connection</p>\n");
        let d = difference(&a, &b).unwrap();
        assert!(
            d.contains("line 2") && d.contains("Error establishing"),
            "{d}"
        );
        assert_eq!(difference(&a, &a.clone()), None);
        let mut moved = a.clone();
        moved.status = 301;
        assert!(difference(&a, &moved).unwrap().contains("status 301"));
    }

    proptest! {
        /// Any body at one address normalises to the same text as the same
        /// body at another address (the placeholder hides only the address).
        #[test]
        fn normalising_hides_only_the_address(parts in proptest::collection::vec("[a-z <>/\"=.:]{0,20}", 0..8),
                                              port_a in 1000u16..2000, port_b in 3000u16..4000) {
            let a = format!("http://site-a.test:{port_a}");
            let b = format!("http://site-b.test:{port_b}");
            let body_a = parts.join(&a);
            let body_b = parts.join(&b);
            prop_assert_eq!(normalise(&body_a, &a), normalise(&body_b, &b));
        }
    }
}
