//! The one write pipeline both stores run: the queue and its back-pressure, group commit with a
//! one-by-one fallback, and the placement of every snapshot on its target's history and chain.
//!
//! ```text
//! POST / import ──submit──▶ queue (bounded: full → 503) ──▶ writer task(s)
//!                                                          │ gather a Batch (≤ MAX_BATCH)
//!                                                          ▼
//!                                      commit(Backend): write the batch atomically
//!                                        ├─ ok: answer every caller
//!                                        └─ failed: write each snapshot on its own
//!                                                          │
//!                              Backend::write = begin → place(Steps) → finish
//! ```
//!
//! A database brings two things: a [`Backend`] that writes a batch all or nothing (opening and
//! finishing its transaction, retrying what its database asks to retry), and the [`Steps`] that
//! [`place`] runs inside that transaction. Placement is the same everywhere:
//! - **append**: a check newer than its target's latest is linked to the target's chain head and
//!   becomes the latest; the row waits for the batch's next flush;
//! - **replay**: a check at a taken `last_check` with the same content answers with the stored
//!   snapshot, writing nothing;
//! - **conflict**: a check at a taken `last_check` with other content is refused;
//! - **server-chosen time**: a check without `last_check` whose time is taken moves to the next
//!   free millisecond;
//! - **late check**: a check older than its target's latest joins history where it belongs (the
//!   transition flags of the snapshot after it are recomputed) and still extends the chain, which
//!   follows arrival order.
//!
//! The chain is a property of the target, not of snapshots: [`Tip::head`] is whatever record was
//! chained last. Other kinds of chained records (acknowledgements, silences, retirements) extend
//! the same head through the same steps.

use tokio::sync::{mpsc, oneshot};

use crate::chain::{self, Hash};
use crate::model::{NewSnapshot, Order, Snapshot};
use crate::store::rules::{
    self, FILES_CHANGED, STATUS_CHANGED, change_between, received_delay, snapshot_of,
};
use crate::store::sql::Neighbour;
use crate::store::{Recorded, StoreError};
use crate::timestamp::Timestamp;

/// Most snapshots committed at once.
pub const MAX_BATCH: usize = 1024;
/// Jobs (one per POST, one per import call) waiting for the writers; when it is full, callers are
/// refused with `Unavailable` (503) rather than queued without bound.
pub const QUEUE_CAPACITY: usize = 8192;

/// What one snapshot became.
pub type Outcome = Result<Recorded, StoreError>;

/// Snapshots waiting for a writer (one for a POST, many for an import), and where their outcomes
/// go, in the same order.
pub struct WriteJob {
    pub snapshots: Vec<NewSnapshot>,
    pub reply: oneshot::Sender<Vec<Outcome>>,
}

impl std::fmt::Debug for WriteJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteJob")
            .field("snapshots", &self.snapshots.len())
            .finish_non_exhaustive()
    }
}

/// Queues `snapshots` on `queue` (wrapped by `message` into whatever the queue carries) and waits
/// for their outcomes. A full queue refuses at once: back-pressure the caller sees as a 503.
pub async fn submit<M>(
    queue: &mpsc::Sender<M>,
    snapshots: Vec<NewSnapshot>,
    message: impl FnOnce(WriteJob) -> M,
) -> Result<Vec<Outcome>, StoreError> {
    let (reply, outcome) = oneshot::channel();
    queue
        .try_send(message(WriteJob { snapshots, reply }))
        .map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => {
                StoreError::Unavailable("the write queue is full".to_owned())
            }
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })?;
    outcome.await.map_err(|_| StoreError::Closed)
}

/// The jobs a writer took from its queue for one commit.
#[derive(Debug, Default)]
pub struct Batch {
    jobs: Vec<WriteJob>,
    snapshots: usize,
}

impl Batch {
    pub fn push(&mut self, job: WriteJob) {
        self.snapshots += job.snapshots.len();
        self.jobs.push(job);
    }

    /// True once the batch holds `MAX_BATCH` snapshots: take no more.
    pub fn is_full(&self) -> bool {
        self.snapshots >= MAX_BATCH
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

/// A database's way to write a batch: all of it or nothing.
pub trait Backend {
    /// Writes `snapshots` in one transaction. The outer error means nothing was written; the
    /// inner results are per-snapshot outcomes such as a conflict.
    async fn write(&mut self, snapshots: &[&NewSnapshot]) -> Result<Vec<Outcome>, StoreError>;
}

/// Commits the batch with one transaction, then answers every caller. When that transaction
/// fails, one snapshot's failure must not fail its neighbours: each is written on its own.
pub async fn commit(backend: &mut impl Backend, batch: &mut Batch) {
    let started = std::time::Instant::now();
    let snapshots: Vec<&NewSnapshot> = batch
        .jobs
        .iter()
        .flat_map(|job| job.snapshots.iter())
        .collect();
    let mut outcomes = match backend.write(&snapshots).await {
        Ok(outcomes) => outcomes,
        Err(error) if snapshots.len() == 1 => vec![Err(error)],
        Err(error) => {
            tracing::warn!(%error, size = snapshots.len(), "group commit failed; retrying one by one");
            let mut outcomes = Vec::with_capacity(snapshots.len());
            for snapshot in &snapshots {
                let outcome = backend
                    .write(&[*snapshot])
                    .await
                    .and_then(|mut single| single.pop().unwrap_or(Err(StoreError::Closed)));
                outcomes.push(outcome);
            }
            outcomes
        }
    };
    tracing::trace!(
        snapshots = snapshots.len(),
        micros = started.elapsed().as_micros(),
        "committed"
    );
    metrics::histogram!(crate::telemetry::COMMIT_DURATION).record(started.elapsed());
    let mut outcomes = outcomes.drain(..);
    for job in batch.jobs.drain(..) {
        let mine = outcomes.by_ref().take(job.snapshots.len()).collect();
        // The caller may have gone away (client disconnected); the snapshot is stored anyway.
        let _ = job.reply.send(mine);
    }
    batch.snapshots = 0;
}

/// What placement knows of a target: its latest check and the chain head it extends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    pub target_id: i64,
    /// The latest snapshot by `last_check`; `None` for a target without history.
    pub latest: Option<LatestCheck>,
    /// The `last_check` where the latest's run of `sync_status` began.
    pub status_since: Option<i64>,
    /// The id and hash of the target's newest chained record by id: what the next one links to.
    pub head: Option<(i64, Hash)>,
}

impl Tip {
    /// A target that has nothing yet.
    pub fn new(target_id: i64) -> Self {
        Self {
            target_id,
            latest: None,
            status_since: None,
            head: None,
        }
    }

    fn head_hash(&self) -> Option<&Hash> {
        self.head.as_ref().map(|(_, hash)| hash)
    }
}

/// The fields of a target's latest snapshot that the next one is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatestCheck {
    pub id: i64,
    pub last_check: i64,
    pub sync_status: i64,
    pub fileset_id: Option<i64>,
}

/// A snapshot row as the `snapshots` table stores it, waiting for the next flush.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub target_id: i64,
    pub last_check: i64,
    pub received_delay: i64,
    pub sync_status: i64,
    pub drift_count: i64,
    pub fileset_id: Option<i64>,
    pub change: i64,
    pub stale_after: Option<i64>,
    pub revision: Option<String>,
    pub run_url: Option<String>,
    pub message: Option<String>,
    pub hash: Hash,
}

impl Row {
    fn new(
        snapshot: &Snapshot,
        new: &NewSnapshot,
        target_id: i64,
        fileset_id: Option<i64>,
        change: i64,
        hash: Hash,
    ) -> Self {
        Self {
            id: snapshot.id,
            target_id,
            last_check: snapshot.last_check.as_millis(),
            received_delay: received_delay(new, snapshot.last_check),
            sync_status: new.sync_status.code(),
            drift_count: new.drift_count,
            fileset_id,
            change,
            stale_after: new.stale_after_seconds,
            revision: new.revision.clone(),
            run_url: new.run_url.clone(),
            message: new.message.clone(),
            hash,
        }
    }
}

/// The steps placement takes inside one database transaction. Rows pushed wait in the
/// implementation until `flush`; every read step sees what was flushed before it.
pub trait Steps {
    /// The target's tip as this transaction left it, creating the target when it is new.
    async fn tip(&mut self, repo: &str, server: &str) -> Result<Tip, StoreError>;
    /// The id of this set of files (stored once, when first needed); `None` for no files.
    async fn fileset(&mut self, files: &[String]) -> Result<Option<i64>, StoreError>;
    /// A new record id, greater than every id this target's records have.
    async fn next_id(&mut self) -> Result<i64, StoreError>;
    /// Queues a snapshot row for the next flush.
    fn push(&mut self, row: Row);
    /// Writes every queued row.
    async fn flush(&mut self) -> Result<(), StoreError>;
    /// The stored snapshot of a target at a `last_check`.
    async fn snapshot_at(
        &mut self,
        target_id: i64,
        last_check: Timestamp,
    ) -> Result<Option<Snapshot>, StoreError>;
    /// The target's stored snapshot just before (`Desc`) or just after (`Asc`) a `last_check`.
    async fn neighbour(
        &mut self,
        target_id: i64,
        last_check: Timestamp,
        direction: Order,
    ) -> Result<Option<Neighbour>, StoreError>;
    /// Rewrites a stored snapshot's derived transition flags.
    async fn set_change(&mut self, id: i64, change: i64) -> Result<(), StoreError>;
    /// After a late check: reads back the target's latest and the start of its run, which the
    /// late check may have moved.
    async fn reread(&mut self, tip: &mut Tip) -> Result<(), StoreError>;
    /// The target's tip after a record was stored; `appended` is the new latest snapshot when
    /// the record was an append (a late check's latest comes from `reread`).
    fn settle(&mut self, repo: &str, server: &str, tip: Tip, appended: Option<&Snapshot>);
}

/// Places every snapshot, in order, on its target's history and chain, through `steps`. Rows
/// may still wait in `steps` when it returns: the caller flushes and commits.
pub async fn place(
    steps: &mut impl Steps,
    snapshots: &[&NewSnapshot],
) -> Result<Vec<Outcome>, StoreError> {
    let mut outcomes = Vec::with_capacity(snapshots.len());
    for &new in snapshots {
        let mut tip = steps.tip(&new.repo, &new.server).await?;
        let late = tip
            .latest
            .is_some_and(|latest| new.last_check.as_millis() <= latest.last_check);
        let outcome = if late {
            // A retry, a late check or a taken server-chosen time: the database decides, so it
            // must hold every row before this one.
            steps.flush().await?;
            place_out_of_order(steps, new, &mut tip).await?
        } else {
            let recorded = append(steps, new, &mut tip).await?;
            steps.settle(&new.repo, &new.server, tip, Some(&recorded.snapshot));
            Ok(recorded)
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// The usual case: a check newer than everything its target has.
async fn append(
    steps: &mut impl Steps,
    new: &NewSnapshot,
    tip: &mut Tip,
) -> Result<Recorded, StoreError> {
    let fileset_id = steps.fileset(&new.files).await?;
    let id = steps.next_id().await?;
    let last_check = new.last_check.as_millis();
    let sync_status = new.sync_status.code();
    let (snapshot, hash) = chained(id, new, new.last_check, tip);
    let change = tip.latest.map_or(STATUS_CHANGED | FILES_CHANGED, |latest| {
        change_between(
            (latest.sync_status, latest.fileset_id),
            (sync_status, fileset_id),
        )
    });
    if change & STATUS_CHANGED != 0 || tip.status_since.is_none() {
        tip.status_since = Some(last_check);
    }
    tip.latest = Some(LatestCheck {
        id,
        last_check,
        sync_status,
        fileset_id,
    });
    tip.head = Some((id, hash));
    steps.push(Row::new(
        &snapshot,
        new,
        tip.target_id,
        fileset_id,
        change,
        hash,
    ));
    Ok(Recorded {
        snapshot,
        replayed: false,
    })
}

/// A check at or before its target's latest: an identical retry (answered with the stored
/// snapshot), a conflict, or a late check that joins history without becoming the latest.
async fn place_out_of_order(
    steps: &mut impl Steps,
    new: &NewSnapshot,
    tip: &mut Tip,
) -> Result<Outcome, StoreError> {
    let mut last_check = new.last_check;
    while let Some(stored) = steps.snapshot_at(tip.target_id, last_check).await? {
        match rules::at_taken_time(stored, new) {
            None => last_check = last_check.plus_millis(1),
            Some(outcome) => return Ok(outcome),
        }
    }

    let fileset_id = steps.fileset(&new.files).await?;
    let id = steps.next_id().await?;
    let sync_status = new.sync_status.code();
    let previous = steps
        .neighbour(tip.target_id, last_check, Order::Desc)
        .await?;
    let next = steps
        .neighbour(tip.target_id, last_check, Order::Asc)
        .await?;
    let (snapshot, hash) = chained(id, new, last_check, tip);
    let change = previous.map_or(STATUS_CHANGED | FILES_CHANGED, |previous| {
        change_between(
            (previous.sync_status, previous.fileset_id),
            (sync_status, fileset_id),
        )
    });
    steps.push(Row::new(
        &snapshot,
        new,
        tip.target_id,
        fileset_id,
        change,
        hash,
    ));
    steps.flush().await?;
    if let Some(next) = next {
        // The late check becomes history; the transition flags of the snapshot after it change
        // with it.
        let next_change = change_between(
            (sync_status, fileset_id),
            (next.sync_status, next.fileset_id),
        );
        if next_change != next.change {
            steps.set_change(next.id, next_change).await?;
        }
    }
    // The newest by id is the chain head; the latest by last_check and the start of its run are
    // read back, since a late check can move either.
    tip.head = Some((id, hash));
    steps.reread(tip).await?;
    steps.settle(&new.repo, &new.server, *tip, None);
    Ok(Ok(Recorded {
        snapshot,
        replayed: false,
    }))
}

/// The stored form of `new` with id `id` at `last_check`, hashed onto the tip's chain.
fn chained(id: i64, new: &NewSnapshot, last_check: Timestamp, tip: &Tip) -> (Snapshot, Hash) {
    let mut snapshot = snapshot_of(id, new, last_check);
    let hash = chain::link(&snapshot, tip.head_hash());
    snapshot.hash = hex::encode(hash);
    (snapshot, hash)
}
