//! The built-in status pages and `/docs`, in-process: what they contain, that they escape what CI
//! sent, how they answer unknown targets, and how they show acknowledged drift and maintenance
//! silences. The headless-browser test drives the same pages.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::*;
use gitops_status_server::auth::Tokens;
use gitops_status_server::{AppState, Settings};
use serde_json::{Value, json};

backend_tests! {
    the_status_page_lists_every_target_with_its_state,
    the_status_page_filters_by_repo_and_state,
    pages_escape_what_ci_sent,
    the_target_page_shows_transitions_recent_checks_and_a_timeline,
    an_unknown_target_is_an_html_404_and_a_missing_parameter_a_400,
    docs_serve_swagger_ui_offline_over_the_served_spec,
    a_stale_target_shows_its_last_result_everywhere_on_the_pages,
    error_messages_show_shortened_with_the_full_text_on_hover_and_on_the_target_page,
    a_ten_thousand_file_snapshot_keeps_the_index_small,
    the_state_filter_takes_several_states_and_survives_a_resubmit,
    the_counts_at_the_top_respect_the_filters,
    the_index_sorts_by_severity,
    a_favicon_is_served_from_the_binary,
    an_acknowledged_drift_shows_who_why_and_until_when_beside_its_unchanged_state,
    running_and_coming_silences_are_listed_and_the_rows_they_cover_marked,
    the_target_page_shows_the_acknowledgement_in_force_and_how_earlier_ones_ended,
}

/// A CI job's write token and an operator's admin token; reads stay open.
const PEOPLE: &str = r#"
[[tokens]]
name = "ci-hotfix"
token = "ci-hotfix-write-token"
scopes = ["write"]

[[tokens]]
name = "alice"
token = "alice-admin-token"
scopes = ["admin"]
"#;
const CI: &str = "ci-hotfix-write-token";
const ALICE: &str = "alice-admin-token";

/// The app with [`PEOPLE`]' tokens, so acknowledgements and silences record who made them.
async fn app_with_people(backend: Backend) -> TestApp {
    let mut app = TestApp::on(backend).await;
    app.app = gitops_status_server::app(
        AppState::new(app.store.clone(), Settings::default())
            .with_tokens(Tokens::parse(PEOPLE).unwrap()),
    );
    app
}

/// `method uri` with `token`, and `body` as JSON when given; asserts a 2xx and returns the reply.
async fn send(
    app: &TestApp,
    method: Method,
    uri: &str,
    token: &str,
    body: Option<Value>,
) -> TestResponse {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json");
    let body = body.map_or_else(Body::empty, |body| Body::from(body.to_string()));
    let response = app.request(request.body(body).unwrap()).await;
    assert!(
        response.status.is_success(),
        "{uri}: {} {}",
        response.status,
        response.text()
    );
    response
}

/// An RFC 3339 time as the pages show it: `2026-04-22 10:30:00 UTC`.
fn human(rfc3339: &str) -> String {
    format!("{} UTC", rendered(rfc3339)[..19].replacen('T', " ", 1))
}

/// The markup after the tag that holds `marker` (an attribute, or a whole tag), up to the next
/// `end`.
fn part<'a>(html: &'a str, marker: &str, end: &str) -> &'a str {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {html}"));
    let start = html[start..].find('>').unwrap() + start + 1;
    let stop = html[start..].find(end).unwrap() + start;
    &html[start..stop]
}

/// The `<tr>` of one target on the index.
fn index_row<'a>(html: &'a str, server: &str) -> &'a str {
    let start = html
        .find(&format!("data-server=\"{server}\""))
        .unwrap_or_else(|| panic!("no row for {server} in {html}"));
    let end = html[start..].find("</tr>").unwrap() + start;
    &html[start..end]
}

/// The text of some markup: tags dropped (cells and list items apart), whitespace collapsed.
fn text_of(html: &str) -> String {
    let mut html = html.to_owned();
    for end in ["</dt>", "</dd>", "</td>", "</th>", "</li>"] {
        html = html.replace(end, " ");
    }
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The servers the index lists, in order.
fn listed(html: &str) -> Vec<String> {
    html.split("data-server=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
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
        r#"<span class="state state-OUT_OF_SYNC"><span class="glyph" aria-hidden="true">≠</span> Out of sync</span>"#,
        r#"<span class="state state-ERROR"><span class="glyph" aria-hidden="true">✕</span> Error</span>"#,
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

async fn a_stale_target_shows_its_last_result_everywhere_on_the_pages(backend: Backend) {
    let app = TestApp::on(backend).await;
    let old = at_offset(-7200);
    app.record(&snapshot(
        "r",
        "drift",
        "OUT_OF_SYNC",
        &["a.conf", "b.conf"],
        &old,
    ))
    .await;
    app.record(&snapshot("r", "broken", "ERROR", &[], &old))
        .await;
    app.record(&snapshot("r", "quiet", "SYNCED", &[], &old))
        .await;
    app.record(&snapshot(
        "r",
        "live",
        "OUT_OF_SYNC",
        &["c.conf"],
        &at_offset(-5),
    ))
    .await;

    let html = app.get("/").await.text();
    for (server, shown) in [
        ("drift", "◷ Stale (last: ≠ Out of sync, 2 files)"),
        ("broken", "◷ Stale (last: ✕ Error)"),
        ("quiet", "◷ Stale (last: ✓ Synced)"),
        ("live", "≠ Out of sync"),
    ] {
        let row = index_row(&html, server);
        assert!(text_of(row).contains(shown), "{server}: {}", text_of(row));
    }
    assert!(
        index_row(&html, "drift").contains(r#"data-state="STALE" data-sync-status="OUT_OF_SYNC""#)
    );
    let summary =
        text_of(&html[html.find("Targets by state").unwrap()..html.find("</ul>").unwrap()]);
    assert!(
        summary.contains("◷ Stale 3 (last Synced: 1, last Out of sync: 1, last Error: 1)"),
        "{summary}"
    );
    // The state filter keeps its meaning: STALE selects every stale target, whatever it last said.
    assert_eq!(
        listed(&app.get("/?state=STALE").await.text()),
        ["broken", "drift", "quiet"]
    );
    assert_eq!(
        listed(&app.get("/?state=OUT_OF_SYNC").await.text()),
        ["live"]
    );

    let page = app.get("/target?repo=r&server=drift").await.text();
    let heading = text_of(&page[page.find("<h1>").unwrap()..page.find("</h1>").unwrap()]);
    assert_eq!(heading, "r / drift ◷ Stale (last: ≠ Out of sync, 2 files)");
    let went_stale =
        time::OffsetDateTime::parse(&old, &time::format_description::well_known::Rfc3339).unwrap()
            + time::Duration::minutes(10);
    let went_stale = rendered(
        &went_stale
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
    );
    let facts = text_of(&page[page.find("<dl>").unwrap()..page.find("</dl>").unwrap()]);
    assert!(
        facts.contains(&format!(
            "Stale since {} UTC",
            went_stale[..19].replacen('T', " ", 1)
        )),
        "{facts}"
    );
    assert!(facts.contains("Last result ≠ Out of sync"), "{facts}");
}

async fn error_messages_show_shortened_with_the_full_text_on_hover_and_on_the_target_page(
    backend: Backend,
) {
    let app = TestApp::on(backend).await;
    let long = format!(
        "ssh: connect to host web-1 port 22: Connection refused\n{}",
        "retrying with the bastion host failed as well; ".repeat(4)
    );
    let mut error = snapshot("r", "web-1", "ERROR", &[], &at_offset(-120));
    error["message"] = serde_json::json!(long);
    app.record(&snapshot("r", "web-1", "SYNCED", &[], &at_offset(-600)))
        .await;
    app.record(&error).await;
    // The whole message, newline and all, on hover.
    let full_title = format!(r#"title="{long}""#);

    let html = app.get("/").await.text();
    let row = index_row(&html, "web-1");
    assert!(
        row.contains(
            r#"<span class="message" title="ssh: connect to host web-1 port 22: Connection refused"#
        ),
        "{row}"
    );
    assert!(row.contains(&full_title), "{row}");
    let shown = text_of(row);
    assert!(
        shown.contains("ssh: connect to host web-1 port 22: Connection refused retrying with the…"),
        "{shown}"
    );
    assert!(!shown.contains("failed as well"), "shortened: {shown}");

    let page = app.get("/target?repo=r&server=web-1").await.text();
    for table in ["transitions", "checks"] {
        let start = page.find(&format!("id=\"{table}\"")).unwrap();
        let section = &page[start..start + page[start..].find("</table>").unwrap()];
        assert_eq!(
            section
                .matches(r#"<span class="message" title="ssh: connect"#)
                .count(),
            1,
            "{table}: {section}"
        );
        assert!(
            text_of(section).contains("Connection refused retrying"),
            "{table}"
        );
    }
    // The full text, as sent, in the latest check's facts.
    assert!(page.contains(&format!("<pre>{}</pre>", long)), "{page}");
}

async fn a_ten_thousand_file_snapshot_keeps_the_index_small(backend: Backend) {
    let app = TestApp::on(backend).await;
    let names: Vec<String> = (0..10_000)
        .map(|n| format!("etc/app/conf.d/{n:05}-file.conf"))
        .collect();
    let files: Vec<&str> = names.iter().map(String::as_str).collect();
    app.record(&snapshot(
        "big",
        "fleet",
        "OUT_OF_SYNC",
        &files,
        &at_offset(-30),
    ))
    .await;
    app.record(&snapshot(
        "big",
        "fleet",
        "OUT_OF_SYNC",
        &files[..5],
        &at_offset(-20),
    ))
    .await;
    app.record(&snapshot(
        "big",
        "fleet",
        "OUT_OF_SYNC",
        &files,
        &at_offset(-10),
    ))
    .await;

    let html = app.get("/").await.text();
    assert!(html.len() < 16_000, "the index is {} bytes", html.len());
    let row = index_row(&html, "fleet");
    assert!(
        text_of(row).contains(
            "etc/app/conf.d/00000-file.conf, etc/app/conf.d/00001-file.conf, \
             etc/app/conf.d/00002-file.conf and 9997 more"
        ),
        "{row}"
    );
    assert!(
        row.contains(r#"<a class="more" href="/target?repo=big&amp;server=fleet#files">"#),
        "{row}"
    );

    // The target page lists the first twenty and folds the rest one click away; its tables of
    // transitions and checks stay short and link each check's full record.
    let page = app.get("/target?repo=big&server=fleet").await.text();
    assert!(
        page.len() < 600_000,
        "the target page is {} bytes",
        page.len()
    );
    assert!(page.contains(r#"<dt id="files">"#));
    assert!(
        page.contains("<details><summary>and 9980 more</summary>"),
        "folded list"
    );
    assert!(
        page.contains("<code>etc/app/conf.d/09999-file.conf</code>"),
        "every name is there"
    );
    for table in ["transitions", "checks"] {
        let start = page.find(&format!("id=\"{table}\"")).unwrap();
        let section = &page[start..start + page[start..].find("</table>").unwrap()];
        assert!(section.len() < 5_000, "{table} is {} bytes", section.len());
        assert!(section.contains("and 9997 more</a>"), "{section}");
        assert!(
            section.contains(r#"href="/history?repo=big&amp;server=fleet&amp;from="#),
            "{section}"
        );
    }
    // That link gives the whole check.
    let start = page.find(r#"href="/history?"#).unwrap() + 6;
    let href = page[start..start + page[start..].find('"').unwrap()].replace("&amp;", "&");
    let checks = app.get_rows(&href).await;
    assert_eq!(checks.len(), 1, "{href}");
    assert_eq!(checks[0]["files"].as_array().unwrap().len(), 10_000);
}

async fn the_state_filter_takes_several_states_and_survives_a_resubmit(backend: Backend) {
    let app = TestApp::on(backend).await;
    app.record(&snapshot("a", "ok", "SYNCED", &[], &at_offset(-30)))
        .await;
    app.record(&snapshot(
        "a",
        "drift",
        "OUT_OF_SYNC",
        &["x"],
        &at_offset(-30),
    ))
    .await;
    app.record(&snapshot("a", "down", "ERROR", &[], &at_offset(-30)))
        .await;
    app.record(&snapshot("a", "dead", "SYNCED", &[], &at_offset(-7200)))
        .await;

    // The form's checkboxes send `state` once per ticked box; a link or /status.json's form is a
    // comma-separated list. Both select the same, and both come back ticked.
    for query in [
        "state=ERROR&state=STALE",
        "state=ERROR%2CSTALE",
        "state=ERROR,STALE",
    ] {
        let html = app.get(&format!("/?{query}")).await.text();
        assert_eq!(listed(&html), ["dead", "down"], "{query}");
        for (state, ticked) in [
            ("SYNCED", false),
            ("OUT_OF_SYNC", false),
            ("ERROR", true),
            ("STALE", true),
        ] {
            let input = format!(r#"<input type="checkbox" name="state" value="{state}""#);
            let checked = format!("{input} checked>");
            assert!(html.contains(&input), "{query}: no box for {state}");
            assert_eq!(html.contains(&checked), ticked, "{query}: {state}");
        }
    }
    let rows = app.get_rows("/status.json?state=ERROR,STALE").await;
    let servers: Vec<&str> = rows
        .iter()
        .map(|row| row["server"].as_str().unwrap())
        .collect();
    assert_eq!(servers, ["dead", "down"], "the API agrees with the page");
    // No box ticked is every state.
    assert_eq!(listed(&app.get("/?repo=&sort=name").await.text()).len(), 4);
    app.get("/?state=ERROR&state=GREEN")
        .await
        .assert_problem(400, &["state"]);
}

async fn the_counts_at_the_top_respect_the_filters(backend: Backend) {
    let app = TestApp::on(backend).await;
    app.record(&snapshot("a", "one", "SYNCED", &[], &at_offset(-30)))
        .await;
    app.record(&snapshot("a", "two", "ERROR", &[], &at_offset(-30)))
        .await;
    app.record(&snapshot(
        "b",
        "three",
        "OUT_OF_SYNC",
        &["y"],
        &at_offset(-30),
    ))
    .await;
    app.record(&snapshot(
        "b",
        "four",
        "OUT_OF_SYNC",
        &["y"],
        &at_offset(-30),
    ))
    .await;

    let counts = |html: &str| -> Vec<String> {
        let summary = &html[html.find("Targets by state").unwrap()..html.find("</ul>").unwrap()];
        summary
            .split("<li ")
            .skip(1)
            .map(|item| text_of(&format!("<li {item}")))
            .collect()
    };
    assert_eq!(
        counts(&app.get("/").await.text()),
        ["✓ Synced 1", "≠ Out of sync 2", "✕ Error 1", "◷ Stale 0"]
    );
    assert_eq!(
        counts(&app.get("/?repo=a").await.text()),
        ["✓ Synced 1", "≠ Out of sync 0", "✕ Error 1", "◷ Stale 0"]
    );
    assert_eq!(
        counts(&app.get("/?repo=b&state=SYNCED").await.text()),
        [
            "✓ Synced 0",
            "≠ Out of sync 2 (not shown)",
            "✕ Error 0 (not shown)",
            "◷ Stale 0 (not shown)"
        ]
    );
}

async fn the_index_sorts_by_severity(backend: Backend) {
    let app = TestApp::on(backend).await;
    app.record(&snapshot("a", "ok", "SYNCED", &[], &at_offset(-30)))
        .await;
    app.record(&snapshot(
        "b",
        "drift",
        "OUT_OF_SYNC",
        &["x"],
        &at_offset(-30),
    ))
    .await;
    app.record(&snapshot(
        "c",
        "dead",
        "OUT_OF_SYNC",
        &["x"],
        &at_offset(-7200),
    ))
    .await;
    app.record(&snapshot("d", "down", "ERROR", &[], &at_offset(-30)))
        .await;
    app.record(&snapshot("a", "down", "ERROR", &[], &at_offset(-30)))
        .await;

    assert_eq!(
        listed(&app.get("/").await.text()),
        ["down", "ok", "drift", "dead", "down"],
        "by repo, then server"
    );
    let html = app.get("/?sort=severity").await.text();
    let order: Vec<String> = html
        .split("data-repo=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        order,
        ["a", "d", "c", "b", "a"],
        "error, stale, out of sync, synced"
    );
    assert!(html.contains(r#"<option value="severity" selected>"#));
    let filtered = app
        .get("/?sort=severity&state=OUT_OF_SYNC,SYNCED")
        .await
        .text();
    assert_eq!(listed(&filtered), ["drift", "ok"]);
    app.get("/?sort=worst").await.assert_problem(400, &["sort"]);
}

async fn a_favicon_is_served_from_the_binary(backend: Backend) {
    let app = TestApp::on(backend).await;
    for path in ["/favicon.svg", "/favicon.ico"] {
        let response = app.get(path).await;
        assert_eq!(response.status, StatusCode::OK, "{path}");
        assert_eq!(response.content_type(), "image/svg+xml", "{path}");
        let svg = response.text();
        let document = roxmltree::Document::parse(&svg).expect("the favicon is XML");
        assert_eq!(document.root_element().tag_name().name(), "svg");
    }
    let html = app.get("/").await.text();
    assert!(html.contains(r#"<link rel="icon" type="image/svg+xml" href="/favicon.svg">"#));
}

async fn an_acknowledged_drift_shows_who_why_and_until_when_beside_its_unchanged_state(
    backend: Backend,
) {
    let app = app_with_people(backend).await;
    for server in ["lab", "prod"] {
        let drift = snapshot(
            "rsyslog",
            server,
            "OUT_OF_SYNC",
            &["rsyslog.conf"],
            &at_offset(-60),
        );
        send(&app, Method::POST, "/api/status", CI, Some(drift)).await;
    }
    let until = at_offset(2 * 86_400 + 3600);
    let made = send(
        &app,
        Method::POST,
        "/api/acks",
        CI,
        Some(json!({"repo": "rsyslog", "server": "lab", "until": until,
                    "reason": "hotfix for INC-4711 <urgent>, PR #312 brings it into the repo"})),
    )
    .await
    .json();

    let html = app.get("/").await.text();
    let row = index_row(&html, "lab");
    assert!(
        row.contains(&format!(
            r#"data-state="OUT_OF_SYNC" data-sync-status="OUT_OF_SYNC" data-acknowledged="{}""#,
            made["id"]
        )),
        "{row}"
    );
    assert!(
        row.contains(&format!(
            r#"<time datetime="{}">{}</time>"#,
            rendered(&until),
            human(&until)
        )),
        "{row}"
    );
    assert!(
        text_of(row).contains(&format!(
            "≠ Out of sync Acknowledged by ci-hotfix until {} (in 2d 0h) hotfix for INC-4711 \
             &lt;urgent&gt;, PR #312 brings it into the repo",
            human(&until)
        )),
        "{}",
        text_of(row)
    );
    assert!(!html.contains("<urgent>"), "the reason is escaped");
    let other = index_row(&html, "prod");
    assert!(
        !other.contains("Acknowledged") && !other.contains("data-acknowledged"),
        "{other}"
    );
    // The state is unchanged: the filter still finds both as OUT_OF_SYNC.
    assert_eq!(
        listed(&app.get("/?state=OUT_OF_SYNC").await.text()),
        ["lab", "prod"]
    );
    assert!(!html.contains("id=\"silences\""), "no silence, no list");
}

async fn running_and_coming_silences_are_listed_and_the_rows_they_cover_marked(backend: Backend) {
    let app = app_with_people(backend).await;
    for (repo, server) in [
        ("postgres", "db-1"),
        ("postgres", "db-2"),
        ("nginx", "web-1"),
    ] {
        let synced = snapshot(repo, server, "SYNCED", &[], &at_offset(-60));
        send(&app, Method::POST, "/api/status", CI, Some(synced)).await;
    }
    let silence = |body: Value| send(&app, Method::POST, "/api/silences", ALICE, Some(body));
    let (running_from, running_to) = (at_offset(-60), at_offset(7200));
    let running = silence(json!({"servers": ["db-*"], "starts_at": running_from,
                                 "ends_at": running_to, "reason": "PostgreSQL 17 upgrade"}))
    .await
    .json();
    let (coming_from, coming_to) = (at_offset(86_400), at_offset(90_000));
    let coming = silence(json!({"repos": ["nginx"], "starts_at": coming_from,
                                "ends_at": coming_to, "reason": "nginx reload"}))
    .await
    .json();
    let cancelled = silence(json!({"servers": ["web-*"], "ends_at": at_offset(3600),
                                   "reason": "cancelled window"}))
    .await
    .json();
    send(
        &app,
        Method::DELETE,
        &format!("/api/silences/{}", cancelled["id"]),
        ALICE,
        None,
    )
    .await;

    let html = app.get("/").await.text();
    let table = part(&html, "id=\"silences\"", "</table>");
    assert!(
        !html.contains("cancelled window"),
        "a deleted silence is over"
    );
    let ids: Vec<String> = table
        .split("<tr id=\"silence-")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        [coming["id"].to_string(), running["id"].to_string()],
        "newest first"
    );
    for (silence, running) in [(&running, true), (&coming, false)] {
        let tag = format!(
            "<tr id=\"silence-{}\" data-running=\"{running}\">",
            silence["id"]
        );
        assert!(table.contains(&tag), "{tag} in {table}");
    }
    let row = part(table, &format!("silence-{}\"", running["id"]), "</tr>");
    assert_eq!(
        text_of(row),
        format!(
            "Running PostgreSQL 17 upgrade * db-* {} to {} (ends in 1h 59m) 2 alice",
            human(&running_from),
            human(&running_to)
        )
    );
    let row = part(table, &format!("silence-{}\"", coming["id"]), "</tr>");
    assert_eq!(
        text_of(row),
        format!(
            "Coming nginx reload nginx * {} to {} (starts in 23h 59m) 1 alice",
            human(&coming_from),
            human(&coming_to)
        )
    );
    assert!(row.contains(&format!("<time datetime=\"{}\">", rendered(&coming_from))));

    // Only a running silence marks the rows it covers, and links to itself.
    for server in ["db-1", "db-2"] {
        let row = index_row(&html, server);
        assert!(row.contains("data-silenced=\"true\""), "{row}");
        assert!(
            row.contains(&format!("href=\"#silence-{}\"", running["id"])),
            "{row}"
        );
        assert!(
            text_of(row).contains(&format!(
                "✓ Synced Silenced until {} (in 1h 59m) PostgreSQL 17 upgrade",
                human(&running_to)
            )),
            "{}",
            text_of(row)
        );
    }
    let web = index_row(&html, "web-1");
    assert!(
        !web.contains("data-silenced") && !web.contains("Silenced"),
        "{web}"
    );
    // The target's own page names the silences that concern it, running or coming.
    let page = app.get("/target?repo=nginx&server=web-1").await.text();
    let facts = text_of(part(&page, "<dl>", "</dl>"));
    assert!(
        facts.contains(&format!(
            "Silences Coming from {} (in 23h 59m) to {} nginx reload",
            human(&coming_from),
            human(&coming_to)
        )),
        "{facts}"
    );
    let page = app.get("/target?repo=postgres&server=db-1").await.text();
    assert!(
        page.contains(&format!("href=\"/#silence-{}\"", running["id"])),
        "{page}"
    );
}

async fn the_target_page_shows_the_acknowledgement_in_force_and_how_earlier_ones_ended(
    backend: Backend,
) {
    let app = &app_with_people(backend).await;
    let record = |files: &[&str], offset: i64| {
        let status = if files.is_empty() {
            "SYNCED"
        } else {
            "OUT_OF_SYNC"
        };
        let body = snapshot("rsyslog", "lab", status, files, &at_offset(offset));
        async move {
            send(app, Method::POST, "/api/status", CI, Some(body))
                .await
                .json()
        }
    };
    let ack = |reason: &str, extra: Value| {
        let mut body = json!({"repo": "rsyslog", "server": "lab", "reason": reason,
                              "until": at_offset(3 * 86_400)});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        async move {
            send(app, Method::POST, "/api/acks", CI, Some(body))
                .await
                .json()
        }
    };
    let fetch = |ack: &Value| {
        let uri = format!("/api/acks/{}", ack["id"]);
        async move { app.get(&uri).await.json() }
    };
    record(&["rsyslog.d/10-a.conf"], -300).await;
    let first = ack("first look", json!({})).await;
    let second = ack("wrong ticket", json!({})).await;
    send(
        app,
        Method::DELETE,
        &format!("/api/acks/{}", second["id"]),
        ALICE,
        None,
    )
    .await;
    let third = ack(
        "hotfix for INC-4711\nPR #312 brings it into the repo",
        json!({"files": ["rsyslog.d/*", "extra.conf"]}),
    )
    .await;
    let until = third["until"].as_str().unwrap().to_owned();

    let page = app.get("/target?repo=rsyslog&server=lab").await.text();
    assert_eq!(
        text_of(part(&page, "<h1>", "</h1>")),
        "rsyslog / lab ≠ Out of sync Acknowledged"
    );
    let in_force = text_of(part(&page, "id=\"acknowledged\"", "</dl>"));
    assert_eq!(
        in_force,
        format!(
            "Acknowledged By ci-hotfix on {} Reason hotfix \
             for INC-4711 PR #312 brings it into the repo Until {} (in 2d 23h) Files \
             rsyslog.d/*, extra.conf Id {}",
            human(third["created_at"].as_str().unwrap()),
            human(&until),
            third["id"]
        )
    );
    assert!(page.contains(&format!("<time datetime=\"{}\">", rendered(&until))));
    let acks = part(&page, "id=\"acks\"", "</table>");
    let ended = |ack: &Value| -> String {
        text_of(part(acks, &format!("data-ack=\"{}\"", ack["id"]), "</tr>"))
    };
    assert!(
        ended(&third).ends_with(&format!(
            "rsyslog.d/*, extra.conf {} In force",
            human(&until)
        )),
        "{}",
        ended(&third)
    );
    let second = fetch(&second).await;
    assert!(
        ended(&second).ends_with(&format!(
            "wrong ticket any {} Deleted by alice, {}",
            human(second["until"].as_str().unwrap()),
            human(second["ended_at"].as_str().unwrap())
        )),
        "{}",
        ended(&second)
    );
    let first = fetch(&first).await;
    assert!(
        ended(&first).contains(&format!(
            "Replaced by a newer one, {}",
            human(first["ended_at"].as_str().unwrap())
        )),
        "{}",
        ended(&first)
    );
    let order: Vec<&str> = acks.matches("<tr data-ack=").collect();
    assert_eq!(order.len(), 3);

    // A drifted file outside the globs: still in force, but it covers nothing, and says why.
    record(&["rsyslog.d/10-a.conf", "rsyslog.conf"], -200).await;
    let page = app.get("/target?repo=rsyslog&server=lab").await.text();
    assert_eq!(
        text_of(part(&page, "<h1>", "</h1>")),
        "rsyslog / lab ≠ Out of sync"
    );
    let in_force = text_of(part(&page, "id=\"acknowledged\"", "</dl>"));
    assert!(
        in_force.contains(
            "but it does not cover the current drift: outside its files: rsyslog.conf Reason"
        ),
        "{in_force}"
    );

    // SYNCED again: resolved, recorded with the check that resolved it. That check was made
    // before the acknowledgement, so the acknowledgement ends when it began, never before.
    let synced = record(&[], -100).await;
    assert!(synced["last_check"].as_str().unwrap() < third["created_at"].as_str().unwrap());
    let page = app.get("/target?repo=rsyslog&server=lab").await.text();
    assert!(!page.contains("id=\"acknowledged\""));
    let acks = part(&page, "id=\"acks\"", "</table>");
    let row = text_of(part(
        acks,
        &format!("data-ack=\"{}\"", third["id"]),
        "</tr>",
    ));
    assert!(
        row.ends_with(&format!(
            "Resolved: synced again, {}",
            human(third["created_at"].as_str().unwrap())
        )),
        "{row}"
    );
}
