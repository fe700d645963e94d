//! `GET /api/verify`, `GET /api/checkpoints`, `GET /api/chain/events` and `GET /api/stats`: what
//! an auditor asks of the trail.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::conditional::EntityTag;
use super::history::spreadsheet_cell;
use crate::chain::{ChainEvent, Checkpoint, EventSelection, Verification};
use crate::error::{ApiError, Problem, Result};
use crate::model::{FieldError, query};
use crate::stats::{
    self, GroupBy, StatePercent, StatsFormat, StatsParams, StatsRequest, TargetStats,
};
use crate::store::StatsPath;
use crate::timestamp::Timestamp;

/// Recompute the integrity chain.
///
/// Recomputes every record's hash (snapshots, and events: acknowledgements, silences,
/// retirements and their ends) from its fields and the previous hash of its chain (retention
/// checkpoints included), and checks the acknowledgements, silences and targets the API reads
/// against the chained events. Names the first record, by id, that does not follow or agree: an
/// edited, removed or reordered row; `record` and `kind` say what it is. Always 200; `ok` says
/// whether the trail is intact. On a server with `--signing-key`, also checks the signed head
/// statements with its public key (`statements`): their signatures, that they form one chain,
/// and that every head they sign is still on the chains, so a history rewritten behind a signed
/// head, even re-hashed end to end, is named. Reads the whole history: `gitops-status-server
/// verify` does the same offline.
#[utoipa::path(
    get,
    path = "/api/verify",
    tag = "audit",
    responses(
        (status = 200, description = "The verification's outcome", body = Verification),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn verify(State(state): State<AppState>) -> Result<Json<Verification>> {
    let verification = state.store.verify().await?;
    Ok(Json(match &state.public_key {
        Some(key) => verification.with_statements(state.store.verify_statements(key).await?),
        None => verification,
    }))
}

/// Retention checkpoints of the integrity chain.
///
/// Where retention removed snapshots, the next retained record of the target's chain (a
/// snapshot, or an event, which retention never removes) was hashed with the last removed one's
/// hash, recorded here as `resume_hash` after the retained record `after_id`. Re-checking an
/// export of a pruned trail (examples/verify_export.py) needs these; an unpruned trail has none.
#[utoipa::path(
    get,
    path = "/api/checkpoints",
    tag = "audit",
    responses(
        (status = 200, description = "Every checkpoint, by repo, server and position", body = Vec<Checkpoint>),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn checkpoints(State(state): State<AppState>) -> Result<Json<Vec<Checkpoint>>> {
    Ok(Json(state.store.checkpoints().await?))
}

/// Query parameters of `GET /api/chain/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChainEventsParams {
    /// Only the chains of targets of this repo (exact match).
    pub repo: Option<String>,
    /// Only the chains of targets on this server (exact match).
    pub server: Option<String>,
    /// `true` or `false`: include the fleet chain (silences and their ends). Default: `true`
    /// without `repo` and `server`, `false` with either.
    pub fleet: Option<String>,
}

impl EventSelection {
    /// Validates `GET /api/chain/events`'s query.
    pub fn from_query(raw: Option<&str>) -> std::result::Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let params: ChainEventsParams = query::read_query(raw, &mut errors);
        let repo = query::name_filter("repo", params.repo, &mut errors);
        let server = query::name_filter("server", params.server, &mut errors);
        let fleet = match params.fleet {
            None => repo.is_none() && server.is_none(),
            given => query::flag("fleet", given, &mut errors),
        };
        if errors.is_empty() {
            Ok(Self {
                repo,
                server,
                fleet,
            })
        } else {
            Err(errors)
        }
    }
}

/// Events rendered per chunk of the stream.
const EVENT_CHUNK: usize = 256;

/// Chained events, for re-checking an export.
///
/// Streams the events of the integrity chains (acknowledgements and their ends, retirements,
/// revivals, and on the fleet chain silences and their ends) as NDJSON, by id, each with its
/// hash and its body exactly as hashed. A target's chain is its snapshots (`/history`) and these
/// events merged by id; examples/verify_export.py re-checks the two exports together
/// (docs/audit.md). `repo` and `server` select targets' chains as `/history` does; `fleet`
/// adds or leaves out the fleet chain.
#[utoipa::path(
    get,
    path = "/api/chain/events",
    tag = "audit",
    params(ChainEventsParams),
    responses(
        (status = 200, description = "One event per line, by id", content(
            (ChainEvent = "application/x-ndjson")
        )),
        (status = 400, description = "A query parameter is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn chain_events(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let selection = EventSelection::from_query(query.as_deref()).map_err(ApiError::InvalidQuery)?;
    // Check the database before committing to a 200 that a failing stream would truncate.
    state.store.ping().await?;
    let chunks = state
        .store
        .chain_events(selection)
        .ready_chunks(EVENT_CHUNK)
        .map(|chunk| {
            let mut out = Vec::new();
            for event in chunk {
                let event = event.map_err(|error| {
                    // The status line is gone; all that is left is to cut the body short.
                    tracing::error!(%error, "chain events export failed mid-stream");
                    std::io::Error::other(error)
                })?;
                event.write_ndjson(&mut out);
            }
            Ok::<_, std::io::Error>(Bytes::from(out))
        });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// Drift statistics per target, repo, server or fleet: the compliance report.
///
/// Over the window `[from, to)` (default: the 30 days before now): time in each state and each
/// state's share in percent, where a snapshot's status holds until the next one and time beyond
/// its stale-after counts as STALE; of that time, how much an acknowledgement covered and how
/// much a matching silence did; drift episodes (maximal runs of OUT_OF_SYNC snapshots), their
/// mean time to resync and the longest; the files most episodes drifted. A retired target counts
/// no time from its retirement until the snapshot that revives it. `group_by` sums targets per
/// repo, per server or over all of them; rows are sorted by repo then server. `format=csv` answers
/// the same rows as CSV. Carries an `ETag` and answers a matching `If-None-Match` with 304 (a
/// window that ends now changes with every request; one with a fixed `to` in the past changes
/// only with the history).
#[utoipa::path(
    get,
    path = "/api/stats",
    tag = "audit",
    params(
        StatsParams,
        ("If-None-Match" = Option<String>, Header, description = "Entity tags of answers the client holds; a match answers 304"),
    ),
    responses(
        (status = 200, description = "One row per target (or group) with history in the window, by repo then server",
         headers(("ETag" = String, description = "Weak tag of the answer's content")),
         content(
            (Vec<TargetStats> = "application/json"),
            (String = "text/csv", example = "server,targets,from,to,checks,synced_seconds,out_of_sync_seconds,error_seconds,stale_seconds,synced_percent,out_of_sync_percent,error_percent,stale_percent,acknowledged_seconds,silenced_seconds,drift_episodes,mean_time_to_resync_seconds,longest_drift_seconds,top_files,from_ms,to_ms\nrsyslog-lab,2,2026-07-01T00:00:00.000Z,2026-10-01T00:00:00.000Z,132480,15804864.0,92736.0,0.0,0.0,99.417,0.583,0.0,0.0,3600.0,0.0,3,1800.0,7200.0,rsyslog.conf (3),1782864000000,1790812800000\n")
         )),
        (status = 304, description = "`If-None-Match` names the current tag: no body",
         headers(("ETag" = String, description = "The answer's tag"))),
        (status = 400, description = "A query parameter is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn stats_list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let now = Timestamp::now();
    let request =
        StatsRequest::from_query(query.as_deref(), now).map_err(ApiError::InvalidQuery)?;
    let stale_after = state.settings.stale_after_seconds();
    let path = StatsPath::Rollups {
        default_stale_after: stale_after,
    };
    let input = state.store.stats_input(&request, now, path).await?;
    let rows = stats::report(&input, &request, now, stale_after);
    let (content_type, body) = match request.format {
        StatsFormat::Json => (
            "application/json",
            serde_json::to_vec(&rows)
                .map_err(|error| ApiError::internal(format!("encoding /api/stats: {error}")))?,
        ),
        StatsFormat::Csv => (
            "text/csv; charset=utf-8",
            stats_csv(&rows, request.group_by),
        ),
    };
    let tag = EntityTag::of([body.as_slice()]);
    if tag.is_matched_by(&headers) {
        return Ok(tag.not_modified());
    }
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    tag.apply(response.headers_mut());
    Ok(response)
}

/// The CSV columns after the row's name (`repo` and/or `server`, as `group_by` names rows): the
/// JSON fields flattened, then the times' Unix-milliseconds twins.
pub const STATS_CSV_COLUMNS: [&str; 20] = [
    "targets",
    "from",
    "to",
    "checks",
    "synced_seconds",
    "out_of_sync_seconds",
    "error_seconds",
    "stale_seconds",
    "synced_percent",
    "out_of_sync_percent",
    "error_percent",
    "stale_percent",
    "acknowledged_seconds",
    "silenced_seconds",
    "drift_episodes",
    "mean_time_to_resync_seconds",
    "longest_drift_seconds",
    "top_files",
    "from_ms",
    "to_ms",
];

/// The rows as CSV: a header, then a line per row. Numbers are written as in the JSON answer,
/// null as an empty cell, `top_files` as `name (episodes), ...`; every cell passes the
/// spreadsheet guard `/history`'s export uses.
fn stats_csv(rows: &[TargetStats], group_by: GroupBy) -> Vec<u8> {
    let names = [
        group_by.names_repo().then_some("repo"),
        group_by.names_server().then_some("server"),
    ];
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = writer.write_record(names.into_iter().flatten().chain(STATS_CSV_COLUMNS));
    for row in rows {
        let number = |value: f64| serde_json::Number::from_f64(value).map(|n| n.to_string());
        let percent = |share: fn(&StatePercent) -> f64| row.percent.as_ref().map(share);
        let top_files = row
            .top_files
            .iter()
            .map(|file| format!("{} ({})", file.name, file.episodes))
            .collect::<Vec<_>>()
            .join(", ");
        let mut cells = Vec::with_capacity(2 + STATS_CSV_COLUMNS.len());
        if group_by.names_repo() {
            cells.push(row.repo.clone());
        }
        if group_by.names_server() {
            cells.push(row.server.clone());
        }
        cells.extend([
            Some(row.targets.to_string()),
            Some(row.from.to_string()),
            Some(row.to.to_string()),
            Some(row.checks.to_string()),
            number(row.seconds.synced),
            number(row.seconds.out_of_sync),
            number(row.seconds.error),
            number(row.seconds.stale),
            percent(|p| p.synced).and_then(number),
            percent(|p| p.out_of_sync).and_then(number),
            percent(|p| p.error).and_then(number),
            percent(|p| p.stale).and_then(number),
            number(row.acknowledged_seconds),
            number(row.silenced_seconds),
            Some(row.drift_episodes.to_string()),
            row.mean_time_to_resync_seconds.and_then(number),
            row.longest_drift_seconds.and_then(number),
            Some(top_files),
            Some(row.from.as_millis().to_string()),
            Some(row.to.as_millis().to_string()),
        ]);
        for cell in &cells {
            let cell = cell.as_deref().unwrap_or_default();
            let _ = writer.write_field(spreadsheet_cell(cell).as_bytes());
        }
        let _ = writer.write_record(None::<&[u8]>);
    }
    writer.into_inner().unwrap_or_default()
}
