//! The audit trail's integrity on PostgreSQL: verifying the chain in one consistent snapshot,
//! and retention passes that one replica at a time runs without breaking it.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection, Row};
use tokio::sync::watch;

use super::{RETENTION_LOCK, WRITE_LOCK, lock_sql};
use crate::chain::{ChainFields, Checkpoint as ChainCheckpoint, EventFields, Verification};
use crate::model::SyncStatus;
use crate::store::audit::{
    ACKS_SQL, AckRow, LISTED_CHECKPOINTS_SQL, ListedCheckpoint, PAGE, PageActions, Plan,
    SILENCES_SQL, SilenceRow, TARGETS_BEFORE_LIFECYCLE_SQL, TARGETS_SQL, TargetHead, Verifier,
    WalkReads, canonical_files, checkpoint_map, listed_checkpoints,
};
use crate::store::episode_table::EpisodeWrites;
use crate::store::{PruneReport, StoreError};
use crate::timestamp::Timestamp;

/// Every retention checkpoint, by target then position, for re-checking an export.
pub async fn checkpoints(
    connection: &mut PgConnection,
) -> Result<Vec<ChainCheckpoint>, StoreError> {
    let rows: Vec<ListedCheckpoint> = sqlx::query_as(LISTED_CHECKPOINTS_SQL)
        .fetch_all(connection)
        .await?;
    Ok(listed_checkpoints(rows))
}

/// Snapshots and events in one id order, each target's chain with them: PostgreSQL merges the
/// two primary-key scans (Merge Append), so the read streams in order without a sort. Snapshot
/// rows have no `kind`; event rows have only `id`, `target_id`, `hash`, `kind`, `at`, `body`.
const CHAIN_RECORDS_SQL: &str = "select id, target_id, sync_status, drift_count, fileset_id, \
     last_check, received_delay, revision, run_url, message, stale_after, hash, \
     null::text as kind, null::bigint as at, null::text as body from snapshots \
     union all select id, target_id, null, null, null, null, null, null, null, null, null, \
     hash, kind, at, body from events order by id";

/// The snapshots alone, on a database from before the lifecycle tables.
const SNAPSHOT_RECORDS_SQL: &str = "select id, target_id, sync_status, drift_count, fileset_id, \
     last_check, received_delay, revision, run_url, message, stale_after, hash, \
     null::text as kind, null::bigint as at, null::text as body from snapshots order by id";

/// Recomputes every chain in one repeatable-read snapshot: the records, the heads, the
/// checkpoints and the rows the API reads it compares are all as of one moment, whatever the
/// writers do meanwhile.
pub async fn verify(connection: &mut PgConnection) -> Result<Verification, StoreError> {
    let mut tx = connection.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    let lifecycle: bool = sqlx::query_scalar("select to_regclass('events') is not null")
        .fetch_one(&mut *tx)
        .await?;
    let checkpoints = checkpoint_map(tx.checkpoints().await?);
    let targets: Vec<TargetHead> = sqlx::query_as(if lifecycle {
        TARGETS_SQL
    } else {
        TARGETS_BEFORE_LIFECYCLE_SQL
    })
    .fetch_all(&mut *tx)
    .await?;
    let names: HashMap<i64, (String, String)> = targets
        .iter()
        .map(|target| (target.id, (target.repo.clone(), target.server.clone())))
        .collect();
    let mut verifier = Verifier::new(checkpoints, targets);
    let mut filesets = HashMap::new();
    {
        let mut rows =
            sqlx::query_as::<_, (i64, String)>("select id, files from filesets").fetch(&mut *tx);
        while let Some((id, files)) = rows.try_next().await? {
            filesets.insert(id, canonical_files(id, &files)?);
        }
    }
    {
        let sql = if lifecycle {
            CHAIN_RECORDS_SQL
        } else {
            SNAPSHOT_RECORDS_SQL
        };
        let mut rows = sqlx::query(sql).fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            push_record(&mut verifier, &names, &filesets, &row)?;
        }
    }
    if lifecycle {
        {
            let mut rows = sqlx::query_as::<_, AckRow>(ACKS_SQL).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                verifier.check_ack(row);
            }
        }
        let mut rows = sqlx::query_as::<_, SilenceRow>(SILENCES_SQL).fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            verifier.check_silence(row);
        }
    }
    tx.rollback().await?;
    Ok(verifier.finish())
}

/// Checks one row of `CHAIN_RECORDS_SQL`: a snapshot, or an event (of its target's chain, or of
/// the fleet chain). A record whose target is gone is not the target's, as on SQLite.
fn push_record(
    verifier: &mut Verifier,
    names: &HashMap<i64, (String, String)>,
    filesets: &HashMap<i64, String>,
    row: &PgRow,
) -> Result<(), StoreError> {
    let id: i64 = row.try_get(0)?;
    let target: Option<i64> = row.try_get(1)?;
    let stored: Option<Vec<u8>> = row.try_get(11)?;
    let kind: Option<String> = row.try_get(12)?;
    let names = match target {
        Some(target) => match names.get(&target) {
            Some((repo, server)) => Some((repo.as_str(), server.as_str())),
            None => return Ok(()),
        },
        None => None,
    };
    if let Some(kind) = kind {
        let at: i64 = row.try_get(13)?;
        let body: String = row.try_get(14)?;
        let fields = EventFields {
            id,
            repo: names.map(|(repo, _)| repo),
            server: names.map(|(_, server)| server),
            kind: &kind,
            at: Timestamp::from_millis(at),
            body: &body,
        };
        verifier.push_event(target, &fields, stored);
        return Ok(());
    }
    let (Some(target), Some((repo, server))) = (target, names) else {
        return Err(StoreError::corrupt(format!("snapshot {id} has no target")));
    };
    let code: i64 = row.try_get(2)?;
    let sync_status = SyncStatus::from_code(code).ok_or_else(|| {
        StoreError::corrupt(format!("snapshot {id}: unknown sync_status code {code}"))
    })?;
    let fileset_id: Option<i64> = row.try_get(4)?;
    let last_check: i64 = row.try_get(5)?;
    let received_delay: i64 = row.try_get(6)?;
    let revision: Option<&str> = row.try_get(7)?;
    let run_url: Option<&str> = row.try_get(8)?;
    let message: Option<&str> = row.try_get(9)?;
    let fields = ChainFields {
        id,
        repo,
        server,
        sync_status,
        drift_count: row.try_get(3)?,
        files_json: fileset_id
            .and_then(|id| filesets.get(&id))
            .map_or("[]", String::as_str),
        last_check: Timestamp::from_millis(last_check),
        received_at: Timestamp::from_millis(last_check + received_delay),
        revision,
        run_url,
        message,
        stale_after_seconds: row.try_get(10)?,
    };
    verifier.push_fields(target, &fields, stored);
    Ok(())
}

/// A retention pass: unless another replica holds the retention lock (then nothing is done and
/// the report says `elsewhere`), walks
/// the expired history a page per transaction. Each page holds the write lock exclusively, so no
/// write is in flight while it reads and deletes: every id below its position has committed.
pub async fn prune(
    connection: &mut PgConnection,
    cutoff: Timestamp,
    closing: watch::Receiver<bool>,
) -> Result<PruneReport, StoreError> {
    let locked: bool = sqlx::query_scalar(&lock_sql("pg_try_advisory_lock", RETENTION_LOCK))
        .fetch_one(&mut *connection)
        .await?;
    if !locked {
        return Ok(PruneReport {
            cutoff,
            elsewhere: true,
            ..PruneReport::default()
        });
    }
    let result = walk(connection, cutoff, closing).await;
    let _ = sqlx::query(&lock_sql("pg_advisory_unlock", RETENTION_LOCK))
        .execute(&mut *connection)
        .await;
    result
}

async fn walk(
    connection: &mut PgConnection,
    cutoff: Timestamp,
    closing: watch::Receiver<bool>,
) -> Result<PruneReport, StoreError> {
    let Plan {
        until_id,
        mut walker,
    } = Plan::make(connection, cutoff).await?;
    let mut position = 0;
    loop {
        if *closing.borrow() {
            return Err(StoreError::Closed);
        }
        let mut tx = connection.begin().await?;
        sqlx::query(&lock_sql("pg_advisory_xact_lock", WRITE_LOCK))
            .execute(&mut *tx)
            .await?;
        let rows = tx.page(position, until_id).await?;
        let done = rows.len() < PAGE as usize;
        if let Some(last) = rows.last() {
            position = last.id;
        }
        let actions = walker.page(rows);
        apply(&mut tx, actions).await?;
        tx.commit().await?;
        if done {
            return Ok(walker.report);
        }
    }
}

/// Carries out what a page of the walk decided.
async fn apply(connection: &mut PgConnection, actions: PageActions) -> Result<(), StoreError> {
    if !actions.write.is_empty() {
        let mut targets = Vec::new();
        let mut after_ids = Vec::new();
        let mut resumes = Vec::new();
        let mut removed = Vec::new();
        for (target, after_id, checkpoint) in actions.write {
            targets.push(target);
            after_ids.push(after_id);
            resumes.push(checkpoint.resume);
            removed.push(checkpoint.removed);
        }
        sqlx::query(
            "insert into chain_checkpoints (target_id, after_id, resume_hash, removed, pruned_at) \
             select u.*, $5 from unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bigint[]) \
             as u (target_id, after_id, resume_hash, removed) \
             on conflict (target_id, after_id) do update set \
             resume_hash = excluded.resume_hash, removed = excluded.removed, \
             pruned_at = excluded.pruned_at",
        )
        .bind(&targets)
        .bind(&after_ids)
        .bind(&resumes)
        .bind(&removed)
        .bind(Timestamp::now().as_millis())
        .execute(&mut *connection)
        .await?;
    }
    if !actions.absorbed.is_empty() {
        let (targets, after_ids): (Vec<i64>, Vec<i64>) = actions.absorbed.into_iter().unzip();
        sqlx::query(
            "delete from chain_checkpoints where (target_id, after_id) in \
             (select * from unnest($1::bigint[], $2::bigint[]))",
        )
        .bind(&targets)
        .bind(&after_ids)
        .execute(&mut *connection)
        .await?;
    }
    if !actions.remove.is_empty() {
        let pruned = connection.targets_of(&actions.remove).await?;
        sqlx::query("delete from snapshots where id = any($1)")
            .bind(&actions.remove)
            .execute(&mut *connection)
            .await?;
        // Their first episodes change with the snapshots that are left.
        connection.recompute_targets(&pruned).await?;
    }
    Ok(())
}
