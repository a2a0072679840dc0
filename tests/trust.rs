//! Trust under compromise, with the real binary, MariaDB and `age`:
//! sets sealed to age recipients (what the backup side wrote it cannot
//! read; a restore without a matching identity stops before touching its
//! target and names the recipients; `age -d | zstd -dc | mariadb` opens a
//! set without wpdr), and signed manifests (a restore side that pins the
//! verifying key refuses a set that was altered, unsigned or forged).

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use std::path::{Path, PathBuf};
use std::process::Command;

const MARKER: &str = "customer-7f3a9e@example.com";

/// `wpdr keys age|signing --out FILE`: the file and the public half printed.
fn make_key(svc: &Services, cfg: &Path, kind: &str, out: &Path) -> String {
    let o = svc.wpdr(
        cfg,
        &[
            "--output",
            "json",
            "keys",
            kind,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let public = json(&o)["public"].as_str().unwrap().to_string();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{out:?} is readable by others: {mode:o}");
    // Never overwritten: a lost key loses every set sealed to it.
    let again = svc.wpdr(cfg, &["keys", kind, "--out", out.to_str().unwrap()]);
    assert_ne!(again.status.code(), Some(0));
    public
}

async fn source_database(svc: &Services, stem: &str) -> String {
    svc.database_with(
        stem,
        &[
            "CREATE TABLE wp_users (ID BIGINT PRIMARY KEY, user_email TEXT, user_pass TEXT)",
            &format!("INSERT INTO wp_users VALUES (1, '{MARKER}', '$P$Bhash'), (2, 'b@example.com', '$P$x')"),
            "CREATE TABLE wp_options (option_id BIGINT PRIMARY KEY, option_name TEXT, option_value LONGTEXT)",
            "INSERT INTO wp_options VALUES (1, 'payment_api_key', 'sk_live_0123456789')",
        ],
    )
    .await
}

/// A local-store config of its own name (every config of a test shares the store).
fn config(svc: &Services, dir: &Path, name: &str, database: &str, extra: &str) -> PathBuf {
    let written = svc.local_config(dir, database, extra);
    let own = dir.join(format!("{name}.yaml"));
    std::fs::rename(written, &own).unwrap();
    own
}

fn set_dir(dir: &Path, set: &str) -> PathBuf {
    dir.join("store/wpdr/testsite/sets").join(set)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_are_sealed_to_their_recipients_and_open_only_with_an_identity() {
    let svc = Services::get();
    let db = source_database(&svc, "sealed_src").await;
    let dir = tempfile::tempdir().unwrap();
    let plain_cfg = config(&svc, dir.path(), "plain", &db, "");
    let operator = dir.path().join("operator.key");
    let glass = dir.path().join("break-glass.key");
    let stranger = dir.path().join("stranger.key");
    let operator_pub = make_key(&svc, &plain_cfg, "age", &operator);
    let glass_pub = make_key(&svc, &plain_cfg, "age", &glass);
    make_key(&svc, &plain_cfg, "age", &stranger);
    // The backup side's config holds the recipients only.
    let cfg = config(
        &svc,
        dir.path(),
        "sealing",
        &db,
        &format!("encryption:\n  recipients: [{operator_pub}, {glass_pub}]\n"),
    );
    let set = svc.backup(&cfg);

    // Every artifact is an age file; no row is readable anywhere in the store.
    let sealed_dir = set_dir(dir.path(), &set);
    let mut artifacts = 0;
    for f in files_under(&sealed_dir) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&f).unwrap();
        if name == "manifest.json" {
            continue;
        }
        artifacts += 1;
        assert!(
            bytes.starts_with(b"age-encryption.org/v1\n"),
            "{f:?} is not sealed"
        );
    }
    assert!(artifacts >= 2, "{artifacts} artifacts");
    for f in files_under(&dir.path().join("store")) {
        let bytes = std::fs::read(&f).unwrap();
        for secret in [MARKER.as_bytes(), b"sk_live_0123456789"] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "{f:?} holds a row in the clear"
            );
        }
    }
    let shown = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "show", &set]));
    assert_eq!(
        shown["encryption"]["recipients"],
        serde_json::json!([operator_pub, glass_pub])
    );

    // Hashing needs no key; opening does, and the backup side has none.
    let out = svc.wpdr(&cfg, &["verify", &set]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = svc.wpdr(&cfg, &["verify", &set, "--deep"]);
    assert_eq!(out.status.code(), Some(22), "{}", stderr(&out));
    assert!(stderr(&out).contains(&operator_pub), "{}", stderr(&out));

    // A restore without the identity, or with a stranger's, stops before
    // touching the target, naming whom the set was written for.
    let target = MariaDb::start(&[]);
    for extra in [vec![], vec!["--identity", stranger.to_str().unwrap()]] {
        let out = svc.restore_db(&cfg, &set, &target, "from_sealed", &extra);
        assert_eq!(out.status.code(), Some(22), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&operator_pub) && err.contains(&glass_pub),
            "{err}"
        );
        let mut t = target.conn(None).await;
        let exists: Option<String> = t
            .query_first(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'from_sealed'",
            )
            .await
            .unwrap();
        assert_eq!(exists, None, "the target was touched");
    }

    // Either recipient's identity opens it.
    let out = svc.wpdr(
        &cfg,
        &[
            "verify",
            &set,
            "--deep",
            "--identity",
            glass.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = svc.restore_db(
        &cfg,
        &set,
        &target,
        "from_sealed",
        &["--identity", operator.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut src = svc.admin(Some(&db)).await;
    let mut dst = target.conn(Some("from_sealed")).await;
    assert_same_database(&mut src, &mut dst).await;

    // The way back without wpdr: age, zstd and the mariadb client.
    let script = format!(
        "set -euo pipefail; cd '{}'; mariadb -h127.0.0.1 -P{port} -u{TEST_USER} -p{TEST_PASSWORD} -e 'CREATE DATABASE by_hand'; for f in db/*.sql.zst; do age -d -i '{}' \"$f\"; done | zstd -dc | mariadb -h127.0.0.1 -P{port} -u{TEST_USER} -p{TEST_PASSWORD} by_hand",
        sealed_dir.display(),
        operator.display(),
        port = target.port,
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut by_hand = target.conn(Some("by_hand")).await;
    assert_same_database(&mut src, &mut by_hand).await;

    // Binlog segments are sealed too; their indexes stay readable without a
    // key, and a replay opens them with the identity.
    src.query_drop("INSERT INTO wp_users VALUES (3, 'after-the-set@example.com', '$P$y')")
        .await
        .unwrap();
    let point: String = src
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    let out = svc.wpdr(&cfg, &["binlog", "archive", "--until-caught-up"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let segments = files_under(&dir.path().join("store/wpdr/testsite/binlog"));
    let data: Vec<_> = segments
        .iter()
        .filter(|f| f.to_string_lossy().ends_with(".binlog.zst"))
        .collect();
    assert!(!data.is_empty(), "{segments:?}");
    for f in data {
        assert!(
            std::fs::read(f)
                .unwrap()
                .starts_with(b"age-encryption.org/v1\n"),
            "{f:?}"
        );
    }
    let out = svc.wpdr(&cfg, &["sets", "recoverable"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = svc.restore_db(
        &cfg,
        "latest",
        &target,
        "replayed",
        &[
            "--to-gtid",
            &point,
            "--identity",
            operator.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut replayed = target.conn(Some("replayed")).await;
    let n: Option<i64> = replayed
        .query_first("SELECT COUNT(*) FROM wp_users")
        .await
        .unwrap();
    assert_eq!(n, Some(3), "the transaction after the set was replayed");

    // Sets taken before encryption stay readable, with or without keys.
    let plain_set = svc.backup(&plain_cfg);
    let out = svc.wpdr(&cfg, &["verify", &plain_set, "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_side_that_pins_the_key_refuses_altered_unsigned_and_forged_sets() {
    let svc = Services::get();
    let db = source_database(&svc, "signed_src").await;
    let dir = tempfile::tempdir().unwrap();
    let bare = config(&svc, dir.path(), "bare", &db, "");
    let ours = dir.path().join("signing.key");
    let theirs = dir.path().join("forger.key");
    let verifying = make_key(&svc, &bare, "signing", &ours);
    make_key(&svc, &bare, "signing", &theirs);
    let writer = config(
        &svc,
        dir.path(),
        "writer",
        &db,
        &format!("signing:\n  key_file: {}\n", ours.display()),
    );
    let set = svc.backup(&writer);
    let unsigned = svc.backup(&bare);
    let pinned = config(
        &svc,
        dir.path(),
        "pinned",
        &db,
        &format!("signing:\n  verify_keys: ['{verifying}']\n"),
    );

    let shown = json(&svc.wpdr(&pinned, &["--output", "json", "sets", "show", &set]));
    assert_eq!(shown["signature"]["state"], "trusted", "{shown}");
    let out = svc.wpdr(&pinned, &["verify", &set]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Without a pin the signature still proves the manifest intact.
    let shown = json(&svc.wpdr(&bare, &["--output", "json", "sets", "show", &set]));
    assert_eq!(shown["signature"]["state"], "signed_unpinned", "{shown}");
    let shown = json(&svc.wpdr(&bare, &["--output", "json", "sets", "show", &unsigned]));
    assert_eq!(shown["signature"]["state"], "unsigned", "{shown}");

    // Unsigned: refused where a key is pinned.
    let target = MariaDb::start(&[]);
    let out = svc.restore_db(&pinned, &unsigned, &target, "x1", &[]);
    assert_eq!(out.status.code(), Some(23), "{}", stderr(&out));
    assert!(stderr(&out).contains("not signed"), "{}", stderr(&out));

    // Altered: one row count changed in the manifest.
    let manifest = set_dir(dir.path(), &set).join("manifest.json");
    let original = std::fs::read_to_string(&manifest).unwrap();
    let altered = original.replacen("\"rows\": 2", "\"rows\": 3", 1);
    assert_ne!(
        altered, original,
        "the manifest holds no row count to alter"
    );
    std::fs::write(&manifest, &altered).unwrap();
    for args in [
        vec!["verify", set.as_str()],
        vec!["sets", "show", set.as_str()],
    ] {
        let out = svc.wpdr(&pinned, &args);
        assert_eq!(out.status.code(), Some(23), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));
    }
    let out = svc.restore_db(&pinned, &set, &target, "x2", &[]);
    assert_eq!(out.status.code(), Some(23), "{}", stderr(&out));

    // Forged: the altered manifest re-signed with another key.
    let forger = config(
        &svc,
        dir.path(),
        "forger",
        &db,
        &format!("signing:\n  key_file: {}\n", theirs.display()),
    );
    let forged_set = svc.backup(&forger);
    let forged_sig = std::fs::read(set_dir(dir.path(), &forged_set).join("manifest.sig")).unwrap();
    let forged_manifest =
        std::fs::read_to_string(set_dir(dir.path(), &forged_set).join("manifest.json")).unwrap();
    std::fs::write(&manifest, forged_manifest.replace(&forged_set, &set)).unwrap();
    std::fs::write(set_dir(dir.path(), &set).join("manifest.sig"), forged_sig).unwrap();
    let out = svc.restore_db(&pinned, &set, &target, "x3", &[]);
    assert_eq!(out.status.code(), Some(23), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not one of the pinned"),
        "{}",
        stderr(&out)
    );

    // Restored to what was written, the set restores again.
    std::fs::write(&manifest, &original).unwrap();
    let sig = set_dir(dir.path(), &set).join("manifest.sig");
    std::fs::remove_file(&sig).unwrap();
    let out = svc.restore_db(&pinned, &set, &target, "x4", &[]);
    assert_eq!(
        out.status.code(),
        Some(23),
        "a set whose signature was removed restored"
    );
    let resigned = svc.backup(&writer);
    let out = svc.restore_db(&pinned, &resigned, &target, "x5", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// `media.encrypt`: with recipients set, the offsite mirror holds age files
/// (plain copies from before are sealed in place, nothing plain retained),
/// reruns see them as unchanged, overwritten versions are retained sealed,
/// and a restore opens them into plain objects with the identity. With
/// `encrypt: false` the mirror stays a plain, browsable copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_is_sealed_offsite_and_restored_plain_with_the_identity() {
    let svc = Services::get();
    let s3 = svc.s3();
    let source = svc.fresh_bucket("tsrc");
    let offsite = svc.fresh_bucket("toff");
    let db = svc
        .database_with(
            "sealed_media",
            &["CREATE TABLE wp_postmeta (meta_id BIGINT AUTO_INCREMENT PRIMARY KEY, post_id BIGINT, meta_key VARCHAR(255), meta_value LONGTEXT)"],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let media = svc.media_yaml(&source, &offsite, "");
    let plain_cfg = config(&svc, dir.path(), "plain", &db, &media);
    let key = dir.path().join("operator.key");
    let public = make_key(&svc, &plain_cfg, "age", &key);
    let cfg = config(
        &svc,
        dir.path(),
        "sealing",
        &db,
        &format!("{media}encryption:\n  recipients: [{public}]\n"),
    );
    let body = |name: &str, version: u8| -> Vec<u8> {
        format!("{MARKER} {name} v{version} ")
            .repeat(50)
            .into_bytes()
    };
    let small = "wp-content/uploads/2026/11/invoice 1.pdf".to_string();
    let other = "wp-content/uploads/2026/11/photo.jpg".to_string();
    // Over the 5 MiB part size: sealed and opened through multipart uploads.
    let big = "wp-content/uploads/2026/11/original.tiff".to_string();
    let big_body: Vec<u8> = (0..(12usize << 20))
        .map(|i| (i * 31 % 251) as u8)
        .chain(MARKER.bytes())
        .collect();
    put_object(&s3, &source, &small, body(&small, 1)).await;
    put_object(&s3, &source, &other, body(&other, 1)).await;
    put_object(&s3, &source, &big, big_body.clone()).await;

    // A plain mirror first (no recipients), then encryption turned on.
    let plain_set = svc.backup(&plain_cfg);
    let offsite_now = bucket_contents(&s3, &offsite).await;
    assert_eq!(offsite_now[&small].0, body(&small, 1), "plain before");
    let sealed_set = svc.backup(&cfg);
    let shown = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "show", &sealed_set]));
    assert_eq!(shown["media"]["sealed"], true, "{shown}");
    let sealed = bucket_contents(&s3, &offsite).await;
    assert_eq!(
        sealed.len(),
        3,
        "nothing plain was retained: {:?}",
        sealed.keys()
    );
    for (k, (bytes, content_type, _, meta)) in &sealed {
        assert!(
            bytes.starts_with(b"age-encryption.org/v1\n"),
            "{k} is not sealed"
        );
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "{k} holds the content in the clear"
        );
        assert_eq!(
            meta.get("wpdr-sealed").map(String::as_str),
            Some("age"),
            "{k}"
        );
        if k == &small {
            assert_eq!(content_type.as_deref(), Some("image/jpeg"));
        }
    }
    // The way back without wpdr: age opens an offsite copy.
    let copy = dir.path().join("copy.age");
    std::fs::write(&copy, &sealed[&big].0).unwrap();
    let out = Command::new("age")
        .args(["-d", "-i", key.to_str().unwrap(), copy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == big_body, "age -d gives back other bytes");

    // A rerun with nothing changed copies nothing: sealed sizes are recorded.
    let out = svc.wpdr(&cfg, &["--output", "json", "media", "sync"]);
    let r = json(&out);
    assert!(out.status.success(), "{r}");
    assert_eq!(
        (r["copied"].as_u64(), r["unchanged"].as_u64()),
        (Some(0), Some(3)),
        "{r}"
    );

    // An overwrite: the replaced version is retained, still sealed.
    put_object(&s3, &source, &small, body(&small, 2)).await;
    let newer_set = svc.backup(&cfg);
    let after = bucket_contents(&s3, &offsite).await;
    let retained: Vec<_> = after
        .iter()
        .filter(|(k, _)| k.starts_with(".wpdr-retained/"))
        .collect();
    assert_eq!(retained.len(), 1, "{:?}", after.keys());
    assert!(retained[0].1 .0.starts_with(b"age-encryption.org/v1\n"));

    // Restore: without the identity nothing is created; with it, every
    // set's versions come back plain, content types kept, deep-verified.
    let target = format!("restored-{:08x}", rand::random::<u32>());
    let out = svc.wpdr(
        &cfg,
        &["restore", "media", &newer_set, "--target-bucket", &target],
    );
    assert_eq!(out.status.code(), Some(22), "{}", stderr(&out));
    assert!(stderr(&out).contains(&public), "{}", stderr(&out));
    let exists = s3.head_bucket().bucket(&target).send().await.is_ok();
    assert!(!exists, "the target bucket was created");
    for (set, version) in [(&plain_set, 1u8), (&sealed_set, 1), (&newer_set, 2)] {
        let target = format!("restored-{:08x}", rand::random::<u32>());
        let out = svc.wpdr(
            &cfg,
            &[
                "restore",
                "media",
                set,
                "--target-bucket",
                &target,
                "--deep-verify",
                "--identity",
                key.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "{set}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let restored = bucket_contents(&s3, &target).await;
        assert_eq!(restored.len(), 3, "{set}");
        assert_eq!(restored[&small].0, body(&small, version), "{set}");
        assert_eq!(restored[&other].0, body(&other, 1), "{set}");
        assert!(
            restored[&big].0 == big_body,
            "{set}: the big object differs"
        );
        assert_eq!(restored[&small].1.as_deref(), Some("image/jpeg"));
        assert!(!restored[&small].3.contains_key("wpdr-sealed"), "{set}");
    }

    // `media.encrypt: false` keeps a plain, browsable mirror.
    let browsable = svc.fresh_bucket("tbrw");
    let open_cfg = config(
        &svc,
        dir.path(),
        "browsable",
        &db,
        &format!(
            "{}  encrypt: false\nencryption:\n  recipients: [{public}]\n",
            svc.media_yaml(&source, &browsable, "")
        ),
    );
    let out = svc.wpdr(&open_cfg, &["media", "sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plain = bucket_contents(&s3, &browsable).await;
    assert_eq!(plain[&small].0, body(&small, 2));
    assert!(plain[&big].0 == big_body);
}
