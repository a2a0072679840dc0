//! The alerts and the dashboard the chart ships refer only to metrics wpdr
//! exports, and every alert has a firing and a quiet promtool test
//! (`scripts/chart-check.sh` runs those tests with promtool).

use std::collections::BTreeSet;
use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `wpdr_…` metric name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("wpdr_") {
        let start = i + at;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end] == b'_'
                || bytes[end].is_ascii_digit())
        {
            end += 1;
        }
        if !preceded {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

#[test]
fn alerts_and_dashboard_name_only_exported_metrics() {
    // What `/metrics` renders: the names in the daemon's sources.
    let exported: String = ["src/daemon/metrics.rs", "src/daemon/mod.rs"]
        .iter()
        .map(|p| read(p))
        .collect();
    let rules = read("charts/wpdr/templates/prometheusrule.yaml");
    let dashboard = read("charts/wpdr/dashboards/wpdr.json");
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is not JSON");
    for (what, text) in [("alert rules", &rules), ("dashboard", &dashboard)] {
        let names = metric_names(text);
        assert!(names.len() >= 5, "{what} name only {names:?}");
        for name in names {
            assert!(
                exported.contains(&format!("\"{name}\""))
                    || exported.contains(&format!("# TYPE {name} ")),
                "the {what} use {name}, which wpdr does not export"
            );
        }
    }
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_test() {
    let rules = read("charts/wpdr/templates/prometheusrule.yaml");
    let tests: serde_yaml::Value =
        serde_yaml::from_str(&read("tests/alerts/wpdr.test.yaml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 9, "{alerts:?}");
    for alert in alerts {
        let (mut fires, mut quiet) = (false, false);
        for t in tests["tests"].as_sequence().unwrap() {
            for a in t["alert_rule_test"].as_sequence().unwrap() {
                if a["alertname"].as_str() == Some(alert) {
                    let expected = a["exp_alerts"].as_sequence().map_or(0, |s| s.len());
                    fires |= expected > 0;
                    quiet |= expected == 0;
                }
            }
        }
        assert!(
            fires && quiet,
            "{alert}: firing test {fires}, quiet test {quiet}"
        );
    }
}
