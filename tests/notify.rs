//! Notifications end to end: transitions recorded through the API reach a real HTTP receiver
//! (an axum server on a free port) or a real Alertmanager (Debian `prometheus-alertmanager`,
//! started on a free port) through the dispatcher and the delivery tasks, on both databases.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::post;
use common::binary::{Binary, command};
use common::{Backend, TestApp, TestDatabase, at_offset, snapshot, unix_millis};
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
    receiver_at("127.0.0.1:0", failures).await
}

/// The same receiver on a given address.
async fn receiver_at(address: &str, failures: usize) -> (String, Arc<Inbox>) {
    let inbox = Arc::new(Inbox::default());
    *inbox.failures_left.lock().unwrap() = failures;
    let app = Router::new()
        .route("/hook", post(take))
        .with_state(Arc::clone(&inbox));
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
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
    notify_on(&app.store, url, route);
}

/// Starts notifications on `store` (one replica's) with one webhook receiver and one route.
fn notify_on(store: &gitops_status_server::store::Store, url: &str, route: &str) {
    let config = NotifyConfig::parse(&format!(
        "[[receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n\
         [[routes]]\nreceiver = \"hook\"\n{route}\n"
    ))
    .unwrap();
    let options = NotifyOptions {
        every: Duration::from_millis(50),
        ..NotifyOptions::new(600)
    };
    notify::spawn(store.clone(), config, options);
}

/// A second replica's store on `app`'s database: its own pool on PostgreSQL; on SQLite (one
/// process per file) the same store, so its tasks still race the first replica's.
async fn second_replica(app: &TestApp) -> gitops_status_server::store::Store {
    match app.backend {
        Backend::Sqlite => app.store.clone(),
        Backend::Postgres => gitops_status_server::store::Store::connect(&app.database_url)
            .await
            .unwrap(),
    }
}

/// Posts an acknowledgement of `repo`/`server` for an hour.
async fn acknowledge(app: &TestApp, repo: &str, server: &str) {
    let body = json!({
        "repo": repo, "server": server, "reason": "hotfix INC-1", "until": at_offset(3600),
    });
    let request = Request::post("/api/acks")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    assert_eq!(app.request(request).await.status, StatusCode::CREATED);
}

async fn episode_sends_one_started_and_one_resolved(backend: Backend) {
    let app = TestApp::on(backend).await;
    let (url, inbox) = receiver(0).await;
    notify_to(&app, &url, "");
    // Timed up front: each at_offset reads the clock, at whole seconds.
    let (first, second, third) = (at_offset(-50), at_offset(-40), at_offset(-20));
    app.record(&snapshot(
        "rsyslog",
        "lab",
        "OUT_OF_SYNC",
        &["a.conf"],
        &first,
    ))
    .await;
    inbox.wait_for(1).await;
    app.record(&snapshot(
        "rsyslog",
        "lab",
        "OUT_OF_SYNC",
        &["b.conf"],
        &second,
    ))
    .await;
    app.record(&snapshot("rsyslog", "lab", "SYNCED", &[], &third))
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

fn of_kind(events: &[Value], kind: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|event| event["kind"] == kind)
        .cloned()
        .collect()
}

async fn reminders_repeat_while_the_state_lasts(backend: Backend) {
    let app = TestApp::on(backend).await;
    let (url, inbox) = receiver(0).await;
    // Two replicas decide and deliver: each reminder must still be written and sent once.
    notify_to(&app, &url, "repeat = \"1s\"");
    let replica = second_replica(&app).await;
    notify_on(&replica, &url, "repeat = \"1s\"");
    app.record(&snapshot(
        "rsyslog",
        "lab",
        "OUT_OF_SYNC",
        &["a.conf"],
        &at_offset(-30),
    ))
    .await;
    inbox.wait_for(3).await;
    let events = inbox.events();
    let started = &events[0];
    assert_eq!(started["kind"], "started", "{events:?}");
    let reminders = of_kind(&events, "reminder");
    assert_eq!(reminders.len(), 2, "{events:?}");
    for (n, reminder) in reminders.iter().enumerate() {
        let n = n + 1;
        assert_eq!(
            reminder["event_id"],
            format!("{}-reminder-{n}", started["event_id"].as_str().unwrap())
        );
        assert_eq!(reminder["state"], "OUT_OF_SYNC");
        assert_eq!(reminder["started_at"], started["at"]);
        assert!(
            reminder["duration_seconds"].as_i64().unwrap() >= 30,
            "{reminder}"
        );
    }
    // About a second apart: due a `repeat` after the previous one was delivered.
    // An acknowledgement quiets them.
    acknowledge(&app, "rsyslog", "lab").await;
    let start = Instant::now();
    while of_kind(&inbox.events(), "acknowledged").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "no acknowledged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = of_kind(&inbox.events(), "reminder").len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = of_kind(&inbox.events(), "reminder").len();
    assert!(
        after <= before + 1,
        "reminders went on under an acknowledgement: {after}"
    );
    // The end of the episode is sent, and no reminder follows it.
    app.record(&snapshot("rsyslog", "lab", "SYNCED", &[], &at_offset(0)))
        .await;
    let start = Instant::now();
    while of_kind(&inbox.events(), "resolved").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "no resolved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended = of_kind(&inbox.events(), "reminder").len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let events = inbox.events();
    assert_eq!(of_kind(&events, "reminder").len(), ended, "{events:?}");
    assert_eq!(of_kind(&events, "started").len(), 1, "{events:?}");
    assert_eq!(of_kind(&events, "resolved").len(), 1, "{events:?}");
    // Every event id arrived once: neither replica sent anything twice.
    let mut ids: Vec<String> = events
        .iter()
        .map(|event| event["event_id"].as_str().unwrap().to_owned())
        .collect();
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "{events:?}");
    let listed = app.get("/api/notifications?state=delivered").await.json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["kind"] == "reminder"),
        "{listed}"
    );
}

/// Posts a snapshot to a running binary; it must be stored.
async fn post_to(server: &Binary, body: &Value) {
    let response = reqwest::Client::new()
        .post(server.url("/api/status"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// The binary's outbox in `state`.
async fn outbox(server: &Binary, state: &str) -> Vec<Value> {
    let listed: Value = reqwest::get(server.url(&format!("/api/notifications?state={state}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listed.as_array().unwrap().clone()
}

/// The real binary killed with SIGKILL three times while its only receiver is down: once with
/// started notifications failing their attempts, once just after the snapshots that resolve
/// two of them were answered, once just after a new drift was answered. When the receiver is
/// up and the binary restarted, every one of them arrives, the earlier ones with the event id
/// they had before the first kill.
async fn kill_9_loses_no_pending_notification(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let dir = database.dir.path();
    // The receiver's address, free and not listening until the last cycle.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let file = dir.join("notify.toml");
    std::fs::write(
        &file,
        format!(
            "[[receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{address}/hook\"\n\
             secret = \"{SECRET}\"\n[[routes]]\nreceiver = \"hook\"\n"
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let args = [
        "--database-url",
        database.url.as_str(),
        "--notify-file",
        file,
    ];
    let drift = |server: &str, at: &str| snapshot("kill", server, "OUT_OF_SYNC", &["a.conf"], at);
    let (drifted, synced, late) = (at_offset(-60), at_offset(-30), at_offset(-10));

    let mut server = Binary::start(dir, &args, &[]);
    for name in ["s0", "s1", "s2", "s3"] {
        post_to(&server, &drift(name, &drifted)).await;
    }
    let start = Instant::now();
    let pending = loop {
        let pending = outbox(&server, "pending").await;
        if pending.len() == 4
            && pending
                .iter()
                .all(|row| row["attempts"].as_i64() >= Some(1))
        {
            break pending;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut expected: std::collections::BTreeMap<String, String> = pending
        .iter()
        .map(|row| {
            assert_eq!(row["kind"], "started", "{row}");
            (
                row["event_id"].as_str().unwrap().to_owned(),
                format!("started {}", row["server"].as_str().unwrap()),
            )
        })
        .collect();
    server.kill_9();

    let mut server = Binary::start(dir, &args, &[]);
    for name in ["s0", "s1"] {
        post_to(&server, &snapshot("kill", name, "SYNCED", &[], &synced)).await;
    }
    server.kill_9();
    let mut server = Binary::start(dir, &args, &[]);
    post_to(&server, &drift("s4", &late)).await;
    server.kill_9();

    let (_, inbox) = receiver_at(&address.to_string(), 0).await;
    let server = Binary::start(dir, &args, &[]);
    let start = Instant::now();
    loop {
        let received: std::collections::BTreeSet<String> = inbox
            .events()
            .iter()
            .map(|event| {
                format!(
                    "{} {}",
                    event["kind"].as_str().unwrap(),
                    event["server"].as_str().unwrap()
                )
            })
            .collect();
        let wanted = [
            "started s0",
            "started s1",
            "started s2",
            "started s3",
            "started s4",
            "resolved s0",
            "resolved s1",
        ];
        if wanted.iter().all(|event| received.contains(*event)) {
            break;
        }
        // A lease taken just before a kill holds its delivery for up to a minute.
        assert!(start.elapsed() < Duration::from_secs(90), "{received:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (headers, body) in inbox.requests.lock().unwrap().iter() {
        let event: Value = serde_json::from_str(body).unwrap();
        let id = event["event_id"].as_str().unwrap();
        assert_eq!(headers["x-gitops-event-id"].to_str().unwrap(), id);
        assert_eq!(
            headers["x-gitops-signature"].to_str().unwrap(),
            signature(SECRET, body.as_bytes())
        );
        // The started notifications decided before the first kill kept their event ids.
        if let Some(what) = expected.remove(id) {
            assert_eq!(
                what,
                format!(
                    "{} {}",
                    event["kind"].as_str().unwrap(),
                    event["server"].as_str().unwrap()
                )
            );
        }
    }
    assert!(
        expected.is_empty(),
        "never delivered with their ids: {expected:?}"
    );
    let start = Instant::now();
    while !outbox(&server, "pending").await.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "still pending");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(outbox(&server, "delivered").await.len(), 7);
    // /metrics counts them by receiver (this process delivered all seven), and the queue's age.
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        let prefix = format!("{name}{{receiver=\"hook\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix}in {metrics}"))
            .parse()
            .unwrap()
    };
    assert!(
        value("gitops_status_notifications_delivered_total") >= 7.0,
        "{metrics}"
    );
    assert_eq!(value("gitops_status_notifications_failed_total"), 0.0);
    let start = Instant::now();
    loop {
        let metrics = reqwest::get(server.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("gitops_status_notifications_pending{receiver=\"hook\"} 0")
            && metrics
                .contains("gitops_status_notifications_oldest_pending_seconds{receiver=\"hook\"} 0")
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A receiver that accepts connections and never answers; returns its URL and how many
/// connections it holds.
async fn silent_receiver() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&held);
    tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sockets.push(socket);
        }
    });
    (url, held)
}

async fn a_receiver_that_never_answers_does_not_slow_ingest(backend: Backend) {
    let app = TestApp::on(backend).await;
    let (url, held) = silent_receiver().await;
    notify_to(&app, &url, "");
    app.record(&snapshot("slow", "s0", "ERROR", &[], &at_offset(-120)))
        .await;
    // A delivery task is now stuck in an attempt (15 s until its timeout).
    let start = Instant::now();
    while held.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "never attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 200 snapshots, half of them transitions, while the delivery tasks hang on the receiver:
    // had a record waited on a delivery, it would have waited out the attempt's 15 s timeout.
    let mut slowest = Duration::ZERO;
    for n in 0..200 {
        let state = if n % 2 == 0 { "OUT_OF_SYNC" } else { "SYNCED" };
        let at = at_offset(-100 + n / 2);
        let target = format!("s{}", 1 + (n / 2) % 10);
        let files: &[&str] = if n % 2 == 0 { &["a.conf"] } else { &[] };
        let mut body = snapshot("slow", &target, state, files, &at);
        body["last_check"] = json!(format!("{}.{:03}Z", at.trim_end_matches('Z'), n));
        let start = Instant::now();
        app.record(&body).await;
        slowest = slowest.max(start.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(5),
        "a snapshot took {slowest:?}"
    );
    // The dispatcher went on deciding too: the outbox holds the new drift, undelivered.
    let start = Instant::now();
    loop {
        let pending = app.get("/api/notifications?state=pending").await.json();
        if pending.as_array().unwrap().len() > 10 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{pending}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

backend_tests! {
    a_receiver_that_never_answers_does_not_slow_ingest,
    a_real_alertmanager_fires_while_the_episode_lasts_then_resolves,
    reminders_repeat_while_the_state_lasts,
    an_acknowledged_target_stays_quiet,
    episode_sends_one_started_and_one_resolved,
    flap_shorter_than_for_sends_nothing,
    a_retry_carries_the_same_event_id,
    stale_is_found_by_the_clock;
    multi_thread: kill_9_loses_no_pending_notification,
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

/// A real Alertmanager on a free port with its own configuration and storage; killed when
/// dropped.
struct Alertmanager {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    async fn start(executable: &std::path::Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: nobody\n  group_wait: 1s\nreceivers:\n  - name: nobody\n",
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let child = std::process::Command::new(executable)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No gossip: one Alertmanager, no port of its own to collide with.
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let alertmanager = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            let ready = reqwest::get(format!("{}/-/ready", alertmanager.url)).await;
            if ready.is_ok_and(|response| response.status().is_success()) {
                return alertmanager;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "Alertmanager was not ready in 30 s: {}",
                std::fs::read_to_string(alertmanager._dir.path().join("alertmanager.log"))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Alertmanager's own view of our alert for rsyslog/lab: `GET /api/v2/alerts` lists firing
    /// alerts only; a resolved one is gone from it.
    async fn alert(&self) -> Option<Value> {
        let alerts: Value = reqwest::get(format!("{}/api/v2/alerts", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        alerts
            .as_array()
            .unwrap()
            .iter()
            .find(|alert| alert["labels"]["repo"] == "rsyslog")
            .cloned()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn millis_of(alert: &Value, field: &str) -> i64 {
    let text = alert[field].as_str().unwrap();
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|error| panic!("{field} {text:?}: {error}"));
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap()
}

fn now_millis() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap()
}

async fn a_real_alertmanager_fires_while_the_episode_lasts_then_resolves(backend: Backend) {
    let test = "a_real_alertmanager_fires_while_the_episode_lasts_then_resolves";
    let Some(executable) = common::tools::ALERTMANAGER.require(test) else {
        return;
    };
    let alertmanager = Alertmanager::start(&executable).await;
    let app = TestApp::on(backend).await;
    let config = NotifyConfig::parse(&format!(
        "[[receivers]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"{}\"\n\
         [[routes]]\nreceiver = \"am\"\nfor = \"1s\"\n",
        alertmanager.url
    ))
    .unwrap();
    // Re-sent every 300 ms, each post firing for 3 s more: without the re-sends Alertmanager
    // would let the alert end 3 s after it was first posted.
    let hold = Duration::from_secs(3);
    let options = NotifyOptions {
        every: Duration::from_millis(50),
        alert_every: Duration::from_millis(300),
        alert_hold: hold,
        ..NotifyOptions::new(600)
    };
    notify::spawn(app.store.clone(), config, options);
    let drifted = at_offset(-10);
    app.record(&snapshot(
        "rsyslog",
        "lab",
        "OUT_OF_SYNC",
        &["a.conf"],
        &drifted,
    ))
    .await;

    let start = Instant::now();
    let first = loop {
        if let Some(alert) = alertmanager.alert().await
            && alert["status"]["state"] == "active"
        {
            break alert;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never fired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        first["labels"],
        json!({"alertname": "GitOpsDrift", "repo": "rsyslog", "server": "lab", "state": "OUT_OF_SYNC"}),
        "{first}"
    );
    assert_eq!(millis_of(&first, "startsAt"), unix_millis(&drifted));
    let first_ends = millis_of(&first, "endsAt");

    // Well past the first post's endsAt, the episode lasts and so does the alert.
    tokio::time::sleep(hold + Duration::from_secs(1)).await;
    assert!(now_millis() > first_ends);
    let still = alertmanager
        .alert()
        .await
        .unwrap_or_else(|| panic!("the alert ended while the episode lasts"));
    assert_eq!(still["status"]["state"], "active", "{still}");
    assert_eq!(still["startsAt"], first["startsAt"]);
    let last_ends = millis_of(&still, "endsAt");
    assert!(last_ends > first_ends, "{first} then {still}");

    // The target is synced: the alert is resolved, well before the last post's endsAt.
    app.record(&snapshot("rsyslog", "lab", "SYNCED", &[], &at_offset(0)))
        .await;
    let start = Instant::now();
    while alertmanager.alert().await.is_some() {
        assert!(start.elapsed() < Duration::from_secs(20), "never resolved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        now_millis() < last_ends,
        "gone only because it was not re-sent, not resolved"
    );
    // Nothing re-fires it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(alertmanager.alert().await, None);
    let delivered = app.get("/api/notifications?state=delivered").await.json();
    let kinds: Vec<&str> = delivered
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["resolved", "started"], "{delivered}");
}
