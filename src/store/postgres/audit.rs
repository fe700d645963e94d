//! The audit trail's integrity on PostgreSQL: verifying the chain in one consistent snapshot,
//! and retention passes that one replica at a time runs without breaking it.

use futures_util::TryStreamExt;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};
use tokio::sync::watch;

use super::{RETENTION_LOCK, WRITE_LOCK, lock_sql};
use crate::chain::{Checkpoint as ChainCheckpoint, Verification};
use crate::store::audit::{
    LISTED_CHECKPOINTS_SQL, ListedCheckpoint, PAGE, PageActions, Plan, TargetHead, Verifier,
    WalkReads, checkpoint_map, listed_checkpoints,
};
use crate::store::sql::{SNAPSHOT_COLUMNS, snapshot_from_row};
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

/// Recomputes every target's chain in one repeatable-read snapshot: the rows, the heads and the
/// checkpoints it compares are all as of one moment, whatever the writers do meanwhile.
pub async fn verify(connection: &mut PgConnection) -> Result<Verification, StoreError> {
    let mut tx = connection.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    let mut verifier = Verifier::new(checkpoint_map(tx.checkpoints().await?));
    let targets: Vec<TargetHead> =
        sqlx::query_as("select id, repo, server, head_id, head_hash from targets")
            .fetch_all(&mut *tx)
            .await?;
    let sql = format!(
        "{SNAPSHOT_COLUMNS}, s.target_id from snapshots s join targets t on t.id = s.target_id \
         left join filesets f on f.id = s.fileset_id order by s.id"
    );
    {
        let mut rows = sqlx::query(&sql).fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            let snapshot = snapshot_from_row(&row)?;
            verifier.push(row.try_get("target_id")?, &snapshot, row.try_get("hash")?);
        }
    }
    tx.rollback().await?;
    Ok(verifier.finish(targets))
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
        sqlx::query("delete from snapshots where id = any($1)")
            .bind(&actions.remove)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}
