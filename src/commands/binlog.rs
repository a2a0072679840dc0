//! `wpdr binlog archive` and `wpdr sets recoverable`.

use super::open;
use super::output::{human_bytes, print_json};
use anyhow::Result;
use chrono::Utc;
use wpdr::binlog::archive::ArchiveOptions;
use wpdr::binlog::window::{self, Window};
use wpdr::cli::{Cli, OutputFormat};
use wpdr::exit::ExitCode;
use wpdr::jobs::JobReport;

pub(crate) async fn archive(
    cli: &Cli,
    until_caught_up: bool,
    run_for: Option<u64>,
) -> Result<ExitCode> {
    // SIGTERM or Ctrl-C is the archive's normal end: it stops after the
    // last whole transaction it uploaded.
    let ctx = super::job_context(cli).await?;
    let opts = ArchiveOptions {
        until_caught_up,
        run_for: run_for.map(std::time::Duration::from_secs),
        spool_dir: None,
    };
    let report = wpdr::jobs::binlog_archive::archive(&ctx, opts).await?;
    if cli.output == OutputFormat::Json {
        print_json(&report)?;
    } else {
        println!(
            "archived {} transaction(s) in {} segment(s) ({}) from {}; archive ends at {}",
            report.transactions,
            report.segments,
            human_bytes(report.bytes),
            if report.server.is_empty() {
                "-"
            } else {
                &report.server
            },
            if report.position.is_empty() {
                "-"
            } else {
                &report.position
            },
        );
        for g in &report.gaps {
            println!(
                "GAP: {} no longer had {} ({}); archiving went on from {}. Take a backup now.",
                g.server, g.after, g.detail, g.resumed_at
            );
        }
    }
    Ok(report.verdict().exit)
}

pub(crate) async fn prune(cli: &Cli, dry_run: bool) -> Result<ExitCode> {
    let ctx = super::job_context(cli).await?;
    let report = wpdr::jobs::binlog_prune::binlog_prune(&ctx, dry_run).await?;
    if cli.output == OutputFormat::Json {
        print_json(&report)?;
        return Ok(report.verdict().exit);
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    if report.shared {
        println!("shared archive {}", report.archive);
        for c in &report.claims {
            println!(
                "  claim of {:<24} replays from {} ({}), holds until {}",
                c.site,
                c.floor_time.format("%Y-%m-%d %H:%M"),
                c.floor_position,
                c.holds_until.format("%Y-%m-%d")
            );
        }
        for c in &report.lapsed {
            println!(
                "  LAPSED claim of {} (not renewed since {}): it holds nothing back{}",
                c.site,
                c.renewed_at.format("%Y-%m-%d %H:%M"),
                if dry_run { "" } else { "; deleted" }
            );
        }
        if report.claims.is_empty() {
            println!("  no live claim: no site needs a segment yet, or none has run a backup with database.binlog.archive set; nothing is deleted");
        }
    }
    print_binlog_prune(&report.pruned, verb);
    Ok(report.verdict().exit)
}

pub(crate) fn print_binlog_prune(binlog: &wpdr::binlog::prune::BinlogPruneReport, verb: &str) {
    println!(
        "binlog archive: {} segment(s) no kept restore replays {verb}, {} orphan(s), {} old gap record(s); {} kept ({} freed)",
        binlog.segments_deleted,
        binlog.orphans_deleted,
        binlog.gaps_deleted,
        binlog.kept_segments,
        human_bytes(binlog.bytes_freed)
    );
}

pub(crate) fn print_claim(report: &wpdr::binlog::claim::ClaimReport, dry_run: bool) {
    match &report.claim {
        Some(c) => println!(
            "shared binlog archive {}: claim {} from {} ({}), holds until {}; the archive's `wpdr binlog prune` deletes what no claim needs",
            report.archive,
            if dry_run { "would be renewed" } else { "renewed" },
            c.floor_time.format("%Y-%m-%d %H:%M"),
            c.floor_position,
            c.holds_until.format("%Y-%m-%d")
        ),
        None => println!(
            "shared binlog archive {}: no set with a binlog position yet, so no claim",
            report.archive
        ),
    }
}

/// The media side of a point in time: which mirror runs left generations.
#[derive(serde::Serialize)]
struct MediaWindow {
    runs: usize,
    first_listing: Option<chrono::DateTime<Utc>>,
    newest_listing: Option<chrono::DateTime<Utc>>,
}

#[derive(serde::Serialize)]
struct Recoverable<'a> {
    #[serde(flatten)]
    window: &'a Window,
    /// Present when media is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    media: Option<MediaWindow>,
}

pub(crate) async fn recoverable(cli: &Cli) -> Result<ExitCode> {
    let (cfg, store) = open(cli).await?;
    let w = window::load(&cfg, &store).await?;
    let media = match &cfg.media {
        Some(_) => {
            let gens = wpdr::media::point::list(&store, &cfg.site_prefix()).await?;
            Some(MediaWindow {
                runs: gens.len(),
                first_listing: gens.first().map(|g| g.listed_at),
                newest_listing: gens.last().map(|g| g.listed_at),
            })
        }
        None => None,
    };
    if cli.output == OutputFormat::Json {
        print_json(&Recoverable { window: &w, media })?;
    } else {
        print_window(&w);
        if let Some(m) = &media {
            match (m.first_listing, m.newest_listing) {
                (Some(first), Some(newest)) => println!(
                    "media: {} mirror run(s) listed the uploads from {} to {}; a point after {} gets the media as of then (later uploads are not mirrored yet)",
                    m.runs,
                    fmt(first),
                    fmt(newest),
                    fmt(newest)
                ),
                _ => println!("media: no mirror run yet: a point-in-time restore cannot bring the media back (run `wpdr media sync`)"),
            }
        }
    }
    Ok(if w.open_gaps > 0 {
        ExitCode::BinlogGap
    } else {
        ExitCode::Ok
    })
}

fn fmt(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(crate) fn print_window(w: &Window) {
    match (w.oldest, w.newest) {
        (Some(o), Some(n)) => println!(
            "recoverable: {} .. {} (newest is {}s old)",
            fmt(o),
            fmt(n),
            (Utc::now() - n).num_seconds().max(0)
        ),
        _ => println!("recoverable: nothing (no backup set yet)"),
    }
    for r in &w.ranges {
        if r.from == r.to {
            println!(
                "  set {}  {} only (no archive after it)",
                r.set_id,
                fmt(r.from)
            );
        } else {
            println!("  set {}  {} .. {}", r.set_id, fmt(r.from), fmt(r.to));
        }
    }
    match &w.archive_head {
        Some(h) => println!(
            "binlog archive: {} run(s), at {} from {}, updated {}s ago",
            w.runs.len(),
            h.position,
            h.server,
            (Utc::now() - h.updated_at).num_seconds().max(0)
        ),
        None => println!("binlog archive: not running (no segment yet); run `wpdr binlog archive`"),
    }
    print_gaps(w);
}

/// The window in `status`: one line, plus every gap.
pub(crate) fn print_window_summary(w: &Window) {
    match (w.oldest, w.newest) {
        (Some(o), Some(n)) => println!(
            "recoverable {} .. {} (newest {}s old; `wpdr sets recoverable` for details)",
            fmt(o),
            fmt(n),
            (Utc::now() - n).num_seconds().max(0)
        ),
        _ => println!("recoverable nothing yet"),
    }
    match &w.archive_head {
        Some(h) => println!(
            "binlog      archived to {} from {}, updated {}s ago",
            h.position,
            h.server,
            (Utc::now() - h.updated_at).num_seconds().max(0)
        ),
        None => {
            println!("binlog      not archived (point-in-time restores need `wpdr binlog archive`)")
        }
    }
    print_gaps(w);
}

fn print_gaps(w: &Window) {
    for g in &w.gaps {
        println!(
            "GAP detected {}: {} no longer had {} ({}); archive resumed at {}",
            fmt(g.detected_at),
            g.server,
            g.after,
            g.detail,
            g.resumed_at
        );
    }
    if w.open_gaps > 0 {
        println!(
            "WARNING: {} gap(s) not yet followed by a backup set: points after them cannot be restored until `wpdr backup` runs",
            w.open_gaps
        );
    }
}
