//! `POST /api/status`: recording one drift-check snapshot.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderName;
use axum::response::IntoResponse;

use super::AppState;
use crate::auth::Writer;
use crate::error::{ApiError, JsonBody, Problem, Result};
use crate::model::{NewSnapshot, Snapshot, SnapshotError, SnapshotIn};
use crate::store::Recorded;
use crate::telemetry::IngestResult;
use crate::timestamp::Timestamp;

/// Set to `true` on the reply to a retry that matched an already stored snapshot.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Record one drift-check snapshot.
///
/// Appends the snapshot to the target's history and answers with the stored snapshot once it is
/// durably committed. A retry with the same `last_check` and identical content returns the original
/// snapshot and stores nothing; the same `last_check` with different content is a conflict.
///
/// When tokens are configured, needs `Authorization: Bearer <token>` with the `write` scope for
/// the snapshot's repo: 401 without a valid token, 403 when the token may not write that repo.
#[utoipa::path(
    post,
    path = "/api/status",
    tag = "snapshots",
    request_body = SnapshotIn,
    responses(
        (status = 200, description = "Stored (or already stored, for an identical retry)", body = Snapshot,
         headers(("idempotent-replayed" = bool, description = "Present and `true` when nothing new was stored"))),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Tokens are configured and no valid bearer token was given", body = Problem, content_type = "application/problem+json",
         headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"gitops-status-server\"`"))),
        (status = 403, description = "The token may not write this repo", body = Problem, content_type = "application/problem+json"),
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
    writer: Writer,
    body: Result<JsonBody>,
) -> Result<impl IntoResponse> {
    let snapshot = body.and_then(|JsonBody(body)| {
        SnapshotIn::decode(&body, Timestamp::now()).map_err(|error| match error {
            SnapshotError::Malformed(cause) => ApiError::MalformedJson(cause.to_string()),
            SnapshotError::Invalid(errors) => ApiError::InvalidSnapshot(errors),
        })
    });
    let recorded = record(&state, &writer, snapshot).await?;
    let replayed = recorded.replayed.then_some([(REPLAYED_HEADER, "true")]);
    Ok((replayed, Json(recorded.snapshot)))
}

/// Stores a decoded snapshot for a writer allowed its repo, and counts the outcome: the one path
/// every way of posting a snapshot takes (`POST /api/status`, the Pushgateway push).
pub(super) async fn record(
    state: &AppState,
    writer: &Writer,
    snapshot: Result<NewSnapshot>,
) -> Result<Recorded> {
    let outcome = async {
        let snapshot = snapshot?;
        // The repo is known only once the request is decoded; 401 was decided before that.
        writer.authorize(&snapshot.repo)?;
        Ok(state.store.record(snapshot).await?)
    }
    .await;
    state.telemetry.snapshot_ingested(match &outcome {
        Ok(recorded) if recorded.replayed => IngestResult::Replayed,
        Ok(_) => IngestResult::Stored,
        Err(ApiError::Conflict(_)) => IngestResult::Conflict,
        Err(error) if error.status().is_client_error() => IngestResult::Invalid,
        Err(_) => IngestResult::Failed,
    });
    outcome
}
