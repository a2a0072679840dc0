//! The site-URL rewrite against a real WordPress (Debian's package, served by
//! `php -S`): after `wpdr rewrite-url`, WordPress itself reads the rewritten
//! serialised options and serves pages that link to the new address only.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use std::path::Path;
use std::process::Command;

fn php_get_option(site: &Path, name: &str) -> serde_json::Value {
    let code = format!(
        "$_SERVER['HTTP_HOST']='localhost'; require '{}/wp-load.php'; echo json_encode(get_option('{name}'));",
        site.display()
    );
    let out = Command::new("php").args(["-r", &code]).output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("php printed: {} {}", stdout(&out), stderr(&out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_wordpress_reads_its_rewritten_data_and_serves_the_new_url() {
    let svc = Services::get();
    let db = svc.fresh_database("wprw").await;
    let old_port = free_port();
    let new_port = free_port();
    let old = format!("http://127.0.0.1:{old_port}");
    let new = format!("http://localhost:{new_port}");
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let host = format!("127.0.0.1:{}", svc.db_port());
    let install = Command::new("scripts/wp-site.sh")
        .args([
            "install",
            site.to_str().unwrap(),
            &host,
            &db,
            &svc.var("WPDR_TEST_DB_USER"),
            &svc.var("WPDR_TEST_DB_PASSWORD"),
            &old,
        ])
        .output()
        .unwrap();
    assert!(install.status.success(), "{}", stderr(&install));
    let mut c = svc.admin(Some(&db)).await;
    // Double-serialised (a plugin storing serialize(serialize(...))), JSON with
    // escaped slashes, and a value whose serialisation is already broken.
    let inner = format!("a:1:{{s:3:\"cdn\";s:{}:\"{old}/cdn\";}}", old.len() + 4);
    let double = format!("s:{}:\"{inner}\";", inner.len());
    let json_value = format!("{{\"home\":\"{}\"}}", old.replace('/', "\\/"));
    let broken = format!("a:1:{{s:3:\"url\";s:999:\"{old}\";}}");
    c.exec_drop(
        "INSERT INTO wp_options (option_name, option_value, autoload) VALUES ('wpdr_double', ?, 'no'), ('wpdr_json', ?, 'no'), ('wpdr_broken', ?, 'no')",
        (&double, &json_value, &broken),
    )
    .await
    .unwrap();

    let dir2 = tempfile::tempdir().unwrap();
    let cfg = svc.local_config(dir2.path(), &db, "");
    let target = format!(
        "mysql://{}@127.0.0.1:{}/{db}",
        svc.var("WPDR_TEST_DB_USER"),
        svc.db_port()
    );
    let args = |dry: bool| {
        let mut a = vec![
            "--output".to_string(),
            "json".into(),
            "rewrite-url".into(),
            "--target".into(),
            target.clone(),
            "--from".into(),
            old.clone(),
            "--to".into(),
            new.clone(),
        ];
        if dry {
            a.push("--dry-run".into());
        }
        a
    };
    let count_old = || async {
        let mut c = svc.admin(Some(&db)).await;
        let n: Option<u64> = c
            .exec_first(
                "SELECT (SELECT COUNT(*) FROM wp_options WHERE option_value LIKE ?) + (SELECT COUNT(*) FROM wp_posts WHERE post_content LIKE ? OR guid LIKE ?)",
                (format!("%{old}%"), format!("%{old}%"), format!("%{old}%")),
            )
            .await
            .unwrap();
        n.unwrap()
    };
    let before = count_old().await;
    assert!(
        before > 10,
        "the demo site should mention its URL: {before}"
    );

    let run = |a: Vec<String>| {
        svc.wpdr_cmd(&cfg, &a.iter().map(String::as_str).collect::<Vec<_>>())
            .env("WPDR_TARGET_PASSWORD", svc.var("WPDR_TEST_DB_PASSWORD"))
            .output()
            .unwrap()
    };
    let dry = run(args(true));
    let dry = json(&dry);
    assert!(dry["rows_changed"].as_u64().unwrap() >= before - 1, "{dry}");
    assert_eq!(count_old().await, before, "a dry run changed data");

    let out = run(args(false));
    let report = json(&out);
    assert_eq!(report["rows_unparseable"].as_u64(), Some(1), "{report}");
    let unparseable: Vec<&serde_json::Value> = report["columns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["unparseable"].as_u64() == Some(1))
        .collect();
    assert_eq!(unparseable[0]["table"], "wp_options");
    // Only the broken value still holds the old URL.
    assert_eq!(count_old().await, 1);

    // WordPress reads every rewritten value back.
    let widget = php_get_option(&site, "wpdr_demo_widget");
    assert_eq!(widget["url"], format!("{new}/contact/"), "{widget}");
    assert_eq!(
        widget["nested"]["logo"],
        format!("{new}/wp-content/uploads/logo.png")
    );
    assert_eq!(php_get_option(&site, "siteurl"), serde_json::json!(new));
    let double = php_get_option(&site, "wpdr_double");
    let inner: serde_json::Value = {
        let code = format!(
            "echo json_encode(unserialize({}));",
            serde_json::to_string(double.as_str().unwrap())
                .unwrap()
                .replace('$', "\\$")
        );
        let out = Command::new("php").args(["-r", &code]).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(inner["cdn"], format!("{new}/cdn"));
    assert_eq!(
        php_get_option(&site, "wpdr_json"),
        serde_json::json!(format!("{{\"home\":\"{}\"}}", new.replace('/', "\\/")))
    );

    // Served at the new address, the site links to the new address only.
    let serve = Command::new("scripts/wp-site.sh")
        .args([
            "serve",
            site.to_str().unwrap(),
            &format!("127.0.0.1:{new_port}"),
        ])
        .output()
        .unwrap();
    let pid: i32 = stdout(&serve).trim().parse().unwrap();
    let page = Command::new("curl")
        .args([
            "-s",
            &format!("http://127.0.0.1:{new_port}/"),
            "-H",
            &format!("Host: localhost:{new_port}"),
        ])
        .output()
        .unwrap();
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let html = stdout(&page);
    let log = std::fs::read_to_string(site.join("php-server.log")).unwrap_or_default();
    assert!(html.contains(&format!("{new}/")), "{html}\n{log}");
    assert!(!html.contains(&old), "the page still links to the old URL");
    assert!(html.contains("Post 12"), "{html}");
}

/// A table without a key (a plugin's log, say) with more distinct values than
/// the rewrite reads at once, and a new address that contains the old one:
/// every value is rewritten exactly once, whatever the paging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_table_larger_than_a_page_is_rewritten_once_per_value() {
    let svc = Services::get();
    let old = "http://shop.example";
    // Contains the old address, and its rewritten values sort after the
    // originals: a pager that saw its own writes would rewrite them again.
    let new = "http://shop.example/staging";
    let db = svc
        .database_with(
            "rewrite_keyless",
            &[
                "CREATE TABLE plugin_log (line TEXT, seen INT)",
                // 1,000 distinct serialised values (ten times a page of the
                // client pass), each twice; as many plain ones (the server's).
                "INSERT INTO plugin_log SELECT CONCAT('s:', LENGTH(v), ':\"', v, '\";'), seq FROM \
                 (SELECT seq, CONCAT('visit http://shop.example/p/', seq) AS v FROM seq_1_to_1000) s",
                "INSERT INTO plugin_log SELECT line, seen FROM plugin_log",
                "INSERT INTO plugin_log SELECT CONCAT('visit http://shop.example/p/', seq), -seq FROM seq_1_to_1000",
                "INSERT INTO plugin_log SELECT CONCAT('visit http://shop.example/p/', seq), -seq FROM seq_1_to_1000",
                "INSERT INTO plugin_log VALUES ('no address here', 0), (NULL, 0)",
            ],
        )
        .await;
    let report = rewrite_url(&svc, &db, old, new);
    // Rows, not distinct values.
    assert_eq!(report["rows_changed"].as_u64(), Some(4000), "{report}");
    let mut c = svc.admin(Some(&db)).await;
    let rewritten: Option<i64> = c
        .exec_first(
            "SELECT COUNT(*) FROM plugin_log WHERE seen > 0 AND line = CONCAT('s:', \
             LENGTH(CONCAT('visit http://shop.example/staging/p/', seen)), ':\"visit http://shop.example/staging/p/', seen, '\";')",
            (),
        )
        .await
        .unwrap();
    assert_eq!(rewritten, Some(2000), "serialised values, lengths fixed");
    let plain: Option<i64> = c
        .exec_first(
            "SELECT COUNT(*) FROM plugin_log WHERE seen < 0 AND line = CONCAT('visit http://shop.example/staging/p/', -seen)",
            (),
        )
        .await
        .unwrap();
    assert_eq!(plain, Some(2000));
    let twice: Option<i64> = c
        .exec_first(
            "SELECT COUNT(*) FROM plugin_log WHERE line LIKE '%staging/staging%'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(twice, Some(0));
}

/// Runs `wpdr rewrite-url` on `db` (JSON report).
fn rewrite_url(svc: &Services, db: &str, from: &str, to: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.local_config(dir.path(), db, "");
    let target = format!(
        "mysql://{}@127.0.0.1:{}/{db}",
        svc.var("WPDR_TEST_DB_USER"),
        svc.db_port()
    );
    let out = svc
        .wpdr_cmd(
            &cfg,
            &[
                "--output",
                "json",
                "rewrite-url",
                "--target",
                &target,
                "--from",
                from,
                "--to",
                to,
            ],
        )
        .env("WPDR_TARGET_PASSWORD", svc.var("WPDR_TEST_DB_PASSWORD"))
        .output()
        .unwrap();
    json(&out)
}

/// The rewrite runs in two passes: serialised values in the client, every
/// other value by the server's REPLACE in place. Whatever pass a value
/// takes, the database must end up exactly as the client's rewriter alone
/// would have left it: values that look serialised only to a
/// case-insensitive eye (`A:1:{…}`), that almost look serialised, that
/// start or end with the URL, hold it JSON-escaped, sit in a BLOB or a
/// latin1 column, repeat across more key ranges than one statement covers,
/// or are serialised and broken (reported, left as they were).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_value_ends_as_the_rewriter_alone_would_leave_it() {
    use wpdr::wordpress::rewrite::{Outcome, Rewriter};
    let svc = Services::get();
    let (old, new) = ("http://old.example", "https://new.example/site");
    let ser = |s: &str| format!("s:{}:\"{s}\";", s.len());
    let bodies: Vec<String> = vec![
        format!("visit {old}/a page"),
        format!("{old}"),
        format!("{old}/ends-with"),
        format!("starts {old}"),
        format!("{{\"u\":\"{}\\/x\"}}", old.replace('/', "\\/")),
        format!("both {old} and {}", old.replace('/', "\\/")),
        format!("ünïcödé {old}/ü"),
        ser(&format!("{old}/x")),
        format!("a:1:{{s:3:\"url\";{}}}", ser(&format!("{old}/y"))),
        format!("A:1:{{s:3:\"url\";{}}}", ser(&format!("{old}/y"))),
        format!("S:5:\"{old}\";"),
        format!("a:x:{{{old}}}"),
        format!("a:1:{{{old}}} "),
        format!("b:{old};"),
        format!("i:{old};"),
        format!("s:3:\"{old}\";"),
        ser(&ser(&format!("{old}/nested"))),
        format!(
            "O:8:\"stdClass\":1:{{s:3:\"url\";{}}}",
            ser(&format!("{old}/o"))
        ),
        format!("C:3:\"Foo\":{}:{{{old}}}", old.len() + 2),
        // Multi-byte characters where the serialised test looks: the
        // server tests characters, the rewriter bytes; they must agree.
        format!("é:1:{{{old}}}"),
        format!("a:ü:{{{old}}}"),
        format!("a:1:{{{old}}}é"),
        format!("s:9:\"{old}🙂\";🙂"),
        format!("{}", ser(&format!("{old}/ü🙂"))),
        "N;".to_string(),
        "no address at all".to_string(),
        format!("{}", old.to_uppercase()),
    ];
    let mut statements = vec![
        "CREATE TABLE t (id BIGINT PRIMARY KEY, txt TEXT, bin BLOB, lat VARCHAR(300) CHARACTER SET latin1) \
         DEFAULT CHARSET utf8mb4 COLLATE utf8mb4_unicode_ci"
            .to_string(),
        "CREATE TABLE k (txt TEXT) DEFAULT CHARSET utf8mb4 COLLATE utf8mb4_unicode_ci".to_string(),
        // Where a restore finds the site's own address.
        "CREATE TABLE wp_options (option_id BIGINT PRIMARY KEY AUTO_INCREMENT, option_name VARCHAR(191) UNIQUE, option_value LONGTEXT)".to_string(),
        format!("INSERT INTO wp_options (option_name, option_value) VALUES ('siteurl', '{old}/'), ('home', '{old}')"),
    ];
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"));
    for (i, b) in bodies.iter().enumerate() {
        // Keys far apart: the server pass needs several ranges.
        let id = i as i64 * 7_001 - 50_000;
        let lat = if b.is_ascii() {
            quote(b)
        } else {
            "NULL".into()
        };
        statements.push(format!(
            "INSERT INTO t VALUES ({id}, {}, {}, {lat})",
            quote(b),
            quote(b)
        ));
        statements.push(format!(
            "INSERT INTO k VALUES ({}), ({})",
            quote(b),
            quote(b)
        ));
    }
    let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
    let db = svc.database_with("rewrite_passes", &refs).await;

    let mut c = svc.admin(Some(&db)).await;
    type Stored = Option<Vec<u8>>;
    let read = |rows: Vec<(i64, Stored, Stored, Stored)>| rows;
    let before = read(
        c.exec("SELECT id, txt, bin, lat FROM t ORDER BY id", ())
            .await
            .unwrap(),
    );
    let keyless_before: Vec<Option<Vec<u8>>> = c
        .exec("SELECT txt FROM k ORDER BY CAST(txt AS BINARY)", ())
        .await
        .unwrap();
    let rewriter = Rewriter::new(old, new);
    let expect = |v: &Option<Vec<u8>>, unparseable: &mut u64| {
        v.as_ref().map(|v| match rewriter.rewrite(v) {
            Outcome::Changed(n) => n,
            Outcome::Unparseable(_) => {
                *unparseable += 1;
                v.clone()
            }
            Outcome::Unchanged => v.clone(),
        })
    };
    let mut unparseable = 0;
    let expected: Vec<_> = before
        .iter()
        .map(|(id, a, b, l)| {
            (
                *id,
                expect(a, &mut unparseable),
                expect(b, &mut unparseable),
                expect(l, &mut unparseable),
            )
        })
        .collect();
    let mut keyless_expected: Vec<_> = keyless_before
        .iter()
        .map(|v| expect(v, &mut unparseable))
        .collect();
    keyless_expected.sort();

    // A restore under the new address rewrites the rows as it loads them:
    // the same values, every table still checked against the set.
    let dir = tempfile::tempdir().unwrap();
    let namespace = format!("rwl{:06x}", rand::random::<u32>() & 0xffffff);
    let cfg = svc.local_restore_config(dir.path(), &db);
    let set = svc.backup(&cfg);
    let out = svc.wpdr(
        &cfg,
        &[
            "--output",
            "json",
            "restore",
            &set,
            "--namespace",
            &namespace,
            "--plan",
            "db-only",
            "--site-url",
            new,
        ],
    );
    let r = json(&out);
    assert_eq!(r["ok"], true, "{r:#}\n{}", stderr(&out));
    let steps = &r["journal"]["steps"];
    let in_load = &steps["database"]["summary"]["url_rewrite"];
    assert_eq!(in_load["from"], serde_json::json!([old]), "{in_load}");
    assert_eq!(in_load["not_read"], serde_json::json!([]), "{in_load}");
    assert_eq!(steps["url-rewrite"]["summary"]["in_load"], true);
    assert_eq!(
        in_load["rows_unparseable"].as_u64(),
        Some(unparseable),
        "{in_load:#}"
    );
    let mut restored = svc.admin(Some(&namespace)).await;
    let loaded = read(
        restored
            .exec("SELECT id, txt, bin, lat FROM t ORDER BY id", ())
            .await
            .unwrap(),
    );
    assert_eq!(loaded, expected, "table t as loaded under the new address");
    let mut keyless_loaded: Vec<Option<Vec<u8>>> =
        restored.exec("SELECT txt FROM k", ()).await.unwrap();
    keyless_loaded.sort();
    assert_eq!(keyless_loaded, keyless_expected, "table k as loaded");
    let home: Option<String> = restored
        .query_first("SELECT option_value FROM wp_options WHERE option_name = 'home'")
        .await
        .unwrap();
    assert_eq!(home.as_deref(), Some(new));
    drop(restored);
    svc.admin(None)
        .await
        .query_drop(format!("DROP DATABASE `{namespace}`"))
        .await
        .unwrap();

    let report = rewrite_url(&svc, &db, old, new);
    assert_eq!(
        report["rows_changed"].as_u64(),
        in_load["rows_changed"].as_u64(),
        "rows changed after a load and in the load: {report:#}"
    );
    let after = read(
        c.exec("SELECT id, txt, bin, lat FROM t ORDER BY id", ())
            .await
            .unwrap(),
    );
    for (got, want) in after.iter().zip(&expected) {
        let show =
            |v: &Option<Vec<u8>>| v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
        assert_eq!(
            (show(&got.1), show(&got.2), show(&got.3)),
            (show(&want.1), show(&want.2), show(&want.3)),
            "row {} (the original: {:?})",
            got.0,
            before.iter().find(|b| b.0 == got.0).map(|b| show(&b.1))
        );
    }
    let mut keyless_after: Vec<Option<Vec<u8>>> = c.exec("SELECT txt FROM k", ()).await.unwrap();
    keyless_after.sort();
    assert_eq!(keyless_after, keyless_expected, "the keyless table");
    assert_eq!(
        report["rows_unparseable"].as_u64(),
        Some(unparseable),
        "{report:#}"
    );
    // A rerun finds nothing left to do.
    let again = rewrite_url(&svc, &db, old, new);
    assert_eq!(again["rows_changed"].as_u64(), Some(0), "{again:#}");
}
