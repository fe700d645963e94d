//! The real thing: HTTP over TCP, the compiled binary, restarts on the same database, SIGTERM while a
//! request is in flight, `kill -9` after acknowledged writes, and start-up errors.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::binary::{BINARY, Binary};
use common::*;
use gitops_status_server::model::HistoryFilter;
use gitops_status_server::store::Store;
use gitops_status_server::{AppState, Settings};
use serde_json::{Value, json};

backend_tests! {
    serves_over_tcp_and_a_restart_on_the_same_database_keeps_everything,
    sigterm_lets_an_in_flight_request_finish,
    kill_9_loses_no_acknowledged_snapshot,
    retention_runs_on_its_interval,
    a_request_that_exceeds_the_timeout_gets_503_problem_json,
    every_answer_carries_a_request_id,
}

async fn serves_over_tcp_and_a_restart_on_the_same_database_keeps_everything(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let url = &database.url;
    let client = reqwest::Client::new();

    let store = Store::connect(url).await.unwrap();
    let server = TcpServer::start(gitops_status_server::app(AppState::new(
        store.clone(),
        Settings::default(),
    )))
    .await;
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let files: &[&str] = if i % 4 == 0 { &["a.conf"] } else { &[] };
        let status = if files.is_empty() {
            "SYNCED"
        } else {
            "OUT_OF_SYNC"
        };
        let response = client
            .post(server.url("/api/status"))
            .json(&snapshot(
                "rsyslog",
                &format!("lab-{}", i % 3),
                status,
                files,
                &at_offset(-100 + i),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        acknowledged.push(response.json::<Value>().await.unwrap());
    }
    let status_before: Value = get_json(&client, server.url("/status.json")).await;
    let history_before: Value = get_json(&client, server.url("/history?order=asc")).await;
    assert_eq!(history_before.as_array().unwrap(), &acknowledged);
    server.stop().await;
    store.close().await;

    let store = Store::connect(url).await.unwrap();
    let server = TcpServer::start(gitops_status_server::app(AppState::new(
        store.clone(),
        Settings::default(),
    )))
    .await;
    let status_after: Value = get_json(&client, server.url("/status.json")).await;
    let history_after: Value = get_json(&client, server.url("/history?order=asc")).await;
    assert_eq!(status_after, status_before);
    assert_eq!(history_after, history_before);
    // And the reopened store keeps appending after the old ids.
    let next = client
        .post(server.url("/api/status"))
        .json(&snapshot("rsyslog", "lab-0", "SYNCED", &[], &at_offset(0)))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(next["id"], 21);
    server.stop().await;
    store.close().await;
}

async fn get_json(client: &reqwest::Client, url: String) -> Value {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// A minimal blocking HTTP/1.1 exchange, for tests that need control over the bytes on the wire.
fn http(address: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_response(stream)
}

fn read_response(mut stream: TcpStream) -> (u16, String) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

async fn stored_history(url: &str) -> Vec<gitops_status_server::model::Snapshot> {
    let store = Store::connect(url).await.unwrap();
    let rows = store
        .history_page(&HistoryFilter::default(), 100_000)
        .await
        .unwrap();
    store.close().await;
    rows
}

#[tokio::test]
async fn the_binary_defaults_to_a_database_file_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Binary::start(dir.path(), &[], &[]);
    let (status, _) = http(
        server.address,
        "POST",
        "/api/status",
        Some(&snapshot("r", "s", "SYNCED", &[], &at_offset(-1))),
    );
    assert_eq!(status, 200);
    let (status, body) = http(server.address, "GET", "/readyz", None);
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    assert!(dir.path().join("gitops-status.db").is_file());
    server.signal("-TERM");
    assert!(server.wait(Duration::from_secs(20)).success());
    let logs = server.logs().join("\n");
    assert!(
        logs.contains("no tokens configured"),
        "writes are open and the log says so: {logs}"
    );
}

async fn sigterm_lets_an_in_flight_request_finish(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let url = &database.url;
    let mut server = Binary::start(database.dir.path(), &[], &[("DATABASE_URL", url)]);

    // A POST whose body is only half sent when the signal arrives. `Expect: 100-continue` makes
    // the server say when the handler has started reading the body: from then on it is in flight.
    let body = snapshot(
        "rsyslog",
        "rsyslog-lab",
        "OUT_OF_SYNC",
        &["rsyslog.conf"],
        &at_offset(-5),
    )
    .to_string();
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(server.address).unwrap();
    write!(
        stream,
        "POST /api/status HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        interim.push(byte[0]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    stream.write_all(first_half.as_bytes()).unwrap();
    stream.flush().unwrap();

    server.signal("-TERM");
    // Shutdown has begun once the listener refuses new connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(server.address).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the listener stayed open after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server waits for the in-flight request"
    );

    stream.write_all(second_half.as_bytes()).unwrap();
    let (status, reply) = read_response(stream);
    assert_eq!(status, 200, "{reply}");
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["files_text"], "rsyslog.conf");

    assert!(
        server.wait(Duration::from_secs(20)).success(),
        "exit code 0 after a clean shutdown"
    );
    if backend == Backend::Sqlite {
        // The WAL was checkpointed and removed on a clean close.
        assert!(!database.dir.path().join("test.db-wal").exists());
    }
    let stored = stored_history(url).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, reply["id"].as_i64().unwrap());
}

async fn kill_9_loses_no_acknowledged_snapshot(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let server = Binary::start(database.dir.path(), &[], &[("DATABASE_URL", &database.url)]);
    let address = server.address;
    // Eight writers; the server is killed while they are still writing.
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for i in 0..1000 {
                    let body = snapshot("crash", &format!("w{writer}"), "SYNCED", &[], &at_offset(-2000 + i));
                    let Ok(mut stream) = TcpStream::connect(address) else { break };
                    let text = body.to_string();
                    let sent = write!(
                        stream,
                        "POST /api/status HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if sent.is_err() {
                        break;
                    }
                    let mut response = String::new();
                    if stream.read_to_string(&mut response).is_err() {
                        break;
                    }
                    if response.starts_with("HTTP/1.1 200") {
                        let body = response.split("\r\n\r\n").nth(1).unwrap();
                        let snapshot: Value = serde_json::from_str(body).unwrap();
                        acknowledged.push(snapshot["id"].as_i64().unwrap());
                    } else {
                        break;
                    }
                }
                acknowledged
            })
        })
        .collect();
    // Wait for a good number of acknowledgements, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http(address, "GET", "/history?limit=10000", None);
        let count = serde_json::from_str::<Value>(&body)
            .map(|rows| rows.as_array().map_or(0, Vec::len))
            .unwrap_or(0);
        if count >= 200 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    server.signal("-KILL");
    let acknowledged: Vec<i64> = writers
        .into_iter()
        .flat_map(|writer| writer.join().unwrap())
        .collect();
    drop(server);
    assert!(
        acknowledged.len() >= 200,
        "{} acknowledged",
        acknowledged.len()
    );

    let stored: std::collections::HashSet<i64> = stored_history(&database.url)
        .await
        .iter()
        .map(|row| row.id)
        .collect();
    let lost: Vec<&i64> = acknowledged
        .iter()
        .filter(|id| !stored.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged snapshots lost: {lost:?}",
        lost.len()
    );
}

#[test]
fn bad_configuration_stops_with_one_line_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    for (args, env, setting, code) in [
        (vec!["--stale-after", "0s"], None, "--stale-after", 2),
        (vec!["--listen", "nowhere"], None, "--listen", 2),
        (vec!["--retention", "forever"], None, "--retention", 2),
        (
            vec![],
            Some(("GITOPS_STATUS_RETENTION_INTERVAL", "0s")),
            "--retention-interval",
            2,
        ),
        (
            vec![],
            Some(("GITOPS_STATUS_STALE_AFTER", "soon")),
            "--stale-after",
            2,
        ),
        (
            vec!["--database-url", "mysql://db/x"],
            None,
            "--database-url",
            2,
        ),
        (
            vec!["--database-url", "sqlite::memory:"],
            None,
            "--database-url",
            2,
        ),
        (
            vec!["--database-url", "sqlite:///nonexistent-dir/x/y.db"],
            None,
            "--database-url",
            1,
        ),
        // Nothing listens on port 1: the connection is refused, the process says so.
        (
            vec!["--database-url", "postgres://postgres@127.0.0.1:1/gitops"],
            None,
            "--database-url",
            1,
        ),
    ] {
        let mut command = Command::new(BINARY);
        command
            .args(&args)
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env("NO_COLOR", "1");
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(setting), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "stdout stays clean: {args:?}");
        let error_lines = stderr
            .lines()
            .filter(|line| line.to_lowercase().contains("error"))
            .count();
        assert_eq!(error_lines, 1, "{args:?}: {stderr}");
    }
}

/// `--retention` prunes on its own schedule: old heartbeats go, the first snapshot, the last one
/// before the cutoff and the newest stay, and the chain still verifies.
async fn retention_runs_on_its_interval(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let mut server = Binary::start(
        database.dir.path(),
        &["--retention", "1h", "--retention-interval", "1s"],
        &[("DATABASE_URL", &database.url)],
    );
    let times = [-4 * 3600, -3 * 3600, -2 * 3600 - 600, -2 * 3600, -10].map(at_offset);
    for time in &times {
        let body = snapshot("r", "s", "SYNCED", &[], time);
        assert_eq!(
            http(server.address, "POST", "/api/status", Some(&body)).0,
            200
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let kept = loop {
        let (status, body) = http(server.address, "GET", "/history?order=asc", None);
        assert_eq!(status, 200);
        let rows: Vec<Value> = serde_json::from_str(&body).unwrap();
        if rows.len() == 3 || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let checks: Vec<&Value> = kept.iter().map(|row| &row["last_check"]).collect();
    let expected = [&times[0], &times[3], &times[4]].map(|time| json!(rendered(time)));
    assert_eq!(
        checks,
        expected.iter().collect::<Vec<_>>(),
        "{:?}",
        server.logs()
    );
    let (_, verified) = http(server.address, "GET", "/api/verify", None);
    let verified: Value = serde_json::from_str(&verified).unwrap();
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(
        server
            .logs()
            .iter()
            .any(|line| line.contains("retention run finished")),
        "{:?}",
        server.logs()
    );
    server.signal("-TERM");
    assert!(server.wait(Duration::from_secs(10)).success());
}

#[test]
fn openapi_subcommand_prints_only_the_document() {
    let output = Command::new(BINARY).arg("openapi").output().unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(printed, gitops_status_server::openapi_json());
    let document: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(document["openapi"], json!("3.1.0"));
}

async fn a_request_that_exceeds_the_timeout_gets_503_problem_json(backend: Backend) {
    let app = TestApp::on_with_settings(
        backend,
        Settings {
            request_timeout: Duration::from_secs(1),
            ..Settings::default()
        },
    )
    .await;
    let server = TcpServer::start(app.app.clone()).await;
    let address = server.address;
    // A client that announces a body and never sends most of it.
    let (status, body) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        write!(
            stream,
            "POST /api/status HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"repo\":"
        )
        .unwrap();
        read_response(stream)
    })
    .await
    .unwrap();
    assert_eq!(status, 503, "{body}");
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["type"], "/problems/timeout");
    assert!(app.all_history().await.is_empty());
    server.stop().await;
}

async fn every_answer_carries_a_request_id(backend: Backend) {
    let app = TestApp::on(backend).await;
    for uri in ["/healthz", "/nope", "/history?limit=0"] {
        let response = app.get(uri).await;
        let id = response.header("x-request-id").unwrap_or_default();
        assert_eq!(id.len(), 36, "{uri}: {id:?}");
    }
    let response = app
        .request(
            axum::http::Request::get("/status.json")
                .header("x-request-id", "ci-run-912")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.header("x-request-id"), Some("ci-run-912"));
}
