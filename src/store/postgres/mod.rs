//! The PostgreSQL store, for several replicas on one database.
//!
//! Nothing is held in memory between requests: every replica reads the latest state from the
//! database, and each write batch is one transaction that locks its targets' rows (`FOR UPDATE`,
//! in (repo, server) order, so two replicas never deadlock) before reading what it builds on. So
//! writes to one target, from any replica, apply one after the other: latest-per-target,
//! `status_since` and the per-target hash chain stay right. A few writer tasks per replica
//! group-commit what waits in its queue (`writer`).

mod audit;
mod stats;
mod writer;

use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Postgres, Row};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{ConnectError, HistorySpan, Latest, PruneReport, StatusVersion, StoreError};
use crate::chain::{Checkpoint, Verification};
use crate::config::Problem;
use crate::model::lifecycle::Ack;
use crate::model::{HistoryFilter, Snapshot, StatusFilter};
use crate::stats::{StatsInput, StatsRequest};
use crate::store::StatsPath;
use crate::store::pipeline::{self, Outcome, QUEUE_CAPACITY, Record, WriteJob};
use crate::store::rollups::{self, RebuildTarget};
use crate::store::sql::{self, SNAPSHOT_COLUMNS, snapshot_from_row};
use crate::timestamp::Timestamp;
/// Writer tasks per replica: each holds one connection and commits one batch at a time, so
/// batches overlap their round trips and fsyncs.
const WRITERS: usize = 4;
/// Connections per replica: the writers, plus readers for pages, stats and verification.
const CONNECTIONS: u32 = 12;

/// Advisory lock keys (the first argument is this product's, the second the lock's).
const LOCK_SPACE: i32 = 0x6773_7300; // "gss\0"
/// Shared by every write transaction, exclusive for a retention page: a page sees no write in
/// flight, so no snapshot id below the walk's position can still appear.
const WRITE_LOCK: i32 = 1;
/// Held by the one replica running a retention pass.
const RETENTION_LOCK: i32 = 2;
/// Held by the writer that appends to the fleet chain (silences).
const FLEET_LOCK: i32 = 3;

/// Inserts snapshot rows given column by column: one array per column, in the table's order.
/// Used by the writers and by `migrate-to`.
pub(super) const INSERT_SNAPSHOTS_SQL: &str = "insert into snapshots (id, target_id, last_check, \
     received_delay, sync_status, drift_count, fileset_id, change, stale_after, revision, \
     run_url, message, hash) \
     select * from unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
     $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::text[], \
     $12::text[], $13::bytea[])";

/// Handle to a PostgreSQL database; clones share it.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    jobs: mpsc::Sender<WriteJob>,
    shutdown: watch::Sender<bool>,
    writers: Mutex<Vec<JoinHandle<()>>>,
}

impl PostgresStore {
    /// Connects, migrates (sqlx holds an advisory lock, so replicas starting together take turns)
    /// and starts the writers. `durable: false` turns off `synchronous_commit`, for throwaway
    /// databases only.
    pub async fn open(url: &str, durable: bool) -> Result<Self, ConnectError> {
        let mut options = PgConnectOptions::from_str(url)?
            .application_name("gitops-status-server")
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(5))
            // A lock held elsewhere (a migration, an operator's LOCK TABLE) fails the write with
            // 503 after 5 s, as SQLite's busy timeout does, instead of holding callers without
            // bound.
            .options([("lock_timeout", "5s")])
            // Plan every execution of a prepared statement with its arguments. A generic plan is
            // made once per connection and kept: one made while the tables were small scanned
            // all of `snapshots` for `id = any($1)` long after they had grown (bench/run.sh:
            // 4,496 against 6,929 snapshots/s). The statements are small; planning them is cheap.
            .options([("plan_cache_mode", "force_custom_plan")]);
        if !durable {
            options = options.options([("synchronous_commit", "off")]);
        }
        // The pool retries a failed connection until its acquire timeout and then says only
        // "pool timed out"; one connection first fails at once, with the reason.
        connect_once(&options).await?.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(CONNECTIONS)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;

        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let (shutdown, closing) = watch::channel(false);
        let filesets = writer::FilesetCache::default();
        let writers = (0..WRITERS)
            .map(|_| {
                tokio::spawn(
                    writer::Writer::new(pool.clone(), filesets.clone())
                        .run(Arc::clone(&queue), closing.clone()),
                )
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                jobs,
                shutdown,
                writers: Mutex::new(writers),
            }),
        })
    }

    /// Queues records for the writer and waits for their outcomes.
    pub async fn submit(&self, records: Vec<Record>) -> Result<Vec<Outcome>, StoreError> {
        pipeline::submit(&self.inner.jobs, records, std::convert::identity).await
    }

    /// The transaction snapshot now: which transactions have committed. Any commit, by any
    /// replica, changes it, and a later statement sees at least what it names; it also changes
    /// for commits that leave `latest` as it was (other tables, other databases of the
    /// cluster), which costs a rebuild, never a wrong answer. One round trip, no table read.
    pub async fn status_version(&self) -> Result<StatusVersion, StoreError> {
        let snapshot: String = sqlx::query_scalar("select pg_current_snapshot()::text")
            .fetch_one(&self.inner.pool)
            .await?;
        Ok(StatusVersion::Snapshot(snapshot))
    }

    /// Every matching target's latest snapshot, from the pointers the writers keep in `targets`:
    /// one primary-key lookup per target, whatever the length of history. The lateral subquery
    /// (its `limit` keeps it from being flattened into a join) holds the planner to those
    /// lookups: as a plain join, with statistics from a million snapshots, it chose to read the
    /// whole table instead (98-111 ms against 19-28 ms for 10,000 targets).
    pub async fn latest(&self, filter: &StatusFilter) -> Result<Vec<Latest>, StoreError> {
        let sql = format!(
            "{SNAPSHOT_COLUMNS}, t.status_since, t.retired_at, a.id as ack_id, \
             a.reason as ack_reason, a.by as ack_by, a.files as ack_files, \
             a.created_at as ack_created_at, a.until as ack_until from targets t \
             cross join lateral (select * from snapshots l where l.id = t.latest_id limit 1) s \
             left join filesets f on f.id = s.fileset_id left join acks a on a.id = t.ack_id \
             where ($1::text is null or t.repo = $1) and ($2::text is null or t.server = $2) \
             order by t.repo, t.server"
        );
        let rows = sqlx::query(&sql)
            .bind(&filter.repo)
            .bind(&filter.server)
            .fetch_all(&self.inner.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let snapshot = snapshot_from_row(row)?;
                let ack = match row.try_get::<Option<i64>, _>("ack_id")? {
                    Some(id) => Some(Arc::new(Ack {
                        id,
                        repo: snapshot.repo.clone(),
                        server: snapshot.server.clone(),
                        reason: row.try_get("ack_reason")?,
                        by: row.try_get("ack_by")?,
                        files: row
                            .try_get::<Option<String>, _>("ack_files")?
                            .as_deref()
                            .map(sql::parse_json_list)
                            .transpose()?,
                        created_at: Timestamp::from_millis(row.try_get("ack_created_at")?),
                        until: Timestamp::from_millis(row.try_get("ack_until")?),
                        ended_at: None,
                        end_reason: None,
                        ended_by: None,
                    })),
                    None => None,
                };
                Ok(Latest {
                    snapshot,
                    status_since: Timestamp::from_millis(row.try_get("status_since")?),
                    ack,
                    retired_at: row
                        .try_get::<Option<i64>, _>("retired_at")?
                        .map(Timestamp::from_millis),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn history_span(
        &self,
        filter: &HistoryFilter,
    ) -> Result<Option<HistorySpan>, StoreError> {
        let span = sql::history_span::<Postgres>(filter)
            .build_query_as()
            .fetch_one(&self.inner.pool)
            .await?;
        Ok(HistorySpan::from_row(span))
    }

    pub(super) async fn history_window(
        &self,
        filter: &HistoryFilter,
        window: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let rows = sql::history_window::<Postgres>(filter, window, limit)
            .build()
            .fetch_all(&self.inner.pool)
            .await?;
        rows.iter()
            .map(|row| snapshot_from_row(row).map_err(StoreError::from))
            .collect()
    }

    pub async fn verify(&self) -> Result<Verification, StoreError> {
        let mut connection = self.inner.pool.acquire().await?;
        audit::verify(&mut connection).await
    }

    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let mut connection = self.inner.pool.acquire().await?;
        audit::checkpoints(&mut connection).await
    }

    /// Verifies the database at `url` through one read-only session: no migration, no writer.
    pub async fn verify_database(url: &str) -> Result<Verification, ConnectError> {
        let options = PgConnectOptions::from_str(url)?
            .application_name("gitops-status-server verify")
            .options([("default_transaction_read_only", "on")])
            // Its one statement reads the whole history: a slow-statement warning says nothing.
            .disable_statement_logging();
        let mut connection = connect_once(&options).await?;
        sqlx::query("select 1 from chain_checkpoints limit 0")
            .execute(&mut connection)
            .await
            .map_err(|error| {
                ConnectError::Unusable(format!(
                    "not a gitops-status database (start the server on it once to create the \
                     schema): {error}"
                ))
            })?;
        let verification = audit::verify(&mut connection).await?;
        let _ = connection.close().await;
        Ok(verification)
    }

    pub async fn stats_input(
        &self,
        request: &StatsRequest,
        now: Timestamp,
        path: StatsPath,
    ) -> Result<StatsInput, StoreError> {
        let mut connection = self.inner.pool.acquire().await?;
        stats::input(&mut connection, request, now, path).await
    }

    /// Keeps the daily rollups for `stale_after`: unless they are complete for it, records the
    /// new default under the exclusive write lock (so every writer after it keeps deltas for
    /// it), then rebuilds each target under its row lock, as writers take it; returns once they
    /// are complete, or early when another replica reset them for another default. Replicas
    /// starting together rebuild side by side: a target's rebuild is idempotent, and neither
    /// undoes the other's.
    pub async fn keep_rollups(&self, stale_after: i64) -> Result<(), StoreError> {
        let mut connection = self.inner.pool.acquire().await?;
        let meta = sqlx::query_as::<_, (i64, i64)>(sql::ROLLUP_META_SQL)
            .fetch_optional(&mut *connection)
            .await?;
        let keep = rollups::Keep::of(meta, stale_after);
        if keep == rollups::Keep::Nothing {
            return Ok(());
        }
        let mut tx = connection.begin().await?;
        if keep == rollups::Keep::Reset {
            sqlx::query(&lock_sql("pg_advisory_xact_lock", WRITE_LOCK))
                .execute(&mut *tx)
                .await?;
            sqlx::query(rollups::RESET_META_SQL)
                .bind(stale_after)
                .execute(&mut *tx)
                .await?;
        }
        let targets: Vec<i64> = sqlx::query_scalar(rollups::TARGET_IDS_SQL)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(
            stale_after,
            targets = targets.len(),
            "rebuilding the daily rollups; /api/stats reads raw snapshots until they are done"
        );
        for target in targets {
            if *self.inner.shutdown.borrow() {
                return Err(StoreError::Closed);
            }
            let mut tx = connection.begin().await?;
            sqlx::query(&lock_sql("pg_advisory_xact_lock_shared", WRITE_LOCK))
                .execute(&mut *tx)
                .await?;
            sqlx::query("select id from targets where id = $1 for update")
                .bind(target)
                .execute(&mut *tx)
                .await?;
            let meta = sqlx::query_as::<_, (i64, i64)>(sql::ROLLUP_META_SQL)
                .fetch_optional(&mut *tx)
                .await?;
            if meta.map(|(kept_for, _)| kept_for) != Some(stale_after) {
                tracing::info!(
                    stale_after,
                    "another replica reset the rollups; rebuild abandoned"
                );
                return Ok(());
            }
            tx.rebuild_target(target, stale_after).await?;
            tx.commit().await?;
        }
        sqlx::query(rollups::READY_SQL)
            .bind(stale_after)
            .execute(&mut *connection)
            .await?;
        tracing::info!(stale_after, "the daily rollups are rebuilt");
        Ok(())
    }

    /// Runs a retention pass on a connection of its own, unless another replica is running one
    /// (then it changes nothing and the report says so).
    pub async fn prune(&self, cutoff: Timestamp) -> Result<PruneReport, StoreError> {
        if *self.inner.shutdown.borrow() {
            return Err(StoreError::Closed);
        }
        let mut connection = self.inner.pool.acquire().await?;
        audit::prune(&mut connection, cutoff, self.inner.shutdown.subscribe()).await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        if self.inner.jobs.is_closed() {
            return Err(StoreError::Closed);
        }
        sqlx::query("select 1").execute(&self.inner.pool).await?;
        Ok(())
    }

    /// Lets the writers finish what is queued, then closes every connection.
    pub async fn close(&self) {
        self.inner.shutdown.send_replace(true);
        let writers = std::mem::take(
            &mut *self
                .inner
                .writers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for writer in writers {
            if let Err(error) = writer.await {
                tracing::error!(%error, "a writer task failed");
            }
        }
        self.inner.pool.close().await;
    }
}

/// The advisory lock statement for `key` in this product's space.
fn lock_sql(function: &str, key: i32) -> String {
    format!("select {function}({LOCK_SPACE}, {key})")
}

/// Longest a first connection may take before start-up gives up on the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection, or why there is none, naming the server and, where it is obvious, the fix.
pub(in crate::store) async fn connect_once(
    options: &PgConnectOptions,
) -> Result<PgConnection, ConnectError> {
    let server = match options.get_socket() {
        Some(socket) => format!("the socket {}", socket.display()),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    let user = options.get_username();
    let database = options.get_database().unwrap_or(user);
    let error =
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options)).await {
            Ok(Ok(connection)) => return Ok(connection),
            Ok(Err(error)) => error,
            Err(_) => {
                return Err(ConnectError::Refused(Problem::new(
                    format!(
                        "PostgreSQL at {server} did not answer within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                    "check the host and port, and that a firewall lets the connection through",
                )));
            }
        };
    let problem = match &error {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Problem::new(
            format!("connection refused by {server}"),
            "is PostgreSQL running and listening there?",
        ),
        sqlx::Error::Io(io) => Problem::new(
            format!("cannot reach PostgreSQL at {server}: {io}"),
            "check the host and port",
        ),
        sqlx::Error::Tls(tls) => Problem::new(
            format!("TLS with {server} failed: {tls}"),
            "check sslmode and the certificates",
        ),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("3D000") => Problem::new(
                format!("the database {database:?} does not exist on {server}"),
                format!(
                    "create it (createdb -h {} -p {} -U {user} {database}) or fix the name",
                    options.get_host(),
                    options.get_port()
                ),
            ),
            Some("28P01" | "28000") => Problem::new(
                format!("{server} refused the user {user:?}: {}", db.message()),
                "check the user and password, and pg_hba.conf",
            ),
            _ => Problem::without_hint(format!("{server}: {}", db.message())),
        },
        other => Problem::without_hint(format!("cannot connect to {server}: {other}")),
    };
    Err(ConnectError::Unreachable {
        problem,
        source: error,
    })
}

/// `/api/episodes` (src/store/episodes.rs).
impl PostgresStore {
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
        let mut transaction = self
            .inner
            .pool
            .begin_with("begin isolation level repeatable read read only")
            .await?;
        let result = super::episodes::page(&mut *transaction, filter, clock, limit, path).await;
        transaction.rollback().await?;
        result
    }
}

impl PostgresStore {
    /// The pool, for reads both stores share (`Store::acks` and the like).
    pub(super) fn pool(&self) -> &PgPool {
        &self.inner.pool
    }
}

impl PostgresStore {
    /// The greatest transition and event ids committed, then the write transactions holding the
    /// write lock (each takes it before drawing an id and keeps it until it commits), so a row
    /// below those ids can still appear only from one of them. One statement: its snapshot is
    /// taken before the lock table is read. (The lock table is the cluster's: only this
    /// database's locks count.)
    pub(super) async fn feed_end(
        &self,
    ) -> Result<(crate::model::feed::FeedCursor, Vec<String>), StoreError> {
        let sql = format!(
            "{}, array(select virtualtransaction from pg_locks where locktype = 'advisory' \
             and granted and classid::int8 = {LOCK_SPACE} and objid::int8 = {WRITE_LOCK} \
             and objsubid = 2 \
             and database = (select oid from pg_database where datname = current_database()))",
            super::lifecycle::FEED_END_SQL
        );
        let (transition, event, writers): (i64, i64, Vec<String>) =
            sqlx::query_as(&sql).fetch_one(&self.inner.pool).await?;
        Ok((
            crate::model::feed::FeedCursor { transition, event },
            writers,
        ))
    }
}
