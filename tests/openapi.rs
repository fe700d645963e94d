//! The committed `openapi/openapi.json` is exactly what the handlers generate, and it documents
//! what the server really does.

mod common;

use std::path::Path;

use common::TestApp;
use serde_json::Value;

const COMMITTED: &str = "openapi/openapi.json";

#[test]
fn committed_openapi_matches_the_generated_document() {
    let generated = gitops_status_server::openapi_json();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED);
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{COMMITTED} is out of date; regenerate it with `UPDATE_OPENAPI=1 cargo test --test openapi`"
    );
}

#[tokio::test]
async fn the_served_document_is_the_generated_one() {
    let app = TestApp::new().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status.as_u16(), 200);
    assert_eq!(response.content_type(), "application/json");
    assert_eq!(response.text(), gitops_status_server::openapi_json());
}

fn document() -> Value {
    serde_json::from_str(&gitops_status_server::openapi_json()).unwrap()
}

#[test]
fn every_operation_documents_its_errors_as_problem_json() {
    let document = document();
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/api/status",
        "/status.json",
        "/history",
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/metrics",
        "/badge.svg",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                operation["summary"].is_string(),
                "{method} {path} has no summary"
            );
            assert!(
                responses.contains_key("503"),
                "{method} {path} does not document 503"
            );
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/problem+json"]["schema"];
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    let post = &paths["/api/status"]["post"]["responses"];
    for status in ["200", "400", "409", "413", "415", "422"] {
        assert!(
            post.get(status).is_some(),
            "POST /api/status does not document {status}"
        );
    }
}

/// The query parameters a handler accepts are exactly the ones its operation documents: each
/// endpoint's parameter struct is both, so an unknown parameter's error lists the documented
/// names, and every documented name is accepted.
#[tokio::test]
async fn documented_query_parameters_are_the_accepted_ones() {
    let document = document();
    let app = TestApp::new().await;
    for path in ["/history", "/status.json", "/badge.svg", "/api/stats"] {
        let documented: Vec<&str> = document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} documents no parameters"))
            .iter()
            .map(|parameter| parameter["name"].as_str().unwrap())
            .collect();
        let response = app.get(&format!("{path}?bogus=1")).await;
        assert_eq!(response.status.as_u16(), 400, "{path}: {}", response.text());
        assert_eq!(response.content_type(), "application/problem+json");
        let problem = response.json();
        let unknown = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|error| error["field"] == "bogus")
            .unwrap_or_else(|| panic!("{path}: {problem}"));
        assert_eq!(
            unknown["message"],
            format!(
                "unknown parameter; expected one of {}",
                documented.join(", ")
            ),
            "{path}"
        );
        for name in &documented {
            let response = app.get(&format!("{path}?{name}=x")).await;
            let text = response.text();
            assert!(!text.contains("unknown parameter"), "{path} {name}: {text}");
        }
    }
}
