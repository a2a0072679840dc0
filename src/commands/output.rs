//! Output helpers shared by the commands: JSON, sizes, progress bars.

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use wpdr::cli::{Cli, OutputFormat};
use wpdr::jobs::{Progress, ProgressEvent};

pub(crate) fn progress_bar(cli: &Cli, total: u64, what: &str) -> ProgressBar {
    if cli.quiet || cli.output == OutputFormat::Json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// A job's byte progress on a bar: the job says the total once it knows it
/// (again when it starts over). A total that is an estimate (a backup's,
/// from the server's table sizes) grows when the work passes it, so the bar
/// never shows more than 100 % or a negative ETA.
pub(crate) fn bytes_progress(pb: &ProgressBar) -> Progress {
    let pb = pb.clone();
    Progress::new(move |e| match e {
        ProgressEvent::Total(n) => {
            pb.set_length(n);
            pb.set_position(0);
            pb.reset_eta();
        }
        ProgressEvent::Bytes(n) => {
            pb.inc(n);
            let (pos, len) = (pb.position(), pb.length().unwrap_or(0));
            if pos > len {
                pb.set_length(pos + pos / 20);
            }
        }
        ProgressEvent::Objects { .. } | ProgressEvent::ObjectsFound(_) => {}
    })
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}
