//! TLS to the database, against a MariaDB of the test's own that has its
//! own CA and refuses anything but TLS (`require_secure_transport=ON`):
//! backup, the binlog archive and a point-in-time restore (whose replay
//! runs the `mariadb` client) all work with `verify-identity`; without TLS,
//! or with a CA that did not sign the server's certificate, wpdr stops with
//! a message that says what to check and exit code 24.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use wpdr::config::{Endpoint, TlsConfig, TlsMode};
use wpdr::mysql::wire::WireConn;
use wpdr::secret::Secret;

struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `NAME.pem`: the server's key (server.csr) certified by the CA for `names`.
fn sign_server_key(dir: &Path, name: &str, names: &str) {
    let ext = format!("{name}.ext");
    let pem = format!("{name}.pem");
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={names}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

/// A CA, a server certificate it signed for 127.0.0.1 and localhost, and a
/// second CA that signed nothing.
fn pki(dir: &Path) -> Pki {
    for (name, cn) in [("ca", "wpdr test CA"), ("other-ca", "somebody else's CA")] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    sign_server_key(dir, "server", "IP:127.0.0.1,DNS:localhost");
    // The same key, certified by the same CA for another name only.
    sign_server_key(dir, "misnamed", "DNS:db.example");
    Pki {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// SQL over the server's socket (a socket counts as secure transport).
fn sql(server: &MariaDb, db: &str, statement: &str) -> String {
    let out = Command::new("mariadb")
        .args(["--no-defaults", "-uroot", "-N", "-B"])
        .arg(format!(
            "--socket={}",
            server.dir.path().join("s.sock").display()
        ))
        .args(["-e", statement])
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{statement}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn config(dir: &Path, name: &str, server: &MariaDb, tls: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "site: tls\nstore:\n  type: local\n  path: {}\ndatabase:\n  host: 127.0.0.1\n  port: {}\n  user: {TEST_USER}\n  name: shop\n{tls}",
            dir.join("store").display(),
            server.port
        ),
    )
    .unwrap();
    p
}

fn endpoint(server: &MariaDb, mode: TlsMode, ca: &Path) -> Endpoint {
    Endpoint {
        host: "127.0.0.1".into(),
        port: server.port,
        socket: None,
        user: TEST_USER.into(),
        password: Secret::new(TEST_PASSWORD),
        tls: TlsConfig {
            mode,
            ca_file: Some(ca.to_path_buf()),
            cert_file: None,
            key_file: None,
        },
        credentials_from: Endpoint::FROM_DATABASE_CONFIG,
    }
}

/// The row reader's own TLS: encrypted (the server says which cipher),
/// a certificate from another CA refused where it is verified and taken
/// where the mode does not verify, as the driver does.
async fn reader_tls_checks(server: &MariaDb, pki: &Pki) {
    for mode in [
        TlsMode::VerifyIdentity,
        TlsMode::VerifyCa,
        TlsMode::Required,
    ] {
        let mut conn = WireConn::connect(&endpoint(server, mode, &pki.ca), None)
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let rows = conn
            .query_rows("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            .await
            .unwrap();
        let cipher = rows[0][1].clone().unwrap_or_default();
        assert!(!cipher.is_empty(), "{mode:?}: no TLS cipher in use");
        conn.disconnect().await;
    }
    for mode in [TlsMode::VerifyIdentity, TlsMode::VerifyCa] {
        let refused = WireConn::connect(&endpoint(server, mode, &pki.other_ca), None).await;
        assert!(
            refused.is_err(),
            "{mode:?} took a certificate of another CA"
        );
    }
    let unverified = WireConn::connect(&endpoint(server, TlsMode::Required, &pki.other_ca), None)
        .await
        .unwrap();
    unverified.disconnect().await;

    // The server now shows a certificate of the right CA for another name:
    // verify-identity refuses it, verify-ca takes it.
    std::fs::copy(pki.cert.with_file_name("misnamed.pem"), &pki.cert).unwrap();
    sql(server, "mysql", "FLUSH SSL");
    let misnamed =
        WireConn::connect(&endpoint(server, TlsMode::VerifyIdentity, &pki.ca), None).await;
    assert!(
        misnamed.is_err(),
        "verify-identity took a certificate for another name"
    );
    let chained = WireConn::connect(&endpoint(server, TlsMode::VerifyCa, &pki.ca), None)
        .await
        .unwrap();
    chained.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_archive_and_pitr_work_over_verified_tls_and_a_wrong_ca_is_refused() {
    let svc = Services::get();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let server = MariaDb::start(&[
        &format!("--ssl-ca={}", pki.ca.display()),
        &format!("--ssl-cert={}", pki.cert.display()),
        &format!("--ssl-key={}", pki.key.display()),
        "--require-secure-transport=ON",
        "--binlog-format=ROW",
    ]);
    sql(
        &server,
        "mysql",
        "CREATE DATABASE shop; CREATE TABLE shop.wp_posts (ID BIGINT PRIMARY KEY, post_title TEXT); INSERT INTO shop.wp_posts VALUES (1, 'over TLS'), (2, 'verified')",
    );
    let verified = config(
        dir.path(),
        "verified",
        &server,
        &format!(
            "  tls:\n    mode: verify-identity\n    ca_file: {}\n",
            pki.ca.display()
        ),
    );

    // Backup over TLS, the CA and the host name checked; the rows read by
    // the lean reader over its own TLS.
    let out = wpdr_env(
        &svc,
        &verified,
        &["--output", "json", "backup"],
        &[("WPDR_LOG", "wpdr=debug")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("dump workers connected") && log.contains("\"wire\""),
        "{log}"
    );
    let set = json(&out)["id"].as_str().unwrap().to_string();

    // The binlog archive follows the server over TLS.
    sql(
        &server,
        "shop",
        "INSERT INTO wp_posts VALUES (3, 'after the set')",
    );
    let point = sql(&server, "mysql", "SELECT @@gtid_binlog_pos");
    let out = wpdr_env(
        &svc,
        &verified,
        &["binlog", "archive", "--until-caught-up"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A point-in-time restore: the load over TLS, and the replay's mariadb
    // client with --ssl-verify-server-cert and the CA.
    let url = server.url();
    let out = wpdr_env(
        &svc,
        &verified,
        &[
            "restore",
            "db",
            &set,
            "--target",
            &url,
            "--database",
            "restored",
            "--to-gtid",
            &point,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        sql(
            &server,
            "restored",
            "SELECT GROUP_CONCAT(post_title ORDER BY ID) FROM wp_posts"
        ),
        "over TLS,verified,after the set"
    );

    // The default (preferred) uses TLS when the server offers it.
    let preferred = config(dir.path(), "preferred", &server, "");
    let out = wpdr_env(&svc, &preferred, &["backup"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // No TLS against a server that requires it: exit 24, said plainly.
    let plain = config(dir.path(), "plain", &server, "  tls:\n    mode: disabled\n");
    let out = wpdr_env(&svc, &plain, &["backup"], &[]);
    assert_eq!(out.status.code(), Some(24), "{}", stderr(&out));
    assert!(stderr(&out).contains("requires TLS"), "{}", stderr(&out));

    // A CA that did not sign the server's certificate: exit 24, naming what to check.
    let wrong = config(
        dir.path(),
        "wrong",
        &server,
        &format!(
            "  tls:\n    mode: verify-ca\n    ca_file: {}\n",
            pki.other_ca.display()
        ),
    );
    let out = wpdr_env(&svc, &wrong, &["backup"], &[]);
    assert_eq!(out.status.code(), Some(24), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("database.tls.ca_file") && err.contains("verify-ca"),
        "{err}"
    );
    assert!(!err.contains(TEST_PASSWORD), "{err}");

    // A missing CA file is a config error that names the key.
    let missing = config(
        dir.path(),
        "missing",
        &server,
        "  tls:\n    mode: verify-identity\n    ca_file: /nonexistent/ca.pem\n",
    );
    let out = wpdr_env(&svc, &missing, &["backup"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("database.tls.ca_file"),
        "{}",
        stderr(&out)
    );

    // The lean reader checks the server as the driver does (last: it
    // changes the server's certificate).
    reader_tls_checks(&server, &pki).await;
}

/// An S3 endpoint over HTTPS whose certificate a private CA signed (an
/// in-house MinIO): the store's `ca_file` makes it trusted; without it the
/// certificate is refused, never silently accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_store_with_a_private_ca_is_trusted_only_with_its_ca_file() {
    let svc = Services::get();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/moto-server.py");
    let mut moto = Command::new("python3")
        .arg(script)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .arg("-c")
        .arg(&pki.cert)
        .arg("-k")
        .arg(&pki.key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port);
    let endpoint = format!("https://127.0.0.1:{port}");
    let made = Command::new("curl")
        .args(["-sf", "--cacert"])
        .arg(&pki.ca)
        .args(["-X", "PUT", &format!("{endpoint}/tls-store")])
        .status()
        .unwrap();
    assert!(made.success(), "creating the bucket over HTTPS failed");
    let db = svc
        .database_with(
            "tls_s3",
            &[
                "CREATE TABLE t (id INT PRIMARY KEY)",
                "INSERT INTO t VALUES (1)",
            ],
        )
        .await;
    let store = |ca: &str| {
        format!(
            "site: tls\nstore:\n  type: s3\n  bucket: tls-store\n  endpoint: {endpoint}\n  region: us-east-1\n  access_key_id: test\n{ca}database:\n  host: 127.0.0.1\n  port: {}\n  user: {}\n  name: {db}\n",
            svc.db_port(),
            svc.var("WPDR_TEST_DB_USER"),
        )
    };
    let trusted = dir.path().join("trusted.yaml");
    std::fs::write(
        &trusted,
        store(&format!("  ca_file: {}\n", pki.ca.display())),
    )
    .unwrap();
    let untrusted = dir.path().join("untrusted.yaml");
    std::fs::write(&untrusted, store("")).unwrap();
    let run = |cfg: &Path, args: &[&str]| {
        svc.wpdr_cmd(cfg, args)
            .env("WPDR_S3_SECRET_ACCESS_KEY", "test")
            .output()
            .unwrap()
    };

    let out = run(&trusted, &["--output", "json", "backup"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let set = json(&out)["id"].as_str().unwrap().to_string();
    let out = run(&trusted, &["verify", &set]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = run(&untrusted, &["sets", "list"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&endpoint), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    let _ = moto.kill();
    let _ = moto.wait();
}
