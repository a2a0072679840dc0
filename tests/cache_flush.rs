//! The cache-flush step against real servers: Redis (with and without AUTH)
//! and Memcached started by the test on free ports; every key from before the
//! flush is gone, a wrong password is refused without being echoed, and a
//! server that never comes up fails once the timeout has passed.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use wpdr::restore::cache::CacheServer;
use wpdr::secret::Secret;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {port}");
}

fn redis(port: u16, password: Option<&str>) -> Server {
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    if let Some(p) = password {
        cmd.args(["--requirepass", p]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/dev-services.sh installs it)");
    wait_port(port);
    Server(child)
}

fn redis_cli(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-p", &port.to_string()]);
    if let Some(p) = password {
        cmd.args(["--no-auth-warning", "-a", p]);
    }
    stdout(&cmd.args(args).output().unwrap()).trim().to_string()
}

/// One memcached text-protocol exchange.
fn memcached(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = vec![0u8; 4096];
    let n = s.read(&mut out).unwrap_or(0);
    String::from_utf8_lossy(&out[..n]).into_owned()
}

#[tokio::test]
async fn redis_and_memcached_start_cold_after_the_flush() {
    let port = free_port();
    let _r = redis(port, None);
    redis_cli(port, None, &["SET", "wp:options:alloptions", "stale"]);
    let server = CacheServer::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
    server.flush(None, Duration::from_secs(5)).await.unwrap();
    assert_eq!(redis_cli(port, None, &["DBSIZE"]), "0");

    let mport = free_port();
    let child = Command::new("memcached")
        .args([
            "-p",
            &mport.to_string(),
            "-U",
            "0",
            "-l",
            "127.0.0.1",
            "-u",
            "nobody",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("memcached (scripts/dev-services.sh installs it)");
    let _m = Server(child);
    wait_port(mport);
    assert!(memcached(mport, "set wp_post_1 0 0 5\r\nstale\r\n").starts_with("STORED"));
    assert!(memcached(mport, "get wp_post_1\r\n").contains("stale"));
    let server = CacheServer::parse(&format!("memcached://127.0.0.1:{mport}")).unwrap();
    server.flush(None, Duration::from_secs(5)).await.unwrap();
    assert_eq!(memcached(mport, "get wp_post_1\r\n"), "END\r\n");
}

#[tokio::test]
async fn redis_auth_is_used_and_a_wrong_password_is_refused_without_echoing_it() {
    let port = free_port();
    let _r = redis(port, Some("right-horse-battery"));
    redis_cli(port, Some("right-horse-battery"), &["SET", "k", "v"]);
    let server = CacheServer::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
    let wrong = server
        .flush(Some(&Secret::new("wrong-staple-9")), Duration::from_secs(5))
        .await
        .unwrap_err()
        .to_string();
    assert!(wrong.contains("refused the password"), "{wrong}");
    assert!(!wrong.contains("wrong-staple-9"), "{wrong}");
    assert_eq!(
        redis_cli(port, Some("right-horse-battery"), &["DBSIZE"]),
        "1"
    );
    // Without a password the flush is refused too (NOAUTH), and says so.
    let none = server
        .flush(None, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(none.to_string().contains("refused"), "{none}");
    server
        .flush(
            Some(&Secret::new("right-horse-battery")),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        redis_cli(port, Some("right-horse-battery"), &["DBSIZE"]),
        "0"
    );
}

#[tokio::test]
async fn a_cache_that_never_comes_up_fails_within_the_timeout() {
    let port = free_port();
    let server = CacheServer::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
    let e = server
        .flush(None, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot connect"), "{e}");
}
