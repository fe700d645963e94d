//! `/status.json`'s kept answers (src/api/status.rs): an unchanged state is served again without
//! being built again, and every kind of change, by a write or by the clock, gives a new body and
//! a new tag.

mod common;

use std::io::Read;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::*;
use gitops_status_server::model::StatusFilter;
use gitops_status_server::timestamp::Timestamp;
use gitops_status_server::{AppState, Settings};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

backend_tests! {
    an_unchanged_state_is_served_again_without_being_built_again,
    every_kind_of_write_changes_the_body_and_the_tag,
    a_target_going_stale_by_the_clock_changes_the_answer_and_so_does_each_second_stale,
    an_acknowledgement_reaching_until_changes_the_answer,
}

/// The service over `app`'s store with a state of its own, whose cache the test can read.
fn service(app: &TestApp) -> (AppState, Router) {
    let state = AppState::new(app.store.clone(), Settings::default());
    (state.clone(), gitops_status_server::app(state))
}

async fn send(
    router: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> TestResponse {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = match body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    TestResponse {
        status,
        headers,
        body,
    }
}

async fn status_json(router: &Router) -> TestResponse {
    let response = send(router, Method::GET, "/status.json", &[], None).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    response
}

fn tag(response: &TestResponse) -> String {
    response.header("etag").expect("an ETag").to_owned()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

fn in_millis(millis: i64) -> String {
    Timestamp::now().plus_millis(millis).to_string()
}

async fn an_unchanged_state_is_served_again_without_being_built_again(backend: Backend) {
    let app = TestApp::on(backend).await;
    for server in ["a", "b", "c"] {
        app.record(&snapshot(
            "r",
            server,
            "OUT_OF_SYNC",
            &["f"],
            &at_offset(-60),
        ))
        .await;
    }
    let (state, router) = service(&app);
    let first = status_json(&router).await;
    assert_eq!(first.json().as_array().unwrap().len(), 3);
    assert_eq!(state.status_cache.builds(), 1);
    // What the cache serves is what the rows serialize to, byte for byte.
    let rows = state.status_rows(&StatusFilter::default()).await.unwrap();
    assert_eq!(first.body, serde_json::to_vec(&rows).unwrap());

    let again = status_json(&router).await;
    assert_eq!(again.body, first.body);
    assert_eq!(tag(&again), tag(&first));
    let held = tag(&first);
    let revalidated = send(
        &router,
        Method::GET,
        "/status.json",
        &[("if-none-match", &held)],
        None,
    )
    .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert!(revalidated.body.is_empty());
    assert_eq!(tag(&revalidated), held);
    let compressed = send(
        &router,
        Method::GET,
        "/status.json",
        &[("accept-encoding", "gzip")],
        None,
    )
    .await;
    assert_eq!(compressed.status, StatusCode::OK);
    assert_eq!(compressed.header("content-encoding"), Some("gzip"));
    assert_eq!(compressed.content_type(), "application/json");
    assert_eq!(compressed.header("vary"), Some("accept-encoding"));
    assert_eq!(tag(&compressed), held);
    assert_eq!(gunzip(&compressed.body), first.body);
    let refused = send(
        &router,
        Method::GET,
        "/status.json",
        &[("accept-encoding", "gzip;q=0, identity")],
        None,
    )
    .await;
    assert_eq!(refused.header("content-encoding"), None);
    assert_eq!(refused.body, first.body);
    match backend {
        // The writer is the only one: nothing published, nothing built.
        Backend::Sqlite => assert_eq!(state.status_cache.builds(), 1),
        // Any commit to the cluster (tests running beside this one) moves PostgreSQL's
        // version, so only the answers are compared there.
        Backend::Postgres => {}
    }

    // A filtered answer is kept beside the whole one.
    let filtered = send(&router, Method::GET, "/status.json?server=b", &[], None).await;
    assert_eq!(filtered.json().as_array().unwrap().len(), 1);
    assert_ne!(tag(&filtered), held);
    assert_eq!(status_json(&router).await.body, first.body);
    if backend == Backend::Sqlite {
        assert_eq!(state.status_cache.builds(), 2);
        send(&router, Method::GET, "/status.json?server=b", &[], None).await;
        assert_eq!(state.status_cache.builds(), 2);
    }
}

async fn every_kind_of_write_changes_the_body_and_the_tag(backend: Backend) {
    let app = TestApp::on(backend).await;
    let at: std::collections::HashMap<i64, String> = [-600, -300, -200, -100, -50]
        .into_iter()
        .map(|offset| (offset, at_offset(offset)))
        .collect();
    app.record(&snapshot("r", "a", "OUT_OF_SYNC", &["f"], &at[&-600]))
        .await;
    app.record(&snapshot("r", "a", "SYNCED", &[], &at[&-300]))
        .await;
    app.record(&snapshot("r", "a", "SYNCED", &[], &at[&-100]))
        .await;
    app.record(&snapshot("r", "b", "OUT_OF_SYNC", &["f"], &at[&-100]))
        .await;
    let (state, router) = service(&app);
    let mut previous = status_json(&router).await;
    let mut builds = state.status_cache.builds();
    // Against the answer before it only: deleting the acknowledgement returns to an earlier
    // state, and so to its body and tag.
    let mut changed = |response: TestResponse, what: &str| {
        assert_ne!(tag(&response), tag(&previous), "{what}: the tag");
        assert_ne!(response.body, previous.body, "{what}: the body");
        let rows = response.json();
        previous = response;
        rows
    };
    let row = |rows: &Value, server: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|row| row["server"] == server)
            .cloned()
    };

    app.record(&snapshot("r", "a", "SYNCED", &[], &at[&-50]))
        .await;
    let rows = changed(status_json(&router).await, "a new snapshot");
    assert_eq!(row(&rows, "a").unwrap()["last_check"], rendered(&at[&-50]));

    // Reported late, between the two SYNCED runs: only `status_since` moves.
    app.record(&snapshot("r", "a", "OUT_OF_SYNC", &["f"], &at[&-200]))
        .await;
    let rows = changed(status_json(&router).await, "a late check");
    assert_eq!(
        row(&rows, "a").unwrap()["status_since"],
        rendered(&at[&-100])
    );
    assert_eq!(row(&rows, "a").unwrap()["last_check"], rendered(&at[&-50]));

    let ack =
        json!({"repo": "r", "server": "b", "reason": "hotfix", "until": in_millis(3_600_000)});
    let made = send(&router, Method::POST, "/api/acks", &[], Some(ack)).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text());
    let rows = changed(status_json(&router).await, "an acknowledgement made");
    assert_eq!(
        row(&rows, "b").unwrap()["acknowledged"]["id"],
        made.json()["id"]
    );

    let uri = format!("/api/acks/{}", made.json()["id"]);
    let deleted = send(&router, Method::DELETE, &uri, &[], None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text());
    let rows = changed(status_json(&router).await, "an acknowledgement deleted");
    assert_eq!(row(&rows, "b").unwrap()["acknowledged"], Value::Null);

    let retired = send(&router, Method::DELETE, "/api/targets/r/b", &[], None).await;
    assert_eq!(retired.status, StatusCode::NO_CONTENT, "{}", retired.text());
    let rows = changed(status_json(&router).await, "a retirement");
    assert_eq!(row(&rows, "b"), None);

    app.record(&snapshot("r", "b", "SYNCED", &[], &at_offset(-10)))
        .await;
    let rows = changed(status_json(&router).await, "a revival");
    assert_eq!(row(&rows, "b").unwrap()["state"], "SYNCED");

    // Each change built one answer; asking again built none.
    status_json(&router).await;
    if backend == Backend::Sqlite {
        builds += 6;
        assert_eq!(state.status_cache.builds(), builds);
    }
}

/// Polls `/status.json` until `done` holds for its rows, for at most 30 s.
async fn poll_until(router: &Router, done: impl Fn(&Value) -> bool) -> TestResponse {
    for _ in 0..300 {
        let response = status_json(router).await;
        if done(&response.json()) {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/status.json did not change with the clock within 30 s");
}

async fn a_target_going_stale_by_the_clock_changes_the_answer_and_so_does_each_second_stale(
    backend: Backend,
) {
    let app = TestApp::on(backend).await;
    // Stale three seconds from now, by the server's default of 600 s.
    let last_check = in_millis(-597_000);
    app.record(&snapshot("r", "a", "SYNCED", &[], &last_check))
        .await;
    let (_, router) = service(&app);
    let fresh = status_json(&router).await;
    assert_eq!(
        fresh.json()[0]["state"],
        "SYNCED",
        "the machine took over 3 s"
    );

    let stale = poll_until(&router, |rows| rows[0]["state"] == "STALE").await;
    assert_ne!(tag(&stale), tag(&fresh));
    assert_eq!(stale.json()[0]["stale"], true);
    let seconds = stale.json()[0]["stale_seconds"].as_i64().unwrap();
    let later = poll_until(&router, |rows| {
        rows[0]["stale_seconds"].as_i64().unwrap() > seconds
    })
    .await;
    assert_ne!(tag(&later), tag(&stale));
    assert_ne!(later.body, stale.body);
}

async fn an_acknowledgement_reaching_until_changes_the_answer(backend: Backend) {
    let app = TestApp::on(backend).await;
    app.record(&snapshot("r", "a", "OUT_OF_SYNC", &["f"], &at_offset(-60)))
        .await;
    let (_, router) = service(&app);
    let ack = json!({"repo": "r", "server": "a", "reason": "hotfix", "until": in_millis(2_000)});
    let made = send(&router, Method::POST, "/api/acks", &[], Some(ack)).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text());
    let acknowledged = status_json(&router).await;
    assert!(
        acknowledged.json()[0]["acknowledged"].is_object(),
        "the machine took over 2 s"
    );
    // Nothing records the expiry here: the clock alone ends it in the answer.
    let expired = poll_until(&router, |rows| rows[0]["acknowledged"].is_null()).await;
    assert_ne!(tag(&expired), tag(&acknowledged));
    assert_eq!(expired.json()[0]["state"], "OUT_OF_SYNC");
}
