//! When the database cannot be written, or more requests arrive than the server serves at once,
//! clients get 503 problem+json with Retry-After, the server does not fall over, and it recovers
//! as soon as the cause is gone.
//!
//! Tests run as root here, where file permissions do not stop writes; another connection holding
//! SQLite's exclusive lock (`begin exclusive`) is what makes the database unwritable instead. The
//! writer then fails with SQLITE_BUSY after its busy timeout, the same path as SQLITE_READONLY,
//! SQLITE_FULL and SQLITE_IOERR (all mapped to `StoreError::Unavailable`). On PostgreSQL, a
//! session holding `LOCK TABLE` does the same through the store's `lock_timeout`.

mod common;

use std::time::{Duration, Instant};

use common::at_offset;
use common::binary::Binary;
use common::snapshot;
use reqwest::Response;
use serde_json::Value;
use sqlx::{Connection, Executor, SqliteConnection};

async fn post(client: &reqwest::Client, server: &Binary, body: &Value) -> Response {
    client
        .post(server.url("/api/status"))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn assert_503(response: Response) {
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 503, "{problem}");
    assert_eq!(problem["type"], "/problems/unavailable", "{problem}");
}

/// Holds SQLite's exclusive lock on the file until dropped (rolled back).
async fn lock_database(url: &str) -> SqliteConnection {
    let mut connection = SqliteConnection::connect(url).await.unwrap();
    connection.execute("begin exclusive").await.unwrap();
    connection
}

#[tokio::test]
async fn an_unwritable_database_is_503_until_it_is_writable_again() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("locked.db").display());
    let mut server = Binary::start(dir.path(), &["--database-url", &url], &[]);
    let client = reqwest::Client::new();
    let first = snapshot("locked", "a", "SYNCED", &[], &at_offset(-300));
    assert_eq!(post(&client, &server, &first).await.status(), 200);

    let lock = lock_database(&url).await;
    let started = Instant::now();
    let blocked = snapshot("locked", "a", "OUT_OF_SYNC", &["x"], &at_offset(-200));
    assert_503(post(&client, &server, &blocked).await).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    // Writes that queue up behind the lock commit as one batch, which fails as a whole: each
    // caller gets its 503 after one more busy timeout, not after one per snapshot of the batch
    // (the fallback that writes a failed batch one by one is for failures of a record).
    let started = Instant::now();
    let queued: Vec<_> = (0..4)
        .map(|n| {
            let body = snapshot("locked", &format!("q{n}"), "SYNCED", &[], &at_offset(-200));
            let request = client.post(server.url("/api/status")).json(&body).send();
            tokio::spawn(request)
        })
        .collect();
    for response in queued {
        assert_503(response.await.unwrap().unwrap()).await;
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    // Reads keep being served: a reader connection opened now writes nothing either (only the
    // writer sets `auto_vacuum`, the one pragma that is a write transaction on an existing file).
    // Four at once, so that the pool opens connections while the lock is held.
    let reads: Vec<_> = (0..4)
        .map(|_| tokio::spawn(client.get(server.url("/history")).send()))
        .collect();
    for read in reads {
        let read = read.await.unwrap().unwrap();
        assert_eq!(read.status(), 200);
        let rows: Value = read.json().await.unwrap();
        assert_eq!(rows.as_array().unwrap().len(), 1);
    }
    assert_eq!(get_status(&client, &server, "/healthz").await, 200);

    lock.close().await.unwrap();
    let recovered = post(&client, &server, &blocked).await;
    assert_eq!(recovered.status(), 200, "{:?}", recovered.text().await);
    let rows: Value = get_json(&client, &server, "/history").await;
    assert_eq!(rows.as_array().unwrap().len(), 2);
    let verify: Value = get_json(&client, &server, "/api/verify").await;
    assert_eq!(verify["ok"], true, "{verify}");
    let logs = server.logs().join("\n");
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(server.child.try_wait().unwrap().is_none(), "still running");
}

#[tokio::test]
async fn requests_beyond_max_in_flight_are_shed_with_503_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("busy.db").display());
    let server = Binary::start(
        dir.path(),
        &["--database-url", &url, "--max-in-flight", "2"],
        &[],
    );
    let client = reqwest::Client::new();
    assert_eq!(
        post(
            &client,
            &server,
            &snapshot("busy", "0", "SYNCED", &[], &at_offset(-300))
        )
        .await
        .status(),
        200
    );

    // Two writes whose bodies have not finished arriving fill both slots, for as long as the
    // test holds them back: the slots stay full whatever the machine's speed.
    let mut senders = Vec::new();
    let stuck: Vec<_> = (1..=2)
        .map(|n| {
            let (sender, receiver) =
                tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
            let body =
                snapshot("busy", &n.to_string(), "SYNCED", &[], &at_offset(-200)).to_string();
            let (head, tail) = body.split_at(body.len() / 2);
            sender.try_send(Ok(head.as_bytes().to_vec())).unwrap();
            senders.push((sender, tail.as_bytes().to_vec()));
            let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|chunk| (chunk, receiver))
            });
            let request = client
                .post(server.url("/api/status"))
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(stream));
            tokio::spawn(async move { request.send().await.unwrap() })
        })
        .collect();
    // Until both are in flight, a third request may still get through.
    let deadline = Instant::now() + Duration::from_secs(20);
    let shed = loop {
        let response = client.get(server.url("/status.json")).send().await.unwrap();
        if response.status() == 503 || Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_503(shed).await;
    // Probes are never shed.
    assert_eq!(get_status(&client, &server, "/healthz").await, 200);
    assert_eq!(get_status(&client, &server, "/readyz").await, 200);
    // The held requests complete once their bodies do, and the slots are free again.
    for (sender, tail) in senders {
        sender.send(Ok(tail)).await.unwrap();
    }
    for request in stuck {
        assert_eq!(request.await.unwrap().status(), 200);
    }
    assert_eq!(get_status(&client, &server, "/status.json").await, 200);
}

async fn get_status(client: &reqwest::Client, server: &Binary, path: &str) -> reqwest::StatusCode {
    client.get(server.url(path)).send().await.unwrap().status()
}

async fn get_json(client: &reqwest::Client, server: &Binary, path: &str) -> Value {
    client
        .get(server.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// On PostgreSQL another session holding `LOCK TABLE snapshots` is what makes writes impossible:
/// the writer waits its `lock_timeout` (5 s), then the POST is 503 with Retry-After, and writes
/// recover when the lock goes, with nothing half-written and the chain intact.
#[tokio::test]
async fn a_locked_postgres_database_is_503_until_it_is_writable_again() {
    use common::{Backend, TestDatabase};
    use sqlx::PgConnection;

    let Some(backend) = Backend::postgres() else {
        return;
    };
    let database = TestDatabase::create(backend).await;
    let mut server = Binary::start(database.dir.path(), &["--database-url", &database.url], &[]);
    let client = reqwest::Client::new();
    let first = snapshot("locked", "a", "SYNCED", &[], &at_offset(-300));
    assert_eq!(post(&client, &server, &first).await.status(), 200);

    let mut lock = PgConnection::connect(&database.url).await.unwrap();
    lock.execute("begin").await.unwrap();
    lock.execute("lock table snapshots in exclusive mode")
        .await
        .unwrap();
    let started = Instant::now();
    let blocked = snapshot("locked", "a", "OUT_OF_SYNC", &["x"], &at_offset(-200));
    assert_503(post(&client, &server, &blocked).await).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    assert_eq!(get_status(&client, &server, "/healthz").await, 200);
    // Asked while the lock is still held, before any accepted write could store the set.
    assert_eq!(
        database.query_i64("select count(*) from filesets").await,
        0,
        "the refused write's file set was rolled back with it"
    );

    lock.execute("rollback").await.unwrap();
    lock.close().await.unwrap();
    let recovered = post(&client, &server, &blocked).await;
    assert_eq!(recovered.status(), 200, "{:?}", recovered.text().await);
    let rows: Value = get_json(&client, &server, "/history").await;
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert_eq!(
        database.query_i64("select count(*) from filesets").await,
        1,
        "the accepted retry stored its file set once"
    );
    let verify: Value = get_json(&client, &server, "/api/verify").await;
    assert_eq!(verify["ok"], true, "{verify}");
    let logs = server.logs().join("\n");
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(server.child.try_wait().unwrap().is_none(), "still running");
}
