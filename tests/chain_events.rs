//! Events on the integrity chain (docs/audit.md, "Events"): acknowledgements, silences,
//! retirements and their ends are chained with the snapshots. `verify` checks every chain and
//! the rows the API reads against them, names a tampered record, retention keeps them verifiable,
//! `GET /api/chain/events` exports them and `examples/verify_export.py` re-checks the exports.
//!
//! The histories are stored with SQL (`common::chain_builder`), hashed with the server's
//! encoding, so these tests hold whatever writes the events.

mod common;

use std::process::Command;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::chain_builder::{ChainBuilder, T0, millis};
use common::{Backend, TestApp, TestResponse, at_offset};
use gitops_status_server::model::SyncStatus::{Error, OutOfSync, Synced};
use gitops_status_server::timestamp::Timestamp;
use serde_json::{Value, json};

backend_tests! {
    a_history_with_events_verifies_and_counts_every_record,
    verify_names_each_tampered_event_and_disagreeing_row,
    chain_events_export_selects_chains_in_id_order,
    the_independent_script_rechecks_snapshots_and_events_together,
    pruning_around_events_keeps_every_chain_verifiable,
    events_the_api_records_verify_export_recheck_and_survive_retention,
}

/// Targets r/a and r/b and the fleet chain, ids in arrival order:
///
/// | id | chain | record |
/// |----|-------|--------|
/// | 1 | a | SYNCED |
/// | 2 | b | SYNCED |
/// | 3 | a | OUT_OF_SYNC x.conf |
/// | 4 | a | ack "hotfix" (files x.*) |
/// | 5 | fleet | silence |
/// | 6 | a | OUT_OF_SYNC x.conf |
/// | 7 | b | ERROR |
/// | 8 | a | SYNCED |
/// | 9 | a | ack_end of 4, resolved by 8 |
/// | 10 | fleet | silence_end of 5 |
/// | 11 | b | retire |
/// | 12 | b | SYNCED (late) |
/// | 13 | b | revive by 12 (b's newest) |
/// | 14 | a | OUT_OF_SYNC y.conf |
/// | 15 | a | ack "second", open |
/// | 16 | a | OUT_OF_SYNC y.conf (a's newest) |
/// | 17 | fleet | silence, open (the fleet chain's newest) |
fn lifecycle_history(backend: Backend) -> ChainBuilder {
    let mut history = ChainBuilder::new(backend);
    history.snapshot("r", "a", 0, Synced, &[]);
    history.snapshot("r", "b", 0, Synced, &[]);
    history.snapshot("r", "a", 120, OutOfSync, &["x.conf"]);
    let ack = history.ack(
        ("r", "a"),
        150,
        "hotfix «INC-7»\n'quoted'",
        86_400,
        Some(&["x.*"]),
        "alice",
    );
    let silence = history.silence(160, &["r"], &["*"], (200, 4000), "maintenance", "ops");
    history.snapshot("r", "a", 240, OutOfSync, &["x.conf"]);
    history.snapshot("r", "b", 120, Error, &[]);
    let synced = history.snapshot("r", "a", 360, Synced, &[]);
    history.ack_end(("r", "a"), 361, ack, "resolved", None, Some(synced));
    history.silence_end(400, silence, "ops");
    history.retire("r", "b", 500, "ops");
    let late = history.snapshot("r", "b", 600, Synced, &[]);
    history.revive("r", "b", 601, late);
    history.snapshot("r", "a", 720, OutOfSync, &["y.conf"]);
    history.ack(("r", "a"), 730, "second", 172_800, None, "bob");
    history.snapshot("r", "a", 840, OutOfSync, &["y.conf"]);
    history.silence(900, &["*"], &["db-*"], (1000, 2000), "reboots", "ops");
    assert_eq!(history.last_id(), 17);
    history
}

async fn lifecycle_app(backend: Backend) -> TestApp {
    TestApp::on_history(backend, &lifecycle_history(backend).statements()).await
}

async fn verification(app: &TestApp) -> Value {
    let response = app.get("/api/verify").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    response.json()
}

/// `gitops-status-server verify`: its exit code and the JSON it prints.
fn verify_cli(database_url: &str) -> (Option<i32>, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_gitops-status-server"))
        .args(["verify", "--database-url", database_url])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let printed = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!(
            "{error}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), printed)
}

fn events_of(body: &str) -> Vec<Value> {
    body.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn a_history_with_events_verifies_and_counts_every_record(backend: Backend) {
    let app = lifecycle_app(backend).await;
    assert_eq!(
        verification(&app).await,
        json!({"ok": true, "checked": 17, "first_bad": null})
    );
    assert_eq!(
        verify_cli(&app.database_url),
        (Some(0), verification(&app).await)
    );
    assert_eq!(app.all_history().await.len(), 9);
}

/// One edit behind the server's back, and what verify must name: `(id, record, kind, server)`.
struct Case {
    what: &'static str,
    statements: Vec<&'static str>,
    id: i64,
    record: &'static str,
    kind: Option<&'static str>,
    server: &'static str,
}

fn case(
    what: &'static str,
    statements: Vec<&'static str>,
    (id, record, kind, server): (i64, &'static str, Option<&'static str>, &'static str),
) -> Case {
    Case {
        what,
        statements,
        id,
        record,
        kind,
        server,
    }
}

async fn verify_names_each_tampered_event_and_disagreeing_row(backend: Backend) {
    let other_hash = "update events set hash = (select hash from events where id = 11) \
                      where id = 13";
    let cases = [
        // Events: every hashed field, the hash, deletion, moves.
        case(
            "event body",
            vec!["update events set body = replace(body, 'hotfix', 'approved') where id = 4"],
            (4, "event", Some("ack"), "a"),
        ),
        case(
            "event kind",
            vec!["update events set kind = 'revive' where id = 11"],
            (11, "event", Some("revive"), "b"),
        ),
        // Named before the acks row that now disagrees with it.
        case(
            "event time",
            vec!["update events set at = at + 1 where id = 9"],
            (9, "event", Some("ack_end"), "a"),
        ),
        case(
            "event hash",
            vec![other_hash],
            (13, "event", Some("revive"), "b"),
        ),
        case(
            "middle event deleted",
            vec!["delete from events where id = 4"],
            (6, "snapshot", None, "a"),
        ),
        case(
            "a target's newest event deleted",
            vec!["delete from events where id = 13"],
            (13, "target", None, "b"),
        ),
        case(
            "middle fleet event deleted",
            vec!["delete from events where id = 10"],
            (17, "event", Some("silence"), ""),
        ),
        case(
            "event moved to another target",
            vec!["update events set target_id = 2 where id = 9"],
            (9, "event", Some("ack_end"), "b"),
        ),
        case(
            "event moved to the fleet chain",
            vec!["update events set target_id = null where id = 15"],
            (15, "event", Some("ack"), ""),
        ),
        // The rows the API reads, against their events.
        case(
            "ack reason",
            vec!["update acks set reason = 'approved' where id = 4"],
            (4, "ack", None, "a"),
        ),
        case(
            "ack by",
            vec!["update acks set \"by\" = 'mallory' where id = 15"],
            (15, "ack", None, "a"),
        ),
        case(
            "ack until",
            vec!["update acks set until = until + 86400000 where id = 15"],
            (15, "ack", None, "a"),
        ),
        case(
            "ack files",
            vec!["update acks set files = '[\"*\"]' where id = 4"],
            (4, "ack", None, "a"),
        ),
        case(
            "ack files removed",
            vec!["update acks set files = null where id = 4"],
            (4, "ack", None, "a"),
        ),
        case(
            "ack ended_at",
            vec!["update acks set ended_at = ended_at + 1 where id = 4"],
            (4, "ack", None, "a"),
        ),
        case(
            "ack end_reason",
            vec!["update acks set end_reason = 'expired' where id = 4"],
            (4, "ack", None, "a"),
        ),
        case(
            "ack ended_by",
            vec!["update acks set ended_by = 'ops' where id = 4"],
            (4, "ack", None, "a"),
        ),
        case(
            "open ack ended in its row only",
            vec![
                "update acks set ended_at = 1, end_reason = 'deleted', ended_by = 'x' where id = 15",
            ],
            (15, "ack", None, "a"),
        ),
        case(
            "ack row deleted",
            vec!["delete from acks where id = 15"],
            (15, "ack", None, "a"),
        ),
        case(
            "ack row added",
            vec![
                "insert into acks (id, target_id, reason, \"by\", files, created_at, until) \
                 values (99, 2, 'forged', 'mallory', null, 0, 1)",
            ],
            (99, "ack", None, "b"),
        ),
        case(
            "silence window",
            vec!["update silences set ends_at = ends_at + 1 where id = 5"],
            (5, "silence", None, ""),
        ),
        case(
            "silence globs",
            vec!["update silences set servers = '[\"web-*\"]' where id = 17"],
            (17, "silence", None, ""),
        ),
        case(
            "silence un-deleted",
            vec!["update silences set deleted_at = null, deleted_by = null where id = 5"],
            (5, "silence", None, ""),
        ),
        case(
            "silence row deleted",
            vec!["delete from silences where id = 17"],
            (17, "silence", None, ""),
        ),
        // The fleet chain has no recorded head: its newest event removed with nothing else is
        // found by the row it leaves behind.
        case(
            "the fleet chain's newest event deleted",
            vec!["delete from events where id = 17"],
            (17, "silence", None, ""),
        ),
        case(
            "acknowledgement in force cleared",
            vec!["update targets set ack_id = null where id = 1"],
            (15, "target", None, "a"),
        ),
        case(
            "ended acknowledgement put back in force",
            vec!["update targets set ack_id = 4 where id = 1"],
            (4, "target", None, "a"),
        ),
        case(
            "retired behind the server's back",
            vec!["update targets set retired_at = 1 where id = 2"],
            (13, "target", None, "b"),
        ),
    ];
    let history = lifecycle_history(backend).statements();
    for case in cases {
        let app = TestApp::on_history(backend, &history).await;
        app.execute_all(&case.statements).await;
        let outcome = verification(&app).await;
        let what = case.what;
        assert_eq!(outcome["ok"], false, "{what}: {outcome}");
        let bad = &outcome["first_bad"];
        assert_eq!(
            (
                bad["id"].as_i64(),
                bad["record"].as_str(),
                bad["kind"].as_str(),
                bad["repo"].as_str(),
                bad["server"].as_str()
            ),
            (
                Some(case.id),
                Some(case.record),
                case.kind,
                Some(if case.server.is_empty() { "" } else { "r" }),
                Some(case.server)
            ),
            "{what}: {outcome}"
        );
        assert!(
            !bad["reason"].as_str().unwrap().is_empty(),
            "{what}: {outcome}"
        );
        assert_eq!(verify_cli(&app.database_url), (Some(1), outcome), "{what}");
    }
}

async fn chain_events_export_selects_chains_in_id_order(backend: Backend) {
    let app = lifecycle_app(backend).await;
    let ids = |body: &str| -> Vec<i64> {
        events_of(body)
            .iter()
            .map(|event| event["id"].as_i64().unwrap())
            .collect()
    };
    let all = app.get("/api/chain/events").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text());
    assert_eq!(all.content_type(), "application/x-ndjson");
    assert_eq!(ids(&all.text()), [4, 5, 9, 10, 11, 13, 15, 17]);
    let events = events_of(&all.text());
    assert_eq!(
        events[0],
        json!({
            "id": 4, "repo": "r", "server": "a", "kind": "ack",
            "at": Timestamp::from_millis(millis(150)).to_string(), "at_ms": millis(150),
            "body": {
                "reason": "hotfix «INC-7»\n'quoted'",
                "until": Timestamp::from_millis(millis(86_400)).to_string(),
                "files": ["x.*"], "by": "alice"
            },
            "hash": events[0]["hash"],
        })
    );
    // The body's bytes are the stored ones, keys in their stored order.
    let line = all.text().lines().next().unwrap().to_owned();
    assert!(
        line.contains(r#""body":{"reason":"hotfix «INC-7»\n'quoted'","until":"#),
        "{line}"
    );
    assert_eq!(events[1]["repo"], Value::Null);
    assert_eq!(events[1]["server"], Value::Null);
    assert_eq!(events[0]["hash"].as_str().unwrap().len(), 64);

    for (query, expected) in [
        ("repo=r", vec![4, 9, 11, 13, 15]),
        ("server=b", vec![11, 13]),
        ("repo=r&server=a", vec![4, 9, 15]),
        ("repo=r&server=a&fleet=true", vec![4, 5, 9, 10, 15, 17]),
        ("fleet=true", vec![4, 5, 9, 10, 11, 13, 15, 17]),
        ("fleet=false", vec![4, 9, 11, 13, 15]),
        ("server=b&fleet=false", vec![11, 13]),
        ("repo=other", vec![]),
    ] {
        let response = app.get(&format!("/api/chain/events?{query}")).await;
        assert_eq!(response.status, StatusCode::OK, "{query}");
        assert_eq!(ids(&response.text()), expected, "{query}");
    }
    app.get("/api/chain/events?fleet=yes")
        .await
        .assert_problem(400, &["fleet"]);
    app.get("/api/chain/events?repo=")
        .await
        .assert_problem(400, &["repo"]);
    app.get("/api/chain/events?since=1")
        .await
        .assert_problem(400, &["since"]);
}

/// Runs examples/verify_export.py on the NDJSON exports of `/history?{query}` and, when
/// `events` is given, of `/api/chain/events?{events}`, with the checkpoints: its exit code,
/// its JSON, and stderr.
async fn recheck(app: &TestApp, query: &str, events: Option<&str>) -> (Option<i32>, Value, String) {
    let dir = app.dir.path();
    let history = app.get(&format!("/history?format=ndjson&{query}")).await;
    assert_eq!(history.status, StatusCode::OK);
    std::fs::write(dir.join("trail.ndjson"), &history.body).unwrap();
    let checkpoints = app.get("/api/checkpoints").await;
    std::fs::write(dir.join("checkpoints.json"), &checkpoints.body).unwrap();
    let mut command = Command::new("python3");
    command
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/verify_export.py"
        ))
        .arg(dir.join("trail.ndjson"))
        .arg("--checkpoints")
        .arg(dir.join("checkpoints.json"));
    if let Some(events) = events {
        let export = app.get(&format!("/api/chain/events?{events}")).await;
        assert_eq!(export.status, StatusCode::OK);
        std::fs::write(dir.join("events.ndjson"), &export.body).unwrap();
        command.arg("--events").arg(dir.join("events.ndjson"));
    }
    let output = command
        .output()
        .expect("python3 runs examples/verify_export.py");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    let outcome = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.code(), outcome, stderr)
}

fn without_reason(mut outcome: Value) -> Value {
    if let Some(bad) = outcome["first_bad"].as_object_mut() {
        bad.remove("reason");
    }
    outcome
}

async fn the_independent_script_rechecks_snapshots_and_events_together(backend: Backend) {
    let app = lifecycle_app(backend).await;
    let server = verification(&app).await;
    let (code, outcome, stderr) = recheck(&app, "", Some("")).await;
    assert_eq!((code, &outcome), (Some(0), &server), "{stderr}");

    // One target's history against the whole events export: other targets' events are left
    // out, the fleet chain is checked.
    let (code, outcome, stderr) = recheck(&app, "server=a", Some("")).await;
    assert_eq!(code, Some(0), "{outcome}{stderr}");
    assert_eq!(outcome["checked"], 6 + 3 + 3, "{outcome}");
    let (code, outcome, stderr) = recheck(&app, "server=b", Some("server=b")).await;
    assert_eq!(code, Some(0), "{outcome}{stderr}");
    assert_eq!(outcome["checked"], 3 + 2, "{outcome}");

    // Without the events the history no longer chains, and the script says what to add.
    let (code, outcome, _) = recheck(&app, "", None).await;
    assert_eq!(code, Some(1), "{outcome}");
    assert_eq!(outcome["first_bad"]["id"], 6, "{outcome}");
    assert!(
        outcome["first_bad"]["reason"]
            .as_str()
            .unwrap()
            .contains("--events"),
        "{outcome}"
    );

    // Both name the same tampered event, the same way.
    for (statement, id) in [
        (
            "update events set body = replace(body, 'alice', 'bob') where id = 4",
            4,
        ),
        ("update events set at = at + 1 where id = 17", 17),
        ("delete from events where id = 11", 12),
    ] {
        let app = lifecycle_app(backend).await;
        app.execute_all(&[statement]).await;
        let server = without_reason(verification(&app).await);
        assert_eq!(server["first_bad"]["id"], id, "{statement}: {server}");
        let (code, outcome, stderr) = recheck(&app, "", Some("")).await;
        assert_eq!(code, Some(1), "{statement}: {outcome}{stderr}");
        assert_eq!(without_reason(outcome), server, "{statement}");
    }

    // A trail without events re-checks as before, with or without the (empty) events export.
    let plain = {
        let mut history = ChainBuilder::new(backend);
        history.snapshot("r", "a", 0, Synced, &[]);
        history.snapshot("r", "a", 120, OutOfSync, &["x.conf"]);
        TestApp::on_history(backend, &history.statements()).await
    };
    for events in [None, Some("")] {
        let (code, outcome, stderr) = recheck(&plain, "", events).await;
        assert_eq!(code, Some(0), "{outcome}{stderr}");
        assert_eq!(outcome, verification(&plain).await);
    }
}

/// Heartbeats before the cutoff with events between them: retention removes the heartbeats,
/// never the events, and every gap's checkpoint follows the record retained before it, an
/// event where one is.
fn prunable_history(backend: Backend) -> ChainBuilder {
    let mut history = ChainBuilder::new(backend);
    // -3600 .. 0: heartbeats of a and b every 120 s, events among them.
    let mut ack = None;
    for (step, seconds) in (-3600..0).step_by(120).enumerate() {
        history.snapshot("r", "a", seconds, Synced, &[]);
        history.snapshot("r", "b", seconds, Synced, &[]);
        match step {
            3 => ack = Some(history.ack(("r", "a"), seconds + 1, "known", 86_400, None, "ops")),
            5 => {
                history.silence(seconds + 2, &["r"], &["*"], (0, 600), "window", "ops");
            }
            8 => {
                let ack = ack.unwrap();
                history.ack_end(("r", "a"), seconds + 3, ack, "deleted", Some("ops"), None);
            }
            11 => {
                history.retire("r", "b", seconds + 4, "ops");
            }
            12 => {
                let id = history.last_id();
                history.revive("r", "b", seconds + 5, id);
            }
            _ => {}
        }
    }
    for seconds in (0..600).step_by(120) {
        history.snapshot("r", "a", seconds, Synced, &[]);
        history.snapshot("r", "b", seconds, Synced, &[]);
    }
    history
}

async fn pruning_around_events_keeps_every_chain_verifiable(backend: Backend) {
    let history = prunable_history(backend);
    let records = history.last_id();
    let app = TestApp::on_history(backend, &history.statements()).await;
    assert_eq!(
        verification(&app).await,
        json!({"ok": true, "checked": records, "first_bad": null})
    );
    let events_before = app.get("/api/chain/events").await.text();

    let report = app.store.prune(Timestamp::from_millis(T0)).await.unwrap();
    // Each target keeps its first snapshot (a transition) and its last before the cutoff.
    assert_eq!(report.removed, 2 * (30 - 2), "{report:?}");
    assert_eq!(
        verification(&app).await,
        json!({"ok": true, "checked": records - report.removed, "first_bad": null})
    );
    assert_eq!(app.get("/api/chain/events").await.text(), events_before);
    let (code, outcome, stderr) = recheck(&app, "", Some("")).await;
    assert_eq!(code, Some(0), "{outcome}{stderr}");
    assert_eq!(outcome, verification(&app).await);

    // Some gaps start after an event: that event is the retained record they follow.
    let checkpoints = app.get_rows("/api/checkpoints").await;
    let event_ids: Vec<i64> = events_of(&events_before)
        .iter()
        .map(|event| event["id"].as_i64().unwrap())
        .collect();
    let after_events = checkpoints
        .iter()
        .filter(|checkpoint| event_ids.contains(&checkpoint["after_id"].as_i64().unwrap()))
        .count();
    assert_eq!(after_events, 4, "{checkpoints:?}");

    // A second, later cutoff widens the gaps and still verifies, and an edit is still caught.
    let report = app
        .store
        .prune(Timestamp::from_millis(T0 + 300_000))
        .await
        .unwrap();
    assert!(report.removed > 0, "{report:?}");
    assert_eq!(verification(&app).await["ok"], true);
    let (code, outcome, stderr) = recheck(&app, "", Some("")).await;
    assert_eq!(code, Some(0), "{outcome}{stderr}");
    app.execute_all(&[
        "update events set body = replace(body, 'known', 'unknown') where kind = 'ack'",
    ])
    .await;
    let outcome = verification(&app).await;
    assert_eq!(outcome["first_bad"]["kind"], "ack", "{outcome}");
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
    let response = app.request(request.body(body).unwrap()).await;
    assert!(response.status.is_success(), "{uri}: {}", response.text());
    response
}

async fn check(app: &TestApp, server: &str, seconds: i64, status: &str, files: &[&str]) -> Value {
    let files: Vec<Value> = files.iter().map(|name| json!({ "name": name })).collect();
    app.record(&json!({
        "repo": "rsyslog", "server": server, "sync_status": status, "files": files,
        "last_check": at_offset(seconds),
    }))
    .await
}

/// The same through the API and the write pipeline: every kind of event, each end reason but
/// expiry, both chains.
async fn events_the_api_records_verify_export_recheck_and_survive_retention(backend: Backend) {
    let app = TestApp::on(backend).await;
    let until = Timestamp::now().plus_millis(86_400_000).to_string();
    for seconds in (-7200..-3600).step_by(120) {
        check(&app, "lab", seconds, "SYNCED", &[]).await;
        check(&app, "old", seconds, "SYNCED", &[]).await;
    }
    check(&app, "lab", -3000, "OUT_OF_SYNC", &["rsyslog.conf"]).await;
    let ack = json!({"repo": "rsyslog", "server": "lab", "reason": "hotfix «INC-1»",
                     "until": until, "files": ["rsyslog.*"]});
    send(&app, Method::POST, "/api/acks", Some(ack.clone())).await;
    check(&app, "lab", -2880, "OUT_OF_SYNC", &["rsyslog.conf"]).await;
    // Replaces the first.
    send(&app, Method::POST, "/api/acks", Some(ack)).await;
    let silence = send(
        &app,
        Method::POST,
        "/api/silences",
        Some(json!({"servers": ["l*"], "ends_at": until, "reason": "upgrade"})),
    )
    .await
    .json();
    check(&app, "lab", -2760, "SYNCED", &[]).await;
    send(
        &app,
        Method::DELETE,
        &format!("/api/silences/{}", silence["id"]),
        None,
    )
    .await;
    send(&app, Method::DELETE, "/api/targets/rsyslog/old", None).await;
    check(&app, "old", -2640, "OUT_OF_SYNC", &["a.conf"]).await;
    let third = send(
        &app,
        Method::POST,
        "/api/acks",
        Some(json!({"repo": "rsyslog", "server": "old", "reason": "known", "until": until})),
    )
    .await
    .json();
    send(
        &app,
        Method::DELETE,
        &format!("/api/acks/{}", third["id"]),
        None,
    )
    .await;
    send(
        &app,
        Method::POST,
        "/api/silences",
        Some(json!({"repos": ["*"], "ends_at": until, "reason": "open"})),
    )
    .await;
    check(&app, "lab", -2520, "OUT_OF_SYNC", &["x.conf"]).await;

    let events = app.get("/api/chain/events").await.text();
    let kinds: Vec<String> = events_of(&events)
        .iter()
        .map(|event| event["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "ack",
            "ack_end",
            "ack",
            "silence",
            "ack_end",
            "silence_end",
            "retire",
            "revive",
            "ack",
            "ack_end",
            "silence"
        ],
        "{events}"
    );
    let snapshots = app.all_history().await.len() as i64;
    assert_eq!(
        verification(&app).await,
        json!({"ok": true, "checked": snapshots + 11, "first_bad": null})
    );
    assert_eq!(
        verify_cli(&app.database_url),
        (Some(0), verification(&app).await)
    );
    let (code, outcome, stderr) = recheck(&app, "", Some("")).await;
    assert_eq!(
        (code, outcome),
        (Some(0), verification(&app).await),
        "{stderr}"
    );

    // Retention removes heartbeats from around the events; everything still verifies, and the
    // pipeline goes on from the heads.
    let report = app
        .store
        .prune(Timestamp::now().plus_millis(-3_500_000))
        .await
        .unwrap();
    assert!(report.removed > 0, "{report:?}");
    assert_eq!(verification(&app).await["ok"], true);
    let (code, outcome, stderr) = recheck(&app, "", Some("")).await;
    assert_eq!(
        (code, outcome),
        (Some(0), verification(&app).await),
        "{stderr}"
    );
    check(&app, "lab", -2400, "SYNCED", &[]).await;
    send(&app, Method::DELETE, "/api/targets/rsyslog/lab", None).await;
    assert_eq!(verification(&app).await["ok"], true);

    // An edit of what /api/acks reads is named.
    app.execute_all(&["update acks set reason = 'approved' where reason = 'known'"])
        .await;
    let outcome = verification(&app).await;
    assert_eq!(
        (&outcome["first_bad"]["id"], &outcome["first_bad"]["record"]),
        (&third["id"], &json!("ack")),
        "{outcome}"
    );
}
