//! `migrate-to`: copies a SQLite history into an empty PostgreSQL database unchanged (ids,
//! hashes, derived transition flags, retention checkpoints, chained events and the
//! acknowledgements, silences and retirements they record), in one PostgreSQL transaction, then
//! verifies both and compares them target by target.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};

use super::audit::{ACKS_SQL, AckRow, SILENCES_SQL, SilenceRow};
use super::postgres::{INSERT_SNAPSHOTS_SQL, connect_once};
use super::sqlite::{Access, open_failure};
use super::{ConnectError, DatabaseKind, DatabaseUrl, Store};
use crate::chain::Verification;
use crate::rollups::DayTotals;

/// Rows copied per statement.
const PAGE: usize = 5_000;

/// What `migrate-to` did, printed as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct MigrateReport {
    /// True when the copy verifies and matches the source target by target.
    pub ok: bool,
    pub targets: i64,
    pub filesets: i64,
    pub snapshots: i64,
    pub checkpoints: i64,
    /// Chained events (acknowledgements, silences, retirements, their ends).
    pub events: i64,
    pub acks: i64,
    pub silences: i64,
    /// The source's chain verification, before copying.
    pub source: Verification,
    /// The copy's, after.
    pub copy: Verification,
    /// Every difference found between the two, empty when `ok`.
    pub differences: Vec<String>,
}

/// What a target's chain, latest state and lifecycle rest on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    head_id: Option<i64>,
    head_hash: Option<Vec<u8>>,
    latest_id: Option<i64>,
    status_since: Option<i64>,
    ack_id: Option<i64>,
    retired_at: Option<i64>,
}

/// Every target's `Head`, by (repo, server).
type Heads = BTreeMap<(String, String), Head>;

/// A target as `TARGETS_SQL` reads it.
#[derive(Debug, sqlx::FromRow)]
struct TargetRow {
    id: i64,
    repo: String,
    server: String,
    head_id: Option<i64>,
    head_hash: Option<Vec<u8>>,
    latest_id: Option<i64>,
    status_since: Option<i64>,
    ack_id: Option<i64>,
    retired_at: Option<i64>,
}

/// A file set, column for column.
#[derive(Debug, sqlx::FromRow)]
struct FilesetRow {
    id: i64,
    digest: Vec<u8>,
    files: String,
}

/// A snapshot as stored, column for column.
#[derive(Debug, sqlx::FromRow)]
struct StoredSnapshot {
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
    hash: Option<Vec<u8>>,
}

/// A retention checkpoint, column for column.
#[derive(Debug, sqlx::FromRow)]
struct CheckpointRow {
    target_id: i64,
    after_id: i64,
    resume_hash: Vec<u8>,
    removed: i64,
    pruned_at: i64,
}

/// Every target with its chain head, its latest snapshot and status_since as computed from its
/// history (on SQLite these live in the writer's memory, not in the table), its acknowledgement
/// in force and when it was retired.
const TARGETS_SQL: &str = "select t.id, t.repo, t.server, t.head_id, t.head_hash, \
     (select l.id from snapshots l where l.target_id = t.id \
      order by l.last_check desc limit 1) as latest_id, \
     coalesce((select c.last_check from snapshots c where c.target_id = t.id and c.change <> 0 \
               and (c.change & 1) = 1 order by c.last_check desc limit 1), \
              (select max(l.last_check) from snapshots l where l.target_id = t.id)) \
     as status_since, t.ack_id, t.retired_at \
     from targets t";

/// `TARGETS_SQL` on a source from before the lifecycle tables.
const TARGETS_BEFORE_LIFECYCLE_SQL: &str = "select t.id, t.repo, t.server, t.head_id, \
     t.head_hash, (select l.id from snapshots l where l.target_id = t.id \
      order by l.last_check desc limit 1) as latest_id, \
     coalesce((select c.last_check from snapshots c where c.target_id = t.id and c.change <> 0 \
               and (c.change & 1) = 1 order by c.last_check desc limit 1), \
              (select max(l.last_check) from snapshots l where l.target_id = t.id)) \
     as status_since, cast(null as bigint) as ack_id, cast(null as bigint) as retired_at \
     from targets t";

/// A chained event, column for column.
#[derive(Debug, sqlx::FromRow)]
struct EventRow {
    id: i64,
    target_id: Option<i64>,
    kind: String,
    at: i64,
    body: String,
    hash: Vec<u8>,
}

/// Why `migrate-to` copied nothing, and which of its two databases is to blame.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The SQLite source: its URL, opening it, or its integrity chain.
    #[error("{0}")]
    Source(ConnectError),
    /// The PostgreSQL target: its URL, reaching it, its schema, or history it already holds.
    #[error("{0}")]
    Target(ConnectError),
    /// Reading one while writing the other; the target's transaction was rolled back.
    #[error("the copy failed and was rolled back: {0}")]
    Copy(ConnectError),
}

/// Copies the SQLite database at `source` into the PostgreSQL database at `target`, which must
/// hold no history, and verifies the copy. The source is opened read-only and never changed.
pub async fn migrate_to(source: &str, target: &str) -> Result<MigrateReport, MigrateError> {
    let source = DatabaseUrl::parse_sqlite(source)
        .map_err(|problem| MigrateError::Source(problem.into()))?;
    let target = DatabaseUrl::parse_postgres(target)
        .map_err(|problem| MigrateError::Target(problem.into()))?;
    let DatabaseKind::Sqlite { path } = source.kind() else {
        unreachable!("parse_sqlite returns SQLite URLs only");
    };
    // Verifies the source first: a broken chain is not copied as if it were sound.
    let source_verification = Store::verify_database(source.as_str())
        .await
        .map_err(MigrateError::Source)?;
    if let Some(bad) = &source_verification.first_bad {
        return Err(MigrateError::Source(ConnectError::Unusable(format!(
            "the source's integrity chain does not verify ({} {} of {}/{}: {}); run `verify` \
             on it and settle that before copying",
            bad.what(),
            bad.id,
            bad.repo,
            bad.server,
            bad.reason
        ))));
    }

    let mut sqlite = SqliteConnection::connect_with(
        &SqliteConnectOptions::from_str(source.as_str())
            .map_err(|error| MigrateError::Source(error.into()))?
            .read_only(true)
            .busy_timeout(Duration::from_secs(5))
            .disable_statement_logging(),
    )
    .await
    .map_err(|error| MigrateError::Source(open_failure(path, Access::Read, error)))?;
    let mut postgres = connect_once(
        &PgConnectOptions::from_str(target.as_str())
            .map_err(|error| MigrateError::Target(error.into()))?
            .application_name("gitops-status-server migrate-to")
            .disable_statement_logging(),
    )
    .await
    .map_err(MigrateError::Target)?;
    sqlx::migrate!("./migrations/postgres")
        .run(&mut postgres)
        .await
        .map_err(|error| MigrateError::Target(error.into()))?;

    // One read transaction on the source, one write transaction on the target: the copy is of
    // one moment, and all or nothing.
    let target_error = |error: sqlx::Error| MigrateError::Target(error.into());
    sqlx::query("begin")
        .execute(&mut sqlite)
        .await
        .map_err(|error| MigrateError::Source(error.into()))?;
    let mut tx = postgres.begin().await.map_err(target_error)?;
    // No server may write while the copy runs.
    sqlx::query(
        "lock table targets, filesets, snapshots, chain_checkpoints, events, acks, silences, \
         rollups, rollup_meta in exclusive mode",
    )
    .execute(&mut *tx)
    .await
    .map_err(target_error)?;
    let occupied: bool = sqlx::query_scalar(
        "select exists (select 1 from targets) or exists (select 1 from snapshots) \
         or exists (select 1 from events)",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(target_error)?;
    if occupied {
        return Err(MigrateError::Target(ConnectError::Unusable(
            "the target database already holds targets, snapshots or events; migrate-to only \
             copies into an empty one"
                .to_owned(),
        )));
    }
    let copied = copy(&mut sqlite, &mut tx)
        .await
        .map_err(MigrateError::Copy)?;
    tx.commit().await.map_err(target_error)?;
    let _ = sqlx::query("rollback").execute(&mut sqlite).await;
    let _ = sqlite.close().await;

    let copy_verification = Store::verify_database(target.as_str())
        .await
        .map_err(MigrateError::Target)?;
    // Recomputed from the copied snapshots, and as the PostgreSQL store keeps them in `targets`.
    let copy_heads = heads(&mut postgres, TARGETS_SQL)
        .await
        .map_err(target_error)?;
    let copy_pointers = heads(
        &mut postgres,
        "select id, repo, server, head_id, head_hash, latest_id, status_since, ack_id, \
         retired_at from targets",
    )
    .await
    .map_err(target_error)?;
    let _ = postgres.close().await;

    let mut differences = Vec::new();
    if source_verification.checked != copy_verification.checked {
        differences.push(format!(
            "the source holds {} chained records, the copy {}",
            source_verification.checked, copy_verification.checked
        ));
    }
    if source_verification.ok != copy_verification.ok
        || source_verification.first_bad != copy_verification.first_bad
    {
        differences.push("the copy's verification differs from the source's".to_owned());
    }
    let source_heads = &copied.heads;
    for (key, head) in source_heads {
        match copy_heads.get(key) {
            None => differences.push(format!("{}/{} is missing from the copy", key.0, key.1)),
            Some(copied) if copied != head => differences.push(format!(
                "{}/{}: chain head, latest, status_since, acknowledgement in force or \
                 retirement differs in the copy",
                key.0, key.1
            )),
            Some(_) => {}
        }
    }
    for key in copy_heads
        .keys()
        .filter(|key| !source_heads.contains_key(*key))
    {
        differences.push(format!("{}/{} is in the copy only", key.0, key.1));
    }
    if copy_pointers != copy_heads {
        differences.push(
            "the copy's recorded latest snapshots or status_since differ from its history"
                .to_owned(),
        );
    }
    Ok(MigrateReport {
        ok: differences.is_empty() && copy_verification.ok,
        targets: copied.heads.len() as i64,
        filesets: copied.filesets,
        snapshots: copied.snapshots,
        checkpoints: copied.checkpoints,
        events: copied.events,
        acks: copied.acks,
        silences: copied.silences,
        source: source_verification,
        copy: copy_verification,
        differences,
    })
}

/// What `copy` copied: the source's targets as `Heads`, and the other tables' row counts.
struct Copied {
    heads: Heads,
    filesets: i64,
    snapshots: i64,
    checkpoints: i64,
    events: i64,
    acks: i64,
    silences: i64,
}

/// Copies every table.
async fn copy(
    sqlite: &mut SqliteConnection,
    postgres: &mut PgConnection,
) -> Result<Copied, ConnectError> {
    let lifecycle: bool = sqlx::query_scalar(
        "select exists (select 1 from sqlite_master where type = 'table' and name = 'events')",
    )
    .fetch_one(&mut *sqlite)
    .await?;
    let targets_sql = if lifecycle {
        TARGETS_SQL
    } else {
        TARGETS_BEFORE_LIFECYCLE_SQL
    };
    let targets: Vec<TargetRow> = sqlx::query_as(targets_sql).fetch_all(&mut *sqlite).await?;
    for chunk in targets.chunks(PAGE) {
        sqlx::query(
            "insert into targets (id, repo, server, head_id, head_hash, latest_id, status_since, \
             ack_id, retired_at) \
             select * from unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], \
             $5::bytea[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])",
        )
        .bind(chunk.iter().map(|row| row.id).collect::<Vec<_>>())
        .bind(
            chunk
                .iter()
                .map(|row| row.repo.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            chunk
                .iter()
                .map(|row| row.server.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(chunk.iter().map(|row| row.head_id).collect::<Vec<_>>())
        .bind(
            chunk
                .iter()
                .map(|row| row.head_hash.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(chunk.iter().map(|row| row.latest_id).collect::<Vec<_>>())
        .bind(chunk.iter().map(|row| row.status_since).collect::<Vec<_>>())
        .bind(chunk.iter().map(|row| row.ack_id).collect::<Vec<_>>())
        .bind(chunk.iter().map(|row| row.retired_at).collect::<Vec<_>>())
        .execute(&mut *postgres)
        .await?;
    }

    let filesets: Vec<FilesetRow> =
        sqlx::query_as("select id, digest, files from filesets order by id")
            .fetch_all(&mut *sqlite)
            .await?;
    for chunk in filesets.chunks(PAGE) {
        let ids: Vec<i64> = chunk.iter().map(|row| row.id).collect();
        let digests: Vec<&[u8]> = chunk.iter().map(|row| row.digest.as_slice()).collect();
        let files: Vec<&str> = chunk.iter().map(|row| row.files.as_str()).collect();
        sqlx::query(
            "insert into filesets (id, digest, files) \
             select * from unnest($1::bigint[], $2::bytea[], $3::text[])",
        )
        .bind(&ids)
        .bind(&digests)
        .bind(&files)
        .execute(&mut *postgres)
        .await?;
    }

    let mut snapshots = 0;
    let mut rows = sqlx::query_as::<_, StoredSnapshot>(
        "select id, target_id, last_check, received_delay, sync_status, drift_count, \
         fileset_id, change, stale_after, revision, run_url, message, hash \
         from snapshots order by id",
    )
    .fetch(&mut *sqlite);
    let mut page = Vec::with_capacity(PAGE);
    loop {
        let row = rows.try_next().await?;
        let end = row.is_none();
        page.extend(row);
        if page.len() == PAGE || (end && !page.is_empty()) {
            snapshots += insert_snapshots(&mut *postgres, &page).await?;
            page.clear();
        }
        if end {
            break;
        }
    }
    drop(rows);

    let checkpoints: Vec<CheckpointRow> = sqlx::query_as(
        "select target_id, after_id, resume_hash, removed, pruned_at from chain_checkpoints",
    )
    .fetch_all(&mut *sqlite)
    .await?;
    for chunk in checkpoints.chunks(PAGE) {
        sqlx::query(
            "insert into chain_checkpoints (target_id, after_id, resume_hash, removed, pruned_at) \
             select * from unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bigint[], \
             $5::bigint[])",
        )
        .bind(chunk.iter().map(|row| row.target_id).collect::<Vec<_>>())
        .bind(chunk.iter().map(|row| row.after_id).collect::<Vec<_>>())
        .bind(
            chunk
                .iter()
                .map(|row| row.resume_hash.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(chunk.iter().map(|row| row.removed).collect::<Vec<_>>())
        .bind(chunk.iter().map(|row| row.pruned_at).collect::<Vec<_>>())
        .execute(&mut *postgres)
        .await?;
    }

    let (events, acks, silences) = if lifecycle {
        copy_lifecycle(sqlite, postgres).await?
    } else {
        (0, 0, 0)
    };
    copy_statements(sqlite, postgres).await?;
    copy_rollups(sqlite, postgres).await?;
    copy_episodes(sqlite, postgres).await?;

    // New rows continue after the copied ones; snapshots and events share one id sequence.
    sqlx::query(
        "select setval('snapshots_id_seq', greatest(coalesce((select max(id) from snapshots), 0), \
                coalesce((select max(id) from events), 0)) + 1, false), \
         setval(pg_get_serial_sequence('targets', 'id'), \
                coalesce((select max(id) from targets), 0) + 1, false), \
         setval(pg_get_serial_sequence('filesets', 'id'), \
                coalesce((select max(id) from filesets), 0) + 1, false)",
    )
    .execute(&mut *postgres)
    .await?;
    Ok(Copied {
        heads: into_heads(targets),
        filesets: filesets.len() as i64,
        snapshots,
        checkpoints: checkpoints.len() as i64,
        events,
        acks,
        silences,
    })
}

/// Copies the signed head statements as they are (their signatures cover only their text, so
/// they check out on the copy), when the source has them.
async fn copy_statements(
    sqlite: &mut SqliteConnection,
    postgres: &mut PgConnection,
) -> Result<(), ConnectError> {
    let has_statements: bool = sqlx::query_scalar(
        "select exists (select 1 from sqlite_master where type = 'table' \
         and name = 'head_statements')",
    )
    .fetch_one(&mut *sqlite)
    .await?;
    if !has_statements {
        return Ok(());
    }
    let mut after = 0;
    loop {
        let page: Vec<super::StatementRow> = sqlx::query_as(
            "select seq, at, body, hash, signature, public_key from head_statements \
             where seq > $1 order by seq limit 100",
        )
        .bind(after)
        .fetch_all(&mut *sqlite)
        .await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.seq;
        sqlx::query(
            "insert into head_statements (seq, at, body, hash, signature, public_key) \
             select * from unnest($1::bigint[], $2::bigint[], $3::text[], $4::bytea[], \
             $5::bytea[], $6::bytea[])",
        )
        .bind(page.iter().map(|row| row.seq).collect::<Vec<_>>())
        .bind(page.iter().map(|row| row.at).collect::<Vec<_>>())
        .bind(page.iter().map(|row| row.body.as_str()).collect::<Vec<_>>())
        .bind(
            page.iter()
                .map(|row| row.hash.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(
            page.iter()
                .map(|row| row.signature.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(
            page.iter()
                .map(|row| row.public_key.as_slice())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *postgres)
        .await?;
    }
}

/// A row of `rollups`.
#[derive(Debug, sqlx::FromRow)]
struct RollupRow {
    target_id: i64,
    day: i64,
    #[sqlx(flatten)]
    totals: DayTotals,
}

/// Copies the daily rollups and the default stale-after they are for, when the source keeps
/// them: days retention pruned cannot be rebuilt from raw snapshots. A source without them
/// leaves the copy without: the server rebuilds them at start.
async fn copy_rollups(
    sqlite: &mut SqliteConnection,
    postgres: &mut PgConnection,
) -> Result<(), ConnectError> {
    let kept: bool = sqlx::query_scalar(
        "select exists (select 1 from sqlite_master where type = 'table' and name = 'rollup_meta')",
    )
    .fetch_one(&mut *sqlite)
    .await?;
    if !kept {
        return Ok(());
    }
    let mut rows = sqlx::query_as::<_, RollupRow>(
        "select target_id, day, checks, synced_ms, out_of_sync_ms, error_ms, stale_ms \
         from rollups order by target_id, day",
    )
    .fetch(&mut *sqlite);
    let mut page = Vec::with_capacity(PAGE);
    loop {
        let row = rows.try_next().await?;
        let end = row.is_none();
        page.extend(row);
        if page.len() == PAGE || (end && !page.is_empty()) {
            let column = |get: fn(&RollupRow) -> i64| page.iter().map(get).collect::<Vec<i64>>();
            sqlx::query(
                "insert into rollups (target_id, day, checks, synced_ms, out_of_sync_ms, \
                 error_ms, stale_ms) select * from unnest($1::bigint[], $2::bigint[], \
                 $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])",
            )
            .bind(column(|row| row.target_id))
            .bind(column(|row| row.day))
            .bind(column(|row| row.totals.checks))
            .bind(column(|row| row.totals.synced_ms))
            .bind(column(|row| row.totals.out_of_sync_ms))
            .bind(column(|row| row.totals.error_ms))
            .bind(column(|row| row.totals.stale_ms))
            .execute(&mut *postgres)
            .await?;
            page.clear();
        }
        if end {
            break;
        }
    }
    drop(rows);
    let meta: Option<(i64, i64)> =
        sqlx::query_as("select stale_after, ready from rollup_meta where id = 1")
            .fetch_optional(&mut *sqlite)
            .await?;
    if let Some((stale_after, ready)) = meta {
        // A server may have started on the empty database and kept (empty) rollups already.
        sqlx::query(
            "insert into rollup_meta (id, stale_after, ready) values (1, $1, $2) \
             on conflict (id) do update set stale_after = excluded.stale_after, \
             ready = excluded.ready",
        )
        .bind(stale_after)
        .bind(ready)
        .execute(&mut *postgres)
        .await?;
    }
    Ok(())
}

/// Copies the materialised episodes (src/store/episode_table.rs), which are kept with the
/// rollups and for the same default, when the source has them: the copy's rollup_meta says they
/// are complete when the source's did.
async fn copy_episodes(
    sqlite: &mut SqliteConnection,
    postgres: &mut PgConnection,
) -> Result<(), ConnectError> {
    let kept: bool = sqlx::query_scalar(
        "select exists (select 1 from sqlite_master where type = 'table' and name = 'episode_heads')",
    )
    .fetch_one(&mut *sqlite)
    .await?;
    if !kept {
        return Ok(());
    }
    // A server may have started on the empty database and kept (empty) ones already.
    sqlx::query("delete from episodes")
        .execute(&mut *postgres)
        .await?;
    sqlx::query("delete from episode_heads")
        .execute(&mut *postgres)
        .await?;
    for (select, insert, columns) in [
        (
            "select target_id, state, started_at, first_snapshot_id, ended_at, last_snapshot_id \
             from episodes order by target_id, started_at, first_snapshot_id",
            "insert into episodes (target_id, state, started_at, first_snapshot_id, ended_at, \
             last_snapshot_id) select * from unnest($1::bigint[], $2::bigint[], $3::bigint[], \
             $4::bigint[], $5::bigint[], $6::bigint[])",
            6,
        ),
        (
            "select target_id, sync_status, started_at, first_snapshot_id, last_snapshot_id, \
             last_check, stale_at, stale_start from episode_heads order by target_id",
            "insert into episode_heads (target_id, sync_status, started_at, first_snapshot_id, \
             last_snapshot_id, last_check, stale_at, stale_start) select * from \
             unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
             $6::bigint[], $7::bigint[], $8::bigint[])",
            8,
        ),
    ] {
        let mut rows = sqlx::query(select).fetch(&mut *sqlite);
        let mut page: Vec<Vec<i64>> = vec![Vec::with_capacity(PAGE); columns];
        loop {
            let row = rows.try_next().await?;
            let end = row.is_none();
            if let Some(row) = row {
                for (index, column) in page.iter_mut().enumerate() {
                    column.push(sqlx::Row::try_get::<i64, _>(&row, index)?);
                }
            }
            if page[0].len() == PAGE || (end && !page[0].is_empty()) {
                let mut query = sqlx::query(insert);
                for column in &page {
                    query = query.bind(column.clone());
                }
                query.execute(&mut *postgres).await?;
                for column in &mut page {
                    column.clear();
                }
            }
            if end {
                break;
            }
        }
    }
    Ok(())
}

/// Copies the chained events and the acknowledgements and silences they record: `(events,
/// acks, silences)` copied.
async fn copy_lifecycle(
    sqlite: &mut SqliteConnection,
    postgres: &mut PgConnection,
) -> Result<(i64, i64, i64), ConnectError> {
    let mut events = 0;
    let mut rows = sqlx::query_as::<_, EventRow>(
        "select id, target_id, kind, at, body, hash from events order by id",
    )
    .fetch(&mut *sqlite);
    let mut page = Vec::with_capacity(PAGE);
    loop {
        let row = rows.try_next().await?;
        let end = row.is_none();
        page.extend(row);
        if page.len() == PAGE || (end && !page.is_empty()) {
            sqlx::query(
                "insert into events (id, target_id, kind, at, body, hash) \
                 select * from unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], \
                 $5::text[], $6::bytea[])",
            )
            .bind(page.iter().map(|row: &EventRow| row.id).collect::<Vec<_>>())
            .bind(page.iter().map(|row| row.target_id).collect::<Vec<_>>())
            .bind(page.iter().map(|row| row.kind.as_str()).collect::<Vec<_>>())
            .bind(page.iter().map(|row| row.at).collect::<Vec<_>>())
            .bind(page.iter().map(|row| row.body.as_str()).collect::<Vec<_>>())
            .bind(
                page.iter()
                    .map(|row| row.hash.as_slice())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *postgres)
            .await?;
            events += page.len() as i64;
            page.clear();
        }
        if end {
            break;
        }
    }
    drop(rows);

    let acks: Vec<AckRow> = sqlx::query_as(ACKS_SQL).fetch_all(&mut *sqlite).await?;
    for chunk in acks.chunks(PAGE) {
        fn column<'a, T>(rows: &'a [AckRow], pick: impl Fn(&'a AckRow) -> T) -> Vec<T> {
            rows.iter().map(pick).collect()
        }
        sqlx::query(
            "insert into acks (id, target_id, reason, \"by\", files, created_at, until, \
             ended_at, end_reason, ended_by) \
             select * from unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], \
             $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::text[], $10::text[])",
        )
        .bind(column(chunk, |row| row.id))
        .bind(column(chunk, |row| row.target_id))
        .bind(column(chunk, |row| row.reason.as_str()))
        .bind(column(chunk, |row| row.by.as_str()))
        .bind(column(chunk, |row| row.files.as_deref()))
        .bind(column(chunk, |row| row.created_at))
        .bind(column(chunk, |row| row.until))
        .bind(column(chunk, |row| row.ended_at))
        .bind(column(chunk, |row| row.end_reason.as_deref()))
        .bind(column(chunk, |row| row.ended_by.as_deref()))
        .execute(&mut *postgres)
        .await?;
    }

    let silences: Vec<SilenceRow> = sqlx::query_as(SILENCES_SQL).fetch_all(&mut *sqlite).await?;
    for chunk in silences.chunks(PAGE) {
        fn column<'a, T>(rows: &'a [SilenceRow], pick: impl Fn(&'a SilenceRow) -> T) -> Vec<T> {
            rows.iter().map(pick).collect()
        }
        sqlx::query(
            "insert into silences (id, repos, servers, starts_at, ends_at, reason, \"by\", \
             created_at, deleted_at, deleted_by) \
             select * from unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], \
             $5::bigint[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::text[])",
        )
        .bind(column(chunk, |row| row.id))
        .bind(column(chunk, |row| row.repos.as_str()))
        .bind(column(chunk, |row| row.servers.as_str()))
        .bind(column(chunk, |row| row.starts_at))
        .bind(column(chunk, |row| row.ends_at))
        .bind(column(chunk, |row| row.reason.as_str()))
        .bind(column(chunk, |row| row.by.as_str()))
        .bind(column(chunk, |row| row.created_at))
        .bind(column(chunk, |row| row.deleted_at))
        .bind(column(chunk, |row| row.deleted_by.as_deref()))
        .execute(&mut *postgres)
        .await?;
    }
    Ok((events, acks.len() as i64, silences.len() as i64))
}

async fn insert_snapshots(
    postgres: &mut PgConnection,
    page: &[StoredSnapshot],
) -> Result<i64, sqlx::Error> {
    fn column<'a, T>(page: &'a [StoredSnapshot], pick: impl Fn(&'a StoredSnapshot) -> T) -> Vec<T> {
        page.iter().map(pick).collect()
    }
    sqlx::query(INSERT_SNAPSHOTS_SQL)
        .bind(column(page, |row| row.id))
        .bind(column(page, |row| row.target_id))
        .bind(column(page, |row| row.last_check))
        .bind(column(page, |row| row.received_delay))
        .bind(column(page, |row| row.sync_status))
        .bind(column(page, |row| row.drift_count))
        .bind(column(page, |row| row.fileset_id))
        .bind(column(page, |row| row.change))
        .bind(column(page, |row| row.stale_after))
        .bind(column(page, |row| row.revision.as_deref()))
        .bind(column(page, |row| row.run_url.as_deref()))
        .bind(column(page, |row| row.message.as_deref()))
        .bind(column(page, |row| row.hash.as_deref()))
        .execute(postgres)
        .await?;
    Ok(page.len() as i64)
}

/// Targets read by `sql`, which selects a `TargetRow`.
async fn heads(postgres: &mut PgConnection, sql: &str) -> Result<Heads, sqlx::Error> {
    let rows: Vec<TargetRow> = sqlx::query_as(sql).fetch_all(postgres).await?;
    Ok(into_heads(rows))
}

fn into_heads(rows: Vec<TargetRow>) -> Heads {
    rows.into_iter()
        .map(|row| {
            let head = Head {
                head_id: row.head_id,
                head_hash: row.head_hash,
                latest_id: row.latest_id,
                status_since: row.status_since,
                ack_id: row.ack_id,
                retired_at: row.retired_at,
            };
            ((row.repo, row.server), head)
        })
        .collect()
}
