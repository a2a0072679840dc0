//! Full-site restore and drills against the real services: a real WordPress
//! (Debian's package, `php -S`) with posts, serialised options holding its
//! URL and uploads in a Garage bucket; backed up, then restored with the
//! `site` plan (database, media, Redis flushed cold, URL rewrite, the site
//! answering, checks), killed and resumed, and drilled with a media object
//! deleted offsite behind wpdr's back.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

struct Site {
    _dir: tempfile::TempDir,
    cfg: PathBuf,
    site_dir: PathBuf,
    db: String,
    source: String,
    offsite: String,
    servers: Vec<Child>,
}

impl Drop for Site {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn serve(dir: &Path, port: u16) -> Child {
    let child = Command::new("php")
        .args(["-S", &format!("127.0.0.1:{port}"), "-t"])
        .arg(dir)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

fn wp_config(dir: &Path, svc: &Services, db: &str) {
    let out = Command::new("scripts/wp-site.sh")
        .args([
            "config",
            dir.to_str().unwrap(),
            &format!("127.0.0.1:{}", svc.db_port()),
            db,
            &svc.var("WPDR_TEST_DB_USER"),
            &svc.var("WPDR_TEST_DB_PASSWORD"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A WordPress site with uploads, served live, and a config that captures
/// its answers at backup and restores into `{namespace}` databases/buckets.
async fn wordpress_site(svc: &Services, stem: &str, extra: &str, uploads: usize) -> Site {
    let db = svc.fresh_database(stem).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let site_dir = dir.path().join("site");
    let install = Command::new("scripts/wp-site.sh")
        .args([
            "install",
            site_dir.to_str().unwrap(),
            &format!("127.0.0.1:{}", svc.db_port()),
            &db,
            &svc.var("WPDR_TEST_DB_USER"),
            &svc.var("WPDR_TEST_DB_PASSWORD"),
            &url,
        ])
        .output()
        .unwrap();
    assert!(install.status.success(), "{}", stderr(&install));
    let live = serve(&site_dir, port);
    let source = svc.fresh_bucket("site-src");
    let offsite = svc.fresh_bucket("site-off");
    let s3 = svc.s3();
    // The demo's attachment, plus a few more uploads the database does not name.
    let mut objects = vec![(
        "wp-content/uploads/2026/01/logo.png".to_string(),
        b"\x89PNG demo logo".to_vec(),
    )];
    for i in 0..uploads {
        objects.push((
            format!("wp-content/uploads/2026/11/photo-{i}.jpg"),
            vec![i as u8; 20_000 + i * 100],
        ));
    }
    put_objects(&s3, &source, objects).await;
    let yaml = format!(
        "{}wordpress:\n  url: {url}\nrestore:\n  database: mysql://{}@127.0.0.1:{}/{{namespace}}\n  media: {{bucket: '{{namespace}}-media', endpoint: '{}', region: {}, access_key_id: {}}}\n{extra}",
        svc.media_yaml(&source, &offsite, ""),
        svc.var("WPDR_TEST_DB_USER"),
        svc.db_port(),
        svc.var("WPDR_TEST_S3_ENDPOINT"),
        svc.var("WPDR_TEST_S3_REGION"),
        svc.var("WPDR_TEST_S3_ACCESS_KEY_ID"),
    );
    let cfg = svc.local_config(dir.path(), &db, &yaml);
    Site {
        _dir: dir,
        cfg,
        site_dir,
        db,
        source,
        offsite,
        servers: vec![live],
    }
}

/// A copy of the site's code pointed at the database `namespace` restores into.
fn restored_copy(site: &mut Site, svc: &Services, namespace: &str) -> String {
    let port = free_port();
    let dir = site.site_dir.parent().unwrap().join(namespace);
    let out = Command::new("cp")
        .args(["-r", site.site_dir.to_str().unwrap(), dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    wp_config(&dir, svc, namespace);
    site.servers.push(serve(&dir, port));
    format!("http://127.0.0.1:{port}")
}

fn redis(port: u16, dir: &Path) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--dir"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (apt install redis-server; scripts/dev-services.sh does)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    stdout(&out).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wordpress_site_is_restored_whole_answers_as_at_backup_and_starts_with_a_cold_cache() {
    let svc = Services::get();
    let redis_port = free_port();
    let mut site = wordpress_site(
        &svc,
        "fullsite",
        &format!("  caches: ['redis://127.0.0.1:{redis_port}']\n"),
        40,
    )
    .await;
    let redis_dir = tempfile::tempdir().unwrap();
    site.servers.push(redis(redis_port, redis_dir.path()));
    let backup = json(&svc.wpdr(&site.cfg, &["--output", "json", "backup"]));
    let set = backup["id"].as_str().unwrap().to_string();
    let shown = json(&svc.wpdr(&site.cfg, &["--output", "json", "sets", "show", &set]));
    let captured = shown["answers"]["answers"].as_array().unwrap();
    assert!(captured.len() >= 3, "home, posts-api, post: {shown}");

    let ns = format!("wpfull{:06x}", rand::random::<u32>() & 0xffffff);
    let new_url = restored_copy(&mut site, &svc, &ns);
    // A stale page in the cache from before the restore.
    redis_cli(redis_port, &["SET", "wp:posts:1", "stale"]);

    // The dry run names what each step touches and writes nothing.
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "--output",
            "json",
            "restore",
            &set,
            "--namespace",
            &ns,
            "--plan",
            "site",
            "--site-url",
            &new_url,
        ];
        args.extend_from_slice(extra);
        svc.wpdr(&site.cfg, &args)
    };
    let dry = restore(&["--dry-run"]);
    let dry = json(&dry);
    assert_eq!(dry["problems"].as_array().unwrap().len(), 0, "{dry}");
    let touches: Vec<&str> = dry["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["touches"].as_str().unwrap())
        .collect();
    assert!(
        touches
            .iter()
            .any(|t| t.contains(&format!("database '{ns}'"))),
        "{touches:?}"
    );
    assert!(
        touches.iter().any(|t| t.contains(&format!("'{ns}-media'"))),
        "{touches:?}"
    );
    assert_eq!(redis_cli(redis_port, &["GET", "wp:posts:1"]), "stale");

    let out = restore(&[]);
    let r = json(&out);
    assert_eq!(r["ok"], true, "{r}\n{}", stderr(&out));
    let steps = &r["journal"]["steps"];
    for id in [
        "database-server",
        "database",
        "media",
        "url-rewrite",
        "cache",
        "application",
        "checks",
    ] {
        assert_eq!(steps[id]["state"], "done", "{id}: {}", steps[id]);
    }
    let checks = &steps["checks"]["summary"];
    assert_eq!(checks["tables"]["verified_at_load"], 12, "{checks}");
    assert_eq!(checks["media"]["missing"], 0, "{checks}");
    assert_eq!(checks["media"]["objects"], 41, "{checks}");
    assert!(
        checks["site"]["compared"].as_array().unwrap().len() >= 3,
        "{checks}"
    );
    assert_eq!(
        checks["site"]["differences"].as_array().unwrap().len(),
        0,
        "{checks}"
    );
    assert!(
        steps["url-rewrite"]["summary"]["rows_changed"]
            .as_u64()
            .unwrap()
            > 10
    );
    // Rewritten as the rows were loaded, every table checked with the changes.
    assert_eq!(steps["url-rewrite"]["summary"]["in_load"], true, "{steps}");
    assert_eq!(
        steps["database"]["summary"]["url_rewrite"]["not_read"],
        serde_json::json!([])
    );
    // wp_posts (GUIDs, links) was loaded rewritten and verified so: the
    // checks do not count it as changed since (only what the site writes).
    assert!(
        steps["database"]["summary"]["checksums_at_load"]["wp_posts"].is_string(),
        "{}",
        steps["database"]["summary"]
    );
    assert!(
        !checks["tables"]["changed_since_load"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("wp_posts")),
        "{checks}"
    );
    // A serialised option holding the URL was rewritten with its lengths fixed.
    let mut c = svc.admin(Some(&ns)).await;
    use mysql_async::prelude::Queryable;
    let widget: String = c
        .query_first("SELECT option_value FROM wp_options WHERE option_name = 'wpdr_demo_widget'")
        .await
        .unwrap()
        .unwrap();
    let contact = format!("{new_url}/contact/");
    assert!(
        widget.contains(&format!("s:{}:\"{contact}\"", contact.len())),
        "{widget}"
    );
    // The cache starts cold.
    assert_eq!(redis_cli(redis_port, &["EXISTS", "wp:posts:1"]), "0");
    // The restored site links to its new address only.
    let home = reqwest::get(format!("{new_url}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains(&new_url), "home page");
    let old_url = {
        let y = std::fs::read_to_string(&site.cfg).unwrap();
        y.lines()
            .find(|l| l.trim_start().starts_with("url:"))
            .unwrap()
            .split_once("url:")
            .unwrap()
            .1
            .trim()
            .to_string()
    };
    assert!(
        !home.contains(&old_url),
        "the restored home page still links to {old_url}"
    );

    // A finished restore cannot be resumed; its dry run now knows step times.
    let again = svc.wpdr(
        &site.cfg,
        &[
            "restore",
            "--resume",
            r["journal"]["restore_id"].as_str().unwrap(),
        ],
    );
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let ns2 = format!("{ns}b");
    let dry = json(&svc.wpdr(
        &site.cfg,
        &[
            "--output",
            "json",
            "restore",
            &set,
            "--namespace",
            &ns2,
            "--plan",
            "site",
            "--dry-run",
        ],
    ));
    assert!(
        dry["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["last_seconds"].is_number()),
        "{dry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_fails_when_media_was_deleted_offsite_and_tears_down_what_it_made() {
    let svc = Services::get();
    let site = wordpress_site(&svc, "drillfail", "", 40).await;
    let set = svc.backup(&site.cfg);
    // Behind wpdr's back: one object of the set disappears from the mirror.
    let s3 = svc.s3();
    s3.delete_object()
        .bucket(&site.offsite)
        .key("wp-content/uploads/2026/11/photo-7.jpg")
        .send()
        .await
        .unwrap();
    let report_path = site.site_dir.parent().unwrap().join("drill.json");
    let out = svc.wpdr(
        &site.cfg,
        &[
            "--output",
            "json",
            "drill",
            "--set",
            &set,
            "--plan",
            "site",
            "--report",
            report_path.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(14),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["ok"], false);
    let media = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "media")
        .unwrap();
    assert_eq!(media["state"], "failed", "{report}");
    assert!(
        media["error"].as_str().unwrap().contains("photo-7.jpg"),
        "{report}"
    );
    assert!(report["rpo_seconds"].as_f64().unwrap() >= 0.0);
    // The drill's own database and bucket are gone; the live site's are not.
    let ns = report["namespace"].as_str().unwrap();
    let teardown = report["teardown"].as_array().unwrap();
    assert!(
        teardown.iter().any(|t| t
            .as_str()
            .unwrap()
            .starts_with(&format!("dropped database '{ns}'"))),
        "{report}"
    );
    assert!(
        teardown.iter().any(|t| t
            .as_str()
            .unwrap()
            .starts_with(&format!("deleted bucket '{ns}-media'"))),
        "{report}"
    );
    let mut c = svc.admin(None).await;
    use mysql_async::prelude::Queryable;
    let left: Option<String> = c
        .exec_first(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (ns,),
        )
        .await
        .unwrap();
    assert_eq!(left, None);
    // With --keep nothing is torn down: the failed drill's database stays to be looked at.
    let kept = svc.wpdr(
        &site.cfg,
        &[
            "--output", "json", "drill", "--set", &set, "--plan", "site", "--keep",
        ],
    );
    assert_eq!(kept.status.code(), Some(14));
    let kept: serde_json::Value = serde_json::from_slice(&kept.stdout).unwrap();
    assert_eq!(kept["kept"], true);
    assert_eq!(kept["teardown"].as_array().unwrap().len(), 0);
    let kept_ns = kept["namespace"].as_str().unwrap();
    let left: Option<String> = c
        .exec_first(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (kept_ns,),
        )
        .await
        .unwrap();
    assert_eq!(left.as_deref(), Some(kept_ns));
    c.query_drop(format!("DROP DATABASE `{kept_ns}`"))
        .await
        .unwrap();
    // The reports are in the store: `status` shows the newest (failed) drill.
    let status = json(&svc.wpdr(&site.cfg, &["--output", "json", "status"]));
    assert_eq!(status["last_drill"]["ok"], false, "{status}");
    assert_eq!(
        status["last_drill"]["restore_id"], kept["restore_id"],
        "{status}"
    );
}

/// The newest restore journal in a local store's `restores/` directory.
/// Only committed `.json` files: a temporary file beside one may hold a
/// state its restore never committed (killed between write and rename).
fn newest_journal(dir: &Path) -> Option<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    serde_json::from_slice(&std::fs::read(files.pop()?).ok()?).ok()
}

fn journal_file(site: &Site) -> Option<serde_json::Value> {
    newest_journal(
        &site
            .cfg
            .parent()
            .unwrap()
            .join("store/wpdr/testsite/restores"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_killed_in_the_middle_resumes_without_redoing_finished_steps() {
    let svc = Services::get();
    // Enough uploads that the media step is still running when the database is in.
    let mut site = wordpress_site(&svc, "killresume", "", 1500).await;
    let set = svc.backup(&site.cfg);
    let ns = format!("wpkill{:06x}", rand::random::<u32>() & 0xffffff);
    let new_url = restored_copy(&mut site, &svc, &ns);
    let mut child = svc
        .wpdr_cmd(
            &site.cfg,
            &[
                "restore",
                &set,
                "--namespace",
                &ns,
                "--plan",
                "site",
                "--site-url",
                &new_url,
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // While it runs, a resume elsewhere is refused: the journal has a live holder.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let running = loop {
        if let Some(j) = journal_file(&site) {
            break j;
        }
        assert!(std::time::Instant::now() < deadline, "no journal appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let id = running["restore_id"].as_str().unwrap().to_string();
    let busy = svc.wpdr(&site.cfg, &["restore", "--resume", &id]);
    assert_eq!(busy.status.code(), Some(9), "{}", stderr(&busy));
    assert!(stderr(&busy).contains("still running"), "{}", stderr(&busy));
    // Kill -9 once the database step is done and the media step is running.
    let at_kill = loop {
        if let Some(j) = journal_file(&site) {
            let s = &j["steps"];
            if s["database"]["state"] == "done" && s["media"]["state"] == "running" {
                child.kill().unwrap();
                child.wait().unwrap();
                break j;
            }
            assert_ne!(
                s["media"]["state"], "done",
                "the media step finished before the database: {j}"
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restore never reached the kill point"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before the kill point"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(at_kill["restore_id"], id.as_str());
    assert_eq!(at_kill["status"], "running");
    // The journal left by the kill does not claim anything it did not finish.
    assert_ne!(at_kill["steps"]["checks"]["state"], "done");

    let out = svc.wpdr(&site.cfg, &["--output", "json", "restore", "--resume", &id]);
    let r = json(&out);
    assert_eq!(r["ok"], true, "{r}");
    let steps = &r["journal"]["steps"];
    assert_eq!(r["journal"]["runs"], 2);
    // Finished steps were not redone: one run, same start time as before the kill.
    for id in ["database-server", "database"] {
        assert_eq!(steps[id]["runs"], 1, "{id} was redone: {}", steps[id]);
        assert_eq!(steps[id]["started_at"], at_kill["steps"][id]["started_at"]);
    }
    // The interrupted step ran again and completed what was missing.
    assert_eq!(steps["media"]["runs"], 2, "{}", steps["media"]);
    assert!(
        steps["media"]["summary"]["already_present"]
            .as_u64()
            .unwrap()
            > 0,
        "{}",
        steps["media"]
    );
    assert_eq!(steps["checks"]["summary"]["media"]["missing"], 0);
    assert_eq!(steps["checks"]["summary"]["media"]["objects"], 1501);
    // Resuming a finished restore is refused politely; an unknown id is named.
    let again = svc.wpdr(&site.cfg, &["restore", "--resume", &id]);
    assert!(again.status.success(), "{}", stderr(&again));
    let unknown = svc.wpdr(
        &site.cfg,
        &["restore", "--resume", "r20200101T000000Z-dead"],
    );
    assert_eq!(unknown.status.code(), Some(7), "{}", stderr(&unknown));
    assert!(stderr(&unknown).contains("r20200101T000000Z-dead"));
}

/// The `full` plan with the in-memory Kubernetes API for the cluster steps:
/// objects applied into the new namespace with images pinned to the digests
/// that ran, rollouts waited for, then the data steps against the real
/// services and the checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_plan_applies_the_namespace_waits_for_rollouts_and_restores_the_data() {
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;
    use std::sync::Arc;
    let svc = Services::get();
    let mut site = wordpress_site(&svc, "fullplan", "cluster:\n  namespace: shop\n", 10).await;
    let kube = fake_shop(Some(2)).build().await.unwrap();
    let (cfg, store) = svc.open_store(&site.cfg).await;
    let store = Arc::new(store);
    let m = wpdr::jobs::backup::run_with(
        &cfg,
        store.clone(),
        "manual",
        Arc::new(|_| {}),
        Some(kube.clone()),
    )
    .await
    .unwrap();
    assert!(m.cluster.is_some() && m.answers.is_some());
    let ns = format!("wpfp{:06x}", rand::random::<u32>() & 0xffffff);
    let new_url = restored_copy(&mut site, &svc, &ns);
    // The fake API server runs no controllers: play the Deployment
    // controller, reporting the rollout ready only once the application
    // step waits for it (so the wait is seen), a moment after it started.
    let controller = {
        let api: kube::Api<Deployment> = kube::Api::namespaced(kube.clone(), &ns);
        let restores = site
            .cfg
            .parent()
            .unwrap()
            .join("store/wpdr/testsite/restores");
        tokio::spawn(async move {
            loop {
                let waiting = newest_journal(&restores)
                    .is_some_and(|j| j["steps"]["application"]["state"] == "running");
                if let (true, Ok(Some(mut d))) = (waiting, api.get_opt("wordpress").await) {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    d.status = Some(
                        serde_json::from_value(json!({
                            "observedGeneration": d.metadata.generation.unwrap_or(0),
                            "readyReplicas": want, "replicas": want
                        }))
                        .unwrap(),
                    );
                    api.replace_status("wordpress", &Default::default(), &d)
                        .await
                        .unwrap();
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
    };
    let ctx = wpdr::restore::run::RestoreContext {
        cfg,
        store,
        kube: Some(kube.clone()),
        cache_password: None,
        // kube-fake-client cannot model Namespace objects; real clusters can.
        create_namespace: false,
    };
    let plan = wpdr::restore::run::load_plan("full").unwrap();
    let outcome = wpdr::restore::run::start(
        &ctx,
        wpdr::restore::run::RestoreRequest {
            set: &m.set_id,
            namespace: &ns,
            plan,
            site_url: Some(&new_url),
            drill: false,
            point: None,
        },
    )
    .await
    .unwrap();
    controller.await.unwrap();
    let j = &outcome.journal;
    assert!(outcome.ok, "{}", serde_json::to_string_pretty(j).unwrap());
    let ns_step = j.step("namespace").unwrap();
    assert_eq!(ns_step.summary["pins"], 1, "{:?}", ns_step.summary);
    let app = j.step("application").unwrap();
    assert!(
        app.log
            .iter()
            .any(|l| l.contains("Deployment/wordpress 0/2 ready")),
        "{:?}",
        app.log
    );
    let d: Deployment = kube::Api::namespaced(kube.clone(), &ns)
        .get("wordpress")
        .await
        .unwrap();
    let image = d.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert_eq!(image, "wordpress@sha256:feed");
    assert_eq!(
        j.step("checks").unwrap().summary["site"]["differences"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// The daemon's drill job: a manual trigger runs a drill, and `/metrics`
/// then reports the newest drill's result, age, RTO and RPO from the report
/// the drill kept in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_a_drill_and_exports_its_result() {
    let svc = Services::get();
    let site = wordpress_site(&svc, "daemondrill", "", 10).await;
    svc.backup(&site.cfg);
    let sched = site.cfg.parent().unwrap().join("schedules");
    std::fs::create_dir(&sched).unwrap();
    std::fs::write(
        sched.join("drill.yaml"),
        "name: weekly-drill\njob: drill\nplan: site\ncron: \"0 0 7 1 1 *\"\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = svc.spawn_daemon(&site.cfg, &sched, port, 60);
    wait_listening(port);
    let (_, m) = http(port, "GET", "/metrics");
    assert_eq!(metric(&m, "wpdr_last_drill_success"), -1.0, "{m}");
    assert_eq!(http(port, "POST", "/run/weekly-drill").0, 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let m = loop {
        let (_, m) = http(port, "GET", "/metrics");
        if metric(&m, "wpdr_job_successes_total{job=\"weekly-drill\"") >= 1.0 {
            break m;
        }
        assert!(
            !m.contains("job=\"weekly-drill\",kind=\"drill\",reason="),
            "the drill failed:\n{m}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no drill in 120 s:\n{m}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(metric(&m, "wpdr_last_drill_success"), 1.0, "{m}");
    assert!(metric(&m, "wpdr_last_drill_age_seconds") >= 0.0);
    assert!(metric(&m, "wpdr_last_drill_rto_seconds") > 0.0);
    assert!(metric(&m, "wpdr_last_drill_rpo_seconds") > 0.0);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    // A plan given to a job that is not a drill is refused with the file named.
    std::fs::write(
        sched.join("bad.yaml"),
        "name: bad\njob: backup\nplan: site\ncron: \"0 0 7 1 1 *\"\n",
    )
    .unwrap();
    let out = svc.wpdr(
        &site.cfg,
        &["check-config", "--schedules", sched.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad.yaml") && stderr(&out).contains("only for job drill"));
}

/// Publishes a post whose body shows a new upload (put in the uploads
/// bucket first, as WordPress would); returns the post's id.
async fn publish_with_upload(svc: &Services, site: &Site, slug: &str, upload: &str) -> u64 {
    put_object(
        &svc.s3(),
        &site.source,
        upload,
        format!("image of {slug}").into_bytes(),
    )
    .await;
    let mut c = svc.admin(Some(&site.db)).await;
    use mysql_async::prelude::Queryable;
    c.exec_drop(
        "INSERT INTO wp_posts (post_author, post_date, post_date_gmt, post_content, post_title, post_excerpt, post_status, post_name, to_ping, pinged, post_modified, post_modified_gmt, post_content_filtered, post_type) VALUES (1, NOW(), UTC_TIMESTAMP(), ?, ?, '', 'publish', ?, '', '', NOW(), UTC_TIMESTAMP(), '', 'post')",
        (format!("<p>Post {slug}</p><img src=\"/{upload}\">"), format!("Title {slug}"), slug),
    )
    .await
    .unwrap();
    c.query_first::<u64, _>("SELECT LAST_INSERT_ID()")
        .await
        .unwrap()
        .unwrap()
}

/// #17: the whole site to a point in time. After the set, a post with a
/// new upload is published; then the point; then another post with its
/// upload. `restore latest --to-time T` brings back the first (its page
/// answers, its image is in the restored bucket) and not the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_site_comes_back_as_it_was_at_a_point_in_time() {
    let svc = Services::get();
    let mut site = wordpress_site(&svc, "sitepitr", "", 2).await;
    svc.backup(&site.cfg);
    ok(&svc.wpdr(&site.cfg, &["binlog", "archive", "--until-caught-up"]));
    let before_id = publish_with_upload(
        &svc,
        &site,
        "before-the-point",
        "wp-content/uploads/2026/11/before.jpg",
    )
    .await;
    ok(&svc.wpdr(&site.cfg, &["media", "sync"]));
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let point = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let after_id = publish_with_upload(
        &svc,
        &site,
        "after-the-point",
        "wp-content/uploads/2026/11/after.jpg",
    )
    .await;
    ok(&svc.wpdr(&site.cfg, &["media", "sync"]));
    ok(&svc.wpdr(&site.cfg, &["binlog", "archive", "--until-caught-up"]));

    let ns = format!("wppit{:06x}", rand::random::<u32>() & 0xffffff);
    let new_url = restored_copy(&mut site, &svc, &ns);
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "--output",
            "json",
            "restore",
            "latest",
            "--to-time",
            &point,
            "--namespace",
            &ns,
            "--plan",
            "site",
            "--site-url",
            &new_url,
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let run = |extra: &[&'static str]| {
        let a = args(extra);
        svc.wpdr(&site.cfg, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // The plan names the point, the set before it and the replay.
    let dry = json(&run(&["--dry-run"]));
    assert_eq!(dry["problems"].as_array().unwrap().len(), 0, "{dry}");
    assert_eq!(
        dry["point_in_time"]["point"].as_str().map(|p| &p[..19]),
        Some(&point[..19]),
        "{dry}"
    );

    let out = run(&[]);
    let r = json(&out);
    assert_eq!(r["ok"], true, "{r}\n{}", stderr(&out));
    assert_eq!(
        r["journal"]["point"].as_str().map(|p| &p[..19]),
        Some(&point[..19]),
        "{r}"
    );
    // The mirror generations were chosen once, at the start, and kept with
    // the restore: the run before the point and the one after it.
    let media_at = &r["journal"]["media_at"];
    assert!(media_at["before"]["key"].is_string(), "{media_at}");
    assert!(media_at["after"]["key"].is_string(), "{media_at}");
    let load = &r["journal"]["steps"]["database"]["summary"];
    assert!(
        load["point_in_time"]["replayed"]["transactions"]
            .as_u64()
            .unwrap()
            >= 1,
        "{load}"
    );

    // The database: the post before the point, not the one after.
    use mysql_async::prelude::Queryable;
    let mut c = svc.admin(Some(&ns)).await;
    let titles: Vec<String> = c
        .query("SELECT post_title FROM wp_posts WHERE post_name IN ('before-the-point', 'after-the-point')")
        .await
        .unwrap();
    assert_eq!(titles, ["Title before-the-point"]);
    // The media: the first upload, not the second.
    let restored = bucket_contents(&svc.s3(), &format!("{ns}-media")).await;
    assert_eq!(
        restored
            .get("wp-content/uploads/2026/11/before.jpg")
            .map(|o| o.0.clone()),
        Some(b"image of before-the-point".to_vec())
    );
    assert!(!restored.contains_key("wp-content/uploads/2026/11/after.jpg"));
    // The site: the first post's page answers and shows its image; the second is not there.
    let page = reqwest::get(format!("{new_url}/?p={before_id}"))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(
        body.contains("Title before-the-point") && body.contains("before.jpg"),
        "{body}"
    );
    let gone = reqwest::get(format!("{new_url}/?p={after_id}"))
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    // The checks passed with the pages changed since the set (not a failure).
    let checks = &r["journal"]["steps"]["checks"]["summary"];
    assert_eq!(
        checks["site"]["differences"].as_array().unwrap().len(),
        0,
        "{checks}"
    );
    // A drill to the point: restored, checked, torn down; its report carries
    // the point and measures the RPO from it.
    let drill = json(&svc.wpdr(
        &site.cfg,
        &[
            "--output",
            "json",
            "drill",
            "--to-time",
            &point,
            "--plan",
            "site",
        ],
    ));
    assert_eq!(drill["ok"], true, "{drill}");
    assert_eq!(
        drill["point"].as_str().map(|p| &p[..19]),
        Some(&point[..19]),
        "{drill}"
    );
    let started =
        chrono::DateTime::parse_from_rfc3339(drill["started_at"].as_str().unwrap()).unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(&point).unwrap();
    let rpo = drill["rpo_seconds"].as_f64().unwrap();
    assert!(
        (rpo - (started - at).num_milliseconds() as f64 / 1000.0).abs() < 0.01,
        "{drill}"
    );
    // A point before every set: refused by name before anything is created.
    let early = format!("{ns}e");
    let out = svc.wpdr(
        &site.cfg,
        &[
            "restore",
            "latest",
            "--to-time",
            "2020-01-01T00:00:00Z",
            "--namespace",
            &early,
            "--plan",
            "site",
        ],
    );
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stderr(&out).contains("2020-01-01"), "{}", stderr(&out));
    let mut c = svc.admin(None).await;
    let created: Option<i64> = c
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (&early,),
        )
        .await
        .unwrap();
    assert_eq!(created, Some(0));
}
