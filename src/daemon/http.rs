//! A small HTTP/1.1 endpoint for probes, metrics and manual triggers. It
//! reads one bounded request per connection and closes it: enough for
//! kubelet probes and Prometheus, with no framework to pull in.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the daemon needs of a request: its line, who sent it, its bearer token.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub peer: SocketAddr,
    /// `Authorization: Bearer <token>`, when sent.
    pub bearer: Option<String>,
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Serves until the listener task is dropped. `handle(request)` answers.
pub async fn serve<F, Fut>(listener: TcpListener, handle: Arc<F>)
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send,
{
    loop {
        let Ok((mut sock, peer)) = listener.accept().await else {
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while n < buf.len() {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            n += k;
                            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let mut lines = head.lines();
            let mut parts = lines.next().unwrap_or("").split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let bearer = lines.find_map(|l| {
                let (name, value) = l.split_once(':')?;
                if !name.trim().eq_ignore_ascii_case("authorization") {
                    return None;
                }
                let value = value.trim();
                value
                    .get(..7)
                    .filter(|s| s.eq_ignore_ascii_case("bearer "))
                    .map(|_| value[7..].trim().to_string())
            });
            let resp = if method.is_empty() {
                Response::text(400, "bad request\n")
            } else {
                handle(Request {
                    method,
                    path,
                    peer,
                    bearer,
                })
                .await
            };
            let out = format!(
                "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                resp.status,
                reason(resp.status),
                resp.content_type,
                resp.body.len(),
                resp.body
            );
            let _ = sock.write_all(out.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
