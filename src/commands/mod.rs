//! One module per command; `run` dispatches. This is the CLI edge: errors are
//! `anyhow` here, typed everywhere below.

mod backup;
mod binlog;
mod daemon;
mod docs;
mod fleet;
mod keys;
mod maintenance;
mod media;
mod output;
mod restore;
mod sets;
mod site;

use anyhow::Result;
use std::sync::Arc;
use wpdr::cli::{
    BinlogCommand, Cli, Command, FleetCommand, MediaCommand, RestoreArgs, RestoreCommand,
    SetsCommand,
};
use wpdr::config::{Config, ProcessEnv};
use wpdr::exit::ExitCode;
use wpdr::jobs::{CancellationToken, JobContext};
use wpdr::store::Store;

pub(crate) async fn open(cli: &Cli) -> Result<(Config, Arc<Store>)> {
    let cfg = Config::load(cli.config.as_deref(), &ProcessEnv)?;
    let store = Store::open_site(&cfg, cli.identity.as_deref()).await?;
    Ok((cfg, Arc::new(store)))
}

/// The context a job runs in from the command line: SIGTERM or Ctrl-C
/// cancels it (it stops, leaves nothing that looks complete, exit 130); a
/// second signal ends the process at once.
pub(crate) async fn job_context(cli: &Cli) -> Result<JobContext> {
    let (cfg, store) = open(cli).await?;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        wpdr::daemon::wait_for_signal().await;
        tracing::warn!("interrupted: stopping (a second signal ends wpdr at once)");
        on_signal.cancel();
        wpdr::daemon::wait_for_signal().await;
        std::process::exit(i32::from(ExitCode::Interrupted.code()));
    });
    Ok(JobContext::new(cfg, store).with_cancel(cancel))
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Backup(args) => backup::run(&cli, args).await,
        Command::Sets(SetsCommand::List) => sets::list(&cli).await,
        Command::Sets(SetsCommand::Show { set }) => sets::show(&cli, set).await,
        Command::Sets(SetsCommand::Recoverable) => binlog::recoverable(&cli).await,
        Command::Binlog(BinlogCommand::Archive {
            until_caught_up,
            run_for,
        }) => binlog::archive(&cli, *until_caught_up, *run_for).await,
        Command::Binlog(BinlogCommand::Prune { dry_run }) => binlog::prune(&cli, *dry_run).await,
        Command::Verify { set, deep } => sets::verify(&cli, set, *deep).await,
        Command::Restore(RestoreArgs {
            part: Some(RestoreCommand::Db(args)),
            ..
        }) => restore::db(&cli, args).await,
        Command::Restore(RestoreArgs {
            part: Some(RestoreCommand::Cluster(args)),
            ..
        }) => restore::cluster(&cli, args).await,
        Command::Restore(RestoreArgs {
            part: Some(RestoreCommand::Media(args)),
            ..
        }) => media::restore(&cli, args).await,
        Command::Restore(args) => site::restore(&cli, args).await,
        Command::Drill(args) => site::drill(&cli, args).await,
        Command::RewriteUrl(args) => restore::rewrite_url(&cli, args).await,
        Command::Media(MediaCommand::Sync {
            dry_run,
            confirm_deletes,
        }) => media::sync(&cli, *dry_run, *confirm_deletes).await,
        Command::Prune { dry_run } => maintenance::prune(&cli, *dry_run).await,
        Command::Status => maintenance::status(&cli).await,
        Command::Keys(k) => keys::run(&cli, k),
        Command::CheckConfig { schedules } => daemon::check_config(&cli, schedules).await,
        Command::Daemon(args) => daemon::run(&cli, args).await,
        Command::Completions { shell } => docs::completions(*shell),
        Command::Man { dir } => docs::man(dir.as_deref()),
        Command::Fleet(FleetCommand::Crd) => docs::crd(),
        Command::Fleet(FleetCommand::Check { files }) => docs::check_sites(&cli, files),
        Command::Fleet(FleetCommand::Status { rpo_hours }) => fleet::status(&cli, *rpo_hours).await,
        Command::Fleet(FleetCommand::RunJob {
            job,
            schedule,
            outcome_file,
        }) => fleet::run_job(&cli, job, schedule, outcome_file).await,
        Command::Controller(args) => fleet::run_controller(&cli, args).await,
    }
}
