//! `GET /metrics`: valid Prometheus text (checked by `promtool`), per-target values that match the
//! stored state, and the server's own counters and histograms.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use axum::http::StatusCode;
use common::tools;
use common::*;
use serde_json::json;

backend_tests! {
    metrics_pass_promtool_check,
    target_series_match_the_stored_state,
    ingest_results_and_request_latency_are_counted,
    apps_in_one_process_keep_their_own_counters,
    metrics_with_no_targets_still_describe_every_family,
    build_info_names_the_running_version,
}

/// One sample: metric name and sorted labels.
type Series = (String, BTreeMap<String, String>);

/// Parses the sample lines of a text exposition, undoing the label escapes.
fn samples(text: &str) -> BTreeMap<Series, f64> {
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("}"))),
            None => (series, BTreeMap::new()),
        };
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        assert!(
            samples.insert((name.to_owned(), labels), value).is_none(),
            "duplicate series: {line}"
        );
    }
    samples
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {name} is quoted");
        let mut value = String::new();
        loop {
            match chars.next().expect("closing quote") {
                '"' => break,
                '\\' => match chars.next().expect("escaped character") {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        }
        labels.insert(name, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    (
        name.to_owned(),
        labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
    )
}

/// Targets whose names need escaping, in every state.
async fn seeded(backend: Backend) -> TestApp {
    let app = TestApp::on(backend).await;
    let recent = at_offset(-30);
    app.record(&snapshot("rsyslog", "rsyslog-lab", "SYNCED", &[], &recent))
        .await;
    app.record(&snapshot(
        r#"quote"and\backslash"#,
        r"C:\servers\web",
        "OUT_OF_SYNC",
        &["a.conf", "b.conf"],
        &recent,
    ))
    .await;
    app.record(&snapshot("grüße", "db 1", "ERROR", &[], &recent))
        .await;
    app.record(&snapshot(
        "old",
        "gone",
        "OUT_OF_SYNC",
        &["x"],
        &at_offset(-7200),
    ))
    .await;
    app
}

/// promtool's one expected finding: SPEC names the per-target drift gauge `gitops_drift_count`,
/// and promtool's naming lint reserves `_count` for histograms and summaries. It is a style lint
/// (exit code 3), not a format error (exit code 1), and the name is part of the contract.
const CONTRACT_NAME_LINT: &str =
    "gitops_drift_count non-histogram and non-summary metrics should not have \"_count\" suffix";

/// Pipes the exposition through `promtool check metrics`: it must parse, and lint clean apart from
/// [`CONTRACT_NAME_LINT`].
fn promtool_check(exposition: &str) {
    let Some(promtool) = tools::PROMTOOL.require("the promtool check of /metrics") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let findings: Vec<&str> = report
        .lines()
        .filter(|line| !line.trim().is_empty() && *line != CONTRACT_NAME_LINT)
        .collect();
    let passed = match output.status.code() {
        Some(0) => true,
        // 3: lint findings only; acceptable when the contract's name is the only one.
        Some(3) => report.contains(CONTRACT_NAME_LINT),
        _ => false,
    };
    assert!(
        passed && findings.is_empty(),
        "promtool check metrics failed ({}):\n{report}\n--- exposition ---\n{exposition}",
        output.status
    );
}

async fn metrics_pass_promtool_check(backend: Backend) {
    let app = seeded(backend).await;
    // Give every self-metric a sample too.
    app.post_raw(Some("application/json"), "{").await;
    app.get("/status.json").await;
    app.get("/history?limit=1").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    promtool_check(&response.text());
}

async fn target_series_match_the_stored_state(backend: Backend) {
    let app = seeded(backend).await;
    let rows = app.get_rows("/status.json").await;
    let text = app.get("/metrics").await.text();
    let samples = samples(&text);

    for family in [
        "gitops_sync_status",
        "gitops_target_state",
        "gitops_drift_count",
        "gitops_last_check_timestamp_seconds",
        "gitops_status_since_timestamp_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {family} gauge\n")), "{text}");
        assert!(text.contains(&format!("# HELP {family} ")), "{text}");
    }
    let per_target = samples
        .keys()
        .filter(|(name, _)| name == "gitops_sync_status")
        .count();
    assert_eq!(per_target, rows.len(), "one gitops_sync_status per target");

    for row in &rows {
        let (repo, server) = (
            row["repo"].as_str().unwrap(),
            row["server"].as_str().unwrap(),
        );
        let target = [("repo", repo), ("server", server)];
        let value = |name: &str| {
            *samples
                .get(&series(name, &target))
                .unwrap_or_else(|| panic!("no {name} for {repo}/{server} in\n{text}"))
        };
        let code = match row["sync_status"].as_str().unwrap() {
            "SYNCED" => 0.0,
            "OUT_OF_SYNC" => 1.0,
            "ERROR" => 2.0,
            other => panic!("{other}"),
        };
        assert_eq!(value("gitops_sync_status"), code, "{repo}/{server}");
        assert_eq!(
            value("gitops_drift_count"),
            row["drift_count"].as_f64().unwrap()
        );
        let millis = |field: &str| {
            let at = time::OffsetDateTime::parse(
                row[field].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            (at.unix_timestamp_nanos() / 1_000_000) as f64 / 1000.0
        };
        assert_eq!(
            value("gitops_last_check_timestamp_seconds"),
            millis("last_check")
        );
        assert_eq!(
            value("gitops_status_since_timestamp_seconds"),
            millis("status_since")
        );
        for state in ["SYNCED", "OUT_OF_SYNC", "ERROR", "STALE"] {
            let labels = [("repo", repo), ("server", server), ("state", state)];
            let expected = if row["state"] == state { 1.0 } else { 0.0 };
            assert_eq!(
                samples.get(&series("gitops_target_state", &labels)),
                Some(&expected),
                "{repo}/{server} {state}"
            );
        }
    }
    // The old target is STALE now, while the Pushgateway-era series still says what it last was.
    let stale = [("repo", "old"), ("server", "gone")];
    assert_eq!(samples[&series("gitops_sync_status", &stale)], 1.0);
    assert_eq!(
        samples[&series(
            "gitops_target_state",
            &[("repo", "old"), ("server", "gone"), ("state", "STALE")]
        )],
        1.0
    );
    // Names with quotes and backslashes come back exactly as stored.
    assert_eq!(
        samples[&series(
            "gitops_sync_status",
            &[
                ("repo", r#"quote"and\backslash"#),
                ("server", r"C:\servers\web")
            ]
        )],
        1.0
    );
}

async fn ingest_results_and_request_latency_are_counted(backend: Backend) {
    let app = TestApp::on(backend).await;
    let at = at_offset(-60);
    let body = snapshot("r", "s", "OUT_OF_SYNC", &["a"], &at);
    app.record(&body).await;
    app.record(&snapshot("r", "t", "SYNCED", &[], &at)).await;
    app.record(&body).await; // an identical retry
    let conflicting = snapshot("r", "s", "OUT_OF_SYNC", &["b"], &at);
    assert_eq!(
        app.post_json(&conflicting).await.status,
        StatusCode::CONFLICT
    );
    app.post_raw(Some("application/json"), "not json").await;
    app.post_raw(Some("text/plain"), "{}").await;
    app.post_json(&json!({ "repo": "r" })).await;
    for _ in 0..3 {
        app.get("/status.json").await;
    }
    app.get("/no/such/page").await;

    let samples = samples(&app.get("/metrics").await.text());
    let ingested = |result: &str| {
        samples[&series(
            "gitops_status_snapshots_ingested_total",
            &[("result", result)],
        )]
    };
    assert_eq!(ingested("stored"), 2.0);
    assert_eq!(ingested("replayed"), 1.0);
    assert_eq!(ingested("conflict"), 1.0);
    assert_eq!(ingested("invalid"), 3.0);
    assert_eq!(ingested("failed"), 0.0);

    let requests = |route: &str, method: &str, status: &str| {
        samples
            .get(&series(
                "gitops_status_http_request_duration_seconds_count",
                &[("route", route), ("method", method), ("status", status)],
            ))
            .copied()
    };
    assert_eq!(requests("/status.json", "GET", "200"), Some(3.0));
    assert_eq!(requests("/api/status", "POST", "200"), Some(3.0));
    assert_eq!(requests("/api/status", "POST", "409"), Some(1.0));
    assert_eq!(requests("/api/status", "POST", "422"), Some(1.0));
    let unmatched = samples.keys().any(|(name, labels)| {
        name.starts_with("gitops_status_http_request_duration_seconds")
            && labels
                .get("route")
                .is_some_and(|route| route.contains("no/such"))
    });
    assert!(!unmatched, "unknown paths must not become routes");
    let inf_bucket = series(
        "gitops_status_http_request_duration_seconds_bucket",
        &[
            ("route", "/status.json"),
            ("method", "GET"),
            ("status", "200"),
            ("le", "+Inf"),
        ],
    );
    assert_eq!(samples.get(&inf_bucket), Some(&3.0));
}

async fn apps_in_one_process_keep_their_own_counters(backend: Backend) {
    let first = TestApp::on(backend).await;
    let second = TestApp::on(backend).await;
    first
        .record(&snapshot("r", "s", "SYNCED", &[], &at_offset(-5)))
        .await;
    let stored = series(
        "gitops_status_snapshots_ingested_total",
        &[("result", "stored")],
    );
    assert_eq!(samples(&first.get("/metrics").await.text())[&stored], 1.0);
    assert_eq!(samples(&second.get("/metrics").await.text())[&stored], 0.0);
}

async fn metrics_with_no_targets_still_describe_every_family(backend: Backend) {
    let app = TestApp::on(backend).await;
    let text = app.get("/metrics").await.text();
    assert!(text.contains("# TYPE gitops_sync_status gauge"), "{text}");
    assert!(
        text.contains("# TYPE gitops_status_snapshots_ingested_total counter"),
        "{text}"
    );
    promtool_check(&text);
}

async fn build_info_names_the_running_version(backend: Backend) {
    let app = TestApp::on(backend).await;
    let text = app.get("/metrics").await.text();
    assert!(
        text.contains("# TYPE gitops_status_build_info gauge\n"),
        "{text}"
    );
    let build_info: Vec<_> = samples(&text)
        .into_iter()
        .filter(|((name, _), _)| name == "gitops_status_build_info")
        .collect();
    let labels = [
        ("version", env!("CARGO_PKG_VERSION")),
        ("os", std::env::consts::OS),
        ("arch", std::env::consts::ARCH),
    ];
    assert_eq!(
        build_info,
        [(series("gitops_status_build_info", &labels), 1.0)]
    );
}
