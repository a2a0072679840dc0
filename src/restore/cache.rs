//! The object cache of a restored site starts cold: Redis and Memcached hold
//! nothing durable, but a cache that outlived the outage (or a restore over
//! a running one) would serve pages and options from before the restore.
//! The cache-flush step empties every configured server after the data is
//! in and before the application is declared ready.
//!
//! Both protocols are a single line each (`FLUSHALL`, `flush_all`), spoken
//! over a plain TCP connection: no client library for one command.

use crate::secret::Secret;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub use crate::config::{CacheKind, CacheServer};

#[derive(Debug, thiserror::Error)]
#[error("cache {server}: {detail}")]
pub struct CacheError {
    pub server: String,
    pub detail: String,
}

impl CacheServer {
    /// Empties the server. Retries until `timeout` while the server does
    /// not accept connections yet (a cache pod still starting).
    pub async fn flush(
        &self,
        password: Option<&Secret>,
        timeout: Duration,
    ) -> Result<String, CacheError> {
        let fail = |detail: String| CacheError {
            server: self.to_string(),
            detail,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stream = loop {
            match TcpStream::connect((self.host.as_str(), self.port)).await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() + Duration::from_millis(500) < deadline => {
                    tracing::debug!(server = %self, error = %e, "cache not reachable yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(fail(format!("cannot connect: {e}"))),
            }
        };
        let mut conn = BufReader::new(&mut stream);
        let answer = match self.kind {
            CacheKind::Redis => {
                if let Some(p) = password.filter(|p| !p.expose().is_empty()) {
                    let reply = ask(
                        &mut conn,
                        timeout,
                        "AUTH",
                        resp(&[b"AUTH", p.expose().as_bytes()]),
                    )
                    .await
                    .map_err(fail)?;
                    if !reply.starts_with("+OK") {
                        return Err(fail("the server refused the password (AUTH)".into()));
                    }
                }
                ask(&mut conn, timeout, "FLUSHALL", resp(&[b"FLUSHALL"]))
                    .await
                    .map_err(fail)?
            }
            CacheKind::Memcached => ask(&mut conn, timeout, "flush_all", b"flush_all\r\n".to_vec())
                .await
                .map_err(fail)?,
        };
        let ok = match self.kind {
            CacheKind::Redis => answer == "+OK",
            CacheKind::Memcached => answer == "OK",
        };
        if ok {
            Ok(answer)
        } else {
            Err(fail(format!("the flush was refused: {answer}")))
        }
    }
}

/// One exchange, bounded by `timeout`; errors as text for [`CacheError`].
async fn ask(
    conn: &mut BufReader<&mut TcpStream>,
    timeout: Duration,
    what: &str,
    request: Vec<u8>,
) -> Result<String, String> {
    tokio::time::timeout(timeout, exchange(conn, &request))
        .await
        .map_err(|_| format!("no answer to {what}"))?
        .map_err(|e| e.to_string())
}

/// Sends one request line and reads one answer line.
async fn exchange(conn: &mut BufReader<&mut TcpStream>, request: &[u8]) -> std::io::Result<String> {
    conn.get_mut().write_all(request).await?;
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    Ok(line.trim_end().to_string())
}

/// A Redis command as a RESP array of bulk strings.
fn resp(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        out.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds_with_default_ports() {
        let r = CacheServer::parse("redis://redis.shop.svc").unwrap();
        assert_eq!((r.kind, r.port), (CacheKind::Redis, 6379));
        let m = CacheServer::parse("memcached://mc:11300").unwrap();
        assert_eq!(
            (m.kind, m.host.as_str(), m.port),
            (CacheKind::Memcached, "mc", 11300)
        );
        assert!(CacheServer::parse("http://x").is_err());
        let e = CacheServer::parse("redis://:hunter2@redis:6379").unwrap_err();
        assert!(
            !e.contains("hunter2") && e.contains("WPDR_RESTORE_CACHE_PASSWORD"),
            "{e}"
        );
    }

    #[test]
    fn resp_frames_bulk_strings() {
        assert_eq!(resp(&[b"FLUSHALL"]), b"*1\r\n$8\r\nFLUSHALL\r\n");
    }
}
