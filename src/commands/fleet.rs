//! `wpdr controller`, `wpdr fleet run-job` and `wpdr fleet status`.

use anyhow::{Context, Result};
use chrono::Utc;
use kube::api::{Api, ListParams};
use wpdr::cli::{Cli, ControllerArgs, OutputFormat};
use wpdr::exit::ExitCode;
use wpdr::fleet::controller::{self, Controller, RunOptions};
use wpdr::fleet::job::JobTemplate;
use wpdr::fleet::outcome::{JobOutcome, SiteSummary};
use wpdr::fleet::plan::Limits;
use wpdr::fleet::site::Site;
use wpdr::jobs::{JobKind, Verdict};

async fn client() -> Result<kube::Client> {
    kube::Client::try_default().await.context(
        "cannot reach the Kubernetes API (in a pod: its service account; outside: KUBECONFIG)",
    )
}

pub(crate) async fn run_controller(cli: &Cli, args: &ControllerArgs) -> Result<ExitCode> {
    let path = &args.job_template;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the Job template {}", path.display()))?;
    let template: JobTemplate =
        serde_yaml::from_str(&text).map_err(|e| wpdr::fleet::controller::FleetError::Template {
            path: path.display().to_string(),
            problem: e.to_string(),
        })?;
    let limits = Limits {
        max_jobs: args.max_jobs.max(1),
        per_database: args.per_database.max(1),
        per_endpoint: args.per_endpoint.max(1),
        ..Limits::default()
    };
    let mut c = Controller::new(client().await?, template, limits);
    if args.dry_run {
        c = c.dry_run();
    }
    if args.once || args.dry_run {
        let round = c.round(Utc::now()).await?;
        if cli.output == OutputFormat::Json {
            super::output::print_json(&serde_json::json!({
                "sites": round.sites, "running": round.running, "invalid": round.invalid,
                "waiting": round.waiting, "api_calls": round.api_calls, "dry_run": args.dry_run,
                "started": round.started,
                "finished": round.finished.iter().map(|(s, ok)| serde_json::json!({"site": s, "ok": ok})).collect::<Vec<_>>(),
            }))?;
        } else {
            let verb = if args.dry_run {
                "would start"
            } else {
                "started"
            };
            println!(
                "{} sites, {} running, {} finished this round, {} waiting for a cap, {} invalid",
                round.sites,
                round.running,
                round.finished.len(),
                round.waiting,
                round.invalid
            );
            for s in &round.started {
                println!("{verb} {s}");
            }
        }
        return Ok(ExitCode::Ok);
    }
    let leader = if args.leader_election {
        let identity = args
            .identity
            .clone()
            .unwrap_or_else(|| format!("wpdr-controller-{}", std::process::id()));
        Some(wpdr::cluster::lease::LeaderElector::new(
            client().await?,
            &args.lease_namespace,
            "wpdr-controller",
            &identity,
            std::time::Duration::from_secs(30),
        ))
    } else {
        None
    };
    let c = std::sync::Arc::new(c);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let served = c.clone();
    let rpo = chrono::Duration::hours(args.rpo_hours);
    tokio::spawn(wpdr::daemon::http::serve(
        listener,
        std::sync::Arc::new(move |req: wpdr::daemon::http::Request| {
            let c = served.clone();
            async move {
                use wpdr::daemon::http::Response;
                match (req.method.as_str(), req.path.as_str()) {
                    ("GET", "/healthz") | ("GET", "/readyz") => Response::text(200, "ok\n"),
                    ("GET", "/metrics") => Response {
                        status: 200,
                        content_type: "text/plain; version=0.0.4",
                        body: wpdr::fleet::metrics::render(&c.snapshot(), Utc::now(), rpo),
                    },
                    _ => Response::text(404, "not found\n"),
                }
            }
        }),
    ));
    controller::run_until(
        &c,
        RunOptions {
            every: std::time::Duration::from_secs(args.every_seconds.max(1)),
            leader,
        },
        wpdr::daemon::shutdown_signal(),
    )
    .await;
    Ok(ExitCode::Ok)
}

pub(crate) async fn run_job(
    cli: &Cli,
    job: &str,
    schedule: &str,
    outcome_file: &std::path::Path,
) -> Result<ExitCode> {
    let kind: JobKind = serde_yaml::from_str(job).map_err(|_| {
        anyhow::anyhow!(
            "--job '{job}' is not one of backup, media-sync, prune, verify-latest, drill"
        )
    })?;
    // Whatever fails, the controller gets an outcome that says why.
    let (verdict, site) = match super::job_context(cli).await {
        Ok(ctx) => {
            let verdict = wpdr::jobs::run_scheduled(&ctx, kind, schedule, None)
                .await
                .unwrap_or_else(|e| Verdict::from(&e));
            let site = wpdr::jobs::status::status(&ctx)
                .await
                .ok()
                .map(|s| SiteSummary::of(&s));
            (verdict, site)
        }
        Err(e) => (
            Verdict::failed(crate::classify(&e), "setup", format!("{e:#}")),
            None,
        ),
    };
    let outcome = JobOutcome::new(kind.as_str(), schedule, &verdict, site);
    std::fs::write(outcome_file, outcome.to_message())
        .with_context(|| format!("cannot write the outcome to {}", outcome_file.display()))?;
    if cli.output == OutputFormat::Json {
        super::output::print_json(&outcome)?;
    } else if outcome.ok {
        println!("{} ({schedule}): ok", kind.as_str());
    } else {
        println!(
            "{} ({schedule}): FAILED ({}): {}",
            kind.as_str(),
            outcome.reason.as_deref().unwrap_or("?"),
            outcome.message.as_deref().unwrap_or("")
        );
    }
    Ok(verdict.exit)
}

pub(crate) async fn status(cli: &Cli, rpo_hours: i64) -> Result<ExitCode> {
    let mut sites = Api::<Site>::all(client().await?)
        .list(&ListParams::default())
        .await
        .context("cannot list Sites (is the CRD installed? `wpdr fleet crd | kubectl apply -f -`)")?
        .items;
    let now = Utc::now();
    wpdr::fleet::metrics::by_severity(&mut sites, now);
    let summary = wpdr::fleet::metrics::summary(&sites, now, chrono::Duration::hours(rpo_hours));
    let rows: Vec<serde_json::Value> = sites
        .iter()
        .map(|s| {
            let st = s.status.clone().unwrap_or_default();
            let age = st
                .newest_set_time
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| (now - t.with_timezone(&Utc)).num_seconds());
            serde_json::json!({
                "site": format!("{}/{}", s.metadata.namespace.as_deref().unwrap_or(""), s.metadata.name.as_deref().unwrap_or("")),
                "newest_set": st.newest_set,
                "newest_set_age_seconds": age,
                "recoverable_to": st.recoverable_to,
                "open_gaps": st.open_gaps,
                "last_drill": st.last_drill,
                "failures": st.runs.values().map(|r| r.failures).max().unwrap_or(0),
                "last_error": st.last_error,
                "suspended": s.spec.suspend,
            })
        })
        .collect();
    if cli.output == OutputFormat::Json {
        super::output::print_json(&serde_json::json!({ "summary": summary, "sites": rows }))?;
        return Ok(ExitCode::Ok);
    }
    println!(
        "{:<40} {:>10} {:<8} {:>6} {:>5}  ERROR",
        "SITE", "SET AGE", "DRILL", "RTO", "FAIL"
    );
    for r in &rows {
        let age = r["newest_set_age_seconds"]
            .as_i64()
            .map_or("never".to_string(), |s| {
                format!("{}h{:02}m", s / 3600, s % 3600 / 60)
            });
        println!(
            "{:<40} {:>10} {:<8} {:>6} {:>5}  {}",
            r["site"].as_str().unwrap_or(""),
            age,
            r["last_drill"]["result"].as_str().unwrap_or("never"),
            r["last_drill"]["rtoSeconds"]
                .as_i64()
                .map_or("-".to_string(), |s| format!("{s}s")),
            r["failures"],
            r["last_error"].as_str().unwrap_or("")
        );
    }
    println!(
        "{} sites: {} failing, {} out of RPO ({}h), {} never backed up, {} never drilled",
        summary["sites"],
        summary["failing"],
        summary["out_of_rpo"],
        rpo_hours,
        summary["never_backed_up"],
        summary["never_drilled"]
    );
    Ok(ExitCode::Ok)
}
