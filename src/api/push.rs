//! Pushgateway's push path, so that pipelines which pushed `gitops_sync_status` keep working when
//! only their URL changes: `PUT`/`POST /metrics/job/{job}/repo/{repo}/server/{server}` records a
//! snapshot through the same path, tokens and rules as `POST /api/status`.
//!
//! The document names the canonical path; the router serves every spelling Pushgateway takes:
//! labels in any order, extra labels (ignored), `@base64` values and a base64 job. `DELETE`
//! retires the target, as `DELETE /api/targets/{repo}/{server}` does.

use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::routing::put;

use super::lifecycle::retire;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use super::AppState;
use super::snapshots::record;
use crate::auth::Writer;
use crate::error::{ApiError, Problem, PushBody, Result};
use crate::model::decode_push;
use crate::timestamp::Timestamp;

/// The push routes and their documentation.
pub fn routes() -> OpenApiRouter<AppState> {
    #[derive(OpenApi)]
    #[openapi(paths(push_replace, push_add, push_delete))]
    struct PushDoc;

    OpenApiRouter::with_openapi(PushDoc::openapi())
        .route(
            "/metrics/job/{*grouping_key}",
            put(push_replace).post(push_add).delete(push_delete),
        )
        .route(
            "/metrics/job@base64/{*grouping_key}",
            put(push_replace).post(push_add).delete(push_delete),
        )
}

/// Record a Pushgateway-style push of `gitops_sync_status` (PUT).
///
/// The body is the Prometheus text format with a `gitops_sync_status` sample: 0 `SYNCED`, 1
/// `OUT_OF_SYNC`, 2 `ERROR`. Every other line is ignored, as are the sample's own labels (the
/// path's win, as in Pushgateway). Records a snapshot with no files, checked when received, and
/// answers 200 with an empty body, as Pushgateway does. `PUT` and `POST` do the same: a snapshot
/// is always a target's whole state.
///
/// A label value may be given as `{name}@base64/{URL-safe base64}` (`=` alone for the empty
/// value); other labels of the path, such as `instance`, are accepted and ignored. The body may
/// be gzip'd (`Content-Encoding: gzip`); the protobuf format is refused with 415.
///
/// Needs the same token as `POST /api/status`: `write` scope for the repo.
#[utoipa::path(
    put,
    path = "/metrics/job/{job}/repo/{repo}/server/{server}",
    tag = "snapshots",
    operation_id = "push_replace",
    params(
        ("job" = String, Path, description = "Pushgateway's job; accepted and not stored"),
        ("repo" = String, Path, description = "Repository; `repo@base64/{value}` for a value with `/`"),
        ("server" = String, Path, description = "Server; `server@base64/{value}` for a value with `/`"),
    ),
    request_body(
        content = String,
        content_type = "text/plain",
        description = "Prometheus text format, e.g. `gitops_sync_status 1`",
    ),
    responses(
        (status = 200, description = "Recorded; the body is empty, as Pushgateway's"),
        (status = 400, description = "The path or body cannot be a snapshot; `errors` names the label or `gitops_sync_status`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Tokens are configured and no valid bearer token was given", body = Problem, content_type = "application/problem+json",
         headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"gitops-status-server\"`"))),
        (status = 403, description = "The token may not write this repo", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body, decompressed, is larger than the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The protobuf format, or a Content-Encoding other than gzip", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, shutting down or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn push_replace(
    State(state): State<AppState>,
    writer: Writer,
    OriginalUri(uri): OriginalUri,
    body: Result<PushBody>,
) -> Result<StatusCode> {
    push(&state, &writer, uri.path(), body).await
}

/// Record a Pushgateway-style push of `gitops_sync_status` (POST).
///
/// The same as the `PUT` of this path: the body is the Prometheus text format with a
/// `gitops_sync_status` sample (0 `SYNCED`, 1 `OUT_OF_SYNC`, 2 `ERROR`), every other line is
/// ignored, and the answer is 200 with an empty body.
#[utoipa::path(
    post,
    path = "/metrics/job/{job}/repo/{repo}/server/{server}",
    tag = "snapshots",
    operation_id = "push_add",
    params(
        ("job" = String, Path, description = "Pushgateway's job; accepted and not stored"),
        ("repo" = String, Path, description = "Repository; `repo@base64/{value}` for a value with `/`"),
        ("server" = String, Path, description = "Server; `server@base64/{value}` for a value with `/`"),
    ),
    request_body(
        content = String,
        content_type = "text/plain",
        description = "Prometheus text format, e.g. `gitops_sync_status 1`",
    ),
    responses(
        (status = 200, description = "Recorded; the body is empty, as Pushgateway's"),
        (status = 400, description = "The path or body cannot be a snapshot; `errors` names the label or `gitops_sync_status`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Tokens are configured and no valid bearer token was given", body = Problem, content_type = "application/problem+json",
         headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"gitops-status-server\"`"))),
        (status = 403, description = "The token may not write this repo", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body, decompressed, is larger than the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The protobuf format, or a Content-Encoding other than gzip", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, shutting down or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn push_add(
    State(state): State<AppState>,
    writer: Writer,
    OriginalUri(uri): OriginalUri,
    body: Result<PushBody>,
) -> Result<StatusCode> {
    push(&state, &writer, uri.path(), body).await
}

async fn push(
    state: &AppState,
    writer: &Writer,
    path: &str,
    body: Result<PushBody>,
) -> Result<StatusCode> {
    let snapshot = body.and_then(|PushBody(body)| {
        decode_push(path, &body, Timestamp::now()).map_err(ApiError::InvalidPush)
    });
    record(state, writer, snapshot).await?;
    Ok(StatusCode::OK)
}

/// Retire the target of a Pushgateway-style path (DELETE).
///
/// What `delete_from_gateway` does to a Pushgateway group, done to the target: it is retired as
/// by `DELETE /api/targets/{repo}/{server}` (it leaves the views; its history stays; its next
/// push brings it back). Answers 202 with an empty body, as Pushgateway does, also for a target
/// that never reported or is retired already.
#[utoipa::path(
    delete,
    path = "/metrics/job/{job}/repo/{repo}/server/{server}",
    tag = "snapshots",
    operation_id = "push_delete",
    params(
        ("job" = String, Path, description = "Pushgateway's job; accepted and not stored"),
        ("repo" = String, Path, description = "Repository; `repo@base64/{value}` for a value with `/`"),
        ("server" = String, Path, description = "Server; `server@base64/{value}` for a value with `/`"),
    ),
    responses(
        (status = 202, description = "Retired (or nothing to retire); the body is empty, as Pushgateway's"),
        (status = 400, description = "The path cannot name a target; `errors` names the label", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token may not write this repo", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn push_delete(
    State(state): State<AppState>,
    writer: Writer,
    OriginalUri(uri): OriginalUri,
) -> Result<StatusCode> {
    // The path's rules are a snapshot's: read it as a push of any value.
    let target = decode_push(uri.path(), b"gitops_sync_status 0\n", Timestamp::now())
        .map_err(ApiError::InvalidPush)?;
    match retire(&state, &writer, target.repo, target.server).await {
        Ok(()) | Err(ApiError::NotFound(_)) => Ok(StatusCode::ACCEPTED),
        Err(error) => Err(error),
    }
}
