//! The SQLite store: WAL with `synchronous=FULL`, one writer task that group-commits every waiting
//! snapshot with one fsync (`writer`), and a small pool of readers for history pages.

mod audit;
mod stats;
mod verify;
mod writer;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Sqlite};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{ConnectError, HistorySpan, Latest, PruneReport, StoreError};
use crate::chain::{Checkpoint, Verification};
use crate::config::Problem;
use crate::model::{HistoryFilter, Snapshot, StatusFilter};
use crate::stats::{StatsInput, StatsRequest};
use crate::store::StatsPath;
use crate::store::pipeline::{self, QUEUE_CAPACITY};
use crate::store::pipeline::{Outcome, Record};
use crate::timestamp::Timestamp;
use writer::{Message, SharedLatest, Writer};
/// Readers open at once.
const READERS: u32 = 4;
/// WAL pages past which one of the writer's own commits checkpoints: only a backstop. Normally
/// `checkpoint_periodically` keeps the WAL far shorter, off the writer's path: with SQLite's
/// default of 1,000 pages, a commit in every few copied the WAL into the database file and
/// fsync'd it while every caller waited.
const WRITER_AUTOCHECKPOINT_PAGES: &str = "10000";
/// How often a reader connection checkpoints the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

use crate::store::sql::{self, SNAPSHOT_COLUMNS, snapshot_from_row};

/// Handle to an open SQLite database; clones share it.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The database file: verification opens its own read-only connection to it.
    path: PathBuf,
    readers: SqlitePool,
    latest: SharedLatest,
    jobs: mpsc::Sender<Message>,
    shutdown: Arc<Notify>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl SqliteStore {
    /// Opens the database file at `path` (what `url` names, as `DatabaseUrl` found), creating
    /// and migrating it when needed, and starts the writer. `durable: false` skips the fsync at
    /// commit, for throwaway databases only.
    pub async fn open(url: &str, path: &Path, durable: bool) -> Result<Self, ConnectError> {
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
            .busy_timeout(Duration::from_secs(5));

        // Every INSERT size up to MAX_STATEMENT_ROWS, for snapshots and targets, stays prepared.
        let writer_options = options
            .clone()
            // Takes effect when the file is created: retention can then hand pages back. Only
            // the writer sets it: on an existing file the pragma is a write transaction (it
            // rewrites the header's incremental-vacuum flag), which would make every new reader
            // connection fail while the disk is full or the database locked.
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            .statement_cache_capacity(4 * writer::MAX_STATEMENT_ROWS)
            .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES);
        let mut writer = SqliteConnection::connect_with(&writer_options)
            .await
            .map_err(|error| open_failure(path, Access::Create, error))?;
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
        tokio::spawn(checkpoint_periodically(readers.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                readers,
                latest,
                jobs,
                shutdown,
                writer: Mutex::new(Some(task)),
            }),
        })
    }

    /// Queues records for the writer and waits for their outcomes.
    pub async fn submit(&self, records: Vec<Record>) -> Result<Vec<Outcome>, StoreError> {
        pipeline::submit(&self.inner.jobs, records, Message::Write).await
    }

    /// Served from the writer's published state: no query, sorted by (repo, server).
    pub async fn latest(&self, filter: &StatusFilter) -> Result<Vec<Latest>, StoreError> {
        let published = self.inner.latest.read();
        Ok(published
            .iter()
            .filter(|((repo, server), _)| {
                filter.repo.as_ref().is_none_or(|wanted| wanted == repo)
                    && filter.server.as_ref().is_none_or(|wanted| wanted == server)
            })
            .map(|(_, latest)| Latest::clone(latest))
            .collect())
    }

    /// How many times the writer has published since the store opened: `latest` answers the same
    /// while this stays the same. Read it first.
    pub fn published_version(&self) -> u64 {
        self.inner.latest.version()
    }

    /// Earliest and latest `last_check`, and how many snapshots, among the filter's targets: one
    /// index seek per target.
    pub(super) async fn history_span(
        &self,
        filter: &HistoryFilter,
    ) -> Result<Option<HistorySpan>, StoreError> {
        let span = sql::history_span::<Sqlite>(filter)
            .build_query_as()
            .fetch_one(&self.inner.readers)
            .await?;
        Ok(HistorySpan::from_row(span))
    }

    /// The filtered rows, optionally only those with `last_check` in `[start, end)`, in page
    /// order. SQLite finds the targets first, then walks each one's snapshots_target_time (or
    /// snapshots_target_changes) over the window.
    pub(super) async fn history_window(
        &self,
        filter: &HistoryFilter,
        window: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let rows = sql::history_window::<Sqlite>(filter, window, limit)
            .build()
            .fetch_all(&self.inner.readers)
            .await?;
        rows.iter()
            .map(|row| snapshot_from_row(row).map_err(StoreError::from))
            .collect()
    }

    pub async fn verify(&self) -> Result<Verification, StoreError> {
        verify::verify(self.inner.path.clone()).await
    }

    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let mut reader = self.inner.readers.acquire().await?;
        audit::checkpoints(&mut reader).await
    }

    /// Verifies a database file through one read-only connection: no migration, no writer.
    pub async fn verify_file(url: &str, path: &Path) -> Result<Verification, ConnectError> {
        let options = SqliteConnectOptions::from_str(url)?
            .read_only(true)
            .busy_timeout(Duration::from_secs(5))
            // Its one statement reads the whole history: a slow-statement warning says nothing.
            .disable_statement_logging();
        let mut connection = SqliteConnection::connect_with(&options)
            .await
            .map_err(|error| open_failure(path, Access::Read, error))?;
        let pending: Option<String> = sqlx::query_scalar("select task from pending_maintenance")
            .fetch_optional(&mut connection)
            .await
            .map_err(|error| {
                ConnectError::Unusable(format!(
                    "not a gitops-status database with the integrity chain (start the server on \
                     it once to migrate it): {error}"
                ))
            })?;
        if pending.is_some() {
            return Err(ConnectError::Unusable(
                "the history stored before the integrity chain is not hashed yet; start the \
                 server on it once"
                    .to_owned(),
            ));
        }
        let _ = connection.close().await;
        Ok(verify::verify(path.to_path_buf()).await?)
    }

    pub async fn stats_input(
        &self,
        request: &StatsRequest,
        now: Timestamp,
        path: StatsPath,
    ) -> Result<StatsInput, StoreError> {
        let mut reader = self.inner.readers.acquire().await?;
        stats::input(&mut reader, request, now, path).await
    }

    /// Keeps the daily rollups for `stale_after`, rebuilding them in the writer between batches
    /// when they are not complete for it; returns once they are.
    pub async fn keep_rollups(&self, stale_after: i64) -> Result<(), StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.inner
            .jobs
            .send(Message::KeepRollups { stale_after, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Closed)?
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

/// Copies committed WAL frames into the database file every `CHECKPOINT_EVERY`, from a reader
/// connection and without waiting on anyone (`passive`), until the readers close.
async fn checkpoint_periodically(readers: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        if readers.is_closed() {
            break;
        }
        if let Err(error) = sqlx::query("pragma wal_checkpoint(passive)")
            .execute(&readers)
            .await
        {
            if readers.is_closed() {
                break;
            }
            tracing::debug!(%error, "a WAL checkpoint failed; the next one retries");
        }
    }
}

/// What a command needs of an SQLite file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::store) enum Access {
    /// Read it; it must exist (`verify`, `migrate-to`'s source).
    Read,
    /// Read and write it, creating it when missing (`serve`).
    Create,
}

/// Why SQLite could not open `path`, in the file system's words: SQLite itself says only
/// "(code: 14) unable to open database file", whatever the reason.
pub(in crate::store) fn open_failure(
    path: &Path,
    access: Access,
    error: sqlx::Error,
) -> ConnectError {
    let shown = shown_path(path);
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let problem = match (path.try_exists(), access) {
        (Ok(true), _) if path.is_dir() => Problem::new(
            format!("{shown} is a directory"),
            "name a file in it, e.g. sqlite:///that/directory/gitops-status.db",
        ),
        (Ok(false), Access::Read) => Problem::new(
            format!("the file {shown} does not exist"),
            "check the path; this command never creates a database",
        ),
        (Ok(false), Access::Create) if !directory.is_dir() => Problem::new(
            format!("the directory {} does not exist", shown_path(directory)),
            "create the directory first, or fix the path",
        ),
        (Ok(false), Access::Create) => match writable_directory(directory) {
            Err(why) => Problem::new(
                format!(
                    "cannot create {shown}: the directory {} is not writable ({why})",
                    shown_path(directory)
                ),
                "make it writable for the server's user, or choose another directory",
            ),
            Ok(()) => Problem::without_hint(format!("cannot create {shown}: {error}")),
        },
        (Ok(true), Access::Create) => {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
            {
                Err(why) => Problem::new(
                    format!("the file {shown} is not writable ({why})"),
                    "make it writable for the server's user",
                ),
                Ok(_) => match writable_directory(directory) {
                    Err(why) => Problem::new(
                        format!(
                            "the directory {} is not writable ({why}), and SQLite keeps its \
                             write-ahead log beside {shown}",
                            shown_path(directory)
                        ),
                        "make the directory writable for the server's user",
                    ),
                    Ok(()) => Problem::without_hint(format!("cannot open {shown}: {error}")),
                },
            }
        }
        (Ok(true), Access::Read) => match std::fs::File::open(path) {
            Err(why) => Problem::new(
                format!("the file {shown} is not readable ({why})"),
                "make it readable for this user",
            ),
            Ok(_) => Problem::without_hint(format!("cannot open {shown}: {error}")),
        },
        (Err(why), _) => Problem::without_hint(format!("cannot reach {shown} ({why}): {error}")),
    };
    ConnectError::Unreachable {
        problem,
        source: error,
    }
}

/// The path made absolute, so a relative one says which working directory it was taken in.
fn shown_path(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Creates and removes a file in `directory`: only the attempt tells what this user may do
/// there (root ignores permission bits; a read-only mount refuses everyone).
fn writable_directory(directory: &Path) -> std::io::Result<()> {
    let probe = directory.join(format!(".gitops-status-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => std::fs::remove_file(&probe),
        Err(error) if error.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

/// `/api/episodes` (src/store/episodes.rs).
impl SqliteStore {
    /// One page of episodes and whether more follow, read in one read transaction.
    pub async fn episodes_page(
        &self,
        filter: &crate::model::EpisodeFilter,
        clock: crate::model::EpisodeClock,
        limit: usize,
        path: super::EpisodePath,
    ) -> Result<(Vec<crate::model::Episode>, bool), StoreError> {
        // A transaction object, not `begin` and `rollback` statements: a request dropped half
        // way must not hand its connection back to the pool still open.
        let mut transaction = self.inner.readers.begin().await?;
        let result = super::episodes::page(&mut *transaction, filter, clock, limit, path).await;
        transaction.rollback().await?;
        result
    }
}

impl SqliteStore {
    /// The read connections, for reads both stores share (`Store::acks` and the like).
    pub(super) fn readers(&self) -> &SqlitePool {
        &self.inner.readers
    }
}
