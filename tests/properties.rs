//! Property tests for every parser of untrusted input: the snapshot decoder and its validation,
//! the query parsers, the history cursor, the tokens file and the report client's marker parser.
//! None may panic on anything; accepted snapshots keep their invariants. They stand in for the
//! cargo-fuzz targets in `fuzz/` where nightly Rust is unavailable (CI); `PROPTEST_CASES` scales
//! them up.

use gitops_status_server::auth::Tokens;
use gitops_status_server::model::{
    Cursor, HistoryRequest, SnapshotError, SnapshotIn, StatusFilter, TargetKey,
};
use gitops_status_server::report::parse::parse_playbook_output;
use gitops_status_server::stats::StatsRequest;
use gitops_status_server::timestamp::Timestamp;
use proptest::prelude::*;
use serde_json::{Value, json};

const NOW: Timestamp = Timestamp::from_millis(1_776_767_400_000);

/// Arbitrary JSON, biased towards the snapshot's own keys and values.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("repo".to_owned()),
        Just("server".to_owned()),
        Just("sync_status".to_owned()),
        Just("drift_count".to_owned()),
        Just("files".to_owned()),
        Just("name".to_owned()),
        Just("last_check".to_owned()),
        Just("message".to_owned()),
        Just("stale_after_seconds".to_owned()),
        ".{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just("SYNCED".to_owned()),
            Just("OUT_OF_SYNC".to_owned()),
            Just("ERROR".to_owned()),
            Just("2026-04-21T10:30:00Z".to_owned()),
            "\\PC{0,20}",
            ".{0,40}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..10)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A snapshot-shaped object with arbitrary values in its fields.
fn snapshot_like() -> impl Strategy<Value = Value> {
    (
        json_value(),
        json_value(),
        json_value(),
        json_value(),
        json_value(),
    )
        .prop_map(|(repo, server, status, files, last_check)| {
            json!({
                "repo": repo, "server": server, "sync_status": status,
                "files": files, "last_check": last_check,
            })
        })
}

/// Query strings built from the parameters the endpoints know, plus noise.
fn query() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("repo"),
        Just("server"),
        Just("state"),
        Just("sync_status"),
        Just("from"),
        Just("to"),
        Just("limit"),
        Just("order"),
        Just("cursor"),
        Just("changes_only"),
        Just("format"),
        Just("x"),
    ];
    let value = prop_oneof![
        Just("".to_owned()),
        Just("%".to_owned()),
        Just("%zz".to_owned()),
        Just("%00".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[ -~]{0,30}",
        ".{0,30}",
    ];
    prop::collection::vec((name, value, any::<bool>()), 0..6).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(name, value, bare)| {
                if bare {
                    value
                } else {
                    format!("{name}={value}")
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

proptest! {
    #[test]
    fn decoding_any_json_never_panics(body in json_value()) {
        let _ = SnapshotIn::decode(body.to_string().as_bytes(), NOW);
    }

    #[test]
    fn accepted_snapshots_keep_their_invariants(body in snapshot_like()) {
        if let Ok(snapshot) = SnapshotIn::decode(body.to_string().as_bytes(), NOW) {
            prop_assert!(!snapshot.repo.is_empty() && snapshot.repo.chars().count() <= 256);
            prop_assert!(!snapshot.repo.chars().any(char::is_control));
            prop_assert!(!snapshot.server.chars().any(char::is_control));
            prop_assert_eq!(snapshot.repo.trim(), snapshot.repo.as_str());
            prop_assert!(snapshot.files.windows(2).all(|pair| pair[0] < pair[1]));
            prop_assert_eq!(snapshot.drift_count as usize, snapshot.files.len());
        }
    }

    #[test]
    fn decoding_any_bytes_as_json_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let parsed = SnapshotIn::decode(&bytes, NOW);
        // Whatever serde_json rejects as JSON is malformed here too, never a 422.
        if serde_json::from_slice::<Value>(&bytes).is_err() {
            prop_assert!(matches!(parsed, Err(SnapshotError::Malformed(_))));
        }
    }

    #[test]
    fn query_parsers_never_panic(query in query()) {
        let _ = HistoryRequest::from_query(Some(&query));
        let _ = StatusFilter::from_query(Some(&query));
        let _ = TargetKey::from_query(Some(&query));
        let _ = StatsRequest::from_query(Some(&query), NOW);
    }

    #[test]
    fn query_parsers_never_panic_on_any_text(query in ".{0,80}") {
        let _ = HistoryRequest::from_query(Some(&query));
        let _ = StatusFilter::from_query(Some(&query));
        let _ = StatsRequest::from_query(Some(&query), NOW);
    }

    #[test]
    fn cursors_decode_or_refuse(token in prop_oneof!["[A-Za-z0-9_-]{0,60}", ".{0,60}"]) {
        if let Some(cursor) = Cursor::decode(&token) {
            // What decodes re-encodes to a cursor that decodes to the same position.
            prop_assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        }
    }

    #[test]
    fn marker_parser_never_panics(lines in prop::collection::vec(prop_oneof![
        Just("DRIFTED_FILES=".to_owned()),
        Just("SYNC_STATUS=OUT_OF_SYNC".to_owned()),
        Just("PLAY RECAP *****".to_owned()),
        Just("ok: [host] => {\"msg\": \"DRIFTED_FILES=/etc/a,/etc/b\"}".to_owned()),
        "DRIFTED_FILES=.{0,40}",
        "SYNC_STATUS=.{0,20}",
        "(fatal|ok|changed|unreachable): \\[.{0,10}\\].{0,40}",
        ".{0,60}",
    ], 0..20)) {
        let _ = parse_playbook_output(&lines.join("\n"));
    }

    #[test]
    fn tokens_files_parse_or_refuse(text in prop_oneof![
        ".{0,200}",
        "\\[\\[tokens\\]\\]\nname = \"[a-z]{0,5}\"\n(token|sha256) = \"[0-9a-f]{0,70}\"\nscopes = \\[(\"read\"|\"write\"|\"admin\")?\\]\n(repos = \\[\"[*?a-z]{0,5}\"\\])?",
    ]) {
        let _ = Tokens::parse(&text);
    }
}
