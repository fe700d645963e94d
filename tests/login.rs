//! People and read tokens, over real HTTP: a browser without credentials is sent to the sign-in
//! form, a read-only token there becomes an HttpOnly cookie the pages accept, and that cookie never
//! writes. API clients keep their JSON 401.

mod common;

use common::{TcpServer, TestApp, snapshot};
use gitops_status_server::auth::Tokens;
use gitops_status_server::{AppState, Settings};
use reqwest::redirect::Policy;
use reqwest::{Client, Response, StatusCode};

const TOKENS: &str = r#"
[[tokens]]
name = "people"
token = "read-people-0123456789"
scopes = ["read"]

[[tokens]]
name = "ci"
token = "write-ci-0123456789ab"
scopes = ["read", "write"]
"#;

const COOKIE: &str = "gitops_status_session";

async fn server() -> (TestApp, TcpServer) {
    let app = TestApp::new().await;
    let router = gitops_status_server::app(
        AppState::new(app.store.clone(), Settings::default())
            .with_tokens(Tokens::parse(TOKENS).unwrap()),
    );
    let server = TcpServer::start(router).await;
    (app, server)
}

fn browser() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

/// A browser's form post: it asks for HTML.
async fn sign_in(client: &Client, server: &TcpServer, form: &[(&str, &str)]) -> Response {
    client
        .post(server.url("/login"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .form(form)
        .send()
        .await
        .unwrap()
}

/// The `name=value` part of a `Set-Cookie` header.
fn cookie_pair(response: &Response) -> String {
    header(response, "set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_browser_signs_in_with_a_read_token_and_reads_the_pages_with_its_cookie() {
    let (_app, server) = server().await;
    let client = browser();

    let page = client
        .get(server.url("/target?repo=a%26b&server=lab"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        header(&page, "location"),
        "/login?next=%2Ftarget%3Frepo%3Da%2526b%26server%3Dlab"
    );

    let form = client
        .get(server.url(header(&page, "location")))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    assert_eq!(header(&form, "cache-control"), "no-store");
    assert!(header(&form, "content-security-policy").contains("frame-ancestors 'none'"));
    let html = form.text().await.unwrap();
    assert!(
        html.contains(r#"<form class="login" method="post" action="/login">"#),
        "{html}"
    );
    assert!(
        html.contains(r#"name="next" value="/target?repo=a%26b&amp;server=lab""#),
        "{html}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );

    let signed_in = sign_in(
        &client,
        &server,
        &[
            ("token", "read-people-0123456789"),
            ("next", "/target?repo=a%26b&server=lab"),
        ],
    )
    .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        header(&signed_in, "location"),
        "/target?repo=a%26b&server=lab"
    );
    assert_eq!(
        header(&signed_in, "set-cookie"),
        format!("{COOKIE}=read-people-0123456789; HttpOnly; SameSite=Strict; Path=/")
    );
    let cookie = cookie_pair(&signed_in);

    for path in ["/", "/docs/", "/badge.svg?repo=a&server=b", "/status.json"] {
        let response = client
            .get(server.url(path))
            .header("cookie", &cookie)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }

    let signed_out = client
        .post(server.url("/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&signed_out, "location"), "/login");
    assert_eq!(
        header(&signed_out, "set-cookie"),
        format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
    );
    server.stop().await;
}

#[tokio::test]
async fn the_cookie_is_secure_behind_an_https_proxy_and_next_stays_on_this_server() {
    let (_app, server) = server().await;
    let client = browser();
    let response = client
        .post(server.url("/login"))
        .header("x-forwarded-proto", "https")
        .form(&[
            ("token", "read-people-0123456789"),
            ("next", "//evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, "location"), "/");
    assert!(
        header(&response, "set-cookie").ends_with("; Path=/; Secure"),
        "{}",
        header(&response, "set-cookie")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_or_writing_token_sets_no_cookie_and_shows_why() {
    let (_app, server) = server().await;
    let client = browser();
    for (token, status, reason) in [
        (
            "read-people-0123456780",
            StatusCode::UNAUTHORIZED,
            "That token is not valid.",
        ),
        (
            "write-ci-0123456789ab",
            StatusCode::UNAUTHORIZED,
            "That token can write or administer.",
        ),
        ("", StatusCode::BAD_REQUEST, "Enter a token."),
    ] {
        let response = sign_in(&client, &server, &[("token", token), ("next", "/")]).await;
        assert_eq!(response.status(), status, "{token}");
        assert!(response.headers().get("set-cookie").is_none(), "{token}");
        let html = response.text().await.unwrap();
        assert!(html.contains(reason), "{html}");
        if !token.is_empty() {
            assert!(
                !html.contains(token),
                "the page never echoes the token: {html}"
            );
        }
    }
    // A client that does not ask for HTML gets the same refusals as problem+json.
    for (token, status, field) in [
        ("read-people-0123456780", StatusCode::UNAUTHORIZED, None),
        ("", StatusCode::BAD_REQUEST, Some("token")),
    ] {
        let response = client
            .post(server.url("/login"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{token}");
        assert!(response.headers().get("set-cookie").is_none(), "{token}");
        assert_eq!(
            header(&response, "content-type"),
            "application/problem+json"
        );
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["status"], status.as_u16(), "{problem}");
        assert_eq!(problem["errors"][0]["field"].as_str(), field, "{problem}");
    }
    let not_a_form = client
        .post(server.url("/login"))
        .json(&serde_json::json!({"token": "read-people-0123456789"}))
        .send()
        .await
        .unwrap();
    assert_eq!(not_a_form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        header(&not_a_form, "content-type"),
        "application/problem+json"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_cookie_never_writes_and_api_clients_keep_the_json_401() {
    let (app, server) = server().await;
    let client = browser();
    let signed_in = sign_in(&client, &server, &[("token", "read-people-0123456789")]).await;
    let cookie = cookie_pair(&signed_in);
    let body = snapshot("rsyslog", "lab", "SYNCED", &[], &common::at_offset(-60));
    // What a cross-site form would make the browser send, and more: the cookie holds a token.
    let write = client
        .post(server.url("/api/status"))
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&write, "content-type"), "application/problem+json");
    let problem: serde_json::Value = write.json().await.unwrap();
    assert_eq!(
        problem["detail"],
        "the sign-in cookie serves reads only; this needs Authorization: Bearer <token>"
    );
    assert_eq!(
        app.query_i64("select count(*) from snapshots").await,
        0,
        "nothing stored"
    );

    for accept in [None, Some("application/json"), Some("*/*")] {
        let mut request = client.get(server.url("/"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{accept:?}");
        assert_eq!(
            header(&response, "content-type"),
            "application/problem+json"
        );
    }
    server.stop().await;
}

/// Grafana is the other reader: its provisioned datasource sends the read token from Grafana's
/// environment as a secure header, and compose hands Grafana that variable.
#[test]
fn grafana_sends_the_read_token_from_its_environment() {
    let read = |path: &str| -> serde_json::Value {
        let text =
            std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        serde_norway::from_str(&text).unwrap()
    };
    let datasources = read("grafana/provisioning/datasources/gitops-status-server.yaml");
    let datasource = &datasources["datasources"][0];
    assert_eq!(datasource["jsonData"]["httpHeaderName1"], "Authorization");
    assert_eq!(
        datasource["secureJsonData"]["httpHeaderValue1"],
        "Bearer ${GITOPS_STATUS_READ_TOKEN}"
    );
    assert_eq!(
        datasource["jsonData"]["allowedHosts"],
        serde_json::json!(["${GITOPS_STATUS_SERVER_URL}"])
    );
    let compose = read("docker-compose.yml");
    assert_eq!(
        compose["services"]["grafana"]["environment"]["GITOPS_STATUS_READ_TOKEN"],
        "${GITOPS_STATUS_READ_TOKEN:-}"
    );
}
