//! `POST /api/status`'s body: the snapshot a CI job sends, and its validation into a `NewSnapshot`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::FieldError;
use crate::timestamp::Timestamp;

/// Longest `repo` or `server`, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 256;
/// Longest file name, in characters.
pub const MAX_FILE_NAME_CHARS: usize = 4096;
/// Most files one snapshot may list; also the largest `drift_count`.
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
/// `message` and `stale_after_seconds`. Unknown fields are rejected.
#[derive(Debug, Clone, Deserialize, ToSchema)]
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
    pub repo: String,
    /// Server the check ran against; trimmed, 1..=256 characters, no control characters.
    pub server: String,
    pub sync_status: SyncStatus,
    /// Number of drifted files; defaults to the length of `files`, and must equal it when `files`
    /// is present. 0 for `SYNCED`.
    #[schema(minimum = 0, maximum = 10000)]
    pub drift_count: Option<i64>,
    /// Drifted files, at most 10,000, no duplicates, none for `SYNCED`. Stored as a set, sorted by name.
    #[schema(max_items = 10000)]
    pub files: Option<Vec<FileEntry>>,
    /// When the check ran: RFC 3339 with an offset, at most 5 minutes ahead of the server's clock.
    /// Defaults to the time the server received the snapshot.
    #[schema(format = DateTime, example = "2026-04-21T10:30:00Z")]
    pub last_check: Option<String>,
    /// Commit the checked configuration came from.
    #[schema(example = "3f2c1ab", max_length = 256)]
    pub revision: Option<String>,
    /// Link to the CI run that produced the snapshot.
    #[schema(
        example = "https://ci.example.org/repos/7/pipeline/912",
        max_length = 2048
    )]
    pub run_url: Option<String>,
    /// Free text, typically why a check ended in `ERROR`.
    #[schema(max_length = 16384)]
    pub message: Option<String>,
    /// Per-target override of the server's `--stale-after`, in seconds (1..=31536000).
    #[schema(minimum = 1, maximum = 31536000)]
    pub stale_after_seconds: Option<i64>,
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

const SNAPSHOT_FIELDS: [&str; 10] = [
    "repo",
    "server",
    "sync_status",
    "drift_count",
    "files",
    "last_check",
    "revision",
    "run_url",
    "message",
    "stale_after_seconds",
];

impl SnapshotIn {
    /// Decodes a JSON document into a validated snapshot, naming every bad field at once.
    pub fn decode(body: Value, received_at: Timestamp) -> Result<NewSnapshot, Vec<FieldError>> {
        let mut errors = shape_errors(&body);
        if errors.is_empty() {
            let input: Self = serde_json::from_value(body)
                .map_err(|error| vec![FieldError::new("body", error.to_string())])?;
            return input.validate(received_at);
        }
        // Run the rules over the well-formed rest too, so one reply names every bad field.
        if let Some(patched) = patch_shape_errors(body, &errors) {
            if let Ok(Err(rule_errors)) =
                serde_json::from_value::<Self>(patched).map(|input| input.validate(received_at))
            {
                let already_named = |field: &str| {
                    errors.iter().any(|named| {
                        field == named.field
                            || field.starts_with(&format!("{}[", named.field))
                            || field.starts_with(&format!("{}.", named.field))
                    })
                };
                let extra: Vec<_> = rule_errors
                    .into_iter()
                    .filter(|error| !already_named(&error.field))
                    .collect();
                errors.extend(extra);
            }
        }
        Err(errors)
    }

    /// Applies the rules that need typed values: lengths, characters, consistency, time bounds.
    pub fn validate(self, received_at: Timestamp) -> Result<NewSnapshot, Vec<FieldError>> {
        let mut errors = Vec::new();
        let repo = check_name("repo", &self.repo, &mut errors);
        let server = check_name("server", &self.server, &mut errors);

        let files_given = self.files.is_some();
        let mut files: Vec<String> = self
            .files
            .unwrap_or_default()
            .into_iter()
            .map(|file| file.name)
            .collect();
        if files.len() > MAX_FILES {
            errors.push(FieldError::new(
                "files",
                format!("must list at most {MAX_FILES} files, got {}", files.len()),
            ));
        } else {
            check_file_names(&files, &mut errors);
        }
        let files_listed = files.len();
        files.sort_unstable();
        files.dedup();

        let drift_count = match self.drift_count {
            Some(count) if !(0..=MAX_FILES as i64).contains(&count) => {
                errors.push(FieldError::new(
                    "drift_count",
                    format!("must be between 0 and {MAX_FILES}"),
                ));
                count
            }
            Some(count) if files_given && count as usize != files_listed => {
                errors.push(FieldError::new(
                    "drift_count",
                    format!("must equal the number of files ({files_listed}) when files are given"),
                ));
                count
            }
            Some(count) => count,
            None => files.len() as i64,
        };
        if self.sync_status == SyncStatus::Synced {
            if !files.is_empty() {
                errors.push(FieldError::new("files", "must be empty when SYNCED"));
            }
            let drift_count_named = errors.iter().any(|error| error.field == "drift_count");
            if drift_count != 0 && !drift_count_named {
                errors.push(FieldError::new("drift_count", "must be 0 when SYNCED"));
            }
        }

        let last_check = match self.last_check.as_deref() {
            None => received_at,
            Some(text) => match Timestamp::parse_rfc3339(text) {
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

        check_optional_text(
            "revision",
            self.revision.as_deref(),
            MAX_REVISION_CHARS,
            false,
            &mut errors,
        );
        check_optional_text(
            "run_url",
            self.run_url.as_deref(),
            MAX_RUN_URL_CHARS,
            false,
            &mut errors,
        );
        check_optional_text(
            "message",
            self.message.as_deref(),
            MAX_MESSAGE_CHARS,
            true,
            &mut errors,
        );
        if let Some(seconds) = self.stale_after_seconds {
            if !(1..=MAX_STALE_AFTER_SECONDS).contains(&seconds) {
                errors.push(FieldError::new(
                    "stale_after_seconds",
                    format!("must be between 1 and {MAX_STALE_AFTER_SECONDS}"),
                ));
            }
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(NewSnapshot {
            repo,
            server,
            sync_status: self.sync_status,
            drift_count,
            files,
            last_check,
            last_check_defaulted: self.last_check.is_none(),
            received_at,
            revision: self.revision,
            run_url: self.run_url,
            message: self.message,
            stale_after_seconds: self.stale_after_seconds,
        })
    }
}

/// Checks the JSON shape (object, known fields, required fields, JSON types) and lists every
/// mismatch, so one reply names all of them rather than the first serde stumbles on.
fn shape_errors(body: &Value) -> Vec<FieldError> {
    let Some(object) = body.as_object() else {
        return vec![FieldError::new("body", "must be a JSON object")];
    };
    let mut errors = Vec::new();
    for key in object.keys() {
        if !SNAPSHOT_FIELDS.contains(&key.as_str()) {
            errors.push(FieldError::new(key.clone(), "unknown field"));
        }
    }
    for required in ["repo", "server", "sync_status"] {
        if object.get(required).is_none_or(Value::is_null) {
            errors.push(FieldError::new(required, "is required"));
        }
    }
    for (key, value) in object {
        if value.is_null() {
            continue;
        }
        let problem = match key.as_str() {
            "repo" | "server" | "last_check" | "revision" | "run_url" | "message" => {
                (!value.is_string()).then_some("must be a string")
            }
            "sync_status" => value
                .as_str()
                .and_then(SyncStatus::parse)
                .is_none()
                .then_some("must be one of SYNCED, OUT_OF_SYNC, ERROR"),
            "drift_count" | "stale_after_seconds" => {
                (!value.is_i64()).then_some("must be an integer")
            }
            "files" => match value.as_array() {
                None => Some("must be an array of {\"name\": string} objects"),
                Some(files) => {
                    file_shape_errors(files, &mut errors);
                    None
                }
            },
            _ => None,
        };
        if let Some(message) = problem {
            errors.push(FieldError::new(key.clone(), message));
        }
    }
    errors
}

/// The body with every ill-formed field removed or replaced by a stand-in that no rule objects to
/// in a way that matters (their own errors are filtered out by the caller), or `None` when the body
/// is not an object.
fn patch_shape_errors(body: Value, errors: &[FieldError]) -> Option<Value> {
    let Value::Object(mut object) = body else {
        return None;
    };
    for error in errors {
        let field = error.field.as_str();
        if let Some(rest) = field.strip_prefix("files[") {
            let (index, key) = rest.split_once(']')?;
            let index: usize = index.parse().ok()?;
            let entry = object.get_mut("files")?.as_array_mut()?.get_mut(index)?;
            match key.strip_prefix('.') {
                // An unknown key beside a good name: drop just the key.
                Some(unknown) if unknown != "name" => {
                    entry.as_object_mut()?.remove(unknown);
                }
                // A control character keeps the stand-in from colliding with a real name.
                _ => *entry = serde_json::json!({ "name": format!("\u{1}{index}") }),
            }
            continue;
        }
        match field {
            "repo" | "server" => {
                object.insert(field.to_owned(), Value::from("stand-in"));
            }
            // ERROR is the status that constrains the other fields least.
            "sync_status" => {
                object.insert(field.to_owned(), Value::from("ERROR"));
            }
            _ => {
                object.remove(field);
            }
        }
    }
    Some(Value::Object(object))
}

fn file_shape_errors(files: &[Value], errors: &mut Vec<FieldError>) {
    for (index, file) in files.iter().enumerate() {
        let Some(entry) = file.as_object() else {
            errors.push(FieldError::new(
                format!("files[{index}]"),
                "must be an object with a name",
            ));
            continue;
        };
        for key in entry.keys().filter(|key| *key != "name") {
            errors.push(FieldError::new(
                format!("files[{index}].{key}"),
                "unknown field",
            ));
        }
        match entry.get("name") {
            None | Some(Value::Null) => errors.push(FieldError::new(
                format!("files[{index}].name"),
                "is required",
            )),
            Some(Value::String(_)) => {}
            Some(_) => errors.push(FieldError::new(
                format!("files[{index}].name"),
                "must be a string",
            )),
        }
    }
}

fn check_name(field: &str, raw: &str, errors: &mut Vec<FieldError>) -> String {
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

fn check_file_names(names: &[String], errors: &mut Vec<FieldError>) {
    let mut first_seen = HashMap::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
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
                slot.insert(index);
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

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2026-04-21T10:35:00Z").unwrap()
    }

    /// The fields an error list names, sorted.
    fn fields<T: std::fmt::Debug>(result: Result<T, Vec<FieldError>>) -> Vec<String> {
        let mut names: Vec<String> = result
            .unwrap_err()
            .into_iter()
            .map(|error| error.field)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn decodes_the_seed_format() {
        let snapshot = SnapshotIn::decode(
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
        let result = SnapshotIn::decode(
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
        let result = SnapshotIn::decode(
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
        let result = SnapshotIn::decode(
            json!({ "repo": "r", "server": "s", "sync_status": "OUT_OF_SYNC",
                    "files": [{ "name": "a" }, { "name": "b" }, { "name": "a" }] }),
            now(),
        );
        assert_eq!(
            result.unwrap_err(),
            [FieldError::new("files[2].name", "duplicates files[0].name")]
        );
    }
}
