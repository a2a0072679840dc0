//! A bucket's listing fetched in parallel (cut into subtrees at '/') comes
//! out complete, once each, and in the exact key order a plain sequential
//! listing gives: against Garage, with a tree of uploads, a folder of more
//! keys than one page (left uncut), the first page ending inside it, and
//! names that sort around a subtree ('2024.jpg' < '2024/' < '20240.jpg').

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_listing_is_the_plain_listing_in_order() {
    let svc = Services::get();
    let s3 = svc.s3();
    let bucket = svc.fresh_bucket("listing");
    let mut keys: Vec<String> = Vec::new();
    keys.push("a.jpg".into());
    keys.push("zz.jpg".into());
    for i in 0..1100 {
        keys.push(format!("flat/f-{i:04}.bin"));
    }
    for y in 2023..=2025 {
        for m in 1..=12 {
            for n in 0..15 {
                keys.push(format!("wp-content/uploads/{y}/{m:02}/img-{n}.jpg"));
            }
        }
    }
    for k in [
        "wp-content/uploads/2024.jpg",
        "wp-content/uploads/2024/",
        "wp-content/uploads/20240.jpg",
        "wp-content/index.php",
    ] {
        keys.push(k.to_string());
    }
    for chunk in keys.chunks(200) {
        put_objects(
            &s3,
            &bucket,
            chunk
                .iter()
                .map(|k| (k.clone(), k.as_bytes().to_vec()))
                .collect(),
        )
        .await;
    }
    keys.sort();

    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.local_config(
        dir.path(),
        "unused",
        &svc.media_yaml(&bucket, "listing-offsite-unused", ""),
    );
    let (cfg, _) = svc.open_store(&cfg).await;
    // Near the server a listing is paged through; here both ways are checked.
    let paged = wpdr::media::bucket::Bucket::open(&cfg.media.unwrap().source)
        .await
        .unwrap();
    let parallel = paged
        .clone()
        .with_parallel_listing_after(std::time::Duration::ZERO);
    for (source, prefix, skip) in [
        (&parallel, "", None),
        (&parallel, "wp-content/", None),
        (&parallel, "", Some("flat/")),
        (&paged, "", None),
    ] {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let lister = {
            let source = source.clone();
            tokio::spawn(async move { source.list_into(prefix, skip, tx).await })
        };
        let mut got = Vec::new();
        while let Some(listed) = rx.recv().await {
            got.push(listed.unwrap().key);
        }
        lister.await.unwrap();
        let want: Vec<String> = keys
            .iter()
            .filter(|k| k.starts_with(prefix) && !skip.is_some_and(|s| k.starts_with(s)))
            .cloned()
            .collect();
        assert_eq!(got.len(), want.len(), "prefix '{prefix}' skip {skip:?}");
        assert!(
            got == want,
            "prefix '{prefix}': not the plain listing in order"
        );
    }
}
