//! Shared test harness: a fresh database per test (an SQLite file, or a database of its own on
//! PostgreSQL), requests through `app()` in-process, and a real TCP server when a test needs one.
#![allow(dead_code)]

pub mod binary;
pub mod chain_builder;
mod database;
pub mod random_history;
pub mod tools;

pub use database::{Backend, PostgresDatabase, TestDatabase};

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use gitops_status_server::store::Store;
use gitops_status_server::{AppState, Settings};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// Whether this run is CI's (`CI=true`, as `./test.sh` sets): a test that cannot run then fails
/// instead of saying that it did NOT run.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// One service over its own database.
pub struct TestApp {
    pub app: Router,
    pub store: Store,
    pub backend: Backend,
    pub database_url: String,
    pub dir: TempDir,
    /// Drops the PostgreSQL database after the store's fields are gone.
    postgres: Option<PostgresDatabase>,
}

impl TestApp {
    /// On a fresh SQLite file.
    pub async fn new() -> Self {
        Self::on(Backend::Sqlite).await
    }

    /// On a fresh SQLite file.
    pub async fn with_settings(settings: Settings) -> Self {
        Self::on_with_settings(Backend::Sqlite, settings).await
    }

    /// On a fresh database of `backend`.
    pub async fn on(backend: Backend) -> Self {
        Self::on_with_settings(backend, Settings::default()).await
    }

    pub async fn on_with_settings(backend: Backend, settings: Settings) -> Self {
        let database = TestDatabase::create(backend).await;
        Self::serve(database, settings).await
    }

    /// Serves `test.db` in `dir`, which may already hold a database.
    pub async fn in_dir(dir: TempDir, settings: Settings) -> Self {
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let database = TestDatabase {
            backend: Backend::Sqlite,
            url,
            dir,
            postgres: None,
        };
        Self::serve(database, settings).await
    }

    /// On a fresh database of `backend` that holds what `statements` store (run after the
    /// schema is created, before the service opens it).
    pub async fn on_history(backend: Backend, statements: &[String]) -> Self {
        let database = TestDatabase::create(backend).await;
        Store::connect(&database.url)
            .await
            .unwrap_or_else(|error| panic!("open store {}: {error}", database.url))
            .close()
            .await;
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        database.execute_all(&statements).await;
        Self::serve(database, Settings::default()).await
    }

    async fn serve(database: TestDatabase, settings: Settings) -> Self {
        let store = Store::connect(&database.url)
            .await
            .unwrap_or_else(|error| panic!("open store {}: {error}", database.url));
        let app = gitops_status_server::app(AppState::new(store.clone(), settings));
        Self {
            app,
            store,
            backend: database.backend,
            database_url: database.url,
            dir: database.dir,
            postgres: database.postgres,
        }
    }

    /// Runs raw SQL on the test's database behind the server's back (to tamper with it);
    /// returns the rows affected.
    pub async fn execute(&self, sql: &str) -> u64 {
        self.execute_all(&[sql]).await
    }

    /// Runs the statements in order on one connection, so temporary tables live across them.
    pub async fn execute_all(&self, statements: &[&str]) -> u64 {
        database::execute_all(self.backend, &self.database_url, statements).await
    }

    /// One value of a one-row, one-column query on the test's database.
    pub async fn query_i64(&self, sql: &str) -> i64 {
        database::query_i64(self.backend, &self.database_url, sql).await
    }

    pub async fn request(&self, request: Request<Body>) -> TestResponse {
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn post_json(&self, body: &Value) -> TestResponse {
        self.post_raw(Some("application/json"), body.to_string())
            .await
    }

    pub async fn post_raw(
        &self,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> TestResponse {
        let mut request = Request::post("/api/status");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        self.request(request.body(body.into()).unwrap()).await
    }

    /// Posts and insists on 200, returning the stored snapshot.
    pub async fn record(&self, body: &Value) -> Value {
        let response = self.post_json(body).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        response.json()
    }

    pub async fn get(&self, uri: &str) -> TestResponse {
        self.request(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    /// GET that must answer 200 with a JSON array.
    pub async fn get_rows(&self, uri: &str) -> Vec<Value> {
        let response = self.get(uri).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{uri}: {}",
            response.text()
        );
        match response.json() {
            Value::Array(rows) => rows,
            other => panic!("{uri}: expected an array, got {other}"),
        }
    }

    /// Every snapshot stored, oldest first, as `/history` reports it.
    pub async fn all_history(&self) -> Vec<Value> {
        self.get_rows("/history?order=asc&limit=10000").await
    }
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or_default()
    }

    /// Asserts an RFC 9457 problem with this status whose `errors` name exactly these fields
    /// (in any order), and returns the problem.
    pub fn assert_problem(&self, status: u16, fields: &[&str]) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert_eq!(self.content_type(), "application/problem+json");
        let problem = self.json();
        assert_eq!(problem["status"], status, "{problem}");
        for member in ["type", "title", "detail"] {
            assert!(problem[member].is_string(), "{member} missing: {problem}");
        }
        let mut named: Vec<&str> = problem["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|error| {
                        assert!(error["message"].is_string(), "{error}");
                        error["field"].as_str().expect("field")
                    })
                    .collect()
            })
            .unwrap_or_default();
        named.sort_unstable();
        let mut expected = fields.to_vec();
        expected.sort_unstable();
        assert_eq!(named, expected, "{problem}");
        problem
    }
}

/// RFC 3339 for `seconds` relative to now (negative: in the past), at whole seconds.
pub fn at_offset(seconds: i64) -> String {
    let at =
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::seconds(seconds);
    at.format(&Rfc3339).unwrap()
}

/// The server's rendering of an RFC 3339 time: UTC with three fraction digits.
pub fn rendered(rfc3339: &str) -> String {
    let at = OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap();
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.to_offset(time::UtcOffset::UTC).format(&format).unwrap()
}

/// Unix milliseconds of an RFC 3339 time, as the `_ms` fields carry it.
pub fn unix_millis(rfc3339: &str) -> i64 {
    let at = OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap();
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap()
}

/// A snapshot body in the seed's format.
pub fn snapshot(
    repo: &str,
    server: &str,
    sync_status: &str,
    files: &[&str],
    last_check: &str,
) -> Value {
    json!({
        "repo": repo,
        "server": server,
        "sync_status": sync_status,
        "drift_count": files.len(),
        "files": files.iter().map(|name| json!({ "name": name })).collect::<Vec<_>>(),
        "last_check": last_check,
    })
}

/// The service on a real TCP port, with a handle to shut it down gracefully.
pub struct TcpServer {
    pub address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TcpServer {
    pub async fn start(app: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(gitops_status_server::serve(
            listener,
            app,
            async {
                let _ = signal.await;
            },
            Duration::from_secs(10),
        ));
        Self {
            address,
            shutdown: Some(shutdown),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}
