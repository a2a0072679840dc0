//! The byte path between two media buckets: a copy as it is (the object
//! read whole into a buffer counted against the shared memory budget when
//! it fits one part, part by part into a multipart upload when not), or
//! sealed / opened on the way (`sealing`). Every write carries Content-MD5
//! or a CRC32 the receiving server checks; the SHA-256 of the content is
//! computed on the way for the media index, and a copy that must match one
//! fails before anything becomes visible at the destination.

use super::bucket::{Bucket, Copied, MemoryBudget, Tag, META_SHA256, META_SOURCE_ETAG};
use super::sealing::{open_into, seal_into, Crypt, Upload, META_SEALED, SEALED_AGE};
use super::MediaError;
use crate::store::s3::client::{body_backoff, Get, Headers, PutOptions, BODY_ATTEMPTS};
use bytes::{Bytes, BytesMut};
use md5::Md5;
use sha2::{Digest, Sha256};

/// One object to copy from `src_key` of `src` to `dst_key` of `dst` with
/// its headers, tagged as `tag` says, sealed or opened as `crypt` says. With
/// `expect_sha256`, the content must hash to it or the copy fails before
/// anything becomes visible at the destination.
#[derive(Clone, Copy)]
pub struct CopyRequest<'a> {
    pub src: &'a Bucket,
    pub src_key: &'a str,
    pub dst: &'a Bucket,
    pub dst_key: &'a str,
    pub tag: Tag,
    pub crypt: Crypt<'a>,
    pub expect_sha256: Option<&'a str>,
    pub budget: &'a MemoryBudget,
}

/// Copies as `req` says, whole objects retried on a broken body.
pub async fn copy_between(req: CopyRequest<'_>) -> Result<Copied, MediaError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match copy_once(req).await {
            Ok(c) => return Ok(c),
            Err(e) if attempt < BODY_ATTEMPTS && e.is_transient() => {
                tracing::warn!(key = req.src_key, attempt, error = %e, "copy failed, retrying");
                tokio::time::sleep(body_backoff(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn copy_once(req: CopyRequest<'_>) -> Result<Copied, MediaError> {
    let CopyRequest {
        src,
        src_key,
        dst,
        dst_key,
        tag,
        crypt,
        expect_sha256,
        budget,
    } = req;
    let out = src.s3().get(src_key, 0).await?;
    if crypt.transforms(&out.headers) {
        return copy_crypt(req, out).await;
    }
    let size = out.length.unwrap_or(0);
    let source_etag = out.etag;
    let verified = out.verified;
    let mut headers = out.headers;
    tag_source(&mut headers, tag, &source_etag);
    let mut body = out.body;
    let part_size = dst.s3().part_size() as u64;
    let broken = |detail: String| MediaError::Transfer {
        key: src_key.to_string(),
        detail,
    };
    let mut sha = Sha256::new();

    if size <= part_size {
        let _permit = budget.take(size).await;
        let mut buf = BytesMut::with_capacity(size as usize);
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| broken(format!("reading the body: {e}")))?
        {
            buf.extend_from_slice(&chunk);
        }
        if buf.len() as u64 != size {
            return Err(broken(format!(
                "the body ended at {} of {size} bytes",
                buf.len()
            )));
        }
        sha.update(&buf);
        let sha256 = hex::encode(sha.finalize());
        check_sha(src_key, expect_sha256, &sha256)?;
        // MD5 is the costliest pass (bench/seal.rs): skipped when the
        // source's stored checksum vouched for the read and no Object Lock
        // asks the upload for Content-MD5 (CRC32 protects it instead).
        let (content_md5, crc32) = if verified && dst.retention().is_none() {
            (None, Some(crc32fast::hash(&buf)))
        } else {
            let md5 = Md5::digest(&buf);
            check_md5(src_key, &source_etag, &md5)?;
            (Some(md5.into()), None)
        };
        if tag == Tag::SourceVersion {
            headers.user.insert(META_SHA256.to_string(), sha256.clone());
        }
        let dest_etag = dst
            .s3()
            .put(
                dst_key,
                buf.freeze(),
                &PutOptions {
                    headers: Some(&headers),
                    content_md5,
                    retain: dst.retention(),
                    crc32,
                },
            )
            .await?;
        return Ok(Copied {
            size,
            source_etag,
            dest_etag,
            sha256,
            stored_size: size,
        });
    }

    // Large object: one part in memory at a time, the upload aborted on any failure.
    // No checksum algorithm: every part carries Content-MD5 instead.
    let opts = PutOptions {
        headers: Some(&headers),
        retain: dst.retention(),
        ..Default::default()
    };
    let upload = dst.s3().create_upload(dst_key, &opts, true).await?;
    let mut whole_md5 = Md5::new();
    let result = async {
        let mut parts = Vec::new();
        let mut number = 1;
        let mut done = 0u64;
        let mut pending = BytesMut::new();
        let mut ended = false;
        while !ended {
            let want = part_size.min(size - done);
            let permit = budget.take(want).await;
            pending.reserve(want as usize);
            while (pending.len() as u64) < want {
                match body
                    .try_next()
                    .await
                    .map_err(|e| broken(format!("reading the body: {e}")))?
                {
                    Some(chunk) => pending.extend_from_slice(&chunk),
                    None => break,
                }
            }
            if (pending.len() as u64) < want {
                return Err(broken(format!(
                    "the body ended at {} of {size} bytes",
                    done + pending.len() as u64
                )));
            }
            // A chunk may overrun the part; the rest starts the next one.
            let rest = pending.split_off(want as usize);
            let part: Bytes = std::mem::replace(&mut pending, rest).freeze();
            sha.update(&part);
            whole_md5.update(&part);
            let part_md5 = Md5::digest(&part);
            done += part.len() as u64;
            ended = done >= size;
            let done_part = dst
                .s3()
                .upload_part(dst_key, &upload, number, part, Some(part_md5.into()))
                .await?;
            drop(permit);
            parts.push(done_part);
            number += 1;
        }
        let sha256 = hex::encode(sha.finalize());
        check_sha(src_key, expect_sha256, &sha256)?;
        check_md5(src_key, &source_etag, &whole_md5.finalize())?;
        let dest_etag = dst.s3().complete_upload(dst_key, &upload, parts).await?;
        Ok::<_, MediaError>((sha256, dest_etag))
    }
    .await;
    match result {
        Ok((sha256, dest_etag)) => Ok(Copied {
            size,
            source_etag,
            dest_etag,
            sha256,
            stored_size: size,
        }),
        Err(e) => {
            dst.s3().abort_upload(dst_key, &upload).await;
            Err(e)
        }
    }
}

/// Names the source version a copy is of (`Tag::SourceVersion`). Its
/// SHA-256 is added once known, by the writes that know it before they
/// start (a single PUT); one carried over from the source is dropped.
fn tag_source(headers: &mut Headers, tag: Tag, source_etag: &str) {
    if tag == Tag::SourceVersion {
        headers
            .user
            .insert(META_SOURCE_ETAG.to_string(), source_etag.to_string());
        headers.user.remove(META_SHA256);
    }
}

fn check_sha(key: &str, expected: Option<&str>, found: &str) -> Result<(), MediaError> {
    match expected {
        Some(want) if !want.is_empty() && want != found => Err(MediaError::Checksum {
            key: key.to_string(),
            expected: want.to_string(),
            found: found.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Copies one object read by `got` into `dst_key`, sealing or opening it.
async fn copy_crypt(req: CopyRequest<'_>, got: Get) -> Result<Copied, MediaError> {
    let CopyRequest {
        src_key,
        dst,
        dst_key,
        tag,
        crypt,
        expect_sha256,
        budget,
        ..
    } = req;
    let size = got.length.unwrap_or(0);
    let source_etag = got.etag;
    let mut headers = got.headers;
    match crypt {
        Crypt::Seal(_) => {
            headers
                .user
                .insert(META_SEALED.to_string(), SEALED_AGE.to_string());
        }
        _ => {
            headers.user.remove(META_SEALED);
        }
    }
    tag_source(&mut headers, tag, &source_etag);
    // What comes out: the object plus, sealed, its age header and tags.
    let expected = size + size / 256 + (64 << 10);
    // What this copy holds at most: that when it fits one part, else one
    // part. Taking a whole part for every small upload would let few run.
    let _permit = budget.take(expected.min(dst.s3().part_size() as u64)).await;
    let mut out = Upload::new(dst.s3(), dst.retention(), dst_key, expected);
    let result = async {
        let check_read = !got.verified;
        let (read, content_sha, plain_size) = match crypt {
            Crypt::Seal(keys) => {
                seal_into(src_key, keys, got.body, &mut out, &headers, check_read).await?
            }
            Crypt::Open(keys) => {
                open_into(src_key, keys, got.body, &mut out, &headers, check_read).await?
            }
            Crypt::Plain => {
                return Err(MediaError::Stopped(
                    "a plain copy was sent down the sealed path".into(),
                ))
            }
        };
        if read.0 != size {
            return Err(MediaError::Transfer {
                key: src_key.to_string(),
                detail: format!("the body ended at {} of {size} bytes", read.0),
            });
        }
        let sha256 = hex::encode(content_sha);
        check_sha(src_key, expect_sha256, &sha256)?;
        if let Some(md5) = &read.1 {
            check_md5(src_key, &source_etag, md5)?;
        }
        if tag == Tag::SourceVersion {
            headers.user.insert(META_SHA256.to_string(), sha256.clone());
        }
        let (dest_etag, stored) = out.finish(&headers).await?;
        Ok::<_, MediaError>(Copied {
            size: plain_size,
            source_etag: source_etag.clone(),
            dest_etag,
            sha256,
            stored_size: stored,
        })
    }
    .await;
    if result.is_err() {
        out.abort().await;
    }
    result
}

/// A single-part ETag is the content's MD5: a cheap end-to-end check of the read.
fn check_md5(key: &str, etag: &str, md5: &[u8]) -> Result<(), MediaError> {
    let looks_md5 = etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit());
    let found = hex::encode(md5);
    if looks_md5 && !etag.eq_ignore_ascii_case(&found) {
        return Err(MediaError::Transfer {
            key: key.to_string(),
            detail: format!("the bytes read have MD5 {found} but the object's ETag is {etag}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_etags_are_checked_and_multipart_ones_skipped() {
        let md5 = Md5::digest(b"hello");
        let good = hex::encode(md5);
        assert!(check_md5("k", &good, &md5).is_ok());
        assert!(check_md5("k", "0123456789abcdef0123456789abcdef", &md5).is_err());
        assert!(check_md5("k", "abc-3", &md5).is_ok());
    }
}
