//! The single SQLite writer: it owns the only write connection and runs the write pipeline
//! (`store::pipeline`) over it, one fsync'd commit per batch.
//!
//! It holds every target's tip in memory, assigns row ids itself, and publishes each target's
//! latest snapshot for `/status.json` after every commit. So the usual batch (checks newer than
//! their targets' latest, for known targets and file sets) is a single multi-row INSERT in
//! autocommit: one statement, one round trip to SQLite's thread, one fsync. New targets, new file
//! sets, retries, conflicts and late checks run in an explicit transaction that asks the database.
//! Any failure rolls back and reloads the memory from what committed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Connection, QueryBuilder, Row as _, Sqlite};
use tokio::sync::{Notify, mpsc, oneshot};

use super::audit::{self, Prune};
use super::{SNAPSHOT_COLUMNS, snapshot_from_row};
use crate::chain::{self, Hash};
use crate::model::lifecycle::Ack;
use crate::model::{Order, Snapshot};
use crate::rollups::{DayTotals, RollupDeltas};
use crate::store::episode_table::{EpisodeDeltas, EpisodeWrites};
use crate::store::pipeline::{
    self, Backend, Batch, Effect, EventRow, LatestCheck, Outcome, Record, Row, Steps, Tip, TipAck,
    TransitionRow, WriteJob,
};
use crate::store::rollups::{self, RebuildTarget};
use crate::store::rules;
use crate::store::sql::{self, Neighbour};
use crate::store::{Latest, PruneReport, StoreError};
use crate::timestamp::Timestamp;

/// Most rows in one INSERT statement. Batches up to this size need one statement; every size up
/// to it is a distinct prepared statement in the writer's cache.
pub const MAX_STATEMENT_ROWS: usize = 64;
/// File sets remembered by digest before the cache starts over.
const MAX_CACHED_FILESETS: usize = 65_536;

/// The latest snapshot of every target, by (repo, server), as readers see it after each commit.
pub type SharedLatest = Arc<Published>;

/// Every target's latest as the writer last published it, and how many times it has published:
/// the version `/status.json`'s cache is keyed by. Every change goes through
/// [`Published::publish`], which counts it.
#[derive(Debug, Default)]
pub struct Published {
    latest: RwLock<BTreeMap<(String, String), Arc<Latest>>>,
    version: AtomicU64,
}

impl Published {
    pub fn read(&self) -> RwLockReadGuard<'_, BTreeMap<(String, String), Arc<Latest>>> {
        self.latest.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Read before [`Published::read`]: what is then read is at least this version. The count
    /// moves while the lock is held, after the change, so a reader that sees the new count
    /// waits for the new map.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn publish(&self, change: impl FnOnce(&mut BTreeMap<(String, String), Arc<Latest>>)) {
        let mut latest = self.latest.write().unwrap_or_else(PoisonError::into_inner);
        change(&mut latest);
        self.version.fetch_add(1, Ordering::Release);
    }
}

/// What the writer is asked to do.
#[derive(Debug)]
pub enum Message {
    Write(WriteJob),
    /// A retention run (see `audit::Prune`), done in steps between write batches.
    Prune {
        cutoff: Timestamp,
        reply: oneshot::Sender<Result<PruneReport, StoreError>>,
    },
    /// Keep the daily rollups for this default stale-after (seconds): reset and rebuild them,
    /// a few targets between write batches, unless they are complete for it already.
    KeepRollups {
        stale_after: i64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// Targets rebuilt per step between write batches.
const REBUILD_TARGETS_PER_STEP: usize = 8;

/// A rollup rebuild in progress: the targets left, and who waits for its end.
#[derive(Debug)]
struct RollupRun {
    stale_after: i64,
    targets: std::collections::VecDeque<i64>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// A retention run in progress and who waits for its report.
#[derive(Debug)]
struct PruneRun {
    prune: Prune,
    reply: oneshot::Sender<Result<PruneReport, StoreError>>,
}

#[derive(Debug)]
pub struct Writer {
    connection: SqliteConnection,
    memory: Memory,
    published: SharedLatest,
    /// Set when a failed batch could not reload the memory: the next batch reloads first.
    memory_stale: bool,
}

/// What the writer remembers between batches; valid only while it matches what committed.
#[derive(Debug, Default)]
struct Memory {
    targets: HashMap<(String, String), Tip>,
    filesets: HashMap<[u8; 32], i64>,
    next_snapshot_id: i64,
    next_target_id: i64,
    /// The acknowledgement in force per target id, for the published latest.
    acks: HashMap<i64, Arc<Ack>>,
    /// The fleet chain's newest record.
    fleet_head: Option<(i64, Hash)>,
    /// The default stale-after the rollups are kept for (`rollup_meta`); `None`: none are.
    rollup_stale_after: Option<i64>,
}

impl Writer {
    /// Loads every target's latest state (one index seek per target, never a scan of history)
    /// and publishes it.
    pub async fn open(
        mut connection: SqliteConnection,
        published: SharedLatest,
    ) -> Result<Self, StoreError> {
        audit::hash_unchained_history(&mut connection).await?;
        let mut writer = Self {
            connection,
            memory: Memory::default(),
            published,
            memory_stale: false,
        };
        writer.reload().await?;
        Ok(writer)
    }

    async fn reload(&mut self) -> Result<(), StoreError> {
        let (next_snapshot_id, next_target_id) = next_ids(&mut self.connection).await?;
        let acks = load_acks(&mut self.connection, None).await?;
        let targets = load_targets(&mut self.connection, None, &acks).await?;
        let fleet_head = fleet_head(&mut self.connection).await?;
        let rollup_stale_after = sqlx::query_as::<_, (i64, i64)>(sql::ROLLUP_META_SQL)
            .fetch_optional(&mut self.connection)
            .await?
            .map(|(stale_after, _)| stale_after);
        let mut published = BTreeMap::new();
        self.memory = Memory {
            targets: HashMap::with_capacity(targets.len()),
            filesets: HashMap::new(),
            next_snapshot_id,
            next_target_id,
            acks,
            fleet_head,
            rollup_stale_after,
        };
        for (key, tip, latest) in targets {
            self.memory.targets.insert(key.clone(), tip);
            published.insert(key, Arc::new(latest));
        }
        self.published.publish(|latest| *latest = published);
        Ok(())
    }

    /// Serves the queue until shutdown is notified and the queue is drained, then closes the
    /// connection cleanly (checkpointing the WAL). A retention run advances one step whenever
    /// the queue is empty.
    pub async fn run(mut self, mut queue: mpsc::Receiver<Message>, shutdown: Arc<Notify>) {
        let mut closing = false;
        let mut batch = Batch::default();
        let mut pruning: Option<PruneRun> = None;
        let mut rebuilding: Option<RollupRun> = None;
        loop {
            let first = tokio::select! {
                biased;
                () = shutdown.notified(), if !closing => {
                    queue.close();
                    closing = true;
                    if let Some(run) = pruning.take() {
                        let _ = run.reply.send(Err(StoreError::Closed));
                    }
                    if let Some(run) = rebuilding.take() {
                        let _ = run.reply.send(Err(StoreError::Closed));
                    }
                    continue;
                }
                message = queue.recv() => message,
                () = std::future::ready(()), if pruning.is_some() => {
                    self.prune_step(&mut pruning).await;
                    continue;
                }
                () = std::future::ready(()), if rebuilding.is_some() => {
                    self.rebuild_step(&mut rebuilding).await;
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut prunes = Vec::new();
            let mut keeps = Vec::new();
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Write(job) => batch.push(job),
                    Message::Prune { cutoff, reply } => prunes.push((cutoff, reply)),
                    Message::KeepRollups { stale_after, reply } => keeps.push((stale_after, reply)),
                }
                if !batch.is_full() {
                    next = queue.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                pipeline::commit(&mut self, &mut batch).await;
            }
            for (cutoff, reply) in prunes {
                if pruning.is_some() {
                    let _ = reply.send(Err(StoreError::Unavailable(
                        "a retention run is already in progress".to_owned(),
                    )));
                    continue;
                }
                match Prune::begin(&mut self.connection, cutoff).await {
                    Ok(prune) => pruning = Some(PruneRun { prune, reply }),
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            for (stale_after, reply) in keeps {
                if let Some(run) = rebuilding.take() {
                    // The newer default wins; whoever waited on the older one is told.
                    let _ = run.reply.send(Err(StoreError::Unavailable(
                        "the rollups are being rebuilt for another stale-after".to_owned(),
                    )));
                }
                match self.reset_rollups(stale_after).await {
                    Ok(None) => {
                        let _ = reply.send(Ok(()));
                    }
                    Ok(Some(targets)) => {
                        rebuilding = Some(RollupRun {
                            stale_after,
                            targets,
                            reply,
                        });
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
        }
        if let Err(error) = self.connection.close().await {
            tracing::warn!(%error, "closing the database failed");
        }
    }

    /// Resets the rollups for `stale_after` unless they are complete for it; returns the
    /// targets to rebuild (`None`: nothing to do). The pipeline keeps deltas for the new default
    /// from the next batch on.
    async fn reset_rollups(
        &mut self,
        stale_after: i64,
    ) -> Result<Option<std::collections::VecDeque<i64>>, StoreError> {
        let meta = sqlx::query_as::<_, (i64, i64)>(sql::ROLLUP_META_SQL)
            .fetch_optional(&mut self.connection)
            .await?;
        let keep = rollups::Keep::of(meta, stale_after);
        if keep == rollups::Keep::Nothing {
            return Ok(None);
        }
        let mut tx = self.connection.begin().await?;
        if keep == rollups::Keep::Reset {
            sqlx::query(rollups::RESET_META_SQL)
                .bind(stale_after)
                .execute(&mut *tx)
                .await?;
        }
        let targets: Vec<i64> = sqlx::query_scalar(rollups::TARGET_IDS_SQL)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        self.memory.rollup_stale_after = Some(stale_after);
        tracing::info!(
            stale_after,
            targets = targets.len(),
            "rebuilding the daily rollups; /api/stats reads raw snapshots until they are done"
        );
        Ok(Some(targets.into()))
    }

    /// Rebuilds a few targets' rollups in one transaction; the last step marks them complete.
    async fn rebuild_step(&mut self, rebuilding: &mut Option<RollupRun>) {
        let Some(run) = rebuilding.as_mut() else {
            return;
        };
        let stale_after = run.stale_after;
        let count = run.targets.len().min(REBUILD_TARGETS_PER_STEP);
        let targets: Vec<i64> = run.targets.drain(..count).collect();
        let done = run.targets.is_empty();
        let step = async {
            let mut tx = self.connection.begin().await?;
            for target in targets {
                tx.rebuild_target(target, stale_after).await?;
            }
            if done {
                sqlx::query(rollups::READY_SQL)
                    .bind(stale_after)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<(), StoreError>(())
        };
        let outcome = step.await;
        if outcome.is_err() || done {
            if let Some(run) = rebuilding.take() {
                if outcome.is_ok() {
                    tracing::info!(stale_after, "the daily rollups are rebuilt");
                }
                let _ = run.reply.send(outcome);
            }
        }
    }

    async fn prune_step(&mut self, pruning: &mut Option<PruneRun>) {
        let Some(run) = pruning.as_mut() else { return };
        let outcome = match run.prune.step(&mut self.connection).await {
            Ok(None) => return,
            Ok(Some(report)) => Ok(report),
            Err(error) => Err(error),
        };
        if let Some(run) = pruning.take() {
            let _ = run.reply.send(outcome);
        }
    }
}

impl Backend for Writer {
    /// Writes the snapshots atomically and publishes their targets' new latest. On failure the
    /// transaction is rolled back and the memory reloaded from what committed.
    async fn write(&mut self, records: &[&Record]) -> Result<Vec<Outcome>, StoreError> {
        if self.memory_stale {
            // Never write from memory that may hold a rolled-back batch.
            self.reload().await?;
            self.memory_stale = false;
        }
        let rollups = RollupDeltas::new(self.memory.rollup_stale_after);
        let mut steps = SqliteSteps {
            rollups,
            episodes: EpisodeDeltas::new(self.memory.rollup_stale_after),
            connection: &mut self.connection,
            memory: &mut self.memory,
            published: &self.published,
            in_transaction: false,
            needs_transaction: false,
            new_targets: Vec::new(),
            rows: Vec::new(),
            transitions: Vec::new(),
            touched: HashMap::new(),
        };
        let written = match pipeline::place(&mut steps, records).await {
            Ok(outcomes) => steps.finish().await.map(|touched| (outcomes, touched)),
            Err(error) => Err(error),
        };
        match written {
            Ok((outcomes, touched)) => {
                self.published.publish(|latest| latest.extend(touched));
                Ok(outcomes)
            }
            Err(error) => {
                // Harmless when no transaction is open.
                let _ = sqlx::query("rollback").execute(&mut self.connection).await;
                if let Err(reload) = self.reload().await {
                    tracing::error!(%reload, "reloading the writer's state failed; retrying before the next batch");
                    self.memory_stale = true;
                }
                Err(error)
            }
        }
    }
}

/// One batch's placement on SQLite. Appends touch only memory until the batch's one INSERT; the
/// first step that must ask or change the database opens the transaction (`begin immediate`).
struct SqliteSteps<'a> {
    connection: &'a mut SqliteConnection,
    memory: &'a mut Memory,
    published: &'a SharedLatest,
    in_transaction: bool,
    /// A new target's row must commit with its first snapshot: one statement will not do.
    needs_transaction: bool,
    new_targets: Vec<(i64, String, String)>,
    rows: Vec<Row>,
    /// The outbox rows of the batch, written after its snapshots in one statement.
    transitions: Vec<TransitionRow>,
    /// The targets' new latest, published once the batch commits.
    touched: HashMap<(String, String), Arc<Latest>>,
    rollups: RollupDeltas,
    episodes: EpisodeDeltas,
}

impl SqliteSteps<'_> {
    async fn begin(&mut self) -> Result<(), StoreError> {
        if !self.in_transaction {
            sqlx::query("begin immediate")
                .execute(&mut *self.connection)
                .await?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Writes what waits and commits. A batch of appends for known targets that fits one
    /// statement needs no BEGIN/COMMIT round trips: one statement is atomic and durable alone.
    async fn finish(mut self) -> Result<HashMap<(String, String), Arc<Latest>>, StoreError> {
        let rollups = self.rollups.take();
        if self.in_transaction
            || self.needs_transaction
            || !rollups.is_empty()
            || !self.episodes.is_empty()
            || self.rows.len() > MAX_STATEMENT_ROWS
        {
            self.begin().await?;
            self.write_pending().await?;
            write_transitions(&mut *self.connection, &self.transitions).await?;
            write_rollups(&mut *self.connection, &rollups).await?;
            self.connection.write_episodes(&mut self.episodes).await?;
            sqlx::query("commit").execute(&mut *self.connection).await?;
        } else {
            self.write_pending().await?;
        }
        Ok(self.touched)
    }

    /// Inserts the new targets, then the snapshot rows, at most `MAX_STATEMENT_ROWS` a statement.
    async fn write_pending(&mut self) -> Result<(), StoreError> {
        for chunk in self.new_targets.chunks(MAX_STATEMENT_ROWS) {
            let mut insert = QueryBuilder::<Sqlite>::new("insert into targets (id, repo, server) ");
            insert.push_values(chunk, |mut row, (id, repo, server)| {
                row.push_bind(*id).push_bind(repo).push_bind(server);
            });
            insert.build().execute(&mut *self.connection).await?;
        }
        for chunk in self.rows.chunks(MAX_STATEMENT_ROWS) {
            let mut insert = QueryBuilder::<Sqlite>::new(sql::INSERT_SNAPSHOT_COLUMNS);
            insert.push_values(chunk, |mut values, row| {
                values
                    .push_bind(row.id)
                    .push_bind(row.target_id)
                    .push_bind(row.last_check)
                    .push_bind(row.received_delay)
                    .push_bind(row.sync_status)
                    .push_bind(row.drift_count)
                    .push_bind(row.fileset_id)
                    .push_bind(row.change)
                    .push_bind(row.stale_after)
                    .push_bind(&row.revision)
                    .push_bind(&row.run_url)
                    .push_bind(&row.message)
                    .push_bind(&row.hash[..]);
            });
            insert.build().execute(&mut *self.connection).await?;
        }
        self.new_targets.clear();
        self.rows.clear();
        Ok(())
    }
}

impl Steps for SqliteSteps<'_> {
    async fn tip(&mut self, repo: &str, server: &str) -> Result<Tip, StoreError> {
        let key = (repo.to_owned(), server.to_owned());
        if let Some(tip) = self.memory.targets.get(&key) {
            return Ok(*tip);
        }
        let id = self.memory.next_target_id;
        self.memory.next_target_id += 1;
        self.new_targets.push((id, key.0.clone(), key.1.clone()));
        self.needs_transaction = true;
        let tip = Tip::new(id);
        self.memory.targets.insert(key, tip);
        Ok(tip)
    }

    async fn fileset(&mut self, files: &[String]) -> Result<Option<i64>, StoreError> {
        let Some((digest, json)) = rules::fileset_key(files) else {
            return Ok(None);
        };
        if let Some(id) = self.memory.filesets.get(&digest) {
            return Ok(Some(*id));
        }
        self.begin().await?;
        let existing: Option<i64> = sqlx::query_scalar("select id from filesets where digest = ?")
            .bind(&digest[..])
            .fetch_optional(&mut *self.connection)
            .await?;
        let id = match existing {
            Some(id) => id,
            None => sqlx::query("insert into filesets (digest, files) values (?, ?)")
                .bind(&digest[..])
                .bind(&json)
                .execute(&mut *self.connection)
                .await?
                .last_insert_rowid(),
        };
        if self.memory.filesets.len() >= MAX_CACHED_FILESETS {
            self.memory.filesets.clear();
        }
        self.memory.filesets.insert(digest, id);
        Ok(Some(id))
    }

    async fn next_id(&mut self) -> Result<i64, StoreError> {
        let id = self.memory.next_snapshot_id;
        self.memory.next_snapshot_id += 1;
        Ok(id)
    }

    fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        if self.rows.is_empty() && self.new_targets.is_empty() {
            return Ok(());
        }
        self.begin().await?;
        self.write_pending().await
    }

    async fn snapshot_at(
        &mut self,
        target_id: i64,
        last_check: Timestamp,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.begin().await?;
        let row = sqlx::query(&sql::snapshot_at_sql())
            .bind(target_id)
            .bind(last_check.as_millis())
            .fetch_optional(&mut *self.connection)
            .await?;
        Ok(row.as_ref().map(snapshot_from_row).transpose()?)
    }

    async fn neighbour(
        &mut self,
        target_id: i64,
        last_check: Timestamp,
        direction: Order,
    ) -> Result<Option<Neighbour>, StoreError> {
        self.begin().await?;
        Ok(sqlx::query_as(sql::neighbour_sql(direction))
            .bind(target_id)
            .bind(last_check.as_millis())
            .fetch_optional(&mut *self.connection)
            .await?)
    }

    async fn set_change(&mut self, id: i64, change: i64) -> Result<(), StoreError> {
        self.begin().await?;
        sqlx::query(sql::SET_CHANGE_SQL)
            .bind(change)
            .bind(id)
            .execute(&mut *self.connection)
            .await?;
        Ok(())
    }

    async fn reread(&mut self, tip: &mut Tip) -> Result<(), StoreError> {
        self.begin().await?;
        let reread = load_targets(
            &mut *self.connection,
            Some(tip.target_id),
            &self.memory.acks,
        )
        .await?;
        if let Some((key, stored, latest)) = reread.into_iter().next() {
            tip.latest = stored.latest;
            tip.status_since = stored.status_since;
            self.touched.insert(key, Arc::new(latest));
        }
        Ok(())
    }

    fn settle(&mut self, repo: &str, server: &str, tip: Tip, appended: Option<&Snapshot>) {
        let key = (repo.to_owned(), server.to_owned());
        let ack = tip
            .ack
            .and_then(|_| self.memory.acks.get(&tip.target_id).cloned());
        let retired_at = tip.retired_at.map(Timestamp::from_millis);
        let latest = match (appended, tip.status_since) {
            (Some(snapshot), Some(since)) => Some(Latest {
                snapshot: snapshot.clone(),
                status_since: Timestamp::from_millis(since),
                ack,
                retired_at,
            }),
            // An event, or a late check (whose latest `reread` published): the latest snapshot
            // stays, its acknowledgement and retirement change.
            _ => self
                .touched
                .get(&key)
                .cloned()
                .or_else(|| self.published.read().get(&key).cloned())
                .map(|latest| Latest {
                    ack,
                    retired_at,
                    ..(*latest).clone()
                }),
        };
        if let Some(latest) = latest {
            self.touched.insert(key.clone(), Arc::new(latest));
        }
        self.memory.targets.insert(key, tip);
    }

    async fn existing_tip(&mut self, repo: &str, server: &str) -> Result<Option<Tip>, StoreError> {
        Ok(self
            .memory
            .targets
            .get(&(repo.to_owned(), server.to_owned()))
            .copied())
    }

    async fn event(&mut self, row: EventRow) -> Result<(), StoreError> {
        self.flush().await?;
        self.begin().await?;
        for (statement, values) in sql::event_statements(&row) {
            let query = bind(sqlx::query(statement), values);
            query.execute(&mut *self.connection).await?;
        }
        match row.effect {
            Effect::Ack { target_id, ack } => {
                self.memory.acks.insert(target_id, ack);
            }
            Effect::EndAck { target_id, .. } => {
                self.memory.acks.remove(&target_id);
            }
            _ => {}
        }
        Ok(())
    }

    fn transition(&mut self, row: TransitionRow) {
        self.needs_transaction = true;
        self.transitions.push(row);
    }

    async fn fleet_head(&mut self) -> Result<Option<(i64, Hash)>, StoreError> {
        Ok(self.memory.fleet_head)
    }

    fn set_fleet_head(&mut self, head: (i64, Hash)) {
        self.memory.fleet_head = Some(head);
    }

    async fn silence_end(&mut self, id: i64) -> Result<Option<(i64, Option<i64>)>, StoreError> {
        self.begin().await?;
        Ok(sqlx::query_as(sql::SILENCE_END_SQL)
            .bind(id)
            .fetch_optional(&mut *self.connection)
            .await?)
    }

    fn rollups(&mut self) -> &mut RollupDeltas {
        &mut self.rollups
    }

    fn episodes(&mut self) -> &mut EpisodeDeltas {
        &mut self.episodes
    }
}

/// Writes a batch's outbox rows, in the order placement made them, `MAX_STATEMENT_ROWS` a
/// statement; a transition already there is not written twice.
async fn write_transitions(
    connection: &mut SqliteConnection,
    transitions: &[TransitionRow],
) -> Result<(), StoreError> {
    for chunk in transitions.chunks(MAX_STATEMENT_ROWS) {
        let mut insert = QueryBuilder::<Sqlite>::new(sql::INSERT_TRANSITION_COLUMNS);
        insert.push_values(chunk, |mut values, row| {
            values
                .push_bind(row.target_id)
                .push_bind(row.kind)
                .push_bind(row.state)
                .push_bind(row.at)
                .push_bind(row.record_id);
        });
        insert.push(sql::ON_CONFLICT_DO_NOTHING);
        insert.build().execute(&mut *connection).await?;
    }
    Ok(())
}

/// Adds a batch's rollup deltas to their days, `MAX_STATEMENT_ROWS` days a statement.
async fn write_rollups(
    connection: &mut SqliteConnection,
    deltas: &[(i64, i64, DayTotals)],
) -> Result<(), StoreError> {
    for chunk in deltas.chunks(MAX_STATEMENT_ROWS) {
        let mut upsert = QueryBuilder::<Sqlite>::new(sql::INSERT_ROLLUP_COLUMNS);
        upsert.push_values(chunk, |mut values, (target, day, totals)| {
            values
                .push_bind(*target)
                .push_bind(*day)
                .push_bind(totals.checks)
                .push_bind(totals.synced_ms)
                .push_bind(totals.out_of_sync_ms)
                .push_bind(totals.error_ms)
                .push_bind(totals.stale_ms);
        });
        upsert.push(sql::ROLLUP_ADD);
        upsert.build().execute(&mut *connection).await?;
    }
    Ok(())
}

async fn next_ids(connection: &mut SqliteConnection) -> Result<(i64, i64), StoreError> {
    Ok(sqlx::query_as(
        "select max((select coalesce(max(id), 0) from snapshots), \
                    (select coalesce(max(id), 0) from events)) + 1, \
                (select coalesce(max(id), 0) + 1 from targets)",
    )
    .fetch_one(connection)
    .await?)
}

/// Every target's (or one target's) tip and latest snapshot: two index seeks per target
/// (snapshots_target_time, snapshots_target_changes).
async fn load_targets(
    connection: &mut SqliteConnection,
    target_id: Option<i64>,
    acks: &HashMap<i64, Arc<Ack>>,
) -> Result<Vec<((String, String), Tip, Latest)>, StoreError> {
    // Two texts rather than `?1 is null or t.id = ?1`, which SQLite cannot serve from the primary
    // key: a late check would otherwise cost a seek per target.
    let only = if target_id.is_some() {
        "where t.id = ?"
    } else {
        ""
    };
    let sql = format!(
        "{SNAPSHOT_COLUMNS}, t.id as target_id, s.fileset_id, t.head_id, t.head_hash, \
         t.ack_id, t.retired_at, \
         coalesce((select c.last_check from snapshots c \
                   where c.target_id = t.id and c.change != 0 and (c.change & 1) = 1 \
                   order by c.last_check desc limit 1), s.last_check) as status_since \
         from targets t \
         join snapshots s on s.id = (select l.id from snapshots l where l.target_id = t.id \
                                     order by l.last_check desc limit 1) \
         left join filesets f on f.id = s.fileset_id {only}"
    );
    // Streamed: holding every row at once would double the memory the targets take.
    let mut query = sqlx::query(&sql);
    if let Some(id) = target_id {
        query = query.bind(id);
    }
    let mut rows = query.fetch(connection);
    let mut targets = Vec::new();
    while let Some(row) = rows.try_next().await? {
        targets.push(target_from_row(&row, acks)?);
    }
    Ok(targets)
}

fn target_from_row(
    row: &SqliteRow,
    acks: &HashMap<i64, Arc<Ack>>,
) -> Result<((String, String), Tip, Latest), sqlx::Error> {
    let snapshot = snapshot_from_row(row)?;
    let status_since: i64 = row.try_get("status_since")?;
    let head_id: Option<i64> = row.try_get("head_id")?;
    let head_hash = row
        .try_get::<Option<Vec<u8>>, _>("head_hash")?
        .as_deref()
        .and_then(chain::from_bytes);
    let tip = Tip {
        target_id: row.try_get("target_id")?,
        latest: Some(LatestCheck {
            id: snapshot.id,
            last_check: snapshot.last_check.as_millis(),
            sync_status: snapshot.sync_status.code(),
            fileset_id: row.try_get("fileset_id")?,
            stale_after: snapshot.stale_after_seconds,
        }),
        status_since: Some(status_since),
        head: head_id.zip(head_hash),
        ack: None,
        retired_at: row.try_get("retired_at")?,
    };
    let ack_id: Option<i64> = row.try_get("ack_id")?;
    let ack = acks
        .get(&tip.target_id)
        .filter(|ack| Some(ack.id) == ack_id)
        .cloned();
    let tip = Tip {
        ack: ack.as_ref().map(|ack| TipAck {
            id: ack.id,
            created_at: ack.created_at.as_millis(),
            until: ack.until.as_millis(),
        }),
        ..tip
    };
    let key = (snapshot.repo.clone(), snapshot.server.clone());
    let latest = Latest {
        snapshot,
        status_since: Timestamp::from_millis(status_since),
        ack,
        retired_at: tip.retired_at.map(Timestamp::from_millis),
    };
    Ok((key, tip, latest))
}

/// The acknowledgements in force (every target's, or one target's), by target id.
async fn load_acks(
    connection: &mut SqliteConnection,
    target_id: Option<i64>,
) -> Result<HashMap<i64, Arc<Ack>>, StoreError> {
    let only = if target_id.is_some() {
        "where t.id = ?"
    } else {
        ""
    };
    let sql = format!(
        "{}, t.id as target_id from targets t join acks a on a.id = t.ack_id {only}",
        sql::ACK_COLUMNS
    );
    let mut query = sqlx::query(&sql);
    if let Some(id) = target_id {
        query = query.bind(id);
    }
    let rows = query.fetch_all(connection).await?;
    let mut acks = HashMap::with_capacity(rows.len());
    for row in rows {
        acks.insert(
            row.try_get("target_id")?,
            Arc::new(sql::ack_from_row(&row)?),
        );
    }
    Ok(acks)
}

async fn fleet_head(connection: &mut SqliteConnection) -> Result<Option<(i64, Hash)>, StoreError> {
    let head: Option<(i64, Vec<u8>)> = sqlx::query_as(sql::FLEET_HEAD_SQL)
        .fetch_optional(connection)
        .await?;
    Ok(head.and_then(|(id, hash)| Some((id, chain::from_bytes(&hash)?))))
}

/// Binds a shared statement's values (`sql::Value`) in order.
fn bind<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    values: Vec<sql::Value>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for value in values {
        query = match value {
            sql::Value::Integer(value) => query.bind(value),
            sql::Value::Text(value) => query.bind(value),
            sql::Value::Bytes(value) => query.bind(value),
        };
    }
    query
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;
    use crate::model::{NewSnapshot, SyncStatus};
    use crate::store::Recorded;
    use crate::store::pipeline::Placed;

    fn recorded(outcome: &Outcome) -> Option<&Recorded> {
        match outcome {
            Ok(Placed::Snapshot(recorded)) => Some(recorded),
            _ => None,
        }
    }

    fn records(snapshots: &[NewSnapshot]) -> Vec<Record> {
        snapshots.iter().cloned().map(Record::Snapshot).collect()
    }

    fn job(server: &str, millis: i64, status: SyncStatus, files: &[&str]) -> NewSnapshot {
        NewSnapshot {
            repo: "r".to_owned(),
            server: server.to_owned(),
            sync_status: status,
            drift_count: files.len() as i64,
            files: files.iter().map(|name| (*name).to_owned()).collect(),
            last_check: Timestamp::from_millis(millis),
            last_check_defaulted: false,
            received_at: Timestamp::from_millis(10_000),
            revision: None,
            run_url: None,
            message: None,
            stale_after_seconds: None,
        }
    }

    async fn writer(dir: &tempfile::TempDir) -> Writer {
        let options = SqliteConnectOptions::from_str(&format!(
            "sqlite://{}",
            dir.path().join("writer.db").display()
        ))
        .unwrap()
        .create_if_missing(true);
        let mut connection = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut connection)
            .await
            .unwrap();
        Writer::open(connection, SharedLatest::default())
            .await
            .unwrap()
    }

    /// One batch that mixes every path: appends, a late check between two of its own pending
    /// rows, an identical retry and a conflicting one of a pending row, and a new target.
    #[tokio::test]
    async fn one_batch_mixing_appends_late_checks_retries_and_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(&dir).await;

        use SyncStatus::{Error, OutOfSync, Synced};
        let jobs = [
            job("a", 100, Synced, &[]),
            job("a", 200, OutOfSync, &["x"]),
            job("a", 150, Error, &[]),
            job("a", 200, OutOfSync, &["x"]),
            job("a", 200, Synced, &[]),
            job("b", 50, Synced, &[]),
        ];
        // As one transaction: the one-by-one fallback must not be what makes this pass.
        let jobs = records(&jobs);
        let results = writer
            .write(&jobs.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        let ids: Vec<Option<(i64, bool)>> = results
            .iter()
            .map(|result| {
                recorded(result).map(|recorded| (recorded.snapshot.id, recorded.replayed))
            })
            .collect();
        assert_eq!(
            ids,
            [
                Some((1, false)),
                Some((2, false)),
                Some((3, false)),
                Some((2, true)),
                None,
                Some((4, false)),
            ]
        );
        assert!(matches!(results[4], Err(StoreError::Conflict(_))));

        let changes: Vec<(i64, i64)> =
            sqlx::query_as("select id, change from snapshots order by id")
                .fetch_all(&mut writer.connection)
                .await
                .unwrap();
        // a@100 first; a@200 differs from a@150 in status and files; a@150 (ERROR) from a@100
        // in status only; b first.
        assert_eq!(changes, [(1, 3), (2, 3), (3, 1), (4, 3)]);

        let published: Vec<(String, i64, i64)> = writer
            .published
            .read()
            .values()
            .map(|latest| {
                (
                    latest.snapshot.server.clone(),
                    latest.snapshot.id,
                    latest.status_since.as_millis(),
                )
            })
            .collect();
        assert_eq!(
            published,
            [("a".to_owned(), 2, 200), ("b".to_owned(), 4, 50)]
        );
        // What was published is what a restart computes from the database.
        let memory = writer.memory.targets.clone();
        writer.reload().await.unwrap();
        assert_eq!(writer.memory.targets, memory);
    }

    /// Batches of new targets, and of known targets larger than one statement, commit whole.
    #[tokio::test]
    async fn batches_larger_than_one_statement_commit_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(&dir).await;
        let first: Vec<NewSnapshot> = (0..100)
            .map(|i| job(&format!("s{i}"), 1_000, SyncStatus::Synced, &[]))
            .collect();
        let first = records(&first);
        writer
            .write(&first.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        let next: Vec<NewSnapshot> = (0..MAX_STATEMENT_ROWS as i64 + 1)
            .map(|i| job(&format!("s{}", i % 100), 2_000 + i, SyncStatus::Synced, &[]))
            .collect();
        let next = records(&next);
        let results = writer
            .write(&next.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        assert!(results.iter().all(Result::is_ok));
        let stored: i64 = sqlx::query_scalar("select count(*) from snapshots")
            .fetch_one(&mut writer.connection)
            .await
            .unwrap();
        assert_eq!(stored, 100 + MAX_STATEMENT_ROWS as i64 + 1);
        let published = writer.published.read().len();
        assert_eq!(published, 100);
    }

    /// A batch that fails as a whole (here: another connection took the id the writer was about
    /// to use) is rolled back; the writer reloads what committed and stores every snapshot one
    /// by one, with nothing half-written and the published latest matching the database.
    #[tokio::test]
    async fn a_failed_batch_reloads_and_retries_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(&dir).await;
        let seed = job("a", 100, SyncStatus::Synced, &[]);
        writer.write(&[&Record::Snapshot(seed)]).await.unwrap();
        sqlx::query(
            "insert into snapshots (id, target_id, last_check, received_delay, sync_status, \
             drift_count, change) values (2, 1, 50, 0, 0, 0, 3)",
        )
        .execute(&mut writer.connection)
        .await
        .unwrap();

        let (reply, outcome) = oneshot::channel();
        let mut batch = Batch::default();
        batch.push(WriteJob {
            records: records(&[
                job("a", 200, SyncStatus::OutOfSync, &["x"]),
                job("b", 200, SyncStatus::Synced, &[]),
            ]),
            reply,
        });
        pipeline::commit(&mut writer, &mut batch).await;
        let outcomes = outcome.await.unwrap();
        let ids: Vec<i64> = outcomes
            .iter()
            .map(|outcome| recorded(outcome).unwrap().snapshot.id)
            .collect();
        assert_eq!(ids, [3, 4]);
        let stored: Vec<i64> = sqlx::query_scalar("select id from snapshots order by id")
            .fetch_all(&mut writer.connection)
            .await
            .unwrap();
        assert_eq!(stored, [1, 2, 3, 4]);
        let memory = writer.memory.targets.clone();
        writer.reload().await.unwrap();
        assert_eq!(writer.memory.targets, memory);
        assert_eq!(writer.published.read().len(), 2);
    }
}
