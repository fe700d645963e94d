//! The PostgreSQL writers: a few tasks per replica run the write pipeline (`store::pipeline`),
//! each committing one batch at a time from the replica's queue.
//!
//! A transaction locks its targets' rows first (`FOR UPDATE`, sorted by repo then server, the one
//! order every replica uses, so they cannot deadlock on them), then reads the latest snapshot,
//! `status_since` and chain head it builds on, draws record ids from the sequence (so each
//! target's ids follow its commit order), and writes the rows and the targets' new pointers. Any
//! other transaction writing the same targets, in this replica or another, waits for the commit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{PgPool, Row as _};
use tokio::sync::{mpsc, watch};

use super::{FLEET_LOCK, INSERT_SNAPSHOTS_SQL, WRITE_LOCK, lock_sql};
use crate::chain::{self, Hash};
use crate::model::{NewSnapshot, Order, Snapshot};
use crate::rollups::{DayTotals, RollupDeltas};
use crate::store::StoreError;
use crate::store::episode_table::{EpisodeDeltas, EpisodeWrites};
use crate::store::pipeline::{
    self, Backend, Batch, EventRow, LatestCheck, Outcome, Record, Row, Steps, Tip, TipAck,
    TransitionRow, WriteJob,
};
use crate::store::rules;
use crate::store::sql::{self, Neighbour, snapshot_from_row};
use crate::timestamp::Timestamp;

/// File sets remembered by digest before the cache starts over.
const MAX_CACHED_FILESETS: usize = 65_536;
/// Attempts at a batch that PostgreSQL rolled back for a deadlock or a serialization failure.
const ATTEMPTS: u32 = 5;

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

/// One writer task's way to the database.
#[derive(Debug)]
pub struct Writer {
    pool: PgPool,
    filesets: FilesetCache,
}

impl Writer {
    pub fn new(pool: PgPool, filesets: FilesetCache) -> Self {
        Self { pool, filesets }
    }

    /// Serves the shared queue until the store closes and the queue is drained.
    pub async fn run(
        mut self,
        queue: Arc<tokio::sync::Mutex<mpsc::Receiver<WriteJob>>>,
        mut closing: watch::Receiver<bool>,
    ) {
        let mut closed = false;
        let mut batch = Batch::default();
        loop {
            {
                // One writer waits on the queue at a time and takes what is there; the others
                // are committing meanwhile.
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
                batch.push(first);
                while !batch.is_full() {
                    let Ok(job) = queue.try_recv() else { break };
                    batch.push(job);
                }
            }
            pipeline::commit(&mut self, &mut batch).await;
        }
    }

    /// One transaction for the whole batch.
    async fn attempt(&self, records: &[&Record]) -> Result<Vec<Outcome>, Failure> {
        let snapshots: Vec<&NewSnapshot> = records
            .iter()
            .filter_map(|record| match record {
                Record::Snapshot(new) => Some(new),
                Record::Event(_) => None,
            })
            .collect();
        let snapshots = &snapshots[..];
        let events: Vec<(&str, &str)> = records
            .iter()
            .filter_map(|record| match record {
                Record::Event(event) if !event.kind.is_fleet() => {
                    Some((event.repo.as_str(), event.server.as_str()))
                }
                _ => None,
            })
            .collect();
        let fleet = records
            .iter()
            .any(|record| matches!(record, Record::Event(event) if event.kind.is_fleet()));
        let mut tx = self.pool.begin().await?;
        // Shared with every other writer; a retention page takes it exclusively.
        sqlx::query(&lock_sql("pg_advisory_xact_lock_shared", WRITE_LOCK))
            .execute(&mut *tx)
            .await?;
        if fleet {
            // Before any id is drawn: the fleet chain's ids follow its commit order.
            sqlx::query(&lock_sql("pg_advisory_xact_lock", FLEET_LOCK))
                .execute(&mut *tx)
                .await?;
        }
        let tips = lock_targets(&mut tx, snapshots, &events).await?;
        // Read under the write lock, which a rollup reset takes exclusively: the deltas follow
        // the default the rollups are kept for, whatever this replica's own.
        let rollup_stale_after = sqlx::query_as::<_, (i64, i64)>(sql::ROLLUP_META_SQL)
            .fetch_optional(&mut *tx)
            .await?
            .map(|(stale_after, _)| stale_after);
        let (filesets, inserted) = fileset_ids(&mut tx, &self.filesets, snapshots).await?;
        let ids = Ids::reserve(&mut tx, appends(snapshots, &tips)).await?;
        let mut steps = PgSteps {
            connection: &mut tx,
            tips,
            touched: HashSet::new(),
            filesets,
            used: HashSet::new(),
            ids,
            rows: Vec::new(),
            transitions: Vec::new(),
            failure: None,
            rollups: RollupDeltas::new(rollup_stale_after),
            episodes: EpisodeDeltas::new(rollup_stale_after),
        };
        let outcomes = match pipeline::place(&mut steps, records).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                return Err(steps
                    .failure
                    .take()
                    .map_or(Failure::Store(error), Failure::Sql));
            }
        };
        steps.write_rows().await?;
        steps.write_transitions().await?;
        steps.update_targets().await?;
        steps.write_rollups().await?;
        steps
            .connection
            .write_episodes(&mut steps.episodes)
            .await
            .map_err(Failure::Store)?;
        // A file set stored only for snapshots that were refused (conflicts) or replayed goes
        // again: a refused request changes nothing stored.
        let unused: Vec<i64> = inserted
            .into_iter()
            .filter(|id| !steps.used.contains(id))
            .collect();
        let mut committed = std::mem::take(&mut steps.filesets);
        if !unused.is_empty() {
            sqlx::query("delete from filesets where id = any($1)")
                .bind(&unused)
                .execute(&mut *tx)
                .await?;
            committed.retain(|_, id| !unused.contains(id));
        }
        tx.commit().await?;
        self.filesets.extend(committed);
        Ok(outcomes)
    }
}

impl Backend for Writer {
    /// Writes the snapshots in one transaction, again when PostgreSQL rolled it back for a
    /// deadlock or a serialization failure (nothing was written then).
    async fn write(&mut self, records: &[&Record]) -> Result<Vec<Outcome>, StoreError> {
        let mut attempt = 1;
        loop {
            match self.attempt(records).await {
                Ok(outcomes) => return Ok(outcomes),
                Err(Failure::Sql(error)) if attempt < ATTEMPTS && is_retryable(&error) => {
                    tracing::debug!(%error, attempt, "write rolled back; retrying");
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(Failure::Sql(error)) => return Err(StoreError::from(error)),
                Err(Failure::Store(error)) => return Err(error),
            }
        }
    }
}

/// Why an attempt at a batch failed: the driver's error is kept whole, since its SQLSTATE says
/// whether to try again.
#[derive(Debug)]
enum Failure {
    Sql(sqlx::Error),
    Store(StoreError),
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Self::Sql(error)
    }
}

fn is_retryable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

/// One batch's placement inside its PostgreSQL transaction, on targets it has locked.
struct PgSteps<'c> {
    connection: &'c mut PgConnection,
    tips: HashMap<(String, String), Tip>,
    /// Targets whose pointers change at commit.
    touched: HashSet<(String, String)>,
    /// Every file set of the batch, by digest, stored before placement began.
    filesets: HashMap<[u8; 32], i64>,
    /// The file sets a stored snapshot uses.
    used: HashSet<i64>,
    ids: Ids,
    rows: Vec<Row>,
    /// The outbox rows of the batch, written after its snapshots in one statement.
    transitions: Vec<TransitionRow>,
    /// The driver's error behind the last step that failed, for `Writer::write` to judge.
    failure: Option<sqlx::Error>,
    rollups: RollupDeltas,
    episodes: EpisodeDeltas,
}

impl PgSteps<'_> {
    /// Keeps a failed step's driver error and hands placement a `StoreError` to stop on.
    fn check<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        result.map_err(|error| {
            let stopped = StoreError::Unavailable(error.to_string());
            self.failure = Some(error);
            stopped
        })
    }

    /// Inserts the waiting rows with one statement, column by column.
    async fn write_rows(&mut self) -> Result<(), sqlx::Error> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        let column = |get: fn(&Row) -> i64| rows.iter().map(get).collect::<Vec<i64>>();
        sqlx::query(INSERT_SNAPSHOTS_SQL)
            .bind(column(|row| row.id))
            .bind(column(|row| row.target_id))
            .bind(column(|row| row.last_check))
            .bind(column(|row| row.received_delay))
            .bind(column(|row| row.sync_status))
            .bind(column(|row| row.drift_count))
            .bind(rows.iter().map(|row| row.fileset_id).collect::<Vec<_>>())
            .bind(column(|row| row.change))
            .bind(rows.iter().map(|row| row.stale_after).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|row| row.revision.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|row| row.run_url.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|row| row.message.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|row| &row.hash[..]).collect::<Vec<_>>())
            .execute(&mut *self.connection)
            .await?;
        Ok(())
    }

    /// Inserts the batch's outbox rows with one statement, column by column, in the order
    /// placement queued them (`with ordinality` keeps it for the ids).
    async fn write_transitions(&mut self) -> Result<(), sqlx::Error> {
        if self.transitions.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.transitions);
        sqlx::query(&format!(
            "{}select target_id, kind, state, at, record_id from unnest($1::bigint[], \
             $2::text[], $3::text[], $4::bigint[], $5::bigint[]) with ordinality \
             as t (target_id, kind, state, at, record_id, n) order by n{}",
            sql::INSERT_TRANSITION_COLUMNS,
            sql::ON_CONFLICT_DO_NOTHING
        ))
        .bind(rows.iter().map(|row| row.target_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.kind).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.state).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.at).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.record_id).collect::<Vec<_>>())
        .execute(&mut *self.connection)
        .await?;
        Ok(())
    }

    /// Adds the batch's rollup deltas to their days with one statement, column by column.
    async fn write_rollups(&mut self) -> Result<(), sqlx::Error> {
        let deltas = self.rollups.take();
        if deltas.is_empty() {
            return Ok(());
        }
        let column =
            |get: fn(&(i64, i64, DayTotals)) -> i64| deltas.iter().map(get).collect::<Vec<i64>>();
        sqlx::query(&format!(
            "{}select * from unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], \
             $5::bigint[], $6::bigint[], $7::bigint[]){}",
            sql::INSERT_ROLLUP_COLUMNS,
            sql::ROLLUP_ADD
        ))
        .bind(column(|(target, _, _)| *target))
        .bind(column(|(_, day, _)| *day))
        .bind(column(|(_, _, totals)| totals.checks))
        .bind(column(|(_, _, totals)| totals.synced_ms))
        .bind(column(|(_, _, totals)| totals.out_of_sync_ms))
        .bind(column(|(_, _, totals)| totals.error_ms))
        .bind(column(|(_, _, totals)| totals.stale_ms))
        .execute(&mut *self.connection)
        .await?;
        Ok(())
    }

    /// Writes the touched targets' new latest, `status_since` and chain head.
    async fn update_targets(&mut self) -> Result<(), sqlx::Error> {
        if self.touched.is_empty() {
            return Ok(());
        }
        let tips: Vec<&Tip> = self
            .touched
            .iter()
            .filter_map(|key| self.tips.get(key))
            .collect();
        sqlx::query(
            "update targets t set latest_id = u.latest_id, status_since = u.status_since, \
             head_id = u.head_id, head_hash = u.head_hash \
             from unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[]) \
             as u (id, latest_id, status_since, head_id, head_hash) where t.id = u.id",
        )
        .bind(tips.iter().map(|tip| tip.target_id).collect::<Vec<_>>())
        .bind(
            tips.iter()
                .map(|tip| tip.latest.map(|latest| latest.id))
                .collect::<Vec<_>>(),
        )
        .bind(tips.iter().map(|tip| tip.status_since).collect::<Vec<_>>())
        .bind(
            tips.iter()
                .map(|tip| tip.head.map(|(id, _)| id))
                .collect::<Vec<_>>(),
        )
        .bind(
            tips.iter()
                .map(|tip| tip.head.map(|(_, hash)| hash.to_vec()))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *self.connection)
        .await?;
        Ok(())
    }
}

impl Steps for PgSteps<'_> {
    async fn tip(&mut self, repo: &str, server: &str) -> Result<Tip, StoreError> {
        // Every target of the batch was created and locked before placement began.
        self.tips
            .get(&(repo.to_owned(), server.to_owned()))
            .copied()
            .ok_or_else(|| StoreError::corrupt(format!("target {repo}/{server} was not locked")))
    }

    async fn fileset(&mut self, files: &[String]) -> Result<Option<i64>, StoreError> {
        let Some((digest, _)) = rules::fileset_key(files) else {
            return Ok(None);
        };
        let id = self
            .filesets
            .get(&digest)
            .copied()
            .ok_or_else(|| StoreError::corrupt("a file set was not stored"))?;
        self.used.insert(id);
        Ok(Some(id))
    }

    async fn next_id(&mut self) -> Result<i64, StoreError> {
        let id = self.ids.next(self.connection).await;
        self.check(id)
    }

    fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        let written = self.write_rows().await;
        self.check(written)
    }

    async fn snapshot_at(
        &mut self,
        target_id: i64,
        last_check: Timestamp,
    ) -> Result<Option<Snapshot>, StoreError> {
        let row = sqlx::query(&sql::snapshot_at_sql())
            .bind(target_id)
            .bind(last_check.as_millis())
            .fetch_optional(&mut *self.connection)
            .await;
        let row = self.check(row)?;
        let snapshot = row.as_ref().map(snapshot_from_row).transpose();
        self.check(snapshot)
    }

    async fn neighbour(
        &mut self,
        target_id: i64,
        last_check: Timestamp,
        direction: Order,
    ) -> Result<Option<Neighbour>, StoreError> {
        let neighbour = sqlx::query_as(sql::neighbour_sql(direction))
            .bind(target_id)
            .bind(last_check.as_millis())
            .fetch_optional(&mut *self.connection)
            .await;
        self.check(neighbour)
    }

    async fn set_change(&mut self, id: i64, change: i64) -> Result<(), StoreError> {
        let updated = sqlx::query(sql::SET_CHANGE_SQL)
            .bind(change)
            .bind(id)
            .execute(&mut *self.connection)
            .await;
        self.check(updated).map(drop)
    }

    async fn reread(&mut self, tip: &mut Tip) -> Result<(), StoreError> {
        let latest = sqlx::query_as::<_, (i64, i64, i64, Option<i64>, Option<i64>, i64)>(
            sql::LATEST_CHECK_SQL,
        )
        .bind(tip.target_id)
        .fetch_one(&mut *self.connection)
        .await;
        let (id, last_check, sync_status, fileset_id, stale_after, since) = self.check(latest)?;
        tip.latest = Some(LatestCheck {
            id,
            last_check,
            sync_status,
            fileset_id,
            stale_after,
        });
        tip.status_since = Some(since);
        Ok(())
    }

    fn settle(&mut self, repo: &str, server: &str, tip: Tip, _appended: Option<&Snapshot>) {
        let key = (repo.to_owned(), server.to_owned());
        self.tips.insert(key.clone(), tip);
        self.touched.insert(key);
    }

    async fn existing_tip(&mut self, repo: &str, server: &str) -> Result<Option<Tip>, StoreError> {
        Ok(self
            .tips
            .get(&(repo.to_owned(), server.to_owned()))
            .copied())
    }

    async fn event(&mut self, row: EventRow) -> Result<(), StoreError> {
        let flushed = self.write_rows().await;
        self.check(flushed)?;
        for (statement, values) in sql::event_statements(&row) {
            let query = bind(sqlx::query(statement), values);
            let done = query.execute(&mut *self.connection).await;
            self.check(done)?;
        }
        Ok(())
    }

    fn transition(&mut self, row: TransitionRow) {
        self.transitions.push(row);
    }

    async fn fleet_head(&mut self) -> Result<Option<(i64, Hash)>, StoreError> {
        let head = sqlx::query_as::<_, (i64, Vec<u8>)>(sql::FLEET_HEAD_SQL)
            .fetch_optional(&mut *self.connection)
            .await;
        Ok(self
            .check(head)?
            .and_then(|(id, hash)| Some((id, chain::from_bytes(&hash)?))))
    }

    fn set_fleet_head(&mut self, _head: (i64, Hash)) {
        // Read from the events table under the fleet lock; nothing to remember.
    }

    async fn silence_end(&mut self, id: i64) -> Result<Option<(i64, Option<i64>)>, StoreError> {
        let end = sqlx::query_as(sql::SILENCE_END_SQL)
            .bind(id)
            .fetch_optional(&mut *self.connection)
            .await;
        self.check(end)
    }

    fn rollups(&mut self) -> &mut RollupDeltas {
        &mut self.rollups
    }

    fn episodes(&mut self) -> &mut EpisodeDeltas {
        &mut self.episodes
    }
}

/// Record ids drawn from the sequence while the batch's targets are locked, smallest first, so
/// each target's ids follow the order its records are stored in. Only what is stored draws one:
/// a replay or a conflict leaves no gap.
#[derive(Debug)]
struct Ids(VecDeque<i64>);

impl Ids {
    /// Draws `count` ids in one round trip.
    async fn reserve(connection: &mut PgConnection, count: usize) -> Result<Self, sqlx::Error> {
        if count == 0 {
            return Ok(Self(VecDeque::new()));
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
fn appends(snapshots: &[&NewSnapshot], tips: &HashMap<(String, String), Tip>) -> usize {
    let mut latest: HashMap<(&str, &str), i64> = tips
        .iter()
        .filter_map(|((repo, server), tip)| {
            Some(((repo.as_str(), server.as_str()), tip.latest?.last_check))
        })
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

/// Creates the batch's new targets and locks every target's row, in (repo, server) order, then
/// reads the tips they hold.
async fn lock_targets(
    connection: &mut PgConnection,
    snapshots: &[&NewSnapshot],
    events: &[(&str, &str)],
) -> Result<HashMap<(String, String), Tip>, sqlx::Error> {
    let mut keys: Vec<(&str, &str)> = snapshots
        .iter()
        .map(|new| (new.repo.as_str(), new.server.as_str()))
        .collect();
    // Byte order, as the columns' "C" collation sorts: inserts and locks go in one order.
    keys.sort_unstable();
    keys.dedup();
    let (repos, servers): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    // Events lock their target but never create one.
    keys.extend_from_slice(events);
    keys.sort_unstable();
    keys.dedup();
    let (locked_repos, locked_servers): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
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
        "select id, repo, server, latest_id, status_since, head_id, head_hash, ack_id, \
         (select a.until from acks a where a.id = targets.ack_id) as ack_until, \
         (select a.created_at from acks a where a.id = targets.ack_id) as ack_created_at, \
         retired_at \
         from targets where (repo, server) in (select * from unnest($1::text[], $2::text[])) \
         order by repo, server for update",
    )
    .bind(&locked_repos)
    .bind(&locked_servers)
    .fetch_all(&mut *connection)
    .await?;
    let latest_ids: Vec<i64> = rows
        .iter()
        .filter_map(|row| row.try_get::<Option<i64>, _>("latest_id").ok().flatten())
        .collect();
    // A new statement: it sees the snapshots committed by whoever held the locks before.
    let latest: HashMap<i64, LatestCheck> =
        sqlx::query_as::<_, (i64, i64, i64, Option<i64>, Option<i64>)>(
            "select id, last_check, sync_status, fileset_id, stale_after from snapshots \
             where id = any($1)",
        )
        .bind(&latest_ids)
        .fetch_all(&mut *connection)
        .await?
        .into_iter()
        .map(|(id, last_check, sync_status, fileset_id, stale_after)| {
            (
                id,
                LatestCheck {
                    id,
                    last_check,
                    sync_status,
                    fileset_id,
                    stale_after,
                },
            )
        })
        .collect();
    let mut tips = HashMap::with_capacity(keys.len());
    for row in rows {
        let latest_id: Option<i64> = row.try_get("latest_id")?;
        let head_id: Option<i64> = row.try_get("head_id")?;
        let head_hash = row
            .try_get::<Option<Vec<u8>>, _>("head_hash")?
            .as_deref()
            .and_then(chain::from_bytes);
        tips.insert(
            (row.try_get("repo")?, row.try_get("server")?),
            Tip {
                target_id: row.try_get("id")?,
                latest: latest_id.and_then(|id| latest.get(&id).copied()),
                status_since: row.try_get("status_since")?,
                head: head_id.zip(head_hash),
                ack: match (
                    row.try_get::<Option<i64>, _>("ack_id")?,
                    row.try_get::<Option<i64>, _>("ack_created_at")?,
                    row.try_get::<Option<i64>, _>("ack_until")?,
                ) {
                    (Some(id), Some(created_at), Some(until)) => Some(TipAck {
                        id,
                        created_at,
                        until,
                    }),
                    _ => None,
                },
                retired_at: row.try_get("retired_at")?,
            },
        );
    }
    Ok(tips)
}

/// Stores the batch's file sets not stored yet, in digest order, and returns the id of every
/// file set the batch names, by digest, and the ids of those this transaction inserted.
async fn fileset_ids(
    connection: &mut PgConnection,
    cache: &FilesetCache,
    snapshots: &[&NewSnapshot],
) -> Result<(HashMap<[u8; 32], i64>, Vec<i64>), sqlx::Error> {
    let mut known: HashMap<[u8; 32], i64> = HashMap::new();
    let mut unknown: Vec<([u8; 32], String)> = Vec::new();
    for (digest, json) in snapshots
        .iter()
        .filter_map(|new| rules::fileset_key(&new.files))
    {
        match cache.get(&digest) {
            Some(id) => {
                known.insert(digest, id);
            }
            None => unknown.push((digest, json)),
        }
    }
    unknown.sort_unstable();
    unknown.dedup();
    let mut inserted = Vec::new();
    if !unknown.is_empty() {
        let digests: Vec<&[u8]> = unknown.iter().map(|(digest, _)| &digest[..]).collect();
        let files: Vec<&str> = unknown.iter().map(|(_, json)| json.as_str()).collect();
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
            }
        }
    }
    Ok((known, inserted))
}
/// Binds a shared statement's values (`sql::Value`) in order.
fn bind<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    values: Vec<sql::Value>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for value in values {
        query = match value {
            sql::Value::Integer(value) => query.bind(value),
            sql::Value::Text(value) => query.bind(value),
            sql::Value::Bytes(value) => query.bind(value),
        };
    }
    query
}
