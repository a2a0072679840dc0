//! The store against real backends: Garage (S3) and a local directory.
//! Multipart streaming with SHA-256, paginated listing, aborts that leave
//! nothing behind, and only finished objects visible.

mod common;

use bytes::Bytes;
use common::*;
use sha2::{Digest, Sha256};
use wpdr::config::{Config, StoreConfig};
use wpdr::store::{hash_object, Store, StoreError};

/// A store on Garage under a fresh prefix, with 5 MiB multipart parts.
async fn s3_store(svc: &Services) -> (Store, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = svc.s3_config(dir.path(), "unused", "");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(text.contains("part_size: 5MiB"));
    let env = std::collections::HashMap::from([(
        "WPDR_S3_SECRET_ACCESS_KEY".to_string(),
        svc.var("WPDR_TEST_S3_SECRET_ACCESS_KEY"),
    )]);
    let cfg = Config::from_yaml(&text, &env).unwrap();
    let prefix = cfg.site_prefix();
    (Store::open(&cfg.store).await.unwrap(), prefix)
}

/// Deterministic, incompressible-ish bytes.
fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_write_streams_and_hashes_what_it_stores() {
    let svc = Services::get();
    let (store, prefix) = s3_store(&svc).await;
    let key = format!("{prefix}/big.bin");
    let body = data(23 * 1024 * 1024 + 17, 1);
    let mut w = store.writer(&key);
    for piece in body.chunks(777_777) {
        w.write(piece).await.unwrap();
    }
    // Not visible before finish.
    assert!(store.head(&key).await.unwrap().is_none());
    let written = w.finish().await.unwrap();
    assert_eq!(written.size, body.len() as u64);
    assert_eq!(written.sha256, hex::encode(Sha256::digest(&body)));
    let (size, sha) = hash_object(&store, &key).await.unwrap();
    assert_eq!((size, sha), (written.size, written.sha256.clone()));
    assert_eq!(store.get_bytes(&key).await.unwrap(), Bytes::from(body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_writes_leave_no_object() {
    let svc = Services::get();
    let (store, prefix) = s3_store(&svc).await;
    let key = format!("{prefix}/aborted.bin");
    let mut w = store.writer(&key);
    w.write(&data(12 * 1024 * 1024, 2)).await.unwrap(); // two parts in flight
    w.abort().await;
    assert!(store.head(&key).await.unwrap().is_none());
    // Dropped without finish: the same.
    let mut w = store.writer(&key);
    w.write(&data(6 * 1024 * 1024, 3)).await.unwrap();
    drop(w);
    assert!(store.head(&key).await.unwrap().is_none());
    assert!(matches!(
        store.get_bytes(&key).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_paginates_past_a_thousand_keys() {
    let svc = Services::get();
    let (store, prefix) = s3_store(&svc).await;
    let store = std::sync::Arc::new(store);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1100u32 {
        let store = store.clone();
        let key = format!("{prefix}/many/{:05}/x", i);
        tasks.spawn(async move {
            store
                .put_bytes(&key, Bytes::from(vec![1u8; (i % 7) as usize]))
                .await
                .unwrap()
        });
        while tasks.len() > 32 {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
    let all = store.list(&format!("{prefix}/many/")).await.unwrap();
    assert_eq!(all.len(), 1100);
    assert_eq!(all[3].size, 3);
    let dirs = store.list_dirs(&format!("{prefix}/many/")).await.unwrap();
    assert_eq!(dirs.len(), 1100);
    assert!(dirs[0].ends_with("/many/00000/"));
    // A page at a time: more than one page, every key once, ascending.
    let many = format!("{prefix}/many/");
    let mut pages = store.pages(&many);
    let mut seen = Vec::new();
    let mut count = 0;
    while let Some(page) = pages.next().await.unwrap() {
        assert!(page.len() <= 1000);
        seen.extend(page.into_iter().map(|o| o.key));
        count += 1;
    }
    assert!(count >= 2, "{count} page(s)");
    assert_eq!(seen, all.iter().map(|o| o.key.clone()).collect::<Vec<_>>());
    // Deleting the prefix goes page by page and takes every object.
    assert_eq!(store.delete_prefix(&many).await.unwrap(), 1100);
    assert!(store.list(&many).await.unwrap().is_empty());
}

#[tokio::test]
async fn local_store_hides_unfinished_writes_and_creates_exclusively() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreConfig::Local {
        path: dir.path().to_path_buf(),
        prefix: String::new(),
    })
    .await
    .unwrap();
    let mut w = store.writer("a/b/obj");
    w.write(b"half").await.unwrap();
    assert!(
        store.list("a/").await.unwrap().is_empty(),
        "a partial write must not be listed"
    );
    let written = w.finish().await.unwrap();
    assert_eq!(written.size, 4);
    assert_eq!(store.list("a/").await.unwrap().len(), 1);
    assert!(store
        .put_if_absent("a/lock", Bytes::from_static(b"1"))
        .await
        .unwrap());
    assert!(!store
        .put_if_absent("a/lock", Bytes::from_static(b"2"))
        .await
        .unwrap());
    assert_eq!(
        store.get_bytes("a/lock").await.unwrap(),
        Bytes::from_static(b"1")
    );
    let mut w = store.writer("a/gone");
    w.write(b"x").await.unwrap();
    w.abort().await;
    assert_eq!(store.list("a/").await.unwrap().len(), 2);
    assert_eq!(
        std::fs::read_dir(dir.path().join("a")).unwrap().count(),
        2,
        "no temporary file is left behind"
    );
}
