//! `GET /api/episodes`: the runs of one state per target, as keyset-paginated JSON pages or
//! streamed CSV / NDJSON exports, as `/history` serves snapshots.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::StreamExt;

use super::AppState;
use super::history::{EXPORT_CHUNK_ROWS, csv_records, export_response, negotiated_format};
use super::paging::PageAnswer;
use crate::error::{ApiError, Problem, Result};
use crate::model::{
    DEFAULT_HISTORY_LIMIT, Episode, EpisodeClock, EpisodePage, EpisodeParams, EpisodeRequest,
    ExportFormat,
};
use crate::timestamp::Timestamp;

/// Columns of the CSV export, in order: the episode's fields (`files` as in `files_text`, the
/// acknowledgement's flattened), then the times' Unix-milliseconds twins.
pub const CSV_COLUMNS: [&str; 17] = [
    "repo",
    "server",
    "state",
    "started_at",
    "ended_at",
    "duration_seconds",
    "checks",
    "files",
    "first_snapshot_id",
    "last_snapshot_id",
    "acknowledged_id",
    "acknowledged_reason",
    "acknowledged_by",
    "acknowledged_until",
    "started_at_ms",
    "ended_at_ms",
    "acknowledged_until_ms",
];

/// Episodes: runs of one state per target, latest first.
///
/// An episode is a maximal run of one state of one target, by the rules of `/api/stats`: a
/// snapshot's state holds from its `last_check` until the next snapshot's, and the time past its
/// stale-after before the next check is a STALE episode. A target's current episode is open
/// (`ended_at` null, `duration_seconds` up to now); a retired target's last one ends when it was
/// retired. `from`/`to` select the episodes that overlap the window. JSON answers one page and,
/// when more episodes exist, a `Link: <...>; rel="next"` header; `envelope=true` wraps the page
/// as `{"items": [...], "next_cursor": ...}`. A JSON page carries an `ETag` and answers a
/// matching `If-None-Match` with 304. `format=csv` or `format=ndjson` (or the matching
/// `Accept`) streams the whole selection.
#[utoipa::path(
    get,
    path = "/api/episodes",
    tag = "history",
    params(
        EpisodeParams,
        ("If-None-Match" = Option<String>, Header, description = "Entity tags of pages the client holds; a match answers 304 (JSON pages only)"),
    ),
    responses(
        (status = 200, description = "Episodes, ordered by started_at then first_snapshot_id",
         headers(
            ("Link" = String, description = "`<...>; rel=\"next\"` when more episodes exist (JSON only)"),
            ("ETag" = String, description = "Weak tag of the JSON page and its `Link`"),
         ),
         content(
            (EpisodePage = "application/json"),
            (String = "text/csv"),
            (Episode = "application/x-ndjson")
         )),
        (status = 304, description = "`If-None-Match` names the page's current tag: no body",
         headers(("ETag" = String, description = "The page's tag"))),
        (status = 400, description = "A query parameter is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn episodes_list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let request = EpisodeRequest::from_query(query.as_deref()).map_err(ApiError::InvalidQuery)?;
    let clock = EpisodeClock {
        now: Timestamp::now(),
        default_stale_after_seconds: state.settings.stale_after_seconds(),
    };
    let format = request
        .format
        .unwrap_or_else(|| negotiated_format(&headers));
    if format == ExportFormat::Json {
        let limit = request.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
        let (rows, more) = state
            .store
            .episodes_page(&request.filter, clock, limit)
            .await?;
        let next_cursor = more
            .then(|| rows.last().map(|episode| episode.cursor().encode()))
            .flatten();
        let page = PageAnswer {
            path: "/api/episodes",
            query: query.as_deref(),
            envelope: request.envelope,
            rows,
            next_cursor,
        };
        return page.respond(&headers);
    }

    // Check the database before committing to a 200 that a failing stream would truncate.
    state.store.ping().await?;
    let rows = state
        .store
        .episodes_stream(request.filter, clock, request.limit)
        .ready_chunks(EXPORT_CHUNK_ROWS);
    Ok(export_response(format, rows, &CSV_COLUMNS, csv_chunk))
}

fn csv_chunk(episodes: &[Episode]) -> Vec<u8> {
    let millis = |at: Option<Timestamp>| at.map(|at| at.as_millis().to_string());
    csv_records(episodes.iter().map(|episode| {
        let ack = episode.acknowledged.as_ref();
        [
            episode.repo.clone(),
            episode.server.clone(),
            episode.state.as_str().to_owned(),
            episode.started_at.to_string(),
            episode
                .ended_at
                .map(|at| at.to_string())
                .unwrap_or_default(),
            episode.duration_seconds.to_string(),
            episode.checks.to_string(),
            episode.files_text.clone(),
            episode.first_snapshot_id.to_string(),
            episode.last_snapshot_id.to_string(),
            ack.map(|ack| ack.id.to_string()).unwrap_or_default(),
            ack.map(|ack| ack.reason.clone()).unwrap_or_default(),
            ack.map(|ack| ack.by.clone()).unwrap_or_default(),
            ack.map(|ack| ack.until.to_string()).unwrap_or_default(),
            episode.started_at.as_millis().to_string(),
            millis(episode.ended_at).unwrap_or_default(),
            millis(ack.map(|ack| ack.until)).unwrap_or_default(),
        ]
    }))
}
