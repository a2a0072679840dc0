//! Encryption of Secrets before they are stored in a backup set.
//!
//! AES-256-GCM (authenticated: a changed byte or a wrong key fails loudly,
//! it never decrypts to garbage). A sealed blob is `WPDRSEAL1` + a random
//! 96-bit nonce + ciphertext with its tag. The 32-byte key comes from
//! `WPDR_SECRETS_KEY` (64 hex characters) or a file (a mounted Kubernetes
//! Secret). Lose the key and the Secrets of every set are lost with it;
//! everything else in a set stays restorable.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};

const MAGIC: &[u8] = b"WPDRSEAL1";
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the sealed Secrets are not in wpdr's format (truncated or not a wpdr backup)")]
    NotSealed,
    #[error("the sealed Secrets cannot be opened: wrong secrets key, or the data was altered")]
    WrongKeyOrAltered,
}

pub use crate::config::SealKey;

pub fn seal(key: &SealKey, plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.0));
    let nonce: [u8; NONCE_LEN] = rand::random();
    // Encryption with a valid key and nonce length cannot fail.
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), plaintext)
        .unwrap_or_default();
    let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ct.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

pub fn open(key: &SealKey, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let rest = sealed.strip_prefix(MAGIC).ok_or(SealError::NotSealed)?;
    if rest.len() < NONCE_LEN + 16 {
        return Err(SealError::NotSealed);
    }
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.0));
    cipher
        .decrypt(Nonce::from_slice(nonce), ct)
        .map_err(|_| SealError::WrongKeyOrAltered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wrong_key_and_bad_input_fail_clearly() {
        let k = SealKey::generate();
        let sealed = seal(&k, b"password: hunter2");
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "the plaintext must not show"
        );
        assert_eq!(
            open(&SealKey::generate(), &sealed),
            Err(SealError::WrongKeyOrAltered)
        );
        assert_eq!(open(&k, b"garbage"), Err(SealError::NotSealed));
        assert!(SealKey::from_hex("abcd").is_err());
        assert!(!format!("{k:?}").contains(&k.to_hex()));
        assert_eq!(SealKey::from_hex(&k.to_hex()).unwrap().0, k.0);
    }

    proptest! {
        #[test]
        fn round_trips_and_detects_any_flipped_bit(data in proptest::collection::vec(any::<u8>(), 0..200), flip in any::<prop::sample::Index>()) {
            let k = SealKey::generate();
            let mut sealed = seal(&k, &data);
            prop_assert_eq!(open(&k, &sealed).unwrap(), data);
            let i = flip.index(sealed.len());
            sealed[i] ^= 1;
            prop_assert!(open(&k, &sealed).is_err());
        }
    }
}
