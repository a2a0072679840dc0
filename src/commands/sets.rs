//! `wpdr sets list|show` and `wpdr verify`.

use super::open;
use super::output::{human_bytes, print_json, progress_bar};
use anyhow::Result;
use wpdr::catalog::{Catalog, Manifest, SetSummary, TableKind};
use wpdr::cli::{Cli, OutputFormat};
use wpdr::exit::ExitCode;
use wpdr::jobs::{self, JobReport};

pub(crate) async fn list(cli: &Cli) -> Result<ExitCode> {
    let (cfg, store) = open(cli).await?;
    let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
    let scan = catalog.scan().await?;
    let summaries: Vec<SetSummary> = scan.complete;
    if cli.output == OutputFormat::Json {
        print_json(&summaries)?;
    } else if summaries.is_empty() {
        println!(
            "no complete backup sets for site '{}' in {}",
            cfg.site,
            store.describe()
        );
    } else {
        println!(
            "{:<22} {:<10} {:<20} {:>9} {:>10} {:>7} {:>12}  STATE",
            "SET", "SCHEDULE", "FINISHED (UTC)", "DURATION", "SIZE", "TABLES", "ROWS"
        );
        for s in &summaries {
            let state = if s.failed_parts.is_empty() {
                "complete".to_string()
            } else {
                format!(
                    "PARTIAL (no {})",
                    s.failed_parts
                        .iter()
                        .map(|p| p.split(':').next().unwrap_or(p))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            println!(
                "{:<22} {:<10} {:<20} {:>8}s {:>10} {:>7} {:>12}  {state}",
                s.id,
                s.schedule,
                s.finished_at.format("%Y-%m-%d %H:%M:%S"),
                (s.finished_at - s.started_at).num_seconds(),
                human_bytes(s.bytes),
                s.tables,
                s.rows
            );
        }
    }
    if cli.output != OutputFormat::Json {
        for u in &scan.unreadable {
            println!("UNREADABLE {}: {} (skipped)", u.id, u.reason);
        }
    }
    Ok(ExitCode::Ok)
}

pub(crate) async fn show(cli: &Cli, set: &str) -> Result<ExitCode> {
    let (cfg, store) = open(cli).await?;
    let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
    let m = catalog.resolve(set).await?;
    if cli.output == OutputFormat::Json {
        print_json(&m)?;
    } else {
        print_show(&m);
    }
    Ok(ExitCode::Ok)
}

pub(crate) async fn verify(cli: &Cli, set: &str, deep: bool) -> Result<ExitCode> {
    let ctx = super::job_context(cli).await?;
    let pb = progress_bar(cli, 0, "verify");
    let ctx = ctx.with_progress(super::output::bytes_progress(&pb));
    let report = jobs::verify::verify(&ctx, set, deep).await;
    pb.finish_and_clear();
    let report = report?;
    if cli.output == OutputFormat::Json {
        print_json(&report)?;
    } else {
        for p in &report.problems {
            println!("BAD  {}", describe_problem(p));
        }
        println!(
            "{}: {} artifacts, {} {}, {} problem(s)",
            report.set_id,
            report.artifacts_checked,
            human_bytes(report.bytes_checked),
            if report.deep {
                "opened and decompressed"
            } else {
                "hashed"
            },
            report.problems.len()
        );
        if let Some(v) = &report.signature {
            println!("manifest {v}");
        }
    }
    Ok(report.verdict().exit)
}

fn describe_problem(p: &wpdr::catalog::ArtifactProblem) -> String {
    use wpdr::catalog::ArtifactProblem::*;
    match p {
        Missing { path } => format!("{path}: missing from the store"),
        SizeMismatch {
            path,
            expected,
            found,
        } => {
            format!("{path}: size {found} bytes, manifest says {expected} (truncated or replaced)")
        }
        ChecksumMismatch {
            path,
            expected,
            found,
        } => {
            format!("{path}: SHA-256 {found}, manifest says {expected} (altered or corrupt)")
        }
        Unreadable { path, detail } => format!("{path}: does not open: {detail}"),
    }
}

pub(crate) fn print_show(m: &Manifest) {
    println!("set        {}", m.set_id);
    println!("site       {}", m.site);
    println!("schedule   {}", m.schedule);
    println!("started    {}", m.started_at);
    println!(
        "finished   {} ({:.1}s)",
        m.finished_at,
        (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0
    );
    println!("format     v{}, wpdr {}", m.format_version, m.wpdr_version);
    match m.recipients() {
        [] => println!("encrypted  no (stored plain)"),
        r => println!("encrypted  to {}", r.join(", ")),
    }
    if let Some(v) = &m.signature {
        println!("signature  {v}");
    }
    for p in &m.failed_parts {
        println!(
            "PARTIAL    no {} in this set: {} (exit {})",
            p.part, p.reason, p.exit_code
        );
    }
    println!(
        "size       {} in {} artifacts",
        human_bytes(m.total_bytes()),
        m.artifacts.len()
    );
    if let Some(db) = &m.database {
        println!(
            "database   {} on {} ({})",
            db.database, db.source, db.server_version
        );
        println!(
            "snapshot   {} over {} connection(s), commits held {:.1} ms",
            db.consistency.method, db.consistency.connections, db.consistency.commits_blocked_ms
        );
        match &db.binlog {
            Some(b) => println!("binlog     {}:{}", b.file, b.position),
            None => println!("binlog     (binary log off)"),
        }
        println!(
            "gtid       {}",
            db.gtid_binlog_pos.as_deref().unwrap_or("(none)")
        );
        println!("raw sql    {}", human_bytes(db.raw_bytes));
        if !db.consistency.not_at_snapshot.is_empty() {
            println!(
                "WARNING    not consistent with the snapshot (non-transactional, read without commits held): {}",
                db.consistency.not_at_snapshot.join(", ")
            );
        }
        for s in &db.skipped {
            println!("SKIPPED    {} {}: {}", s.kind, s.name, s.reason);
        }
        println!();
        println!(
            "{:<40} {:>12} {:>7}  {:<32}  KIND",
            "TABLE", "ROWS", "CHUNKS", "CHECKSUM"
        );
        for t in &db.tables {
            let kind = match &t.rows_not_stored {
                Some(why) => format!("definition only ({why})"),
                None if t.kind == TableKind::Table => String::new(),
                None => t.kind.label().to_string(),
            };
            println!(
                "{:<40} {:>12} {:>7}  {:<32}  {kind}",
                t.name,
                t.rows,
                t.data_artifacts.len(),
                t.checksum
            );
        }
        if !db.objects.is_empty() {
            println!();
            for o in &db.objects {
                println!("{:<10} {}", o.kind, o.name);
                for c in &o.changes {
                    println!("{:<10}   changed: {c}", "");
                }
            }
        }
    }
    if let Some(c) = &m.cluster {
        println!();
        println!(
            "namespace  {}: {} objects, {} Secrets{}",
            c.namespace,
            c.objects,
            c.secrets,
            c.secrets_skipped
                .as_deref()
                .map(|r| format!(" (Secrets NOT stored: {r})"))
                .unwrap_or_default()
        );
        if !c.exposed_credentials.is_empty() {
            println!(
                "           CREDENTIALS OUTSIDE SECRETS: {} (move them to Secrets; {})",
                c.exposed_credentials.len(),
                if m.encryption.is_some() {
                    "this set holds them sealed"
                } else {
                    "this set holds them in the clear: set encryption.recipients"
                }
            );
            for e in &c.exposed_credentials {
                println!("             {} {}", e.object, e.field);
            }
        }
        println!(
            "{:<32} {:<16} {:<44} DIGESTS",
            "WORKLOAD", "CONTAINER", "IMAGE"
        );
        for i in &c.images {
            let mut notes = Vec::new();
            if i.replicas_disagree {
                notes.push("replicas differ");
            }
            if i.tag_ambiguous {
                notes.push("tag runs as several digests");
            }
            if i.digests.is_empty() {
                notes.push("no running pod");
            }
            println!(
                "{:<32} {:<16} {:<44} {}{}",
                i.workload,
                format!("{}{}", i.container, if i.init { " (init)" } else { "" }),
                i.image,
                i.digests.join(", "),
                if notes.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", notes.join("; "))
                }
            );
        }
    }
    if let Some(md) = &m.media {
        println!();
        println!(
            "media      {} objects ({}) from {}, mirrored to {}{}",
            md.objects,
            super::output::human_bytes(md.bytes),
            md.source,
            md.offsite,
            if md.sealed { " (sealed)" } else { "" }
        );
        println!(
            "           this run: {} copied ({}), {} retained, {} deleted",
            md.copied,
            super::output::human_bytes(md.copied_bytes),
            md.retained,
            md.deleted
        );
        if md.not_mirrored_total > 0 {
            println!(
                "           NOT MIRRORED: {} object(s) could not be copied and are not in this set: {}",
                md.not_mirrored_total,
                md.not_mirrored.join(", ")
            );
        }
        if md.missing_total > 0 {
            println!(
                "           MISSING MEDIA: {} upload(s) the database refers to have no object:",
                md.missing_total
            );
            for x in &md.missing {
                println!("             {} (attachment post {})", x.key, x.post_id);
            }
        }
        if !md.unreadable_metadata.is_empty() {
            println!(
                "           UNREADABLE attachment metadata (not PHP-serialised; sizes not checked), posts: {:?}",
                md.unreadable_metadata
            );
        }
        if let Some(r) = &md.deletes_refused {
            println!("           deletions not done: {r}");
        }
    }
}
