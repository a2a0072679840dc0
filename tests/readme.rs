//! The README says what the binary does: its exit-code table lists exactly
//! the codes the code has, and every subcommand `wpdr --help` shows (and the
//! parts of those with parts) has an example in it.

use std::collections::BTreeSet;
use std::path::Path;
use wpdr::exit::ExitCode;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The body of the section headed `## {title}`.
fn section(text: &str, title: &str) -> String {
    let start = text
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README has no section '## {title}'"));
    let body = &text[start + title.len() + 5..];
    let end = body.find("\n## ").unwrap_or(body.len());
    body[..end].to_string()
}

#[test]
fn the_exit_code_table_lists_exactly_the_codes_of_the_code() {
    let table = section(&readme(), "Exit codes");
    let documented: BTreeSet<u8> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split('|').next())
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let actual: BTreeSet<u8> = ExitCode::ALL.iter().map(|c| c.code()).collect();
    assert_eq!(
        documented, actual,
        "README's exit-code table and wpdr::exit::ExitCode differ"
    );
}

/// The subcommands a `--help` lists (without `help`).
fn subcommands(args: &[&str]) -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wpdr"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn every_subcommand_has_an_example_in_the_readme() {
    let text = readme();
    // `wpdr [-c FILE] [--flag [VALUE]]... <command words>`
    let example = |words: &str| {
        regex::Regex::new(&format!(
            r"wpdr( -c \S+)?( --?[a-z-]+( [^\s-]\S*)?)* {}\b",
            regex::escape(words)
        ))
        .unwrap()
        .is_match(&text)
    };
    let top = subcommands(&[]);
    assert!(top.len() >= 10, "{top:?}");
    let mut missing = Vec::new();
    for cmd in &top {
        if !example(cmd) {
            missing.push(cmd.clone());
        }
        for sub in subcommands(&[cmd]) {
            let words = format!("{cmd} {sub}");
            if !example(&words) {
                missing.push(words);
            }
        }
    }
    assert!(missing.is_empty(), "README has no example of: {missing:?}");
}

/// Files a directory holds, as the layout names them: `name.rs` for files,
/// `name/` for subdirectories (whose own files are named as `name/file.rs`).
fn module_files(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if e.path().is_dir() {
            out.insert(format!("{prefix}{name}/"));
            module_files(&e.path(), &format!("{prefix}{name}/"), out);
        } else if name.ends_with(".rs") && name != "mod.rs" && name != "tests.rs" {
            out.insert(format!("{prefix}{name}"));
        }
    }
}

/// The Layout section names every module of `src/` (each part's files in
/// its description) and nothing that is not there, so a reader finds the
/// code where the README says it is.
#[test]
fn the_layout_names_every_module_and_only_modules_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layout = section(&readme(), "Layout");
    // Each entry: a path at the line start, and its description until the next.
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in layout.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        let is_path = !line.starts_with(' ')
            && (first.ends_with('/') || first.ends_with(".rs") || first.ends_with(".md"));
        if is_path {
            entries.push((first.to_string(), line[first.len()..].to_string()));
        } else if let Some(last) = entries.last_mut() {
            last.1.push(' ');
            last.1.push_str(line);
        }
    }
    assert!(entries.len() > 10, "no layout entries found");
    for (path, _) in &entries {
        assert!(
            root.join(path).exists(),
            "the layout names {path}, which does not exist"
        );
    }
    let named_words = |text: &str| -> BTreeSet<String> {
        text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == '/'))
            .map(|w| w.trim_end_matches('.').to_string())
            .filter(|w| w.ends_with(".rs") || w.ends_with('/'))
            .collect()
    };
    for entry in std::fs::read_dir(root.join("src")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name == "lib.rs" {
            continue;
        }
        let path = if entry.path().is_dir() {
            format!("src/{name}/")
        } else {
            format!("src/{name}")
        };
        let Some((_, description)) = entries.iter().find(|(p, _)| *p == path) else {
            panic!("the layout does not name {path}");
        };
        if !entry.path().is_dir() || name == "commands" {
            continue;
        }
        // Every file of a part is named in its description.
        let mut files = BTreeSet::new();
        module_files(&entry.path(), "", &mut files);
        let named = named_words(description);
        // A subdirectory's file may be named bare once its directory is.
        let subdirs: Vec<&String> = named.iter().filter(|n| n.ends_with('/')).collect();
        for f in &files {
            let bare_ok = f.rsplit_once('/').is_some_and(|(dir, base)| {
                named.contains(&format!("{dir}/")) && named.contains(base)
            });
            assert!(
                named.contains(f) || bare_ok,
                "the layout's {path} does not name {f}: {description}"
            );
        }
        for n in named.iter().filter(|n| !n.starts_with("src/")) {
            let here = entry.path().join(n).exists()
                || subdirs
                    .iter()
                    .any(|d| entry.path().join(d).join(n).exists());
            assert!(here, "the layout's {path} names {n}, which is not there");
        }
    }
}

/// Every test the threat model cites exists where it says: a line of the
/// table that loses its test fails here, not silently.
#[test]
fn every_test_the_threat_model_cites_exists() {
    let text = readme();
    let start = text
        .find("\n### Threat model\n")
        .expect("README has no '### Threat model'");
    let body = &text[start + 1..];
    let body = &body[..body[4..].find("\n### ").map_or(body.len(), |e| e + 4)];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cited = 0;
    for line in body.lines().filter(|l| l.starts_with('|')) {
        let Some(shown_by) = line.trim_end_matches('|').rsplit('|').next() else {
            continue;
        };
        let mut file: Option<String> = None;
        for token in shown_by.split('`').skip(1).step_by(2) {
            if token.ends_with(".rs") {
                let source = std::fs::read_to_string(root.join(token))
                    .unwrap_or_else(|e| panic!("the threat model cites {token}: {e}"));
                file = Some(source);
            } else if let Some(source) = &file {
                assert!(
                    source.contains(&format!("fn {token}(")),
                    "the threat model cites {token}, which its file does not define"
                );
                cited += 1;
            }
        }
    }
    assert!(cited >= 5, "the threat model cites only {cited} tests");
}
