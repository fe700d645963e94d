//! The single SQLite writer: it owns the only write connection, takes every snapshot waiting in
//! its queue, stores them with one fsync'd commit, then answers each caller.
//!
//! It holds every target's latest check in memory, assigns row ids itself, and publishes each
//! target's latest snapshot for `/status.json` after every commit. So the usual batch (checks newer
//! than their targets' latest, for known targets and file sets) is a single multi-row INSERT in
//! autocommit: one statement, one round trip to SQLite's thread, one fsync. New targets, new file
//! sets, retries, conflicts and late checks run in an explicit transaction that asks the database.
//! Any failure rolls back and reloads the memory from what committed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteExecutor};
use tokio::sync::{Notify, mpsc, oneshot};

use super::audit::{self, Prune};
use super::{SNAPSHOT_COLUMNS, snapshot_from_row};
use crate::chain::{self, Hash};
use crate::model::{NewSnapshot, Order, Snapshot};
use crate::store::rules::{
    self, FILES_CHANGED, STATUS_CHANGED, change_between, received_delay, snapshot_of,
};
use crate::store::sql::{self, Neighbour};
use crate::store::{Latest, PruneReport, Recorded, StoreError};
use crate::timestamp::Timestamp;

/// Most snapshots committed at once.
pub const MAX_BATCH: usize = 1024;
/// Most rows in one INSERT statement. Batches up to this size need one statement; every size up
/// to it is a distinct prepared statement in the writer's cache.
pub const MAX_STATEMENT_ROWS: usize = 64;
/// File sets remembered by digest before the cache starts over.
const MAX_CACHED_FILESETS: usize = 65_536;

/// The latest snapshot of every target, by (repo, server), as readers see it after each commit.
pub type SharedLatest = Arc<RwLock<BTreeMap<(String, String), Arc<Latest>>>>;

/// What the writer is asked to do.
#[derive(Debug)]
pub enum Message {
    Write(WriteJob),
    /// A retention run (see `audit::Prune`), done in steps between write batches.
    Prune {
        cutoff: Timestamp,
        reply: oneshot::Sender<Result<PruneReport, StoreError>>,
    },
}

/// A retention run in progress and who waits for its report.
#[derive(Debug)]
struct PruneRun {
    prune: Prune,
    reply: oneshot::Sender<Result<PruneReport, StoreError>>,
}

/// Snapshots waiting for the writer (one for a POST, many for an import), and where their
/// outcomes go, in the same order.
pub struct WriteJob {
    pub snapshots: Vec<NewSnapshot>,
    pub reply: oneshot::Sender<Vec<Result<Recorded, StoreError>>>,
}

impl std::fmt::Debug for WriteJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteJob")
            .field("snapshots", &self.snapshots.len())
            .finish_non_exhaustive()
    }
}

/// What the writer knows of a target's latest snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TargetTip {
    id: i64,
    latest_check: i64,
    latest_status: i64,
    latest_fileset: Option<i64>,
    status_since: i64,
    /// Hash of the target's newest snapshot by id: what its next snapshot links to.
    head: Option<Hash>,
}

/// A snapshot row waiting for the batch's INSERT.
#[derive(Debug)]
struct PendingRow {
    id: i64,
    target_id: i64,
    last_check: i64,
    received_delay: i64,
    sync_status: i64,
    drift_count: i64,
    fileset_id: Option<i64>,
    change: i64,
    stale_after: Option<i64>,
    revision: Option<String>,
    run_url: Option<String>,
    message: Option<String>,
    hash: Hash,
}

/// Writes waiting for the end of the batch (or for a slow-path snapshot that must see them).
#[derive(Debug, Default)]
struct Pending {
    new_targets: Vec<(i64, String, String)>,
    rows: Vec<PendingRow>,
}

/// A file set as the writer's cache knows it.
#[derive(Debug)]
enum Fileset {
    Empty,
    Known(i64),
    Unknown { digest: [u8; 32], json: String },
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
    targets: HashMap<(String, String), TargetTip>,
    filesets: HashMap<[u8; 32], i64>,
    next_snapshot_id: i64,
    next_target_id: i64,
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
        let targets = load_targets(&mut self.connection, None).await?;
        let mut published = BTreeMap::new();
        self.memory = Memory {
            targets: HashMap::with_capacity(targets.len()),
            filesets: HashMap::new(),
            next_snapshot_id,
            next_target_id,
        };
        for (key, state, latest) in targets {
            self.memory.targets.insert(key.clone(), state);
            published.insert(key, Arc::new(latest));
        }
        *self
            .published
            .write()
            .unwrap_or_else(PoisonError::into_inner) = published;
        Ok(())
    }

    /// Serves the queue until shutdown is notified and the queue is drained, then closes the
    /// connection cleanly (checkpointing the WAL). A retention run advances one step whenever
    /// the queue is empty.
    pub async fn run(mut self, mut queue: mpsc::Receiver<Message>, shutdown: Arc<Notify>) {
        let mut closing = false;
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut pruning: Option<PruneRun> = None;
        loop {
            let first = tokio::select! {
                biased;
                () = shutdown.notified(), if !closing => {
                    queue.close();
                    closing = true;
                    if let Some(run) = pruning.take() {
                        let _ = run.reply.send(Err(StoreError::Closed));
                    }
                    continue;
                }
                message = queue.recv() => message,
                () = std::future::ready(()), if pruning.is_some() => {
                    self.prune_step(&mut pruning).await;
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut prunes = Vec::new();
            let mut snapshots = 0;
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Write(job) => {
                        snapshots += job.snapshots.len();
                        batch.push(job);
                    }
                    Message::Prune { cutoff, reply } => prunes.push((cutoff, reply)),
                }
                if snapshots < MAX_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit_batch(&mut batch).await;
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
        }
        if let Err(error) = self.connection.close().await {
            tracing::warn!(%error, "closing the database failed");
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

    async fn commit_batch(&mut self, batch: &mut Vec<WriteJob>) {
        let started = std::time::Instant::now();
        let snapshots: Vec<&NewSnapshot> =
            batch.iter().flat_map(|job| job.snapshots.iter()).collect();
        let mut outcomes = match self.write_batch(&snapshots).await {
            Ok(outcomes) => outcomes,
            Err(error) if snapshots.len() == 1 => vec![Err(error)],
            Err(error) => {
                // One snapshot's failure must not fail its neighbours: write each on its own.
                tracing::warn!(%error, size = snapshots.len(), "group commit failed; retrying one by one");
                let mut outcomes = Vec::with_capacity(snapshots.len());
                for snapshot in &snapshots {
                    let outcome = self
                        .write_batch(&[*snapshot])
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
        for job in batch.drain(..) {
            let mine = outcomes.by_ref().take(job.snapshots.len()).collect();
            // The caller may have gone away (client disconnected); the snapshot is stored anyway.
            let _ = job.reply.send(mine);
        }
    }

    /// Writes the jobs atomically and publishes the targets' new latest. The outer error means
    /// nothing was written (and the memory was reloaded); the inner results are per-snapshot
    /// outcomes such as a conflict.
    async fn write_batch(
        &mut self,
        snapshots: &[&NewSnapshot],
    ) -> Result<Vec<Result<Recorded, StoreError>>, StoreError> {
        if self.memory_stale {
            // Never write from memory that may hold a rolled-back batch.
            self.reload().await?;
            self.memory_stale = false;
        }
        match self.try_write_batch(snapshots).await {
            Ok((outcomes, touched)) => {
                let mut published = self
                    .published
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                published.extend(touched);
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

    #[allow(clippy::type_complexity, reason = "a private pair of results")]
    async fn try_write_batch(
        &mut self,
        snapshots: &[&NewSnapshot],
    ) -> Result<
        (
            Vec<Result<Recorded, StoreError>>,
            HashMap<(String, String), Arc<Latest>>,
        ),
        StoreError,
    > {
        let connection = &mut self.connection;
        let memory = &mut self.memory;
        let mut in_transaction = false;
        let mut pending = Pending::default();
        let mut touched = HashMap::new();
        let mut outcomes = Vec::with_capacity(snapshots.len());
        for &new in snapshots {
            let key = (new.repo.clone(), new.server.clone());
            let state = memory.targets.get(&key).copied();
            let late = state.is_some_and(|state| new.last_check.as_millis() <= state.latest_check);
            let fileset = memory.known_fileset(&new.files);
            let needs_database =
                late || state.is_none() || matches!(fileset, Fileset::Unknown { .. });
            if needs_database && !in_transaction {
                sqlx::query("begin immediate")
                    .execute(&mut *connection)
                    .await?;
                in_transaction = true;
            }
            if let (true, Some(state)) = (late, state) {
                // A retry or a late check: the database decides, so it must be up to date.
                flush(&mut *connection, &mut pending).await?;
                let outcome =
                    record_out_of_order(&mut *connection, memory, new, state, fileset).await?;
                let reloaded = load_targets(&mut *connection, Some(state.id)).await?;
                if let Some((key, state, latest)) = reloaded.into_iter().next() {
                    memory.targets.insert(key.clone(), state);
                    touched.insert(key, Arc::new(latest));
                }
                outcomes.push(outcome);
                continue;
            }
            let fileset_id = memory.fileset_id(&mut *connection, fileset).await?;
            let (recorded, status_since) = memory.append(state, new, fileset_id, &mut pending);
            touched.insert(
                key,
                Arc::new(Latest {
                    snapshot: recorded.snapshot.clone(),
                    status_since: Timestamp::from_millis(status_since),
                }),
            );
            outcomes.push(Ok(recorded));
        }
        if in_transaction || pending.rows.len() > MAX_STATEMENT_ROWS {
            if !in_transaction {
                sqlx::query("begin immediate")
                    .execute(&mut *connection)
                    .await?;
            }
            flush(&mut *connection, &mut pending).await?;
            sqlx::query("commit").execute(&mut *connection).await?;
        } else {
            // One statement is atomic and durable on its own: no BEGIN/COMMIT round trips.
            flush(&mut *connection, &mut pending).await?;
        }
        Ok((outcomes, touched))
    }
}

impl Memory {
    /// The usual case: a check newer than everything its target has. Only memory is touched here;
    /// the row is written by the next `flush`. Returns the snapshot and its target's status_since.
    fn append(
        &mut self,
        state: Option<TargetTip>,
        new: &NewSnapshot,
        fileset_id: Option<i64>,
        pending: &mut Pending,
    ) -> (Recorded, i64) {
        let id = self.next_snapshot_id;
        self.next_snapshot_id += 1;
        let sync_status = new.sync_status.code();
        let last_check = new.last_check.as_millis();
        let mut snapshot = snapshot_of(id, new, new.last_check);
        let hash = chain::link(&snapshot, state.and_then(|state| state.head).as_ref());
        snapshot.hash = hex::encode(hash);
        let (target_id, change, status_since) = match state {
            Some(state) => {
                let change = change_between(
                    (state.latest_status, state.latest_fileset),
                    (sync_status, fileset_id),
                );
                let since = if change & STATUS_CHANGED == 0 {
                    state.status_since
                } else {
                    last_check
                };
                (state.id, change, since)
            }
            None => {
                let target_id = self.next_target_id;
                self.next_target_id += 1;
                pending
                    .new_targets
                    .push((target_id, new.repo.clone(), new.server.clone()));
                (target_id, STATUS_CHANGED | FILES_CHANGED, last_check)
            }
        };
        self.targets.insert(
            (new.repo.clone(), new.server.clone()),
            TargetTip {
                id: target_id,
                latest_check: last_check,
                latest_status: sync_status,
                latest_fileset: fileset_id,
                status_since,
                head: Some(hash),
            },
        );
        pending.rows.push(PendingRow {
            id,
            target_id,
            last_check,
            received_delay: received_delay(new, new.last_check),
            sync_status,
            drift_count: new.drift_count,
            fileset_id,
            change,
            stale_after: new.stale_after_seconds,
            revision: new.revision.clone(),
            run_url: new.run_url.clone(),
            message: new.message.clone(),
            hash,
        });
        let recorded = Recorded {
            snapshot,
            replayed: false,
        };
        (recorded, status_since)
    }

    fn known_fileset(&self, files: &[String]) -> Fileset {
        let Some((digest, json)) = rules::fileset_key(files) else {
            return Fileset::Empty;
        };
        match self.filesets.get(&digest) {
            Some(id) => Fileset::Known(*id),
            None => Fileset::Unknown { digest, json },
        }
    }

    /// The id of this set of files, stored once; `None` for no files. Inserts an unknown set, so
    /// it must run inside the batch's transaction.
    async fn fileset_id(
        &mut self,
        connection: &mut SqliteConnection,
        fileset: Fileset,
    ) -> Result<Option<i64>, StoreError> {
        let (digest, json) = match fileset {
            Fileset::Empty => return Ok(None),
            Fileset::Known(id) => return Ok(Some(id)),
            Fileset::Unknown { digest, json } => (digest, json),
        };
        let existing: Option<i64> = sqlx::query_scalar("select id from filesets where digest = ?")
            .bind(&digest[..])
            .fetch_optional(&mut *connection)
            .await?;
        let id = match existing {
            Some(id) => id,
            None => sqlx::query("insert into filesets (digest, files) values (?, ?)")
                .bind(&digest[..])
                .bind(&json)
                .execute(&mut *connection)
                .await?
                .last_insert_rowid(),
        };
        if self.filesets.len() >= MAX_CACHED_FILESETS {
            self.filesets.clear();
        }
        self.filesets.insert(digest, id);
        Ok(Some(id))
    }
}

async fn next_ids(connection: &mut SqliteConnection) -> Result<(i64, i64), StoreError> {
    Ok(sqlx::query_as(
        "select (select coalesce(max(id), 0) + 1 from snapshots), \
                (select coalesce(max(id), 0) + 1 from targets)",
    )
    .fetch_one(connection)
    .await?)
}

/// Every target's (or one target's) latest snapshot and the start of its current run of
/// `sync_status`: two index seeks per target (snapshots_target_time, snapshots_target_changes).
async fn load_targets(
    executor: impl SqliteExecutor<'_>,
    target_id: Option<i64>,
) -> Result<Vec<((String, String), TargetTip, Latest)>, StoreError> {
    // Two texts rather than `?1 is null or t.id = ?1`, which SQLite cannot serve from the primary
    // key: a late check would otherwise cost a seek per target.
    let only = if target_id.is_some() {
        "where t.id = ?"
    } else {
        ""
    };
    let sql = format!(
        "{SNAPSHOT_COLUMNS}, t.id as target_id, s.fileset_id, t.head_hash, \
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
    let mut rows = query.fetch(executor);
    let mut targets = Vec::new();
    while let Some(row) = rows.try_next().await? {
        targets.push(target_from_row(&row)?);
    }
    Ok(targets)
}

fn target_from_row(row: &SqliteRow) -> Result<((String, String), TargetTip, Latest), sqlx::Error> {
    let snapshot = snapshot_from_row(row)?;
    let status_since: i64 = row.try_get("status_since")?;
    let state = TargetTip {
        id: row.try_get("target_id")?,
        latest_check: snapshot.last_check.as_millis(),
        latest_status: snapshot.sync_status.code(),
        latest_fileset: row.try_get("fileset_id")?,
        status_since,
        head: row
            .try_get::<Option<Vec<u8>>, _>("head_hash")?
            .as_deref()
            .and_then(chain::from_bytes),
    };
    let key = (snapshot.repo.clone(), snapshot.server.clone());
    let latest = Latest {
        snapshot,
        status_since: Timestamp::from_millis(status_since),
    };
    Ok((key, state, latest))
}

/// Writes what `append` queued: new targets, then snapshot rows. Each INSERT holds at most
/// `MAX_STATEMENT_ROWS` rows; a batch that needs more than one statement runs in a transaction.
async fn flush(connection: &mut SqliteConnection, pending: &mut Pending) -> Result<(), StoreError> {
    for chunk in pending.new_targets.chunks(MAX_STATEMENT_ROWS) {
        let mut insert = QueryBuilder::<Sqlite>::new("insert into targets (id, repo, server) ");
        insert.push_values(chunk, |mut row, (id, repo, server)| {
            row.push_bind(*id).push_bind(repo).push_bind(server);
        });
        insert.build().execute(&mut *connection).await?;
    }
    for chunk in pending.rows.chunks(MAX_STATEMENT_ROWS) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "insert into snapshots (id, target_id, last_check, received_delay, sync_status, \
             drift_count, fileset_id, change, stale_after, revision, run_url, message, hash) ",
        );
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
        insert.build().execute(&mut *connection).await?;
    }
    pending.new_targets.clear();
    pending.rows.clear();
    Ok(())
}

/// A check at or before its target's latest: an identical retry (answered with the stored
/// snapshot), a conflict, or a late check that joins history without becoming the latest.
/// Runs inside the batch's transaction, after the batch's pending rows were flushed.
async fn record_out_of_order(
    connection: &mut SqliteConnection,
    memory: &mut Memory,
    new: &NewSnapshot,
    target: TargetTip,
    fileset: Fileset,
) -> Result<Result<Recorded, StoreError>, StoreError> {
    let mut last_check = new.last_check;
    while let Some(stored) = snapshot_at(&mut *connection, target.id, last_check).await? {
        match rules::at_taken_time(stored, new) {
            None => last_check = last_check.plus_millis(1),
            Some(outcome) => return Ok(outcome),
        }
    }

    let fileset_id = memory.fileset_id(&mut *connection, fileset).await?;
    let id = memory.next_snapshot_id;
    memory.next_snapshot_id += 1;
    let sync_status = new.sync_status.code();
    let previous = neighbour(&mut *connection, target.id, last_check, Order::Desc).await?;
    let next = neighbour(&mut *connection, target.id, last_check, Order::Asc).await?;
    let mut snapshot = snapshot_of(id, new, last_check);
    let hash = chain::link(&snapshot, target.head.as_ref());
    snapshot.hash = hex::encode(hash);
    let change = previous.map_or(STATUS_CHANGED | FILES_CHANGED, |previous| {
        change_between(
            (previous.sync_status, previous.fileset_id),
            (sync_status, fileset_id),
        )
    });
    sqlx::query(
        "insert into snapshots (id, target_id, last_check, received_delay, sync_status, \
         drift_count, fileset_id, change, stale_after, revision, run_url, message, hash) \
         values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(target.id)
    .bind(last_check.as_millis())
    .bind(received_delay(new, last_check))
    .bind(sync_status)
    .bind(new.drift_count)
    .bind(fileset_id)
    .bind(change)
    .bind(new.stale_after_seconds)
    .bind(&new.revision)
    .bind(&new.run_url)
    .bind(&new.message)
    .bind(&hash[..])
    .execute(&mut *connection)
    .await?;

    if let Some(next) = next {
        // A late check becomes history; the transition flags of the snapshot after it change
        // with it. The caller reloads the target's latest and status_since.
        let next_change = change_between(
            (sync_status, fileset_id),
            (next.sync_status, next.fileset_id),
        );
        if next_change != next.change {
            sqlx::query("update snapshots set change = ? where id = ?")
                .bind(next_change)
                .bind(next.id)
                .execute(&mut *connection)
                .await?;
        }
    }
    Ok(Ok(Recorded {
        snapshot,
        replayed: false,
    }))
}

async fn snapshot_at(
    executor: impl SqliteExecutor<'_>,
    target_id: i64,
    last_check: Timestamp,
) -> Result<Option<Snapshot>, StoreError> {
    let row = sqlx::query(&sql::snapshot_at_sql())
        .bind(target_id)
        .bind(last_check.as_millis())
        .fetch_optional(executor)
        .await?;
    Ok(row.as_ref().map(snapshot_from_row).transpose()?)
}

/// The snapshot just before (`Desc`) or just after (`Asc`) `last_check` on the target.
async fn neighbour(
    executor: impl SqliteExecutor<'_>,
    target_id: i64,
    last_check: Timestamp,
    direction: Order,
) -> Result<Option<Neighbour>, StoreError> {
    Ok(sqlx::query_as(sql::neighbour_sql(direction))
        .bind(target_id)
        .bind(last_check.as_millis())
        .fetch_optional(executor)
        .await?)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;
    use crate::model::SyncStatus;

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
        let jobs: Vec<&NewSnapshot> = jobs.iter().collect();
        let results = writer.write_batch(&jobs).await.unwrap();
        let ids: Vec<Option<(i64, bool)>> = results
            .iter()
            .map(|result| {
                result
                    .as_ref()
                    .ok()
                    .map(|recorded| (recorded.snapshot.id, recorded.replayed))
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
            .unwrap()
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
        writer
            .write_batch(&first.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        let next: Vec<NewSnapshot> = (0..MAX_STATEMENT_ROWS as i64 + 1)
            .map(|i| job(&format!("s{}", i % 100), 2_000 + i, SyncStatus::Synced, &[]))
            .collect();
        let results = writer
            .write_batch(&next.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        assert!(results.iter().all(Result::is_ok));
        let stored: i64 = sqlx::query_scalar("select count(*) from snapshots")
            .fetch_one(&mut writer.connection)
            .await
            .unwrap();
        assert_eq!(stored, 100 + MAX_STATEMENT_ROWS as i64 + 1);
        let published = writer.published.read().unwrap().len();
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
        writer.write_batch(&[&seed]).await.unwrap();
        sqlx::query(
            "insert into snapshots (id, target_id, last_check, received_delay, sync_status, \
             drift_count, change) values (2, 1, 50, 0, 0, 0, 3)",
        )
        .execute(&mut writer.connection)
        .await
        .unwrap();

        let (reply, outcome) = oneshot::channel();
        let mut batch = vec![WriteJob {
            snapshots: vec![
                job("a", 200, SyncStatus::OutOfSync, &["x"]),
                job("b", 200, SyncStatus::Synced, &[]),
            ],
            reply,
        }];
        writer.commit_batch(&mut batch).await;
        let outcomes = outcome.await.unwrap();
        let ids: Vec<i64> = outcomes
            .iter()
            .map(|outcome| outcome.as_ref().unwrap().snapshot.id)
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
        assert_eq!(writer.published.read().unwrap().len(), 2);
    }
}
