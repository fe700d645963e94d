//! Black-box tests of `POST /api/status` validation and of the problem+json error classes
//! (SPEC: "POST /api/status" and "Errors"). Every rule of the contract has at least one test
//! that fails when the rule is removed, and every rejection is checked to leave the stored data
//! as it was.

mod common;

use axum::body::{Body, Bytes};
use axum::http::Request;
use common::*;
use gitops_status_server::Settings;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

backend_tests! {
    repo_is_required,
    server_is_required,
    repo_and_server_must_be_strings,
    repo_and_server_surrounding_whitespace_is_trimmed_and_stored_trimmed,
    empty_repo_or_server_is_rejected,
    whitespace_only_repo_or_server_is_rejected,
    repo_and_server_of_256_characters_are_accepted,
    repo_and_server_of_257_characters_are_rejected,
    control_characters_anywhere_in_repo_are_rejected,
    control_characters_anywhere_in_server_are_rejected,
    sync_status_is_required,
    sync_status_must_be_one_of_the_three_values,
    each_of_the_three_sync_statuses_is_accepted,
    files_are_optional_and_default_to_empty,
    files_must_be_an_array_of_name_objects,
    empty_file_name_is_rejected,
    file_name_of_4096_characters_is_accepted,
    file_name_of_4097_characters_is_rejected,
    control_characters_in_file_names_are_rejected,
    duplicate_file_names_are_rejected_naming_the_second_occurrence,
    ten_thousand_files_are_accepted,
    ten_thousand_and_one_files_are_rejected,
    a_cut_list_of_ten_thousand_files_with_a_larger_drift_count_is_stored,
    drift_count_beside_a_list_that_was_not_cut_must_equal_its_length,
    a_repeated_top_level_key_is_a_422_naming_it,
    a_repeated_key_in_a_file_entry_is_a_422_naming_it,
    synced_with_files_is_rejected,
    synced_with_drift_count_one_is_rejected,
    synced_with_no_files_and_drift_count_zero_is_accepted,
    unknown_field_inside_a_file_entry_is_rejected,
    drift_count_defaults_to_the_number_of_files,
    drift_count_different_from_the_given_files_is_rejected,
    negative_drift_count_is_rejected,
    non_integer_drift_count_is_rejected,
    out_of_sync_without_files_and_drift_count_three_is_accepted,
    last_check_defaults_to_the_time_of_receipt,
    last_check_without_offset_is_rejected,
    last_check_that_is_not_a_time_is_rejected,
    last_check_as_a_number_is_rejected,
    last_check_offsets_are_converted_to_utc_with_three_fraction_digits,
    last_check_four_minutes_in_the_future_is_accepted,
    last_check_six_minutes_in_the_future_is_rejected,
    optional_fields_round_trip,
    optional_fields_absent_are_null_in_the_reply,
    null_optional_fields_are_treated_as_absent,
    message_may_contain_newlines,
    revision_with_a_newline_is_rejected,
    empty_revision_is_rejected,
    optional_text_fields_must_be_strings,
    stale_after_seconds_out_of_range_is_rejected,
    stale_after_seconds_that_is_not_an_integer_is_rejected,
    stale_after_seconds_at_the_bounds_is_accepted,
    unknown_top_level_field_is_rejected,
    a_typo_in_a_field_name_is_named_in_the_errors,
    several_bad_values_are_all_named_in_one_problem,
    several_bad_types_and_unknown_fields_are_all_named_in_one_problem,
    type_errors_do_not_hide_rule_violations_in_other_fields,
    body_that_is_not_json_is_a_400_problem,
    json_that_is_not_an_object_is_a_422_naming_the_body,
    missing_content_type_is_a_415_problem,
    wrong_content_type_is_a_415_problem,
    json_content_type_with_charset_is_accepted,
    body_over_the_limit_is_a_413_problem,
    streamed_body_over_the_limit_without_content_length_is_a_413_problem,
    default_body_limit_is_one_mebibyte,
    unknown_path_is_a_404_problem,
    wrong_method_is_a_405_problem_with_allow,
    problems_carry_type_title_status_and_detail,
    a_rejected_request_for_an_existing_target_changes_nothing,
    sql_looking_path_traversal_and_unicode_strings_are_stored_verbatim,
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A valid OUT_OF_SYNC snapshot for the target web/web-01 with two files.
fn valid() -> Value {
    json!({
        "repo": "web",
        "server": "web-01",
        "sync_status": "OUT_OF_SYNC",
        "drift_count": 2,
        "files": [{ "name": "a.conf" }, { "name": "b.conf" }],
        "last_check": "2026-04-21T10:30:00Z",
    })
}

/// `body` with `key` set to `value`.
fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

/// `body` without `key`.
fn without(mut body: Value, key: &str) -> Value {
    body.as_object_mut().unwrap().remove(key);
    body
}

/// A valid ERROR snapshot (no files, no drift_count) for the given target.
fn minimal(repo: &str, server: &str) -> Value {
    json!({ "repo": repo, "server": server, "sync_status": "ERROR" })
}

fn file_entries(names: &[&str]) -> Value {
    Value::Array(names.iter().map(|name| json!({ "name": name })).collect())
}

fn many_files(count: usize) -> Value {
    Value::Array(
        (0..count)
            .map(|index| json!({ "name": format!("conf.d/file-{index:05}.conf") }))
            .collect(),
    )
}

/// A service with one valid snapshot stored, so "history unchanged" means something.
async fn seeded(backend: Backend) -> TestApp {
    seeded_with(backend, Settings::default()).await
}

async fn seeded_with(backend: Backend, settings: Settings) -> TestApp {
    let app = TestApp::on_with_settings(backend, settings).await;
    app.record(&snapshot(
        "seed-repo",
        "seed-server",
        "OUT_OF_SYNC",
        &["seed.conf"],
        "2026-04-21T09:00:00Z",
    ))
    .await;
    assert_eq!(app.all_history().await.len(), 1);
    app
}

/// A seeded service whose body limit takes 10,000 file names.
async fn seeded_with_room_for_ten_thousand_files(backend: Backend) -> TestApp {
    seeded_with(
        backend,
        Settings {
            body_limit: 8 * 1024 * 1024,
            ..Settings::default()
        },
    )
    .await
}

/// Everything observable about stored data: the whole history and the latest-status list.
async fn stored_state(app: &TestApp) -> (Vec<Value>, Vec<Value>) {
    let mut rows = app.get_rows("/status.json").await;
    // `stale_seconds` is the clock, not stored data: it grows while a target is stale.
    for row in &mut rows {
        row.as_object_mut().unwrap().remove("stale_seconds");
    }
    (app.all_history().await, rows)
}

/// Posts a raw body, asserts the problem (status and exactly these `errors[].field`s) and that
/// nothing stored changed. Returns the problem document.
async fn reject_raw(
    app: &TestApp,
    content_type: Option<&str>,
    body: impl Into<Body>,
    status: u16,
    fields: &[&str],
) -> Value {
    let before = stored_state(app).await;
    assert!(!before.0.is_empty(), "seed the app first");
    let response = app.post_raw(content_type, body).await;
    let problem = response.assert_problem(status, fields);
    let after = stored_state(app).await;
    assert_eq!(after, before, "a rejected request changed stored data");
    problem
}

/// Posts a JSON body that must be rejected with 422 naming exactly these fields.
async fn reject(app: &TestApp, body: &Value, fields: &[&str]) -> Value {
    reject_raw(app, Some("application/json"), body.to_string(), 422, fields).await
}

/// The only row of `/status.json` for this target.
async fn status_row(app: &TestApp, repo: &str, server: &str) -> Value {
    let rows: Vec<Value> = app
        .get_rows("/status.json")
        .await
        .into_iter()
        .filter(|row| row["repo"] == repo && row["server"] == server)
        .collect();
    assert_eq!(rows.len(), 1, "{repo}/{server}: {rows:?}");
    rows.into_iter().next().unwrap()
}

/// The history rows of this target, oldest first.
async fn history_rows(app: &TestApp, repo: &str, server: &str) -> Vec<Value> {
    app.all_history()
        .await
        .into_iter()
        .filter(|row| row["repo"] == repo && row["server"] == server)
        .collect()
}

/// Unix milliseconds of an RFC 3339 time.
fn millis_of(rfc3339: &str) -> i128 {
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .unwrap_or_else(|error| panic!("{rfc3339:?}: {error}"))
        .unix_timestamp_nanos()
        .div_euclid(1_000_000)
}

fn now_millis() -> i128 {
    OffsetDateTime::now_utc()
        .unix_timestamp_nanos()
        .div_euclid(1_000_000)
}

/// Asserts the server's time rendering: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn assert_utc_millis(text: &Value) {
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {text}"));
    assert_eq!(text.len(), 24, "{text}");
    assert!(text.ends_with('Z'), "{text}");
    assert_eq!(&text[19..20], ".", "{text}");
    assert!(text[20..23].chars().all(|c| c.is_ascii_digit()), "{text}");
}

// ---------------------------------------------------------------------------------------------
// repo / server
// ---------------------------------------------------------------------------------------------

async fn repo_is_required(backend: Backend) {
    let app = seeded(backend).await;
    reject(&app, &without(valid(), "repo"), &["repo"]).await;
    reject(&app, &with(valid(), "repo", Value::Null), &["repo"]).await;
}

async fn server_is_required(backend: Backend) {
    let app = seeded(backend).await;
    reject(&app, &without(valid(), "server"), &["server"]).await;
    reject(&app, &with(valid(), "server", Value::Null), &["server"]).await;
}

async fn repo_and_server_must_be_strings(backend: Backend) {
    let app = seeded(backend).await;
    reject(&app, &with(valid(), "repo", json!(42)), &["repo"]).await;
    reject(
        &app,
        &with(valid(), "server", json!(["web-01"])),
        &["server"],
    )
    .await;
}

async fn repo_and_server_surrounding_whitespace_is_trimmed_and_stored_trimmed(backend: Backend) {
    let app = seeded(backend).await;
    let body = with(
        with(valid(), "repo", json!("   web  ")),
        "server",
        json!("  web-01   "),
    );
    let reply = app.record(&body).await;
    assert_eq!(reply["repo"], "web");
    assert_eq!(reply["server"], "web-01");

    let row = status_row(&app, "web", "web-01").await;
    assert_eq!(row["snapshot_id"], reply["id"]);
    let history = history_rows(&app, "web", "web-01").await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["id"], reply["id"]);

    // The untrimmed spelling is not a separate target.
    assert!(
        app.get_rows("/status.json")
            .await
            .iter()
            .all(|row| row["repo"] != "   web  " && row["server"] != "  web-01   ")
    );
}

async fn empty_repo_or_server_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    reject(&app, &with(valid(), "repo", json!("")), &["repo"]).await;
    reject(&app, &with(valid(), "server", json!("")), &["server"]).await;
}

async fn whitespace_only_repo_or_server_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    reject(&app, &with(valid(), "repo", json!("    ")), &["repo"]).await;
    reject(&app, &with(valid(), "server", json!(" ")), &["server"]).await;
}

async fn repo_and_server_of_256_characters_are_accepted(backend: Backend) {
    let app = seeded(backend).await;
    // Multi-byte characters: 256 characters are 512 bytes, which must not count as 512.
    let repo = "é".repeat(256);
    let server = "s".repeat(256);
    let reply = app.record(&minimal(&repo, &server)).await;
    assert_eq!(reply["repo"], repo.as_str());
    assert_eq!(reply["server"], server.as_str());
    status_row(&app, &repo, &server).await;

    // The limit applies after trimming.
    let padded_repo = format!("  {}  ", "日".repeat(256));
    let reply = app.record(&minimal(&padded_repo, "padded")).await;
    assert_eq!(reply["repo"], "日".repeat(256).as_str());
}

async fn repo_and_server_of_257_characters_are_rejected(backend: Backend) {
    let app = seeded(backend).await;
    reject(&app, &minimal(&"é".repeat(257), "web-01"), &["repo"]).await;
    reject(&app, &minimal(&"r".repeat(257), "web-01"), &["repo"]).await;
    reject(&app, &minimal("web", &"é".repeat(257)), &["server"]).await;
    reject(&app, &minimal("web", &"s".repeat(257)), &["server"]).await;
}

const CONTROL_CHARACTERS: [char; 6] = ['\t', '\n', '\r', '\u{0000}', '\u{007f}', '\u{0085}'];

/// `c` at the start, in the middle and at the end of a name.
fn placements(c: char) -> [String; 3] {
    [format!("{c}web"), format!("we{c}b"), format!("web{c}")]
}

async fn control_characters_anywhere_in_repo_are_rejected(backend: Backend) {
    let app = seeded(backend).await;
    for c in CONTROL_CHARACTERS {
        for repo in placements(c) {
            reject(&app, &minimal(&repo, "web-01"), &["repo"]).await;
        }
    }
}

async fn control_characters_anywhere_in_server_are_rejected(backend: Backend) {
    let app = seeded(backend).await;
    for c in CONTROL_CHARACTERS {
        for server in placements(c) {
            reject(&app, &minimal("web", &server), &["server"]).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// sync_status
// ---------------------------------------------------------------------------------------------

async fn sync_status_is_required(backend: Backend) {
    let app = seeded(backend).await;
    reject(&app, &without(valid(), "sync_status"), &["sync_status"]).await;
    reject(
        &app,
        &with(valid(), "sync_status", Value::Null),
        &["sync_status"],
    )
    .await;
}

async fn sync_status_must_be_one_of_the_three_values(backend: Backend) {
    let app = seeded(backend).await;
    for bad in [
        json!("synced"),
        json!("Synced"),
        json!("out_of_sync"),
        json!("STALE"),
        json!("UNKNOWN"),
        json!(""),
        json!(0),
        json!(true),
    ] {
        let body = minimal("web", "web-01");
        reject(&app, &with(body, "sync_status", bad), &["sync_status"]).await;
    }
}

async fn each_of_the_three_sync_statuses_is_accepted(backend: Backend) {
    let app = seeded(backend).await;
    let synced = app
        .record(&with(minimal("web", "a"), "sync_status", json!("SYNCED")))
        .await;
    assert_eq!(synced["sync_status"], "SYNCED");
    let drift = app
        .record(&with(
            with(minimal("web", "b"), "sync_status", json!("OUT_OF_SYNC")),
            "files",
            file_entries(&["x.conf"]),
        ))
        .await;
    assert_eq!(drift["sync_status"], "OUT_OF_SYNC");
    let error = app.record(&minimal("web", "c")).await;
    assert_eq!(error["sync_status"], "ERROR");
}

// ---------------------------------------------------------------------------------------------
// files
// ---------------------------------------------------------------------------------------------

async fn files_are_optional_and_default_to_empty(backend: Backend) {
    let app = seeded(backend).await;
    let reply = app.record(&minimal("web", "web-01")).await;
    assert_eq!(reply["files"], json!([]));
    assert_eq!(reply["drift_count"], 0);
    assert_eq!(reply["files_text"], "");

    let synced = app
        .record(&with(
            minimal("web", "web-02"),
            "sync_status",
            json!("SYNCED"),
        ))
        .await;
    assert_eq!(synced["files"], json!([]));
    assert_eq!(synced["drift_count"], 0);
    assert_eq!(status_row(&app, "web", "web-02").await["files"], json!([]));
}

async fn files_must_be_an_array_of_name_objects(backend: Backend) {
    let app = seeded(backend).await;
    let body = without(valid(), "drift_count");
    reject(
        &app,
        &with(body.clone(), "files", json!("a.conf")),
        &["files"],
    )
    .await;
    reject(
        &app,
        &with(body.clone(), "files", json!({ "name": "a.conf" })),
        &["files"],
    )
    .await;
    reject(
        &app,
        &with(
            body.clone(),
            "files",
            json!([{ "name": "a.conf" }, "b.conf"]),
        ),
        &["files[1]"],
    )
    .await;
    reject(
        &app,
        &with(body.clone(), "files", json!([{}])),
        &["files[0].name"],
    )
    .await;
    reject(
        &app,
        &with(body, "files", json!([{ "name": 7 }])),
        &["files[0].name"],
    )
    .await;
}

async fn empty_file_name_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    let body = with(valid(), "files", file_entries(&["a.conf", ""]));
    reject(&app, &body, &["files[1].name"]).await;
}

async fn file_name_of_4096_characters_is_accepted(backend: Backend) {
    let app = seeded(backend).await;
    let long_ascii = "f".repeat(4096);
    let long_multibyte = "é".repeat(4096);
    let body = with(
        valid(),
        "files",
        file_entries(&[&long_ascii, &long_multibyte]),
    );
    let reply = app.record(&body).await;
    let names: Vec<&str> = reply["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&long_ascii.as_str()));
    assert!(names.contains(&long_multibyte.as_str()));
}

async fn file_name_of_4097_characters_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    let too_long = "é".repeat(4097);
    let body = with(valid(), "files", file_entries(&["a.conf", &too_long]));
    reject(&app, &body, &["files[1].name"]).await;
    let too_long = "f".repeat(4097);
    let body = with(valid(), "files", file_entries(&[&too_long, "a.conf"]));
    reject(&app, &body, &["files[0].name"]).await;
}

async fn control_characters_in_file_names_are_rejected(backend: Backend) {
    let app = seeded(backend).await;
    for c in CONTROL_CHARACTERS {
        for name in placements(c) {
            let body = with(valid(), "files", file_entries(&["ok.conf", &name]));
            reject(&app, &body, &["files[1].name"]).await;
        }
    }
}

async fn duplicate_file_names_are_rejected_naming_the_second_occurrence(backend: Backend) {
    let app = seeded(backend).await;
    let body = without(
        with(
            valid(),
            "files",
            file_entries(&["a.conf", "b.conf", "a.conf"]),
        ),
        "drift_count",
    );
    reject(&app, &body, &["files[2].name"]).await;
}

async fn ten_thousand_files_are_accepted(backend: Backend) {
    let app = seeded_with_room_for_ten_thousand_files(backend).await;
    let body = with(
        with(valid(), "files", many_files(10_000)),
        "drift_count",
        json!(10_000),
    );
    let reply = app.record(&body).await;
    assert_eq!(reply["drift_count"], 10_000);
    assert_eq!(reply["files"].as_array().unwrap().len(), 10_000);
    let row = status_row(&app, "web", "web-01").await;
    assert_eq!(row["files"].as_array().unwrap().len(), 10_000);
}

async fn ten_thousand_and_one_files_are_rejected(backend: Backend) {
    let app = seeded_with_room_for_ten_thousand_files(backend).await;
    let body = without(with(valid(), "files", many_files(10_001)), "drift_count");
    reject(&app, &body, &["files"]).await;
}

/// SPEC: the `report` client cuts a longer list to the first 10,000 names and sends the true count.
async fn a_cut_list_of_ten_thousand_files_with_a_larger_drift_count_is_stored(backend: Backend) {
    let app = seeded_with_room_for_ten_thousand_files(backend).await;
    let body = with(
        with(valid(), "files", many_files(10_000)),
        "drift_count",
        json!(12_000),
    );
    let reply = app.record(&body).await;
    assert_eq!(reply["drift_count"], 12_000);
    assert_eq!(reply["files"].as_array().unwrap().len(), 10_000);
    let row = status_row(&app, "web", "web-01").await;
    assert_eq!(row["drift_count"], 12_000);
    assert_eq!(row["files"].as_array().unwrap().len(), 10_000);
    let history = history_rows(&app, "web", "web-01").await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["drift_count"], 12_000);
}

async fn drift_count_beside_a_list_that_was_not_cut_must_equal_its_length(backend: Backend) {
    let app = seeded_with_room_for_ten_thousand_files(backend).await;
    for (files, drift_count) in [(10_000, 9_999), (9_999, 12_000), (9_999, 10_000)] {
        let body = with(
            with(valid(), "files", many_files(files)),
            "drift_count",
            json!(drift_count),
        );
        reject(&app, &body, &["drift_count"]).await;
    }
}

/// SPEC "Errors": an audit record must not depend on which copy of a key a parser keeps.
async fn a_repeated_top_level_key_is_a_422_naming_it(backend: Backend) {
    let app = seeded(backend).await;
    let body = r#"{"repo": "web", "server": "web-01", "sync_status": "ERROR", "repo": "other"}"#;
    let problem = reject_raw(&app, Some("application/json"), body, 422, &["repo"]).await;
    assert_eq!(
        problem["errors"],
        json!([{ "field": "repo", "message": "duplicate key" }])
    );
    // Even when both copies agree, and beside other bad fields, which are still named.
    let body = r#"{"repo": "web", "server": "web-01", "sync_status": "ERROR",
                   "sync_status": "ERROR", "revision": ""}"#;
    reject_raw(
        &app,
        Some("application/json"),
        body,
        422,
        &["sync_status", "revision"],
    )
    .await;
}

async fn a_repeated_key_in_a_file_entry_is_a_422_naming_it(backend: Backend) {
    let app = seeded(backend).await;
    let body = r#"{"repo": "web", "server": "web-01", "sync_status": "OUT_OF_SYNC",
                   "files": [{"name": "a.conf"}, {"name": "b.conf", "name": "c.conf"}]}"#;
    let problem = reject_raw(
        &app,
        Some("application/json"),
        body,
        422,
        &["files[1].name"],
    )
    .await;
    assert_eq!(
        problem["errors"],
        json!([{ "field": "files[1].name", "message": "duplicate key" }])
    );
}

async fn synced_with_files_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    let body = json!({
        "repo": "web", "server": "web-01", "sync_status": "SYNCED",
        "drift_count": 1, "files": [{ "name": "a.conf" }],
    });
    // Both the files and the drift_count break "SYNCED requires no files and drift_count 0".
    reject(&app, &body, &["files", "drift_count"]).await;
}

async fn synced_with_drift_count_one_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    let body =
        json!({ "repo": "web", "server": "web-01", "sync_status": "SYNCED", "drift_count": 1 });
    reject(&app, &body, &["drift_count"]).await;
}

async fn synced_with_no_files_and_drift_count_zero_is_accepted(backend: Backend) {
    let app = seeded(backend).await;
    let body = json!({
        "repo": "web", "server": "web-01", "sync_status": "SYNCED",
        "drift_count": 0, "files": [],
    });
    let reply = app.record(&body).await;
    assert_eq!(reply["sync_status"], "SYNCED");
    assert_eq!(reply["drift_count"], 0);
}

async fn unknown_field_inside_a_file_entry_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    let body = with(
        valid(),
        "files",
        json!([{ "name": "a.conf", "mode": "0644" }, { "name": "b.conf" }]),
    );
    reject(&app, &body, &["files[0].mode"]).await;
}

// ---------------------------------------------------------------------------------------------
// drift_count
// ---------------------------------------------------------------------------------------------

async fn drift_count_defaults_to_the_number_of_files(backend: Backend) {
    let app = seeded(backend).await;
    let body = without(
        with(valid(), "files", file_entries(&["a", "b", "c"])),
        "drift_count",
    );
    let reply = app.record(&body).await;
    assert_eq!(reply["drift_count"], 3);
    assert_eq!(status_row(&app, "web", "web-01").await["drift_count"], 3);
}

async fn drift_count_different_from_the_given_files_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    reject(
        &app,
        &with(valid(), "drift_count", json!(3)),
        &["drift_count"],
    )
    .await;
    reject(
        &app,
        &with(valid(), "drift_count", json!(1)),
        &["drift_count"],
    )
    .await;
    // An explicit empty list is "files given" too.
    let body = with(with(valid(), "files", json!([])), "drift_count", json!(1));
    reject(&app, &body, &["drift_count"]).await;
}

async fn negative_drift_count_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    let body = with(without(valid(), "files"), "drift_count", json!(-1));
    reject(&app, &body, &["drift_count"]).await;
}

async fn non_integer_drift_count_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    for bad in [json!(1.5), json!("2"), json!(true), json!([2])] {
        let body = with(valid(), "drift_count", bad);
        reject(&app, &body, &["drift_count"]).await;
    }
}

async fn out_of_sync_without_files_and_drift_count_three_is_accepted(backend: Backend) {
    let app = seeded(backend).await;
    let body = json!({
        "repo": "web", "server": "web-01", "sync_status": "OUT_OF_SYNC", "drift_count": 3,
    });
    let reply = app.record(&body).await;
    assert_eq!(reply["drift_count"], 3);
    assert_eq!(reply["files"], json!([]));
    assert_eq!(status_row(&app, "web", "web-01").await["drift_count"], 3);
}

// ---------------------------------------------------------------------------------------------
// last_check
// ---------------------------------------------------------------------------------------------

async fn last_check_defaults_to_the_time_of_receipt(backend: Backend) {
    let app = seeded(backend).await;
    let before = now_millis();
    let reply = app.record(&without(valid(), "last_check")).await;
    let after = now_millis();
    assert_utc_millis(&reply["last_check"]);
    let at = millis_of(reply["last_check"].as_str().unwrap());
    assert!(
        before <= at && at <= after,
        "{before} <= {at} <= {after}: {reply}"
    );
    let row = status_row(&app, "web", "web-01").await;
    assert_eq!(row["last_check"], reply["last_check"]);
}

async fn last_check_without_offset_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    for bad in [
        "2026-04-21T10:30:00",
        "2026-04-21T10:30:00.123",
        "2026-04-21",
        "2026-04-21 10:30:00",
    ] {
        reject(
            &app,
            &with(valid(), "last_check", json!(bad)),
            &["last_check"],
        )
        .await;
    }
}

async fn last_check_that_is_not_a_time_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    for bad in [json!("yesterday"), json!(""), json!("now")] {
        reject(&app, &with(valid(), "last_check", bad), &["last_check"]).await;
    }
}

async fn last_check_as_a_number_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    for bad in [json!(1_776_767_400_000_i64), json!(1_776_767_400)] {
        reject(&app, &with(valid(), "last_check", bad), &["last_check"]).await;
    }
}

async fn last_check_offsets_are_converted_to_utc_with_three_fraction_digits(backend: Backend) {
    let app = seeded(backend).await;
    for (server, sent, stored) in [
        (
            "micros",
            "2026-04-21T12:30:00.123456+02:00",
            "2026-04-21T10:30:00.123Z",
        ),
        ("zulu", "2026-04-21T10:30:00Z", "2026-04-21T10:30:00.000Z"),
        (
            "negative",
            "2026-04-21T05:00:00.5-05:30",
            "2026-04-21T10:30:00.500Z",
        ),
        (
            "lowercase",
            "2026-04-21t10:30:00.1z",
            "2026-04-21T10:30:00.100Z",
        ),
    ] {
        let reply = app
            .record(&with(
                with(valid(), "server", json!(server)),
                "last_check",
                json!(sent),
            ))
            .await;
        assert_eq!(reply["last_check"], stored, "{sent}");
        assert_utc_millis(&reply["received_at"]);
        let row = status_row(&app, "web", server).await;
        assert_eq!(row["last_check"], stored, "{sent}");
        let history = history_rows(&app, "web", server).await;
        assert_eq!(history[0]["last_check"], stored, "{sent}");
    }
}

async fn last_check_four_minutes_in_the_future_is_accepted(backend: Backend) {
    let app = seeded(backend).await;
    let sent = at_offset(4 * 60);
    let reply = app.record(&with(valid(), "last_check", json!(sent))).await;
    assert_eq!(reply["last_check"], rendered(&sent));
}

async fn last_check_six_minutes_in_the_future_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    let body = with(valid(), "last_check", json!(at_offset(6 * 60)));
    reject(&app, &body, &["last_check"]).await;
}

// ---------------------------------------------------------------------------------------------
// revision, run_url, message, stale_after_seconds
// ---------------------------------------------------------------------------------------------

async fn optional_fields_round_trip(backend: Backend) {
    let app = seeded(backend).await;
    let message = "ssh: connect to host web-01 port 22: Connection refused\nretrying\r\n\tgave up";
    let body = json!({
        "repo": "web",
        "server": "web-01",
        "sync_status": "ERROR",
        "last_check": "2026-04-21T10:30:00Z",
        "revision": "3f2c1ab",
        "run_url": "https://ci.example.org/repos/7/pipeline/912",
        "message": message,
        "stale_after_seconds": 600,
    });
    let reply = app.record(&body).await;
    let history = history_rows(&app, "web", "web-01").await;
    assert_eq!(history.len(), 1);
    let row = status_row(&app, "web", "web-01").await;
    for stored in [&reply, &history[0]] {
        assert_eq!(stored["revision"], "3f2c1ab", "{stored}");
        assert_eq!(
            stored["run_url"], "https://ci.example.org/repos/7/pipeline/912",
            "{stored}"
        );
        assert_eq!(stored["message"], message, "{stored}");
        assert_eq!(stored["stale_after_seconds"], 600, "{stored}");
    }
    assert_eq!(row["revision"], "3f2c1ab");
    assert_eq!(
        row["run_url"],
        "https://ci.example.org/repos/7/pipeline/912"
    );
    assert_eq!(row["message"], message);
    assert_eq!(row["stale_after_seconds"], 600);
}

async fn optional_fields_absent_are_null_in_the_reply(backend: Backend) {
    let app = seeded(backend).await;
    let reply = app.record(&minimal("web", "web-01")).await;
    for field in ["revision", "run_url", "message"] {
        assert_eq!(reply[field], Value::Null, "{field}: {reply}");
    }
}

async fn null_optional_fields_are_treated_as_absent(backend: Backend) {
    let app = seeded(backend).await;
    let body = json!({
        "repo": "web",
        "server": "web-01",
        "sync_status": "OUT_OF_SYNC",
        "drift_count": null,
        "files": null,
        "last_check": null,
        "revision": null,
        "run_url": null,
        "message": null,
        "stale_after_seconds": null,
    });
    let before = now_millis();
    let reply = app.record(&body).await;
    let after = now_millis();
    assert_eq!(reply["files"], json!([]));
    assert_eq!(reply["drift_count"], 0);
    let at = millis_of(reply["last_check"].as_str().unwrap());
    assert!(before <= at && at <= after, "{reply}");
    for field in ["revision", "run_url", "message"] {
        assert_eq!(reply[field], Value::Null, "{field}: {reply}");
    }
    // The server's default stale-after applies.
    assert_eq!(
        status_row(&app, "web", "web-01").await["stale_after_seconds"],
        600
    );
}

async fn message_may_contain_newlines(backend: Backend) {
    let app = seeded(backend).await;
    let message = "line one\nline two\n";
    let reply = app
        .record(&with(minimal("web", "web-01"), "message", json!(message)))
        .await;
    assert_eq!(reply["message"], message);
    assert_eq!(
        history_rows(&app, "web", "web-01").await[0]["message"],
        message
    );
}

async fn revision_with_a_newline_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    let body = with(valid(), "revision", json!("3f2c1ab\nmalicious"));
    reject(&app, &body, &["revision"]).await;
}

async fn empty_revision_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    reject(&app, &with(valid(), "revision", json!("")), &["revision"]).await;
}

async fn optional_text_fields_must_be_strings(backend: Backend) {
    let app = seeded(backend).await;
    reject(&app, &with(valid(), "revision", json!(123)), &["revision"]).await;
    reject(&app, &with(valid(), "run_url", json!(true)), &["run_url"]).await;
    reject(&app, &with(valid(), "message", json!(["a"])), &["message"]).await;
}

async fn stale_after_seconds_out_of_range_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    for bad in [json!(0), json!(-5), json!(31_536_001)] {
        let body = with(valid(), "stale_after_seconds", bad);
        reject(&app, &body, &["stale_after_seconds"]).await;
    }
}

async fn stale_after_seconds_that_is_not_an_integer_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    for bad in [json!("600"), json!(1.5)] {
        let body = with(valid(), "stale_after_seconds", bad);
        reject(&app, &body, &["stale_after_seconds"]).await;
    }
}

async fn stale_after_seconds_at_the_bounds_is_accepted(backend: Backend) {
    let app = seeded(backend).await;
    for (server, seconds) in [("one", 1), ("year", 31_536_000)] {
        let body = with(
            with(valid(), "server", json!(server)),
            "stale_after_seconds",
            json!(seconds),
        );
        let reply = app.record(&body).await;
        assert_eq!(reply["stale_after_seconds"], seconds);
    }
}

// ---------------------------------------------------------------------------------------------
// Unknown fields, several errors at once
// ---------------------------------------------------------------------------------------------

async fn unknown_top_level_field_is_rejected(backend: Backend) {
    let app = seeded(backend).await;
    reject(&app, &with(valid(), "colour", json!("red")), &["colour"]).await;
    reject(&app, &with(valid(), "extra", Value::Null), &["extra"]).await;
}

async fn a_typo_in_a_field_name_is_named_in_the_errors(backend: Backend) {
    let app = seeded(backend).await;
    let mut body = without(valid(), "sync_status");
    body["sync_stauts"] = json!("OUT_OF_SYNC");
    reject(&app, &body, &["sync_stauts", "sync_status"]).await;
}

async fn several_bad_values_are_all_named_in_one_problem(backend: Backend) {
    let app = seeded(backend).await;
    let body = json!({
        "repo": "",
        "server": "web\t01",
        "sync_status": "OUT_OF_SYNC",
        "files": [{ "name": "a.conf" }, { "name": "" }, { "name": "a.conf" }],
        "last_check": "yesterday",
        "revision": "",
        "stale_after_seconds": 0,
    });
    let problem = reject(
        &app,
        &body,
        &[
            "repo",
            "server",
            "files[1].name",
            "files[2].name",
            "last_check",
            "revision",
            "stale_after_seconds",
        ],
    )
    .await;
    assert_eq!(problem["type"], "/problems/invalid-snapshot");
}

async fn several_bad_types_and_unknown_fields_are_all_named_in_one_problem(backend: Backend) {
    let app = seeded(backend).await;
    let body = json!({
        "server": 7,
        "sync_status": "synced",
        "drift_count": "2",
        "files": [{ "name": "a.conf", "mode": "0644" }],
        "colour": "red",
    });
    reject(
        &app,
        &body,
        &[
            "repo",
            "server",
            "sync_status",
            "drift_count",
            "files[0].mode",
            "colour",
        ],
    )
    .await;
}

/// SPEC "Errors": `errors` names *every* bad field, so a type error in one field must not hide a
/// rule violation in another.
async fn type_errors_do_not_hide_rule_violations_in_other_fields(backend: Backend) {
    let app = seeded(backend).await;
    let body = json!({
        "repo": "",
        "server": "web\t01",
        "sync_status": "synced",
        "files": [{ "name": "" }],
        "last_check": "yesterday",
        "stale_after_seconds": 0,
        "colour": "red",
    });
    reject(
        &app,
        &body,
        &[
            "repo",
            "server",
            "sync_status",
            "files[0].name",
            "last_check",
            "stale_after_seconds",
            "colour",
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Error classes
// ---------------------------------------------------------------------------------------------

async fn body_that_is_not_json_is_a_400_problem(backend: Backend) {
    let app = seeded(backend).await;
    for bad in [
        r#"{"repo":"#,
        "hello",
        "",
        "{'repo': 'web'}",
        r#"{"repo":"web",}"#,
    ] {
        let problem = reject_raw(&app, Some("application/json"), bad.to_owned(), 400, &[]).await;
        assert_eq!(problem["type"], "/problems/malformed-json", "{bad:?}");
    }
}

async fn json_that_is_not_an_object_is_a_422_naming_the_body(backend: Backend) {
    let app = seeded(backend).await;
    for bad in [
        "[]",
        r#""x""#,
        "42",
        "null",
        "true",
        &format!("[{}]", valid()),
    ] {
        reject_raw(
            &app,
            Some("application/json"),
            bad.to_owned(),
            422,
            &["body"],
        )
        .await;
    }
}

async fn missing_content_type_is_a_415_problem(backend: Backend) {
    let app = seeded(backend).await;
    reject_raw(&app, None, valid().to_string(), 415, &[]).await;
}

async fn wrong_content_type_is_a_415_problem(backend: Backend) {
    let app = seeded(backend).await;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ] {
        reject_raw(&app, Some(content_type), valid().to_string(), 415, &[]).await;
    }
}

async fn json_content_type_with_charset_is_accepted(backend: Backend) {
    let app = seeded(backend).await;
    let response = app
        .post_raw(Some("application/json; charset=utf-8"), valid().to_string())
        .await;
    assert_eq!(response.status.as_u16(), 200, "{}", response.text());
}

/// A valid snapshot whose JSON is exactly `bytes` long (`bytes` between about 200 and 16,000),
/// padded through its `message`.
fn padded_body(bytes: usize) -> String {
    let empty = with(valid(), "message", json!("")).to_string();
    let body = with(valid(), "message", json!("m".repeat(bytes - empty.len()))).to_string();
    assert_eq!(body.len(), bytes);
    body
}

/// A valid snapshot whose JSON is at least `bytes` long, padded through long file names.
fn padded_files_body(bytes: usize) -> String {
    let names: Vec<String> = (0..=bytes / 4000)
        .map(|index| format!("{index:05}{}", "f".repeat(3990)))
        .collect();
    let files: Vec<&str> = names.iter().map(String::as_str).collect();
    let body = snapshot("web", "big", "OUT_OF_SYNC", &files, "2026-04-21T10:30:00Z").to_string();
    assert!(body.len() >= bytes);
    body
}

async fn body_over_the_limit_is_a_413_problem(backend: Backend) {
    let body = padded_body(2000);
    assert!(body.len() >= 2000);

    // The same body is fine under the default limit, so only its size is at fault.
    let roomy = TestApp::on(backend).await;
    roomy.record(&serde_json::from_str(&body).unwrap()).await;

    let app = seeded_with(
        backend,
        Settings {
            body_limit: 1024,
            ..Settings::default()
        },
    )
    .await;
    let problem = reject_raw(&app, Some("application/json"), body, 413, &[]).await;
    assert_eq!(problem["type"], "/problems/payload-too-large");
}

async fn streamed_body_over_the_limit_without_content_length_is_a_413_problem(backend: Backend) {
    let app = seeded_with(
        backend,
        Settings {
            body_limit: 1024,
            ..Settings::default()
        },
    )
    .await;
    let body = padded_body(2000).into_bytes();
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(100)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    let stream = Body::from_stream(futures_util::stream::iter(chunks));
    reject_raw(&app, Some("application/json"), stream, 413, &[]).await;
}

async fn default_body_limit_is_one_mebibyte(backend: Backend) {
    let app = seeded(backend).await;
    let over = padded_files_body(1024 * 1024 + 1);
    reject_raw(&app, Some("application/json"), over, 413, &[]).await;

    let under = padded_files_body(1000 * 1000);
    assert!(under.len() < 1024 * 1024, "{}", under.len());
    let response = app.post_raw(Some("application/json"), under).await;
    assert_eq!(response.status.as_u16(), 200, "{}", response.text());
}

async fn unknown_path_is_a_404_problem(backend: Backend) {
    let app = seeded(backend).await;
    let before = stored_state(&app).await;
    for (method, uri) in [
        ("GET", "/nope"),
        ("POST", "/api/nope"),
        ("GET", "/api/status/1"),
    ] {
        let response = app
            .request(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .header("content-type", "application/json")
                    .body(Body::from(valid().to_string()))
                    .unwrap(),
            )
            .await;
        let problem = response.assert_problem(404, &[]);
        assert_eq!(problem["type"], "/problems/not-found", "{method} {uri}");
    }
    assert_eq!(stored_state(&app).await, before);
}

async fn wrong_method_is_a_405_problem_with_allow(backend: Backend) {
    let app = seeded(backend).await;
    let before = stored_state(&app).await;
    for (method, uri, allowed) in [
        ("DELETE", "/status.json", "GET"),
        ("GET", "/api/status", "POST"),
        ("PUT", "/api/status", "POST"),
        ("DELETE", "/history", "GET"),
    ] {
        let response = app
            .request(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        let problem = response.assert_problem(405, &[]);
        assert_eq!(problem["type"], "/problems/method-not-allowed");
        let allow = response
            .header("allow")
            .unwrap_or_else(|| panic!("{method} {uri}: no Allow header"));
        assert!(
            allow.split(',').any(|m| m.trim() == allowed),
            "{method} {uri}: Allow: {allow}"
        );
    }
    assert_eq!(
        stored_state(&app).await,
        before,
        "a refused method changed data"
    );
}

async fn problems_carry_type_title_status_and_detail(backend: Backend) {
    let app = seeded(backend).await;
    let problem = reject(&app, &with(valid(), "repo", json!("")), &["repo"]).await;
    assert_eq!(problem["status"], 422);
    assert!(!problem["title"].as_str().unwrap().is_empty());
    assert!(
        problem["detail"].as_str().unwrap().contains("repo"),
        "{problem}"
    );
    let error = &problem["errors"][0];
    assert!(!error["message"].as_str().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Nothing stored on rejection; hostile strings stored verbatim
// ---------------------------------------------------------------------------------------------

async fn a_rejected_request_for_an_existing_target_changes_nothing(backend: Backend) {
    let app = seeded(backend).await;
    // Valid target and content, one bad value: neither a new snapshot nor a changed latest.
    let body = with(
        snapshot(
            "seed-repo",
            "seed-server",
            "SYNCED",
            &[],
            "2026-04-21T09:30:00Z",
        ),
        "stale_after_seconds",
        json!(0),
    );
    reject(&app, &body, &["stale_after_seconds"]).await;
    let row = status_row(&app, "seed-repo", "seed-server").await;
    assert_eq!(row["sync_status"], "OUT_OF_SYNC");
}

async fn sql_looking_path_traversal_and_unicode_strings_are_stored_verbatim(backend: Backend) {
    let app = seeded(backend).await;
    let repo = "x'); drop table snapshots; --";
    let server = "sérveur-日本";
    let files = [
        "../../etc/passwd",
        "x'); drop table snapshots; --",
        "sérveur-日本/🙂.conf",
        "%2e%2e/%00",
        "' OR '1'='1",
    ];
    let body = snapshot(repo, server, "OUT_OF_SYNC", &files, "2026-04-21T10:30:00Z");
    let reply = app.record(&body).await;
    assert_eq!(reply["repo"], repo);
    assert_eq!(reply["server"], server);

    let mut expected: Vec<&str> = files.to_vec();
    expected.sort_unstable();
    let names = |stored: &Value| -> Vec<String> {
        let mut names: Vec<String> = stored["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|file| file["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort_unstable();
        names
    };
    assert_eq!(names(&reply), expected);

    let history = history_rows(&app, repo, server).await;
    assert_eq!(history.len(), 1);
    assert_eq!(names(&history[0]), expected);
    let row = status_row(&app, repo, server).await;
    assert_eq!(names(&row), expected);

    // The other target and the tables are still there.
    assert_eq!(app.all_history().await.len(), 2);
    status_row(&app, "seed-repo", "seed-server").await;

    let traversal = app
        .record(&snapshot(
            "../../etc/passwd",
            "..\\..\\windows",
            "ERROR",
            &[],
            "2026-04-21T10:30:00Z",
        ))
        .await;
    assert_eq!(traversal["repo"], "../../etc/passwd");
    assert_eq!(traversal["server"], "..\\..\\windows");
    status_row(&app, "../../etc/passwd", "..\\..\\windows").await;
}
