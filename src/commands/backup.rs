//! `wpdr backup`.

use super::open;
use super::output::{human_bytes, print_json, progress_bar};
use anyhow::Result;
use indicatif::ProgressStyle;
use std::sync::Arc;
use wpdr::catalog::SetSummary;
use wpdr::cli::BackupArgs;
use wpdr::cli::{Cli, OutputFormat};
use wpdr::config::Config;
use wpdr::exit::ExitCode;
use wpdr::mysql::Endpoint;

pub(crate) async fn run(cli: &Cli, args: &BackupArgs) -> Result<ExitCode> {
    let (cfg, store) = open(cli).await?;
    if args.dry_run {
        return dry_run(cli, &cfg).await;
    }
    let pb = progress_bar(cli, 0, "backup");
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
        super::sets::print_show(&manifest);
    }
    Ok(ExitCode::Ok)
}

async fn dry_run(cli: &Cli, cfg: &Config) -> Result<ExitCode> {
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
