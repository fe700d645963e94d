//! `GET /api/notifications`: the notifications' outbox, as the delivery tasks see it.

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::error::{ApiError, Problem, Result};
use crate::model::{FieldError, query};
use crate::notify::payload::{NotificationEvent, NotificationKind};
use crate::store::DeliveryRow;
use crate::timestamp::Timestamp;

/// Most deliveries a list returns.
const MAX_LIST: i64 = 1000;

/// Query parameters of `GET /api/notifications`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationParams {
    /// Only deliveries in this state: `pending`, `delivered` or `failed`.
    pub state: Option<String>,
    /// At most this many, newest first (1..=1000, default 1000).
    pub limit: Option<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet; retried with back-off.
    Pending,
    Delivered,
    /// Given up after retrying for at least 24 hours.
    Failed,
}

/// One notification to one receiver.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Notification {
    pub id: i64,
    /// Sent as `X-GitOps-Event-Id` on every attempt.
    pub event_id: String,
    /// The receiver's name in the notify file.
    pub receiver: String,
    pub kind: NotificationKind,
    pub delivery: DeliveryState,
    pub repo: String,
    pub server: String,
    /// The state entered or left, or the target's check result for acknowledgements.
    pub state: String,
    /// When the transition happened.
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// When the delivery was decided.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    pub attempts: i64,
    /// When a pending delivery is next tried.
    #[schema(value_type = String, format = DateTime)]
    pub next_attempt_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<Timestamp>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

impl Notification {
    fn from_row(row: DeliveryRow) -> Result<Self> {
        let kind = match row.kind.as_str() {
            "started" => NotificationKind::Started,
            "resolved" => NotificationKind::Resolved,
            "acknowledged" => NotificationKind::Acknowledged,
            "ack_ended" => NotificationKind::AckEnded,
            "reminder" => NotificationKind::Reminder,
            _ => return Err(ApiError::internal("a delivery has an unknown kind")),
        };
        let delivery = match row.status.as_str() {
            "pending" => DeliveryState::Pending,
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            _ => return Err(ApiError::internal("a delivery has an unknown status")),
        };
        Ok(Self {
            id: row.id,
            event_id: row.event_id,
            receiver: row.receiver,
            kind,
            delivery,
            repo: row.repo,
            server: row.server,
            state: row.state,
            at: Timestamp::from_millis(row.at),
            created_at: Timestamp::from_millis(row.created_at),
            attempts: row.attempts,
            next_attempt_at: Timestamp::from_millis(row.next_attempt_at),
            delivered_at: row.delivered_at.map(Timestamp::from_millis),
            last_error: row.last_error,
        })
    }
}

/// List notification deliveries, newest first.
///
/// Each is one event (a target entering or leaving OUT_OF_SYNC, ERROR or STALE, an
/// acknowledgement made or ended, a reminder that a state lasts) for one receiver of the notify
/// file. Webhook receivers are
/// posted a `NotificationEvent`.
#[utoipa::path(
    get,
    path = "/api/notifications",
    tag = "notifications",
    params(NotificationParams),
    responses(
        (status = 200, description = "Deliveries, newest first", body = Vec<Notification>),
        (status = 400, description = "A query parameter is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_notifications(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<Notification>>> {
    let mut errors = Vec::new();
    let params: NotificationParams = query::read_query(raw.as_deref(), &mut errors);
    let status = match params.state.as_deref() {
        None => None,
        Some(wanted @ ("pending" | "delivered" | "failed")) => Some(wanted),
        Some(_) => {
            errors.push(FieldError::new(
                "state",
                "must be pending, delivered or failed",
            ));
            None
        }
    };
    let limit = match params.limit.as_deref() {
        None => MAX_LIST,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=MAX_LIST).contains(limit))
            .unwrap_or_else(|| {
                errors.push(FieldError::new(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIST}"),
                ));
                MAX_LIST
            }),
    };
    if !errors.is_empty() {
        return Err(ApiError::InvalidQuery(errors));
    }
    let rows = state.store.deliveries(status, limit).await?;
    rows.into_iter()
        .map(Notification::from_row)
        .collect::<Result<Vec<_>>>()
        .map(Json)
}

/// Documents `NotificationEvent`, the body webhooks are posted, beside the outbox's schemas.
#[derive(OpenApi)]
#[openapi(components(schemas(NotificationEvent)))]
struct WebhookDoc;

/// The notifications' read routes.
pub fn read_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(WebhookDoc::openapi()).routes(routes!(list_notifications))
}
