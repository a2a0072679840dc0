//! `wpdr keys`: make the keys that protect sets. Secrets go to a new file
//! readable by its owner only; the public half is printed.

use super::output::print_json;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;
use wpdr::cli::{Cli, KeysCommand, OutputFormat};
use wpdr::exit::ExitCode;
use wpdr::trust::SigningKey;

pub(crate) fn run(cli: &Cli, cmd: &KeysCommand) -> Result<ExitCode> {
    let (out, public, setting, text) = match cmd {
        KeysCommand::Age { out } => {
            let id = age::x25519::Identity::generate();
            let public = id.to_public().to_string();
            let text = format!(
                "# created by wpdr keys age: {}\n# public key: {public}\n{}\n",
                chrono::Utc::now().to_rfc3339(),
                age::secrecy::ExposeSecret::expose_secret(&id.to_string())
            );
            (out, public, "encryption.recipients", text)
        }
        KeysCommand::Signing { out } => {
            let key = SigningKey::generate();
            let text = format!(
                "# created by wpdr keys signing: {}\n# verifying key: {}\n{}\n",
                chrono::Utc::now().to_rfc3339(),
                key.verifying(),
                key.to_secret_text().expose()
            );
            (out, key.verifying(), "signing.verify_keys", text)
        }
    };
    write_private(out, &text)?;
    if cli.output == OutputFormat::Json {
        print_json(&serde_json::json!({
            "file": out,
            "public": public,
            "setting": setting,
        }))?;
    } else {
        println!("wrote {} (readable by its owner only)", out.display());
        println!("{setting}: {public}");
    }
    Ok(ExitCode::Ok)
}

/// Creates `path` 0600; never overwrites (a lost key loses every set sealed to it).
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (it must not exist yet: wpdr never overwrites a key)",
                path.display()
            )
        })?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
