//! `GET /`: every target with its state, drift and age, filterable by repo and state.

use axum::extract::{RawQuery, State};
use maud::{Markup, html};

use super::{label, layout, state_chip, target_href, time_ago};
use crate::api::AppState;
use crate::error::{ApiError, Result};
use crate::model::{StatusFilter, StatusRow, TargetState};
use crate::timestamp::Timestamp;

/// The status page. Takes `/status.json`'s filters; empty values (an untouched form field) mean
/// "any".
pub async fn status_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Markup> {
    let filter = page_filter(query.as_deref())?;
    let rows = state.status_rows(&StatusFilter::default()).await?;
    let shown: Vec<&StatusRow> = rows.iter().filter(|row| selects(&filter, row)).collect();
    let mut repos: Vec<&str> = rows.iter().map(|row| row.repo.as_str()).collect();
    repos.dedup();
    let now = Timestamp::now();
    Ok(layout(
        "Status",
        html! {
            h1 { "Drift status of every target" }
            (summary(&rows))
            (filter_form(&filter, &repos))
            @if rows.is_empty() {
                p { "No target has reported yet. CI posts snapshots to " code { "POST /api/status" } "." }
            } @else {
                p.muted role="status" { "Showing " (shown.len()) " of " (rows.len()) " targets." }
                (target_table(&shown, now))
            }
        },
    ))
}

/// The filters, with fields left empty by the form dropped.
fn page_filter(raw: Option<&str>) -> Result<StatusFilter> {
    let given = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .filter(|(_, value)| !value.trim().is_empty());
    let kept = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(given)
        .finish();
    StatusFilter::from_query(Some(&kept)).map_err(ApiError::InvalidQuery)
}

fn selects(filter: &StatusFilter, row: &StatusRow) -> bool {
    filter.repo.as_ref().is_none_or(|repo| *repo == row.repo)
        && filter
            .server
            .as_ref()
            .is_none_or(|server| *server == row.server)
        && (filter.states.is_empty() || filter.states.contains(&row.state))
}

fn summary(rows: &[StatusRow]) -> Markup {
    html! {
        ul.summary aria-label="Targets by state" {
            @for state in TargetState::ALL {
                @let count = rows.iter().filter(|row| row.state == state).count();
                li { (state_chip(state)) " " (count) }
            }
        }
    }
}

fn filter_form(filter: &StatusFilter, repos: &[&str]) -> Markup {
    let chosen_state = filter.states.first().copied();
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
            label for="state" {
                "State"
                select id="state" name="state" {
                    option value="" { "All states" }
                    @for state in TargetState::ALL {
                        option value=(state.as_str()) selected[chosen_state == Some(state)] { (label(state)) }
                    }
                }
            }
            button type="submit" { "Filter" }
            @if filter.repo.is_some() || !filter.states.is_empty() || filter.server.is_some() {
                a href="/" { "Clear filters" }
            }
        }
    }
}

fn target_table(rows: &[&StatusRow], now: Timestamp) -> Markup {
    html! {
        div.scroll {
            table id="targets" {
                caption.muted { "Latest check of each target, by repo then server" }
                thead {
                    tr {
                        th scope="col" { "Repo" }
                        th scope="col" { "Server" }
                        th scope="col" { "State" }
                        th scope="col" { "Drift" }
                        th scope="col" { "Files" }
                        th scope="col" { "Last check" }
                        th scope="col" class="wide" { "Status since" }
                    }
                }
                tbody {
                    @for row in rows {
                        tr data-repo=(row.repo) data-server=(row.server) data-state=(row.state.as_str()) {
                            td data-label="Repo" { (row.repo) }
                            th scope="row" data-label="Server" {
                                a href=(target_href(&row.repo, &row.server)) { (row.server) }
                            }
                            td data-label="State" { (state_chip(row.state)) }
                            td.num data-label="Drift" { (row.drift_count) }
                            td.files data-label="Files" { (row.files_text) }
                            td data-label="Last check" { (time_ago(row.last_check, now)) }
                            td.wide data-label="Status since" { (time_ago(row.status_since, now)) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_form_fields_mean_any() {
        assert_eq!(
            page_filter(Some("repo=&state=")).unwrap(),
            StatusFilter::default()
        );
        let filter = page_filter(Some("repo=rsyslog&state=STALE")).unwrap();
        assert_eq!(filter.repo.as_deref(), Some("rsyslog"));
        assert_eq!(filter.states, [TargetState::Stale]);
        assert!(page_filter(Some("state=GREEN")).is_err());
    }
}
