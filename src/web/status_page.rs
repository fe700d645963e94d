//! `GET /`: every target with its state, drift and age, filterable by repo and state, sortable by
//! severity; which drift is acknowledged, and the maintenance silences running now or coming.

use axum::extract::{RawQuery, State};
use maud::{Markup, html};

use super::{
    ack_note, age, glob_list, human_time, label, layout, row_state, short_files, short_message,
    short_reason, silence_note, state_chip, target_href, time_ago,
};
use crate::api::AppState;
use crate::error::{ApiError, Result};
use crate::model::lifecycle::Silence;
use crate::model::{FieldError, StatusFilter, StatusRow, SyncStatus, TargetState};
use crate::store::Activity;
use crate::timestamp::Timestamp;

/// Most silences read (the newest among those running or to come), listed and matched against the
/// targets; `GET /api/silences` lists more.
const SILENCES_LISTED: i64 = 100;

/// The status page. Takes `/status.json`'s `repo`, `server` and `state` filters, `state` also
/// repeated as the form's checkboxes send it, and `sort=severity`; empty values (an untouched form
/// field) mean "any".
pub async fn status_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Markup> {
    let request = PageRequest::from_query(query.as_deref())?;
    let filter = &request.filter;
    let rows = state.status_rows(&StatusFilter::default()).await?;
    let in_scope: Vec<&StatusRow> = rows.iter().filter(|row| in_scope(filter, row)).collect();
    let mut shown: Vec<&StatusRow> = in_scope
        .iter()
        .copied()
        .filter(|row| filter.states.is_empty() || filter.states.contains(&row.state))
        .collect();
    if request.sort == Sort::Severity {
        shown.sort_by_key(|row| (severity(row.state), &row.repo, &row.server));
    }
    let mut repos: Vec<&str> = rows.iter().map(|row| row.repo.as_str()).collect();
    repos.dedup();
    let now = Timestamp::now();
    let silences = state
        .store
        .silences(Activity::Active, now, SILENCES_LISTED)
        .await?;
    let running: Vec<&Silence> = silences
        .iter()
        .filter(|silence| silence.is_active(now))
        .collect();
    Ok(layout(
        "Status",
        html! {
            h1 { "Drift status of every target" }
            (summary(&in_scope, filter))
            @if !silences.is_empty() { (silence_table(&silences, &rows, now)) }
            (filter_form(&request, &repos))
            @if rows.is_empty() {
                p { "No target has reported yet. CI posts snapshots to " code { "POST /api/status" } "." }
            } @else {
                p.muted role="status" { "Showing " (shown.len()) " of " (rows.len()) " targets." }
                (target_table(&shown, &running, request.sort, now))
            }
        },
    ))
}

/// The order of the target table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Sort {
    /// By repo, then server, as `/status.json`.
    #[default]
    Name,
    /// Worst first (ERROR, STALE, OUT_OF_SYNC, SYNCED), then by repo and server.
    Severity,
}

/// What the page was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PageRequest {
    filter: StatusFilter,
    sort: Sort,
}

impl PageRequest {
    /// `/status.json`'s filters with empty fields dropped and repeated `state`s (a form with
    /// several boxes ticked) joined into its comma-separated list, plus `sort`.
    fn from_query(raw: Option<&str>) -> Result<Self> {
        let (sorts, rest) = take_param(raw, "sort");
        let (states, rest) = take_param(Some(&rest), "state");
        let states: Vec<&str> = states
            .iter()
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|state| !state.is_empty())
            .collect();
        let mut kept = form_urlencoded::Serializer::new(String::new());
        kept.extend_pairs(
            form_urlencoded::parse(rest.as_bytes()).filter(|(_, value)| !value.trim().is_empty()),
        );
        if !states.is_empty() {
            kept.append_pair("state", &states.join(","));
        }
        let filter = StatusFilter::from_query(Some(&kept.finish()));
        let sort = match sorts
            .iter()
            .map(String::as_str)
            .rfind(|sort| !sort.is_empty())
        {
            None | Some("name") => Ok(Sort::Name),
            Some("severity") => Ok(Sort::Severity),
            Some(_) => Err(FieldError::new("sort", "must be name or severity")),
        };
        match (filter, sort) {
            (Ok(filter), Ok(sort)) => Ok(Self { filter, sort }),
            (filter, sort) => Err(ApiError::InvalidQuery(
                filter
                    .err()
                    .into_iter()
                    .flatten()
                    .chain(sort.err())
                    .collect(),
            )),
        }
    }
}

/// ERROR first: the check itself fails, nobody knows the drift. Then STALE: nobody knows anything
/// recent. Then known drift, then in sync.
fn severity(state: TargetState) -> u8 {
    match state {
        TargetState::Error => 0,
        TargetState::Stale => 1,
        TargetState::OutOfSync => 2,
        TargetState::Synced => 3,
    }
}

/// Whether the row is in the repo and server the filter names; the state filter then picks among
/// these.
fn in_scope(filter: &StatusFilter, row: &StatusRow) -> bool {
    filter.repo.as_ref().is_none_or(|repo| *repo == row.repo)
        && filter
            .server
            .as_ref()
            .is_none_or(|server| *server == row.server)
}

/// Targets per state within the filtered repo and server, stale ones also by their last result;
/// states the state filter leaves out are marked so.
fn summary(rows: &[&StatusRow], filter: &StatusFilter) -> Markup {
    html! {
        ul.summary aria-label="Targets by state" {
            @for state in TargetState::ALL {
                @let of_state: Vec<&&StatusRow> = rows.iter().filter(|row| row.state == state).collect();
                @let hidden = !filter.states.is_empty() && !filter.states.contains(&state);
                li data-state=(state.as_str()) {
                    (state_chip(state)) " " strong { (of_state.len()) }
                    @if state == TargetState::Stale { (last_results(&of_state)) }
                    @if hidden { " " span.muted { "(not shown)" } }
                }
            }
        }
    }
}

/// ` (last Out of sync: 2, last Error: 1)`: what the stale targets' last checks said.
fn last_results(stale: &[&&StatusRow]) -> Markup {
    let counts: Vec<String> = SyncStatus::ALL
        .into_iter()
        .filter_map(|last| {
            let count = stale.iter().filter(|row| row.sync_status == last).count();
            (count > 0).then(|| format!("last {}: {count}", label(last.into())))
        })
        .collect();
    html! {
        @if !counts.is_empty() { " (" (counts.join(", ")) ")" }
    }
}

fn filter_form(request: &PageRequest, repos: &[&str]) -> Markup {
    let filter = &request.filter;
    html! {
        form method="get" action="/" aria-label="Filter targets" {
            label for="repo" {
                "Repo"
                select id="repo" name="repo" {
                    option value="" { "All repos" }
                    @for repo in repos {
                        option value=(repo) selected[filter.repo.as_deref() == Some(*repo)] { (repo) }
                    }
                }
            }
            @if let Some(server) = &filter.server {
                input type="hidden" name="server" value=(server);
            }
            fieldset id="state" {
                legend { "State (none ticked: all)" }
                @for state in TargetState::ALL {
                    label {
                        input type="checkbox" name="state" value=(state.as_str()) checked[filter.states.contains(&state)];
                        (label(state))
                    }
                }
            }
            label for="sort" {
                "Order"
                select id="sort" name="sort" {
                    option value="name" selected[request.sort == Sort::Name] { "By repo and server" }
                    option value="severity" selected[request.sort == Sort::Severity] { "Worst first" }
                }
            }
            button type="submit" { "Filter" }
            @if filter.repo.is_some() || !filter.states.is_empty() || filter.server.is_some() {
                a href="/" { "Clear filters" }
            }
        }
    }
}

/// The silences running now or to come: what they cover, when, why and who made them. Each row is
/// the anchor the silenced targets' notes link to.
fn silence_table(silences: &[Silence], rows: &[StatusRow], now: Timestamp) -> Markup {
    html! {
        section aria-labelledby="silences-heading" {
            h2 id="silences-heading" { "Maintenance silences" }
            p.muted {
                "Notifications for the targets a silence covers stay quiet during its window; their states show as they are."
            }
            div.scroll {
                table id="silences" class="cards" {
                    caption.muted {
                        "Silences running now or to come, newest first"
                        @if silences.len() as i64 >= SILENCES_LISTED {
                            " (the " (SILENCES_LISTED) " newest; " code { "GET /api/silences?active=true" } " lists more)"
                        }
                    }
                    thead {
                        tr {
                            th scope="col" { "Status" }
                            th scope="col" { "Reason" }
                            th scope="col" { "Repos" }
                            th scope="col" { "Servers" }
                            th scope="col" { "Window" }
                            th scope="col" { "Targets" }
                            th scope="col" { "By" }
                        }
                    }
                    tbody {
                        @for silence in silences {
                            @let running = silence.is_active(now);
                            @let covered = rows.iter().filter(|row| silence.covers(&row.repo, &row.server)).count();
                            tr id={ "silence-" (silence.id) } data-running=(running) {
                                td data-label="Status" {
                                    span {
                                        @if running { span.tag.tag-silenced { "Running" } }
                                        @else { span.tag.tag-coming { "Coming" } }
                                    }
                                }
                                th scope="row" data-label="Reason" { span { (short_reason(&silence.reason)) } }
                                td data-label="Repos" { span { (glob_list(Some(&silence.repos))) } }
                                td data-label="Servers" { span { (glob_list(Some(&silence.servers))) } }
                                td data-label="Window" { span { (silence_window(silence, now)) } }
                                td.num data-label="Targets" { (covered) }
                                td data-label="By" { span { (silence.by) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `2026-04-22 02:00:00 UTC to 2026-04-22 04:00:00 UTC (ends in 1h 59m)`, each a `<time>`.
fn silence_window(silence: &Silence, now: Timestamp) -> Markup {
    let (starts, ends) = (silence.starts_at, silence.effective_end());
    html! {
        time datetime=(starts) { (human_time(starts)) }
        " to "
        time datetime=(ends) { (human_time(ends)) }
        " "
        span.nowrap {
            @if starts > now {
                "(starts in " (age(starts.as_millis() - now.as_millis())) ")"
            } @else {
                "(ends in " (age(ends.as_millis() - now.as_millis())) ")"
            }
        }
    }
}

/// The target table. A row whose drift is acknowledged says by whom, until when and why beside its
/// state; a row a running silence covers says until when and links to the silence.
fn target_table(rows: &[&StatusRow], running: &[&Silence], sort: Sort, now: Timestamp) -> Markup {
    html! {
        div.scroll {
            table id="targets" class="cards" {
                caption.muted {
                    @match sort {
                        Sort::Name => "Latest check of each target, by repo then server",
                        Sort::Severity => "Latest check of each target, worst first: error, stale, out of sync, synced",
                    }
                }
                thead {
                    tr {
                        th scope="col" { "Repo" }
                        th scope="col" { "Server" }
                        th scope="col" { "State" }
                        th scope="col" { "Drift" }
                        th scope="col" { "Files or message" }
                        th scope="col" { "Last check" }
                        th scope="col" class="wide" { "Status since" }
                    }
                }
                tbody {
                    @for row in rows {
                        @let href = target_href(&row.repo, &row.server);
                        @let silenced: Vec<&&Silence> = running.iter().filter(|silence| silence.covers(&row.repo, &row.server)).collect();
                        tr data-repo=(row.repo) data-server=(row.server) data-state=(row.state.as_str()) data-sync-status=(row.sync_status.as_str())
                            data-acknowledged=[row.acknowledged.as_ref().map(|ack| ack.id)]
                            data-silenced=[(!silenced.is_empty()).then_some("true")] {
                            td data-label="Repo" { (row.repo) }
                            th scope="row" data-label="Server" {
                                a href=(href) { (row.server) }
                            }
                            td data-label="State" {
                                span {
                                    (row_state(row))
                                    @if let Some(ack) = &row.acknowledged { " " (ack_note(ack, now)) }
                                    @for silence in silenced { " " (silence_note(silence, "", now)) }
                                }
                            }
                            td.num data-label="Drift" { (row.drift_count) }
                            td.files data-label="Files" {
                                span {
                                    (short_files(&row.files, row.drift_count, &format!("{href}#files")))
                                    @if let Some(message) = &row.message { (short_message(message)) }
                                }
                            }
                            td data-label="Last check" { (time_ago(row.last_check, now)) }
                            td.wide data-label="Status since" { (time_ago(row.status_since, now)) }
                        }
                    }
                }
            }
        }
    }
}

/// Takes every pair named `name` out of a raw query string: their values in order, and the rest of
/// the query re-encoded, for a parser that does not know `name`.
fn take_param(raw: Option<&str>, name: &str) -> (Vec<String>, String) {
    let mut taken = Vec::new();
    let mut rest = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if key == name {
            taken.push(value.into_owned());
        } else {
            rest.append_pair(&key, &value);
        }
    }
    (taken, rest.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_form_fields_mean_any() {
        assert_eq!(
            PageRequest::from_query(Some("repo=&state=&sort=")).unwrap(),
            PageRequest::default()
        );
        let request = PageRequest::from_query(Some("repo=rsyslog&state=STALE")).unwrap();
        assert_eq!(request.filter.repo.as_deref(), Some("rsyslog"));
        assert_eq!(request.filter.states, [TargetState::Stale]);
        assert!(PageRequest::from_query(Some("state=GREEN")).is_err());
        assert!(PageRequest::from_query(Some("sort=random")).is_err());
    }

    #[test]
    fn ticked_boxes_and_a_comma_list_are_the_same_filter() {
        let boxes = PageRequest::from_query(Some("state=ERROR&state=STALE&sort=severity")).unwrap();
        let list = PageRequest::from_query(Some("state=ERROR%2CSTALE&sort=severity")).unwrap();
        assert_eq!(boxes, list);
        assert_eq!(
            boxes.filter.states,
            [TargetState::Error, TargetState::Stale]
        );
        assert_eq!(boxes.sort, Sort::Severity);
    }

    #[test]
    fn severity_puts_errors_first_and_synced_last() {
        let mut states = TargetState::ALL;
        states.sort_by_key(|state| severity(*state));
        assert_eq!(
            states,
            [
                TargetState::Error,
                TargetState::Stale,
                TargetState::OutOfSync,
                TargetState::Synced
            ]
        );
    }
}
