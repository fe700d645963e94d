//! What `/api/episodes` reads, the same way on both stores, and how a page of episodes is found
//! from it. Episodes are derived from the snapshots by the rules of `/api/stats` (src/stats.rs),
//! reading only around the episodes a page returns. This derivation is the reference: the
//! materialised episodes (src/store/episode_table.rs) are what it finds, kept as snapshots
//! commit, and a page reads them instead ([`table_page`]) when they are complete for the clock's
//! default stale-after ([`EpisodePath`]); a late check, a retirement or a revival recomputes its
//! target with [`target_pieces`], which walks the whole target with the code below.
//!
//! A target's timeline splits into *blocks*: the snapshots from one status change (a row of
//! snapshots_target_changes with bit 1 of `change`) to the next, or to a retirement. Within a
//! block every snapshot has the same status, so its episodes are *runs* of that status separated
//! by *gaps*: a snapshot whose next check came later than its stale-after, after which the time
//! until that next check (or until the block ends) is a STALE episode. Retirements (`retire`
//! events, each until the `revive` that follows it, paired as `/api/stats` pairs them) remove
//! their time: the block before one ends at the retirement, and the one after it begins at the
//! revival.
//!
//! Block boundaries come from the change index, a seek each. Gaps are in no index (the
//! stale-after of a snapshot without its own is the server's `--stale-after`, which can change
//! between starts), so they are found by a walk over snapshots_target_time that stops at the
//! first gap: finding a run's start and end reads the run's snapshots and no others. Counting a
//! run's checks reads the same range again, from the index alone.
//!
//! So a page costs, per matching target, a few seeks to place its walk and one pass over the
//! snapshots of the run it is placed in (a block the state filter refuses is passed over by its
//! boundaries alone); and per episode returned, a few seeks and two passes over its own
//! snapshots (none for STALE). It does not grow with the history before or after the page, but
//! it does with the length of the runs it touches. Each store answers the reads
//! ([`EpisodeReads`]) inside one read transaction.
//!
//! From the materialised episodes a page costs, per source (closed episodes; heads' runs; heads'
//! open STALE episodes; with `from`, closed episodes are read as those starting from it and those
//! spanning it, each on its own index), one index range of at most `limit + 1` rows in the page's
//! order, and per episode returned the same few seeks and passes as above: no walk per target.

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;

use crate::model::lifecycle::AckSummary;
use crate::model::{
    Episode, EpisodeClock, EpisodeFilter, FileEntry, Order, SyncStatus, TargetState, files_text,
};
use crate::store::StoreError;
use crate::timestamp::Timestamp;

/// A target a page covers.
#[derive(Debug, sqlx::FromRow)]
pub struct EpisodeTarget {
    pub id: i64,
    pub repo: String,
    pub server: String,
}

/// What the episodes read of a snapshot.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct SnapshotPoint {
    pub id: i64,
    pub last_check: i64,
    pub sync_status: i64,
    pub stale_after: Option<i64>,
    pub fileset_id: Option<i64>,
}

/// A snapshot followed by a gap, and the target's next check within the block's bound.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct GapRow {
    pub id: i64,
    pub last_check: i64,
    pub sync_status: i64,
    pub stale_after: Option<i64>,
    pub fileset_id: Option<i64>,
    pub next_check: Option<i64>,
}

/// A `retire` or `revive` event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LifecycleRow {
    pub kind: String,
    pub at: i64,
    pub body: String,
}

/// The body of a `revive` event.
#[derive(Debug, Deserialize)]
struct Revival {
    /// The snapshot that revived the target.
    snapshot: i64,
}

/// An acknowledgement as an episode needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AckRow {
    pub id: i64,
    pub reason: String,
    pub by: String,
    pub created_at: i64,
    pub until: i64,
    pub ended_at: Option<i64>,
}

/// Where a seek lands relative to a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    AtOrBefore,
    Before,
    After,
}

/// A target's snapshot (`$1`) nearest a time (`$2`), on snapshots_target_time.
pub fn point_sql(seek: Seek) -> &'static str {
    match seek {
        Seek::AtOrBefore => {
            "select id, last_check, sync_status, stale_after, fileset_id from snapshots \
             where target_id = $1 and last_check <= $2 order by last_check desc limit 1"
        }
        Seek::Before => {
            "select id, last_check, sync_status, stale_after, fileset_id from snapshots \
             where target_id = $1 and last_check < $2 order by last_check desc limit 1"
        }
        Seek::After => {
            "select id, last_check, sync_status, stale_after, fileset_id from snapshots \
             where target_id = $1 and last_check > $2 order by last_check limit 1"
        }
    }
}

/// A target's (`$1`) status change nearest a time (`$2`), on snapshots_target_changes: the
/// snapshots whose status differs from the previous one's (bit 1 of `change`; a target's first
/// snapshot has it too).
pub fn status_change_sql(seek: Seek) -> &'static str {
    match seek {
        Seek::AtOrBefore => {
            "select id, last_check, sync_status, stale_after, fileset_id from snapshots \
             where target_id = $1 and change != 0 and (change & 1) = 1 and last_check <= $2 \
             order by last_check desc limit 1"
        }
        Seek::Before => {
            "select id, last_check, sync_status, stale_after, fileset_id from snapshots \
             where target_id = $1 and change != 0 and (change & 1) = 1 and last_check < $2 \
             order by last_check desc limit 1"
        }
        Seek::After => {
            "select id, last_check, sync_status, stale_after, fileset_id from snapshots \
             where target_id = $1 and change != 0 and (change & 1) = 1 and last_check > $2 \
             order by last_check limit 1"
        }
    }
}

/// The next check after snapshot `s` that comes before `$4`, or `$5` when there is none.
const HELD_UNTIL: &str = "coalesce((select n.last_check from snapshots n \
     where n.target_id = s.target_id and n.last_check > s.last_check and n.last_check < $4 \
     order by n.last_check limit 1), $5)";

/// The next check after snapshot `s` that comes before `$4`, or null.
const NEXT_CHECK: &str = "(select n.last_check from snapshots n \
     where n.target_id = s.target_id and n.last_check > s.last_check and n.last_check < $4 \
     order by n.last_check limit 1)";

fn direction(order: Order) -> &'static str {
    match order {
        Order::Asc => "asc",
        Order::Desc => "desc",
    }
}

/// [`EpisodeReads::gap`] on SQLite: the first (`Asc`) or last (`Desc`) snapshot of target `$1`
/// with `last_check` in `[$2, $3)` whose state is held (until the next check before `$4`, or
/// else until `$5`) longer than its stale-after (its own, or `$6` milliseconds). Walks
/// snapshots_target_time from one end, probing the same index for each snapshot's next check,
/// and stops at the first gap. In-process probes cost SQLite less than a window's bookkeeping:
/// about 1 µs a snapshot over a 200,000-snapshot run, a third less than `lag()`.
pub fn gap_sql_sqlite(order: Order) -> String {
    let direction = direction(order);
    format!(
        "select s.id, s.last_check, s.sync_status, s.stale_after, s.fileset_id, \
         {NEXT_CHECK} as next_check from snapshots s \
         where s.target_id = $1 and s.last_check >= $2 and s.last_check < $3 \
         and {HELD_UNTIL} - s.last_check > coalesce(s.stale_after * 1000, $6) \
         order by s.last_check {direction} limit 1"
    )
}

/// [`EpisodeReads::gap`] on PostgreSQL, with the same parameters as [`gap_sql_sqlite`]: each
/// snapshot's next check is its neighbour in a window over the same walk of
/// snapshots_target_time (the range's edge takes the first check at or after `$3`), and the
/// window streams, so the walk still stops at the first gap. A probe per snapshot cost 12 µs a
/// snapshot there; the window, under 1 µs.
pub fn gap_sql_postgres(order: Order) -> String {
    let direction = direction(order);
    let neighbour = match order {
        Order::Asc => "lead",
        Order::Desc => "lag",
    };
    format!(
        "select id, last_check, sync_status, stale_after, fileset_id, next_check from (\
         select id, last_check, sync_status, stale_after, fileset_id, \
         {neighbour}(last_check, 1, (select n.last_check from snapshots n \
         where n.target_id = $1 and n.last_check >= $3 and n.last_check < $4 \
         order by n.last_check limit 1)) over (order by last_check {direction}) as next_check \
         from snapshots where target_id = $1 and last_check >= $2 and last_check < $3) w \
         where coalesce(next_check, $5) - last_check > coalesce(stale_after * 1000, $6) \
         order by last_check {direction} limit 1"
    )
}

/// Snapshots of target `$1` with `last_check` in `[$2, $3]`, on snapshots_target_time alone.
pub const COUNT_SQL: &str = "select count(*) from snapshots \
     where target_id = $1 and last_check >= $2 and last_check <= $3";

/// The file sets of target `$1`'s transitions with `last_check` in `($2, $3]`, on
/// snapshots_target_changes.
pub const FILE_CHANGES_SQL: &str = "select distinct fileset_id from snapshots \
     where target_id = $1 and change != 0 and last_check > $2 and last_check <= $3 \
     and fileset_id is not null";

/// The names of file set `$1`.
pub const FILESET_SQL: &str = "select files from filesets where id = $1";

/// Target `$1`'s retirements and revivals, in chain order, on events_target. Few rows: people
/// retire targets.
pub const RETIREMENTS_SQL: &str = "select kind, at, body from events \
     where target_id = $1 and kind in ('retire', 'revive') order by id";

/// The `last_check` of snapshot `$1`, if it is still stored.
pub const SNAPSHOT_CHECK_SQL: &str = "select last_check from snapshots where id = $1";

/// Target `$1`'s acknowledgements, on acks_target.
pub const ACKS_SQL: &str = "select id, reason, \"by\", created_at, \"until\", ended_at \
     from acks where target_id = $1 order by id";

/// The reads behind `/api/episodes`, answered by each store.
#[allow(
    async_fn_in_trait,
    reason = "crate-private; callers know the concrete store"
)]
pub trait EpisodeReads {
    /// The matching targets, sorted by repo then server.
    async fn targets(&mut self, filter: &EpisodeFilter) -> Result<Vec<EpisodeTarget>, StoreError>;
    async fn retirements(&mut self, target: i64) -> Result<Vec<LifecycleRow>, StoreError>;
    async fn snapshot_check(&mut self, id: i64) -> Result<Option<i64>, StoreError>;
    async fn point(
        &mut self,
        target: i64,
        seek: Seek,
        at: i64,
    ) -> Result<Option<SnapshotPoint>, StoreError>;
    async fn status_change(
        &mut self,
        target: i64,
        seek: Seek,
        at: i64,
    ) -> Result<Option<SnapshotPoint>, StoreError>;
    /// See [`gap_sql_sqlite`]: `range` is `[$2, $3)`, `held` is `($4, $5)`.
    async fn gap(
        &mut self,
        target: i64,
        range: (i64, i64),
        held: (i64, i64),
        default_stale_after_ms: i64,
        order: Order,
    ) -> Result<Option<GapRow>, StoreError>;
    async fn count(&mut self, target: i64, first: i64, last: i64) -> Result<i64, StoreError>;
    async fn file_changes(
        &mut self,
        target: i64,
        after: i64,
        through: i64,
    ) -> Result<Vec<i64>, StoreError>;
    async fn fileset(&mut self, id: i64) -> Result<String, StoreError>;
    async fn acks(&mut self, target: i64) -> Result<Vec<AckRow>, StoreError>;
    /// Whether the materialised episodes are complete for this default stale-after (seconds).
    async fn table_ready(&mut self, default_stale_after: i64) -> Result<bool, StoreError>;
    /// Candidates of a page from the materialised episodes (see [`candidates_sql`]).
    async fn candidates(&mut self, sql: &CandidateSql) -> Result<Vec<Candidate>, StoreError>;
    /// Snapshots by id, in one statement.
    async fn snapshots(&mut self, ids: &[i64]) -> Result<Vec<SnapshotPoint>, StoreError>;
    /// The acknowledgements of these targets, in one statement.
    async fn acks_of(&mut self, targets: &[i64]) -> Result<Vec<TargetAck>, StoreError>;
}

/// An acknowledgement and its target.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TargetAck {
    pub target_id: i64,
    #[sqlx(flatten)]
    pub ack: AckRow,
}

/// Which page a page of `/api/episodes` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpisodePath {
    /// Derive the episodes from the snapshots, whatever is materialised.
    Derived,
    /// Read the materialised episodes (src/store/episode_table.rs) when they are complete for
    /// the clock's default stale-after, else derive them.
    Materialised,
}

/// Snapshots by id (a list follows).
const SNAPSHOTS_SQL: &str = "select id, last_check, sync_status, stale_after, fileset_id \
     from snapshots where id in (";

/// The acknowledgements of targets (a list follows), on acks_target.
const TARGET_ACKS_SQL: &str = "select target_id, id, reason, \"by\", created_at, \"until\", \
     ended_at from acks where target_id in (";

/// An episode a page may return, from a row of `episodes` or `episode_heads`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    pub target_id: i64,
    pub repo: String,
    pub server: String,
    /// `episode_table::state_code`.
    pub state: i64,
    pub started_at: i64,
    pub key_id: i64,
    pub ended_at: Option<i64>,
    pub last_snapshot_id: i64,
}

impl Candidate {
    fn key(&self) -> (i64, i64) {
        (self.started_at, self.key_id)
    }
}

/// A parameter of a [`CandidateSql`].
#[derive(Debug, Clone)]
pub enum Bind {
    Int(i64),
    Text(String),
}

/// A statement that reads candidates, with `$n` parameters, the same on both databases.
#[derive(Debug, Clone, Default)]
pub struct CandidateSql {
    pub text: String,
    pub binds: Vec<Bind>,
}

impl CandidateSql {
    fn int(&mut self, value: i64) -> String {
        self.binds.push(Bind::Int(value));
        format!("${}", self.binds.len())
    }

    fn text(&mut self, value: &str) -> String {
        self.binds.push(Bind::Text(value.to_owned()));
        format!("${}", self.binds.len())
    }

    /// Restricts `column` (a target id) to the filter's repo and server.
    fn targets(&mut self, column: &str, filter: &EpisodeFilter) {
        let clause = match (&filter.repo, &filter.server) {
            (Some(repo), Some(server)) => {
                let (repo, server) = (self.text(repo), self.text(server));
                format!(
                    " and {column} = (select id from targets where repo = {repo} and server = {server})"
                )
            }
            (Some(repo), None) => {
                let repo = self.text(repo);
                format!(" and {column} in (select id from targets where repo = {repo})")
            }
            (None, Some(server)) => {
                let server = self.text(server);
                format!(" and {column} in (select id from targets where server = {server})")
            }
            (None, None) => return,
        };
        self.text.push_str(&clause);
    }

    /// The cursor on `(start, id)` columns, then the order and the limit.
    fn page(&mut self, (start, id): (&str, &str), filter: &EpisodeFilter, limit: usize) {
        let direction = direction(filter.order);
        if let Some(after) = filter.after {
            let (at, key) = (
                self.int(after.started_at.as_millis()),
                self.int(after.first_snapshot_id),
            );
            let comparison = match filter.order {
                Order::Asc => ">",
                Order::Desc => "<",
            };
            self.text
                .push_str(&format!(" and ({start}, {id}) {comparison} ({at}, {key})"));
        }
        let limit = self.int(i64::try_from(limit).unwrap_or(i64::MAX));
        self.text.push_str(&format!(
            " order by {start} {direction}, {id} {direction} limit {limit}"
        ));
    }
}

/// Where candidates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Closed episodes: all, those starting at or after `from`, or those spanning `from` (each
    /// on its own index).
    Closed(Part),
    /// The heads' runs: open, or ended at `stale_at`.
    Runs,
    /// The heads' open STALE episodes.
    Stale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    All,
    FromOn,
    Spanning,
}

/// The codes of the states the filter wants, as an SQL list; `None`: every state.
fn state_list(filter: &EpisodeFilter, states: &[TargetState]) -> Option<String> {
    if filter.states.is_empty() {
        return None;
    }
    let codes: Vec<String> = states
        .iter()
        .filter(|state| filter.wants(**state))
        .map(|state| crate::store::episode_table::state_code(*state).to_string())
        .collect();
    Some(if codes.is_empty() {
        "(-1)".to_owned()
    } else {
        format!("({})", codes.join(", "))
    })
}

/// The statement reading at most `limit` candidates of `source` that the filter selects, in its
/// order after its cursor; `None` when the source holds none it selects.
fn candidates_sql(
    source: Source,
    filter: &EpisodeFilter,
    now: i64,
    limit: usize,
) -> Option<CandidateSql> {
    let mut sql = CandidateSql::default();
    let from = filter.from.map(Timestamp::as_millis);
    let to = filter.to.map(Timestamp::as_millis);
    match source {
        Source::Closed(part) => {
            if filter.open == Some(true) {
                return None;
            }
            sql.text.push_str(
                "select e.target_id, t.repo, t.server, e.state, e.started_at, \
                 e.first_snapshot_id as key_id, e.ended_at, e.last_snapshot_id \
                 from episodes e join targets t on t.id = e.target_id where 1 = 1",
            );
            sql.targets("e.target_id", filter);
            if let Some(list) = state_list(filter, &TargetState::ALL) {
                sql.text.push_str(&format!(" and e.state in {list}"));
            }
            if let Some(to) = to {
                let to = sql.int(to);
                sql.text.push_str(&format!(" and e.started_at < {to}"));
            }
            match (part, from) {
                (Part::All, _) => {}
                (Part::FromOn, Some(from)) => {
                    let from = sql.int(from);
                    sql.text.push_str(&format!(
                        " and e.started_at >= {from} and e.ended_at > {from}"
                    ));
                }
                (Part::Spanning, Some(from)) => {
                    // On episodes_ended: those ending after `from` are few when it is recent,
                    // where those starting before it are most of the history. `+ 0` keeps
                    // SQLite's planner off episodes_started.
                    let from = sql.int(from);
                    sql.text.push_str(&format!(
                        " and e.ended_at > {from} and e.started_at + 0 < {from}"
                    ));
                    sql.page(
                        ("(e.started_at + 0)", "(e.first_snapshot_id + 0)"),
                        filter,
                        limit,
                    );
                    return Some(sql);
                }
                (_, None) => return None,
            }
            sql.page(("e.started_at", "e.first_snapshot_id"), filter, limit);
        }
        Source::Runs => {
            let now = sql.int(now);
            sql.text.push_str(&format!(
                "select h.target_id, t.repo, t.server, h.sync_status as state, h.started_at, \
                 h.first_snapshot_id as key_id, \
                 case when h.stale_at < {now} then h.stale_at end as ended_at, \
                 h.last_snapshot_id from episode_heads h join targets t on t.id = h.target_id \
                 where (h.stale_at >= {now} or h.stale_at > h.started_at)"
            ));
            sql.targets("h.target_id", filter);
            let statuses = [
                TargetState::Synced,
                TargetState::OutOfSync,
                TargetState::Error,
            ];
            if let Some(list) = state_list(filter, &statuses) {
                sql.text.push_str(&format!(" and h.sync_status in {list}"));
            }
            match filter.open {
                Some(true) => sql.text.push_str(&format!(" and h.stale_at >= {now}")),
                Some(false) => sql.text.push_str(&format!(" and h.stale_at < {now}")),
                None => {}
            }
            if let Some(to) = to {
                let to = sql.int(to);
                sql.text.push_str(&format!(" and h.started_at < {to}"));
            }
            if let Some(from) = from {
                let from = sql.int(from);
                sql.text.push_str(&format!(
                    " and (h.stale_at >= {now} or h.stale_at > {from})"
                ));
            }
            sql.page(("h.started_at", "h.first_snapshot_id"), filter, limit);
        }
        Source::Stale => {
            if !filter.wants(TargetState::Stale) || filter.open == Some(false) {
                return None;
            }
            let now = sql.int(now);
            sql.text.push_str(&format!(
                "select h.target_id, t.repo, t.server, cast(3 as bigint) as state, \
                 h.stale_start as started_at, h.last_snapshot_id as key_id, \
                 cast(null as bigint) as ended_at, h.last_snapshot_id \
                 from episode_heads h join targets t on t.id = h.target_id \
                 where h.stale_at < {now}"
            ));
            sql.targets("h.target_id", filter);
            if let Some(to) = to {
                let to = sql.int(to);
                sql.text.push_str(&format!(" and h.stale_start < {to}"));
            }
            sql.page(("h.stale_start", "h.last_snapshot_id"), filter, limit);
        }
    }
    Some(sql)
}

/// One page from the materialised episodes: at most `limit + 1` candidates from each source
/// (each an index range in the page's order), merged; then, per episode returned, its checks,
/// files and acknowledgement, read as the derived page reads them.
async fn table_page(
    reads: &mut impl EpisodeReads,
    filter: &EpisodeFilter,
    clock: EpisodeClock,
    limit: usize,
) -> Result<(Vec<Episode>, bool), StoreError> {
    let now = clock.now.as_millis();
    let fetch = limit.saturating_add(1);
    let sources: &[Source] = if filter.from.is_some() {
        &[
            Source::Closed(Part::FromOn),
            Source::Closed(Part::Spanning),
            Source::Runs,
            Source::Stale,
        ]
    } else {
        &[Source::Closed(Part::All), Source::Runs, Source::Stale]
    };
    let mut candidates = Vec::new();
    for source in sources {
        if let Some(sql) = candidates_sql(*source, filter, now, fetch) {
            candidates.extend(reads.candidates(&sql).await?);
        }
    }
    match filter.order {
        Order::Asc => candidates.sort_by_key(Candidate::key),
        Order::Desc => candidates.sort_by_key(|candidate| std::cmp::Reverse(candidate.key())),
    }
    let more = candidates.len() > limit;
    candidates.truncate(limit);
    // What the runs returned need, read with one statement each: their first and last
    // snapshots, and their targets' acknowledgements.
    let runs = || {
        candidates.iter().filter(|candidate| {
            candidate.state != crate::store::episode_table::state_code(TargetState::Stale)
        })
    };
    let mut ids: Vec<i64> = runs()
        .flat_map(|candidate| [candidate.key_id, candidate.last_snapshot_id])
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let snapshots: HashMap<i64, SnapshotPoint> = if ids.is_empty() {
        HashMap::new()
    } else {
        reads
            .snapshots(&ids)
            .await?
            .into_iter()
            .map(|snapshot| (snapshot.id, snapshot))
            .collect()
    };
    let mut drifted: Vec<i64> = runs()
        .filter(|candidate| candidate.state != SyncStatus::Synced.code())
        .map(|candidate| candidate.target_id)
        .collect();
    drifted.sort_unstable();
    drifted.dedup();
    let mut acks: HashMap<i64, Vec<AckRow>> = HashMap::new();
    if !drifted.is_empty() {
        for row in reads.acks_of(&drifted).await? {
            acks.entry(row.target_id).or_default().push(row.ack);
        }
    }
    let mut filesets = Filesets::default();
    let mut episodes = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let state = crate::store::episode_table::state_of(candidate.state)?;
        let (start, end) = (candidate.started_at, candidate.ended_at);
        let mut episode = Episode {
            repo: candidate.repo,
            server: candidate.server,
            state,
            started_at: Timestamp::from_millis(start),
            ended_at: end.map(Timestamp::from_millis),
            duration_seconds: seconds(end.unwrap_or(now).saturating_sub(start).max(0)),
            checks: 0,
            files: Vec::new(),
            files_text: String::new(),
            first_snapshot_id: candidate.key_id,
            last_snapshot_id: candidate.key_id,
            acknowledged: None,
        };
        if state != TargetState::Stale {
            let target = candidate.target_id;
            let snapshot = |id: i64| {
                snapshots.get(&id).copied().ok_or_else(|| {
                    StoreError::corrupt(format!("episode of target {target}: no snapshot {id}"))
                })
            };
            let first = snapshot(candidate.key_id)?;
            let last_id = candidate.last_snapshot_id;
            let last = snapshot(last_id)?;
            episode.last_snapshot_id = last_id;
            episode.checks = reads.count(target, start, last.last_check).await?;
            if state != TargetState::Synced {
                let mut names = BTreeSet::new();
                let changes = reads
                    .file_changes(target, first.last_check, last.last_check)
                    .await?;
                for id in first.fileset_id.into_iter().chain(changes) {
                    names.extend(filesets.names(reads, id).await?.iter().cloned());
                }
                episode.files_text = files_text(names.iter().map(String::as_str));
                episode.files = names.into_iter().map(|name| FileEntry { name }).collect();
                let target_acks = acks.get(&target).map_or(&[][..], Vec::as_slice);
                episode.acknowledged = covering(target_acks, start, end);
            }
        }
        episodes.push(episode);
    }
    Ok((episodes, more))
}

/// A span of a target's time with no state: from a retirement until the revival (`None`: not
/// revived).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retired {
    pub from: i64,
    pub until: Option<i64>,
}

impl Retired {
    fn contains(&self, at: i64) -> bool {
        self.from <= at && self.until.is_none_or(|until| at < until)
    }
}

/// A target's retirements, as `/api/stats` reads them (src/store/stats.rs): each `retire` event
/// paired with the next `revive` event of the chain, which ends it at the `last_check` of the
/// snapshot that revived the target (at the event's own time if that snapshot is no longer
/// stored); a `retire` while retired changes nothing. `(retired_at, revived)`, in order.
async fn retirements(
    reads: &mut impl EpisodeReads,
    target: i64,
) -> Result<Vec<(i64, Option<i64>)>, StoreError> {
    let mut retirements = Vec::new();
    let mut open: Option<i64> = None;
    for row in reads.retirements(target).await? {
        match row.kind.as_str() {
            "retire" => {
                open.get_or_insert(row.at);
            }
            _ => {
                let Some(retired_at) = open.take() else {
                    continue;
                };
                let revival: Revival = serde_json::from_str(&row.body).map_err(|error| {
                    StoreError::corrupt(format!("a revival of target {target}: {error}"))
                })?;
                let revived_check = reads.snapshot_check(revival.snapshot).await?;
                retirements.push((retired_at, Some(revived_check.unwrap_or(row.at))));
            }
        }
    }
    retirements.extend(open.map(|retired_at| (retired_at, None)));
    Ok(retirements)
}

/// The spans of a target's time that retirements remove from its timeline, sorted and disjoint
/// (`stats::Span::retired` and its union, for the same boundaries): a revival checked before
/// its retirement removes nothing.
pub fn retired_spans(retirements: &[(i64, Option<i64>)]) -> Vec<Retired> {
    let mut spans: Vec<Retired> = retirements
        .iter()
        .map(|&(from, revived)| Retired {
            from,
            until: revived.map(|revived| revived.max(from)),
        })
        .filter(|span| span.until != Some(span.from))
        .collect();
    spans.sort_by_key(|span| span.from);
    let mut merged: Vec<Retired> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if last.until.is_none_or(|until| span.from <= until) => {
                last.until = match (last.until, span.until) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            _ => merged.push(span),
        }
    }
    merged
}

/// A snapshot as the walk uses it, its stale-after resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Point {
    id: i64,
    at: i64,
    status: SyncStatus,
    /// Its own stale-after, or the server's, in milliseconds.
    stale_after: i64,
    fileset: Option<i64>,
}

impl Point {
    /// When its state goes stale if no check follows.
    fn stale_at(&self) -> i64 {
        self.at.saturating_add(self.stale_after)
    }
}

/// What ends a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Horizon {
    /// The next block's first snapshot, checked at this time.
    Next(i64),
    /// The target was retired at this time.
    Retired(i64),
    /// Nothing yet: the block holds the target's latest snapshot.
    Open,
}

/// The snapshots from a status change to the next, or to a retirement; or from a revival, where
/// the state of the snapshot checked last before it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    /// Its first snapshot: the status change, or the one holding at the revival.
    start: Point,
    /// When it begins: `start`'s check, or the revival (which may come after it: the snapshot
    /// that revived the target is no longer stored, or one checked during the retirement holds).
    begins: i64,
    horizon: Horizon,
}

impl Block {
    /// Exclusive bound on its snapshots' `last_check`.
    fn upper(&self) -> i64 {
        match self.horizon {
            Horizon::Next(at) | Horizon::Retired(at) => at,
            Horizon::Open => i64::MAX,
        }
    }

    fn status(&self) -> SyncStatus {
        self.start.status
    }
}

/// How a run's last snapshot's state ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Fresh until the block's horizon (for good while the block is open).
    Fresh,
    /// Stale before the next check: a STALE episode follows, until this time (`None`: still).
    Stale(Option<i64>),
}

/// One episode, as the walk finds it: where it is, not yet what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// Snapshots `first..=last` of a block, with no gap between them.
    Run {
        block: Block,
        first: Point,
        last: Point,
        held: Held,
    },
    /// The time past `after`'s stale-after, until the next check (or the block's end).
    Stale {
        block: Block,
        after: Point,
        until: Option<i64>,
    },
}

impl Piece {
    fn block(&self) -> Block {
        match *self {
            Self::Run { block, .. } | Self::Stale { block, .. } => block,
        }
    }

    fn state(&self) -> TargetState {
        match self {
            Self::Run { block, .. } => block.status().into(),
            Self::Stale { .. } => TargetState::Stale,
        }
    }

    fn start(&self) -> i64 {
        match self {
            Self::Run { block, first, .. } if first.id == block.start.id => block.begins,
            Self::Run { first, .. } => first.at,
            Self::Stale { block, after, .. } => after.stale_at().max(block.begins),
        }
    }

    /// `None` while open.
    fn end(&self) -> Option<i64> {
        match *self {
            Self::Run {
                last,
                held: Held::Stale(_),
                ..
            } => Some(last.stale_at()),
            Self::Run {
                block,
                held: Held::Fresh,
                ..
            } => match block.horizon {
                Horizon::Next(at) | Horizon::Retired(at) => Some(at),
                Horizon::Open => None,
            },
            Self::Stale { until, .. } => until,
        }
    }

    /// The keyset order of pages: `(started_at, first_snapshot_id)`.
    fn key(&self) -> (i64, i64) {
        match self {
            Self::Run { first, .. } => (self.start(), first.id),
            Self::Stale { after, .. } => (self.start(), after.id),
        }
    }

    /// Whether the retirement before its block hides all of it.
    fn is_empty(&self) -> bool {
        self.end().is_some_and(|end| end <= self.start())
    }
}

/// One target's timeline, walked an episode at a time, forwards or backwards.
#[derive(Debug)]
struct Timeline {
    target: i64,
    retired: Vec<Retired>,
    default_stale_after: i64,
    now: i64,
}

impl Timeline {
    fn point(&self, row: SnapshotPoint) -> Result<Point, StoreError> {
        let code = row.sync_status;
        Ok(Point {
            id: row.id,
            at: row.last_check,
            status: SyncStatus::from_code(code)
                .ok_or_else(|| StoreError::corrupt(format!("unknown sync_status code {code}")))?,
            stale_after: row.stale_after.map_or(self.default_stale_after, |seconds| {
                seconds.saturating_mul(1000)
            }),
            fileset: row.fileset_id,
        })
    }

    async fn seek(
        &self,
        reads: &mut impl EpisodeReads,
        seek: Seek,
        at: i64,
    ) -> Result<Option<Point>, StoreError> {
        reads
            .point(self.target, seek, at)
            .await?
            .map(|row| self.point(row))
            .transpose()
    }

    /// The snapshot checked exactly at `at`, which the caller knows exists.
    async fn at(&self, reads: &mut impl EpisodeReads, at: i64) -> Result<Point, StoreError> {
        match self.seek(reads, Seek::AtOrBefore, at).await? {
            Some(point) if point.at == at => Ok(point),
            _ => Err(StoreError::corrupt(format!(
                "target {}: no snapshot at {at} where one was read",
                self.target
            ))),
        }
    }

    fn retired_at(&self, at: i64) -> Option<Retired> {
        self.retired.iter().copied().find(|span| span.contains(at))
    }

    /// The block holding time `at`, which no retirement covers; `None` before the first check.
    async fn block_at(
        &self,
        reads: &mut impl EpisodeReads,
        at: i64,
    ) -> Result<Option<Block>, StoreError> {
        let change = reads
            .status_change(self.target, Seek::AtOrBefore, at)
            .await?;
        let revival = self
            .retired
            .iter()
            .filter_map(|span| span.until)
            .filter(|until| *until <= at)
            .max();
        // The later of the two begins the block.
        let (start, begins) = match (change, revival) {
            (Some(change), Some(revival)) if revival > change.last_check => {
                match self.seek(reads, Seek::AtOrBefore, revival).await? {
                    Some(holder) => (holder, revival),
                    None => return Ok(None),
                }
            }
            (Some(change), _) => {
                let start = self.point(change)?;
                (start, start.at)
            }
            (None, _) => return Ok(None),
        };
        // No check comes between `start` and `begins`, so the next status change is after both.
        let next_change = reads
            .status_change(self.target, Seek::After, start.at)
            .await?
            .map(|change| change.last_check);
        let retirement = self
            .retired
            .iter()
            .map(|span| span.from)
            .find(|from| *from > begins);
        // A status change a retirement hides (checked after it, sent before it) comes after
        // the retirement's start, so the retirement ends the block first.
        let horizon = match (next_change, retirement) {
            (Some(change), Some(retired)) if retired <= change => Horizon::Retired(retired),
            (Some(change), _) => Horizon::Next(change),
            (None, Some(retired)) => Horizon::Retired(retired),
            (None, None) => Horizon::Open,
        };
        Ok(Some(Block {
            start,
            begins,
            horizon,
        }))
    }

    /// `($4, $5)` of [`gap_sql_sqlite`] for `block`: a snapshot's state is held until the next check
    /// in the block, else until the horizon, or now while the block is open.
    fn held_bounds(&self, block: &Block) -> (i64, i64) {
        match block.horizon {
            Horizon::Next(at) | Horizon::Retired(at) => (at, at),
            Horizon::Open => (i64::MAX, self.now),
        }
    }

    /// How `point`'s state ends, given the next check after it.
    fn held(&self, block: &Block, point: Point, next: Option<i64>) -> Held {
        let next = next.filter(|next| *next < block.upper());
        let (_, fallback) = self.held_bounds(block);
        let held_until = next.unwrap_or(fallback);
        if held_until - point.at > point.stale_after {
            Held::Stale(next.or(match block.horizon {
                Horizon::Next(at) | Horizon::Retired(at) => Some(at),
                Horizon::Open => None,
            }))
        } else {
            Held::Fresh
        }
    }

    async fn held_after(
        &self,
        reads: &mut impl EpisodeReads,
        block: &Block,
        point: Point,
    ) -> Result<Held, StoreError> {
        let next = self.seek(reads, Seek::After, point.at).await?;
        Ok(self.held(block, point, next.map(|next| next.at)))
    }

    /// The first (`Asc`) or last (`Desc`) snapshot in `[from, to)` of `block` followed by a gap.
    async fn gap(
        &self,
        reads: &mut impl EpisodeReads,
        block: &Block,
        (from, to): (i64, i64),
        order: Order,
    ) -> Result<Option<(Point, Held)>, StoreError> {
        let row = reads
            .gap(
                self.target,
                (from, to),
                self.held_bounds(block),
                self.default_stale_after,
                order,
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let point = self.point(SnapshotPoint {
            id: row.id,
            last_check: row.last_check,
            sync_status: row.sync_status,
            stale_after: row.stale_after,
            fileset_id: row.fileset_id,
        })?;
        match self.held(block, point, row.next_check) {
            Held::Fresh => Err(StoreError::corrupt(format!(
                "target {}: snapshot {} read as followed by a gap is not",
                self.target, point.id
            ))),
            held => Ok(Some((point, held))),
        }
    }

    /// The last snapshot of `block`'s run that holds `from`, and how its state ends.
    async fn run_end(
        &self,
        reads: &mut impl EpisodeReads,
        block: &Block,
        from: Point,
    ) -> Result<(Point, Held), StoreError> {
        match self
            .gap(reads, block, (from.at, block.upper()), Order::Asc)
            .await?
        {
            Some(found) => Ok(found),
            None => {
                let last = self
                    .seek(reads, Seek::Before, block.upper())
                    .await?
                    .unwrap_or(from);
                Ok((last, Held::Fresh))
            }
        }
    }

    /// The first snapshot of `block`'s run that holds `to`.
    async fn run_start(
        &self,
        reads: &mut impl EpisodeReads,
        block: &Block,
        to: Point,
    ) -> Result<Point, StoreError> {
        match self
            .gap(reads, block, (block.start.at, to.at), Order::Desc)
            .await?
        {
            Some((gap, _)) => Ok(self.seek(reads, Seek::After, gap.at).await?.unwrap_or(to)),
            None => Ok(block.start),
        }
    }

    /// The run of `block` that starts with `first`.
    async fn run_from(
        &self,
        reads: &mut impl EpisodeReads,
        block: Block,
        first: Point,
    ) -> Result<Piece, StoreError> {
        let (last, held) = self.run_end(reads, &block, first).await?;
        Ok(Piece::Run {
            block,
            first,
            last,
            held,
        })
    }

    /// The run of `block` that ends with `last`.
    async fn run_to(
        &self,
        reads: &mut impl EpisodeReads,
        block: Block,
        last: Point,
        held: Held,
    ) -> Result<Piece, StoreError> {
        let first = self.run_start(reads, &block, last).await?;
        Ok(Piece::Run {
            block,
            first,
            last,
            held,
        })
    }

    /// The episode that holds time `at`; `None` before the first check or while retired.
    async fn containing(
        &self,
        reads: &mut impl EpisodeReads,
        at: i64,
    ) -> Result<Option<Piece>, StoreError> {
        if self.retired_at(at).is_some() {
            return Ok(None);
        }
        match self.block_at(reads, at).await? {
            Some(block) => self.containing_in(reads, block, at).await.map(Some),
            None => Ok(None),
        }
    }

    /// The episode of `block` that holds time `at`, which the block holds.
    async fn containing_in(
        &self,
        reads: &mut impl EpisodeReads,
        block: Block,
        at: i64,
    ) -> Result<Piece, StoreError> {
        let holder = self
            .seek(reads, Seek::AtOrBefore, at)
            .await?
            .unwrap_or(block.start);
        let held = self.held_after(reads, &block, holder).await?;
        if let Held::Stale(until) = held {
            if at >= holder.stale_at() {
                return Ok(Piece::Stale {
                    block,
                    after: holder,
                    until,
                });
            }
        }
        let first = self.run_start(reads, &block, holder).await?;
        let (last, held) = match held {
            Held::Stale(_) => (holder, held),
            Held::Fresh => self.run_end(reads, &block, holder).await?,
        };
        Ok(Piece::Run {
            block,
            first,
            last,
            held,
        })
    }

    /// The episode that holds time `at` (which no retirement covers) if `wanted` accepts its
    /// block, else the nearest one in `order` of a block it accepts. A refused block is passed
    /// over by its boundaries, without reading its snapshots.
    async fn wanted_at(
        &self,
        reads: &mut impl EpisodeReads,
        at: i64,
        order: Order,
        wanted: &impl Fn(&Block) -> bool,
    ) -> Result<Option<Piece>, StoreError> {
        let Some(block) = self.block_at(reads, at).await? else {
            return Ok(None);
        };
        if wanted(&block) {
            return self.containing_in(reads, block, at).await.map(Some);
        }
        match order {
            Order::Desc => self.last_before(reads, block.begins, wanted).await,
            Order::Asc => self.first_after(reads, block, wanted).await,
        }
    }

    /// The first episode of the block after `block` whose status `wanted` accepts.
    async fn first_after(
        &self,
        reads: &mut impl EpisodeReads,
        mut block: Block,
        wanted: &impl Fn(&Block) -> bool,
    ) -> Result<Option<Piece>, StoreError> {
        loop {
            let begins = match block.horizon {
                Horizon::Next(at) => at,
                Horizon::Retired(at) => match self.retired_at(at).and_then(|span| span.until) {
                    Some(until) => until,
                    None => return Ok(None),
                },
                Horizon::Open => return Ok(None),
            };
            let Some(next) = self.block_at(reads, begins).await? else {
                return Ok(None);
            };
            if wanted(&next) {
                return self.containing_in(reads, next, begins).await.map(Some);
            }
            block = next;
        }
    }

    /// The last episode that ends by `before` (where a block begins), of a block `wanted`
    /// accepts.
    async fn last_before(
        &self,
        reads: &mut impl EpisodeReads,
        mut before: i64,
        wanted: &impl Fn(&Block) -> bool,
    ) -> Result<Option<Piece>, StoreError> {
        loop {
            let mut at = before.saturating_sub(1);
            while let Some(span) = self.retired_at(at) {
                at = span.from.saturating_sub(1);
            }
            let Some(block) = self.block_at(reads, at).await? else {
                return Ok(None);
            };
            if wanted(&block) {
                return self.containing_in(reads, block, at).await.map(Some);
            }
            before = block.begins;
        }
    }

    /// The episode after `piece`, skipping blocks `wanted` refuses.
    async fn next(
        &self,
        reads: &mut impl EpisodeReads,
        piece: Piece,
        wanted: &impl Fn(&Block) -> bool,
    ) -> Result<Option<Piece>, StoreError> {
        let block = piece.block();
        if !wanted(&block) {
            return self.first_after(reads, block, wanted).await;
        }
        match piece {
            Piece::Run {
                last,
                held: Held::Stale(until),
                ..
            } => Ok(Some(Piece::Stale {
                block,
                after: last,
                until,
            })),
            Piece::Stale { until: None, .. } => Ok(None),
            Piece::Stale {
                until: Some(until), ..
            } if until < block.upper() => {
                let first = self.at(reads, until).await?;
                self.run_from(reads, block, first).await.map(Some)
            }
            Piece::Run { .. } | Piece::Stale { .. } => self.first_after(reads, block, wanted).await,
        }
    }

    /// The episode before `piece`, skipping blocks `wanted` refuses.
    async fn previous(
        &self,
        reads: &mut impl EpisodeReads,
        piece: Piece,
        wanted: &impl Fn(&Block) -> bool,
    ) -> Result<Option<Piece>, StoreError> {
        let block = piece.block();
        if !wanted(&block) {
            return self.last_before(reads, block.begins, wanted).await;
        }
        match piece {
            Piece::Stale { after, until, .. } => {
                let run = self.run_to(reads, block, after, Held::Stale(until)).await?;
                if run.is_empty() {
                    // The run went stale during the retirement before its block.
                    return self.last_before(reads, block.begins, wanted).await;
                }
                Ok(Some(run))
            }
            Piece::Run { first, .. } if first.at > block.start.at => {
                let Some(after) = self.seek(reads, Seek::Before, first.at).await? else {
                    return Ok(None);
                };
                Ok(Some(Piece::Stale {
                    block,
                    after,
                    until: Some(first.at),
                }))
            }
            Piece::Run { .. } => self.last_before(reads, block.begins, wanted).await,
        }
    }
}

/// What the page does with an episode the walk reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Take,
    Skip,
    /// Neither this one nor any after it in the walk's direction.
    Stop,
}

/// One target's walk through the page's selection.
#[derive(Debug)]
struct Walk {
    target: EpisodeTarget,
    timeline: Timeline,
    /// The next episode the page selects, if any.
    head: Option<Piece>,
    acks: Option<Vec<AckRow>>,
}

/// The selection's bounds, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Selection<'a> {
    filter: &'a EpisodeFilter,
    from: i64,
    to: i64,
    after: Option<(i64, i64)>,
}

impl Selection<'_> {
    fn verdict(&self, piece: &Piece) -> Verdict {
        let (start, end, key) = (piece.start(), piece.end(), piece.key());
        let ends_before = end.is_some_and(|end| end <= self.from);
        match self.filter.order {
            Order::Desc if ends_before => return Verdict::Stop,
            Order::Asc if start >= self.to => return Verdict::Stop,
            _ => {}
        }
        let beyond_cursor = self.after.is_some_and(|after| match self.filter.order {
            Order::Desc => key >= after,
            Order::Asc => key <= after,
        });
        let open = end.is_none();
        if ends_before
            || start >= self.to
            || beyond_cursor
            || !self.filter.wants(piece.state())
            || self.filter.open.is_some_and(|wanted| wanted != open)
        {
            Verdict::Skip
        } else {
            Verdict::Take
        }
    }

    /// Whether a block can hold a selected episode: its own status, or STALE, is wanted.
    fn wants_block(&self, block: &Block) -> bool {
        self.filter.wants(block.status().into()) || self.filter.wants(TargetState::Stale)
    }
}

impl Walk {
    /// Places the walk on the first episode of the selection in its order.
    async fn start(
        &mut self,
        reads: &mut impl EpisodeReads,
        selection: &Selection<'_>,
    ) -> Result<(), StoreError> {
        let timeline = &self.timeline;
        let wanted = |block: &Block| selection.wants_block(block);
        let first = if selection.filter.open == Some(true) {
            // A target has at most one open episode: the one holding the far future.
            timeline.containing(reads, i64::MAX - 1).await?
        } else {
            match selection.filter.order {
                Order::Desc => {
                    let cursor = selection
                        .after
                        .map_or(i64::MAX, |(start, _)| start.saturating_add(1));
                    let below = selection.to.min(cursor).saturating_sub(1);
                    let below = timeline
                        .retired_at(below)
                        .map_or(below, |span| span.from.saturating_sub(1));
                    timeline
                        .wanted_at(reads, below, Order::Desc, &wanted)
                        .await?
                }
                Order::Asc => {
                    let at = selection
                        .after
                        .map_or(selection.from, |(start, _)| start.max(selection.from));
                    let at = match timeline.retired_at(at) {
                        Some(span) => span.until,
                        // Before the first check, the walk starts at it.
                        None => match timeline.block_at(reads, at).await? {
                            Some(_) => Some(at),
                            None => timeline
                                .seek(reads, Seek::After, at)
                                .await?
                                .map(|first| first.at),
                        },
                    };
                    match at {
                        Some(at) => timeline.wanted_at(reads, at, Order::Asc, &wanted).await?,
                        None => None,
                    }
                }
            }
        };
        self.head = first;
        self.settle(reads, selection).await
    }

    /// Moves the head forward in the walk's direction until it is selected, or the walk ends.
    async fn settle(
        &mut self,
        reads: &mut impl EpisodeReads,
        selection: &Selection<'_>,
    ) -> Result<(), StoreError> {
        let wanted = |block: &Block| selection.wants_block(block);
        while let Some(piece) = self.head {
            match selection.verdict(&piece) {
                Verdict::Take => return Ok(()),
                Verdict::Stop => self.head = None,
                Verdict::Skip if selection.filter.open == Some(true) => self.head = None,
                Verdict::Skip => self.head = self.step(reads, selection, piece, &wanted).await?,
            }
        }
        Ok(())
    }

    async fn step(
        &self,
        reads: &mut impl EpisodeReads,
        selection: &Selection<'_>,
        piece: Piece,
        wanted: &impl Fn(&Block) -> bool,
    ) -> Result<Option<Piece>, StoreError> {
        match selection.filter.order {
            Order::Desc => self.timeline.previous(reads, piece, wanted).await,
            Order::Asc => self.timeline.next(reads, piece, wanted).await,
        }
    }

    /// Takes the head and moves on to the next selected episode.
    async fn advance(
        &mut self,
        reads: &mut impl EpisodeReads,
        selection: &Selection<'_>,
    ) -> Result<(), StoreError> {
        if let Some(piece) = self.head {
            self.head = if selection.filter.open == Some(true) {
                None
            } else {
                let wanted = |block: &Block| selection.wants_block(block);
                self.step(reads, selection, piece, &wanted).await?
            };
        }
        self.settle(reads, selection).await
    }
}

/// File sets by id, read once per page.
#[derive(Debug, Default)]
struct Filesets(HashMap<i64, Vec<String>>);

impl Filesets {
    async fn names(
        &mut self,
        reads: &mut impl EpisodeReads,
        id: i64,
    ) -> Result<&[String], StoreError> {
        let names = match self.0.entry(id) {
            std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
            std::collections::hash_map::Entry::Vacant(unknown) => {
                let json = reads.fileset(id).await?;
                let names: Vec<String> = serde_json::from_str(&json)
                    .map_err(|error| StoreError::corrupt(format!("file set {id}: {error}")))?;
                unknown.insert(names)
            }
        };
        Ok(names)
    }
}

/// The latest acknowledgement of `acks` whose span overlaps `[start, end)` (`end` `None`: open).
fn covering(acks: &[AckRow], start: i64, end: Option<i64>) -> Option<AckSummary> {
    let end = end.unwrap_or(i64::MAX);
    acks.iter()
        .filter(|ack| ack.created_at < end && ack.ended_at.unwrap_or(ack.until) > start)
        .max_by_key(|ack| ack.id)
        .map(|ack| AckSummary {
            id: ack.id,
            reason: ack.reason.clone(),
            by: ack.by.clone(),
            until: Timestamp::from_millis(ack.until),
        })
}

/// Milliseconds as seconds, printed with at most three decimals.
fn seconds(millis: i64) -> f64 {
    millis as f64 / 1000.0
}

impl Walk {
    /// What the head holds: its checks, files and acknowledgement.
    async fn episode(
        &mut self,
        reads: &mut impl EpisodeReads,
        filesets: &mut Filesets,
        piece: Piece,
    ) -> Result<Episode, StoreError> {
        let (start, end) = (piece.start(), piece.end());
        let mut episode = Episode {
            repo: self.target.repo.clone(),
            server: self.target.server.clone(),
            state: piece.state(),
            started_at: Timestamp::from_millis(start),
            ended_at: end.map(Timestamp::from_millis),
            duration_seconds: seconds(
                end.unwrap_or(self.timeline.now)
                    .saturating_sub(start)
                    .max(0),
            ),
            checks: 0,
            files: Vec::new(),
            files_text: String::new(),
            first_snapshot_id: piece.key().1,
            last_snapshot_id: piece.key().1,
            acknowledged: None,
        };
        let Piece::Run { first, last, .. } = piece else {
            return Ok(episode);
        };
        let target = self.target.id;
        episode.last_snapshot_id = last.id;
        // From the start: a run the retirement before its block began holds no check made then.
        episode.checks = reads.count(target, start, last.at).await?;
        if first.status != SyncStatus::Synced {
            let mut names = BTreeSet::new();
            let changes = reads.file_changes(target, first.at, last.at).await?;
            for id in first.fileset.into_iter().chain(changes) {
                names.extend(filesets.names(reads, id).await?.iter().cloned());
            }
            episode.files_text = files_text(names.iter().map(String::as_str));
            episode.files = names.into_iter().map(|name| FileEntry { name }).collect();
            if self.acks.is_none() {
                self.acks = Some(reads.acks(target).await?);
            }
            episode.acknowledged = covering(self.acks.as_deref().unwrap_or_default(), start, end);
        }
        Ok(episode)
    }
}

/// One page of episodes: at most `limit` of those `filter` selects, in its order, after its
/// cursor, and whether more follow. Each target is walked from the page's start, and the walks
/// are merged by `(started_at, first_snapshot_id)`.
pub async fn page(
    reads: &mut impl EpisodeReads,
    filter: &EpisodeFilter,
    clock: EpisodeClock,
    limit: usize,
    path: EpisodePath,
) -> Result<(Vec<Episode>, bool), StoreError> {
    if path == EpisodePath::Materialised
        && reads.table_ready(clock.default_stale_after_seconds).await?
    {
        return table_page(reads, filter, clock, limit).await;
    }
    let selection = Selection {
        filter,
        from: filter.from.map_or(i64::MIN, Timestamp::as_millis),
        to: filter.to.map_or(i64::MAX, Timestamp::as_millis),
        after: filter
            .after
            .map(|cursor| (cursor.started_at.as_millis(), cursor.first_snapshot_id)),
    };
    let mut walks = Vec::new();
    for target in reads.targets(filter).await? {
        let retirements = retirements(reads, target.id).await?;
        let timeline = Timeline {
            target: target.id,
            retired: retired_spans(&retirements),
            default_stale_after: clock.default_stale_after_seconds.saturating_mul(1000),
            now: clock.now.as_millis(),
        };
        let mut walk = Walk {
            target,
            timeline,
            head: None,
            acks: None,
        };
        walk.start(reads, &selection).await?;
        if walk.head.is_some() {
            walks.push(walk);
        }
    }

    let mut filesets = Filesets::default();
    let mut episodes = Vec::new();
    while episodes.len() < limit {
        let heads = walks
            .iter()
            .enumerate()
            .filter_map(|(index, walk)| walk.head.map(|head| (head.key(), index)));
        let next = match filter.order {
            Order::Desc => heads.max(),
            Order::Asc => heads.min(),
        };
        let Some((_, index)) = next else {
            break;
        };
        let walk = &mut walks[index];
        if let Some(piece) = walk.head {
            episodes.push(walk.episode(reads, &mut filesets, piece).await?);
        }
        walk.advance(reads, &selection).await?;
    }
    // A walk still holding a head has a selected episode the page left for the next.
    let more = walks.iter().any(|walk| walk.head.is_some());
    Ok((episodes, more))
}

/// One episode of a target as the derivation finds it: what `episode_table` stores of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DerivedPiece {
    pub state: TargetState,
    /// Its block's status (a STALE piece's too).
    pub status: SyncStatus,
    pub start: i64,
    /// `None` while open.
    pub end: Option<i64>,
    /// The cursor's `first_snapshot_id`: a run's first snapshot, or the one that went stale.
    pub key_id: i64,
    /// A run's last snapshot; for STALE, `key_id`.
    pub last_id: i64,
    /// The `last_check` of `last_id`, and when its state goes stale.
    pub last_at: i64,
    pub last_stale_at: i64,
}

/// Every episode of `target`, in time order, derived with the clock at its latest check (so that
/// the current run is open, however old that check is), and `default_stale_after` (ms) for
/// snapshots without their own. Reads the target's whole history: for a late check, a
/// retirement, a revival and a rebuild, not for an append.
pub async fn target_pieces(
    reads: &mut impl EpisodeReads,
    target: i64,
    default_stale_after: i64,
) -> Result<Vec<DerivedPiece>, StoreError> {
    let Some(latest) = reads.point(target, Seek::AtOrBefore, i64::MAX).await? else {
        return Ok(Vec::new());
    };
    let retirements = retirements(reads, target).await?;
    let filter = EpisodeFilter::default();
    let selection = Selection {
        filter: &filter,
        from: i64::MIN,
        to: i64::MAX,
        after: None,
    };
    let mut walk = Walk {
        target: EpisodeTarget {
            id: target,
            repo: String::new(),
            server: String::new(),
        },
        timeline: Timeline {
            target,
            retired: retired_spans(&retirements),
            default_stale_after,
            now: latest.last_check,
        },
        head: None,
        acks: None,
    };
    walk.start(reads, &selection).await?;
    let mut pieces = Vec::new();
    while let Some(piece) = walk.head {
        let last = match piece {
            Piece::Run { last, .. } => last,
            Piece::Stale { after, .. } => after,
        };
        pieces.push(DerivedPiece {
            state: piece.state(),
            status: piece.block().status(),
            start: piece.start(),
            end: piece.end(),
            key_id: piece.key().1,
            last_id: last.id,
            last_at: last.at,
            last_stale_at: last.stale_at(),
        });
        walk.advance(reads, &selection).await?;
    }
    Ok(pieces)
}

/// `EpisodeReads` for a connection type of `$database`: the same statements on either, but
/// for the gap walk (`$gap_sql`), which each database runs fastest its own way.
macro_rules! episode_reads_for {
    ($connection:ty, $database:ty, $gap_sql:path) => {
        impl EpisodeReads for $connection {
            async fn targets(
                &mut self,
                filter: &EpisodeFilter,
            ) -> Result<Vec<EpisodeTarget>, StoreError> {
                let mut targets = sqlx::QueryBuilder::<$database>::new(
                    "select id, repo, server from targets where 1 = 1",
                );
                if let Some(repo) = &filter.repo {
                    targets.push(" and repo = ").push_bind(repo.clone());
                }
                if let Some(server) = &filter.server {
                    targets.push(" and server = ").push_bind(server.clone());
                }
                targets.push(" order by repo, server");
                Ok(targets.build_query_as().fetch_all(self).await?)
            }

            async fn retirements(&mut self, target: i64) -> Result<Vec<LifecycleRow>, StoreError> {
                Ok(sqlx::query_as(RETIREMENTS_SQL)
                    .bind(target)
                    .fetch_all(self)
                    .await?)
            }

            async fn snapshot_check(&mut self, id: i64) -> Result<Option<i64>, StoreError> {
                Ok(sqlx::query_scalar(SNAPSHOT_CHECK_SQL)
                    .bind(id)
                    .fetch_optional(self)
                    .await?)
            }

            async fn point(
                &mut self,
                target: i64,
                seek: Seek,
                at: i64,
            ) -> Result<Option<SnapshotPoint>, StoreError> {
                Ok(sqlx::query_as(point_sql(seek))
                    .bind(target)
                    .bind(at)
                    .fetch_optional(self)
                    .await?)
            }

            async fn status_change(
                &mut self,
                target: i64,
                seek: Seek,
                at: i64,
            ) -> Result<Option<SnapshotPoint>, StoreError> {
                Ok(sqlx::query_as(status_change_sql(seek))
                    .bind(target)
                    .bind(at)
                    .fetch_optional(self)
                    .await?)
            }

            async fn gap(
                &mut self,
                target: i64,
                (from, to): (i64, i64),
                (cap, fallback): (i64, i64),
                default_stale_after_ms: i64,
                order: Order,
            ) -> Result<Option<GapRow>, StoreError> {
                Ok(sqlx::query_as(&$gap_sql(order))
                    .bind(target)
                    .bind(from)
                    .bind(to)
                    .bind(cap)
                    .bind(fallback)
                    .bind(default_stale_after_ms)
                    .fetch_optional(self)
                    .await?)
            }

            async fn count(
                &mut self,
                target: i64,
                first: i64,
                last: i64,
            ) -> Result<i64, StoreError> {
                Ok(sqlx::query_scalar(COUNT_SQL)
                    .bind(target)
                    .bind(first)
                    .bind(last)
                    .fetch_one(self)
                    .await?)
            }

            async fn file_changes(
                &mut self,
                target: i64,
                after: i64,
                through: i64,
            ) -> Result<Vec<i64>, StoreError> {
                Ok(sqlx::query_scalar(FILE_CHANGES_SQL)
                    .bind(target)
                    .bind(after)
                    .bind(through)
                    .fetch_all(self)
                    .await?)
            }

            async fn fileset(&mut self, id: i64) -> Result<String, StoreError> {
                Ok(sqlx::query_scalar(FILESET_SQL)
                    .bind(id)
                    .fetch_one(self)
                    .await?)
            }

            async fn acks(&mut self, target: i64) -> Result<Vec<AckRow>, StoreError> {
                Ok(sqlx::query_as(ACKS_SQL)
                    .bind(target)
                    .fetch_all(self)
                    .await?)
            }

            async fn table_ready(&mut self, default_stale_after: i64) -> Result<bool, StoreError> {
                let meta: Option<(i64, i64)> = sqlx::query_as(crate::store::sql::ROLLUP_META_SQL)
                    .fetch_optional(self)
                    .await?;
                Ok(meta == Some((default_stale_after, 1)))
            }

            async fn candidates(
                &mut self,
                sql: &CandidateSql,
            ) -> Result<Vec<Candidate>, StoreError> {
                let mut query = sqlx::query_as::<$database, Candidate>(&sql.text);
                for bind in &sql.binds {
                    query = match bind {
                        Bind::Int(value) => query.bind(*value),
                        Bind::Text(value) => query.bind(value.clone()),
                    };
                }
                Ok(query.fetch_all(self).await?)
            }

            async fn snapshots(&mut self, ids: &[i64]) -> Result<Vec<SnapshotPoint>, StoreError> {
                let mut select = sqlx::QueryBuilder::<$database>::new(SNAPSHOTS_SQL);
                let mut list = select.separated(", ");
                for id in ids {
                    list.push_bind(*id);
                }
                select.push(")");
                Ok(select.build_query_as().fetch_all(self).await?)
            }

            async fn acks_of(&mut self, targets: &[i64]) -> Result<Vec<TargetAck>, StoreError> {
                let mut select = sqlx::QueryBuilder::<$database>::new(TARGET_ACKS_SQL);
                let mut list = select.separated(", ");
                for id in targets {
                    list.push_bind(*id);
                }
                select.push(") order by target_id, id");
                Ok(select.build_query_as().fetch_all(self).await?)
            }
        }
    };
}

episode_reads_for!(sqlx::sqlite::SqliteConnection, sqlx::Sqlite, gap_sql_sqlite);
episode_reads_for!(
    sqlx::postgres::PgConnection,
    sqlx::Postgres,
    gap_sql_postgres
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retirements_last_until_their_revival_and_a_late_revival_removes_nothing() {
        let span = |from, until| Retired { from, until };
        assert_eq!(
            retired_spans(&[(100, Some(150)), (300, None)]),
            [span(100, Some(150)), span(300, None)]
        );
        // Revived by a check dated before the retirement.
        assert_eq!(retired_spans(&[(100, Some(90))]), []);
        assert_eq!(retired_spans(&[(100, Some(100))]), []);
        assert_eq!(
            retired_spans(&[(150, Some(250)), (100, Some(200))]),
            [span(100, Some(250))]
        );
        assert_eq!(
            retired_spans(&[(100, Some(200)), (200, None)]),
            [span(100, None)]
        );
    }

    #[test]
    fn the_covering_acknowledgement_is_the_latest_that_overlaps() {
        let ack = |id, created_at, until, ended_at| AckRow {
            id,
            reason: format!("r{id}"),
            by: "ops".to_owned(),
            created_at,
            until,
            ended_at,
        };
        let acks = [
            ack(1, 10, 100, Some(20)),
            ack(2, 30, 100, None),
            ack(3, 200, 300, Some(250)),
        ];
        assert_eq!(covering(&acks, 0, Some(10)), None);
        assert_eq!(covering(&acks, 0, Some(15)).map(|a| a.id), Some(1));
        assert_eq!(covering(&acks, 20, Some(30)), None);
        assert_eq!(covering(&acks, 15, Some(40)).map(|a| a.id), Some(2));
        assert_eq!(covering(&acks, 100, Some(200)), None);
        assert_eq!(covering(&acks, 90, None).map(|a| a.id), Some(3));
        assert_eq!(covering(&acks, 250, None), None);
    }
}
