//! Manifest signatures (ed25519). The signing key is a secret of the
//! backup side; the verifying key is public and pinned in the restore side's
//! config. A manifest names every artifact's size and SHA-256, so a valid
//! signature over it vouches for the whole set.

use super::TrustError;
use base64::Engine;
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use std::fmt;

const SECRET_PREFIX: &str = "wpdr-sign-1:";
const PUBLIC_PREFIX: &str = "wpdr-verify-1:";
/// Signed bytes start with this, so a signature over a manifest can never
/// be passed off as one over anything else.
const CONTEXT: &[u8] = b"wpdr manifest v1\0";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The backup side's signing key. `Debug` never prints it.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.verifying())
    }
}

impl SigningKey {
    pub fn generate() -> Self {
        let seed: [u8; 32] = rand::random();
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Parses `wpdr-sign-1:<base64>` (comments and blank lines around it allowed).
    pub fn parse(text: &str, origin: &str) -> Result<Self, TrustError> {
        let fail = |detail: &str| TrustError::BadSigningKey {
            origin: origin.to_string(),
            detail: detail.to_string(),
        };
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| fail("it is empty"))?;
        let body = line
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| fail("it does not start with wpdr-sign-1:"))?;
        let bytes = b64()
            .decode(body)
            .map_err(|_| fail("its key is not valid base64"))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| fail("its key is not 32 bytes"))?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    pub fn load(path: &std::path::Path) -> Result<Self, TrustError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TrustError::BadSigningKey {
            origin: origin.clone(),
            detail: e.to_string(),
        })?;
        Self::parse(&text, &origin)
    }

    /// The key file's text (secret: write it 0600, never log it).
    pub fn to_secret_text(&self) -> crate::secret::Secret {
        crate::secret::Secret::new(format!(
            "{SECRET_PREFIX}{}",
            b64().encode(self.0.to_bytes())
        ))
    }

    /// The public half, as the text a restore config pins.
    pub fn verifying(&self) -> String {
        public_text(&self.0.verifying_key())
    }

    pub fn sign(&self, manifest: &[u8]) -> Signature {
        let sig = self.0.sign(&signed_bytes(manifest));
        Signature {
            algorithm: "ed25519".into(),
            key: self.verifying(),
            signature: b64().encode(sig.to_bytes()),
        }
    }
}

fn public_text(k: &ed25519_dalek::VerifyingKey) -> String {
    format!("{PUBLIC_PREFIX}{}", b64().encode(k.to_bytes()))
}

fn signed_bytes(manifest: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(CONTEXT.len() + manifest.len());
    v.extend_from_slice(CONTEXT);
    v.extend_from_slice(manifest);
    v
}

/// A manifest's signature, stored beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub algorithm: String,
    /// The verifying key that made it (`wpdr-verify-1:…`).
    pub key: String,
    pub signature: String,
}

/// What is known of who wrote a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Verdict {
    /// Signed by a pinned key.
    Trusted { key: String },
    /// Signed, intact, but no key is pinned: proves it was not damaged, not
    /// who wrote it.
    SignedUnpinned { key: String },
    /// No signature (a set from before signing, or a writer without a key).
    Unsigned,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Trusted { key } => write!(f, "signed by pinned key {key}"),
            Verdict::SignedUnpinned { key } => {
                write!(
                    f,
                    "signed by {key} (no key pinned: intact, author unproven)"
                )
            }
            Verdict::Unsigned => f.write_str("unsigned"),
        }
    }
}

/// The verifying keys a restore side trusts.
#[derive(Debug, Clone, Default)]
pub struct VerifyingKeys(Vec<(String, ed25519_dalek::VerifyingKey)>);

impl VerifyingKeys {
    pub fn parse(values: &[String], origin: &str) -> Result<Self, TrustError> {
        let mut out = Vec::new();
        for v in values {
            let v = v.trim();
            out.push((v.to_string(), parse_public(v, origin)?));
        }
        Ok(VerifyingKeys(out))
    }

    pub fn is_pinned(&self) -> bool {
        !self.0.is_empty()
    }

    /// Checks `manifest` against its signature; `what` names it in errors.
    pub fn verify(
        &self,
        what: &str,
        manifest: &[u8],
        signature: Option<&Signature>,
    ) -> Result<Verdict, TrustError> {
        let Some(sig) = signature else {
            if self.is_pinned() {
                return Err(TrustError::Unsigned {
                    what: what.to_string(),
                });
            }
            return Ok(Verdict::Unsigned);
        };
        let bad = |detail: String| TrustError::BadSignature {
            what: what.to_string(),
            detail,
        };
        if sig.algorithm != "ed25519" {
            return Err(bad(format!(
                "unknown signature algorithm '{}'",
                sig.algorithm
            )));
        }
        let key = parse_public(&sig.key, what).map_err(|_| bad("its key is unreadable".into()))?;
        let pinned = self.0.iter().any(|(_, k)| *k == key);
        if self.is_pinned() && !pinned {
            return Err(bad(format!(
                "it is signed by {}, which is not one of the pinned verifying keys",
                sig.key
            )));
        }
        let bytes: [u8; 64] = b64()
            .decode(&sig.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("its signature is not 64 bytes of base64".into()))?;
        key.verify(
            &signed_bytes(manifest),
            &ed25519_dalek::Signature::from_bytes(&bytes),
        )
        .map_err(|_| bad("the signature does not match its content".into()))?;
        Ok(if pinned {
            Verdict::Trusted {
                key: sig.key.clone(),
            }
        } else {
            Verdict::SignedUnpinned {
                key: sig.key.clone(),
            }
        })
    }
}

fn parse_public(v: &str, origin: &str) -> Result<ed25519_dalek::VerifyingKey, TrustError> {
    let fail = |detail: &str| TrustError::BadVerifyingKey {
        value: v.to_string(),
        origin: origin.to_string(),
        detail: detail.to_string(),
    };
    let body = v
        .strip_prefix(PUBLIC_PREFIX)
        .ok_or_else(|| fail("it does not start with wpdr-verify-1:"))?;
    let bytes: [u8; 32] = b64()
        .decode(body)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| fail("it is not 32 bytes of base64"))?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| fail("it is not a valid ed25519 key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_round_trip_through_their_text() {
        let k = SigningKey::generate();
        let again = SigningKey::parse(
            &format!("# wpdr signing key\n{}\n", k.to_secret_text().expose()),
            "k",
        )
        .unwrap();
        assert_eq!(k.verifying(), again.verifying());
        assert!(!format!("{k:?}").contains(k.to_secret_text().expose()));
        assert!(SigningKey::parse("wpdr-sign-1:xx", "k").is_err());
        assert!(VerifyingKeys::parse(&["nope".into()], "signing.verify_keys").is_err());
    }

    #[test]
    fn pinned_keys_decide_what_is_trusted() {
        let ours = SigningKey::generate();
        let theirs = SigningKey::generate();
        let manifest = br#"{"id":"s1"}"#;
        let pinned = VerifyingKeys::parse(&[ours.verifying()], "t").unwrap();
        let none = VerifyingKeys::default();
        let sig = ours.sign(manifest);
        assert!(matches!(
            pinned.verify("m", manifest, Some(&sig)),
            Ok(Verdict::Trusted { .. })
        ));
        assert!(matches!(
            none.verify("m", manifest, Some(&sig)),
            Ok(Verdict::SignedUnpinned { .. })
        ));
        assert_eq!(none.verify("m", manifest, None).unwrap(), Verdict::Unsigned);
        assert!(matches!(
            pinned.verify("m", manifest, None),
            Err(TrustError::Unsigned { .. })
        ));
        let forged = theirs.sign(manifest);
        let e = pinned.verify("m", manifest, Some(&forged)).unwrap_err();
        assert!(e.to_string().contains("not one of the pinned"), "{e}");
        // A forger who copies our key name into his signature still fails.
        let mut relabelled = forged.clone();
        relabelled.key = ours.verifying();
        assert!(pinned.verify("m", manifest, Some(&relabelled)).is_err());
    }

    proptest! {
        /// Any change to the signed bytes is caught, pinned or not.
        #[test]
        fn any_altered_byte_breaks_the_signature(
            body in proptest::collection::vec(any::<u8>(), 1..400),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let k = SigningKey::generate();
            let sig = k.sign(&body);
            let mut altered = body.clone();
            let i = at.index(altered.len());
            altered[i] ^= flip;
            prop_assert!(VerifyingKeys::default().verify("m", &altered, Some(&sig)).is_err());
            let pinned = VerifyingKeys::parse(&[k.verifying()], "t").unwrap();
            prop_assert!(pinned.verify("m", &altered, Some(&sig)).is_err());
            prop_assert!(pinned.verify("m", &body, Some(&sig)).is_ok());
        }
    }
}
