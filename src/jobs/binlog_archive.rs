//! The binlog archive job: follows the primary until cancelled (or caught up).
//! Cancelling it is its normal end: the archive stops after the last whole
//! transaction it uploaded, and the report says where.

use super::{JobContext, JobError, JobReport, Verdict};
use crate::binlog::archive::{ArchiveOptions, ArchiveReport};
use crate::exit::ExitCode;

pub async fn archive(ctx: &JobContext, opts: ArchiveOptions) -> Result<ArchiveReport, JobError> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let cancel = ctx.cancel.clone();
    let stopper = tokio::spawn(async move {
        cancel.cancelled().await;
        let _ = stop.send(true);
    });
    let result = crate::binlog::archive::archive(&ctx.cfg, &ctx.store, opts, stopped).await;
    stopper.abort();
    Ok(result?)
}

impl JobReport for ArchiveReport {
    fn verdict(&self) -> Verdict {
        match self.gaps.first() {
            Some(g) => Verdict {
                bytes: self.bytes,
                objects: self.segments,
                ..Verdict::failed(
                    ExitCode::BinlogGap,
                    "binlog_gap",
                    format!(
                        "{} no longer had {} ({}); archiving went on from {}",
                        g.server, g.after, g.detail, g.resumed_at
                    ),
                )
            },
            None => Verdict::ok(self.bytes, self.segments),
        }
    }
}
