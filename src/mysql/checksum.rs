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
        self.rows += 1;
        self.sum = self.sum.wrapping_add(row_hash(values));
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
pub fn row_hash<'a>(values: impl IntoIterator<Item = Option<&'a [u8]>>) -> u128 {
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

    proptest! {
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
