//! `wpdr daemon` and `wpdr check-config`.

use super::open;
use super::output::print_json;
use anyhow::Result;
use std::path::PathBuf;
use wpdr::cli::DaemonArgs;
use wpdr::cli::{Cli, OutputFormat};
use wpdr::config::{Config, ProcessEnv};
use wpdr::exit::ExitCode;

pub(crate) async fn run(cli: &Cli, args: &DaemonArgs) -> Result<ExitCode> {
    let (cfg, store) = open(cli).await?;
    let leader = if args.leader_election {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| wpdr::cluster::ClusterError::Client(e.to_string()))?;
        let identity = args.identity.clone().unwrap_or_else(|| {
            hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| format!("wpdr-{}", std::process::id()))
        });
        Some(wpdr::cluster::lease::LeaderElector::new(
            client,
            &args.lease_namespace,
            &args
                .lease_name
                .clone()
                .unwrap_or_else(|| format!("wpdr-{}", cfg.site)),
            &identity,
            std::time::Duration::from_secs(args.lease_seconds.max(3)),
        ))
    } else {
        None
    };
    wpdr::daemon::run(
        cfg,
        store,
        wpdr::daemon::DaemonOptions {
            schedules_dir: args.schedules.clone(),
            listen: args.listen,
            grace: std::time::Duration::from_secs(args.grace_seconds),
            leader,
        },
    )
    .await?;
    Ok(ExitCode::Ok)
}

/// With `object_lock` set for `s3`, asks the bucket whether Object Lock is
/// enabled (writes with a retention date into one without it fail at once).
async fn check_bucket_lock(
    s3: &wpdr::config::S3Config,
    field: &str,
    env: &str,
    bucket_field: &str,
) -> Result<Option<String>> {
    let Some(lock) = s3.object_lock else {
        return Ok(None);
    };
    let store = wpdr::store::S3Store::open(s3).await?;
    match store.object_lock_enabled().await? {
        Some(true) => Ok(Some(format!(
            "{} for {} days (bucket {} has Object Lock enabled)",
            lock.mode.as_str().to_ascii_lowercase(),
            lock.days,
            s3.bucket
        ))),
        found => Err(wpdr::config::ConfigError::Invalid {
            field: field.into(),
            env: env.into(),
            problem: format!(
                "bucket '{}' {}. Object Lock can only be enabled when a bucket is created: create one with it (`aws s3api create-bucket --bucket NAME --object-lock-enabled-for-bucket`, or your provider's equivalent), copy the objects over and point {bucket_field} at it; or remove {field}",
                s3.bucket,
                if found == Some(false) {
                    "does not have Object Lock enabled"
                } else {
                    "is on a server that does not implement Object Lock"
                }
            ),
        }
        .into()),
    }
}

pub(crate) async fn check_config(cli: &Cli, schedules: &Option<PathBuf>) -> Result<ExitCode> {
    let cfg = Config::load(cli.config.as_deref(), &ProcessEnv)?;
    // The one check that asks the store: sets written under Object Lock
    // into a bucket without it would fail at the first write.
    let object_lock = match &cfg.store {
        wpdr::config::StoreConfig::S3(s3) => {
            check_bucket_lock(
                s3,
                "store.object_lock",
                "WPDR_S3_OBJECT_LOCK_MODE",
                "store.bucket",
            )
            .await?
        }
        wpdr::config::StoreConfig::Local { .. } => None,
    };
    let media_object_lock = match &cfg.media {
        Some(m) => {
            check_bucket_lock(
                &m.offsite,
                "media.offsite.object_lock",
                "WPDR_MEDIA_OFFSITE_OBJECT_LOCK_MODE",
                "media.offsite.bucket",
            )
            .await?
        }
        None => None,
    };
    let scheds = match schedules {
        Some(dir) => wpdr::daemon::schedule::Schedule::load_dir(dir)?,
        None => Vec::new(),
    };
    let keys =
        wpdr::trust::Keys::from_config(&cfg.encryption, &cfg.signing, cli.identity.as_deref())?;
    let trust = serde_json::json!({
        "encrypted_to": keys.recipients(),
        "identities": keys.identity_publics(),
        "signing_key": keys.signer().map(|s| s.verifying()),
        "pinned_verifying_keys": cfg.signing.verify_keys,
    });
    let now = chrono::Utc::now();
    let store = match &cfg.store {
        wpdr::config::StoreConfig::Local { path, .. } => {
            format!("local {}", path.display())
        }
        wpdr::config::StoreConfig::S3(s3) => format!(
            "s3://{} at {} (credentials: {})",
            s3.bucket,
            s3.endpoint.as_deref().unwrap_or("AWS"),
            if s3.credentials.is_some() {
                "static keys"
            } else {
                "default AWS chain"
            }
        ),
    };
    let next: Vec<serde_json::Value> = scheds
            .iter()
            .map(|s| serde_json::json!({"name": s.name, "job": s.job.as_str(), "cron": s.cron, "timezone": s.timezone.name(), "next_run": s.next_after(now)}))
            .collect();
    if cli.output == OutputFormat::Json {
        print_json(&serde_json::json!({
            "site": cfg.site,
            "store": store,
            "site_prefix": cfg.site_prefix(),
            "database": format!("{}@{}:{}/{}", cfg.database.user, cfg.database.host, cfg.database.port, cfg.database.name),
            "database_password_set": !cfg.database.password.is_empty(),
            "trust": trust,
            "object_lock": object_lock,
            "media_object_lock": media_object_lock,
            "schedules": next,
        }))?;
    } else {
        println!("config ok: site '{}', store {store}", cfg.site);
        println!(
            "database {}@{}:{}/{} (password {})",
            cfg.database.user,
            cfg.database.host,
            cfg.database.port,
            cfg.database.name,
            if cfg.database.password.is_empty() {
                "not set"
            } else {
                "set"
            }
        );
        if let Some(lock) = &object_lock {
            println!("object lock {lock}");
        }
        if let Some(lock) = &media_object_lock {
            println!("media object lock {lock}");
        }
        match keys.recipients().as_slice() {
            [] => println!("encryption off: sets are stored plain (set encryption.recipients)"),
            r => println!("encryption to {}", r.join(", ")),
        }
        if !keys.identity_publics().is_empty() {
            println!("identity opens {}", keys.identity_publics().join(", "));
        }
        match keys.signer() {
            Some(k) => println!("signing with {}", k.verifying()),
            None => println!("signing off: manifests are unsigned (set signing.key_file)"),
        }
        if !cfg.signing.verify_keys.is_empty() {
            println!(
                "verifying: only sets signed by {} are restored",
                cfg.signing.verify_keys.join(", ")
            );
        }
        for s in &scheds {
            println!(
                "schedule {:<20} {:<14} {:<16} {:<16} next {}",
                s.name,
                s.job.as_str(),
                s.cron,
                s.timezone.name(),
                s.next_after(now).map_or("-".into(), |t| t.to_rfc3339())
            );
        }
    }
    Ok(ExitCode::Ok)
}
