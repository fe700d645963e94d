//! `GET /api/events` (SPEC "Notifications"): every transition and lifecycle event as
//! Server-Sent Events, read over real TCP by a real SSE client (PyPI sseclient-py) on both
//! databases; resuming with `Last-Event-ID` misses nothing; a client that leaves its buffer
//! unread is told it lags, with the id to resume from.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use common::*;
use gitops_status_server::timestamp::Timestamp;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower::ServiceExt;

backend_tests! {
    a_bad_last_event_id_is_a_problem_naming_it,
    follow_false_sends_what_is_stored_then_ends;
    multi_thread:
        an_sse_client_sees_drift_an_acknowledgement_and_recovery_as_they_happen,
        a_client_resuming_with_last_event_id_misses_nothing,
        a_client_that_leaves_its_buffer_unread_is_told_it_lags,
}

/// Reads `count` events from the URL in argv[1] (sending argv[3] as `Last-Event-ID` when
/// given), printing each as one JSON line, then exits.
const SSE_CLIENT_SCRIPT: &str = r#"
import json, sys, urllib.request
import sseclient

url, count = sys.argv[1], int(sys.argv[2])
headers = {"Accept": "text/event-stream"}
if len(sys.argv) > 3:
    headers["Last-Event-ID"] = sys.argv[3]
response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30)
for number, event in enumerate(sseclient.SSEClient(response).events(), start=1):
    print(json.dumps({"event": event.event, "id": event.id, "data": json.loads(event.data)}), flush=True)
    if number == count:
        break
"#;

/// One sseclient-py process and the events it printed.
struct SseClient {
    child: Child,
    events: mpsc::UnboundedReceiver<Value>,
}

impl SseClient {
    /// `None` (after saying so) when the tools venv has no sseclient.
    fn start(test: &str, url: &str, count: usize, last_event_id: Option<&str>) -> Option<Self> {
        let python = tools::SSECLIENT_PYTHON.require(test)?;
        let probe = Command::new(&python)
            .args(["-c", "import sseclient"])
            .output()
            .unwrap();
        if !probe.status.success() {
            tools::SSECLIENT_PYTHON.missing(test, "it has no sseclient");
            return None;
        }
        let mut command = Command::new(python);
        command.args(["-c", SSE_CLIENT_SCRIPT, url, &count.to_string()]);
        command.args(last_event_id);
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, events) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                let event =
                    serde_json::from_str(&line).unwrap_or_else(|error| panic!("{error}: {line}"));
                if sender.send(event).is_err() {
                    break;
                }
            }
        });
        Some(Self { child, events })
    }

    async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(20), self.events.recv())
            .await
            .expect("an event within 20 s")
            .expect("the client printed another event")
    }

    /// Waits for the client to exit after its last event.
    async fn finish(mut self) {
        let status = tokio::task::spawn_blocking(move || self.child.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "the SSE client failed: {status}");
    }
}

async fn send(app: &TestApp, method: Method, uri: &str, body: Option<Value>) -> TestResponse {
    let mut request = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    app.request(request.body(body).unwrap()).await
}

async fn check(app: &TestApp, server: &str, status: &str, offset_seconds: i64) -> Value {
    let files = if status == "SYNCED" {
        json!([])
    } else {
        json!([{ "name": "rsyslog.conf" }])
    };
    app.record(&json!({
        "repo": "rsyslog", "server": server, "sync_status": status,
        "files": files, "last_check": at_offset(offset_seconds),
    }))
    .await
}

async fn acknowledge(app: &TestApp, server: &str, until: &str) -> Value {
    let response = send(
        app,
        Method::POST,
        "/api/acks",
        Some(json!({
            "repo": "rsyslog", "server": server, "reason": "hotfix INC-1",
            "until": until,
        })),
    )
    .await;
    assert_eq!(response.status.as_u16(), 201, "{}", response.text());
    response.json()
}

/// The SSE events of a finished stream's body, as the client script prints them.
fn parse_stream(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter_map(|block| {
            let mut event = json!({ "event": "message", "id": null, "data": null });
            let mut saw_field = false;
            for line in block.lines() {
                let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                match field {
                    "event" => event["event"] = json!(value),
                    "id" => event["id"] = json!(value),
                    "data" => event["data"] = serde_json::from_str(value).unwrap(),
                    _ => continue,
                }
                saw_field = true;
            }
            saw_field.then_some(event)
        })
        .collect()
}

/// Reads a whole stream in process (it must end: `follow=false`, or a lagging client).
async fn read_stream(app: &TestApp, uri: &str, last_event_id: Option<&str>) -> Vec<Value> {
    let mut request = Request::builder().uri(uri);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = app.request(request.body(Body::empty()).unwrap()).await;
    assert_eq!(response.status.as_u16(), 200, "{}", response.text());
    assert_eq!(response.content_type(), "text/event-stream");
    parse_stream(&response.text())
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["event"].as_str().unwrap())
        .collect()
}

async fn an_sse_client_sees_drift_an_acknowledgement_and_recovery_as_they_happen(backend: Backend) {
    let test = "an_sse_client_sees_drift_an_acknowledgement_and_recovery_as_they_happen";
    let app = TestApp::on(backend).await;
    let server = TcpServer::start(app.app.clone()).await;
    let Some(mut client) = SseClient::start(test, &server.url("/api/events"), 5, None) else {
        return;
    };
    let ready = client.next().await;
    assert_eq!(ready["event"], "ready", "{ready}");
    assert_eq!(ready["data"], json!({ "cursor": "0-0" }));

    let drifted = check(&app, "lab", "OUT_OF_SYNC", -60).await;
    let until = Timestamp::now().plus_millis(86_400_000).to_string();
    let ack = acknowledge(&app, "lab", &until).await;
    let synced = check(&app, "lab", "SYNCED", -30).await;

    let entered = client.next().await;
    assert_eq!(entered["event"], "entered");
    let data = &entered["data"];
    assert_eq!(data["source"], "transition");
    assert_eq!(data["repo"], "rsyslog");
    assert_eq!(data["server"], "lab");
    assert_eq!(data["kind"], "entered");
    assert_eq!(data["state"], "OUT_OF_SYNC");
    assert_eq!(data["at"], drifted["last_check"]);
    assert_eq!(
        data["at_ms"],
        unix_millis(drifted["last_check"].as_str().unwrap())
    );
    assert_eq!(data["record_id"], drifted["id"]);
    assert_eq!(data["body"], Value::Null);
    assert_eq!(data["cursor"], entered["id"]);

    let acked = client.next().await;
    assert_eq!(acked["event"], "ack");
    let data = &acked["data"];
    assert_eq!(data["source"], "event");
    assert_eq!(data["record_id"], ack["id"]);
    assert_eq!(data["at"], ack["created_at"]);
    assert_eq!(data["state"], Value::Null);
    assert_eq!(
        data["body"],
        json!({ "reason": "hotfix INC-1", "until": ack["until"], "files": null, "by": "anonymous" })
    );

    let left = client.next().await;
    assert_eq!(left["event"], "left");
    assert_eq!(left["data"]["state"], "OUT_OF_SYNC");
    assert_eq!(left["data"]["record_id"], synced["id"]);

    let ended = client.next().await;
    assert_eq!(ended["event"], "ack_end");
    assert_eq!(
        ended["data"]["body"],
        json!({ "ack": ack["id"], "reason": "resolved", "by": null, "snapshot": synced["id"] })
    );
    // That check was made before the acknowledgement: it ends when it began, never before.
    assert!(synced["last_check"].as_str().unwrap() < ack["created_at"].as_str().unwrap());
    assert_eq!(ended["data"]["at"], ack["created_at"]);
    client.finish().await;

    // Every id is a position after the one before it, and the stored stream says the same.
    let stored = read_stream(&app, "/api/events?follow=false", Some("0-0")).await;
    let live = [entered, acked, left, ended];
    assert_eq!(&stored[1..], &live[..]);
    server.stop().await;
}

async fn a_client_resuming_with_last_event_id_misses_nothing(backend: Backend) {
    let test = "a_client_resuming_with_last_event_id_misses_nothing";
    let app = TestApp::on(backend).await;
    let server = TcpServer::start(app.app.clone()).await;
    let url = server.url("/api/events");
    check(&app, "a", "OUT_OF_SYNC", -100).await;
    check(&app, "b", "ERROR", -100).await;
    // The first connection reads the two stored transitions, then goes away.
    let Some(mut first) = SseClient::start(test, &url, 3, Some("0-0")) else {
        return;
    };
    assert_eq!(first.next().await["event"], "ready");
    let seen = vec![first.next().await, first.next().await];
    first.finish().await;
    assert_eq!(kinds(&seen), ["entered", "entered"]);

    // While it is away: recoveries, an acknowledgement, a silence, a retirement.
    check(&app, "a", "SYNCED", -90).await;
    check(&app, "b", "OUT_OF_SYNC", -80).await;
    acknowledge(
        &app,
        "b",
        &Timestamp::now().plus_millis(3_600_000).to_string(),
    )
    .await;
    let silence = send(
        &app,
        Method::POST,
        "/api/silences",
        Some(json!({
            "servers": ["db-*"], "ends_at": Timestamp::now().plus_millis(3_600_000).to_string(),
            "reason": "upgrade",
        })),
    )
    .await;
    assert_eq!(silence.status.as_u16(), 201, "{}", silence.text());
    let retired = send(&app, Method::DELETE, "/api/targets/rsyslog/a", None).await;
    assert!(retired.status.is_success(), "{}", retired.text());

    let last = seen[1]["id"].as_str().unwrap().to_owned();
    let expected = read_stream(&app, "/api/events?follow=false", Some(&last)).await;
    let missed = &expected[1..];
    assert_eq!(
        kinds(missed),
        ["left", "left", "entered", "ack", "silence", "retire"],
        "{missed:?}"
    );
    assert_eq!(missed[4]["data"]["repo"], Value::Null, "the fleet chain");

    // The second connection resumes after the last id it saw: the missed ones, then live ones.
    let Some(mut second) = SseClient::start(test, &url, missed.len() + 2, Some(&last)) else {
        return;
    };
    assert_eq!(second.next().await["id"], last.as_str());
    let mut resumed = Vec::new();
    for _ in missed {
        resumed.push(second.next().await);
    }
    assert_eq!(resumed, missed);
    check(&app, "b", "SYNCED", -10).await;
    let live = second.next().await;
    assert_eq!(live["event"], "left");
    assert_eq!(live["data"]["server"], "b");
    second.finish().await;
    server.stop().await;
}

async fn a_client_that_leaves_its_buffer_unread_is_told_it_lags(backend: Backend) {
    let app = TestApp::on(backend).await;
    let buffer = gitops_status_server::api::events::BUFFER;
    // Each check flips the state: one transition each.
    let total = buffer + 20;
    let statuses = ["OUT_OF_SYNC", "SYNCED"];
    let base = -(total as i64) - 10;
    for index in 0..total {
        check(&app, "lab", statuses[index % 2], base + index as i64).await;
    }
    let request = Request::builder()
        .uri("/api/events")
        .header("last-event-id", "0-0")
        .body(Body::empty())
        .unwrap();
    let response = app.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // Read nothing for longer than the grace: the buffer stays full.
    tokio::time::sleep(gitops_status_server::api::events::LAG_GRACE + Duration::from_secs(1)).await;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let events = parse_stream(&String::from_utf8_lossy(&body));
    assert_eq!(events.len(), 1 + buffer + 1, "ready, the buffer, lagged");
    let lagged = events.last().unwrap();
    assert_eq!(lagged["event"], "lagged");
    let resume = events[buffer]["id"].as_str().unwrap();
    assert_eq!(lagged["id"], resume);
    assert_eq!(lagged["data"], json!({ "cursor": resume }));

    // Resuming from it gets the rest: nothing was skipped.
    let rest = read_stream(&app, "/api/events?follow=false", Some(resume)).await;
    let mut all: Vec<Value> = events[1..=buffer].to_vec();
    all.extend(rest[1..].iter().cloned());
    assert_eq!(all.len(), total);
    let everything = read_stream(&app, "/api/events?follow=false", Some("0-0")).await;
    assert_eq!(all, everything[1..]);
}

async fn a_bad_last_event_id_is_a_problem_naming_it(backend: Backend) {
    let app = TestApp::on(backend).await;
    for id in ["12", "a-b", "-1-2", "1-2-3"] {
        let request = Request::builder()
            .uri("/api/events")
            .header("last-event-id", id)
            .body(Body::empty())
            .unwrap();
        let problem = app
            .request(request)
            .await
            .assert_problem(400, &["Last-Event-ID"]);
        assert_eq!(problem["type"], "/problems/invalid-header");
    }
    app.get("/api/events?follow=maybe")
        .await
        .assert_problem(400, &["follow"]);
}

async fn follow_false_sends_what_is_stored_then_ends(backend: Backend) {
    let app = TestApp::on(backend).await;
    // Without Last-Event-ID the stream starts at the present: nothing stored is sent.
    let events = read_stream(&app, "/api/events?follow=false", None).await;
    assert_eq!(
        events,
        [json!({ "event": "ready", "id": "0-0", "data": { "cursor": "0-0" } })]
    );
    check(&app, "lab", "ERROR", -10).await;
    let events = read_stream(&app, "/api/events?follow=false", None).await;
    assert_eq!(kinds(&events), ["ready"]);
    let cursor = events[0]["id"].as_str().unwrap();
    assert!(cursor.starts_with("1-"), "{cursor}");
    let events = read_stream(&app, "/api/events?follow=false", Some("0-0")).await;
    assert_eq!(kinds(&events), ["ready", "entered"]);
    assert_eq!(events[1]["data"]["state"], "ERROR");
    assert_eq!(events[1]["id"], cursor);
}
