//! Every value round-trips exactly: backup to Garage, verify, restore into a
//! fresh MariaDB server, and compare row by row with the source (not only by
//! wpdr's own checksums). Also the no-wpdr restore with `zstd` + `mariadb`.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::process::Command;

/// Creates the edge cases of the issue in the current database.
async fn create_edge_cases(c: &mut Conn) {
    let stmts = [
        // Reserved words and backticks in identifiers.
        "CREATE TABLE `select` (`id` INT PRIMARY KEY, `from` VARCHAR(20), `we``ird col` INT, `order` TEXT)",
        "INSERT INTO `select` VALUES (1, 'where', 7, 'by'), (2, NULL, NULL, '')",
        // Every type that is easy to get wrong.
        "CREATE TABLE types (
            id BIGINT UNSIGNED PRIMARY KEY AUTO_INCREMENT,
            s VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
            t LONGTEXT,
            b LONGBLOB,
            vb VARBINARY(64),
            d DECIMAL(65,30),
            dt DATETIME(6),
            ts TIMESTAMP(6) NULL DEFAULT NULL,
            dd DATE, tm TIME(3), y YEAR,
            j JSON,
            bits BIT(10), bit1 BIT(1),
            f FLOAT, dbl DOUBLE,
            e ENUM('a','b c','d''e'), st SET('x','y','z'),
            l1 VARCHAR(50) CHARACTER SET latin1,
            g_virtual BIGINT AS (id * 2) VIRTUAL,
            g_stored VARCHAR(300) AS (CONCAT(IFNULL(s,''), '!')) STORED,
            neg TINYINT, big BIGINT UNSIGNED
        )",
        "INSERT INTO types (s,t,b,vb,d,dt,ts,dd,tm,y,j,bits,bit1,f,dbl,e,st,l1,neg,big) VALUES
          ('emoji 😀🎉 and ünïcødé 中文', 'line1\nline2\r\n\ttab \\\\ back\\\\slash \\' quote \" dq', NULL, X'00', 
           '-12345678901234567890123456789012345.123456789012345678901234567890',
           '2038-01-19 03:14:07.999999', '2001-02-03 04:05:06.000007', '1000-01-01', '-838:59:59.000', 1901,
           '{\"k\": [1, 2.5, \"x😀\", null, true], \"nested\": {\"a\": \"b\"}}', b'1010101010', b'1',
           3.14159, 2.718281828459045, 'b c', 'x,z', 'Ça va déjà', -128, 18446744073709551615),
          ('', '', '', '', 0, '1970-01-01 00:00:01', NULL, NULL, NULL, NULL, NULL, b'0', b'0', 0, -0.0, 'd''e', '', '', 0, 0),
          (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        // The same values in a table without an auto-increment column: a
        // restore sends its rows as LOAD DATA (`types` goes as INSERTs).
        "CREATE TABLE types_plain LIKE types",
        "ALTER TABLE types_plain MODIFY id BIGINT UNSIGNED NOT NULL",
        "INSERT INTO types_plain (id,s,t,b,vb,d,dt,ts,dd,tm,y,j,bits,bit1,f,dbl,e,st,l1,neg,big) \
         SELECT id,s,t,b,vb,d,dt,ts,dd,tm,y,j,bits,bit1,f,dbl,e,st,l1,neg,big FROM types",
        // A BLOB with all 256 byte values, twice, in both orders.
        "CREATE TABLE blobs (id INT PRIMARY KEY, data BLOB, tiny TINYBLOB)",
        // No primary key, with duplicate rows.
        "CREATE TABLE nokey (a INT, b TEXT, c VARBINARY(10))",
        "INSERT INTO nokey VALUES (1, 'dup', X'00'), (1, 'dup', X'00'), (NULL, NULL, NULL), (2, '', '')",
        // Composite primary key, non-integer.
        "CREATE TABLE composite (a INT, b VARCHAR(10), c DOUBLE, PRIMARY KEY (b, a))",
        "INSERT INTO composite VALUES (1, 'x', 1.5), (2, 'x', NULL), (1, 'y', -1e300)",
        // An empty table.
        "CREATE TABLE empty_table (id INT PRIMARY KEY, v TEXT)",
        // Foreign keys: the child's chunks may load before the parent's.
        "CREATE TABLE parent (id INT PRIMARY KEY) ENGINE=InnoDB",
        "CREATE TABLE child (id INT PRIMARY KEY, parent_id INT, FOREIGN KEY (parent_id) REFERENCES parent(id)) ENGINE=InnoDB",
        "INSERT INTO parent VALUES (1), (2)",
        "INSERT INTO child VALUES (10, 1), (11, 2)",
        // WordPress multisite: several sites' tables in one database.
        "CREATE TABLE wp_blogs (blog_id BIGINT(20) NOT NULL AUTO_INCREMENT, site_id BIGINT(20) NOT NULL DEFAULT 0, domain VARCHAR(200) NOT NULL DEFAULT '', path VARCHAR(100) NOT NULL DEFAULT '', registered DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00', PRIMARY KEY (blog_id)) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci",
        "INSERT INTO wp_blogs VALUES (1, 1, 'example.com', '/', '0000-00-00 00:00:00'), (2, 1, 'example.com', '/two/', '2026-01-01 00:00:00')",
        "CREATE TABLE wp_posts (ID BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT, post_content LONGTEXT NOT NULL, post_title TEXT NOT NULL, post_date DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00', PRIMARY KEY (ID), KEY post_date (post_date)) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci",
        "CREATE TABLE wp_2_posts LIKE wp_posts",
        "CREATE TABLE wp_postmeta (meta_id BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT, post_id BIGINT(20) UNSIGNED NOT NULL DEFAULT 0, meta_key VARCHAR(255) DEFAULT NULL, meta_value LONGTEXT, PRIMARY KEY (meta_id), KEY post_id (post_id), KEY meta_key (meta_key(191))) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci",
        "CREATE TABLE wp_2_options (option_id BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT, option_name VARCHAR(191) NOT NULL DEFAULT '', option_value LONGTEXT NOT NULL, autoload VARCHAR(20) NOT NULL DEFAULT 'yes', PRIMARY KEY (option_id), UNIQUE KEY option_name (option_name)) DEFAULT CHARSET=utf8mb4",
        "INSERT INTO wp_2_options (option_name, option_value) VALUES ('siteurl', 'http://example.com/two'), ('widget', 'a:2:{s:5:\"title\";s:7:\"Héllo;\";s:3:\"url\";s:22:\"http://example.com/two\";}')",
        "INSERT INTO wp_2_posts (post_content, post_title, post_date) VALUES ('<p>second site</p>', 'Two', '0000-00-00 00:00:00')",
        // Views (one on another), a trigger, routines and an event: created after the data.
        "CREATE VIEW v_base AS SELECT id, s FROM types WHERE s IS NOT NULL",
        "CREATE VIEW v_on_view AS SELECT COUNT(*) AS n FROM v_base",
        "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(100))",
        "CREATE TRIGGER trg_child_insert AFTER INSERT ON child FOR EACH ROW INSERT INTO audit (note) VALUES (CONCAT('child ', NEW.id))",
        "CREATE FUNCTION add_one(x INT) RETURNS INT DETERMINISTIC RETURN x + 1",
        "CREATE PROCEDURE touch_audit() BEGIN INSERT INTO audit (note) VALUES ('proc; with semicolon'); SELECT 1; END",
        "CREATE EVENT ev_nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM audit WHERE id < 0",
        // A sequence that has handed out values (its state must come back, not its start).
        "CREATE SEQUENCE order_numbers START WITH 1000 INCREMENT BY 7 CACHE 10",
        "SELECT NEXTVAL(order_numbers), NEXTVAL(order_numbers), NEXTVAL(order_numbers)",
        // System-versioned tables, implicit and explicit periods: history must survive.
        "CREATE TABLE prices (id INT PRIMARY KEY, amount DECIMAL(10,2)) WITH SYSTEM VERSIONING",
        "INSERT INTO prices VALUES (1, 9.99), (2, 19.99), (3, 5.00)",
        "UPDATE prices SET amount = 10.99 WHERE id = 1",
        "DELETE FROM prices WHERE id = 3",
        "CREATE TABLE stock (sku VARCHAR(20) PRIMARY KEY, qty INT, valid_from TIMESTAMP(6) GENERATED ALWAYS AS ROW START, valid_to TIMESTAMP(6) GENERATED ALWAYS AS ROW END, PERIOD FOR SYSTEM_TIME(valid_from, valid_to)) WITH SYSTEM VERSIONING",
        "INSERT INTO stock (sku, qty) VALUES ('a', 1), ('b', 2)",
        "UPDATE stock SET qty = qty + 10",
        // Non-transactional engines (many plugins still create MyISAM tables).
        "CREATE TABLE legacy_myisam (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=MyISAM",
        "INSERT INTO legacy_myisam VALUES (1, 'm1'), (2, 'm2')",
        "CREATE TABLE legacy_aria (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=Aria",
        "INSERT INTO legacy_aria VALUES (1, 'a1')",
        // An event scheduled in its creator's time zone, a routine created
        // over a latin1 connection: both must come back as they were.
        "SET SESSION time_zone = '+05:00'",
        "CREATE EVENT ev_local_time ON SCHEDULE AT '2031-06-01 09:30:00' DISABLE DO DELETE FROM audit WHERE id < 0",
        "SET SESSION time_zone = SYSTEM",
        "SET NAMES latin1",
        "CREATE FUNCTION latin_hello() RETURNS VARCHAR(20) DETERMINISTIC RETURN 'hello'",
        "SET NAMES utf8mb4",
    ];
    c.query_drop("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'")
        .await
        .unwrap();
    for s in stmts {
        c.query_drop(s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let all: Vec<u8> = (0u8..=255).collect();
    let rev: Vec<u8> = (0u8..=255).rev().collect();
    c.exec_drop(
        "INSERT INTO blobs VALUES (1, ?, ?), (2, ?, ?)",
        (all.clone(), all.clone(), rev.clone(), rev),
    )
    .await
    .unwrap();
    // A 32 MiB row, built on the server so the client's packet limit is not the test.
    c.query_drop("CREATE TABLE huge_row (id INT PRIMARY KEY, payload LONGBLOB)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO huge_row VALUES (1, REPEAT(CONCAT(UNHEX('00FF5C27220D0A1A'), 'abcdefgh'), 2097152))")
        .await
        .unwrap();
    // A table large enough to be cut into several key-range chunks (chunk_size 1MiB).
    c.query_drop("CREATE TABLE chunky (id INT PRIMARY KEY, body VARCHAR(600))")
        .await
        .unwrap();
    c.query_drop("INSERT INTO chunky SELECT seq, REPEAT(MD5(seq), 16) FROM seq_1_to_20000")
        .await
        .unwrap();
    // A composite key whose first column is an integer is chunked on that column.
    c.query_drop("CREATE TABLE wp_term_relationships (object_id BIGINT UNSIGNED NOT NULL, term_taxonomy_id BIGINT UNSIGNED NOT NULL, term_order INT NOT NULL DEFAULT 0, pad VARCHAR(300), PRIMARY KEY (object_id, term_taxonomy_id))")
        .await
        .unwrap();
    c.query_drop("INSERT INTO wp_term_relationships SELECT seq DIV 3, seq % 3, seq % 7, REPEAT('x', 250) FROM seq_1_to_15000")
        .await
        .unwrap();
    // Size estimates come from InnoDB statistics; make them current.
    c.query_drop("ANALYZE TABLE chunky, wp_term_relationships")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_round_trips_through_s3_into_a_fresh_server() {
    let svc = Services::get();
    let db = svc.fresh_database("roundtrip").await;
    let mut src = svc.admin(Some(&db)).await;
    create_edge_cases(&mut src).await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.s3_config(dir.path(), &db, "backup:\n  chunk_size: 1MiB\n");
    let out = svc
        .wpdr_cmd(&cfg, &["--output", "json", "backup"])
        .env("WPDR_LOG", "wpdr=debug")
        .output()
        .unwrap();
    // Rows were read by the lean reader (a plain connection to the server).
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        log.contains("dump workers connected") && log.contains("wire"),
        "{log}"
    );
    let backup = json(&out);
    let set = backup["id"].as_str().unwrap().to_string();

    // The manifest records what the issue asks for.
    let show = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "show", &set]));

    // Through the driver the same rows give the same set: every table's
    // rows, checksum and chunks, and the same dump bytes.
    let driver = json(
        &svc.wpdr_cmd(&cfg, &["--output", "json", "backup"])
            .env("WPDR_ROW_READER", "driver")
            .output()
            .unwrap(),
    );
    let driver_set = driver["id"].as_str().unwrap();
    let driver_show = json(&svc.wpdr(&cfg, &["--output", "json", "sets", "show", driver_set]));
    let summary = |show: &serde_json::Value| {
        let tables: Vec<_> = show["database"]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].clone(),
                    t["rows"].clone(),
                    t["checksum"].clone(),
                    t["data_artifacts"].as_array().unwrap().len(),
                )
            })
            .collect();
        (tables, show["database"]["raw_bytes"].clone())
    };
    assert_eq!(summary(&show), summary(&driver_show));
    let dbm = &show["database"];
    assert_eq!(show["format_version"], 1);
    assert!(dbm["binlog"]["file"]
        .as_str()
        .unwrap()
        .starts_with("binlog"));
    assert!(dbm["gtid_binlog_pos"].as_str().unwrap().starts_with("0-1-"));
    assert_eq!(dbm["consistency"]["method"], "backup-stage-block-commit");
    assert!(dbm["server_version"].as_str().unwrap().contains("MariaDB"));
    let tables = dbm["tables"].as_array().unwrap();
    let chunky = tables.iter().find(|t| t["name"] == "chunky").unwrap();
    assert!(
        chunky["data_artifacts"].as_array().unwrap().len() > 1,
        "chunky was not chunked: {chunky}"
    );
    assert_eq!(chunky["rows"], 20000);
    let rel = tables
        .iter()
        .find(|t| t["name"] == "wp_term_relationships")
        .unwrap();
    assert!(
        rel["data_artifacts"].as_array().unwrap().len() > 1,
        "composite key not chunked: {rel}"
    );
    let types = tables.iter().find(|t| t["name"] == "types").unwrap();
    let cols: Vec<&str> = types["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        !cols.contains(&"g_virtual") && !cols.contains(&"g_stored"),
        "generated columns must be schema only"
    );
    let kinds: Vec<&str> = dbm["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    for k in ["view", "trigger", "function", "procedure", "event"] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    // Nothing is left out silently: sequences and versioned tables are in the
    // set as what they are, every non-view object of the source is listed,
    // and the non-transactional tables were read at the snapshot.
    let kind_of = |name: &str| {
        tables
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in the set"))["kind"]
            .clone()
    };
    assert_eq!(kind_of("order_numbers"), "sequence");
    assert_eq!(kind_of("prices"), "system-versioned");
    assert_eq!(kind_of("stock"), "system-versioned");
    assert_eq!(kind_of("legacy_myisam"), serde_json::Value::Null);
    let source_tables = common::tables(&mut src).await;
    assert_eq!(tables.len(), source_tables.len(), "{source_tables:?}");
    assert!(dbm.get("skipped").is_none(), "{dbm}");
    assert!(dbm["consistency"].get("not_at_snapshot").is_none());
    // Credentials never reach the manifest.
    let text = show.to_string();
    assert!(
        !text.contains(&svc.var("WPDR_TEST_DB_PASSWORD"))
            && !text.contains(&svc.var("WPDR_TEST_S3_SECRET_ACCESS_KEY"))
    );

    let v = json(&svc.wpdr(&cfg, &["--output", "json", "verify", &set]));
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);

    // Restore into a fresh server (1G packets for the 32 MiB row).
    let target = MariaDb::start(&["--max-allowed-packet=1G"]);
    let out = svc.restore_db(&cfg, &set, &target, "restored", &[]);
    let report = json(&out);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["mismatches"], 0);
    // Each table's share of the load: every checked table timed, a table
    // with deferred indexes (wp_postmeta's KEYs) with its index build, and
    // no table checked before its own load, build and check took place.
    let times = report["table_times"].as_array().unwrap();
    let checked: Vec<&str> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    let timed: Vec<&str> = times.iter().map(|t| t["table"].as_str().unwrap()).collect();
    assert_eq!(timed, checked, "{report}");
    for t in times {
        let secs = |k: &str| t[k].as_f64().unwrap();
        assert!(secs("check_seconds") > 0.0, "{t}");
        assert!(
            secs("checked_at") >= secs("check_seconds") + secs("index_seconds") - 1e-6,
            "{t}"
        );
    }
    let postmeta = times.iter().find(|t| t["table"] == "wp_postmeta").unwrap();
    assert!(
        postmeta["index_seconds"].as_f64().unwrap() > 0.0,
        "{postmeta}"
    );
    assert!(
        postmeta["load_seconds"].as_f64().unwrap() > 0.0,
        "{postmeta}"
    );

    let mut dst = target.conn(Some("restored")).await;
    assert_same_database(&mut src, &mut dst).await;
    // Generated columns are recomputed, objects exist and work.
    let g: Option<(u64, String)> = dst
        .query_first("SELECT g_virtual, g_stored FROM types WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(g.unwrap().0, 2);
    let f: Option<i64> = dst.query_first("SELECT add_one(41)").await.unwrap();
    assert_eq!(f, Some(42));
    let n: Option<i64> = dst.query_first("SELECT n FROM v_on_view").await.unwrap();
    assert_eq!(n, Some(2));
    // The trigger exists after the restore but did not fire during the load.
    let audit_before: Option<i64> = dst.query_first("SELECT COUNT(*) FROM audit").await.unwrap();
    assert_eq!(audit_before, Some(0));
    dst.query_drop("INSERT INTO parent VALUES (3)")
        .await
        .unwrap();
    dst.query_drop("INSERT INTO child VALUES (12, 3)")
        .await
        .unwrap();
    let audit_after: Option<i64> = dst.query_first("SELECT COUNT(*) FROM audit").await.unwrap();
    assert_eq!(audit_after, Some(1));
    // History is queryable as of a past moment on the restored server.
    let versions: Option<i64> = dst
        .query_first("SELECT COUNT(*) FROM prices FOR SYSTEM_TIME ALL")
        .await
        .unwrap();
    assert_eq!(versions, Some(4));
    let ev: Option<String> = dst
        .query_first(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA='restored' AND EVENT_NAME='ev_nightly'",
        )
        .await
        .unwrap();
    assert_eq!(ev.as_deref(), Some("ev_nightly"));
    // Events keep their time zone (and so their moment), routines their
    // client character set.
    let meta = |db: &str| {
        format!(
            "SELECT CONCAT(EVENT_NAME, ' ', TIME_ZONE, ' ', IFNULL(EXECUTE_AT, '')) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{db}' \
             UNION ALL SELECT CONCAT(ROUTINE_NAME, ' ', CHARACTER_SET_CLIENT, ' ', COLLATION_CONNECTION) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{db}' ORDER BY 1"
        )
    };
    let src_meta: Vec<String> = src.query(meta(&db)).await.unwrap();
    let dst_meta: Vec<String> = dst.query(meta("restored")).await.unwrap();
    assert_eq!(src_meta, dst_meta);
    assert!(
        src_meta
            .iter()
            .any(|m| m.starts_with("ev_local_time +05:00")),
        "{src_meta:?}"
    );
    assert!(
        src_meta.iter().any(|m| m.starts_with("latin_hello latin1")),
        "{src_meta:?}"
    );
    // The set says which objects lost their DEFINER's security context.
    let v_base = dbm["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "v_base")
        .unwrap();
    assert!(
        v_base["changes"][0]
            .as_str()
            .unwrap_or_default()
            .contains("DEFINER"),
        "{v_base}"
    );
    // Foreign keys are enforced again after the load.
    assert!(dst
        .query_drop("INSERT INTO child VALUES (99, 12345)")
        .await
        .is_err());

    // A second restore into the same database is refused without --force...
    let out = svc.wpdr_target(
        &cfg,
        &[
            "restore",
            "db",
            &set,
            "--target",
            &target.url(),
            "--database",
            "restored",
        ],
    );
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    // ...and with --force replaces it exactly (the row inserted above is gone);
    // this time every row as the artifacts' INSERT statements, not LOAD DATA:
    // both ways give the same database.
    let out = svc.restore_db(
        &cfg,
        &set,
        &target,
        "restored",
        &["--force", "--sql-inserts"],
    );
    assert_eq!(json(&out)["ok"], true);
    let mut dst = target.conn(Some("restored")).await;
    assert_same_database(&mut src, &mut dst).await;
    // The sequence never hands out a value the source already did (like
    // mariadb-dump, from the first value past the source's cache), in its step.
    // (Last: NEXTVAL on the source changes it.)
    let next_src: Option<i64> = src
        .query_first("SELECT NEXTVAL(order_numbers)")
        .await
        .unwrap();
    let next_dst: Option<i64> = dst
        .query_first("SELECT NEXTVAL(order_numbers)")
        .await
        .unwrap();
    let (next_src, next_dst) = (next_src.unwrap(), next_dst.unwrap());
    assert!(next_dst >= next_src, "{next_dst} < {next_src}");
    assert_eq!((next_dst - 1000) % 7, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_restores_with_only_zstd_and_the_mariadb_client() {
    let svc = Services::get();
    let db = svc.fresh_database("standalone").await;
    let mut src = svc.admin(Some(&db)).await;
    create_edge_cases(&mut src).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.local_config(dir.path(), &db, "backup:\n  chunk_size: 1MiB\n");
    let set = svc.backup(&cfg);
    let set_dir = dir.path().join("store/wpdr/testsite/sets").join(&set);

    let target = MariaDb::start(&["--max-allowed-packet=1G"]);
    // The README's one-liner, exactly.
    let script = format!(
        "set -euo pipefail; cd '{}'; mariadb -h127.0.0.1 -P{} -u{} -p{} -e 'CREATE DATABASE plain'; zstd -dc db/*.sql.zst | mariadb -h127.0.0.1 -P{} -u{} -p{} plain",
        set_dir.display(), target.port, TEST_USER, TEST_PASSWORD, target.port, TEST_USER, TEST_PASSWORD
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "one-liner failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut dst = target.conn(Some("plain")).await;
    assert_same_database(&mut src, &mut dst).await;
    let n: Option<i64> = dst.query_first("SELECT n FROM v_on_view").await.unwrap();
    assert_eq!(n, Some(2));

    // Every artifact carries zstd's frame checksum, so `zstd -t` alone
    // catches a changed byte (without it, a flipped literal decodes fine).
    let mut data_chunk = None;
    for entry in std::fs::read_dir(set_dir.join("db")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "{path:?}");
        assert_ne!(bytes[4] & 0x04, 0, "{path:?} has no content checksum");
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.contains("2-data-") && name.contains("chunky") && bytes.len() > 4096 {
            data_chunk = Some(bytes);
        }
    }
    let mut damaged = data_chunk.expect("a data chunk of chunky");
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    let copy = dir.path().join("damaged.sql.zst");
    std::fs::write(&copy, &damaged).unwrap();
    let t = Command::new("zstd").arg("-tq").arg(&copy).output().unwrap();
    assert!(!t.status.success(), "zstd -t accepted a damaged chunk");
}

/// A restore Job has its password as a mounted file, not in its
/// environment: `restore db --target` takes restore.database_password_file
/// when WPDR_TARGET_PASSWORD is not set, and says which to set when neither is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_db_takes_the_configured_password_file() {
    let svc = Services::get();
    let db = svc
        .database_with(
            "password_file",
            &[
                "CREATE TABLE t (id INT PRIMARY KEY)",
                "INSERT INTO t VALUES (1), (2), (3)",
            ],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("restore-password");
    std::fs::write(&secret, svc.var("WPDR_TEST_DB_PASSWORD")).unwrap();
    let cfg = svc.local_config(
        dir.path(),
        &db,
        &format!("restore:\n  database_password_file: {}\n", secret.display()),
    );
    let set = svc.backup(&cfg);
    let url = format!(
        "mysql://{}@127.0.0.1:{}",
        svc.var("WPDR_TEST_DB_USER"),
        svc.db_port()
    );
    let target = svc.fresh_database("password_file_restored").await;
    let args = [
        "--output",
        "json",
        "restore",
        "db",
        &set,
        "--target",
        &url,
        "--database",
        &target,
        "--force",
    ];
    // No password in the environment: only the config can give one.
    let restore = || {
        svc.wpdr_cmd(&cfg, &args)
            .env_remove("WPDR_TARGET_PASSWORD")
            .env_remove("WPDR_RESTORE_DATABASE_PASSWORD")
            .output()
            .unwrap()
    };
    let out = restore();
    assert_eq!(json(&out)["ok"], true, "{}", stderr(&out));
    let mut t = svc.admin(Some(&target)).await;
    let n: Option<i64> = t.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(3));

    // Neither: the server refuses, and the error says where a password goes.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap().replace(
            &format!("restore:\n  database_password_file: {}\n", secret.display()),
            "",
        ),
    )
    .unwrap();
    let out = restore();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("WPDR_TARGET_PASSWORD"),
        "{}",
        stderr(&out)
    );
}
