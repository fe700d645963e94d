//! The drift lifecycle's wire types (SPEC "Drift lifecycle"): acknowledgements of known drift,
//! maintenance silences, retired targets, and the chained events that record each of them.

use serde::de::MapAccess;
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::lenient::{Lenient, Shape, read_object};
use super::snapshot::check_name;
use super::times::time_field;
use super::{FieldError, SyncStatus};
use crate::timestamp::Timestamp;

/// Longest `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// Furthest an acknowledgement's `until` may be.
pub const MAX_ACK_MILLIS: i64 = 90 * DAY_MILLIS;
/// Longest silence.
pub const MAX_SILENCE_MILLIS: i64 = 30 * DAY_MILLIS;
/// How far in the past a silence may start: clock skew, not backdating.
pub const SILENCE_SKEW_MILLIS: i64 = 5 * 60 * 1000;
/// Most glob patterns in one list.
pub const MAX_GLOBS: usize = 100;
/// Longest glob pattern, in characters.
pub const MAX_GLOB_CHARS: usize = 1024;
const DAY_MILLIS: i64 = 24 * 3600 * 1000;

/// `POST /api/acks`: accept a target's current drift.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({
    "repo": "rsyslog",
    "server": "rsyslog-lab",
    "reason": "hotfix for INC-4711, PR #312 brings it into the repo",
    "until": "2026-12-10T00:00:00Z",
    "files": ["rsyslog.d/*"]
}))]
pub struct AckIn {
    #[schema(value_type = String)]
    pub repo: Lenient<String>,
    #[schema(value_type = String)]
    pub server: Lenient<String>,
    /// Why the drift is accepted: 1..=1000 characters.
    #[schema(value_type = String, min_length = 1, max_length = 1000)]
    pub reason: Lenient<String>,
    /// When the acknowledgement expires: RFC 3339, in the future, at most 90 days ahead.
    #[schema(value_type = String, format = DateTime)]
    pub until: Lenient<String>,
    /// Glob patterns (`*`, `?`) of the files it accepts; every drifted file must match one for
    /// it to apply. Absent: any files.
    #[schema(value_type = Option<Vec<String>>, max_items = 100)]
    pub files: Lenient<Vec<Lenient<String>>>,
    #[serde(skip)]
    rejected_keys: Vec<FieldError>,
}

/// `POST /api/silences`: planned maintenance for the targets the globs match.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({
    "repos": ["*"],
    "servers": ["db-*"],
    "starts_at": "2026-12-05T22:00:00Z",
    "ends_at": "2026-12-06T02:00:00Z",
    "reason": "PostgreSQL 17 upgrade, CHG-1234"
}))]
pub struct SilenceIn {
    /// Glob patterns of the repos it covers. Default `["*"]`.
    #[schema(value_type = Option<Vec<String>>, max_items = 100)]
    pub repos: Lenient<Vec<Lenient<String>>>,
    /// Glob patterns of the servers it covers. Default `["*"]`.
    #[schema(value_type = Option<Vec<String>>, max_items = 100)]
    pub servers: Lenient<Vec<Lenient<String>>>,
    /// RFC 3339; default now. At most 5 minutes in the past (a silence is planned, not
    /// backdated).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub starts_at: Lenient<String>,
    /// RFC 3339, in the future, after `starts_at` and at most 30 days after it.
    #[schema(value_type = String, format = DateTime)]
    pub ends_at: Lenient<String>,
    /// 1..=1000 characters.
    #[schema(value_type = String, min_length = 1, max_length = 1000)]
    pub reason: Lenient<String>,
    #[serde(skip)]
    rejected_keys: Vec<FieldError>,
}

impl<'de> Shape<'de> for AckIn {
    const EXPECTED: &'static str = "must be a JSON object";

    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let (mut ack, rejected) = read_object::<Self, A>(map)?;
        ack.rejected_keys = rejected;
        Ok(Some(ack))
    }
}

impl<'de> Shape<'de> for SilenceIn {
    const EXPECTED: &'static str = "must be a JSON object";

    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let (mut silence, rejected) = read_object::<Self, A>(map)?;
        silence.rejected_keys = rejected;
        Ok(Some(silence))
    }
}

impl<'de> Shape<'de> for Vec<Lenient<String>> {
    const EXPECTED: &'static str = "must be an array of strings";

    fn from_seq<A: serde::de::SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Some(items))
    }
}

/// Why a request body is not what the operation takes.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not JSON at all: a 400.
    #[error("the request body is not valid JSON: {0}")]
    Malformed(#[source] serde_json::Error),
    /// JSON that breaks the schema or the rules, every bad field named: a 422.
    #[error("the request breaks the schema or its rules")]
    Invalid(Vec<FieldError>),
}

/// Parses a JSON object body leniently, so every bad field is named at once.
fn decode<'de, T: Shape<'de>>(body: &'de [u8]) -> Result<T, BodyError> {
    match serde_json::from_slice(body).map_err(BodyError::Malformed)? {
        Lenient::Read(input) => Ok(input),
        Lenient::Missing | Lenient::Wrong(_) => Err(BodyError::Invalid(vec![FieldError::new(
            "body",
            "must be a JSON object",
        )])),
    }
}

/// A validated acknowledgement request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAck {
    pub repo: String,
    pub server: String,
    pub reason: String,
    pub until: Timestamp,
    pub files: Option<Vec<String>>,
}

/// A validated silence request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSilence {
    pub repos: Vec<String>,
    pub servers: Vec<String>,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub reason: String,
}

impl AckIn {
    pub fn decode(body: &[u8], now: Timestamp) -> Result<NewAck, BodyError> {
        decode::<Self>(body)?
            .validate(now)
            .map_err(BodyError::Invalid)
    }

    fn validate(self, now: Timestamp) -> Result<NewAck, Vec<FieldError>> {
        let mut errors = self.rejected_keys;
        let repo = (self.repo.required("repo", &mut errors))
            .map(|raw| check_name("repo", &raw, &mut errors));
        let server = (self.server.required("server", &mut errors))
            .map(|raw| check_name("server", &raw, &mut errors));
        let reason = reason(self.reason, &mut errors);
        let until = time(
            self.until.required("until", &mut errors),
            "until",
            &mut errors,
        );
        if let Some(until) = until {
            if until <= now {
                errors.push(FieldError::new("until", "must be in the future"));
            } else if until.as_millis() - now.as_millis() > MAX_ACK_MILLIS {
                errors.push(FieldError::new("until", "must be at most 90 days ahead"));
            }
        }
        let files = match self.files.optional("files", &mut errors) {
            Some(Some(files)) => Some(globs("files", files, &mut errors)),
            _ => None,
        };
        match (repo, server, reason, until) {
            (Some(repo), Some(server), Some(reason), Some(until)) if errors.is_empty() => {
                Ok(NewAck {
                    repo,
                    server,
                    reason,
                    until,
                    files,
                })
            }
            _ => Err(errors),
        }
    }
}

impl SilenceIn {
    pub fn decode(body: &[u8], now: Timestamp) -> Result<NewSilence, BodyError> {
        decode::<Self>(body)?
            .validate(now)
            .map_err(BodyError::Invalid)
    }

    fn validate(self, now: Timestamp) -> Result<NewSilence, Vec<FieldError>> {
        let mut errors = self.rejected_keys;
        let glob_list =
            |field: &str, value: Lenient<Vec<Lenient<String>>>, errors: &mut Vec<FieldError>| {
                match value.optional(field, errors) {
                    Some(Some(items)) => {
                        if items.is_empty() {
                            errors.push(FieldError::new(
                                field,
                                "must hold at least one pattern (\"*\" for all)",
                            ));
                        }
                        globs(field, items, errors)
                    }
                    _ => vec!["*".to_owned()],
                }
            };
        let repos = glob_list("repos", self.repos, &mut errors);
        let servers = glob_list("servers", self.servers, &mut errors);
        let reason = reason(self.reason, &mut errors);
        let starts_at = match self.starts_at.optional("starts_at", &mut errors) {
            Some(Some(text)) => time(Some(text), "starts_at", &mut errors),
            Some(None) => Some(now),
            None => None,
        };
        if starts_at.is_some_and(|at| at.as_millis() < now.as_millis() - SILENCE_SKEW_MILLIS) {
            errors.push(FieldError::new("starts_at", "must not be in the past"));
        }
        let ends_at = time(
            self.ends_at.required("ends_at", &mut errors),
            "ends_at",
            &mut errors,
        );
        if let Some(ends_at) = ends_at {
            if ends_at <= now {
                errors.push(FieldError::new("ends_at", "must be in the future"));
            } else if let Some(starts_at) = starts_at {
                if ends_at <= starts_at {
                    errors.push(FieldError::new("ends_at", "must be after starts_at"));
                } else if ends_at.as_millis() - starts_at.as_millis() > MAX_SILENCE_MILLIS {
                    errors.push(FieldError::new(
                        "ends_at",
                        "must be at most 30 days after starts_at",
                    ));
                }
            }
        }
        match (reason, starts_at, ends_at) {
            (Some(reason), Some(starts_at), Some(ends_at)) if errors.is_empty() => Ok(NewSilence {
                repos,
                servers,
                starts_at,
                ends_at,
                reason,
            }),
            _ => Err(errors),
        }
    }
}

fn reason(value: Lenient<String>, errors: &mut Vec<FieldError>) -> Option<String> {
    let reason = value.required("reason", errors)?;
    let trimmed = reason.trim();
    let chars = trimmed.chars().count();
    if chars == 0 {
        errors.push(FieldError::new("reason", "must not be empty"));
    } else if chars > MAX_REASON_CHARS {
        errors.push(FieldError::new(
            "reason",
            format!("must be at most {MAX_REASON_CHARS} characters"),
        ));
    } else if trimmed
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        errors.push(FieldError::new(
            "reason",
            "must not contain control characters other than newline and tab",
        ));
    }
    Some(trimmed.to_owned())
}

fn time(text: Option<String>, field: &str, errors: &mut Vec<FieldError>) -> Option<Timestamp> {
    let text = text?;
    let at = Timestamp::parse_rfc3339(&text);
    if at.is_none() {
        errors.push(FieldError::new(
            field,
            "must be an RFC 3339 time with an offset, such as 2026-12-10T00:00:00Z",
        ));
    }
    at
}

/// Checks a list of glob patterns, naming each bad one by its index.
fn globs(field: &str, items: Vec<Lenient<String>>, errors: &mut Vec<FieldError>) -> Vec<String> {
    if items.len() > MAX_GLOBS {
        errors.push(FieldError::new(
            field,
            format!("must hold at most {MAX_GLOBS} patterns"),
        ));
    }
    let mut patterns = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let name = format!("{field}[{index}]");
        let Some(pattern) = item.required(&name, errors) else {
            continue;
        };
        if let Some(problem) = glob_problem(&pattern) {
            errors.push(FieldError::new(name, problem));
        } else {
            patterns.push(pattern);
        }
    }
    patterns
}

/// Why a glob pattern is refused: patterns are names with `*` (any run of characters, `/`
/// included) and `?` (one character); brackets, braces and backslashes are not glob syntax here,
/// so a pattern holding them would silently match less than its author meant.
pub fn glob_problem(pattern: &str) -> Option<String> {
    if pattern.is_empty() {
        Some("must not be empty".to_owned())
    } else if pattern.chars().count() > MAX_GLOB_CHARS {
        Some(format!("must be at most {MAX_GLOB_CHARS} characters"))
    } else if pattern.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        pattern
            .chars()
            .find(|c| matches!(c, '[' | ']' | '{' | '}' | '\\'))
            .map(|bad| {
                format!(
                    "is not a supported glob: only * and ? are wildcards, and {bad:?} is not allowed"
                )
            })
    }
}

/// True when `name` matches one of `patterns`.
pub fn matches_any(patterns: &[String], name: &str) -> bool {
    patterns
        .iter()
        .any(|pattern| wildmatch::WildMatch::new(pattern).matches(name))
}

/// An acknowledgement as `/api/acks` returns it.
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct Ack {
    /// The id of the chained record that made it.
    pub id: i64,
    pub repo: String,
    pub server: String,
    pub reason: String,
    /// The token's name, or `anonymous` when writes are open.
    pub by: String,
    /// Glob patterns of the accepted files; null: any.
    pub files: Option<Vec<String>>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub until: Timestamp,
    /// When it ended (expired, resolved, deleted or replaced); null while in force.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
    /// `expired` (at `until`), `resolved` (the target was SYNCED again), `deleted`, or `replaced`
    /// (a newer acknowledgement of the same target); null while in force.
    pub end_reason: Option<String>,
    /// Who deleted it; null otherwise.
    pub ended_by: Option<String>,
}

impl Ack {
    /// Made, not ended, and not past `until`.
    pub fn in_force(&self, now: Timestamp) -> bool {
        self.ended_at.is_none() && now < self.until
    }

    /// True when it covers a target whose latest snapshot has this status and these files.
    pub fn applies(&self, now: Timestamp, status: SyncStatus, files: &[&str]) -> bool {
        self.in_force(now)
            && status != SyncStatus::Synced
            && self
                .files
                .as_ref()
                .is_none_or(|globs| files.iter().all(|file| matches_any(globs, file)))
    }

    pub fn summary(&self) -> AckSummary {
        AckSummary {
            id: self.id,
            reason: self.reason.clone(),
            by: self.by.clone(),
            until: self.until,
        }
    }
}

impl Serialize for Ack {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Ack", 15)?;
        out.serialize_field("id", &self.id)?;
        out.serialize_field("repo", &self.repo)?;
        out.serialize_field("server", &self.server)?;
        out.serialize_field("reason", &self.reason)?;
        out.serialize_field("by", &self.by)?;
        out.serialize_field("files", &self.files)?;
        time_field(&mut out, "created_at", "created_at_ms", self.created_at)?;
        time_field(&mut out, "until", "until_ms", self.until)?;
        time_field(&mut out, "ended_at", "ended_at_ms", self.ended_at)?;
        out.serialize_field("end_reason", &self.end_reason)?;
        out.serialize_field("ended_by", &self.ended_by)?;
        out.end()
    }
}

/// The acknowledgement that applies to a target, as `/status.json` and `/api/episodes` show it.
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct AckSummary {
    pub id: i64,
    pub reason: String,
    pub by: String,
    #[schema(value_type = String, format = DateTime)]
    pub until: Timestamp,
}

impl Serialize for AckSummary {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("AckSummary", 5)?;
        out.serialize_field("id", &self.id)?;
        out.serialize_field("reason", &self.reason)?;
        out.serialize_field("by", &self.by)?;
        time_field(&mut out, "until", "until_ms", self.until)?;
        out.end()
    }
}

/// A silence as `/api/silences` returns it.
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct Silence {
    /// The id of the chained record that made it.
    pub id: i64,
    pub repos: Vec<String>,
    pub servers: Vec<String>,
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub ends_at: Timestamp,
    pub reason: String,
    pub by: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it was deleted before its end; null otherwise.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deleted_at: Option<Timestamp>,
    pub deleted_by: Option<String>,
}

impl Silence {
    /// When it stops silencing: its end, or its deletion if earlier.
    pub fn effective_end(&self) -> Timestamp {
        self.deleted_at
            .map_or(self.ends_at, |deleted| deleted.min(self.ends_at))
    }

    /// True while it silences (now within its window and not deleted).
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.starts_at <= now && now < self.effective_end()
    }

    /// True when it has not ended yet (active or still to come).
    pub fn is_pending_or_active(&self, now: Timestamp) -> bool {
        now < self.effective_end()
    }

    pub fn covers(&self, repo: &str, server: &str) -> bool {
        matches_any(&self.repos, repo) && matches_any(&self.servers, server)
    }
}

impl Serialize for Silence {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Silence", 15)?;
        out.serialize_field("id", &self.id)?;
        out.serialize_field("repos", &self.repos)?;
        out.serialize_field("servers", &self.servers)?;
        time_field(&mut out, "starts_at", "starts_at_ms", self.starts_at)?;
        time_field(&mut out, "ends_at", "ends_at_ms", self.ends_at)?;
        out.serialize_field("reason", &self.reason)?;
        out.serialize_field("by", &self.by)?;
        time_field(&mut out, "created_at", "created_at_ms", self.created_at)?;
        time_field(&mut out, "deleted_at", "deleted_at_ms", self.deleted_at)?;
        out.serialize_field("deleted_by", &self.deleted_by)?;
        out.end()
    }
}

/// A target as `/api/targets` lists it.
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct TargetInfo {
    pub repo: String,
    pub server: String,
    /// Its state now (as `/status.json` computes it).
    #[schema(value_type = super::TargetState)]
    pub state: super::TargetState,
    /// When it was retired; null while active.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub retired_at: Option<Timestamp>,
}

impl Serialize for TargetInfo {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("TargetInfo", 5)?;
        out.serialize_field("repo", &self.repo)?;
        out.serialize_field("server", &self.server)?;
        out.serialize_field("state", &self.state)?;
        time_field(&mut out, "retired_at", "retired_at_ms", self.retired_at)?;
        out.end()
    }
}

/// A chained record that is not a snapshot, waiting to be written by the pipeline. Its target
/// (`repo`, `server`) must exist, except for silences, which go on the fleet chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub repo: String,
    pub server: String,
    /// When it takes effect (the server's clock when it was asked).
    pub at: Timestamp,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// Accept the target's current drift.
    Ack {
        reason: String,
        until: Timestamp,
        files: Option<Vec<String>>,
        by: String,
    },
    /// End an acknowledgement: deleted by `by`, or expired (`by` is `None`; `at` is its until).
    EndAck { ack: i64, by: Option<String> },
    /// Planned maintenance, on the fleet chain.
    Silence { silence: NewSilence, by: String },
    /// Delete a silence before its end, on the fleet chain.
    EndSilence { silence: i64, by: String },
    /// Take a decommissioned target out of the views.
    Retire { by: String },
}

impl EventKind {
    /// True for records of the fleet chain.
    pub fn is_fleet(&self) -> bool {
        matches!(self, Self::Silence { .. } | Self::EndSilence { .. })
    }
}

/// What the pipeline did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventOutcome {
    /// The new record's id, or `None` when there was nothing to do (already ended, already
    /// retired).
    pub id: Option<i64>,
}

/// Bodies of chained events (docs/audit.md "Events"): compact JSON objects, keys in this order.
pub mod body {
    use serde::Serialize;

    use crate::timestamp::Timestamp;

    fn encode(value: &impl Serialize) -> String {
        // Serializing plain data cannot fail.
        serde_json::to_string(value).unwrap_or_default()
    }

    fn time(at: Timestamp) -> String {
        let mut out = Vec::with_capacity(24);
        at.write_rfc3339(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    pub fn ack(reason: &str, until: Timestamp, files: Option<&[String]>, by: &str) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            reason: &'a str,
            until: String,
            files: Option<&'a [String]>,
            by: &'a str,
        }
        encode(&Body {
            reason,
            until: time(until),
            files,
            by,
        })
    }

    pub fn ack_end(ack: i64, reason: &str, by: Option<&str>, snapshot: Option<i64>) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            ack: i64,
            reason: &'a str,
            by: Option<&'a str>,
            snapshot: Option<i64>,
        }
        encode(&Body {
            ack,
            reason,
            by,
            snapshot,
        })
    }

    pub fn silence(
        repos: &[String],
        servers: &[String],
        starts_at: Timestamp,
        ends_at: Timestamp,
        reason: &str,
        by: &str,
    ) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            repos: &'a [String],
            servers: &'a [String],
            starts_at: String,
            ends_at: String,
            reason: &'a str,
            by: &'a str,
        }
        encode(&Body {
            repos,
            servers,
            starts_at: time(starts_at),
            ends_at: time(ends_at),
            reason,
            by,
        })
    }

    pub fn silence_end(silence: i64, by: &str) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            silence: i64,
            by: &'a str,
        }
        encode(&Body { silence, by })
    }

    pub fn retire(by: &str) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            by: &'a str,
        }
        encode(&Body { by })
    }

    pub fn revive(snapshot: i64) -> String {
        #[derive(Serialize)]
        struct Body {
            snapshot: i64,
        }
        encode(&Body { snapshot })
    }
}
