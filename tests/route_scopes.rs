//! Which access every route needs is decided by its route group. This walks every operation of the
//! generated OpenAPI document and every page, and checks the scope each needs: 401 without a
//! token, 403 with a token that lacks the scope, success with the right one. A route added without
//! a decision in [`DECISIONS`] fails here.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use axum::middleware;
use axum::routing::post;
use common::{TestApp, TestResponse, at_offset, snapshot};
use gitops_status_server::auth::{self, Access, Admin, Guard, Tokens};
use gitops_status_server::timestamp::Timestamp;
use gitops_status_server::{AppState, Settings};
use serde_json::Value;
use tower::ServiceExt;

const READ: &str = "read-token-0123456789";
const WRITE: &str = "write-rsyslog-0123456789";
const ADMIN: &str = "admin-token-0123456789";

const TOKENS: &str = r#"
[[tokens]]
name = "grafana"
token = "read-token-0123456789"
scopes = ["read"]

[[tokens]]
name = "ci-rsyslog"
token = "write-rsyslog-0123456789"
scopes = ["write"]
repos = ["rsyslog"]

[[tokens]]
name = "ops"
token = "admin-token-0123456789"
scopes = ["admin"]
repos = ["x"]
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Open,
    Read,
    Write,
    Admin,
}

/// One route's decision, and a request to it that succeeds with the right token.
struct Decision {
    method: Method,
    /// The path as the OpenAPI document spells it, or the page's path.
    path: &'static str,
    needs: Needs,
    /// The URI to call (with the query the route needs to succeed).
    uri: &'static str,
    /// Whether the OpenAPI document lists the route.
    documented: bool,
}

const fn decision(
    method: Method,
    path: &'static str,
    needs: Needs,
    uri: &'static str,
    documented: bool,
) -> Decision {
    Decision {
        method,
        path,
        needs,
        uri,
        documented,
    }
}

/// Every route and the access it needs. Add each new route here, after putting it in a group.
static DECISIONS: &[Decision] = &[
    decision(Method::GET, "/healthz", Needs::Open, "/healthz", true),
    decision(Method::GET, "/readyz", Needs::Open, "/readyz", true),
    decision(
        Method::POST,
        "/api/status",
        Needs::Write,
        "/api/status",
        true,
    ),
    decision(
        Method::PUT,
        "/metrics/job/{job}/repo/{repo}/server/{server}",
        Needs::Write,
        "/metrics/job/ci/repo/rsyslog/server/pushed",
        true,
    ),
    decision(
        Method::POST,
        "/metrics/job/{job}/repo/{repo}/server/{server}",
        Needs::Write,
        "/metrics/job@base64/Y2k/repo/rsyslog/server@base64/cHVzaGVk",
        true,
    ),
    decision(
        Method::GET,
        "/status.json",
        Needs::Read,
        "/status.json",
        true,
    ),
    decision(Method::GET, "/history", Needs::Read, "/history", true),
    decision(
        Method::GET,
        "/api/episodes",
        Needs::Read,
        "/api/episodes",
        true,
    ),
    decision(Method::GET, "/api/stats", Needs::Read, "/api/stats", true),
    decision(Method::GET, "/api/verify", Needs::Read, "/api/verify", true),
    // follow=false: the stream ends once the stored events are sent, so the body can be read.
    decision(
        Method::GET,
        "/api/events",
        Needs::Read,
        "/api/events?follow=false",
        true,
    ),
    decision(
        Method::GET,
        "/api/checkpoints",
        Needs::Read,
        "/api/checkpoints",
        true,
    ),
    decision(
        Method::GET,
        "/api/chain/events",
        Needs::Read,
        "/api/chain/events?repo=rsyslog",
        true,
    ),
    decision(
        Method::GET,
        "/api/chain/heads",
        Needs::Read,
        "/api/chain/heads",
        true,
    ),
    decision(
        Method::GET,
        "/api/evidence",
        Needs::Read,
        "/api/evidence?repo=rsyslog",
        true,
    ),
    decision(
        Method::GET,
        "/openapi.json",
        Needs::Read,
        "/openapi.json",
        true,
    ),
    decision(Method::GET, "/metrics", Needs::Read, "/metrics", true),
    decision(
        Method::GET,
        "/badge.svg",
        Needs::Read,
        "/badge.svg?repo=rsyslog&server=lab",
        true,
    ),
    decision(
        Method::DELETE,
        "/metrics/job/{job}/repo/{repo}/server/{server}",
        Needs::Write,
        "/metrics/job/ci/repo/rsyslog/server/gone",
        true,
    ),
    // The lifecycle, in an order where each call can succeed: `seed` reported rsyslog/lab
    // OUT_OF_SYNC (id 1) and acknowledged it (id 2), and made silence 3.
    decision(Method::POST, "/api/acks", Needs::Write, "/api/acks", true),
    decision(Method::GET, "/api/acks", Needs::Read, "/api/acks", true),
    decision(
        Method::GET,
        "/api/acks/{id}",
        Needs::Read,
        "/api/acks/2",
        true,
    ),
    decision(
        Method::DELETE,
        "/api/acks/{id}",
        Needs::Write,
        "/api/acks/2",
        true,
    ),
    decision(
        Method::POST,
        "/api/silences",
        Needs::Admin,
        "/api/silences",
        true,
    ),
    decision(
        Method::GET,
        "/api/silences",
        Needs::Read,
        "/api/silences",
        true,
    ),
    decision(
        Method::GET,
        "/api/notifications",
        Needs::Read,
        "/api/notifications",
        true,
    ),
    decision(
        Method::GET,
        "/api/silences/{id}",
        Needs::Read,
        "/api/silences/3",
        true,
    ),
    decision(
        Method::DELETE,
        "/api/silences/{id}",
        Needs::Admin,
        "/api/silences/3",
        true,
    ),
    decision(
        Method::GET,
        "/api/targets",
        Needs::Read,
        "/api/targets",
        true,
    ),
    decision(Method::GET, "/", Needs::Read, "/", false),
    decision(
        Method::GET,
        "/target",
        Needs::Read,
        "/target?repo=rsyslog&server=lab",
        false,
    ),
    decision(Method::GET, "/docs/", Needs::Read, "/docs/", false),
    decision(Method::GET, "/login", Needs::Open, "/login", false),
    decision(Method::POST, "/login", Needs::Open, "/login", false),
    decision(Method::POST, "/logout", Needs::Open, "/logout", false),
    decision(
        Method::GET,
        "/favicon.svg",
        Needs::Read,
        "/favicon.svg",
        false,
    ),
    decision(
        Method::GET,
        "/favicon.ico",
        Needs::Read,
        "/favicon.ico",
        false,
    ),
    // Last: it takes rsyslog/lab out of the pages.
    decision(
        Method::DELETE,
        "/api/targets/{repo}/{server}",
        Needs::Write,
        "/api/targets/rsyslog/lab",
        true,
    ),
];

async fn app() -> TestApp {
    let mut app = TestApp::new().await;
    app.app = gitops_status_server::app(
        AppState::new(app.store.clone(), Settings::default())
            .with_tokens(Tokens::parse(TOKENS).unwrap()),
    );
    app
}

enum Credential<'a> {
    None,
    Bearer(&'a str),
    Cookie(&'a str),
    Browser,
}

async fn call(app: &TestApp, decision: &Decision, credential: Credential<'_>) -> TestResponse {
    let mut request = Request::builder()
        .method(decision.method.clone())
        .uri(decision.uri);
    request = match credential {
        Credential::None => request,
        Credential::Bearer(token) => request.header("authorization", format!("Bearer {token}")),
        Credential::Cookie(token) => {
            request.header("cookie", format!("{}={token}", auth::SESSION_COOKIE))
        }
        Credential::Browser => request.header("accept", "text/html,*/*;q=0.8"),
    };
    let until = Timestamp::now().plus_millis(86_400_000);
    let body = if decision.method == Method::DELETE {
        Body::empty()
    } else if decision.path == "/api/acks" && decision.method == Method::POST {
        request = request.header("content-type", "application/json");
        Body::from(
            serde_json::json!({"repo": "rsyslog", "server": "lab", "reason": "hotfix",
                               "until": until.to_string()})
            .to_string(),
        )
    } else if decision.path == "/api/silences" && decision.method == Method::POST {
        request = request.header("content-type", "application/json");
        Body::from(
            serde_json::json!({"ends_at": until.to_string(), "reason": "maintenance"}).to_string(),
        )
    } else if decision.path.starts_with("/metrics/job/") {
        request = request.header("content-type", "text/plain; version=0.0.4");
        Body::from("gitops_sync_status 0\n")
    } else if decision.needs == Needs::Write {
        request = request.header("content-type", "application/json");
        let body = snapshot("rsyslog", "lab", "SYNCED", &[], "2026-01-02T03:04:05Z");
        Body::from(body.to_string())
    } else if decision.method == Method::POST && decision.path == "/login" {
        request = request.header("content-type", "application/x-www-form-urlencoded");
        Body::from(format!("token={READ}"))
    } else {
        Body::empty()
    };
    app.request(request.body(body).unwrap()).await
}

fn assert_success(response: &TestResponse, what: &str) {
    assert!(
        response.status.is_success() || response.status.is_redirection(),
        "{what}: {} {}",
        response.status,
        response.text()
    );
}

/// Every (method, path) of the generated document.
fn documented_operations() -> Vec<(Method, String, Value)> {
    let document: Value = serde_json::from_str(&gitops_status_server::openapi_json()).unwrap();
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            operations.push((method, path.clone(), operation.clone()));
        }
    }
    operations
}

#[test]
fn every_documented_operation_has_a_decision_and_documents_it() {
    let operations = documented_operations();
    for (method, path, operation) in &operations {
        let decision = DECISIONS
            .iter()
            .find(|decision| decision.method == method && decision.path == path)
            .unwrap_or_else(|| {
                panic!(
                    "no access decided for {method} {path}: put the route in a group \
                     (api::groups) and add its decision to DECISIONS in tests/route_scopes.rs"
                )
            });
        let responses = operation["responses"].as_object().unwrap();
        let security = operation["security"].to_string();
        match decision.needs {
            Needs::Open => {
                assert!(!responses.contains_key("401"), "{method} {path}");
                assert!(operation.get("security").is_none(), "{method} {path}");
            }
            Needs::Read => {
                assert!(responses.contains_key("401"), "{method} {path}");
                assert!(security.contains("bearer"), "{method} {path}");
                assert!(security.contains("session"), "{method} {path}");
            }
            Needs::Write | Needs::Admin => {
                assert!(responses.contains_key("401"), "{method} {path}");
                assert!(responses.contains_key("403"), "{method} {path}");
                assert!(security.contains("bearer"), "{method} {path}");
                assert!(
                    !security.contains("session"),
                    "{method} {path}: the cookie never serves writes"
                );
            }
        }
    }
    for decision in DECISIONS.iter().filter(|decision| decision.documented) {
        assert!(
            operations
                .iter()
                .any(|(method, path, _)| method == decision.method && path == decision.path),
            "{} {} is in DECISIONS but no longer documented",
            decision.method,
            decision.path
        );
    }
}

#[tokio::test]
async fn every_route_needs_the_scope_its_group_decides() {
    let app = app().await;
    seed(&app).await;
    for decision in DECISIONS {
        let what = format!("{} {}", decision.method, decision.uri);
        match decision.needs {
            Needs::Open => {
                assert_success(&call(&app, decision, Credential::None).await, &what);
                assert_success(
                    &call(&app, decision, Credential::Bearer("nope")).await,
                    &what,
                );
            }
            Needs::Read => {
                call(&app, decision, Credential::None)
                    .await
                    .assert_problem(401, &[]);
                call(&app, decision, Credential::Bearer("nope"))
                    .await
                    .assert_problem(401, &[]);
                call(&app, decision, Credential::Cookie("nope"))
                    .await
                    .assert_problem(401, &[]);
                for token in [READ, WRITE, ADMIN] {
                    let response = call(&app, decision, Credential::Bearer(token)).await;
                    assert_success(&response, &format!("{what} with {token}"));
                }
                let response = call(&app, decision, Credential::Cookie(READ)).await;
                assert_success(&response, &format!("{what} with the sign-in cookie"));
                let browser = call(&app, decision, Credential::Browser).await;
                assert_eq!(browser.status.as_u16(), 303, "{what}");
                let back = form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", decision.uri)
                    .finish();
                assert_eq!(
                    browser.header("location"),
                    Some(format!("/login?{back}").as_str())
                );
            }
            Needs::Write => {
                call(&app, decision, Credential::None)
                    .await
                    .assert_problem(401, &[]);
                call(&app, decision, Credential::Bearer("nope"))
                    .await
                    .assert_problem(401, &[]);
                call(&app, decision, Credential::Bearer(READ))
                    .await
                    .assert_problem(403, &[]);
                // Even a cookie that holds a write token: cookies are what CSRF rides on.
                call(&app, decision, Credential::Cookie(WRITE))
                    .await
                    .assert_problem(401, &[]);
                call(&app, decision, Credential::Browser)
                    .await
                    .assert_problem(401, &[]);
                for token in [WRITE, ADMIN] {
                    let response = call(&app, decision, Credential::Bearer(token)).await;
                    assert_success(&response, &format!("{what} with {token}"));
                }
            }
            Needs::Admin => {
                call(&app, decision, Credential::None)
                    .await
                    .assert_problem(401, &[]);
                for token in [READ, WRITE] {
                    call(&app, decision, Credential::Bearer(token))
                        .await
                        .assert_problem(403, &[]);
                }
                call(&app, decision, Credential::Cookie(ADMIN))
                    .await
                    .assert_problem(401, &[]);
                let response = call(&app, decision, Credential::Bearer(ADMIN)).await;
                assert_success(&response, &format!("{what} with the admin token"));
            }
        }
    }
}

/// What the lifecycle's decisions act on: rsyslog/lab drifted now (id 1), acknowledged (id 2),
/// and silence 3.
async fn seed(app: &TestApp) {
    let until = Timestamp::now().plus_millis(86_400_000).to_string();
    let calls = [
        (
            "/api/status",
            snapshot("rsyslog", "lab", "OUT_OF_SYNC", &["a.conf"], &at_offset(-1)),
        ),
        (
            "/api/acks",
            serde_json::json!({"repo": "rsyslog", "server": "lab", "reason": "r", "until": until}),
        ),
        (
            "/api/silences",
            serde_json::json!({"ends_at": until, "reason": "maintenance"}),
        ),
    ];
    for (path, body) in calls {
        let request = Request::post(path)
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = app.request(request).await;
        assert_success(&response, path);
    }
}

#[tokio::test]
async fn an_admin_token_writes_every_repo_whatever_its_repos_and_a_writer_only_its_own() {
    let app = app().await;
    let post = |token: &'static str, repo: &'static str| {
        let app = &app;
        async move {
            let body = snapshot(repo, "lab", "SYNCED", &[], &at_offset(-60));
            let request = Request::post("/api/status")
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            app.request(request).await
        }
    };
    assert_eq!(post(ADMIN, "nginx").await.status, 200);
    assert_eq!(post(ADMIN, "x").await.status, 200);
    let refused = post(WRITE, "nginx").await.assert_problem(403, &[]);
    assert_eq!(
        refused["detail"],
        "token \"ci-rsyslog\" may not write repo \"nginx\""
    );
}

/// The admin guard and its extractor, on a route of the shape silences will have.
#[tokio::test]
async fn the_admin_guard_admits_only_admins_and_its_extractor_fails_closed_elsewhere() {
    let tokens = std::sync::Arc::new(Tokens::parse(TOKENS).unwrap());
    let handler = post(|admin: Admin| async move { admin.caller().name().to_owned() });
    let guarded: Router = Router::new()
        .route("/admin-only", handler.clone())
        .route_layer(middleware::from_fn_with_state(
            Guard::new(tokens.clone(), Access::Admin),
            auth::guard,
        ));
    let unguarded: Router =
        Router::new()
            .route("/admin-only", handler)
            .route_layer(middleware::from_fn_with_state(
                Guard::new(tokens, Access::Write),
                auth::guard,
            ));
    let status = |router: &Router, token: Option<&str>| {
        let mut request = Request::post("/admin-only");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let call = router.clone().oneshot(request.body(Body::empty()).unwrap());
        async move { call.await.unwrap().status().as_u16() }
    };
    assert_eq!(status(&guarded, None).await, 401);
    assert_eq!(status(&guarded, Some(READ)).await, 403);
    assert_eq!(status(&guarded, Some(WRITE)).await, 403);
    assert_eq!(status(&guarded, Some(ADMIN)).await, 200);
    assert_eq!(
        status(&unguarded, Some(WRITE)).await,
        500,
        "an Admin handler behind a lesser guard must not run"
    );
}
