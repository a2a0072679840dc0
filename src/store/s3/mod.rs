//! The store on S3: backup sets under a prefix of one bucket, through the
//! one S3 client ([`client::S3Client`]). Path-style addressing and a custom
//! endpoint make it work with MinIO and Garage as well as AWS.
//!
//! Memory is bounded: a writer holds at most `part_size x (parts_in_flight + 1)`
//! bytes. A read that breaks mid-body resumes with a ranged GET from the
//! last byte received, under the client's body retry policy.

pub mod client;

use super::{ObjectMeta, StoreError};
use crate::config::{ObjectLock, S3Config};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::CompletedPart;
use bytes::{Bytes, BytesMut};
pub use client::{Checksums, S3Client};
use tokio::task::JoinSet;

#[derive(Clone)]
pub struct S3Store {
    s3: S3Client,
    lock: Option<ObjectLock>,
}

impl S3Store {
    pub async fn open(cfg: &S3Config) -> Result<Self, StoreError> {
        Ok(S3Store {
            s3: S3Client::open(cfg, Checksums::Sdk).await?,
            lock: cfg.object_lock,
        })
    }

    pub fn object_lock(&self) -> Option<ObjectLock> {
        self.lock
    }

    /// The retention of an object written now.
    pub fn retention(&self) -> Option<client::Retention> {
        self.lock.map(|l| client::Retention {
            mode: l.mode,
            until: chrono::Utc::now() + chrono::Duration::days(i64::from(l.days)),
        })
    }

    pub fn describe(&self) -> String {
        self.s3.describe()
    }

    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StoreError> {
        self.s3.put_if_absent(key, data).await
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        Ok(self.s3.head(key).await?.map(|h| ObjectMeta {
            key: key.to_string(),
            size: h.size,
        }))
    }

    /// Under Object Lock every version goes (a plain delete would only
    /// hide it), and a version still retained makes the delete fail.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        if self.lock.is_some() {
            self.s3.delete_versions(key).await.map(|_| ())
        } else {
            self.s3.delete(key).await
        }
    }

    pub async fn object_lock_enabled(&self) -> Result<Option<bool>, StoreError> {
        self.s3.object_lock_enabled().await
    }

    /// One page of the listing under `prefix` and the token of the next.
    pub async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<String>,
    ) -> Result<(Vec<ObjectMeta>, Option<String>), StoreError> {
        let page = self.s3.list_page(prefix, None, start_after, token).await?;
        let objects = page
            .objects
            .into_iter()
            .map(|o| ObjectMeta {
                key: o.key,
                size: o.size,
            })
            .collect();
        Ok((objects, page.next))
    }

    /// Lists with pagination. With a delimiter, also returns the common prefixes.
    pub async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<(Vec<ObjectMeta>, Vec<String>), StoreError> {
        let mut objects = Vec::new();
        let mut dirs = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .s3
                .list_page(prefix, delimiter, None, token.take())
                .await?;
            objects.extend(page.objects.into_iter().map(|o| ObjectMeta {
                key: o.key,
                size: o.size,
            }));
            dirs.extend(page.prefixes);
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok((objects, dirs))
    }

    pub async fn abort_stale_uploads(
        &self,
        prefix: &str,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, StoreError> {
        let mut aborted = 0;
        for u in self.s3.pending_uploads(prefix).await? {
            if u.initiated.is_some_and(|t| t < before) {
                self.s3.try_abort_upload(&u.key, &u.upload_id).await?;
                aborted += 1;
            }
        }
        Ok(aborted)
    }

    pub async fn reader(&self, key: &str) -> Result<S3Reader, StoreError> {
        let mut r = S3Reader {
            s3: self.s3.clone(),
            key: key.to_string(),
            offset: 0,
            total: None,
            body: None,
            attempts: 1,
        };
        r.open().await?;
        Ok(r)
    }

    /// `retain`: write the object under this Object Lock retention.
    pub fn writer(&self, key: &str, retain: Option<client::Retention>) -> S3Writer {
        S3Writer {
            s3: self.s3.clone(),
            retain,
            key: key.to_string(),
            buffer: BytesMut::new(),
            upload_id: None,
            next_part: 1,
            in_flight: JoinSet::new(),
            done: Vec::new(),
            finished: false,
        }
    }
}

pub struct S3Reader {
    s3: S3Client,
    key: String,
    offset: u64,
    total: Option<u64>,
    body: Option<ByteStream>,
    attempts: u32,
}

impl S3Reader {
    async fn open(&mut self) -> Result<(), StoreError> {
        let get = self.s3.get(&self.key, self.offset).await?;
        if self.total.is_none() {
            self.total = get.length;
        }
        self.body = Some(get.body);
        Ok(())
    }

    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        loop {
            if self.total == Some(self.offset) {
                return Ok(None);
            }
            let Some(body) = self.body.as_mut() else {
                return Ok(None);
            };
            match body.try_next().await {
                Ok(Some(b)) => {
                    self.offset += b.len() as u64;
                    return Ok(Some(b));
                }
                Ok(None) => match self.total {
                    Some(t) if t > self.offset => {
                        // The body ended early: resume from where it stopped.
                        self.resume(format!("body ended at {} of {t} bytes", self.offset))
                            .await?;
                    }
                    _ => return Ok(None),
                },
                Err(e) => self.resume(e.to_string()).await?,
            }
        }
    }

    async fn resume(&mut self, why: String) -> Result<(), StoreError> {
        if self.attempts >= client::BODY_ATTEMPTS {
            return Err(StoreError::S3 {
                op: "GetObject",
                key: self.key.clone(),
                detail: format!("read failed {} times, last: {why}", self.attempts),
            });
        }
        tracing::warn!(key = %self.key, offset = self.offset, %why, "resuming broken read");
        tokio::time::sleep(client::body_backoff(self.attempts)).await;
        self.attempts += 1;
        self.open().await
    }
}

type PartResult = Result<CompletedPart, StoreError>;

pub struct S3Writer {
    s3: S3Client,
    retain: Option<client::Retention>,
    key: String,
    buffer: BytesMut,
    upload_id: Option<String>,
    next_part: i32,
    in_flight: JoinSet<PartResult>,
    done: Vec<CompletedPart>,
    finished: bool,
}

impl S3Writer {
    fn put_options(&self) -> client::PutOptions<'static> {
        client::PutOptions {
            retain: self.retain,
            ..Default::default()
        }
    }

    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        let part = self.s3.part_size();
        while !data.is_empty() {
            let room = part - self.buffer.len();
            let take = room.min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == part {
                let full = self.buffer.split().freeze();
                self.buffer.reserve(part);
                self.send_part(full).await?;
            }
        }
        Ok(())
    }

    async fn send_part(&mut self, body: Bytes) -> Result<(), StoreError> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self
                    .s3
                    .create_upload(&self.key, &self.put_options(), false)
                    .await?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        while self.in_flight.len() >= self.s3.parts_in_flight() {
            self.collect_one().await?;
        }
        let number = self.next_part;
        self.next_part += 1;
        let s3 = self.s3.clone();
        let key = self.key.clone();
        self.in_flight
            .spawn(async move { s3.upload_part(&key, &upload_id, number, body, None).await });
        Ok(())
    }

    async fn collect_one(&mut self) -> Result<(), StoreError> {
        if let Some(res) = self.in_flight.join_next().await {
            let part = res.map_err(|e| StoreError::S3 {
                op: "UploadPart",
                key: self.key.clone(),
                detail: format!("upload task failed: {e}"),
            })??;
            self.done.push(part);
        }
        Ok(())
    }

    pub async fn finish(mut self) -> Result<(), StoreError> {
        let result = self.finish_inner().await;
        if result.is_err() {
            self.abort_inner().await;
        }
        self.finished = true;
        result
    }

    async fn finish_inner(&mut self) -> Result<(), StoreError> {
        let Some(upload_id) = self.upload_id.clone() else {
            // Small object: one PUT.
            let body = self.buffer.split().freeze();
            self.s3.put(&self.key, body, &self.put_options()).await?;
            return Ok(());
        };
        if !self.buffer.is_empty() {
            let last = self.buffer.split().freeze();
            self.send_part(last).await?;
        }
        while !self.in_flight.is_empty() {
            self.collect_one().await?;
        }
        let parts = std::mem::take(&mut self.done);
        self.s3
            .complete_upload(&self.key, &upload_id, parts)
            .await?;
        self.upload_id = None;
        Ok(())
    }

    async fn abort_inner(&mut self) {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        if let Some(id) = self.upload_id.take() {
            self.s3.abort_upload(&self.key, &id).await;
        }
    }

    pub async fn abort(mut self) {
        self.abort_inner().await;
        self.finished = true;
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.in_flight.abort_all();
        if let Some(id) = self.upload_id.take() {
            // Dropped without finish (an error or cancellation upstream): abort in the background.
            self.s3.abort_upload_detached(&self.key, id);
        }
    }
}
