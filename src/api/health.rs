//! `GET /healthz` and `GET /readyz`: liveness and readiness probes (`api::Rules::PROBE`: never
//! authenticated or shed).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::error::{Problem, Result};

/// Probe answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The process answers", body = Health),
        (status = 503, description = "Timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers and the writer is running.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = Health),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable or the server is shutting down", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>> {
    state.store.ping().await?;
    Ok(Json(Health { status: "ok" }))
}
