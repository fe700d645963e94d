//! Acknowledgements end at their `until` by the server's clock, not only when a snapshot
//! arrives: a background task records each expiry on the target's chain, timed at `until`, so
//! the record is the same whichever replica (or restart) writes it, and writing it twice
//! records it once (the pipeline ends only the acknowledgement in force).

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::model::lifecycle::{EventKind, NewEvent};
use crate::store::{Store, StoreError};
use crate::timestamp::Timestamp;

/// How often the task looks for acknowledgements past their `until`. Readers never wait for it:
/// `/status.json` stops showing an acknowledgement the moment `until` passes.
pub const EVERY: Duration = Duration::from_secs(5);

/// Records expiries every [`EVERY`] until the store closes.
pub fn spawn(store: Store) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match expire(&store, Timestamp::now()).await {
                Ok(()) => {}
                Err(StoreError::Closed) => break,
                Err(error) => {
                    tracing::warn!(%error, "recording expired acknowledgements failed; retrying");
                }
            }
        }
    })
}

/// Records the end of every acknowledgement whose `until` is at or before `now`.
pub async fn expire(store: &Store, now: Timestamp) -> Result<(), StoreError> {
    for ack in store.expired_acks(now).await? {
        store
            .record_event(NewEvent {
                repo: ack.repo,
                server: ack.server,
                at: ack.until,
                kind: EventKind::EndAck {
                    ack: ack.id,
                    by: None,
                },
            })
            .await?;
    }
    Ok(())
}
