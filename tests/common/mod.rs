//! Shared test harness: the real services started by `scripts/dev-services.sh`,
//! fresh MariaDB servers on free ports, and helpers to run the `wpdr` binary.
#![allow(dead_code)]

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Values from `$WPDR_DEV_DIR/env`. A missing file is a failure, never a skip.
pub struct Services {
    vars: HashMap<String, String>,
}

impl Services {
    pub fn get() -> Services {
        let dir = std::env::var("WPDR_DEV_DIR").unwrap_or_else(|_| "/tmp/wpdr-dev".into());
        let path = Path::new(&dir).join("env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "test services are not running ({}: {e}). Start them with scripts/dev-services.sh",
                path.display()
            )
        });
        let mut vars = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("export ") {
                if let Some((k, v)) = rest.split_once('=') {
                    vars.insert(k.to_string(), v.trim_matches('"').to_string());
                }
            }
        }
        Services { vars }
    }

    pub fn var(&self, k: &str) -> String {
        self.vars
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} missing from the dev-services env file"))
    }

    pub fn db_port(&self) -> u16 {
        self.var("WPDR_TEST_DB_PORT").parse().unwrap()
    }

    /// Connection to the shared dev MariaDB (root-equivalent test user).
    pub async fn admin(&self, db: Option<&str>) -> Conn {
        connect(
            self.db_port(),
            &self.var("WPDR_TEST_DB_USER"),
            &self.var("WPDR_TEST_DB_PASSWORD"),
            db,
        )
        .await
    }

    /// A new, empty database on the dev server with a unique name.
    pub async fn fresh_database(&self, stem: &str) -> String {
        let name = format!("{stem}_{:08x}", rand::random::<u32>());
        let mut c = self.admin(None).await;
        c.query_drop(format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .await
        .unwrap();
        name
    }

    /// A fresh database on the dev server holding what `statements` create.
    pub async fn database_with(&self, stem: &str, statements: &[&str]) -> String {
        let db = self.fresh_database(stem).await;
        let mut c = self.admin(Some(&db)).await;
        for s in statements {
            c.query_drop(*s)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        db
    }

    /// The typed config and the opened store of a config file written by this harness.
    pub async fn open_store(&self, config: &Path) -> (wpdr::config::Config, wpdr::store::Store) {
        let env: HashMap<String, String> = self.secret_env().into_iter().collect();
        let cfg = wpdr::config::Config::load(Some(config), &env).unwrap();
        let store = wpdr::store::Store::open_site(&cfg, None).await.unwrap();
        (cfg, store)
    }

    /// Starts `wpdr daemon` on `port` with the schedules in `dir`; stderr is piped.
    pub fn spawn_daemon(&self, config: &Path, dir: &Path, port: u16, grace_seconds: u32) -> Child {
        self.daemon_cmd(config, dir, port, grace_seconds)
            .spawn()
            .unwrap()
    }

    /// The daemon's command line, to add environment before spawning it.
    pub fn daemon_cmd(&self, config: &Path, dir: &Path, port: u16, grace_seconds: u32) -> Command {
        let mut cmd = self.wpdr_cmd(
            config,
            &[
                "daemon",
                "--schedules",
                dir.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--grace-seconds",
                &grace_seconds.to_string(),
            ],
        );
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        cmd
    }

    /// A config file for a site whose sets live under a unique prefix in Garage.
    pub fn s3_config(&self, dir: &Path, database: &str, extra: &str) -> PathBuf {
        let prefix = format!("test-{:08x}", rand::random::<u32>());
        let yaml = format!(
            "site: testsite\nstore:\n  type: s3\n  bucket: {}\n  prefix: {prefix}\n  endpoint: {}\n  region: {}\n  access_key_id: {}\n  part_size: 5MiB\ndatabase:\n  host: 127.0.0.1\n  port: {}\n  user: {}\n  name: {database}\n{extra}",
            self.var("WPDR_TEST_S3_BUCKET"),
            self.var("WPDR_TEST_S3_ENDPOINT"),
            self.var("WPDR_TEST_S3_REGION"),
            self.var("WPDR_TEST_S3_ACCESS_KEY_ID"),
            self.db_port(),
            self.var("WPDR_TEST_DB_USER"),
        );
        let p = dir.join("wpdr.yaml");
        std::fs::write(&p, yaml).unwrap();
        p
    }

    /// A new, empty Garage bucket the test key may read and write.
    pub fn fresh_bucket(&self, stem: &str) -> String {
        let name = format!("{stem}-{:08x}", rand::random::<u32>());
        let g = self.var("WPDR_TEST_GARAGE");
        let key = self.var("WPDR_TEST_S3_ACCESS_KEY_ID");
        let script = format!(
            "{g} bucket create {name} >/dev/null && {g} bucket allow --read --write --owner {name} --key {key} >/dev/null"
        );
        let out = Command::new("bash").args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "garage bucket create: {}",
            stderr(&out)
        );
        name
    }

    /// An S3 client on Garage with the test key, for putting and reading test objects.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(
            self.var("WPDR_TEST_S3_ACCESS_KEY_ID"),
            self.var("WPDR_TEST_S3_SECRET_ACCESS_KEY"),
            None,
            None,
            "test",
        );
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .credentials_provider(creds)
            .region(aws_sdk_s3::config::Region::new(
                self.var("WPDR_TEST_S3_REGION"),
            ))
            .endpoint_url(self.var("WPDR_TEST_S3_ENDPOINT"))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// The `media:` section for a source and an offsite bucket on Garage.
    pub fn media_yaml(&self, source: &str, offsite: &str, extra: &str) -> String {
        let b = |name: &str| {
            format!(
                "{{bucket: {name}, endpoint: '{}', region: {}, access_key_id: {}, part_size: 5MiB}}",
                self.var("WPDR_TEST_S3_ENDPOINT"),
                self.var("WPDR_TEST_S3_REGION"),
                self.var("WPDR_TEST_S3_ACCESS_KEY_ID")
            )
        };
        format!(
            "media:\n  source: {}\n  offsite: {}\n{extra}",
            b(source),
            b(offsite)
        )
    }

    /// A config with a local-directory store at `dir/store`.
    pub fn local_config(&self, dir: &Path, database: &str, extra: &str) -> PathBuf {
        let yaml = format!(
            "site: testsite\nstore:\n  type: local\n  path: {}\ndatabase:\n  host: 127.0.0.1\n  port: {}\n  user: {}\n  name: {database}\n{extra}",
            dir.join("store").display(),
            self.db_port(),
            self.var("WPDR_TEST_DB_USER"),
        );
        let p = dir.join("wpdr.yaml");
        std::fs::write(&p, yaml).unwrap();
        p
    }

    /// [`Services::local_config`] with 1 MiB chunks and plan restores into
    /// a `{namespace}` database on the test server.
    pub fn local_restore_config(&self, dir: &Path, database: &str) -> PathBuf {
        self.local_config(
            dir,
            database,
            &format!(
                "backup:\n  chunk_size: 1MiB\nrestore:\n  database: mysql://{}@127.0.0.1:{}/{{namespace}}\n",
                self.var("WPDR_TEST_DB_USER"),
                self.db_port()
            ),
        )
    }

    /// Environment for the wpdr binary: secrets as env, never in files or args.
    pub fn secret_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "WPDR_S3_SECRET_ACCESS_KEY".into(),
                self.var("WPDR_TEST_S3_SECRET_ACCESS_KEY"),
            ),
            ("WPDR_DB_PASSWORD".into(), self.var("WPDR_TEST_DB_PASSWORD")),
            (
                "WPDR_MEDIA_SOURCE_SECRET_ACCESS_KEY".into(),
                self.var("WPDR_TEST_S3_SECRET_ACCESS_KEY"),
            ),
            (
                "WPDR_MEDIA_OFFSITE_SECRET_ACCESS_KEY".into(),
                self.var("WPDR_TEST_S3_SECRET_ACCESS_KEY"),
            ),
            (
                "WPDR_RESTORE_MEDIA_SECRET_ACCESS_KEY".into(),
                self.var("WPDR_TEST_S3_SECRET_ACCESS_KEY"),
            ),
            (
                "WPDR_RESTORE_DATABASE_PASSWORD".into(),
                self.var("WPDR_TEST_DB_PASSWORD"),
            ),
            ("WPDR_LOG_FORMAT".into(), "json".into()),
        ]
    }

    /// Runs `wpdr` with the given config and arguments.
    pub fn wpdr(&self, config: &Path, args: &[&str]) -> Output {
        self.wpdr_cmd(config, args).output().unwrap()
    }

    /// Runs `wpdr` with the restore target's password in the environment.
    pub fn wpdr_target(&self, config: &Path, args: &[&str]) -> Output {
        self.wpdr_cmd(config, args)
            .env("WPDR_TARGET_PASSWORD", TEST_PASSWORD)
            .output()
            .unwrap()
    }

    /// Takes a backup and returns its set id.
    pub fn backup(&self, config: &Path) -> String {
        json(&self.wpdr(config, &["--output", "json", "backup"]))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `wpdr --output json restore db SET --target TARGET --database DB EXTRA...`
    pub fn restore_db(
        &self,
        config: &Path,
        set: &str,
        target: &MariaDb,
        database: &str,
        extra: &[&str],
    ) -> Output {
        let url = target.url();
        let mut args = vec![
            "--output",
            "json",
            "restore",
            "db",
            set,
            "--target",
            &url,
            "--database",
            database,
        ];
        args.extend_from_slice(extra);
        self.wpdr_target(config, &args)
    }

    /// Starts wpdr in the background, its output captured.
    pub fn spawn_wpdr(&self, config: &Path, args: &[&str]) -> Child {
        self.wpdr_cmd(config, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn wpdr_cmd(&self, config: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wpdr"));
        cmd.arg("--config").arg(config).args(args);
        for (k, v) in self.secret_env() {
            cmd.env(k, v);
        }
        cmd.env_remove("WPDR_CONFIG");
        cmd
    }
}

pub async fn connect(port: u16, user: &str, password: &str, db: Option<&str>) -> Conn {
    let opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .db_name(db)
        .prefer_socket(false)
        .max_allowed_packet(Some(1 << 30))
        .init(vec!["SET NAMES utf8mb4", "SET time_zone='+00:00'"]);
    Conn::new(opts)
        .await
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A MariaDB server of the test's own: own port, data dir and binary log. Killed on drop.
pub struct MariaDb {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

pub const TEST_USER: &str = "wpdr";
pub const TEST_PASSWORD: &str = "target-pw";

impl MariaDb {
    pub fn start(extra_args: &[&str]) -> MariaDb {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // A temporary directory of its own: every server removes `#sql*`
        // files from its tmpdir when it starts (mysql_rm_tmp_tables), and in
        // a shared /tmp those were another bootstrap's working tables.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let user = whoami();
        let st = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                // Many servers at once exhaust io_uring's locked memory
                // (ulimit -l): use threads for I/O.
                "--innodb-use-native-aio=0",
                // Disk, not speed: the default 96 MiB redo log, preallocated
                // by each of a suite's dozens of servers, filled a CI disk.
                "--innodb-log-file-size=16M",
            ])
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={user}"))
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&st.stdout),
            String::from_utf8_lossy(&st.stderr)
        );
        let port = free_port();
        let sock = dir.path().join("s.sock");
        let child = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg(format!("--user={user}"))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", sock.display()))
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .arg(format!("--log-bin={}", data.join("binlog").display()))
            .arg("--server-id=77")
            .arg("--innodb-buffer-pool-size=128M")
            .arg("--innodb-log-file-size=16M")
            .arg("--innodb-use-native-aio=0")
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg("--skip-name-resolve")
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("mariadb")
                .args(["--no-defaults", "-uroot"])
                .arg(format!("--socket={}", sock.display()))
                .args(["-e", &format!(
                    "CREATE USER IF NOT EXISTS '{TEST_USER}'@'%' IDENTIFIED BY '{TEST_PASSWORD}'; GRANT ALL ON *.* TO '{TEST_USER}'@'%' WITH GRANT OPTION;"
                )])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "MariaDB on port {port} did not start: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        MariaDb { port, dir, child }
    }

    pub fn url(&self) -> String {
        format!("mysql://{TEST_USER}@127.0.0.1:{}", self.port)
    }

    pub async fn conn(&self, db: Option<&str>) -> Conn {
        connect(self.port, TEST_USER, TEST_PASSWORD, db).await
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn whoami() -> String {
    String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success, printing both streams if not.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "wpdr failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

pub fn json(o: &Output) -> serde_json::Value {
    let s = ok(o);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Every row of a table, ordered by all columns, as raw text-protocol bytes:
/// an independent comparison that does not use wpdr's checksum.
/// A system-versioned table is read with its whole history and period.
pub async fn table_rows(conn: &mut Conn, table: &str) -> Vec<Vec<Option<Vec<u8>>>> {
    let mut cols: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (table,),
        )
        .await
        .unwrap();
    let table_type: Option<String> = conn
        .exec_first(
            "SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (table,),
        )
        .await
        .unwrap();
    let versioned = table_type.as_deref() == Some("SYSTEM VERSIONED");
    let period: Option<i64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND GENERATION_EXPRESSION IN ('ROW START', 'ROW END')",
            (table,),
        )
        .await
        .unwrap();
    if versioned && period == Some(0) {
        cols.push("ROW_START".into());
        cols.push("ROW_END".into());
    }
    let list = cols
        .iter()
        .map(|c| format!("`{}`", c.replace('`', "``")))
        .collect::<Vec<_>>()
        .join(",");
    let history = if versioned {
        " FOR SYSTEM_TIME ALL"
    } else {
        ""
    };
    let order = (1..=cols.len())
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let rows: Vec<mysql_async::Row> = conn
        .query(format!(
            "SELECT {list} FROM `{}`{history} ORDER BY {order}",
            table.replace('`', "``")
        ))
        .await
        .unwrap();
    rows.into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.as_ref(i) {
                    Some(mysql_async::Value::Bytes(b)) => Some(b.clone()),
                    Some(mysql_async::Value::NULL) | None => None,
                    Some(other) => Some(other.as_sql(false).into_bytes()),
                })
                .collect()
        })
        .collect()
}

/// Names of the tables, sequences and versioned tables (everything but
/// views) of the current database, sorted.
pub async fn tables(conn: &mut Conn) -> Vec<String> {
    let mut t: Vec<String> = conn
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE <> 'VIEW'")
        .await
        .unwrap();
    t.sort();
    t
}

/// Asserts that two databases hold the same tables, schemas and rows.
pub async fn assert_same_database(a: &mut Conn, b: &mut Conn) {
    let ta = tables(a).await;
    let tb = tables(b).await;
    assert_eq!(ta, tb, "table lists differ");
    for t in &ta {
        let ca: (String, String) = a
            .query_first(format!("SHOW CREATE TABLE `{}`", t.replace('`', "``")))
            .await
            .unwrap()
            .unwrap();
        let cb: (String, String) = b
            .query_first(format!("SHOW CREATE TABLE `{}`", t.replace('`', "``")))
            .await
            .unwrap()
            .unwrap();
        let strip = |s: &str| {
            s.split_whitespace()
                .filter(|w| !w.starts_with("AUTO_INCREMENT="))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(strip(&ca.1), strip(&cb.1), "schema of {t} differs");
        let ra = table_rows(a, t).await;
        let rb = table_rows(b, t).await;
        assert_eq!(ra.len(), rb.len(), "row count of {t} differs");
        assert!(ra == rb, "rows of {t} differ");
    }
}

/// Puts an object with the headers a WordPress upload has.
pub async fn put_object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type("image/jpeg")
        .cache_control("max-age=31536000")
        .metadata("origin", "wordpress")
        .body(body.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

/// Puts many objects at once (the setup of a bucket for a test).
pub async fn put_objects(s3: &aws_sdk_s3::Client, bucket: &str, objects: Vec<(String, Vec<u8>)>) {
    futures::future::join_all(
        objects
            .into_iter()
            .map(|(k, body)| async move { put_object(s3, bucket, &k, body).await }),
    )
    .await;
}

/// One object as a test sees it: bytes, content type, cache control, user metadata.
pub type TestObject = (
    Vec<u8>,
    Option<String>,
    Option<String>,
    HashMap<String, String>,
);

/// Every object of a bucket by key.
pub async fn bucket_contents(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> std::collections::BTreeMap<String, TestObject> {
    let mut out = std::collections::BTreeMap::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        for o in page.contents() {
            let key = o.key().unwrap().to_string();
            let got = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .unwrap();
            let ct = got.content_type().map(str::to_string);
            let cc = got.cache_control().map(str::to_string);
            let meta = got.metadata().cloned().unwrap_or_default();
            let body = got.body.collect().await.unwrap().into_bytes().to_vec();
            out.insert(key, (body, ct, cc, meta));
        }
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => break,
        }
    }
    out
}

/// The pid of the shared dev Garage.
pub fn garage_pid(dev: &str) -> i32 {
    std::fs::read_to_string(format!("{dev}/garage/garage.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Starts the shared Garage again, detached, as dev-services.sh does.
pub fn restart_garage(svc: &Services) {
    let dev = svc.var("WPDR_DEV_DIR");
    let cmd = svc.var("WPDR_TEST_GARAGE");
    let script = format!(
        "RUST_LOG=warn setsid {cmd} server >>'{dev}/garage/garage.log' 2>&1 < /dev/null & echo $! > '{dev}/garage/garage.pid'"
    );
    assert!(Command::new("bash")
        .args(["-c", &script])
        .status()
        .unwrap()
        .success());
}

/// Waits until `bucket` lists at least `n` objects (or a minute passes).
pub async fn wait_for_objects(s3: &aws_sdk_s3::Client, bucket: &str, n: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let has = s3
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .map(|o| o.key_count().unwrap_or(0))
            .unwrap_or(0);
        if has >= n || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (up to 30 s) until something listens on 127.0.0.1:`port`.
pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM to a spawned daemon; its exit status and everything it logged.
pub fn stop_daemon(mut child: Child) -> (std::process::ExitStatus, String) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut log = String::new();
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut log).unwrap();
    }
    (status, log)
}

/// One plain HTTP/1.1 request to 127.0.0.1:`port` (the daemon's endpoints).
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    http_with(port, method, path, "")
}

/// Like [`http`], with extra header lines (each ending in `\r\n`).
pub fn http_with(port: u16, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// The value of the first metric line starting with `prefix`.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in:\n{text}"))
}

/// An in-memory API server holding namespace `shop`: a WordPress Deployment
/// (with `replicas` when given) whose Pod, through its ReplicaSet, runs
/// `wordpress:6.6` as digest `sha256:feed`. Add objects before `build()`.
pub fn fake_shop(replicas: Option<i32>) -> kube_fake_client::ClientBuilder {
    use serde_json::json;
    let mut spec = json!({"selector": {"matchLabels": {"app": "wp"}}, "template": {"metadata": {"labels": {"app": "wp"}},
        "spec": {"containers": [{"name": "php", "image": "wordpress:6.6"}]}}});
    if let Some(n) = replicas {
        spec["replicas"] = json!(n);
    }
    kube_fake_client::ClientBuilder::new()
        .with_object::<k8s_openapi::api::apps::v1::Deployment>(serde_json::from_value(json!({
            "metadata": {"name": "wordpress", "namespace": "shop", "uid": "d1"},
            "spec": spec
        })).unwrap())
        .with_object::<k8s_openapi::api::apps::v1::ReplicaSet>(serde_json::from_value(json!({
            "metadata": {"name": "wordpress-1", "namespace": "shop",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "wordpress", "uid": "d1"}]},
            "spec": {"selector": {"matchLabels": {"app": "wp"}}}
        })).unwrap())
        .with_object::<k8s_openapi::api::core::v1::Pod>(serde_json::from_value(json!({
            "metadata": {"name": "wordpress-1-x", "namespace": "shop",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "wordpress-1", "uid": "r1"}]},
            "spec": {"containers": [{"name": "php", "image": "wordpress:6.6"}]},
            "status": {"containerStatuses": [{"name": "php", "image": "wordpress:6.6", "imageID": "docker-pullable://wordpress@sha256:feed", "ready": true, "restartCount": 0}]}
        })).unwrap())
}

// ---- a primary/replica pair of the test's own ----

/// A config for site `cluster` over `primary` with `replica` named, local store in `dir`.
pub fn cluster_config(dir: &Path, primary: &MariaDb, replica: &MariaDb, extra: &str) -> PathBuf {
    let yaml = format!(
        "site: cluster\nstore:\n  type: local\n  path: {}\ndatabase:\n  host: 127.0.0.1\n  port: {}\n  user: {TEST_USER}\n  name: shop\n  connections: 2\n  replicas: ['127.0.0.1:{}']\n  max_replica_lag_seconds: 30\n{extra}",
        dir.join("store").display(),
        primary.port,
        replica.port
    );
    let p = dir.join("wpdr.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

pub fn wpdr_env(
    svc: &Services,
    cfg: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = svc.wpdr_cmd(cfg, args);
    cmd.env("WPDR_DB_PASSWORD", TEST_PASSWORD)
        .env("WPDR_TARGET_PASSWORD", TEST_PASSWORD);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A primary and a replica started for the test, replicating by GTID from
/// the start, with database `shop` and the table `ddl` creates on the
/// primary; connections to both.
pub async fn replicated_pair(ddl: &str) -> (MariaDb, MariaDb, Conn, Conn) {
    // Row-based logging, as a point-in-time replay needs (see binlog::archive).
    let primary = MariaDb::start(&["--log-slave-updates", "--binlog-format=ROW"]);
    let replica = MariaDb::start(&[
        "--server-id=78",
        "--log-slave-updates",
        "--binlog-format=ROW",
    ]);
    let mut p = primary.conn(None).await;
    p.query_drop("CREATE DATABASE shop").await.unwrap();
    p.query_drop(ddl).await.unwrap();
    let mut r = replica.conn(None).await;
    r.query_drop(format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='{TEST_USER}', MASTER_PASSWORD='{TEST_PASSWORD}', MASTER_USE_GTID=slave_pos",
        primary.port
    ))
    .await
    .unwrap();
    r.query_drop("START SLAVE").await.unwrap();
    (primary, replica, p, r)
}

/// The sequence number of domain 0 in a GTID position like `0-77-1234`.
pub fn seq(pos: &str) -> u64 {
    pos.split(',')
        .find(|g| g.starts_with("0-"))
        .and_then(|g| g.rsplit('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no domain-0 GTID in '{pos}'"))
}

/// `wpdr --output json sets recoverable`, whatever its exit code.
pub fn recoverable(svc: &Services, cfg: &Path) -> Output {
    wpdr_env(svc, cfg, &["--output", "json", "sets", "recoverable"], &[])
}

/// Every file below `dir` (none if it does not exist), depth first.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A MariaDB server of its own with row-based binary logs and an empty
/// `shop.orders (id, note)`, for the binlog archive's fault tests.
pub async fn orders_server() -> (MariaDb, Conn) {
    let db = MariaDb::start(&["--binlog-format=ROW"]);
    let mut c = db.conn(None).await;
    c.query_drop("CREATE DATABASE shop").await.unwrap();
    c.query_drop("CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(64))")
        .await
        .unwrap();
    (db, c)
}

/// A lock object left free: released (it stays, marked, since the writing
/// side may not delete), or never written.
pub fn assert_released(lock: &Path) {
    if let Ok(text) = std::fs::read_to_string(lock) {
        let held: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            held["released_at"].is_string(),
            "{lock:?} is still held: {held}"
        );
    }
}

/// What the kubelet and the Job controller leave when a fleet Job's
/// container ends: a Pod (owned by the Job) whose container terminated with
/// `exit` and `message`, and the Job's status (succeeded or failed at
/// `at`). The fleet tests stand in for the cluster with it.
pub async fn finish_job(
    client: &kube::Client,
    job: &k8s_openapi::api::batch::v1::Job,
    exit: i32,
    message: String,
    at: chrono::DateTime<chrono::Utc>,
) {
    use k8s_openapi::api::batch::v1::{Job, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
    use kube::api::{Api, Patch, PatchParams, PostParams};
    use kube::ResourceExt;
    let (ns, name) = (job.namespace().unwrap(), job.name_any());
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(format!("{name}-pod")),
            namespace: Some(ns.clone()),
            labels: Some([("job-name".to_string(), name.clone())].into()),
            // Owned by its Job, as the Job controller makes it: gone with it.
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: name.clone(),
                uid: job.metadata.uid.clone().unwrap_or_default(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "wpdr".into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: exit,
                        message: Some(message),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let status = JobStatus {
        succeeded: (exit == 0).then_some(1),
        failed: (exit != 0).then_some(1),
        completion_time: Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(at.timestamp()).unwrap(),
        )),
        ..Default::default()
    };
    Api::<Job>::namespaced(client.clone(), &ns)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .unwrap();
}
