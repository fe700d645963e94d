//! The committed `openapi/openapi.json` is exactly what the handlers generate, and it documents
//! what the server really does.

mod common;

use std::fmt;
use std::path::Path;

use common::{TestApp, at_offset, snapshot};
use gitops_status_server::timestamp::Timestamp;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

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
        "/api/episodes",
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
    for path in [
        "/history",
        "/status.json",
        "/badge.svg",
        "/api/stats",
        "/api/episodes",
    ] {
        let documented: Vec<&str> = document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} documents no parameters"))
            .iter()
            .filter(|parameter| parameter["in"] == "query")
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

/// The keys of a JSON object, in the order the server wrote them.
#[derive(Debug)]
struct Keys(Vec<String>);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeysVisitor;
        impl<'de> Visitor<'de> for KeysVisitor {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        deserializer.deserialize_map(KeysVisitor)
    }
}

/// The properties of a component schema, in the document's order.
fn properties(schema: &str) -> Vec<String> {
    let document = gitops_status_server::openapi();
    let components = document.components.unwrap();
    match &components.schemas[schema] {
        RefOr::T(Schema::Object(object)) => object.properties.keys().cloned().collect(),
        _ => panic!("{schema} is not an object schema"),
    }
}

/// The response objects are written by hand (each time with its `_ms` twin beside it), and
/// their schemas are derived: the two must name the same fields in the same order.
#[tokio::test]
async fn response_objects_write_exactly_their_schema_properties_in_order() {
    let app = TestApp::new().await;
    for seconds in [-4000, -3900, -3800, -60] {
        app.record(&snapshot("r", "s", "SYNCED", &[], &at_offset(seconds)))
            .await;
    }
    app.store
        .prune(Timestamp::now().plus_millis(-3_000_000))
        .await
        .unwrap();
    for (schema, uri) in [
        ("StatusRow", "/status.json"),
        ("Snapshot", "/history"),
        ("TargetStats", "/api/stats"),
        ("Checkpoint", "/api/checkpoints"),
        ("Episode", "/api/episodes"),
    ] {
        let response = app.get(uri).await;
        assert_eq!(response.status.as_u16(), 200, "{uri}: {}", response.text());
        let objects: Vec<Keys> = serde_json::from_slice(&response.body).unwrap();
        assert!(!objects.is_empty(), "{uri}");
        for object in objects {
            assert_eq!(object.0, properties(schema), "{uri}");
        }
    }
    let reply = app
        .post_json(&snapshot("r", "t", "SYNCED", &[], &at_offset(-1)))
        .await;
    let written: Keys = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(written.0, properties("Snapshot"), "POST /api/status");
}
