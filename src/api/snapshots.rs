//! `POST /api/status`: recording one drift-check snapshot.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderName;
use axum::response::IntoResponse;

use super::AppState;
use crate::error::{ApiError, JsonBody, Problem, Result};
use crate::model::{Snapshot, SnapshotIn};
use crate::timestamp::Timestamp;

/// Set to `true` on the reply to a retry that matched an already stored snapshot.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Record one drift-check snapshot.
///
/// Appends the snapshot to the target's history and answers with the stored snapshot once it is
/// durably committed. A retry with the same `last_check` and identical content returns the original
/// snapshot and stores nothing; the same `last_check` with different content is a conflict.
#[utoipa::path(
    post,
    path = "/api/status",
    tag = "snapshots",
    request_body = SnapshotIn,
    responses(
        (status = 200, description = "Stored (or already stored, for an identical retry)", body = Snapshot,
         headers(("idempotent-replayed" = bool, description = "Present and `true` when nothing new was stored"))),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A different snapshot exists for this target and last_check", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The Content-Type is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The JSON breaks the schema or a rule; `errors` names every bad field", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, shutting down or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn record_snapshot(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse> {
    let snapshot = SnapshotIn::decode(body, Timestamp::now()).map_err(ApiError::InvalidSnapshot)?;
    let recorded = state.store.record(snapshot).await?;
    let replayed = recorded.replayed.then_some([(REPLAYED_HEADER, "true")]);
    Ok((replayed, Json(recorded.snapshot)))
}
