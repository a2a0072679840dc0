//! The fleet's views: `fleet status`'s order and counts, and the
//! controller's /metrics: the fleet in numbers (sites, Jobs running and
//! waiting, API calls) and one series per Site for what a dashboard sorts by
//! (newest set, failing, last drill). Cardinality is the number of Sites
//! times eight per-site families: 500 sites make 4,000 series, no label but
//! namespace and site (no set ids, no error texts).

use super::controller::Snapshot;
use super::site::Site;
use crate::daemon::metrics::{label, write_family};
use chrono::{DateTime, Utc};
use kube::ResourceExt;
use std::collections::BTreeMap;

fn ts(s: &Option<String>) -> Option<f64> {
    s.as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp() as f64)
}

pub fn render(snap: &Snapshot, now: DateTime<Utc>, rpo: chrono::Duration) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        write_family(&mut out, name, kind, help, rows)
    };
    let one = |v: f64| vec![(String::new(), v)];
    family(
        "wpdr_fleet_leader",
        "gauge",
        "1 when this replica holds the Lease and plans.",
        one(f64::from(u8::from(snap.leader))),
    );
    family(
        "wpdr_fleet_rounds_total",
        "counter",
        "Planning rounds run.",
        one(snap.rounds as f64),
    );
    family(
        "wpdr_fleet_round_failures_total",
        "counter",
        "Rounds that failed (API server unreachable).",
        one(snap.round_failures as f64),
    );
    family(
        "wpdr_fleet_api_calls_total",
        "counter",
        "Kubernetes API calls made by the controller.",
        one(snap.api_calls as f64),
    );
    family(
        "wpdr_fleet_last_round_timestamp_seconds",
        "gauge",
        "When the last round finished.",
        snap.last_round
            .map(|t| one(t.timestamp() as f64))
            .unwrap_or_default(),
    );
    family(
        "wpdr_fleet_jobs_running",
        "gauge",
        "Fleet Jobs running.",
        one(snap.round.running as f64),
    );
    family(
        "wpdr_fleet_runs_waiting",
        "gauge",
        "Runs due but held back by a cap.",
        one(snap.round.waiting as f64),
    );
    family(
        "wpdr_fleet_sites_invalid",
        "gauge",
        "Sites whose spec cannot run (reason in their status).",
        one(snap.round.invalid as f64),
    );
    let summary = summary(&snap.sites, now, rpo);
    family(
        "wpdr_fleet_sites",
        "gauge",
        "Sites by state: all, failing, out_of_rpo, never_backed_up, never_drilled.",
        summary
            .iter()
            .map(|(k, v)| {
                let k = if *k == "sites" { "all" } else { k };
                (format!("state=\"{k}\""), *v as f64)
            })
            .collect(),
    );
    let per_site = |f: &dyn Fn(&Site) -> Option<f64>| -> Vec<(String, f64)> {
        snap.sites
            .iter()
            .filter_map(|s| {
                let v = f(s)?;
                Some((
                    format!(
                        "namespace=\"{}\",site=\"{}\"",
                        label(s.metadata.namespace.as_deref().unwrap_or("")),
                        label(s.metadata.name.as_deref().unwrap_or(""))
                    ),
                    v,
                ))
            })
            .collect()
    };
    let status = |s: &Site| s.status.clone().unwrap_or_default();
    family(
        "wpdr_fleet_site_newest_set_timestamp_seconds",
        "gauge",
        "When the site's newest complete set was taken (RPO = now - this).",
        per_site(&|s| ts(&status(s).newest_set_time)),
    );
    family(
        "wpdr_fleet_site_recoverable_to_timestamp_seconds",
        "gauge",
        "The newest second a point-in-time restore reaches.",
        per_site(&|s| ts(&status(s).recoverable_to)),
    );
    family(
        "wpdr_fleet_site_failing",
        "gauge",
        "1 while the site's last run failed.",
        per_site(&|s| Some(f64::from(u8::from(status(s).last_error.is_some())))),
    );
    family(
        "wpdr_fleet_site_consecutive_failures",
        "gauge",
        "Failures since the last success, the worst schedule's.",
        per_site(&|s| {
            Some(f64::from(
                status(s)
                    .runs
                    .values()
                    .map(|r| r.failures)
                    .max()
                    .unwrap_or(0),
            ))
        }),
    );
    family(
        "wpdr_fleet_site_open_gaps",
        "gauge",
        "Binlog archive gaps no set has healed.",
        per_site(&|s| status(s).open_gaps.map(|g| g as f64)),
    );
    family(
        "wpdr_fleet_site_last_drill_success",
        "gauge",
        "1 when the last drill passed (absent: never drilled).",
        per_site(&|s| {
            status(s)
                .last_drill
                .map(|d| f64::from(u8::from(d.result == "Passed")))
        }),
    );
    family(
        "wpdr_fleet_site_last_drill_timestamp_seconds",
        "gauge",
        "When the last drill finished.",
        per_site(&|s| status(s).last_drill.and_then(|d| ts(&Some(d.at)))),
    );
    family(
        "wpdr_fleet_site_last_drill_rto_seconds",
        "gauge",
        "The last drill's RTO.",
        per_site(&|s| {
            status(s)
                .last_drill
                .and_then(|d| d.rto_seconds)
                .map(|v| v as f64)
        }),
    );
    out
}

/// Sites in their order for `wpdr fleet status`: worst first.
pub fn by_severity(sites: &mut [Site], now: DateTime<Utc>) {
    sites.sort_by_key(|s| {
        let st = s.status.clone().unwrap_or_default();
        let failing = st.last_error.is_some();
        let age = st
            .newest_set_time
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or(i64::MAX, |t| (now - t.with_timezone(&Utc)).num_seconds());
        let drilled = st.last_drill.as_ref().is_some_and(|d| d.result == "Passed");
        (
            std::cmp::Reverse((failing, age, !drilled)),
            s.namespace(),
            s.name_any(),
        )
    });
}

/// Counts for a dashboard.
pub fn summary(
    sites: &[Site],
    now: DateTime<Utc>,
    rpo_target: chrono::Duration,
) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::from([
        ("sites", sites.len()),
        ("failing", 0),
        ("out_of_rpo", 0),
        ("never_drilled", 0),
        ("never_backed_up", 0),
    ]);
    for s in sites {
        let st = s.status.clone().unwrap_or_default();
        if st.last_error.is_some() {
            *out.entry("failing").or_default() += 1;
        }
        match st
            .newest_set_time
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        {
            None => *out.entry("never_backed_up").or_default() += 1,
            Some(t) if now - t.with_timezone(&Utc) > rpo_target => {
                *out.entry("out_of_rpo").or_default() += 1
            }
            Some(_) => {}
        }
        if st.last_drill.is_none() {
            *out.entry("never_drilled").or_default() += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::site::{DrillStatus, SiteSpec, SiteStatus};

    #[test]
    fn every_site_has_its_series_and_the_summary_counts_them() {
        let mk = |name: &str, status: SiteStatus| {
            let mut s = Site::new(
                name,
                SiteSpec {
                    config: serde_json::json!({}),
                    credentials: Default::default(),
                    schedules: vec![],
                    suspend: false,
                    job: None,
                },
            );
            s.metadata.namespace = Some(format!("ns-{name}"));
            s.status = Some(status);
            s
        };
        let now: DateTime<Utc> = "2026-11-30T12:00:00Z".parse().unwrap();
        let snap = Snapshot {
            sites: vec![
                mk(
                    "ok",
                    SiteStatus {
                        newest_set_time: Some("2026-11-30T02:00:00Z".into()),
                        last_drill: Some(DrillStatus {
                            result: "Passed".into(),
                            at: "2026-11-29T09:00:00Z".into(),
                            rto_seconds: Some(95),
                            rpo_seconds: Some(3600),
                        }),
                        ..Default::default()
                    },
                ),
                mk(
                    "old",
                    SiteStatus {
                        newest_set_time: Some("2026-11-27T02:00:00Z".into()),
                        last_error: Some("nightly (db_auth): refused".into()),
                        ..Default::default()
                    },
                ),
                mk("new", SiteStatus::default()),
            ],
            leader: true,
            ..Default::default()
        };
        let text = render(&snap, now, chrono::Duration::hours(26));
        for want in [
            "wpdr_fleet_leader 1",
            "wpdr_fleet_sites{state=\"all\"} 3",
            "wpdr_fleet_sites{state=\"failing\"} 1",
            "wpdr_fleet_sites{state=\"out_of_rpo\"} 1",
            "wpdr_fleet_sites{state=\"never_backed_up\"} 1",
            "wpdr_fleet_sites{state=\"never_drilled\"} 2",
            "wpdr_fleet_site_failing{namespace=\"ns-old\",site=\"old\"} 1",
            "wpdr_fleet_site_last_drill_rto_seconds{namespace=\"ns-ok\",site=\"ok\"} 95",
            "wpdr_fleet_site_newest_set_timestamp_seconds{namespace=\"ns-ok\",site=\"ok\"} 1796004000",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
        // Never drilled: no drill series for that site (not a misleading 0).
        assert!(!text.contains("wpdr_fleet_site_last_drill_success{namespace=\"ns-new\""));
        // No error text or set id becomes a label.
        assert!(!text.contains("db_auth"));
    }
}
