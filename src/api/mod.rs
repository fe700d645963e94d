//! The HTTP resources: shared state and the router that merges every resource's routes and spec.

pub mod audit;
pub mod badge;
pub mod conditional;
pub mod episodes;
pub mod events;
pub mod evidence;
pub mod health;
pub mod history;
pub mod lifecycle;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod paging;
pub mod push;
pub mod snapshots;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::path::PathItem;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Access, Tokens};
use crate::config::ServeArgs;
use crate::error::{ApiError, Problem};
use crate::model::{FieldError, StatusFilter, StatusRow};
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
    /// `/status.json` answers already written, by filter and the store's version.
    pub status_cache: Arc<status::StatusCache>,
    /// The public half of `--signing-key`: `/api/verify` checks the head statements with it.
    pub public_key: Option<ed25519_dalek::VerifyingKey>,
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
            status_cache: Arc::default(),
            public_key: None,
        }
    }

    pub fn with_public_key(self, public_key: Option<ed25519_dalek::VerifyingKey>) -> Self {
        Self { public_key, ..self }
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
        Ok(status::status_rows(
            latest,
            filter,
            Timestamp::now(),
            self.settings.stale_after_seconds(),
        ))
    }

    /// `/status.json`'s answer for `filter`: the one kept when the store's version is the one it
    /// was built at and the clock has not changed a row since, else a new one, kept.
    pub async fn status_answer(
        &self,
        filter: &StatusFilter,
    ) -> Result<Arc<status::StatusAnswer>, ApiError> {
        // Before the rows: they are then at least as new as the version they are kept under.
        let version = self.store.status_version().await?;
        if let Some(answer) = self.status_cache.get(filter, &version, Timestamp::now()) {
            return Ok(answer);
        }
        let latest = self.store.latest(filter).await?;
        let answer = Arc::new(status::StatusAnswer::build(
            filter.clone(),
            version,
            latest,
            Timestamp::now(),
            self.settings.stale_after_seconds(),
        )?);
        self.status_cache.keep(Arc::clone(&answer));
        Ok(answer)
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
        (name = "badges", description = "Status badges for READMEs and wikis"),
        (name = "lifecycle", description = "Acknowledgements, silences, targets and their retirement")
    )
)]
struct ApiDoc;

/// What a route group's layers enforce. Every route belongs to exactly one group, and the group
/// decides: no route's rules depend on matching its path as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Who may call it.
    pub access: Access,
    /// Answered 503 at once when `max_in_flight` requests are already being served.
    pub shed: bool,
    /// Answered 503 when it takes longer than the request timeout.
    pub timed: bool,
}

impl Rules {
    /// The probes: never authenticated or shed, since an orchestrator that cannot probe restarts
    /// a server that is merely busy or locked down.
    pub const PROBE: Self = Self {
        access: Access::Open,
        shed: false,
        timed: true,
    };
    /// The sign-in form: open, since it is how a person gets in.
    pub const SIGN_IN: Self = Self {
        access: Access::Open,
        shed: true,
        timed: true,
    };
    pub const READ: Self = Self {
        access: Access::Read,
        shed: true,
        timed: true,
    };
    /// Reads whose answer is a full pass over the history by design, so its length follows the
    /// history's: the client chooses how long to wait.
    pub const UNTIMED_READ: Self = Self {
        access: Access::Read,
        shed: true,
        timed: false,
    };
    pub const WRITE: Self = Self {
        access: Access::Write,
        shed: true,
        timed: true,
    };
    pub const ADMIN: Self = Self {
        access: Access::Admin,
        shed: true,
        timed: true,
    };
}

/// Routes that share their rules.
#[allow(missing_debug_implementations, reason = "OpenApiRouter has no Debug")]
pub struct RouteGroup {
    pub rules: Rules,
    pub routes: OpenApiRouter<AppState>,
}

/// Every documented route of the service, in its group. `lib.rs` layers each group by its rules;
/// [`document_guards`] documents the same rules. The pages (`web`) are read routes too.
pub fn groups() -> Vec<RouteGroup> {
    let group = |rules, routes| RouteGroup { rules, routes };
    vec![
        group(
            Rules::PROBE,
            OpenApiRouter::new()
                .routes(routes!(health::healthz))
                .routes(routes!(health::readyz)),
        ),
        group(
            Rules::WRITE,
            OpenApiRouter::new()
                .routes(routes!(snapshots::record_snapshot))
                .merge(push::routes())
                .merge(lifecycle::write_routes()),
        ),
        group(Rules::ADMIN, lifecycle::admin_routes()),
        group(
            Rules::UNTIMED_READ,
            // The event stream lasts as long as its client follows it.
            OpenApiRouter::new()
                .routes(routes!(audit::verify))
                .routes(routes!(events::event_stream))
                // An evidence file reads as much history as it selects.
                .routes(routes!(evidence::evidence_file)),
        ),
        group(
            Rules::READ,
            OpenApiRouter::new()
                .routes(routes!(status::status_list))
                .routes(routes!(history::history_list))
                .routes(routes!(episodes::episodes_list))
                .routes(routes!(audit::stats_list))
                .routes(routes!(audit::checkpoints))
                .routes(routes!(audit::chain_events))
                .routes(routes!(evidence::chain_heads))
                .routes(routes!(openapi::openapi_json))
                .routes(routes!(metrics::metrics))
                .routes(routes!(badge::badge))
                .merge(lifecycle::read_routes())
                .merge(notifications::read_routes()),
        ),
    ]
}

/// Every documented route of the service, with the OpenAPI document generated from the handlers.
pub fn router() -> OpenApiRouter<AppState> {
    groups().into_iter().fold(
        OpenApiRouter::with_openapi(ApiDoc::openapi()),
        |router, group| router.merge(group.routes),
    )
}

/// Adds to every operation of the merged document what its group's layers can answer: 401 and
/// 403 by its access (and the schemes that pass it), 431 (headers over the limit) and 503
/// (overloaded, timed out).
pub fn document_guards(openapi: &mut utoipa::openapi::OpenApi) {
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            crate::auth::SESSION_COOKIE,
            "Set by `POST /login` for a read-only token; honoured for reads only",
        ))),
    );
    for group in groups() {
        let document = group.routes.into_openapi();
        for (path, item) in &document.paths.paths {
            let Some(merged) = openapi.paths.paths.get_mut(path) else {
                continue;
            };
            for method in methods(item) {
                if let Some(operation) = operation_mut(merged, method) {
                    add_guard_responses(operation, group.rules.access);
                }
            }
        }
    }
}

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// The methods `item` has an operation for.
fn methods(item: &PathItem) -> impl Iterator<Item = &'static str> + '_ {
    METHODS.into_iter().filter(|method| match *method {
        "get" => item.get.is_some(),
        "post" => item.post.is_some(),
        "put" => item.put.is_some(),
        "delete" => item.delete.is_some(),
        _ => item.patch.is_some(),
    })
}

fn operation_mut<'a>(item: &'a mut PathItem, method: &str) -> Option<&'a mut Operation> {
    match method {
        "get" => item.get.as_mut(),
        "post" => item.post.as_mut(),
        "put" => item.put.as_mut(),
        "delete" => item.delete.as_mut(),
        _ => item.patch.as_mut(),
    }
}

fn add_guard_responses(operation: &mut Operation, access: Access) {
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
    let no_token = || SecurityRequirement::default();
    let bearer = || SecurityRequirement::new("bearer", Vec::<String>::new());
    match access {
        Access::Open => {}
        Access::Read => {
            responses.entry("401".to_owned()).or_insert_with(|| {
                problem(
                    "A token with the read scope is configured and no valid bearer token or \
                     sign-in cookie was given",
                )
            });
            operation.security = Some(vec![
                no_token(),
                bearer(),
                SecurityRequirement::new("session", Vec::<String>::new()),
            ]);
        }
        Access::Write | Access::Admin => {
            let scope = if access == Access::Write {
                "write (or admin)"
            } else {
                "admin"
            };
            responses.entry("401".to_owned()).or_insert_with(|| {
                problem("Tokens are configured and no valid bearer token was given")
            });
            responses
                .entry("403".to_owned())
                .or_insert_with(|| problem(&format!("The token lacks the {scope} scope for this")));
            operation.security = Some(vec![no_token(), bearer()]);
        }
    }
    responses
        .entry("431".to_owned())
        .or_insert_with(|| problem("The request headers are larger than the limit"));
    responses.entry("503".to_owned()).or_insert_with(|| {
        problem("Overloaded, database unavailable or timed out; see Retry-After")
    });
}
