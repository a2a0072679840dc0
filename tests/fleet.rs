//! The fleet controller with real work: kube-fake-client as the API server,
//! and a fake Job runner that runs each Job's container command (the real
//! `wpdr fleet run-job`) on this host against the real MariaDB and Garage,
//! with the Job's env resolved from the fake's Secrets and its ConfigMap
//! mounted as a file, then reports back as the kubelet would (the Job's
//! status and the Pod's termination message).

mod common;

use chrono::{DateTime, Duration, Utc};
use common::Services;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use kube_fake_client::ClientBuilder;
use std::collections::BTreeMap;
use wpdr::fleet::controller::Controller;
use wpdr::fleet::job::{JobTemplate, DATABASE_ANNOTATION};
use wpdr::fleet::plan::Limits;
use wpdr::fleet::site::{SecretKeyRef, Site, SiteCredentials, SiteSchedule, SiteSpec};

fn secret(ns: &str, name: &str, key: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// Runs every Job that has not finished, as a kubelet would, one at a time.
/// Returns how many it ran; they finish at `now` (the test's clock).
async fn run_jobs(client: &kube::Client, work: &std::path::Path, now: DateTime<Utc>) -> usize {
    let jobs = Api::<Job>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let mut ran = 0;
    for j in jobs.iter().filter(|j| j.status.is_none()) {
        let ns = j.namespace().unwrap();
        let name = j.name_any();
        let pod = j.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let container = &pod.containers[0];
        // The ConfigMap volume, mounted as a file.
        let cm_name = pod.volumes.as_ref().unwrap()[0]
            .config_map
            .as_ref()
            .unwrap()
            .name
            .clone();
        let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get(&cm_name)
            .await
            .unwrap();
        let config = work.join(format!("{name}.yaml"));
        std::fs::write(&config, &cm.data.unwrap()["wpdr.yaml"]).unwrap();
        let outcome = work.join(format!("{name}.outcome"));
        let args: Vec<String> = container
            .args
            .clone()
            .unwrap()
            .into_iter()
            .map(|a| match a.as_str() {
                "/etc/wpdr/wpdr.yaml" => config.display().to_string(),
                "/dev/termination-log" => outcome.display().to_string(),
                _ => a,
            })
            .collect();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wpdr"));
        cmd.args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap());
        for e in container.env.clone().unwrap_or_default() {
            let value = match (e.value, e.value_from) {
                (Some(v), _) => v,
                (None, Some(from)) => {
                    let r = from.secret_key_ref.unwrap();
                    let s = Api::<Secret>::namespaced(client.clone(), &ns)
                        .get(&r.name)
                        .await
                        .unwrap();
                    String::from_utf8(s.data.unwrap()[&r.key].0.clone()).unwrap()
                }
                _ => String::new(),
            };
            cmd.env(e.name, value);
        }
        let out = cmd.output().unwrap();
        let message = std::fs::read_to_string(&outcome).unwrap_or_default();
        assert!(!message.is_empty(), "no outcome: {}", common::stderr(&out));
        let code = out.status.code().unwrap_or(1);
        common::finish_job(client, j, code, message, now).await;
        ran += 1;
    }
    ran
}

#[tokio::test]
async fn three_sites_get_real_sets_and_a_wrong_password_fails_alone() {
    let svc = Services::get();
    let work = tempfile::tempdir().unwrap();
    let mut objects_sites = Vec::new();
    let mut secrets = Vec::new();
    let mut stores = Vec::new();
    for ns in ["alpha", "beta", "gamma"] {
        let db = svc
            .database_with(
                &format!("fleet_{ns}"),
                &[
                    "CREATE TABLE wp_posts (ID BIGINT PRIMARY KEY, post_title TEXT)",
                    "INSERT INTO wp_posts VALUES (1, 'hello'), (2, 'world')",
                ],
            )
            .await;
        let prefix = format!("fleet-{ns}-{:08x}", rand::random::<u32>());
        let config: serde_json::Value = serde_yaml::from_str(&format!(
            "site: {ns}\nstore: {{type: s3, bucket: {}, prefix: {prefix}, endpoint: '{}', region: {}, access_key_id: {}}}\ndatabase: {{host: 127.0.0.1, port: {}, user: {}, name: {db}}}",
            svc.var("WPDR_TEST_S3_BUCKET"),
            svc.var("WPDR_TEST_S3_ENDPOINT"),
            svc.var("WPDR_TEST_S3_REGION"),
            svc.var("WPDR_TEST_S3_ACCESS_KEY_ID"),
            svc.db_port(),
            svc.var("WPDR_TEST_DB_USER"),
        ))
        .unwrap();
        stores.push((ns, config.clone()));
        let mut site = Site::new(
            "wp",
            SiteSpec {
                config,
                credentials: SiteCredentials {
                    database_password: Some(SecretKeyRef {
                        name: "wp-db".into(),
                        key: "password".into(),
                    }),
                    store_secret_access_key: Some(SecretKeyRef {
                        name: "wp-store".into(),
                        key: "secret".into(),
                    }),
                    ..Default::default()
                },
                schedules: vec![SiteSchedule {
                    name: "nightly".into(),
                    job: "backup".into(),
                    cron: "0 H H(1-4) * * *".into(),
                    timezone: None,
                }],
                suspend: false,
                // One site asks for more memory than the chart's template gives.
                job: (ns == "beta")
                    .then(|| serde_yaml::from_str("resources: {limits: {memory: 3Gi}}").unwrap()),
            },
        );
        site.metadata.namespace = Some(ns.into());
        objects_sites.push(site);
        let password = if ns == "gamma" {
            "not-the-password".to_string()
        } else {
            svc.var("WPDR_TEST_DB_PASSWORD")
        };
        secrets.push(secret(ns, "wp-db", "password", &password));
        secrets.push(secret(
            ns,
            "wp-store",
            "secret",
            &svc.var("WPDR_TEST_S3_SECRET_ACCESS_KEY"),
        ));
    }
    let client = ClientBuilder::new()
        .with_resource::<Site>()
        .with_objects(objects_sites)
        .with_objects(secrets)
        .build()
        .await
        .unwrap();
    // All three on one database server, one Job at a time on it.
    let limits = Limits {
        per_database: 1,
        ..Limits::default()
    };
    let controller = Controller::new(
        client.clone(),
        JobTemplate::new("registry.example/wpdr@sha256:0"),
        limits,
    );
    // The next night: every site's backup is due.
    let night = Utc::now() + Duration::days(1) + Duration::hours(6);
    let mut runs = 0;
    for round_no in 0..6 {
        let round = controller.round(night).await.unwrap();
        let running: Vec<Job> = Api::<Job>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|j| j.status.is_none())
            .collect();
        assert!(
            running.len() <= 1,
            "round {round_no}: {} Jobs on one server",
            running.len()
        );
        for j in &running {
            assert_eq!(
                j.annotations()[DATABASE_ANNOTATION],
                format!("127.0.0.1:{}", svc.db_port())
            );
            // Credentials travel as references only.
            let text = serde_json::to_string(j).unwrap();
            // The site's own change to the template, and only on its Jobs.
            assert_eq!(
                text.contains("\"3Gi\""),
                j.namespace().as_deref() == Some("beta"),
                "{text}"
            );
            assert!(!text.contains(&svc.var("WPDR_TEST_DB_PASSWORD")));
            assert!(!text.contains(&svc.var("WPDR_TEST_S3_SECRET_ACCESS_KEY")));
        }
        if round_no == 0 {
            assert_eq!((round.started.len(), round.waiting), (1, 2), "{round:?}");
        }
        runs += run_jobs(&client, work.path(), night).await;
    }
    assert_eq!(
        runs, 3,
        "one backup per site, the failing one not retried before its backoff"
    );
    // After its backoff (5 minutes) the failing site is tried again, alone,
    // as a new Job (a new attempt, a new name).
    let later = night + Duration::minutes(6);
    let round = controller.round(later).await.unwrap();
    assert_eq!(round.started, ["gamma/wp"], "{round:?}");
    assert_eq!(run_jobs(&client, work.path(), later).await, 1);
    controller.round(later).await.unwrap();

    // /metrics: a series per site, the failing one marked.
    let metrics = wpdr::fleet::metrics::render(&controller.snapshot(), later, Duration::hours(26));
    assert!(
        metrics.contains("wpdr_fleet_site_failing{namespace=\"gamma\",site=\"wp\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wpdr_fleet_site_failing{namespace=\"alpha\",site=\"wp\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wpdr_fleet_sites{state=\"failing\"} 1"),
        "{metrics}"
    );

    let sites = Api::<Site>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    for s in &sites {
        let ns = s.namespace().unwrap();
        let st = s.status.clone().unwrap();
        let record = &st.runs["nightly"];
        if ns == "gamma" {
            let err = st.last_error.clone().unwrap_or_default();
            eprintln!("gamma's status: {err}");
            assert!(err.starts_with("nightly (db_auth)"), "{err}");
            assert!(
                err.contains("[WPDR_DB_PASSWORD is key password of Secret gamma/wp-db]"),
                "{err}"
            );
            assert!(!err.contains("not-the-password"), "{err}");
            assert_eq!(record.last_result.as_deref(), Some("Failed"));
            assert_eq!(record.failures, 2);
            assert!(record.retry_at.is_some());
            assert_eq!(st.newest_set, None);
        } else {
            assert_eq!(st.last_error, None, "{ns}: {st:?}");
            assert_eq!(record.last_result.as_deref(), Some("Succeeded"), "{ns}");
            let set = st.newest_set.clone().expect("a set");
            // The set is real: the site's own store lists it, made by the nightly schedule.
            let config = stores.iter().find(|(n, _)| *n == ns).unwrap().1.clone();
            let path = work.path().join(format!("{ns}-check.yaml"));
            std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
            let listed = common::json(&svc.wpdr(&path, &["sets", "list", "--output", "json"]));
            let first = &listed.as_array().unwrap()[0];
            assert_eq!(first["id"].as_str(), Some(set.as_str()), "{listed}");
            assert_eq!(first["schedule"].as_str(), Some("nightly"));
        }
    }
}

/// A Site whose spec cannot run says why in its status, starts nothing, and
/// holds no other site back; once fixed, its error goes and it runs. A dry
/// run says what it would start and creates and writes nothing.
#[tokio::test]
async fn a_refused_spec_is_reported_until_fixed_and_a_dry_run_writes_nothing() {
    let mk = |name: &str, config: &str| {
        let mut s = Site::new(
            name,
            SiteSpec {
                config: serde_yaml::from_str(config).unwrap(),
                credentials: SiteCredentials::default(),
                schedules: vec![SiteSchedule {
                    name: "nightly".into(),
                    job: "backup".into(),
                    cron: "0 0 2 * * *".into(),
                    timezone: None,
                }],
                suspend: false,
                job: None,
            },
        );
        s.metadata.namespace = Some(name.into());
        s
    };
    let good = "site: ok\nstore: {type: s3, bucket: b}\ndatabase: {host: db, user: wpdr, name: wp}";
    let client = ClientBuilder::new()
        .with_resource::<Site>()
        .with_objects(vec![
            mk(
                "bad",
                "site: bad\nstore: {type: s3, bucket: b}\ndatabase: {host: db, password: hunter2}",
            ),
            mk("good", good),
        ])
        .build()
        .await
        .unwrap();
    let template = JobTemplate::new("registry.example/wpdr@sha256:0");
    let night = Utc::now() + Duration::days(2);
    let jobs = || async {
        Api::<Job>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    };
    let status_of = |name: &'static str| {
        let client = client.clone();
        async move {
            Api::<Site>::namespaced(client, name)
                .get(name)
                .await
                .unwrap()
                .status
                .unwrap_or_default()
        }
    };

    let dry = Controller::new(client.clone(), template.clone(), Limits::default()).dry_run();
    let round = dry.round(night).await.unwrap();
    assert_eq!(round.invalid, 1);
    assert_eq!(round.started.len(), 1, "{round:?}");
    assert!(
        round.started[0].starts_with("good/good nightly"),
        "{round:?}"
    );
    assert!(jobs().await.is_empty(), "a dry run created a Job");
    assert_eq!(
        status_of("bad").await.last_error,
        None,
        "a dry run wrote a status"
    );

    let controller = Controller::new(client.clone(), template, Limits::default());
    let round = controller.round(night).await.unwrap();
    assert_eq!((round.invalid, round.started.len()), (1, 1), "{round:?}");
    let err = status_of("bad")
        .await
        .last_error
        .expect("the reason is in the status");
    assert!(
        err.contains("spec.config.database.password") && !err.contains("hunter2"),
        "{err}"
    );
    assert_eq!(jobs().await.len(), 1);

    // Fixed: the error goes, and its owed run starts.
    let api = Api::<Site>::namespaced(client.clone(), "bad");
    let mut bad = api.get("bad").await.unwrap();
    bad.spec.config = serde_yaml::from_str(good).unwrap();
    api.replace("bad", &Default::default(), &bad).await.unwrap();
    let round = controller.round(night).await.unwrap();
    assert_eq!(
        (round.invalid, round.started.clone()),
        (0, vec!["bad/bad".to_string()])
    );
    assert_eq!(status_of("bad").await.last_error, None);
    assert_eq!(jobs().await.len(), 2);
}
