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
//! Placement also tells the batch's derived tables what changed: the daily rollups
//! ([`Steps::rollups`]) and the materialised episodes ([`Steps::episodes`]: an append steps the
//! target's current run; a late check, a retirement or a revival recomputes the target), each
//! written once per batch before it commits.
//!
//! The chain is a property of the target, not of snapshots: [`Tip::head`] is whatever record was
//! chained last. Other kinds of chained records (acknowledgements, silences, retirements) extend
//! the same head through the same steps.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::chain::{self, EventFields, Hash};
use crate::model::lifecycle::{Ack, EventKind, EventOutcome, NewEvent, Silence, body};
use crate::model::{NewSnapshot, Order, Snapshot, SyncStatus};
use crate::rollups::{Holder, RollupDeltas};
use crate::store::episode_table::EpisodeDeltas;
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

/// A chained record to write: a snapshot, or an event of the drift lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Snapshot(NewSnapshot),
    Event(NewEvent),
}

/// What a record became.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "moved once per record, from the writer to its caller; boxing would allocate per snapshot"
)]
pub enum Placed {
    Snapshot(Recorded),
    Event(EventOutcome),
}

/// What one record became.
pub type Outcome = Result<Placed, StoreError>;

/// Records waiting for a writer (one for a POST, many for an import), and where their outcomes
/// go, in the same order.
pub struct WriteJob {
    pub records: Vec<Record>,
    pub reply: oneshot::Sender<Vec<Outcome>>,
}

impl std::fmt::Debug for WriteJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteJob")
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

/// Queues `records` on `queue` (wrapped by `message` into whatever the queue carries) and waits
/// for their outcomes. A full queue refuses at once: back-pressure the caller sees as a 503.
pub async fn submit<M>(
    queue: &mpsc::Sender<M>,
    records: Vec<Record>,
    message: impl FnOnce(WriteJob) -> M,
) -> Result<Vec<Outcome>, StoreError> {
    let (reply, outcome) = oneshot::channel();
    queue
        .try_send(message(WriteJob { records, reply }))
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
        self.snapshots += job.records.len();
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
    /// Writes `records` in one transaction. The outer error means nothing was written; the
    /// inner results are per-record outcomes such as a conflict.
    async fn write(&mut self, records: &[&Record]) -> Result<Vec<Outcome>, StoreError>;
}

/// Commits the batch with one transaction, then answers every caller. When that transaction
/// fails, one snapshot's failure must not fail its neighbours: each is written on its own,
/// unless the database itself is unavailable.
pub async fn commit(backend: &mut impl Backend, batch: &mut Batch) {
    let started = std::time::Instant::now();
    let snapshots: Vec<&Record> = batch
        .jobs
        .iter()
        .flat_map(|job| job.records.iter())
        .collect();
    let mut outcomes = match backend.write(&snapshots).await {
        Ok(outcomes) => outcomes,
        Err(error) if snapshots.len() == 1 => vec![Err(error)],
        // The database failed, not a record (unreachable, restarting, full, locked): each record
        // on its own would meet the same fault again, one after another, while every caller
        // waits. They all get the 503 now and retry.
        Err(error @ StoreError::Unavailable(_)) => vec![Err(error); snapshots.len()],
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
        let mine = outcomes.by_ref().take(job.records.len()).collect();
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
    /// The acknowledgement in force (made, not ended).
    pub ack: Option<TipAck>,
    /// When the target was retired (ms); `None` while it is active.
    pub retired_at: Option<i64>,
}

/// What placement needs of the acknowledgement in force: when it was made and until when it
/// holds (ms), to end it at the right time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TipAck {
    pub id: i64,
    pub created_at: i64,
    pub until: i64,
}

impl Tip {
    /// A target that has nothing yet.
    pub fn new(target_id: i64) -> Self {
        Self {
            target_id,
            latest: None,
            status_since: None,
            head: None,
            ack: None,
            retired_at: None,
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
    /// Its own stale-after (seconds): its hold's share of the rollups needs it.
    pub stale_after: Option<i64>,
}

impl LatestCheck {
    fn holder(&self) -> Holder {
        Holder {
            last_check: self.last_check,
            sync_status: self.sync_status,
            stale_after: self.stale_after,
        }
    }
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

/// A chained event row, with what it changes in the tables the API reads.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: i64,
    /// `None` on the fleet chain.
    pub target_id: Option<i64>,
    pub kind: &'static str,
    pub at: i64,
    pub body: String,
    pub hash: Hash,
    pub effect: Effect,
}

/// What an event changes besides the chain.
#[derive(Debug, Clone)]
pub enum Effect {
    /// A new acknowledgement, in force from now.
    Ack {
        target_id: i64,
        ack: Arc<Ack>,
    },
    /// An acknowledgement ended.
    EndAck {
        target_id: i64,
        ack: i64,
        reason: &'static str,
        by: Option<String>,
    },
    Silence(Arc<Silence>),
    EndSilence {
        silence: i64,
        by: String,
    },
    Retire {
        target_id: i64,
    },
    Revive {
        target_id: i64,
    },
}

/// A transition for the notifications' outbox, written with the record that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionRow {
    pub target_id: i64,
    /// `entered`, `left`, `ack` or `ack_end`.
    pub kind: &'static str,
    /// The state entered or left; for `ack`/`ack_end`, the target's sync_status.
    pub state: &'static str,
    pub at: i64,
    pub record_id: Option<i64>,
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
    /// The tip of a target that exists, without creating one; `None` for an unknown target.
    async fn existing_tip(&mut self, repo: &str, server: &str) -> Result<Option<Tip>, StoreError>;
    /// Writes an event and its effect now (after every queued row).
    async fn event(&mut self, row: EventRow) -> Result<(), StoreError>;
    /// Queues a transition for the notifications' outbox, written with the batch after its
    /// records, in the order queued (the outbox is delivered in id order).
    fn transition(&mut self, row: TransitionRow);
    /// The fleet chain's head (held for this transaction).
    async fn fleet_head(&mut self) -> Result<Option<(i64, Hash)>, StoreError>;
    /// The fleet chain's head after an event was written on it.
    fn set_fleet_head(&mut self, head: (i64, Hash));
    /// A silence's `ends_at` and `deleted_at`; `None` when there is no such silence.
    async fn silence_end(&mut self, id: i64) -> Result<Option<(i64, Option<i64>)>, StoreError>;
    /// The batch's changes to the daily rollups, written before it commits.
    fn rollups(&mut self) -> &mut RollupDeltas;
    /// The batch's changes to the materialised episodes, written before it commits.
    fn episodes(&mut self) -> &mut EpisodeDeltas;
}

/// Places every snapshot, in order, on its target's history and chain, through `steps`. Rows
/// may still wait in `steps` when it returns: the caller flushes and commits.
pub async fn place(
    steps: &mut impl Steps,
    records: &[&Record],
) -> Result<Vec<Outcome>, StoreError> {
    let mut outcomes = Vec::with_capacity(records.len());
    for &record in records {
        let outcome = match record {
            Record::Snapshot(new) => place_snapshot(steps, new).await?,
            Record::Event(event) if event.kind.is_fleet() => {
                place_fleet_event(steps, event).await?
            }
            Record::Event(event) => place_event(steps, event).await?,
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Places one snapshot; a snapshot of a retired target revives it, and a SYNCED one ends the
/// acknowledgement in force (both recorded on the chain after the snapshot).
async fn place_snapshot(steps: &mut impl Steps, new: &NewSnapshot) -> Result<Outcome, StoreError> {
    {
        // The tip as placement leaves it (settled): what the lifecycle follows from.
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
            let previous = tip.latest.map(|latest| latest.sync_status);
            let recorded = append(steps, new, &mut tip).await?;
            steps.settle(&new.repo, &new.server, tip, Some(&recorded.snapshot));
            status_transitions(steps, &tip, previous, &recorded.snapshot);
            Ok(recorded)
        };
        if let Ok(recorded) = &outcome {
            if late && !recorded.replayed {
                // A late check can split a run or fill a gap: its target is derived again.
                steps.episodes().recompute(tip.target_id);
            }
            let revives = tip.retired_at.is_some();
            let resolves = !late && tip.ack.is_some() && new.sync_status == SyncStatus::Synced;
            if !recorded.replayed && (revives || resolves) {
                follow_snapshot(steps, new, &recorded.snapshot, late, tip).await?;
            }
        }
        Ok(outcome.map(Placed::Snapshot))
    }
}

/// The outbox rows of an appended snapshot that changed its target's sync_status: leaving
/// OUT_OF_SYNC or ERROR, entering one of them. (A late check joins history without changing what
/// the target is now, so it notifies nothing.)
fn status_transitions(
    steps: &mut impl Steps,
    tip: &Tip,
    previous: Option<i64>,
    snapshot: &Snapshot,
) {
    let now = snapshot.sync_status;
    let before = previous.and_then(SyncStatus::from_code);
    if before == Some(now) {
        return;
    }
    let at = snapshot.last_check.as_millis();
    let notable = |status: SyncStatus| status != SyncStatus::Synced;
    if let Some(before) = before.filter(|status| notable(*status)) {
        steps.transition(TransitionRow {
            target_id: tip.target_id,
            kind: "left",
            state: before.as_str(),
            at,
            record_id: Some(snapshot.id),
        });
    }
    if notable(now) {
        steps.transition(TransitionRow {
            target_id: tip.target_id,
            kind: "entered",
            state: now.as_str(),
            at,
            record_id: Some(snapshot.id),
        });
    }
}

/// The sync_status of the target's latest snapshot, as a state name.
fn latest_state(tip: &Tip) -> &'static str {
    tip.latest
        .and_then(|latest| SyncStatus::from_code(latest.sync_status))
        .map_or("SYNCED", SyncStatus::as_str)
}

/// What a stored snapshot changes in its target's lifecycle: a retired target comes back, and
/// an appended SYNCED check ends the acknowledgement in force (at `until` if that came first).
async fn follow_snapshot(
    steps: &mut impl Steps,
    new: &NewSnapshot,
    snapshot: &Snapshot,
    late: bool,
    mut tip: Tip,
) -> Result<(), StoreError> {
    let key = (new.repo.as_str(), new.server.as_str());
    let mut changed = false;
    if tip.retired_at.is_some() {
        let target_id = tip.target_id;
        chain_event(
            steps,
            &mut tip,
            key,
            "revive",
            new.received_at.as_millis(),
            body::revive(snapshot.id),
            Effect::Revive { target_id },
        )
        .await?;
        tip.retired_at = None;
        steps.episodes().recompute(target_id);
        changed = true;
    }
    if let (false, SyncStatus::Synced, Some(ack)) = (late, new.sync_status, tip.ack) {
        let last_check = snapshot.last_check.as_millis();
        // A SYNCED check made before the acknowledgement (it arrived after it) ends it the moment
        // it was made: an acknowledgement never ends before it began.
        let (reason, at, by_snapshot) = if ack.until <= last_check {
            ("expired", ack.until, None)
        } else {
            (
                "resolved",
                last_check.max(ack.created_at),
                Some(snapshot.id),
            )
        };
        end_ack(steps, &mut tip, key, ack.id, reason, at, None, by_snapshot).await?;
        changed = true;
    }
    if changed {
        steps.settle(key.0, key.1, tip, None);
    }
    Ok(())
}

/// Writes an event on the tip's chain and moves the head to it; returns its id.
async fn chain_event(
    steps: &mut impl Steps,
    tip: &mut Tip,
    key: (&str, &str),
    kind: &'static str,
    at: i64,
    body: String,
    effect: Effect,
) -> Result<i64, StoreError> {
    let id = steps.next_id().await?;
    write_event_with_id(steps, tip, key, id, kind, at, body, effect).await?;
    Ok(id)
}

/// Records the end of the acknowledgement in force.
#[allow(
    clippy::too_many_arguments,
    reason = "every field of the ack_end record"
)]
async fn end_ack(
    steps: &mut impl Steps,
    tip: &mut Tip,
    key: (&str, &str),
    ack: i64,
    reason: &'static str,
    at: i64,
    by: Option<&str>,
    snapshot: Option<i64>,
) -> Result<i64, StoreError> {
    let target_id = tip.target_id;
    let id = chain_event(
        steps,
        tip,
        key,
        "ack_end",
        at,
        body::ack_end(ack, reason, by, snapshot),
        Effect::EndAck {
            target_id,
            ack,
            reason,
            by: by.map(str::to_owned),
        },
    )
    .await?;
    tip.ack = None;
    steps.transition(TransitionRow {
        target_id,
        kind: "ack_end",
        state: latest_state(tip),
        at,
        record_id: Some(id),
    });
    Ok(id)
}

/// Places an event of one target's chain: an acknowledgement, its end, a retirement.
async fn place_event(steps: &mut impl Steps, event: &NewEvent) -> Result<Outcome, StoreError> {
    let key = (event.repo.as_str(), event.server.as_str());
    let Some(mut tip) = steps
        .existing_tip(key.0, key.1)
        .await?
        .filter(|tip| tip.latest.is_some())
    else {
        return Ok(Err(StoreError::NotFound(format!(
            "no target {}/{} has reported",
            event.repo, event.server
        ))));
    };
    let at = event.at.as_millis();
    let id = match &event.kind {
        EventKind::Ack {
            reason,
            until,
            files,
            by,
        } => {
            if tip.retired_at.is_some() {
                return Ok(Err(StoreError::Conflict(format!(
                    "{}/{} is retired; its next snapshot brings it back",
                    event.repo, event.server
                ))));
            }
            if tip
                .latest
                .is_some_and(|latest| latest.sync_status == SyncStatus::Synced.code())
            {
                return Ok(Err(StoreError::Conflict(format!(
                    "{}/{} is SYNCED: there is no drift to acknowledge",
                    event.repo, event.server
                ))));
            }
            if let Some(old) = tip.ack {
                if old.until <= at {
                    end_ack(
                        steps, &mut tip, key, old.id, "expired", old.until, None, None,
                    )
                    .await?;
                } else {
                    end_ack(steps, &mut tip, key, old.id, "replaced", at, Some(by), None).await?;
                }
            }
            let target_id = tip.target_id;
            let body = body::ack(reason, *until, files.as_deref(), by);
            let id = steps.next_id().await?;
            let ack = Arc::new(Ack {
                id,
                repo: event.repo.clone(),
                server: event.server.clone(),
                reason: reason.clone(),
                by: by.clone(),
                files: files.clone(),
                created_at: event.at,
                until: *until,
                ended_at: None,
                end_reason: None,
                ended_by: None,
            });
            write_event_with_id(
                steps,
                &mut tip,
                key,
                id,
                "ack",
                at,
                body,
                Effect::Ack { target_id, ack },
            )
            .await?;
            tip.ack = Some(TipAck {
                id,
                created_at: at,
                until: until.as_millis(),
            });
            steps.transition(TransitionRow {
                target_id,
                kind: "ack",
                state: latest_state(&tip),
                at,
                record_id: Some(id),
            });
            Some(id)
        }
        EventKind::EndAck { ack, by } => match tip.ack {
            Some(TipAck {
                id: current, until, ..
            }) if current == *ack => {
                let (reason, at) = match by {
                    Some(_) if until > at => ("deleted", at),
                    _ => ("expired", until),
                };
                Some(end_ack(steps, &mut tip, key, *ack, reason, at, by.as_deref(), None).await?)
            }
            _ => None,
        },
        EventKind::Retire { by } => {
            if tip.retired_at.is_some() {
                None
            } else {
                let target_id = tip.target_id;
                let id = chain_event(
                    steps,
                    &mut tip,
                    key,
                    "retire",
                    at,
                    body::retire(by),
                    Effect::Retire { target_id },
                )
                .await?;
                tip.retired_at = Some(at);
                steps.episodes().recompute(target_id);
                Some(id)
            }
        }
        EventKind::Silence { .. } | EventKind::EndSilence { .. } => None,
    };
    if id.is_some() {
        steps.settle(key.0, key.1, tip, None);
    }
    Ok(Ok(Placed::Event(EventOutcome { id })))
}

/// Writes an event whose id was drawn already (its effect needs the id).
#[allow(clippy::too_many_arguments, reason = "every field of the event row")]
async fn write_event_with_id(
    steps: &mut impl Steps,
    tip: &mut Tip,
    (repo, server): (&str, &str),
    id: i64,
    kind: &'static str,
    at: i64,
    body: String,
    effect: Effect,
) -> Result<(), StoreError> {
    let hash = chain::link_event(
        &EventFields {
            id,
            repo: Some(repo),
            server: Some(server),
            kind,
            at: Timestamp::from_millis(at),
            body: &body,
        },
        tip.head.as_ref().map(|(_, hash)| hash),
        &mut Vec::new(),
    );
    steps
        .event(EventRow {
            id,
            target_id: Some(tip.target_id),
            kind,
            at,
            body,
            hash,
            effect,
        })
        .await?;
    tip.head = Some((id, hash));
    Ok(())
}

/// Places an event of the fleet chain: a silence or its deletion.
async fn place_fleet_event(
    steps: &mut impl Steps,
    event: &NewEvent,
) -> Result<Outcome, StoreError> {
    let head = steps.fleet_head().await?;
    let at = event.at.as_millis();
    let (kind, body, effect_of): (&'static str, String, Box<dyn FnOnce(i64) -> Effect + Send>) =
        match &event.kind {
            EventKind::Silence { silence, by } => {
                let body = body::silence(
                    &silence.repos,
                    &silence.servers,
                    silence.starts_at,
                    silence.ends_at,
                    &silence.reason,
                    by,
                );
                let silence = silence.clone();
                let by = by.clone();
                let created_at = event.at;
                (
                    "silence",
                    body,
                    Box::new(move |id| {
                        Effect::Silence(Arc::new(Silence {
                            id,
                            repos: silence.repos,
                            servers: silence.servers,
                            starts_at: silence.starts_at,
                            ends_at: silence.ends_at,
                            reason: silence.reason,
                            by,
                            created_at,
                            deleted_at: None,
                            deleted_by: None,
                        }))
                    }),
                )
            }
            EventKind::EndSilence { silence, by } => match steps.silence_end(*silence).await? {
                None => {
                    return Ok(Err(StoreError::NotFound(format!("no silence {silence}"))));
                }
                Some((ends_at, deleted_at)) if deleted_at.is_some() || ends_at <= at => {
                    return Ok(Ok(Placed::Event(EventOutcome { id: None })));
                }
                Some(_) => {
                    let silence = *silence;
                    let by = by.clone();
                    (
                        "silence_end",
                        body::silence_end(silence, &by),
                        Box::new(move |_| Effect::EndSilence { silence, by }),
                    )
                }
            },
            _ => return Ok(Ok(Placed::Event(EventOutcome { id: None }))),
        };
    let id = steps.next_id().await?;
    let hash = chain::link_event(
        &EventFields {
            id,
            repo: None,
            server: None,
            kind,
            at: event.at,
            body: &body,
        },
        head.as_ref().map(|(_, hash)| hash),
        &mut Vec::new(),
    );
    steps
        .event(EventRow {
            id,
            target_id: None,
            kind,
            at,
            body,
            hash,
            effect: effect_of(id),
        })
        .await?;
    steps.set_fleet_head((id, hash));
    Ok(Ok(Placed::Event(EventOutcome { id: Some(id) })))
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
    // The usual case's whole rollup cost: the previous latest's hold closes here.
    let rollups = steps.rollups();
    rollups.check(tip.target_id, last_check);
    if let Some(previous) = tip.latest {
        rollups.hold(tip.target_id, previous.holder(), last_check, 1);
    }
    // And the episodes': the target's current run goes on or closes (see episode_table).
    if tip.retired_at.is_none() {
        steps.episodes().append(
            tip.target_id,
            tip.latest.is_some(),
            id,
            last_check,
            sync_status,
            new.stale_after_seconds,
        );
    }
    tip.latest = Some(LatestCheck {
        id,
        last_check,
        sync_status,
        fileset_id,
        stale_after: new.stale_after_seconds,
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
) -> Result<Result<Recorded, StoreError>, StoreError> {
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
    roll_late_check(
        steps.rollups(),
        tip.target_id,
        new,
        last_check,
        previous,
        next,
    );
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

/// A late check splits the hold it lands in: the previous snapshot now holds until the late
/// check, and the late check until the next snapshot.
fn roll_late_check(
    rollups: &mut RollupDeltas,
    target: i64,
    new: &NewSnapshot,
    last_check: Timestamp,
    previous: Option<Neighbour>,
    next: Option<Neighbour>,
) {
    let at = last_check.as_millis();
    rollups.check(target, at);
    if let Some(previous) = previous {
        if let Some(next) = next {
            rollups.hold(target, previous.holder(), next.last_check, -1);
        }
        rollups.hold(target, previous.holder(), at, 1);
    }
    if let Some(next) = next {
        let late = Holder {
            last_check: at,
            sync_status: new.sync_status.code(),
            stale_after: new.stale_after_seconds,
        };
        rollups.hold(target, late, next.last_check, 1);
    }
}

/// The stored form of `new` with id `id` at `last_check`, hashed onto the tip's chain.
fn chained(id: i64, new: &NewSnapshot, last_check: Timestamp, tip: &Tip) -> (Snapshot, Hash) {
    let mut snapshot = snapshot_of(id, new, last_check);
    let hash = chain::link(&snapshot, tip.head_hash());
    snapshot.hash = hex::encode(hash);
    (snapshot, hash)
}
