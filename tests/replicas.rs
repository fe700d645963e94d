//! Two replicas on one PostgreSQL database, as operators run them: concurrent clients post to
//! both at once for the same targets (increasing checks, identical retries through the other
//! replica, conflicting content, late checks, new targets, file changes). Afterwards both
//! replicas tell the same story, and it is exactly the one the 200 replies told.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::binary::{BINARY, Binary};
use common::{Backend, TestDatabase};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const CLIENTS: i64 = 4;
const ROUNDS: i64 = 30;
/// Reported before the clients start, through one replica.
const EXISTING: [&str; 2] = ["web-1", "web-2"];
/// First reported by the clients, through both replicas at once.
const NEW: [&str; 2] = ["new-1", "new-2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_database_agree_with_every_acknowledgement() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let database = TestDatabase::create(backend).await;
    let replicas = start_replicas(&database);
    let urls = [replicas[0].url(""), replicas[1].url("")];
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let base_ms = (OffsetDateTime::now_utc().unix_timestamp() - 300) * 1000;
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    for (index, server) in EXISTING.iter().enumerate() {
        for step in 0..3 {
            let body = check(server, base_ms - 60_000 + step * 1000 + index as i64);
            let (status, reply) = post(&client, &urls[0], &body).await;
            assert_eq!(status, 200, "{reply}");
            ledger.lock().unwrap().acknowledge(&body, &reply);
        }
    }

    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(run_client(
                id,
                client.clone(),
                urls.clone(),
                base_ms,
                Arc::clone(&ledger),
            ))
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let ledger = Arc::try_unwrap(ledger).unwrap().into_inner().unwrap();
    println!(
        "replicas: {} snapshots acknowledged, {} conflicts refused, {} duels",
        ledger.acknowledged.len(),
        ledger.conflicts,
        ledger.duels
    );
    assert!(ledger.conflicts > 0 && ledger.duels > 0, "the workload ran");

    // The NDJSON export: byte for byte the same through both replicas.
    let exports = [
        get_text(&client, &urls[0], "/history?format=ndjson&order=asc").await,
        get_text(&client, &urls[1], "/history?format=ndjson&order=asc").await,
    ];
    assert!(
        exports[0] == exports[1],
        "the replicas export different histories"
    );
    let rows: Vec<Value> = exports[0]
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();

    // Each acknowledged snapshot exactly once, as acknowledged, and nothing else.
    let mut keys = HashSet::new();
    for row in &rows {
        let key = (
            row["repo"].as_str().unwrap().to_owned(),
            row["server"].as_str().unwrap().to_owned(),
            row["last_check"].as_str().unwrap().to_owned(),
        );
        assert!(keys.insert(key.clone()), "two rows for {key:?}");
        let (_, server, last_check) = key;
        let acknowledged = ledger
            .acknowledged
            .get(&(server.clone(), last_check.clone()))
            .unwrap_or_else(|| panic!("stored but never acknowledged: {row}"));
        assert_eq!(row, acknowledged, "stored differs from the 200 reply");
    }
    assert_eq!(
        rows.len(),
        ledger.acknowledged.len(),
        "acknowledged snapshots missing"
    );

    // The latest per target and its status_since, as the acknowledged history has them.
    let status = [
        get_json(&client, &urls[0], "/status.json").await,
        get_json(&client, &urls[1], "/status.json").await,
    ];
    assert_eq!(status[0], status[1], "the replicas report different status");
    let status = status[0].as_array().unwrap();
    let expected = ledger.expected_status();
    assert_eq!(status.len(), expected.len(), "{status:?}");
    for (row, (server, (latest, since))) in status.iter().zip(&expected) {
        assert_eq!(row["repo"], "replicated", "{row}");
        assert_eq!(row["server"], server.as_str(), "{row}");
        assert_eq!(row["snapshot_id"], latest["id"], "{server}: {row}");
        for field in [
            "sync_status",
            "drift_count",
            "files",
            "files_text",
            "last_check",
            "received_at",
            "revision",
            "message",
        ] {
            assert_eq!(row[field], latest[field], "{server} {field}: {row}");
        }
        assert_eq!(row["status_since"], since.as_str(), "{server}: {row}");
        assert_eq!(row["stale"], false, "{row}");
    }

    for url in &urls {
        let verify = get_json(&client, url, "/api/verify").await;
        assert_eq!(
            verify,
            json!({"ok": true, "checked": rows.len(), "first_bad": null}),
            "{url}"
        );
    }
    let output = std::process::Command::new(BINARY)
        .args(["verify", "--database-url", &database.url])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Both replicas, started at the same moment so their migrations race too.
fn start_replicas(database: &TestDatabase) -> [Binary; 2] {
    start_replicas_with(database, &[])
}

/// Two servers on the database, started at once, with `args`.
fn start_replicas_with(database: &TestDatabase, args: &[&str]) -> [Binary; 2] {
    std::thread::scope(|scope| {
        let start = || {
            scope.spawn(|| {
                Binary::start(
                    database.dir.path(),
                    args,
                    &[("DATABASE_URL", database.url.as_str())],
                )
            })
        };
        let (first, second) = (start(), start());
        [first.join().unwrap(), second.join().unwrap()]
    })
}

/// What the clients were told: every 200 reply by (server, last_check).
#[derive(Debug, Default)]
struct Ledger {
    acknowledged: BTreeMap<(String, String), Value>,
    conflicts: usize,
    duels: usize,
}

impl Ledger {
    /// Records a 200 reply to `body`, which must be `body` as stored; a second reply for the same
    /// check (a retry) must be the first one again.
    fn acknowledge(&mut self, body: &Value, reply: &Value) {
        assert_eq!(reply["repo"], body["repo"], "{reply}");
        assert_eq!(reply["server"], body["server"], "{reply}");
        assert_eq!(reply["sync_status"], body["sync_status"], "{reply}");
        assert_eq!(reply["files"], body["files"], "{reply}");
        assert_eq!(reply["revision"], body["revision"], "{reply}");
        assert_eq!(reply["message"], body["message"], "{reply}");
        let key = (
            reply["server"].as_str().unwrap().to_owned(),
            reply["last_check"].as_str().unwrap().to_owned(),
        );
        assert_eq!(key.1, rendered_ms(millis(body)), "{reply}");
        if let Some(earlier) = self.acknowledged.get(&key) {
            assert_eq!(reply, earlier, "a retry got a different snapshot");
        } else {
            self.acknowledged.insert(key, reply.clone());
        }
    }

    /// Per server: the acknowledged snapshot with the greatest last_check (then id), and the
    /// last_check that began its unbroken run of sync_status.
    fn expected_status(&self) -> BTreeMap<String, (Value, String)> {
        let mut histories: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for ((server, _), snapshot) in &self.acknowledged {
            histories.entry(server.clone()).or_default().push(snapshot);
        }
        histories
            .into_iter()
            .map(|(server, mut history)| {
                // RFC 3339 with three fraction digits in UTC sorts as time does.
                history.sort_by_key(|snapshot| {
                    (
                        snapshot["last_check"].as_str().unwrap().to_owned(),
                        snapshot["id"].as_i64().unwrap(),
                    )
                });
                let latest = *history.last().unwrap();
                let run_start = history
                    .iter()
                    .rev()
                    .take_while(|snapshot| snapshot["sync_status"] == latest["sync_status"])
                    .last()
                    .unwrap();
                let since = run_start["last_check"].as_str().unwrap().to_owned();
                (server, (latest.clone(), since))
            })
            .collect()
    }
}

/// One client's rounds: for every target, a check at a last_check only this client uses, sent
/// in one of five ways, plus a late check into the past now and then.
async fn run_client(
    id: i64,
    client: reqwest::Client,
    urls: [String; 2],
    base_ms: i64,
    ledger: Arc<Mutex<Ledger>>,
) {
    let targets: Vec<&str> = EXISTING.iter().chain(&NEW).copied().collect();
    for round in 0..ROUNDS {
        let slot_ms = base_ms + (round * CLIENTS + id) * 1000;
        // Clients go through the targets in different orders.
        for offset in 0..targets.len() {
            let index = (offset + id as usize) % targets.len();
            let server = targets[index];
            let ms = slot_ms + index as i64 * 10;
            let (near, far) = if (round + id) % 2 == 0 {
                (&urls[0], &urls[1])
            } else {
                (&urls[1], &urls[0])
            };
            let body = check(server, ms);
            let way = if round == 0 && NEW.contains(&server) {
                // The target's very first snapshots, through both replicas at once.
                Way::TwoChecksAtOnce
            } else {
                Way::ALL[((round + id) as usize + index) % Way::ALL.len()]
            };
            match way {
                Way::Once => {
                    let (status, reply) = post(&client, near, &body).await;
                    assert_eq!(status, 200, "{reply}");
                    ledger.lock().unwrap().acknowledge(&body, &reply);
                }
                Way::RetryThroughTheOther => {
                    let (status, reply) = post(&client, near, &body).await;
                    assert_eq!(status, 200, "{reply}");
                    let (status, retried) = post(&client, far, &body).await;
                    assert_eq!(status, 200, "{retried}");
                    let mut ledger = ledger.lock().unwrap();
                    ledger.acknowledge(&body, &reply);
                    ledger.acknowledge(&body, &retried);
                }
                Way::SameCheckThroughBothAtOnce => {
                    let ((first, one), (second, other)) =
                        tokio::join!(post(&client, near, &body), post(&client, far, &body));
                    assert_eq!((first, second), (200, 200), "{one} {other}");
                    let mut ledger = ledger.lock().unwrap();
                    ledger.acknowledge(&body, &one);
                    ledger.acknowledge(&body, &other);
                }
                Way::ConflictAfterwards => {
                    let (status, reply) = post(&client, near, &body).await;
                    assert_eq!(status, 200, "{reply}");
                    ledger.lock().unwrap().acknowledge(&body, &reply);
                    let (status, problem) = post(&client, far, &conflicting(&body)).await;
                    assert_eq!(status, 409, "{problem}");
                    ledger.lock().unwrap().conflicts += 1;
                }
                Way::Duel => {
                    // Different content for one check through each replica: one wins, the
                    // other is told 409.
                    let rival = conflicting(&body);
                    let ((first, one), (second, other)) =
                        tokio::join!(post(&client, near, &body), post(&client, far, &rival));
                    let mut ledger = ledger.lock().unwrap();
                    match (first, second) {
                        (200, 409) => ledger.acknowledge(&body, &one),
                        (409, 200) => ledger.acknowledge(&rival, &other),
                        _ => panic!("duel: {first} {one} / {second} {other}"),
                    }
                    ledger.duels += 1;
                    ledger.conflicts += 1;
                }
                Way::TwoChecksAtOnce => {
                    let later = check(server, ms + 1);
                    let ((first, one), (second, other)) =
                        tokio::join!(post(&client, near, &body), post(&client, far, &later));
                    assert_eq!((first, second), (200, 200), "{one} {other}");
                    let mut ledger = ledger.lock().unwrap();
                    ledger.acknowledge(&body, &one);
                    ledger.acknowledge(&later, &other);
                }
            }
            if (round + index as i64) % 3 == 2 {
                // Late: older than what this client reported for the target last round.
                let late = check(server, ms - CLIENTS * 1000 - 5);
                let (status, reply) = post(&client, far, &late).await;
                assert_eq!(status, 200, "{reply}");
                ledger.lock().unwrap().acknowledge(&late, &reply);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Way {
    Once,
    RetryThroughTheOther,
    SameCheckThroughBothAtOnce,
    ConflictAfterwards,
    Duel,
    TwoChecksAtOnce,
}

impl Way {
    const ALL: [Way; 6] = [
        Way::Once,
        Way::RetryThroughTheOther,
        Way::SameCheckThroughBothAtOnce,
        Way::ConflictAfterwards,
        Way::Duel,
        Way::TwoChecksAtOnce,
    ];
}

/// The check of `server` at `ms`: its content follows from the time, so the drift state and the
/// file set change as checks go by.
fn check(server: &str, ms: i64) -> Value {
    let (status, files): (&str, &[&str]) = match (ms / 1000).rem_euclid(7) {
        0 | 1 => ("SYNCED", &[]),
        2 => ("OUT_OF_SYNC", &["a.conf"]),
        3 => ("OUT_OF_SYNC", &["a.conf", "b.conf"]),
        4 => ("OUT_OF_SYNC", &["b.conf"]),
        5 => ("ERROR", &[]),
        _ => ("SYNCED", &[]),
    };
    json!({
        "repo": "replicated",
        "server": server,
        "sync_status": status,
        "files": files.iter().map(|name| json!({ "name": name })).collect::<Vec<_>>(),
        "last_check": rendered_ms(ms),
        "revision": format!("r{ms}"),
        "message": if status == "ERROR" { json!("ssh: connection refused") } else { Value::Null },
    })
}

/// The same check with other content.
fn conflicting(body: &Value) -> Value {
    let mut rival = body.clone();
    rival["revision"] = json!(format!("{}-rival", body["revision"].as_str().unwrap()));
    rival["sync_status"] = json!("OUT_OF_SYNC");
    rival["files"] = json!([{ "name": "rival.conf" }]);
    rival["message"] = Value::Null;
    rival
}

fn millis(body: &Value) -> i64 {
    let at = OffsetDateTime::parse(body["last_check"].as_str().unwrap(), &Rfc3339).unwrap();
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

/// As the server renders times: UTC, three fraction digits.
fn rendered_ms(ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(&format).unwrap()
}

async fn post(client: &reqwest::Client, base: &str, body: &Value) -> (u16, Value) {
    let response = client
        .post(format!("{base}/api/status"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let reply = serde_json::from_str(&text).unwrap_or_else(|_| json!(text));
    assert!(
        status == 200 || status == 409,
        "{base}: {status} for {body}: {reply}"
    );
    (status, reply)
}

async fn get_text(client: &reqwest::Client, base: &str, path: &str) -> String {
    let response = client.get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(response.status(), 200, "{base}{path}");
    response.text().await.unwrap()
}

async fn get_json(client: &reqwest::Client, base: &str, path: &str) -> Value {
    serde_json::from_str(&get_text(client, base, path).await).unwrap()
}

/// Both replicas run retention every second while clients write to both. One pass runs at a
/// time (the other replica skips), and nothing retention must keep is lost: every chain still
/// verifies, every transition and each target's latest stay, and every check inside the retained
/// window is still there, as stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_both_replicas_while_they_write_keeps_what_it_must() {
    const TARGETS: [&str; 3] = ["keep-1", "keep-2", "keep-3"];
    /// One check every 20 s over the last two hours; retention keeps one hour.
    const STEP_MS: i64 = 20_000;
    const CHECKS: i64 = 360;
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let database = TestDatabase::create(backend).await;
    let mut replicas = start_replicas_with(
        &database,
        &["--retention", "1h", "--retention-interval", "1s"],
    );
    let urls = [replicas[0].url(""), replicas[1].url("")];
    let client = reqwest::Client::new();
    let now_ms = OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let first_ms = now_ms - CHECKS * STEP_MS;

    // One writer per target, alternating replicas: checks in order, a drift every 30 checks.
    let writers: Vec<_> = TARGETS
        .iter()
        .map(|server| {
            let (client, urls) = (client.clone(), urls.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for index in 0..CHECKS {
                    let drifting = (index / 30) % 2 == 1;
                    let body = json!({
                        "repo": "retained",
                        "server": server,
                        "sync_status": if drifting { "OUT_OF_SYNC" } else { "SYNCED" },
                        "files": if drifting { json!([{ "name": "a.conf" }]) } else { json!([]) },
                        "last_check": rendered_ms(first_ms + index * STEP_MS),
                    });
                    let (status, reply) = post(&client, &urls[(index % 2) as usize], &body).await;
                    assert_eq!(status, 200, "{reply}");
                    acknowledged.push(reply);
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.push(writer.await.unwrap());
    }
    // Two more intervals, so passes run after the last write too.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let passes: Vec<String> = replicas
        .iter_mut()
        .flat_map(|replica| replica.logs())
        .filter(|line| line.contains("retention run finished"))
        .collect();
    assert!(
        passes.iter().any(|line| !line.contains("removed=0")),
        "no pass removed anything: {passes:?}"
    );

    let exports = [
        get_text(&client, &urls[0], "/history?format=ndjson&order=asc").await,
        get_text(&client, &urls[1], "/history?format=ndjson&order=asc").await,
    ];
    let stored: BTreeMap<(String, String), Value> = exports[0]
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            let key = (
                row["server"].as_str().unwrap().to_owned(),
                row["last_check"].as_str().unwrap().to_owned(),
            );
            (key, row)
        })
        .collect();
    let total: usize = acknowledged.iter().map(Vec::len).sum();
    assert!(stored.len() < total, "nothing was removed");
    // Kept: a margin covers the seconds the test took, since the cutoff moves with the clock.
    let kept_from = rendered_ms(now_ms - 3_600_000 + 60_000);
    let status = get_json(&client, &urls[0], "/status.json").await;
    for (server, replies) in TARGETS.iter().zip(&acknowledged) {
        let mut previous: Option<&Value> = None;
        for reply in replies {
            let key = (
                (*server).to_owned(),
                reply["last_check"].as_str().unwrap().to_owned(),
            );
            let transition = previous.is_none_or(|previous| {
                previous["sync_status"] != reply["sync_status"]
                    || previous["files"] != reply["files"]
            });
            let recent = reply["last_check"].as_str().unwrap() >= kept_from.as_str();
            match stored.get(&key) {
                Some(row) => {
                    assert_eq!(row["id"], reply["id"], "{key:?}");
                    assert_eq!(row["hash"], reply["hash"], "{key:?}");
                }
                None => assert!(
                    !transition && !recent,
                    "{key:?} was removed, but it is a transition or inside the window"
                ),
            }
            previous = Some(reply);
        }
        let latest = status
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["server"] == *server)
            .unwrap();
        assert_eq!(latest["snapshot_id"], replies.last().unwrap()["id"]);
    }
    assert_eq!(
        status,
        get_json(&client, &urls[1], "/status.json").await,
        "the replicas disagree on the latest"
    );
    for url in &urls {
        let verification = get_json(&client, url, "/api/verify").await;
        assert_eq!(verification["ok"], true, "{url}: {verification}");
    }
    assert!(
        !get_json(&client, &urls[0], "/api/checkpoints")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    let cli = std::process::Command::new(BINARY)
        .args(["verify", "--database-url", &database.url])
        .output()
        .unwrap();
    assert!(cli.status.success(), "{cli:?}");
}

/// Both replicas acknowledge, delete acknowledgements, retire and revive targets while clients
/// post checks to both: every chain (events included) still verifies, and the replicas tell the
/// same story byte for byte: history, acknowledgements, targets, status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_acknowledging_and_retiring_while_writing_agree() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let database = TestDatabase::create(backend).await;
    let replicas = start_replicas(&database);
    let urls = [replicas[0].url(""), replicas[1].url("")];
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let servers = ["lc-1", "lc-2", "lc-3"];
    let base_ms = (OffsetDateTime::now_utc().unix_timestamp() - 600) * 1000;
    let until = rendered_ms((OffsetDateTime::now_utc().unix_timestamp() + 86_400) * 1000);

    let writers: Vec<_> = (0..2i64)
        .map(|writer| {
            let (client, urls) = (client.clone(), urls.clone());
            tokio::spawn(async move {
                for round in 0..40i64 {
                    for (index, server) in servers.iter().enumerate() {
                        let ms = base_ms + (round * 2 + writer) * 1000 + index as i64;
                        let mut body = check(server, ms);
                        // Mostly drifting, so acknowledgements have something to cover.
                        if round % 5 == 4 {
                            body["sync_status"] = json!("SYNCED");
                            body["files"] = json!([]);
                            body["drift_count"] = json!(0);
                        }
                        post(&client, &urls[(round + writer) as usize % 2], &body).await;
                    }
                }
            })
        })
        .collect();
    let lifecycle = {
        let (client, urls) = (client.clone(), urls.clone());
        tokio::spawn(async move {
            let mut made = 0;
            for round in 0..30usize {
                let url = &urls[round % 2];
                let server = servers[round % servers.len()];
                let response = client
                    .post(format!("{url}/api/acks"))
                    .json(&json!({"repo": "replicated", "server": server,
                                  "reason": format!("round {round}"), "until": until}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                // 404 before the first check, 409 while SYNCED or retired: both tell the truth.
                assert!(matches!(status, 201 | 404 | 409), "ack: {status}");
                if status == 201 {
                    made += 1;
                    if round % 3 == 0 {
                        let ack: Value = response.json().await.unwrap();
                        let other = &urls[(round + 1) % 2];
                        let deleted = client
                            .delete(format!("{other}/api/acks/{}", ack["id"]))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(deleted.status().as_u16(), 204);
                    }
                }
                if round % 7 == 6 {
                    let retired = client
                        .delete(format!("{url}/api/targets/replicated/{server}"))
                        .send()
                        .await
                        .unwrap();
                    assert!(matches!(retired.status().as_u16(), 204 | 404));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            made
        })
    };
    for writer in writers {
        writer.await.unwrap();
    }
    let made = lifecycle.await.unwrap();
    assert!(made > 0, "no acknowledgement was made");

    for path in [
        "/history?format=ndjson&order=asc",
        "/api/acks",
        "/api/targets?include_retired=true",
        "/status.json",
    ] {
        let answers = [
            get_text(&client, &urls[0], path).await,
            get_text(&client, &urls[1], path).await,
        ];
        assert!(
            answers[0] == answers[1],
            "the replicas answer {path} differently"
        );
    }
    for url in &urls {
        let verify = get_json(&client, url, "/api/verify").await;
        assert_eq!(verify["ok"], true, "{url}: {verify}");
    }
    let output = std::process::Command::new(BINARY)
        .args(["verify", "--database-url", &database.url])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Each replica keeps its own `/status.json` answers; a write through the other one (a snapshot,
/// an acknowledgement made and deleted, a retirement, a revival) must show in the very next
/// answer, with a new tag, however recently the same answer was served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_replica_changes_the_others_status_json_at_once() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let database = TestDatabase::create(backend).await;
    let replicas = start_replicas(&database);
    let [writer, reader] = [replicas[0].url(""), replicas[1].url("")];
    let client = reqwest::Client::new();
    let now_ms = OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let drifted = |ms: i64| {
        json!({"repo": "replicated", "server": "cached", "sync_status": "OUT_OF_SYNC",
               "files": [{"name": "a.conf"}], "last_check": rendered_ms(ms)})
    };
    assert_eq!(
        post(&client, &writer, &drifted(now_ms - 60_000)).await.0,
        200
    );

    // The reader's answer and tag, then the same tag again: the reader keeps the answer.
    let answer = |held: Option<String>| {
        let (client, reader) = (client.clone(), reader.clone());
        async move {
            let mut request = client.get(format!("{reader}/status.json"));
            if let Some(held) = held {
                request = request.header("if-none-match", held);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let tag = response.headers()["etag"].to_str().unwrap().to_owned();
            let body = response.text().await.unwrap();
            (status, tag, body)
        }
    };
    let (_, mut tag, mut body) = answer(None).await;
    assert_eq!(answer(Some(tag.clone())).await.0, 304);

    let until = rendered_ms(now_ms + 3_600_000);
    let mut ack_id = Value::Null;
    for change in ["snapshot", "ack", "unack", "retire", "revive"] {
        match change {
            "snapshot" => {
                assert_eq!(
                    post(&client, &writer, &drifted(now_ms - 30_000)).await.0,
                    200
                );
            }
            "ack" => {
                let made = client
                    .post(format!("{writer}/api/acks"))
                    .json(&json!({"repo": "replicated", "server": "cached",
                                  "reason": "hotfix", "until": until}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(made.status().as_u16(), 201);
                ack_id = made.json::<Value>().await.unwrap()["id"].clone();
            }
            "unack" => {
                let deleted = client
                    .delete(format!("{writer}/api/acks/{ack_id}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(deleted.status().as_u16(), 204);
            }
            "retire" => {
                let retired = client
                    .delete(format!("{writer}/api/targets/replicated/cached"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(retired.status().as_u16(), 204);
            }
            _ => {
                assert_eq!(
                    post(&client, &writer, &drifted(now_ms - 10_000)).await.0,
                    200
                );
            }
        }
        let (status, new_tag, new_body) = answer(Some(tag.clone())).await;
        assert_eq!(
            status, 200,
            "after the {change}, the reader still answered 304"
        );
        assert_ne!(new_tag, tag, "{change}");
        assert_ne!(new_body, body, "{change}");
        // What the writer answers, the reader answers.
        assert_eq!(
            get_text(&client, &writer, "/status.json").await,
            new_body,
            "{change}"
        );
        let rows: Value = serde_json::from_str(&new_body).unwrap();
        let acknowledged = rows
            .as_array()
            .unwrap()
            .first()
            .map(|row| row["acknowledged"]["id"].clone());
        match change {
            "ack" => assert_eq!(acknowledged, Some(ack_id.clone())),
            "retire" => assert_eq!(acknowledged, None, "retired: no row"),
            _ => assert_eq!(acknowledged, Some(Value::Null), "{change}"),
        }
        (tag, body) = (new_tag, new_body);
    }
}
