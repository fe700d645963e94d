//! Retention: a background task that prunes snapshots older than `--retention` every
//! `--retention-interval`, keeping transitions and the integrity chain (see `Store::prune`).

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::store::{Store, StoreError};
use crate::timestamp::Timestamp;

/// How long snapshots are kept and how often retention runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub keep: Duration,
    pub every: Duration,
}

/// Runs retention now and then every `policy.every` until the store closes.
pub fn spawn(store: Store, policy: Policy) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(policy.every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let keep_millis = i64::try_from(policy.keep.as_millis()).unwrap_or(i64::MAX);
        loop {
            ticker.tick().await;
            let cutoff = Timestamp::now().plus_millis(-keep_millis);
            match store.prune(cutoff).await {
                Ok(report) if report.elsewhere => {
                    tracing::debug!("another replica is running retention; skipped this pass");
                }
                Ok(report) => tracing::info!(
                    cutoff = %report.cutoff,
                    removed = report.removed,
                    checkpoints = report.checkpoints,
                    released_pages = report.released_pages,
                    "retention run finished"
                ),
                Err(StoreError::Closed) => break,
                Err(error) => {
                    tracing::warn!(%error, "retention run failed; it runs again at the next interval");
                }
            }
        }
    })
}
