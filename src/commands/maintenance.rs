//! `wpdr prune` and `wpdr status`.

use super::open;
use super::output::{human_bytes, print_json};
use anyhow::Result;
use wpdr::catalog::Catalog;
use wpdr::cli::{Cli, OutputFormat};
use wpdr::config::ConfigError;
use wpdr::exit::ExitCode;

pub(crate) async fn prune(cli: &Cli, dry_run: bool) -> Result<ExitCode> {
    let (cfg, store) = open(cli).await?;
    if cfg.retention.policy.is_empty() {
        return Err(ConfigError::Invalid {
            field: "retention".into(),
            env: "WPDR_KEEP_LAST".into(),
            problem: "no retention policy is configured, so prune would keep only the newest set. Set retention.keep_last/keep_daily/... first".into(),
        }
        .into());
    }
    let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
    let report = catalog
        .prune(
            &cfg.retention.policy,
            chrono::Duration::hours(cfg.retention.incomplete_grace_hours),
            cfg.backup.lock_ttl_seconds,
            dry_run,
        )
        .await?;
    // Then the retained media versions only the deleted sets referred to.
    let media = match &cfg.media {
        Some(_) => Some(
            wpdr::media::retention::prune_retained(&cfg, store.clone(), dry_run, &report.deleted)
                .await?,
        ),
        None => None,
    };
    // Then the binlog segments no remaining set can replay.
    let remaining: Vec<_> = catalog
        .list()
        .await?
        .into_iter()
        .filter(|m| !report.deleted.contains(&m.set_id))
        .collect();
    let binlog = wpdr::binlog::prune::prune(
        &store,
        &cfg.site_prefix(),
        &remaining,
        chrono::Duration::hours(cfg.retention.incomplete_grace_hours),
        dry_run,
    )
    .await?;
    if cli.output == OutputFormat::Json {
        let mut v = serde_json::to_value(&report)?;
        v["media_retained"] = serde_json::to_value(&media)?;
        v["binlog"] = serde_json::to_value(&binlog)?;
        print_json(&v)?;
        return Ok(ExitCode::Ok);
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    for d in &report.decisions {
        let action = if d.keep {
            format!("keep    ({})", d.reasons.join(", "))
        } else if report.pinned.contains(&d.id) {
            "pinned  (a restore is reading it)".to_string()
        } else {
            verb.to_string()
        };
        println!(
            "{:<22} {}  {}",
            d.id,
            d.time.format("%Y-%m-%d %H:%M"),
            action
        );
    }
    for id in &report.incomplete_removed {
        println!("{id:<22} interrupted run: {verb}");
    }
    println!(
        "{}: {} set(s) {verb}, {} freed, {} interrupted run(s), {} stale upload(s) aborted",
        if dry_run { "dry run" } else { "pruned" },
        report.deleted.len(),
        human_bytes(report.bytes_freed),
        report.incomplete_removed.len(),
        report.uploads_aborted
    );
    if let Some(m) = &media {
        println!(
            "retained media versions: {} found, {} still referenced by a set, {} {verb} ({})",
            m.versions,
            m.referenced,
            m.deleted,
            human_bytes(m.bytes_freed)
        );
    }
    if binlog.segments_deleted + binlog.orphans_deleted + binlog.kept_segments > 0 {
        println!(
            "binlog archive: {} segment(s) older than the oldest set {verb}, {} orphan(s), {} old gap record(s); {} kept ({})",
            binlog.segments_deleted,
            binlog.orphans_deleted,
            binlog.gaps_deleted,
            binlog.kept_segments,
            human_bytes(binlog.bytes_freed)
        );
    }
    Ok(ExitCode::Ok)
}

pub(crate) async fn status(cli: &Cli) -> Result<ExitCode> {
    let (cfg, store) = open(cli).await?;
    let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
    let (sets, incomplete) = catalog.scan().await?;
    let lock = catalog.lock_holder().await?;
    let now = chrono::Utc::now();
    let newest = sets.first();
    let rpo_seconds = newest.map(|m| (now - m.started_at).num_seconds());
    let drill = wpdr::restore::drill::latest_report(&store, &cfg.site_prefix()).await;
    let window = wpdr::binlog::window::load_for(&store, &cfg.site_prefix(), &sets).await?;
    let restores = wpdr::restore::journal::list(&store, &cfg.site_prefix())
        .await
        .unwrap_or_default();
    let unfinished: Vec<serde_json::Value> = restores
        .iter()
        .filter(|j| j.status != wpdr::restore::journal::RunStatus::Succeeded)
        .map(|j| {
            serde_json::json!({
                "restore_id": j.restore_id, "set": j.set_id, "namespace": j.namespace,
                "status": j.status, "holder": j.holder, "updated_at": j.updated_at,
            })
        })
        .collect();
    let json = serde_json::json!({
        "site": cfg.site,
        "store": store.describe(),
        "sets": sets.len(),
        "bytes": sets.iter().map(|m| m.total_bytes()).sum::<u64>(),
        "newest_set": newest.map(|m| m.set_id.clone()),
        "newest_finished_at": newest.map(|m| m.finished_at),
        "rpo_seconds": rpo_seconds,
        "oldest_set": sets.last().map(|m| m.set_id.clone()),
        "incomplete_runs": incomplete,
        "lock": lock,
        "last_drill": drill.as_ref().map(|d| serde_json::json!({
            "restore_id": d.restore_id, "ok": d.ok, "finished_at": d.finished_at,
            "age_seconds": (now - d.finished_at).num_seconds(),
            "rto_seconds": d.rto_seconds, "rpo_seconds": d.rpo_seconds,
        })),
        "unfinished_restores": unfinished,
        "recoverable": {
            "oldest": window.oldest,
            "newest": window.newest,
            "pitr_rpo_seconds": window.newest.map(|n| (now - n).num_seconds().max(0)),
            "archive": window.archive_head,
            "gaps": window.gaps,
            "open_gaps": window.open_gaps,
        },
    });
    if cli.output == OutputFormat::Json {
        print_json(&json)?;
        return Ok(ExitCode::Ok);
    }
    println!("site        {} in {}", cfg.site, store.describe());
    match newest {
        Some(m) => {
            let age = rpo_seconds.unwrap_or(0);
            println!(
                "newest set  {} (finished {}, data {}h{:02}m old)",
                m.set_id,
                m.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
                age / 3600,
                (age % 3600) / 60
            );
        }
        None => println!("newest set  none: run `wpdr backup`"),
    }
    println!(
        "sets        {} complete, {}, oldest {}",
        sets.len(),
        human_bytes(sets.iter().map(|m| m.total_bytes()).sum()),
        sets.last().map_or("-", |m| m.set_id.as_str())
    );
    println!(
        "interrupted {} run(s) without a manifest (prune removes them after the grace period)",
        incomplete.len()
    );
    super::binlog::print_window_summary(&window);
    match lock {
        Some(l) if l.expires_at > now => println!(
            "lock        held: {} by pid {} on {} until {}",
            l.purpose, l.pid, l.host, l.expires_at
        ),
        Some(l) => println!(
            "lock        expired ({} by pid {} on {})",
            l.purpose, l.pid, l.host
        ),
        None => println!("lock        free"),
    }
    match &drill {
        Some(d) => {
            let age = (now - d.finished_at).num_seconds();
            println!(
                "last drill  {} {}h{:02}m ago (set {}): RTO {:.0}s, RPO {:.0}s",
                if d.ok { "PASSED" } else { "FAILED" },
                age / 3600,
                (age % 3600) / 60,
                d.set_id,
                d.rto_seconds,
                d.rpo_seconds
            );
        }
        None => println!("last drill  none: run `wpdr drill`"),
    }
    for j in restores
        .iter()
        .filter(|j| j.status != wpdr::restore::journal::RunStatus::Succeeded)
    {
        println!(
            "restore     {} of set {} into {}: {:?} ({}); resume with `wpdr restore --resume {}`",
            j.restore_id, j.set_id, j.namespace, j.status, j.holder, j.restore_id
        );
    }
    Ok(ExitCode::Ok)
}
