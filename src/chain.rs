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
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::model::Snapshot;

/// The first element of every canonical encoding; a new encoding gets a new version.
pub const VERSION: &str = "gitops-status-chain/1";

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The canonical encoding of `snapshot` linked to `previous`.
pub fn canonical(snapshot: &Snapshot, previous: Option<&Hash>) -> String {
    let record = (
        VERSION,
        previous.map(hex::encode),
        snapshot.id,
        &snapshot.repo,
        &snapshot.server,
        snapshot.sync_status,
        snapshot.drift_count,
        snapshot.file_names().collect::<Vec<_>>(),
        snapshot.last_check.to_string(),
        snapshot.received_at.to_string(),
        &snapshot.revision,
        &snapshot.run_url,
        &snapshot.message,
        snapshot.stale_after_seconds,
    );
    // Serializing strings, integers and nulls cannot fail.
    serde_json::to_string(&record).unwrap_or_default()
}

/// The hash of `snapshot` linked to `previous`.
pub fn link(snapshot: &Snapshot, previous: Option<&Hash>) -> Hash {
    Sha256::digest(canonical(snapshot, previous).as_bytes()).into()
}

/// The outcome of recomputing every target's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Verification {
    /// True when every stored snapshot's hash follows from its fields and its predecessor's hash.
    pub ok: bool,
    /// Snapshots checked.
    pub checked: i64,
    /// The first snapshot (by id) that breaks the chain; null when `ok`.
    pub first_bad: Option<BadSnapshot>,
}

/// A snapshot whose stored hash does not follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BadSnapshot {
    pub id: i64,
    pub repo: String,
    pub server: String,
    /// What does not match, and what may have happened.
    pub reason: String,
}

/// A gap retention cut into a target's chain: the snapshot retained after `after_id` (0: the
/// target's start) was hashed with `resume_hash`, the hash of the last snapshot removed there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Checkpoint {
    pub repo: String,
    pub server: String,
    pub after_id: i64,
    pub resume_hash: String,
    /// Snapshots removed in this gap, over every retention run.
    pub removed: i64,
    #[schema(value_type = String, format = DateTime)]
    pub pruned_at: crate::timestamp::Timestamp,
}

/// A stored hash column: 32 bytes, or anything else (a tampered or missing value).
pub fn from_bytes(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FileEntry, SyncStatus};
    use crate::timestamp::Timestamp;

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
