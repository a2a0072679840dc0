//! Sorted streams of [`Record`]s in the store: the mirror's state and each
//! set's media index. JSON lines, zstd-compressed, written and read as
//! streams so a million-object library never sits in memory.

use super::plan::Record;
use super::MediaError;
use crate::store::zstd_reader::{self, ZstdReadError, ZstdReader};
use crate::store::{ObjectWriter, Store, StoreError, Written};
use std::io::Write;
use tokio::sync::mpsc;

/// Compressed bytes are handed to the store in pieces of about this size.
const FLUSH_BYTES: usize = 256 << 10;

/// Writes one record stream to one or more keys at once (the state and a
/// set's index hold the same records). Nothing is visible until `finish`.
pub struct RecordWriter {
    encoder: zstd::stream::write::Encoder<'static, Vec<u8>>,
    writers: Vec<ObjectWriter>,
    last_key: Option<String>,
    pub records: u64,
    pub bytes: u64,
}

impl RecordWriter {
    /// `writers`: where the same records go (each sealed or not as made).
    pub fn new(writers: Vec<ObjectWriter>) -> Result<Self, MediaError> {
        let keys: Vec<String> = writers.iter().map(|w| w.key().to_string()).collect();
        let encoder =
            zstd_reader::encoder(Vec::with_capacity(FLUSH_BYTES * 2), 3).map_err(|e| {
                MediaError::Records {
                    key: keys.join(", "),
                    detail: e.to_string(),
                }
            })?;
        Ok(RecordWriter {
            encoder,
            writers,
            last_key: None,
            records: 0,
            bytes: 0,
        })
    }

    fn fail(&self, detail: impl Into<String>) -> MediaError {
        MediaError::Records {
            key: self
                .writers
                .iter()
                .map(|w| w.key().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            detail: detail.into(),
        }
    }

    pub async fn push(&mut self, r: &Record) -> Result<(), MediaError> {
        if self
            .last_key
            .as_ref()
            .is_some_and(|l| l.as_bytes() >= r.key.as_bytes())
        {
            return Err(self.fail(format!("record '{}' out of order", r.key)));
        }
        let mut line = serde_json::to_vec(r).map_err(|e| self.fail(e.to_string()))?;
        line.push(b'\n');
        self.encoder
            .write_all(&line)
            .map_err(|e| self.fail(e.to_string()))?;
        self.records += 1;
        self.bytes += r.size;
        self.last_key = Some(r.key.clone());
        if self.encoder.get_ref().len() >= FLUSH_BYTES {
            let out = std::mem::take(self.encoder.get_mut());
            self.send(&out).await?;
        }
        Ok(())
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), MediaError> {
        for w in &mut self.writers {
            w.write(bytes).await?;
        }
        Ok(())
    }

    /// Completes every object; returns what each became.
    pub async fn finish(mut self) -> Result<Vec<Written>, MediaError> {
        let tail = std::mem::replace(
            &mut self.encoder,
            zstd_reader::encoder(Vec::new(), 1).map_err(|e| MediaError::Records {
                key: String::new(),
                detail: e.to_string(),
            })?,
        )
        .finish()
        .map_err(|e| self.fail(e.to_string()))?;
        self.send(&tail).await?;
        let mut done = Vec::new();
        for w in self.writers {
            done.push(w.finish().await?);
        }
        Ok(done)
    }

    /// Drops every object being written (a failed run keeps the old state).
    pub async fn abort(self) {
        for w in self.writers {
            w.abort().await;
        }
    }
}

/// Reads a record stream back, checking order and, when given, the size and
/// SHA-256 the manifest recorded for it.
pub struct RecordReader {
    key: String,
    reader: ZstdReader,
    line: Vec<u8>,
    pending: std::collections::VecDeque<Record>,
    ended: bool,
    last_key: Option<String>,
}

impl RecordReader {
    /// Opens a set's index and checks, at its end, the size and SHA-256 the
    /// manifest recorded: a damaged index fails instead of restoring less.
    pub async fn open_checked(
        store: &Store,
        key: &str,
        size: u64,
        sha256: &str,
    ) -> Result<Self, MediaError> {
        Self::open_with(store, key, Some((size, sha256.to_string())))
            .await?
            .ok_or_else(|| MediaError::Records {
                key: key.to_string(),
                detail: "the set's media index is missing from the store".into(),
            })
    }

    /// `None` when the object does not exist (a first run has no state).
    pub async fn open(store: &Store, key: &str) -> Result<Option<Self>, MediaError> {
        Self::open_with(store, key, None).await
    }

    async fn open_with(
        store: &Store,
        key: &str,
        expected: Option<(u64, String)>,
    ) -> Result<Option<Self>, MediaError> {
        let reader = match ZstdReader::open(store, key, expected).await {
            Ok(r) => r,
            Err(ZstdReadError::Store(StoreError::NotFound { .. })) => return Ok(None),
            Err(e) => return Err(records_error(key, e)),
        };
        Ok(Some(RecordReader {
            key: key.to_string(),
            reader,
            line: Vec::new(),
            pending: Default::default(),
            ended: false,
            last_key: None,
        }))
    }

    fn bad(&self, detail: impl Into<String>) -> MediaError {
        MediaError::Records {
            key: self.key.clone(),
            detail: detail.into(),
        }
    }

    fn take_lines(&mut self, mut data: &[u8]) -> Result<(), MediaError> {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&data[..nl]);
            data = &data[nl + 1..];
            let line = std::mem::take(&mut self.line);
            let r: Record = serde_json::from_slice(&line)
                .map_err(|e| self.bad(format!("line {}: {e}", self.pending.len() + 1)))?;
            if self
                .last_key
                .as_ref()
                .is_some_and(|l| l.as_bytes() >= r.key.as_bytes())
            {
                return Err(self.bad(format!("record '{}' is out of order", r.key)));
            }
            self.last_key = Some(r.key.clone());
            self.pending.push_back(r);
        }
        self.line.extend_from_slice(data);
        Ok(())
    }

    pub async fn next(&mut self) -> Result<Option<Record>, MediaError> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Ok(Some(r));
            }
            if self.ended {
                return Ok(None);
            }
            let mut blocks = Vec::new();
            let more = self
                .reader
                .next_into(|block| {
                    blocks.extend_from_slice(block);
                    Ok(())
                })
                .await
                .map_err(|e| records_error(&self.key, e))?;
            self.take_lines(&blocks)?;
            if !more {
                if !self.line.is_empty() {
                    return Err(self.bad("the file ends mid-record: it is truncated"));
                }
                self.ended = true;
            }
        }
    }

    /// Streams the records into a channel (for the planner's blocking merge).
    pub async fn send_into(mut self, tx: mpsc::Sender<Result<Record, MediaError>>) {
        loop {
            let item = self.next().await.transpose();
            let stop = !matches!(item, Some(Ok(_)));
            if let Some(item) = item {
                if tx.send(item).await.is_err() {
                    return;
                }
            }
            if stop {
                return;
            }
        }
    }
}

fn records_error(key: &str, e: ZstdReadError) -> MediaError {
    match e {
        ZstdReadError::Store(e) => MediaError::Store(e),
        ZstdReadError::Corrupt(detail) => MediaError::Records {
            key: key.to_string(),
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;
    use proptest::prelude::*;

    fn rec(key: &str) -> Record {
        Record {
            key: key.into(),
            size: key.len() as u64,
            etag: format!("e-{key}"),
            offsite_etag: "o".into(),
            sha256: "s".into(),
            offsite_size: None,
            modified: None,
        }
    }

    async fn roundtrip(keys: Vec<String>) -> Vec<Record> {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::from(LocalStore::open(dir.path()).await.unwrap());
        let mut w = RecordWriter::new(vec![store.writer("a.zst"), store.writer("b.zst")]).unwrap();
        for k in &keys {
            w.push(&rec(k)).await.unwrap();
        }
        let written = w.finish().await.unwrap();
        assert_eq!(written[0].sha256, written[1].sha256);
        let mut r = RecordReader::open(&store, "b.zst").await.unwrap().unwrap();
        let mut out = Vec::new();
        while let Some(x) = r.next().await.unwrap() {
            out.push(x);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Any sorted set of keys (newlines, quotes, unicode included) comes back identical.
        #[test]
        fn records_round_trip(keys in proptest::collection::btree_set("\\PC{0,12}[\n\"\\\\ü+%]?\\PC{1,4}", 0..400)) {
            let keys: Vec<String> = keys.into_iter().collect();
            let rt = tokio::runtime::Runtime::new().unwrap();
            let back = rt.block_on(roundtrip(keys.clone()));
            prop_assert_eq!(back, keys.iter().map(|k| rec(k)).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn out_of_order_and_truncated_streams_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::from(LocalStore::open(dir.path()).await.unwrap());
        let mut w = RecordWriter::new(vec![store.writer("x")]).unwrap();
        w.push(&rec("b")).await.unwrap();
        assert!(w.push(&rec("a")).await.is_err());
        w.abort().await;
        let mut w = RecordWriter::new(vec![store.writer("y")]).unwrap();
        for i in 0..5000 {
            w.push(&rec(&format!("k{i:06}"))).await.unwrap();
        }
        w.finish().await.unwrap();
        let full = store.get_bytes("y").await.unwrap();
        store
            .put_bytes("z", full.slice(..full.len() - 7))
            .await
            .unwrap();
        let mut r = RecordReader::open(&store, "z").await.unwrap().unwrap();
        let mut err = None;
        loop {
            match r.next().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert!(
            err.is_some(),
            "a truncated record file must not read as complete"
        );
        assert!(RecordReader::open(&store, "nope").await.unwrap().is_none());
    }
}
