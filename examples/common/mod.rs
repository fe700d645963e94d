//! What the examples that write long histories share: snapshots imported through the store in
//! chunks, a few imports in flight at once so the writer always has a batch waiting.

use std::error::Error;

use gitops_status_server::model::NewSnapshot;
use gitops_status_server::store::{Recorded, Store, StoreError};
use tokio::task::JoinSet;

/// Snapshots per `Store::import` call, and calls in flight at once.
const CHUNK: usize = 1024;
const IN_FLIGHT: usize = 4;

type Outcomes = Result<Vec<Result<Recorded, StoreError>>, StoreError>;

#[derive(Debug)]
pub struct Loader {
    store: Store,
    chunk: Vec<NewSnapshot>,
    pending: JoinSet<Outcomes>,
}

impl Loader {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            chunk: Vec::with_capacity(CHUNK),
            pending: JoinSet::new(),
        }
    }

    /// Queues one snapshot; fails on the first one the store refused.
    pub async fn push(&mut self, snapshot: NewSnapshot) -> Result<(), Box<dyn Error>> {
        self.chunk.push(snapshot);
        if self.chunk.len() == CHUNK {
            let store = self.store.clone();
            let full = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
            self.pending.spawn(async move { store.import(full).await });
            if self.pending.len() >= IN_FLIGHT {
                check(
                    self.pending
                        .join_next()
                        .await
                        .ok_or("no import in flight")??,
                )?;
            }
        }
        Ok(())
    }

    /// Imports what is queued and waits until everything pushed so far is stored.
    pub async fn flush(&mut self) -> Result<(), Box<dyn Error>> {
        let rest = std::mem::take(&mut self.chunk);
        if !rest.is_empty() {
            check(self.store.import(rest).await)?;
        }
        while let Some(outcomes) = self.pending.join_next().await {
            check(outcomes?)?;
        }
        Ok(())
    }
}

fn check(outcomes: Outcomes) -> Result<(), StoreError> {
    outcomes?
        .into_iter()
        .try_for_each(|outcome| outcome.map(drop))
}
