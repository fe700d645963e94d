//! Notifications end to end: transitions recorded through the API reach a real HTTP receiver
//! (an axum server on a free port) through the dispatcher and the delivery tasks, on both
//! databases.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::post;
use common::binary::command;
use common::{Backend, TestApp, at_offset, snapshot};
use gitops_status_server::notify::payload::signature;
use gitops_status_server::notify::{self, NotifyConfig, NotifyOptions};
use serde_json::{Value, json};

const SECRET: &str = "s3cret-key";

/// What the receiver got, and how many requests it still answers 500.
#[derive(Default)]
struct Inbox {
    requests: Mutex<Vec<(HeaderMap, String)>>,
    failures_left: Mutex<usize>,
}

/// A webhook receiver on 127.0.0.1:0 that records every POST.
async fn receiver(failures: usize) -> (String, Arc<Inbox>) {
    let inbox = Arc::new(Inbox::default());
    *inbox.failures_left.lock().unwrap() = failures;
    let app = Router::new()
        .route("/hook", post(take))
        .with_state(Arc::clone(&inbox));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, inbox)
}

async fn take(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    inbox
        .requests
        .lock()
        .unwrap()
        .push((headers, String::from_utf8(body.to_vec()).unwrap()));
    let mut failures = inbox.failures_left.lock().unwrap();
    if *failures > 0 {
        *failures -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

impl Inbox {
    fn events(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| serde_json::from_str(body).unwrap())
            .collect()
    }

    /// Waits until `count` requests arrived (at most 20 s).
    async fn wait_for(&self, count: usize) {
        let start = Instant::now();
        while self.requests.lock().unwrap().len() < count {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "expected {count} requests, got {:?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Starts notifications for `app` with one webhook receiver and one route.
fn notify_to(app: &TestApp, url: &str, route: &str) {
    let config = NotifyConfig::parse(&format!(
        "[[receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n\
         [[routes]]\nreceiver = \"hook\"\n{route}\n"
    ))
    .unwrap();
    let options = NotifyOptions {
        every: Duration::from_millis(50),
        ..NotifyOptions::new(600)
    };
    notify::spawn(app.store.clone(), config, options);
}

async fn episode_sends_one_started_and_one_resolved(backend: Backend) {
    let app = TestApp::on(backend).await;
    let (url, inbox) = receiver(0).await;
    notify_to(&app, &url, "");
    app.record(&snapshot(
        "rsyslog",
        "lab",
        "OUT_OF_SYNC",
        &["a.conf"],
        &at_offset(-50),
    ))
    .await;
    inbox.wait_for(1).await;
    app.record(&snapshot(
        "rsyslog",
        "lab",
        "OUT_OF_SYNC",
        &["b.conf"],
        &at_offset(-40),
    ))
    .await;
    app.record(&snapshot("rsyslog", "lab", "SYNCED", &[], &at_offset(-20)))
        .await;
    inbox.wait_for(2).await;
    // Nothing more comes: the second drifted check continued the episode.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = inbox.events();
    assert_eq!(events.len(), 2, "{events:?}");
    let (started, resolved) = (&events[0], &events[1]);
    assert_eq!(started["kind"], "started");
    assert_eq!(started["state"], "OUT_OF_SYNC");
    assert_eq!(started["repo"], "rsyslog");
    assert_eq!(started["link"], "/target?repo=rsyslog&server=lab");
    assert_eq!(resolved["kind"], "resolved");
    assert_eq!(resolved["state"], "OUT_OF_SYNC");
    assert_eq!(resolved["duration_seconds"], 30);
    assert_eq!(resolved["files"], json!(["a.conf", "b.conf"]));
    assert_eq!(resolved["started_at"], started["at"]);
    assert_ne!(started["event_id"], resolved["event_id"]);
    for (headers, body) in inbox.requests.lock().unwrap().iter() {
        assert_eq!(
            headers["x-gitops-signature"].to_str().unwrap(),
            signature(SECRET, body.as_bytes())
        );
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            headers["x-gitops-event-id"].to_str().unwrap(),
            event["event_id"]
        );
    }
    let delivered = app.get("/api/notifications?state=delivered").await.json();
    assert_eq!(delivered.as_array().unwrap().len(), 2, "{delivered}");
    assert_eq!(delivered[0]["kind"], "resolved");
    assert_eq!(delivered[0]["delivery"], "delivered");
    assert_eq!(delivered[0]["receiver"], "hook");
    assert_eq!(
        app.get("/api/notifications?state=pending").await.json(),
        json!([])
    );
}

async fn flap_shorter_than_for_sends_nothing(backend: Backend) {
    let app = TestApp::on(backend).await;
    let (url, inbox) = receiver(0).await;
    // A 10-second flap, then drift that has lasted longer than `for`, all recorded before the
    // dispatcher starts: it would otherwise see the flap's start (timed in the past, so its `for`
    // has passed) before its end arrives.
    app.record(&snapshot("rsyslog", "lab", "ERROR", &[], &at_offset(-120)))
        .await;
    app.record(&snapshot("rsyslog", "lab", "SYNCED", &[], &at_offset(-110)))
        .await;
    app.record(&snapshot(
        "rsyslog",
        "lab",
        "OUT_OF_SYNC",
        &["a"],
        &at_offset(-100),
    ))
    .await;
    notify_to(&app, &url, "for = \"30s\"");
    inbox.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = inbox.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["kind"], "started");
    assert_eq!(events[0]["state"], "OUT_OF_SYNC");
    // The flap's decisions are kept but not listed.
    let listed = app.get("/api/notifications").await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}

async fn a_retry_carries_the_same_event_id(backend: Backend) {
    let app = TestApp::on(backend).await;
    let (url, inbox) = receiver(1).await;
    notify_to(&app, &url, "");
    app.record(&snapshot("rsyslog", "lab", "ERROR", &[], &at_offset(-10)))
        .await;
    inbox.wait_for(1).await;
    let pending = app.get("/api/notifications?state=pending").await.json();
    let first = &pending[0];
    assert_eq!(first["delivery"], "pending", "{pending}");
    inbox.wait_for(2).await;
    let requests = inbox.requests.lock().unwrap().clone();
    assert_eq!(requests[0].1, requests[1].1);
    assert_eq!(
        requests[0].0["x-gitops-event-id"],
        requests[1].0["x-gitops-event-id"]
    );
    let start = Instant::now();
    loop {
        let delivered = app.get("/api/notifications?state=delivered").await.json();
        if let Some(row) = delivered.as_array().unwrap().first() {
            assert_eq!(row["attempts"], 2);
            assert_eq!(row["event_id"], first["event_id"]);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.get("/api/notifications?state=failed").await.json(),
        json!([])
    );
    app.get("/api/notifications?state=lost")
        .await
        .assert_problem(400, &["state"]);
}

async fn stale_is_found_by_the_clock(backend: Backend) {
    let app = TestApp::on(backend).await;
    let (url, inbox) = receiver(0).await;
    notify_to(&app, &url, "states = [\"STALE\"]");
    let mut quiet = snapshot("rsyslog", "lab", "SYNCED", &[], &at_offset(-5));
    quiet["stale_after_seconds"] = json!(2);
    app.record(&quiet).await;
    inbox.wait_for(1).await;
    app.record(&snapshot("rsyslog", "lab", "SYNCED", &[], &at_offset(0)))
        .await;
    inbox.wait_for(2).await;
    let events = inbox.events();
    assert_eq!(events[0]["kind"], "started");
    assert_eq!(events[0]["state"], "STALE");
    assert_eq!(events[1]["kind"], "resolved");
    assert_eq!(events[1]["state"], "STALE");
}

async fn an_acknowledged_target_stays_quiet(backend: Backend) {
    let app = TestApp::on(backend).await;
    let (url, inbox) = receiver(0).await;
    app.record(&snapshot(
        "rsyslog",
        "lab",
        "OUT_OF_SYNC",
        &["a"],
        &at_offset(-30),
    ))
    .await;
    let body = json!({
        "repo": "rsyslog", "server": "lab", "reason": "hotfix INC-1", "until": at_offset(3600),
    });
    let request = Request::post("/api/acks")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    assert_eq!(app.request(request).await.status, StatusCode::CREATED);
    notify_to(&app, &url, "");
    inbox.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = inbox.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["kind"], "acknowledged");
    assert_eq!(events[0]["state"], "OUT_OF_SYNC");
}

backend_tests! {
    an_acknowledged_target_stays_quiet,
    episode_sends_one_started_and_one_resolved,
    flap_shorter_than_for_sends_nothing,
    a_retry_carries_the_same_event_id,
    stale_is_found_by_the_clock,
}

#[test]
fn a_bad_notify_file_stops_the_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notify.toml");
    std::fs::write(
        &file,
        "[[receivers]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://x/\"\n\
         [[receivers]]\nname = \"b\"\nkind = \"pager\"\nurl = \"http://x/\"\n",
    )
    .unwrap();
    let output = command(dir.path(), &[])
        .args(["--listen", "127.0.0.1:0", "--notify-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.contains("--notify-file"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("receivers[1].kind: \"pager\" is not one of"),
        "{line}"
    );
}
