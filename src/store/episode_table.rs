//! Materialised episodes: what the derivation of src/store/episodes.rs finds, kept in the
//! `episodes` and `episode_heads` tables as snapshots commit, so that a page of `/api/episodes`
//! reads the episodes it returns and not a walk per target.
//!
//! - `episodes` holds every *closed* episode of a target: a run of one status, or a STALE gap,
//!   keyed by `(started_at, first_snapshot_id)` as the page cursor is.
//! - `episode_heads` holds, per active (not retired) target, its current run: where it started,
//!   its first and last snapshot, and `stale_at`, when the last snapshot's state goes stale. What
//!   the clock makes of it is decided when a page is read: before `stale_at` an open run; after
//!   it a run that ended at `stale_at` (none if that is not after its start) and an open STALE
//!   episode from `max(stale_at, started_at)`.
//!
//! Both are kept for one default stale-after: the one in `rollup_meta`, with the daily rollups,
//! and complete when `rollup_meta.ready` is 1. The rollups' rebuild (src/store/rollups.rs)
//! rebuilds a target's episodes with its days, so a server started with another `--stale-after`
//! (or a database from before this table) rebuilds both in the background; until it is done,
//! `/api/episodes` derives episodes from the snapshots, as before.
//!
//! The write pipeline keeps them ([`EpisodeDeltas`], written once per batch):
//! - an **append** to an active target is a step of [`follow`] on the target's head: the same
//!   run goes on, or a status change or a gap closes it (one or two rows) and a new run begins.
//!   A batch reads the heads of its targets with one statement and writes its rows and heads
//!   with one statement each.
//! - anything else that moves episodes (a **late check**, a **retirement**, a **revival**, a
//!   target whose head is missing) **recomputes** that target with the derivation itself
//!   ([`crate::store::episodes::target_pieces`]), in the same transaction: it reads the target's
//!   history once, and it is rare.
//!
//! Retention recomputes the targets it pruned (the first episodes change with the snapshots that
//! are left), and `migrate-to` copies neither table: it marks the destination's rollups
//! incomplete, so it rebuilds both at its first start.

use std::collections::{BTreeSet, HashMap};

use crate::model::{SyncStatus, TargetState};
use crate::store::StoreError;
use crate::store::episodes::{self, DerivedPiece};

/// The code of a state in `episodes.state`: a status's own code, 3 for STALE.
pub fn state_code(state: TargetState) -> i64 {
    match state {
        TargetState::Synced => SyncStatus::Synced.code(),
        TargetState::OutOfSync => SyncStatus::OutOfSync.code(),
        TargetState::Error => SyncStatus::Error.code(),
        TargetState::Stale => 3,
    }
}

/// The state of a code of `episodes.state`.
pub fn state_of(code: i64) -> Result<TargetState, StoreError> {
    match code {
        3 => Ok(TargetState::Stale),
        code => SyncStatus::from_code(code)
            .map(TargetState::from)
            .ok_or_else(|| StoreError::corrupt(format!("unknown episode state code {code}"))),
    }
}

/// A target's current run, as `episode_heads` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Head {
    pub target_id: i64,
    pub sync_status: i64,
    pub started_at: i64,
    pub first_snapshot_id: i64,
    pub last_snapshot_id: i64,
    pub last_check: i64,
    pub stale_at: i64,
}

impl Head {
    /// Where the STALE episode after it starts.
    pub fn stale_start(&self) -> i64 {
        self.stale_at.max(self.started_at)
    }

    fn starting(target_id: i64, check: Check) -> Self {
        Self {
            target_id,
            sync_status: check.sync_status,
            started_at: check.last_check,
            first_snapshot_id: check.id,
            last_snapshot_id: check.id,
            last_check: check.last_check,
            stale_at: check.stale_at(),
        }
    }
}

/// A closed episode, as `episodes` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    pub target_id: i64,
    pub state: i64,
    pub started_at: i64,
    pub first_snapshot_id: i64,
    pub ended_at: i64,
    pub last_snapshot_id: i64,
}

/// An appended snapshot, its stale-after resolved (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub id: i64,
    pub last_check: i64,
    pub sync_status: i64,
    pub stale_after_ms: i64,
}

impl Check {
    fn stale_at(&self) -> i64 {
        self.last_check.saturating_add(self.stale_after_ms)
    }
}

/// The head after `check` is appended to a target whose current run is `head`, pushing the
/// episodes it closes onto `closed`; `None` (nothing pushed) when an append cannot tell, and the
/// target must be recomputed: the check is not after the head's last, or the run began after
/// its last snapshot's check (a revival's block).
///
/// As the derivation has it: the last snapshot's state holds until the check; longer than its
/// stale-after is a gap, which ends the run at `stale_at` and is a STALE episode until the
/// check; a gap or a status change begins a new run at the check.
pub fn follow(head: &Head, check: Check, closed: &mut Vec<Closed>) -> Option<Head> {
    if check.last_check <= head.last_check || head.started_at > head.last_check {
        return None;
    }
    let gap = check.last_check - head.last_check > head.stale_at - head.last_check;
    if !gap && check.sync_status == head.sync_status {
        return Some(Head {
            last_snapshot_id: check.id,
            last_check: check.last_check,
            stale_at: check.stale_at(),
            ..*head
        });
    }
    let run_end = if gap { head.stale_at } else { check.last_check };
    if run_end > head.started_at {
        closed.push(Closed {
            target_id: head.target_id,
            state: head.sync_status,
            started_at: head.started_at,
            first_snapshot_id: head.first_snapshot_id,
            ended_at: run_end,
            last_snapshot_id: head.last_snapshot_id,
        });
    }
    if gap {
        closed.push(Closed {
            target_id: head.target_id,
            state: state_code(TargetState::Stale),
            started_at: head.stale_start(),
            first_snapshot_id: head.last_snapshot_id,
            ended_at: check.last_check,
            last_snapshot_id: head.last_snapshot_id,
        });
    }
    Some(Head::starting(head.target_id, check))
}

/// A target's closed episodes and head from its derived episodes (in time order, computed with
/// the clock at its latest check, so that only its current run can be open).
pub fn materialise(target_id: i64, pieces: &[DerivedPiece]) -> (Vec<Closed>, Option<Head>) {
    let mut closed = Vec::with_capacity(pieces.len());
    let mut head = None;
    for piece in pieces {
        match piece.end {
            Some(ended_at) => closed.push(Closed {
                target_id,
                state: state_code(piece.state),
                started_at: piece.start,
                first_snapshot_id: piece.key_id,
                ended_at,
                last_snapshot_id: piece.last_id,
            }),
            None => {
                head = Some(Head {
                    target_id,
                    sync_status: piece.status.code(),
                    // An open STALE piece keeps its start; the run before it is stored closed.
                    started_at: piece.start,
                    first_snapshot_id: piece.key_id,
                    last_snapshot_id: piece.last_id,
                    last_check: piece.last_at,
                    stale_at: if piece.state == TargetState::Stale {
                        piece.start.min(piece.last_stale_at)
                    } else {
                        piece.last_stale_at
                    },
                })
            }
        }
    }
    (closed, head)
}

/// What a batch changes in the materialised episodes, written before it commits.
#[derive(Debug, Default)]
pub struct EpisodeDeltas {
    /// The default stale-after (seconds) they are kept for (`rollup_meta`); `None`: not kept.
    pub stale_after: Option<i64>,
    /// Appends to active targets, in order: `(target, had a snapshot before, check)`.
    appends: Vec<(i64, bool, i64, i64, i64, Option<i64>)>,
    recompute: BTreeSet<i64>,
}

impl EpisodeDeltas {
    pub fn new(stale_after: Option<i64>) -> Self {
        Self {
            stale_after,
            ..Self::default()
        }
    }

    /// Snapshot `id` of `target` was appended (newer than every check it had).
    pub fn append(
        &mut self,
        target: i64,
        had_previous: bool,
        id: i64,
        last_check: i64,
        sync_status: i64,
        stale_after: Option<i64>,
    ) {
        if self.stale_after.is_some() {
            self.appends.push((
                target,
                had_previous,
                id,
                last_check,
                sync_status,
                stale_after,
            ));
        }
    }

    /// The target's episodes moved in a way an append does not follow.
    pub fn recompute(&mut self, target: i64) {
        if self.stale_after.is_some() {
            self.recompute.insert(target);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.appends.is_empty() && self.recompute.is_empty()
    }
}

/// Inserts closed episodes (replacing a row at the same key).
const INSERT_EPISODES: &str = "insert into episodes \
     (target_id, state, started_at, first_snapshot_id, ended_at, last_snapshot_id) ";
const EPISODES_UPSERT: &str = " on conflict (target_id, started_at, first_snapshot_id) do update \
     set state = excluded.state, ended_at = excluded.ended_at, \
     last_snapshot_id = excluded.last_snapshot_id";
const INSERT_HEADS: &str = "insert into episode_heads (target_id, sync_status, started_at, \
     first_snapshot_id, last_snapshot_id, last_check, stale_at, stale_start) ";
const HEADS_UPSERT: &str = " on conflict (target_id) do update set \
     sync_status = excluded.sync_status, started_at = excluded.started_at, \
     first_snapshot_id = excluded.first_snapshot_id, last_snapshot_id = excluded.last_snapshot_id, \
     last_check = excluded.last_check, stale_at = excluded.stale_at, \
     stale_start = excluded.stale_start";
const SELECT_HEADS: &str = "select target_id, sync_status, started_at, first_snapshot_id, \
     last_snapshot_id, last_check, stale_at from episode_heads where target_id in (";
const DELETE_TARGET_EPISODES: &str = "delete from episodes where target_id = $1";
const DELETE_TARGET_HEAD: &str = "delete from episode_heads where target_id = $1";

/// Rows written per statement (at most 8 parameters a row).
const ROWS_PER_STATEMENT: usize = 1024;

/// Keeping the materialised episodes on a connection of either database, inside the caller's
/// transaction.
#[allow(
    async_fn_in_trait,
    reason = "crate-private; callers know the concrete store"
)]
pub trait EpisodeWrites {
    /// Writes a batch's changes; `deltas` is left empty.
    async fn write_episodes(&mut self, deltas: &mut EpisodeDeltas) -> Result<(), StoreError>;
    /// Replaces the target's episodes with what the derivation finds under `stale_after`
    /// (seconds).
    async fn recompute_episodes(&mut self, target: i64, stale_after: i64)
    -> Result<(), StoreError>;
    /// The targets of these snapshots (before retention removes them), sorted.
    async fn targets_of(&mut self, snapshots: &[i64]) -> Result<Vec<i64>, StoreError>;
    /// Recomputes these targets for the default recorded in `rollup_meta`, if there is one:
    /// after retention removed some of their snapshots.
    async fn recompute_targets(&mut self, targets: &[i64]) -> Result<(), StoreError>;
}

macro_rules! episode_writes_for {
    ($connection:ty, $database:ty, $write_rows:ident) => {
        /// Inserts closed episodes and upserts heads, `ROWS_PER_STATEMENT` a statement.
        async fn $write_rows(
            connection: &mut $connection,
            closed: &[Closed],
            heads: &[Head],
        ) -> Result<(), StoreError> {
            for chunk in closed.chunks(ROWS_PER_STATEMENT) {
                let mut insert = sqlx::QueryBuilder::<$database>::new(INSERT_EPISODES);
                insert.push_values(chunk, |mut values, row| {
                    values
                        .push_bind(row.target_id)
                        .push_bind(row.state)
                        .push_bind(row.started_at)
                        .push_bind(row.first_snapshot_id)
                        .push_bind(row.ended_at)
                        .push_bind(row.last_snapshot_id);
                });
                insert.push(EPISODES_UPSERT);
                insert.build().execute(&mut *connection).await?;
            }
            for chunk in heads.chunks(ROWS_PER_STATEMENT) {
                let mut upsert = sqlx::QueryBuilder::<$database>::new(INSERT_HEADS);
                upsert.push_values(chunk, |mut values, head| {
                    values
                        .push_bind(head.target_id)
                        .push_bind(head.sync_status)
                        .push_bind(head.started_at)
                        .push_bind(head.first_snapshot_id)
                        .push_bind(head.last_snapshot_id)
                        .push_bind(head.last_check)
                        .push_bind(head.stale_at)
                        .push_bind(head.stale_start());
                });
                upsert.push(HEADS_UPSERT);
                upsert.build().execute(&mut *connection).await?;
            }
            Ok(())
        }

        impl $crate::store::episode_table::EpisodeWrites for $connection {
            async fn write_episodes(
                &mut self,
                deltas: &mut EpisodeDeltas,
            ) -> Result<(), StoreError> {
                let Some(default) = deltas.stale_after else {
                    return Ok(());
                };
                let appends = std::mem::take(&mut deltas.appends);
                let mut recompute = std::mem::take(&mut deltas.recompute);
                let default_ms = default.saturating_mul(1000);
                // The heads of the targets appended to, with one statement per chunk.
                let mut wanted: Vec<i64> = appends
                    .iter()
                    .filter(|append| append.1 && !recompute.contains(&append.0))
                    .map(|append| append.0)
                    .collect();
                wanted.sort_unstable();
                wanted.dedup();
                let mut heads: HashMap<i64, Head> = HashMap::with_capacity(wanted.len());
                for chunk in wanted.chunks(ROWS_PER_STATEMENT) {
                    let mut select = sqlx::QueryBuilder::<$database>::new(SELECT_HEADS);
                    let mut ids = select.separated(", ");
                    for id in chunk {
                        ids.push_bind(*id);
                    }
                    select.push(")");
                    let rows: Vec<Head> = select.build_query_as().fetch_all(&mut *self).await?;
                    heads.extend(rows.into_iter().map(|head| (head.target_id, head)));
                }
                let mut closed = Vec::new();
                let mut moved: BTreeSet<i64> = BTreeSet::new();
                for (target, had_previous, id, last_check, sync_status, stale_after) in appends {
                    if recompute.contains(&target) {
                        continue;
                    }
                    let check = Check {
                        id,
                        last_check,
                        sync_status,
                        stale_after_ms: stale_after
                            .map_or(default_ms, |seconds| seconds.saturating_mul(1000)),
                    };
                    let next = match (had_previous, heads.get(&target)) {
                        (false, _) => Some(Head::starting(target, check)),
                        (true, Some(head)) => follow(head, check, &mut closed),
                        (true, None) => None,
                    };
                    match next {
                        Some(next) => {
                            heads.insert(target, next);
                            moved.insert(target);
                        }
                        None => {
                            recompute.insert(target);
                        }
                    }
                }
                closed.retain(|row| !recompute.contains(&row.target_id));
                let heads: Vec<Head> = moved
                    .iter()
                    .filter(|target| !recompute.contains(target))
                    .filter_map(|target| heads.get(target).copied())
                    .collect();
                $write_rows(self, &closed, &heads).await?;
                for target in recompute {
                    self.recompute_episodes(target, default).await?;
                }
                Ok(())
            }

            async fn recompute_episodes(
                &mut self,
                target: i64,
                stale_after: i64,
            ) -> Result<(), StoreError> {
                let pieces =
                    episodes::target_pieces(&mut *self, target, stale_after.saturating_mul(1000))
                        .await?;
                let (closed, head) = materialise(target, &pieces);
                sqlx::query(DELETE_TARGET_EPISODES)
                    .bind(target)
                    .execute(&mut *self)
                    .await?;
                sqlx::query(DELETE_TARGET_HEAD)
                    .bind(target)
                    .execute(&mut *self)
                    .await?;
                let heads: Vec<Head> = head.into_iter().collect();
                $write_rows(self, &closed, &heads).await
            }

            async fn targets_of(&mut self, snapshots: &[i64]) -> Result<Vec<i64>, StoreError> {
                let mut targets = Vec::new();
                for chunk in snapshots.chunks(ROWS_PER_STATEMENT) {
                    let mut select = sqlx::QueryBuilder::<$database>::new(
                        "select distinct target_id from snapshots where id in (",
                    );
                    let mut ids = select.separated(", ");
                    for id in chunk {
                        ids.push_bind(*id);
                    }
                    select.push(")");
                    let found: Vec<i64> = select.build_query_scalar().fetch_all(&mut *self).await?;
                    targets.extend(found);
                }
                targets.sort_unstable();
                targets.dedup();
                Ok(targets)
            }

            async fn recompute_targets(&mut self, targets: &[i64]) -> Result<(), StoreError> {
                if targets.is_empty() {
                    return Ok(());
                }
                let meta: Option<(i64, i64)> = sqlx::query_as(crate::store::sql::ROLLUP_META_SQL)
                    .fetch_optional(&mut *self)
                    .await?;
                if let Some((stale_after, _)) = meta {
                    for target in targets {
                        self.recompute_episodes(*target, stale_after).await?;
                    }
                }
                Ok(())
            }
        }
    };
}

episode_writes_for!(
    sqlx::sqlite::SqliteConnection,
    sqlx::Sqlite,
    write_rows_sqlite
);
episode_writes_for!(
    sqlx::postgres::PgConnection,
    sqlx::Postgres,
    write_rows_postgres
);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: i64, last_check: i64, sync_status: i64) -> Check {
        Check {
            id,
            last_check,
            sync_status,
            stale_after_ms: 100,
        }
    }

    #[test]
    fn a_run_goes_on_until_a_status_change_or_a_gap_closes_it() {
        let head = Head::starting(7, check(1, 1000, 0));
        let mut closed = Vec::new();
        let head = follow(&head, check(2, 1050, 0), &mut closed).unwrap();
        assert!(closed.is_empty());
        assert_eq!((head.first_snapshot_id, head.last_snapshot_id), (1, 2));
        // A status change: the run ends at the check.
        let head = follow(&head, check(3, 1100, 1), &mut closed).unwrap();
        assert_eq!(
            closed,
            [Closed {
                target_id: 7,
                state: 0,
                started_at: 1000,
                first_snapshot_id: 1,
                ended_at: 1100,
                last_snapshot_id: 2,
            }]
        );
        closed.clear();
        // A gap: the run ends at stale_at, STALE until the check, the same status runs again.
        let head = follow(&head, check(4, 1300, 1), &mut closed).unwrap();
        assert_eq!(
            closed
                .iter()
                .map(|c| (c.state, c.started_at, c.ended_at))
                .collect::<Vec<_>>(),
            [(1, 1100, 1200), (3, 1200, 1300)]
        );
        assert_eq!((head.started_at, head.first_snapshot_id), (1300, 4));
        // A late check, or a run that began after its last check, is not followed.
        assert_eq!(follow(&head, check(5, 1300, 1), &mut closed), None);
        let revived = Head {
            started_at: 2000,
            ..head
        };
        assert_eq!(follow(&revived, check(6, 2100, 1), &mut closed), None);
    }
}
