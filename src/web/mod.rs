//! The built-in status pages for people (server-rendered HTML, no JavaScript, no external assets)
//! and the Swagger UI over `/openapi.json`. None of it is part of the OpenAPI document.

mod login;
mod status_page;
mod target_page;

use axum::Router;
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::api::AppState;
use crate::model::{TargetKey, TargetState};
use crate::timestamp::Timestamp;

/// Seconds between the pages' self-refreshes.
const REFRESH_SECONDS: u32 = 30;

/// The pages and `/docs`: read routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(status_page::status_page))
        .route("/target", get(target_page::target_page))
        .merge(SwaggerUi::new("/docs").config(Config::from("/openapi.json")))
}

/// The sign-in form and sign-out: open routes.
pub fn sign_in_router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login::login_page).post(login::sign_in))
        .route("/logout", post(login::sign_out))
}

/// The page shell: title, viewport, the inline style sheet and a self-refresh.
fn layout(title: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(REFRESH_SECONDS);
                title { (title) " · gitops-status-server" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    nav aria-label="Site" {
                        a href="/" { "GitOps drift status" }
                        " · "
                        a href="/docs/" { "API docs" }
                        " · "
                        a href="/metrics" { "Metrics" }
                    }
                }
                main { (main) }
                footer {
                    p { "Refreshes itself every " (REFRESH_SECONDS) " seconds. Times are UTC." }
                }
            }
        }
    }
}

/// A state with its color and its name, so it reads without color too.
fn state_chip(state: TargetState) -> Markup {
    html! {
        span class={ "state state-" (state.as_str()) } { (label(state)) }
    }
}

fn label(state: TargetState) -> &'static str {
    match state {
        TargetState::Synced => "Synced",
        TargetState::OutOfSync => "Out of sync",
        TargetState::Error => "Error",
        TargetState::Stale => "Stale",
    }
}

/// An instant as a `<time>` with its exact value, and how long ago it was.
fn time_ago(at: Timestamp, now: Timestamp) -> Markup {
    html! {
        time datetime=(at) title=(human_time(at)) { (age(now.as_millis() - at.as_millis())) " ago" }
    }
}

/// An instant for people: `2026-04-21 10:30:00 UTC`.
fn human_time(at: Timestamp) -> String {
    let text = at.to_string();
    match text.get(..19) {
        Some(prefix) => format!("{} UTC", prefix.replacen('T', " ", 1)),
        None => text,
    }
}

/// A duration in the two largest units that matter: `45s`, `12m 5s`, `3h 4m`, `2d 5h`.
fn age(millis: i64) -> String {
    let seconds = millis.max(0) / 1000;
    let (days, hours, minutes, seconds) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// Link to a target's own page, its name percent-encoded.
fn target_href(repo: &str, server: &str) -> String {
    let key = TargetKey {
        repo: repo.to_owned(),
        server: server.to_owned(),
    };
    format!("/target?{}", key.to_query())
}

/// Only links that cannot run script: `run_url` is whatever CI sent.
fn is_web_link(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --fg: #1b1b1b; --bg: #fff; --muted: #5f5f5f; --line: #d0d0d0; --head: #f3f3f3; }
@media (prefers-color-scheme: dark) { :root { --fg: #e8e8e8; --bg: #161616; --muted: #a8a8a8; --line: #3a3a3a; --head: #222; } }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 80rem; padding: 0.75rem; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
a { color: inherit; }
header nav { font-weight: 600; padding-bottom: 0.5rem; border-bottom: 1px solid var(--line); }
h1 { font-size: 1.4rem; margin: 0.75rem 0; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; margin: 1.5rem 0 0.5rem; }
footer { color: var(--muted); font-size: 0.85rem; border-top: 1px solid var(--line); margin-top: 2rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 0.4rem 0.5rem; border-bottom: 1px solid var(--line); }
th { background: var(--head); white-space: nowrap; }
tbody th { background: none; white-space: normal; overflow-wrap: anywhere; }
caption { text-align: left; padding-bottom: 0.3rem; }
td.files { overflow-wrap: anywhere; min-width: 10rem; }
td.num { text-align: right; }
.state { display: inline-block; padding: 0.05rem 0.5rem; border-radius: 0.8rem; color: #fff; font-weight: 600; font-size: 0.85rem; white-space: nowrap; }
.state-SYNCED { background: #2e7d32; }
.state-OUT_OF_SYNC { background: #bf360c; }
.state-ERROR { background: #c62828; }
.state-STALE { background: #6d5a00; }
.muted, time { color: var(--muted); }
form { display: flex; flex-wrap: wrap; gap: 0.5rem 1rem; align-items: end; margin: 0.75rem 0; }
form label { display: flex; flex-direction: column; font-size: 0.85rem; }
select, button { font: inherit; padding: 0.3rem 0.5rem; min-height: 2.2rem; }
ul.summary { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 0.5rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.3rem 1rem; }
dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
pre { white-space: pre-wrap; margin: 0; }
.timeline { display: flex; height: 1.6rem; border: 1px solid var(--line); border-radius: 0.3rem; overflow: hidden; }
.timeline span { display: block; min-width: 2px; }
.axis { display: flex; justify-content: space-between; font-size: 0.8rem; }
@media (max-width: 40rem) {
  body { font-size: 15px; padding: 0.5rem; }
  th, td { padding: 0.3rem; }
  .wide { display: none; }
  #targets thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
  #targets tr { display: block; border-bottom: 1px solid var(--line); padding: 0.3rem 0; }
  #targets td, #targets tbody th { display: flex; gap: 1rem; justify-content: space-between; border: none; text-align: right; }
  #targets td::before, #targets tbody th::before { content: attr(data-label); font-weight: 600; text-align: left; }
  #targets td.wide { display: none; }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_use_the_two_largest_units() {
        assert_eq!(age(45_999), "45s");
        assert_eq!(age(12 * 60_000 + 5_000), "12m 5s");
        assert_eq!(age(3 * 3_600_000 + 4 * 60_000 + 59_000), "3h 4m");
        assert_eq!(age(2 * 86_400_000 + 5 * 3_600_000), "2d 5h");
        assert_eq!(
            age(-5_000),
            "0s",
            "a clock a little ahead is not the future"
        );
    }

    #[test]
    fn target_links_percent_encode_the_names() {
        assert_eq!(
            target_href("org/repo & more", "web#1?"),
            "/target?repo=org%2Frepo+%26+more&server=web%231%3F"
        );
    }

    #[test]
    fn only_web_links_are_links() {
        assert!(is_web_link("https://ci.example.org/1"));
        assert!(!is_web_link("javascript:alert(1)"));
    }
}
