//! What the daemon exposes on `/metrics` (Prometheus text format).

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Debug, Clone, Default, Serialize)]
pub struct JobStats {
    pub kind: String,
    pub runs: u64,
    pub successes: u64,
    pub failures: BTreeMap<String, u64>,
    pub skipped_overlap: u64,
    pub running: bool,
    pub last_start: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_duration_seconds: f64,
    pub last_bytes: u64,
    pub last_objects: u64,
    pub next_run: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    jobs: Mutex<BTreeMap<String, JobStats>>,
    newest_set: Mutex<Option<DateTime<Utc>>>,
    /// How many parts the newest set lacks (a partial set).
    newest_missing_parts: std::sync::atomic::AtomicUsize,
    last_drill: Mutex<Option<LastDrill>>,
    recoverable: Mutex<Recoverable>,
}

/// The point-in-time window, as `sets recoverable` computes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recoverable {
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
    pub gaps: usize,
    pub open_gaps: usize,
    /// When the binlog archiver last wrote its head (None: never ran).
    pub archive_updated_at: Option<DateTime<Utc>>,
}

/// The newest drill's outcome, as `drills/latest.json` in the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LastDrill {
    pub finished_at: DateTime<Utc>,
    pub ok: bool,
    pub rto_seconds: f64,
    pub rpo_seconds: f64,
}

fn ts(t: &Option<DateTime<Utc>>) -> f64 {
    t.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0)
}

/// Escapes a label value.
/// One metric family in the text format: HELP, TYPE, then one sample per
/// row (its labels without braces; empty: none). The daemon's and the fleet
/// controller's /metrics both write through this.
pub(crate) fn write_family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    rows: Vec<(String, f64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in rows {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

pub(crate) fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn with_job<R>(&self, name: &str, f: impl FnOnce(&mut JobStats) -> R) -> R {
        let mut jobs = match self.jobs.lock() {
            Ok(j) => j,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(jobs.entry(name.to_string()).or_default())
    }

    pub fn snapshot(&self) -> BTreeMap<String, JobStats> {
        match self.jobs.lock() {
            Ok(j) => j.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_newest_set(&self, started_at: Option<DateTime<Utc>>) {
        if let Ok(mut n) = self.newest_set.lock() {
            *n = started_at;
        }
    }

    pub fn set_newest_missing_parts(&self, parts: usize) {
        self.newest_missing_parts
            .store(parts, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn set_last_drill(&self, drill: Option<LastDrill>) {
        if let Ok(mut d) = self.last_drill.lock() {
            *d = drill;
        }
    }

    pub fn set_recoverable(&self, r: Recoverable) {
        if let Ok(mut x) = self.recoverable.lock() {
            *x = r;
        }
    }

    pub fn render(&self, now: DateTime<Utc>, shutting_down: bool) -> String {
        let jobs = self.snapshot();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            write_family(&mut out, name, kind, help, rows)
        };
        let per_job = |f: &dyn Fn(&JobStats) -> f64| -> Vec<(String, f64)> {
            jobs.iter()
                .map(|(n, s)| {
                    (
                        format!("job=\"{}\",kind=\"{}\"", label(n), label(&s.kind)),
                        f(s),
                    )
                })
                .collect()
        };
        family(
            "wpdr_job_runs_total",
            "counter",
            "Runs started.",
            per_job(&|s| s.runs as f64),
        );
        let r = crate::store::requests::counts();
        family(
            "wpdr_store_requests_total",
            "counter",
            "Requests to the backup store by this process (what listings and scans cost).",
            [
                ("list", r.list),
                ("get", r.get),
                ("head", r.head),
                ("put", r.put),
                ("delete", r.delete),
            ]
            .into_iter()
            .map(|(op, n)| (format!("operation=\"{op}\""), n as f64))
            .collect(),
        );
        family(
            "wpdr_job_successes_total",
            "counter",
            "Runs that succeeded.",
            per_job(&|s| s.successes as f64),
        );
        let failures: Vec<(String, f64)> = jobs
            .iter()
            .flat_map(|(n, s)| {
                s.failures.iter().map(move |(reason, c)| {
                    (
                        format!(
                            "job=\"{}\",kind=\"{}\",reason=\"{}\"",
                            label(n),
                            label(&s.kind),
                            label(reason)
                        ),
                        *c as f64,
                    )
                })
            })
            .collect();
        family(
            "wpdr_job_failures_total",
            "counter",
            "Failed runs by reason.",
            failures,
        );
        family(
            "wpdr_job_skipped_overlap_total",
            "counter",
            "Ticks skipped because the previous run was still going.",
            per_job(&|s| s.skipped_overlap as f64),
        );
        family(
            "wpdr_job_running",
            "gauge",
            "1 while a run is in progress.",
            per_job(&|s| f64::from(u8::from(s.running))),
        );
        family(
            "wpdr_job_last_start_timestamp_seconds",
            "gauge",
            "Start of the last run.",
            per_job(&|s| ts(&s.last_start)),
        );
        family(
            "wpdr_job_last_success_timestamp_seconds",
            "gauge",
            "End of the last successful run.",
            per_job(&|s| ts(&s.last_success)),
        );
        family(
            "wpdr_job_last_duration_seconds",
            "gauge",
            "Duration of the last run.",
            per_job(&|s| s.last_duration_seconds),
        );
        family(
            "wpdr_job_last_bytes",
            "gauge",
            "Bytes written (backup) or freed (prune) by the last successful run.",
            per_job(&|s| s.last_bytes as f64),
        );
        family(
            "wpdr_job_last_objects",
            "gauge",
            "Artifacts written, sets pruned or artifacts verified by the last successful run.",
            per_job(&|s| s.last_objects as f64),
        );
        family(
            "wpdr_job_next_run_timestamp_seconds",
            "gauge",
            "When the job runs next.",
            per_job(&|s| ts(&s.next_run)),
        );
        let newest = match self.newest_set.lock() {
            Ok(n) => *n,
            Err(p) => *p.into_inner(),
        };
        family(
            "wpdr_newest_set_timestamp_seconds",
            "gauge",
            "Start of the newest complete backup set (0: none).",
            vec![(String::new(), ts(&newest))],
        );
        family(
            "wpdr_newest_set_age_seconds",
            "gauge",
            "Age of the newest complete set: the data a restore now would lose (RPO now); -1 when there is none.",
            vec![(String::new(), newest.map_or(-1.0, |t| (now - t).num_milliseconds() as f64 / 1000.0))],
        );
        family(
            "wpdr_newest_set_missing_parts",
            "gauge",
            "Parts the newest set lacks because they failed at backup (media, cluster): above 0 the set is partial.",
            vec![(
                String::new(),
                self.newest_missing_parts
                    .load(std::sync::atomic::Ordering::Relaxed) as f64,
            )],
        );
        let drill = match self.last_drill.lock() {
            Ok(d) => d.clone(),
            Err(p) => p.into_inner().clone(),
        };
        family(
            "wpdr_last_drill_success",
            "gauge",
            "1 when the newest drill restored and checked the site, 0 when it failed, -1 when none ran.",
            vec![(String::new(), drill.as_ref().map_or(-1.0, |d| f64::from(u8::from(d.ok))))],
        );
        family(
            "wpdr_last_drill_age_seconds",
            "gauge",
            "Time since the newest drill finished; -1 when none ran.",
            vec![(
                String::new(),
                drill.as_ref().map_or(-1.0, |d| {
                    (now - d.finished_at).num_milliseconds() as f64 / 1000.0
                }),
            )],
        );
        family(
            "wpdr_last_drill_rto_seconds",
            "gauge",
            "Measured restore time of the newest drill (RTO); -1 when none ran.",
            vec![(
                String::new(),
                drill.as_ref().map_or(-1.0, |d| d.rto_seconds),
            )],
        );
        family(
            "wpdr_last_drill_rpo_seconds",
            "gauge",
            "Age of the data the newest drill restored (RPO); -1 when none ran.",
            vec![(
                String::new(),
                drill.as_ref().map_or(-1.0, |d| d.rpo_seconds),
            )],
        );
        let rec = match self.recoverable.lock() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let age = |t: Option<DateTime<Utc>>| {
            t.map_or(-1.0, |t| (now - t).num_milliseconds() as f64 / 1000.0)
        };
        family(
            "wpdr_recoverable_oldest_timestamp_seconds",
            "gauge",
            "Oldest second a point-in-time restore can reach (0: none).",
            vec![(String::new(), ts(&rec.oldest))],
        );
        family(
            "wpdr_recoverable_newest_timestamp_seconds",
            "gauge",
            "Newest second a point-in-time restore can reach (0: none).",
            vec![(String::new(), ts(&rec.newest))],
        );
        family(
            "wpdr_recoverable_newest_age_seconds",
            "gauge",
            "Time since the newest restorable second: what a restore now would lose (RPO with the binlog archive); -1 when nothing is restorable.",
            vec![(String::new(), age(rec.newest))],
        );
        family(
            "wpdr_binlog_gaps",
            "gauge",
            "Gaps recorded in the binlog archive (purged logs, a failover to a server without the archived position).",
            vec![(String::new(), rec.gaps as f64)],
        );
        family(
            "wpdr_binlog_open_gaps",
            "gauge",
            "Gaps no backup set has been taken after yet: alert on > 0.",
            vec![(String::new(), rec.open_gaps as f64)],
        );
        family(
            "wpdr_binlog_archive_age_seconds",
            "gauge",
            "Time since the binlog archiver last reported; -1 when it never ran.",
            vec![(String::new(), age(rec.archive_updated_at))],
        );
        family(
            "wpdr_daemon_shutting_down",
            "gauge",
            "1 after SIGTERM while runs drain.",
            vec![(String::new(), f64::from(u8::from(shutting_down)))],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.with_job("nightly", |s| {
            s.kind = "backup".into();
            s.runs = 2;
            s.successes = 1;
            *s.failures.entry("db_unreachable".into()).or_default() += 1;
        });
        let now: DateTime<Utc> = "2026-11-25T12:00:00Z".parse().unwrap();
        m.set_newest_set(Some("2026-11-25T11:00:00Z".parse().unwrap()));
        let text = m.render(now, false);
        assert!(
            text.contains("wpdr_job_runs_total{job=\"nightly\",kind=\"backup\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("wpdr_job_failures_total{job=\"nightly\",kind=\"backup\",reason=\"db_unreachable\"} 1\n"));
        assert!(text.contains("wpdr_newest_set_age_seconds 3600\n"));
        assert!(text.contains("# TYPE wpdr_job_runs_total counter"));
        assert!(text.contains("wpdr_store_requests_total{operation=\"list\"}"));
        assert!(text.contains("wpdr_last_drill_success -1\n"), "{text}");
        m.set_last_drill(Some(LastDrill {
            finished_at: "2026-11-25T11:30:00Z".parse().unwrap(),
            ok: false,
            rto_seconds: 42.5,
            rpo_seconds: 7200.0,
        }));
        let text = m.render(now, false);
        assert!(text.contains("wpdr_last_drill_success 0\n"), "{text}");
        assert!(
            text.contains("wpdr_last_drill_age_seconds 1800\n"),
            "{text}"
        );
        assert!(
            text.contains("wpdr_last_drill_rto_seconds 42.5\n"),
            "{text}"
        );
    }
}
