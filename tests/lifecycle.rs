//! The drift lifecycle (SPEC "Drift lifecycle") on both databases: acknowledgements and their
//! rules, silences, retirement and revival, each recorded on the chain and shown by the views.

mod common;

use axum::body::Body;
use axum::http::{Method, Request};
use common::*;
use gitops_status_server::timestamp::Timestamp;
use serde_json::{Value, json};

backend_tests! {
    an_acknowledgement_shows_in_status_and_metrics_and_ends_when_synced,
    a_file_outside_the_globs_makes_the_drift_unacknowledged,
    acknowledgement_rules_name_the_field_and_store_nothing,
    a_new_acknowledgement_replaces_the_one_in_force_and_delete_ends_it,
    an_acknowledgement_expires_at_until,
    silences_are_recorded_once_listed_and_deleted,
    silence_rules_name_the_field_and_store_nothing,
    retirement_hides_a_target_until_its_next_snapshot,
    the_outbox_holds_every_transition_written_with_its_cause,
}

fn until_in(millis: i64) -> String {
    Timestamp::now().plus_millis(millis).to_string()
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

async fn drift(app: &TestApp, server: &str, files: &[&str], offset_seconds: i64) -> Value {
    let files: Vec<Value> = files.iter().map(|name| json!({ "name": name })).collect();
    app.record(&json!({
        "repo": "rsyslog", "server": server, "sync_status": "OUT_OF_SYNC",
        "files": files, "last_check": at_offset(offset_seconds),
    }))
    .await
}

async fn ack(app: &TestApp, server: &str, extra: Value) -> TestResponse {
    let mut body = json!({
        "repo": "rsyslog", "server": server, "reason": "hotfix INC-1, PR #312",
        "until": until_in(86_400_000),
    });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    send(app, Method::POST, "/api/acks", Some(body)).await
}

fn status_row(rows: &[Value], server: &str) -> Value {
    rows.iter()
        .find(|row| row["server"] == server)
        .cloned()
        .unwrap_or_else(|| panic!("no {server} in {rows:?}"))
}

async fn an_acknowledgement_shows_in_status_and_metrics_and_ends_when_synced(backend: Backend) {
    let app = TestApp::on(backend).await;
    drift(&app, "lab", &["rsyslog.conf"], -120).await;
    let made = ack(&app, "lab", json!({})).await;
    assert_eq!(made.status, 201, "{}", made.text());
    let made = made.json();
    assert_eq!(made["by"], "anonymous");
    assert_eq!(made["ended_at"], Value::Null);
    let id = made["id"].as_i64().unwrap();

    let row = status_row(&app.get_rows("/status.json").await, "lab");
    assert_eq!(row["state"], "OUT_OF_SYNC", "the state is unchanged");
    assert_eq!(row["acknowledged"]["id"], id);
    assert_eq!(row["acknowledged"]["reason"], "hotfix INC-1, PR #312");
    assert_eq!(row["acknowledged"]["by"], "anonymous");
    assert_eq!(row["acknowledged"]["until"], made["until"]);
    let metrics = app.get("/metrics").await.text();
    assert!(
        metrics.contains("gitops_drift_acknowledged{repo=\"rsyslog\",server=\"lab\"} 1"),
        "{metrics}"
    );
    assert_eq!(app.get(&format!("/api/acks/{id}")).await.json(), made);

    // Still drifting: the acknowledgement stays. SYNCED: it ends, resolved, and is recorded.
    drift(&app, "lab", &["rsyslog.conf"], -60).await;
    assert_eq!(
        status_row(&app.get_rows("/status.json").await, "lab")["acknowledged"]["id"],
        id
    );
    let synced = app
        .record(
            &json!({"repo": "rsyslog", "server": "lab", "sync_status": "SYNCED",
                        "last_check": at_offset(-30)}),
        )
        .await;
    let ended = app.get(&format!("/api/acks/{id}")).await.json();
    assert_eq!(ended["end_reason"], "resolved");
    assert_eq!(ended["ended_by"], Value::Null);
    // That check was made before the acknowledgement (it arrived after it): the acknowledgement
    // ends the moment it began, never before.
    assert!(synced["last_check"].as_str().unwrap() < made["created_at"].as_str().unwrap());
    assert_eq!(ended["ended_at"], made["created_at"]);
    let row = status_row(&app.get_rows("/status.json").await, "lab");
    assert_eq!(row["acknowledged"], Value::Null);
    assert!(
        app.get("/metrics")
            .await
            .text()
            .contains("gitops_drift_acknowledged{repo=\"rsyslog\",server=\"lab\"} 0")
    );
    assert_eq!(app.get_rows("/api/acks?active=true").await.len(), 0);
    assert_eq!(app.get_rows("/api/acks?active=false").await.len(), 1);
    assert_eq!(
        app.query_i64("select count(*) from events where kind = 'ack_end'")
            .await,
        1
    );
    // A SYNCED target has nothing to acknowledge.
    ack(&app, "lab", json!({})).await.assert_problem(409, &[]);

    // A SYNCED check made after the acknowledgement ends it when it was made.
    drift(&app, "lab", &["rsyslog.conf"], -1).await;
    let again = ack(&app, "lab", json!({})).await.json();
    let synced = app
        .record(&json!({"repo": "rsyslog", "server": "lab", "sync_status": "SYNCED"}))
        .await;
    let ended = app.get(&format!("/api/acks/{}", again["id"])).await.json();
    assert_eq!(ended["end_reason"], "resolved");
    assert!(synced["last_check"].as_str().unwrap() >= again["created_at"].as_str().unwrap());
    assert_eq!(ended["ended_at"], synced["last_check"]);
}

async fn a_file_outside_the_globs_makes_the_drift_unacknowledged(backend: Backend) {
    let app = TestApp::on(backend).await;
    drift(&app, "lab", &["rsyslog.d/10-a.conf"], -120).await;
    let made = ack(&app, "lab", json!({"files": ["rsyslog.d/*"]})).await;
    assert_eq!(made.status, 201, "{}", made.text());
    assert!(status_row(&app.get_rows("/status.json").await, "lab")["acknowledged"].is_object());
    drift(&app, "lab", &["rsyslog.d/10-a.conf", "rsyslog.conf"], -60).await;
    assert_eq!(
        status_row(&app.get_rows("/status.json").await, "lab")["acknowledged"],
        Value::Null,
        "rsyslog.conf is outside the globs"
    );
    // The acknowledgement itself is still in force: the drift within its globs is covered again.
    drift(&app, "lab", &["rsyslog.d/20-b.conf"], -30).await;
    assert!(status_row(&app.get_rows("/status.json").await, "lab")["acknowledged"].is_object());
}

async fn acknowledgement_rules_name_the_field_and_store_nothing(backend: Backend) {
    let app = TestApp::on(backend).await;
    drift(&app, "lab", &["a"], -60).await;
    let cases = [
        (json!({"reason": ""}), "reason"),
        (json!({"reason": "x".repeat(1001)}), "reason"),
        (json!({"until": until_in(-1000)}), "until"),
        (json!({"until": until_in(91 * 86_400_000)}), "until"),
        (json!({"until": "tomorrow"}), "until"),
        (json!({"files": ["ok/*", "bad["]}), "files[1]"),
        (json!({"files": "a"}), "files"),
        (json!({"extra": 1}), "extra"),
    ];
    for (extra, field) in cases {
        ack(&app, "lab", extra).await.assert_problem(422, &[field]);
    }
    let missing = send(
        &app,
        Method::POST,
        "/api/acks",
        Some(json!({"repo": "rsyslog"})),
    )
    .await;
    missing.assert_problem(422, &["reason", "server", "until"]);
    send(&app, Method::POST, "/api/acks", None)
        .await
        .assert_problem(415, &[]);
    ack(&app, "nowhere", json!({}))
        .await
        .assert_problem(404, &[]);
    app.get("/api/acks/12345").await.assert_problem(404, &[]);
    app.get("/api/acks/x").await.assert_problem(404, &[]);
    send(&app, Method::DELETE, "/api/acks/12345", None)
        .await
        .assert_problem(404, &[]);
    app.get("/api/acks?active=maybe")
        .await
        .assert_problem(400, &["active"]);
    assert_eq!(app.query_i64("select count(*) from events").await, 0);
    assert_eq!(app.query_i64("select count(*) from acks").await, 0);
}

async fn a_new_acknowledgement_replaces_the_one_in_force_and_delete_ends_it(backend: Backend) {
    let app = TestApp::on(backend).await;
    drift(&app, "lab", &["a"], -60).await;
    let first = ack(&app, "lab", json!({})).await.json();
    let second = ack(&app, "lab", json!({"reason": "a better reason"}))
        .await
        .json();
    let first = app.get(&format!("/api/acks/{}", first["id"])).await.json();
    assert_eq!(first["end_reason"], "replaced");
    let row = status_row(&app.get_rows("/status.json").await, "lab");
    assert_eq!(row["acknowledged"]["id"], second["id"]);

    let uri = format!("/api/acks/{}", second["id"]);
    for _ in 0..2 {
        let deleted = send(&app, Method::DELETE, &uri, None).await;
        assert_eq!(deleted.status, 204, "{}", deleted.text());
    }
    let second = app.get(&uri).await.json();
    assert_eq!(second["end_reason"], "deleted");
    assert_eq!(second["ended_by"], "anonymous");
    assert_eq!(
        status_row(&app.get_rows("/status.json").await, "lab")["acknowledged"],
        Value::Null
    );
    // ack, ack_end (replaced), ack, ack_end (deleted): the second DELETE recorded nothing.
    assert_eq!(app.query_i64("select count(*) from events").await, 4);
}

async fn an_acknowledgement_expires_at_until(backend: Backend) {
    let app = TestApp::on(backend).await;
    drift(&app, "lab", &["a"], -60).await;
    let made = ack(&app, "lab", json!({"until": until_in(1500)}))
        .await
        .json();
    assert!(status_row(&app.get_rows("/status.json").await, "lab")["acknowledged"].is_object());
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    // Past until, no view shows it, even before the expiry is recorded.
    assert_eq!(
        status_row(&app.get_rows("/status.json").await, "lab")["acknowledged"],
        Value::Null
    );
    assert_eq!(app.get_rows("/api/acks?active=true").await.len(), 0);
    gitops_status_server::expiry::expire(&app.store, Timestamp::now())
        .await
        .unwrap();
    // Twice, as two replicas might: recorded once.
    gitops_status_server::expiry::expire(&app.store, Timestamp::now())
        .await
        .unwrap();
    let ended = app.get(&format!("/api/acks/{}", made["id"])).await.json();
    assert_eq!(ended["end_reason"], "expired");
    assert_eq!(ended["ended_at"], made["until"]);
    assert_eq!(
        app.query_i64("select count(*) from events where kind = 'ack_end'")
            .await,
        1
    );
}

async fn silences_are_recorded_once_listed_and_deleted(backend: Backend) {
    let app = TestApp::on(backend).await;
    for server in ["db-1", "db-2", "web-1"] {
        drift(&app, server, &["a"], -60).await;
    }
    let made = send(
        &app,
        Method::POST,
        "/api/silences",
        Some(json!({"servers": ["db-*"], "ends_at": until_in(3_600_000),
                    "reason": "PostgreSQL upgrade"})),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let made = made.json();
    assert_eq!(made["repos"], json!(["*"]));
    assert_eq!(made["by"], "anonymous");
    // Recorded once, on the fleet chain, however many targets it matches.
    assert_eq!(
        app.query_i64("select count(*) from events where target_id is null")
            .await,
        1
    );
    assert_eq!(app.get_rows("/api/silences?active=true").await.len(), 1);
    let uri = format!("/api/silences/{}", made["id"]);
    assert_eq!(app.get(&uri).await.json(), made);
    for _ in 0..2 {
        assert_eq!(send(&app, Method::DELETE, &uri, None).await.status, 204);
    }
    let deleted = app.get(&uri).await.json();
    assert!(deleted["deleted_at"].is_string());
    assert_eq!(app.get_rows("/api/silences?active=true").await.len(), 0);
    assert_eq!(app.get_rows("/api/silences?active=false").await.len(), 1);
    assert_eq!(
        app.query_i64("select count(*) from events where target_id is null")
            .await,
        2
    );
    send(&app, Method::DELETE, "/api/silences/999", None)
        .await
        .assert_problem(404, &[]);
}

async fn silence_rules_name_the_field_and_store_nothing(backend: Backend) {
    let app = TestApp::on(backend).await;
    let silence = |body: Value| send(&app, Method::POST, "/api/silences", Some(body));
    let cases = [
        (
            json!({"ends_at": until_in(31 * 86_400_000), "reason": "x"}),
            "ends_at",
        ),
        (
            json!({"ends_at": until_in(-1000), "reason": "x"}),
            "ends_at",
        ),
        (
            json!({"starts_at": until_in(7_200_000), "ends_at": until_in(3_600_000), "reason": "x"}),
            "ends_at",
        ),
        (
            json!({"starts_at": until_in(-86_400_000), "ends_at": until_in(3_600_000), "reason": "x"}),
            "starts_at",
        ),
        (
            json!({"ends_at": until_in(3_600_000), "reason": ""}),
            "reason",
        ),
        (
            json!({"ends_at": until_in(3_600_000), "reason": "x", "repos": []}),
            "repos",
        ),
        (
            json!({"ends_at": until_in(3_600_000), "reason": "x", "servers": ["{a,b}"]}),
            "servers[0]",
        ),
    ];
    for (body, field) in cases {
        silence(body).await.assert_problem(422, &[field]);
    }
    assert_eq!(app.query_i64("select count(*) from silences").await, 0);
    assert_eq!(app.query_i64("select count(*) from events").await, 0);
}

async fn retirement_hides_a_target_until_its_next_snapshot(backend: Backend) {
    let app = TestApp::on(backend).await;
    drift(&app, "old", &["a"], -120).await;
    drift(&app, "kept", &["a"], -120).await;
    let retired = send(&app, Method::DELETE, "/api/targets/rsyslog/old", None).await;
    assert_eq!(retired.status, 204, "{}", retired.text());
    let servers = |rows: Vec<Value>| -> Vec<String> {
        rows.iter()
            .map(|row| row["server"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(servers(app.get_rows("/status.json").await), ["kept"]);
    assert!(!app.get("/metrics").await.text().contains("server=\"old\""));
    assert_eq!(servers(app.get_rows("/api/targets").await), ["kept"]);
    let all = app.get_rows("/api/targets?include_retired=true").await;
    assert_eq!(servers(all.clone()), ["kept", "old"]);
    assert!(all[1]["retired_at"].is_string());
    assert_eq!(all[1]["state"], "OUT_OF_SYNC");
    // Its history stays.
    assert_eq!(
        app.get_rows("/history?repo=rsyslog&server=old").await.len(),
        1
    );
    send(&app, Method::DELETE, "/api/targets/rsyslog/nowhere", None)
        .await
        .assert_problem(404, &[]);
    // Percent-encoded segments name the target.
    drift(&app, "rack/1 a", &["a"], -60).await;
    let encoded = send(
        &app,
        Method::DELETE,
        "/api/targets/rsyslog/rack%2F1%20a",
        None,
    )
    .await;
    assert_eq!(encoded.status, 204, "{}", encoded.text());
    assert_eq!(servers(app.get_rows("/status.json").await), ["kept"]);

    // A later snapshot brings it back, and that is recorded.
    drift(&app, "old", &["b"], -30).await;
    assert_eq!(servers(app.get_rows("/status.json").await), ["kept", "old"]);
    assert_eq!(
        app.query_i64("select count(*) from events where kind = 'revive'")
            .await,
        1
    );
    let all = app.get_rows("/api/targets?include_retired=true").await;
    assert!(
        all.iter()
            .all(|target| target["server"] != "old" || target["retired_at"].is_null())
    );
}

/// Status changes and acknowledgements land in the notifications' outbox in the transaction
/// of the record that caused them; checks that change nothing, and late checks, add nothing.
async fn the_outbox_holds_every_transition_written_with_its_cause(backend: Backend) {
    let app = TestApp::on(backend).await;
    let post = |status: &str, offset: i64| {
        json!({"repo": "rsyslog", "server": "lab", "sync_status": status,
               "files": if status == "OUT_OF_SYNC" { json!([{"name": "a"}]) } else { json!([]) },
               "last_check": at_offset(offset)})
    };
    app.record(&post("SYNCED", -600)).await;
    let drifted = app.record(&post("OUT_OF_SYNC", -500)).await;
    app.record(&post("OUT_OF_SYNC", -400)).await;
    let made = ack(&app, "lab", json!({})).await.json();
    let failed = app.record(&post("ERROR", -300)).await;
    let synced = app.record(&post("SYNCED", -200)).await;
    // Late, into the past: history only.
    app.record(&post("ERROR", -550)).await;
    let ended = app.get(&format!("/api/acks/{}", made["id"])).await.json();
    assert_eq!(ended["end_reason"], "resolved");

    let id = |value: &Value| value["id"].as_i64().unwrap();
    let ack_end = app
        .query_i64("select id from events where kind = 'ack_end'")
        .await;
    let expected = [
        ("entered", "OUT_OF_SYNC", id(&drifted)),
        ("ack", "OUT_OF_SYNC", id(&made)),
        ("left", "OUT_OF_SYNC", id(&failed)),
        ("entered", "ERROR", id(&failed)),
        ("left", "ERROR", id(&synced)),
        ("ack_end", "SYNCED", ack_end),
    ];
    assert_eq!(
        app.query_i64("select count(*) from transitions").await,
        expected.len() as i64
    );
    let mut previous = 0;
    for (kind, state, record) in expected {
        let row = app
            .query_i64(&format!(
                "select id from transitions where kind = '{kind}' and state = '{state}' \
                 and record_id = {record}"
            ))
            .await;
        assert!(row > previous, "{kind} {state} out of order");
        previous = row;
    }
}
