//! The `wpdr` binary: parse, set up logging, dispatch, map errors to exit codes.

mod commands;

use clap::Parser;
use std::io::IsTerminal;
use wpdr::catalog::CatalogError;
use wpdr::cli::{Cli, LogFormat};
use wpdr::config::ConfigError;
use wpdr::exit::{Classify, ExitCode};
use wpdr::mysql::MysqlError;
use wpdr::store::StoreError;

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
    match runtime.block_on(commands::run(cli)) {
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
        if let Some(x) = cause.downcast_ref::<wpdr::jobs::JobError>() {
            return x.exit_code();
        }
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
        if let Some(x) = cause.downcast_ref::<wpdr::jobs::backup::BackupError>() {
            return x.exit_code();
        }
        if let Some(x) = cause.downcast_ref::<wpdr::restore::RestoreError>() {
            return x.exit_code();
        }
        if let Some(x) = cause.downcast_ref::<wpdr::restore::run::RunError>() {
            return x.exit_code();
        }
        if let Some(x) = cause.downcast_ref::<wpdr::restore::plan::PlanError>() {
            return x.exit_code();
        }
        if let Some(x) = cause.downcast_ref::<wpdr::daemon::DaemonError>() {
            return x.exit_code();
        }
        if let Some(x) = cause.downcast_ref::<wpdr::cluster::ClusterError>() {
            return x.exit_code();
        }
        if let Some(x) = cause.downcast_ref::<wpdr::binlog::BinlogError>() {
            return x.exit_code();
        }
        if let Some(x) = cause.downcast_ref::<wpdr::media::MediaError>() {
            return x.exit_code();
        }
        if let Some(x) = cause.downcast_ref::<wpdr::wordpress::search_replace::RewriteError>() {
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
            // The SDK warns for every multipart object whose part-level
            // checksum it cannot validate: wpdr then checks those itself.
            "{default},aws_config=warn,aws_smithy_runtime=warn,aws_sdk_s3::http_response_checksum=error,mysql_async=warn"
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
