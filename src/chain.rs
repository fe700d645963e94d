//! The audit trail's integrity chain: the canonical encoding of a snapshot and the SHA-256 link
//! that ties it to the previous snapshot of the same target.
//!
//! `hash = sha256(utf8(canonical))`, where `canonical` is the compact JSON array
//!
//! ```text
//! ["gitops-status-chain/1", previous_hash, id, repo, server, sync_status, drift_count,
//!  files, last_check, received_at, revision, run_url, message, stale_after_seconds]
//! ```
//!
//! with `previous_hash` the lowercase hex hash of the target's previous snapshot in arrival order
//! (by `id`) or `null` for its first, `files` the array of file names as the API returns them
//! (sorted), both times exactly as the API writes them (`2026-04-21T10:30:00.000Z`), and absent
//! optional fields as `null`. Strings are escaped as JSON requires and nothing else: no `\u`
//! escapes for non-ASCII (Python: `json.dumps(value, ensure_ascii=False, separators=(",", ":"))`).
//! docs/audit.md walks through an example.

use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::model::times::time_field;
use crate::model::{Snapshot, SyncStatus};
use crate::timestamp::Timestamp;

/// The first element of every canonical encoding; a new encoding gets a new version.
pub const VERSION: &str = "gitops-status-chain/1";

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// A chained snapshot's fields, borrowed from wherever they are: a [`Snapshot`], or a stored row
/// read column by column by the verifier (which never builds a `Snapshot`).
#[derive(Debug, Clone, Copy)]
pub struct ChainFields<'a> {
    pub id: i64,
    pub repo: &'a str,
    pub server: &'a str,
    pub sync_status: SyncStatus,
    pub drift_count: i64,
    /// The file names, sorted, as a compact JSON array (`["a","b"]`): see [`files_json`].
    pub files_json: &'a str,
    pub last_check: Timestamp,
    pub received_at: Timestamp,
    pub revision: Option<&'a str>,
    pub run_url: Option<&'a str>,
    pub message: Option<&'a str>,
    pub stale_after_seconds: Option<i64>,
}

impl<'a> ChainFields<'a> {
    /// `snapshot`'s fields, with its file names already encoded by [`files_json`].
    pub fn of(snapshot: &'a Snapshot, files_json: &'a str) -> Self {
        Self {
            id: snapshot.id,
            repo: &snapshot.repo,
            server: &snapshot.server,
            sync_status: snapshot.sync_status,
            drift_count: snapshot.drift_count,
            files_json,
            last_check: snapshot.last_check,
            received_at: snapshot.received_at,
            revision: snapshot.revision.as_deref(),
            run_url: snapshot.run_url.as_deref(),
            message: snapshot.message.as_deref(),
            stale_after_seconds: snapshot.stale_after_seconds,
        }
    }
}

/// File names as the canonical encoding writes them: a compact JSON array of strings.
pub fn files_json<'n>(names: impl IntoIterator<Item = &'n str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    // Serializing strings cannot fail.
    serde_json::to_string(&names).unwrap_or_default()
}

/// Writes the canonical encoding of `fields` linked to `previous` into `out`, which it clears
/// first: the one place the encoding is written, so a reused buffer serves a whole verification.
pub fn encode(fields: &ChainFields<'_>, previous: Option<&Hash>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"[\"");
    out.extend_from_slice(VERSION.as_bytes());
    out.extend_from_slice(b"\",");
    push_hash(out, previous);
    out.push(b',');
    push_integer(out, fields.id);
    out.push(b',');
    push_string(out, Some(fields.repo));
    out.push(b',');
    push_string(out, Some(fields.server));
    out.push(b',');
    push_string(out, Some(fields.sync_status.as_str()));
    out.push(b',');
    push_integer(out, fields.drift_count);
    out.push(b',');
    out.extend_from_slice(fields.files_json.as_bytes());
    out.push(b',');
    push_time(out, fields.last_check);
    out.push(b',');
    push_time(out, fields.received_at);
    out.push(b',');
    push_string(out, fields.revision);
    out.push(b',');
    push_string(out, fields.run_url);
    out.push(b',');
    push_string(out, fields.message);
    out.push(b',');
    match fields.stale_after_seconds {
        Some(seconds) => push_integer(out, seconds),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b']');
}

fn push_integer(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// A JSON string escaped as serde_json escapes it (and nothing else), or `null`.
fn push_string(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        // Writing a string into a Vec cannot fail.
        Some(text) => {
            let _ = serde_json::to_writer(&mut *out, text);
        }
        None => out.extend_from_slice(b"null"),
    }
}

fn push_time(out: &mut Vec<u8>, at: Timestamp) {
    out.push(b'"');
    at.write_rfc3339(out);
    out.push(b'"');
}

/// The first element of every event's canonical encoding.
pub const EVENT_VERSION: &str = "gitops-status-event/1";

/// A chained event's fields (an acknowledgement, its end, a silence, its end, a retirement, a
/// revival): `repo` and `server` are `None` on the fleet chain, which silences go on.
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a> {
    pub id: i64,
    pub repo: Option<&'a str>,
    pub server: Option<&'a str>,
    pub kind: &'a str,
    pub at: Timestamp,
    /// The event's own fields: a compact JSON object, hashed exactly as stored.
    pub body: &'a str,
}

/// Writes an event's canonical encoding into `out` (cleared first):
///
/// ```text
/// ["gitops-status-event/1", previous_hash, id, repo, server, kind, at, body]
/// ```
///
/// with `body` the stored JSON object written as it is (it is compact JSON already, so Python's
/// `json.dumps(json.loads(body), ensure_ascii=False, separators=(",", ":"))` gives it back).
pub fn encode_event(fields: &EventFields<'_>, previous: Option<&Hash>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"[\"");
    out.extend_from_slice(EVENT_VERSION.as_bytes());
    out.extend_from_slice(b"\",");
    push_hash(out, previous);
    out.push(b',');
    push_integer(out, fields.id);
    out.push(b',');
    push_string(out, fields.repo);
    out.push(b',');
    push_string(out, fields.server);
    out.push(b',');
    push_string(out, Some(fields.kind));
    out.push(b',');
    push_time(out, fields.at);
    out.push(b',');
    out.extend_from_slice(fields.body.as_bytes());
    out.push(b']');
}

/// The hash of an event linked to `previous`, encoded in `buffer`.
pub fn link_event(fields: &EventFields<'_>, previous: Option<&Hash>, buffer: &mut Vec<u8>) -> Hash {
    encode_event(fields, previous, buffer);
    Sha256::digest(&buffer[..]).into()
}

fn push_hash(out: &mut Vec<u8>, hash: Option<&Hash>) {
    match hash {
        Some(hash) => {
            let mut hex = [0u8; 64];
            // 32 bytes always fit 64 hex digits.
            let _ = hex::encode_to_slice(hash, &mut hex);
            out.push(b'"');
            out.extend_from_slice(&hex);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// The canonical encoding of `snapshot` linked to `previous`.
pub fn canonical(snapshot: &Snapshot, previous: Option<&Hash>) -> String {
    let files = files_json(snapshot.file_names());
    let mut out = Vec::new();
    encode(&ChainFields::of(snapshot, &files), previous, &mut out);
    // Every part written is UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// The hash of `snapshot` linked to `previous`.
pub fn link(snapshot: &Snapshot, previous: Option<&Hash>) -> Hash {
    let files = files_json(snapshot.file_names());
    link_fields(
        &ChainFields::of(snapshot, &files),
        previous,
        &mut Vec::new(),
    )
}

/// The hash of `fields` linked to `previous`, encoded in `buffer`.
pub fn link_fields(
    fields: &ChainFields<'_>,
    previous: Option<&Hash>,
    buffer: &mut Vec<u8>,
) -> Hash {
    encode(fields, previous, buffer);
    Sha256::digest(&buffer[..]).into()
}

/// The outcome of recomputing every chain (each target's, and the fleet chain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Verification {
    /// True when every stored record's hash follows from its fields and its predecessor's hash,
    /// and the tables the API reads (acknowledgements, silences, targets) agree with the chained
    /// events.
    pub ok: bool,
    /// Records checked: snapshots and events.
    pub checked: i64,
    /// The first record (by id) that breaks the chain or disagrees with it; null when `ok`.
    pub first_bad: Option<BadSnapshot>,
    /// The signed head statements, checked when a public key is given (`verify --public-key`,
    /// or a server with `--signing-key`); absent otherwise. `ok` is false when they do not
    /// check out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statements: Option<crate::signing::StatementsVerification>,
}

impl Verification {
    /// This verification with the statements' check added (and counted in `ok`).
    pub fn with_statements(self, statements: crate::signing::StatementsVerification) -> Self {
        Self {
            ok: self.ok && statements.ok,
            statements: Some(statements),
            ..self
        }
    }
}

/// A record whose stored hash does not follow, or a row that disagrees with the chain. (The name
/// is kept from when only snapshots were chained; `record` says what it is.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BadSnapshot {
    /// The record's id: a snapshot's or an event's; for an `ack` or `silence` row, its id (the
    /// id of the event that made it); for `target`, the event the row disagrees with.
    pub id: i64,
    /// Its target's repo; empty on the fleet chain.
    pub repo: String,
    /// Its target's server; empty on the fleet chain.
    pub server: String,
    /// What does not match, and what may have happened.
    pub reason: String,
    /// What is named: a `snapshot` or an `event` of the chain, or the row of `acks`, `silences`
    /// or `targets` (its acknowledgement in force, its retirement) that disagrees with the
    /// chained events.
    pub record: RecordKind,
    /// The event's kind (`ack`, `ack_end`, `silence`, `silence_end`, `retire`, `revive`) when
    /// `record` is `event`; null otherwise.
    pub kind: Option<String>,
}

/// What a [`BadSnapshot`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Snapshot,
    Event,
    Ack,
    Silence,
    Target,
}

impl BadSnapshot {
    /// What is named, in words: `snapshot`, `ack event`, `acks row`, ...
    pub fn what(&self) -> String {
        match (self.record, &self.kind) {
            (RecordKind::Event, Some(kind)) => format!("{kind} event"),
            (RecordKind::Event, None) => "event".to_owned(),
            (RecordKind::Snapshot, _) => "snapshot".to_owned(),
            (RecordKind::Ack, _) => "acks row".to_owned(),
            (RecordKind::Silence, _) => "silences row".to_owned(),
            (RecordKind::Target, _) => "targets row".to_owned(),
        }
    }
}

/// One chained event as `GET /api/chain/events` streams it (NDJSON, by id): what re-checking an
/// export of a chain with events needs.
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct ChainEvent {
    #[schema(example = 913)]
    pub id: i64,
    /// Its target's repo; null on the fleet chain.
    #[schema(example = "rsyslog")]
    pub repo: Option<String>,
    /// Its target's server; null on the fleet chain.
    #[schema(example = "rsyslog-lab")]
    pub server: Option<String>,
    /// `ack`, `ack_end`, `silence`, `silence_end`, `retire` or `revive`.
    #[schema(example = "ack")]
    pub kind: String,
    /// When it took effect. Also as `at_ms`.
    #[schema(value_type = String, format = DateTime, example = "2026-04-21T10:35:12.345Z")]
    pub at: Timestamp,
    /// The event's own fields, exactly as stored and hashed (docs/audit.md).
    #[schema(value_type = Object)]
    pub body: String,
    /// Hex SHA-256 linking it to the previous record of its chain.
    #[schema(example = "7bfdf4581bd73ebbf6ce7aab4a6c8e90433afdcae4414ea3943f8cdabce31a14")]
    pub hash: String,
}

impl ChainEvent {
    /// Appends the event as one NDJSON line: `{"id", "repo", "server", "kind", "at", "at_ms",
    /// "body", "hash"}`, the body written as stored so its bytes (and key order) are the hashed
    /// ones. A stored body that is not a JSON object (an edited row) is written as a string, so
    /// the line stays JSON and the re-check fails on it.
    pub fn write_ndjson(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        push_integer(out, self.id);
        out.extend_from_slice(b",\"repo\":");
        push_string(out, self.repo.as_deref());
        out.extend_from_slice(b",\"server\":");
        push_string(out, self.server.as_deref());
        out.extend_from_slice(b",\"kind\":");
        push_string(out, Some(&self.kind));
        out.extend_from_slice(b",\"at\":");
        push_time(out, self.at);
        out.extend_from_slice(b",\"at_ms\":");
        push_integer(out, self.at.as_millis());
        out.extend_from_slice(b",\"body\":");
        if is_json_object(&self.body) {
            out.extend_from_slice(self.body.as_bytes());
        } else {
            push_string(out, Some(&self.body));
        }
        out.extend_from_slice(b",\"hash\":");
        push_string(out, Some(&self.hash));
        out.extend_from_slice(b"}\n");
    }
}

/// Which chains' events `GET /api/chain/events` reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSelection {
    /// Only targets of this repo (exact match).
    pub repo: Option<String>,
    /// Only targets on this server (exact match).
    pub server: Option<String>,
    /// The fleet chain's events too.
    pub fleet: bool,
}

/// True when `text` is one JSON object and nothing else.
fn is_json_object(text: &str) -> bool {
    text.starts_with('{')
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
        && !text.contains(['\n', '\r'])
}

/// A gap retention cut into a target's chain: the record retained after `after_id` (a snapshot
/// or an event, which retention never removes; 0: the target's start) was hashed with
/// `resume_hash`, the hash of the last snapshot removed there.
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct Checkpoint {
    pub repo: String,
    pub server: String,
    pub after_id: i64,
    pub resume_hash: String,
    /// Snapshots removed in this gap, over every retention run.
    pub removed: i64,
    #[schema(value_type = String, format = DateTime)]
    pub pruned_at: Timestamp,
}

/// The fields in the schema's order, the time followed by its `_ms` twin.
impl Serialize for Checkpoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Checkpoint", 7)?;
        out.serialize_field("repo", &self.repo)?;
        out.serialize_field("server", &self.server)?;
        out.serialize_field("after_id", &self.after_id)?;
        out.serialize_field("resume_hash", &self.resume_hash)?;
        out.serialize_field("removed", &self.removed)?;
        time_field(&mut out, "pruned_at", "pruned_at_ms", self.pruned_at)?;
        out.end()
    }
}

/// A stored hash column: 32 bytes, or anything else (a tampered or missing value).
pub fn from_bytes(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FileEntry;

    fn snapshot() -> Snapshot {
        Snapshot {
            id: 912,
            repo: "rsyslog".to_owned(),
            server: "rsyslog-lab".to_owned(),
            sync_status: SyncStatus::OutOfSync,
            drift_count: 2,
            files: ["rsyslog.conf", "rsyslog.d/30-lab.conf"]
                .map(|name| FileEntry {
                    name: name.to_owned(),
                })
                .to_vec(),
            files_text: "rsyslog.conf, rsyslog.d/30-lab.conf".to_owned(),
            last_check: Timestamp::parse_rfc3339("2026-04-21T10:30:00Z").unwrap(),
            received_at: Timestamp::parse_rfc3339("2026-04-21T10:30:01.204Z").unwrap(),
            revision: Some("3f2c1ab".to_owned()),
            run_url: None,
            message: Some("línea 1\n\"quoted\"".to_owned()),
            stale_after_seconds: Some(600),
            hash: String::new(),
        }
    }

    /// The documented example (docs/audit.md): the encoding is the contract auditors re-implement,
    /// so it is pinned byte for byte, and so is its hash, which Python's `json.dumps(...,
    /// ensure_ascii=False, separators=(",", ":"))` and `hashlib.sha256` computed independently.
    #[test]
    fn the_documented_example_encodes_and_hashes_as_written() {
        let first = snapshot();
        assert_eq!(
            canonical(&first, None),
            r#"["gitops-status-chain/1",null,912,"rsyslog","rsyslog-lab","OUT_OF_SYNC",2,["rsyslog.conf","rsyslog.d/30-lab.conf"],"2026-04-21T10:30:00.000Z","2026-04-21T10:30:01.204Z","3f2c1ab",null,"línea 1\n\"quoted\"",600]"#
        );
        let hash = link(&first, None);
        assert_eq!(
            hex::encode(hash),
            "1fea84a3574e71a194f9a3152f8fa472981d3f3a58b18f129cfa8a800cf4a026"
        );
        let mut second = snapshot();
        second.id = 913;
        assert!(canonical(&second, Some(&hash)).starts_with(&format!(
            r#"["gitops-status-chain/1","{}",913,"#,
            hex::encode(hash)
        )));
    }

    /// The documented event examples (docs/audit.md): an acknowledgement of the snapshot above,
    /// linked to its hash, and a silence on the fleet chain. Hashes computed independently with
    /// Python (`json.dumps(record, ensure_ascii=False, separators=(",", ":"))`, `hashlib`).
    #[test]
    fn the_documented_event_examples_encode_and_hash_as_written() {
        let previous = link(&snapshot(), None);
        let body = r#"{"reason":"hotfix «INC-42» waits for its PR","until":"2026-04-28T10:00:00.000Z","files":["rsyslog.conf","rsyslog.d/*.conf"],"by":"alice"}"#;
        let ack = EventFields {
            id: 913,
            repo: Some("rsyslog"),
            server: Some("rsyslog-lab"),
            kind: "ack",
            at: Timestamp::parse_rfc3339("2026-04-21T10:35:12.345Z").unwrap(),
            body,
        };
        let mut buffer = Vec::new();
        encode_event(&ack, Some(&previous), &mut buffer);
        assert_eq!(
            String::from_utf8(buffer.clone()).unwrap(),
            format!(
                r#"["gitops-status-event/1","1fea84a3574e71a194f9a3152f8fa472981d3f3a58b18f129cfa8a800cf4a026",913,"rsyslog","rsyslog-lab","ack","2026-04-21T10:35:12.345Z",{body}]"#
            )
        );
        assert_eq!(
            hex::encode(link_event(&ack, Some(&previous), &mut buffer)),
            "7bfdf4581bd73ebbf6ce7aab4a6c8e90433afdcae4414ea3943f8cdabce31a14"
        );

        let body = r#"{"repos":["rsyslog"],"servers":["*-lab"],"starts_at":"2026-04-22T20:00:00.000Z","ends_at":"2026-04-22T23:00:00.000Z","reason":"kernel upgrades","by":"ops"}"#;
        let silence = EventFields {
            id: 914,
            repo: None,
            server: None,
            kind: "silence",
            at: Timestamp::parse_rfc3339("2026-04-21T11:00:00Z").unwrap(),
            body,
        };
        encode_event(&silence, None, &mut buffer);
        assert_eq!(
            String::from_utf8(buffer.clone()).unwrap(),
            format!(
                r#"["gitops-status-event/1",null,914,null,null,"silence","2026-04-21T11:00:00.000Z",{body}]"#
            )
        );
        assert_eq!(
            hex::encode(link_event(&silence, None, &mut buffer)),
            "31183bf659356bc04d8540a1f2dbd51092eebbb19715403732a2b62c8432feb4"
        );
    }

    #[test]
    fn every_event_field_and_the_link_change_the_hash() {
        let base = EventFields {
            id: 5,
            repo: Some("r"),
            server: Some("s"),
            kind: "retire",
            at: Timestamp::from_millis(1_000),
            body: r#"{"by":"ops"}"#,
        };
        let previous = [7u8; 32];
        let mut buffer = Vec::new();
        let reference = link_event(&base, Some(&previous), &mut buffer);
        let variants = [
            EventFields { id: 6, ..base },
            EventFields {
                repo: Some("x"),
                ..base
            },
            EventFields {
                server: Some("x"),
                ..base
            },
            EventFields {
                repo: None,
                server: None,
                ..base
            },
            EventFields {
                kind: "revive",
                ..base
            },
            EventFields {
                at: Timestamp::from_millis(1_001),
                ..base
            },
            EventFields {
                body: r#"{"by":"eve"}"#,
                ..base
            },
        ];
        for variant in &variants {
            assert_ne!(
                link_event(variant, Some(&previous), &mut buffer),
                reference,
                "{variant:?}"
            );
        }
        assert_ne!(link_event(&base, None, &mut buffer), reference);
        // An event never hashes like a snapshot: the version string differs.
        encode_event(&base, None, &mut buffer);
        assert!(buffer.starts_with(b"[\"gitops-status-event/1\","));
    }

    #[test]
    fn chain_events_are_written_as_one_ndjson_line_with_the_body_as_stored() {
        let mut event = ChainEvent {
            id: 914,
            repo: None,
            server: None,
            kind: "silence_end".to_owned(),
            at: Timestamp::from_millis(1_776_772_800_000),
            body: r#"{"silence":913,"by":"ops"}"#.to_owned(),
            hash: "ab".repeat(32),
        };
        let mut out = Vec::new();
        event.write_ndjson(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "{{\"id\":914,\"repo\":null,\"server\":null,\"kind\":\"silence_end\",\"at\":\"2026-04-21T12:00:00.000Z\",\"at_ms\":1776772800000,\"body\":{{\"silence\":913,\"by\":\"ops\"}},\"hash\":\"{}\"}}\n",
                "ab".repeat(32)
            )
        );
        // An edited body that is not one JSON object still makes one line of JSON.
        for body in ["{\"by\":\"ops\"} trailing", "not json", "{\n}"] {
            event.body = body.to_owned();
            let mut out = Vec::new();
            event.write_ndjson(&mut out);
            let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(line["body"], body);
            assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        }
    }

    #[test]
    fn every_field_and_the_link_change_the_hash() {
        let base = snapshot();
        let previous = [7u8; 32];
        let reference = link(&base, Some(&previous));
        let mut variants: Vec<Snapshot> = Vec::new();
        let mut edit = |change: &dyn Fn(&mut Snapshot)| {
            let mut variant = base.clone();
            change(&mut variant);
            variants.push(variant);
        };
        edit(&|s| s.id += 1);
        edit(&|s| s.repo.push('x'));
        edit(&|s| s.server.push('x'));
        edit(&|s| s.sync_status = SyncStatus::Error);
        edit(&|s| s.drift_count = 3);
        edit(&|s| s.files.pop().map(drop).unwrap_or_default());
        edit(&|s| s.last_check = s.last_check.plus_millis(1));
        edit(&|s| s.received_at = s.received_at.plus_millis(1));
        edit(&|s| s.revision = None);
        edit(&|s| s.run_url = Some("https://ci".to_owned()));
        edit(&|s| s.message = None);
        edit(&|s| s.stale_after_seconds = None);
        for variant in &variants {
            assert_ne!(link(variant, Some(&previous)), reference, "{variant:?}");
        }
        assert_ne!(link(&base, None), reference);
        assert_ne!(link(&base, Some(&[8u8; 32])), reference);
        // files_text and hash are derived, not hashed.
        let mut derived = base.clone();
        derived.files_text = "anything".to_owned();
        derived.hash = "anything".to_owned();
        assert_eq!(link(&derived, Some(&previous)), reference);
    }
}
