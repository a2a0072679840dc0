//! age X25519 keys and the streaming encryption of stored objects.
//!
//! The writing side holds recipients only (public keys): it can seal what it
//! stores and never read it back. The reading side (restore, `verify --deep`,
//! PITR) is given identities (secret keys). Objects are plain age files, so
//! `age -d -i key FILE | zstd -dc` opens any of them without wpdr.

use super::sign::{SigningKey, VerifyingKeys};
use super::TrustError;
use crate::config::{EncryptionConfig, SigningConfig};
use age::x25519;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// The first bytes of every age file: how a reader tells a sealed object
/// from a plain one (sets written before encryption stay readable).
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// The recipients this process seals to and the identities it opens with;
/// the key it signs manifests with and the keys it trusts signatures of.
#[derive(Clone, Default)]
pub struct Keys {
    recipients: Vec<x25519::Recipient>,
    identities: Arc<Vec<x25519::Identity>>,
    signer: Option<Arc<SigningKey>>,
    verifiers: VerifyingKeys,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("recipients", &self.recipients())
            .field("identities", &self.identity_publics())
            .field("signer", &self.signer.as_ref().map(|s| s.verifying()))
            .field("verifiers", &self.verifiers)
            .finish()
    }
}

/// Parses age recipients (`age1…`), naming where a bad one came from.
pub fn parse_recipients(
    values: &[String],
    origin: &str,
) -> Result<Vec<x25519::Recipient>, TrustError> {
    values
        .iter()
        .map(|v| {
            x25519::Recipient::from_str(v.trim()).map_err(|e| TrustError::BadRecipient {
                value: v.clone(),
                origin: origin.to_string(),
                detail: e.to_string(),
            })
        })
        .collect()
}

/// Parses an age identity file's text: one `AGE-SECRET-KEY-1…` per line,
/// `#` comments and blank lines allowed (what `age-keygen` writes).
pub fn parse_identities(text: &str, origin: &str) -> Result<Vec<x25519::Identity>, TrustError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let id = x25519::Identity::from_str(line).map_err(|_| TrustError::BadIdentity {
            path: origin.to_string(),
            detail: format!("line {} is not an age X25519 secret key", n + 1),
        })?;
        out.push(id);
    }
    if out.is_empty() {
        return Err(TrustError::BadIdentity {
            path: origin.to_string(),
            detail: "it holds no key".into(),
        });
    }
    Ok(out)
}

impl Keys {
    /// Keys that seal to `recipients` (none: objects are stored plain).
    pub fn new(recipients: Vec<x25519::Recipient>) -> Self {
        Keys {
            recipients,
            ..Keys::default()
        }
    }

    /// The keys the configuration names (`identity` overrides its identity file).
    pub fn from_config(
        enc: &EncryptionConfig,
        sig: &SigningConfig,
        identity: Option<&Path>,
    ) -> Result<Self, TrustError> {
        let mut keys = Keys::new(parse_recipients(&enc.recipients, &enc.recipients_origin)?);
        if let Some(path) = identity.or(enc.identity_file.as_deref()) {
            keys = keys.with_identity_file(path)?;
        }
        let signer = match &sig.key {
            Some(text) => Some(SigningKey::parse(text.expose(), &sig.key_origin)?),
            None => None,
        };
        let verifiers = VerifyingKeys::parse(&sig.verify_keys, &sig.verify_keys_origin)?;
        Ok(keys.with_signing(signer, verifiers))
    }

    pub fn with_signing(mut self, signer: Option<SigningKey>, verifiers: VerifyingKeys) -> Self {
        self.signer = signer.map(Arc::new);
        self.verifiers = verifiers;
        self
    }

    /// The key manifests are signed with (the backup side's).
    pub fn signer(&self) -> Option<&SigningKey> {
        self.signer.as_deref()
    }

    /// The verifying keys a reader pins.
    pub fn verifiers(&self) -> &VerifyingKeys {
        &self.verifiers
    }

    /// These keys, able to open what was sealed to the identities in `path`.
    pub fn with_identity_file(self, path: &Path) -> Result<Self, TrustError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TrustError::BadIdentity {
            path: origin.clone(),
            detail: e.to_string(),
        })?;
        Ok(self.with_identities(parse_identities(&text, &origin)?))
    }

    pub fn with_identities(mut self, identities: Vec<x25519::Identity>) -> Self {
        self.identities = Arc::new(identities);
        self
    }

    /// Whether what this process stores is sealed.
    pub fn seals(&self) -> bool {
        !self.recipients.is_empty()
    }

    /// The recipients new objects are sealed to, as `age1…` text (what a
    /// manifest records, so a restore can say which key it needs).
    pub fn recipients(&self) -> Vec<String> {
        self.recipients.iter().map(|r| r.to_string()).collect()
    }

    /// The public keys of the identities held (for messages; never secret).
    pub fn identity_publics(&self) -> Vec<String> {
        self.identities
            .iter()
            .map(|i| i.to_public().to_string())
            .collect()
    }

    /// Starts sealing one object; `None` when no recipients are configured.
    pub fn sealer(&self, what: &str) -> Result<Option<Sealer>, TrustError> {
        if self.recipients.is_empty() {
            return Ok(None);
        }
        let fail = |detail: String| TrustError::Encrypt {
            what: what.to_string(),
            detail,
        };
        let encryptor = age::Encryptor::with_recipients(
            self.recipients.iter().map(|r| r as &dyn age::Recipient),
        )
        .map_err(|e| fail(e.to_string()))?;
        let out = SharedBuf::default();
        let writer = encryptor
            .wrap_output(out.clone())
            .map_err(|e| fail(e.to_string()))?;
        Ok(Some(Sealer {
            writer,
            out,
            what: what.to_string(),
        }))
    }

    /// Before touching any target: can these identities open what was
    /// sealed to `recipients` (empty: nothing is sealed)?
    pub fn check_can_open(&self, what: &str, recipients: &[String]) -> Result<(), TrustError> {
        if recipients.is_empty() {
            return Ok(());
        }
        let held = self.identity_publics();
        if held.is_empty() {
            return Err(TrustError::IdentityMissing {
                what: what.to_string(),
                recipients: recipients.join(", "),
            });
        }
        if held.iter().any(|h| recipients.contains(h)) {
            Ok(())
        } else {
            Err(TrustError::IdentityMismatch {
                what: what.to_string(),
                recipients: recipients.join(", "),
                given: held.join(", "),
            })
        }
    }

    /// Opens a sealed stream (the age header is read here; the payload as
    /// the returned reader is read).
    pub async fn open_stream<R>(
        &self,
        what: &str,
        input: R,
    ) -> Result<age::stream::StreamReader<R>, TrustError>
    where
        R: futures::io::AsyncBufRead + Unpin,
    {
        let decryptor = age::Decryptor::new_async_buffered(input)
            .await
            .map_err(|e| TrustError::Decrypt {
                what: what.to_string(),
                detail: e.to_string(),
            })?;
        decryptor
            .decrypt_async(self.identities.iter().map(|i| i as &dyn age::Identity))
            .map_err(|e| self.open_error(what, e))
    }

    fn open_error(&self, what: &str, e: age::DecryptError) -> TrustError {
        let unknown = "the recipients its set's manifest names (`wpdr sets show`)".to_string();
        match e {
            age::DecryptError::NoMatchingKeys if self.identities.is_empty() => {
                TrustError::IdentityMissing {
                    what: what.to_string(),
                    recipients: unknown,
                }
            }
            age::DecryptError::NoMatchingKeys => TrustError::IdentityMismatch {
                what: what.to_string(),
                recipients: unknown,
                given: self.identity_publics().join(", "),
            },
            other => TrustError::Decrypt {
                what: what.to_string(),
                detail: other.to_string(),
            },
        }
    }
}

/// The encrypting half of one object: bytes in, age file bytes out, in
/// 64 KiB pieces as the age STREAM cuts them (memory stays bounded).
pub struct Sealer {
    writer: age::stream::StreamWriter<SharedBuf>,
    out: SharedBuf,
    what: String,
}

impl Sealer {
    /// Seals `data`; returns the ciphertext ready so far (may be empty).
    pub fn seal(&mut self, data: &[u8]) -> Result<Vec<u8>, TrustError> {
        self.writer
            .write_all(data)
            .map_err(|e| TrustError::Encrypt {
                what: self.what.clone(),
                detail: e.to_string(),
            })?;
        Ok(self.out.take())
    }

    /// Ends the stream; returns its last ciphertext.
    pub fn finish(self) -> Result<Vec<u8>, TrustError> {
        let out = self.writer.finish().map_err(|e| TrustError::Encrypt {
            what: self.what.clone(),
            detail: e.to_string(),
        })?;
        Ok(out.take())
    }
}

/// A byte sink the age writer owns while the caller drains it.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn take(&self) -> Vec<u8> {
        match self.0.lock() {
            Ok(mut b) => std::mem::take(&mut *b),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock() {
            Ok(mut b) => b.extend_from_slice(buf),
            Err(poisoned) => poisoned.into_inner().extend_from_slice(buf),
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::AsyncReadExt;

    fn keypair() -> (x25519::Identity, x25519::Recipient) {
        let id = x25519::Identity::generate();
        let r = id.to_public();
        (id, r)
    }

    fn seal_all(keys: &Keys, pieces: &[&[u8]]) -> Vec<u8> {
        let mut s = keys.sealer("t").unwrap().unwrap();
        let mut out = Vec::new();
        for p in pieces {
            out.extend(s.seal(p).unwrap());
        }
        out.extend(s.finish().unwrap());
        out
    }

    async fn open_all(keys: &Keys, data: &[u8]) -> Result<Vec<u8>, TrustError> {
        let mut r = keys.open_stream("t", data).await?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)
            .await
            .map_err(|e| TrustError::Decrypt {
                what: "t".into(),
                detail: e.to_string(),
            })?;
        Ok(out)
    }

    #[tokio::test]
    async fn sealed_pieces_open_with_any_recipients_identity() {
        let (id1, r1) = keypair();
        let (id2, r2) = keypair();
        let writer = Keys::new(vec![r1, r2]);
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sealed = seal_all(&writer, &[b"hello ", &big, b"!"]);
        assert!(sealed.starts_with(AGE_MAGIC));
        let mut want = b"hello ".to_vec();
        want.extend(&big);
        want.push(b'!');
        for id in [id1, id2] {
            let reader = Keys::default().with_identities(vec![id]);
            assert_eq!(open_all(&reader, &sealed).await.unwrap(), want);
        }
    }

    #[tokio::test]
    async fn the_writing_side_cannot_read_and_a_stranger_is_told_whom_it_needs() {
        let (_, r1) = keypair();
        let writer = Keys::new(vec![r1.clone()]);
        let sealed = seal_all(&writer, &[b"secret rows"]);
        assert!(matches!(
            open_all(&writer, &sealed).await,
            Err(TrustError::IdentityMissing { .. })
        ));
        let (stranger, _) = keypair();
        let other = Keys::default().with_identities(vec![stranger]);
        assert!(matches!(
            open_all(&other, &sealed).await,
            Err(TrustError::IdentityMismatch { .. })
        ));
        let e = other
            .check_can_open("set s1", &[r1.to_string()])
            .unwrap_err();
        assert!(e.to_string().contains(&r1.to_string()), "{e}");
    }

    #[tokio::test]
    async fn a_flipped_byte_or_a_cut_stream_does_not_open() {
        let (id, r) = keypair();
        let keys = Keys::new(vec![r]).with_identities(vec![id]);
        let data = vec![7u8; 150_000];
        let sealed = seal_all(&keys, &[&data]);
        let mut flipped = sealed.clone();
        let n = flipped.len();
        flipped[n - 10] ^= 1;
        assert!(open_all(&keys, &flipped).await.is_err());
        assert!(open_all(&keys, &sealed[..n - 20]).await.is_err());
        assert_eq!(open_all(&keys, &sealed).await.unwrap(), data);
    }

    #[test]
    fn identity_files_and_recipients_parse_with_named_errors() {
        let (id, r) = keypair();
        let text = format!(
            "# created: now\n# public key: {r}\n{}\n",
            age::secrecy::ExposeSecret::expose_secret(&id.to_string())
        );
        let ids = parse_identities(&text, "key.txt").unwrap();
        assert_eq!(ids[0].to_public().to_string(), r.to_string());
        let e = parse_identities("nonsense\n", "key.txt").err().unwrap();
        assert!(e.to_string().contains("key.txt") && e.to_string().contains("line 1"));
        let e = parse_recipients(&["age1nope".into()], "encryption.recipients")
            .err()
            .unwrap();
        assert!(e.to_string().contains("age1nope"));
        let keys = Keys::new(vec![r]).with_identities(ids);
        let shown = format!("{keys:?}");
        assert!(!shown.contains("AGE-SECRET-KEY"), "{shown}");
    }
}
