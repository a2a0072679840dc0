//! What a person reads: shell completions and manual pages generated from
//! the command tree, and log lines that print values rather than Rust Debug.

mod common;

use common::{ok, Services};
use std::process::Command;

fn wpdr(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wpdr"))
        .args(args)
        .env_remove("WPDR_CONFIG")
        .output()
        .unwrap()
}

/// Every subcommand name, as `wpdr --help` lists them.
fn subcommands() -> Vec<String> {
    let help = ok(&wpdr(&["--help"]));
    let mut names = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            match line.split_whitespace().next() {
                Some(name) if line.starts_with("  ") => names.push(name.to_string()),
                _ => break,
            }
        }
    }
    names.retain(|n| n != "help");
    assert!(names.len() > 10, "{help}");
    names
}

#[test]
fn completions_cover_every_subcommand_and_bash_parses_its_script() {
    let names = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&wpdr(&["completions", shell]));
        for name in &names {
            assert!(
                script.contains(name.as_str()),
                "{shell} completion lacks {name}"
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wpdr.bash");
    std::fs::write(&path, ok(&wpdr(&["completions", "bash"]))).unwrap();
    // Loaded into a shell, it completes the subcommands of `wpdr rest`.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". {}; COMP_WORDS=(wpdr rest); COMP_CWORD=1; COMP_LINE='wpdr rest'; COMP_POINT=9; _wpdr wpdr rest wpdr && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "restore");
    // An unknown shell is a usage error (exit 2) naming the choices.
    let bad = wpdr(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bash, zsh, fish"));
}

#[test]
fn man_pages_exist_for_every_command_and_render() {
    let page = ok(&wpdr(&["man"]));
    assert!(
        page.starts_with(".ie") || page.contains(".TH wpdr"),
        "{page}"
    );
    for name in subcommands() {
        // roff writes a hyphen as `\-`.
        let roff = name.replace('-', "\\-");
        assert!(page.contains(&roff), "wpdr(1) does not name {name}");
    }
    let dir = tempfile::tempdir().unwrap();
    ok(&wpdr(&["man", "--dir", dir.path().to_str().unwrap()]));
    for page in [
        "wpdr.1",
        "wpdr-backup.1",
        "wpdr-restore.1",
        "wpdr-restore-db.1",
        "wpdr-keys-age.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}: {text}");
    }
    // man itself formats the page without warnings, where man is installed.
    if Command::new("man").arg("--version").output().is_ok() {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(dir.path().join("wpdr-restore-db.1"))
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(out.status.success());
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.trim().is_empty(), "groff warns: {warnings}");
        // Bold and underline come as overstrikes (`X\bX`): keep the letters.
        let mut text = String::new();
        for c in String::from_utf8_lossy(&out.stdout).chars() {
            if c == '\u{8}' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        assert!(text.contains("--to-time"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_print_values_not_rust_debug() {
    let svc = Services::get();
    let db = svc
        .database_with(
            "readable_logs",
            &[
                "CREATE TABLE t (id INT PRIMARY KEY)",
                "INSERT INTO t VALUES (1), (2)",
            ],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = svc.local_config(dir.path(), &db, "");
    let out = svc.wpdr(&cfg, &["--log-format", "text", "backup"]);
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("snapshot opened"), "{log}");
    for debug in ["Some(", "None", "BinlogPosition", " { "] {
        assert!(
            !log.contains(debug),
            "the log prints Rust Debug ({debug}): {log}"
        );
    }
    // The snapshot's position reads as file:position.
    let line = log.lines().find(|l| l.contains("snapshot opened")).unwrap();
    assert!(
        regex_lite_binlog(line),
        "no file:position binlog value in: {line}"
    );
}

/// `binlog=<name>.<digits>:<digits>` somewhere in the line.
fn regex_lite_binlog(line: &str) -> bool {
    line.split_whitespace().any(|w| {
        w.strip_prefix("binlog=").is_some_and(|v| {
            let v = v.trim_matches('"');
            v.rsplit_once(':')
                .is_some_and(|(file, pos)| file.contains('.') && pos.parse::<u64>().is_ok())
        })
    })
}

/// `wpdr fleet check` reads Site manifests as a GitOps pipeline would check
/// them: every Site reported, a password written into a Site refused by
/// path (never echoed), exit 3; and `fleet crd` prints what the chart ships.
#[test]
fn fleet_check_names_each_bad_site_and_crd_matches_the_chart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sites.yaml");
    std::fs::write(
        &file,
        r#"
apiVersion: wpdr.io/v1alpha1
kind: Site
metadata: {name: shop, namespace: shop}
spec:
  config: {site: shop, store: {type: s3, bucket: backups}, database: {host: db, user: wpdr, name: wp}}
  credentials: {databasePassword: {name: shop-db, key: password}}
---
apiVersion: wpdr.io/v1alpha1
kind: Site
metadata: {name: blog, namespace: blog}
spec:
  config: {site: blog, database: {host: db, user: wpdr, password: hunter2}}
"#,
    )
    .unwrap();
    let out = wpdr(&["-o", "json", "fleet", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["site"], "shop/shop");
    assert_eq!(report[0]["ok"], true);
    assert_eq!(report[1]["ok"], false);
    let problem = report[1]["problem"].as_str().unwrap();
    assert!(
        problem.contains("blog/blog") && problem.contains("database.password"),
        "{problem}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));

    let crd = wpdr(&["fleet", "crd"]);
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/wpdr/crds/sites.wpdr.io.yaml"
    ))
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&crd.stdout), shipped);
}
