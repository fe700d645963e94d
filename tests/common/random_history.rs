//! The records the random-history property tests (tests/rollups.rs, tests/episode_table.rs) write:
//! one generated check or retirement of target `s{target}` in repo `r`, as the store takes it.

use gitops_status_server::model::lifecycle::{EventKind, NewEvent};
use gitops_status_server::model::{NewSnapshot, SyncStatus};
use gitops_status_server::timestamp::Timestamp;

/// A check of `s{target}` at `last_check`, received at `received_at`: `status` 0..3 picks
/// SYNCED, OUT_OF_SYNC or ERROR; bits 1 and 2 of `files` add `a.conf` and `b.conf` to a drift.
pub fn check(
    target: usize,
    last_check: i64,
    received_at: i64,
    status: u8,
    files: u8,
    stale_after: Option<i64>,
) -> NewSnapshot {
    let sync_status =
        [SyncStatus::Synced, SyncStatus::OutOfSync, SyncStatus::Error][usize::from(status)];
    let files: Vec<String> = if sync_status == SyncStatus::Synced {
        Vec::new()
    } else {
        [(1, "a.conf"), (2, "b.conf")]
            .iter()
            .filter(|(bit, _)| files & bit != 0)
            .map(|(_, name)| (*name).to_owned())
            .collect()
    };
    NewSnapshot {
        repo: "r".to_owned(),
        server: format!("s{target}"),
        sync_status,
        drift_count: files.len() as i64,
        files,
        last_check: Timestamp::from_millis(last_check),
        last_check_defaulted: false,
        received_at: Timestamp::from_millis(received_at),
        revision: None,
        run_url: None,
        message: None,
        stale_after_seconds: stale_after,
    }
}

/// The retirement of `s{target}` at `at`, by `ops`.
pub fn retire(target: usize, at: i64) -> NewEvent {
    NewEvent {
        repo: "r".to_owned(),
        server: format!("s{target}"),
        at: Timestamp::from_millis(at),
        kind: EventKind::Retire {
            by: "ops".to_owned(),
        },
    }
}
