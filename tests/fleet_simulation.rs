//! The fleet controller over 48 virtual hours: 500 Sites on 5 database
//! servers, the real controller rounds against kube-fake-client's in-memory
//! API server, a virtual clock, and Jobs that "run" for a simulated time
//! (nothing executes: this is about planning, caps and status, not bytes).
//! The controller is down for two and a half hours in the second night, one
//! site always fails, one site is deleted while its Job runs.
//!
//! Checked: the caps are never exceeded; every healthy site gets exactly
//! one backup per night, started inside its window (a night missed while
//! the controller was down is caught up once, not once per missed
//! occurrence); the failing site is retried with backoff and never holds
//! the others back, its reason in its status; status shows every site's
//! newest set. Reported (not asserted): API calls per virtual minute, peak
//! RSS of the process, Jobs started.

mod common;

use chrono::{DateTime, Duration, Timelike, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams};
use kube::ResourceExt;
use kube_fake_client::ClientBuilder;
use std::collections::HashMap;
use wpdr::fleet::controller::{due_of, Controller};
use wpdr::fleet::job::{JobTemplate, DATABASE_ANNOTATION, SCHEDULE_LABEL, SITE_LABEL};
use wpdr::fleet::outcome::{JobOutcome, SiteSummary};
use wpdr::fleet::plan::Limits;
use wpdr::fleet::site::{SecretKeyRef, Site, SiteCredentials, SiteSchedule, SiteSpec};
use wpdr::jobs::Verdict;

const SITES: usize = 500;
const SERVERS: usize = 5;
const FAILING: usize = 7;
const DELETED: usize = 11;

fn site(i: usize, created: DateTime<Utc>) -> Site {
    let config = serde_yaml::from_str(&format!(
        "site: wp{i}
store: {{type: s3, bucket: backups, prefix: wp{i}, endpoint: 'https://s3.offsite.example'}}
database: {{host: db{}.mariadb, port: 3306, user: wpdr, name: wp{i}}}
media:
  source: {{bucket: uploads-{i}, endpoint: 'http://minio.media:9000'}}
  offsite: {{bucket: media-{i}, endpoint: 'https://s3.offsite.example'}}
",
        i % SERVERS
    ))
    .unwrap();
    let mut s = Site::new(
        "wp",
        SiteSpec {
            config,
            credentials: SiteCredentials {
                database_password: Some(SecretKeyRef {
                    name: "wp-db".into(),
                    key: "password".into(),
                }),
                ..Default::default()
            },
            schedules: vec![
                SiteSchedule {
                    name: "nightly".into(),
                    job: "backup".into(),
                    cron: "0 H H(1-3) * * *".into(),
                    timezone: None,
                },
                SiteSchedule {
                    name: "media".into(),
                    job: "media-sync".into(),
                    cron: "0 H H/6 * * *".into(),
                    timezone: None,
                },
                SiteSchedule {
                    name: "prune".into(),
                    job: "prune".into(),
                    cron: "0 H 12 * * *".into(),
                    timezone: None,
                },
            ],
            suspend: false,
            job: None,
        },
    );
    s.metadata.namespace = Some(format!("site-{i:03}"));
    s.metadata.creation_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(created.timestamp()).unwrap(),
    ));
    s
}

/// How long a simulated run takes: backups 3-12 minutes, others 1-3.
fn duration_of(job: &Job) -> Duration {
    let name = job.name_any();
    let h = name
        .bytes()
        .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
    match job.labels().get(SCHEDULE_LABEL).map(String::as_str) {
        Some("nightly") => Duration::minutes(3 + (h % 10) as i64),
        _ => Duration::minutes(1 + (h % 3) as i64),
    }
}

fn rss_peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_sites_over_two_days_stay_inside_their_windows_and_caps() {
    // Virtual time from the next midnight.
    let now = Utc::now();
    let start: DateTime<Utc> = (now + Duration::days(1))
        .with_hour(0)
        .and_then(|t| t.with_minute(0))
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap();
    let client = ClientBuilder::new()
        .with_resource::<Site>()
        .with_objects(
            (0..SITES)
                .map(|i| site(i, start - Duration::minutes(1)))
                .collect(),
        )
        .build()
        .await
        .unwrap();
    let limits = Limits {
        max_jobs: 40,
        per_database: 4,
        per_endpoint: 40,
        ..Limits::default()
    };
    let controller = Controller::new(
        client.clone(),
        JobTemplate::new("registry.example/wpdr@sha256:0"),
        limits.clone(),
    );
    let jobs_all: Api<Job> = Api::all(client.clone());

    let end = start + Duration::hours(48);
    let down = (
        start + Duration::minutes(24 * 60 + 30),
        start + Duration::hours(27),
    );

    // namespace/job name -> (virtual start, site key, schedule, due)
    let mut started: HashMap<String, (DateTime<Utc>, String, String, DateTime<Utc>)> =
        HashMap::new();
    let mut finished_at: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut calls_per_round: Vec<u64> = Vec::new();
    let mut peak = (0usize, 0usize); // (all running, per database)
    let mut deleted = false;
    // A round every five virtual minutes (the real controller: every 30 s,
    // so start times here are late by up to five minutes, not early).
    let step = Duration::minutes(5);
    let mut t = start;
    let wall = std::time::Instant::now();
    let end = std::env::var("SIM_HOURS")
        .ok()
        .and_then(|h| h.parse().ok())
        .map_or(end, |h| start + Duration::hours(h));
    while t < end {
        // 1. Jobs whose simulated time is up finish; the failing site's fail.
        let jobs = jobs_all.list(&ListParams::default()).await.unwrap().items;
        for j in &jobs {
            let name = j.name_any();
            let ns = j.namespace().unwrap();
            let site_key = format!("{ns}/{}", j.labels()[SITE_LABEL]);
            let schedule = j.labels()[SCHEDULE_LABEL].clone();
            let id = format!("{ns}/{name}");
            let entry = started
                .entry(id.clone())
                .or_insert_with(|| (t, site_key, schedule.clone(), due_of(j).unwrap()));
            let done = j
                .status
                .as_ref()
                .is_some_and(|s| s.succeeded.is_some() || s.failed.is_some());
            if done {
                // The TTL controller (sooner than the chart's day: the
                // controller has recorded the result by the next round).
                if finished_at
                    .get(&id)
                    .is_some_and(|f| t - *f >= Duration::minutes(10))
                {
                    Api::<Job>::namespaced(client.clone(), &ns)
                        .delete(&name, &DeleteParams::default())
                        .await
                        .unwrap();
                }
                continue;
            }
            if t - entry.0 < duration_of(j) {
                continue;
            }
            let ok = ns != format!("site-{FAILING:03}");
            let verdict = if ok {
                Verdict::ok(1 << 20, 10)
            } else {
                Verdict::failed(
                    wpdr::exit::ExitCode::DatabaseAuth,
                    "database_auth",
                    "the database refused user wpdr: check the password in Secret wp-db",
                )
            };
            let summary = SiteSummary {
                newest_set: ok.then(|| format!("set-{}", entry.3.timestamp())),
                newest_set_time: ok.then_some(entry.3),
                ..Default::default()
            };
            let outcome = JobOutcome::new("backup", &schedule, &verdict, Some(summary));
            common::finish_job(
                &client,
                j,
                i32::from(verdict.exit.code()),
                outcome.to_message(),
                t,
            )
            .await;
            finished_at.insert(id, t);
        }

        // 2. A site is deleted while its backup runs (its Jobs go with it).
        if !deleted {
            let victim = format!("site-{DELETED:03}");
            if jobs.iter().any(|j| {
                j.namespace().as_deref() == Some(victim.as_str())
                    && j.status.as_ref().is_none_or(|s| s.succeeded.is_none())
                    && j.labels()[SCHEDULE_LABEL] == "nightly"
            }) {
                Api::<Site>::namespaced(client.clone(), &victim)
                    .delete("wp", &DeleteParams::default())
                    .await
                    .unwrap();
                deleted = true;
            }
        }

        // 3. A controller round, unless it is down.
        if !(down.0 <= t && t < down.1) {
            let round = controller.round(t).await.unwrap();
            if std::env::var("SIM_DEBUG").is_ok() {
                eprintln!(
                    "{t}: {round:?}",
                    round = (
                        round.running,
                        round.started.len(),
                        round.finished.len(),
                        round.waiting
                    )
                );
            }
            calls_per_round.push(round.api_calls);
        }

        // 4. The caps hold over what runs now.
        let jobs = jobs_all.list(&ListParams::default()).await.unwrap().items;
        // Jobs the round created start now.
        for j in &jobs {
            let id = format!("{}/{}", j.namespace().unwrap(), j.name_any());
            started.entry(id).or_insert_with(|| {
                (
                    t,
                    format!("{}/{}", j.namespace().unwrap(), j.labels()[SITE_LABEL]),
                    j.labels()[SCHEDULE_LABEL].clone(),
                    due_of(j).unwrap(),
                )
            });
        }
        let running: Vec<&Job> = jobs
            .iter()
            .filter(|j| {
                j.status
                    .as_ref()
                    .is_none_or(|s| s.succeeded.is_none() && s.failed.is_none())
            })
            .collect();
        assert!(
            running.len() <= limits.max_jobs,
            "{} Jobs at {t}",
            running.len()
        );
        let mut per_db: HashMap<String, usize> = HashMap::new();
        for j in &running {
            if let Some(db) = j.annotations().get(DATABASE_ANNOTATION) {
                *per_db.entry(db.clone()).or_default() += 1;
            }
        }
        let db_max = per_db.values().copied().max().unwrap_or(0);
        assert!(
            db_max <= limits.per_database,
            "{db_max} Jobs on one server at {t}: {per_db:?}"
        );
        peak = (peak.0.max(running.len()), peak.1.max(db_max));
        if (t - start).num_minutes() % 360 == 0 {
            let pods = Api::<Pod>::all(client.clone())
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len();
            eprintln!(
                "{} h: {} running, {} Jobs, {pods} Pods, {:?} since start",
                (t - start).num_hours(),
                running.len(),
                jobs.len(),
                wall.elapsed()
            );
        }
        t += step;
    }

    // Every healthy, undeleted site: one backup per night, inside its window.
    // site -> (due, started) of each backup
    type Runs = Vec<(DateTime<Utc>, DateTime<Utc>)>;
    let mut backups: HashMap<String, Runs> = HashMap::new();
    for (start_at, key, schedule, due) in started.values() {
        if schedule == "nightly" {
            backups
                .entry(key.clone())
                .or_default()
                .push((*due, *start_at));
        }
    }
    let mut latest_start = [Duration::zero(); 2];
    for i in (0..SITES).filter(|i| *i != FAILING && *i != DELETED) {
        let key = format!("site-{i:03}/wp");
        let mut runs = backups.remove(&key).unwrap_or_default();
        runs.sort();
        assert_eq!(runs.len(), 2, "{key}: {runs:?}");
        for (night, (due, at)) in runs.iter().enumerate() {
            let night_start = start + Duration::days(night as i64);
            // Due 01:00-03:59. A normal night: started by 06:00. The night
            // the controller was down until 03:00, two thirds of the fleet
            // is owed at once and the caps (4 per server) work it off at
            // their rate: by 08:00, each site once.
            assert!(
                *due >= night_start + Duration::hours(1) && *due < night_start + Duration::hours(4),
                "{key}: due {due} (night {night}): {runs:?}"
            );
            let by = if night == 0 { 6 } else { 8 };
            assert!(
                *at < night_start + Duration::hours(by),
                "{key}: due {due}, started {at}"
            );
            latest_start[night] = latest_start[night].max(*at - night_start);
        }
    }
    // The failing site was retried, with growing gaps, and not more often
    // than the backoff allows.
    let mut failing = backups
        .remove(&format!("site-{FAILING:03}/wp"))
        .unwrap_or_default();
    failing.sort_by_key(|(_, at)| *at);
    assert!(failing.len() >= 4, "{failing:?}");
    assert!(
        failing.len() < 40,
        "retried {} times in two days",
        failing.len()
    );
    let gaps: Vec<i64> = failing
        .windows(2)
        .map(|w| (w[1].1 - w[0].1).num_minutes())
        .collect();
    assert!(gaps[1] > gaps[0], "backoff grows: {gaps:?}");

    // Status: every healthy site shows its newest set; the failing one its reason.
    let sites = Api::<Site>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(sites.len(), SITES - 1, "the deleted site is gone");
    for s in &sites {
        let st = s.status.clone().unwrap_or_default();
        if s.namespace().unwrap() == format!("site-{FAILING:03}") {
            let err = st.last_error.expect("the failing site says why");
            assert!(
                err.contains("database_auth") && err.contains("Secret wp-db"),
                "{err}"
            );
            assert!(st.runs["nightly"].failures >= 4);
        } else {
            assert!(
                st.newest_set.is_some(),
                "{}: {st:?}",
                s.namespace().unwrap()
            );
            assert_eq!(st.last_error, None);
        }
    }

    let total: u64 = calls_per_round.iter().sum();
    let max = calls_per_round.iter().max().copied().unwrap_or(0);
    eprintln!(
        "fleet simulation: {SITES} sites, {SERVERS} servers, 48 h: {} Jobs started; peak {} running, {} on one server; latest backup start {} min after midnight (the night after the outage: {} min); API calls per round (every 5 min; a real controller adds 2 per 30 s round): mean {:.1}, max {max}; peak RSS of the test process (controller + in-memory API server) {} MiB",
        started.len(),
        peak.0,
        peak.1,
        latest_start[0].num_minutes(),
        latest_start[1].num_minutes(),
        total as f64 / calls_per_round.len().max(1) as f64,
        rss_peak_kib() / 1024
    );
}
