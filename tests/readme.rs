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
