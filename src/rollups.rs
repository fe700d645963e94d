//! Per-target daily rollups: per UTC day, a target's checks and the time its closed holds (from
//! a snapshot's `last_check` to the next snapshot's) spent in each state, split exactly as
//! `stats::timeline` splits them. The target's open hold, after its latest snapshot, is in no
//! day: it grows with the clock. Pure functions; the store keeps the `rollups` table with them.

use std::collections::{BTreeMap, HashMap};

use crate::model::{SyncStatus, TargetState};

/// Milliseconds in a UTC day.
pub const DAY_MILLIS: i64 = 86_400_000;

/// The first millisecond of the UTC day holding `millis`.
pub fn day_start(millis: i64) -> i64 {
    millis.div_euclid(DAY_MILLIS) * DAY_MILLIS
}

/// The first day start at or after `millis`.
pub fn day_ceil(millis: i64) -> i64 {
    let start = day_start(millis);
    if start == millis {
        start
    } else {
        start.saturating_add(DAY_MILLIS)
    }
}

/// What one row of `rollups` holds: a target's checks and milliseconds per state over a day (or,
/// summed, over days). Deltas may be negative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct DayTotals {
    pub checks: i64,
    pub synced_ms: i64,
    pub out_of_sync_ms: i64,
    pub error_ms: i64,
    pub stale_ms: i64,
}

impl DayTotals {
    pub fn millis_mut(&mut self, state: TargetState) -> &mut i64 {
        match state {
            TargetState::Synced => &mut self.synced_ms,
            TargetState::OutOfSync => &mut self.out_of_sync_ms,
            TargetState::Error => &mut self.error_ms,
            TargetState::Stale => &mut self.stale_ms,
        }
    }

    pub fn add(&mut self, other: &Self) {
        self.checks += other.checks;
        self.synced_ms += other.synced_ms;
        self.out_of_sync_ms += other.out_of_sync_ms;
        self.error_ms += other.error_ms;
        self.stale_ms += other.stale_ms;
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// A snapshot as a hold sees it: when it began, the status it holds, its own stale-after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub last_check: i64,
    /// `SyncStatus` code.
    pub sync_status: i64,
    pub stale_after: Option<i64>,
}

/// Calls `add(day, state, millis)` for each day's share of `holder`'s hold from its
/// `last_check` until `until`: its status until its stale-after (its own, or
/// `default_stale_after` seconds) has passed, STALE after that, as `stats::timeline` counts it.
pub fn split_hold(
    holder: Holder,
    until: i64,
    default_stale_after: i64,
    mut add: impl FnMut(i64, TargetState, i64),
) {
    let start = holder.last_check;
    if start >= until {
        return;
    }
    let status = SyncStatus::from_code(holder.sync_status).unwrap_or(SyncStatus::Error);
    let stale_after = holder
        .stale_after
        .unwrap_or(default_stale_after)
        .saturating_mul(1000);
    let fresh_until = start.saturating_add(stale_after).clamp(start, until);
    for (from, to, state) in [
        (start, fresh_until, status.into()),
        (fresh_until, until, TargetState::Stale),
    ] {
        let mut at = from;
        while at < to {
            let day = day_start(at);
            let end = to.min(day.saturating_add(DAY_MILLIS));
            add(day, state, end - at);
            at = end;
        }
    }
}

/// A target's days from its snapshots in `last_check` order: what a rebuild writes.
pub fn days_of(
    snapshots: impl IntoIterator<Item = Holder>,
    default_stale_after: i64,
) -> BTreeMap<i64, DayTotals> {
    let mut days: BTreeMap<i64, DayTotals> = BTreeMap::new();
    let mut previous: Option<Holder> = None;
    for snapshot in snapshots {
        if let Some(previous) = previous {
            split_hold(
                previous,
                snapshot.last_check,
                default_stale_after,
                |day, state, millis| {
                    *days.entry(day).or_default().millis_mut(state) += millis;
                },
            );
        }
        days.entry(day_start(snapshot.last_check))
            .or_default()
            .checks += 1;
        previous = Some(snapshot);
    }
    days
}

/// Changes to the rollups made while a batch is placed, written with its snapshots.
#[derive(Debug, Default)]
pub struct RollupDeltas {
    /// The default stale-after the rollups are kept for (`rollup_meta`); `None`: no rollups.
    pub stale_after: Option<i64>,
    deltas: HashMap<(i64, i64), DayTotals>,
}

impl RollupDeltas {
    pub fn new(stale_after: Option<i64>) -> Self {
        Self {
            stale_after,
            deltas: HashMap::new(),
        }
    }

    /// A check of `target` at `last_check` was stored.
    pub fn check(&mut self, target: i64, last_check: i64) {
        if self.stale_after.is_some() {
            self.deltas
                .entry((target, day_start(last_check)))
                .or_default()
                .checks += 1;
        }
    }

    /// `holder` of `target` now holds until `until` (`sign` 1), or no longer does (`sign` -1).
    pub fn hold(&mut self, target: i64, holder: Holder, until: i64, sign: i64) {
        let Some(default) = self.stale_after else {
            return;
        };
        split_hold(holder, until, default, |day, state, millis| {
            *self
                .deltas
                .entry((target, day))
                .or_default()
                .millis_mut(state) += sign * millis;
        });
    }

    /// The changes to write, by target and day; none are left.
    pub fn take(&mut self) -> Vec<(i64, i64, DayTotals)> {
        let mut deltas: Vec<(i64, i64, DayTotals)> = self
            .deltas
            .drain()
            .filter(|(_, totals)| !totals.is_zero())
            .map(|((target, day), totals)| (target, day, totals))
            .collect();
        // One order for every writer: concurrent upserts lock rows in it.
        deltas.sort_unstable_by_key(|(target, day, _)| (*target, *day));
        deltas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn holder(last_check: i64, sync_status: i64, stale_after: Option<i64>) -> Holder {
        Holder {
            last_check,
            sync_status,
            stale_after,
        }
    }

    #[test]
    fn days_start_at_utc_midnight_before_and_after_the_epoch() {
        assert_eq!(day_start(0), 0);
        assert_eq!(day_start(DAY_MILLIS - 1), 0);
        assert_eq!(day_start(-1), -DAY_MILLIS);
        assert_eq!(day_ceil(1), DAY_MILLIS);
        assert_eq!(day_ceil(DAY_MILLIS), DAY_MILLIS);
    }

    #[test]
    fn a_hold_across_midnight_splits_by_day_and_goes_stale_after_its_stale_after() {
        // OUT_OF_SYNC at 22:00 with a 3 h stale-after, next check at 04:00 the day after.
        let days = days_of(
            [
                holder(22 * H, 1, Some(3 * 3600)),
                holder(DAY_MILLIS + 4 * H, 0, None),
            ],
            600,
        );
        assert_eq!(
            days[&0],
            DayTotals {
                checks: 1,
                out_of_sync_ms: 2 * H,
                ..DayTotals::default()
            }
        );
        assert_eq!(
            days[&DAY_MILLIS],
            DayTotals {
                checks: 1,
                out_of_sync_ms: H,
                stale_ms: 3 * H,
                ..DayTotals::default()
            }
        );
    }

    #[test]
    fn a_late_check_is_the_difference_of_holds() {
        let default = 600;
        let (p, x, n) = (
            holder(H, 0, None),
            holder(2 * H, 2, None),
            holder(DAY_MILLIS + H, 0, None),
        );
        let mut deltas = RollupDeltas::new(Some(default));
        for (target, snapshot) in [(1, p), (1, n)] {
            deltas.check(target, snapshot.last_check);
        }
        deltas.hold(1, p, n.last_check, 1);
        deltas.check(1, x.last_check);
        deltas.hold(1, p, n.last_check, -1);
        deltas.hold(1, p, x.last_check, 1);
        deltas.hold(1, x, n.last_check, 1);
        let written: BTreeMap<i64, DayTotals> = deltas
            .take()
            .into_iter()
            .map(|(_, day, totals)| (day, totals))
            .collect();
        assert_eq!(written, days_of([p, x, n], default));
    }
}
