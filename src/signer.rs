//! The signing clock: with `--signing-key`, a head statement when the server starts, every
//! `--sign-interval`, and once more at graceful shutdown (src/signing.rs, docs/audit.md).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::signing::{SignedStatement, StatementKey};
use crate::store::{Store, StoreError};
use crate::timestamp::Timestamp;

/// Signs now, whatever was signed before (start and shutdown), and logs the outcome.
pub async fn sign_now(store: &Store, key: &StatementKey, occasion: &str) {
    log(store.sign_heads(key, None).await, occasion);
}

/// Signs every `every`, skipping a tick when another replica signed within the last half
/// interval (replicas sharing one database need not each add a statement). Abort the task
/// before the shutdown's statement.
pub fn spawn(store: Store, key: Arc<StatementKey>, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once: the start's statement is signed by the caller.
        tick.tick().await;
        let half = i64::try_from(every.as_millis() / 2).unwrap_or(i64::MAX);
        loop {
            tick.tick().await;
            let since = Timestamp::now().plus_millis(-half);
            match store.sign_heads(&key, Some(since)).await {
                Err(StoreError::Closed) => break,
                outcome => log(outcome, "interval"),
            }
        }
    })
}

fn log(outcome: Result<Option<SignedStatement>, StoreError>, occasion: &str) {
    match outcome {
        Ok(Some(signed)) => tracing::info!(
            seq = signed.statement.seq,
            heads = signed.statement.heads.len(),
            records = signed.statement.records,
            hash = %hex::encode(signed.hash),
            occasion,
            "head statement signed"
        ),
        Ok(None) => tracing::debug!(occasion, "another replica signed the heads recently"),
        Err(error) => tracing::error!(%error, occasion, "cannot sign the heads"),
    }
}
