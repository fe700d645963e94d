//! `GET /status.json`: the latest snapshot of every target, for Grafana's Infinity datasource.

use axum::Json;
use axum::extract::{RawQuery, State};

use super::AppState;
use crate::error::{ApiError, Problem, Result};
use crate::model::{StatusFilter, StatusParams, StatusRow};

/// Latest status of every target.
///
/// One object per (repo, server), sorted by repo then server. `state` is `STALE` when the last check
/// is older than the target's stale-after, and `stale_since` is then when that happened;
/// `sync_status` stays the last check's result and `status_since` when the current run of that
/// result began. Costs the same however long the history is.
#[utoipa::path(
    get,
    path = "/status.json",
    tag = "status",
    params(StatusParams),
    responses(
        (status = 200, description = "Latest snapshot per target", body = Vec<StatusRow>),
        (status = 400, description = "A query parameter is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn status_list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<StatusRow>>> {
    let filter = StatusFilter::from_query(query.as_deref()).map_err(ApiError::InvalidQuery)?;
    let rows = state.status_rows(&filter).await?;
    Ok(Json(rows))
}
