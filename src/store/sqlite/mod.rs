//! The SQLite store: WAL with `synchronous=FULL`, one writer task that group-commits every waiting
//! snapshot with one fsync (`writer`), and a small pool of readers for history pages.

mod audit;
mod stats;
mod writer;

use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row, Sqlite};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{ConnectError, Latest, PruneReport, Recorded, StoreError};
use crate::chain::{Checkpoint, Verification};
use crate::model::{
    FileEntry, HistoryFilter, NewSnapshot, Order, Snapshot, StatusFilter, SyncStatus, files_text,
};
use crate::stats::{StatsRequest, TargetHistory};
use crate::timestamp::Timestamp;
use writer::{Message, SharedLatest, WriteJob, Writer};

/// Jobs (one per POST, one per import call) waiting for the writer; when it is full, callers are
/// refused with `Unavailable` (503) rather than queued without bound.
const QUEUE_CAPACITY: usize = 8192;
/// Readers open at once.
const READERS: u32 = 4;

const SNAPSHOT_COLUMNS: &str = "select s.id, t.repo, t.server, s.sync_status, s.drift_count, \
     f.files, s.last_check, s.last_check + s.received_delay as received_at, s.revision, s.run_url, s.message, s.stale_after, s.hash";

/// Handle to an open SQLite database; clones share it.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    readers: SqlitePool,
    latest: SharedLatest,
    jobs: mpsc::Sender<Message>,
    shutdown: Arc<Notify>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The extent of the history among some targets.
#[derive(Debug, Clone, Copy)]
struct HistorySpan {
    earliest: i64,
    latest: i64,
    snapshots: i64,
}

fn push_target_filter(query: &mut QueryBuilder<'_, Sqlite>, filter: &HistoryFilter) {
    if let Some(repo) = &filter.repo {
        query.push(" and t.repo = ").push_bind(repo.clone());
    }
    if let Some(server) = &filter.server {
        query.push(" and t.server = ").push_bind(server.clone());
    }
}

impl SqliteStore {
    /// Opens the database file, creating and migrating it when needed, and starts the writer.
    /// `durable: false` skips the fsync at commit, for throwaway databases only.
    pub async fn open(url: &str, durable: bool) -> Result<Self, ConnectError> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(ConnectError::Unsupported(
                "in-memory SQLite would lose every snapshot on restart; name a file".to_owned(),
            ));
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Durable at commit: the WAL is fsync'd before the writer answers.
            .synchronous(if durable {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Off
            })
            .foreign_keys(true)
            // Takes effect when the file is created: retention can then hand pages back.
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            .busy_timeout(Duration::from_secs(5));

        // Every INSERT size up to MAX_STATEMENT_ROWS, for snapshots and targets, stays prepared.
        let writer_options = options
            .clone()
            .statement_cache_capacity(4 * writer::MAX_STATEMENT_ROWS);
        let mut writer = SqliteConnection::connect_with(&writer_options).await?;
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
        let latest = SharedLatest::default();
        let writer = Writer::open(writer, Arc::clone(&latest))
            .await
            .map_err(|error| ConnectError::Load(error.to_string()))?;
        let task = tokio::spawn(writer.run(queue, Arc::clone(&shutdown)));
        Ok(Self {
            inner: Arc::new(Inner {
                readers,
                latest,
                jobs,
                shutdown,
                writer: Mutex::new(Some(task)),
            }),
        })
    }

    pub async fn record(&self, snapshot: NewSnapshot) -> Result<Recorded, StoreError> {
        self.import(vec![snapshot])
            .await?
            .pop()
            .unwrap_or(Err(StoreError::Closed))
    }

    pub async fn import(
        &self,
        snapshots: Vec<NewSnapshot>,
    ) -> Result<Vec<Result<Recorded, StoreError>>, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.inner
            .jobs
            .try_send(Message::Write(WriteJob { snapshots, reply }))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => {
                    StoreError::Unavailable("the write queue is full".to_owned())
                }
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            })?;
        outcome.await.map_err(|_| StoreError::Closed)
    }

    /// Served from the writer's published state: no query, sorted by (repo, server).
    pub async fn latest(&self, filter: &StatusFilter) -> Result<Vec<Latest>, StoreError> {
        let published = self
            .inner
            .latest
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(published
            .iter()
            .filter(|((repo, server), _)| {
                filter.repo.as_ref().is_none_or(|wanted| wanted == repo)
                    && filter.server.as_ref().is_none_or(|wanted| wanted == server)
            })
            .map(|(_, latest)| Latest::clone(latest))
            .collect())
    }

    /// One page of history. For one target, its index is already in `(last_check, id)` order. Across
    /// targets there is no index on time alone (it would cost a fifth of the disk), so the page is
    /// gathered window by window: each window walks every matching target's index over a range of
    /// `last_check`, and windows widen fourfold until the page is full or the history ends. A page
    /// costs one index seek per matching target per window, however deep the history.
    pub async fn history_page(
        &self,
        filter: &HistoryFilter,
        limit: usize,
    ) -> Result<Vec<Snapshot>, StoreError> {
        if filter.repo.is_some() && filter.server.is_some() {
            return self.history_window(filter, None, limit).await;
        }
        let Some(span) = self.history_span(filter).await? else {
            return Ok(Vec::new());
        };
        let mut lower = filter
            .from
            .map_or(span.earliest, |from| from.as_millis().max(span.earliest));
        let mut upper = filter
            .to
            .map_or(span.latest + 1, |to| to.as_millis().min(span.latest + 1));
        match (filter.after, filter.order) {
            (Some(after), Order::Desc) => upper = upper.min(after.last_check.as_millis() + 1),
            (Some(after), Order::Asc) => lower = lower.max(after.last_check.as_millis()),
            (None, _) => {}
        }
        // A first window that would hold about twice the page if checks were evenly spread.
        let density = (span.latest - span.earliest + 1) as f64 / span.snapshots.max(1) as f64;
        let mut width = ((2 * limit) as f64 * density).clamp(1_000.0, 1e15) as i64;
        let mut rows = Vec::new();
        while rows.len() < limit && lower < upper {
            let window = match filter.order {
                Order::Desc => (upper.saturating_sub(width).max(lower), upper),
                Order::Asc => (lower, lower.saturating_add(width).min(upper)),
            };
            rows.extend(
                self.history_window(filter, Some(window), limit - rows.len())
                    .await?,
            );
            match filter.order {
                Order::Desc => upper = window.0,
                Order::Asc => lower = window.1,
            }
            width = width.saturating_mul(4);
        }
        Ok(rows)
    }

    /// Earliest and latest `last_check`, and how many snapshots, among the filter's targets: one
    /// index seek per target.
    async fn history_span(
        &self,
        filter: &HistoryFilter,
    ) -> Result<Option<HistorySpan>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(
            "select min((select min(last_check) from snapshots where target_id = t.id)), \
             max((select max(last_check) from snapshots where target_id = t.id)), \
             (select max(id) from snapshots) from targets t where 1 = 1",
        );
        push_target_filter(&mut query, filter);
        let (earliest, latest, snapshots): (Option<i64>, Option<i64>, Option<i64>) = query
            .build_query_as()
            .fetch_one(&self.inner.readers)
            .await?;
        Ok(earliest.zip(latest).map(|(earliest, latest)| HistorySpan {
            earliest,
            latest,
            snapshots: snapshots.unwrap_or(1),
        }))
    }

    /// The filtered rows, optionally only those with `last_check` in `[start, end)`, in page order.
    async fn history_window(
        &self,
        filter: &HistoryFilter,
        window: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(SNAPSHOT_COLUMNS);
        // Targets come first in the plan: SQLite finds them, then walks each one's
        // snapshots_target_time (or snapshots_target_changes) over the window.
        query.push(
            " from targets t join snapshots s on s.target_id = t.id \
             left join filesets f on f.id = s.fileset_id where 1 = 1",
        );
        push_target_filter(&mut query, filter);
        if let Some((start, end)) = window {
            query
                .push(" and s.last_check >= ")
                .push_bind(start)
                .push(" and s.last_check < ")
                .push_bind(end);
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

    pub async fn verify(&self) -> Result<Verification, StoreError> {
        let mut reader = self.inner.readers.acquire().await?;
        audit::verify(&mut reader).await
    }

    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let mut reader = self.inner.readers.acquire().await?;
        audit::checkpoints(&mut reader).await
    }

    /// Verifies a database file through one read-only connection: no migration, no writer.
    pub async fn verify_file(url: &str) -> Result<Verification, ConnectError> {
        let options = SqliteConnectOptions::from_str(url)?
            .read_only(true)
            .busy_timeout(Duration::from_secs(5))
            // Its one statement reads the whole history: a slow-statement warning says nothing.
            .disable_statement_logging();
        let mut connection = SqliteConnection::connect_with(&options).await?;
        let pending: Option<String> = sqlx::query_scalar("select task from pending_maintenance")
            .fetch_optional(&mut connection)
            .await
            .map_err(|error| {
                ConnectError::Unsupported(format!(
                    "not a gitops-status database with the integrity chain (start the server on \
                     it once to migrate it): {error}"
                ))
            })?;
        if pending.is_some() {
            return Err(ConnectError::Unsupported(
                "the history stored before the integrity chain is not hashed yet; start the \
                 server on it once"
                    .to_owned(),
            ));
        }
        let verification = audit::verify(&mut connection).await?;
        let _ = connection.close().await;
        Ok(verification)
    }

    pub async fn stats_histories(
        &self,
        request: &StatsRequest,
    ) -> Result<Vec<TargetHistory>, StoreError> {
        let mut reader = self.inner.readers.acquire().await?;
        stats::histories(&mut reader, request).await
    }

    pub async fn prune(&self, cutoff: Timestamp) -> Result<PruneReport, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.inner
            .jobs
            .send(Message::Prune { cutoff, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Closed)?
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
        hash: row
            .try_get::<Option<Vec<u8>>, _>("hash")?
            .map(hex::encode)
            .unwrap_or_default(),
    })
}
