//! What each pass over the bytes of a sealed media copy costs on this
//! machine, in MB/s of one core: the hashes every copy computes (MD5 for the
//! source's ETag and Content-MD5, SHA-256 for the index), the CRC32 a sealed
//! single PUT sends instead of Content-MD5, and the age seal itself (X25519
//! recipient, ChaCha20-Poly1305 STREAM, through wpdr's Sealer). Run with
//! `cargo bench --bench seal`; bench/media.sh measures the whole mirror.

use sha2::Digest;
use std::time::Instant;

const TOTAL: usize = 256 << 20;
const CHUNK: usize = 64 << 10;

fn rate(name: &str, mut pass: impl FnMut(&[u8])) {
    // Incompressible, like photos: a fixed pseudo-random pattern.
    let mut data = vec![0u8; CHUNK];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    // One warm-up chunk, then the timed run.
    pass(&data);
    let t = Instant::now();
    for _ in 0..TOTAL / CHUNK {
        pass(&data);
    }
    let s = t.elapsed().as_secs_f64();
    println!("{name:<34} {:>8.0} MB/s", TOTAL as f64 / s / 1e6);
}

fn main() {
    // `cargo test --all-targets` runs benches too, unoptimised: only
    // `cargo bench` (which passes --bench) measures.
    if !std::env::args().any(|a| a == "--bench") {
        println!("bench/seal.rs measures only under `cargo bench --bench seal`");
        return;
    }
    let mut md5 = md5::Md5::new();
    rate("MD5", |c| md5.update(c));
    let mut sha = sha2::Sha256::new();
    rate("SHA-256", |c| sha.update(c));
    let mut crc = crc32fast::Hasher::new();
    rate("CRC32", |c| crc.update(c));
    let recipient = age::x25519::Identity::generate().to_public();
    let keys = wpdr::trust::Keys::new(vec![recipient]);
    let mut sealer = keys.sealer("bench").unwrap().unwrap();
    let mut out = 0usize;
    rate("age seal (wpdr Sealer)", |c| {
        out += sealer.seal(c).unwrap().len()
    });
    out += sealer.finish().unwrap().len();
    assert!(out > TOTAL, "the sealed output holds every byte");
}
