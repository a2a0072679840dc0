//! media-restore: exactly the set's media versions into the target bucket,
//! every byte checked; only what is missing after an interruption.

use crate::exit::ExitCode;
use crate::media::restore::{restore_set, IndexRef, IndexSource, RestoreOptions as MediaOptions};
use crate::restore::step::{StepEnv, StepError};
use serde_json::json;
use std::sync::Arc;

pub(super) async fn restore(
    env: &StepEnv<'_>,
    dry_run: bool,
    deep_verify: bool,
) -> Result<Option<crate::media::restore::MediaRestoreReport>, StepError> {
    let media = || {
        env.ctx.cfg.media.as_ref().ok_or_else(|| {
            StepError::new(
                "the set holds media but media.offsite is not configured: it is where the media is read from",
                ExitCode::Config,
            )
        })
    };
    // A point in time: the media as the mirror's runs saw it then (the
    // generations chosen when the restore started); otherwise the set's index.
    let (source, retained_prefix) = match env.media_at {
        Some(as_of) => (
            IndexSource::AsOf(as_of.clone()),
            media()?.retained_prefix.clone(),
        ),
        None => {
            let Some(section) = env.manifest.media.as_ref() else {
                return Ok(None);
            };
            let index = IndexRef::of(env.catalog, env.manifest)
                .map_err(|_| {
                    StepError::new(
                        format!("the set lists no artifact {}", section.index_artifact),
                        ExitCode::Integrity,
                    )
                })?
                .ok_or_else(|| {
                    StepError::new("the set holds no media index", ExitCode::Integrity)
                })?;
            (IndexSource::Set(index), section.retained_prefix.clone())
        }
    };
    let media = media()?;
    let target_cfg = env
        .targets
        .media
        .as_ref()
        .ok_or_else(|| StepError::new("restore.media is not configured", ExitCode::Config))?;
    let report = restore_set(
        media,
        &env.ctx.store,
        &env.ctx.cfg.site_prefix(),
        &source,
        &retained_prefix,
        target_cfg,
        &MediaOptions {
            dry_run,
            deep_verify,
            concurrency: media.concurrency,
        },
        Arc::new(|_| {}),
    )
    .await
    .map_err(StepError::from)?;
    Ok(Some(report))
}

pub(super) async fn run(env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    // A drill re-reads every object: proving the copy is the point of a drill.
    let Some(report) = restore(env, false, env.drill).await? else {
        env.log.line("the set holds no media: nothing to restore");
        return Ok(json!({"objects": 0}));
    };
    if let Some(a) = &report.as_of {
        env.log.line(format!(
            "media as of {}: the mirror's listings of {} and {} merged; uploads known until {}",
            a.point.to_rfc3339(),
            a.listed_before.map_or("(none)".into(), |t| t.to_rfc3339()),
            a.listed_after
                .map_or("(none yet)".into(), |t| t.to_rfc3339()),
            a.known_until.to_rfc3339()
        ));
    }
    for f in &report.failed {
        env.log.line(format!("FAILED {}: {}", f.key, f.error));
    }
    env.log.line(format!(
        "{} objects into {}: {} copied ({} from retained versions), {} already there, {} failed",
        report.objects,
        report.target,
        report.copied,
        report.from_retained,
        report.already_present,
        report.failed_total
    ));
    if report.failed_total > 0 {
        return Err(StepError::new(
            format!(
                "{} of {} media objects could not be restored (first: {})",
                report.failed_total,
                report.objects,
                report
                    .failed
                    .first()
                    .map(|f| format!("{}: {}", f.key, f.error))
                    .unwrap_or_default()
            ),
            ExitCode::MediaIncomplete,
        ));
    }
    Ok(serde_json::to_value(&report).unwrap_or_default())
}
