//! A real fault under the media mirror: the S3 server (Garage, serving both
//! the source and the offsite bucket) is SIGKILLed mid-run and restarted.
//! Retries carry the run through; the mirror ends equal to the source.
//! This binary restarts the shared dev Garage, so it holds a single test.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mirror_survives_a_restart_of_the_s3_server() {
    let svc = Services::get();
    let dev = svc.var("WPDR_DEV_DIR");
    let s3 = svc.s3();
    let source = svc.fresh_bucket("fsrc");
    let offsite = svc.fresh_bucket("foff");
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(
        dir.path(),
        "unused",
        &svc.media_yaml(&source, &offsite, "  concurrency: 4\n"),
    );
    let objects = (0..600)
        .map(|i| {
            let k = format!("wp-content/uploads/2021/{i:04}.jpg");
            (k, vec![(i % 256) as u8; 20_000 + i])
        })
        .collect();
    put_objects(&s3, &source, objects).await;
    let mut child = svc.spawn_wpdr(&cfg, &["--output", "json", "media", "sync"]);
    wait_for_objects(&s3, &offsite, 40).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the mirror finished before the fault; add objects"
    );
    unsafe { libc::kill(garage_pid(&dev), libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(800));
    restart_garage(&svc);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the mirror did not survive the S3 restart: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let src = bucket_contents(&s3, &source).await;
    let off = bucket_contents(&s3, &offsite).await;
    assert_eq!(src.len(), 600);
    assert_eq!(
        off.keys().collect::<Vec<_>>(),
        src.keys().collect::<Vec<_>>()
    );
    for (k, v) in &src {
        assert!(off[k].0 == v.0, "{k} differs");
    }
}
