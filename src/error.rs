//! `ApiError` and its RFC 9457 `application/problem+json` rendering, the one place that logs why a
//! request failed, and the body extractors (JSON, and the Prometheus text of a push) whose every
//! rejection is one of these problems.
//!
//! A response built from an `ApiError` carries it as a [`Failure`] extension; the trace layer
//! (`lib.rs`) reads it when the response leaves and logs it once, inside the request's span:
//! the cause of a 5xx at error, an unavailable database at warn, a rejected request's problem (never
//! its body) at info.

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::AppState;
use crate::model::FieldError;
use crate::store::StoreError;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Handler result.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Everything a request can fail with; each variant is one problem type.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the snapshot breaks the schema or its rules")]
    InvalidSnapshot(Vec<FieldError>),
    /// A request body (other than a snapshot) that breaks its schema or rules.
    #[error("the request breaks the schema or its rules")]
    InvalidBody(Vec<FieldError>),
    /// A Pushgateway-style push whose path or body cannot be a snapshot.
    #[error("the push cannot be recorded")]
    InvalidPush(Vec<FieldError>),
    #[error("invalid query parameters")]
    InvalidQuery(Vec<FieldError>),
    /// A request header this operation reads (`Last-Event-ID`) cannot be read.
    #[error("invalid request headers")]
    InvalidHeader(Vec<FieldError>),
    #[error("invalid form fields")]
    InvalidForm(Vec<FieldError>),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error(
        "the request body is larger than the server's limit of {limit} bytes; its operator can \
         raise it with --body-limit or GITOPS_STATUS_BODY_LIMIT"
    )]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the request headers are larger than the limit")]
    HeadersTooLarge,
    #[error("{0}")]
    NotFound(String),
    #[error("{method} is not allowed here")]
    MethodNotAllowed { method: String },
    #[error("{0}")]
    Unavailable(String),
    /// The store could not be reached or written; the cause is logged, not sent.
    #[error("the database is unavailable; retry shortly")]
    DatabaseUnavailable(#[source] StoreError),
    #[error("the request did not complete within the server's request timeout")]
    Timeout,
    /// A bug or a corrupt database; the cause is logged, not sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// An internal error with only a message for its cause.
    pub fn internal(cause: impl Into<String>) -> Self {
        Self::Internal(cause.into().into())
    }

    pub const fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_)
            | Self::InvalidPush(_)
            | Self::InvalidQuery(_)
            | Self::InvalidHeader(_)
            | Self::InvalidForm(_) => StatusCode::BAD_REQUEST,
            Self::InvalidSnapshot(_) | Self::InvalidBody(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable(_) | Self::DatabaseUnavailable(_) | Self::Timeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem `type`: a stable identifier clients may switch on (listed in the README).
    const fn problem_type(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "/problems/malformed-json",
            Self::InvalidSnapshot(_) => "/problems/invalid-snapshot",
            Self::InvalidBody(_) => "/problems/invalid-request",
            Self::InvalidPush(_) => "/problems/invalid-push",
            Self::InvalidQuery(_) => "/problems/invalid-query",
            Self::InvalidHeader(_) => "/problems/invalid-header",
            Self::InvalidForm(_) => "/problems/invalid-form",
            Self::UnsupportedMediaType(_) => "/problems/unsupported-media-type",
            Self::PayloadTooLarge { .. } => "/problems/payload-too-large",
            Self::Conflict(_) => "/problems/conflict",
            Self::Unauthorized(_) => "/problems/unauthorized",
            Self::Forbidden(_) => "/problems/forbidden",
            Self::HeadersTooLarge => "/problems/headers-too-large",
            Self::NotFound(_) => "/problems/not-found",
            Self::MethodNotAllowed { .. } => "/problems/method-not-allowed",
            Self::Unavailable(_) | Self::DatabaseUnavailable(_) => "/problems/unavailable",
            Self::Timeout => "/problems/timeout",
            Self::Internal(_) => "/problems/internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "Malformed JSON",
            Self::InvalidSnapshot(_) => "Invalid snapshot",
            Self::InvalidBody(_) => "Invalid request body",
            Self::InvalidPush(_) => "Invalid push",
            Self::InvalidQuery(_) => "Invalid query parameters",
            Self::InvalidHeader(_) => "Invalid request headers",
            Self::InvalidForm(_) => "Invalid form fields",
            Self::UnsupportedMediaType(_) => "Unsupported media type",
            Self::PayloadTooLarge { .. } => "Payload too large",
            Self::Conflict(_) => "Conflict",
            Self::Unauthorized(_) => "Unauthorized",
            Self::Forbidden(_) => "Forbidden",
            Self::HeadersTooLarge => "Request headers too large",
            Self::NotFound(_) => "Not found",
            Self::MethodNotAllowed { .. } => "Method not allowed",
            Self::Unavailable(_) | Self::DatabaseUnavailable(_) => "Service unavailable",
            Self::Timeout => "Request timed out",
            Self::Internal(_) => "Internal server error",
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::InvalidSnapshot(errors)
            | Self::InvalidBody(errors)
            | Self::InvalidPush(errors)
            | Self::InvalidQuery(errors)
            | Self::InvalidHeader(errors)
            | Self::InvalidForm(errors) => {
                let fields: Vec<_> = errors.iter().map(|error| error.field.as_str()).collect();
                format!("invalid field(s): {}", fields.join(", "))
            }
            Self::Internal(_) => "the server failed; the cause is in its log".to_owned(),
            other => other.to_string(),
        }
    }

    fn retry_after_seconds(&self) -> Option<u32> {
        matches!(
            self,
            Self::Unavailable(_) | Self::DatabaseUnavailable(_) | Self::Timeout
        )
        .then_some(1)
    }

    /// Logs why the request failed, once, at the level its kind deserves.
    fn log(&self, status: u16, latency: Duration) {
        let millis = latency.as_secs_f64() * 1000.0;
        match self {
            Self::Internal(cause) => {
                let sqlstate = cause
                    .downcast_ref::<StoreError>()
                    .and_then(StoreError::sqlstate);
                let cause = cause.to_string();
                tracing::error!(status, millis, ?cause, sqlstate, "request failed");
            }
            Self::DatabaseUnavailable(cause) => {
                let cause = cause.to_string();
                tracing::warn!(status, millis, ?cause, "database unavailable");
            }
            Self::Unavailable(_) | Self::Timeout => {
                tracing::warn!(status, millis, detail = ?self.detail(), "request not served");
            }
            Self::InvalidSnapshot(errors)
            | Self::InvalidBody(errors)
            | Self::InvalidPush(errors)
            | Self::InvalidQuery(errors)
            | Self::InvalidHeader(errors)
            | Self::InvalidForm(errors) => {
                let errors: Vec<String> = errors
                    .iter()
                    .map(|error| format!("{}: {}", error.field, error.message))
                    .collect();
                tracing::info!(
                    status,
                    millis,
                    problem = self.problem_type(),
                    detail = ?self.detail(),
                    ?errors,
                    "rejected"
                );
            }
            _ => {
                tracing::info!(
                    status,
                    millis,
                    problem = self.problem_type(),
                    detail = ?self.detail(),
                    "rejected"
                );
            }
        }
    }
}

/// The error a response was built from, as a response extension, for the trace layer to log.
#[derive(Debug, Clone)]
pub struct Failure(Arc<ApiError>);

impl Failure {
    /// Logs the failure (see [`ApiError`]'s levels) with the answer's status and latency.
    pub fn log(&self, status: u16, latency: Duration) {
        self.0.log(status, latency);
    }

    pub fn error(&self) -> &ApiError {
        &self.0
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of problem, e.g. `/problems/invalid-snapshot`.
    #[serde(rename = "type")]
    #[schema(example = "/problems/invalid-snapshot")]
    pub problem_type: String,
    #[schema(example = "Invalid snapshot")]
    pub title: String,
    #[schema(example = 422)]
    pub status: u16,
    #[schema(example = "invalid field(s): files[3].name")]
    pub detail: String,
    /// Every invalid field, for validation failures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = self.retry_after_seconds();
        let challenge = matches!(self, Self::Unauthorized(_));
        let problem = Problem {
            problem_type: self.problem_type().to_owned(),
            title: self.title().to_owned(),
            status: status.as_u16(),
            detail: self.detail(),
            errors: match &self {
                Self::InvalidSnapshot(errors)
                | Self::InvalidBody(errors)
                | Self::InvalidPush(errors)
                | Self::InvalidQuery(errors)
                | Self::InvalidHeader(errors)
                | Self::InvalidForm(errors) => errors.clone(),
                _ => Vec::new(),
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"gitops-status-server\""),
            );
        }
        response.extensions_mut().insert(Failure(Arc::new(self)));
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(detail) => Self::Conflict(detail),
            StoreError::NotFound(detail) => Self::NotFound(detail),
            StoreError::Unavailable(_) => Self::DatabaseUnavailable(error),
            StoreError::Closed => {
                Self::Unavailable("the server is shutting down; retry shortly".to_owned())
            }
            StoreError::Database(_) => Self::Internal(Box::new(error)),
        }
    }
}

/// A request body declared as JSON: checks the content type and the size limit, and leaves the
/// syntax and the schema to the wire type, which parses it once (a syntax error is still a 400).
#[derive(Debug)]
pub struct JsonBody(pub Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !is_json_media_type(content_type) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "expected Content-Type: application/json, got {:?}",
                content_type
            )));
        }
        read_body(request, state, ApiError::MalformedJson)
            .await
            .map(JsonBody)
    }
}

/// The body up to the size limit: over it, 413; a body that cannot be read, `unreadable` with
/// the reason.
async fn read_body(
    request: Request,
    state: &AppState,
    unreadable: fn(String) -> ApiError,
) -> Result<Bytes> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: state.settings.body_limit,
                }
            } else {
                unreadable(rejection.body_text())
            }
        })
}

/// A push body as Pushgateway takes it, in the Prometheus text format: any `Content-Type` but
/// the protobuf one (client_golang's default, refused with 415), plain or `Content-Encoding:
/// gzip`. The size limit holds for the decompressed body too. The text is read by the model.
#[derive(Debug)]
pub struct PushBody(pub Bytes);

/// The protobuf exposition format's media type, which a push may not use here.
const PROTOBUF_MEDIA_TYPE: &str = "application/vnd.google.protobuf";

impl FromRequest<AppState> for PushBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self> {
        let headers = request.headers();
        let header = |name| {
            headers
                .get(name)
                .map_or("", |value| value.to_str().unwrap_or("(not text)"))
                .to_owned()
        };
        let content_type = header(header::CONTENT_TYPE);
        if media_type_essence(&content_type) == PROTOBUF_MEDIA_TYPE {
            return Err(ApiError::UnsupportedMediaType(
                "this server reads pushes in the Prometheus text format only, not the protobuf                  format; push with Content-Type: text/plain (client_golang:                  push.New(...).Format(expfmt.NewFormat(expfmt.TypeTextPlain)))"
                    .to_owned(),
            ));
        }
        let encoding = header(header::CONTENT_ENCODING).trim().to_ascii_lowercase();
        let limit = state.settings.body_limit;
        let body = read_body(request, state, |reason| {
            ApiError::InvalidPush(vec![FieldError::new("body", reason)])
        })
        .await?;
        match encoding.as_str() {
            "" | "identity" => Ok(Self(body)),
            "gzip" | "x-gzip" => gunzip(&body, limit).map(Self),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding {other:?} is not supported; send the body plain or gzip'd"
            ))),
        }
    }
}

/// A gzip'd body decompressed, refused with 413 when it would exceed `limit` bytes.
fn gunzip(compressed: &[u8], limit: usize) -> Result<Bytes> {
    let mut body = Vec::new();
    let allowed = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::GzDecoder::new(compressed)
        .take(allowed)
        .read_to_end(&mut body)
        .map_err(|error| {
            ApiError::InvalidPush(vec![FieldError::new(
                "body",
                format!("is not valid gzip ({error}) although Content-Encoding says so"),
            )])
        })?;
    if body.len() > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(Bytes::from(body))
}

/// The media type without its parameters, lowercase.
fn media_type_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_json_media_type(content_type: &str) -> bool {
    let essence = media_type_essence(content_type);
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("Application/JSON; charset=utf-8"));
        assert!(is_json_media_type("application/merge-patch+json"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type(""));
        assert!(!is_json_media_type("application/jsonx"));
    }
}
