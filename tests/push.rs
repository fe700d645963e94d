//! The Pushgateway-compatible push path (`PUT`/`POST /metrics/job/{job}/repo/{repo}/server/{server}`)
//! and `report import-pushgateway`: through the router on both databases, then with the clients
//! pipelines really use (Python's `prometheus_client`, the seed's `curl --data-binary`), and an
//! import from a real Pushgateway fed by real pushes.

mod common;

use std::io::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request};
use common::binary;
use common::tools;
use common::{Backend, TcpServer, TestApp, TestResponse};
use gitops_status_server::auth::Tokens;
use gitops_status_server::timestamp::Timestamp;
use gitops_status_server::{AppState, Settings};
use serde_json::{Value, json};

backend_tests! {
    a_put_or_post_records_a_snapshot_with_no_files_checked_when_received,
    a_bad_push_is_a_400_problem_naming_the_field_and_stores_nothing,
}

const WRITE_RSYSLOG: &str = "write-rsyslog-0123456789";
const READ: &str = "read-token-0123456789";

const TOKENS: &str = r#"
[[tokens]]
name = "ci-rsyslog"
token = "write-rsyslog-0123456789"
scopes = ["write"]
repos = ["rsyslog"]

[[tokens]]
name = "grafana"
token = "read-token-0123456789"
scopes = ["read"]
"#;

async fn push(
    app: &TestApp,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> TestResponse {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.request(request.body(body.into()).unwrap()).await
}

fn status_of(rows: &[Value]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|row| {
            let text = |name: &str| row[name].as_str().unwrap().to_owned();
            (text("repo"), text("server"), text("sync_status"))
        })
        .collect()
}

async fn a_put_or_post_records_a_snapshot_with_no_files_checked_when_received(backend: Backend) {
    let app = TestApp::on(backend).await;
    let before = Timestamp::now();
    // The seed's body, as curl --data-binary sends it (form content type and all).
    let seed = push(
        &app,
        Method::POST,
        "/metrics/job/gitops_rsyslog/repo/rsyslog/server/rsyslog-lab",
        &[("content-type", "application/x-www-form-urlencoded")],
        "gitops_sync_status{repo=\"rsyslog\",server=\"rsyslog-lab\"} 1\n",
    )
    .await;
    assert_eq!(seed.status, 200, "{}", seed.text());
    assert!(seed.body.is_empty(), "Pushgateway answers with no body");
    assert_eq!(seed.header("content-type"), None);

    // prometheus_client's shape: sorted labels, an extra one, @base64 for a value with `/`, a
    // base64 job, the text format's HELP and TYPE lines and another metric beside it.
    let body = "# HELP gitops_sync_status Drift.\n# TYPE gitops_sync_status gauge\n\
                gitops_sync_status 2.0\n# HELP x_seconds Ignored.\n# TYPE x_seconds gauge\n\
                x_seconds 12.5\n";
    let client = push(
        &app,
        Method::PUT,
        "/metrics/job@base64/bmlnaHRseS9kcmlmdA/instance/runner-7/repo/rsyslog/server@base64/cmFjay9sYWIgMg==",
        &[("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
    .await;
    assert_eq!(client.status, 200, "{}", client.text());

    let rows = app.get_rows("/status.json").await;
    assert_eq!(
        status_of(&rows),
        [
            ("rsyslog".into(), "rack/lab 2".into(), "ERROR".into()),
            ("rsyslog".into(), "rsyslog-lab".into(), "OUT_OF_SYNC".into()),
        ]
    );
    let after = Timestamp::now();
    for row in &rows {
        assert_eq!(row["files"], json!([]));
        assert_eq!(row["drift_count"], 0);
        assert_eq!(
            row["last_check"], row["received_at"],
            "checked when received"
        );
        let at = Timestamp::parse_rfc3339(row["last_check"].as_str().unwrap()).unwrap();
        assert!(before <= at && at <= after, "{row}");
    }
    // Each push is one snapshot in the audit trail, with its hash like any other.
    let history = app.all_history().await;
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|row| row["hash"].is_string()));
    assert_eq!(app.get("/api/verify").await.json()["ok"], true);
}

async fn a_bad_push_is_a_400_problem_naming_the_field_and_stores_nothing(backend: Backend) {
    let app = TestApp::on_with_settings(
        backend,
        Settings {
            body_limit: 4096,
            ..Settings::default()
        },
    )
    .await;
    let path = "/metrics/job/j/repo/rsyslog/server/lab";
    for (body, fields) in [
        ("", &["gitops_sync_status"][..]),
        (
            "other_metric 1\n# gitops_sync_status 1\n",
            &["gitops_sync_status"],
        ),
        ("gitops_sync_status 3\n", &["gitops_sync_status"]),
        ("gitops_sync_status 0.5\n", &["gitops_sync_status"]),
        ("gitops_sync_status one\n", &["gitops_sync_status"]),
        (
            "gitops_sync_status 1 1776767400000\n",
            &["gitops_sync_status"],
        ),
        ("gitops_sync_status{repo=\"x} 1\n", &["gitops_sync_status"]),
        (
            "gitops_sync_status{instance=\"a\"} 0\ngitops_sync_status{instance=\"b\"} 1\n",
            &["gitops_sync_status"],
        ),
    ] {
        let response = push(&app, Method::PUT, path, &[], body).await;
        let problem = response.assert_problem(400, fields);
        assert_eq!(problem["type"], "/problems/invalid-push", "{body:?}");
    }
    let not_utf8 = push(
        &app,
        Method::POST,
        path,
        &[],
        &b"gitops_sync_status \xff 1"[..],
    )
    .await;
    not_utf8.assert_problem(400, &["body"]);

    for (uri, fields) in [
        ("/metrics/job/j/repo/rsyslog", &["server"][..]),
        ("/metrics/job/j", &["repo", "server"]),
        ("/metrics/job/j/repo/rsyslog/server/lab/", &["path"]),
        (
            "/metrics/job/j/repo/rsyslog/server@base64/not+base64",
            &["server"],
        ),
        ("/metrics/job/j/repo@base64/=/server/lab", &["repo"]),
        ("/metrics/job/j/repo/a%09b/server/lab", &["repo"]),
        (
            "/metrics/job/j/repo/rsyslog/repo/nginx/server/lab",
            &["repo"],
        ),
        (
            "/metrics/job/j/__name__/x/repo/rsyslog/server/lab",
            &["path"],
        ),
    ] {
        let response = push(&app, Method::POST, uri, &[], "gitops_sync_status 1\n").await;
        response.assert_problem(400, fields);
    }
    // The path and the body are judged together.
    push(&app, Method::PUT, "/metrics/job/j/repo/rsyslog", &[], "x 1")
        .await
        .assert_problem(400, &["gitops_sync_status", "server"]);

    // client_golang pushes protobuf by default: refused by name, not misread as text.
    let protobuf = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; \
                    encoding=delimited";
    let refused = push(
        &app,
        Method::PUT,
        path,
        &[("content-type", protobuf)],
        "\x0a",
    )
    .await;
    let problem = refused.assert_problem(415, &[]);
    assert!(problem["detail"].as_str().unwrap().contains("text format"));
    push(
        &app,
        Method::PUT,
        path,
        &[("content-encoding", "snappy")],
        "x",
    )
    .await
    .assert_problem(415, &[]);
    push(
        &app,
        Method::PUT,
        path,
        &[("content-encoding", "gzip")],
        "not gzip",
    )
    .await
    .assert_problem(400, &["body"]);
    // The limit holds for the body as sent and as decompressed.
    let long = format!("gitops_sync_status 1\n{}", "# padding\n".repeat(500));
    push(&app, Method::PUT, path, &[], long.clone())
        .await
        .assert_problem(413, &[]);
    push(
        &app,
        Method::PUT,
        path,
        &[("content-encoding", "gzip")],
        gzip(&long),
    )
    .await
    .assert_problem(413, &[]);

    assert!(
        app.all_history().await.is_empty(),
        "a bad push stored something"
    );

    // A gzip'd push within the limit is read, as Pushgateway reads it.
    let gzipped = push(
        &app,
        Method::PUT,
        path,
        &[("content-encoding", "gzip")],
        gzip("gitops_sync_status 0\n"),
    )
    .await;
    assert_eq!(gzipped.status, 200, "{}", gzipped.text());
    assert_eq!(
        status_of(&app.get_rows("/status.json").await),
        [("rsyslog".into(), "lab".into(), "SYNCED".into())]
    );
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

/// The service with [`TOKENS`] configured.
async fn app_with_tokens() -> TestApp {
    let mut app = TestApp::new().await;
    app.app = gitops_status_server::app(
        AppState::new(app.store.clone(), Settings::default())
            .with_tokens(Tokens::parse(TOKENS).unwrap()),
    );
    app
}

#[tokio::test]
async fn a_push_needs_the_token_post_api_status_needs() {
    let app = app_with_tokens().await;
    let body = "gitops_sync_status 1\n";
    let to = |repo: &str| format!("/metrics/job/j/repo/{repo}/server/lab");
    let bearer = |token: &str| format!("Bearer {token}");

    push(&app, Method::PUT, &to("rsyslog"), &[], body)
        .await
        .assert_problem(401, &[]);
    let wrong = bearer("not-a-token");
    push(
        &app,
        Method::PUT,
        &to("rsyslog"),
        &[("authorization", &wrong)],
        body,
    )
    .await
    .assert_problem(401, &[]);
    let read = bearer(READ);
    push(
        &app,
        Method::POST,
        &to("rsyslog"),
        &[("authorization", &read)],
        body,
    )
    .await
    .assert_problem(403, &[]);
    let write = bearer(WRITE_RSYSLOG);
    let other_repo = push(
        &app,
        Method::PUT,
        &to("nginx"),
        &[("authorization", &write)],
        body,
    )
    .await
    .assert_problem(403, &[]);
    assert_eq!(
        other_repo["detail"],
        "token \"ci-rsyslog\" may not write repo \"nginx\""
    );
    // The same token may write its repo, however the repo is spelled in the path.
    let base64 = to("rsyslog").replace("repo/rsyslog", "repo@base64/cnN5c2xvZw");
    for uri in [to("rsyslog"), base64] {
        let response = push(&app, Method::PUT, &uri, &[("authorization", &write)], body).await;
        assert_eq!(response.status, 200, "{uri}: {}", response.text());
    }
    let history = app
        .request(
            Request::get("/history?order=asc")
                .header("authorization", &read)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(history.as_array().unwrap().len(), 2);
}

/// `DELETE` on the push path retires the target, answered 202 like Pushgateway (also for a
/// target that never reported); the target leaves `/status.json` and its next push revives it.
#[tokio::test]
async fn delete_retires_the_target_and_a_push_revives_it() {
    let app = TestApp::new().await;
    let path = "/metrics/job/j/repo/rsyslog/server/lab";
    let pushed = push(
        &app,
        Method::PUT,
        path,
        &[],
        Body::from("gitops_sync_status 1\n"),
    )
    .await;
    assert_eq!(pushed.status, 200);
    assert_eq!(status_of(&app.get_rows("/status.json").await).len(), 1);
    for _ in 0..2 {
        let deleted = push(&app, Method::DELETE, path, &[], Body::empty()).await;
        assert_eq!(deleted.status, 202, "{}", deleted.text());
    }
    assert!(app.get_rows("/status.json").await.is_empty());
    let targets = app.get_rows("/api/targets?include_retired=true").await;
    assert_eq!(targets.len(), 1);
    assert!(targets[0]["retired_at"].is_string(), "{targets:?}");
    let unknown = push(
        &app,
        Method::DELETE,
        "/metrics/job/j/repo/rsyslog/server/never",
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(unknown.status, 202);
    let pushed = push(
        &app,
        Method::PUT,
        path,
        &[],
        Body::from("gitops_sync_status 0\n"),
    )
    .await;
    assert_eq!(pushed.status, 200);
    assert_eq!(
        status_of(&app.get_rows("/status.json").await),
        [("rsyslog".into(), "lab".into(), "SYNCED".into())]
    );
}

/// Runs `command` to completion on a blocking thread, so the in-process server keeps serving.
async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The Python client's calls as a pipeline makes them, against `url` with `token` (none when
/// empty): prints one line per call, `ok` or the error.
const PROMETHEUS_CLIENT_SCRIPT: &str = r#"
import sys
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import delete_from_gateway, push_to_gateway, pushadd_to_gateway
from prometheus_client.exposition import default_handler

url, token = sys.argv[1], sys.argv[2]

def bearer(url, method, timeout, headers, data):
    if token:
        headers = headers + [("Authorization", "Bearer " + token)]
    return default_handler(url, method, timeout, headers, data)

def registry(value):
    registry = CollectorRegistry()
    if value is not None:
        Gauge("gitops_sync_status", "0 SYNCED, 1 OUT_OF_SYNC, 2 ERROR", registry=registry).set(value)
    Gauge("gitops_check_duration_seconds", "Ignored", registry=registry).set(12.5)
    return registry

calls = [
    ("push", lambda: push_to_gateway(
        url, job="gitops_rsyslog", registry=registry(1),
        grouping_key={"repo": "rsyslog", "server": "rsyslog-lab"}, handler=bearer)),
    # A server name with / and a space goes as server@base64; instance is accepted and ignored.
    ("pushadd", lambda: pushadd_to_gateway(
        url, job="gitops_rsyslog", registry=registry(2),
        grouping_key={"repo": "rsyslog", "server": "rack/lab 2", "instance": "runner-7"},
        handler=bearer)),
    ("gzip", lambda: push_to_gateway(
        url, job="nightly/drift", registry=registry(0),
        grouping_key={"repo": "nginx", "server": "web-1"}, handler=bearer, compression="gzip")),
    ("no-status", lambda: push_to_gateway(
        url, job="j", registry=registry(None),
        grouping_key={"repo": "nginx", "server": "web-1"}, handler=bearer)),
    ("delete", lambda: delete_from_gateway(
        url, job="gitops_rsyslog", grouping_key={"repo": "rsyslog", "server": "rsyslog-lab"},
        handler=bearer)),
]
for name, call in calls:
    try:
        call()
        print(name, "ok")
    except Exception as error:
        print(name, error)
"#;

/// The Python client with a grouping key of repo and server, as a pipeline would push to
/// Pushgateway.
fn prometheus_client(test: &str, url: &str, token: &str) -> Option<Command> {
    let python = tools::PROMETHEUS_CLIENT_PYTHON.require(test)?;
    let probe = Command::new(&python)
        .args(["-c", "import prometheus_client"])
        .output()
        .unwrap();
    if !probe.status.success() {
        tools::PROMETHEUS_CLIENT_PYTHON.missing(test, "it has no prometheus_client");
        return None;
    }
    let mut command = Command::new(python);
    command.args(["-c", PROMETHEUS_CLIENT_SCRIPT, url, token]);
    Some(command)
}

/// What the script printed, one entry per line.
fn lines(output: &Output) -> Vec<String> {
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout).lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_client_push_and_pushadd_are_recorded() {
    let test = "prometheus_client_push_and_pushadd_are_recorded";
    let app = app_with_tokens().await;
    let server = TcpServer::start(app.app.clone()).await;
    let Some(command) = prometheus_client(test, &server.url(""), WRITE_RSYSLOG) else {
        return;
    };
    // The token may write rsyslog only: nginx is refused, as POST /api/status would refuse it.
    // A body without gitops_sync_status is refused first; DELETE retires rsyslog-lab.
    assert_eq!(
        lines(&run(command).await),
        [
            "push ok",
            "pushadd ok",
            "gzip HTTP Error 403: Forbidden",
            "no-status HTTP Error 400: Bad Request",
            "delete ok",
        ]
    );
    let Some(command) = prometheus_client(test, &server.url(""), "") else {
        return;
    };
    assert_eq!(
        lines(&run(command).await)[..4],
        [
            "push HTTP Error 401: Unauthorized",
            "pushadd HTTP Error 401: Unauthorized",
            "gzip HTTP Error 401: Unauthorized",
            "no-status HTTP Error 401: Unauthorized",
        ]
    );
    server.stop().await;

    // Open writes: every push with gitops_sync_status lands, in the Python client's encodings.
    let app = TestApp::new().await;
    let server = TcpServer::start(app.app.clone()).await;
    let Some(command) = prometheus_client(test, &server.url(""), "") else {
        return;
    };
    assert_eq!(
        lines(&run(command).await),
        [
            "push ok",
            "pushadd ok",
            "gzip ok",
            "no-status HTTP Error 400: Bad Request",
            "delete ok",
        ]
    );
    // The delete retired rsyslog-lab: it left the view.
    assert_eq!(
        status_of(&app.get_rows("/status.json").await),
        [
            ("nginx".into(), "web-1".into(), "SYNCED".into()),
            ("rsyslog".into(), "rack/lab 2".into(), "ERROR".into()),
        ]
    );
    server.stop().await;
}

/// The seed's pipeline step, only the URL changed (and a token added).
const SEED_STEP: &str = r#"printf 'gitops_sync_status{repo="rsyslog",server="rsyslog-lab"} %s\n' "$STATUS" | \
curl -sS -w '\n%{http_code}\n' -H "Authorization: Bearer $TOKEN" --data-binary @- \
  "$PUSHGATEWAY_URL/metrics/job/gitops_rsyslog/repo/rsyslog/server/rsyslog-lab""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scripts_curl_data_binary_push_is_recorded() {
    let test = "the_seed_scripts_curl_data_binary_push_is_recorded";
    let Some(curl) = tools::CURL.require(test) else {
        return;
    };
    let app = app_with_tokens().await;
    let server = TcpServer::start(app.app.clone()).await;
    let step = |status: &str| {
        let mut command = Command::new("sh");
        let path = std::env::join_paths(
            [curl.parent().unwrap().to_path_buf()]
                .into_iter()
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
        )
        .unwrap();
        command
            .args(["-c", SEED_STEP])
            .env("PATH", path)
            .env("STATUS", status)
            .env("TOKEN", WRITE_RSYSLOG)
            .env("PUSHGATEWAY_URL", server.url(""));
        command
    };
    let output = run(step("1")).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "\n200\n",
        "an empty 200, as Pushgateway"
    );

    let output = run(step("7")).await;
    let stdout = text(&output.stdout);
    let (problem, status) = stdout.trim_end().rsplit_once('\n').unwrap();
    assert_eq!(status, "400");
    let problem: Value = serde_json::from_str(problem).unwrap();
    assert_eq!(
        problem["errors"],
        json!([{
            "field": "gitops_sync_status",
            "message": "line 1: must be 0 (SYNCED), 1 (OUT_OF_SYNC) or 2 (ERROR), got 7"
        }])
    );
    server.stop().await;
    let history = app
        .request(
            Request::get("/history")
                .header("authorization", format!("Bearer {READ}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(
        status_of(history.as_array().unwrap()),
        [("rsyslog".into(), "rsyslog-lab".into(), "OUT_OF_SYNC".into())]
    );
}

/// A real Pushgateway on a free port, in memory; killed when dropped.
struct Pushgateway {
    child: Child,
    url: String,
}

impl Pushgateway {
    fn start(executable: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(executable)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // Debian's default keeps the metrics in /var/lib; these stay in memory.
            .arg("--persistence.file=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pushgateway = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Pushgateway did not listen in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pushgateway
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn import_command(pushgateway: &str, server: &str, token: &str) -> Command {
    let dir = std::env::temp_dir();
    let mut command = binary::command(&dir, &[]);
    command
        .args(["report", "import-pushgateway", pushgateway])
        .env("GITOPS_STATUS_SERVER_URL", server)
        .env("GITOPS_STATUS_RETRIES", "0");
    if !token.is_empty() {
        command.env("GITOPS_STATUS_TOKEN", token);
    }
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_pushgateway_posts_the_state_a_real_pushgateway_holds() {
    let test = "import_pushgateway_posts_the_state_a_real_pushgateway_holds";
    let Some(executable) = tools::PUSHGATEWAY.require(test) else {
        return;
    };
    let Some(curl) = tools::CURL.require(test) else {
        return;
    };
    let pushgateway = Pushgateway::start(&executable);
    // Fed by the Python client (rsyslog's three groups; its DELETE works there and removes one),
    // and by curl in the seed's old form: the target only in the body's labels, an unrelated
    // group beside it.
    let Some(command) = prometheus_client(test, &pushgateway.url, "") else {
        return;
    };
    assert_eq!(
        lines(&run(command).await),
        [
            "push ok",
            "pushadd ok",
            "gzip ok",
            "no-status ok",
            "delete ok"
        ],
        "Pushgateway takes every call"
    );
    // Pushgateway wants one type and help per metric name across its groups, so this one
    // declares what the Python client's do.
    let seed_body = "# HELP gitops_sync_status 0 SYNCED, 1 OUT_OF_SYNC, 2 ERROR\n\
                     # TYPE gitops_sync_status gauge\n\
                     gitops_sync_status{repo=\"nginx\",server=\"web-2\"} 1\n";
    let unrelated = "backup_last_success_timestamp_seconds 1.7e9\n";
    for (path, body) in [
        ("/metrics/job/gitops_nginx", seed_body),
        ("/metrics/job/backup/instance/db-1", unrelated),
    ] {
        let mut command = Command::new(&curl);
        command
            .args(["-sS", "--fail", "--data-binary", body])
            .arg(format!("{}{path}", pushgateway.url));
        let output = run(command).await;
        assert!(output.status.success(), "{}", text(&output.stderr));
    }

    let app = app_with_tokens().await;
    let server = TcpServer::start(app.app.clone()).await;
    let started = Timestamp::now();
    let output = run(import_command(
        &pushgateway.url,
        &server.url(""),
        WRITE_RSYSLOG,
    ))
    .await;
    let stderr = text(&output.stderr);
    // The rsyslog token may not write nginx: those are refused by name, the others recorded.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nginx/web-1: error: rejected with HTTP 403"),
        "{stderr}"
    );
    assert!(stderr.contains("rsyslog/rack/lab 2: ERROR of "), "{stderr}");

    // With a token for every repo, every target is recorded, and each only once however often
    // the import runs.
    let mut app = app;
    app.app = gitops_status_server::app(AppState::new(app.store.clone(), Settings::default()));
    server.stop().await;
    let server = TcpServer::start(app.app.clone()).await;
    for round in 0..2 {
        let output = run(import_command(&pushgateway.url, &server.url(""), "")).await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "round {round}: {stderr}");
        // rack/lab 2, nginx/web-1 twice (one without the metric), the seed's group, backup.
        assert!(stderr.contains("5 group(s); 3 target(s)"), "{stderr}");
        let printed: Vec<Value> = text(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(printed.len(), 3, "one snapshot printed per target");
        let replays = stderr.matches("already imported before").count();
        assert_eq!(replays, [1, 3][round], "round {round}: {stderr}");
    }
    let rows = app.get_rows("/status.json").await;
    assert_eq!(
        status_of(&rows),
        [
            ("nginx".into(), "web-1".into(), "SYNCED".into()),
            ("nginx".into(), "web-2".into(), "OUT_OF_SYNC".into()),
            ("rsyslog".into(), "rack/lab 2".into(), "ERROR".into()),
        ]
    );
    let now = Timestamp::now();
    for row in &rows {
        let at = Timestamp::parse_rfc3339(row["last_check"].as_str().unwrap()).unwrap();
        assert!(
            at <= started,
            "checked when pushed, before the import: {row}"
        );
        assert!(now.plus_millis(-120_000) < at, "{row}");
        assert!(
            row["message"]
                .as_str()
                .unwrap()
                .starts_with("imported from Pushgateway (job "),
            "{row}"
        );
    }
    assert_eq!(app.all_history().await.len(), 3, "each target once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_pushgateway_says_why_when_there_is_nothing_to_read() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let output = run(import_command(&url, "http://127.0.0.1:9", "")).await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains(&format!("error: cannot read {url}/api/v1/metrics")),
        "{}",
        text(&output.stderr)
    );

    let mut command = binary::command(&std::env::temp_dir(), &[]);
    command.args(["report", "import-pushgateway", "pushgateway:9091"]);
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));

    // The import is not a drift check: report's own flags do not apply to it.
    let mut command = binary::command(&std::env::temp_dir(), &[]);
    command.args([
        "report",
        "--repo",
        "x",
        "import-pushgateway",
        "http://pg:9091",
    ]);
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
}
