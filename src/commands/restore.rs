//! `wpdr restore db`.

use super::open;
use super::output::{human_bytes, print_json, progress_bar};
use anyhow::Context;
use anyhow::Result;
use std::sync::Arc;
use wpdr::catalog::Catalog;
use wpdr::cli::{Cli, OutputFormat};
use wpdr::config::ConfigError;
use wpdr::exit::ExitCode;
use wpdr::mysql::load::LoadOptions;
use wpdr::mysql::Endpoint;

/// A `--target mysql://user@host:port[/db]` server, its password from
/// WPDR_TARGET_PASSWORD (never from the command line, where `ps` shows it).
fn target_endpoint(text: &str) -> Result<(Endpoint, Option<String>), ConfigError> {
    url_endpoint(text, "--target")
}

fn url_endpoint(text: &str, option: &str) -> Result<(Endpoint, Option<String>), ConfigError> {
    Endpoint::from_url(text, std::env::var("WPDR_TARGET_PASSWORD").ok()).map_err(|e| {
        ConfigError::Invalid {
            field: option.into(),
            env: "-".into(),
            problem: e,
        }
    })
}

pub(crate) async fn db(cli: &Cli, args: &wpdr::cli::RestoreDbArgs) -> Result<ExitCode> {
    let (cfg, store) = open(cli).await?;
    let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
    let point = args.to_time.clone().or(args.to_gtid.clone());
    let pitr = match &point {
        None => None,
        Some(p) => {
            let named = if args.set == "latest" {
                None
            } else {
                Some(catalog.resolve(&args.set).await?)
            };
            let sets = catalog.list().await?;
            Some(
                wpdr::binlog::replay::plan(&store, &cfg.site_prefix(), &sets, named.as_ref(), p)
                    .await?,
            )
        }
    };
    let manifest = match &pitr {
        Some(p) => p.set.clone(),
        None => catalog.resolve(&args.set).await?,
    };
    let (target, url_db) = target_endpoint(&args.target)?;
    if pitr.is_some() && !args.dry_run {
        // Before the set is loaded: a restore that cannot replay stops here.
        wpdr::binlog::replay::check_tools(&target)?;
    }
    let replicas = args
        .replicas
        .iter()
        .map(|u| url_endpoint(u, "--replica").map(|(e, _)| e))
        .collect::<Result<Vec<_>, _>>()?;
    let section = manifest
        .database
        .as_ref()
        .context("this set holds no database snapshot")?;
    let database = args
        .database
        .clone()
        .or(url_db)
        .unwrap_or_else(|| section.database.clone());
    let opts = LoadOptions {
        connections: args
            .connections
            .unwrap_or(cfg.database.connections)
            .clamp(1, 32),
        force: args.force,
        defer_indexes: !args.no_defer_indexes,
    };
    if args.dry_run {
        let mut conn = target.connect(None).await?;
        let contents = wpdr::mysql::load::describe_contents(&mut conn, &database).await?;
        let plan = serde_json::json!({
            "dry_run": true,
            "set": manifest.set_id,
            "target": target.display(),
            "database": database,
            "target_contents": contents,
            "would_drop_existing": contents.is_some() && args.force,
            "refused_without_force": contents.is_some() && !args.force,
            "tables": section.tables.len(),
            "rows": section.tables.iter().map(|t| t.rows).sum::<u64>(),
            "objects": section.objects.len(),
            "bytes": manifest.total_bytes(),
            "point_in_time": pitr,
            "replicas_to_seed": replicas.iter().map(|r| r.display()).collect::<Vec<_>>(),
        });
        if cli.output == OutputFormat::Json {
            print_json(&plan)?;
        } else {
            println!(
                "dry run: would restore set {} into database '{}' on {}",
                manifest.set_id,
                database,
                target.display()
            );
            println!(
                "  {} tables, {} rows, {} views/routines/triggers/events, {} compressed",
                section.tables.len(),
                plan["rows"],
                section.objects.len(),
                human_bytes(manifest.total_bytes())
            );
            match &contents {
                None => println!("  target is empty: ok"),
                Some(c) if args.force => println!("  target holds {c}: --force would DROP and recreate it"),
                Some(c) => println!("  target holds {c}: the restore would be refused (use --force or another --database)"),
            }
            if let Some(p) = &pitr {
                println!(
                    "  then replay the archived binary log from {} to {} ({} segment(s))",
                    p.base,
                    p.point,
                    p.segments.len()
                );
            }
            for r in &replicas {
                println!(
                    "  then seed replica {} from the restored primary and start replication",
                    r.display()
                );
            }
        }
        return Ok(ExitCode::Ok);
    }
    let pb = progress_bar(cli, manifest.total_bytes(), "restore db");
    let pb2 = pb.clone();
    let started = std::time::Instant::now();
    let report = wpdr::restore::restore_db(
        &catalog,
        store.clone(),
        &manifest,
        &target,
        &database,
        &opts,
        Arc::new(move |n| pb2.inc(n)),
    )
    .await?;
    pb.finish_and_clear();
    let bad = report.mismatches();
    // The set loaded and matches its manifest: now the transactions after it.
    let replayed = match &pitr {
        Some(plan) if bad.is_empty() => {
            let started = std::time::Instant::now();
            let scratch = wpdr::binlog::replay::ScratchDir::new()?;
            let mut r = wpdr::binlog::replay::ReplayReport::default();
            let files = wpdr::binlog::replay::select(
                &store,
                &cfg.site_prefix(),
                plan,
                &section.database,
                &scratch.0,
                &mut r,
            )
            .await?;
            wpdr::binlog::replay::apply(&files, &scratch.0, &target, &section.database, &database)
                .await?;
            r.seconds = started.elapsed().as_secs_f64();
            Some(r)
        }
        _ => None,
    };
    // Replicas last: seeded from the primary as it now is, after any replay.
    let mut seeded = Vec::new();
    if bad.is_empty() {
        for replica in &replicas {
            seeded.push(
                wpdr::mysql::seed::seed_replica(
                    &target,
                    &database,
                    replica,
                    &opts,
                    std::time::Duration::from_secs(args.replica_timeout_seconds),
                )
                .await?,
            );
        }
    }
    if cli.output == OutputFormat::Json {
        print_json(&serde_json::json!({
            "set": manifest.set_id,
            "database": report.database,
            "target": target.display(),
            "seconds": started.elapsed().as_secs_f64(),
            "statements": report.statements,
            "phases": report.phases,
            "tables": report.tables,
            "mismatches": bad.len(),
            "ok": bad.is_empty(),
            "point_in_time": pitr.as_ref().map(|p| serde_json::json!({
                "point": p.point,
                "set_position": p.base,
                "replayed": replayed,
            })),
            "replicas": seeded,
        }))?;
    } else {
        for t in &bad {
            println!(
                "MISMATCH {}: rows {} (expected {}), checksum {} (expected {})",
                t.table, t.found_rows, t.expected_rows, t.found_checksum, t.expected_checksum
            );
        }
        println!(
            "restored set {} into '{}' on {} in {:.1}s: {} tables, {} rows, {} objects; {}",
            manifest.set_id,
            report.database,
            target.display(),
            started.elapsed().as_secs_f64(),
            report.tables.len(),
            report.tables.iter().map(|t| t.found_rows).sum::<u64>(),
            report.objects_created,
            if bad.is_empty() {
                "every table matches the manifest (rows + checksum)".to_string()
            } else {
                format!("{} table(s) DIFFER", bad.len())
            }
        );
        if let (Some(p), Some(r)) = (&pitr, &replayed) {
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
        }
        for s in &seeded {
            println!(
                "replica {} seeded at {} ({} tables) and replicating: caught up to {} in {:.1}s",
                s.replica, s.seeded_at, s.tables, s.caught_up_to, s.seconds
            );
        }
    }
    Ok(if bad.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::RestoreMismatch
    })
}

pub(crate) async fn cluster(cli: &Cli, args: &wpdr::cli::RestoreClusterArgs) -> Result<ExitCode> {
    let (cfg, store) = open(cli).await?;
    let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
    let manifest = catalog.resolve(&args.set).await?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| wpdr::cluster::ClusterError::Client(e.to_string()))?;
    let opts = wpdr::restore::ClusterRestoreOptions {
        namespace: &args.namespace,
        host_map: &args.host_map,
        key: cfg.cluster.secrets_key.as_ref(),
        skip_secrets: args.skip_secrets,
        dry_run: args.dry_run,
        force: args.force,
        create_namespace: !args.no_create_namespace,
    };
    let r = wpdr::restore::restore_cluster(&catalog, &manifest, &client, &opts).await?;
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
    let (target, url_db) = target_endpoint(&args.target)?;
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
