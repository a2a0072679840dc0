//! Reading a zstd-compressed object as a stream of decompressed blocks, with
//! the checks every compressed artifact needs: the stored bytes against the
//! size and SHA-256 a manifest recorded (when given), and a stream that ends
//! mid-frame reported as truncated. SQL artifacts and media record files
//! both read through it. Every compressed object is written by [`encoder`].
//! A sealed object is opened by the store's reader before it gets here.

use super::{ObjectReader, Store, StoreError};
use std::io::Write;
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

/// The one way wpdr starts a zstd stream: with the frame's content checksum,
/// so `zstd -t` / `zstd -dc` detect damage in any artifact without wpdr.
pub fn encoder<W: Write>(
    out: W,
    level: i32,
) -> std::io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut enc = zstd::stream::write::Encoder::new(out, level)?;
    enc.include_checksum(true)?;
    Ok(enc)
}

/// Why a compressed object could not be read.
#[derive(Debug)]
pub enum ZstdReadError {
    Store(StoreError),
    /// Damaged, truncated, or not what the manifest recorded.
    Corrupt(String),
}

impl From<StoreError> for ZstdReadError {
    fn from(e: StoreError) -> Self {
        ZstdReadError::Store(e)
    }
}

pub struct ZstdReader {
    reader: ObjectReader,
    decoder: Decoder<'static>,
    out: Vec<u8>,
    ended: bool,
    last_hint: usize,
    /// Compressed bytes read so far (for progress).
    pub compressed_read: u64,
    expected: Option<(u64, String)>,
}

impl ZstdReader {
    /// `expected`: the size and SHA-256 of the stored (compressed) bytes.
    pub async fn open(
        store: &Store,
        key: &str,
        expected: Option<(u64, String)>,
    ) -> Result<Self, ZstdReadError> {
        let reader = store.reader(key).await?;
        let decoder = Decoder::new().map_err(|e| ZstdReadError::Corrupt(e.to_string()))?;
        Ok(ZstdReader {
            reader,
            decoder,
            out: vec![0u8; 1 << 20],
            ended: false,
            last_hint: 1,
            compressed_read: 0,
            expected,
        })
    }

    /// Hands the next decompressed bytes to `sink`, possibly in several
    /// pieces; `false` at the end of the object (after its checks passed).
    pub async fn next_into(
        &mut self,
        mut sink: impl FnMut(&[u8]) -> Result<(), ZstdReadError>,
    ) -> Result<bool, ZstdReadError> {
        if self.ended {
            return Ok(false);
        }
        match self.reader.next_chunk().await? {
            Some(chunk) => {
                self.compressed_read += chunk.len() as u64;
                let mut input = InBuffer::around(&chunk);
                loop {
                    let mut output = OutBuffer::around(&mut self.out[..]);
                    let hint = self
                        .decoder
                        .run(&mut input, &mut output)
                        .map_err(|e| ZstdReadError::Corrupt(format!("zstd: {e}")))?;
                    self.last_hint = hint;
                    let n = output.pos();
                    sink(&self.out[..n])?;
                    if input.pos == chunk.len() && n < self.out.len() {
                        break;
                    }
                }
                Ok(true)
            }
            None => {
                if let Some((size, sha)) = self.expected.take() {
                    // What was stored (sealed or not) is what the manifest hashed.
                    let (stored, found) = self.reader.stored();
                    if size != stored || sha != found {
                        return Err(ZstdReadError::Corrupt(format!(
                            "{stored} bytes with SHA-256 {found}, but the manifest says {size} bytes with {sha}: the artifact was truncated or altered",
                        )));
                    }
                }
                // zstd reports 0 exactly when a frame is complete.
                if self.last_hint != 0 {
                    return Err(ZstdReadError::Corrupt(
                        "the compressed stream ends mid-frame: the artifact is truncated".into(),
                    ));
                }
                self.ended = true;
                Ok(false)
            }
        }
    }
}
