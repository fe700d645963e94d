//! The audit trail: the integrity chain catches edits made behind the server's back, `/api/stats`
//! answers with hand-computed numbers, and retention prunes without changing any answer about the
//! retained window or breaking verification.

mod common;

use std::process::Command;

use axum::http::StatusCode;
use common::{Backend, PostgresDatabase, TestApp, snapshot};
use gitops_status_server::Settings;
use gitops_status_server::timestamp::Timestamp;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, SqliteConnection};

backend_tests! {
    an_untouched_trail_verifies_and_every_snapshot_carries_its_hash,
    verify_names_the_first_snapshot_an_edit_broke,
    verify_cli_exits_2_without_a_readable_database,
    stats_match_hand_computed_numbers,
    stats_count_time_beyond_a_snapshots_own_stale_after_as_stale,
    stats_reject_bad_parameters_by_name,
    stats_seconds_are_whole_milliseconds_without_float_noise,
    pruning_keeps_every_answer_about_the_retained_window_and_verifies,
    pruning_large_histories_releases_pages_and_verifies,
    the_independent_script_agrees_with_the_server_on_exports,
    csv_cells_a_spreadsheet_would_run_are_guarded_and_still_recheck,
    the_independent_script_calls_a_changes_only_export_filtered_not_edited,
    verify_is_exempt_from_the_request_timeout,
}

/// 2026-01-01T00:00:00Z: stats windows start here, well in the past.
const T0: i64 = 1_767_225_600_000;

fn at(seconds: i64) -> String {
    Timestamp::from_millis(T0 + seconds * 1000).to_string()
}

fn check(repo: &str, server: &str, seconds: i64, status: &str, files: &[&str]) -> Value {
    snapshot(repo, server, status, files, &at(seconds))
}

/// Target "a" gets ids 1, 3, 5, 7 and target "b" ids 2, 4, 6, with a late check, a file-set
/// change and a message among them.
async fn chained_app(backend: Backend) -> TestApp {
    let app = TestApp::on(backend).await;
    let bodies = [
        check("r", "a", 0, "SYNCED", &[]),
        check("r", "b", 0, "SYNCED", &[]),
        check("r", "a", 120, "OUT_OF_SYNC", &["x.conf", "y.conf"]),
        check("r", "b", 120, "ERROR", &[]),
        check("r", "a", 240, "OUT_OF_SYNC", &["x.conf"]),
        check("r", "b", 60, "SYNCED", &[]),
        check("r", "a", 360, "SYNCED", &[]),
    ];
    for (index, mut body) in bodies.into_iter().enumerate() {
        body["message"] = json!(format!("check {index}\nlínea «two» \u{1F600}"));
        app.record(&body).await;
    }
    app
}

async fn verification(app: &TestApp) -> Value {
    let response = app.get("/api/verify").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    response.json()
}

/// `gitops-status-server verify`: its exit code and the JSON it prints.
fn verify_cli(database_url: &str) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_gitops-status-server"))
        .args(["verify", "--database-url", database_url])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

async fn an_untouched_trail_verifies_and_every_snapshot_carries_its_hash(backend: Backend) {
    let app = chained_app(backend).await;
    assert_eq!(
        verification(&app).await,
        json!({"ok": true, "checked": 7, "first_bad": null})
    );
    let history = app.all_history().await;
    for row in &history {
        let hash = row["hash"].as_str().unwrap();
        assert_eq!(hash.len(), 64, "{row}");
        assert!(
            hash.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
    let csv = app.get("/history?format=csv&order=asc").await.text();
    for row in &history {
        assert!(csv.contains(row["hash"].as_str().unwrap()), "{csv}");
    }

    let (code, stdout, stderr) = verify_cli(&app.database_url);
    assert_eq!(code, Some(0), "{stderr}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed, verification(&app).await);
}

/// Each way of editing the file behind the server's back, and the snapshot verify must name.
async fn verify_names_the_first_snapshot_an_edit_broke(backend: Backend) {
    const SWAP: &str = "update snapshots set (last_check, received_delay, sync_status, \
         drift_count, fileset_id, change, stale_after, revision, run_url, message, hash) = \
         (select last_check, received_delay, sync_status, drift_count, fileset_id, change, \
         stale_after, revision, run_url, message, hash from swap where swap.id = 8 - snapshots.id) \
         where id = ";
    let swap_5_into_3 = format!("{SWAP}3");
    let swap_3_into_5 = format!("{SWAP}5");
    let cases: [(&str, Vec<&str>, i64, &str); 12] = [
        (
            "status",
            vec!["update snapshots set sync_status = 0 where id = 3"],
            3,
            "a",
        ),
        (
            "drift_count",
            vec!["update snapshots set drift_count = 9 where id = 3"],
            3,
            "a",
        ),
        (
            "last_check",
            vec!["update snapshots set last_check = last_check + 1 where id = 5"],
            5,
            "a",
        ),
        (
            "received_at",
            vec!["update snapshots set received_delay = received_delay + 1000 where id = 4"],
            4,
            "b",
        ),
        (
            "message",
            vec!["update snapshots set message = 'all good' where id = 6"],
            6,
            "b",
        ),
        (
            "revision",
            vec!["update snapshots set revision = 'abc' where id = 1"],
            1,
            "a",
        ),
        (
            "stale_after",
            vec!["update snapshots set stale_after = 999999 where id = 2"],
            2,
            "b",
        ),
        (
            "file set",
            vec!["update filesets set files = '[\"x.conf\"]' where id = 1"],
            3,
            "a",
        ),
        // Named under the target it now claims to belong to.
        (
            "moved to another target",
            vec!["update snapshots set target_id = 2 where id = 7"],
            7,
            "b",
        ),
        (
            "deleted middle row",
            vec!["delete from snapshots where id = 3"],
            5,
            "a",
        ),
        (
            "swapped rows",
            vec![
                "create temp table swap as select * from snapshots where id in (3, 5)",
                // Out of the way first: (target, last_check) is unique.
                "update snapshots set last_check = -1 where id = 3",
                &swap_3_into_5,
                &swap_5_into_3,
            ],
            3,
            "a",
        ),
        (
            "deleted newest row",
            vec!["delete from snapshots where id = 7"],
            7,
            "a",
        ),
    ];
    for (what, statements, bad_id, bad_server) in cases {
        let app = chained_app(backend).await;
        app.execute_all(&statements).await;
        let outcome = verification(&app).await;
        assert_eq!(outcome["ok"], false, "{what}: {outcome}");
        assert_eq!(outcome["first_bad"]["id"], bad_id, "{what}: {outcome}");
        assert_eq!(
            outcome["first_bad"]["server"], bad_server,
            "{what}: {outcome}"
        );
        assert!(
            !outcome["first_bad"]["reason"].as_str().unwrap().is_empty(),
            "{what}"
        );

        let (code, stdout, stderr) = verify_cli(&app.database_url);
        assert_eq!(code, Some(1), "{what}: {stderr}");
        let printed: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(printed, outcome, "{what}");
    }
}

async fn verify_cli_exits_2_without_a_readable_database(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let missing = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("missing.db").display()),
        // A database that existed a moment ago and is gone.
        Backend::Postgres => PostgresDatabase::create().await.url.clone(),
    };
    let (code, stdout, stderr) = verify_cli(&missing);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("--database-url"), "{stderr}");
    match backend {
        Backend::Sqlite => assert!(
            !dir.path().join("missing.db").exists(),
            "verify created a file"
        ),
        Backend::Postgres => assert!(
            PgConnection::connect(&missing).await.is_err(),
            "verify created the database"
        ),
    }
}

/// A clean target, one with two drift episodes, an ERROR and a stale gap, and one whose episode
/// began before the window and is still open at its end; numbers computed by hand.
async fn stats_app(backend: Backend) -> TestApp {
    let mut checks: Vec<(i64, Value)> = Vec::new();
    // Heartbeats before the window give retention something to remove.
    for seconds in (-3600..0).step_by(120) {
        checks.push((seconds, check("r", "clean", seconds, "SYNCED", &[])));
    }
    // From 60 s on: the first minute of the window is held by the last check before it.
    for seconds in (60..3600).step_by(120) {
        checks.push((seconds, check("r", "clean", seconds, "SYNCED", &[])));
    }

    for seconds in (-1500..0).step_by(300) {
        checks.push((seconds, check("r", "drifty", seconds, "SYNCED", &[])));
    }
    for (seconds, status, files) in [
        (0, "SYNCED", &[][..]),
        (600, "OUT_OF_SYNC", &["a.conf", "b.conf"][..]),
        (720, "OUT_OF_SYNC", &["a.conf"][..]),
        (900, "SYNCED", &[][..]),
        (1200, "SYNCED", &[][..]),
        (2400, "OUT_OF_SYNC", &["a.conf"][..]),
        (2520, "OUT_OF_SYNC", &["a.conf", "c.conf"][..]),
        (3000, "SYNCED", &[][..]),
        (3120, "ERROR", &[][..]),
        (3300, "SYNCED", &[][..]),
    ] {
        checks.push((seconds, check("r", "drifty", seconds, status, files)));
    }

    for (seconds, status, files) in [
        (-1800, "SYNCED", &[][..]),
        (-900, "OUT_OF_SYNC", &["x.conf"][..]),
        (-750, "OUT_OF_SYNC", &["x.conf"][..]),
        (-600, "OUT_OF_SYNC", &["x.conf", "y.conf"][..]),
        (-420, "OUT_OF_SYNC", &["x.conf", "y.conf"][..]),
        (-120, "OUT_OF_SYNC", &["y.conf"][..]),
    ] {
        checks.push((seconds, check("r", "open", seconds, status, files)));
    }
    for seconds in (0..3600).step_by(300) {
        checks.push((
            seconds,
            check("r", "open", seconds, "OUT_OF_SYNC", &["y.conf"]),
        ));
    }

    // As CI delivers them: in the order the checks ran.
    checks.sort_by_key(|(seconds, _)| *seconds);
    let app = TestApp::on(backend).await;
    for (_, body) in &checks {
        app.record(body).await;
    }
    app
}

fn expected_stats() -> Value {
    let (from, to) = (at(0), at(3600));
    let (from_ms, to_ms) = (T0, T0 + 3_600_000);
    json!([
        {
            "repo": "r", "server": "clean", "targets": 1, "from": from, "from_ms": from_ms,
            "to": to, "to_ms": to_ms,
            "checks": 30,
            "seconds": {"SYNCED": 3600.0, "OUT_OF_SYNC": 0.0, "ERROR": 0.0, "STALE": 0.0},
            "percent": {"SYNCED": 100.0, "OUT_OF_SYNC": 0.0, "ERROR": 0.0, "STALE": 0.0},
            "acknowledged_seconds": 0.0, "silenced_seconds": 0.0,
            "drift_episodes": 0, "mean_time_to_resync_seconds": null,
            "longest_drift_seconds": null, "top_files": []
        },
        {
            "repo": "r", "server": "drifty", "targets": 1, "from": from, "from_ms": from_ms,
            "to": to, "to_ms": to_ms,
            "checks": 10,
            // SYNCED 0-600, 900-1200, 1200-1800 (then stale until 2400), 3000-3120, 3300-3600.
            "seconds": {"SYNCED": 1920.0, "OUT_OF_SYNC": 900.0, "ERROR": 180.0, "STALE": 600.0},
            // Of 3600 s: 1920 is 53.333 %, 600 is 16.667 %.
            "percent": {"SYNCED": 53.333, "OUT_OF_SYNC": 25.0, "ERROR": 5.0, "STALE": 16.667},
            "acknowledged_seconds": 0.0, "silenced_seconds": 0.0,
            // 600 -> 900 and 2400 -> 3000.
            "drift_episodes": 2, "mean_time_to_resync_seconds": 450.0,
            "longest_drift_seconds": 600.0,
            "top_files": [
                {"name": "a.conf", "episodes": 2},
                {"name": "b.conf", "episodes": 1},
                {"name": "c.conf", "episodes": 1}
            ]
        },
        {
            "repo": "r", "server": "open", "targets": 1, "from": from, "from_ms": from_ms,
            "to": to, "to_ms": to_ms,
            "checks": 12,
            "seconds": {"SYNCED": 0.0, "OUT_OF_SYNC": 3600.0, "ERROR": 0.0, "STALE": 0.0},
            "percent": {"SYNCED": 0.0, "OUT_OF_SYNC": 100.0, "ERROR": 0.0, "STALE": 0.0},
            "acknowledged_seconds": 0.0, "silenced_seconds": 0.0,
            // Began at -900, unresolved at `to`: 4500 s, and no resolved episode for the mean.
            "drift_episodes": 1, "mean_time_to_resync_seconds": null,
            "longest_drift_seconds": 4500.0,
            "top_files": [
                {"name": "x.conf", "episodes": 1},
                {"name": "y.conf", "episodes": 1}
            ]
        }
    ])
}

fn stats_uri() -> String {
    format!("/api/stats?from={}&to={}", T0, at(3600))
}

async fn stats_match_hand_computed_numbers(backend: Backend) {
    let app = stats_app(backend).await;
    let stats = app.get(&stats_uri()).await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.text());
    assert_eq!(stats.json(), expected_stats());

    let one = app
        .get_rows(&format!("{}&server=drifty", stats_uri()))
        .await;
    assert_eq!(one, [expected_stats()[1].clone()]);

    // A window before a target's first snapshot leaves it out; before everyone's, the list is empty.
    let early = app
        .get_rows(&format!("/api/stats?from={}&to={}", at(-7200), at(-3600)))
        .await;
    assert_eq!(early, Vec::<Value>::new());
}

async fn stats_count_time_beyond_a_snapshots_own_stale_after_as_stale(backend: Backend) {
    let app = TestApp::on_with_settings(backend, Settings::default()).await;
    let mut body = check("r", "s", 0, "SYNCED", &[]);
    body["stale_after_seconds"] = json!(60);
    app.record(&body).await;
    app.record(&check("r", "s", 300, "ERROR", &[])).await;
    let rows = app
        .get_rows(&format!("/api/stats?from={}&to={}", at(0), at(1200)))
        .await;
    // SYNCED for its own 60 s, STALE until the ERROR at 300, ERROR for the default 600 s, then
    // STALE until `to`.
    assert_eq!(
        rows[0]["seconds"],
        json!({"SYNCED": 60.0, "OUT_OF_SYNC": 0.0, "ERROR": 600.0, "STALE": 540.0})
    );
}

/// Issue 14: sums of f64 seconds printed `56.403000000000006`; these durations printed
/// `0.6000000000000001`, `0.30000000000000004` and `0.15000000000000002`.
async fn stats_seconds_are_whole_milliseconds_without_float_noise(backend: Backend) {
    let app = TestApp::on(backend).await;
    let at_millis = |millis: i64| Timestamp::from_millis(T0 + millis).to_string();
    for (millis, status, files) in [
        (0, "SYNCED", &[][..]),
        (100, "SYNCED", &[][..]),
        (300, "SYNCED", &[][..]),
        (600, "OUT_OF_SYNC", &["a.conf"][..]),
        (700, "SYNCED", &[][..]),
        (800, "OUT_OF_SYNC", &["a.conf"][..]),
        (1000, "SYNCED", &[][..]),
    ] {
        app.record(&snapshot("r", "s", status, files, &at_millis(millis)))
            .await;
    }
    let response = app
        .get(&format!(
            "/api/stats?from={}&to={}",
            at_millis(0),
            at_millis(1100)
        ))
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let text = response.text();
    assert!(
        text.contains(r#""seconds":{"SYNCED":0.8,"OUT_OF_SYNC":0.3,"ERROR":0.0,"STALE":0.0}"#),
        "{text}"
    );
    assert_eq!(
        response.json(),
        json!([{
            "repo": "r", "server": "s", "targets": 1, "from": at_millis(0), "from_ms": T0,
            "to": at_millis(1100), "to_ms": T0 + 1100, "checks": 7,
            "seconds": {"SYNCED": 0.8, "OUT_OF_SYNC": 0.3, "ERROR": 0.0, "STALE": 0.0},
            // 8/11 and 3/11, rounded half up to thousandths.
            "percent": {"SYNCED": 72.727, "OUT_OF_SYNC": 27.273, "ERROR": 0.0, "STALE": 0.0},
            "acknowledged_seconds": 0.0, "silenced_seconds": 0.0,
            "drift_episodes": 2, "mean_time_to_resync_seconds": 0.15,
            "longest_drift_seconds": 0.2,
            "top_files": [{"name": "a.conf", "episodes": 2}]
        }])
    );
}

async fn stats_reject_bad_parameters_by_name(backend: Backend) {
    let app = TestApp::on(backend).await;
    for (query, field) in [
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2000&to=1000", "to"),
        ("limit=5", "limit"),
        ("group_by=fleet", "group_by"),
        ("group_by=", "group_by"),
        ("format=ndjson", "format"),
    ] {
        let response = app.get(&format!("/api/stats?{query}")).await;
        response.assert_problem(400, &[field]);
    }
}

async fn answers(app: &TestApp) -> (Vec<Value>, Vec<Value>, Vec<Value>, Value) {
    let mut status = app.get_rows("/status.json").await;
    for row in &mut status {
        // Ages move with the clock, not with pruning.
        row.as_object_mut().unwrap().remove("stale");
        row.as_object_mut().unwrap().remove("state");
    }
    let transitions = app
        .get_rows("/history?changes_only=true&order=asc&limit=10000")
        .await;
    let retained = app
        .get_rows(&format!("/history?from={T0}&order=asc&limit=10000"))
        .await;
    let stats = app.get(&stats_uri()).await.json();
    (status, transitions, retained, stats)
}

async fn pruning_keeps_every_answer_about_the_retained_window_and_verifies(backend: Backend) {
    let app = stats_app(backend).await;
    let before = answers(&app).await;
    assert_eq!(before.3, expected_stats());
    let stored = app.query_i64("select count(*) from snapshots").await;

    let report = app.store.prune(Timestamp::from_millis(T0)).await.unwrap();
    // clean: 30 heartbeats before T0, its first (a transition) and last kept. drifty: 5 before
    // T0, first and last kept. open: all six before T0 are transitions or the last one but -750
    // and -420.
    assert_eq!(report.removed, 28 + 3 + 2, "{report:?}");
    assert_eq!(
        app.query_i64("select count(*) from snapshots").await,
        stored - report.removed
    );
    assert_eq!(answers(&app).await, before);
    assert_eq!(
        verification(&app).await,
        json!({"ok": true, "checked": stored - report.removed, "first_bad": null})
    );

    // A second run with a later cutoff widens the same gaps, and a late check into the pruned
    // past links on to the chain head as any other.
    let half = format!("/api/stats?from={}&to={}", at(1800), at(3600));
    let half_before = app.get(&half).await.json();
    let report = app
        .store
        .prune(Timestamp::from_millis(T0 + 1_800_000))
        .await
        .unwrap();
    assert!(report.removed > 0, "{report:?}");
    app.record(&check("r", "clean", -1000, "SYNCED", &[])).await;
    let outcome = verification(&app).await;
    assert_eq!(outcome["ok"], true, "{outcome}");
    assert_eq!(app.get(&half).await.json(), half_before);

    // Pruned history still catches an edit.
    app.execute_all(&["update snapshots set message = 'edited' where id = \
           (select max(id) from snapshots where last_check < 1767225600000)"])
        .await;
    assert_eq!(verification(&app).await["ok"], false);
}

/// Many pages of history, removed a page per transaction; on SQLite the file's pages are handed
/// back (PostgreSQL's autovacuum does that on its own schedule).
async fn pruning_large_histories_releases_pages_and_verifies(backend: Backend) {
    let app = TestApp::on(backend).await;
    let sqlite = backend == Backend::Sqlite;
    if sqlite {
        assert_eq!(app.query_i64("select * from pragma_auto_vacuum").await, 2);
    }
    let snapshots: Vec<_> = (0..12_000)
        .map(|i| {
            let body = check(
                "r",
                &format!("s{}", i % 3),
                i64::from(i) - 20_000,
                "SYNCED",
                &[],
            );
            gitops_status_server::model::SnapshotIn::decode(
                body.to_string().as_bytes(),
                Timestamp::now(),
            )
            .unwrap()
        })
        .collect();
    for outcome in app.store.import(snapshots).await.unwrap() {
        outcome.unwrap();
    }
    let pages_before = if sqlite {
        app.query_i64("select * from pragma_page_count").await
    } else {
        0
    };
    let report = app.store.prune(Timestamp::from_millis(T0)).await.unwrap();
    assert_eq!(report.removed, 12_000 - 3 * 2, "{report:?}");
    if sqlite {
        assert!(report.released_pages > 0, "{report:?}");
        assert!(app.query_i64("select * from pragma_page_count").await < pages_before);
        assert_eq!(
            app.query_i64("select * from pragma_freelist_count").await,
            0
        );
    }
    assert_eq!(
        verification(&app).await,
        json!({"ok": true, "checked": 6, "first_bad": null})
    );
}

/// Runs examples/verify_export.py, the auditor's independent re-check, on an export.
async fn recheck(app: &TestApp, format: &str, with_checkpoints: bool) -> (Option<i32>, Value) {
    let (code, stdout, stderr) =
        recheck_query(app, &format!("format={format}"), with_checkpoints).await;
    let outcome =
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}{stderr}"));
    (code, outcome)
}

/// Runs examples/verify_export.py on the export `/history?{query}` answers: its exit code,
/// stdout and stderr.
async fn recheck_query(
    app: &TestApp,
    query: &str,
    with_checkpoints: bool,
) -> (Option<i32>, String, String) {
    let export = app.get(&format!("/history?{query}")).await;
    assert_eq!(export.status, StatusCode::OK);
    let format = if query.contains("csv") {
        "csv"
    } else {
        "ndjson"
    };
    let export_path = app.dir.path().join(format!("export.{format}"));
    std::fs::write(&export_path, &export.body).unwrap();
    let checkpoints_path = app.dir.path().join("checkpoints.json");
    let checkpoints = if with_checkpoints {
        app.get("/api/checkpoints").await.body
    } else {
        "[]".into()
    };
    std::fs::write(&checkpoints_path, &checkpoints).unwrap();
    let output = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/verify_export.py"
        ))
        .arg(&export_path)
        .arg("--checkpoints")
        .arg(&checkpoints_path)
        .output()
        .expect("python3 runs examples/verify_export.py");
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// SPEC "Errors": CSV cells that begin with `=`, `+`, `-`, `@`, tab or CR get a leading `'`;
/// NDJSON stays exact, and the documented re-check undoes the guard before hashing.
async fn csv_cells_a_spreadsheet_would_run_are_guarded_and_still_recheck(backend: Backend) {
    let app = TestApp::on(backend).await;
    let mut first = check("=r", "@s", 0, "OUT_OF_SYNC", &["=cmd", "b.conf"]);
    first["message"] = json!("-1 is not a drift count");
    first["revision"] = json!("'=already quoted");
    first["run_url"] = json!("+https://ci.example.org/1");
    app.record(&first).await;
    let mut second = check("=r", "@s", 120, "ERROR", &[]);
    second["message"] = json!("\tindented\r\nsecond line");
    second["revision"] = json!("'plain");
    app.record(&second).await;

    let csv = app.get("/history?format=csv&order=asc").await;
    assert_eq!(csv.status, StatusCode::OK);
    let text = csv.text();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|record| record.unwrap().iter().map(str::to_owned).collect())
        .collect();
    // repo, server, files, revision, run_url, message.
    let guarded = |row: &Vec<String>| {
        [1, 2, 5, 8, 9, 10]
            .map(|column| row[column].clone())
            .to_vec()
    };
    assert_eq!(
        guarded(&rows[0]),
        [
            "'=r",
            "'@s",
            "'=cmd, b.conf",
            "''=already quoted",
            "'+https://ci.example.org/1",
            "'-1 is not a drift count"
        ]
    );
    assert_eq!(
        guarded(&rows[1]),
        ["'=r", "'@s", "", "'plain", "", "'\tindented\r\nsecond line"]
    );

    let ndjson = app.get("/history?format=ndjson&order=asc").await;
    let exact: Vec<Value> = ndjson
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(exact[0]["repo"], "=r");
    assert_eq!(
        exact[0]["files"],
        json!([{"name": "=cmd"}, {"name": "b.conf"}])
    );
    assert_eq!(exact[0]["revision"], "'=already quoted");
    assert_eq!(exact[1]["message"], "\tindented\r\nsecond line");

    for format in ["csv", "ndjson"] {
        let (code, outcome) = recheck(&app, format, false).await;
        assert_eq!(code, Some(0), "{format}: {outcome}");
        assert_eq!(outcome, verification(&app).await, "{format}");
    }
}

/// Issue 14: a `changes_only` export skips snapshots the chain runs through; the script says the
/// export is filtered instead of calling the data edited.
async fn the_independent_script_calls_a_changes_only_export_filtered_not_edited(backend: Backend) {
    let app = stats_app(backend).await;
    assert_eq!(verification(&app).await["ok"], true);
    for format in ["ndjson", "csv"] {
        let (code, stdout, stderr) =
            recheck_query(&app, &format!("format={format}&changes_only=true"), false).await;
        assert_eq!(code, Some(2), "{format}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{format}: {stdout}");
        assert!(
            stderr.contains("looks filtered") && stderr.contains("cannot be chain-checked"),
            "{format}: {stderr}"
        );
        assert!(!stderr.contains("edited"), "{format}: {stderr}");
    }
    // The whole export of the same data re-checks.
    let (code, outcome) = recheck(&app, "ndjson", false).await;
    assert_eq!(code, Some(0), "{outcome}");
}

fn without_reason(mut outcome: Value) -> Value {
    if let Some(bad) = outcome["first_bad"].as_object_mut() {
        bad.remove("reason");
    }
    outcome
}

async fn the_independent_script_agrees_with_the_server_on_exports(backend: Backend) {
    let app = chained_app(backend).await;
    for format in ["ndjson", "csv"] {
        let (code, outcome) = recheck(&app, format, true).await;
        assert_eq!(code, Some(0), "{format}: {outcome}");
        assert_eq!(outcome, verification(&app).await, "{format}");
    }

    // After retention, with the checkpoints it recorded.
    let pruned = stats_app(backend).await;
    pruned
        .store
        .prune(Timestamp::from_millis(T0))
        .await
        .unwrap();
    assert!(!pruned.get_rows("/api/checkpoints").await.is_empty());
    let (code, outcome) = recheck(&pruned, "ndjson", true).await;
    assert_eq!(code, Some(0), "{outcome}");
    assert_eq!(outcome, verification(&pruned).await);
    let (code, outcome) = recheck(&pruned, "ndjson", false).await;
    assert_eq!(code, Some(1), "the gaps need their checkpoints: {outcome}");

    // Both name the same snapshot once a row is edited.
    app.execute_all(&["update snapshots set message = 'fine' where id = 4"])
        .await;
    let server = without_reason(verification(&app).await);
    assert_eq!(server["first_bad"]["id"], 4);
    for format in ["ndjson", "csv"] {
        let (code, outcome) = recheck(&app, format, true).await;
        assert_eq!(code, Some(1), "{format}: {outcome}");
        assert_eq!(without_reason(outcome), server, "{format}");
    }
}

/// A database written before the integrity chain existed (migration 0001 only) is hashed once
/// at the next start, verifies, re-checks independently, and its chains go on from there.
#[tokio::test]
async fn history_from_before_the_chain_is_hashed_once_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    {
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        let mut connection = SqliteConnection::connect_with(&options.create_if_missing(true))
            .await
            .unwrap();
        let mut migrator = sqlx::migrate::Migrator::new(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/sqlite"
        )))
        .await
        .unwrap();
        migrator.migrations = migrator
            .migrations
            .iter()
            .filter(|migration| migration.version == 1)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        migrator.run(&mut connection).await.unwrap();
        for statement in [
            "insert into targets (id, repo, server) values (1, 'r', 'a'), (2, 'r', 'b')",
            "insert into filesets (id, digest, files) values (1, x'00', '[\"x.conf\"]')",
            "insert into snapshots (id, target_id, last_check, received_delay, sync_status, \
             drift_count, fileset_id, change, message) values \
             (1, 1, 1767225600000, 1000, 0, 0, null, 3, null), \
             (2, 2, 1767225600000, 1000, 2, 0, null, 3, 'unreachable'), \
             (3, 1, 1767225720000, 1000, 1, 1, 1, 3, null)",
        ] {
            sqlx::query(statement)
                .execute(&mut connection)
                .await
                .unwrap();
        }
        connection.close().await.unwrap();
    }

    let app = TestApp::in_dir(dir, Settings::default()).await;
    assert_eq!(
        verification(&app).await,
        json!({"ok": true, "checked": 3, "first_bad": null})
    );
    let (code, outcome) = recheck(&app, "ndjson", false).await;
    assert_eq!(code, Some(0), "{outcome}");
    app.record(&check("r", "a", 240, "SYNCED", &[])).await;
    assert_eq!(verification(&app).await["ok"], true);
    assert_eq!(
        app.query_i64("select count(*) from pending_maintenance")
            .await,
        0
    );
}

/// Verification reads the whole history by design: `--request-timeout` does not cut it off, while
/// it still bounds the other reads.
async fn verify_is_exempt_from_the_request_timeout(backend: Backend) {
    let app = TestApp::on_with_settings(
        backend,
        Settings {
            request_timeout: std::time::Duration::from_millis(1),
            ..Settings::default()
        },
    )
    .await;
    let snapshots: Vec<_> = (0..5_000)
        .map(|i| {
            let body = check("r", &format!("s{}", i % 10), i64::from(i), "SYNCED", &[]);
            gitops_status_server::model::SnapshotIn::decode(
                body.to_string().as_bytes(),
                Timestamp::now(),
            )
            .unwrap()
        })
        .collect();
    for outcome in app.store.import(snapshots).await.unwrap() {
        outcome.unwrap();
    }
    // PostgreSQL can answer these stats within a few milliseconds, sooner than the timer fires
    // at times: a second session's lock holds the stats' reads until the limit has passed.
    let lock = match app.backend {
        Backend::Postgres => {
            let mut lock = PgConnection::connect(&app.database_url).await.unwrap();
            for statement in ["begin", "lock table snapshots in access exclusive mode"] {
                sqlx::query(statement).execute(&mut lock).await.unwrap();
            }
            Some(lock)
        }
        Backend::Sqlite => None,
    };
    let stats = app
        .get(&format!("/api/stats?from={}&to={}", at(0), at(5_000)))
        .await;
    if let Some(mut lock) = lock {
        sqlx::query("rollback").execute(&mut lock).await.unwrap();
        lock.close().await.unwrap();
    }
    stats.assert_problem(503, &[]);
    assert_eq!(
        verification(&app).await,
        json!({"ok": true, "checked": 5_000, "first_bad": null})
    );
}
