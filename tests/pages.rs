//! The built-in status pages and `/docs`, in-process: what they contain, that they escape what CI
//! sent, and how they answer unknown targets. The headless-browser test drives the same pages.

mod common;

use axum::http::StatusCode;
use common::*;

backend_tests! {
    the_status_page_lists_every_target_with_its_state,
    the_status_page_filters_by_repo_and_state,
    pages_escape_what_ci_sent,
    the_target_page_shows_transitions_recent_checks_and_a_timeline,
    an_unknown_target_is_an_html_404_and_a_missing_parameter_a_400,
    docs_serve_swagger_ui_offline_over_the_served_spec,
}

async fn the_status_page_lists_every_target_with_its_state(backend: Backend) {
    let app = TestApp::on(backend).await;
    let recent = at_offset(-90);
    app.record(&snapshot(
        "rsyslog",
        "rsyslog-lab",
        "OUT_OF_SYNC",
        &["rsyslog.conf", "30-lab.conf"],
        &recent,
    ))
    .await;
    app.record(&snapshot("rsyslog", "rsyslog-prod", "SYNCED", &[], &recent))
        .await;
    app.record(&snapshot("nginx", "edge", "ERROR", &[], &at_offset(-7200)))
        .await;

    let response = app.get("/").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.content_type(), "text/html; charset=utf-8");
    let html = response.text();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains(r#"<meta http-equiv="refresh" content="30">"#));
    for needle in [
        r#"data-repo="rsyslog" data-server="rsyslog-lab" data-state="OUT_OF_SYNC""#,
        r#"data-repo="rsyslog" data-server="rsyslog-prod" data-state="SYNCED""#,
        r#"data-repo="nginx" data-server="edge" data-state="STALE""#,
        "30-lab.conf, rsyslog.conf",
        r#"<span class="state state-OUT_OF_SYNC">Out of sync</span>"#,
        r#"href="/target?repo=rsyslog&amp;server=rsyslog-lab""#,
        "Showing 3 of 3 targets.",
    ] {
        assert!(html.contains(needle), "{needle} missing in {html}");
    }
    assert!(!html.contains("<script"), "the page needs no JavaScript");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no external assets"
    );
}

async fn the_status_page_filters_by_repo_and_state(backend: Backend) {
    let app = TestApp::on(backend).await;
    let recent = at_offset(-30);
    app.record(&snapshot("a", "one", "SYNCED", &[], &recent))
        .await;
    app.record(&snapshot("a", "two", "OUT_OF_SYNC", &["x"], &recent))
        .await;
    app.record(&snapshot("b", "three", "OUT_OF_SYNC", &["y"], &recent))
        .await;

    let listed = |html: &str| -> Vec<String> {
        html.split("data-server=\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().to_owned())
            .collect()
    };
    let html = app.get("/?repo=a&state=").await.text();
    assert_eq!(listed(&html), ["one", "two"]);
    assert!(
        html.contains(r#"<option value="a" selected>a</option>"#),
        "{html}"
    );
    let html = app.get("/?repo=&state=OUT_OF_SYNC").await.text();
    assert_eq!(listed(&html), ["two", "three"]);
    let html = app.get("/?repo=b&state=SYNCED").await.text();
    assert!(listed(&html).is_empty());
    assert!(html.contains("Showing 0 of 3 targets."));
    app.get("/?state=GREEN")
        .await
        .assert_problem(400, &["state"]);
}

async fn pages_escape_what_ci_sent(backend: Backend) {
    let app = TestApp::on(backend).await;
    let mut body = snapshot(
        "<script>alert(1)</script>",
        "a\"b",
        "OUT_OF_SYNC",
        &["<img src=x onerror=alert(1)>"],
        &at_offset(-30),
    );
    body["run_url"] = serde_json::json!("javascript:alert(1)");
    body["message"] = serde_json::json!("<b>bold</b>");
    app.record(&body).await;

    for uri in [
        "/".to_owned(),
        "/target?repo=%3Cscript%3Ealert(1)%3C%2Fscript%3E&server=a%22b".to_owned(),
    ] {
        let response = app.get(&uri).await;
        assert_eq!(response.status, StatusCode::OK, "{uri}");
        let html = response.text();
        assert!(!html.contains("<script"), "{uri}: {html}");
        assert!(!html.contains("<img"), "{uri}: {html}");
        assert!(!html.contains("<b>"), "{uri}: {html}");
        assert!(!html.contains("href=\"javascript:"), "{uri}: {html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{uri}: {html}"
        );
    }
}

async fn the_target_page_shows_transitions_recent_checks_and_a_timeline(backend: Backend) {
    let app = TestApp::on(backend).await;
    let t = |minutes: i64| at_offset(-60 * (60 - minutes));
    app.record(&snapshot("r", "s", "SYNCED", &[], &t(0))).await;
    app.record(&snapshot("r", "s", "SYNCED", &[], &t(2))).await;
    app.record(&snapshot("r", "s", "OUT_OF_SYNC", &["a.conf"], &t(4)))
        .await;
    app.record(&snapshot("r", "s", "ERROR", &[], &t(6))).await;
    let mut last = snapshot("r", "s", "SYNCED", &[], &t(58));
    last["run_url"] = serde_json::json!("https://ci.example.org/7");
    last["revision"] = serde_json::json!("3f2c1ab");
    app.record(&last).await;
    // Another target's history must not leak in.
    app.record(&snapshot("r", "other", "OUT_OF_SYNC", &["z.conf"], &t(5)))
        .await;

    let response = app.get("/target?repo=r&server=s").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.content_type(), "text/html; charset=utf-8");
    let html = response.text();
    let section = |id: &str| -> String {
        let start = html
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no #{id}"));
        let end = html[start..].find("</table>").unwrap() + start;
        html[start..end].to_owned()
    };
    let transitions = section("transitions");
    assert_eq!(transitions.matches("<tr>").count(), 1 + 4, "{transitions}");
    assert!(transitions.contains("(ongoing)"));
    assert!(!transitions.contains("z.conf"));
    let checks = section("checks");
    assert_eq!(checks.matches("<tr>").count(), 1 + 5, "{checks}");
    assert!(checks.contains(r#"<a href="https://ci.example.org/7" rel="noopener noreferrer">"#));
    let timeline = html.split("class=\"timeline\"").nth(1).expect("a timeline");
    let timeline = &timeline[..timeline.find("</div>").unwrap()];
    assert_eq!(timeline.matches("<span").count(), 4, "{timeline}");
    assert!(timeline.contains("state-OUT_OF_SYNC") && timeline.contains("state-ERROR"));
}

async fn an_unknown_target_is_an_html_404_and_a_missing_parameter_a_400(backend: Backend) {
    let app = TestApp::on(backend).await;
    let response = app.get("/target?repo=nope&server=never").await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(response.content_type(), "text/html; charset=utf-8");
    assert!(response.text().contains("Unknown target"));
    app.get("/target?repo=nope")
        .await
        .assert_problem(400, &["server"]);
}

async fn docs_serve_swagger_ui_offline_over_the_served_spec(backend: Backend) {
    let app = TestApp::on(backend).await;
    let redirect = app.get("/docs").await;
    assert!(redirect.status.is_redirection());
    assert_eq!(redirect.header("location"), Some("/docs/"));

    let page = app.get("/docs/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type().starts_with("text/html"));
    let html = page.text();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("src=\"http"), "no CDN: {html}");

    let init = app.get("/docs/swagger-initializer.js").await;
    assert_eq!(init.status, StatusCode::OK);
    assert!(init.text().contains("\"/openapi.json\""), "{}", init.text());
    let bundle = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status, StatusCode::OK);
    assert!(bundle.body.len() > 100_000, "the bundle is embedded");
}
