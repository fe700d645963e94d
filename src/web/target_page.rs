//! `GET /target?repo=&server=`: one target's latest check, the acknowledgement and silences that
//! concern it, a timeline of its transitions, its recent checks and its recent acknowledgements.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::{
    ack_tag, age, glob_list, human_time, is_web_link, layout, row_state, short_files,
    short_message, short_reason, silence_note, state_chip, time_ago, time_ahead,
};
use crate::api::AppState;
use crate::error::{ApiError, Result};
use crate::model::lifecycle::{Ack, Silence, matches_any};
use crate::model::{HistoryFilter, Snapshot, StatusRow, SyncStatus, TargetKey, TargetState};
use crate::store::Activity;
use crate::timestamp::Timestamp;

/// Transitions read for the timeline and its table.
const TRANSITIONS: usize = 50;
/// Checks listed under "Recent checks".
const RECENT_CHECKS: usize = 20;
/// Drifted files of the latest check listed before the rest fold away.
const FILES_LISTED: usize = 20;
/// Acknowledgements listed under "Acknowledgements".
const RECENT_ACKS: i64 = 20;
/// Silences running or to come read to find those that cover the target.
const SILENCES_READ: i64 = 100;

/// One target's page; an HTML 404 page for a target that never reported.
pub async fn target_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let target = TargetKey::from_query(query.as_deref()).map_err(ApiError::InvalidQuery)?;
    let Some(row) = state
        .status_rows(&target.status_filter())
        .await?
        .into_iter()
        .next()
    else {
        return Ok((StatusCode::NOT_FOUND, unknown_target(&target)).into_response());
    };
    let history = |changes_only| HistoryFilter {
        repo: Some(target.repo.clone()),
        server: Some(target.server.clone()),
        changes_only,
        ..HistoryFilter::default()
    };
    let transitions = state
        .store
        .history_page(&history(true), TRANSITIONS)
        .await?;
    let recent = state
        .store
        .history_page(&history(false), RECENT_CHECKS)
        .await?;
    let now = Timestamp::now();
    let acks = state
        .store
        .acks(
            Some(&target.repo),
            Some(&target.server),
            Activity::All,
            now,
            RECENT_ACKS,
        )
        .await?;
    let silences: Vec<Silence> = state
        .store
        .silences(Activity::Active, now, SILENCES_READ)
        .await?
        .into_iter()
        .filter(|silence| silence.covers(&row.repo, &row.server))
        .collect();
    let title = format!("{} / {}", row.repo, row.server);
    Ok(layout(
        &title,
        html! {
            h1 {
                (row.repo) " / " (row.server) " " (row_state(&row))
                @if row.acknowledged.is_some() { " " (ack_tag()) }
            }
            (latest_check(&row, acks.iter().find(|ack| ack.in_force(now)), &silences, now))
            h2 id="timeline-heading" { "Timeline" }
            (timeline(&transitions, &row, now))
            h2 { "Transitions" }
            (transition_table(&transitions, now))
            h2 { "Recent checks" }
            (check_table(&recent))
            h2 { "Acknowledgements" }
            (ack_table(&acks, now))
        },
    )
    .into_response())
}

fn unknown_target(target: &TargetKey) -> Markup {
    layout(
        "Unknown target",
        html! {
            h1 { "Unknown target" }
            p { "No snapshot was ever recorded for repo " strong { (target.repo) } " on server " strong { (target.server) } "." }
            p { a href="/" { "Back to every target" } }
        },
    )
}

/// The latest check's facts, with the acknowledgement in force (`in_force`) and the silences
/// running or to come that cover the target.
fn latest_check(
    row: &StatusRow,
    in_force: Option<&Ack>,
    silences: &[Silence],
    now: Timestamp,
) -> Markup {
    html! {
        dl {
            dt { "State" } dd { (state_chip(row.state)) }
            @if let Some(ack) = in_force {
                dt id="acknowledged" { "Acknowledged" } dd { (ack_in_force(row, ack, now)) }
            }
            @if !silences.is_empty() {
                dt { "Silences" } dd { @for silence in silences { (target_silence(silence, now)) } }
            }
            @if let Some(stale_since) = row.stale_since {
                dt { "Stale since" } dd { (human_time(stale_since)) " (" (time_ago(stale_since, now)) ")" }
            }
            dt { "Last result" } dd { (state_chip(row.sync_status.into())) }
            dt { "Last check" } dd { (human_time(row.last_check)) " (" (time_ago(row.last_check, now)) ")" }
            dt { "Result since" } dd { (human_time(row.status_since)) " (" (time_ago(row.status_since, now)) ")" }
            dt id="files" { "Drifted files" } dd { (file_list(row)) }
            dt { "Stale after" } dd { (age(row.stale_after_seconds.saturating_mul(1000))) }
            @if let Some(revision) = &row.revision { dt { "Revision" } dd { code { (revision) } } }
            @if let Some(run_url) = &row.run_url { dt { "CI run" } dd { (run_link(run_url)) } }
            @if let Some(message) = &row.message { dt { "Message" } dd { pre { (message) } } }
        }
    }
}

/// A silence that covers the target: until when if it runs, its window if it is to come, and why,
/// linking to it on the status page.
fn target_silence(silence: &Silence, now: Timestamp) -> Markup {
    if silence.is_active(now) {
        return silence_note(silence, "/", now);
    }
    html! {
        span.note data-silence=(silence.id) {
            span.tag.tag-coming { "Coming" } " from " (time_ahead(silence.starts_at, now))
            " to " time datetime=(silence.ends_at) { (human_time(silence.ends_at)) } " "
            a href={ "/#silence-" (silence.id) } { (short_reason(&silence.reason)) }
        }
    }
}

/// The acknowledgement in force: who, why, until when and for which files. When a drifted file
/// is outside its globs it is in force without covering the drift, and the files that stop it are
/// named.
fn ack_in_force(row: &StatusRow, ack: &Ack, now: Timestamp) -> Markup {
    let outside: Vec<&str> = ack
        .files
        .as_ref()
        .map(|globs| {
            row.files
                .iter()
                .map(|file| file.name.as_str())
                .filter(|name| !matches_any(globs, name))
                .collect()
        })
        .unwrap_or_default();
    html! {
        @if row.acknowledged.is_some() {
            "By " strong.by { (ack.by) } " on " (human_time(ack.created_at))
        } @else {
            span.muted { "In force, made by " strong.by { (ack.by) } " on " (human_time(ack.created_at)) ", but it does not cover the current drift" }
            @if !outside.is_empty() {
                span.muted { ": outside its files: " }
                @for (index, name) in outside.iter().enumerate() {
                    @if index > 0 { ", " }
                    code { (name) }
                }
            }
        }
        " "
        dl.ack {
            dt { "Reason" } dd.prose { (ack.reason) }
            dt { "Until" } dd { (time_ahead(ack.until, now)) }
            dt { "Files" } dd { (glob_list(ack.files.as_deref())) }
            dt { "Id" } dd { code { (ack.id) } }
        }
    }
}

/// The latest check's files: the first [`FILES_LISTED`], the rest one click away in a
/// `<details>`, and a note when the reporter cut the list.
fn file_list(row: &StatusRow) -> Markup {
    let (listed, folded) = row.files.split_at(row.files.len().min(FILES_LISTED));
    let cut = row.drift_count - row.files.len() as i64;
    html! {
        @if row.files.is_empty() && cut <= 0 { span.muted { "none" } }
        ul { @for file in listed { li { code { (file.name) } } } }
        @if !folded.is_empty() {
            details {
                summary { "and " (folded.len()) " more" }
                ul { @for file in folded { li { code { (file.name) } } } }
            }
        }
        @if cut > 0 {
            p.muted { (cut) " more drifted files were not reported: the reporter cut the list at " (row.files.len()) " names." }
        }
    }
}

/// Where one of the target's checks is in full: its `/history` entry, with every file.
fn check_href(check: &Snapshot) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("repo", &check.repo)
        .append_pair("server", &check.server)
        .append_pair("from", &check.last_check.to_string())
        .append_pair("to", &check.last_check.plus_millis(1).to_string())
        .finish();
    format!("/history?{query}")
}

/// The files of a check, then its message, for the Transitions and Recent checks tables.
fn check_details(check: &Snapshot) -> Markup {
    html! {
        (short_files(&check.files, check.drift_count, &check_href(check)))
        @if let Some(message) = &check.message { (short_message(message)) }
    }
}

fn run_link(url: &str) -> Markup {
    html! {
        @if is_web_link(url) { a href=(url) rel="noopener noreferrer" { (url) } }
        @else { code { (url) } }
    }
}

/// One stretch of the timeline: a state from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    state: TargetState,
    from: Timestamp,
    to: Timestamp,
}

/// The stretches between the transitions (`(sync_status, last_check)`, newest first), ending now.
/// When the target went stale at `stale_from`, its last stretch ends there and a STALE one runs on
/// to now.
fn segments(
    transitions: impl IntoIterator<Item = (SyncStatus, Timestamp)>,
    stale_from: Option<Timestamp>,
    now: Timestamp,
) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut end = now;
    if let Some(stale_from) = stale_from.map(|at| at.min(now)) {
        segments.push(Segment {
            state: TargetState::Stale,
            from: stale_from,
            to: now,
        });
        end = stale_from;
    }
    for (sync_status, last_check) in transitions {
        let from = last_check.min(end);
        segments.push(Segment {
            state: sync_status.into(),
            from,
            to: end,
        });
        end = from;
    }
    segments.reverse();
    segments
}

fn timeline(transitions: &[Snapshot], row: &StatusRow, now: Timestamp) -> Markup {
    let changes = transitions
        .iter()
        .map(|transition| (transition.sync_status, transition.last_check));
    let segments = segments(changes, row.stale_since, now);
    let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
        return html! {};
    };
    let span = (last.to.as_millis() - first.from.as_millis()).max(1) as f64;
    html! {
        div.timeline role="img" aria-labelledby="timeline-heading" aria-describedby="timeline-text" {
            @for segment in &segments {
                @let share = (segment.to.as_millis() - segment.from.as_millis()) as f64 / span * 100.0;
                span class={ "state-" (segment.state.as_str()) }
                    style={ "width:" (format!("{share:.3}")) "%" }
                    title={ (super::label(segment.state)) " from " (human_time(segment.from)) " for " (age(segment.to.as_millis() - segment.from.as_millis())) } {}
            }
        }
        div.axis.muted {
            span { (human_time(first.from)) }
            span { "now" }
        }
        p.muted id="timeline-text" {
            "Colors as in the state labels; the transitions table below lists the same stretches."
        }
    }
}

fn transition_table(transitions: &[Snapshot], now: Timestamp) -> Markup {
    html! {
        div.scroll {
            table id="transitions" {
                caption.muted { "Each change of result or of the drifted files, newest first" }
                thead { tr { th scope="col" { "Since" } th scope="col" { "Result" } th scope="col" { "Drift" } th scope="col" { "Files or message" } th scope="col" { "Lasted" } } }
                tbody {
                    @for (index, transition) in transitions.iter().enumerate() {
                        @let until = index.checked_sub(1).and_then(|newer| transitions.get(newer)).map_or(now, |newer| newer.last_check);
                        tr {
                            td.when { (human_time(transition.last_check)) }
                            td { (state_chip(transition.sync_status.into())) }
                            td.num { (transition.drift_count) }
                            td.files { (check_details(transition)) }
                            td {
                                (age(until.as_millis() - transition.last_check.as_millis()))
                                @if index == 0 { " (ongoing)" }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn check_table(checks: &[Snapshot]) -> Markup {
    html! {
        div.scroll {
            table id="checks" {
                caption.muted { "The latest checks, newest first" }
                thead { tr { th scope="col" { "Checked" } th scope="col" { "Result" } th scope="col" { "Drift" } th scope="col" { "Files or message" } th scope="col" class="wide" { "Revision" } th scope="col" class="wide" { "CI run" } } }
                tbody {
                    @for check in checks {
                        tr {
                            td.when { (human_time(check.last_check)) }
                            td { (state_chip(check.sync_status.into())) }
                            td.num { (check.drift_count) }
                            td.files { (check_details(check)) }
                            td class="wide" { @if let Some(revision) = &check.revision { code { (revision) } } }
                            td class="wide" { @if let Some(url) = &check.run_url { (run_link(url)) } }
                        }
                    }
                }
            }
        }
    }
}

/// The target's recent acknowledgements, newest first, and how each ended.
fn ack_table(acks: &[Ack], now: Timestamp) -> Markup {
    html! {
        @if acks.is_empty() {
            p.muted { "No one has acknowledged this target's drift. " code { "POST /api/acks" } " accepts it with a reason and an expiry." }
        } @else {
            div.scroll {
                table id="acks" {
                    caption.muted { "The latest acknowledgements of this target, newest first" }
                    thead { tr { th scope="col" { "Made" } th scope="col" { "By" } th scope="col" { "Reason" } th scope="col" { "Files" } th scope="col" { "Until" } th scope="col" { "Ended" } } }
                    tbody {
                        @for ack in acks {
                            tr data-ack=(ack.id) {
                                td.when { (human_time(ack.created_at)) }
                                td.name { (ack.by) }
                                td { (short_reason(&ack.reason)) }
                                td.files { (glob_list(ack.files.as_deref())) }
                                td.when { time datetime=(ack.until) { (human_time(ack.until)) } }
                                td { (ack_end(ack, now)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// How an acknowledgement ended: `Resolved (synced again) 2026-...`, `Deleted by alice ...`, or
/// `In force` while it lasts.
fn ack_end(ack: &Ack, now: Timestamp) -> Markup {
    let how = match (ack.end_reason.as_deref(), ack.ended_by.as_deref()) {
        (Some("resolved"), _) => "Resolved: synced again".to_owned(),
        (Some("expired"), _) => "Expired".to_owned(),
        (Some("deleted"), Some(by)) => format!("Deleted by {by}"),
        (Some("deleted"), None) => "Deleted".to_owned(),
        (Some("replaced"), _) => "Replaced by a newer one".to_owned(),
        (Some(other), _) => other.to_owned(),
        // Past `until`, before the expiry timer has recorded its end.
        (None, _) if !ack.in_force(now) => "Expired".to_owned(),
        (None, _) => return html! { strong.nowrap { "In force" } },
    };
    let at = ack.ended_at.unwrap_or(ack.until);
    html! { (how) ", " (human_time(at)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_millis(millis)
    }

    fn segment(state: TargetState, from: i64, to: i64) -> Segment {
        Segment {
            state,
            from: at(from),
            to: at(to),
        }
    }

    #[test]
    fn segments_run_from_each_transition_to_the_next_and_on_to_now() {
        let transitions = [
            (SyncStatus::Synced, at(30_000)),
            (SyncStatus::OutOfSync, at(10_000)),
        ];
        assert_eq!(
            segments(transitions, None, at(40_000)),
            [
                segment(TargetState::OutOfSync, 10_000, 30_000),
                segment(TargetState::Synced, 30_000, 40_000),
            ]
        );
    }

    #[test]
    fn a_stale_target_ends_in_a_stale_segment() {
        let transitions = [(SyncStatus::Synced, at(10_000))];
        assert_eq!(
            segments(transitions, Some(at(70_000)), at(100_000)),
            [
                segment(TargetState::Synced, 10_000, 70_000),
                segment(TargetState::Stale, 70_000, 100_000),
            ]
        );
    }

    #[test]
    fn no_transitions_no_segments() {
        assert_eq!(segments([], None, at(1)), []);
    }
}
