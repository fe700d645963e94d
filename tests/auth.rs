//! Bearer tokens: 401/403 through the router, the read scope, and the binary's handling of the
//! tokens file: a bad one stops it, and no token ever reaches its log.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use common::binary::{BINARY, Binary};
use common::{TestApp, TestResponse, at_offset, snapshot};
use gitops_status_server::auth::Tokens;
use gitops_status_server::{AppState, Settings};
use serde_json::Value;

const TOKENS: &str = r#"
[[tokens]]
name = "ci-rsyslog"
token = "write-rsyslog-0123"
scopes = ["write"]
repos = ["rsyslog", "rsyslog-*"]

[[tokens]]
name = "grafana"
# sha256("read-grafana-4567")
sha256 = "%GRAFANA%"
scopes = ["read"]
"#;

fn tokens_file() -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(b"read-grafana-4567");
    TOKENS.replace("%GRAFANA%", &hex::encode(digest))
}

async fn app_with(tokens: Tokens) -> TestApp {
    let mut app = TestApp::new().await;
    app.app = gitops_status_server::app(
        AppState::new(app.store.clone(), Settings::default()).with_tokens(tokens),
    );
    app
}

async fn call(
    app: &TestApp,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> TestResponse {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    app.request(request.body(body).unwrap()).await
}

#[tokio::test]
async fn writes_need_a_token_for_the_repo() {
    let app = app_with(Tokens::parse(&tokens_file()).unwrap()).await;
    let rsyslog = snapshot("rsyslog", "lab", "SYNCED", &[], &at_offset(-60));
    let nginx = snapshot("nginx", "web", "SYNCED", &[], &at_offset(-60));
    let repo_only = serde_json::json!({"repo": "nginx"});
    let post = |token, body| call(&app, Method::POST, "/api/status", token, Some(body));

    let missing = post(None, &rsyslog).await;
    missing.assert_problem(401, &[]);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"gitops-status-server\"")
    );
    post(Some("write-rsyslog-0124"), &rsyslog)
        .await
        .assert_problem(401, &[]);
    post(Some("read-grafana-4567"), &rsyslog)
        .await
        .assert_problem(403, &[]);
    post(Some("write-rsyslog-0123"), &nginx)
        .await
        .assert_problem(403, &[]);
    // Validation comes before the per-repo decision: the repo is not known until then.
    post(Some("write-rsyslog-0123"), &repo_only)
        .await
        .assert_problem(422, &["server", "sync_status"]);
    assert_eq!(post(Some("write-rsyslog-0123"), &rsyslog).await.status, 200);
    let lab = snapshot("rsyslog-lab", "lab", "SYNCED", &[], &at_offset(-60));
    assert_eq!(post(Some("write-rsyslog-0123"), &lab).await.status, 200);

    let rows = call(
        &app,
        Method::GET,
        "/history",
        Some("read-grafana-4567"),
        None,
    )
    .await;
    assert_eq!(rows.status, 200);
    let rows = rows.json();
    let repos: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["repo"].as_str().unwrap())
        .collect();
    assert_eq!(
        repos,
        ["rsyslog-lab", "rsyslog"],
        "only the accepted writes are stored"
    );
}

#[tokio::test]
async fn a_read_scope_closes_every_read_but_the_probes() {
    let app = app_with(Tokens::parse(&tokens_file()).unwrap()).await;
    for path in [
        "/status.json",
        "/history",
        "/api/stats",
        "/api/verify",
        "/metrics",
        "/badge.svg?repo=a&server=b",
        "/",
        "/openapi.json",
        "/docs/",
        "/no-such-page",
    ] {
        call(&app, Method::GET, path, None, None)
            .await
            .assert_problem(401, &[]);
        call(&app, Method::GET, path, Some("nope"), None)
            .await
            .assert_problem(401, &[]);
        for token in ["read-grafana-4567", "write-rsyslog-0123"] {
            let status = call(&app, Method::GET, path, Some(token), None)
                .await
                .status;
            assert_ne!(status.as_u16(), 401, "{path} with {token}");
            assert_ne!(status.as_u16(), 403, "{path} with {token}");
        }
    }
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(call(&app, Method::GET, probe, None, None).await.status, 200);
    }
}

#[tokio::test]
async fn without_a_read_scope_reads_stay_open_and_without_tokens_writes_do() {
    let app = app_with(Tokens::none().with_write_token("only-writes")).await;
    assert_eq!(
        call(&app, Method::GET, "/status.json", None, None)
            .await
            .status,
        200
    );
    assert_eq!(
        call(&app, Method::GET, "/metrics", None, None).await.status,
        200
    );
    let body = snapshot("any", "host", "SYNCED", &[], &at_offset(-60));
    call(&app, Method::POST, "/api/status", None, Some(&body))
        .await
        .assert_problem(401, &[]);
    assert_eq!(
        call(
            &app,
            Method::POST,
            "/api/status",
            Some("only-writes"),
            Some(&body)
        )
        .await
        .status,
        200
    );

    let open = TestApp::new().await;
    assert_eq!(open.post_json(&body).await.status, 200);
}

#[test]
fn a_bad_tokens_file_stops_the_server_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("tokens.toml");
    std::fs::write(
        &bad,
        "[[tokens]]\nname = \"ci\"\ntoken = \"hunter2-secret\"\nscopes = [\"root\"]\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.toml");
    for path in [&bad, &missing] {
        let output = std::process::Command::new(BINARY)
            .args(["--listen", "127.0.0.1:0", "--tokens-file"])
            .arg(path)
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("--tokens-file"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let errors = stderr.lines().filter(|line| line.contains("ERROR")).count();
        assert_eq!(errors, 1, "{stderr}");
    }
}

#[tokio::test]
async fn tokens_never_reach_the_log_even_at_trace() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens.toml"), tokens_file()).unwrap();
    let url = format!("sqlite://{}", dir.path().join("auth.db").display());
    let mut server = Binary::start(
        dir.path(),
        &["--database-url", &url, "--tokens-file", "tokens.toml"],
        &[
            ("RUST_LOG", "trace"),
            ("GITOPS_STATUS_WRITE_TOKEN", "env-write-token-89ab"),
        ],
    );
    let client = reqwest::Client::new();
    let presented = [
        "write-rsyslog-0123",
        "read-grafana-4567",
        "env-write-token-89ab",
        "wrong-token-cdef",
    ];
    for token in presented {
        for repo in ["rsyslog", "nginx"] {
            let body = snapshot(repo, "lab", "SYNCED", &[], &at_offset(-60));
            client
                .post(server.url("/api/status"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
        }
        for path in ["/status.json", "/metrics", "/history?repo=x"] {
            client
                .get(server.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
        }
    }
    // A token mistakenly sent as a query parameter is the client's leak, but the server does
    // not log query strings either.
    client
        .get(server.url("/status.json?token=query-token-0000"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = server.logs().join("\n");
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "trace level: {logs}"
    );
    for token in presented.iter().chain(&["query-token-0000"]) {
        assert!(!logs.contains(token), "{token} logged:\n{logs}");
    }
}

#[tokio::test]
async fn no_tokens_warns_loudly_and_tokens_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("warn.db").display());
    let mut open = Binary::start(dir.path(), &["--database-url", &url], &[]);
    let logs = open.logs().join("\n");
    assert!(
        logs.contains("WARN") && logs.contains("no tokens configured"),
        "{logs}"
    );
    drop(open);
    let mut closed = Binary::start(
        dir.path(),
        &["--database-url", &url],
        &[("GITOPS_STATUS_WRITE_TOKEN", "s3cret-write")],
    );
    let logs = closed.logs().join("\n");
    assert!(!logs.contains("no tokens configured"), "{logs}");
    assert!(!logs.contains("s3cret-write"), "{logs}");
}

/// The `report` client against a server with tokens: no token and a token for another repo are
/// both refused (exit 1, no retry), the right token records.
#[tokio::test]
async fn the_report_client_handles_401_and_403() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens.toml"), tokens_file()).unwrap();
    let url = format!("sqlite://{}", dir.path().join("report.db").display());
    let server = Binary::start(
        dir.path(),
        &["--database-url", &url, "--tokens-file", "tokens.toml"],
        &[],
    );
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ansible/synced.out"
    );
    let report = |repo: &str, token: Option<&str>| {
        let mut command = std::process::Command::new(BINARY);
        command
            .args(["report", "--input", fixture, "--retries", "0"])
            .args(["--url", &server.url(""), "--repo", repo])
            .env_remove("GITOPS_STATUS_TOKEN")
            .env("NO_COLOR", "1");
        if let Some(token) = token {
            command.env("GITOPS_STATUS_TOKEN", token);
        }
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (code, text) = report("rsyslog", None);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("401"), "{text}");
    let (code, text) = report("nginx", Some("write-rsyslog-0123"));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("403"), "{text}");
    assert!(!text.contains("write-rsyslog-0123"), "{text}");
    let (code, text) = report("rsyslog", Some("write-rsyslog-0123"));
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn a_tokens_file_that_defines_no_token_stops_the_server_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let commented = dir.path().join("commented.toml");
    std::fs::write(&commented, "# [[tokens]]\n# name = \"ci\"\ntokens = []\n").unwrap();
    for path in [&empty, &commented] {
        let output = std::process::Command::new(BINARY)
            .args(["--listen", "127.0.0.1:0", "--tokens-file"])
            .arg(path)
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("GITOPS_STATUS_WRITE_TOKEN")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains("ERROR"), "{stderr}");
        assert!(
            lines[0].contains(&format!(
                "--tokens-file: {} defines no token",
                path.display()
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("WRITES ARE OPEN"), "{stderr}");
        assert!(
            !dir.path().join("gitops-status.db").exists(),
            "stopped before opening the database"
        );
    }
}

#[test]
fn a_tokens_file_from_the_environment_is_named_by_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let output = std::process::Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("GITOPS_STATUS_WRITE_TOKEN")
        .env("GITOPS_STATUS_TOKENS_FILE", &empty)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "GITOPS_STATUS_TOKENS_FILE: {} defines no token",
            empty.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("--tokens-file"), "{stderr}");
}

#[test]
fn short_and_repeated_tokens_are_warned_about_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokens.toml"),
        r#"
[[tokens]]
name = "ci"
token = "hunter2"
scopes = ["write"]

[[tokens]]
name = "grafana"
token = "a-long-enough-read-token"
scopes = ["read"]

[[tokens]]
name = "grafana-again"
token = "a-long-enough-read-token"
scopes = ["read"]
"#,
    )
    .unwrap();
    let url = format!("sqlite://{}", dir.path().join("warn.db").display());
    let mut server = Binary::start(
        dir.path(),
        &["--database-url", &url, "--tokens-file", "tokens.toml"],
        &[],
    );
    let logs = server.logs().join("\n");
    let warnings: Vec<&str> = logs.lines().filter(|line| line.contains("WARN")).collect();
    assert_eq!(warnings.len(), 2, "{logs}");
    assert!(
        warnings[0]
            .contains("--tokens-file: tokens[0] (\"ci\"): the token is shorter than 16 characters"),
        "{logs}"
    );
    assert!(
        warnings[1].contains(
            "--tokens-file: tokens[2] (\"grafana-again\"): the same token as --tokens-file: \
             tokens[1] (\"grafana\")"
        ),
        "{logs}"
    );
    assert!(!logs.contains("hunter2"), "{logs}");
    assert!(!logs.contains("a-long-enough-read-token"), "{logs}");
}
