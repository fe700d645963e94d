//! `report ack` and `report unack` end to end: the compiled client over real HTTP against the
//! service running in-process on each database, and what the server shows afterwards.

mod common;

use std::process::{Command, Output, Stdio};

use common::binary::BINARY;
use common::*;
use gitops_status_server::auth::Tokens;
use gitops_status_server::timestamp::Timestamp;
use gitops_status_server::{AppState, Settings};
use serde_json::{Value, json};

backend_tests! {
    an_acknowledgement_made_by_report_ack_shows_in_status_json,
    until_may_be_a_duration_from_now,
    a_bad_until_fails_naming_until_and_stores_nothing,
    an_unknown_target_fails_with_the_servers_detail,
    report_unack_ends_the_acknowledgement,
}

const TOKENS: &str = r#"
[[tokens]]
name = "ci-rsyslog"
token = "write-rsyslog-0123"
scopes = ["write"]
repos = ["rsyslog"]
"#;

/// The service over `backend`'s fresh database, in which `rsyslog/lab` drifts, on a real port,
/// open or with `TOKENS`.
async fn serve(backend: Backend, tokens: bool) -> (TestApp, TcpServer) {
    let mut app = TestApp::on(backend).await;
    app.record(&json!({
        "repo": "rsyslog", "server": "lab", "sync_status": "OUT_OF_SYNC",
        "files": [{"name": "rsyslog.d/10-lab.conf"}], "last_check": at_offset(-60),
    }))
    .await;
    if tokens {
        app.app = gitops_status_server::app(
            AppState::new(app.store.clone(), Settings::default())
                .with_tokens(Tokens::parse(TOKENS).unwrap()),
        );
    }
    let server = TcpServer::start(app.app.clone()).await;
    (app, server)
}

/// `gitops-status-server report ARGS` with `env` and no reporting setting of the test run's
/// environment; run off the runtime so the in-process server keeps answering.
async fn report(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BINARY);
    for (name, _) in std::env::vars() {
        if name.starts_with("GITOPS_STATUS_")
            || matches!(name.as_str(), "REPO_NAME" | "SERVER_NAME")
        {
            command.env_remove(name);
        }
    }
    command
        .arg("report")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit code and returns the acknowledgement printed on stdout.
fn printed(output: &Output, code: i32) -> Value {
    assert_eq!(output.status.code(), Some(code), "{}", stderr(output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object on stdout: {stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

fn failed(output: &Output, code: i32, says: &str) {
    assert_eq!(output.status.code(), Some(code), "{}", stderr(output));
    assert!(output.stdout.is_empty());
    assert!(stderr(output).contains(says), "{says}\n{}", stderr(output));
}

/// `report ack` for `rsyslog/lab` at `server`'s base URL with `until` and `extra` flags.
async fn ack(server: &TcpServer, until: &str, extra: &[&str]) -> Output {
    let url = server.url("");
    let mut args = vec![
        "ack",
        "--url",
        &url,
        "--repo",
        "rsyslog",
        "--server",
        "lab",
        "--reason",
        "INC-4711",
        "--until",
        until,
        "--retries",
        "0",
    ];
    args.extend(extra);
    report(&args, &[]).await
}

async fn an_acknowledgement_made_by_report_ack_shows_in_status_json(backend: Backend) {
    let (app, server) = serve(backend, true).await;
    let until = Timestamp::now().plus_millis(2 * 86_400_000);
    // Settings as a CI job has them: the seed's variables, the full endpoint, the token.
    let env = [
        ("GITOPS_STATUS_SERVER_URL", server.url("/api/status")),
        ("REPO_NAME", "rsyslog".to_owned()),
        ("SERVER_NAME", "lab".to_owned()),
    ];
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = [
        "ack",
        "--reason",
        "hotfix INC-4711, PR #312 brings it into the repo",
        "--until",
        &until.to_string(),
        "--files",
        "rsyslog.d/*",
        "--files",
        "*.conf",
    ];
    failed(&report(&args, &env).await, 1, "rejected with HTTP 401: ");

    env.push(("GITOPS_STATUS_TOKEN", "write-rsyslog-0123"));
    let output = report(&args, &env).await;
    let made = printed(&output, 0);
    let id = made["id"].as_i64().unwrap();
    assert_eq!(
        (&made["repo"], &made["server"], &made["by"], &made["files"]),
        (
            &json!("rsyslog"),
            &json!("lab"),
            &json!("ci-rsyslog"),
            &json!(["rsyslog.d/*", "*.conf"])
        )
    );
    assert_eq!(made["until"], until.to_string());
    assert_eq!(made["ended_at"], Value::Null);
    assert_eq!(
        stderr(&output),
        format!(
            "Acknowledging the drift of rsyslog/lab until {until} at {}...\n  rsyslog/lab: \
             acknowledgement {id} until {until} by ci-rsyslog\n",
            server.url("/api/acks")
        )
    );

    let rows = app.get_rows("/status.json").await;
    assert_eq!(rows[0]["state"], "OUT_OF_SYNC");
    assert_eq!(
        rows[0]["acknowledged"],
        json!({
            "id": id, "reason": "hotfix INC-4711, PR #312 brings it into the repo",
            "by": "ci-rsyslog", "until": until.to_string(), "until_ms": until.as_millis(),
        })
    );
    assert_eq!(app.get(&format!("/api/acks/{id}")).await.json(), made);
    server.stop().await;
}

async fn until_may_be_a_duration_from_now(backend: Backend) {
    let (app, server) = serve(backend, false).await;
    let three_days = 3 * 86_400_000;
    let before = Timestamp::now().plus_millis(three_days);
    let made = printed(&ack(&server, "3d", &[]).await, 0);
    let after = Timestamp::now().plus_millis(three_days);
    let until = made["until_ms"].as_i64().unwrap();
    assert!(
        (before.as_millis()..=after.as_millis()).contains(&until),
        "{before} <= {} <= {after}",
        made["until"]
    );
    assert_eq!(made["files"], Value::Null, "no --files: any file");
    let row = &app.get_rows("/status.json").await[0];
    assert_eq!(row["acknowledged"]["until"], made["until"]);
    server.stop().await;
}

async fn a_bad_until_fails_naming_until_and_stores_nothing(backend: Backend) {
    let (app, server) = serve(backend, false).await;
    // Not a time at all: refused before anything is sent.
    failed(
        &ack(&server, "soon", &[]).await,
        2,
        "invalid value 'soon' for '--until <WHEN>': must be an RFC 3339 time with an offset",
    );
    // A time the server refuses: its problem detail, naming the field.
    failed(
        &ack(&server, "91d", &[]).await,
        1,
        "rejected with HTTP 422: invalid field(s): until; until: must be at most 90 days ahead",
    );
    let past = Timestamp::now().plus_millis(-60_000).to_string();
    failed(
        &ack(&server, &past, &[]).await,
        1,
        "until: must be in the future",
    );
    failed(
        &ack(&server, "1d", &["--files", "bad["]).await,
        1,
        "files[0]: ",
    );
    assert!(app.get_rows("/api/acks").await.is_empty());
    assert_eq!(app.query_i64("select count(*) from events").await, 0);
    server.stop().await;
}

async fn an_unknown_target_fails_with_the_servers_detail(backend: Backend) {
    let (app, server) = serve(backend, false).await;
    let url = server.url("");
    let output = report(
        &[
            "ack", "--url", &url, "--repo", "rsyslog", "--server", "nowhere", "--reason", "x",
            "--until", "1d",
        ],
        &[],
    )
    .await;
    failed(
        &output,
        1,
        "  rsyslog/nowhere: error: rejected with HTTP 404: no target rsyslog/nowhere has reported\n",
    );
    // Missing settings are named as the report client names them, and nothing is sent.
    let output = report(&["ack", "--reason", "x", "--until", "1d"], &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        "error: no server to report to: set --url / GITOPS_STATUS_SERVER_URL to the server's base \
         URL, e.g. http://gitops-status-server:80 (or the full http://.../api/status endpoint)\n\
         error: no repository name: set --repo / REPO_NAME to the repository of the target whose \
         drift is accepted, e.g. rsyslog\n\
         error: no server name: set --server / SERVER_NAME to the server whose drift is accepted, \
         e.g. rsyslog-lab\n"
    );
    assert!(app.get_rows("/api/acks").await.is_empty());
    server.stop().await;
}

async fn report_unack_ends_the_acknowledgement(backend: Backend) {
    let (app, server) = serve(backend, false).await;
    let made = printed(&ack(&server, "1d", &[]).await, 0);
    let id = made["id"].to_string();
    let url = server.url("/");
    for _ in 0..2 {
        let output = report(&["unack", &id, "--url", &url], &[]).await;
        let ended = printed(&output, 0);
        assert_eq!(
            (&ended["id"], &ended["end_reason"], &ended["ended_by"]),
            (&made["id"], &json!("deleted"), &json!("anonymous"))
        );
        assert!(
            stderr(&output).contains(&format!(
                "  acknowledgement {id} of rsyslog/lab: ended (deleted) at {}\n",
                ended["ended_at"].as_str().unwrap()
            )),
            "{}",
            stderr(&output)
        );
    }
    assert_eq!(
        app.get_rows("/status.json").await[0]["acknowledged"],
        Value::Null
    );
    failed(
        &report(&["unack", "999999", "--url", &url], &[]).await,
        1,
        "rejected with HTTP 404: no acknowledgement 999999",
    );
    server.stop().await;
}
