//! Wire types of the HTTP API (serde + utoipa schemas) and the validation of everything clients send.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

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

/// One invalid field of a request, as listed in a problem's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Path of the field: `repo`, `files[3].name`, or a query parameter's name.
    #[schema(example = "files[3].name")]
    pub field: String,
    /// What is wrong with it.
    #[schema(example = "must not contain control characters")]
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

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

/// What a dashboard shows for a target: its last `sync_status`, or `STALE` when no check arrived
/// within the target's stale-after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TargetState {
    Synced,
    OutOfSync,
    Error,
    Stale,
}

impl TargetState {
    pub const ALL: [Self; 4] = [Self::Synced, Self::OutOfSync, Self::Error, Self::Stale];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Synced => "SYNCED",
            Self::OutOfSync => "OUT_OF_SYNC",
            Self::Error => "ERROR",
            Self::Stale => "STALE",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }
}

impl From<SyncStatus> for TargetState {
    fn from(status: SyncStatus) -> Self {
        match status {
            SyncStatus::Synced => Self::Synced,
            SyncStatus::OutOfSync => Self::OutOfSync,
            SyncStatus::Error => Self::Error,
        }
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

/// One stored snapshot: the reply to `POST /api/status` and a row of `/history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Snapshot {
    /// Arrival order; unique across all targets.
    #[schema(example = 912)]
    pub id: i64,
    #[schema(example = "rsyslog")]
    pub repo: String,
    #[schema(example = "rsyslog-lab")]
    pub server: String,
    pub sync_status: SyncStatus,
    #[schema(example = 2)]
    pub drift_count: i64,
    /// Sorted by name.
    pub files: Vec<FileEntry>,
    /// The file names joined with `", "`, for table cells that cannot show arrays.
    #[schema(example = "rsyslog.conf, rsyslog.d/30-lab.conf")]
    pub files_text: String,
    #[schema(value_type = String, format = DateTime, example = "2026-04-21T10:30:00.000Z")]
    pub last_check: Timestamp,
    #[schema(value_type = String, format = DateTime, example = "2026-04-21T10:30:01.204Z")]
    pub received_at: Timestamp,
    pub revision: Option<String>,
    pub run_url: Option<String>,
    pub message: Option<String>,
    /// The per-target stale-after this snapshot carried, if any.
    pub stale_after_seconds: Option<i64>,
    /// Hex SHA-256 linking this snapshot to its target's previous one (docs/audit.md).
    #[schema(example = "1fea84a3574e71a194f9a3152f8fa472981d3f3a58b18f129cfa8a800cf4a026")]
    pub hash: String,
}

impl Snapshot {
    pub fn file_names(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|file| file.name.as_str())
    }
}

/// Joins file names the way `files_text` shows them.
pub fn files_text<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().collect::<Vec<_>>().join(", ")
}

/// The latest snapshot of one target, as `/status.json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct StatusRow {
    #[schema(example = "rsyslog")]
    pub repo: String,
    #[schema(example = "rsyslog-lab")]
    pub server: String,
    /// `sync_status`, or `STALE` when the last check is older than the target's stale-after.
    pub state: TargetState,
    pub sync_status: SyncStatus,
    pub stale: bool,
    pub drift_count: i64,
    pub files: Vec<FileEntry>,
    #[schema(example = "rsyslog.conf, rsyslog.d/30-lab.conf")]
    pub files_text: String,
    #[schema(value_type = String, format = DateTime, example = "2026-04-21T10:30:00.000Z")]
    pub last_check: Timestamp,
    #[schema(value_type = String, format = DateTime, example = "2026-04-21T10:30:01.204Z")]
    pub received_at: Timestamp,
    /// Start of the current unbroken run of this `sync_status`.
    #[schema(value_type = String, format = DateTime, example = "2026-04-21T09:58:00.000Z")]
    pub status_since: Timestamp,
    /// When the target went stale (`last_check` plus its stale-after); null unless `stale`.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub stale_since: Option<Timestamp>,
    /// Id of the snapshot shown.
    pub snapshot_id: i64,
    /// The stale-after in force for this target: its own override or the server's default.
    pub stale_after_seconds: i64,
    pub revision: Option<String>,
    pub run_url: Option<String>,
    pub message: Option<String>,
}

impl StatusRow {
    /// Builds the row from the target's latest snapshot, judging staleness at `now`.
    pub fn new(
        latest: Snapshot,
        status_since: Timestamp,
        now: Timestamp,
        default_stale_after_seconds: i64,
    ) -> Self {
        let stale_after_seconds = latest
            .stale_after_seconds
            .unwrap_or(default_stale_after_seconds);
        let age_millis = now
            .as_millis()
            .saturating_sub(latest.last_check.as_millis());
        let stale = age_millis > stale_after_seconds.saturating_mul(1000);
        let stale_since = stale.then(|| {
            latest
                .last_check
                .plus_millis(stale_after_seconds.saturating_mul(1000))
        });
        Self {
            repo: latest.repo,
            server: latest.server,
            state: if stale {
                TargetState::Stale
            } else {
                latest.sync_status.into()
            },
            sync_status: latest.sync_status,
            stale,
            drift_count: latest.drift_count,
            files: latest.files,
            files_text: latest.files_text,
            last_check: latest.last_check,
            received_at: latest.received_at,
            status_since,
            stale_since,
            snapshot_id: latest.id,
            stale_after_seconds,
            revision: latest.revision,
            run_url: latest.run_url,
            message: latest.message,
        }
    }
}

/// Splits raw query pairs into known parameters, rejecting unknown and repeated ones by name.
#[derive(Debug)]
pub(crate) struct QueryPairs<'a> {
    pairs: Vec<(String, String)>,
    known: &'a [&'a str],
}

impl<'a> QueryPairs<'a> {
    pub(crate) fn parse(
        raw: Option<&str>,
        known: &'a [&'a str],
        errors: &mut Vec<FieldError>,
    ) -> QueryPairs<'a> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if !known.contains(&key.as_ref()) {
                errors.push(FieldError::new(
                    key.clone(),
                    format!("unknown parameter; expected one of {}", known.join(", ")),
                ));
            } else if pairs.iter().any(|(seen, _)| *seen == key) {
                errors.push(FieldError::new(
                    key.clone(),
                    "given more than once; use a comma-separated list where lists are allowed",
                ));
            } else {
                pairs.push((key.into_owned(), value.into_owned()));
            }
        }
        QueryPairs { pairs, known }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        debug_assert!(self.known.contains(&name));
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub(crate) fn name_filter(&self, name: &str, errors: &mut Vec<FieldError>) -> Option<String> {
        let value = self.get(name)?.trim();
        if value.is_empty() || value.chars().any(char::is_control) {
            errors.push(FieldError::new(
                name,
                "must be a non-empty name without control characters",
            ));
        }
        Some(value.to_owned())
    }

    /// A comma-separated list of enum values, e.g. `state=OUT_OF_SYNC,ERROR`.
    fn list<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Option<T>,
        allowed: &str,
        errors: &mut Vec<FieldError>,
    ) -> Vec<T> {
        let Some(value) = self.get(name) else {
            return Vec::new();
        };
        let mut parsed = Vec::new();
        for item in value.split(',') {
            match parse(item.trim()) {
                Some(item) => parsed.push(item),
                None => {
                    errors.push(FieldError::new(
                        name,
                        format!("must be one or more of {allowed}, comma-separated; got {item:?}"),
                    ));
                    return Vec::new();
                }
            }
        }
        parsed
    }

    pub(crate) fn time(&self, name: &str, errors: &mut Vec<FieldError>) -> Option<Timestamp> {
        let value = self.get(name)?;
        let parsed = Timestamp::parse_query(value);
        if parsed.is_none() {
            errors.push(FieldError::new(
                name,
                "must be an RFC 3339 time with an offset or integer Unix milliseconds",
            ));
        }
        parsed
    }
}

/// Query parameters of `GET /status.json`.
/// Documents the parameters; `StatusFilter::from_query` parses them.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusParams {
    /// Only targets of this repo (exact match).
    pub repo: Option<String>,
    /// Only targets on this server (exact match).
    pub server: Option<String>,
    /// Only targets in these states, comma-separated: `SYNCED`, `OUT_OF_SYNC`, `ERROR`, `STALE`.
    #[param(example = "OUT_OF_SYNC,STALE")]
    pub state: Option<String>,
}

/// The filters of `GET /status.json`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusFilter {
    pub repo: Option<String>,
    pub server: Option<String>,
    /// Empty means every state.
    pub states: Vec<TargetState>,
}

impl StatusFilter {
    pub const PARAMETERS: [&'static str; 3] = ["repo", "server", "state"];

    pub fn from_query(raw: Option<&str>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let pairs = QueryPairs::parse(raw, &Self::PARAMETERS, &mut errors);
        let filter = Self {
            repo: pairs.name_filter("repo", &mut errors),
            server: pairs.name_filter("server", &mut errors),
            states: pairs.list(
                "state",
                TargetState::parse,
                "SYNCED, OUT_OF_SYNC, ERROR, STALE",
                &mut errors,
            ),
        };
        if errors.is_empty() {
            Ok(filter)
        } else {
            Err(errors)
        }
    }
}

/// Query parameters that name one target: `GET /badge.svg` and the status page's target view.
/// Documents the parameters; `TargetKey::from_query` parses them.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TargetParams {
    /// The target's repo (exact match).
    #[param(example = "rsyslog")]
    pub repo: String,
    /// The target's server (exact match).
    #[param(example = "rsyslog-lab")]
    pub server: String,
}

/// One target, named by a query string with both `repo` and `server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetKey {
    pub repo: String,
    pub server: String,
}

impl TargetKey {
    pub const PARAMETERS: [&'static str; 2] = ["repo", "server"];

    pub fn from_query(raw: Option<&str>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let pairs = QueryPairs::parse(raw, &Self::PARAMETERS, &mut errors);
        let mut required = |name: &str| {
            let value = pairs.name_filter(name, &mut errors);
            if value.is_none() {
                errors.push(FieldError::new(name, "is required"));
            }
            value.unwrap_or_default()
        };
        let key = Self {
            repo: required("repo"),
            server: required("server"),
        };
        if errors.is_empty() {
            Ok(key)
        } else {
            Err(errors)
        }
    }

    /// The `/status.json` filter that selects exactly this target.
    pub fn status_filter(&self) -> StatusFilter {
        StatusFilter {
            repo: Some(self.repo.clone()),
            server: Some(self.server.clone()),
            states: Vec::new(),
        }
    }

    /// The query string that names this target, percent-encoded: `repo=...&server=...`.
    pub fn to_query(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("repo", &self.repo)
            .append_pair("server", &self.server)
            .finish()
    }
}

/// Sort direction of `/history`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// How `/history` renders its rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExportFormat {
    /// One page as a JSON array, with a `Link` header to the next page.
    #[default]
    Json,
    /// The whole selection as CSV.
    Csv,
    /// The whole selection as newline-delimited JSON.
    Ndjson,
}

impl ExportFormat {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "json" => Some(Self::Json),
            "csv" => Some(Self::Csv),
            "ndjson" => Some(Self::Ndjson),
            _ => None,
        }
    }
}

/// Position of the last row a page returned: the keyset `(last_check, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub last_check: Timestamp,
    pub id: i64,
}

impl Cursor {
    const VERSION: &'static str = "v1";

    /// The position right after `snapshot` in a page.
    pub fn after(snapshot: &Snapshot) -> Self {
        Self {
            last_check: snapshot.last_check,
            id: snapshot.id,
        }
    }

    /// Encodes the cursor as an opaque URL-safe token.
    pub fn encode(self) -> String {
        use base64::Engine as _;
        let plain = format!(
            "{}.{}.{}",
            Self::VERSION,
            self.last_check.as_millis(),
            self.id
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(plain)
    }

    pub fn decode(token: &str) -> Option<Self> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()?;
        let plain = String::from_utf8(bytes).ok()?;
        let mut parts = plain.split('.');
        if parts.next()? != Self::VERSION {
            return None;
        }
        let last_check = Timestamp::from_millis(parts.next()?.parse().ok()?);
        let id = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Self { last_check, id })
    }
}

/// Query parameters of `GET /history`.
/// Documents the parameters; `HistoryRequest::from_query` parses them.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Only snapshots of this repo (exact match).
    pub repo: Option<String>,
    /// Only snapshots of this server (exact match).
    pub server: Option<String>,
    /// Only these results, comma-separated: `SYNCED`, `OUT_OF_SYNC`, `ERROR`.
    pub sync_status: Option<String>,
    /// Earliest `last_check`, inclusive: RFC 3339 or integer Unix milliseconds.
    #[param(example = "2026-04-21T00:00:00.000Z")]
    pub from: Option<String>,
    /// Latest `last_check`, exclusive: RFC 3339 or integer Unix milliseconds.
    #[param(example = "1776816000000")]
    pub to: Option<String>,
    /// Only transitions: a target's first snapshot and those whose `sync_status` or file set
    /// differs from the target's previous snapshot by `last_check`.
    pub changes_only: Option<bool>,
    /// `desc` (newest first, the default) or `asc`, by `last_check` then `id`.
    #[param(pattern = "^(asc|desc)$")]
    pub order: Option<String>,
    /// Page size, 1..=10000 (default 100). For exports, a cap on the rows streamed (default: all).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
    /// Opaque token from a previous page's `Link: <...>; rel="next"` header.
    pub cursor: Option<String>,
    /// `json` (default), `csv` or `ndjson`. `Accept: text/csv` or `application/x-ndjson` select the
    /// same. CSV and NDJSON stream the whole selection.
    #[param(pattern = "^(json|csv|ndjson)$")]
    pub format: Option<String>,
}

/// The filters of `GET /history`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub repo: Option<String>,
    pub server: Option<String>,
    /// Empty means every status.
    pub sync_statuses: Vec<SyncStatus>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub changes_only: bool,
    pub order: Order,
    /// Resume after this row.
    pub after: Option<Cursor>,
}

/// A validated `/history` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRequest {
    pub filter: HistoryFilter,
    /// Page size for JSON; for exports, `None` streams everything.
    pub limit: Option<usize>,
    pub format: Option<ExportFormat>,
}

/// Default page size of `/history`.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;
/// Largest page size of `/history`.
pub const MAX_HISTORY_LIMIT: usize = 10_000;

impl HistoryRequest {
    pub const PARAMETERS: [&'static str; 10] = [
        "repo",
        "server",
        "sync_status",
        "from",
        "to",
        "changes_only",
        "order",
        "limit",
        "cursor",
        "format",
    ];

    pub fn from_query(raw: Option<&str>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let pairs = QueryPairs::parse(raw, &Self::PARAMETERS, &mut errors);
        let from = pairs.time("from", &mut errors);
        let to = pairs.time("to", &mut errors);
        if let (Some(from), Some(to)) = (from, to) {
            if from > to {
                errors.push(FieldError::new("to", "must not be before from"));
            }
        }
        let changes_only = match pairs.get("changes_only") {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                errors.push(FieldError::new("changes_only", "must be true or false"));
                false
            }
        };
        let order = match pairs.get("order") {
            None | Some("desc") => Order::Desc,
            Some("asc") => Order::Asc,
            Some(_) => {
                errors.push(FieldError::new("order", "must be asc or desc"));
                Order::Desc
            }
        };
        let limit = pairs.get("limit").and_then(|text| {
            let parsed = text
                .parse::<usize>()
                .ok()
                .filter(|limit| (1..=MAX_HISTORY_LIMIT).contains(limit));
            if parsed.is_none() {
                errors.push(FieldError::new(
                    "limit",
                    format!("must be an integer between 1 and {MAX_HISTORY_LIMIT}"),
                ));
            }
            parsed
        });
        let after = pairs.get("cursor").and_then(|token| {
            let cursor = Cursor::decode(token);
            if cursor.is_none() {
                errors.push(FieldError::new(
                    "cursor",
                    "is not a cursor this server issued; take it from a Link header",
                ));
            }
            cursor
        });
        let format = pairs.get("format").and_then(|text| {
            let format = ExportFormat::parse(text);
            if format.is_none() {
                errors.push(FieldError::new("format", "must be json, csv or ndjson"));
            }
            format
        });
        let filter = HistoryFilter {
            repo: pairs.name_filter("repo", &mut errors),
            server: pairs.name_filter("server", &mut errors),
            sync_statuses: pairs.list(
                "sync_status",
                SyncStatus::parse,
                "SYNCED, OUT_OF_SYNC, ERROR",
                &mut errors,
            ),
            from,
            to,
            changes_only,
            order,
            after,
        };
        if errors.is_empty() {
            Ok(Self {
                filter,
                limit,
                format,
            })
        } else {
            Err(errors)
        }
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

    #[test]
    fn cursor_round_trips_and_rejects_forgeries() {
        let cursor = Cursor {
            last_check: Timestamp::from_millis(1_776_767_400_000),
            id: 42,
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        for forged in ["", "abc", "djEuMS4y.3", "djIuMS4y", "djEuMS4yLjM"] {
            assert_eq!(Cursor::decode(forged), None, "{forged}");
        }
    }

    #[test]
    fn history_query_collects_every_bad_parameter() {
        let result = HistoryRequest::from_query(Some(
            "limit=0&order=up&from=soon&sever=x&repo=a&repo=b&changes_only=yes",
        ));
        assert_eq!(
            fields(result),
            ["changes_only", "from", "limit", "order", "repo", "sever"]
        );
    }
}
