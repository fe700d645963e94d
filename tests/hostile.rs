//! A corpus of hostile requests: each gets the right status and an RFC 9457 problem naming the bad
//! fields, none of the rejected ones changes what is stored, and the server answers throughout.
//! Accepted oddities (SQL-looking text, path-traversal names, unicode) are stored verbatim.

mod common;

use axum::body::Body;
use axum::http::Request;
use common::{Backend, TestApp, TestResponse, at_offset, snapshot};
use serde_json::{Value, json};

backend_tests! {
    every_hostile_request_is_refused_with_a_problem_and_changes_nothing,
    odd_but_valid_text_is_stored_verbatim,
}

/// One hostile request and what it must get.
struct Case {
    name: &'static str,
    method: &'static str,
    uri: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    extra_header: Option<(&'static str, String)>,
    status: u16,
    fields: Vec<&'static str>,
}

fn post(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    fields: &[&'static str],
) -> Case {
    Case {
        name,
        method: "POST",
        uri: "/api/status".to_owned(),
        content_type: Some("application/json"),
        body: body.into(),
        extra_header: None,
        status,
        fields: fields.to_vec(),
    }
}

/// A JSON snapshot body with `changes` merged into a valid OUT_OF_SYNC snapshot.
fn post_json(name: &'static str, changes: Value, status: u16, fields: &[&'static str]) -> Case {
    let mut body = json!({
        "repo": "hostile",
        "server": "target",
        "sync_status": "OUT_OF_SYNC",
        "files": [{ "name": "a.conf" }],
        "last_check": at_offset(-100),
    });
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() && key.starts_with('-') {
            body.as_object_mut().unwrap().remove(&key[1..]);
        } else {
            body[key] = value.clone();
        }
    }
    post(name, body.to_string(), status, fields)
}

fn get(name: &'static str, uri: &str, status: u16, fields: &[&'static str]) -> Case {
    Case {
        name,
        method: "GET",
        uri: uri.to_owned(),
        content_type: None,
        body: Vec::new(),
        extra_header: None,
        status,
        fields: fields.to_vec(),
    }
}

fn method(name: &'static str, method: &'static str, uri: &str) -> Case {
    Case {
        method,
        ..get(name, uri, 405, &[])
    }
}

fn files(names: impl IntoIterator<Item = String>) -> Value {
    Value::Array(
        names
            .into_iter()
            .map(|name| json!({ "name": name }))
            .collect(),
    )
}

fn corpus(conflicting_last_check: &str) -> Vec<Case> {
    let long = |n: usize| "x".repeat(n);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    vec![
        // Not JSON at all: 400.
        post("empty body", "", 400, &[]),
        post("truncated object", r#"{"repo": "a", "server": "#, 400, &[]),
        post("lone brace", "{", 400, &[]),
        post("plain text", "not json", 400, &[]),
        post("trailing comma", r#"{"repo": "a",}"#, 400, &[]),
        post("single quotes", "{'repo': 'a'}", 400, &[]),
        post("NaN literal", r#"{"drift_count": NaN}"#, 400, &[]),
        post(
            "invalid UTF-8",
            b"{\"repo\": \"\xff\xfe\"}".to_vec(),
            400,
            &[],
        ),
        post("byte order mark", "\u{feff}{}", 400, &[]),
        post("two documents", "{} {}", 400, &[]),
        post("raw NUL byte", b"{\"repo\": \"a\0\"}".to_vec(), 400, &[]),
        post("nesting bomb", deep, 400, &[]),
        post("unterminated string", r#"{"repo": "a"#, 400, &[]),
        post("lone surrogate escape", r#"{"repo": "\ud800"}"#, 400, &[]),
        // Well-formed JSON breaking the schema or the rules: 422 naming every bad field.
        post("top-level array", "[]", 422, &["body"]),
        post("top-level string", r#""snapshot""#, 422, &["body"]),
        post("top-level null", "null", 422, &["body"]),
        post(
            "empty object",
            "{}",
            422,
            &["repo", "server", "sync_status"],
        ),
        post_json("repo is a number", json!({"repo": 42}), 422, &["repo"]),
        post_json(
            "server is an array",
            json!({"server": ["a"]}),
            422,
            &["server"],
        ),
        post_json(
            "sync_status lowercase",
            json!({"sync_status": "out_of_sync"}),
            422,
            &["sync_status"],
        ),
        post_json(
            "sync_status unknown",
            json!({"sync_status": "DEGRADED"}),
            422,
            &["sync_status"],
        ),
        post_json(
            "sync_status null",
            json!({"sync_status": null}),
            422,
            &["sync_status"],
        ),
        post_json(
            "drift_count negative",
            json!({"drift_count": -1}),
            422,
            &["drift_count"],
        ),
        post_json(
            "drift_count string",
            json!({"drift_count": "1"}),
            422,
            &["drift_count"],
        ),
        post_json(
            "drift_count fraction",
            json!({"drift_count": 1.5}),
            422,
            &["drift_count"],
        ),
        post_json(
            "drift_count huge",
            json!({"drift_count": 1e30}),
            422,
            &["drift_count"],
        ),
        post_json(
            "drift_count mismatch",
            json!({"drift_count": 3}),
            422,
            &["drift_count"],
        ),
        post_json(
            "files is an object",
            json!({"files": {"name": "a"}}),
            422,
            &["files"],
        ),
        post_json(
            "files are strings",
            json!({"files": ["a.conf"]}),
            422,
            &["files[0]"],
        ),
        post_json(
            "file name empty",
            json!({"files": [{"name": ""}]}),
            422,
            &["files[0].name"],
        ),
        post_json(
            "file name missing",
            json!({"files": [{}]}),
            422,
            &["files[0].name"],
        ),
        post_json(
            "file with unknown field",
            json!({"files": [{"name": "a", "size": 1}]}),
            422,
            &["files[0].size"],
        ),
        post_json(
            "file name 4097 chars",
            json!({"files": [{"name": long(4097)}]}),
            422,
            &["files[0].name"],
        ),
        post_json(
            "file name with NUL",
            json!({"files": [{"name": "a\u{0}b"}]}),
            422,
            &["files[0].name"],
        ),
        post_json(
            "file name with newline",
            json!({"files": [{"name": "a\nb"}]}),
            422,
            &["files[0].name"],
        ),
        post_json(
            "duplicate file names",
            json!({"files": [{"name": "a"}, {"name": "b"}, {"name": "a"}]}),
            422,
            &["files[2].name"],
        ),
        post_json(
            "10,001 files",
            json!({"files": files((0..10_001).map(|i| format!("f{i}")))}),
            422,
            &["files"],
        ),
        post_json(
            "unknown field",
            json!({"sync_stauts": "SYNCED"}),
            422,
            &["sync_stauts"],
        ),
        post_json("repo with NUL", json!({"repo": "a\u{0}"}), 422, &["repo"]),
        post_json("repo with newline", json!({"repo": "a\nb"}), 422, &["repo"]),
        post_json(
            "server with tab",
            json!({"server": "a\tb"}),
            422,
            &["server"],
        ),
        post_json(
            "repo with escape char",
            json!({"repo": "a\u{1b}[31m"}),
            422,
            &["repo"],
        ),
        post_json("repo with DEL", json!({"repo": "a\u{7f}"}), 422, &["repo"]),
        post_json(
            "server with C1 control",
            json!({"server": "a\u{85}"}),
            422,
            &["server"],
        ),
        post_json("repo only spaces", json!({"repo": "   "}), 422, &["repo"]),
        post_json("repo 257 chars", json!({"repo": long(257)}), 422, &["repo"]),
        post_json(
            "message 16385 chars",
            json!({"message": long(16_385)}),
            422,
            &["message"],
        ),
        post_json(
            "revision 257 chars",
            json!({"revision": long(257)}),
            422,
            &["revision"],
        ),
        post_json(
            "run_url 2049 chars",
            json!({"run_url": long(2049)}),
            422,
            &["run_url"],
        ),
        post_json(
            "SYNCED with files",
            json!({"sync_status": "SYNCED"}),
            422,
            &["files", "drift_count"],
        ),
        post_json(
            "SYNCED with drift_count",
            json!({"sync_status": "SYNCED", "-files": null, "drift_count": 2}),
            422,
            &["drift_count"],
        ),
        post_json(
            "last_check words",
            json!({"last_check": "yesterday"}),
            422,
            &["last_check"],
        ),
        post_json(
            "last_check without offset",
            json!({"last_check": "2026-04-21T10:30:00"}),
            422,
            &["last_check"],
        ),
        post_json(
            "last_check 30 February",
            json!({"last_check": "2026-02-30T10:30:00Z"}),
            422,
            &["last_check"],
        ),
        post_json(
            "last_check hour 25",
            json!({"last_check": "2026-04-21T25:30:00Z"}),
            422,
            &["last_check"],
        ),
        post_json(
            "last_check number",
            json!({"last_check": 1_776_767_400}),
            422,
            &["last_check"],
        ),
        post_json(
            "last_check far future",
            json!({"last_check": at_offset(3600)}),
            422,
            &["last_check"],
        ),
        post_json(
            "last_check year 99999",
            json!({"last_check": "99999-01-01T00:00:00Z"}),
            422,
            &["last_check"],
        ),
        post_json(
            "stale_after zero",
            json!({"stale_after_seconds": 0}),
            422,
            &["stale_after_seconds"],
        ),
        post_json(
            "stale_after negative",
            json!({"stale_after_seconds": -5}),
            422,
            &["stale_after_seconds"],
        ),
        post_json(
            "every field wrong at once",
            json!({"repo": "", "server": 1, "sync_status": "X", "files": [{"name": ""}], "last_check": "x"}),
            422,
            &[
                "repo",
                "server",
                "sync_status",
                "files[0].name",
                "last_check",
            ],
        ),
        post_json(
            "conflicting retry",
            json!({"repo": "baseline", "server": "one", "last_check": conflicting_last_check}),
            409,
            &[],
        ),
        // Content types: 415.
        Case {
            content_type: None,
            ..post("no content type", "{}", 415, &[])
        },
        Case {
            content_type: Some("text/plain"),
            ..post("text/plain", "{}", 415, &[])
        },
        Case {
            content_type: Some("application/x-www-form-urlencoded"),
            ..post("form encoded", "repo=a&server=b", 415, &[])
        },
        Case {
            content_type: Some("multipart/form-data; boundary=x"),
            ..post("multipart", "--x--", 415, &[])
        },
        Case {
            content_type: Some("application/jsonx"),
            ..post("json lookalike", "{}", 415, &[])
        },
        // Sizes.
        post(
            "body over 1 MiB",
            format!(r#"{{"message": "{}"}}"#, long(1024 * 1024 + 1)),
            413,
            &[],
        ),
        Case {
            extra_header: Some(("x-padding", long(40 * 1024))),
            ..get("headers over 32 KiB", "/status.json", 431, &[])
        },
        // Wrong methods: 405.
        method("PUT snapshot", "PUT", "/api/status"),
        method("DELETE snapshot", "DELETE", "/api/status"),
        method("GET the write route", "GET", "/api/status"),
        method("POST the status list", "POST", "/status.json"),
        method("PATCH history", "PATCH", "/history"),
        method("DELETE history", "DELETE", "/history"),
        // Unknown paths: 404.
        get("unknown path", "/api/snapshots", 404, &[]),
        get("traversal path", "/../../etc/passwd", 404, &[]),
        get(
            "encoded traversal path",
            "/%2e%2e/%2e%2e/etc/passwd",
            404,
            &[],
        ),
        // Bad query parameters: 400 naming the parameter.
        get("limit zero", "/history?limit=0", 400, &["limit"]),
        get("limit over 10,000", "/history?limit=10001", 400, &["limit"]),
        get("limit not a number", "/history?limit=ten", 400, &["limit"]),
        get(
            "limit overflow",
            "/history?limit=99999999999999999999999",
            400,
            &["limit"],
        ),
        get("order sideways", "/history?order=sideways", 400, &["order"]),
        get("from in words", "/history?from=yesterday", 400, &["from"]),
        get(
            "to impossible date",
            "/history?to=2026-13-40T00:00:00Z",
            400,
            &["to"],
        ),
        get(
            "changes_only maybe",
            "/history?changes_only=maybe",
            400,
            &["changes_only"],
        ),
        get("format xml", "/history?format=xml", 400, &["format"]),
        get(
            "sync_status unknown",
            "/history?sync_status=GREEN",
            400,
            &["sync_status"],
        ),
        get("unknown parameter", "/history?page=2", 400, &["page"]),
        get(
            "repeated parameter",
            "/history?limit=1&limit=2",
            400,
            &["limit"],
        ),
        get(
            "forged cursor garbage",
            "/history?cursor=!!!not-base64!!!",
            400,
            &["cursor"],
        ),
        get(
            "forged cursor base64 junk",
            "/history?cursor=AAAAAAAAAAAA",
            400,
            &["cursor"],
        ),
        get(
            "forged cursor wrong version",
            "/history?cursor=djk6MTox",
            400,
            &["cursor"],
        ),
        get(
            "forged cursor SQL",
            "/history?cursor=%27%20or%201%3D1%20--",
            400,
            &["cursor"],
        ),
        get("state unknown", "/status.json?state=GREEN", 400, &["state"]),
        get(
            "stats from impossible",
            "/api/stats?from=2026-02-30T00:00:00Z",
            400,
            &["from"],
        ),
        get(
            "stats to before from",
            "/api/stats?from=2026-02-02T00:00:00Z&to=2026-02-01T00:00:00Z",
            400,
            &["to"],
        ),
        get("badge without repo", "/badge.svg?server=a", 400, &["repo"]),
        get(
            "status repo with NUL",
            "/status.json?repo=a%00b",
            400,
            &["repo"],
        ),
        get(
            "from overflows milliseconds",
            "/history?from=-99999999999999999999",
            400,
            &["from"],
        ),
        get("limit with NUL", "/history?limit=1%00", 400, &["limit"]),
    ]
}

async fn send(app: &TestApp, case: &Case) -> TestResponse {
    let mut request = Request::builder().method(case.method).uri(&case.uri);
    if let Some(content_type) = case.content_type {
        request = request.header("content-type", content_type);
    }
    if let Some((name, value)) = &case.extra_header {
        request = request.header(*name, value);
    }
    app.request(request.body(Body::from(case.body.clone())).unwrap())
        .await
}

/// What is stored, as the API and the database itself report it.
async fn stored(app: &TestApp) -> (Vec<Value>, i64, i64, i64) {
    let history = app.all_history().await;
    let snapshots = app.query_i64("select count(*) from snapshots").await;
    let targets = app.query_i64("select count(*) from targets").await;
    let filesets = app.query_i64("select count(*) from filesets").await;
    (history, snapshots, targets, filesets)
}

async fn every_hostile_request_is_refused_with_a_problem_and_changes_nothing(backend: Backend) {
    let app = TestApp::on(backend).await;
    let baseline_at = at_offset(-500);
    app.record(&snapshot(
        "baseline",
        "one",
        "OUT_OF_SYNC",
        &["x.conf"],
        &baseline_at,
    ))
    .await;
    app.record(&snapshot(
        "baseline",
        "two",
        "SYNCED",
        &[],
        &at_offset(-400),
    ))
    .await;
    let before = stored(&app).await;

    let corpus = corpus(&baseline_at);
    assert!(corpus.len() >= 60, "{} cases", corpus.len());
    let mut failures = Vec::new();
    for case in &corpus {
        let response = send(&app, case).await;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            response.assert_problem(case.status, &case.fields);
        }));
        if outcome.is_err() {
            failures.push(format!(
                "{}: got {} {}",
                case.name,
                response.status,
                response.text().chars().take(300).collect::<String>()
            ));
        }
        // The server stays up between every two hostile requests.
        assert_eq!(app.get("/healthz").await.status, 200, "after {}", case.name);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
    assert_eq!(
        stored(&app).await,
        before,
        "a rejected request changed what is stored"
    );
    println!(
        "hostile corpus: {} requests, all refused as expected",
        corpus.len()
    );
}

async fn odd_but_valid_text_is_stored_verbatim(backend: Backend) {
    let app = TestApp::on(backend).await;
    let cases = [
        (
            "'; drop table snapshots; --",
            "\" or 1=1 --",
            vec![
                "../../etc/passwd",
                "..\\..\\windows\\system32\\config",
                "/etc/shadow",
                "%2e%2e%2fsecret",
            ],
            Some("Robert'); DROP TABLE targets;-- and a UNION SELECT * FROM snapshots"),
        ),
        (
            "репозиторий",
            "サーバー-🚀",
            vec![
                "e\u{301}.conf",
                "\u{202e}fdp.exe",
                "zero\u{200d}width",
                "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
                "中文/配置.yml",
            ],
            Some("ошибка: 连接被拒绝 ✗"),
        ),
        (
            "a/b/../c",
            "host:22",
            vec![
                "*",
                "?",
                "[a-z]",
                "$(reboot)",
                "`id`",
                "<script>alert(1)</script>",
            ],
            Some("{\"json\": \"in a string\"} \\\\ %s %n"),
        ),
    ];
    for (i, (repo, server, names, message)) in cases.iter().enumerate() {
        let mut body = snapshot(
            repo,
            server,
            "OUT_OF_SYNC",
            names,
            &at_offset(-100 - i as i64),
        );
        body["message"] = json!(message);
        let stored = app.record(&body).await;
        assert_eq!(stored["repo"], *repo);
        assert_eq!(stored["server"], *server);
        let mut sorted = names.clone();
        sorted.sort_unstable();
        let files: Vec<&str> = stored["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|file| file["name"].as_str().unwrap())
            .collect();
        assert_eq!(files, sorted);

        // Read back through the query string too: the filter must match the exact bytes.
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("repo", repo)
            .append_pair("server", server)
            .finish();
        let rows = app.get_rows(&format!("/history?{query}")).await;
        assert_eq!(rows.len(), 1, "{repo}");
        assert_eq!(rows[0]["repo"], *repo);
        assert_eq!(rows[0]["server"], *server);
        assert_eq!(rows[0]["message"], json!(message));
        assert_eq!(rows[0]["files"], stored["files"]);
    }
    // The SQL-looking text did nothing to the schema.
    assert_eq!(app.all_history().await.len(), cases.len());
    let verify = app.get("/api/verify").await.json();
    assert_eq!(verify["ok"], true, "{verify}");
}
