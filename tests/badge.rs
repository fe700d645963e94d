//! `GET /badge.svg`: well-formed SVG with the target's state and color, acknowledged drift in a
//! color of its own, cache headers, a grey "unknown" badge, and problem+json for a missing
//! parameter.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::*;
use serde_json::{Value, json};

backend_tests! {
    badges_show_each_state_in_its_color,
    badge_text_is_escaped_for_xml,
    an_unchanged_badge_answers_304_to_its_etag,
    badge_parameters_are_required_and_checked_by_name,
    a_stale_badge_says_what_the_last_check_found,
    the_label_can_name_the_repo_or_the_whole_target,
    an_acknowledged_drift_says_so_in_a_color_of_its_own,
}

/// The badge's visible texts (each drawn twice: shadow and text) and the fill of its right half.
fn parse(svg: &str) -> (Vec<String>, String, String) {
    let document = roxmltree::Document::parse(svg)
        .unwrap_or_else(|error| panic!("the badge is not XML ({error}): {svg}"));
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let texts = root
        .descendants()
        .filter(|node| node.has_tag_name("text"))
        .map(|node| node.text().unwrap_or_default().to_owned())
        .collect();
    let fills: Vec<&str> = root
        .descendants()
        .filter(|node| node.has_tag_name("rect"))
        .filter_map(|node| node.attribute("fill"))
        .collect();
    let title = root
        .descendants()
        .find(|node| node.has_tag_name("title"))
        .and_then(|node| node.text())
        .unwrap_or_default()
        .to_owned();
    (texts, fills[2].to_owned(), title)
}

async fn badges_show_each_state_in_its_color(backend: Backend) {
    let app = TestApp::on(backend).await;
    let recent = at_offset(-30);
    app.record(&snapshot("r", "synced", "SYNCED", &[], &recent))
        .await;
    app.record(&snapshot("r", "drift", "OUT_OF_SYNC", &["a"], &recent))
        .await;
    app.record(&snapshot("r", "broken", "ERROR", &[], &recent))
        .await;
    app.record(&snapshot("r", "quiet", "SYNCED", &[], &at_offset(-7200)))
        .await;

    let mut fills = Vec::new();
    for (server, text) in [
        ("synced", "synced"),
        ("drift", "out of sync"),
        ("broken", "error"),
        ("quiet", "stale (last: synced)"),
        ("never-reported", "unknown"),
    ] {
        let response = app.get(&format!("/badge.svg?repo=r&server={server}")).await;
        assert_eq!(response.status, StatusCode::OK, "{server}");
        assert_eq!(response.content_type(), "image/svg+xml");
        assert_eq!(response.header("cache-control"), Some("no-cache"));
        assert!(response.header("etag").is_some());
        let (texts, fill, title) = parse(&response.text());
        assert_eq!(texts, [server, server, text, text], "{server}");
        assert_eq!(title, format!("{server}: {text}"));
        fills.push(fill);
    }
    assert_eq!(fills[4], "#6e6e6e", "unknown is grey");
    let mut distinct = fills.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        5,
        "every state has its own color: {fills:?}"
    );
}

async fn badge_text_is_escaped_for_xml(backend: Backend) {
    let app = TestApp::on(backend).await;
    let server = r#"<script>alert("x")</script> & 'co'"#;
    app.record(&snapshot("r&d", server, "SYNCED", &[], &at_offset(-5)))
        .await;
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("repo", "r&d")
        .append_pair("server", server)
        .finish();
    let response = app.get(&format!("/badge.svg?{query}")).await;
    let (texts, _, _) = parse(&response.text());
    assert_eq!(texts[0], server);
    assert_eq!(texts[2], "synced");
}

async fn an_unchanged_badge_answers_304_to_its_etag(backend: Backend) {
    let app = TestApp::on(backend).await;
    app.record(&snapshot("r", "s", "SYNCED", &[], &at_offset(-5)))
        .await;
    let first = app.get("/badge.svg?repo=r&server=s").await;
    let etag = first.header("etag").unwrap().to_owned();
    let revalidate = |etag: String| {
        Request::get("/badge.svg?repo=r&server=s")
            .header(header::IF_NONE_MATCH, etag)
            .body(Body::empty())
            .unwrap()
    };
    let again = app.request(revalidate(etag.clone())).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    app.record(&snapshot("r", "s", "OUT_OF_SYNC", &["a"], &at_offset(-1)))
        .await;
    let changed = app.request(revalidate(etag.clone())).await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
}

async fn badge_parameters_are_required_and_checked_by_name(backend: Backend) {
    let app = TestApp::on(backend).await;
    app.get("/badge.svg?repo=r")
        .await
        .assert_problem(400, &["server"]);
    app.get("/badge.svg")
        .await
        .assert_problem(400, &["repo", "server"]);
    app.get("/badge.svg?repo=r&server=s&colour=red")
        .await
        .assert_problem(400, &["colour"]);
    app.get("/badge.svg?repo=%09&server=s")
        .await
        .assert_problem(400, &["repo"]);
    app.get("/badge.svg?repo=r&server=s&label=host")
        .await
        .assert_problem(400, &["label"]);
    app.get("/badge.svg?server=s&label=repo&label=target")
        .await
        .assert_problem(400, &["label", "repo"]);
}

async fn a_stale_badge_says_what_the_last_check_found(backend: Backend) {
    let app = TestApp::on(backend).await;
    let old = at_offset(-7200);
    app.record(&snapshot("r", "drift", "OUT_OF_SYNC", &["a", "b"], &old))
        .await;
    app.record(&snapshot("r", "one", "OUT_OF_SYNC", &["a"], &old))
        .await;
    app.record(&snapshot("r", "broken", "ERROR", &[], &old))
        .await;
    let mut fills = Vec::new();
    for (server, text) in [
        ("drift", "stale (last: out of sync, 2 files)"),
        ("one", "stale (last: out of sync, 1 file)"),
        ("broken", "stale (last: error)"),
    ] {
        let response = app.get(&format!("/badge.svg?repo=r&server={server}")).await;
        let (texts, fill, title) = parse(&response.text());
        assert_eq!(texts, [server, server, text, text], "{server}");
        assert_eq!(title, format!("{server}: {text}"));
        fills.push(fill);
    }
    assert_eq!(fills, ["#8d6e00"; 3], "stale keeps the stale color");
}

async fn the_label_can_name_the_repo_or_the_whole_target(backend: Backend) {
    let app = TestApp::on(backend).await;
    app.record(&snapshot("rsyslog", "lab", "SYNCED", &[], &at_offset(-5)))
        .await;
    for (label, text) in [
        ("", "lab"),
        ("&label=server", "lab"),
        ("&label=repo", "rsyslog"),
        ("&label=target", "rsyslog / lab"),
    ] {
        let response = app
            .get(&format!("/badge.svg?repo=rsyslog&server=lab{label}"))
            .await;
        assert_eq!(response.status, StatusCode::OK, "{label}");
        let (texts, _, title) = parse(&response.text());
        assert_eq!(texts, [text, text, "synced", "synced"], "{label}");
        assert_eq!(title, format!("{text}: synced"));
    }
}

/// `method uri` with a JSON body, as the open (tokenless) server takes writes; asserts a 2xx.
async fn send(app: &TestApp, method: Method, uri: &str, body: Option<Value>) -> TestResponse {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    let body = body.map_or_else(Body::empty, |body| Body::from(body.to_string()));
    let response = app.request(request.body(body).unwrap()).await;
    assert!(response.status.is_success(), "{uri}: {}", response.text());
    response
}

async fn an_acknowledged_drift_says_so_in_a_color_of_its_own(backend: Backend) {
    let app = TestApp::on(backend).await;
    let recent = at_offset(-30);
    app.record(&snapshot("r", "drift", "OUT_OF_SYNC", &["a.conf"], &recent))
        .await;
    app.record(&snapshot("r", "broken", "ERROR", &[], &recent))
        .await;
    app.record(&snapshot(
        "r",
        "narrow",
        "OUT_OF_SYNC",
        &["b.conf"],
        &recent,
    ))
    .await;
    app.record(&snapshot(
        "r",
        "quiet",
        "OUT_OF_SYNC",
        &["a.conf"],
        &at_offset(-7200),
    ))
    .await;
    let until = at_offset(86_400);
    let mut acks = Vec::new();
    for (server, files) in [
        ("drift", Value::Null),
        ("broken", Value::Null),
        ("narrow", json!(["a*"])),
        ("quiet", Value::Null),
    ] {
        let body = json!({"repo": "r", "server": server, "until": until, "files": files,
                          "reason": "hotfix INC-4711\nuntil PR #312 <merges>"});
        acks.push(
            send(&app, Method::POST, "/api/acks", Some(body))
                .await
                .json(),
        );
    }

    let colors = ["#2e7d32", "#e65100", "#c62828", "#8d6e00", "#6e6e6e"];
    for (server, text) in [("drift", "out of sync (ack)"), ("broken", "error (ack)")] {
        let svg = app
            .get(&format!("/badge.svg?repo=r&server={server}"))
            .await
            .text();
        let (texts, fill, title) = parse(&svg);
        assert_eq!(texts, [server, server, text, text]);
        assert_eq!(fill, "#3a6ea5", "{server}");
        assert!(
            !colors.contains(&fill.as_str()),
            "unlike every state's color"
        );
        assert_eq!(
            title,
            format!(
                "{server}: {text}, acknowledged by anonymous until {}: hotfix INC-4711 until PR \
                 #312 <merges>",
                rendered(&until)
            )
        );
        assert!(
            svg.contains(&format!(r#"aria-label="{server}: {text}""#)),
            "{svg}"
        );
    }
    // Unchanged where the acknowledgement does not apply: a file outside its globs, and a stale
    // target (no acknowledgement accepts a silent reporter).
    for (server, text, fill) in [
        ("narrow", "out of sync", "#e65100"),
        ("quiet", "stale (last: out of sync, 1 file)", "#8d6e00"),
    ] {
        let (texts, shown, title) = parse(
            &app.get(&format!("/badge.svg?repo=r&server={server}"))
                .await
                .text(),
        );
        assert_eq!(texts[2], text, "{server}");
        assert_eq!(shown, fill, "{server}");
        assert_eq!(title, format!("{server}: {text}"));
    }
    // Deleted: the badge is back to plain drift.
    send(
        &app,
        Method::DELETE,
        &format!("/api/acks/{}", acks[0]["id"]),
        None,
    )
    .await;
    let (texts, fill, _) = parse(&app.get("/badge.svg?repo=r&server=drift").await.text());
    assert_eq!(
        (texts[2].as_str(), fill.as_str()),
        ("out of sync", "#e65100")
    );
}
