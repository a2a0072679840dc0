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
use crate::store::{ObjectReader, ObjectWriter, Store, StoreError, Written};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

/// SQL blocks handed to the compressor are about this large.
pub const BLOCK_BYTES: usize = 1 << 20;
const CHANNEL_DEPTH: usize = 4;

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
            let mut enc = zstd::stream::write::Encoder::new(Vec::with_capacity(BLOCK_BYTES), level)
                .map_err(|e| e.to_string())?;
            while let Some(block) = rx.blocking_recv() {
                enc.write_all(&block).map_err(|e| e.to_string())?;
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
            let mut w = store.writer(&key);
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
    let mut enc =
        zstd::stream::write::Encoder::new(Vec::with_capacity(text.len() / 3 + 64), level)?;
    enc.include_checksum(true)?;
    enc.write_all(text)?;
    enc.finish()
}

/// Reads a zstd artifact from the store as a stream of SQL statements. When
/// the manifest's size and SHA-256 are given, the stored bytes are checked
/// against them as they stream, and a difference fails the read at its end.
pub struct StatementReader {
    path: String,
    reader: ObjectReader,
    decoder: Decoder<'static>,
    splitter: Splitter,
    out: Vec<u8>,
    ended: bool,
    last_hint: usize,
    /// Compressed bytes read so far (for progress).
    pub compressed_read: u64,
    expected: Option<(u64, String)>,
    hasher: Sha256,
}

impl StatementReader {
    pub async fn open(
        store: &Store,
        key: &str,
        path: &str,
        expected: Option<(u64, String)>,
    ) -> Result<Self, MysqlError> {
        let reader = store.reader(key).await?;
        let decoder = Decoder::new().map_err(|e| MysqlError::Artifact {
            path: path.to_string(),
            detail: e.to_string(),
        })?;
        Ok(StatementReader {
            path: path.to_string(),
            reader,
            decoder,
            splitter: Splitter::default(),
            out: vec![0u8; 1 << 20],
            ended: false,
            last_hint: 1,
            compressed_read: 0,
            expected,
            hasher: Sha256::new(),
        })
    }

    fn bad(&self, detail: impl Into<String>) -> MysqlError {
        MysqlError::Artifact {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    /// The next statement, `None` at the end of the artifact.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, MysqlError> {
        loop {
            if let Some(s) = self.splitter.next_statement() {
                return Ok(Some(s));
            }
            if self.ended {
                return self.splitter.finish().map_err(|e| self.bad(e));
            }
            match self.reader.next_chunk().await? {
                Some(chunk) => {
                    self.compressed_read += chunk.len() as u64;
                    self.hasher.update(&chunk);
                    let mut input = InBuffer::around(&chunk);
                    loop {
                        let mut output = OutBuffer::around(&mut self.out[..]);
                        let hint = self.decoder.run(&mut input, &mut output).map_err(|e| {
                            MysqlError::Artifact {
                                path: self.path.clone(),
                                detail: format!("zstd: {e}"),
                            }
                        })?;
                        self.last_hint = hint;
                        let n = output.pos();
                        self.splitter.push(&self.out[..n]);
                        if input.pos == chunk.len() && n < self.out.len() {
                            break;
                        }
                    }
                }
                None => {
                    if let Some((size, sha)) = self.expected.take() {
                        let found = hex::encode(std::mem::take(&mut self.hasher).finalize());
                        if size != self.compressed_read || sha != found {
                            return Err(self.bad(format!(
                                "{} bytes with SHA-256 {found}, but the manifest says {size} bytes with {sha}: the artifact was truncated or altered",
                                self.compressed_read
                            )));
                        }
                    }
                    // zstd reports 0 exactly when a frame is complete.
                    if self.last_hint != 0 {
                        return Err(self.bad(
                            "the compressed stream ends mid-frame: the artifact is truncated",
                        ));
                    }
                    self.ended = true;
                }
            }
        }
    }
}
