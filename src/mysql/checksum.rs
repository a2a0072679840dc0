//! Per-table content checksums that a restore can reproduce.
//!
//! Each row is hashed (XXH3-128) over its text-protocol values, each value
//! framed by a NULL marker and its length so `('a','bc')` and `('ab','c')`
//! differ. Row hashes are added (mod 2^128): the table checksum does not
//! depend on row order or on how the table was cut into chunks, so chunks read
//! in parallel combine exactly, and a restored table can be re-read in any order.

use xxhash_rust::xxh3::Xxh3;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableChecksum {
    pub rows: u64,
    pub sum: u128,
}

impl TableChecksum {
    pub fn add_row<'a>(&mut self, values: impl IntoIterator<Item = Option<&'a [u8]>>) {
        self.add_hash(row_hash(values));
    }

    /// Adds a row hashed by [`RowHasher`].
    pub fn add_hash(&mut self, row: u128) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(row);
    }

    pub fn merge(&mut self, other: TableChecksum) {
        self.rows += other.rows;
        self.sum = self.sum.wrapping_add(other.sum);
    }

    pub fn hex(&self) -> String {
        sum_hex(self.sum)
    }
}

/// A table sum as the manifest writes it.
pub fn sum_hex(sum: u128) -> String {
    format!("{sum:032x}")
}

/// One row's share of its table's sum: what a change to the row moves the
/// sum by (a load that rewrites rows adjusts the expected sum with it).
///
/// The hash of the row's framed values (NULL as 0; a value as 1, its length
/// as u64 LE, its bytes). Rows that frame within [`ONE_SHOT`] bytes are
/// hashed in one call (XXH3 gives the same digest whole or streamed; the
/// streaming state's set-up cost more than a narrow row's hashing).
pub fn row_hash<'a>(values: impl IntoIterator<Item = Option<&'a [u8]>>) -> u128 {
    let mut hasher = RowHasher::new();
    for v in values {
        hasher.push(v);
    }
    hasher.finish()
}

/// [`row_hash`] fed one value at a time, so a reader that renders a row can
/// hash it in the same pass over its values.
pub struct RowHasher {
    small: [u8; ONE_SHOT],
    len: usize,
    stream: Option<Xxh3>,
}

impl Default for RowHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl RowHasher {
    pub fn new() -> Self {
        RowHasher {
            small: [0; ONE_SHOT],
            len: 0,
            stream: None,
        }
    }

    #[inline]
    pub fn push(&mut self, v: Option<&[u8]>) {
        let (tag, bytes): (u8, &[u8]) = match v {
            None => (0, &[]),
            Some(b) => (1, b),
        };
        let framed = 1 + if tag == 1 { 8 + bytes.len() } else { 0 };
        if self.stream.is_none() && self.len + framed <= ONE_SHOT {
            let len = self.len;
            self.small[len] = tag;
            if tag == 1 {
                self.small[len + 1..len + 9].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
                self.small[len + 9..len + 9 + bytes.len()].copy_from_slice(bytes);
            }
            self.len += framed;
            return;
        }
        let (small, len) = (&self.small, self.len);
        let h = self.stream.get_or_insert_with(|| {
            let mut h = Xxh3::new();
            h.update(&small[..len]);
            h
        });
        h.update(&[tag]);
        if tag == 1 {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
    }

    pub fn finish(self) -> u128 {
        match self.stream {
            Some(h) => h.digest128(),
            None => xxhash_rust::xxh3::xxh3_128(&self.small[..self.len]),
        }
    }
}

/// Rows framing within this many bytes are hashed in one call.
const ONE_SHOT: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn framing_distinguishes_split_points_and_null() {
        let mut a = TableChecksum::default();
        a.add_row([Some(&b"a"[..]), Some(&b"bc"[..])]);
        let mut b = TableChecksum::default();
        b.add_row([Some(&b"ab"[..]), Some(&b"c"[..])]);
        assert_ne!(a, b);
        let mut n = TableChecksum::default();
        n.add_row([None]);
        let mut e = TableChecksum::default();
        e.add_row([Some(&b""[..])]);
        assert_ne!(n, e);
    }

    /// The framing hashed through the streaming state, value by value.
    fn streamed(values: &[Option<Vec<u8>>]) -> u128 {
        let mut h = Xxh3::new();
        for v in values {
            match v {
                None => h.update(&[0]),
                Some(b) => {
                    h.update(&[1]);
                    h.update(&(b.len() as u64).to_le_bytes());
                    h.update(b);
                }
            }
        }
        h.digest128()
    }

    proptest! {
        #[test]
        fn one_shot_and_streamed_rows_hash_alike(
            values in proptest::collection::vec(
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
                0..12,
            )
        ) {
            let row = row_hash(values.iter().map(|v| v.as_deref()));
            prop_assert_eq!(row, streamed(&values));
        }

        #[test]
        fn order_and_chunking_do_not_matter(rows in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..50), split in 0usize..50) {
            let mut whole = TableChecksum::default();
            for r in &rows { whole.add_row([Some(&r[..])]); }
            let split = split.min(rows.len());
            let (mut x, mut y) = (TableChecksum::default(), TableChecksum::default());
            for r in rows[..split].iter().rev() { x.add_row([Some(&r[..])]); }
            for r in &rows[split..] { y.add_row([Some(&r[..])]); }
            x.merge(y);
            prop_assert_eq!(whole, x);
        }
    }
}
