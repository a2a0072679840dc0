//! Raw binary log events: just enough parsing to find transaction (event
//! group) boundaries, their GTIDs and commit times, and to check each event's
//! CRC32. Events are archived byte for byte; nothing here rewrites them.

use super::gtid::Gtid;

pub const HEADER_LEN: usize = 19;
pub const BINLOG_MAGIC: &[u8; 4] = b"\xfebin";

pub const QUERY_EVENT: u8 = 2;
pub const STOP_EVENT: u8 = 3;
pub const ROTATE_EVENT: u8 = 4;
pub const FORMAT_DESCRIPTION_EVENT: u8 = 15;
pub const XID_EVENT: u8 = 16;
pub const TABLE_MAP_EVENT: u8 = 19;
pub const INCIDENT_EVENT: u8 = 26;
pub const HEARTBEAT_EVENT: u8 = 27;
pub const XA_PREPARE_EVENT: u8 = 38;
pub const ANNOTATE_ROWS_EVENT: u8 = 160;
pub const BINLOG_CHECKPOINT_EVENT: u8 = 161;
pub const GTID_EVENT: u8 = 162;
pub const GTID_LIST_EVENT: u8 = 163;
pub const START_ENCRYPTION_EVENT: u8 = 164;

/// MariaDB's Gtid_log_event flag: the group is one statement without BEGIN (DDL).
const FL_STANDALONE: u8 = 1;

/// One event as it appears in a binlog file: header, body, checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent(pub Vec<u8>);

impl RawEvent {
    /// Checks the header's size against the bytes; `None` when they disagree.
    pub fn new(bytes: Vec<u8>) -> Result<RawEvent, String> {
        if bytes.len() < HEADER_LEN {
            return Err(format!(
                "event of {} bytes is shorter than its header",
                bytes.len()
            ));
        }
        let e = RawEvent(bytes);
        if e.size() as usize != e.0.len() {
            return Err(format!(
                "event header says {} bytes but {} arrived",
                e.size(),
                e.0.len()
            ));
        }
        Ok(e)
    }

    pub fn timestamp(&self) -> u32 {
        u32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }
    pub fn kind(&self) -> u8 {
        self.0[4]
    }
    pub fn server_id(&self) -> u32 {
        u32::from_le_bytes([self.0[5], self.0[6], self.0[7], self.0[8]])
    }
    pub fn size(&self) -> u32 {
        u32::from_le_bytes([self.0[9], self.0[10], self.0[11], self.0[12]])
    }
    pub fn log_pos(&self) -> u32 {
        u32::from_le_bytes([self.0[13], self.0[14], self.0[15], self.0[16]])
    }

    /// For a Format_description event: whether events carry a CRC32 footer.
    pub fn fde_checksummed(&self) -> bool {
        // The FDE ends with the algorithm byte and its own CRC32.
        self.0.len() >= HEADER_LEN + 5 && self.0[self.0.len() - 5] == 1
    }

    /// Compares the CRC32 footer with the bytes (events of a checksummed log).
    pub fn checksum_ok(&self) -> bool {
        let n = self.0.len();
        if n < HEADER_LEN + 4 {
            return false;
        }
        let stored =
            u32::from_le_bytes([self.0[n - 4], self.0[n - 3], self.0[n - 2], self.0[n - 1]]);
        crc32fast::hash(&self.0[..n - 4]) == stored
    }

    /// The GTID and flags of a Gtid event.
    fn gtid(&self) -> Option<(Gtid, u8)> {
        if self.kind() != GTID_EVENT || self.0.len() < HEADER_LEN + 13 {
            return None;
        }
        let b = &self.0[HEADER_LEN..];
        let seq = u64::from_le_bytes(b[0..8].try_into().ok()?);
        let domain = u32::from_le_bytes(b[8..12].try_into().ok()?);
        Some((
            Gtid {
                domain,
                server: self.server_id(),
                seq,
            },
            b[12],
        ))
    }

    /// The database an event acts on: a Table_map event's table's database,
    /// or a Query event's default database (what `mariadb-binlog --database`
    /// filters by). `BEGIN`/`COMMIT` and other events: `None`.
    pub fn database(&self, checksum_len: usize) -> Option<&[u8]> {
        let body = &self.0[HEADER_LEN..];
        match self.kind() {
            TABLE_MAP_EVENT => {
                // table id (6) and flags (2), then the database name with its length
                let len = *body.get(8)? as usize;
                body.get(9..9 + len)
            }
            QUERY_EVENT => {
                let q = self.query_text(checksum_len)?.trim_ascii();
                if q.eq_ignore_ascii_case(b"BEGIN")
                    || q.eq_ignore_ascii_case(b"COMMIT")
                    || q.eq_ignore_ascii_case(b"ROLLBACK")
                {
                    return None;
                }
                let db_len = *body.get(8)? as usize;
                let status_len = u16::from_le_bytes([*body.get(11)?, *body.get(12)?]) as usize;
                body.get(13 + status_len..13 + status_len + db_len)
            }
            _ => None,
        }
    }

    /// The statement text of a Query event (`checksum_len` trailing bytes cut).
    fn query_text(&self, checksum_len: usize) -> Option<&[u8]> {
        if self.kind() != QUERY_EVENT {
            return None;
        }
        let b = &self.0[HEADER_LEN..self.0.len().checked_sub(checksum_len)?];
        // thread id 4, exec time 4, db length 1, error code 2, status vars length 2
        if b.len() < 13 {
            return None;
        }
        let db_len = b[8] as usize;
        let status_len = u16::from_le_bytes([b[11], b[12]]) as usize;
        let start = 13 + status_len + db_len + 1;
        b.get(start..)
    }
}

/// What a transaction looks like once its last event has arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub gtid: Gtid,
    /// Timestamp of the event that ends the group: the start of the committing
    /// statement on the server's clock, in whole seconds (what
    /// `mariadb-binlog --stop-datetime` compares too).
    pub commit_time: u32,
    pub bytes: u64,
}

/// What a fed event meant for the current group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fed {
    /// The event belongs to the open group (write it).
    InGroup,
    /// The event ended the open group (write it; the group is complete).
    Completed(Group),
    /// The event is outside any group (rotations, heartbeats, GTID lists...).
    Outside,
    /// A new group started while another was still open: the open one never
    /// ended (its events must be dropped) — only seen on a broken stream.
    Abandoned(Gtid),
}

/// Splits an event stream into groups (transactions).
#[derive(Debug, Default)]
pub struct GroupTracker {
    open: Option<OpenGroup>,
    checksum_len: usize,
}

#[derive(Debug)]
struct OpenGroup {
    gtid: Gtid,
    standalone: bool,
    bytes: u64,
}

impl GroupTracker {
    pub fn new(checksummed: bool) -> Self {
        GroupTracker {
            open: None,
            checksum_len: if checksummed { 4 } else { 0 },
        }
    }

    pub fn set_checksummed(&mut self, checksummed: bool) {
        self.checksum_len = if checksummed { 4 } else { 0 };
    }

    pub fn in_group(&self) -> bool {
        self.open.is_some()
    }

    /// Forgets a group whose end will never arrive (the stream broke).
    pub fn reset(&mut self) {
        self.open = None;
    }

    pub fn feed(&mut self, e: &RawEvent) -> Fed {
        if let Some((gtid, flags)) = e.gtid() {
            let abandoned = self.open.take().map(|g| g.gtid);
            self.open = Some(OpenGroup {
                gtid,
                standalone: flags & FL_STANDALONE != 0,
                bytes: e.0.len() as u64,
            });
            return match abandoned {
                Some(g) => Fed::Abandoned(g),
                None => Fed::InGroup,
            };
        }
        let Some(open) = self.open.as_mut() else {
            return Fed::Outside;
        };
        match e.kind() {
            FORMAT_DESCRIPTION_EVENT
            | ROTATE_EVENT
            | HEARTBEAT_EVENT
            | GTID_LIST_EVENT
            | BINLOG_CHECKPOINT_EVENT
            | STOP_EVENT
            | START_ENCRYPTION_EVENT => return Fed::Outside,
            _ => {}
        }
        open.bytes += e.0.len() as u64;
        let ends = match e.kind() {
            XID_EVENT | XA_PREPARE_EVENT => true,
            QUERY_EVENT => {
                open.standalone
                    || e.query_text(self.checksum_len).is_some_and(|q| {
                        let q = q.trim_ascii();
                        q.eq_ignore_ascii_case(b"COMMIT") || q.eq_ignore_ascii_case(b"ROLLBACK")
                    })
            }
            _ => false,
        };
        if !ends {
            return Fed::InGroup;
        }
        let g = self.open.take().map(|o| Group {
            gtid: o.gtid,
            commit_time: e.timestamp(),
            bytes: o.bytes,
        });
        match g {
            Some(g) => Fed::Completed(g),
            None => Fed::Outside,
        }
    }
}

/// Splits the bytes of a binlog file (after its magic) into events.
/// The length an event's header (at least [`HEADER_LEN`] bytes) claims for it.
pub fn event_len(header: &[u8]) -> Result<usize, String> {
    let size = u32::from_le_bytes([header[9], header[10], header[11], header[12]]) as usize;
    if size < HEADER_LEN {
        return Err(format!(
            "an event claims {size} bytes, less than its header"
        ));
    }
    Ok(size)
}

pub fn split_events(data: &[u8]) -> Result<Vec<RawEvent>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        if data.len() - at < HEADER_LEN {
            return Err(format!("{} stray bytes at offset {at}", data.len() - at));
        }
        let size = event_len(&data[at..])?;
        if at + size > data.len() {
            return Err(format!(
                "event at offset {at} claims {size} bytes; the file ends first"
            ));
        }
        out.push(RawEvent::new(data[at..at + size].to_vec())?);
        at += size;
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a checksummed event of `kind` with `body`.
    pub fn event(kind: u8, ts: u32, server: u32, body: &[u8]) -> RawEvent {
        let size = (HEADER_LEN + body.len() + 4) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(&ts.to_le_bytes());
        v.push(kind);
        v.extend_from_slice(&server.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(body);
        let crc = crc32fast::hash(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        RawEvent::new(v).unwrap()
    }

    pub fn gtid_event(g: Gtid, ts: u32, standalone: bool) -> RawEvent {
        let mut body = g.seq.to_le_bytes().to_vec();
        body.extend_from_slice(&g.domain.to_le_bytes());
        body.push(if standalone { FL_STANDALONE } else { 0 });
        body.extend_from_slice(&[0; 6]);
        event(GTID_EVENT, ts, g.server, &body)
    }

    pub fn query_event(ts: u32, db: &str, sql: &str) -> RawEvent {
        let mut body = vec![0u8; 8];
        body.push(db.len() as u8);
        body.extend_from_slice(&[0, 0, 0, 0]); // error code, no status vars
        body.extend_from_slice(db.as_bytes());
        body.push(0);
        body.extend_from_slice(sql.as_bytes());
        event(QUERY_EVENT, ts, 1, &body)
    }

    fn g(seq: u64) -> Gtid {
        Gtid {
            domain: 0,
            server: 1,
            seq,
        }
    }

    #[test]
    fn finds_group_ends() {
        let mut t = GroupTracker::new(true);
        assert_eq!(t.feed(&event(ROTATE_EVENT, 0, 1, b"xx")), Fed::Outside);
        // A transaction ended by XID
        assert_eq!(t.feed(&gtid_event(g(1), 100, false)), Fed::InGroup);
        assert_eq!(t.feed(&query_event(100, "wp", "BEGIN")), Fed::InGroup);
        assert_eq!(t.feed(&event(HEARTBEAT_EVENT, 0, 1, b"")), Fed::Outside);
        match t.feed(&event(XID_EVENT, 101, 1, &[0; 8])) {
            Fed::Completed(grp) => {
                assert_eq!(grp.gtid, g(1));
                assert_eq!(grp.commit_time, 101);
            }
            other => panic!("{other:?}"),
        }
        // Non-transactional tables: BEGIN ... COMMIT query
        t.feed(&gtid_event(g(2), 102, false));
        assert_eq!(t.feed(&query_event(102, "wp", "BEGIN")), Fed::InGroup);
        assert_eq!(
            t.feed(&query_event(102, "wp", "INSERT INTO a VALUES (1)")),
            Fed::InGroup
        );
        assert!(matches!(
            t.feed(&query_event(103, "wp", "COMMIT")),
            Fed::Completed(_)
        ));
        // DDL: standalone, one query
        t.feed(&gtid_event(g(3), 104, true));
        assert!(matches!(
            t.feed(&query_event(104, "wp", "CREATE TABLE x (a int)")),
            Fed::Completed(_)
        ));
        assert!(!t.in_group());
        // A group that never ended
        t.feed(&gtid_event(g(4), 105, false));
        assert_eq!(t.feed(&gtid_event(g(5), 106, false)), Fed::Abandoned(g(4)));
    }

    proptest::proptest! {
        #[test]
        fn splitting_never_panics_and_round_trips(
            junk in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            bodies in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..8),
        ) {
            let _ = split_events(&junk);
            let events: Vec<RawEvent> = bodies.iter().map(|b| event(QUERY_EVENT, 1, 1, b)).collect();
            let bytes: Vec<u8> = events.iter().flat_map(|e| e.0.clone()).collect();
            let back = split_events(&bytes).unwrap();
            proptest::prop_assert!(back.iter().all(|e| e.checksum_ok()));
            proptest::prop_assert_eq!(back, events);
            // The tracker copes with anything, too.
            let mut t = GroupTracker::new(true);
            for e in split_events(&junk).unwrap_or_default() {
                let _ = t.feed(&e);
            }
        }
    }

    #[test]
    fn finds_the_database_an_event_acts_on() {
        assert_eq!(
            query_event(1, "wp", "INSERT INTO t VALUES (1)").database(4),
            Some(&b"wp"[..])
        );
        assert_eq!(query_event(1, "wp", "BEGIN").database(4), None);
        let mut body = vec![1, 0, 0, 0, 0, 0, 0, 0, 4];
        body.extend_from_slice(b"shop\0");
        body.extend_from_slice(&[6]);
        body.extend_from_slice(b"orders\0");
        assert_eq!(
            event(TABLE_MAP_EVENT, 1, 1, &body).database(4),
            Some(&b"shop"[..])
        );
        assert_eq!(event(XID_EVENT, 1, 1, &[0; 8]).database(4), None);
    }

    #[test]
    fn checksums_and_splitting() {
        let a = gtid_event(g(1), 1, false);
        let b = query_event(1, "wp", "COMMIT");
        assert!(a.checksum_ok() && b.checksum_ok());
        let mut bytes = a.0.clone();
        bytes.extend_from_slice(&b.0);
        let events = split_events(&bytes).unwrap();
        assert_eq!(events, vec![a.clone(), b]);
        let mut bad = a.0.clone();
        bad[HEADER_LEN] ^= 1;
        assert!(!RawEvent::new(bad).unwrap().checksum_ok());
        assert!(split_events(&bytes[..bytes.len() - 3]).is_err());
    }
}
