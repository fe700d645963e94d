//! The write rules both stores apply the same way: what a stored snapshot looks like, when it
//! is a transition, when a retry is identical, and how a file set is keyed.

use sha2::{Digest, Sha256};

use crate::model::{FileEntry, NewSnapshot, Snapshot, files_text};
use crate::store::{Recorded, StoreError};
use crate::timestamp::Timestamp;

/// `change` bits (see migrations/sqlite/0001_init.sql): the status differs from the target's
/// previous snapshot by `last_check`, and the file set does.
pub const STATUS_CHANGED: i64 = 1;
pub const FILES_CHANGED: i64 = 2;

/// The digest and JSON text a non-empty file set is stored under; `None` for no files.
pub fn fileset_key(files: &[String]) -> Option<([u8; 32], String)> {
    if files.is_empty() {
        return None;
    }
    // Serializing a list of strings cannot fail.
    let json = serde_json::to_string(files).unwrap_or_default();
    Some((Sha256::digest(json.as_bytes()).into(), json))
}

pub fn received_delay(new: &NewSnapshot, last_check: Timestamp) -> i64 {
    new.received_at
        .as_millis()
        .saturating_sub(last_check.as_millis())
}

pub fn change_between(previous: (i64, Option<i64>), next: (i64, Option<i64>)) -> i64 {
    let mut change = 0;
    if previous.0 != next.0 {
        change |= STATUS_CHANGED;
    }
    if previous.1 != next.1 {
        change |= FILES_CHANGED;
    }
    change
}

pub fn snapshot_of(id: i64, new: &NewSnapshot, last_check: Timestamp) -> Snapshot {
    Snapshot {
        id,
        repo: new.repo.clone(),
        server: new.server.clone(),
        sync_status: new.sync_status,
        drift_count: new.drift_count,
        files: new
            .files
            .iter()
            .map(|name| FileEntry { name: name.clone() })
            .collect(),
        files_text: files_text(new.files.iter().map(String::as_str)),
        last_check,
        received_at: new.received_at,
        revision: new.revision.clone(),
        run_url: new.run_url.clone(),
        message: new.message.clone(),
        stale_after_seconds: new.stale_after_seconds,
        hash: String::new(),
    }
}

fn same_content(stored: &Snapshot, new: &NewSnapshot) -> bool {
    stored.sync_status == new.sync_status
        && stored.drift_count == new.drift_count
        && stored.file_names().eq(new.files.iter().map(String::as_str))
        && stored.revision == new.revision
        && stored.run_url == new.run_url
        && stored.message == new.message
        && stored.stale_after_seconds == new.stale_after_seconds
}

/// What a check that lands on an already stored `last_check` of its target becomes.
pub fn at_taken_time(stored: Snapshot, new: &NewSnapshot) -> Option<Result<Recorded, StoreError>> {
    if new.last_check_defaulted {
        // The server chose this time, not the client, so it is no retry key: the caller takes
        // the next free millisecond.
        None
    } else if same_content(&stored, new) {
        Some(Ok(Recorded {
            snapshot: stored,
            replayed: true,
        }))
    } else {
        Some(Err(StoreError::Conflict(format!(
            "{}/{} already has a different snapshot (id {}) at last_check {}; \
             a retry must repeat the original content",
            new.repo, new.server, stored.id, stored.last_check
        ))))
    }
}
