//! Archive segments: a run of whole transactions as a valid binlog file
//! (magic, the server's Format_description event, then the events byte for
//! byte), zstd-compressed, with a JSON index written after it as the commit.
//! `zstd -dc x.binlog.zst > x.binlog && mariadb-binlog x.binlog` reads one
//! without wpdr.

use crate::catalog::Fence;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::{
    event_len, Group, RawEvent, BINLOG_MAGIC, FORMAT_DESCRIPTION_EVENT, HEADER_LEN,
};
use super::gtid::{Gtid, GtidPos};
use super::BinlogError;
use crate::store::Store;

pub const SEGMENT_FORMAT: u32 = 1;

/// The index of one segment; its presence commits the segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentIndex {
    pub format: u32,
    pub name: String,
    /// `host:port` the events were read from (never credentials).
    pub server: String,
    /// The position before the first transaction: equal to the previous
    /// segment's `end` when the archive is continuous.
    pub start: GtidPos,
    /// The position after the last transaction.
    pub end: GtidPos,
    pub first_gtid: Gtid,
    pub last_gtid: Gtid,
    pub transactions: u64,
    /// Commit timestamps (server clock, whole seconds) of the first and last transaction.
    pub first_commit: DateTime<Utc>,
    pub last_commit: DateTime<Utc>,
    /// Every transaction committed before this second had reached the archive
    /// when the segment closed (the newest restorable point it proves).
    pub covered_until: DateTime<Utc>,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
    pub closed_at: DateTime<Utc>,
}

pub fn segments_prefix(site_prefix: &str) -> String {
    format!("{site_prefix}/binlog/segments/")
}

pub fn data_key(site_prefix: &str, name: &str) -> String {
    format!("{}{name}.binlog.zst", segments_prefix(site_prefix))
}

pub fn index_key(site_prefix: &str, name: &str) -> String {
    format!("{}{name}.json", segments_prefix(site_prefix))
}

pub fn from_unix(ts: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::from(ts), 0).unwrap_or_default()
}

/// The segment being filled: a binlog file in a local spool, so a
/// transaction larger than memory still fits and a half-received one can
/// be cut off (the file is truncated back to the last complete transaction).
pub struct SegmentSpool {
    path: PathBuf,
    file: std::fs::File,
    len: u64,
    committed_len: u64,
    pub start: GtidPos,
    pub end: GtidPos,
    first: Option<(Gtid, u32)>,
    last: Option<(Gtid, u32)>,
    pub transactions: u64,
    pub opened: std::time::Instant,
}

impl SegmentSpool {
    /// Starts a segment after position `start`, with the stream's FDE.
    pub fn new(dir: &std::path::Path, fde: &RawEvent, start: GtidPos) -> Result<Self, BinlogError> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(
            "wpdr-binlog-spool-{}-{n}.binlog",
            std::process::id()
        ));
        let io = |e: std::io::Error| BinlogError::Spool {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        // Binlog events are site data: readable by this user only.
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        file.write_all(BINLOG_MAGIC).map_err(io)?;
        file.write_all(&fde.0).map_err(io)?;
        let len = (BINLOG_MAGIC.len() + fde.0.len()) as u64;
        Ok(SegmentSpool {
            path,
            file,
            len,
            committed_len: len,
            end: start.clone(),
            start,
            first: None,
            last: None,
            transactions: 0,
            opened: std::time::Instant::now(),
        })
    }

    fn io(&self, e: std::io::Error) -> BinlogError {
        BinlogError::Spool {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        }
    }

    pub fn append(&mut self, e: &RawEvent) -> Result<(), BinlogError> {
        self.file.write_all(&e.0).map_err(|err| self.io(err))?;
        self.len += e.0.len() as u64;
        Ok(())
    }

    /// The events written since the last commit form the complete group `g`.
    pub fn commit(&mut self, g: &Group) {
        self.committed_len = self.len;
        self.end.advance(g.gtid);
        if self.first.is_none() {
            self.first = Some((g.gtid, g.commit_time));
        }
        self.last = Some((g.gtid, g.commit_time));
        self.transactions += 1;
    }

    /// Drops the events of a group that will never complete.
    pub fn rollback(&mut self) -> Result<(), BinlogError> {
        self.file
            .set_len(self.committed_len)
            .map_err(|e| self.io(e))?;
        self.file
            .seek(SeekFrom::Start(self.committed_len))
            .map_err(|e| self.io(e))?;
        self.len = self.committed_len;
        Ok(())
    }

    pub fn committed_bytes(&self) -> u64 {
        self.committed_len
    }

    /// Compresses the committed transactions into the store, then writes the
    /// index (the commit). Returns `None` when there is nothing to write.
    /// With a fence, nothing is written by an archiver that lost its lock and
    /// the index only after the lock is confirmed still its own.
    pub async fn upload(
        &mut self,
        store: &Store,
        site_prefix: &str,
        server: &str,
        covered_until: DateTime<Utc>,
        name_floor: DateTime<Utc>,
        fence: Option<&Fence>,
    ) -> Result<Option<SegmentIndex>, BinlogError> {
        let (Some(first), Some(last)) = (self.first, self.last) else {
            return Ok(None);
        };
        if let Some(f) = fence {
            f.check()?;
        }
        self.rollback()?;
        self.file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        // Never named into a day already rolled up, whatever the clock says.
        let closed_at = Utc::now().max(name_floor);
        let name = format!(
            "{}-{}-{}-{}",
            closed_at.format("%Y%m%dT%H%M%S%3fZ"),
            first.0.domain,
            first.0.server,
            first.0.seq
        );
        let key = data_key(site_prefix, &name);
        let mut writer = store.sealed_writer(&key)?;
        let mut enc = crate::store::zstd_reader::encoder(Vec::with_capacity(1 << 20), 3)
            .map_err(|e| self.io(e))?;
        let mut remaining = self.committed_len;
        let mut buf = vec![0u8; 1 << 20];
        while remaining > 0 {
            let want = remaining.min(buf.len() as u64) as usize;
            self.file
                .read_exact(&mut buf[..want])
                .map_err(|e| self.io(e))?;
            remaining -= want as u64;
            enc.write_all(&buf[..want]).map_err(|e| self.io(e))?;
            if enc.get_ref().len() >= 1 << 20 {
                writer.write(enc.get_ref()).await?;
                enc.get_mut().clear();
            }
        }
        let tail = enc.finish().map_err(|e| self.io(e))?;
        writer.write(&tail).await?;
        let written = writer.finish().await?;
        let index = SegmentIndex {
            format: SEGMENT_FORMAT,
            name: name.clone(),
            server: server.to_string(),
            start: self.start.clone(),
            end: self.end.clone(),
            first_gtid: first.0,
            last_gtid: last.0,
            transactions: self.transactions,
            first_commit: from_unix(first.1),
            last_commit: from_unix(last.1),
            covered_until: covered_until.max(from_unix(last.1)),
            raw_bytes: self.committed_len,
            stored_bytes: written.size,
            sha256: written.sha256,
            closed_at,
        };
        let json = serde_json::to_vec_pretty(&index).map_err(|e| BinlogError::Spool {
            path: key.clone(),
            detail: e.to_string(),
        })?;
        if let Some(f) = fence {
            if let Err(e) = f.confirm(store).await {
                // The data object alone is never part of the chain.
                let _ = store.delete(&key).await;
                return Err(e.into());
            }
        }
        store
            .put_kept(&index_key(site_prefix, &name), json.into())
            .await?;
        Ok(Some(index))
    }
}

impl Drop for SegmentSpool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A segment read back one event at a time: the stored bytes hashed and
/// decompressed as they stream, each event split off and its CRC32 checked
/// as it comes, so memory holds one read block and one event, never the
/// segment (a single huge transaction can make a segment of gigabytes).
/// The SHA-256 and the zstd frame are checked when the stream ends: only an
/// `Ok(None)` from [`next_event`](Self::next_event) means the segment was whole.
pub struct EventStream {
    key: String,
    reader: crate::store::zstd_reader::ZstdReader,
    buf: Vec<u8>,
    at: usize,
    ended: bool,
    fde: RawEvent,
}

impl EventStream {
    pub async fn open(
        store: &Store,
        site_prefix: &str,
        index: &SegmentIndex,
    ) -> Result<EventStream, BinlogError> {
        let key = data_key(site_prefix, &index.name);
        let reader = crate::store::zstd_reader::ZstdReader::open(
            store,
            &key,
            Some((index.stored_bytes, index.sha256.clone())),
        )
        .await
        .map_err(|e| stream_err(&key, e))?;
        let mut s = EventStream {
            key,
            reader,
            buf: Vec::new(),
            at: 0,
            ended: false,
            fde: RawEvent(Vec::new()),
        };
        if !s.fill(4).await? || s.buf[..4] != *BINLOG_MAGIC {
            return Err(s.damaged("does not start with the binlog magic".into()));
        }
        s.at = 4;
        match s.raw_next().await? {
            Some(fde) if fde.kind() == FORMAT_DESCRIPTION_EVENT => {
                if fde.fde_checksummed() && !fde.checksum_ok() {
                    return Err(s.damaged("event 0 fails its CRC32".into()));
                }
                s.fde = fde;
            }
            _ => return Err(s.damaged("does not start with a Format_description event".into())),
        }
        Ok(s)
    }

    /// The segment's Format_description event.
    pub fn fde(&self) -> &RawEvent {
        &self.fde
    }

    fn damaged(&self, detail: String) -> BinlogError {
        BinlogError::Damaged {
            key: self.key.clone(),
            detail,
        }
    }

    /// Makes at least `want` unread bytes available; `false` when the
    /// stream (checked) ended first.
    async fn fill(&mut self, want: usize) -> Result<bool, BinlogError> {
        while self.buf.len() - self.at < want {
            if self.ended {
                return Ok(false);
            }
            // Drop what was consumed before reading more.
            if self.at > 0 {
                self.buf.drain(..self.at);
                self.at = 0;
            }
            let buf = &mut self.buf;
            let more = self
                .reader
                .next_into(|piece| {
                    buf.extend_from_slice(piece);
                    Ok(())
                })
                .await
                .map_err(|e| stream_err(&self.key, e))?;
            if !more {
                self.ended = true;
            }
        }
        Ok(true)
    }

    async fn raw_next(&mut self) -> Result<Option<RawEvent>, BinlogError> {
        if !self.fill(1).await? {
            return Ok(None);
        }
        if !self.fill(HEADER_LEN).await? {
            return Err(self.damaged(format!(
                "{} stray bytes at the end",
                self.buf.len() - self.at
            )));
        }
        let size = event_len(&self.buf[self.at..]).map_err(|e| self.damaged(e))?;
        if !self.fill(size).await? {
            return Err(self.damaged(format!(
                "an event claims {size} bytes; the segment ends first"
            )));
        }
        let bytes = self.buf[self.at..self.at + size].to_vec();
        self.at += size;
        RawEvent::new(bytes).map(Some).map_err(|e| self.damaged(e))
    }

    /// The next event after the Format_description event, its CRC32
    /// checked; `None` once the whole segment was read and verified.
    pub async fn next_event(&mut self) -> Result<Option<RawEvent>, BinlogError> {
        let e = self.raw_next().await?;
        if let Some(e) = &e {
            if self.fde.fde_checksummed() && !e.checksum_ok() {
                return Err(self.damaged("an event fails its CRC32".into()));
            }
        }
        Ok(e)
    }
}

fn stream_err(key: &str, e: crate::store::zstd_reader::ZstdReadError) -> BinlogError {
    match e {
        crate::store::zstd_reader::ZstdReadError::Store(e) => BinlogError::Store(e),
        crate::store::zstd_reader::ZstdReadError::Corrupt(detail) => BinlogError::Damaged {
            key: key.to_string(),
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uploads `spool` as the archiver would, with no fence and no name floor.
    async fn upload(spool: &mut SegmentSpool, store: &Store) -> SegmentIndex {
        spool
            .upload(
                store,
                "site",
                "db:3306",
                DateTime::from_timestamp(50, 0).unwrap(),
                DateTime::default(),
                None,
            )
            .await
            .unwrap()
            .unwrap()
    }
    use crate::binlog::event::tests::{event, gtid_event, query_event};
    use crate::binlog::event::{Fed, GroupTracker, XID_EVENT};

    #[tokio::test]
    async fn only_complete_transactions_reach_the_store_and_read_back_checked() {
        let dir =
            std::env::temp_dir().join(format!("wpdr-seg-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::from(crate::store::LocalStore::open(&dir).await.unwrap());
        // An FDE: header + body ending in the CRC32 algorithm byte, then its checksum.
        let fde = event(FORMAT_DESCRIPTION_EVENT, 1, 1, &[0, 0, 0, 0, 1]);
        let mut spool = SegmentSpool::new(&dir, &fde, GtidPos::parse("0-1-9").unwrap()).unwrap();
        let mut tracker = GroupTracker::new(true);
        let whole = [
            gtid_event(
                Gtid {
                    domain: 0,
                    server: 1,
                    seq: 10,
                },
                100,
                false,
            ),
            query_event(100, "wp", "BEGIN"),
            event(XID_EVENT, 101, 1, &[0; 8]),
        ];
        for e in &whole {
            spool.append(e).unwrap();
            if let Fed::Completed(g) = tracker.feed(e) {
                spool.commit(&g);
            }
        }
        // A transaction whose end never arrives.
        for e in [
            gtid_event(
                Gtid {
                    domain: 0,
                    server: 1,
                    seq: 11,
                },
                102,
                false,
            ),
            query_event(102, "wp", "BEGIN"),
        ] {
            spool.append(&e).unwrap();
            tracker.feed(&e);
        }
        let index = upload(&mut spool, &store).await;
        assert_eq!(index.transactions, 1);
        assert_eq!(index.end.to_string(), "0-1-10");
        assert_eq!(
            index.covered_until.timestamp(),
            101,
            "at least the last commit"
        );
        let listed = crate::binlog::rollup::all_segments(&store, "site")
            .await
            .unwrap();
        assert_eq!(listed, vec![index.clone()]);
        let mut stream = EventStream::open(&store, "site", &index).await.unwrap();
        assert_eq!(stream.fde(), &fde);
        let mut events = Vec::new();
        while let Some(e) = stream.next_event().await.unwrap() {
            events.push(e);
        }
        assert_eq!(events, whole.to_vec());
        // One flipped byte in the stored object is caught.
        let key = dir.join(data_key("site", &index.name));
        let mut bytes = std::fs::read(&key).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0x40;
        std::fs::write(&key, bytes).unwrap();
        // Caught at the latest when the stream ends: never a whole-looking read.
        let read_all = async {
            let mut stream = EventStream::open(&store, "site", &index).await?;
            while stream.next_event().await?.is_some() {}
            Ok::<_, BinlogError>(())
        };
        assert!(matches!(read_all.await, Err(BinlogError::Damaged { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A segment far larger than the stream's read block, with events larger
    /// than it too, reads back event for event (memory holds one block and
    /// one event, not the segment).
    #[tokio::test]
    async fn a_segment_larger_than_the_read_block_streams_back_whole() {
        let dir =
            std::env::temp_dir().join(format!("wpdr-seg-big-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::from(crate::store::LocalStore::open(&dir).await.unwrap());
        let fde = event(FORMAT_DESCRIPTION_EVENT, 1, 1, &[0, 0, 0, 0, 1]);
        let mut spool = SegmentSpool::new(&dir, &fde, GtidPos::parse("0-1-9").unwrap()).unwrap();
        let mut tracker = GroupTracker::new(true);
        let mut written = Vec::new();
        // Incompressible bodies, so the stored object is large too.
        let mut noise = 0x9e3779b97f4a7c15u64;
        for k in 0..6u64 {
            let big: String = (0..(1_500_000 + k as usize * 100_000))
                .map(|_| {
                    noise ^= noise << 13;
                    noise ^= noise >> 7;
                    noise ^= noise << 17;
                    (b'a' + (noise % 26) as u8) as char
                })
                .collect();
            let group = [
                gtid_event(
                    Gtid {
                        domain: 0,
                        server: 1,
                        seq: 10 + k,
                    },
                    100,
                    false,
                ),
                query_event(100, "wp", &format!("INSERT INTO t VALUES ('{big}')")),
                event(XID_EVENT, 101, 1, &[0; 8]),
            ];
            for e in &group {
                spool.append(e).unwrap();
                if let Fed::Completed(g) = tracker.feed(e) {
                    spool.commit(&g);
                }
            }
            written.extend(group);
        }
        let index = upload(&mut spool, &store).await;
        assert!(index.stored_bytes > 4 << 20, "{}", index.stored_bytes);
        let mut stream = EventStream::open(&store, "site", &index).await.unwrap();
        let mut back = Vec::new();
        while let Some(e) = stream.next_event().await.unwrap() {
            back.push(e);
        }
        assert_eq!(back.len(), written.len());
        assert!(back == written, "events differ after streaming");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
