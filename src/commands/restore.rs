//! `wpdr restore db`, `wpdr restore cluster` and `wpdr rewrite-url`.

use super::job_context;
use super::output::{bytes_progress, human_bytes, print_json, progress_bar};
use anyhow::Result;
use wpdr::cli::{Cli, OutputFormat};
use wpdr::config::ConfigError;
use wpdr::exit::ExitCode;
use wpdr::jobs::restore::DbRestoreRequest;
use wpdr::jobs::{self, JobReport};
use wpdr::mysql::load::LoadOptions;
use wpdr::mysql::Endpoint;
use wpdr::secret::Secret;

/// A `--target mysql://user@host:port[/db]` server, its password from
/// WPDR_TARGET_PASSWORD, else from the config's restore password
/// (restore.database_password_file, as a restore Job mounts it); never from
/// the command line, where `ps` shows it.
fn target_endpoint(
    text: &str,
    tls: &wpdr::config::TlsConfig,
    configured: &Secret,
) -> Result<(Endpoint, Option<String>), ConfigError> {
    url_endpoint(text, "--target", tls, configured)
}

fn url_endpoint(
    text: &str,
    option: &str,
    tls: &wpdr::config::TlsConfig,
    configured: &Secret,
) -> Result<(Endpoint, Option<String>), ConfigError> {
    let password = std::env::var("WPDR_TARGET_PASSWORD")
        .ok()
        .or_else(|| (!configured.is_empty()).then(|| configured.expose().to_string()));
    Endpoint::from_url(text, password, tls).map_err(|e| ConfigError::Invalid {
        field: option.into(),
        env: "-".into(),
        problem: e,
    })
}

pub(crate) async fn db(cli: &Cli, args: &wpdr::cli::RestoreDbArgs) -> Result<ExitCode> {
    let ctx = job_context(cli).await?;
    let tls = ctx.cfg.database.tls.clone();
    let configured = ctx.cfg.restore.database_password.clone();
    let (target, url_db) = target_endpoint(&args.target, &tls, &configured)?;
    let replicas = args
        .replicas
        .iter()
        .map(|u| url_endpoint(u, "--replica", &tls, &configured).map(|(e, _)| e))
        .collect::<Result<Vec<_>, _>>()?;
    let req = DbRestoreRequest {
        set: args.set.clone(),
        target,
        database: args.database.clone().or(url_db),
        point: args.to_time.clone().or(args.to_gtid.clone()),
        replicas,
        replication: ctx.cfg.restore.replication.clone(),
        load: LoadOptions {
            connections: args
                .connections
                .unwrap_or(ctx.cfg.database.connections)
                .clamp(1, 32),
            force: args.force,
            defer_indexes: !args.no_defer_indexes,
            load_data: !args.sql_inserts,
            rewrite: None,
        },
        replica_timeout: std::time::Duration::from_secs(args.replica_timeout_seconds),
    };
    if args.dry_run {
        let plan = jobs::restore::plan_database(&ctx, &req).await?;
        if cli.output == OutputFormat::Json {
            print_json(&plan)?;
        } else {
            print_db_plan(&plan, args.force);
        }
        return Ok(ExitCode::Ok);
    }
    let pb = progress_bar(cli, 0, "restore db");
    let ctx = ctx.with_progress(bytes_progress(&pb));
    let report = jobs::restore::restore_database(&ctx, &req).await;
    pb.finish_and_clear();
    let report = report?;
    if cli.output == OutputFormat::Json {
        print_json(&report.to_json())?;
    } else {
        print_db_report(&report);
    }
    Ok(report.verdict().exit)
}

fn print_db_plan(plan: &jobs::restore::DbRestorePlan, force: bool) {
    println!(
        "dry run: would restore set {} into database '{}' on {}",
        plan.set, plan.database, plan.target
    );
    println!(
        "  {} tables, {} rows, {} views/routines/triggers/events, {} compressed",
        plan.tables,
        plan.rows,
        plan.objects,
        human_bytes(plan.bytes)
    );
    match &plan.target_contents {
        None => println!("  target is empty: ok"),
        Some(c) if force => println!("  target holds {c}: --force would DROP and recreate it"),
        Some(c) => println!(
            "  target holds {c}: the restore would be refused (use --force or another --database)"
        ),
    }
    if let Some(p) = &plan.point_in_time {
        println!(
            "  then replay the archived binary log from {} to {} ({} segment(s))",
            p.base,
            p.point,
            p.segments.len()
        );
    }
    for r in &plan.replicas_to_seed {
        println!("  then seed replica {r} from the restored primary and start replication");
    }
}

fn print_db_report(report: &jobs::restore::DbRestoreReport) {
    let load = &report.load;
    let bad = load.mismatches();
    for t in &bad {
        println!(
            "MISMATCH {}: rows {} (expected {}), checksum {} (expected {})",
            t.table, t.found_rows, t.expected_rows, t.found_checksum, t.expected_checksum
        );
    }
    println!(
        "restored set {} into '{}' on {} in {:.1}s: {} tables, {} rows, {} objects; {}",
        report.set_id,
        load.database,
        report.target,
        report.seconds,
        load.tables.len(),
        load.tables.iter().map(|t| t.found_rows).sum::<u64>(),
        load.objects_created,
        if bad.is_empty() {
            "every table matches the manifest (rows + checksum)".to_string()
        } else {
            format!("{} table(s) DIFFER", bad.len())
        }
    );
    if let (Some(p), Some(r)) = (&report.point_in_time, &report.replayed) {
        println!(
            "replayed {} transaction(s) from the binlog archive ({} segment(s), {:.1}s): {} .. {}; the database is now at {} ({})",
            r.transactions,
            r.segments,
            r.seconds,
            r.first_gtid.as_deref().unwrap_or("-"),
            r.last_gtid.as_deref().unwrap_or("-"),
            p.point,
            if r.position.is_empty() { "-" } else { &r.position },
        );
        if let Some(why) = &r.not_logged_because {
            println!("  applied without writing them to the target's binary log: {why}");
        }
    }
    for s in &report.replicas {
        println!(
            "replica {} seeded at {} ({} tables) and replicating: caught up to {} in {:.1}s",
            s.replica, s.seeded_at, s.tables, s.caught_up_to, s.seconds
        );
    }
}

pub(crate) async fn cluster(cli: &Cli, args: &wpdr::cli::RestoreClusterArgs) -> Result<ExitCode> {
    let ctx = job_context(cli).await?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| wpdr::cluster::ClusterError::Client(e.to_string()))?;
    let opts = wpdr::restore::ClusterRestoreOptions {
        namespace: &args.namespace,
        host_map: &args.host_map,
        key: ctx.cfg.cluster.secrets_key.as_ref(),
        skip_secrets: args.skip_secrets,
        dry_run: args.dry_run,
        force: args.force,
        create_namespace: !args.no_create_namespace,
    };
    let r = jobs::restore::restore_cluster(&ctx, &args.set, &client, &opts).await?;
    if cli.output == OutputFormat::Json {
        print_json(&r)?;
        return Ok(ExitCode::Ok);
    }
    let verb = if r.dry_run { "would apply" } else { "applied" };
    for o in &r.objects {
        println!("{verb:<12} {o}");
    }
    for p in &r.pins {
        println!(
            "pinned       {} {}: {} -> {}",
            p.workload, p.container, p.from, p.to
        );
    }
    for w in &r.warnings {
        println!("WARNING      {w}");
    }
    println!(
        "{} {} objects into namespace {} ({} Secrets)",
        verb,
        r.objects.len(),
        r.namespace,
        r.secrets_restored
    );
    Ok(ExitCode::Ok)
}

pub(crate) async fn rewrite_url(cli: &Cli, args: &wpdr::cli::RewriteUrlArgs) -> Result<ExitCode> {
    // No config is needed here: TLS comes from the URL's options.
    let (target, url_db) = target_endpoint(&args.target, &Default::default(), &Secret::default())?;
    let database = args
        .database
        .clone()
        .or(url_db)
        .ok_or_else(|| ConfigError::Invalid {
            field: "--database".into(),
            env: "-".into(),
            problem: "name the database (--database or mysql://…/DB)".into(),
        })?;
    for (flag, url) in [("--from", &args.from), ("--to", &args.to)] {
        if url::Url::parse(url).is_err() || url.len() < 8 {
            return Err(ConfigError::Invalid {
                field: flag.into(),
                env: "-".into(),
                problem: format!("'{url}' is not a URL like https://shop.example.com"),
            }
            .into());
        }
    }
    if args.from == args.to {
        return Err(ConfigError::Invalid {
            field: "--to".into(),
            env: "-".into(),
            problem: "is the same as --from: nothing to rewrite".into(),
        }
        .into());
    }
    let report = wpdr::wordpress::search_replace::rewrite_database(
        &target,
        &database,
        args.from.trim_end_matches('/'),
        args.to.trim_end_matches('/'),
        args.dry_run,
        None,
    )
    .await?;
    if cli.output == OutputFormat::Json {
        print_json(&report)?;
    } else {
        println!(
            "{} {} -> {} in database '{database}'",
            if report.dry_run {
                "would rewrite"
            } else {
                "rewrote"
            },
            report.from,
            report.to
        );
        println!(
            "  {:<40} {:>8} {:>8} {:>11}",
            "TABLE.COLUMN", "MATCHED", "CHANGED", "UNPARSEABLE"
        );
        for c in &report.columns {
            println!(
                "  {:<40} {:>8} {:>8} {:>11}",
                format!("{}.{}", c.table, c.column),
                c.matched,
                c.changed,
                c.unparseable
            );
            for r in &c.unparseable_rows {
                println!("      not rewritten: {r}");
            }
        }
        println!(
            "  {} row(s) {}, {} left unchanged because they could not be parsed",
            report.rows_changed,
            if report.dry_run {
                "would change"
            } else {
                "changed"
            },
            report.rows_unparseable
        );
    }
    Ok(ExitCode::Ok)
}
