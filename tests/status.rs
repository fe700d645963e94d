//! `/status.json` and the write rules behind it: latest per target, staleness, `status_since`,
//! idempotent retries, conflicts and late retries.

mod common;

use axum::http::StatusCode;
use common::*;
use gitops_status_server::Settings;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

backend_tests! {
    status_json_lists_the_seed_snapshot_in_full,
    status_json_is_sorted_by_repo_then_server_and_filters,
    status_json_rejects_bad_parameters_by_name,
    a_target_goes_stale_after_the_default_and_after_its_own_override,
    status_since_marks_the_start_of_the_current_run,
    a_late_retry_never_hides_a_newer_check,
    a_late_retry_inside_the_current_run_moves_status_since,
    an_identical_retry_returns_the_original_and_stores_nothing,
    different_content_at_the_same_last_check_is_a_conflict,
    snapshots_without_last_check_never_conflict_with_each_other,
    concurrent_posts_are_all_stored_once;
    multi_thread:
        mixed_concurrent_writes_keep_latest_status_since_and_transitions_consistent,
}

fn row<'a>(rows: &'a [Value], repo: &str, server: &str) -> &'a Value {
    rows.iter()
        .find(|row| row["repo"] == repo && row["server"] == server)
        .unwrap_or_else(|| panic!("no row for {repo}/{server} in {rows:?}"))
}

async fn status_json_lists_the_seed_snapshot_in_full(backend: Backend) {
    let app = TestApp::on(backend).await;
    let last_check = at_offset(-60);
    let stored = app
        .record(&json!({
            "repo": "rsyslog",
            "server": "rsyslog-lab",
            "sync_status": "OUT_OF_SYNC",
            "drift_count": 2,
            "files": [{ "name": "rsyslog.d/30-lab.conf" }, { "name": "rsyslog.conf" }],
            "last_check": last_check,
            "revision": "3f2c1ab",
            "run_url": "https://ci.example.org/repos/7/pipeline/912",
        }))
        .await;
    assert_eq!(
        stored["received_at_ms"],
        unix_millis(stored["received_at"].as_str().unwrap())
    );

    let rows = app.get_rows("/status.json").await;
    assert_eq!(
        rows,
        [json!({
            "repo": "rsyslog",
            "server": "rsyslog-lab",
            "state": "OUT_OF_SYNC",
            "sync_status": "OUT_OF_SYNC",
            "stale": false,
            "in_sync": 0,
            "drift_count": 2,
            "stale_seconds": 0,
            "files": [{ "name": "rsyslog.conf" }, { "name": "rsyslog.d/30-lab.conf" }],
            "files_text": "rsyslog.conf, rsyslog.d/30-lab.conf",
            "last_check": rendered(&last_check),
            "last_check_ms": unix_millis(&last_check),
            "received_at": stored["received_at"],
            "received_at_ms": stored["received_at_ms"],
            "status_since": rendered(&last_check),
            "status_since_ms": unix_millis(&last_check),
            "stale_since": null,
            "stale_since_ms": null,
            "snapshot_id": stored["id"],
            "stale_after_seconds": 600,
            "revision": "3f2c1ab",
            "run_url": "https://ci.example.org/repos/7/pipeline/912",
            "message": null,
            "acknowledged": null,
        })]
    );
    let response = app.get("/status.json").await;
    assert_eq!(response.content_type(), "application/json");
}

async fn status_json_is_sorted_by_repo_then_server_and_filters(backend: Backend) {
    let app = TestApp::on(backend).await;
    let now = at_offset(-10);
    for (repo, server, status) in [
        ("zeta", "a", "SYNCED"),
        ("alpha", "web-2", "ERROR"),
        ("alpha", "web-1", "OUT_OF_SYNC"),
        ("mid", "db", "SYNCED"),
    ] {
        let files: &[&str] = if status == "OUT_OF_SYNC" {
            &["x.conf"]
        } else {
            &[]
        };
        app.record(&snapshot(repo, server, status, files, &now))
            .await;
    }
    // An old check of another target, stale under the default 10 minutes.
    app.record(&snapshot("mid", "old", "SYNCED", &[], &at_offset(-3600)))
        .await;

    let keys = |rows: Vec<Value>| -> Vec<String> {
        rows.iter()
            .map(|row| {
                format!(
                    "{}/{}",
                    row["repo"].as_str().unwrap(),
                    row["server"].as_str().unwrap()
                )
            })
            .collect()
    };
    let expectations: [(&str, &[&str]); 11] = [
        (
            "",
            &["alpha/web-1", "alpha/web-2", "mid/db", "mid/old", "zeta/a"],
        ),
        ("?repo=alpha", &["alpha/web-1", "alpha/web-2"]),
        ("?server=db", &["mid/db"]),
        ("?repo=mid&server=db", &["mid/db"]),
        ("?state=SYNCED", &["mid/db", "zeta/a"]),
        ("?state=STALE", &["mid/old"]),
        ("?state=OUT_OF_SYNC,ERROR", &["alpha/web-1", "alpha/web-2"]),
        ("?repo=nope", &[]),
        // sync_status selects by the last result, stale or not; state=STALE keeps its meaning.
        ("?sync_status=SYNCED", &["mid/db", "mid/old", "zeta/a"]),
        ("?sync_status=SYNCED&state=STALE", &["mid/old"]),
        (
            "?sync_status=ERROR,OUT_OF_SYNC&repo=alpha",
            &["alpha/web-1", "alpha/web-2"],
        ),
    ];
    for (query, expected) in expectations {
        let uri = format!("/status.json{query}");
        assert_eq!(keys(app.get_rows(&uri).await), expected, "{uri}");
    }
}

async fn status_json_rejects_bad_parameters_by_name(backend: Backend) {
    let app = TestApp::on(backend).await;
    app.get("/status.json?state=GREEN")
        .await
        .assert_problem(400, &["state"]);
    app.get("/status.json?sever=x")
        .await
        .assert_problem(400, &["sever"]);
    app.get("/status.json?repo=a&repo=b")
        .await
        .assert_problem(400, &["repo"]);
    app.get("/status.json?repo=")
        .await
        .assert_problem(400, &["repo"]);
    app.get("/status.json?state=stale&server=%09")
        .await
        .assert_problem(400, &["server", "state"]);
    app.get("/status.json?sync_status=STALE&state=GREEN")
        .await
        .assert_problem(400, &["state", "sync_status"]);
    app.get("/status.json?sync_status=ERROR&sync_status=SYNCED")
        .await
        .assert_problem(400, &["sync_status"]);
}

async fn a_target_goes_stale_after_the_default_and_after_its_own_override(backend: Backend) {
    let app = TestApp::on_with_settings(
        backend,
        Settings {
            stale_after: std::time::Duration::from_secs(30),
            ..Settings::default()
        },
    )
    .await;
    app.record(&snapshot("r", "fresh", "SYNCED", &[], &at_offset(-5)))
        .await;
    app.record(&snapshot("r", "late", "SYNCED", &[], &at_offset(-45)))
        .await;
    let short_check = at_offset(-3);
    let mut short = snapshot("r", "short", "OUT_OF_SYNC", &["a"], &short_check);
    short["stale_after_seconds"] = json!(1);
    app.record(&short).await;
    let mut long = snapshot("r", "long", "ERROR", &[], &at_offset(-45));
    long["stale_after_seconds"] = json!(3600);
    app.record(&long).await;

    let rows = app.get_rows("/status.json").await;
    let state = |server: &str| {
        let row = row(&rows, "r", server);
        (
            row["state"].as_str().unwrap().to_owned(),
            row["stale"].as_bool().unwrap(),
            row["stale_after_seconds"].as_i64().unwrap(),
        )
    };
    assert_eq!(state("fresh"), ("SYNCED".to_owned(), false, 30));
    assert_eq!(state("late"), ("STALE".to_owned(), true, 30));
    assert_eq!(state("short"), ("STALE".to_owned(), true, 1));
    assert_eq!(state("long"), ("ERROR".to_owned(), false, 3600));
    // The alert rule's numbers: in_sync only for a fresh SYNCED check; stale_seconds counts from
    // stale_since (late went stale 15 s ago, give or take the test's own time), 0 while fresh.
    let numbers = |server: &str| {
        let row = row(&rows, "r", server);
        (
            row["in_sync"].as_i64().unwrap(),
            row["stale_seconds"].as_i64().unwrap(),
        )
    };
    assert_eq!(numbers("fresh"), (1, 0));
    assert_eq!(numbers("long"), (0, 0));
    let (in_sync, stale_seconds) = numbers("late");
    assert_eq!(in_sync, 0, "a stale SYNCED check is not in sync");
    assert!((14..60).contains(&stale_seconds), "{stale_seconds}");
    // The underlying result stays visible next to STALE, and when it went stale beside it:
    // last_check plus the target's stale-after. status_since keeps the result's run.
    let short = row(&rows, "r", "short");
    assert_eq!(short["sync_status"], "OUT_OF_SYNC");
    assert_eq!(short["status_since"], rendered(&short_check));
    let went_stale =
        time::OffsetDateTime::parse(&short_check, &Rfc3339).unwrap() + time::Duration::seconds(1);
    assert_eq!(
        short["stale_since"],
        rendered(&went_stale.format(&Rfc3339).unwrap())
    );
    assert_eq!(row(&rows, "r", "fresh")["stale_since"], Value::Null);
    assert_eq!(row(&rows, "r", "long")["stale_since"], Value::Null);
}

async fn status_since_marks_the_start_of_the_current_run(backend: Backend) {
    let app = TestApp::on(backend).await;
    // Times are taken once: recomputing one later could cross a second boundary.
    let times: Vec<String> = (0..=12)
        .map(|minutes| at_offset(-60 * (60 - minutes)))
        .collect();
    let t = |minutes: usize| times[minutes].clone();
    let since = |app_rows: Vec<Value>| app_rows[0]["status_since"].as_str().unwrap().to_owned();

    app.record(&snapshot("r", "s", "SYNCED", &[], &t(0))).await;
    app.record(&snapshot("r", "s", "SYNCED", &[], &t(2))).await;
    assert_eq!(since(app.get_rows("/status.json").await), rendered(&t(0)));

    app.record(&snapshot("r", "s", "OUT_OF_SYNC", &["a"], &t(4)))
        .await;
    // A different file set is still the same drift run.
    app.record(&snapshot("r", "s", "OUT_OF_SYNC", &["a", "b"], &t(6)))
        .await;
    assert_eq!(since(app.get_rows("/status.json").await), rendered(&t(4)));

    app.record(&snapshot("r", "s", "ERROR", &[], &t(8))).await;
    assert_eq!(since(app.get_rows("/status.json").await), rendered(&t(8)));

    app.record(&snapshot("r", "s", "SYNCED", &[], &t(10))).await;
    app.record(&snapshot("r", "s", "SYNCED", &[], &t(12))).await;
    let rows = app.get_rows("/status.json").await;
    assert_eq!(since(rows.clone()), rendered(&t(10)));
    assert_eq!(rows[0]["last_check"], rendered(&t(12)));
}

async fn a_late_retry_never_hides_a_newer_check(backend: Backend) {
    let app = TestApp::on(backend).await;
    // Times are taken once: recomputing them later could cross a second boundary.
    let (newer_at, older_at) = (at_offset(-60), at_offset(-180));
    let newer = app
        .record(&snapshot("r", "s", "SYNCED", &[], &newer_at))
        .await;
    // The retry of an older check arrives after the newer one.
    let older = app
        .record(&snapshot("r", "s", "OUT_OF_SYNC", &["a.conf"], &older_at))
        .await;
    assert!(older["id"].as_i64() > newer["id"].as_i64());

    let rows = app.get_rows("/status.json").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["snapshot_id"], newer["id"]);
    assert_eq!(rows[0]["state"], "SYNCED");
    assert_eq!(rows[0]["status_since"], rendered(&newer_at));

    // Both stay in the history, ordered by last_check rather than arrival.
    let history = app.get_rows("/history").await;
    let ids: Vec<&Value> = history.iter().map(|row| &row["id"]).collect();
    assert_eq!(ids, [&newer["id"], &older["id"]]);
}

async fn a_late_retry_inside_the_current_run_moves_status_since(backend: Backend) {
    let app = TestApp::on(backend).await;
    let at: std::collections::HashMap<i64, String> = [-600, -300, -200, -100]
        .into_iter()
        .map(|offset| (offset, at_offset(offset)))
        .collect();
    app.record(&snapshot("r", "s", "OUT_OF_SYNC", &["a"], &at[&-600]))
        .await;
    app.record(&snapshot("r", "s", "SYNCED", &[], &at[&-300]))
        .await;
    app.record(&snapshot("r", "s", "SYNCED", &[], &at[&-100]))
        .await;
    assert_eq!(
        app.get_rows("/status.json").await[0]["status_since"],
        rendered(&at[&-300])
    );

    // A check from between the two SYNCED ones, reporting drift, arrives late: the current SYNCED
    // run now only began with the check after it.
    app.record(&snapshot("r", "s", "OUT_OF_SYNC", &["a"], &at[&-200]))
        .await;
    assert_eq!(
        app.get_rows("/status.json").await[0]["status_since"],
        rendered(&at[&-100])
    );
    let transitions = app.get_rows("/history?changes_only=true&order=asc").await;
    let checks: Vec<&Value> = transitions.iter().map(|row| &row["last_check"]).collect();
    assert_eq!(
        checks,
        [
            &json!(rendered(&at[&-600])),
            &json!(rendered(&at[&-300])),
            &json!(rendered(&at[&-200])),
            &json!(rendered(&at[&-100])),
        ]
    );
}

async fn an_identical_retry_returns_the_original_and_stores_nothing(backend: Backend) {
    let app = TestApp::on(backend).await;
    let body = json!({
        "repo": "rsyslog", "server": "rsyslog-lab", "sync_status": "OUT_OF_SYNC",
        "files": [{ "name": "b" }, { "name": "a" }], "last_check": at_offset(-30),
        "revision": "3f2c1ab", "message": "two files",
    });
    let first = app.post_json(&body).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("idempotent-replayed"), None);

    // Same content, files in another order: still the same snapshot.
    let mut retry = body.clone();
    retry["files"] = json!([{ "name": "a" }, { "name": "b" }]);
    retry["drift_count"] = json!(2);
    let second = app.post_json(&retry).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(second.json(), first.json());
    assert_eq!(app.all_history().await.len(), 1);
}

async fn different_content_at_the_same_last_check_is_a_conflict(backend: Backend) {
    let app = TestApp::on(backend).await;
    let last_check = at_offset(-30);
    let original = app
        .record(&snapshot("r", "s", "OUT_OF_SYNC", &["a"], &last_check))
        .await;
    for changed in [
        snapshot("r", "s", "SYNCED", &[], &last_check),
        snapshot("r", "s", "OUT_OF_SYNC", &["b"], &last_check),
        {
            let mut body = snapshot("r", "s", "OUT_OF_SYNC", &["a"], &last_check);
            body["revision"] = json!("abc");
            body
        },
    ] {
        let problem = app.post_json(&changed).await.assert_problem(409, &[]);
        assert_eq!(problem["type"], "/problems/conflict");
    }
    assert_eq!(app.all_history().await, [original]);
    // The same last_check on another target is no conflict.
    app.record(&snapshot("r", "other", "SYNCED", &[], &last_check))
        .await;
}

async fn snapshots_without_last_check_never_conflict_with_each_other(backend: Backend) {
    let app = TestApp::on(backend).await;
    // Identical bodies too: without a last_check there is no retry key, so each is a new check.
    for status in ["SYNCED", "ERROR", "SYNCED", "ERROR", "ERROR", "ERROR"] {
        let stored = app
            .record(&json!({ "repo": "r", "server": "s", "sync_status": status }))
            .await;
        assert_eq!(stored["sync_status"], status);
    }
    let history = app.all_history().await;
    assert_eq!(history.len(), 6);
    let mut checks: Vec<&str> = history
        .iter()
        .map(|row| row["last_check"].as_str().unwrap())
        .collect();
    checks.dedup();
    assert_eq!(
        checks.len(),
        6,
        "every check kept its own instant: {checks:?}"
    );
}

async fn concurrent_posts_are_all_stored_once(backend: Backend) {
    let app = TestApp::on(backend).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let app_router = app.app.clone();
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt;
            let body = snapshot(
                &format!("repo-{}", i % 7),
                &format!("server-{}", i % 13),
                if i % 3 == 0 { "OUT_OF_SYNC" } else { "SYNCED" },
                if i % 3 == 0 { &["a.conf"] } else { &[] },
                &at_offset(-(i as i64)),
            );
            let request = axum::http::Request::post("/api/status")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap();
            app_router.oneshot(request).await.unwrap().status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(app.all_history().await.len(), 200);
    assert_eq!(app.get_rows("/status.json").await.len(), 7 * 13);
}

/// Recomputes, from the full history, what /status.json and changes_only must say.
fn expected_from_history(history: &[Value]) -> (Vec<(String, Value, String)>, Vec<i64>) {
    let mut by_target: std::collections::BTreeMap<(String, String), Vec<&Value>> =
        Default::default();
    for row in history {
        let key = (
            row["repo"].as_str().unwrap().to_owned(),
            row["server"].as_str().unwrap().to_owned(),
        );
        by_target.entry(key).or_default().push(row);
    }
    let mut latest = Vec::new();
    let mut transitions = Vec::new();
    for ((repo, server), mut rows) in by_target {
        rows.sort_by_key(|row| {
            (
                row["last_check"].as_str().unwrap().to_owned(),
                row["id"].as_i64().unwrap(),
            )
        });
        let mut since = rows[0]["last_check"].clone();
        for (index, row) in rows.iter().enumerate() {
            let changed = index == 0
                || row["sync_status"] != rows[index - 1]["sync_status"]
                || row["files"] != rows[index - 1]["files"];
            if changed {
                transitions.push(row["id"].as_i64().unwrap());
            }
            if index > 0 && row["sync_status"] != rows[index - 1]["sync_status"] {
                since = row["last_check"].clone();
            }
        }
        let last = rows.last().unwrap();
        latest.push((
            format!("{repo}/{server}"),
            last["id"].clone(),
            since.as_str().unwrap().to_owned(),
        ));
    }
    transitions.sort_unstable();
    (latest, transitions)
}

async fn mixed_concurrent_writes_keep_latest_status_since_and_transitions_consistent(
    backend: Backend,
) {
    let app = TestApp::on(backend).await;
    // Fast-path checks, late checks, identical retries and conflicts for the same few targets, all
    // at once, so that single batches mix every path of the writer.
    let mut bodies = Vec::new();
    for i in 0..400_i64 {
        let server = format!("s{}", i % 4);
        let (status, files): (&str, &[&str]) = match i % 5 {
            0 => ("OUT_OF_SYNC", &["a.conf"]),
            1 => ("OUT_OF_SYNC", &["a.conf", "b.conf"]),
            2 => ("ERROR", &[]),
            _ => ("SYNCED", &[]),
        };
        // Mostly increasing times; every seventh check arrives late, between two earlier checks
        // of its target (i - 8 and i - 4 share its server).
        let offset = if i % 7 == 0 { -1000 + i - 6 } else { -1000 + i };
        bodies.push(snapshot("mix", &server, status, files, &at_offset(offset)));
        if i % 9 == 0 {
            bodies.push(bodies[bodies.len() - 1].clone());
        }
    }
    let mut tasks = Vec::new();
    for body in bodies {
        let router = app.app.clone();
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt;
            let request = axum::http::Request::post("/api/status")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap();
            router.oneshot(request).await.unwrap().status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }

    let history = app.all_history().await;
    assert_eq!(history.len(), 400, "retries stored nothing new");
    let (expected_latest, expected_transitions) = expected_from_history(&history);
    let latest: Vec<(String, Value, String)> = app
        .get_rows("/status.json")
        .await
        .iter()
        .map(|row| {
            (
                format!(
                    "{}/{}",
                    row["repo"].as_str().unwrap(),
                    row["server"].as_str().unwrap()
                ),
                row["snapshot_id"].clone(),
                row["status_since"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(latest, expected_latest);
    let mut transitions: Vec<i64> = app
        .get_rows("/history?changes_only=true&limit=10000")
        .await
        .iter()
        .map(|row| row["id"].as_i64().unwrap())
        .collect();
    transitions.sort_unstable();
    assert_eq!(transitions, expected_transitions);
}
