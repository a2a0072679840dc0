//! The byte path of a sealed media copy: the mirror seals each object to the
//! configured age recipients on its way offsite, and a restore opens it on
//! its way into the target bucket.
//!
//! Neither side knows the output's size before the input has been read (the
//! age header's size depends on the recipients), so the output goes to an
//! [`Upload`] that becomes a single PUT when it ends within one part and a
//! multipart upload when it does not. Memory stays at one part plus the age
//! STREAM's 64 KiB piece. The SHA-256 the index records is of the content
//! (the plain bytes), so a restore checks what WordPress will serve, and the
//! source's MD5 ETag is still checked against the bytes read.

use super::MediaError;
use crate::store::s3::client::{Headers, PutOptions, Retention};
use crate::store::s3::S3Client;
use crate::trust::Keys;
use aws_sdk_s3::types::CompletedPart;
use bytes::{Bytes, BytesMut};
use futures::{AsyncReadExt, StreamExt, TryStreamExt};
use md5::Md5;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};

/// User metadata on a sealed offsite copy: how it is sealed.
pub const META_SEALED: &str = "wpdr-sealed";
/// The value of [`META_SEALED`]: an age file to the set's recipients.
pub const SEALED_AGE: &str = "age";

/// What a copy does to the bytes on the way.
#[derive(Clone, Copy)]
pub enum Crypt<'a> {
    /// Nothing: a plain mirror, or a restore with no sealed copies expected.
    Plain,
    /// Seal to the keys' recipients (the mirror with `media.encrypt`).
    Seal(&'a Keys),
    /// Open with the keys' identities when the object read is sealed
    /// (restore: a set may hold sealed and plain copies side by side).
    Open(&'a Keys),
}

impl Crypt<'_> {
    /// Whether an object read with these headers goes through this module.
    pub fn transforms(&self, headers: &Headers) -> bool {
        match self {
            Crypt::Plain => false,
            Crypt::Seal(_) => true,
            Crypt::Open(_) => is_sealed(headers),
        }
    }
}

pub fn is_sealed(headers: &Headers) -> bool {
    headers.user.get(META_SEALED).map(String::as_str) == Some(SEALED_AGE)
}

/// (bytes read, their MD5 unless the read was vouched for otherwise), the
/// content's SHA-256, the content's size.
pub(crate) type Digests = ((u64, Option<[u8; 16]>), [u8; 32], u64);

pub(crate) async fn seal_into(
    key: &str,
    keys: &Keys,
    mut body: aws_sdk_s3::primitives::ByteStream,
    out: &mut Upload<'_>,
    headers: &Headers,
    check_read: bool,
) -> Result<Digests, MediaError> {
    let mut sealer = keys.sealer(key)?.ok_or_else(|| {
        MediaError::Stopped("media.encrypt is on but no recipients are configured".into())
    })?;
    let mut sha = Sha256::new();
    // MD5 of what was read, for the source's ETag, unless the server's
    // stored checksum already vouches for the read.
    let mut md5 = check_read.then(Md5::new);
    let mut n = 0u64;
    while let Some(chunk) = body.try_next().await.map_err(|e| MediaError::Transfer {
        key: key.to_string(),
        detail: format!("reading the body: {e}"),
    })? {
        n += chunk.len() as u64;
        sha.update(&chunk);
        if let Some(m) = md5.as_mut() {
            m.update(&chunk);
        }
        out.push(&sealer.seal(&chunk)?, headers).await?;
    }
    out.push(&sealer.finish()?, headers).await?;
    Ok((
        (n, md5.map(|m| m.finalize().into())),
        sha.finalize().into(),
        n,
    ))
}

pub(crate) async fn open_into(
    key: &str,
    keys: &Keys,
    body: aws_sdk_s3::primitives::ByteStream,
    out: &mut Upload<'_>,
    headers: &Headers,
    check_read: bool,
) -> Result<Digests, MediaError> {
    // The ciphertext is counted (and, unless the server's stored checksum
    // vouches for the read, hashed) as it passes into the decryptor.
    let read = Arc::new(Mutex::new((0u64, check_read.then(Md5::new))));
    let tap = read.clone();
    let ciphertext = futures::stream::try_unfold(body, |mut b| async move {
        Ok::<_, std::io::Error>(
            b.try_next()
                .await
                .map_err(std::io::Error::other)?
                .map(|c| (c, b)),
        )
    })
    .inspect_ok(move |c: &Bytes| {
        if let Ok(mut t) = tap.lock() {
            t.0 += c.len() as u64;
            if let Some(m) = t.1.as_mut() {
                m.update(c);
            }
        }
    })
    .boxed()
    .into_async_read();
    let mut plain = keys.open_stream(key, ciphertext).await?;
    let mut sha = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let got = plain
            .read(&mut buf)
            .await
            .map_err(|e| MediaError::Transfer {
                key: key.to_string(),
                detail: format!("opening the sealed copy: {e}"),
            })?;
        if got == 0 {
            break;
        }
        n += got as u64;
        sha.update(&buf[..got]);
        out.push(&buf[..got], headers).await?;
    }
    let (count, md5) = match read.lock() {
        Ok(mut r) => (r.0, r.1.take().map(|m| m.finalize().into())),
        Err(_) => return Err(MediaError::Stopped("the read counter was poisoned".into())),
    };
    Ok(((count, md5), sha.finalize().into(), n))
}

/// A write of unknown length: one PUT if it fits a part, multipart if not.
pub(crate) struct Upload<'a> {
    s3: &'a S3Client,
    retain: Option<Retention>,
    key: &'a str,
    part_size: usize,
    pending: BytesMut,
    upload: Option<String>,
    parts: Vec<CompletedPart>,
    written: u64,
}

impl<'a> Upload<'a> {
    /// `expected`: about how many bytes will come (the buffer is sized once
    /// for them, up to a part, instead of growing by doubling).
    pub(crate) fn new(
        s3: &'a S3Client,
        retain: Option<Retention>,
        key: &'a str,
        expected: u64,
    ) -> Self {
        let part_size = s3.part_size();
        Upload {
            part_size,
            s3,
            retain,
            key,
            pending: BytesMut::with_capacity((expected as usize).min(part_size + (64 << 10))),
            upload: None,
            parts: Vec::new(),
            written: 0,
        }
    }

    /// Adds bytes; a full part goes out at once. `headers` are the object's
    /// if this starts the multipart upload.
    async fn push(&mut self, data: &[u8], headers: &Headers) -> Result<(), MediaError> {
        self.pending.extend_from_slice(data);
        while self.pending.len() > self.part_size {
            let part = self.pending.split_to(self.part_size).freeze();
            self.send_part(part, headers).await?;
        }
        Ok(())
    }

    async fn send_part(&mut self, part: Bytes, headers: &Headers) -> Result<(), MediaError> {
        let upload = match &self.upload {
            Some(u) => u.clone(),
            None => {
                let opts = PutOptions {
                    headers: Some(headers),
                    retain: self.retain,
                    ..Default::default()
                };
                let u = self.s3.create_upload(self.key, &opts, true).await?;
                self.upload = Some(u.clone());
                u
            }
        };
        let md5: [u8; 16] = Md5::digest(&part).into();
        self.written += part.len() as u64;
        let number = self.parts.len() as i32 + 1;
        let done = self
            .s3
            .upload_part(self.key, &upload, number, part, Some(md5))
            .await?;
        self.parts.push(done);
        Ok(())
    }

    /// Ends the write: (the new object's ETag, its stored size).
    pub(crate) async fn finish(&mut self, headers: &Headers) -> Result<(String, u64), MediaError> {
        let rest = std::mem::take(&mut self.pending).freeze();
        if self.upload.is_none() {
            let size = rest.len() as u64;
            let retain = self.retain;
            // The server checks the bytes it stores: CRC32 costs little next
            // to the sealing; a write under Object Lock must carry Content-MD5.
            let (content_md5, crc32) = match retain {
                Some(_) => (Some(Md5::digest(&rest).into()), None),
                None => (None, Some(crc32fast::hash(&rest))),
            };
            let etag = self
                .s3
                .put(
                    self.key,
                    rest,
                    &PutOptions {
                        headers: Some(headers),
                        content_md5,
                        crc32,
                        retain,
                    },
                )
                .await?;
            return Ok((etag, size));
        }
        if !rest.is_empty() {
            self.send_part(rest, headers).await?;
        }
        let upload = self.upload.clone().unwrap_or_default();
        let parts = std::mem::take(&mut self.parts);
        let etag = self.s3.complete_upload(self.key, &upload, parts).await?;
        self.upload = None;
        Ok((etag, self.written))
    }

    pub(crate) async fn abort(&mut self) {
        if let Some(u) = self.upload.take() {
            self.s3.abort_upload(self.key, &u).await;
        }
    }
}
