//! The media sync job: the offsite mirror brought up to date.

use super::{JobContext, JobError, JobReport, Verdict};
use crate::exit::ExitCode;
use crate::media::mirror::{MirrorOptions, MirrorReport};

pub async fn sync(ctx: &JobContext, opts: MirrorOptions) -> Result<MirrorReport, JobError> {
    ctx.cancellable(crate::media::mirror::sync(
        &ctx.cfg,
        ctx.store.clone(),
        opts,
        ctx.progress.objects_sink(),
    ))
    .await
}

impl JobReport for MirrorReport {
    fn verdict(&self) -> Verdict {
        if let Some(refused) = &self.deletes_refused {
            return Verdict::failed(ExitCode::MediaIncomplete, "media_deletes_refused", refused);
        }
        if self.failed_total > 0 {
            return Verdict::failed(
                ExitCode::MediaIncomplete,
                "media_incomplete",
                format!("{} object(s) could not be copied", self.failed_total),
            );
        }
        Verdict::ok(self.copied_bytes, self.copied)
    }
}
