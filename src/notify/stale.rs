//! STALE by the server's clock: a reporter that dies sends nothing, so no snapshot can say its
//! target went stale. This writes `entered STALE` at the moment a target's latest check passed its
//! stale-after, and `left STALE` at the check that ended it. Both are timed by the data, not by
//! when the timer ran, so replicas and restarts write the same row once (the outbox's unique key).

use std::collections::HashMap;

use crate::model::StatusFilter;
use crate::store::{Store, StoreError};
use crate::timestamp::Timestamp;

/// Writes the STALE transitions that are due at `now`; returns how many it wrote (or tried to:
/// one another replica wrote first counts too).
pub async fn record_stale(
    store: &Store,
    default_stale_after_seconds: i64,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let tips: HashMap<(String, String), (String, i64)> = store
        .stale_tips()
        .await?
        .into_iter()
        .map(|(repo, server, kind, at)| ((repo, server), (kind, at)))
        .collect();
    let mut written = 0;
    for latest in store.latest(&StatusFilter::default()).await? {
        // Retired targets stop counting STALE time.
        if latest.retired_at.is_some() {
            continue;
        }
        let snapshot = &latest.snapshot;
        let stale_after = snapshot
            .stale_after_seconds
            .unwrap_or(default_stale_after_seconds)
            .saturating_mul(1000);
        let checked = snapshot.last_check.as_millis();
        let stale_at = checked.saturating_add(stale_after);
        let key = (snapshot.repo.clone(), snapshot.server.clone());
        let open = tips
            .get(&key)
            .filter(|(kind, _)| kind == "entered")
            .map(|(_, at)| *at);
        let mut write = async |kind: &str, at: i64| {
            written += 1;
            store
                .record_stale_transition(
                    &snapshot.repo,
                    &snapshot.server,
                    kind,
                    Timestamp::from_millis(at),
                )
                .await
        };
        match open {
            Some(entered) if entered == stale_at && now.as_millis() >= stale_at => {}
            // A newer check ended the stale period (and perhaps went stale in its turn).
            Some(entered) => write("left", checked.max(entered)).await?,
            None => {}
        }
        if now.as_millis() >= stale_at && open != Some(stale_at) {
            write("entered", stale_at).await?;
        }
    }
    Ok(written)
}
