//! A restore when everything else is broken: with store credentials that
//! may only read (as restore-side keys should be), `verify`, `restore db`,
//! a plan restore and a drill work. What they would have written (a pin, the
//! journal, the drill report) is skipped or kept locally, and said so.

mod common;

use common::*;
use std::process::Command;

/// A Garage key that may only read the backups bucket: (id, secret).
fn read_only_key(svc: &Services) -> (String, String) {
    let garage = svc.var("WPDR_TEST_GARAGE");
    let name = format!("ro-{:08x}", rand::random::<u32>());
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{garage} key create {name}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(label))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {label} in {text}"))
    };
    let (id, secret) = (field("Key ID:"), field("Secret key:"));
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{garage} bucket allow --read {} --key {id}",
            svc.var("WPDR_TEST_S3_BUCKET")
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    (id, secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_verifies_and_drills_with_a_read_only_store() {
    let svc = Services::get();
    let db = svc
        .database_with(
            "ro_src",
            &[
                "CREATE TABLE wp_posts (ID BIGINT PRIMARY KEY, post_title TEXT)",
                "INSERT INTO wp_posts VALUES (1, 'kept'), (2, 'also kept')",
            ],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(
        dir.path(),
        &db,
        &format!(
            "restore:\n  database: mysql://{}@127.0.0.1:{}/{{namespace}}\n",
            svc.var("WPDR_TEST_DB_USER"),
            svc.db_port()
        ),
    );
    let set = svc.backup(&cfg);
    let (id, secret) = read_only_key(&svc);
    let journals = dir.path().join("journals");
    let ro = |args: &[&str]| {
        svc.wpdr_cmd(&cfg, args)
            .env("WPDR_S3_ACCESS_KEY_ID", &id)
            .env("WPDR_S3_SECRET_ACCESS_KEY", &secret)
            .env("WPDR_JOURNAL_DIR", &journals)
            .env("WPDR_TARGET_PASSWORD", TEST_PASSWORD)
            .output()
            .unwrap()
    };
    // The key really is read-only: a backup with it is refused.
    let out = ro(&["backup"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));

    let out = ro(&["--output", "json", "verify", &set]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let target = MariaDb::start(&[]);
    let out = ro(&[
        "--output",
        "json",
        "restore",
        "db",
        &set,
        "--target",
        &target.url(),
        "--database",
        "from_ro",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["ok"], true);
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));

    // A plan restore keeps its journal on this machine, and can resume from it.
    let ns = format!("ro-{:06x}", rand::random::<u32>() & 0xffffff);
    let out = ro(&[
        "--output",
        "json",
        "restore",
        &set,
        "--namespace",
        &ns,
        "--plan",
        "db-only",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let restore_id = json(&out)["journal"]["restore_id"]
        .as_str()
        .unwrap()
        .to_string();
    let kept: Vec<_> = std::fs::read_dir(&journals)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        kept.iter().any(|k| k.contains(&restore_id)),
        "{kept:?} holds no journal of {restore_id}"
    );
    let out = ro(&["restore", "--resume", &restore_id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("succeeded") || stdout(&out).contains("succeeded"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // A drill: restored, checked, torn down; its report printed, not stored.
    let out = ro(&[
        "--output", "json", "drill", "--set", &set, "--plan", "db-only",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["ok"], true, "{}", stdout(&out));
    let mut admin = svc.admin(None).await;
    let _ = mysql_async::prelude::Queryable::query_drop(
        &mut admin,
        format!("DROP DATABASE IF EXISTS `{ns}`"),
    )
    .await;
}
