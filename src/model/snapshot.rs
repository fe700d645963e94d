//! `POST /api/status`'s body: the snapshot a CI job sends, read leniently in one pass, and its
//! validation into a `NewSnapshot`. `SnapshotIn` is the one statement of the schema: its fields
//! give the accepted keys and JSON types (and the OpenAPI schema), `validate` the rules.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde::de::{MapAccess, SeqAccess};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::FieldError;
use super::lenient::{Lenient, Shape, read_object};
use crate::timestamp::Timestamp;

/// Longest `repo` or `server`, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 256;
/// Longest file name, in characters.
pub const MAX_FILE_NAME_CHARS: usize = 4096;
/// Most files one snapshot may list. The `report` client cuts a longer list to this many names
/// and sends the true count as `drift_count`.
pub const MAX_FILES: usize = 10_000;
/// How far ahead of the server's clock a `last_check` may be.
pub const MAX_FUTURE_SKEW_MILLIS: i64 = 5 * 60 * 1000;
/// Longest `revision`, in characters.
pub const MAX_REVISION_CHARS: usize = 256;
/// Longest `run_url`, in characters.
pub const MAX_RUN_URL_CHARS: usize = 2048;
/// Longest `message`, in characters.
pub const MAX_MESSAGE_CHARS: usize = 16_384;
/// Largest per-target `stale_after_seconds`: one year.
pub const MAX_STALE_AFTER_SECONDS: i64 = 365 * 24 * 3600;

/// Result of one drift check. `ERROR` means the check itself failed (e.g. the host was unreachable);
/// it is not drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncStatus {
    Synced,
    OutOfSync,
    Error,
}

impl SyncStatus {
    pub const ALL: [Self; 3] = [Self::Synced, Self::OutOfSync, Self::Error];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Synced => "SYNCED",
            Self::OutOfSync => "OUT_OF_SYNC",
            Self::Error => "ERROR",
        }
    }

    /// The stored code, which is also the Pushgateway-era metric value (0 synced, 1 drift, 2 error).
    pub const fn code(self) -> i64 {
        match self {
            Self::Synced => 0,
            Self::OutOfSync => 1,
            Self::Error => 2,
        }
    }

    pub const fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::Synced),
            1 => Some(Self::OutOfSync),
            2 => Some(Self::Error),
            _ => None,
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

/// One drifted file, named relative to the managed root (`rsyslog.conf`, not `/etc/rsyslog.conf`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    #[schema(example = "rsyslog.conf")]
    pub name: String,
}

/// A drift-check result as CI posts it: the seed's format plus optional `revision`, `run_url`,
/// `message` and `stale_after_seconds`. Unknown fields and repeated keys are rejected.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "repo": "rsyslog",
    "server": "rsyslog-lab",
    "sync_status": "OUT_OF_SYNC",
    "drift_count": 2,
    "files": [{ "name": "rsyslog.conf" }, { "name": "rsyslog.d/30-lab.conf" }],
    "last_check": "2026-04-21T10:30:00Z"
}))]
pub struct SnapshotIn {
    /// Repository that owns the configuration; trimmed, 1..=256 characters, no control characters.
    #[schema(value_type = String)]
    pub repo: Lenient<String>,
    /// Server the check ran against; trimmed, 1..=256 characters, no control characters.
    #[schema(value_type = String)]
    pub server: Lenient<String>,
    #[schema(value_type = SyncStatus)]
    pub sync_status: Lenient<SyncStatus>,
    /// Number of drifted files; defaults to the length of `files`, and must equal it when `files`
    /// is present, except for a cut list: exactly 10,000 files with a larger `drift_count`.
    /// 0 for `SYNCED`.
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub drift_count: Lenient<i64>,
    /// Drifted files, at most 10,000, no duplicates, none for `SYNCED`. Stored as a set, sorted by name.
    #[schema(value_type = Option<Vec<FileEntry>>, max_items = 10000)]
    pub files: Lenient<Vec<Lenient<FileEntryIn>>>,
    /// When the check ran: RFC 3339 with an offset, at most 5 minutes ahead of the server's clock.
    /// Defaults to the time the server received the snapshot.
    #[schema(value_type = Option<String>, format = DateTime, example = "2026-04-21T10:30:00Z")]
    pub last_check: Lenient<String>,
    /// Commit the checked configuration came from.
    #[schema(value_type = Option<String>, example = "3f2c1ab", max_length = 256)]
    pub revision: Lenient<String>,
    /// Link to the CI run that produced the snapshot.
    #[schema(
        value_type = Option<String>,
        example = "https://ci.example.org/repos/7/pipeline/912",
        max_length = 2048
    )]
    pub run_url: Lenient<String>,
    /// Free text, typically why a check ended in `ERROR`.
    #[schema(value_type = Option<String>, max_length = 16384)]
    pub message: Lenient<String>,
    /// Per-target override of the server's `--stale-after`, in seconds (1..=31536000).
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 31536000)]
    pub stale_after_seconds: Lenient<i64>,
    /// Unknown and repeated keys, named.
    #[serde(skip)]
    pub(super) rejected_keys: Vec<FieldError>,
}

/// One entry of `files` as posted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntryIn {
    pub name: Lenient<String>,
    #[serde(skip)]
    rejected_keys: Vec<FieldError>,
}

impl<'de> Shape<'de> for SnapshotIn {
    const EXPECTED: &'static str = "must be a JSON object";

    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let (mut snapshot, rejected) = read_object::<Self, A>(map)?;
        snapshot.rejected_keys = rejected;
        Ok(Some(snapshot))
    }
}

impl<'de> Shape<'de> for FileEntryIn {
    const EXPECTED: &'static str = "must be an object with a name";

    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let (mut entry, rejected) = read_object::<Self, A>(map)?;
        entry.rejected_keys = rejected;
        Ok(Some(entry))
    }
}

impl<'de> Shape<'de> for Vec<Lenient<FileEntryIn>> {
    const EXPECTED: &'static str = "must be an array of {\"name\": string} objects";

    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut entries = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_FILES));
        while let Some(entry) = seq.next_element()? {
            entries.push(entry);
        }
        Ok(Some(entries))
    }
}

impl Shape<'_> for SyncStatus {
    const EXPECTED: &'static str = "must be one of SYNCED, OUT_OF_SYNC, ERROR";

    fn from_text(text: &str) -> Option<Self> {
        Self::parse(text)
    }
}

/// Why a request body is not a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not JSON at all: a 400.
    #[error("the request body is not valid JSON: {0}")]
    Malformed(#[source] serde_json::Error),
    /// JSON that breaks the schema or the rules, every bad field named: a 422.
    #[error("the snapshot breaks the schema or its rules")]
    Invalid(Vec<FieldError>),
}

/// A validated snapshot, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSnapshot {
    pub repo: String,
    pub server: String,
    pub sync_status: SyncStatus,
    pub drift_count: i64,
    /// Sorted by name, no duplicates.
    pub files: Vec<String>,
    pub last_check: Timestamp,
    /// True when the client sent no `last_check` and the server's clock supplied it.
    pub last_check_defaulted: bool,
    pub received_at: Timestamp,
    pub revision: Option<String>,
    pub run_url: Option<String>,
    pub message: Option<String>,
    pub stale_after_seconds: Option<i64>,
}

impl SnapshotIn {
    /// Parses a request body and validates it into a snapshot, in one pass over the JSON; names
    /// every bad field at once.
    pub fn decode(body: &[u8], received_at: Timestamp) -> Result<NewSnapshot, SnapshotError> {
        match serde_json::from_slice(body).map_err(SnapshotError::Malformed)? {
            Lenient::Read(input) => {
                Self::validate(input, received_at).map_err(SnapshotError::Invalid)
            }
            Lenient::Missing | Lenient::Wrong(_) => {
                Err(SnapshotError::Invalid(vec![FieldError::new(
                    "body",
                    Self::EXPECTED,
                )]))
            }
        }
    }

    /// Applies the rules to every field that was read: lengths, characters, consistency, time
    /// bounds. A field of the wrong type is named once, and rules that need it step aside.
    pub fn validate(self, received_at: Timestamp) -> Result<NewSnapshot, Vec<FieldError>> {
        let mut errors = self.rejected_keys;
        let repo = (self.repo.required("repo", &mut errors))
            .map(|raw| check_name("repo", &raw, &mut errors));
        let server = (self.server.required("server", &mut errors))
            .map(|raw| check_name("server", &raw, &mut errors));
        let sync_status = self.sync_status.required("sync_status", &mut errors);

        let files = self.files.optional("files", &mut errors);
        let listed = files.as_ref().map(|files| files.as_ref().map(Vec::len));
        let mut names = match files {
            Some(Some(entries)) => file_names(entries, &mut errors),
            _ => Vec::new(),
        };
        names.sort_unstable();
        names.dedup();

        let drift_count = match self.drift_count.optional("drift_count", &mut errors) {
            None => None,
            Some(None) => Some(names.len() as i64),
            Some(Some(count)) => {
                if let Some(problem) = drift_count_problem(count, listed.flatten()) {
                    errors.push(FieldError::new("drift_count", problem));
                }
                Some(count)
            }
        };
        if sync_status == Some(SyncStatus::Synced) {
            if listed.flatten().is_some_and(|listed| listed > 0) {
                errors.push(FieldError::new("files", "must be empty when SYNCED"));
            }
            let drift_count_named = errors.iter().any(|error| error.field == "drift_count");
            if drift_count.is_some_and(|count| count != 0) && !drift_count_named {
                errors.push(FieldError::new("drift_count", "must be 0 when SYNCED"));
            }
        }

        let last_check_text = self.last_check.optional("last_check", &mut errors);
        let last_check_defaulted = matches!(last_check_text, Some(None));
        let last_check = match last_check_text.flatten() {
            None => received_at,
            Some(text) => match Timestamp::parse_rfc3339(&text) {
                None => {
                    errors.push(FieldError::new(
                        "last_check",
                        "must be an RFC 3339 time with an offset, e.g. 2026-04-21T10:30:00Z",
                    ));
                    received_at
                }
                Some(at) if at > received_at.plus_millis(MAX_FUTURE_SKEW_MILLIS) => {
                    errors.push(FieldError::new(
                        "last_check",
                        format!("is more than 5 minutes in the future (server time {received_at})"),
                    ));
                    at
                }
                Some(at) => at,
            },
        };

        let revision = optional_text(
            "revision",
            self.revision,
            MAX_REVISION_CHARS,
            false,
            &mut errors,
        );
        let run_url = optional_text(
            "run_url",
            self.run_url,
            MAX_RUN_URL_CHARS,
            false,
            &mut errors,
        );
        let message = optional_text(
            "message",
            self.message,
            MAX_MESSAGE_CHARS,
            true,
            &mut errors,
        );
        let stale_after_seconds = self
            .stale_after_seconds
            .optional("stale_after_seconds", &mut errors)
            .flatten();
        if let Some(seconds) = stale_after_seconds {
            if !(1..=MAX_STALE_AFTER_SECONDS).contains(&seconds) {
                errors.push(FieldError::new(
                    "stale_after_seconds",
                    format!("must be between 1 and {MAX_STALE_AFTER_SECONDS}"),
                ));
            }
        }

        match (repo, server, sync_status, drift_count) {
            (Some(repo), Some(server), Some(sync_status), Some(drift_count))
                if errors.is_empty() =>
            {
                Ok(NewSnapshot {
                    repo,
                    server,
                    sync_status,
                    drift_count,
                    files: names,
                    last_check,
                    last_check_defaulted,
                    received_at,
                    revision,
                    run_url,
                    message,
                    stale_after_seconds,
                })
            }
            _ => Err(errors),
        }
    }
}

/// What is wrong with a `drift_count` of `count` beside `listed` files (`None`: no list given).
fn drift_count_problem(count: i64, listed: Option<usize>) -> Option<String> {
    let max = MAX_FILES as i64;
    match listed {
        None if !(0..=max).contains(&count) => Some(format!(
            "must be between 0 and {MAX_FILES} when no files are given"
        )),
        None => None,
        Some(listed) if count == listed as i64 => None,
        // A cut list: the report client keeps the first MAX_FILES names and the true count.
        Some(MAX_FILES) if count > max => None,
        Some(listed) => Some(format!(
            "must equal the number of files ({listed}) when files are given; only a list cut \
             to exactly {MAX_FILES} files may have a larger drift_count"
        )),
    }
}

/// The names of the file entries that were read, each entry's problems named by its index.
fn file_names(entries: Vec<Lenient<FileEntryIn>>, errors: &mut Vec<FieldError>) -> Vec<String> {
    let listed = entries.len();
    let mut named = Vec::with_capacity(listed);
    for (index, entry) in entries.into_iter().enumerate() {
        let entry = match entry {
            Lenient::Read(entry) => entry,
            Lenient::Missing | Lenient::Wrong(_) => {
                errors.push(FieldError::new(
                    format!("files[{index}]"),
                    FileEntryIn::EXPECTED,
                ));
                continue;
            }
        };
        errors.extend(entry.rejected_keys.into_iter().map(|rejected| {
            FieldError::new(
                format!("files[{index}].{}", rejected.field),
                rejected.message,
            )
        }));
        if let Some(name) = entry.name.required(&format!("files[{index}].name"), errors) {
            named.push((index, name));
        }
    }
    if listed > MAX_FILES {
        errors.push(FieldError::new(
            "files",
            format!("must list at most {MAX_FILES} files, got {listed}"),
        ));
    } else {
        check_file_names(&named, errors);
    }
    named.into_iter().map(|(_, name)| name).collect()
}

fn optional_text(
    field: &str,
    value: Lenient<String>,
    max_chars: usize,
    multiline: bool,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let text = value.optional(field, errors).flatten();
    check_optional_text(field, text.as_deref(), max_chars, multiline, errors);
    text
}

pub(crate) fn check_name(field: &str, raw: &str, errors: &mut Vec<FieldError>) -> String {
    let trimmed = raw.trim();
    let chars = trimmed.chars().count();
    if raw.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            "must not contain control characters",
        ));
    } else if chars == 0 {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if chars > MAX_NAME_CHARS {
        errors.push(FieldError::new(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    trimmed.to_owned()
}

/// Checks each name, given with its index in `files`.
fn check_file_names(names: &[(usize, String)], errors: &mut Vec<FieldError>) {
    let mut first_seen = HashMap::with_capacity(names.len());
    for (index, name) in names {
        let field = || format!("files[{index}].name");
        let chars = name.chars().count();
        if chars == 0 {
            errors.push(FieldError::new(field(), "must not be empty"));
        } else if chars > MAX_FILE_NAME_CHARS {
            errors.push(FieldError::new(
                field(),
                format!("must be at most {MAX_FILE_NAME_CHARS} characters"),
            ));
        } else if name.chars().any(char::is_control) {
            errors.push(FieldError::new(
                field(),
                "must not contain control characters",
            ));
        }
        match first_seen.entry(name.as_str()) {
            Entry::Occupied(first) => errors.push(FieldError::new(
                field(),
                format!("duplicates files[{}].name", first.get()),
            )),
            Entry::Vacant(slot) => {
                slot.insert(*index);
            }
        }
    }
}

fn check_optional_text(
    field: &str,
    value: Option<&str>,
    max_chars: usize,
    multiline: bool,
    errors: &mut Vec<FieldError>,
) {
    let Some(text) = value else { return };
    let allowed = |c: char| !c.is_control() || (multiline && matches!(c, '\n' | '\r' | '\t'));
    if text.is_empty() {
        errors.push(FieldError::new(
            field,
            "must not be empty; omit it or send null",
        ));
    } else if text.chars().count() > max_chars {
        errors.push(FieldError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    } else if !text.chars().all(allowed) {
        let what = if multiline {
            "must not contain control characters other than tab and line breaks"
        } else {
            "must not contain control characters"
        };
        errors.push(FieldError::new(field, what));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::error_fields as fields;

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2026-04-21T10:35:00Z").unwrap()
    }

    fn decode(body: serde_json::Value, now: Timestamp) -> Result<NewSnapshot, Vec<FieldError>> {
        match SnapshotIn::decode(body.to_string().as_bytes(), now) {
            Ok(snapshot) => Ok(snapshot),
            Err(SnapshotError::Invalid(errors)) => Err(errors),
            Err(SnapshotError::Malformed(error)) => panic!("not JSON: {error}"),
        }
    }

    #[test]
    fn decodes_the_seed_format() {
        let snapshot = decode(
            json!({
                "repo": " rsyslog ", "server": "rsyslog-lab", "sync_status": "OUT_OF_SYNC",
                "drift_count": 2,
                "files": [{ "name": "rsyslog.d/30-lab.conf" }, { "name": "rsyslog.conf" }],
                "last_check": "2026-04-21T10:30:00Z"
            }),
            now(),
        )
        .unwrap();
        assert_eq!(snapshot.repo, "rsyslog");
        assert_eq!(snapshot.files, ["rsyslog.conf", "rsyslog.d/30-lab.conf"]);
        assert_eq!(snapshot.last_check.to_string(), "2026-04-21T10:30:00.000Z");
        assert!(!snapshot.last_check_defaulted);
    }

    #[test]
    fn names_every_shape_error_at_once() {
        let result = decode(
            json!({
                "repo": 1, "sync_status": "GREEN", "files": [{ "name": 3, "mode": "x" }, "a"],
                "drift_count": 1.5, "colour": "red"
            }),
            now(),
        );
        assert_eq!(
            fields(result),
            [
                "colour",
                "drift_count",
                "files[0].mode",
                "files[0].name",
                "files[1]",
                "repo",
                "server",
                "sync_status"
            ]
        );
    }

    #[test]
    fn names_shape_and_rule_errors_together() {
        let result = decode(
            json!({
                "repo": " ", "server": 7, "sync_status": "SYNCED", "drift_count": 2,
                "files": [{ "name": 3 }, { "name": "a\u{0}" }, { "name": "b" }],
                "last_check": "2030-01-01T00:00:00Z", "revision": "", "colour": "red"
            }),
            now(),
        );
        assert_eq!(
            fields(result),
            [
                "colour",
                "drift_count",
                "files",
                "files[0].name",
                "files[1].name",
                "last_check",
                "repo",
                "revision",
                "server"
            ]
        );
    }

    #[test]
    fn duplicate_files_name_the_second_occurrence() {
        let result = decode(
            json!({ "repo": "r", "server": "s", "sync_status": "OUT_OF_SYNC",
                    "files": [{ "name": "a" }, { "name": "b" }, { "name": "a" }] }),
            now(),
        );
        assert_eq!(
            result.unwrap_err(),
            [FieldError::new("files[2].name", "duplicates files[0].name")]
        );
    }

    #[test]
    fn a_repeated_key_is_named_at_any_depth_and_nothing_is_decoded() {
        let body = br#"{"repo": "a", "server": "s", "repo": "b", "sync_status": "OUT_OF_SYNC",
            "files": [{"name": "x", "name": "y"}]}"#;
        let Err(SnapshotError::Invalid(errors)) = SnapshotIn::decode(body, now()) else {
            panic!("accepted a repeated key");
        };
        assert_eq!(
            errors,
            [
                FieldError::new("repo", "duplicate key"),
                FieldError::new("files[0].name", "duplicate key"),
            ]
        );
    }

    #[test]
    fn broken_json_is_malformed_even_after_bad_fields() {
        for body in [&br#"{"repo": 1, "colour": "#[..], br#"{"repo": 1} {"#, b""] {
            let result = SnapshotIn::decode(body, now());
            assert!(
                matches!(result, Err(SnapshotError::Malformed(_))),
                "{result:?}"
            );
        }
    }

    #[test]
    fn a_cut_list_of_exactly_ten_thousand_files_may_carry_a_larger_drift_count() {
        let files = |count: usize| -> Vec<serde_json::Value> {
            (0..count)
                .map(|i| json!({ "name": format!("f{i:05}") }))
                .collect()
        };
        let body = |count: usize, drift_count: i64| {
            json!({ "repo": "r", "server": "s", "sync_status": "OUT_OF_SYNC",
                    "files": files(count), "drift_count": drift_count })
        };
        let cut = decode(body(10_000, 12_345), now()).unwrap();
        assert_eq!((cut.drift_count, cut.files.len()), (12_345, 10_000));
        for (count, drift_count) in [(10_000, 9_999), (9_999, 12_345), (10_000, -1)] {
            assert_eq!(
                fields(decode(body(count, drift_count), now())),
                ["drift_count"],
                "{count} files, drift_count {drift_count}"
            );
        }
    }
}
