//! `GET /openapi.json`: the OpenAPI document generated from the handlers.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;

use crate::error::Problem;

/// The OpenAPI 3.1 description of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object),
        (status = 503, description = "Timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn openapi_json() -> impl IntoResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let document = DOCUMENT.get_or_init(crate::openapi_json);
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.as_str(),
    )
}
