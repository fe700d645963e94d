//! The SQLite store: WAL with `synchronous=FULL`, one writer task that group-commits every waiting
//! snapshot in one transaction, and a small pool of readers.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteExecutor};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{ConnectError, Latest, Recorded, StoreError};
use crate::model::{
    FileEntry, HistoryFilter, NewSnapshot, Order, Snapshot, StatusFilter, SyncStatus, files_text,
};
use crate::timestamp::Timestamp;

/// Most snapshots committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Snapshots waiting for the writer before `record` callers wait for room.
const QUEUE_CAPACITY: usize = 8192;
/// Readers open at once.
const READERS: u32 = 4;

/// `change` bits, see migrations/sqlite/0001_init.sql.
const STATUS_CHANGED: i64 = 1;
const FILES_CHANGED: i64 = 2;

const SNAPSHOT_COLUMNS: &str = "select s.id, t.repo, t.server, s.sync_status, s.drift_count, \
     f.files, s.last_check, s.received_at, s.revision, s.run_url, s.message, s.stale_after";

/// A snapshot waiting for the writer, and where its outcome goes.
struct WriteJob {
    snapshot: NewSnapshot,
    reply: oneshot::Sender<Result<Recorded, StoreError>>,
}

/// Handle to an open SQLite database; clones share it.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    readers: SqlitePool,
    jobs: mpsc::Sender<WriteJob>,
    shutdown: Arc<Notify>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for WriteJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteJob")
            .field("snapshot", &self.snapshot)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database file, creating and migrating it when needed, and starts the writer.
    pub async fn open(url: &str) -> Result<Self, ConnectError> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(ConnectError::Unsupported(
                "in-memory SQLite would lose every snapshot on restart; name a file".to_owned(),
            ));
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Durable at commit: the WAL is fsync'd before the writer answers.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));

        let mut writer = SqliteConnection::connect_with(&options).await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut writer)
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;

        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let shutdown = Arc::new(Notify::new());
        let task = tokio::spawn(run_writer(writer, queue, Arc::clone(&shutdown)));
        Ok(Self {
            inner: Arc::new(Inner {
                readers,
                jobs,
                shutdown,
                writer: Mutex::new(Some(task)),
            }),
        })
    }

    pub async fn record(&self, snapshot: NewSnapshot) -> Result<Recorded, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.inner
            .jobs
            .send(WriteJob { snapshot, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Closed)?
    }

    pub async fn latest(&self, filter: &StatusFilter) -> Result<Vec<Latest>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(SNAPSHOT_COLUMNS);
        query.push(
            ", t.status_since from targets t join snapshots s on s.id = t.latest_id \
             left join filesets f on f.id = s.fileset_id where 1 = 1",
        );
        if let Some(repo) = &filter.repo {
            query.push(" and t.repo = ").push_bind(repo);
        }
        if let Some(server) = &filter.server {
            query.push(" and t.server = ").push_bind(server);
        }
        query.push(" order by t.repo, t.server");
        let rows = query.build().fetch_all(&self.inner.readers).await?;
        rows.iter()
            .map(|row| {
                Ok(Latest {
                    snapshot: snapshot_from_row(row)?,
                    status_since: Timestamp::from_millis(row.try_get("status_since")?),
                })
            })
            .collect()
    }

    pub async fn history_page(
        &self,
        filter: &HistoryFilter,
        limit: usize,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(SNAPSHOT_COLUMNS);
        // Filtering on t.repo / t.server lets SQLite find the target first and then walk
        // snapshots_target_time (or snapshots_target_changes) in order.
        query.push(
            " from snapshots s join targets t on t.id = s.target_id \
             left join filesets f on f.id = s.fileset_id where 1 = 1",
        );
        if let Some(repo) = &filter.repo {
            query.push(" and t.repo = ").push_bind(repo);
        }
        if let Some(server) = &filter.server {
            query.push(" and t.server = ").push_bind(server);
        }
        if !filter.sync_statuses.is_empty() {
            query.push(" and s.sync_status in (");
            let mut codes = query.separated(", ");
            for status in &filter.sync_statuses {
                codes.push_bind(status.code());
            }
            query.push(")");
        }
        if let Some(from) = filter.from {
            query
                .push(" and s.last_check >= ")
                .push_bind(from.as_millis());
        }
        if let Some(to) = filter.to {
            query.push(" and s.last_check < ").push_bind(to.as_millis());
        }
        if filter.changes_only {
            query.push(" and s.change != 0");
        }
        let (cmp_or_equal, cmp, direction) = match filter.order {
            Order::Desc => ("<=", "<", "desc"),
            Order::Asc => (">=", ">", "asc"),
        };
        if let Some(after) = filter.after {
            let at = after.last_check.as_millis();
            query
                .push(format_args!(" and s.last_check {cmp_or_equal} "))
                .push_bind(at)
                .push(format_args!(" and (s.last_check {cmp} "))
                .push_bind(at)
                .push(format_args!(" or s.id {cmp} "))
                .push_bind(after.id)
                .push(")");
        }
        query.push(format_args!(
            " order by s.last_check {direction}, s.id {direction} limit "
        ));
        query.push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = query.build().fetch_all(&self.inner.readers).await?;
        rows.iter()
            .map(|row| snapshot_from_row(row).map_err(StoreError::from))
            .collect()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        if self.inner.jobs.is_closed() {
            return Err(StoreError::Closed);
        }
        sqlx::query("select 1").execute(&self.inner.readers).await?;
        Ok(())
    }

    pub async fn close(&self) {
        // Readers first, so the writer's connection is the last one and removes the WAL.
        self.inner.readers.close().await;
        self.inner.shutdown.notify_one();
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            if let Err(error) = writer.await {
                tracing::error!(%error, "the writer task failed");
            }
        }
    }
}

/// The single writer: takes every snapshot waiting in the queue (up to `MAX_BATCH`), stores them in
/// one transaction, commits once, then answers each. On shutdown it refuses new work, drains what
/// was queued, and closes the connection cleanly (checkpointing the WAL).
async fn run_writer(
    mut connection: SqliteConnection,
    mut queue: mpsc::Receiver<WriteJob>,
    shutdown: Arc<Notify>,
) {
    let mut closing = false;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            () = shutdown.notified(), if !closing => {
                queue.close();
                closing = true;
                continue;
            }
            job = queue.recv() => job,
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&mut connection, &mut batch).await;
    }
    if let Err(error) = connection.close().await {
        tracing::warn!(%error, "closing the database failed");
    }
}

async fn commit_batch(connection: &mut SqliteConnection, batch: &mut Vec<WriteJob>) {
    let outcomes = match write_batch(connection, batch).await {
        Ok(outcomes) => outcomes,
        Err(error) if batch.len() == 1 => vec![Err(error)],
        Err(error) => {
            // One snapshot's failure must not fail its neighbours: write each on its own.
            tracing::warn!(%error, size = batch.len(), "group commit failed; retrying one by one");
            let mut outcomes = Vec::with_capacity(batch.len());
            for job in batch.iter() {
                let outcome = write_batch(connection, std::slice::from_ref(job))
                    .await
                    .and_then(|mut single| single.pop().unwrap_or(Err(StoreError::Closed)));
                outcomes.push(outcome);
            }
            outcomes
        }
    };
    for (job, outcome) in batch.drain(..).zip(outcomes) {
        // The caller may have gone away (client disconnected); the snapshot is stored regardless.
        let _ = job.reply.send(outcome);
    }
}

/// Writes the jobs in one transaction. The outer error aborts the whole transaction; the inner
/// results are per-snapshot outcomes such as a conflict, which leave the others untouched.
async fn write_batch(
    connection: &mut SqliteConnection,
    jobs: &[WriteJob],
) -> Result<Vec<Result<Recorded, StoreError>>, StoreError> {
    let mut transaction = connection.begin().await?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        outcomes.push(record_one(&mut transaction, &job.snapshot).await?);
    }
    transaction.commit().await?;
    Ok(outcomes)
}

/// A stored snapshot's neighbour, as far as transitions care.
#[derive(Debug, Clone, Copy)]
struct Neighbour {
    id: i64,
    sync_status: i64,
    fileset_id: Option<i64>,
    change: i64,
}

impl Neighbour {
    fn change_after(&self, previous: Option<(i64, Option<i64>)>) -> i64 {
        match previous {
            None => STATUS_CHANGED | FILES_CHANGED,
            Some((sync_status, fileset_id)) => {
                let mut change = 0;
                if sync_status != self.sync_status {
                    change |= STATUS_CHANGED;
                }
                if fileset_id != self.fileset_id {
                    change |= FILES_CHANGED;
                }
                change
            }
        }
    }
}

async fn record_one(
    connection: &mut SqliteConnection,
    new: &NewSnapshot,
) -> Result<Result<Recorded, StoreError>, StoreError> {
    let target: Option<(i64, i64)> =
        sqlx::query_as("select id, status_since from targets where repo = ? and server = ?")
            .bind(&new.repo)
            .bind(&new.server)
            .fetch_optional(&mut *connection)
            .await?;

    let mut last_check = new.last_check;
    if let Some((target_id, _)) = target {
        while let Some(stored) = snapshot_at(&mut *connection, target_id, last_check).await? {
            if new.last_check_defaulted {
                // The server chose this time, not the client, so it is no retry key: take the
                // next free millisecond.
                last_check = last_check.plus_millis(1);
            } else if same_content(&stored, new) {
                return Ok(Ok(Recorded {
                    snapshot: stored,
                    replayed: true,
                }));
            } else {
                return Ok(Err(StoreError::Conflict(format!(
                    "{}/{} already has a different snapshot (id {}) at last_check {}; \
                     a retry must repeat the original content",
                    new.repo, new.server, stored.id, stored.last_check
                ))));
            }
        }
    }

    let fileset_id = fileset_id(&mut *connection, &new.files).await?;
    let sync_status = new.sync_status.code();
    let (previous, next) = match target {
        Some((target_id, _)) => (
            neighbour(&mut *connection, target_id, last_check, Order::Desc).await?,
            neighbour(&mut *connection, target_id, last_check, Order::Asc).await?,
        ),
        None => (None, None),
    };
    let inserted = Neighbour {
        id: 0,
        sync_status,
        fileset_id,
        change: 0,
    };
    let change = inserted.change_after(previous.map(|p| (p.sync_status, p.fileset_id)));

    let target_id = match target {
        Some((target_id, _)) => target_id,
        None => sqlx::query(
            "insert into targets (repo, server, latest_id, status_since) values (?, ?, 0, ?)",
        )
        .bind(&new.repo)
        .bind(&new.server)
        .bind(last_check.as_millis())
        .execute(&mut *connection)
        .await?
        .last_insert_rowid(),
    };
    let id = sqlx::query(
        "insert into snapshots (target_id, last_check, received_at, sync_status, drift_count, \
         fileset_id, change, stale_after, revision, run_url, message) \
         values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(target_id)
    .bind(last_check.as_millis())
    .bind(new.received_at.as_millis())
    .bind(sync_status)
    .bind(new.drift_count)
    .bind(fileset_id)
    .bind(change)
    .bind(new.stale_after_seconds)
    .bind(&new.revision)
    .bind(&new.run_url)
    .bind(&new.message)
    .execute(&mut *connection)
    .await?
    .last_insert_rowid();

    match next {
        None => {
            // The newest check of its target (the usual case).
            let status_since = match target {
                Some((_, since)) if change & STATUS_CHANGED == 0 => since,
                _ => last_check.as_millis(),
            };
            sqlx::query("update targets set latest_id = ?, status_since = ? where id = ?")
                .bind(id)
                .bind(status_since)
                .bind(target_id)
                .execute(&mut *connection)
                .await?;
        }
        Some(next) => {
            // A late retry of an older check: it becomes history, and the transition flags of the
            // snapshot after it, and so possibly status_since, are recomputed.
            let next_change = next.change_after(Some((sync_status, fileset_id)));
            if next_change != next.change {
                sqlx::query("update snapshots set change = ? where id = ?")
                    .bind(next_change)
                    .bind(next.id)
                    .execute(&mut *connection)
                    .await?;
            }
            // Served by snapshots_target_changes.
            sqlx::query(
                "update targets set status_since = (select last_check from snapshots \
                 where target_id = ?1 and change != 0 and (change & 1) = 1 \
                 order by last_check desc limit 1) where id = ?1",
            )
            .bind(target_id)
            .execute(&mut *connection)
            .await?;
        }
    }

    let files = new
        .files
        .iter()
        .map(|name| FileEntry { name: name.clone() })
        .collect();
    Ok(Ok(Recorded {
        snapshot: Snapshot {
            id,
            repo: new.repo.clone(),
            server: new.server.clone(),
            sync_status: new.sync_status,
            drift_count: new.drift_count,
            files,
            files_text: files_text(new.files.iter().map(String::as_str)),
            last_check,
            received_at: new.received_at,
            revision: new.revision.clone(),
            run_url: new.run_url.clone(),
            message: new.message.clone(),
            stale_after_seconds: new.stale_after_seconds,
        },
        replayed: false,
    }))
}

fn same_content(stored: &Snapshot, new: &NewSnapshot) -> bool {
    stored.sync_status == new.sync_status
        && stored.drift_count == new.drift_count
        && stored.file_names().eq(new.files.iter().map(String::as_str))
        && stored.revision == new.revision
        && stored.run_url == new.run_url
        && stored.message == new.message
        && stored.stale_after_seconds == new.stale_after_seconds
}

async fn snapshot_at(
    executor: impl SqliteExecutor<'_>,
    target_id: i64,
    last_check: Timestamp,
) -> Result<Option<Snapshot>, StoreError> {
    let sql = format!(
        "{SNAPSHOT_COLUMNS} from snapshots s join targets t on t.id = s.target_id \
         left join filesets f on f.id = s.fileset_id where s.target_id = ? and s.last_check = ?"
    );
    let row = sqlx::query(&sql)
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
    let sql = match direction {
        Order::Desc => {
            "select id, sync_status, fileset_id, change from snapshots \
             where target_id = ? and last_check < ? order by last_check desc limit 1"
        }
        Order::Asc => {
            "select id, sync_status, fileset_id, change from snapshots \
             where target_id = ? and last_check > ? order by last_check asc limit 1"
        }
    };
    let row: Option<(i64, i64, Option<i64>, i64)> = sqlx::query_as(sql)
        .bind(target_id)
        .bind(last_check.as_millis())
        .fetch_optional(executor)
        .await?;
    Ok(row.map(|(id, sync_status, fileset_id, change)| Neighbour {
        id,
        sync_status,
        fileset_id,
        change,
    }))
}

/// The id of this set of files, stored once; `None` for no files.
async fn fileset_id(
    connection: &mut SqliteConnection,
    files: &[String],
) -> Result<Option<i64>, StoreError> {
    if files.is_empty() {
        return Ok(None);
    }
    let json =
        serde_json::to_string(files).map_err(|error| StoreError::Database(error.to_string()))?;
    let digest = Sha256::digest(json.as_bytes()).to_vec();
    let existing: Option<i64> = sqlx::query_scalar("select id from filesets where digest = ?")
        .bind(&digest)
        .fetch_optional(&mut *connection)
        .await?;
    if let Some(id) = existing {
        return Ok(Some(id));
    }
    let id = sqlx::query("insert into filesets (digest, files) values (?, ?)")
        .bind(&digest)
        .bind(&json)
        .execute(&mut *connection)
        .await?
        .last_insert_rowid();
    Ok(Some(id))
}

fn snapshot_from_row(row: &SqliteRow) -> Result<Snapshot, sqlx::Error> {
    let names: Vec<String> = match row.try_get::<Option<String>, _>("files")? {
        None => Vec::new(),
        Some(json) => serde_json::from_str(&json).map_err(|error| sqlx::Error::ColumnDecode {
            index: "files".to_owned(),
            source: Box::new(error),
        })?,
    };
    let code: i64 = row.try_get("sync_status")?;
    let sync_status = SyncStatus::from_code(code).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "sync_status".to_owned(),
        source: format!("unknown sync_status code {code}").into(),
    })?;
    Ok(Snapshot {
        id: row.try_get("id")?,
        repo: row.try_get("repo")?,
        server: row.try_get("server")?,
        sync_status,
        drift_count: row.try_get("drift_count")?,
        files_text: files_text(names.iter().map(String::as_str)),
        files: names.into_iter().map(|name| FileEntry { name }).collect(),
        last_check: Timestamp::from_millis(row.try_get("last_check")?),
        received_at: Timestamp::from_millis(row.try_get("received_at")?),
        revision: row.try_get("revision")?,
        run_url: row.try_get("run_url")?,
        message: row.try_get("message")?,
        stale_after_seconds: row.try_get("stale_after")?,
    })
}
