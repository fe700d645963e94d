//! gitops-status-server: CI posts Ansible drift-check snapshots; Grafana, dashboards and auditors
//! read the latest status per target and the full history.

pub mod api;
pub mod auth;
pub mod chain;
pub mod config;
pub mod error;
pub mod evidence;
pub mod expiry;
pub mod flag_values;
pub mod model;
pub mod notify;
pub mod report;
pub mod retention;
pub mod rollups;
pub mod signer;
pub mod signing;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod timestamp;
pub mod web;

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Extensions, HeaderName, Method, Response, StatusCode};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tower_http::CompressionLevel;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

pub use api::{AppState, Rules, Settings};
use auth::{Access, Guard};
use error::{ApiError, Failure};
use telemetry::Telemetry;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP service over the given state: each route group with the layers its
/// [`api::Rules`] ask for, then what every request passes through.
pub fn app(state: AppState) -> Router {
    let settings = Arc::clone(&state.settings);
    let layers = GroupLayers {
        tokens: Arc::clone(&state.tokens),
        telemetry: state.telemetry.clone(),
        in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
        request_timeout: settings.request_timeout,
    };
    let mut router = Router::new();
    for group in api::groups() {
        let (routes, _) = group.routes.split_for_parts();
        router = router.merge(layers.apply(group.rules, routes));
    }
    router
        .merge(layers.apply(Rules::READ, web::router()))
        .merge(layers.apply(Rules::SIGN_IN, web::sign_in_router()))
        // An unknown path is a read: without a token it answers 401, not whether it exists.
        .merge(
            Router::new()
                .fallback(not_found)
                .layer(middleware::from_fn_with_state(
                    Guard::new(Arc::clone(&layers.tokens), Access::Read),
                    auth::guard,
                )),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .layer(middleware::from_fn(limit_header_size))
        .layer(CatchPanicLayer::custom(|panic: Box<dyn Any + Send>| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|message| (*message).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            ApiError::internal(format!("a handler panicked: {message}")).into_response()
        }))
        // gzip when the client accepts it; streamed exports stay streamed, chunk by chunk. At the
        // fastest level, since dashboards poll: /status.json at 10,000 targets (5 MB) becomes
        // 430 KB for about 10 ms more per answer here; the default level, 270 KB for about 50.
        .layer(CompressionLayer::new().quality(CompressionLevel::Fastest))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id,
                    )
                })
                .on_response(|response: &Response<_>, latency: Duration, _: &Span| {
                    log_answer(response.status(), response.extensions(), latency);
                })
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The layers one route group gets, innermost first: its latency histogram, its guard, load
/// shedding and the request timeout, each as its [`api::Rules`] say.
struct GroupLayers {
    tokens: Arc<auth::Tokens>,
    telemetry: Telemetry,
    in_flight: Arc<Semaphore>,
    request_timeout: Duration,
}

impl GroupLayers {
    fn apply(&self, rules: Rules, routes: Router<AppState>) -> Router<AppState> {
        let mut routes = routes.route_layer(middleware::from_fn_with_state(
            self.telemetry.clone(),
            record_latency,
        ));
        if rules.access != Access::Open {
            routes = routes.route_layer(middleware::from_fn_with_state(
                Guard::new(Arc::clone(&self.tokens), rules.access),
                auth::guard,
            ));
        }
        if rules.shed {
            routes = routes.route_layer(middleware::from_fn_with_state(
                Arc::clone(&self.in_flight),
                shed_load,
            ));
        }
        if rules.timed {
            routes = routes.route_layer(middleware::from_fn_with_state(
                self.request_timeout,
                enforce_request_timeout,
            ));
        }
        routes
    }
}

/// Logs every answer once: a failure with its cause or problem (see `error.rs`), any other answer
/// at debug.
fn log_answer(status: StatusCode, extensions: &Extensions, latency: Duration) {
    match extensions.get::<Failure>() {
        Some(failure) => failure.log(status.as_u16(), latency),
        None => {
            let (status, millis) = (status.as_u16(), latency.as_secs_f64() * 1000.0);
            if status >= 500 {
                tracing::error!(status, millis, "answered");
            } else if status >= 400 {
                tracing::info!(status, millis, "answered");
            } else {
                tracing::debug!(status, millis, "answered");
            }
        }
    }
}

/// The OpenAPI document generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = api::router().split_for_parts().1;
    api::document_guards(&mut document);
    model::times::document_millis_twins(&mut document);
    document
}

/// The OpenAPI document as pretty JSON, exactly as committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    let mut json = openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    json.push('\n');
    json
}

/// Serves `app` until `shutdown` completes, then stops accepting connections and lets in-flight
/// requests finish for at most `drain` before giving up on them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let draining = Arc::new(Notify::new());
    let signal = Arc::clone(&draining);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        signal.notify_one();
    });
    tokio::select! {
        result = server => result,
        () = async { draining.notified().await; tokio::time::sleep(drain).await } => {
            tracing::warn!(?drain, "in-flight requests did not finish in time; dropping them");
            Ok(())
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Largest total size of the request's header names and values. hyper refuses far larger header
/// sections on its own (without a problem body); this answers the merely oversized ones with 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

async fn limit_header_size(request: Request, next: Next) -> axum::response::Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if size > MAX_HEADER_BYTES {
        return ApiError::HeadersTooLarge.into_response();
    }
    next.run(request).await
}

/// Answers 503 with Retry-After at once when `max_in_flight` requests are already being served,
/// rather than queueing without bound (the probes' group is never shed: an overloaded server is
/// still alive, and restarting it would only lose its queue).
async fn shed_load(
    State(in_flight): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    match Arc::clone(&in_flight).try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::Unavailable("the server is overloaded; retry shortly".to_owned())
            .into_response(),
    }
}

async fn enforce_request_timeout(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Feeds the request-latency histogram, labelled by the matched route so that path parameters and
/// unknown paths cannot blow up the number of series. Streamed bodies (exports) count until their
/// headers are ready.
async fn record_latency(
    State(telemetry): State<Telemetry>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|route| route.as_str().to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(route) = route {
        telemetry.request_answered(
            &route,
            method.as_str(),
            response.status().as_u16(),
            started.elapsed(),
        );
    }
    response
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no resource at {method} {}", uri.path()))
}

/// axum adds the `Allow` header to this answer.
async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
    }
}
