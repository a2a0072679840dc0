//! Byte pipelines between SQL text and stored artifacts.
//!
//! Writing: the producer hands over blocks of SQL; a dedicated thread
//! compresses them with zstd; an upload task streams the compressed bytes
//! into the store. Bounded channels between the three keep memory fixed and
//! let reading rows, compressing and uploading overlap. The object becomes
//! visible only when [`ArtifactWriter::finish`] succeeds.
//!
//! Reading: compressed chunks from the store are decompressed incrementally
//! and fed to the statement splitter.

use super::sql::Splitter;
use super::MysqlError;
use crate::store::zstd_reader::{self, ZstdReadError, ZstdReader};
use crate::store::{ObjectWriter, Store, StoreError, Written};
use bytes::Bytes;
use std::io::Write;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// SQL blocks handed to the compressor are about this large.
pub const BLOCK_BYTES: usize = 1 << 20;
const CHANNEL_DEPTH: usize = 4;

/// Blocks handed back after compression, for the next ones: a fresh
/// megabyte costs its first writes a page fault per 4 KiB (2 % of a
/// backup's CPU, measured). A few are kept; the rest are freed.
static SPARE_BLOCKS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
const SPARE_LIMIT: usize = 8;

/// An empty block with room for `capacity` bytes, reused where one is spare.
pub fn new_block(capacity: usize) -> Vec<u8> {
    let spare = SPARE_BLOCKS.lock().ok().and_then(|mut s| s.pop());
    match spare {
        Some(mut block) => {
            block.reserve(capacity);
            block
        }
        None => Vec::with_capacity(capacity),
    }
}

/// Keeps a written block for [`new_block`] (cleared; an oversized one,
/// left by a huge row, is freed instead).
fn recycle(mut block: Vec<u8>) {
    if block.capacity() > 4 * BLOCK_BYTES {
        return;
    }
    block.clear();
    if let Ok(mut spare) = SPARE_BLOCKS.lock() {
        if spare.len() < SPARE_LIMIT {
            spare.push(block);
        }
    }
}

/// Streams one zstd-compressed artifact into the store.
pub struct ArtifactWriter {
    path: String,
    tx: Option<mpsc::Sender<Vec<u8>>>,
    compressor: JoinHandle<Result<(), String>>,
    uploader: JoinHandle<Result<ObjectWriter, StoreError>>,
    raw_bytes: u64,
}

impl ArtifactWriter {
    /// `key` is the store key; `path` the name inside the set, for messages.
    pub fn start(store: Arc<Store>, key: String, path: String, level: i32) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CHANNEL_DEPTH);
        let (ctx, mut crx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
        let compressor = tokio::task::spawn_blocking(move || {
            let mut enc = zstd_reader::encoder(Vec::with_capacity(BLOCK_BYTES), level)
                .map_err(|e| e.to_string())?;
            while let Some(block) = rx.blocking_recv() {
                enc.write_all(&block).map_err(|e| e.to_string())?;
                recycle(block);
                if enc.get_ref().len() >= BLOCK_BYTES / 2 {
                    let out = std::mem::replace(enc.get_mut(), Vec::with_capacity(BLOCK_BYTES));
                    if ctx.blocking_send(Bytes::from(out)).is_err() {
                        return Err("the upload stopped".into());
                    }
                }
            }
            let out = enc.finish().map_err(|e| e.to_string())?;
            if !out.is_empty() && ctx.blocking_send(Bytes::from(out)).is_err() {
                return Err("the upload stopped".into());
            }
            Ok(())
        });
        let uploader = tokio::spawn(async move {
            let mut w = store.sealed_writer(&key)?;
            while let Some(chunk) = crx.recv().await {
                if let Err(e) = w.write(&chunk).await {
                    w.abort().await;
                    return Err(e);
                }
            }
            Ok(w)
        });
        ArtifactWriter {
            path,
            tx: Some(tx),
            compressor,
            uploader,
            raw_bytes: 0,
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Uncompressed bytes written so far.
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    pub async fn write(&mut self, block: Vec<u8>) -> Result<(), MysqlError> {
        self.raw_bytes += block.len() as u64;
        let sent = match &self.tx {
            Some(tx) => tx.send(block).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The pipeline stopped early: finish() reports why.
            Err(self.failure().await)
        }
    }

    async fn failure(&mut self) -> MysqlError {
        self.tx = None;
        let comp = (&mut self.compressor).await;
        let up = (&mut self.uploader).await;
        match (comp, up) {
            (_, Ok(Err(e))) => MysqlError::Store(e),
            (Ok(Err(e)), _) => MysqlError::Compression {
                path: self.path.clone(),
                detail: e,
            },
            _ => MysqlError::Compression {
                path: self.path.clone(),
                detail: "the compression pipeline stopped".into(),
            },
        }
    }

    /// Flushes, waits for the upload and makes the object visible.
    pub async fn finish(mut self) -> Result<Written, MysqlError> {
        self.tx = None;
        let comp = (&mut self.compressor).await;
        let up = (&mut self.uploader).await;
        let writer = match up {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => return Err(MysqlError::Store(e)),
            Err(e) => {
                return Err(MysqlError::Compression {
                    path: self.path.clone(),
                    detail: e.to_string(),
                })
            }
        };
        match comp {
            Ok(Ok(())) => Ok(writer.finish().await?),
            Ok(Err(e)) => {
                writer.abort().await;
                Err(MysqlError::Compression {
                    path: self.path.clone(),
                    detail: e,
                })
            }
            Err(e) => {
                writer.abort().await;
                Err(MysqlError::Compression {
                    path: self.path.clone(),
                    detail: e.to_string(),
                })
            }
        }
    }
}

/// Compresses a small artifact in one go, with the frame checksum on.
pub fn compress(text: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let mut enc = zstd_reader::encoder(Vec::with_capacity(text.len() / 3 + 64), level)?;
    enc.write_all(text)?;
    enc.finish()
}

/// Reads a zstd artifact from the store as a stream of SQL statements. When
/// the manifest's size and SHA-256 are given, the stored bytes are checked
/// against them as they stream, and a difference fails the read at its end.
pub struct StatementReader {
    path: String,
    reader: ZstdReader,
    splitter: Splitter,
    ended: bool,
    /// Compressed bytes read so far (for progress).
    pub compressed_read: u64,
}

impl StatementReader {
    pub async fn open(
        store: &Store,
        key: &str,
        path: &str,
        expected: Option<(u64, String)>,
    ) -> Result<Self, MysqlError> {
        let reader = ZstdReader::open(store, key, expected)
            .await
            .map_err(|e| artifact_error(path, e))?;
        Ok(StatementReader {
            path: path.to_string(),
            reader,
            splitter: Splitter::default(),
            ended: false,
            compressed_read: 0,
        })
    }

    /// The next statement, `None` at the end of the artifact.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, MysqlError> {
        loop {
            if let Some(s) = self.splitter.next_statement() {
                return Ok(Some(s));
            }
            if self.ended {
                return self.splitter.finish().map_err(|e| MysqlError::Artifact {
                    path: self.path.clone(),
                    detail: e,
                });
            }
            let splitter = &mut self.splitter;
            let more = self
                .reader
                .next_into(|block| {
                    splitter.push(block);
                    Ok(())
                })
                .await
                .map_err(|e| artifact_error(&self.path, e))?;
            self.compressed_read = self.reader.compressed_read;
            self.ended = !more;
        }
    }

    /// Reads the rest of the artifact without using it, only to run its
    /// integrity checks. When a statement fails, damage to the artifact is
    /// the cause to report: garbage decompressed from an altered byte can
    /// reach the server before the checksum at the end of the stream.
    pub async fn check_rest(&mut self) -> Result<(), MysqlError> {
        while !self.ended {
            let more = self
                .reader
                .next_into(|_| Ok(()))
                .await
                .map_err(|e| artifact_error(&self.path, e))?;
            self.ended = !more;
        }
        Ok(())
    }
}

fn artifact_error(path: &str, e: ZstdReadError) -> MysqlError {
    match e {
        ZstdReadError::Store(e) => MysqlError::Store(e),
        ZstdReadError::Corrupt(detail) => MysqlError::Artifact {
            path: path.to_string(),
            detail,
        },
    }
}
