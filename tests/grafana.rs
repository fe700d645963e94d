//! What Grafana and report clients rely on (SPEC "For Grafana and reports"): entity tags answered
//! with 304, gzip by `Accept-Encoding` (exports still streamed), the `_ms` twin of every time,
//! and `envelope=true` pages whose `next_cursor` walks the same rows as the `Link` header.

mod common;

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::Request;
use common::*;
use gitops_status_server::model::{NewSnapshot, SnapshotIn};
use gitops_status_server::store::Store;
use gitops_status_server::timestamp::Timestamp;
use gitops_status_server::{AppState, Settings};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

backend_tests! {
    status_json_answers_304_until_a_new_snapshot_changes_it,
    history_pages_are_tagged_with_their_link,
    stats_over_a_fixed_window_are_tagged,
    gzip_bodies_decompress_to_the_identity_bodies,
    exports_stream_with_and_without_gzip,
    every_streamed_body_survives_gzip_to_its_end,
    every_time_has_its_millisecond_twin,
    envelope_pages_follow_next_cursor_as_the_link_walk_does,
    bad_envelopes_are_named,
}

/// One answer over real HTTP, its body as sent (reqwest decompresses nothing here).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|value| value.to_str().unwrap())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&self.body)))
    }
}

async fn fetch(server: &TcpServer, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new().get(server.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await.unwrap(),
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

/// RFC 3339 of `millis` before now, with a millisecond fraction.
fn millis_ago(millis: i64) -> String {
    Timestamp::now().plus_millis(-millis).to_string()
}

async fn status_json_answers_304_until_a_new_snapshot_changes_it(backend: Backend) {
    let app = TestApp::on(backend).await;
    app.record(&snapshot("r", "a", "SYNCED", &[], &at_offset(-60)))
        .await;
    let server = TcpServer::start(app.app.clone()).await;

    let first = fetch(&server, "/status.json", &[]).await;
    assert_eq!(first.status, 200);
    let tag = first.header("etag").to_owned();
    assert!(tag.starts_with("W/\"") && tag.ends_with('"'), "{tag}");
    assert_eq!(first.header("cache-control"), "no-cache");
    for held in [
        tag.clone(),
        tag.trim_start_matches("W/").to_owned(),
        format!("\"other\", {tag}"),
        "*".to_owned(),
    ] {
        let again = fetch(&server, "/status.json", &[("if-none-match", &held)]).await;
        assert_eq!(again.status, 304, "If-None-Match: {held}");
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), tag);
        assert_eq!(again.header("cache-control"), "no-cache");
    }
    let stranger = fetch(&server, "/status.json", &[("if-none-match", "W/\"other\"")]).await;
    assert_eq!(stranger.status, 200);
    assert_eq!(stranger.body, first.body);
    assert_eq!(stranger.header("etag"), tag);

    // Another instance over the same database (a replica) tags the same answer the same way.
    let replica_store = match backend {
        Backend::Sqlite => app.store.clone(),
        Backend::Postgres => Store::connect(&app.database_url).await.unwrap(),
    };
    let replica = TcpServer::start(gitops_status_server::app(AppState::new(
        replica_store,
        Settings::default(),
    )))
    .await;
    let held = [("if-none-match", tag.as_str())];
    assert_eq!(fetch(&replica, "/status.json", &held).await.status, 304);

    // A heartbeat of the same target with the same result changes the answer (its last_check).
    app.record(&snapshot("r", "a", "SYNCED", &[], &at_offset(-30)))
        .await;
    let changed = fetch(&server, "/status.json", &held).await;
    assert_eq!(changed.status, 200);
    let new_tag = changed.header("etag").to_owned();
    assert_ne!(new_tag, tag);
    assert_ne!(changed.body, first.body);
    assert_eq!(
        fetch(&replica, "/status.json", &held).await.status,
        200,
        "the replica sees the new snapshot too"
    );
    let held = [("if-none-match", new_tag.as_str())];
    assert_eq!(fetch(&server, "/status.json", &held).await.status, 304);
    assert_eq!(fetch(&replica, "/status.json", &held).await.status, 304);

    // A filtered answer is another answer, with its own tag.
    app.record(&snapshot("r", "b", "ERROR", &[], &at_offset(-10)))
        .await;
    let filtered = fetch(&server, "/status.json?server=b", &held).await;
    assert_eq!(filtered.status, 200);
    assert_eq!(filtered.json().as_array().unwrap().len(), 1);
    let filtered_tag = filtered.header("etag").to_owned();
    assert_ne!(filtered_tag, new_tag);
    let whole = fetch(&server, "/status.json", &held).await;
    assert_eq!(whole.status, 200, "b's snapshot changed the whole list too");
    assert_eq!(whole.json().as_array().unwrap().len(), 2);
    let held = [("if-none-match", filtered_tag.as_str())];
    assert_eq!(
        fetch(&server, "/status.json?server=b", &held).await.status,
        304
    );
    replica.stop().await;
    server.stop().await;
}

async fn history_pages_are_tagged_with_their_link(backend: Backend) {
    let app = TestApp::on(backend).await;
    for seconds in [-500, -400, -300, -200, -100] {
        app.record(&snapshot("r", "a", "SYNCED", &[], &at_offset(seconds)))
            .await;
    }
    let server = TcpServer::start(app.app.clone()).await;

    let page = fetch(&server, "/history?limit=2", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.header("link").contains("rel=\"next\""));
    let tag = page.header("etag").to_owned();
    let enveloped = fetch(&server, "/history?limit=2&envelope=true", &[]).await;
    let envelope_tag = enveloped.header("etag").to_owned();
    assert_ne!(envelope_tag, tag, "another body, another tag");
    for (path, held) in [
        ("/history?limit=2", &tag),
        ("/history?limit=2&envelope=true", &envelope_tag),
    ] {
        let again = fetch(&server, path, &[("if-none-match", held)]).await;
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), *held);
    }

    // The last page in ascending order: the same five rows, until a newer check gives it a
    // next page. Its body does not change; its Link, and so its tag, does.
    let last = fetch(&server, "/history?order=asc&limit=5", &[]).await;
    assert_eq!(last.header("link"), "");
    let last_tag = last.header("etag").to_owned();
    app.record(&snapshot("r", "a", "SYNCED", &[], &at_offset(-50)))
        .await;
    let grown = fetch(
        &server,
        "/history?order=asc&limit=5",
        &[("if-none-match", &last_tag)],
    )
    .await;
    assert_eq!(grown.status, 200);
    assert_eq!(grown.body, last.body);
    assert!(grown.header("link").contains("rel=\"next\""));
    assert_ne!(grown.header("etag"), last_tag);

    // The newest page changed with the new check.
    let newest = fetch(&server, "/history?limit=2", &[("if-none-match", &tag)]).await;
    assert_eq!(newest.status, 200);
    assert_ne!(newest.header("etag"), tag);

    // Exports are streamed before their end is known: no tag, and a tag sent is not looked at.
    for path in ["/history?format=csv", "/history?format=ndjson"] {
        let export = fetch(&server, path, &[("if-none-match", "*")]).await;
        assert_eq!(export.status, 200, "{path}");
        assert_eq!(export.header("etag"), "", "{path}");
    }
    server.stop().await;
}

async fn stats_over_a_fixed_window_are_tagged(backend: Backend) {
    let app = TestApp::on(backend).await;
    app.record(&snapshot("r", "a", "SYNCED", &[], &at_offset(-3000)))
        .await;
    app.record(&snapshot(
        "r",
        "a",
        "OUT_OF_SYNC",
        &["x"],
        &at_offset(-2000),
    ))
    .await;
    let server = TcpServer::start(app.app.clone()).await;
    let window = format!(
        "/api/stats?from={}&to={}",
        unix_millis(&at_offset(-3600)),
        unix_millis(&at_offset(-600))
    );
    let first = fetch(&server, &window, &[]).await;
    assert_eq!(first.status, 200);
    let tag = first.header("etag").to_owned();
    assert!(tag.starts_with("W/\""), "{tag}");
    let again = fetch(&server, &window, &[("if-none-match", &tag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    // A late check inside the window changes the statistics and the tag.
    app.record(&snapshot("r", "a", "SYNCED", &[], &at_offset(-1500)))
        .await;
    let changed = fetch(&server, &window, &[("if-none-match", &tag)]).await;
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), tag);
    assert_ne!(changed.json(), first.json());
    server.stop().await;
}

async fn gzip_bodies_decompress_to_the_identity_bodies(backend: Backend) {
    let app = TestApp::on(backend).await;
    for i in 0..40 {
        let (status, files): (&str, &[&str]) = if i % 4 == 0 {
            ("OUT_OF_SYNC", &["rsyslog.conf", "rsyslog.d/30-lab.conf"])
        } else {
            ("SYNCED", &[])
        };
        app.record(&snapshot(
            "rsyslog",
            &format!("lab-{}", i % 5),
            status,
            files,
            // The last check of each target is within the stale-after: a stale target's
            // `stale_seconds` grows with the clock, and two requests must get the same answer.
            &at_offset(-2400 + 60 * i),
        ))
        .await;
    }
    let server = TcpServer::start(app.app.clone()).await;
    let stats = format!(
        "/api/stats?from={}&to={}",
        unix_millis(&at_offset(-5000)),
        unix_millis(&at_offset(-1000))
    );
    let gzip = [("accept-encoding", "gzip")];
    for path in [
        "/status.json",
        "/history?limit=7",
        "/history?limit=7&envelope=true",
        "/history?format=csv",
        "/history?format=ndjson",
        &stats,
        "/openapi.json",
    ] {
        let plain = fetch(&server, path, &[]).await;
        let packed = fetch(&server, path, &gzip).await;
        assert_eq!((plain.status, packed.status), (200, 200), "{path}");
        assert_eq!(plain.header("content-encoding"), "", "{path}");
        assert_eq!(packed.header("content-encoding"), "gzip", "{path}");
        assert!(
            packed.header("vary").contains("accept-encoding"),
            "{path}: {:?}",
            packed.headers
        );
        assert_eq!(
            packed.header("content-type"),
            plain.header("content-type"),
            "{path}"
        );
        assert!(packed.body.len() < plain.body.len(), "{path}");
        assert_eq!(gunzip(&packed.body), plain.body, "{path}");
        // A weak tag names the content, whatever its encoding.
        assert_eq!(packed.header("etag"), plain.header("etag"), "{path}");
    }

    // What changes between two requests is compressed too.
    for (path, content) in [("/metrics", "gitops_sync_status"), ("/", "lab-4")] {
        let packed = fetch(&server, path, &gzip).await;
        assert_eq!(packed.header("content-encoding"), "gzip", "{path}");
        let text = String::from_utf8(gunzip(&packed.body)).unwrap();
        assert!(text.contains(content), "{path}: {text}");
    }

    // A problem is compressed too, and stays a problem.
    let packed = fetch(&server, "/history?limit=0&envelope=maybe", &gzip).await;
    assert_eq!(packed.status, 400);
    assert_eq!(packed.header("content-type"), "application/problem+json");
    assert_eq!(packed.header("content-encoding"), "gzip");
    let problem: Value = serde_json::from_slice(&gunzip(&packed.body)).unwrap();
    assert_eq!(problem["status"], 400);
    let mut fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| error["field"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["envelope", "limit"]);

    // A 304 stays empty.
    let tag = fetch(&server, "/status.json", &gzip)
        .await
        .header("etag")
        .to_owned();
    let not_modified = fetch(
        &server,
        "/status.json",
        &[("accept-encoding", "gzip"), ("if-none-match", &tag)],
    )
    .await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("content-encoding"), "");
    server.stop().await;
}

/// `count` snapshots of one target, `seconds_ago` apart back from `newest_seconds_ago`, each with
/// a message of random hex so that compressed output comes early and steadily.
fn imported(count: usize, newest_seconds_ago: i64) -> Vec<NewSnapshot> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..count)
        .map(|i| {
            let mut message = String::new();
            for _ in 0..40 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                message.push_str(&format!("{state:016x}"));
            }
            let mut body = snapshot(
                "r",
                "export",
                "SYNCED",
                &[],
                &at_offset(-newest_seconds_ago - (count - i) as i64),
            );
            body["message"] = json!(message);
            SnapshotIn::decode(body.to_string().as_bytes(), Timestamp::now()).unwrap()
        })
        .collect()
}

/// An export is read from the database while it is sent: a snapshot recorded after its first
/// bytes left is in it. A body written in full before sending could not contain it.
async fn exports_stream_with_and_without_gzip(backend: Backend) {
    let app = TestApp::on(backend).await;
    for outcome in app.store.import(imported(2_500, 600)).await.unwrap() {
        outcome.unwrap();
    }
    for (round, gzip) in [false, true].into_iter().enumerate() {
        let mut request = Request::get("/history?format=csv&order=asc&repo=r");
        if gzip {
            request = request.header("accept-encoding", "gzip");
        }
        let response = app
            .app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let encoding = response
            .headers()
            .get("content-encoding")
            .map(|value| value.to_str().unwrap().to_owned());
        assert_eq!(encoding.as_deref(), gzip.then_some("gzip"));
        let mut body = response.into_body();
        let first = body
            .frame()
            .await
            .expect("a first frame")
            .unwrap()
            .into_data()
            .unwrap();
        assert!(!first.is_empty());

        let late = app
            .record(&snapshot(
                "r",
                "export",
                "SYNCED",
                &[],
                &at_offset(-100 + round as i64),
            ))
            .await;
        let rest = body.collect().await.unwrap().to_bytes();
        let mut sent = first.to_vec();
        sent.extend_from_slice(&rest);
        let csv = if gzip { gunzip(&sent) } else { sent };
        let ids: Vec<i64> = csv::Reader::from_reader(csv.as_slice())
            .records()
            .map(|record| record.unwrap()[0].parse().unwrap())
            .collect();
        assert_eq!(ids.len(), 2_500 + round + 1, "gzip: {gzip}");
        assert_eq!(ids.last(), late["id"].as_i64().as_ref(), "gzip: {gzip}");
    }
}

/// The server's own rendering of a time: what a `_ms` twin must sit beside.
fn looks_like_a_time(text: &str) -> bool {
    text.len() == 24 && Timestamp::parse_rfc3339(text).is_some() && text.ends_with('Z')
}

/// Checks every object in `value`: each `x_ms` equals the Unix milliseconds of `x` (both null
/// together), and each time has its twin. Returns how many twins were checked.
fn assert_twins(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.iter().map(assert_twins).sum(),
        Value::Object(object) => {
            let mut checked = 0;
            for (name, field) in object {
                if let Some(base) = name.strip_suffix("_ms") {
                    let time = object
                        .get(base)
                        .unwrap_or_else(|| panic!("{name} without {base}: {value}"));
                    match time.as_str() {
                        Some(text) => assert_eq!(*field, unix_millis(text), "{name}: {value}"),
                        None => assert_eq!((time, field), (&Value::Null, &Value::Null), "{value}"),
                    }
                    checked += 1;
                } else if field.as_str().is_some_and(looks_like_a_time) {
                    assert!(
                        object.contains_key(&format!("{name}_ms")),
                        "{name} has no twin: {value}"
                    );
                }
                checked += assert_twins(field);
            }
            checked
        }
        _ => 0,
    }
}

async fn every_time_has_its_millisecond_twin(backend: Backend) {
    let app = TestApp::on(backend).await;
    let mut replies = Vec::new();
    // A fresh target with a millisecond fraction, a stale one, and heartbeats for retention.
    for body in [
        snapshot(
            "r",
            "fresh",
            "OUT_OF_SYNC",
            &["a.conf"],
            &millis_ago(61_234),
        ),
        snapshot("r", "stale", "SYNCED", &[], &at_offset(-3600)),
        snapshot("r", "pruned", "SYNCED", &[], &at_offset(-4000)),
        snapshot("r", "pruned", "SYNCED", &[], &at_offset(-3900)),
        snapshot("r", "pruned", "SYNCED", &[], &at_offset(-3800)),
        snapshot("r", "pruned", "SYNCED", &[], &at_offset(-3700)),
        snapshot("r", "pruned", "SYNCED", &[], &at_offset(-100)),
    ] {
        replies.push(app.record(&body).await);
    }
    assert_eq!(assert_twins(&Value::Array(replies)), 14);

    let status = Value::Array(app.get_rows("/status.json").await);
    assert_eq!(assert_twins(&status), 3 * 4);
    let stale = status
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["server"] == "stale")
        .unwrap();
    assert!(stale["stale_since_ms"].is_i64(), "{stale}");
    assert_eq!(
        stale["stale_since_ms"],
        stale["last_check_ms"].as_i64().unwrap() + 600_000
    );

    let history = Value::Array(app.all_history().await);
    assert_eq!(assert_twins(&history), 7 * 2);
    let envelope = app.get("/history?envelope=true&limit=3").await.json();
    assert_eq!(assert_twins(&envelope), 3 * 2);
    let ndjson = app.get("/history?format=ndjson").await.text();
    let lines: Vec<Value> = ndjson
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(assert_twins(&Value::Array(lines)), 7 * 2);

    let csv = app.get("/history?format=csv").await.text();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|header| header == name).unwrap();
    let mut rows = 0;
    for record in reader.records() {
        let record = record.unwrap();
        for time in ["last_check", "received_at"] {
            let millis: i64 = record[column(&format!("{time}_ms"))].parse().unwrap();
            assert_eq!(millis, unix_millis(&record[column(time)]), "{record:?}");
        }
        rows += 1;
    }
    assert_eq!(rows, 7);

    let stats = app
        .get_rows(&format!(
            "/api/stats?from={}&to={}",
            millis_ago(7_200_000),
            millis_ago(1_000)
        ))
        .await;
    assert_eq!(assert_twins(&Value::Array(stats)), 3 * 2);

    let report = app
        .store
        .prune(Timestamp::now().plus_millis(-3_000_000))
        .await
        .unwrap();
    assert!(report.removed > 0, "{report:?}");
    let checkpoints = Value::Array(app.get_rows("/api/checkpoints").await);
    assert_eq!(assert_twins(&checkpoints), 1, "{checkpoints}");
}

/// Walks `first` and its next pages by the `Link` header, and by `next_cursor` in envelopes;
/// both walks must see the same rows. Returns them.
async fn both_walks(app: &TestApp, first: &str) -> Vec<Value> {
    let mut by_link = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(uri) = next {
        let response = app.get(&uri).await;
        assert_eq!(response.status.as_u16(), 200, "{}", response.text());
        by_link.extend(response.json().as_array().unwrap().iter().cloned());
        next = response
            .header("link")
            .map(|link| link[1..link.find('>').unwrap()].to_owned());
    }

    let mut by_cursor = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            None => format!("{first}&envelope=true"),
            Some(cursor) => format!("{first}&envelope=true&cursor={cursor}"),
        };
        let response = app.get(&uri).await;
        assert_eq!(response.status.as_u16(), 200, "{}", response.text());
        let page = response.json();
        let object = page.as_object().expect("an envelope");
        assert_eq!(object.len(), 2, "{page}");
        by_cursor.extend(page["items"].as_array().unwrap().iter().cloned());
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => {
                // The Link header stays, with the same cursor.
                let link = response.header("link").expect("a Link beside next_cursor");
                assert!(
                    link.ends_with(&format!("cursor={next}>; rel=\"next\"")),
                    "{link}"
                );
                cursor = Some(next.to_owned());
            }
            None => {
                assert_eq!(page["next_cursor"], Value::Null);
                assert_eq!(response.header("link"), None);
                break;
            }
        }
        assert!(pages < 100, "{first}: the walk does not end");
    }
    assert_eq!(by_cursor, by_link, "{first}");
    by_link
}

async fn envelope_pages_follow_next_cursor_as_the_link_walk_does(backend: Backend) {
    let app = TestApp::on(backend).await;
    for i in 0..13 {
        let (status, files): (&str, &[&str]) = if i % 2 == 0 {
            ("OUT_OF_SYNC", &["a.conf"])
        } else {
            ("SYNCED", &[])
        };
        app.record(&snapshot(
            "r",
            &format!("s{}", i % 3),
            status,
            files,
            &at_offset(-1000 + 10 * i),
        ))
        .await;
    }
    let every = app.all_history().await;
    assert_eq!(both_walks(&app, "/history?limit=5&order=asc").await, every);
    let mut newest_first = every.clone();
    newest_first.reverse();
    assert_eq!(both_walks(&app, "/history?limit=5").await, newest_first);
    assert_eq!(both_walks(&app, "/history?limit=13").await, newest_first);
    assert_eq!(both_walks(&app, "/history?limit=1").await, newest_first);
    let transitions = both_walks(&app, "/history?limit=2&changes_only=true&server=s0").await;
    assert_eq!(
        transitions,
        app.get_rows("/history?changes_only=true&server=s0&limit=100")
            .await
    );
    assert!(transitions.len() > 2);

    // An empty selection is one empty page.
    let empty = app.get("/history?repo=nobody&envelope=true").await.json();
    assert_eq!(empty, json!({"items": [], "next_cursor": null}));

    // An envelope is JSON, whatever Accept prefers.
    let response = app
        .request(
            Request::get("/history?envelope=true&limit=2")
                .header("accept", "text/csv")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.content_type(), "application/json");
    assert_eq!(response.json()["items"].as_array().unwrap().len(), 2);
}

async fn bad_envelopes_are_named(backend: Backend) {
    let app = TestApp::on(backend).await;
    app.record(&snapshot("r", "s", "SYNCED", &[], &at_offset(-10)))
        .await;
    for query in [
        "envelope=yes",
        "envelope=1",
        "envelope=",
        "envelope=TRUE",
        "envelope=true&format=csv",
        "envelope=true&format=ndjson",
    ] {
        app.get(&format!("/history?{query}"))
            .await
            .assert_problem(400, &["envelope"]);
    }
    assert_eq!(
        app.get_rows("/history?envelope=false").await,
        app.get_rows("/history").await
    );
    assert_eq!(app.all_history().await.len(), 1, "nothing changed");
}

/// Every streamed answer, gzipped, decompresses to a whole body ending where the identity one
/// does. A stream that cannot be polled after its end (a bare `unfold`) once cut the gzipped
/// evidence file short: the encoder polls its source once more to write the trailer.
async fn every_streamed_body_survives_gzip_to_its_end(backend: Backend) {
    let app = TestApp::on(backend).await;
    for outcome in app.store.import(imported(30, 600)).await.unwrap() {
        outcome.unwrap();
    }
    for path in [
        "/history?format=ndjson",
        "/history?format=csv",
        "/api/episodes?format=ndjson",
        "/api/chain/events",
        "/api/evidence",
        "/api/events?follow=false",
    ] {
        let mut bodies = Vec::new();
        for gzip in [false, true] {
            let mut request = Request::get(path);
            if gzip {
                request = request.header("accept-encoding", "gzip");
            }
            let response = app
                .app
                .clone()
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
            // Event streams and empty bodies go uncompressed.
            let gzipped = response
                .headers()
                .get("content-encoding")
                .is_some_and(|value| value == "gzip");
            assert!(!gzipped || gzip, "{path}");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            bodies.push(if gzipped {
                gunzip(&body)
            } else {
                body.to_vec()
            });
        }
        let (identity, gzipped) = (
            String::from_utf8_lossy(&bodies[0]),
            String::from_utf8_lossy(&bodies[1]),
        );
        assert!(
            !identity.is_empty() || path == "/api/chain/events",
            "{path}: nothing to compare"
        );
        let last = |text: &str| {
            text.trim_end()
                .rsplit('\n')
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(
            last(&gzipped),
            last(&identity),
            "{path}: the gzipped body ends early"
        );
        if path == "/api/evidence" {
            assert!(last(&gzipped).contains(r#""type":"end""#), "{gzipped}");
        }
    }
}
