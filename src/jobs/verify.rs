//! The verify job: re-read every artifact of a set and check size and SHA-256.

use super::{JobContext, JobError, JobReport, ProgressEvent, Verdict};
use crate::catalog::VerifyReport;
use crate::exit::ExitCode;

/// `set` is an id or `latest`.
/// `deep`: also open and decompress every compressed artifact.
pub async fn verify(ctx: &JobContext, set: &str, deep: bool) -> Result<VerifyReport, JobError> {
    ctx.cancellable(verify_set(ctx, set, deep)).await
}

async fn verify_set(ctx: &JobContext, set: &str, deep: bool) -> Result<VerifyReport, JobError> {
    let catalog = ctx.catalog();
    let manifest = catalog.resolve(set).await?;
    ctx.progress
        .emit(ProgressEvent::Total(manifest.total_bytes()));
    let progress = ctx.progress.clone();
    ctx.cancellable(catalog.verify(&manifest, deep, &move |n| {
        progress.emit(ProgressEvent::Bytes(n))
    }))
    .await
}

impl JobReport for VerifyReport {
    fn verdict(&self) -> Verdict {
        if self.ok() {
            Verdict::ok(self.bytes_checked, self.artifacts_checked as u64)
        } else {
            Verdict::failed(
                ExitCode::Integrity,
                "integrity",
                format!(
                    "set {}: {} bad artifact(s)",
                    self.set_id,
                    self.problems.len()
                ),
            )
        }
    }
}
