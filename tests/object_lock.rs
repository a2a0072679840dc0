//! Sets the cluster's own credentials cannot destroy, against moto's S3
//! server (Object Lock and IAM policies enforced; Garage has neither):
//! the writing side's keys may not delete, and backups, a second backup
//! after the first released its lock, and the binlog archive all work with
//! them; only `prune`, with keys of its own, deletes, and only what Object
//! Lock no longer retains; a restore works with read-only keys;
//! `check-config` refuses a bucket without Object Lock.

mod common;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

struct Moto {
    endpoint: String,
}

impl Moto {
    fn new(svc: &Services) -> Moto {
        Moto {
            endpoint: svc.var("WPDR_TEST_MOTO_ENDPOINT"),
        }
    }

    fn key(svc: &Services, role: &str) -> (String, String) {
        (
            svc.var(&format!("WPDR_TEST_MOTO_{role}_ID")),
            svc.var(&format!("WPDR_TEST_MOTO_{role}_SECRET")),
        )
    }

    fn client(&self, svc: &Services, role: &str) -> aws_sdk_s3::Client {
        let (id, secret) = Moto::key(svc, role);
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new("us-east-1"))
            .force_path_style(true)
            .credentials_provider(Credentials::new(id, secret, None, None, "test"))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

/// A config on moto's `bucket` under a fresh prefix, written to `name`.yaml.
fn config(
    svc: &Services,
    dir: &Path,
    name: &str,
    bucket: &str,
    prefix: &str,
    db: &str,
    extra: &str,
) -> PathBuf {
    let yaml = format!(
        "site: testsite\nstore:\n  type: s3\n  bucket: {bucket}\n  prefix: {prefix}\n  endpoint: {}\n  region: us-east-1\n  part_size: 5MiB\n{extra}database:\n  host: 127.0.0.1\n  port: {}\n  user: {}\n  name: {db}\nretention:\n  keep_last: 1\n",
        svc.var("WPDR_TEST_MOTO_ENDPOINT"),
        svc.db_port(),
        svc.var("WPDR_TEST_DB_USER"),
    );
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, yaml).unwrap();
    p
}

/// Runs wpdr with the store keys of `role` (writer, pruner, reader).
fn as_role(svc: &Services, cfg: &Path, role: &str, args: &[&str]) -> Output {
    let (id, secret) = Moto::key(svc, role);
    svc.wpdr_cmd(cfg, args)
        .env("WPDR_S3_ACCESS_KEY_ID", id)
        .env("WPDR_S3_SECRET_ACCESS_KEY", secret)
        .env("WPDR_TARGET_PASSWORD", TEST_PASSWORD)
        .output()
        .unwrap()
}

/// `out` exited with `code` and said `says` (on stdout or stderr).
fn expect(out: &Output, code: i32, says: &str) {
    let said = format!("{}{}", stdout(out), stderr(out));
    assert_eq!(out.status.code(), Some(code), "{said}");
    assert!(said.contains(says), "{said}");
}

async fn keys_under(s3: &aws_sdk_s3::Client, bucket: &str, prefix: String) -> Vec<String> {
    let out = s3
        .list_object_versions()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    out.versions()
        .iter()
        .filter_map(|v| v.key().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_prune_deletes_and_only_what_object_lock_no_longer_retains() {
    let svc = Services::get();
    let moto = Moto::new(&svc);
    let admin = moto.client(&svc, "ADMIN");
    let writer = moto.client(&svc, "WRITER");
    let db = svc
        .database_with(
            "locked_src",
            &[
                "CREATE TABLE wp_posts (ID BIGINT PRIMARY KEY, post_title TEXT)",
                "INSERT INTO wp_posts VALUES (1, 'kept'), (2, 'kept too')",
            ],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("lock-{:08x}", rand::random::<u32>());
    let lock = "  object_lock: {mode: governance, days: 1}\n";
    let cfg = |name: &str, bucket: &str, extra: &str| {
        config(&svc, dir.path(), name, bucket, &prefix, &db, extra)
    };
    let unlocked_cfg = cfg("unlocked", "wpdr-locked", "");
    let locked_cfg = cfg("locked", "wpdr-locked", lock);

    // check-config asks the bucket: Object Lock enabled here, not there.
    let out = as_role(&svc, &locked_cfg, "WRITER", &["check-config"]);
    expect(&out, 0, "object lock governance for 1 days");
    let wrong = cfg("wrong", "wpdr-unlocked", lock);
    let out = as_role(&svc, &wrong, "WRITER", &["check-config"]);
    expect(&out, 3, "does not have Object Lock enabled");

    // The writing side's keys: no delete at all, and every writing job works.
    let out = as_role(
        &svc,
        &unlocked_cfg,
        "WRITER",
        &["--output", "json", "backup"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let old = json(&out)["id"].as_str().unwrap().to_string();
    let mut locked = Vec::new();
    for _ in 0..2 {
        // The second run takes the lock the first released (never deleted).
        let out = as_role(&svc, &locked_cfg, "WRITER", &["--output", "json", "backup"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        locked.push(json(&out)["id"].as_str().unwrap().to_string());
    }
    let out = as_role(
        &svc,
        &locked_cfg,
        "WRITER",
        &["--output", "json", "binlog", "archive", "--until-caught-up"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let manifest = format!("{prefix}/testsite/sets/{}/manifest.json", locked[0]);
    let refused = writer
        .delete_object()
        .bucket("wpdr-locked")
        .key(&manifest)
        .send()
        .await;
    assert!(refused.is_err(), "the writer's key deleted a manifest");
    let shown = json(&as_role(
        &svc,
        &locked_cfg,
        "READER",
        &["--output", "json", "sets", "show", &locked[0]],
    ));
    assert!(shown["retained_until"].is_string(), "{shown}");

    // A prune with the writer's keys deletes nothing and says why.
    let versions_of = |set: &str| {
        keys_under(
            &admin,
            "wpdr-locked",
            format!("{prefix}/testsite/sets/{set}/"),
        )
    };
    let out = as_role(&svc, &locked_cfg, "WRITER", &["prune"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    assert!(
        versions_of(&old)
            .await
            .iter()
            .any(|k| k.ends_with("manifest.json")),
        "the writer's prune removed a set"
    );

    // With its own keys, prune deletes every version of the unlocked set and
    // leaves the retained one, reporting until when.
    let (pid, psecret) = Moto::key(&svc, "PRUNER");
    let out = svc
        .wpdr_cmd(&locked_cfg, &["prune"])
        .env("WPDR_S3_ACCESS_KEY_ID", Moto::key(&svc, "WRITER").0)
        .env("WPDR_S3_SECRET_ACCESS_KEY", Moto::key(&svc, "WRITER").1)
        .env("WPDR_S3_PRUNE_ACCESS_KEY_ID", pid)
        .env("WPDR_S3_PRUNE_SECRET_ACCESS_KEY", psecret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&locked[0]) && l.contains("Object Lock retains it until")),
        "{text}"
    );
    assert!(
        versions_of(&old).await.is_empty(),
        "versions of the pruned set remain"
    );
    let retained = versions_of(&locked[0]).await;
    assert!(
        retained.iter().any(|k| k.ends_with("manifest.json")),
        "{retained:?}"
    );

    // Nobody deletes a retained version early, the bucket's admin included.
    let out = admin
        .list_object_versions()
        .bucket("wpdr-locked")
        .prefix(&manifest)
        .send()
        .await
        .unwrap();
    let version = out.versions()[0].version_id().unwrap().to_string();
    let refused = admin
        .delete_object()
        .bucket("wpdr-locked")
        .key(&manifest)
        .version_id(version)
        .send()
        .await;
    assert!(refused.is_err(), "a retained version was deleted");

    // A restore with keys that may only read.
    let target = MariaDb::start(&[]);
    let url = target.url();
    let out = as_role(
        &svc,
        &locked_cfg,
        "READER",
        &[
            "--output",
            "json",
            "restore",
            "db",
            &locked[1],
            "--target",
            &url,
            "--database",
            "from_locked",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut src = svc.admin(Some(&db)).await;
    let mut dst = target.conn(Some("from_locked")).await;
    assert_same_database(&mut src, &mut dst).await;
}

/// `media.offsite.object_lock`: the mirror writes every offsite copy and
/// every retained version with a retention date (moto as the offsite
/// provider, Garage as MinIO); the bucket's own admin cannot delete a
/// retained version before then, and prune keeps an unreferenced one that is
/// still retained, reporting it, instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsite_media_copies_and_retained_versions_carry_object_lock() {
    let svc = Services::get();
    let moto = Moto::new(&svc);
    let admin = moto.client(&svc, "ADMIN");
    let offsite = format!("media-lock-{:08x}", rand::random::<u32>());
    admin
        .create_bucket()
        .bucket(&offsite)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let source = svc.fresh_bucket("lsrc");
    let s3 = svc.s3();
    let photo = "wp-content/uploads/2026/11/photo.jpg";
    put_object(&s3, &source, photo, b"version one".to_vec()).await;
    put_object(
        &s3,
        &source,
        "wp-content/uploads/2026/11/other.jpg",
        b"other".to_vec(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("media.yaml");
    std::fs::write(
        &cfg,
        format!(
            "site: lockmedia\nstore: {{type: local, path: {}}}\nmedia:\n  source: {{bucket: {source}, endpoint: '{}', region: garage, access_key_id: {}}}\n  offsite:\n    bucket: {offsite}\n    endpoint: '{}'\n    region: us-east-1\n    object_lock: {{mode: governance, days: 1}}\nretention:\n  keep_last: 1\n",
            dir.path().join("store").display(),
            svc.var("WPDR_TEST_S3_ENDPOINT"),
            svc.var("WPDR_TEST_S3_ACCESS_KEY_ID"),
            moto.endpoint,
        ),
    )
    .unwrap();
    let (id, secret) = Moto::key(&svc, "ADMIN");
    let run = |args: &[&str]| {
        svc.wpdr_cmd(&cfg, args)
            .env(
                "WPDR_MEDIA_SOURCE_SECRET_ACCESS_KEY",
                svc.var("WPDR_TEST_S3_SECRET_ACCESS_KEY"),
            )
            .env("WPDR_MEDIA_OFFSITE_ACCESS_KEY_ID", &id)
            .env("WPDR_MEDIA_OFFSITE_SECRET_ACCESS_KEY", &secret)
            .output()
            .unwrap()
    };
    expect(
        &run(&["check-config"]),
        0,
        "media object lock governance for 1 days",
    );
    let out = run(&["media", "sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let retained_until = |key: String| {
        let admin = admin.clone();
        let bucket = offsite.clone();
        async move {
            admin
                .head_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .unwrap()
                .object_lock_retain_until_date()
                .cloned()
        }
    };
    assert!(
        retained_until(photo.to_string()).await.is_some(),
        "the copy has no retention"
    );

    // An overwrite: the replaced version is retained under its own lock.
    put_object(&s3, &source, photo, b"version two".to_vec()).await;
    let out = run(&["media", "sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let retained = keys_under(&admin, &offsite, ".wpdr-retained/".to_string()).await;
    assert_eq!(retained.len(), 1, "{retained:?}");
    assert!(retained_until(retained[0].clone()).await.is_some());
    let versions = admin
        .list_object_versions()
        .bucket(&offsite)
        .prefix(&retained[0])
        .send()
        .await
        .unwrap();
    let version = versions.versions()[0].version_id().unwrap().to_string();
    let refused = admin
        .delete_object()
        .bucket(&offsite)
        .key(&retained[0])
        .version_id(&version)
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a retained version was deleted before its date"
    );

    // No set refers to the retained version, but it is locked: prune keeps it.
    let out = run(&["--output", "json", "prune"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["media_retained"]["locked"], 1, "{report}");
    assert_eq!(report["media_retained"]["deleted"], 0, "{report}");
    assert_eq!(
        keys_under(&admin, &offsite, ".wpdr-retained/".to_string())
            .await
            .len(),
        1
    );
}
