//! `wpdr restore <set> --namespace NEW`, `wpdr restore --resume ID`, `wpdr drill`.

use super::job_context;
use super::output::print_json;
use anyhow::Result;
use wpdr::binlog::replay::Point;
use wpdr::cli::{Cli, DrillArgs, OutputFormat, RestoreArgs};
use wpdr::exit::ExitCode;
use wpdr::jobs::restore::{DrillRequest, SiteRestoreRequest};
use wpdr::jobs::{self, JobError, JobReport};
use wpdr::restore::journal::Journal;
use wpdr::restore::plan::StepKind;
use wpdr::restore::run::{load_plan, RestoreOutcome, RunError};

fn print_journal(j: &Journal) {
    println!(
        "restore {} of set {} into namespace {} (plan {}, attempt {})",
        j.restore_id, j.set_id, j.namespace, j.plan.name, j.runs
    );
    if let Some(p) = j.point {
        println!("  to the point in time {}", p.to_rfc3339());
    }
    for (id, s) in j.ordered_steps() {
        println!(
            "  {:<16} {:<16} {:<8} {:>8.1}s{}",
            id,
            serde_json::to_value(s.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            format!("{:?}", s.state).to_lowercase(),
            s.seconds,
            s.error
                .as_ref()
                .map(|e| format!("  {e}"))
                .unwrap_or_default()
        );
        // A failure shows its step's last lines; the checks always show what they found.
        if s.error.is_some() || s.kind == StepKind::Checks {
            for l in s.log.iter().rev().take(10).rev() {
                println!("      | {l}");
            }
        }
    }
}

pub(crate) async fn restore(cli: &Cli, args: &RestoreArgs) -> Result<ExitCode> {
    if let Some(id) = &args.resume {
        let ctx = job_context(cli).await?;
        return match jobs::restore::resume_site(&ctx, id, args.force, !args.no_create_namespace)
            .await
        {
            Ok(outcome) => finish(cli, outcome),
            Err(JobError::Run(e)) if matches!(*e, RunError::AlreadyDone { .. }) => {
                println!("{e}");
                Ok(ExitCode::Ok)
            }
            Err(e) => Err(e.into()),
        };
    }
    let (Some(set), Some(namespace)) = (&args.set, &args.namespace) else {
        eprintln!("error: wpdr restore needs a set and --namespace (wpdr restore latest --namespace shop-restored), --resume ID, or a part (restore db|media|cluster); see wpdr restore --help");
        return Ok(ExitCode::Usage);
    };
    let plan = load_plan(&args.plan)?;
    let ctx = job_context(cli).await?;
    let req = SiteRestoreRequest {
        set,
        namespace,
        plan,
        site_url: args.site_url.as_deref(),
        create_namespace: !args.no_create_namespace,
        point: args.to_time.as_ref().and_then(Point::time),
    };
    if args.dry_run {
        let d = jobs::restore::plan_site(&ctx, req).await?;
        if cli.output == OutputFormat::Json {
            print_json(&d)?;
        } else {
            println!(
                "dry run: restore set {} into namespace {} with plan {}{}",
                d.set_id,
                d.namespace,
                d.plan,
                d.site_url
                    .as_ref()
                    .map(|u| format!(", site at {u}"))
                    .unwrap_or_default()
            );
            if let Some(p) = &d.point_in_time {
                println!(
                    "  point in time {}: set {} (GTID {}), then {} archived segment(s) replayed to the point; the media as the mirror's runs saw it then",
                    p.point,
                    p.set_id,
                    p.base,
                    p.segments.len()
                );
            }
            for s in &d.steps {
                println!(
                    "  stage {} {:<16} (after: {}; timeout {}s; last time: {})\n      {}",
                    s.stage,
                    s.id,
                    if s.after.is_empty() {
                        "-".into()
                    } else {
                        s.after.join(", ")
                    },
                    s.timeout_seconds,
                    s.last_seconds
                        .map(|x| format!("{x:.1}s"))
                        .unwrap_or_else(|| "never ran".into()),
                    s.touches
                );
            }
            for p in &d.problems {
                println!("  PROBLEM: {p}");
            }
        }
        return Ok(if d.problems.is_empty() {
            ExitCode::Ok
        } else {
            ExitCode::Config
        });
    }
    let outcome = jobs::restore::restore_site(&ctx, req).await?;
    finish(cli, outcome)
}

fn finish(cli: &Cli, outcome: RestoreOutcome) -> Result<ExitCode> {
    if cli.output == OutputFormat::Json {
        print_json(&outcome)?;
    } else {
        print_journal(&outcome.journal);
        if outcome.ok {
            println!(
                "restored in {:.1}s: every step done, every check passed",
                outcome.journal.total_seconds().unwrap_or(0.0)
            );
        } else {
            println!(
                "RESTORE FAILED: fix the cause above, then resume with: wpdr restore --resume {}",
                outcome.journal.restore_id
            );
        }
    }
    Ok(outcome.verdict().exit)
}

pub(crate) async fn drill(cli: &Cli, args: &DrillArgs) -> Result<ExitCode> {
    let plan = load_plan(&args.plan)?;
    let ctx = job_context(cli).await?;
    let (report, outcome) = jobs::restore::drill(
        &ctx,
        DrillRequest {
            set: &args.set,
            plan,
            site_url: args.site_url.as_deref(),
            keep: args.keep,
            point: args.to_time.as_ref().and_then(Point::time),
        },
    )
    .await?;
    if let Some(p) = &args.report {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)?;
    }
    if let Some(p) = &args.metrics_file {
        std::fs::write(p, report.metrics())?;
    }
    if cli.output == OutputFormat::Json {
        print_json(&report)?;
    } else {
        print_journal(&outcome.journal);
        println!(
            "drill {}: set {} restored into {} — RTO {:.1}s (measured), RPO {:.0}s (age of the data)",
            if report.ok { "PASSED" } else { "FAILED" },
            report.set_id,
            report.namespace,
            report.rto_seconds,
            report.rpo_seconds
        );
        if let Some(r) = report.recoverable.as_ref().filter(|r| r.newest.is_some()) {
            println!(
                "  point in time: restorable up to {}s before the drill began{}",
                r.rpo_seconds.unwrap_or(0.0).round(),
                if r.open_gaps > 0 {
                    format!(" — {} binlog gap(s) without a later set", r.open_gaps)
                } else {
                    String::new()
                }
            );
        }
        for t in &report.teardown {
            println!("  teardown: {t}");
        }
        if report.kept {
            println!("  kept: namespace, database and bucket stay (--keep)");
        }
    }
    Ok(report.verdict().exit)
}
