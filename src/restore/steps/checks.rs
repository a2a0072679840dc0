//! checks: reads the restored site back — tables against the set, media
//! present as the set's versions, the site's answers against those captured
//! at backup — and fails naming the first difference.

use crate::exit::ExitCode;
use crate::restore::plan::StepKind;
use crate::restore::step::{StepEnv, StepError};
use crate::wordpress::answers::{self, Answer};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// Reads what the set captured of the live site.
async fn captured_answers(env: &StepEnv<'_>) -> Result<Option<Vec<Answer>>, StepError> {
    let Some(path) = env
        .manifest
        .answers
        .as_ref()
        .and_then(|a| a.answers_artifact.clone())
    else {
        return Ok(None);
    };
    let bytes = crate::restore::read_artifact(env.catalog, env.manifest, &path)
        .await
        .map_err(StepError::from)?;
    let json = zstd::decode_all(bytes.as_slice())
        .map_err(|e| StepError::new(format!("{path}: {e}"), ExitCode::Integrity))?;
    serde_json::from_slice(&json)
        .map(Some)
        .map_err(|e| StepError::new(format!("{path}: {e}"), ExitCode::Integrity))
}

/// Tables: re-read after the site started, against what the load verified.
async fn check_tables(env: &StepEnv<'_>) -> Result<Checked, StepError> {
    let mut failures: Vec<(String, ExitCode)> = Vec::new();
    let mut report = serde_json::Map::new();
    // The load compared every table with the set (rows + checksums)
    // before anything else touched the database, and fails on a difference.
    // Read again now, after the running site (WordPress writes options and
    // transients as it serves) and a URL rewrite after the load (with a
    // replay), a difference is reported as what changed since the load,
    // not as a failed restore.
    let restores_database = env.kinds.contains(&StepKind::DatabaseLoad);
    if let (true, Some(section), Some((endpoint, database))) = (
        restores_database,
        env.manifest.database.as_ref(),
        env.targets.database.as_ref(),
    ) {
        let summary_of = |kind: StepKind| env.earlier.get(&kind).cloned();
        let verified = summary_of(StepKind::DatabaseLoad)
            .and_then(|s| s["tables"].as_u64())
            .unwrap_or(0);
        if verified != section.tables.len() as u64 {
            failures.push((
                format!(
                    "the database load verified {verified} of the set's {} tables",
                    section.tables.len()
                ),
                ExitCode::RestoreMismatch,
            ));
        }
        let rewritten: BTreeSet<String> = summary_of(StepKind::UrlRewrite)
            .and_then(|s| s["tables"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        let found = crate::mysql::load::verify_tables(
            endpoint,
            database,
            env.ctx.cfg.database.connections,
            &section.tables,
        )
        .await
        .map_err(StepError::from)?;
        // Tables the load rewrote were verified as the set with the
        // rewrite's changes: that is what "unchanged since" means for them.
        let at_load: BTreeMap<String, String> = summary_of(StepKind::DatabaseLoad)
            .and_then(|s| serde_json::from_value(s["checksums_at_load"].clone()).ok())
            .unwrap_or_default();
        let mut changed = Vec::new();
        for t in found.iter().filter(|t| {
            let expected = at_load.get(&t.table).unwrap_or(&t.expected_checksum);
            t.found_rows != t.expected_rows || &t.found_checksum != expected
        }) {
            // A table the load rewrote and the rewrite after it did not
            // touch changed only by the site.
            let why = if rewritten.contains(&t.table) && !at_load.contains_key(&t.table) {
                "URL rewrite"
            } else {
                "the running site"
            };
            env.log.line(format!(
                "table {} changed since the load ({why}): rows {} (set: {})",
                t.table, t.found_rows, t.expected_rows
            ));
            changed.push(t.table.clone());
        }
        env.log.line(format!(
            "tables: {verified} verified equal to the set at load (rows + checksums); {} changed since by the URL rewrite or the running site",
            changed.len()
        ));
        report.insert(
            "tables".into(),
            json!({"verified_at_load": verified, "changed_since_load": changed, "rewritten": rewritten}),
        );
    }
    Ok((report, failures))
}

/// Media: every object of the set in the target, as the set's version.
async fn check_media(env: &StepEnv<'_>) -> Result<Checked, StepError> {
    let mut failures: Vec<(String, ExitCode)> = Vec::new();
    let mut report = serde_json::Map::new();
    if env.kinds.contains(&StepKind::MediaRestore)
        && (env.manifest.media.is_some() || env.media_at.is_some())
        && env.targets.media.is_some()
    {
        if let Some(r) = super::media_restore::restore(env, true, false).await? {
            let missing = r.copied + r.failed_total;
            env.log.line(format!(
                "media: {} objects in the set, {} present as the set's version, {missing} missing or different",
                r.objects, r.already_present
            ));
            if missing > 0 {
                failures.push((
                    format!("{missing} media object(s) of the set are missing or differ in the restored bucket"),
                    ExitCode::MediaIncomplete,
                ));
            }
            report.insert(
                "media".into(),
                json!({"objects": r.objects, "present": r.already_present, "missing": missing}),
            );
        }
    }
    Ok((report, failures))
}

/// The site: the same answers as the live site gave at backup.
async fn check_site(env: &StepEnv<'_>) -> Result<Checked, StepError> {
    let mut failures: Vec<(String, ExitCode)> = Vec::new();
    let mut report = serde_json::Map::new();
    let answers = if env.kinds.contains(&StepKind::DatabaseLoad) {
        captured_answers(env).await?
    } else {
        None
    };
    match (answers, &env.targets.site_url) {
        (Some(expected), Some(url)) => {
            let (served, not_served): (Vec<Answer>, Vec<Answer>) = expected
                .into_iter()
                .partition(|a| !(a.name == "upload" && a.status != 200));
            for a in &not_served {
                env.log.line(format!(
                    "upload {} was not served by the site at backup ({}): checked in the media bucket instead",
                    a.path, a.status
                ));
            }
            let mut diffs = answers::compare(url, &served)
                .await
                .map_err(|e| StepError::new(e.to_string(), ExitCode::RestoreMismatch))?;
            // Restored to a point after the set, pages may show what was
            // published since: only a different status is a failure then.
            if env.pitr.is_some() {
                diffs.retain(|d| {
                    let content_only = !d.status;
                    if content_only {
                        env.log.line(format!(
                            "site {} {}: content changed since the set (restored to {}): {}",
                            d.name,
                            d.path,
                            env.pitr.map(|p| p.point.as_str()).unwrap_or(""),
                            d.detail
                        ));
                    }
                    !content_only
                });
            }
            for d in &diffs {
                env.log
                    .line(format!("site {} {}: {}", d.name, d.path, d.detail));
            }
            env.log.line(format!(
                "site: {} answers compared with the backup's, {} differ",
                served.len(),
                diffs.len()
            ));
            if !diffs.is_empty() {
                failures.push((
                    format!(
                        "the restored site answers differently: {}",
                        diffs
                            .iter()
                            .map(|d| format!("{} {}", d.name, d.path))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    ExitCode::RestoreMismatch,
                ));
            }
            report.insert(
                "site".into(),
                json!({"compared": served.iter().map(|a| format!("{} {}", a.name, a.path)).collect::<Vec<_>>(), "differences": diffs}),
            );
        }
        (None, _) => env
            .log
            .line("site: the set holds no captured answers (wordpress.url was not set at backup)"),
        (Some(_), None) => env
            .log
            .line("site: no --site-url or restore.site_url to ask the restored site at"),
    }
    Ok((report, failures))
}

/// What one check found: its part of the report, and its failures.
type Checked = (
    serde_json::Map<String, serde_json::Value>,
    Vec<(String, ExitCode)>,
);

pub(super) async fn run(env: &StepEnv<'_>) -> Result<serde_json::Value, StepError> {
    // The three checks read different servers (the database, the media
    // bucket, the site): run side by side, the step takes the longest.
    let (tables, media, site) = tokio::join!(check_tables(env), check_media(env), check_site(env));
    let mut failures: Vec<(String, ExitCode)> = Vec::new();
    let mut report = serde_json::Map::new();
    for (part, part_failures) in [tables?, media?, site?] {
        report.extend(part);
        failures.extend(part_failures);
    }
    if let Some((first, exit)) = failures.first() {
        let all: Vec<&str> = failures.iter().map(|(m, _)| m.as_str()).collect();
        return Err(StepError::new(
            if all.len() > 1 {
                all.join("; ")
            } else {
                first.clone()
            },
            *exit,
        ));
    }
    Ok(serde_json::Value::Object(report))
}
