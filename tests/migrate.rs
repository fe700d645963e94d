//! `gitops-status-server migrate-to`: an SQLite history with transitions, a late check and a
//! retention gap moves to PostgreSQL, where every answer about it is the same, the chains still
//! verify and go on, and a second run into the now used database refuses and changes nothing.

mod common;

use std::process::{Command, Output};

use common::binary::{BINARY, Binary};
use common::{Backend, TestApp, TestDatabase, snapshot};
use gitops_status_server::timestamp::Timestamp;
use serde_json::{Value, json};

/// 2026-01-01T00:00:00Z: the history lies well in the past, so every target is equally stale on
/// both servers whenever they are asked.
const T0: i64 = 1_767_225_600_000;

fn at(seconds: i64) -> String {
    Timestamp::from_millis(T0 + seconds * 1000).to_string()
}

fn check(repo: &str, server: &str, seconds: i64, status: &str, files: &[&str]) -> Value {
    snapshot(repo, server, status, files, &at(seconds))
}

/// Three targets with drift, errors, file-set changes, odd text and a per-target stale-after;
/// heartbeats before T0 that retention removes (leaving checkpoints); late checks before and
/// after the prune.
async fn sqlite_history() -> TestApp {
    let app = TestApp::on(Backend::Sqlite).await;
    for seconds in (-3600..0).step_by(120) {
        app.record(&check("app", "web-1", seconds, "SYNCED", &[]))
            .await;
    }
    for seconds in (-1800..0).step_by(300) {
        let mut body = check("app", "web-2", seconds, "SYNCED", &[]);
        body["stale_after_seconds"] = json!(60);
        app.record(&body).await;
    }
    let mut bodies = vec![
        check("app", "web-1", 120, "OUT_OF_SYNC", &["a.conf"]),
        check(
            "db",
            "pg-1",
            0,
            "OUT_OF_SYNC",
            &["pg_hba.conf", "ünïcode/😀.conf"],
        ),
        check("app", "web-1", 240, "OUT_OF_SYNC", &["a.conf", "b.conf"]),
        check("app", "web-2", 300, "ERROR", &[]),
        check("app", "web-1", 360, "SYNCED", &[]),
        check("db", "pg-1", 400, "OUT_OF_SYNC", &["pg_hba.conf"]),
        check("app", "web-1", 600, "ERROR", &[]),
        // Late: between two checks already stored.
        check("app", "web-1", 300, "SYNCED", &[]),
        check("app", "web-2", 900, "SYNCED", &[]),
    ];
    for (index, body) in bodies.iter_mut().enumerate() {
        body["revision"] = json!(format!("rev{index}"));
        body["run_url"] = json!(format!("https://ci.example.org/run/{index}"));
        if body["sync_status"] == "ERROR" {
            body["message"] = json!("ssh: connect to host port 22\nlínea «two»");
        }
    }
    for body in &bodies {
        app.record(body).await;
    }
    let report = app.store.prune(Timestamp::from_millis(T0)).await.unwrap();
    assert!(report.removed > 0 && report.checkpoints > 0, "{report:?}");
    // After the prune: a late check into the pruned past, and one more on top.
    app.record(&check("app", "web-1", -1000, "SYNCED", &[]))
        .await;
    app.record(&check("app", "web-1", 720, "SYNCED", &[])).await;
    assert!(!app.get_rows("/api/checkpoints").await.is_empty());
    app.store.close().await;
    app
}

fn migrate_to(postgres_url: &str, sqlite_url: &str) -> Output {
    Command::new(BINARY)
        .args(["migrate-to", postgres_url, "--database-url", sqlite_url])
        .env_remove("DATABASE_URL")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn serve(database_url: &str, dir: &std::path::Path) -> Binary {
    Binary::start(dir, &[], &[("DATABASE_URL", database_url)])
}

async fn get(client: &reqwest::Client, server: &Binary, path: &str) -> (String, String) {
    let response = client.get(server.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (content_type, response.text().await.unwrap())
}

/// Every read an auditor or dashboard makes, as served, less what the clock alone moves: the
/// stats window is fixed once for the whole test, and `/status.json`'s `stale_seconds` (which
/// grows every second while a target is stale) is left out, so two calls a second apart compare
/// equal when nothing stored changed.
async fn answers(client: &reqwest::Client, server: &Binary) -> Vec<(String, String, String)> {
    static STATS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let stats = STATS.get_or_init(|| format!("/api/stats?from={}&to={}", at(-7200), at(3600)));
    let mut answers = Vec::new();
    for path in [
        "/history?format=ndjson",
        "/history?format=csv&order=asc",
        "/history?changes_only=true&limit=10000",
        "/history?limit=5",
        "/status.json",
        "/api/checkpoints",
        stats,
        "/api/verify",
    ] {
        let (content_type, mut body) = get(client, server, path).await;
        if path == "/status.json" {
            let mut rows: Value = serde_json::from_str(&body).unwrap();
            for row in rows.as_array_mut().unwrap() {
                assert!(
                    row.as_object_mut()
                        .unwrap()
                        .remove("stale_seconds")
                        .is_some()
                );
            }
            body = rows.to_string();
        }
        answers.push((path.to_owned(), content_type, body));
    }
    answers
}

#[tokio::test]
async fn migrate_to_copies_an_sqlite_history_that_answers_and_verifies_the_same() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let sqlite = sqlite_history().await;
    let postgres = TestDatabase::create(backend).await;

    let output = migrate_to(&postgres.url, &sqlite.database_url);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: stdout is not the JSON report: {stderr}"));
    assert!(
        report.as_object().is_some_and(|report| !report.is_empty()),
        "{report}"
    );

    let client = reqwest::Client::new();
    let from_sqlite = serve(&sqlite.database_url, sqlite.dir.path());
    let from_postgres = serve(&postgres.url, postgres.dir.path());
    let expected = answers(&client, &from_sqlite).await;
    let migrated = answers(&client, &from_postgres).await;
    for (expected, migrated) in expected.iter().zip(&migrated) {
        assert_eq!(migrated, expected, "{}", expected.0);
    }
    let verified: Value = serde_json::from_str(&migrated.last().unwrap().2).unwrap();
    assert_eq!(verified["ok"], true, "{verified}");
    let history: Vec<Value> = migrated[0]
        .2
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(verified["checked"], history.len());

    // A second run into the database, which now holds a history, refuses and changes nothing.
    let again = migrate_to(&postgres.url, &sqlite.database_url);
    assert_eq!(
        again.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(answers(&client, &from_postgres).await, migrated);

    // On PostgreSQL the chains go on: retries of migrated checks are recognised, conflicts
    // refused, and new checks get ids after the migrated ones and verify.
    let last_id = history.iter().map(|row| row["id"].as_i64().unwrap()).max();
    let original = history
        .iter()
        .find(|row| row["server"] == "pg-1" && row["last_check"] == json!(at(400)))
        .unwrap();
    let mut retry = check("db", "pg-1", 400, "OUT_OF_SYNC", &["pg_hba.conf"]);
    retry["revision"] = json!("rev5");
    retry["run_url"] = json!("https://ci.example.org/run/5");
    let post = |body: Value| {
        let client = client.clone();
        let url = from_postgres.url("/api/status");
        async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(post(retry.clone()).await, (200, original.clone()));
    retry["revision"] = json!("rewritten");
    assert_eq!(post(retry).await.0, 409);
    let mut previous_id = last_id.unwrap();
    for (repo, server, seconds) in [
        ("app", "web-1", 1000),
        ("app", "web-2", 1000),
        ("db", "pg-1", 1000),
        ("app", "web-1", 840),
        ("new", "target", 1000),
    ] {
        let (status, stored) = post(check(repo, server, seconds, "SYNCED", &[])).await;
        assert_eq!(status, 200, "{stored}");
        let id = stored["id"].as_i64().unwrap();
        assert!(id > previous_id, "{id} after {previous_id}");
        previous_id = id;
    }
    let (_, verified) = get(&client, &from_postgres, "/api/verify").await;
    let verified: Value = serde_json::from_str(&verified).unwrap();
    assert_eq!(
        verified,
        json!({"ok": true, "checked": history.len() + 5, "first_bad": null})
    );
}

/// A history with chained events on both kinds of chain, pruned around them, moves to
/// PostgreSQL with its events, acknowledgements, silences and retirements: every export is the
/// same byte for byte, both verify, and new records get ids after every copied event.
#[tokio::test]
async fn migrate_to_copies_chained_events_and_the_rows_they_record() {
    use common::chain_builder::ChainBuilder;
    use gitops_status_server::model::SyncStatus::{OutOfSync, Synced};

    let Some(backend) = Backend::postgres() else {
        return;
    };
    let mut history = ChainBuilder::new(Backend::Sqlite);
    let mut ack = 0;
    for (step, seconds) in (-3600..0).step_by(120).enumerate() {
        history.snapshot("app", "web-1", seconds, Synced, &[]);
        history.snapshot("app", "web-2", seconds, Synced, &[]);
        match step {
            4 => {
                ack = history.ack(
                    ("app", "web-1"),
                    seconds + 1,
                    "known «drift»",
                    86_400,
                    Some(&["*.conf"]),
                    "ops",
                );
            }
            6 => {
                history.silence(
                    seconds + 1,
                    &["app"],
                    &["web-*"],
                    (0, 600),
                    "patching",
                    "ops",
                );
            }
            9 => {
                history.ack_end(
                    ("app", "web-1"),
                    seconds + 1,
                    ack,
                    "deleted",
                    Some("ops"),
                    None,
                );
            }
            12 => {
                history.retire("app", "web-2", seconds + 1, "ops");
            }
            _ => {}
        }
    }
    history.snapshot("app", "web-1", 0, OutOfSync, &["a.conf"]);
    // Open, and not expired whenever the test runs: the servers end expired ones at start.
    history.ack(("app", "web-1"), 1, "hotfix", 315_360_000, None, "ci");
    let silence = history.silence(2, &["*"], &["db-*"], (0, 3600), "reboots", "ops");
    history.silence_end(3, silence, "ops");
    let last_event = history.last_id();
    let sqlite = TestApp::on_history(Backend::Sqlite, &history.statements()).await;
    let report = sqlite
        .store
        .prune(Timestamp::from_millis(T0))
        .await
        .unwrap();
    assert!(report.removed > 0 && report.checkpoints > 0, "{report:?}");
    sqlite.store.close().await;

    let postgres = TestDatabase::create(backend).await;
    let output = migrate_to(&postgres.url, &sqlite.database_url);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (&report["events"], &report["acks"], &report["silences"]),
        (&json!(7), &json!(2), &json!(2)),
        "{report}"
    );
    assert_eq!(report["ok"], true, "{report}");

    let client = reqwest::Client::new();
    let from_sqlite = serve(&sqlite.database_url, sqlite.dir.path());
    let from_postgres = serve(&postgres.url, postgres.dir.path());
    for path in [
        "/history?format=ndjson",
        "/api/chain/events",
        "/api/chain/events?server=web-1",
        "/api/checkpoints",
        "/api/verify",
    ] {
        assert_eq!(
            get(&client, &from_postgres, path).await,
            get(&client, &from_sqlite, path).await,
            "{path}"
        );
    }
    let (_, verified) = get(&client, &from_postgres, "/api/verify").await;
    let verified: Value = serde_json::from_str(&verified).unwrap();
    let (_, trail) = get(&client, &from_postgres, "/history?format=ndjson").await;
    assert_eq!(
        verified,
        json!({"ok": true, "checked": trail.lines().count() + 7, "first_bad": null})
    );

    // The id sequence goes on after every copied event, and the chains with it.
    let response = client
        .post(from_postgres.url("/api/status"))
        .json(&check("app", "web-1", 120, "OUT_OF_SYNC", &["a.conf"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stored: Value = response.json().await.unwrap();
    assert!(stored["id"].as_i64().unwrap() > last_event, "{stored}");
    let (_, verified) = get(&client, &from_postgres, "/api/verify").await;
    let verified: Value = serde_json::from_str(&verified).unwrap();
    assert_eq!(verified["ok"], true, "{verified}");
}
