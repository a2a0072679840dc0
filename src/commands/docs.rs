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
