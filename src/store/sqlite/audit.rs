//! The audit trail's integrity in SQLite: hashing history written before the chain existed,
//! verifying the chain, and retention that removes snapshots without breaking it.

use std::collections::HashMap;

use sqlx::sqlite::SqliteConnection;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{SNAPSHOT_COLUMNS, snapshot_from_row};
use crate::chain::{self, Checkpoint as ChainCheckpoint, Hash};
use crate::store::audit::{
    LISTED_CHECKPOINTS_SQL, ListedCheckpoint, PAGE, Plan, ResumePoint, WalkReads, Walker,
    listed_checkpoints,
};
use crate::store::episode_table::EpisodeWrites;
use crate::store::{PruneReport, StoreError};
use crate::timestamp::Timestamp;

/// Free pages handed back to the file system per step after pruning (16 MiB of 4 KiB pages).
const VACUUM_STEP_PAGES: i64 = 4_096;

/// Every snapshot with what the chain needs, in arrival order.
fn chain_rows_sql() -> String {
    format!(
        "{SNAPSHOT_COLUMNS}, s.target_id from snapshots s join targets t on t.id = s.target_id \
         left join filesets f on f.id = s.fileset_id"
    )
}

/// Every retention checkpoint, by target then position, for re-checking an export.
pub async fn checkpoints(
    connection: &mut SqliteConnection,
) -> Result<Vec<ChainCheckpoint>, StoreError> {
    let rows: Vec<ListedCheckpoint> = sqlx::query_as(LISTED_CHECKPOINTS_SQL)
        .fetch_all(connection)
        .await?;
    Ok(listed_checkpoints(rows))
}

/// Gives every snapshot stored before the integrity chain existed its hash, once, at the first
/// start after the upgrade to it.
pub async fn hash_unchained_history(connection: &mut SqliteConnection) -> Result<(), StoreError> {
    // Set by migration 0002 only, so start-up never re-hashes (and so launders) edited rows.
    let unchained: bool = sqlx::query_scalar(
        "select exists (select 1 from pending_maintenance where task = 'hash-history')",
    )
    .fetch_one(&mut *connection)
    .await?;
    if !unchained {
        return Ok(());
    }
    tracing::info!("hashing the history stored before the integrity chain; this happens once");
    sqlx::query("begin immediate")
        .execute(&mut *connection)
        .await?;
    let result = hash_every_snapshot(connection).await;
    let end = if result.is_ok() { "commit" } else { "rollback" };
    sqlx::query(end).execute(&mut *connection).await?;
    result
}

async fn hash_every_snapshot(connection: &mut SqliteConnection) -> Result<(), StoreError> {
    let sql = format!("{} where s.id > ? order by s.id limit ?", chain_rows_sql());
    let mut heads: HashMap<i64, (i64, Hash)> = HashMap::new();
    let mut position = 0;
    loop {
        let rows = sqlx::query(&sql)
            .bind(position)
            .bind(PAGE)
            .fetch_all(&mut *connection)
            .await?;
        let Some(last) = rows.last() else { break };
        position = last.try_get("id")?;
        for row in &rows {
            let snapshot = snapshot_from_row(row)?;
            let target: i64 = row.try_get("target_id")?;
            let previous = heads.get(&target).map(|(_, hash)| *hash);
            let hash = chain::link(&snapshot, previous.as_ref());
            sqlx::query("update snapshots set hash = ? where id = ?")
                .bind(&hash[..])
                .bind(snapshot.id)
                .execute(&mut *connection)
                .await?;
            heads.insert(target, (snapshot.id, hash));
        }
    }
    sqlx::query("delete from pending_maintenance where task = 'hash-history'")
        .execute(&mut *connection)
        .await?;
    for (target, (id, hash)) in heads {
        sqlx::query("update targets set head_id = ?, head_hash = ? where id = ?")
            .bind(id)
            .bind(&hash[..])
            .bind(target)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// A retention run in progress: it walks the snapshots in arrival order, a page per transaction,
/// so ingest keeps flowing between pages.
#[derive(Debug)]
pub struct Prune {
    /// The walk's end (see `store::audit::Plan`); later snapshots are never candidates.
    until_id: i64,
    position: i64,
    walker: Walker,
    vacuuming: bool,
}

impl Prune {
    /// Plans a run (see `store::audit::Plan`).
    pub async fn begin(
        connection: &mut SqliteConnection,
        cutoff: Timestamp,
    ) -> Result<Self, StoreError> {
        let plan = Plan::make(connection, cutoff).await?;
        Ok(Self {
            until_id: plan.until_id,
            position: 0,
            walker: plan.walker,
            vacuuming: false,
        })
    }

    /// Does one bounded step in its own transaction; returns the report once the run is over.
    pub async fn step(
        &mut self,
        connection: &mut SqliteConnection,
    ) -> Result<Option<PruneReport>, StoreError> {
        if self.vacuuming {
            return self.vacuum_step(connection).await;
        }
        sqlx::query("begin immediate")
            .execute(&mut *connection)
            .await?;
        match self.walk_page(connection).await {
            Ok(done) => {
                sqlx::query("commit").execute(&mut *connection).await?;
                self.vacuuming = done;
                Ok(None)
            }
            Err(error) => {
                let _ = sqlx::query("rollback").execute(&mut *connection).await;
                Err(error)
            }
        }
    }

    /// Hands freed pages back to the file system when the database was created with incremental
    /// auto-vacuum (every database this server creates). Older files reuse them instead.
    async fn vacuum_step(
        &mut self,
        connection: &mut SqliteConnection,
    ) -> Result<Option<PruneReport>, StoreError> {
        let (auto_vacuum, free): (i64, i64) =
            sqlx::query_as("select * from pragma_auto_vacuum, pragma_freelist_count")
                .fetch_one(&mut *connection)
                .await?;
        if auto_vacuum != 2 || free == 0 {
            return Ok(Some(self.walker.report.clone()));
        }
        let step = free.min(VACUUM_STEP_PAGES);
        sqlx::query(&format!("pragma incremental_vacuum({step})"))
            .execute(&mut *connection)
            .await?;
        self.walker.report.released_pages += step;
        Ok(None)
    }

    /// Walks one page of snapshots; returns true when the walk is over.
    async fn walk_page(&mut self, connection: &mut SqliteConnection) -> Result<bool, StoreError> {
        let rows = connection.page(self.position, self.until_id).await?;
        let done = rows.len() < PAGE as usize;
        if let Some(last) = rows.last() {
            self.position = last.id;
        }
        let actions = self.walker.page(rows);
        for (target, after_id, checkpoint) in &actions.write {
            write_checkpoint(connection, *target, *after_id, checkpoint).await?;
        }
        for (target, after_id) in actions.absorbed {
            sqlx::query("delete from chain_checkpoints where target_id = ? and after_id = ?")
                .bind(target)
                .bind(after_id)
                .execute(&mut *connection)
                .await?;
        }
        let pruned = connection.targets_of(&actions.remove).await?;
        for ids in actions.remove.chunks(500) {
            let mut delete = QueryBuilder::<Sqlite>::new("delete from snapshots where id in (");
            let mut list = delete.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            delete.push(")");
            delete.build().execute(&mut *connection).await?;
        }
        // Their first episodes change with the snapshots that are left.
        connection.recompute_targets(&pruned).await?;
        Ok(done)
    }
}

async fn write_checkpoint(
    connection: &mut SqliteConnection,
    target: i64,
    after_id: i64,
    checkpoint: &ResumePoint,
) -> Result<(), StoreError> {
    sqlx::query(
        "insert into chain_checkpoints (target_id, after_id, resume_hash, removed, pruned_at) \
         values (?, ?, ?, ?, ?) on conflict (target_id, after_id) do update set \
         resume_hash = excluded.resume_hash, removed = excluded.removed, \
         pruned_at = excluded.pruned_at",
    )
    .bind(target)
    .bind(after_id)
    .bind(&checkpoint.resume)
    .bind(checkpoint.removed)
    .bind(Timestamp::now().as_millis())
    .execute(connection)
    .await?;
    Ok(())
}
