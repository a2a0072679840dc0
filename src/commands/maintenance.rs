//! `wpdr prune` and `wpdr status`.

use super::job_context;
use super::output::{human_bytes, print_json};
use anyhow::Result;
use wpdr::cli::{Cli, OutputFormat};
use wpdr::exit::ExitCode;
use wpdr::jobs;

pub(crate) async fn prune(cli: &Cli, dry_run: bool) -> Result<ExitCode> {
    let ctx = job_context(cli).await?;
    let report = jobs::prune::prune(&ctx, dry_run).await?;
    if cli.output == OutputFormat::Json {
        print_json(&report)?;
        return Ok(ExitCode::Ok);
    }
    let binlog = &report.binlog;
    let claim = &report.archive_claim;
    let media = &report.media_retained;
    let report = &report.sets;
    let verb = if dry_run { "would delete" } else { "deleted" };
    for d in &report.decisions {
        let action = if d.keep {
            format!("keep    ({})", d.reasons.join(", "))
        } else if report.pinned.contains(&d.id) {
            "pinned  (a restore is reading it)".to_string()
        } else if let Some(r) = report.retained.iter().find(|r| r.id == d.id) {
            format!(
                "locked  (Object Lock retains it until {}; a prune after that deletes it)",
                r.until.format("%Y-%m-%d %H:%M")
            )
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
            "retained media versions: {} found, {} still referenced by a set, {} {verb} ({}){}",
            m.versions,
            m.referenced,
            m.deleted,
            human_bytes(m.bytes_freed),
            if m.locked > 0 {
                format!(", {} unreferenced but under Object Lock until their date (a later prune deletes them)", m.locked)
            } else {
                String::new()
            }
        );
    }
    if let Some(binlog) = binlog {
        super::binlog::print_binlog_prune(binlog, verb);
    }
    if let Some(c) = claim {
        super::binlog::print_claim(c, dry_run);
    }
    Ok(ExitCode::Ok)
}

pub(crate) async fn status(cli: &Cli) -> Result<ExitCode> {
    let ctx = job_context(cli).await?;
    let status = jobs::status::status(&ctx).await?;
    if cli.output == OutputFormat::Json {
        print_json(&status.to_json())?;
        return Ok(ExitCode::Ok);
    }
    let now = status.at;
    let sets = &status.sets;
    let newest = sets.first();
    let rpo_seconds = status.rpo_seconds();
    let window = &status.window;
    let lock = &status.lock;
    let drill = &status.last_drill;
    println!("site        {} in {}", status.site, status.store);
    match newest {
        Some(m) => {
            let age = rpo_seconds.unwrap_or(0);
            println!(
                "newest set  {} (finished {}, data {}h{:02}m old)",
                m.id,
                m.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
                age / 3600,
                (age % 3600) / 60
            );
            for p in &m.parts_missing {
                println!("PARTIAL     the newest set has no {}: {}", p.part, p.reason);
            }
        }
        None => println!("newest set  none: run `wpdr backup`"),
    }
    println!(
        "sets        {} complete, {}, oldest {}",
        sets.len(),
        human_bytes(sets.iter().map(|m| m.bytes).sum()),
        sets.last().map_or("-", |m| m.id.as_str())
    );
    println!(
        "interrupted {} run(s) without a manifest (prune removes them after the grace period)",
        status.incomplete.len()
    );
    for u in &status.unreadable {
        println!(
            "UNREADABLE  set {}: {} (skipped; `wpdr sets show {}` for details)",
            u.id, u.reason, u.id
        );
    }
    super::binlog::print_window_summary(window);
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
    for j in &status.unfinished_restores {
        println!(
            "restore     {} of set {} into {}: {:?} ({}); resume with `wpdr restore --resume {}`",
            j.restore_id, j.set_id, j.namespace, j.status, j.holder, j.restore_id
        );
    }
    Ok(ExitCode::Ok)
}
