//! What the operator reads in the real binary's log about a failed request: a rejected request's
//! problem (type, detail, every bad field, never the body) at info, a 413 that names the limit and
//! the setting, and a server failure logged once with its cause and the database's error code.

mod common;

use std::time::{Duration, Instant};

use common::binary::Binary;
use common::{at_offset, snapshot};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, SqliteConnection};

/// The lines logged so far that contain `needle`, waiting up to 10 s for the first one.
fn lines_with(server: &mut Binary, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<String> = server
            .logs()
            .into_iter()
            .filter(|line| line.contains(needle))
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_rejected_snapshot_is_logged_at_info_with_its_problem_but_not_its_body() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let mut server = Binary::start(dir.path(), &["--database-url", &url], &[]);
    let mut body = snapshot("rsyslog", "lab", "GREEN", &[], &at_offset(-60));
    body["message"] = json!("body-marker-7f3a");
    body["drift_count"] = json!(-1);
    let response = reqwest::Client::new()
        .post(server.url("/api/status"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    let problem: Value = response.json().await.unwrap();

    let lines = lines_with(&mut server, "rejected");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains("status=422"), "{line}");
    assert!(
        line.contains("problem=\"/problems/invalid-snapshot\""),
        "{line}"
    );
    assert!(line.contains("detail=\"invalid field(s): "), "{line}");
    for error in problem["errors"].as_array().unwrap() {
        let named = format!(
            "{}: {}",
            error["field"].as_str().unwrap(),
            error["message"].as_str().unwrap()
        );
        assert!(line.contains(&named), "{named} missing from {line}");
    }
    assert!(line.contains("sync_status: "), "{line}");
    assert!(
        line.contains("path=/api/status"),
        "in the request's span: {line}"
    );
    let logs = server.logs().join("\n");
    assert!(!logs.contains("body-marker-7f3a"), "{logs}");
}

#[tokio::test]
async fn a_body_over_the_limit_names_the_limit_and_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("limit.db").display());
    let mut server = Binary::start(
        dir.path(),
        &["--database-url", &url, "--body-limit", "1024"],
        &[],
    );
    let mut body = snapshot("rsyslog", "lab", "ERROR", &[], &at_offset(-60));
    body["message"] = json!("x".repeat(2000));
    let response = reqwest::Client::new()
        .post(server.url("/api/status"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let problem: Value = response.json().await.unwrap();
    let detail = "the request body is larger than the server's limit of 1024 bytes; its \
                  operator can raise it with --body-limit or GITOPS_STATUS_BODY_LIMIT";
    assert_eq!(
        problem,
        json!({
            "type": "/problems/payload-too-large",
            "title": "Payload too large",
            "status": 413,
            "detail": detail,
        })
    );
    let lines = lines_with(&mut server, "rejected");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(detail), "{}", lines[0]);
}

#[tokio::test]
async fn a_server_failure_is_logged_once_with_its_cause_and_error_code() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.db");
    let url = format!("sqlite://{}", path.display());
    let mut server = Binary::start(dir.path(), &["--database-url", &url], &[]);
    let client = reqwest::Client::new();
    let body = snapshot(
        "rsyslog",
        "lab",
        "OUT_OF_SYNC",
        &["a.conf"],
        &at_offset(-60),
    );
    let stored = client
        .post(server.url("/api/status"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status().as_u16(), 200);
    // Behind the server's back, as a botched manual edit would.
    let mut connection = SqliteConnection::connect(&url).await.unwrap();
    connection
        .execute("alter table filesets rename to filesets_gone")
        .await
        .unwrap();
    connection.close().await.unwrap();

    let response = client.get(server.url("/history")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 500);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["detail"], "the server failed; the cause is in its log",
        "the cause stays in the log"
    );
    let lines = lines_with(&mut server, "no such table");
    assert_eq!(lines.len(), 1, "logged once: {lines:?}");
    let line = &lines[0];
    assert!(line.contains(" ERROR "), "{line}");
    assert!(line.contains("request failed"), "{line}");
    assert!(
        line.contains("sqlstate=\"1\""),
        "SQLite's result code: {line}"
    );
    assert!(line.contains("status=500"), "{line}");
}
