//! Keeping the daily rollups (`crate::rollups`) for one default stale-after: resetting them when
//! the server's `--stale-after` is not the one they were computed with (or the table is new on
//! an existing database), and rebuilding them target by target from raw snapshots. The same
//! statements on both stores; each store runs the rebuild where its writes are serialised (the
//! SQLite writer between batches, PostgreSQL under each target's row lock), so the rebuild of a
//! target and the pipeline's deltas for it never interleave.

use crate::rollups::{DayTotals, Holder, days_of};
use crate::store::StoreError;

/// Records the default the rollups are now kept for, not complete yet.
pub const RESET_META_SQL: &str = "insert into rollup_meta (id, stale_after, ready) \
     values (1, $1, 0) on conflict (id) do update set stale_after = excluded.stale_after, \
     ready = 0";

/// Every target, in id order: what a rebuild works through.
pub const TARGET_IDS_SQL: &str = "select id from targets order by id";

/// The rollups are complete, if they are still kept for `$1`.
pub const READY_SQL: &str = "update rollup_meta set ready = 1 where id = 1 and stale_after = $1";

const DELETE_TARGET_SQL: &str = "delete from rollups where target_id = $1";

/// A target's (`$1`) snapshots as holds, in time order (snapshots_target_time).
const TARGET_HOLDERS_SQL: &str = "select last_check, sync_status, stale_after from snapshots \
     where target_id = $1 order by last_check";

/// Days written per statement.
const DAYS_PER_STATEMENT: usize = 256;

/// What keeping the rollups for `stale_after` takes, given `rollup_meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// They are complete for it.
    Nothing,
    /// A rebuild for it was begun (elsewhere, or before a restart): rebuild every target again,
    /// which is idempotent, without resetting what another rebuild has done.
    Rebuild,
    /// Record the new default, then rebuild every target.
    Reset,
}

impl Keep {
    pub fn of(meta: Option<(i64, i64)>, stale_after: i64) -> Self {
        match meta {
            Some((kept_for, 1)) if kept_for == stale_after => Self::Nothing,
            Some((kept_for, _)) if kept_for == stale_after => Self::Rebuild,
            _ => Self::Reset,
        }
    }
}

/// Rebuilding one target's rollups from its raw snapshots, on a connection of either database.
#[allow(
    async_fn_in_trait,
    reason = "crate-private; callers know the concrete store"
)]
pub trait RebuildTarget {
    /// Replaces the target's rollups with what its snapshots say under `stale_after`.
    async fn rebuild_target(&mut self, target: i64, stale_after: i64) -> Result<(), StoreError>;
}

macro_rules! rebuild_target_for {
    ($connection:ty, $database:ty) => {
        impl RebuildTarget for $connection {
            async fn rebuild_target(
                &mut self,
                target: i64,
                stale_after: i64,
            ) -> Result<(), StoreError> {
                let holders: Vec<(i64, i64, Option<i64>)> = sqlx::query_as(TARGET_HOLDERS_SQL)
                    .bind(target)
                    .fetch_all(&mut *self)
                    .await?;
                let days = days_of(
                    holders
                        .into_iter()
                        .map(|(last_check, sync_status, stale_after)| Holder {
                            last_check,
                            sync_status,
                            stale_after,
                        }),
                    stale_after,
                );
                crate::store::episode_table::EpisodeWrites::recompute_episodes(
                    &mut *self,
                    target,
                    stale_after,
                )
                .await?;
                sqlx::query(DELETE_TARGET_SQL)
                    .bind(target)
                    .execute(&mut *self)
                    .await?;
                let days: Vec<(i64, DayTotals)> = days.into_iter().collect();
                for chunk in days.chunks(DAYS_PER_STATEMENT) {
                    let mut insert = sqlx::QueryBuilder::<$database>::new(
                        crate::store::sql::INSERT_ROLLUP_COLUMNS,
                    );
                    insert.push_values(chunk, |mut values, (day, totals)| {
                        values
                            .push_bind(target)
                            .push_bind(*day)
                            .push_bind(totals.checks)
                            .push_bind(totals.synced_ms)
                            .push_bind(totals.out_of_sync_ms)
                            .push_bind(totals.error_ms)
                            .push_bind(totals.stale_ms);
                    });
                    insert.build().execute(&mut *self).await?;
                }
                Ok(())
            }
        }
    };
}

rebuild_target_for!(sqlx::sqlite::SqliteConnection, sqlx::Sqlite);
rebuild_target_for!(sqlx::postgres::PgConnection, sqlx::Postgres);
