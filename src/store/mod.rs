//! The storage seam: the domain verbs the API needs, one implementation per database.

mod audit;
mod episode_table;
mod episodes;
mod lifecycle;
mod migrate;
mod notify;
mod pipeline;
mod postgres;
mod rollups;
mod rules;
mod sql;
mod sqlite;
mod statements;
mod stats;
mod url;

use std::sync::Arc;

use futures_util::stream::BoxStream;

use crate::chain::{Checkpoint, Verification};
use crate::model::lifecycle::{Ack, EventOutcome, NewEvent};
use crate::model::{Cursor, HistoryFilter, NewSnapshot, Order, Snapshot, StatusFilter};
use crate::stats::{StatsInput, StatsRequest};
use crate::timestamp::Timestamp;
use pipeline::{Outcome, Placed, Record};

pub use episodes::EpisodePath;
pub use lifecycle::Activity;
pub use migrate::{MigrateError, MigrateReport, migrate_to};
pub use notify::{
    DeliveryRow, LeasedDelivery, NewDelivery, OpenEpisode, PendingBacklog, Transition,
};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use statements::{ChainRecord, EvidenceTarget, StatementRow};
pub use stats::StatsPath;
pub use url::{DatabaseKind, DatabaseUrl, redact_url};

use crate::config::Problem;

/// How long [`Store::ping`] waits for the database.
pub const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(900);

/// Why a storage call failed, in the terms the API maps to status codes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The same target already has a different snapshot at this `last_check`.
    #[error("{0}")]
    Conflict(String),
    /// The record names something that does not exist (a target, an acknowledgement, a silence).
    #[error("{0}")]
    NotFound(String),
    /// The database cannot be reached or written right now (pool timeout, busy, read-only, full).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The store was closed for shutdown.
    #[error("the store is closed")]
    Closed,
    /// Anything else: a bug or a corrupt database. Keeps the driver's error, and with it the
    /// SQLSTATE or SQLite result code ([`StoreError::sqlstate`]).
    #[error("database error: {0}")]
    Database(#[source] Arc<sqlx::Error>),
}

impl StoreError {
    /// A stored value the code cannot read back: a corrupt database or a bug.
    pub fn corrupt(what: impl Into<String>) -> Self {
        Self::Database(Arc::new(sqlx::Error::Decode(what.into().into())))
    }

    /// The database's own error code (PostgreSQL's SQLSTATE, SQLite's result code), if the
    /// database reported the error.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            Self::Database(error) => error
                .as_database_error()
                .and_then(|error| error.code())
                .map(|code| code.into_owned()),
            _ => None,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::error::ErrorKind;
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(error.to_string())
            }
            sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => {
                Self::Conflict(db.message().to_owned())
            }
            sqlx::Error::Database(db)
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some() =>
            {
                if db.code().as_deref().is_some_and(is_transient_postgres_code) {
                    Self::Unavailable(error.to_string())
                } else {
                    Self::Database(Arc::new(error))
                }
            }
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL,
                // SQLITE_CANTOPEN (primary result codes; extended codes keep them in the low byte).
                Some(code) if is_transient_sqlite_code(code) => {
                    Self::Unavailable(error.to_string())
                }
                _ => Self::Database(Arc::new(error)),
            },
            _ => Self::Database(Arc::new(error)),
        }
    }
}

/// Connection exceptions (08), insufficient resources (53), operator intervention (57), a
/// read-only transaction (25006: a replica or a read-only switch-over), a lock wait past
/// `lock_timeout` (55P03), and the transaction rollbacks (40: serialization failure, deadlock)
/// that outlived the writer's retries.
fn is_transient_postgres_code(code: &str) -> bool {
    ["08", "53", "57", "40"]
        .iter()
        .any(|class| code.starts_with(class))
        || matches!(code, "25006" | "55P03")
}

fn is_transient_sqlite_code(code: &str) -> bool {
    code.parse::<i64>()
        .is_ok_and(|code| matches!(code & 0xff, 5 | 6 | 8 | 10 | 13 | 14))
}

/// What `record` did with a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub snapshot: Snapshot,
    /// True when an identical snapshot was already stored (a retry) and nothing new was written.
    pub replayed: bool,
}

/// The latest snapshot of one target and when its current run of `sync_status` began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    pub snapshot: Snapshot,
    pub status_since: Timestamp,
    /// The acknowledgement in force (made and not ended); whether it applies depends on the
    /// clock and the files (`Ack::applies`).
    pub ack: Option<Arc<Ack>>,
    /// When the target was retired; `None` while it is active.
    pub retired_at: Option<Timestamp>,
}

/// What a retention run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Snapshots with `last_check` before this were candidates.
    pub cutoff: Timestamp,
    /// Snapshots removed.
    pub removed: i64,
    /// Chain checkpoints written or widened.
    pub checkpoints: i64,
    /// Database pages handed back to the file system.
    pub released_pages: i64,
    /// True when nothing was done because another replica was running a pass (PostgreSQL).
    pub elsewhere: bool,
}

/// The extent of the history among some targets.
#[derive(Debug, Clone, Copy)]
struct HistorySpan {
    earliest: i64,
    latest: i64,
    snapshots: i64,
}

impl HistorySpan {
    /// From `sql::history_span`'s row; `None` when the targets have no history.
    fn from_row(
        (earliest, latest, snapshots): (Option<i64>, Option<i64>, Option<i64>),
    ) -> Option<Self> {
        earliest.zip(latest).map(|(earliest, latest)| Self {
            earliest,
            latest,
            snapshots: snapshots.unwrap_or(1),
        })
    }
}

/// A version of every target's latest state ([`Store::status_version`]): equal versions, equal
/// answers from [`Store::latest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusVersion {
    /// SQLite: how many times this process's writer has published; it is the only writer.
    Published(u64),
    /// PostgreSQL: the transaction snapshot (`pg_current_snapshot()`), which every commit to
    /// the cluster changes, whichever replica (or other client) made it.
    Snapshot(String),
}

/// The one store the service runs on.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Store {
    /// Opens (creating and migrating when needed) the database named by `url`.
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        Self::open(url, true).await
    }

    /// Like `connect`, but commits are not fsync'd: a crash may lose or corrupt recent writes.
    /// Only for building throwaway databases fast (the benchmark's 10M-row history); the file it
    /// writes is laid out exactly as a durable one. The server never uses it.
    pub async fn connect_unsynchronized(url: &str) -> Result<Self, ConnectError> {
        Self::open(url, false).await
    }

    async fn open(url: &str, durable: bool) -> Result<Self, ConnectError> {
        let url = DatabaseUrl::parse_writable(url)?;
        match url.kind() {
            DatabaseKind::Sqlite { path } => Ok(Self::Sqlite(
                SqliteStore::open(url.as_str(), path, durable).await?,
            )),
            DatabaseKind::Postgres => Ok(Self::Postgres(
                PostgresStore::open(url.as_str(), durable).await?,
            )),
        }
    }

    /// Appends a snapshot, durably, or returns the identical one already stored.
    pub async fn record(&self, snapshot: NewSnapshot) -> Result<Recorded, StoreError> {
        self.import(vec![snapshot])
            .await?
            .pop()
            .unwrap_or(Err(StoreError::Closed))
    }

    /// Records many snapshots in order, with the same rules as `record`, as few commits as
    /// possible: for bulk loads. The outer error means the store is closed.
    pub async fn import(
        &self,
        snapshots: Vec<NewSnapshot>,
    ) -> Result<Vec<Result<Recorded, StoreError>>, StoreError> {
        let outcomes = self
            .submit(snapshots.into_iter().map(Record::Snapshot).collect())
            .await?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome? {
                Placed::Snapshot(recorded) => Ok(recorded),
                Placed::Event(_) => Err(StoreError::corrupt("a snapshot was placed as an event")),
            })
            .collect())
    }

    /// Records a drift-lifecycle event on its chain (an acknowledgement, its end, a silence, its
    /// end, a retirement), through the same writers as snapshots.
    pub async fn record_event(&self, event: NewEvent) -> Result<EventOutcome, StoreError> {
        match self.submit(vec![Record::Event(event)]).await?.pop() {
            Some(Ok(Placed::Event(outcome))) => Ok(outcome),
            Some(Ok(Placed::Snapshot(_))) => {
                Err(StoreError::corrupt("an event was placed as a snapshot"))
            }
            Some(Err(error)) => Err(error),
            None => Err(StoreError::Closed),
        }
    }

    async fn submit(&self, records: Vec<Record>) -> Result<Vec<Outcome>, StoreError> {
        match self {
            Self::Sqlite(store) => store.submit(records).await,
            Self::Postgres(store) => store.submit(records).await,
        }
    }

    /// What [`Store::latest`] answers has not changed while this stays the same; read it before
    /// `latest`, whose answer is then at least as new. `/status.json`'s cache is keyed by it.
    pub async fn status_version(&self) -> Result<StatusVersion, StoreError> {
        match self {
            Self::Sqlite(store) => Ok(StatusVersion::Published(store.published_version())),
            Self::Postgres(store) => store.status_version().await,
        }
    }

    /// The latest snapshot of every target matching the filter's repo and server, sorted by repo
    /// then server. State filtering is left to the caller, since staleness depends on the clock.
    pub async fn latest(&self, filter: &StatusFilter) -> Result<Vec<Latest>, StoreError> {
        match self {
            Self::Sqlite(store) => store.latest(filter).await,
            Self::Postgres(store) => store.latest(filter).await,
        }
    }

    /// One page of history: at most `limit` rows after the filter's cursor. For one target, its index is already in `(last_check, id)` order. Across
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

    /// Earliest and latest `last_check`, and how many snapshots, among the filter's targets.
    async fn history_span(
        &self,
        filter: &HistoryFilter,
    ) -> Result<Option<HistorySpan>, StoreError> {
        match self {
            Self::Sqlite(store) => store.history_span(filter).await,
            Self::Postgres(store) => store.history_span(filter).await,
        }
    }

    /// The filtered rows, optionally only those with `last_check` in `[start, end)`, in page order.
    async fn history_window(
        &self,
        filter: &HistoryFilter,
        window: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<Snapshot>, StoreError> {
        match self {
            Self::Sqlite(store) => store.history_window(filter, window, limit).await,
            Self::Postgres(store) => store.history_window(filter, window, limit).await,
        }
    }

    /// The whole selection, read page by page so memory stays flat however long it is.
    pub fn history_stream(
        &self,
        filter: HistoryFilter,
        limit: Option<usize>,
    ) -> BoxStream<'static, Result<Snapshot, StoreError>> {
        const PAGE: usize = 1000;
        let store = self.clone();
        let pages = futures_util::stream::try_unfold(
            (filter, limit.unwrap_or(usize::MAX), false),
            move |(mut filter, remaining, done)| {
                let store = store.clone();
                async move {
                    if done || remaining == 0 {
                        return Ok::<_, StoreError>(None);
                    }
                    let page = store.history_page(&filter, PAGE.min(remaining)).await?;
                    let done = page.len() < PAGE.min(remaining);
                    filter.after = page.last().map(Cursor::after);
                    let remaining = remaining - page.len();
                    Ok(Some((
                        futures_util::stream::iter(page.into_iter().map(Ok)),
                        (filter, remaining, done),
                    )))
                }
            },
        );
        Box::pin(futures_util::TryStreamExt::try_flatten(pages))
    }

    /// Recomputes the integrity chain of every target (docs/audit.md).
    pub async fn verify(&self) -> Result<Verification, StoreError> {
        match self {
            Self::Sqlite(store) => store.verify().await,
            Self::Postgres(store) => store.verify().await,
        }
    }

    /// The gaps retention cut into the chains, for re-checking an export (docs/audit.md).
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        match self {
            Self::Sqlite(store) => store.checkpoints().await,
            Self::Postgres(store) => store.checkpoints().await,
        }
    }

    /// Verifies the database at `url` without starting a server or changing the file.
    pub async fn verify_database(url: &str) -> Result<Verification, ConnectError> {
        let url = DatabaseUrl::parse(url)?;
        match url.kind() {
            DatabaseKind::Sqlite { path } => SqliteStore::verify_file(url.as_str(), path).await,
            DatabaseKind::Postgres => PostgresStore::verify_database(url.as_str()).await,
        }
    }

    /// What `/api/stats` needs of the matching targets over the window, judged at `now`: from
    /// the daily rollups where `path` allows and they are complete, else raw snapshots.
    pub async fn stats_input(
        &self,
        request: &StatsRequest,
        now: Timestamp,
        path: StatsPath,
    ) -> Result<StatsInput, StoreError> {
        match self {
            Self::Sqlite(store) => store.stats_input(request, now, path).await,
            Self::Postgres(store) => store.stats_input(request, now, path).await,
        }
    }

    /// Keeps the daily rollups behind `/api/stats` for the server's default stale-after
    /// (seconds): when they were computed for another (or never), resets them and rebuilds them
    /// from raw snapshots, meanwhile `/api/stats` reads raw. Returns once they are complete; run
    /// it in the background.
    pub async fn keep_rollups(&self, stale_after: i64) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.keep_rollups(stale_after).await,
            Self::Postgres(store) => store.keep_rollups(stale_after).await,
        }
    }

    /// Removes snapshots with `last_check` before `cutoff`, except every transition, each
    /// target's last snapshot before the cutoff and its newest by arrival, and records chain
    /// checkpoints so verification still passes. Runs in bounded steps between writes.
    pub async fn prune(&self, cutoff: Timestamp) -> Result<PruneReport, StoreError> {
        match self {
            Self::Sqlite(store) => store.prune(cutoff).await,
            Self::Postgres(store) => store.prune(cutoff).await,
        }
    }

    /// Whether the database answers a query within [`PING_TIMEOUT`]: a readiness probe gets its
    /// 503 before its own timeout (Kubernetes waits 1 s by default) instead of waiting out the
    /// pool's 5 s while the database is down.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let ping = async {
            match self {
                Self::Sqlite(store) => store.ping().await,
                Self::Postgres(store) => store.ping().await,
            }
        };
        tokio::time::timeout(PING_TIMEOUT, ping)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "the database did not answer within {PING_TIMEOUT:?}"
                )))
            })
    }

    /// Finishes queued writes and closes the database.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(store) => store.close().await,
            Self::Postgres(store) => store.close().await,
        }
    }

    /// The chained events `selection` picks, by id, read page by page so memory stays flat
    /// (`GET /api/chain/events`).
    pub fn chain_events(
        &self,
        selection: crate::chain::EventSelection,
    ) -> BoxStream<'static, Result<crate::chain::ChainEvent, StoreError>> {
        audit::chain_events(self.clone(), selection)
    }

    /// One page of `/api/episodes`: at most `limit` of the episodes the filter selects, in its
    /// order after its cursor, judged by `clock`, and whether more follow. Reads around the
    /// episodes it returns, not the history before or after them (src/store/episodes.rs), in
    /// one read transaction.
    pub async fn episodes_page(
        &self,
        filter: &crate::model::EpisodeFilter,
        clock: crate::model::EpisodeClock,
        limit: usize,
    ) -> Result<(Vec<crate::model::Episode>, bool), StoreError> {
        self.episodes_page_by(EpisodePath::Materialised, filter, clock, limit)
            .await
    }

    /// [`Store::episodes_page`] by the path given: derived from the snapshots, or from the
    /// materialised episodes when they are complete for the clock's default stale-after
    /// (src/store/episode_table.rs). Both give the same answer; tests compare them.
    pub async fn episodes_page_by(
        &self,
        path: EpisodePath,
        filter: &crate::model::EpisodeFilter,
        clock: crate::model::EpisodeClock,
        limit: usize,
    ) -> Result<(Vec<crate::model::Episode>, bool), StoreError> {
        match self {
            Self::Sqlite(store) => store.episodes_page(filter, clock, limit, path).await,
            Self::Postgres(store) => store.episodes_page(filter, clock, limit, path).await,
        }
    }

    /// Every episode the filter selects (at most `limit`), read page by page, so memory stays
    /// flat however long the selection is. Every page is judged by the same `clock`.
    pub fn episodes_stream(
        &self,
        filter: crate::model::EpisodeFilter,
        clock: crate::model::EpisodeClock,
        limit: Option<usize>,
    ) -> BoxStream<'static, Result<crate::model::Episode, StoreError>> {
        const PAGE: usize = 1000;
        let store = self.clone();
        let pages = futures_util::stream::try_unfold(
            (filter, limit.unwrap_or(usize::MAX), false),
            move |(mut filter, remaining, done)| {
                let store = store.clone();
                async move {
                    if done || remaining == 0 {
                        return Ok::<_, StoreError>(None);
                    }
                    let (page, more) = store
                        .episodes_page(&filter, clock, PAGE.min(remaining))
                        .await?;
                    let done = !more;
                    filter.after = page.last().map(crate::model::Episode::cursor);
                    let remaining = remaining - page.len();
                    Ok(Some((
                        futures_util::stream::iter(page.into_iter().map(Ok)),
                        (filter, remaining, done),
                    )))
                }
            },
        );
        Box::pin(futures_util::TryStreamExt::try_flatten(pages))
    }
}

/// Why the store could not be opened at start. The message leaves out the setting and the URL:
/// the caller knows which setting it came from and renders the line (`config::bad_setting`).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL itself is refused (`url`), or the database at it cannot be reached in time: a
    /// cause and, where it is obvious, the fix.
    #[error("{0}")]
    Refused(#[from] Problem),
    /// The database at the URL cannot be reached or opened: what the driver's error means here,
    /// with the error kept as the source.
    #[error("{problem}")]
    Unreachable {
        problem: Problem,
        #[source]
        source: sqlx::Error,
    },
    /// The database opened but is not one this command can use.
    #[error("{0}")]
    Unusable(String),
    #[error("cannot open the database: {0}")]
    Open(#[from] sqlx::Error),
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot load the targets: {0}")]
    Load(String),
    #[error("cannot read the database: {0}")]
    Read(#[from] StoreError),
}
