//! `wpdr media sync` and `wpdr restore media`.

use super::job_context;
use super::output::{human_bytes, print_json, progress_bar};
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;
use wpdr::binlog::replay::Point;
use wpdr::cli::{Cli, OutputFormat, RestoreMediaArgs};
use wpdr::config::{Config, ConfigError, S3Credentials};
use wpdr::exit::ExitCode;
use wpdr::jobs::{self, JobReport, Progress, ProgressEvent};
use wpdr::media::mirror::MirrorOptions;
use wpdr::media::restore::RestoreOptions;
use wpdr::media::MediaError;
use wpdr::secret::Secret;

/// Objects done out of those found so far (the total grows while the
/// listing streams, as rclone's does), bytes copied, rate and ETA.
fn counter(cli: &Cli, what: &str) -> (ProgressBar, Progress) {
    let pb = progress_bar(cli, 0, what);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} {prefix} [{bar:30}] {pos}/{len} objects, {msg} copied, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb.set_message("0 B");
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let p = pb.clone();
    let progress = Progress::new(move |e| match e {
        ProgressEvent::ObjectsFound(n) => p.inc_length(n),
        ProgressEvent::Objects { objects, bytes: n } => {
            p.inc(objects);
            if n > 0 {
                let total = bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
                p.set_message(human_bytes(total));
            }
        }
        ProgressEvent::Total(_) | ProgressEvent::Bytes(_) => {}
    });
    (pb, progress)
}

pub(crate) async fn sync(cli: &Cli, dry_run: bool, confirm_deletes: bool) -> Result<ExitCode> {
    let ctx = job_context(cli).await?;
    let (pb, progress) = counter(cli, "media sync");
    let ctx = ctx.with_progress(progress);
    let result = jobs::media_sync::sync(
        &ctx,
        MirrorOptions {
            dry_run,
            confirm_deletes,
            ..Default::default()
        },
    )
    .await;
    pb.finish_and_clear();
    let report = result?;
    if cli.output == OutputFormat::Json {
        print_json(&report)?;
    } else {
        let verb = if dry_run { "would copy" } else { "copied" };
        println!(
            "media {}: {} -> {}",
            if dry_run { "sync (dry run)" } else { "sync" },
            report.source,
            report.offsite
        );
        println!(
            "  source {} objects, offsite {} objects",
            report.source_objects, report.offsite_objects
        );
        println!(
            "  {verb} {} ({}), unchanged {}, adopted {}, retained {}, deleted {} of {} planned, failed {}",
            report.copied,
            human_bytes(report.copied_bytes),
            report.unchanged,
            report.adopted,
            report.retained,
            report.deleted,
            report.planned_deletes,
            report.failed_total
        );
        for f in &report.failed {
            println!("  FAILED {}: {}", f.key, f.error);
        }
        if let Some(r) = &report.deletes_refused {
            println!("  deletions not done: {r}");
        }
        println!("  {:.1}s", report.seconds);
    }
    Ok(report.verdict().exit)
}

/// The target bucket: media.source's settings with another bucket (and
/// maybe endpoint and keys): a restore goes into the new cluster's MinIO.
fn target_config(cfg: &Config, args: &RestoreMediaArgs) -> Result<wpdr::config::S3Config> {
    let media = cfg.media.as_ref().ok_or(MediaError::NotConfigured)?;
    let mut t = media.source.clone();
    t.bucket = args.target_bucket.clone();
    t.prefix = String::new();
    if let Some(ep) = &args.target_endpoint {
        url::Url::parse(ep).map_err(|e| ConfigError::Invalid {
            field: "--target-endpoint".into(),
            env: "-".into(),
            problem: format!("'{ep}' is not a URL: {e}"),
        })?;
        t.endpoint = Some(ep.clone());
    }
    let id = std::env::var("WPDR_MEDIA_TARGET_ACCESS_KEY_ID").ok();
    let secret = std::env::var("WPDR_MEDIA_TARGET_SECRET_ACCESS_KEY").ok();
    match (id, secret) {
        (Some(access_key_id), Some(s)) => {
            t.credentials = Some(S3Credentials {
                access_key_id,
                secret_access_key: Secret::new(s),
            })
        }
        (None, None) => {}
        _ => {
            return Err(ConfigError::Invalid {
                field: "target credentials".into(),
                env: "WPDR_MEDIA_TARGET_ACCESS_KEY_ID".into(),
                problem: "set both WPDR_MEDIA_TARGET_ACCESS_KEY_ID and WPDR_MEDIA_TARGET_SECRET_ACCESS_KEY, or neither".into(),
            }
            .into())
        }
    }
    if t.bucket == media.offsite.bucket && t.endpoint == media.offsite.endpoint {
        return Err(ConfigError::Invalid {
            field: "--target-bucket".into(),
            env: "-".into(),
            problem: "that is the offsite mirror itself: restore into a fresh bucket".into(),
        }
        .into());
    }
    Ok(t)
}

pub(crate) async fn restore(cli: &Cli, args: &RestoreMediaArgs) -> Result<ExitCode> {
    let ctx = job_context(cli).await?;
    let (pb, progress) = counter(cli, "restore media");
    let ctx = ctx.with_progress(progress);
    let media = ctx.cfg.media.as_ref().ok_or(MediaError::NotConfigured)?;
    let target_cfg = target_config(&ctx.cfg, args)?;
    let opts = RestoreOptions {
        dry_run: args.dry_run,
        deep_verify: args.deep_verify,
        concurrency: media.concurrency,
    };
    let report = match (&args.to_time, &args.set) {
        (Some(Point::Time(t)), _) => {
            jobs::restore::restore_media_at(&ctx, *t, &target_cfg, &opts).await
        }
        (_, Some(set)) => jobs::restore::restore_media(&ctx, set, &target_cfg, &opts).await,
        // clap requires one of them; a GTID is not a media point.
        _ => anyhow::bail!("restore media needs a set or --to-time"),
    };
    pb.finish_and_clear();
    let report = report?;
    if cli.output == OutputFormat::Json {
        print_json(&report)?;
    } else {
        println!(
            "restore media {} into {}{}",
            match &report.as_of {
                Some(_) => report.set_id.clone(),
                None => format!("of set {}", report.set_id),
            },
            report.target,
            if report.dry_run { " (dry run)" } else { "" }
        );
        if let Some(a) = &report.as_of {
            let at = |t: &Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("none".to_string(), |t| t.to_rfc3339())
            };
            println!(
                "  mirror runs merged: listed {} (before) and {} (after); uploads known until {}",
                at(&a.listed_before),
                at(&a.listed_after),
                a.known_until.to_rfc3339()
            );
        }
        println!(
            "  {} objects ({}): {} {} ({}, {} from retained versions), {} already there, {} failed",
            report.objects,
            human_bytes(report.bytes),
            if report.dry_run {
                "would copy"
            } else {
                "copied"
            },
            report.copied,
            human_bytes(report.copied_bytes),
            report.from_retained,
            report.already_present,
            report.failed_total
        );
        for f in &report.failed {
            println!("  FAILED {}: {}", f.key, f.error);
        }
        if report.extra_in_target > 0 {
            println!(
                "  note: the target holds {} object(s) the set does not (it was not empty)",
                report.extra_in_target
            );
        }
        if !report.dry_run && report.failed_total == 0 {
            println!(
                "  verified: {} objects present at their size{}",
                report.verified_objects,
                if report.deep_verified {
                    " and re-read with matching SHA-256"
                } else {
                    " (every byte was checked against the set's SHA-256 while copying)"
                }
            );
        }
        println!("  {:.1}s", report.seconds);
    }
    Ok(report.verdict().exit)
}
