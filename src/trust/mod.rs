//! What keeps a set trustworthy when the cluster and the bucket key are
//! stolen: everything sensitive is encrypted to public keys (age X25519
//! recipients), so the backup side cannot read what it wrote; each manifest
//! is signed (ed25519), so whoever can write to the bucket cannot make wpdr
//! restore content wpdr did not write.
//!
//! * [`keys`]: recipients, identities, and the streaming seal/open of objects.
//! * [`sign`]: signing keys, verifying keys and manifest signatures.

pub mod keys;
pub mod sign;

pub use keys::{Keys, Sealer, AGE_MAGIC};
pub use sign::{Signature, SigningKey, Verdict, VerifyingKeys};

use crate::exit::{Classify, ExitCode};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("encryption recipient '{value}' (from {origin}) is not an age X25519 recipient: {detail}. Use the public key `age-keygen` prints (age1…).")]
    BadRecipient {
        value: String,
        origin: String,
        detail: String,
    },
    #[error("identity file {path}: {detail}. It must hold age X25519 secret keys (AGE-SECRET-KEY-1…), as `age-keygen -o FILE` writes them.")]
    BadIdentity { path: String, detail: String },
    #[error("{what} is encrypted and no identity was given. Pass --identity FILE (or set WPDR_IDENTITY_FILE) with the secret key of one of its recipients: {recipients}.")]
    IdentityMissing { what: String, recipients: String },
    #[error("{what} is encrypted for {recipients}; the identity given opens none of them (it holds the keys of {given}). Use the identity file of one of those recipients.")]
    IdentityMismatch {
        what: String,
        recipients: String,
        given: String,
    },
    #[error("cannot encrypt {what}: {detail}")]
    Encrypt { what: String, detail: String },
    #[error("cannot decrypt {what}: {detail}. The object is damaged, or it was not written by wpdr for these keys.")]
    Decrypt { what: String, detail: String },
    #[error("signing key {origin}: {detail}. Create one with `wpdr keys signing --out FILE`.")]
    BadSigningKey { origin: String, detail: String },
    #[error("verifying key '{value}' (from {origin}): {detail}. Use the line `wpdr keys signing` printed (wpdr-verify-1:…).")]
    BadVerifyingKey {
        value: String,
        origin: String,
        detail: String,
    },
    #[error("{what} is not signed, and verifying keys are pinned (signing.verify_keys): it may not have been written by wpdr. Nothing was restored from it. If it predates signing, restore it with a config that pins no key, knowingly.")]
    Unsigned { what: String },
    #[error("{what}: {detail}. The manifest was altered or written by someone else; nothing was restored from it.")]
    BadSignature { what: String, detail: String },
}

impl Classify for TrustError {
    fn exit_code(&self) -> ExitCode {
        match self {
            TrustError::BadRecipient { .. }
            | TrustError::BadIdentity { .. }
            | TrustError::BadSigningKey { .. }
            | TrustError::BadVerifyingKey { .. } => ExitCode::Config,
            TrustError::IdentityMissing { .. } | TrustError::IdentityMismatch { .. } => {
                ExitCode::KeyRequired
            }
            TrustError::Encrypt { .. } => ExitCode::Internal,
            TrustError::Decrypt { .. } => ExitCode::Integrity,
            TrustError::Unsigned { .. } | TrustError::BadSignature { .. } => ExitCode::Untrusted,
        }
    }
    fn metric_label(&self) -> &'static str {
        match self {
            TrustError::BadRecipient { .. } => "trust_bad_recipient",
            TrustError::BadIdentity { .. } => "trust_bad_identity",
            TrustError::IdentityMissing { .. } => "trust_identity_missing",
            TrustError::IdentityMismatch { .. } => "trust_identity_mismatch",
            TrustError::Encrypt { .. } => "trust_encrypt",
            TrustError::Decrypt { .. } => "trust_decrypt",
            TrustError::BadSigningKey { .. } => "trust_bad_signing_key",
            TrustError::BadVerifyingKey { .. } => "trust_bad_verifying_key",
            TrustError::Unsigned { .. } => "trust_unsigned",
            TrustError::BadSignature { .. } => "trust_bad_signature",
        }
    }
}
