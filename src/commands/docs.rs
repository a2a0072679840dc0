//! Completions and the manual page, generated from the command tree itself
//! so they never drift from what the binary accepts; the Site CRD, generated
//! from its Rust types for the same reason.

use anyhow::{Context, Result};
use clap::CommandFactory;
use std::io::Write;
use std::path::Path;
use wpdr::cli::{Cli, CompletionShell};
use wpdr::exit::ExitCode;

pub(crate) fn completions(shell: CompletionShell) -> Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    match shell {
        CompletionShell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "wpdr", &mut out)
        }
        CompletionShell::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "wpdr", &mut out)
        }
        CompletionShell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "wpdr", &mut out)
        }
    }
    write_stdout(&out)
}

/// wpdr(1) on stdout; with a directory, one page per command there as well
/// (wpdr-backup.1, wpdr-restore-db.1, ...), as git and restic ship theirs.
pub(crate) fn man(dir: Option<&Path>) -> Result<ExitCode> {
    let cmd = Cli::command();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        clap_mangen::generate_to(cmd, dir)
            .with_context(|| format!("cannot write the manual pages to {}", dir.display()))?;
        return Ok(ExitCode::Ok);
    }
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .context("cannot render the manual page")?;
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`wpdr man | head`) is not an error worth a message.
    match stdout.write_all(bytes).and_then(|_| stdout.flush()) {
        Ok(()) => Ok(ExitCode::Ok),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::Ok),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// The Site CustomResourceDefinition as YAML (`kubectl apply -f -` takes it).
pub(crate) fn crd() -> Result<ExitCode> {
    let yaml = wpdr::fleet::site::crd_yaml().context("cannot render the Site CRD")?;
    write_stdout(yaml.as_bytes())
}

/// Checks every Site in `files`; all are reported, the first failure sets the exit code.
pub(crate) fn check_sites(cli: &Cli, files: &[std::path::PathBuf]) -> Result<ExitCode> {
    use serde::Deserialize;
    use wpdr::exit::Classify;
    let mut results = Vec::new();
    let mut code = ExitCode::Ok;
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let site = wpdr::fleet::site::Site::deserialize(doc).with_context(|| {
                format!(
                    "{}: not a Site (apiVersion wpdr.io/v1alpha1, kind Site, metadata, spec)",
                    file.display()
                )
            })?;
            let name = format!(
                "{}/{}",
                site.metadata.namespace.as_deref().unwrap_or("default"),
                site.metadata.name.as_deref().unwrap_or("?")
            );
            // As the controller checks it: the config, then the Job changes.
            let problem = site
                .spec
                .check(&name)
                .and_then(|_| {
                    wpdr::fleet::job::JobTemplate::new("check").for_site(&name, &site.spec)
                })
                .err();
            if let Some(e) = &problem {
                if code == ExitCode::Ok {
                    code = e.exit_code();
                }
            }
            results.push(serde_json::json!({
                "site": name,
                "file": file.display().to_string(),
                "ok": problem.is_none(),
                "problem": problem.map(|e| e.to_string()),
            }));
        }
    }
    if cli.output == wpdr::cli::OutputFormat::Json {
        super::output::print_json(&results)?;
    } else {
        for r in &results {
            match r["problem"].as_str() {
                None => println!("ok    {}", r["site"].as_str().unwrap_or("?")),
                Some(p) => println!("FAIL  {p}"),
            }
        }
    }
    Ok(code)
}
