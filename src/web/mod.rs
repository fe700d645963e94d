//! The built-in status pages for people (server-rendered HTML, no JavaScript, no external assets)
//! and the Swagger UI over `/openapi.json`. None of it is part of the OpenAPI document.

mod login;
mod status_page;
mod target_page;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::api::AppState;
use crate::model::lifecycle::{AckSummary, Silence};
use crate::model::{FileEntry, StatusRow, SyncStatus, TargetKey, TargetState};
use crate::timestamp::Timestamp;

/// Seconds between the pages' self-refreshes.
const REFRESH_SECONDS: u32 = 30;

/// The pages and `/docs`: read routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(status_page::status_page))
        .route("/target", get(target_page::target_page))
        .route("/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
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
                link rel="icon" type="image/svg+xml" href="/favicon.svg";
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

/// The site icon, from the binary: a green check in a rounded square, legible at 16 px.
pub(crate) const FAVICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#2e7d32"/><path d="M8 16.5l5.5 5.5L24 10.5" fill="none" stroke="#fff" stroke-width="4" stroke-linecap="round" stroke-linejoin="round"/></svg>"##;

/// `GET /favicon.svg` and `/favicon.ico`: browsers ask for the latter unprompted, and take SVG.
async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        FAVICON,
    )
}

/// A state as a chip: its color, a glyph and a shape of its own, and its name, so it reads
/// without color too.
fn state_chip(state: TargetState) -> Markup {
    html! {
        span class={ "state state-" (state.as_str()) } {
            span.glyph aria-hidden="true" { (glyph(state)) } " " (label(state))
        }
    }
}

/// A target's state, and for a stale one what its last check said:
/// `Stale (last: Out of sync, 2 files)`.
fn row_state(row: &StatusRow) -> Markup {
    html! {
        (state_chip(row.state))
        @if row.stale {
            " " span.last { "(last: " (state_chip(row.sync_status.into())) (drift_suffix(row.sync_status, row.drift_count)) ")" }
        }
    }
}

/// `, 2 files` after an OUT_OF_SYNC result, nothing after the others.
fn drift_suffix(sync_status: SyncStatus, drift_count: i64) -> String {
    match (sync_status, drift_count) {
        (SyncStatus::OutOfSync, 1) => ", 1 file".to_owned(),
        (SyncStatus::OutOfSync, count) => format!(", {count} files"),
        _ => String::new(),
    }
}

fn glyph(state: TargetState) -> &'static str {
    match state {
        TargetState::Synced => "✓",
        TargetState::OutOfSync => "≠",
        TargetState::Error => "✕",
        TargetState::Stale => "◷",
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

/// Longest message shown in a table cell, in characters; the full text is in its `title` and on
/// the target's page.
const MESSAGE_CHARS: usize = 80;

/// A check's `message`, cut to [`MESSAGE_CHARS`] on one line, with the whole text on hover.
fn short_message(message: &str) -> Markup {
    html! { span.message title=(message) { (one_short_line(message)) } }
}

/// Why someone acknowledged or silenced, cut as [`short_message`] cuts, in quotes, with the
/// whole text on hover.
fn short_reason(reason: &str) -> Markup {
    html! { q.reason title=(reason) { (one_short_line(reason)) } }
}

/// `text` on one line, cut to [`MESSAGE_CHARS`] with an ellipsis.
fn one_short_line(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= MESSAGE_CHARS {
        return one_line;
    }
    let cut: String = one_line.chars().take(MESSAGE_CHARS - 1).collect();
    // Whole words when a space is near the end; a long token is cut where it must be.
    let cut = match cut.rfind(' ') {
        Some(space) if space > cut.len() * 3 / 4 => &cut[..space],
        _ => cut.as_str(),
    };
    format!("{}…", cut.trim_end())
}

/// The tag beside the state chip of a target whose drift someone accepted; the chip is unchanged.
fn ack_tag() -> Markup {
    html! { span.tag.tag-ack { "Acknowledged" } }
}

/// Who accepted a target's drift, until when and why: `Acknowledged by alice until
/// 2026-04-22 10:30:00 UTC (in 23h 59m) “hotfix INC-1”`.
fn ack_note(ack: &AckSummary, now: Timestamp) -> Markup {
    html! {
        span.note data-ack=(ack.id) {
            (ack_tag()) " by " strong.by { (ack.by) } " until " (time_ahead(ack.until, now))
            " " (short_reason(&ack.reason))
        }
    }
}

/// A running silence that covers a target: until when, and why, linking to the silence in the
/// status page's list of silences (`list`: that page's path, empty on the page itself).
fn silence_note(silence: &Silence, list: &str, now: Timestamp) -> Markup {
    html! {
        span.note data-silence=(silence.id) {
            span.tag.tag-silenced { "Silenced" } " until " (time_ahead(silence.effective_end(), now)) " "
            a href={ (list) "#silence-" (silence.id) } { (short_reason(&silence.reason)) }
        }
    }
}

/// Glob patterns as code, comma-separated; `any` for none (a missing `files` list).
fn glob_list(patterns: Option<&[String]>) -> Markup {
    html! {
        @match patterns {
            None => span.muted { "any" },
            Some(patterns) => @for (index, pattern) in patterns.iter().enumerate() {
                @if index > 0 { ", " }
                code.glob { (pattern) }
            },
        }
    }
}

/// File names shown in a table cell before "and N more".
const FILES_SHOWN: usize = 3;

/// The first [`FILES_SHOWN`] drifted files, then "and N more" linking to `more` where the whole
/// list is. `drift_count` counts files a cut list left out too.
fn short_files(files: &[FileEntry], drift_count: i64, more: &str) -> Markup {
    let shown = files.len().min(FILES_SHOWN);
    let hidden = drift_count.max(files.len() as i64) - shown as i64;
    html! {
        @for (index, file) in files[..shown].iter().enumerate() {
            @if index > 0 { ", " }
            (file.name)
        }
        @if hidden > 0 {
            " " a.more href=(more) { "and " (hidden) " more" }
        }
    }
}

/// An instant as a `<time>` with its exact value, and how long ago it was.
fn time_ago(at: Timestamp, now: Timestamp) -> Markup {
    html! {
        time datetime=(at) title=(human_time(at)) { (age(now.as_millis() - at.as_millis())) " ago" }
    }
}

/// An instant to come as a `<time>` for people, and how far off it is:
/// `2026-04-22 10:30:00 UTC (in 23h 59m)`.
fn time_ahead(at: Timestamp, now: Timestamp) -> Markup {
    let ahead = at.as_millis() - now.as_millis();
    html! {
        time datetime=(at) { (human_time(at)) }
        " "
        @if ahead > 0 { span.nowrap { "(in " (age(ahead)) ")" } } @else { "(passed)" }
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
.state { display: inline-block; padding: 0.05rem 0.5rem; border-radius: 0.8rem; color: #fff; font-weight: 600; font-size: 0.85rem; white-space: nowrap; border: 2px solid transparent; }
.state .glyph { font-weight: 700; }
.state-SYNCED { background: #2e7d32; }
.state-OUT_OF_SYNC { background: #bf360c; }
.state-ERROR { background: #b71c1c; }
.state-STALE { background: #6d5a00; }
.state.state-ERROR { border-radius: 0.15rem; text-transform: uppercase; letter-spacing: 0.03em; }
.state.state-STALE { border: 2px dashed #fff8; }
.last { white-space: nowrap; font-size: 0.85rem; }
.last .state { font-size: 0.75rem; padding: 0 0.35rem; }
.message { display: block; color: var(--muted); font-size: 0.85rem; overflow-wrap: anywhere; }
a.more { white-space: nowrap; }
.tag { display: inline-block; padding: 0 0.4rem; border-radius: 0.25rem; color: #fff; font-weight: 600; font-size: 0.8rem; white-space: nowrap; border: 1px solid transparent; }
.tag-ack { background: #3a6ea5; }
.tag-silenced { background: #6a4c93; }
.tag-coming { color: var(--fg); border-color: var(--muted); }
.note { display: block; font-size: 0.85rem; margin-top: 0.3rem; max-width: 22rem; overflow-wrap: anywhere; }
q.reason { color: var(--muted); overflow-wrap: anywhere; }
th q.reason { color: inherit; }
.prose { white-space: pre-wrap; }
.nowrap, td.name, code.glob, #targets tbody th a { white-space: nowrap; }
h1 .tag { vertical-align: middle; }
.muted, time { color: var(--muted); }
time, td.when { white-space: nowrap; }
form { display: flex; flex-wrap: wrap; gap: 0.5rem 1rem; align-items: end; margin: 0.75rem 0; }
form label { display: flex; flex-direction: column; font-size: 0.85rem; }
fieldset { border: 1px solid var(--line); border-radius: 0.3rem; padding: 0.2rem 0.6rem; margin: 0; display: flex; flex-wrap: wrap; gap: 0.2rem 0.9rem; }
legend { font-size: 0.85rem; padding: 0 0.2rem; }
fieldset label { flex-direction: row; align-items: center; gap: 0.3rem; font-size: 0.95rem; white-space: nowrap; }
select, button { font: inherit; padding: 0.3rem 0.5rem; min-height: 2.2rem; }
ul.summary { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 0.5rem 1.2rem; }
ul.summary li { white-space: nowrap; }
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
  table.cards thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
  table.cards tr { display: block; border-bottom: 1px solid var(--line); padding: 0.3rem 0; }
  table.cards td, table.cards tbody th { display: flex; gap: 1rem; justify-content: space-between; border: none; text-align: right; }
  table.cards td::before, table.cards tbody th::before { content: attr(data-label); font-weight: 600; text-align: left; flex: none; white-space: nowrap; overflow-wrap: normal; }
  table.cards td.files { flex-wrap: wrap; }
  .last { white-space: normal; }
  table.cards td.wide { display: none; }
  dl.ack { grid-template-columns: 1fr; gap: 0; }
  code.glob, #targets tbody th a { white-space: normal; overflow-wrap: anywhere; }
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
    fn messages_are_cut_at_a_word_to_one_line() {
        let message = format!("first line\n{}", "word ".repeat(30));
        let shown = short_message(&message).into_string();
        assert_eq!(
            shown,
            format!(
                r#"<span class="message" title="first line
{}">first line {}…</span>"#,
                "word ".repeat(30),
                ["word"; 13].join(" ")
            )
        );
        let token = "x".repeat(200);
        let shown = short_message(&token).into_string();
        assert!(
            shown.ends_with(&format!(">{}…</span>", "x".repeat(79))),
            "{shown}"
        );
    }

    #[test]
    fn only_web_links_are_links() {
        assert!(is_web_link("https://ci.example.org/1"));
        assert!(!is_web_link("javascript:alert(1)"));
    }
}
