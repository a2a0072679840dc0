//! Schedule files (`schedules/*.yaml`): what runs when.
//!
//! One cron engine: tokio-cron-scheduler parses every expression (so a
//! schedule that validates is one the daemon can fire), and the next run is
//! computed from the very expression it parsed, in the schedule's time zone
//! at that instant. The daemon fires each run as a one-shot at that time and
//! then arms the next: tokio-cron-scheduler's own time-zone jobs fix the
//! zone's UTC offset when they are created, so a daemon started in winter
//! would run an hour off after the change to summer time.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::DaemonError;

pub use crate::jobs::JobKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    name: String,
    job: JobKind,
    /// Six fields: second minute hour day-of-month month day-of-week.
    cron: String,
    #[serde(default = "utc")]
    timezone: String,
    #[serde(default)]
    run_missed_on_start: bool,
    #[serde(default = "yes")]
    enabled: bool,
    /// For `job: drill`: a built-in plan name or a plan file (default `drill`).
    plan: Option<String>,
}

fn utc() -> String {
    "UTC".into()
}

fn yes() -> bool {
    true
}

/// The next occurrence strictly after a time, in the schedule's zone.
pub type NextFn =
    Arc<dyn Fn(&DateTime<chrono_tz::Tz>) -> Option<DateTime<chrono_tz::Tz>> + Send + Sync>;

#[derive(Clone)]
pub struct Schedule {
    pub name: String,
    pub job: JobKind,
    pub cron: String,
    pub timezone: chrono_tz::Tz,
    pub run_missed_on_start: bool,
    pub file: PathBuf,
    /// The restore plan of a drill.
    pub plan: Option<String>,
    next: NextFn,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("name", &self.name)
            .field("job", &self.job)
            .field("cron", &self.cron)
            .field("timezone", &self.timezone)
            .field("run_missed_on_start", &self.run_missed_on_start)
            .field("file", &self.file)
            .field("plan", &self.plan)
            .finish()
    }
}

/// Parses a cron expression with tokio-cron-scheduler (six fields, seconds
/// first) and returns its next-occurrence function. The fleet's Site
/// schedules go through the same parser once their `H` fields are expanded.
/// The first time `next` gives strictly after `after`, read in `timezone`
/// (the daemon's schedules and the fleet's Site schedules both ask this).
pub fn next_after(
    next: &NextFn,
    timezone: chrono_tz::Tz,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    // Whole seconds: cron has no finer resolution.
    let after = DateTime::from_timestamp(after.timestamp(), 0).unwrap_or(after);
    next(&after.with_timezone(&timezone)).map(|t| t.with_timezone(&Utc))
}

pub fn parse_cron(expr: &str, timezone: chrono_tz::Tz) -> Result<NextFn, String> {
    let bad = |why: String| {
        format!("'{expr}' is not a cron expression with seconds (sec min hour dom month dow){why}")
    };
    let mut job =
        tokio_cron_scheduler::Job::new_async_tz(expr, timezone, |_, _| Box::pin(async {}))
            .map_err(|e| bad(format!(": {e}")))?;
    let cron = job
        .job_data()
        .ok()
        .and_then(|d| d.schedule())
        .ok_or_else(|| bad(String::new()))?;
    Ok(Arc::new(move |after| {
        cron.find_next_occurrence(after, false).ok()
    }))
}

impl Schedule {
    pub fn parse(file: &Path, text: &str) -> Result<Option<Schedule>, DaemonError> {
        let bad = |problem: String| DaemonError::Schedule {
            file: file.to_path_buf(),
            problem,
        };
        let raw: RawSchedule = serde_yaml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if !raw.enabled {
            return Ok(None);
        }
        if raw.name.is_empty()
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(format!(
                "name '{}' must be letters, digits, '-' or '_'",
                raw.name
            )));
        }
        let timezone: chrono_tz::Tz = raw.timezone.parse().map_err(|_| {
            bad(format!(
                "timezone '{}' is not an IANA zone like Europe/Berlin",
                raw.timezone
            ))
        })?;
        let next = parse_cron(&raw.cron, timezone).map_err(bad)?;
        match (&raw.plan, raw.job) {
            (Some(_), j) if j != JobKind::Drill => {
                return Err(bad(format!(
                    "plan is only for job drill, not {}",
                    j.as_str()
                )))
            }
            (Some(p), _) => {
                crate::restore::run::load_plan(p).map_err(|e| bad(e.to_string()))?;
            }
            _ => {}
        }
        Ok(Some(Schedule {
            name: raw.name,
            plan: raw.plan,
            job: raw.job,
            cron: raw.cron,
            timezone,
            run_missed_on_start: raw.run_missed_on_start,
            file: file.to_path_buf(),
            next,
        }))
    }

    /// Every enabled schedule in `dir` (`*.yaml` / `*.yml`), sorted by name; names must be unique.
    pub fn load_dir(dir: &Path) -> Result<Vec<Schedule>, DaemonError> {
        let entries = std::fs::read_dir(dir).map_err(|e| DaemonError::Schedule {
            file: dir.to_path_buf(),
            problem: format!("cannot read the schedules directory: {e}"),
        })?;
        let mut out: Vec<Schedule> = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "yaml" | "yml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| DaemonError::Schedule {
                file: path.clone(),
                problem: e.to_string(),
            })?;
            if let Some(s) = Schedule::parse(&path, &text)? {
                if let Some(other) = out.iter().find(|o| o.name == s.name) {
                    return Err(DaemonError::Schedule {
                        file: path.clone(),
                        problem: format!(
                            "name '{}' is also used by {}",
                            s.name,
                            other.file.display()
                        ),
                    });
                }
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The first run time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        next_after(&self.next, self.timezone, after)
    }

    /// Whether a run was due between the last run and `now` and did not happen.
    pub fn missed(&self, last_run: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        match last_run {
            None => true,
            Some(last) => self.next_after(last).is_some_and(|due| due <= now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(text: &str) -> Result<Option<Schedule>, DaemonError> {
        Schedule::parse(Path::new("t.yaml"), text)
    }

    #[test]
    fn parses_and_computes_next_runs_in_a_time_zone() {
        let s = sched("name: nightly\njob: backup\ncron: \"0 30 2 * * *\"\ntimezone: Europe/Berlin\nrun_missed_on_start: true\n")
            .unwrap()
            .unwrap();
        // 02:30 in Berlin in winter is 01:30 UTC.
        let next = s
            .next_after("2026-11-25T12:00:00Z".parse().unwrap())
            .unwrap();
        assert_eq!(next.to_rfc3339(), "2026-11-26T01:30:00+00:00");
        assert!(s.missed(
            Some("2026-11-24T01:30:00Z".parse().unwrap()),
            "2026-11-25T12:00:00Z".parse().unwrap()
        ));
        assert!(!s.missed(
            Some("2026-11-25T01:30:00Z".parse().unwrap()),
            "2026-11-25T12:00:00Z".parse().unwrap()
        ));
        assert!(s.missed(None, Utc::now()));
    }

    #[test]
    fn next_runs_follow_the_zone_across_summer_time() {
        // Parsed in winter; the run after the change to summer time is still
        // 02:30 local (00:30 UTC), not 01:30 UTC as a fixed offset would give.
        let s = sched("name: n\njob: backup\ncron: \"0 30 2 * * *\"\ntimezone: Europe/Berlin\n")
            .unwrap()
            .unwrap();
        let summer = s
            .next_after("2027-04-10T12:00:00Z".parse().unwrap())
            .unwrap();
        assert_eq!(summer.to_rfc3339(), "2027-04-11T00:30:00+00:00");
        // Day-of-month and day-of-week together: both must hold (the 13th that is a Friday).
        let s = sched("name: f\njob: backup\ncron: \"0 0 3 13 * Fri\"\n")
            .unwrap()
            .unwrap();
        let next = s
            .next_after("2026-11-29T00:00:00Z".parse().unwrap())
            .unwrap();
        assert_eq!(next.to_rfc3339(), "2027-08-13T03:00:00+00:00");
    }

    #[test]
    fn bad_schedules_name_the_problem() {
        let e = sched("name: x\njob: backup\ncron: \"0 2 * * *\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cron") && e.contains("t.yaml"), "{e}");
        let e = sched("name: x\njob: backup\ncron: \"0 0 2 * * *\"\ntimezone: Mars/Olympus\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Mars/Olympus"), "{e}");
        let e = sched("name: x\njob: bakup\ncron: \"0 0 2 * * *\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bakup"), "{e}");
        assert!(
            sched("name: x\njob: prune\ncron: \"0 0 2 * * *\"\nenabled: false\n")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_shipped_schedules_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules");
        let all = Schedule::load_dir(&dir).unwrap();
        assert!(all.iter().any(|s| s.job == JobKind::Backup));
        assert!(all.iter().any(|s| s.job == JobKind::Prune));
    }
}
