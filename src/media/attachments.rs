//! Which upload keys the WordPress database refers to: every attachment's
//! file (`_wp_attached_file`), its generated sizes and its original
//! (`_wp_attachment_metadata`), in the main site and each multisite blog.
//! A backup checks them against the media index so an upload the database
//! needs but the bucket lacks is reported, not discovered during an outage.

use super::MediaError;
use crate::mysql::Endpoint;
use crate::wordpress::php;
use mysql_async::prelude::Queryable;
use std::collections::BTreeMap;

/// What the database refers to.
#[derive(Debug, Default)]
pub struct Expected {
    /// Upload keys, with the attachment post that needs each.
    pub keys: BTreeMap<String, u64>,
    /// Attachment posts whose `_wp_attachment_metadata` is not valid PHP
    /// serialisation: their generated sizes could not be checked.
    pub unreadable: Vec<u64>,
}

/// Keys (with the attachment post that needs them) the database refers to.
pub async fn expected_keys(
    endpoint: &Endpoint,
    database: &str,
    table_prefix: &str,
    uploads_prefix: &str,
) -> Result<Expected, MediaError> {
    let fail = |e: &dyn std::fmt::Display| MediaError::Attachments(e.to_string());
    let mut conn = endpoint
        .connect(Some(database))
        .await
        .map_err(|e| fail(&e))?;
    let tables: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME LIKE ?",
            (database, format!("{}%postmeta", table_prefix.replace('_', "\\_"))),
        )
        .await
        .map_err(|e| fail(&e))?;
    let mut keys = BTreeMap::new();
    let mut unreadable = Vec::new();
    for table in tables {
        let Some(site_dir) = site_dir(&table, table_prefix) else {
            continue;
        };
        let base = format!("{uploads_prefix}{site_dir}");
        let mut result = conn
            .query_iter(format!(
                "SELECT post_id, meta_key, meta_value FROM `{}` WHERE meta_key IN ('_wp_attached_file', '_wp_attachment_metadata')",
                table.replace('`', "``")
            ))
            .await
            .map_err(|e| fail(&e))?;
        result
            .for_each(|row| {
                let (post_id, meta_key, value): (u64, String, Option<Vec<u8>>) =
                    mysql_async::from_row(row);
                match paths(&meta_key, value.as_deref().unwrap_or_default()) {
                    Ok(found) => {
                        for path in found {
                            keys.entry(format!("{base}{path}")).or_insert(post_id);
                        }
                    }
                    Err(_) => unreadable.push(post_id),
                }
            })
            .await
            .map_err(|e| fail(&e))?;
    }
    Ok(Expected { keys, unreadable })
}

/// `wp_postmeta` is the main site (""); `wp_3_postmeta` is blog 3 (`sites/3/`).
fn site_dir(table: &str, prefix: &str) -> Option<String> {
    let rest = table.strip_prefix(prefix)?;
    if rest == "postmeta" {
        return Some(String::new());
    }
    let blog = rest.strip_suffix("_postmeta")?;
    (!blog.is_empty() && blog.bytes().all(|b| b.is_ascii_digit())).then(|| format!("sites/{blog}/"))
}

/// Upload-relative paths one meta row names. Absolute paths and URLs (left
/// by some offload plugins) are not under the uploads prefix and are skipped;
/// metadata that does not parse is an error, for the caller to report.
pub fn paths(meta_key: &str, value: &[u8]) -> Result<Vec<String>, php::ParseError> {
    let relative = |p: &str| !p.is_empty() && !p.starts_with('/') && !p.contains("://");
    match meta_key {
        "_wp_attached_file" => Ok(match std::str::from_utf8(value) {
            Ok(p) if relative(p) => vec![p.to_string()],
            _ => Vec::new(),
        }),
        "_wp_attachment_metadata" => {
            let meta = php::parse(value)?;
            let Some(file) = meta.get("file").and_then(php::Value::as_str) else {
                return Ok(Vec::new());
            };
            if !relative(file) {
                return Ok(Vec::new());
            }
            let dir = match file.rfind('/') {
                Some(i) => &file[..=i],
                None => "",
            };
            let mut out = vec![file.to_string()];
            if let Some(orig) = meta.get("original_image").and_then(php::Value::as_str) {
                out.push(format!("{dir}{orig}"));
            }
            if let Some(sizes) = meta.get("sizes") {
                for (_, size) in sizes.entries() {
                    if let Some(f) = size.get("file").and_then(php::Value::as_str) {
                        out.push(format!("{dir}{f}"));
                    }
                }
            }
            Ok(out)
        }
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_original_live_beside_the_file() {
        let meta = br#"a:3:{s:4:"file";s:22:"2024/05/big-scaled.jpg";s:14:"original_image";s:7:"big.jpg";s:5:"sizes";a:2:{s:6:"medium";a:1:{s:4:"file";s:15:"big-300x200.jpg";}s:9:"thumbnail";a:1:{s:4:"file";s:15:"big-150x150.jpg";}}}"#;
        assert_eq!(
            paths("_wp_attachment_metadata", meta).unwrap(),
            vec![
                "2024/05/big-scaled.jpg",
                "2024/05/big.jpg",
                "2024/05/big-300x200.jpg",
                "2024/05/big-150x150.jpg"
            ]
        );
        assert_eq!(
            paths("_wp_attached_file", b"2024/05/a b.pdf").unwrap(),
            vec!["2024/05/a b.pdf"]
        );
        assert!(paths("_wp_attached_file", b"https://cdn/x.jpg")
            .unwrap()
            .is_empty());
        assert!(paths("_wp_attachment_metadata", b"not serialised").is_err());
    }

    #[test]
    fn multisite_tables_map_to_their_upload_dirs() {
        assert_eq!(site_dir("wp_postmeta", "wp_").as_deref(), Some(""));
        assert_eq!(
            site_dir("wp_12_postmeta", "wp_").as_deref(),
            Some("sites/12/")
        );
        assert_eq!(site_dir("wp_x_postmeta", "wp_"), None);
        assert_eq!(site_dir("other_postmeta", "wp_"), None);
    }
}
