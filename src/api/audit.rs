//! `GET /api/verify`, `GET /api/checkpoints` and `GET /api/stats`: what an auditor asks of the
//! trail.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::conditional::EntityTag;
use crate::chain::{Checkpoint, Verification};
use crate::error::{ApiError, Problem, Result};
use crate::stats::{StatsParams, StatsRequest, TargetStats};
use crate::timestamp::Timestamp;

/// Recompute the integrity chain.
///
/// Recomputes every snapshot's hash from its fields and its target's previous hash (retention
/// checkpoints included) and names the first snapshot, by id, that does not follow: an edited,
/// removed or reordered row. Always 200; `ok` says whether the trail is intact. Reads the whole
/// history: `gitops-status-server verify` does the same offline.
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
    Ok(Json(state.store.verify().await?))
}

/// Retention checkpoints of the integrity chain.
///
/// Where retention removed snapshots, the next retained snapshot of the target was hashed with
/// the last removed one's hash, recorded here as `resume_hash`. Re-checking an export of a pruned
/// trail (examples/verify_export.py) needs these; an unpruned trail has none.
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

/// Drift statistics per target.
///
/// Over the window `[from, to)` (default: the 30 days before now): time in each state, where a
/// snapshot's status holds until the next one and time beyond its stale-after counts as STALE;
/// drift episodes (maximal runs of OUT_OF_SYNC snapshots), their mean time to resync and the
/// longest; the files most episodes drifted. Sorted by repo then server. Carries an `ETag` and
/// answers a matching `If-None-Match` with 304 (a window that ends now changes with every
/// request; one with a fixed `to` in the past changes only with the history).
#[utoipa::path(
    get,
    path = "/api/stats",
    tag = "audit",
    params(
        StatsParams,
        ("If-None-Match" = Option<String>, Header, description = "Entity tags of answers the client holds; a match answers 304"),
    ),
    responses(
        (status = 200, description = "One object per target with history in or before the window", body = Vec<TargetStats>,
         headers(("ETag" = String, description = "Weak tag of the answer's content"))),
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
    let stats = state.stats(&request, now).await?;
    let body = serde_json::to_vec(&stats)
        .map_err(|error| ApiError::internal(format!("encoding /api/stats: {error}")))?;
    let tag = EntityTag::of([body.as_slice()]);
    if tag.is_matched_by(&headers) {
        return Ok(tag.not_modified());
    }
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    tag.apply(response.headers_mut());
    Ok(response)
}
