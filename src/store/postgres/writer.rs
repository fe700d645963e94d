//! The PostgreSQL writers: a few tasks per replica take every snapshot waiting in the replica's
//! queue and store them in one transaction, then answer each caller.
//!
//! A transaction locks its targets' rows first (`FOR UPDATE`, sorted by repo then server, the one
//! order every replica uses, so they cannot deadlock on them), then reads the latest snapshot,
//! `status_since` and chain head it builds on, draws snapshot ids from the sequence (so each
//! target's ids follow its commit order), and writes the rows and the targets' new pointers. Any
//! other transaction writing the same targets, in this replica or another, waits for the commit.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot, watch};

use super::{INSERT_SNAPSHOTS_SQL, WRITE_LOCK, lock_sql};
use crate::chain::{self, Hash};
use crate::model::{NewSnapshot, Order, Snapshot};
use crate::store::rules::{
    self, FILES_CHANGED, STATUS_CHANGED, change_between, received_delay, snapshot_of,
};
use crate::store::sql::{self, Neighbour, snapshot_from_row};
use crate::store::{Recorded, StoreError};
use crate::timestamp::Timestamp;

/// Most snapshots committed at once by one writer.
const MAX_BATCH: usize = 1024;
/// File sets remembered by digest before the cache starts over.
const MAX_CACHED_FILESETS: usize = 65_536;
/// Attempts at a batch that PostgreSQL rolled back for a deadlock or a serialization failure.
const ATTEMPTS: u32 = 5;

/// Snapshots waiting for a writer (one for a POST, many for an import), and where their
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

/// File set ids by digest, shared by a replica's writers. Rows of `filesets` are never changed
/// or removed, so an id once committed stays right whoever wrote it.
#[derive(Debug, Clone, Default)]
pub struct FilesetCache(Arc<Mutex<HashMap<[u8; 32], i64>>>);

impl FilesetCache {
    fn get(&self, digest: &[u8; 32]) -> Option<i64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .copied()
    }

    fn extend(&self, committed: impl IntoIterator<Item = ([u8; 32], i64)>) {
        let mut cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (digest, id) in committed {
            if cache.len() >= MAX_CACHED_FILESETS {
                cache.clear();
            }
            cache.insert(digest, id);
        }
    }
}

/// Serves the shared queue until the store closes and the queue is drained.
pub async fn run(
    pool: PgPool,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<WriteJob>>>,
    mut closing: watch::Receiver<bool>,
    filesets: FilesetCache,
) {
    let mut closed = false;
    let mut batch = Vec::new();
    loop {
        {
            // One writer waits on the queue at a time and takes what is there; the others are
            // committing meanwhile.
            let mut queue = queue.lock().await;
            let first = tokio::select! {
                biased;
                _ = closing.wait_for(|closing| *closing), if !closed => {
                    queue.close();
                    closed = true;
                    continue;
                }
                job = queue.recv() => job,
            };
            let Some(first) = first else { break };
            let mut snapshots = first.snapshots.len();
            batch.push(first);
            while snapshots < MAX_BATCH {
                let Ok(job) = queue.try_recv() else { break };
                snapshots += job.snapshots.len();
                batch.push(job);
            }
        }
        commit_batch(&pool, &filesets, &mut batch).await;
    }
}

async fn commit_batch(pool: &PgPool, filesets: &FilesetCache, batch: &mut Vec<WriteJob>) {
    let started = std::time::Instant::now();
    let snapshots: Vec<&NewSnapshot> = batch.iter().flat_map(|job| job.snapshots.iter()).collect();
    let mut outcomes = match write_with_retries(pool, filesets, &snapshots).await {
        Ok(outcomes) => outcomes,
        Err(error) if snapshots.len() == 1 => vec![Err(error)],
        Err(error) => {
            // One snapshot's failure must not fail its neighbours: write each on its own.
            tracing::warn!(%error, size = snapshots.len(), "group commit failed; retrying one by one");
            let mut outcomes = Vec::with_capacity(snapshots.len());
            for snapshot in &snapshots {
                let outcome = write_with_retries(pool, filesets, &[*snapshot])
                    .await
                    .and_then(|mut single| single.pop().unwrap_or(Err(StoreError::Closed)));
                outcomes.push(outcome);
            }
            outcomes
        }
    };
    metrics::histogram!(crate::telemetry::COMMIT_DURATION).record(started.elapsed());
    let mut outcomes = outcomes.drain(..);
    for job in batch.drain(..) {
        let mine = outcomes.by_ref().take(job.snapshots.len()).collect();
        // The caller may have gone away (client disconnected); the snapshot is stored anyway.
        let _ = job.reply.send(mine);
    }
}

/// Writes the snapshots in one transaction, again when PostgreSQL rolled it back for a deadlock
/// or a serialization failure (nothing was written then). The outer error means nothing was
/// written; the inner results are per-snapshot outcomes such as a conflict.
async fn write_with_retries(
    pool: &PgPool,
    filesets: &FilesetCache,
    snapshots: &[&NewSnapshot],
) -> Result<Vec<Result<Recorded, StoreError>>, StoreError> {
    let mut attempt = 1;
    loop {
        match write(pool, filesets, snapshots).await {
            Ok(outcomes) => return Ok(outcomes),
            Err(error) if attempt < ATTEMPTS && is_retryable(&error) => {
                tracing::debug!(%error, attempt, "write rolled back; retrying");
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(error) => return Err(StoreError::from(error)),
        }
    }
}

fn is_retryable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

/// What a transaction knows of one of its (locked) targets.
#[derive(Debug, Clone)]
struct TargetTip {
    id: i64,
    latest: Option<LatestCheck>,
    status_since: Option<i64>,
    head_id: Option<i64>,
    /// Hash of the target's newest snapshot by id: what its next snapshot links to.
    head: Option<Hash>,
    touched: bool,
}

/// The fields of a target's latest snapshot that the next one is compared with.
#[derive(Debug, Clone, Copy)]
struct LatestCheck {
    id: i64,
    last_check: i64,
    sync_status: i64,
    fileset_id: Option<i64>,
}

/// Snapshot rows waiting for the transaction's next INSERT, column by column.
#[derive(Debug, Default)]
struct Pending {
    id: Vec<i64>,
    target_id: Vec<i64>,
    last_check: Vec<i64>,
    received_delay: Vec<i64>,
    sync_status: Vec<i64>,
    drift_count: Vec<i64>,
    fileset_id: Vec<Option<i64>>,
    change: Vec<i64>,
    stale_after: Vec<Option<i64>>,
    revision: Vec<Option<String>>,
    run_url: Vec<Option<String>>,
    message: Vec<Option<String>>,
    hash: Vec<Vec<u8>>,
}

impl Pending {
    #[allow(clippy::too_many_arguments, reason = "one row's columns")]
    fn push(
        &mut self,
        id: i64,
        target_id: i64,
        new: &NewSnapshot,
        last_check: Timestamp,
        fileset_id: Option<i64>,
        change: i64,
        hash: &Hash,
    ) {
        self.id.push(id);
        self.target_id.push(target_id);
        self.last_check.push(last_check.as_millis());
        self.received_delay.push(received_delay(new, last_check));
        self.sync_status.push(new.sync_status.code());
        self.drift_count.push(new.drift_count);
        self.fileset_id.push(fileset_id);
        self.change.push(change);
        self.stale_after.push(new.stale_after_seconds);
        self.revision.push(new.revision.clone());
        self.run_url.push(new.run_url.clone());
        self.message.push(new.message.clone());
        self.hash.push(hash.to_vec());
    }

    /// Inserts the waiting rows with one statement.
    async fn flush(&mut self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.id.is_empty() {
            return Ok(());
        }
        sqlx::query(INSERT_SNAPSHOTS_SQL)
            .bind(&self.id)
            .bind(&self.target_id)
            .bind(&self.last_check)
            .bind(&self.received_delay)
            .bind(&self.sync_status)
            .bind(&self.drift_count)
            .bind(&self.fileset_id)
            .bind(&self.change)
            .bind(&self.stale_after)
            .bind(&self.revision)
            .bind(&self.run_url)
            .bind(&self.message)
            .bind(&self.hash)
            .execute(connection)
            .await?;
        *self = Self::default();
        Ok(())
    }
}

/// One transaction for the whole batch.
async fn write(
    pool: &PgPool,
    filesets: &FilesetCache,
    snapshots: &[&NewSnapshot],
) -> Result<Vec<Result<Recorded, StoreError>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Shared with every other writer; a retention page takes it exclusively.
    sqlx::query(&lock_sql("pg_advisory_xact_lock_shared", WRITE_LOCK))
        .execute(&mut *tx)
        .await?;
    let mut targets = lock_targets(&mut tx, snapshots).await?;
    let (fileset_ids, mut looked_up, inserted) = fileset_ids(&mut tx, filesets, snapshots).await?;
    let mut ids = Ids::reserve(&mut tx, appends(snapshots, &targets)).await?;

    let mut pending = Pending::default();
    let mut outcomes = Vec::with_capacity(snapshots.len());
    let mut used = HashSet::new();
    for (&new, fileset_id) in snapshots.iter().zip(fileset_ids) {
        let Some(target) = targets.get_mut(&(new.repo.as_str(), new.server.as_str())) else {
            return Err(sqlx::Error::Protocol(format!(
                "target {}/{} was not locked",
                new.repo, new.server
            )));
        };
        let late = target
            .latest
            .is_some_and(|latest| new.last_check.as_millis() <= latest.last_check);
        let outcome = if late {
            // A retry or a late check: the database decides, so it must hold the rows before it.
            pending.flush(&mut tx).await?;
            record_out_of_order(&mut tx, new, target, fileset_id, &mut ids).await?
        } else {
            let id = ids.next(&mut tx).await?;
            Ok(append(new, target, fileset_id, id, &mut pending))
        };
        if outcome.as_ref().is_ok_and(|recorded| !recorded.replayed) {
            used.extend(fileset_id);
        }
        outcomes.push(outcome);
    }
    pending.flush(&mut tx).await?;
    update_targets(&mut tx, targets.values()).await?;
    // A file set stored only for snapshots that were refused (conflicts) or replayed goes again:
    // a refused request changes nothing stored.
    let unused: Vec<i64> = inserted
        .into_iter()
        .filter(|id| !used.contains(id))
        .collect();
    if !unused.is_empty() {
        sqlx::query("delete from filesets where id = any($1)")
            .bind(&unused)
            .execute(&mut *tx)
            .await?;
        looked_up.retain(|(_, id)| !unused.contains(id));
    }
    tx.commit().await?;
    filesets.extend(looked_up);
    Ok(outcomes)
}

/// Snapshot ids drawn from the sequence while the batch's targets are locked, smallest first, so
/// each target's ids follow the order its snapshots are stored in. Only what is stored draws one:
/// a replay or a conflict leaves no gap.
struct Ids(std::collections::VecDeque<i64>);

impl Ids {
    /// Draws `count` ids in one round trip.
    async fn reserve(connection: &mut PgConnection, count: usize) -> Result<Self, sqlx::Error> {
        if count == 0 {
            return Ok(Self(std::collections::VecDeque::new()));
        }
        let mut ids: Vec<i64> =
            sqlx::query_scalar("select nextval('snapshots_id_seq') from generate_series(1, $1)")
                .bind(i64::try_from(count).unwrap_or(i64::MAX))
                .fetch_all(connection)
                .await?;
        ids.sort_unstable();
        Ok(Self(ids.into()))
    }

    /// The next reserved id, or a new one (greater than every reserved id) when none is left.
    async fn next(&mut self, connection: &mut PgConnection) -> Result<i64, sqlx::Error> {
        match self.0.pop_front() {
            Some(id) => Ok(id),
            None => {
                sqlx::query_scalar("select nextval('snapshots_id_seq')")
                    .fetch_one(connection)
                    .await
            }
        }
    }
}

/// How many of the snapshots are newer than their target's latest when their turn comes: the
/// ones appended without asking the database, which draw the reserved ids.
fn appends(snapshots: &[&NewSnapshot], targets: &HashMap<(&str, &str), TargetTip>) -> usize {
    let mut latest: HashMap<(&str, &str), i64> = targets
        .iter()
        .filter_map(|(key, target)| Some((*key, target.latest?.last_check)))
        .collect();
    snapshots
        .iter()
        .filter(|new| {
            let at = new.last_check.as_millis();
            let key = (new.repo.as_str(), new.server.as_str());
            let newer = latest.get(&key).is_none_or(|latest| at > *latest);
            if newer {
                latest.insert(key, at);
            }
            newer
        })
        .count()
}

/// Creates the batch's new targets and locks every target's row, in (repo, server) order.
async fn lock_targets<'a>(
    connection: &mut PgConnection,
    snapshots: &[&'a NewSnapshot],
) -> Result<HashMap<(&'a str, &'a str), TargetTip>, sqlx::Error> {
    let mut keys: Vec<(&str, &str)> = snapshots
        .iter()
        .map(|new| (new.repo.as_str(), new.server.as_str()))
        .collect();
    // Byte order, as the columns' "C" collation sorts: inserts and locks go in one order.
    keys.sort_unstable();
    keys.dedup();
    let (repos, servers): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    sqlx::query(
        "insert into targets (repo, server) \
         select u.repo, u.server from unnest($1::text[], $2::text[]) as u (repo, server) \
         where not exists (select 1 from targets t where t.repo = u.repo and t.server = u.server) \
         on conflict (repo, server) do nothing",
    )
    .bind(&repos)
    .bind(&servers)
    .execute(&mut *connection)
    .await?;
    // Locked rows come back as they are after any wait, so what follows builds on the
    // committed latest.
    let rows = sqlx::query(
        "select id, repo, server, latest_id, status_since, head_id, head_hash from targets \
         where (repo, server) in (select * from unnest($1::text[], $2::text[])) \
         order by repo, server for update",
    )
    .bind(&repos)
    .bind(&servers)
    .fetch_all(&mut *connection)
    .await?;
    let latest_ids: Vec<i64> = rows
        .iter()
        .filter_map(|row| row.try_get::<Option<i64>, _>("latest_id").ok().flatten())
        .collect();
    // A new statement: it sees the snapshots committed by whoever held the locks before.
    let latest: HashMap<i64, LatestCheck> = sqlx::query_as::<_, (i64, i64, i64, Option<i64>)>(
        "select id, last_check, sync_status, fileset_id from snapshots where id = any($1)",
    )
    .bind(&latest_ids)
    .fetch_all(&mut *connection)
    .await?
    .into_iter()
    .map(|(id, last_check, sync_status, fileset_id)| {
        (
            id,
            LatestCheck {
                id,
                last_check,
                sync_status,
                fileset_id,
            },
        )
    })
    .collect();
    let mut targets = HashMap::with_capacity(keys.len());
    for row in rows {
        let repo: String = row.try_get("repo")?;
        let server: String = row.try_get("server")?;
        let Ok(index) = keys.binary_search(&(repo.as_str(), server.as_str())) else {
            continue;
        };
        let key = keys[index];
        let latest_id: Option<i64> = row.try_get("latest_id")?;
        targets.insert(
            key,
            TargetTip {
                id: row.try_get("id")?,
                latest: latest_id.and_then(|id| latest.get(&id).copied()),
                status_since: row.try_get("status_since")?,
                head_id: row.try_get("head_id")?,
                head: row
                    .try_get::<Option<Vec<u8>>, _>("head_hash")?
                    .as_deref()
                    .and_then(chain::from_bytes),
                touched: false,
            },
        );
    }
    Ok(targets)
}

/// Each snapshot's file set id (`None` for no files), inserting the sets not stored yet, in
/// digest order. Returns the ids, the sets this transaction looked up (for the cache once it
/// commits), and the ids of the sets it inserted.
#[allow(clippy::type_complexity, reason = "a private triple")]
async fn fileset_ids(
    connection: &mut PgConnection,
    cache: &FilesetCache,
    snapshots: &[&NewSnapshot],
) -> Result<(Vec<Option<i64>>, Vec<([u8; 32], i64)>, Vec<i64>), sqlx::Error> {
    let keys: Vec<Option<([u8; 32], String)>> = snapshots
        .iter()
        .map(|new| rules::fileset_key(&new.files))
        .collect();
    let mut known: HashMap<[u8; 32], i64> = HashMap::new();
    let mut unknown: Vec<(&[u8; 32], &str)> = Vec::new();
    for (digest, json) in keys.iter().flatten() {
        match cache.get(digest) {
            Some(id) => {
                known.insert(*digest, id);
            }
            None => unknown.push((digest, json)),
        }
    }
    unknown.sort_unstable();
    unknown.dedup();
    let mut looked_up = Vec::new();
    let mut inserted = Vec::new();
    if !unknown.is_empty() {
        let digests: Vec<&[u8]> = unknown.iter().map(|(digest, _)| &digest[..]).collect();
        let files: Vec<&str> = unknown.iter().map(|(_, json)| *json).collect();
        inserted = sqlx::query_scalar(
            "insert into filesets (digest, files) select * from unnest($1::bytea[], $2::text[]) \
             on conflict (digest) do nothing returning id",
        )
        .bind(&digests)
        .bind(&files)
        .fetch_all(&mut *connection)
        .await?;
        let rows: Vec<(Vec<u8>, i64)> =
            sqlx::query_as("select digest, id from filesets where digest = any($1)")
                .bind(&digests)
                .fetch_all(&mut *connection)
                .await?;
        for (digest, id) in rows {
            if let Ok(digest) = <[u8; 32]>::try_from(digest.as_slice()) {
                known.insert(digest, id);
                looked_up.push((digest, id));
            }
        }
    }
    let ids = keys
        .iter()
        .map(|key| match key {
            None => Ok(None),
            Some((digest, _)) => known
                .get(digest)
                .copied()
                .map(Some)
                .ok_or_else(|| sqlx::Error::Protocol("a file set was not stored".to_owned())),
        })
        .collect::<Result<_, _>>()?;
    Ok((ids, looked_up, inserted))
}

/// The usual case: a check newer than everything its target has.
fn append(
    new: &NewSnapshot,
    target: &mut TargetTip,
    fileset_id: Option<i64>,
    id: i64,
    pending: &mut Pending,
) -> Recorded {
    let last_check = new.last_check.as_millis();
    let sync_status = new.sync_status.code();
    let mut snapshot = snapshot_of(id, new, new.last_check);
    let hash = chain::link(&snapshot, target.head.as_ref());
    snapshot.hash = hex::encode(hash);
    let change = target
        .latest
        .map_or(STATUS_CHANGED | FILES_CHANGED, |latest| {
            change_between(
                (latest.sync_status, latest.fileset_id),
                (sync_status, fileset_id),
            )
        });
    if change & STATUS_CHANGED != 0 || target.status_since.is_none() {
        target.status_since = Some(last_check);
    }
    target.latest = Some(LatestCheck {
        id,
        last_check,
        sync_status,
        fileset_id,
    });
    target.head = Some(hash);
    target.head_id = Some(id);
    target.touched = true;
    pending.push(
        id,
        target.id,
        new,
        new.last_check,
        fileset_id,
        change,
        &hash,
    );
    Recorded {
        snapshot,
        replayed: false,
    }
}

/// A check at or before its target's latest: an identical retry (answered with the stored
/// snapshot), a conflict, or a late check that joins history without becoming the latest.
async fn record_out_of_order(
    connection: &mut PgConnection,
    new: &NewSnapshot,
    target: &mut TargetTip,
    fileset_id: Option<i64>,
    ids: &mut Ids,
) -> Result<Result<Recorded, StoreError>, sqlx::Error> {
    let mut last_check = new.last_check;
    while let Some(stored) = snapshot_at(&mut *connection, target.id, last_check).await? {
        match rules::at_taken_time(stored, new) {
            None => last_check = last_check.plus_millis(1),
            Some(outcome) => return Ok(outcome),
        }
    }

    let id = ids.next(&mut *connection).await?;
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
    let mut row = Pending::default();
    row.push(id, target.id, new, last_check, fileset_id, change, &hash);
    row.flush(&mut *connection).await?;
    if let Some(next) = next {
        // A late check becomes history; the transition flags of the snapshot after it change
        // with it.
        let next_change = change_between(
            (sync_status, fileset_id),
            (next.sync_status, next.fileset_id),
        );
        if next_change != next.change {
            sqlx::query("update snapshots set change = $1 where id = $2")
                .bind(next_change)
                .bind(next.id)
                .execute(&mut *connection)
                .await?;
        }
    }
    // The newest by id is the chain head; the latest by last_check and the start of its run
    // are read back, since a late check can move either.
    target.head = Some(hash);
    target.head_id = Some(id);
    target.touched = true;
    let (latest_id, latest_check, latest_status, latest_fileset, since): (
        i64,
        i64,
        i64,
        Option<i64>,
        i64,
    ) = sqlx::query_as(
        "select s.id, s.last_check, s.sync_status, s.fileset_id, \
         coalesce((select c.last_check from snapshots c where c.target_id = s.target_id \
                   and c.change <> 0 and (c.change & 1) = 1 and c.last_check <= s.last_check \
                   order by c.last_check desc limit 1), s.last_check) \
         from snapshots s where s.target_id = $1 order by s.last_check desc limit 1",
    )
    .bind(target.id)
    .fetch_one(&mut *connection)
    .await?;
    target.latest = Some(LatestCheck {
        id: latest_id,
        last_check: latest_check,
        sync_status: latest_status,
        fileset_id: latest_fileset,
    });
    target.status_since = Some(since);
    Ok(Ok(Recorded {
        snapshot,
        replayed: false,
    }))
}

/// Writes the touched targets' new latest, `status_since` and chain head.
async fn update_targets(
    connection: &mut PgConnection,
    targets: impl Iterator<Item = &TargetTip>,
) -> Result<(), sqlx::Error> {
    let mut ids = Vec::new();
    let mut latest = Vec::new();
    let mut since = Vec::new();
    let mut head_ids = Vec::new();
    let mut heads = Vec::new();
    for target in targets.filter(|target| target.touched) {
        ids.push(target.id);
        latest.push(target.latest.map(|latest| latest.id));
        since.push(target.status_since);
        head_ids.push(target.head_id);
        heads.push(target.head.map(|hash| hash.to_vec()));
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "update targets t set latest_id = u.latest_id, status_since = u.status_since, \
         head_id = u.head_id, head_hash = u.head_hash \
         from unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[]) \
         as u (id, latest_id, status_since, head_id, head_hash) where t.id = u.id",
    )
    .bind(&ids)
    .bind(&latest)
    .bind(&since)
    .bind(&head_ids)
    .bind(&heads)
    .execute(connection)
    .await?;
    Ok(())
}

async fn snapshot_at(
    connection: &mut PgConnection,
    target_id: i64,
    last_check: Timestamp,
) -> Result<Option<Snapshot>, sqlx::Error> {
    let row = sqlx::query(&sql::snapshot_at_sql())
        .bind(target_id)
        .bind(last_check.as_millis())
        .fetch_optional(connection)
        .await?;
    row.as_ref().map(snapshot_from_row).transpose()
}

/// The snapshot just before (`Desc`) or just after (`Asc`) `last_check` on the target.
async fn neighbour(
    connection: &mut PgConnection,
    target_id: i64,
    last_check: Timestamp,
    direction: Order,
) -> Result<Option<Neighbour>, sqlx::Error> {
    sqlx::query_as(sql::neighbour_sql(direction))
        .bind(target_id)
        .bind(last_check.as_millis())
        .fetch_optional(connection)
        .await
}
