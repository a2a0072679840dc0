//! The `wpdr` binary: parse, set up logging, dispatch, map errors to exit codes.

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use wpdr::catalog::{Catalog, CatalogError, Manifest, SetSummary};
use wpdr::cli::{Cli, Command, LogFormat, OutputFormat, RestoreCommand, SetsCommand};
use wpdr::config::{Config, ConfigError, ProcessEnv};
use wpdr::exit::{Classify, ExitCode};
use wpdr::mysql::load::LoadOptions;
use wpdr::mysql::{Endpoint, MysqlError};
use wpdr::store::{Store, StoreError};

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() {
                ExitCode::Usage.code()
            } else {
                0
            });
        }
    };
    init_logging(&cli);
    bound_driver_buffers();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(ExitCode::Internal.code());
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => std::process::ExitCode::from(code.code()),
        Err(e) => {
            let code = classify(&e);
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(code.code())
        }
    }
}

/// mysql_async keeps up to 128 packet buffers of up to 4 MiB each in a global
/// pool; a restore sends 1 MiB statements, so the pool alone could hold
/// 128 MiB. Fewer, smaller pooled buffers keep memory bounded; larger packets
/// are simply allocated. Must run before the driver is first used.
fn bound_driver_buffers() {
    // glibc raises its mmap threshold after large frees, after which the 1 MiB
    // statement and block buffers come from per-thread arenas and fragment
    // them (RSS grew to 150 MiB in a restore). A fixed threshold keeps large
    // buffers in mmap, returned to the system when freed.
    // SAFETY: mallopt only tunes the allocator; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
    for (name, value) in [
        ("MYSQL_ASYNC_BUFFER_POOL_CAP", "16"),
        ("MYSQL_ASYNC_BUFFER_SIZE_CAP", "2097152"),
    ] {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
}

/// Finds the most specific classified error in the chain.
fn classify(e: &anyhow::Error) -> ExitCode {
    for cause in e.chain() {
        if let Some(x) = cause.downcast_ref::<ConfigError>() {
            return x.exit_code();
        }
        if let Some(x) = cause.downcast_ref::<StoreError>() {
            return x.exit_code();
        }
        if let Some(x) = cause.downcast_ref::<CatalogError>() {
            return x.exit_code();
        }
        if let Some(x) = cause.downcast_ref::<MysqlError>() {
            return x.exit_code();
        }
        if let Some(x) = cause.downcast_ref::<wpdr::backup::BackupError>() {
            return x.exit_code();
        }
        if let Some(x) = cause.downcast_ref::<wpdr::restore::RestoreError>() {
            return x.exit_code();
        }
        if let Some(x) = cause.downcast_ref::<wpdr::daemon::DaemonError>() {
            return x.exit_code();
        }
        if let Some(x) = cause.downcast_ref::<wpdr::cluster::ClusterError>() {
            return x.exit_code();
        }
    }
    ExitCode::Internal
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = if cli.quiet {
        "warn"
    } else {
        match cli.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_env("WPDR_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default},aws_config=warn,aws_smithy_runtime=warn,mysql_async=warn"
        ))
    });
    let json = match cli.log_format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
}

fn progress_bar(cli: &Cli, total: u64, what: &str) -> ProgressBar {
    if cli.quiet || cli.output == OutputFormat::Json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

async fn open(cli: &Cli) -> Result<(Config, Arc<Store>)> {
    let cfg = Config::load(cli.config.as_deref(), &ProcessEnv)?;
    let store = Store::open(&cfg.store).await?;
    Ok((cfg, Arc::new(store)))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Backup(args) => {
            let (cfg, store) = open(&cli).await?;
            if args.dry_run {
                return backup_dry_run(&cli, &cfg).await;
            }
            let pb = progress_bar(&cli, 0, "backup");
            // The size is known only inside the snapshot: count bytes without a total.
            pb.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} {bytes} of SQL written, {bytes_per_sec}, {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.enable_steady_tick(std::time::Duration::from_millis(200));
            let pb2 = pb.clone();
            let progress: wpdr::mysql::dump::Progress = Arc::new(move |n| pb2.inc(n));
            let manifest = wpdr::backup::run(&cfg, store.clone(), &args.schedule, progress).await?;
            pb.finish_and_clear();
            if cli.output == OutputFormat::Json {
                print_json(&SetSummary::from(&manifest))?;
            } else {
                print_show(&manifest);
            }
            Ok(ExitCode::Ok)
        }
        Command::Sets(SetsCommand::List) => {
            let (cfg, store) = open(&cli).await?;
            let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
            let sets = catalog.list().await?;
            let summaries: Vec<SetSummary> = sets.iter().map(SetSummary::from).collect();
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
                    "{:<22} {:<10} {:<20} {:>9} {:>10} {:>7} {:>12}",
                    "SET", "SCHEDULE", "FINISHED (UTC)", "DURATION", "SIZE", "TABLES", "ROWS"
                );
                for s in &summaries {
                    println!(
                        "{:<22} {:<10} {:<20} {:>8}s {:>10} {:>7} {:>12}",
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
            Ok(ExitCode::Ok)
        }
        Command::Sets(SetsCommand::Show { set }) => {
            let (cfg, store) = open(&cli).await?;
            let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
            let m = catalog.resolve(set).await?;
            if cli.output == OutputFormat::Json {
                print_json(&m)?;
            } else {
                print_show(&m);
            }
            Ok(ExitCode::Ok)
        }
        Command::Verify { set } => {
            let (cfg, store) = open(&cli).await?;
            let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
            let m = catalog.resolve(set).await?;
            let pb = progress_bar(&cli, m.total_bytes(), "verify");
            let report = catalog.verify(&m, &|n| pb.inc(n)).await?;
            pb.finish_and_clear();
            if cli.output == OutputFormat::Json {
                print_json(&report)?;
            } else {
                for p in &report.problems {
                    println!("BAD  {}", describe_problem(p));
                }
                println!(
                    "{}: {} artifacts, {} checked, {} problem(s)",
                    report.set_id,
                    report.artifacts_checked,
                    human_bytes(report.bytes_checked),
                    report.problems.len()
                );
            }
            Ok(if report.ok() {
                ExitCode::Ok
            } else {
                ExitCode::Integrity
            })
        }
        Command::Restore(RestoreCommand::Db(args)) => restore_db(&cli, args).await,
        Command::Prune { dry_run } => prune(&cli, *dry_run).await,
        Command::Status => status(&cli).await,
        Command::CheckConfig { schedules } => {
            let cfg = Config::load(cli.config.as_deref(), &ProcessEnv)?;
            let scheds = match schedules {
                Some(dir) => wpdr::daemon::schedule::Schedule::load_dir(dir)?,
                None => Vec::new(),
            };
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
        Command::Daemon(args) => {
            let (cfg, store) = open(&cli).await?;
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
    }
}

async fn prune(cli: &Cli, dry_run: bool) -> Result<ExitCode> {
    let (cfg, store) = open(cli).await?;
    if cfg.retention.policy.is_empty() {
        return Err(ConfigError::Invalid {
            field: "retention",
            env: "WPDR_KEEP_LAST",
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
    if cli.output == OutputFormat::Json {
        print_json(&report)?;
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
    Ok(ExitCode::Ok)
}

async fn status(cli: &Cli) -> Result<ExitCode> {
    let (cfg, store) = open(cli).await?;
    let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
    let sets = catalog.list().await?;
    let incomplete = catalog.incomplete().await?;
    let lock = catalog.lock_holder().await?;
    let now = chrono::Utc::now();
    let newest = sets.first();
    let rpo_seconds = newest.map(|m| (now - m.started_at).num_seconds());
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
    Ok(ExitCode::Ok)
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
    }
}

fn print_show(m: &Manifest) {
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
        println!();
        println!("{:<40} {:>12} {:>7}  CHECKSUM", "TABLE", "ROWS", "CHUNKS");
        for t in &db.tables {
            println!(
                "{:<40} {:>12} {:>7}  {}",
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
            }
        }
    }
}

async fn backup_dry_run(cli: &Cli, cfg: &Config) -> Result<ExitCode> {
    let endpoint = Endpoint::from_config(&cfg.database);
    let mut conn = endpoint.connect(Some(&cfg.database.name)).await?;
    let version = wpdr::mysql::server_version(&mut conn).await?;
    let tables = wpdr::mysql::dump::plan_tables(&mut conn, &cfg.database.name).await?;
    if cli.output == OutputFormat::Json {
        print_json(&serde_json::json!({
            "dry_run": true,
            "site": cfg.site,
            "server_version": version,
            "database": cfg.database.name,
            "tables": tables,
        }))?;
    } else {
        println!(
            "dry run: would back up database '{}' ({version}) of site '{}' with {} connection(s):",
            cfg.database.name, cfg.site, cfg.database.connections
        );
        for t in &tables {
            println!(
                "  {:<40} ~{:>10}  key: {}",
                t.name,
                human_bytes(t.estimated_bytes),
                t.split_by.as_deref().unwrap_or("(single stream)")
            );
        }
    }
    Ok(ExitCode::Ok)
}

async fn restore_db(cli: &Cli, args: &wpdr::cli::RestoreDbArgs) -> Result<ExitCode> {
    let (cfg, store) = open(cli).await?;
    let catalog = Catalog::new(&store, &cfg.site, &cfg.site_prefix());
    let manifest = catalog.resolve(&args.set).await?;
    let (target, url_db) =
        Endpoint::from_url(&args.target, std::env::var("WPDR_TARGET_PASSWORD").ok()).map_err(
            |e| ConfigError::Invalid {
                field: "--target",
                env: "-",
                problem: e,
            },
        )?;
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
    }
    Ok(if bad.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::RestoreMismatch
    })
}
