//! The drift lifecycle's operations (SPEC "Drift lifecycle"): acknowledgements, silences,
//! targets and their retirement. Each change is a chained event written by the same pipeline as
//! snapshots; each answer is read back from what committed.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::auth::{Admin, Writer};
use crate::error::{ApiError, JsonBody, Problem, Result};
use crate::model::lifecycle::{
    Ack, AckIn, BodyError, EventKind, NewEvent, Silence, SilenceIn, TargetInfo,
};
use crate::model::{FieldError, StatusFilter, StatusRow, query};
use crate::store::Activity;
use crate::timestamp::Timestamp;

/// Most items a list returns.
const MAX_LIST: i64 = 1000;

fn body_error(error: BodyError) -> ApiError {
    match error {
        BodyError::Malformed(cause) => ApiError::MalformedJson(cause.to_string()),
        BodyError::Invalid(errors) => ApiError::InvalidBody(errors),
    }
}

/// Query parameters of `GET /api/acks`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AckParams {
    /// Only this repo's acknowledgements (exact match).
    pub repo: Option<String>,
    /// Only this server's acknowledgements (exact match).
    pub server: Option<String>,
    /// `true`: only those in force (not ended, `until` ahead); `false`: only ended ones.
    pub active: Option<String>,
    /// At most this many, newest first (1..=1000, default 1000).
    pub limit: Option<String>,
}

/// Query parameters of `GET /api/silences`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SilenceParams {
    /// `true`: only those not over yet (running or to come); `false`: only those over.
    pub active: Option<String>,
    /// At most this many, newest first (1..=1000, default 1000).
    pub limit: Option<String>,
}

/// Query parameters of `GET /api/targets`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TargetParams {
    /// Only this repo's targets (exact match).
    pub repo: Option<String>,
    /// Only targets on this server (exact match).
    pub server: Option<String>,
    /// `true` lists retired targets too (default `false`).
    pub include_retired: Option<String>,
}

fn activity(value: Option<String>, errors: &mut Vec<FieldError>) -> Activity {
    match value.as_deref() {
        None => Activity::All,
        Some("true") => Activity::Active,
        Some("false") => Activity::Inactive,
        Some(_) => {
            errors.push(FieldError::new("active", "must be true or false"));
            Activity::All
        }
    }
}

fn limit(value: Option<String>, errors: &mut Vec<FieldError>) -> i64 {
    match value {
        None => MAX_LIST,
        Some(text) => match text.parse::<i64>() {
            Ok(limit) if (1..=MAX_LIST).contains(&limit) => limit,
            _ => {
                errors.push(FieldError::new(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIST}"),
                ));
                MAX_LIST
            }
        },
    }
}

fn checked<T>(value: T, errors: Vec<FieldError>) -> Result<T> {
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(ApiError::InvalidQuery(errors))
    }
}

/// The id in a path, as a 404 when it cannot name a record.
fn record_id(raw: &str, what: &str) -> Result<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::NotFound(format!("no {what} {raw:?}")))
}

/// Acknowledge a target's current drift.
///
/// A person accepts the drift a target shows now (a hotfix waiting for its PR) until `until`, at
/// most 90 days ahead. It applies while the target is OUT_OF_SYNC or ERROR and, when `files`
/// globs are given, every drifted file matches one; a file drifting outside them makes the drift
/// unacknowledged again. It ends at `until`, when the target is SYNCED again, when it is
/// deleted, or when a newer acknowledgement of the target replaces it; every one of these is a
/// chained record. `by` is the token's name (`anonymous` when writes are open). Needs `write`
/// for the repo.
#[utoipa::path(
    post,
    path = "/api/acks",
    tag = "lifecycle",
    request_body = AckIn,
    responses(
        (status = 201, description = "Recorded", body = Ack,
         headers(("Location" = String, description = "`/api/acks/{id}`"))),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such target has reported", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The target is SYNCED (nothing to acknowledge) or retired", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The Content-Type is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field breaks the rules; `errors` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_ack(
    State(state): State<AppState>,
    writer: Writer,
    body: Result<JsonBody>,
) -> Result<impl IntoResponse> {
    let JsonBody(body) = body?;
    let now = Timestamp::now();
    let ack = AckIn::decode(&body, now).map_err(body_error)?;
    writer.authorize(&ack.repo)?;
    let outcome = state
        .store
        .record_event(NewEvent {
            repo: ack.repo,
            server: ack.server,
            at: now,
            kind: EventKind::Ack {
                reason: ack.reason,
                until: ack.until,
                files: ack.files,
                by: writer.caller().name().to_owned(),
            },
        })
        .await?;
    let id = outcome
        .id
        .ok_or_else(|| ApiError::internal("an acknowledgement was not recorded"))?;
    let stored = state
        .store
        .ack(id)
        .await?
        .ok_or_else(|| ApiError::internal("a recorded acknowledgement cannot be read back"))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/acks/{id}"))],
        Json(stored),
    ))
}

/// List acknowledgements, newest first.
#[utoipa::path(
    get,
    path = "/api/acks",
    tag = "lifecycle",
    params(AckParams),
    responses(
        (status = 200, description = "Acknowledgements, newest first", body = Vec<Ack>),
        (status = 400, description = "A query parameter is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_acks(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<Ack>>> {
    let mut errors = Vec::new();
    let params: AckParams = query::read_query(raw.as_deref(), &mut errors);
    let repo = query::name_filter("repo", params.repo, &mut errors);
    let server = query::name_filter("server", params.server, &mut errors);
    let active = activity(params.active, &mut errors);
    let limit = limit(params.limit, &mut errors);
    checked((), errors)?;
    let acks = state
        .store
        .acks(
            repo.as_deref(),
            server.as_deref(),
            active,
            Timestamp::now(),
            limit,
        )
        .await?;
    Ok(Json(acks))
}

/// One acknowledgement.
#[utoipa::path(
    get,
    path = "/api/acks/{id}",
    tag = "lifecycle",
    params(("id" = i64, Path, description = "The acknowledgement's id")),
    responses(
        (status = 200, description = "The acknowledgement", body = Ack),
        (status = 404, description = "No such acknowledgement", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_ack(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Ack>> {
    let id = record_id(&id, "acknowledgement")?;
    state
        .store
        .ack(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no acknowledgement {id}")))
}

/// End an acknowledgement now.
///
/// Recorded on the target's chain with who deleted it. Deleting one that already ended changes
/// nothing and still answers 204. Needs `write` for its repo.
#[utoipa::path(
    delete,
    path = "/api/acks/{id}",
    tag = "lifecycle",
    params(("id" = i64, Path, description = "The acknowledgement's id")),
    responses(
        (status = 204, description = "Ended (or had ended already)"),
        (status = 404, description = "No such acknowledgement", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_ack(
    State(state): State<AppState>,
    writer: Writer,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = record_id(&id, "acknowledgement")?;
    let ack = state
        .store
        .ack(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no acknowledgement {id}")))?;
    writer.authorize(&ack.repo)?;
    state
        .store
        .record_event(NewEvent {
            repo: ack.repo,
            server: ack.server,
            at: Timestamp::now(),
            kind: EventKind::EndAck {
                ack: id,
                by: Some(writer.caller().name().to_owned()),
            },
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Silence planned maintenance.
///
/// Notifications for the targets whose repo and server match the globs stay quiet from
/// `starts_at` to `ends_at` (at most 30 days); states are shown as they are, and `/api/stats`
/// reports the time as `silenced_seconds`. Recorded once, on the fleet chain. Needs `admin`.
#[utoipa::path(
    post,
    path = "/api/silences",
    tag = "lifecycle",
    request_body = SilenceIn,
    responses(
        (status = 201, description = "Recorded", body = Silence,
         headers(("Location" = String, description = "`/api/silences/{id}`"))),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The Content-Type is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field breaks the rules; `errors` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_silence(
    State(state): State<AppState>,
    admin: Admin,
    body: Result<JsonBody>,
) -> Result<impl IntoResponse> {
    let JsonBody(body) = body?;
    let now = Timestamp::now();
    let silence = SilenceIn::decode(&body, now).map_err(body_error)?;
    let outcome = state
        .store
        .record_event(NewEvent {
            repo: String::new(),
            server: String::new(),
            at: now,
            kind: EventKind::Silence {
                silence,
                by: admin.caller().name().to_owned(),
            },
        })
        .await?;
    let id = outcome
        .id
        .ok_or_else(|| ApiError::internal("a silence was not recorded"))?;
    let stored = state
        .store
        .silence(id)
        .await?
        .ok_or_else(|| ApiError::internal("a recorded silence cannot be read back"))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/silences/{id}"))],
        Json(stored),
    ))
}

/// List silences, newest first.
#[utoipa::path(
    get,
    path = "/api/silences",
    tag = "lifecycle",
    params(SilenceParams),
    responses(
        (status = 200, description = "Silences, newest first", body = Vec<Silence>),
        (status = 400, description = "A query parameter is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_silences(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<Silence>>> {
    let mut errors = Vec::new();
    let params: SilenceParams = query::read_query(raw.as_deref(), &mut errors);
    let active = activity(params.active, &mut errors);
    let limit = limit(params.limit, &mut errors);
    checked((), errors)?;
    Ok(Json(
        state
            .store
            .silences(active, Timestamp::now(), limit)
            .await?,
    ))
}

/// One silence.
#[utoipa::path(
    get,
    path = "/api/silences/{id}",
    tag = "lifecycle",
    params(("id" = i64, Path, description = "The silence's id")),
    responses(
        (status = 200, description = "The silence", body = Silence),
        (status = 404, description = "No such silence", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_silence(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Silence>> {
    let id = record_id(&id, "silence")?;
    state
        .store
        .silence(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no silence {id}")))
}

/// End a silence now.
///
/// Recorded on the fleet chain with who deleted it. Deleting one that is over already changes
/// nothing and still answers 204. Needs `admin`.
#[utoipa::path(
    delete,
    path = "/api/silences/{id}",
    tag = "lifecycle",
    params(("id" = i64, Path, description = "The silence's id")),
    responses(
        (status = 204, description = "Ended (or over already)"),
        (status = 404, description = "No such silence", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_silence(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = record_id(&id, "silence")?;
    state
        .store
        .record_event(NewEvent {
            repo: String::new(),
            server: String::new(),
            at: Timestamp::now(),
            kind: EventKind::EndSilence {
                silence: id,
                by: admin.caller().name().to_owned(),
            },
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List targets.
///
/// Every target that has reported, sorted by repo then server, with its state now; retired
/// targets only with `include_retired=true`. Also serves Grafana template variables.
#[utoipa::path(
    get,
    path = "/api/targets",
    tag = "lifecycle",
    params(TargetParams),
    responses(
        (status = 200, description = "Targets, sorted by repo then server", body = Vec<TargetInfo>),
        (status = 400, description = "A query parameter is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_targets(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<TargetInfo>>> {
    let mut errors = Vec::new();
    let params: TargetParams = query::read_query(raw.as_deref(), &mut errors);
    let filter = StatusFilter {
        repo: query::name_filter("repo", params.repo, &mut errors),
        server: query::name_filter("server", params.server, &mut errors),
        ..StatusFilter::default()
    };
    let include_retired = query::flag("include_retired", params.include_retired, &mut errors);
    checked((), errors)?;
    let now = Timestamp::now();
    let default_stale_after = state.settings.stale_after_seconds();
    let targets = state
        .store
        .latest(&filter)
        .await?
        .into_iter()
        .filter(|latest| include_retired || latest.retired_at.is_none())
        .map(|latest| {
            let retired_at = latest.retired_at;
            let row = StatusRow::new(
                latest.snapshot,
                latest.status_since,
                None,
                now,
                default_stale_after,
            );
            TargetInfo {
                repo: row.repo,
                server: row.server,
                state: row.state,
                retired_at,
            }
        })
        .collect();
    Ok(Json(targets))
}

/// Retire a target.
///
/// A decommissioned server leaves `/status.json`, `/metrics`, the pages and notifications, and
/// stops counting STALE time; its history stays and still verifies. Its next snapshot brings it
/// back, and that is recorded too. Retiring a retired target changes nothing and answers 204.
/// Path segments are percent-encoded. Needs `write` for the repo.
#[utoipa::path(
    delete,
    path = "/api/targets/{repo}/{server}",
    tag = "lifecycle",
    params(
        ("repo" = String, Path, description = "The target's repo, percent-encoded"),
        ("server" = String, Path, description = "The target's server, percent-encoded"),
    ),
    responses(
        (status = 204, description = "Retired (or retired already)"),
        (status = 404, description = "No such target has reported", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn retire_target(
    State(state): State<AppState>,
    writer: Writer,
    Path((repo, server)): Path<(String, String)>,
) -> Result<StatusCode> {
    retire(&state, &writer, repo, server).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Retires a target for a writer allowed its repo: `DELETE /api/targets/...` and the
/// Pushgateway path's `DELETE`.
pub(super) async fn retire(
    state: &AppState,
    writer: &Writer,
    repo: String,
    server: String,
) -> Result<()> {
    writer.authorize(&repo)?;
    state
        .store
        .record_event(NewEvent {
            repo,
            server,
            at: Timestamp::now(),
            kind: EventKind::Retire {
                by: writer.caller().name().to_owned(),
            },
        })
        .await?;
    Ok(())
}

/// The lifecycle's write routes (scope `write`, checked per repo by the handlers).
pub fn write_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_ack))
        .routes(routes!(delete_ack))
        .routes(routes!(retire_target))
}

/// The lifecycle's admin routes.
pub fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_silence))
        .routes(routes!(delete_silence))
}

/// The lifecycle's read routes.
pub fn read_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_acks))
        .routes(routes!(get_ack))
        .routes(routes!(list_silences))
        .routes(routes!(get_silence))
        .routes(routes!(list_targets))
}
