//! What the fleet starts now: a pure function of the clock, the Sites'
//! schedules and run records, and the Jobs running. No I/O: the controller
//! feeds it what it listed, and the 500-site simulation feeds it a virtual
//! clock.
//!
//! Why one planner over every site and not kube-runtime's per-object
//! reconcile: the caps (all Jobs, per database server, per S3 endpoint) and
//! the order among waiting sites are fleet-wide facts. Reconciling one Site
//! at a time would need the same global view anyway, and would decide by
//! the order of the work queue instead of by who has waited longest.

use super::schedule::SiteCron;
use chrono::{DateTime, Duration, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// How many Jobs may run at once, and how a failing run is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_jobs: usize,
    /// Jobs at once against one database server (host:port).
    pub per_database: usize,
    /// Jobs at once against one S3 endpoint.
    pub per_endpoint: usize,
    /// First retry delay after a failure; doubled per consecutive failure.
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_jobs: 20,
            per_database: 2,
            per_endpoint: 8,
            backoff: Duration::minutes(5),
            backoff_max: Duration::hours(2),
        }
    }
}

/// What a schedule's Job holds on to while it runs, for the caps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub database: Option<String>,
    pub endpoints: Vec<String>,
}

/// A schedule of a site, with what its Job uses.
#[derive(Debug, Clone)]
pub struct PlannedSchedule {
    pub cron: SiteCron,
    pub uses: Resources,
}

/// One schedule's history, kept in the Site's status so that a restarted
/// (or newly elected) controller knows what already ran.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The occurrence the last Job was started for (RFC 3339).
    pub last_due: Option<String>,
    /// That Job's name.
    pub last_job: Option<String>,
    /// Succeeded or Failed, once the Job finished.
    pub last_result: Option<String>,
    pub last_finished: Option<String>,
    pub last_success: Option<String>,
    /// Failures since the last success.
    #[serde(default)]
    pub failures: u32,
    /// When a failed occurrence is tried again.
    pub retry_at: Option<String>,
}

fn time(s: &Option<String>) -> Option<DateTime<Utc>> {
    s.as_deref()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

impl RunRecord {
    pub fn last_due(&self) -> Option<DateTime<Utc>> {
        time(&self.last_due)
    }
    pub fn retry_at(&self) -> Option<DateTime<Utc>> {
        time(&self.retry_at)
    }

    /// Records a Job started for `due`.
    pub fn started(&mut self, due: DateTime<Utc>, job: &str) {
        self.last_due = Some(due.to_rfc3339());
        self.last_job = Some(job.to_string());
        self.last_result = None;
        self.retry_at = None;
    }

    /// Records how the Job ended; a failure is retried after a backoff
    /// that doubles per consecutive failure.
    pub fn finished(&mut self, ok: bool, at: DateTime<Utc>, limits: &Limits) {
        self.last_finished = Some(at.to_rfc3339());
        if ok {
            self.last_result = Some("Succeeded".into());
            self.last_success = Some(at.to_rfc3339());
            self.failures = 0;
            self.retry_at = None;
        } else {
            self.last_result = Some("Failed".into());
            self.failures = self.failures.saturating_add(1);
            let doublings = self.failures.saturating_sub(1).min(20);
            let delay = limits
                .backoff
                .checked_mul(1 << doublings)
                .unwrap_or(limits.backoff_max)
                .min(limits.backoff_max);
            self.retry_at = Some((at + delay).to_rfc3339());
        }
    }
}

/// A site as the planner sees it.
#[derive(Debug, Clone)]
pub struct PlannedSite {
    /// namespace/name
    pub key: String,
    pub schedules: Vec<PlannedSchedule>,
    pub suspend: bool,
    /// When the Site appeared: its first runs are the ones after this.
    pub created: DateTime<Utc>,
    pub runs: BTreeMap<String, RunRecord>,
}

/// A Job of the fleet that has not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningJob {
    pub site: String,
    pub schedule: String,
    pub uses: Resources,
}

/// A Job to create now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub site: String,
    pub schedule: String,
    /// The occurrence it runs for (a retry keeps its occurrence).
    pub due: DateTime<Utc>,
    pub retry: bool,
    pub uses: Resources,
}

/// The decision of one planning round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub starts: Vec<Start>,
    /// Runs that are due but held back by a cap, oldest first.
    pub waiting: Vec<(String, String)>,
}

/// Counts of running Jobs, by what they hold.
#[derive(Default)]
struct Usage {
    total: usize,
    databases: HashMap<String, usize>,
    endpoints: HashMap<String, usize>,
}

impl Usage {
    fn fits(&self, uses: &Resources, limits: &Limits) -> bool {
        self.total < limits.max_jobs
            && uses
                .database
                .as_ref()
                .is_none_or(|d| self.databases.get(d).copied().unwrap_or(0) < limits.per_database)
            && uses
                .endpoints
                .iter()
                .all(|e| self.endpoints.get(e).copied().unwrap_or(0) < limits.per_endpoint)
    }

    fn take(&mut self, uses: &Resources) {
        self.total += 1;
        if let Some(d) = &uses.database {
            *self.databases.entry(d.clone()).or_default() += 1;
        }
        let mut seen: Vec<&String> = Vec::new();
        for e in &uses.endpoints {
            if !seen.contains(&e) {
                *self.endpoints.entry(e.clone()).or_default() += 1;
                seen.push(e);
            }
        }
    }
}

/// Decides which runs start at `now`: every due run of a site that has no
/// Job running, oldest first, as long as no cap is exceeded. A run held by
/// one cap never holds back a run that needs other resources.
pub fn plan(
    now: DateTime<Utc>,
    sites: &[PlannedSite],
    running: &[RunningJob],
    limits: &Limits,
) -> Plan {
    let mut usage = Usage::default();
    for r in running {
        usage.take(&r.uses);
    }
    let busy: std::collections::HashSet<&str> = running.iter().map(|r| r.site.as_str()).collect();
    // (ready since, tie-break, start)
    let mut due: Vec<(DateTime<Utc>, u64, Start)> = Vec::new();
    for site in sites
        .iter()
        .filter(|s| !s.suspend && !busy.contains(s.key.as_str()))
    {
        // One Job per site at a time: a site's own jobs (backup, prune,
        // drill) share its database and store; the first due goes first.
        let mut best: Option<(DateTime<Utc>, u64, Start)> = None;
        for sched in &site.schedules {
            let record = site.runs.get(&sched.cron.name).cloned().unwrap_or_default();
            let since = record.last_due().unwrap_or(site.created);
            let next = sched.cron.latest_due(since, now);
            let retry = match (
                record.last_result.as_deref(),
                record.retry_at(),
                record.last_due(),
            ) {
                (Some("Failed"), Some(at), Some(occurrence)) if at <= now => Some((at, occurrence)),
                _ => None,
            };
            let candidate = match (next, retry) {
                // A newer occurrence supersedes the failed one.
                (Some(t), _) => Some((t, t, false)),
                (None, Some((at, occurrence))) => Some((at, occurrence, true)),
                (None, None) => None,
            };
            if let Some((ready, occurrence, retry)) = candidate {
                let tie = tie_break(&site.key, &sched.cron.name);
                if best
                    .as_ref()
                    .is_none_or(|(r, t, _)| (ready, tie) < (*r, *t))
                {
                    best = Some((
                        ready,
                        tie,
                        Start {
                            site: site.key.clone(),
                            schedule: sched.cron.name.clone(),
                            due: occurrence,
                            retry,
                            uses: sched.uses.clone(),
                        },
                    ));
                }
            }
        }
        due.extend(best);
    }
    due.sort_by_key(|d| (d.0, d.1));
    let mut out = Plan::default();
    for (_, _, start) in due {
        if usage.fits(&start.uses, limits) {
            usage.take(&start.uses);
            out.starts.push(start);
        } else {
            out.waiting.push((start.site, start.schedule));
        }
    }
    out
}

/// Orders runs that became due at the same instant without favouring names
/// that sort first.
fn tie_break(site: &str, schedule: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("{site}/{schedule}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn site(key: &str, cron: &str, db: &str) -> PlannedSite {
        PlannedSite {
            key: key.into(),
            schedules: vec![PlannedSchedule {
                cron: SiteCron::parse(key, "nightly", "backup", cron, None).unwrap(),
                uses: Resources {
                    database: Some(db.into()),
                    endpoints: vec!["s3".into()],
                },
            }],
            suspend: false,
            created: at("2026-11-01T00:00:00Z"),
            runs: BTreeMap::new(),
        }
    }

    #[test]
    fn due_runs_start_oldest_first_within_the_caps() {
        let limits = Limits {
            max_jobs: 10,
            per_database: 2,
            ..Limits::default()
        };
        let sites: Vec<PlannedSite> = (0..5)
            .map(|i| site(&format!("ns{i}/wp"), &format!("0 {i} 2 * * *"), "db1"))
            .chain([site("other/wp", "0 30 2 * * *", "db2")])
            .collect();
        let p = plan(at("2026-11-02T03:00:00Z"), &sites, &[], &limits);
        let started: Vec<&str> = p.starts.iter().map(|s| s.site.as_str()).collect();
        // db1 takes two (the two that waited longest), db2's own site is not held back.
        assert_eq!(started, ["ns0/wp", "ns1/wp", "other/wp"]);
        assert_eq!(p.waiting.len(), 3);
        assert_eq!(p.starts[0].due, at("2026-11-02T02:00:00Z"));
        // With those running, nothing more starts on db1.
        let running: Vec<RunningJob> = p
            .starts
            .iter()
            .map(|s| RunningJob {
                site: s.site.clone(),
                schedule: s.schedule.clone(),
                uses: s.uses.clone(),
            })
            .collect();
        let again = plan(at("2026-11-02T03:00:00Z"), &sites, &running, &limits);
        assert!(again.starts.is_empty(), "{again:?}");
    }

    #[test]
    fn a_run_already_started_is_not_started_again_and_a_failure_backs_off() {
        let limits = Limits::default();
        let mut s = site("a/wp", "0 0 2 * * *", "db");
        let now = at("2026-11-02T02:00:30Z");
        let p = plan(now, std::slice::from_ref(&s), &[], &limits);
        assert_eq!(p.starts.len(), 1);
        let record = s.runs.entry("nightly".into()).or_default();
        record.started(p.starts[0].due, "job-1");
        assert!(plan(now, std::slice::from_ref(&s), &[], &limits)
            .starts
            .is_empty());
        // It failed at 02:10: retried at 02:15, then 02:25 after a second failure.
        let record = s.runs.get_mut("nightly").unwrap();
        record.finished(false, at("2026-11-02T02:10:00Z"), &limits);
        assert!(plan(
            at("2026-11-02T02:14:00Z"),
            std::slice::from_ref(&s),
            &[],
            &limits
        )
        .starts
        .is_empty());
        let retry = plan(
            at("2026-11-02T02:15:00Z"),
            std::slice::from_ref(&s),
            &[],
            &limits,
        );
        assert!(retry.starts[0].retry);
        assert_eq!(retry.starts[0].due, at("2026-11-02T02:00:00Z"));
        let record = s.runs.get_mut("nightly").unwrap();
        record.started(retry.starts[0].due, "job-2");
        record.finished(false, at("2026-11-02T02:15:00Z"), &limits);
        assert_eq!(record.retry_at(), Some(at("2026-11-02T02:25:00Z")));
        record.finished(true, at("2026-11-02T02:30:00Z"), &limits);
        assert_eq!((record.failures, record.retry_at()), (0, None));
        // A suspended site starts nothing.
        s.suspend = true;
        assert!(plan(at("2026-11-05T03:00:00Z"), &[s], &[], &limits)
            .starts
            .is_empty());
    }

    proptest! {
        /// Whatever runs and whatever is due, a plan never exceeds a cap and
        /// never starts a second Job for a busy site.
        #[test]
        fn plans_never_exceed_a_cap(
            n_sites in 1usize..60, n_running in 0usize..20,
            max_jobs in 1usize..15, per_db in 1usize..4, per_ep in 1usize..6,
            minute in 0u32..60,
        ) {
            let limits = Limits { max_jobs, per_database: per_db, per_endpoint: per_ep, ..Limits::default() };
            let sites: Vec<PlannedSite> = (0..n_sites)
                .map(|i| {
                    let mut s = site(&format!("ns{i}/wp"), "0 H H(0-1) * * *", &format!("db{}", i % 3));
                    s.schedules[0].uses.endpoints = vec![format!("s3-{}", i % 2)];
                    s
                })
                .collect();
            let running: Vec<RunningJob> = sites.iter().take(n_running).map(|s| RunningJob {
                site: s.key.clone(), schedule: "nightly".into(), uses: s.schedules[0].uses.clone(),
            }).collect();
            let now = at("2026-11-02T00:00:00Z") + Duration::minutes(i64::from(minute) + 60);
            let p = plan(now, &sites, &running, &limits);
            let mut all: Vec<&Resources> = running.iter().map(|r| &r.uses).collect();
            all.extend(p.starts.iter().map(|s| &s.uses));
            // The caps hold over what was already running plus what starts,
            // unless the running Jobs alone were already over them.
            if running.len() <= max_jobs {
                prop_assert!(all.len() <= max_jobs.max(running.len()));
            }
            for db in ["db0", "db1", "db2"] {
                let before = running.iter().filter(|r| r.uses.database.as_deref() == Some(db)).count();
                let after = all.iter().filter(|r| r.database.as_deref() == Some(db)).count();
                prop_assert!(after <= per_db.max(before));
            }
            for s in &p.starts {
                prop_assert!(!running.iter().any(|r| r.site == s.site));
            }
        }
    }
}
