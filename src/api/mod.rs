//! The HTTP resources: shared state and the router that merges every resource's routes and spec.

pub mod audit;
pub mod badge;
pub mod health;
pub mod history;
pub mod metrics;
pub mod openapi;
pub mod snapshots;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Tokens;
use crate::config::ServeArgs;
use crate::error::Problem;
use crate::model::{FieldError, StatusFilter, StatusRow};
use crate::stats::{self, StatsRequest, TargetStats};
use crate::store::{Store, StoreError};
use crate::telemetry::Telemetry;
use crate::timestamp::Timestamp;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub settings: Arc<Settings>,
    /// The server's own metrics.
    pub telemetry: Telemetry,
    /// Who may write and read; none configured means open.
    pub tokens: Arc<Tokens>,
}

impl AppState {
    /// State with a private metrics registry; the binary swaps in the global one with
    /// [`AppState::with_telemetry`].
    pub fn new(store: Store, settings: Settings) -> Self {
        Self {
            store,
            settings: Arc::new(settings),
            telemetry: Telemetry::new(),
            tokens: Arc::new(Tokens::none()),
        }
    }

    pub fn with_tokens(self, tokens: Tokens) -> Self {
        Self {
            tokens: Arc::new(tokens),
            ..self
        }
    }

    pub fn with_telemetry(self, telemetry: Telemetry) -> Self {
        Self { telemetry, ..self }
    }

    /// The latest status of every target the filter selects, staleness judged now.
    pub async fn status_rows(&self, filter: &StatusFilter) -> Result<Vec<StatusRow>, StoreError> {
        let latest = self.store.latest(filter).await?;
        let now = Timestamp::now();
        let default_stale_after = self.settings.stale_after_seconds();
        Ok(latest
            .into_iter()
            .map(|latest| {
                StatusRow::new(
                    latest.snapshot,
                    latest.status_since,
                    now,
                    default_stale_after,
                )
            })
            .filter(|row| filter.states.is_empty() || filter.states.contains(&row.state))
            .collect())
    }

    /// Each selected target's statistics over the request's window, judged at `now`.
    pub async fn stats(
        &self,
        request: &StatsRequest,
        now: Timestamp,
    ) -> Result<Vec<TargetStats>, StoreError> {
        let histories = self.store.stats_histories(request).await?;
        let default_stale_after = self.settings.stale_after_seconds();
        Ok(histories
            .into_iter()
            .map(|history| {
                stats::compute(history, request.from, request.to, now, default_stale_after)
            })
            .collect())
    }
}

/// Behaviour the operator configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Age after which a target without a newer check is `STALE`, unless it carries its own.
    pub stale_after: Duration,
    /// Longest a request may take to be answered.
    pub request_timeout: Duration,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Requests served at once before the rest are shed with 503.
    pub max_in_flight: usize,
}

impl Settings {
    /// `stale_after` in whole seconds, as snapshots carry their own.
    pub fn stale_after_seconds(&self) -> i64 {
        i64::try_from(self.stale_after.as_secs()).unwrap_or(i64::MAX)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(600),
            request_timeout: Duration::from_secs(30),
            body_limit: 1024 * 1024,
            max_in_flight: 1024,
        }
    }
}

impl From<&ServeArgs> for Settings {
    fn from(args: &ServeArgs) -> Self {
        Self {
            stale_after: args.stale_after,
            request_timeout: args.request_timeout,
            body_limit: usize::try_from(args.body_limit).unwrap_or(usize::MAX),
            max_in_flight: usize::try_from(args.max_in_flight).unwrap_or(usize::MAX),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gitops-status-server",
        description = "CI pipelines post Ansible drift-check snapshots; Grafana, dashboards and \
                       auditors read the latest status of every target and its full history.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0")
    ),
    components(schemas(Problem, FieldError)),
    tags(
        (name = "snapshots", description = "Recording drift-check results"),
        (name = "status", description = "Latest status of every target"),
        (name = "history", description = "The audit trail"),
        (name = "audit", description = "Integrity of the trail and drift statistics"),
        (name = "operations", description = "Health, readiness, metrics and the API description"),
        (name = "badges", description = "Status badges for READMEs and wikis")
    )
)]
struct ApiDoc;

/// Every route of the service, with the OpenAPI document generated from the handlers.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(snapshots::record_snapshot))
        .routes(routes!(status::status_list))
        .routes(routes!(history::history_list))
        .routes(routes!(audit::stats_list))
        .routes(routes!(audit::verify))
        .routes(routes!(audit::checkpoints))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(metrics::metrics))
        .routes(routes!(badge::badge))
}

/// Adds what the middleware in front of every handler can answer to every operation of the
/// merged document: 401 (a token with the read scope is configured), 431 (headers over the
/// limit), 503 (overloaded), and the optional bearer scheme. The probes never need a token.
pub fn document_guards(openapi: &mut utoipa::openapi::OpenApi) {
    openapi
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    for (path, item) in &mut openapi.paths.paths {
        let probe = health::is_probe(path);
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_guard_responses(operation, probe);
        }
    }
}

fn add_guard_responses(operation: &mut Operation, probe: bool) {
    let problem = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    crate::error::PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    };
    let responses = &mut operation.responses.responses;
    if !probe {
        responses.entry("401".to_owned()).or_insert_with(|| {
            problem("A token with the read scope is configured and no valid bearer token was given")
        });
        operation.security = Some(vec![
            SecurityRequirement::default(),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]);
    }
    responses
        .entry("431".to_owned())
        .or_insert_with(|| problem("The request headers are larger than the limit"));
    responses.entry("503".to_owned()).or_insert_with(|| {
        problem("Overloaded, database unavailable or timed out; see Retry-After")
    });
}
