//! `encryption:` and `signing:` — the keys that make stored sets
//! unreadable and unforgeable by whoever steals the bucket key. Held here as
//! text and paths; `trust` parses them (the key types live above config).

use super::overlay::{Env, Section};
use super::ConfigError;
use crate::secret::Secret;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEncryption {
    recipients: Option<Vec<String>>,
    recipients_file: Option<PathBuf>,
    identity_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSigning {
    key_file: Option<PathBuf>,
    verify_keys: Option<Vec<String>>,
}

/// `encryption:` — age recipients every artifact is sealed to; the identity
/// a restore opens them with.
#[derive(Debug, Clone, Default)]
pub struct EncryptionConfig {
    /// `age1…` public keys (from the list and from the recipients file).
    pub recipients: Vec<String>,
    /// Where the recipients came from, for messages.
    pub recipients_origin: String,
    /// An age identity file (restore side only; the backup side has none).
    pub identity_file: Option<PathBuf>,
}

/// `signing:` — the backup side's signing key; the restore side's pins.
#[derive(Debug, Clone, Default)]
pub struct SigningConfig {
    pub key: Option<Secret>,
    pub key_origin: String,
    pub verify_keys: Vec<String>,
    pub verify_keys_origin: String,
}

pub(crate) fn resolve_encryption(
    c: &RawEncryption,
    env: &dyn Env,
) -> Result<EncryptionConfig, ConfigError> {
    let s = Section::new(env, "encryption", "WPDR_ENCRYPTION_");
    let list = s.key("recipients", "RECIPIENTS");
    let mut recipients = list.list(&c.recipients)?;
    let mut origin = format!("{} / {}", list.field, list.var);
    let file_key = s.key("recipients_file", "RECIPIENTS_FILE");
    if let Some(path) = file_key.path(&c.recipients_file)? {
        let text =
            std::fs::read_to_string(&path).map_err(|source| ConfigError::CredentialFile {
                field: file_key.field.clone(),
                path: path.clone(),
                source,
            })?;
        recipients.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
        origin = format!("{origin} and {}", path.display());
    }
    let identity_file = Section::new(env, "encryption", "WPDR_")
        .key("identity_file", "IDENTITY_FILE")
        .path(&c.identity_file)?;
    Ok(EncryptionConfig {
        recipients,
        recipients_origin: origin,
        identity_file,
    })
}

pub(crate) fn resolve_signing(c: &RawSigning, env: &dyn Env) -> Result<SigningConfig, ConfigError> {
    let s = Section::new(env, "signing", "WPDR_");
    let key = s.key("key_file", "SIGNING_KEY");
    let verify = s.key("verify_keys", "VERIFY_KEYS");
    Ok(SigningConfig {
        key: key.credential(&c.key_file)?,
        key_origin: format!("{} / {} / {}_FILE", key.field, key.var, key.var),
        verify_keys: verify.list(&c.verify_keys)?,
        verify_keys_origin: format!("{} / {}", verify.field, verify.var),
    })
}
