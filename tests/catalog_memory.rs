//! Catalog scans hold one manifest at a time: a site whose sets each list
//! tens of thousands of artifacts (thousands of tables, chunked) is listed,
//! windowed and pruned with the heap of about one manifest, not of all of
//! them. Measured with a counting allocator (exact, not a timing).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use wpdr::catalog::{Catalog, Manifest};
use wpdr::store::{LocalStore, Store};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size > layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most heap held above what was live when `f` started.
async fn peak_during<T>(f: impl std::future::Future<Output = T>) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f.await;
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

const SETS: usize = 16;
const ARTIFACTS: usize = 25_000;

fn manifest(id: &str, n: usize) -> Manifest {
    let t = chrono::NaiveDateTime::parse_from_str(&id[..16], "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc();
    let artifacts: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "path": format!("db/2-data-{:04}-{:06}-wp_table_{}.sql.zst", i / 20, i % 20, i / 20),
                "size": 1000 + i,
                "sha256": format!("{:064x}", i),
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "format_version": 1, "set_id": id, "site": "big", "schedule": "daily",
        "started_at": t, "finished_at": t, "wpdr_version": "test", "artifacts": artifacts,
        "database": {
            "server_version": "10.11.6-MariaDB", "database": "wp", "source": "db:3306",
            "default_charset": "", "default_collation": "",
            "consistency": {"method": "single-connection", "connections": 1, "commits_blocked_ms": 0.0},
            "binlog": null, "gtid_binlog_pos": "0-1-100", "max_statement_bytes": 0,
            "tables": [], "objects": [], "raw_bytes": 0, "snapshot_at": t
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn scans_hold_one_manifest_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::from(LocalStore::open(dir.path()).await.unwrap());
    let catalog = Catalog::new(&store, "big", "big");
    let mut ids = Vec::new();
    for day in 0..SETS {
        let id = format!("202611{:02}T030000Z-{:04x}", day + 1, day);
        let m = manifest(&id, ARTIFACTS);
        let json = serde_json::to_vec(&m).unwrap();
        store
            .put_bytes(&catalog.key(&id, "manifest.json"), json.into())
            .await
            .unwrap();
        ids.push(id);
    }
    // What one manifest costs to read and hold.
    let (one, one_peak) = peak_during(catalog.load(&ids[0])).await;
    assert_eq!(one.unwrap().artifacts.len(), ARTIFACTS);
    assert!(
        one_peak > 4 << 20,
        "the test's manifests are large: {one_peak}"
    );
    let all = one_peak * SETS;

    let (scan, peak) = peak_during(catalog.scan()).await;
    let scan = scan.unwrap();
    assert_eq!(scan.complete.len(), SETS);
    assert_eq!(scan.complete[0].id, ids[SETS - 1], "newest first");
    assert!(scan.complete.iter().all(|s| s.artifacts == ARTIFACTS));
    assert!(
        peak < 2 * one_peak,
        "a scan held {peak} bytes; one manifest takes {one_peak}, all {all}"
    );

    // What `window::load` does: the summaries, then the window over them.
    let (window, peak) = peak_during(async {
        let sets = catalog
            .summaries()
            .await
            .map_err(wpdr::binlog::BinlogError::from)?;
        wpdr::binlog::window::load_for(&store, "big", &sets).await
    })
    .await;
    assert_eq!(window.unwrap().ranges.len(), SETS);
    assert!(
        peak < 2 * one_peak,
        "the window held {peak} bytes (all: {all})"
    );

    let (latest, peak) = peak_during(catalog.resolve("latest")).await;
    assert_eq!(latest.unwrap().set_id, ids[SETS - 1]);
    assert!(
        peak < 2 * one_peak,
        "`latest` held {peak} bytes (all: {all})"
    );

    let policy = wpdr::config::RetentionPolicy {
        keep_daily: 3,
        ..Default::default()
    };
    let shared = std::sync::Arc::new(Store::from(LocalStore::open(dir.path()).await.unwrap()));
    let (pruned, peak) =
        peak_during(catalog.prune(shared, &policy, chrono::Duration::hours(1), 60, true)).await;
    assert_eq!(pruned.unwrap().deleted.len(), SETS - 3);
    assert!(
        peak < 2 * one_peak,
        "a dry-run prune held {peak} bytes (all: {all})"
    );
}
