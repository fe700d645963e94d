//! What `/api/stats` reads, the same way on both stores: each target's snapshots over a window
//! and the state it entered it in. Per target: one seek for the snapshot before the window, one
//! range over snapshots_target_time, and when the window opens mid-drift, a walk back over
//! snapshots_target_changes to the episode's start. Per request: the acknowledgements and
//! silences in force during the window and every retirement, which people make, so they are few.
//! Each store answers the reads (`StatsReads`) inside one read transaction.

use std::collections::HashMap;

use serde::Deserialize;
use wildmatch::WildMatch;

use crate::model::SyncStatus;
use crate::rollups::{DayTotals, day_ceil, day_start};
use crate::stats::{
    AckSpan, Carried, Check, RawPart, RolledTarget, Span, StatsInput, StatsRequest, TargetHistory,
    union,
};
use crate::store::StoreError;
use crate::store::rules::STATUS_CHANGED;
use crate::timestamp::Timestamp;

/// What the stats read of a snapshot.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct CheckRow {
    pub last_check: i64,
    pub sync_status: i64,
    pub stale_after: Option<i64>,
    pub fileset_id: Option<i64>,
}

/// What the stats read of a transition.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct TransitionRow {
    pub last_check: i64,
    pub change: i64,
    pub fileset_id: Option<i64>,
}

/// A snapshot of some target, as the batched reads of the rolled-up path return it.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct TargetCheckRow {
    pub target_id: i64,
    pub last_check: i64,
    pub sync_status: i64,
    pub stale_after: Option<i64>,
    pub fileset_id: Option<i64>,
}

impl TargetCheckRow {
    fn check(self) -> CheckRow {
        CheckRow {
            last_check: self.last_check,
            sync_status: self.sync_status,
            stale_after: self.stale_after,
            fileset_id: self.fileset_id,
        }
    }
}

/// A target's rollups summed over days.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct RollupSumRow {
    pub target_id: i64,
    #[sqlx(flatten)]
    pub totals: DayTotals,
}

/// A target the stats cover.
#[derive(Debug, sqlx::FromRow)]
pub struct StatsTarget {
    pub id: i64,
    pub repo: String,
    pub server: String,
}

/// What the stats read of an acknowledgement.
#[derive(Debug, sqlx::FromRow)]
pub struct AckRow {
    pub target_id: i64,
    pub created_at: i64,
    pub until: i64,
    pub ended_at: Option<i64>,
    /// JSON array of glob patterns, or null.
    pub files: Option<String>,
}

/// What the stats read of a silence.
#[derive(Debug, sqlx::FromRow)]
pub struct SilenceRow {
    pub id: i64,
    /// JSON arrays of glob patterns.
    pub repos: String,
    pub servers: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub deleted_at: Option<i64>,
}

/// What the stats read of a `retire` or `revive` event.
#[derive(Debug, sqlx::FromRow)]
pub struct LifecycleRow {
    pub target_id: i64,
    pub kind: String,
    pub at: i64,
    pub body: String,
}

/// `StatsReads::acks`: acknowledgements in force at some time of `[from, to)`, `$1`, `$2`. Few
/// rows: people make them.
pub const ACKS_SQL: &str = "select target_id, created_at, until, ended_at, files from acks \
     where created_at < $2 and coalesce(ended_at, until) > $1 order by target_id, id";

/// `StatsReads::silences`: silences in force at some time of `[from, to)`, `$1`, `$2`
/// (silences_ends).
pub const SILENCES_SQL: &str = "select id, repos, servers, starts_at, ends_at, deleted_at \
     from silences where ends_at > $1 and starts_at < $2 order by id";

/// `StatsReads::retirements`: every retirement and revival, each target's in chain order.
pub const RETIREMENTS_SQL: &str = "select target_id, kind, at, body from events \
     where target_id is not null and kind in ('retire', 'revive') order by target_id, id";

/// `StatsReads::snapshot_check`: the `last_check` of snapshot `$1`.
pub const SNAPSHOT_CHECK_SQL: &str = "select last_check from snapshots where id = $1";

/// `StatsReads::before`: target `$1`, `from` `$2`. Both databases take `$N` placeholders.
pub const BEFORE_SQL: &str = "select last_check, sync_status, stale_after, fileset_id \
     from snapshots where target_id = $1 and last_check < $2 order by last_check desc limit 1";

/// `StatsReads::window`: target `$1`, `[from, to)` `$2`, `$3`.
pub const WINDOW_SQL: &str = "select last_check, sync_status, stale_after, fileset_id \
     from snapshots where target_id = $1 and last_check >= $2 and last_check < $3 \
     order by last_check";

/// `StatsReads::episode`: the target's (`$1`) transitions at or before `$2`, newest first.
pub const EPISODE_SQL: &str = "select last_check, change, fileset_id from snapshots \
     where target_id = $1 and change != 0 and last_check <= $2 order by last_check desc";

/// `StatsReads::fileset`: the names of file set `$1`.
pub const FILESET_SQL: &str = "select files from filesets where id = $1";

/// `StatsReads::rollup_sums`: every target's rollups over the days `[$1, $2)`, one seek per
/// target on the primary key.
pub const ROLLUP_SUMS_SQL: &str = "select t.id as target_id, cast(sum(r.checks) as bigint) as checks, \
     cast(sum(r.synced_ms) as bigint) as synced_ms, \
     cast(sum(r.out_of_sync_ms) as bigint) as out_of_sync_ms, \
     cast(sum(r.error_ms) as bigint) as error_ms, cast(sum(r.stale_ms) as bigint) as stale_ms \
     from targets t join rollups r on r.target_id = t.id and r.day >= $1 and r.day < $2 \
     group by t.id";

/// `StatsReads::windows`: every target's snapshots with `last_check` in `[$1, $2)`, a range of
/// snapshots_target_time per target.
pub const WINDOWS_SQL: &str = "select s.target_id, s.last_check, s.sync_status, s.stale_after, \
     s.fileset_id from targets t join snapshots s on s.target_id = t.id \
     where s.last_check >= $1 and s.last_check < $2 order by s.target_id, s.last_check";

/// `StatsReads::transitions`: every target's transitions with `last_check` in `[$1, $2)`, a
/// range of snapshots_target_changes per target.
pub const TRANSITIONS_SQL: &str = "select s.target_id, s.last_check, s.sync_status, \
     s.stale_after, s.fileset_id from targets t join snapshots s on s.target_id = t.id \
     where s.change != 0 and s.last_check >= $1 and s.last_check < $2 \
     order by s.target_id, s.last_check";

/// `StatsReads::latest_checks`: every target's latest `last_check`, one seek per target.
pub const LATEST_CHECKS_SQL: &str = "select t.id, (select max(l.last_check) from snapshots l \
     where l.target_id = t.id) from targets t";

/// Whether a transition (`change`) is where an episode began: bit 1, the status changed.
pub fn starts_episode(change: i64) -> bool {
    change & STATUS_CHANGED != 0
}

/// The reads behind `/api/stats`, answered by each store.
#[allow(
    async_fn_in_trait,
    reason = "crate-private; callers know the concrete store"
)]
pub trait StatsReads {
    /// The matching targets, sorted by repo then server.
    async fn targets(&mut self, request: &StatsRequest) -> Result<Vec<StatsTarget>, StoreError>;
    /// The target's last snapshot before `from`.
    async fn before(&mut self, target: i64, from: i64) -> Result<Option<CheckRow>, StoreError>;
    /// The target's snapshots with `last_check` in `[from, to)`, in order.
    async fn window(
        &mut self,
        target: i64,
        from: i64,
        to: i64,
    ) -> Result<Vec<CheckRow>, StoreError>;
    /// The target's transitions at or before `at`, newest first, down to and including the
    /// first whose status changed (bit 1 of `change`).
    async fn episode(&mut self, target: i64, at: i64) -> Result<Vec<TransitionRow>, StoreError>;
    /// A file set's JSON array of names.
    async fn fileset(&mut self, id: i64) -> Result<String, StoreError>;
    /// Every target's acknowledgements in force at some time of `[from, to)`.
    async fn acks(&mut self, from: i64, to: i64) -> Result<Vec<AckRow>, StoreError>;
    /// The silences in force at some time of `[from, to)`.
    async fn silences(&mut self, from: i64, to: i64) -> Result<Vec<SilenceRow>, StoreError>;
    /// Every `retire` and `revive` event, by target, in chain order.
    async fn retirements(&mut self) -> Result<Vec<LifecycleRow>, StoreError>;
    /// A snapshot's `last_check`, if it is still stored.
    async fn snapshot_check(&mut self, id: i64) -> Result<Option<i64>, StoreError>;
    /// The default stale-after the rollups are kept for, and whether they are complete.
    async fn rollup_meta(&mut self) -> Result<Option<(i64, i64)>, StoreError>;
    /// Every target's rollups summed over the days `[from, to)`.
    async fn rollup_sums(&mut self, from: i64, to: i64) -> Result<Vec<RollupSumRow>, StoreError>;
    /// Every target's last snapshot before `at`.
    async fn befores(&mut self, at: i64) -> Result<Vec<TargetCheckRow>, StoreError>;
    /// Every target's snapshots in `[from, to)`, by target then `last_check`.
    async fn windows(&mut self, from: i64, to: i64) -> Result<Vec<TargetCheckRow>, StoreError>;
    /// Every target's transitions in `[from, to)`, by target then `last_check`.
    async fn transitions(&mut self, from: i64, to: i64) -> Result<Vec<TargetCheckRow>, StoreError>;
    /// Every target's latest `last_check`.
    async fn latest_checks(&mut self) -> Result<HashMap<i64, i64>, StoreError>;
}

/// File sets by id, read once per request.
#[derive(Debug, Default)]
struct Filesets(HashMap<i64, Vec<String>>);

impl Filesets {
    async fn names(
        &mut self,
        reads: &mut impl StatsReads,
        id: Option<i64>,
    ) -> Result<Vec<String>, StoreError> {
        let Some(id) = id else {
            return Ok(Vec::new());
        };
        if let Some(names) = self.0.get(&id) {
            return Ok(names.clone());
        }
        let json = reads.fileset(id).await?;
        let names: Vec<String> = serde_json::from_str(&json)
            .map_err(|error| StoreError::corrupt(format!("file set {id}: {error}")))?;
        self.0.insert(id, names.clone());
        Ok(names)
    }

    async fn check(
        &mut self,
        reads: &mut impl StatsReads,
        row: CheckRow,
    ) -> Result<Check, StoreError> {
        let code = row.sync_status;
        let sync_status = SyncStatus::from_code(code)
            .ok_or_else(|| StoreError::corrupt(format!("unknown sync_status code {code}")))?;
        let files = self.names(reads, row.fileset_id).await?;
        Ok(Check {
            last_check: Timestamp::from_millis(row.last_check),
            sync_status,
            stale_after_seconds: row.stale_after,
            files,
        })
    }

    async fn checks(
        &mut self,
        reads: &mut impl StatsReads,
        rows: Vec<CheckRow>,
    ) -> Result<Vec<Check>, StoreError> {
        let mut checks = Vec::with_capacity(rows.len());
        for row in rows {
            checks.push(self.check(reads, row).await?);
        }
        Ok(checks)
    }

    /// The snapshot before a part of the window, as its time needs it (no episode).
    async fn plain(
        &mut self,
        reads: &mut impl StatsReads,
        row: Option<CheckRow>,
    ) -> Result<Option<Carried>, StoreError> {
        let Some(row) = row else { return Ok(None) };
        let check = self.check(reads, row).await?;
        Ok(Some(Carried {
            episode_start: check.last_check,
            episode_files: Vec::new(),
            check,
        }))
    }
}

/// Every matching target's history over the window, sorted by repo then server.
pub async fn histories(
    reads: &mut impl StatsReads,
    request: &StatsRequest,
) -> Result<Vec<TargetHistory>, StoreError> {
    let (from, to) = (request.from.as_millis(), request.to.as_millis());
    let mut acks = acks_by_target(reads.acks(from, to).await?)?;
    let silences = Silence::parse_all(reads.silences(from, to).await?)?;
    let mut retirements = retirements_by_target(reads).await?;
    let mut filesets = Filesets::default();
    let mut histories = Vec::new();
    for StatsTarget {
        id: target,
        repo,
        server,
    } in reads.targets(request).await?
    {
        let before = reads.before(target, from).await?;
        let rows = reads.window(target, from, to).await?;
        if before.is_none() && rows.is_empty() {
            continue;
        }
        let before = match before {
            None => None,
            Some(row) => Some(carried(reads, &mut filesets, target, row).await?),
        };
        let mut checks = Vec::with_capacity(rows.len());
        for row in rows {
            checks.push(filesets.check(reads, row).await?);
        }
        let silences = silences
            .iter()
            .filter(|silence| silence.matches(&repo, &server))
            .map(|silence| silence.span)
            .collect();
        histories.push(TargetHistory {
            repo,
            server,
            before,
            checks,
            acks: acks.remove(&target).unwrap_or_default(),
            silences,
            retired: retirements.remove(&target).unwrap_or_default(),
        });
    }
    Ok(histories)
}

/// Which way `/api/stats` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsPath {
    /// From the daily rollups when they are complete for this default stale-after (seconds) and
    /// the window holds a whole day; raw snapshots otherwise.
    Rollups { default_stale_after: i64 },
    /// Raw snapshots only: what the rollups must agree with.
    Raw,
}

/// What `/api/stats` needs of the matching targets over the request's window, judged at `now`.
pub async fn input(
    reads: &mut impl StatsReads,
    request: &StatsRequest,
    now: Timestamp,
    path: StatsPath,
) -> Result<StatsInput, StoreError> {
    if let StatsPath::Rollups {
        default_stale_after,
    } = path
    {
        let ready = reads.rollup_meta().await? == Some((default_stale_after, 1));
        let end = request.to.as_millis().min(now.as_millis());
        let days = Span {
            start: day_ceil(request.from.as_millis()),
            end: day_start(end),
        };
        if ready && days.start < days.end {
            return Ok(StatsInput::Rolled(rolled(reads, request, days).await?));
        }
    }
    Ok(StatsInput::Raw(histories(reads, request).await?))
}

/// Rows of many targets, by target.
fn by_target(rows: Vec<TargetCheckRow>) -> HashMap<i64, Vec<CheckRow>> {
    let mut grouped: HashMap<i64, Vec<CheckRow>> = HashMap::new();
    for row in rows {
        grouped.entry(row.target_id).or_default().push(row.check());
    }
    grouped
}

/// The parts of `union` (sorted, disjoint) within `days`.
fn within(union: Vec<Span>, days: Span) -> Vec<Span> {
    union
        .into_iter()
        .map(|span| Span {
            start: span.start.max(days.start),
            end: span.end.min(days.end),
        })
        .filter(|span| span.start < span.end)
        .collect()
}

/// Every matching target's window from the rollups of its whole `days` and raw snapshots around
/// them, sorted by repo then server. A handful of statements for the whole fleet (each a seek or
/// a range per target), plus per target a few for the stretches of the days that retirements,
/// acknowledgements and silences cover, which people make, so they are few.
async fn rolled(
    reads: &mut impl StatsReads,
    request: &StatsRequest,
    days: Span,
) -> Result<Vec<RolledTarget>, StoreError> {
    let (from, to) = (request.from.as_millis(), request.to.as_millis());
    let mut acks = acks_by_target(reads.acks(from, to).await?)?;
    let silences = Silence::parse_all(reads.silences(from, to).await?)?;
    let mut retirements = retirements_by_target(reads).await?;
    let mut filesets = Filesets::default();
    let targets = reads.targets(request).await?;
    let mut sums: HashMap<i64, DayTotals> = reads
        .rollup_sums(days.start, days.end)
        .await?
        .into_iter()
        .map(|row| (row.target_id, row.totals))
        .collect();
    let mut before_from: HashMap<i64, CheckRow> = reads
        .befores(from)
        .await?
        .into_iter()
        .map(|row| (row.target_id, row.check()))
        .collect();
    let mut before_right: HashMap<i64, CheckRow> = reads
        .befores(days.end)
        .await?
        .into_iter()
        .map(|row| (row.target_id, row.check()))
        .collect();
    let mut left = if from < days.start {
        by_target(reads.windows(from, days.start).await?)
    } else {
        HashMap::new()
    };
    let mut right = by_target(reads.windows(days.end, to).await?);
    let mut transitions = by_target(reads.transitions(from, to).await?);
    let latest = reads.latest_checks().await?;

    let mut rolled = Vec::new();
    for StatsTarget {
        id: target,
        repo,
        server,
    } in targets
    {
        let totals = sums.remove(&target).unwrap_or_default();
        let before = before_from.remove(&target);
        let left_rows = left.remove(&target).unwrap_or_default();
        let right_rows = right.remove(&target).unwrap_or_default();
        if before.is_none() && left_rows.is_empty() && right_rows.is_empty() && totals.checks == 0 {
            continue;
        }
        let acks = acks.remove(&target).unwrap_or_default();
        let silences: Vec<Span> = silences
            .iter()
            .filter(|silence| silence.matches(&repo, &server))
            .map(|silence| silence.span)
            .collect();
        let retired = retirements.remove(&target).unwrap_or_default();
        let history = |before: Option<Carried>, checks: Vec<Check>| TargetHistory {
            repo: repo.clone(),
            server: server.clone(),
            before,
            checks,
            acks: acks.clone(),
            silences: silences.clone(),
            retired: retired.clone(),
        };

        let mut edges = Vec::new();
        if from < days.start {
            let before = filesets.plain(reads, before).await?;
            let checks = filesets.checks(reads, left_rows).await?;
            edges.push(RawPart {
                from: request.from,
                to: Timestamp::from_millis(days.start),
                history: history(before, checks),
            });
        }
        let before_end = before_right.remove(&target);
        let open = match (latest.get(&target), before_end) {
            (Some(latest), Some(row)) if *latest < days.end => {
                Some(filesets.check(reads, row).await?)
            }
            _ => None,
        };
        if days.end < to {
            let before = filesets.plain(reads, before_end).await?;
            let checks = filesets.checks(reads, right_rows).await?;
            edges.push(RawPart {
                from: Timestamp::from_millis(days.end),
                to: request.to,
                history: history(before, checks),
            });
        }

        let mut retired_parts = Vec::new();
        for span in within(union(retired.iter().copied()), days) {
            let (before, checks) = raw_part(reads, &mut filesets, target, span).await?;
            retired_parts.push(RawPart {
                from: Timestamp::from_millis(span.start),
                to: Timestamp::from_millis(span.end),
                history: TargetHistory {
                    acks: Vec::new(),
                    silences: Vec::new(),
                    retired: Vec::new(),
                    ..history(before, checks)
                },
            });
        }
        let mut covered = Vec::new();
        let covering = union(
            acks.iter()
                .map(|ack| ack.span)
                .chain(silences.iter().copied()),
        );
        for span in within(covering, days) {
            let (before, checks) = raw_part(reads, &mut filesets, target, span).await?;
            covered.push(RawPart {
                from: Timestamp::from_millis(span.start),
                to: Timestamp::from_millis(span.end),
                history: history(before, checks),
            });
        }

        let carried_episode = match before {
            None => None,
            Some(row) => Some(carried(reads, &mut filesets, target, row).await?),
        };
        let changes = filesets
            .checks(reads, transitions.remove(&target).unwrap_or_default())
            .await?;
        let episodes = TargetHistory {
            acks: Vec::new(),
            silences: Vec::new(),
            ..history(carried_episode, changes)
        };
        rolled.push(RolledTarget {
            repo: repo.clone(),
            server: server.clone(),
            edges,
            days: totals,
            days_span: days,
            open,
            retired: retired_parts,
            covered,
            episodes,
        });
    }
    Ok(rolled)
}

/// A target's snapshot before `span` and its snapshots in it.
async fn raw_part(
    reads: &mut impl StatsReads,
    filesets: &mut Filesets,
    target: i64,
    span: Span,
) -> Result<(Option<Carried>, Vec<Check>), StoreError> {
    let before = reads.before(target, span.start).await?;
    let before = filesets.plain(reads, before).await?;
    let rows = reads.window(target, span.start, span.end).await?;
    Ok((before, filesets.checks(reads, rows).await?))
}

/// A JSON array of strings as stored in `what`.
fn string_list(json: &str, what: impl FnOnce() -> String) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(json).map_err(|error| StoreError::corrupt(format!("{}: {error}", what())))
}

fn acks_by_target(rows: Vec<AckRow>) -> Result<HashMap<i64, Vec<AckSpan>>, StoreError> {
    let mut acks: HashMap<i64, Vec<AckSpan>> = HashMap::new();
    for row in rows {
        let files = match &row.files {
            Some(json) => Some(string_list(json, || {
                format!(
                    "the files of an acknowledgement of target {}",
                    row.target_id
                )
            })?),
            None => None,
        };
        acks.entry(row.target_id).or_default().push(AckSpan {
            span: Span::acknowledged(row.created_at, row.until, row.ended_at),
            files,
        });
    }
    Ok(acks)
}

/// A silence with its globs ready to match targets.
struct Silence {
    repos: Vec<WildMatch>,
    servers: Vec<WildMatch>,
    span: Span,
}

impl Silence {
    fn parse_all(rows: Vec<SilenceRow>) -> Result<Vec<Self>, StoreError> {
        let globs = |json: &str, id: i64| -> Result<Vec<WildMatch>, StoreError> {
            let patterns = string_list(json, || format!("the globs of silence {id}"))?;
            Ok(patterns.iter().map(|glob| WildMatch::new(glob)).collect())
        };
        rows.into_iter()
            .map(|row| {
                Ok(Self {
                    repos: globs(&row.repos, row.id)?,
                    servers: globs(&row.servers, row.id)?,
                    span: Span::silenced(row.starts_at, row.ends_at, row.deleted_at),
                })
            })
            .collect()
    }

    /// Whether one of its repo globs matches `repo` and one of its server globs `server`.
    fn matches(&self, repo: &str, server: &str) -> bool {
        self.repos.iter().any(|glob| glob.matches(repo))
            && self.servers.iter().any(|glob| glob.matches(server))
    }
}

/// What a `revive` event's body says (docs/audit.md "Events").
#[derive(Debug, Deserialize)]
struct Revival {
    /// The snapshot that revived the target.
    snapshot: i64,
}

/// Each target's retirements (`Span::retired`): a `retire` event until the `last_check` of the
/// snapshot its next `revive` event names (the revival's own time when retention removed that
/// snapshot).
async fn retirements_by_target(
    reads: &mut impl StatsReads,
) -> Result<HashMap<i64, Vec<Span>>, StoreError> {
    let mut spans: HashMap<i64, Vec<Span>> = HashMap::new();
    // The retirement of the target being read that no revival has ended yet.
    let mut open: Option<(i64, i64)> = None;
    for row in reads.retirements().await? {
        if let Some((target, retired_at)) = open.filter(|(target, _)| *target != row.target_id) {
            spans
                .entry(target)
                .or_default()
                .push(Span::retired(retired_at, None));
            open = None;
        }
        match row.kind.as_str() {
            "retire" => {
                if open.is_none() {
                    open = Some((row.target_id, row.at));
                }
            }
            _ => {
                let Some((target, retired_at)) = open.take() else {
                    continue;
                };
                let revival: Revival = serde_json::from_str(&row.body).map_err(|error| {
                    StoreError::corrupt(format!("a revival of target {target}: {error}"))
                })?;
                let revived_check = reads.snapshot_check(revival.snapshot).await?;
                spans.entry(target).or_default().push(Span::retired(
                    retired_at,
                    Some(revived_check.unwrap_or(row.at)),
                ));
            }
        }
    }
    if let Some((target, retired_at)) = open {
        spans
            .entry(target)
            .or_default()
            .push(Span::retired(retired_at, None));
    }
    Ok(spans)
}

/// The snapshot before the window; when it is OUT_OF_SYNC, its episode's start and files, from
/// the transitions back to the one that entered OUT_OF_SYNC.
async fn carried(
    reads: &mut impl StatsReads,
    filesets: &mut Filesets,
    target: i64,
    row: CheckRow,
) -> Result<Carried, StoreError> {
    let check = filesets.check(reads, row).await?;
    let mut episode_start = check.last_check;
    let mut episode_files = Vec::new();
    if check.sync_status == SyncStatus::OutOfSync {
        for transition in reads.episode(target, row.last_check).await? {
            episode_start = Timestamp::from_millis(transition.last_check);
            episode_files.extend(filesets.names(reads, transition.fileset_id).await?);
        }
    }
    Ok(Carried {
        check,
        episode_start,
        episode_files,
    })
}

/// `StatsReads` for a connection type of `$database`: the same statements on either, but for
/// `$befores`, every target's last snapshot before `$1`, which each database seeks its own way.
macro_rules! stats_reads_for {
    ($connection:ty, $database:ty, $befores:expr) => {
        impl StatsReads for $connection {
            async fn rollup_meta(&mut self) -> Result<Option<(i64, i64)>, StoreError> {
                Ok(sqlx::query_as(crate::store::sql::ROLLUP_META_SQL)
                    .fetch_optional(self)
                    .await?)
            }

            async fn rollup_sums(
                &mut self,
                from: i64,
                to: i64,
            ) -> Result<Vec<RollupSumRow>, StoreError> {
                Ok(sqlx::query_as(ROLLUP_SUMS_SQL)
                    .bind(from)
                    .bind(to)
                    .fetch_all(self)
                    .await?)
            }

            async fn befores(&mut self, at: i64) -> Result<Vec<TargetCheckRow>, StoreError> {
                Ok(sqlx::query_as($befores).bind(at).fetch_all(self).await?)
            }

            async fn windows(
                &mut self,
                from: i64,
                to: i64,
            ) -> Result<Vec<TargetCheckRow>, StoreError> {
                Ok(sqlx::query_as(WINDOWS_SQL)
                    .bind(from)
                    .bind(to)
                    .fetch_all(self)
                    .await?)
            }

            async fn transitions(
                &mut self,
                from: i64,
                to: i64,
            ) -> Result<Vec<TargetCheckRow>, StoreError> {
                Ok(sqlx::query_as(TRANSITIONS_SQL)
                    .bind(from)
                    .bind(to)
                    .fetch_all(self)
                    .await?)
            }

            async fn latest_checks(&mut self) -> Result<HashMap<i64, i64>, StoreError> {
                let rows: Vec<(i64, Option<i64>)> =
                    sqlx::query_as(LATEST_CHECKS_SQL).fetch_all(self).await?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(target, latest)| Some((target, latest?)))
                    .collect())
            }

            async fn targets(
                &mut self,
                request: &StatsRequest,
            ) -> Result<Vec<StatsTarget>, StoreError> {
                let mut targets = sqlx::QueryBuilder::<$database>::new(
                    "select id, repo, server from targets where 1 = 1",
                );
                if let Some(repo) = &request.repo {
                    targets.push(" and repo = ").push_bind(repo.clone());
                }
                if let Some(server) = &request.server {
                    targets.push(" and server = ").push_bind(server.clone());
                }
                targets.push(" order by repo, server");
                Ok(targets.build_query_as().fetch_all(self).await?)
            }

            async fn before(
                &mut self,
                target: i64,
                from: i64,
            ) -> Result<Option<CheckRow>, StoreError> {
                Ok(sqlx::query_as(BEFORE_SQL)
                    .bind(target)
                    .bind(from)
                    .fetch_optional(self)
                    .await?)
            }

            async fn window(
                &mut self,
                target: i64,
                from: i64,
                to: i64,
            ) -> Result<Vec<CheckRow>, StoreError> {
                Ok(sqlx::query_as(WINDOW_SQL)
                    .bind(target)
                    .bind(from)
                    .bind(to)
                    .fetch_all(self)
                    .await?)
            }

            async fn episode(
                &mut self,
                target: i64,
                at: i64,
            ) -> Result<Vec<TransitionRow>, StoreError> {
                let mut rows = sqlx::query_as::<_, TransitionRow>(EPISODE_SQL)
                    .bind(target)
                    .bind(at)
                    .fetch(self);
                let mut walked = Vec::new();
                while let Some(transition) = futures_util::TryStreamExt::try_next(&mut rows).await?
                {
                    walked.push(transition);
                    if starts_episode(transition.change) {
                        break;
                    }
                }
                Ok(walked)
            }

            async fn fileset(&mut self, id: i64) -> Result<String, StoreError> {
                Ok(sqlx::query_scalar(FILESET_SQL)
                    .bind(id)
                    .fetch_one(self)
                    .await?)
            }

            async fn acks(&mut self, from: i64, to: i64) -> Result<Vec<AckRow>, StoreError> {
                Ok(sqlx::query_as(ACKS_SQL)
                    .bind(from)
                    .bind(to)
                    .fetch_all(self)
                    .await?)
            }

            async fn silences(
                &mut self,
                from: i64,
                to: i64,
            ) -> Result<Vec<SilenceRow>, StoreError> {
                Ok(sqlx::query_as(SILENCES_SQL)
                    .bind(from)
                    .bind(to)
                    .fetch_all(self)
                    .await?)
            }

            async fn retirements(&mut self) -> Result<Vec<LifecycleRow>, StoreError> {
                Ok(sqlx::query_as(RETIREMENTS_SQL).fetch_all(self).await?)
            }

            async fn snapshot_check(&mut self, id: i64) -> Result<Option<i64>, StoreError> {
                Ok(sqlx::query_scalar(SNAPSHOT_CHECK_SQL)
                    .bind(id)
                    .fetch_optional(self)
                    .await?)
            }
        }
    };
}

/// `StatsReads::befores` on SQLite: a seek per target for the id, then the row by id.
const SQLITE_BEFORES_SQL: &str = "select s.target_id, s.last_check, s.sync_status, \
     s.stale_after, s.fileset_id from targets t join snapshots s on s.id = \
     (select l.id from snapshots l where l.target_id = t.id and l.last_check < $1 \
      order by l.last_check desc limit 1)";

/// `StatsReads::befores` on PostgreSQL: a lateral seek per target.
const POSTGRES_BEFORES_SQL: &str = "select t.id as target_id, s.last_check, s.sync_status, \
     s.stale_after, s.fileset_id from targets t cross join lateral \
     (select l.last_check, l.sync_status, l.stale_after, l.fileset_id from snapshots l \
      where l.target_id = t.id and l.last_check < $1 order by l.last_check desc limit 1) s";

stats_reads_for!(
    sqlx::sqlite::SqliteConnection,
    sqlx::Sqlite,
    SQLITE_BEFORES_SQL
);
stats_reads_for!(
    sqlx::postgres::PgConnection,
    sqlx::Postgres,
    POSTGRES_BEFORES_SQL
);
