//! The integrity chain's bookkeeping that does not depend on the database: recomputing every
//! chain from records read in arrival order (`Verifier`, with `lifecycle` re-deriving the rows
//! the API reads from the chained events), and the retention walk that
//! decides which rows go and which checkpoints keep the chain verifiable (`Walker`). Each store
//! feeds them rows and carries out what they decide.

mod lifecycle;

use std::collections::{HashMap, HashSet};

pub use lifecycle::{AckRow, SilenceRow};

use futures_util::stream::BoxStream;

use crate::chain::{
    self, BadSnapshot, ChainEvent, ChainFields, Checkpoint as ChainCheckpoint, EventFields,
    EventSelection, Hash, RecordKind, Verification,
};
use crate::store::{PruneReport, Store, StoreError};
use crate::timestamp::Timestamp;
use lifecycle::Lifecycle;

/// A gap retention cut into a target's chain: the record retained after `after_id` (a snapshot
/// or an event; 0: the target's start) was hashed with `resume`, the hash of the last snapshot
/// removed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    pub resume: Vec<u8>,
    pub removed: i64,
}

/// Checkpoints by (target id, the retained record they follow).
pub type Checkpoints = HashMap<(i64, i64), ResumePoint>;

/// What `load_checkpoints` reads: `(target_id, after_id, resume_hash, removed)`.
pub const CHECKPOINTS_SQL: &str =
    "select target_id, after_id, resume_hash, removed from chain_checkpoints";

/// `CHECKPOINTS_SQL`'s rows by (target, the retained record they follow).
pub fn checkpoint_map(rows: Vec<(i64, i64, Vec<u8>, i64)>) -> Checkpoints {
    rows.into_iter()
        .map(|(target, after, resume, removed)| ((target, after), ResumePoint { resume, removed }))
        .collect()
}

/// What `/api/checkpoints` lists: `(repo, server, after_id, resume_hash, removed, pruned_at)`,
/// by target then position.
pub const LISTED_CHECKPOINTS_SQL: &str = "select t.repo, t.server, c.after_id, c.resume_hash, c.removed, c.pruned_at \
     from chain_checkpoints c join targets t on t.id = c.target_id \
     order by t.repo, t.server, c.after_id";

/// A row of `LISTED_CHECKPOINTS_SQL`.
pub type ListedCheckpoint = (String, String, i64, Vec<u8>, i64, i64);

/// `LISTED_CHECKPOINTS_SQL`'s rows on the wire.
pub fn listed_checkpoints(rows: Vec<ListedCheckpoint>) -> Vec<ChainCheckpoint> {
    rows.into_iter()
        .map(
            |(repo, server, after_id, resume, removed, pruned_at)| ChainCheckpoint {
                repo,
                server,
                after_id,
                resume_hash: hex::encode(resume),
                removed,
                pruned_at: Timestamp::from_millis(pruned_at),
            },
        )
        .collect()
}

/// A target as verification reads it: its recorded chain head, and the lifecycle state the API
/// reads from its row (`TARGETS_SQL`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TargetHead {
    pub id: i64,
    pub repo: String,
    pub server: String,
    pub head_id: Option<i64>,
    pub head_hash: Option<Vec<u8>>,
    /// The acknowledgement in force (null before the lifecycle schema).
    pub ack_id: Option<i64>,
    /// When it was retired (null while active, and before the lifecycle schema).
    pub retired_at: Option<i64>,
}

/// Every target as verification reads it, on a database with the lifecycle tables.
pub const TARGETS_SQL: &str =
    "select id, repo, server, head_id, head_hash, ack_id, retired_at from targets";
/// The same on a database from before them (a backup verified by a newer binary).
pub const TARGETS_BEFORE_LIFECYCLE_SQL: &str = "select id, repo, server, head_id, head_hash, \
     cast(null as bigint) as ack_id, cast(null as bigint) as retired_at from targets";

/// Every chained event, in arrival order: `(id, target_id, kind, at, body, hash)`.
pub const EVENTS_SQL: &str = "select id, target_id, kind, at, body, hash from events order by id";
/// Every acknowledgement as the API reads it, by id (an `AckRow`).
pub const ACKS_SQL: &str = "select id, target_id, reason, \"by\", files, created_at, until, \
     ended_at, end_reason, ended_by from acks order by id";
/// Every silence as the API reads it, by id (a `SilenceRow`).
pub const SILENCES_SQL: &str = "select id, repos, servers, starts_at, ends_at, reason, \"by\", \
     created_at, deleted_at, deleted_by from silences order by id";

/// A stored file set's names as the chain encodes them: re-encoded from what the row says, so
/// a set is checked by its names, not by how its JSON is spaced.
pub fn canonical_files(id: i64, files: &str) -> Result<String, StoreError> {
    let names: Vec<String> = serde_json::from_str(files)
        .map_err(|error| StoreError::corrupt(format!("file set {id}: {error}")))?;
    Ok(chain::files_json(names.iter().map(String::as_str)))
}

/// What a chain's last record was: a snapshot, or an event of a kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Last {
    Snapshot(i64),
    Event(i64, String),
}

impl Last {
    fn id(&self) -> i64 {
        match self {
            Self::Snapshot(id) | Self::Event(id, _) => *id,
        }
    }
}

/// Where a chain stands during verification.
#[derive(Debug, Default)]
struct ChainPosition {
    /// What the next retained record must link to.
    expected_previous: Option<Vec<u8>>,
    last: Option<Last>,
}

/// Which chain a record is on: a target's (its id), or the fleet chain (`None`).
type ChainKey = Option<i64>;

/// A record being checked: its place and what to call it.
#[derive(Debug, Clone, Copy)]
struct Pushed<'a> {
    chain: ChainKey,
    id: i64,
    repo: &'a str,
    server: &'a str,
    /// The event's kind; `None` for a snapshot.
    kind: Option<&'a str>,
}

impl Pushed<'_> {
    /// "snapshot", or "ack event".
    fn noun(&self) -> String {
        match self.kind {
            None => "snapshot".to_owned(),
            Some(kind) => format!("{kind} event"),
        }
    }

    fn bad(&self, reason: String) -> BadSnapshot {
        BadSnapshot {
            id: self.id,
            repo: self.repo.to_owned(),
            server: self.server.to_owned(),
            reason,
            record: if self.kind.is_some() {
                RecordKind::Event
            } else {
                RecordKind::Snapshot
            },
            kind: self.kind.map(str::to_owned),
        }
    }
}

/// Recomputes every chain from its records, fed in arrival order (by id: a target's snapshots
/// and events merged, and the fleet chain's events), and names the first record (by id) whose
/// stored hash does not follow. It also re-derives, from the chained events, what the `acks`,
/// `silences` and `targets` rows must say ([`Lifecycle`]), and names a row that says otherwise.
#[derive(Debug)]
pub struct Verifier {
    checkpoints: Checkpoints,
    targets: Vec<TargetHead>,
    chains: HashMap<ChainKey, ChainPosition>,
    checked: i64,
    /// The first record (by id) that breaks a chain: named before any row.
    bad: Option<BadSnapshot>,
    /// The first row (by id) of `acks`, `silences` or `targets` that disagrees with the chain:
    /// named when every chain is intact (a broken chain makes its events untrustworthy, so a
    /// row's disagreement with them says less than the break).
    bad_row: Option<BadSnapshot>,
    lifecycle: Lifecycle,
    /// Each record's canonical encoding, written over and over into one allocation.
    buffer: Vec<u8>,
}

impl Verifier {
    pub fn new(checkpoints: Checkpoints, targets: Vec<TargetHead>) -> Self {
        Self {
            checkpoints,
            targets,
            chains: HashMap::new(),
            checked: 0,
            bad: None,
            bad_row: None,
            lifecycle: Lifecycle::default(),
            buffer: Vec::with_capacity(512),
        }
    }

    /// Checks the next stored snapshot by id, of target `target`, from its fields as stored.
    pub fn push_fields(&mut self, target: i64, fields: &ChainFields<'_>, stored: Option<Vec<u8>>) {
        let pushed = Pushed {
            chain: Some(target),
            id: fields.id,
            repo: fields.repo,
            server: fields.server,
            kind: None,
        };
        self.link(pushed, stored, |previous, buffer| {
            chain::link_fields(fields, previous, buffer)
        });
    }

    /// Checks the next stored event by id: of target `target`, or of the fleet chain (`None`,
    /// with `fields.repo` and `fields.server` null).
    pub fn push_event(
        &mut self,
        target: Option<i64>,
        fields: &EventFields<'_>,
        stored: Option<Vec<u8>>,
    ) {
        let pushed = Pushed {
            chain: target,
            id: fields.id,
            repo: fields.repo.unwrap_or_default(),
            server: fields.server.unwrap_or_default(),
            kind: Some(fields.kind),
        };
        self.link(pushed, stored, |previous, buffer| {
            chain::link_event(fields, previous, buffer)
        });
        if let Err(reason) = self.lifecycle.observe(target, fields) {
            let bad = pushed.bad(reason);
            self.report(bad);
        }
    }

    /// Checks one record against its chain's position, then moves the position on to it.
    fn link(
        &mut self,
        pushed: Pushed<'_>,
        stored: Option<Vec<u8>>,
        hash: impl FnOnce(Option<&Hash>, &mut Vec<u8>) -> Hash,
    ) {
        self.checked += 1;
        let checkpoints = &self.checkpoints;
        let position = self
            .chains
            .entry(pushed.chain)
            .or_insert_with(|| ChainPosition {
                expected_previous: pushed
                    .chain
                    .and_then(|target| checkpoints.get(&(target, 0)))
                    .map(|checkpoint| checkpoint.resume.clone()),
                last: None,
            });
        // A later record can never be named before an earlier one: hash only until one is bad.
        let reason = if self.bad.is_some() {
            None
        } else {
            let previous = position
                .expected_previous
                .as_deref()
                .map(|bytes| chain::from_bytes(bytes).ok_or(bytes));
            let buffer = &mut self.buffer;
            match (&stored, previous) {
                (None, _) => Some(format!("the {} has no hash", pushed.noun())),
                (Some(_), Some(Err(_))) => Some(format!(
                    "the hash this {} follows (its predecessor's or a retention checkpoint's) is \
                     malformed",
                    pushed.noun()
                )),
                (Some(stored), Some(Ok(previous))) => (hash(Some(&previous), buffer)[..]
                    != stored[..])
                    .then(|| mismatch(&pushed, position.last.as_ref().map(Last::id))),
                (Some(stored), None) => {
                    (hash(None, buffer)[..] != stored[..]).then(|| mismatch(&pushed, None))
                }
            }
        };
        // Go on from what is stored, so one bad row is reported once, not for every row after it.
        position.expected_previous = pushed
            .chain
            .and_then(|target| checkpoints.get(&(target, pushed.id)))
            .map(|checkpoint| checkpoint.resume.clone())
            .or(stored);
        position.last = Some(match pushed.kind {
            None => Last::Snapshot(pushed.id),
            Some(kind) => Last::Event(pushed.id, kind.to_owned()),
        });
        if let Some(reason) = reason {
            self.bad = Some(pushed.bad(reason));
        }
    }

    /// Keeps `bad`, a broken chain, if it comes before (by id) what is already named.
    fn report(&mut self, bad: BadSnapshot) {
        earliest(&mut self.bad, bad);
    }

    /// Checks the next `acks` row (by id) against the `ack` and `ack_end` events seen: call
    /// after every record was pushed.
    pub fn check_ack(&mut self, row: AckRow) {
        if let Some((target, reason)) = self.lifecycle.check_ack(&row) {
            self.report_row(row.id, target, RecordKind::Ack, reason);
        }
    }

    /// Checks the next `silences` row (by id) against the `silence` and `silence_end` events
    /// seen: call after every record was pushed.
    pub fn check_silence(&mut self, row: SilenceRow) {
        if let Some(reason) = self.lifecycle.check_silence(&row) {
            self.report_row(row.id, None, RecordKind::Silence, reason);
        }
    }

    fn report_row(&mut self, id: i64, target: Option<i64>, record: RecordKind, reason: String) {
        let (repo, server) = target
            .and_then(|target| self.targets.iter().find(|head| head.id == target))
            .map(|head| (head.repo.clone(), head.server.clone()))
            .unwrap_or_default();
        earliest(
            &mut self.bad_row,
            BadSnapshot {
                id,
                repo,
                server,
                reason,
                record,
                kind: None,
            },
        );
    }

    /// Checks every target's recorded head against the records seen (removing a target's newest
    /// records leaves no row to fail, but its head says what it was), its acknowledgement in
    /// force and retirement against its events, and that every acknowledgement and silence
    /// event has its row.
    pub fn finish(mut self) -> Verification {
        let mut heads = Vec::new();
        let mut rows = Vec::new();
        for target in &self.targets {
            heads.extend(self.check_head(target));
            if let Some((id, reason)) = self.lifecycle.check_target(target) {
                rows.push((id, Some(target.id), RecordKind::Target, reason));
            }
        }
        for bad in heads {
            self.report(bad);
        }
        for (id, target, record, reason) in rows {
            self.report_row(id, target, record, reason);
        }
        for (id, target, record, reason) in self.lifecycle.rows_missing() {
            self.report_row(id, target, record, reason);
        }
        let first_bad = self.bad.or(self.bad_row);
        Verification {
            ok: first_bad.is_none(),
            checked: self.checked,
            first_bad,
            statements: None,
        }
    }

    fn check_head(&self, target: &TargetHead) -> Option<BadSnapshot> {
        let position = self.chains.get(&Some(target.id));
        let last = position.and_then(|position| position.last.as_ref());
        let named = |id, record, kind: Option<&str>, reason| BadSnapshot {
            id,
            repo: target.repo.clone(),
            server: target.server.clone(),
            reason,
            record,
            kind: kind.map(str::to_owned),
        };
        let head = target.head_id?;
        match last {
            Some(last) if head < last.id() => {
                let (record, kind, noun) = match last {
                    Last::Snapshot(_) => (RecordKind::Snapshot, None, "snapshot".to_owned()),
                    Last::Event(_, kind) => (
                        RecordKind::Event,
                        Some(kind.as_str()),
                        format!("{kind} event"),
                    ),
                };
                Some(named(
                    last.id(),
                    record,
                    kind,
                    format!(
                        "the {noun} comes after its target's recorded chain head (id {head}): it \
                         was added to or moved into this target behind the server's back"
                    ),
                ))
            }
            last if last.map(Last::id) != Some(head) => Some(named(
                head,
                RecordKind::Target,
                None,
                format!(
                    "the target's newest record (id {head}) is missing; the newest stored is {}",
                    last.map_or("none".to_owned(), |last| format!("id {}", last.id()))
                ),
            )),
            _ if target.head_hash != position.and_then(|p| p.expected_previous.clone()) => {
                Some(named(
                    head,
                    RecordKind::Target,
                    None,
                    "the target's recorded chain head hash differs from its newest record's"
                        .to_owned(),
                ))
            }
            _ => None,
        }
    }
}

/// Keeps in `slot` whichever of it and `bad` has the smaller id (the one already there on a tie).
fn earliest(slot: &mut Option<BadSnapshot>, bad: BadSnapshot) {
    if slot.as_ref().is_none_or(|known| bad.id < known.id) {
        *slot = Some(bad);
    }
}

fn mismatch(pushed: &Pushed<'_>, previous_id: Option<i64>) -> String {
    let noun = pushed.noun();
    let chain = if pushed.chain.is_some() {
        "its target"
    } else {
        "the fleet chain"
    };
    match previous_id {
        Some(previous) => format!(
            "the hash does not match the {noun}'s fields linked to the previous stored record of \
             {chain} (id {previous}): this {noun} was edited, or a record between them was \
             removed or edited"
        ),
        None => format!(
            "the hash does not match the {noun}'s fields as the first record of {chain}: this \
             {noun} was edited, or one before it was removed or edited"
        ),
    }
}

/// A page of `GET /api/chain/events`: after id `$1`, the events of targets matching the repo
/// (`$2`, null: any) and server (`$3`) and, when `$4`, of the fleet chain; at most `$5`, by id.
/// An event whose target is gone is no target's, as in verification.
pub const CHAIN_EVENTS_PAGE_SQL: &str = "select e.id, t.repo, t.server, e.kind, e.at, e.body, \
     e.hash from events e left join targets t on t.id = e.target_id where e.id > $1 \
     and ((e.target_id is not null and t.id is not null and ($2 is null or t.repo = $2) \
           and ($3 is null or t.server = $3)) \
          or (e.target_id is null and $4)) \
     order by e.id limit $5";

/// A row of `CHAIN_EVENTS_PAGE_SQL`.
type ChainEventRow = (
    i64,
    Option<String>,
    Option<String>,
    String,
    i64,
    String,
    Vec<u8>,
);

/// Reads a page of chained events, on either database's pool.
#[allow(
    async_fn_in_trait,
    reason = "crate-private; callers know the concrete store"
)]
pub trait ChainEventReads {
    /// At most `limit` events `selection` picks after id `after`, by id.
    async fn chain_events_page(
        self,
        selection: &EventSelection,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ChainEvent>, StoreError>;
}

macro_rules! chain_event_reads_for {
    ($pool:ty) => {
        impl ChainEventReads for &$pool {
            async fn chain_events_page(
                self,
                selection: &EventSelection,
                after: i64,
                limit: i64,
            ) -> Result<Vec<ChainEvent>, StoreError> {
                let rows: Vec<ChainEventRow> = sqlx::query_as(CHAIN_EVENTS_PAGE_SQL)
                    .bind(after)
                    .bind(selection.repo.as_deref())
                    .bind(selection.server.as_deref())
                    .bind(selection.fleet)
                    .bind(limit)
                    .fetch_all(self)
                    .await?;
                Ok(rows.into_iter().map(chain_event).collect())
            }
        }
    };
}

chain_event_reads_for!(sqlx::SqlitePool);
chain_event_reads_for!(sqlx::PgPool);

fn chain_event((id, repo, server, kind, at, body, hash): ChainEventRow) -> ChainEvent {
    ChainEvent {
        id,
        repo,
        server,
        kind,
        at: Timestamp::from_millis(at),
        body,
        hash: hex::encode(hash),
    }
}

/// Every event `selection` picks, by id, read a page at a time so memory stays flat.
pub fn chain_events(
    store: Store,
    selection: EventSelection,
) -> BoxStream<'static, Result<ChainEvent, StoreError>> {
    const EVENTS_PAGE: i64 = 1000;
    let pages = futures_util::stream::try_unfold(Some(0), move |after| {
        let store = store.clone();
        let selection = selection.clone();
        async move {
            let Some(after) = after else {
                return Ok::<_, StoreError>(None);
            };
            let page = match &store {
                Store::Sqlite(store) => {
                    store
                        .readers()
                        .chain_events_page(&selection, after, EVENTS_PAGE)
                        .await?
                }
                Store::Postgres(store) => {
                    store
                        .pool()
                        .chain_events_page(&selection, after, EVENTS_PAGE)
                        .await?
                }
            };
            let next = (page.len() as i64 == EVENTS_PAGE)
                .then(|| page.last().map(|event| event.id))
                .flatten();
            Ok(Some((
                futures_util::stream::iter(page.into_iter().map(Ok)),
                next,
            )))
        }
    });
    Box::pin(futures_util::TryStreamExt::try_flatten(pages))
}

/// A record as the retention walk sees it (`WALK_PAGE_SQL`): a snapshot, or an event of a
/// target's chain (`change` -1), which is never removed but is where a gap can end.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WalkRow {
    pub id: i64,
    #[sqlx(rename = "target_id")]
    pub target: i64,
    /// A snapshot's `last_check`; an event's `at`.
    pub last_check: i64,
    /// A snapshot's transition flags; -1 for an event.
    pub change: i64,
    pub hash: Option<Vec<u8>>,
}

/// Records walked per page (one transaction).
pub const PAGE: i64 = 5_000;

/// The reads a retention run needs, answered by each store on its connection. Both databases
/// take the `$N` placeholders of the query texts below.
#[allow(
    async_fn_in_trait,
    reason = "crate-private; callers know the concrete store"
)]
pub trait WalkReads {
    /// Rows of `ID_SPAN_SQL`: the smallest and greatest snapshot ids.
    async fn id_span(&mut self) -> Result<(Option<i64>, Option<i64>), StoreError>;
    /// The row of `PROBE_SQL` for `id`: the first snapshot at or after it, `(id, last_check)`.
    async fn probe(&mut self, id: i64) -> Result<Option<(i64, i64)>, StoreError>;
    /// The rows of `KEEP_SQL` for `cutoff`.
    async fn kept(&mut self, cutoff: i64) -> Result<Vec<(Option<i64>, Option<i64>)>, StoreError>;
    /// The rows of `CHECKPOINTS_SQL`.
    async fn checkpoints(&mut self) -> Result<Vec<(i64, i64, Vec<u8>, i64)>, StoreError>;
    /// The rows of `WALK_PAGE_SQL`: at most `PAGE` records after `after`, up to `until`.
    async fn page(&mut self, after: i64, until: i64) -> Result<Vec<WalkRow>, StoreError>;
}

pub const ID_SPAN_SQL: &str = "select min(id), max(id) from snapshots";
pub const PROBE_SQL: &str =
    "select id, last_check from snapshots where id >= $1 order by id limit 1";
/// Each target's newest snapshot before the cutoff (`$1`), and its chain head: one index seek
/// per target on snapshots_target_time.
pub const KEEP_SQL: &str = "select (select s.id from snapshots s where s.target_id = t.id \
     and s.last_check < $1 order by s.last_check desc limit 1), t.head_id from targets t";
/// A page of the walk: the records of targets' chains after id `$1`, up to id `$2`, at most `$3`
/// of them in id order. Events go through the walk, never removed, so a gap that a removal cuts
/// starts after the record (snapshot or event) retained before it and ends at the next one:
/// that is the record hashed with the gap's `resume_hash`. Each side takes its own first `$3`
/// rows by its primary key, so a page reads no more than it returns.
pub const WALK_PAGE_SQL: &str = "select * from (select id, target_id, last_check, change, hash \
     from snapshots where id > $1 and id <= $2 order by id limit $3) as s \
     union all select * from (select id, target_id, at, -1, hash from events \
     where target_id is not null and id > $1 and id <= $2 order by id limit $3) as e \
     order by id limit $3";

/// A planned retention run: where its walk stops, and the walker that decides each page.
#[derive(Debug)]
pub struct Plan {
    /// The walk's end (see `expired_bound`); later snapshots are never candidates.
    pub until_id: i64,
    pub walker: Walker,
}

impl Plan {
    /// Plans a run that removes snapshots with `last_check` before `cutoff`, except transitions
    /// (`change != 0`), each target's last snapshot before the cutoff, and each chain head.
    pub async fn make(reads: &mut impl WalkReads, cutoff: Timestamp) -> Result<Self, StoreError> {
        let until_id = expired_bound(reads, cutoff.as_millis()).await?;
        let keep = reads
            .kept(cutoff.as_millis())
            .await?
            .into_iter()
            .flat_map(|(boundary, head)| [boundary, head])
            .flatten()
            .collect();
        let checkpoints = checkpoint_map(reads.checkpoints().await?);
        Ok(Self {
            until_id,
            walker: Walker::new(cutoff, keep, checkpoints),
        })
    }
}

/// Where the walk can stop: the last id (arrival order) whose `last_check` is before the cutoff,
/// found by bisecting ids, so a run walks only history that can have expired, never the retained
/// window. Arrival order follows check time closely; a check that arrives long after it ran (and
/// so sits beyond the bound) waits for a later run.
async fn expired_bound(reads: &mut impl WalkReads, cutoff: i64) -> Result<i64, StoreError> {
    let (Some(first), Some(mut high)) = reads.id_span().await? else {
        return Ok(0);
    };
    // Every probe at or below `low` found an expired check; every one above `high` did not.
    let mut low = first - 1;
    while low < high {
        let middle = low + (high - low + 1) / 2;
        match reads.probe(middle).await? {
            Some((id, last_check)) if last_check < cutoff && id <= high => low = id,
            _ => high = middle - 1,
        }
    }
    Ok(low.max(0))
}

/// What one page of the walk decided; the store carries it out in the page's transaction, in
/// this order: upsert `write`, delete `absorbed`, delete the snapshots `remove`.
#[derive(Debug, Default)]
pub struct PageActions {
    /// Checkpoints to insert or widen: `(target, after_id, checkpoint)`.
    pub write: Vec<(i64, i64, ResumePoint)>,
    /// Checkpoints that joined a wider gap: `(target, after_id)`.
    pub absorbed: Vec<(i64, i64)>,
    /// Snapshot ids to delete.
    pub remove: Vec<i64>,
}

/// One target's side of the walk.
#[derive(Debug, Default)]
struct Walk {
    /// The last retained record (snapshot or event) walked (0: none yet).
    last_kept: i64,
    /// The gap after it, if any.
    gap: Option<Gap>,
}

#[derive(Debug)]
struct Gap {
    after_id: i64,
    resume: Vec<u8>,
    removed: i64,
    changed: bool,
}

impl Gap {
    fn from_checkpoint(after_id: i64, checkpoint: ResumePoint) -> Self {
        Self {
            after_id,
            resume: checkpoint.resume,
            removed: checkpoint.removed,
            changed: false,
        }
    }
}

/// A retention run's walk over the targets' chains in arrival order. It removes snapshots with
/// `last_check` before the cutoff, except transitions (`change != 0`) and the ids in `keep`
/// (each target's last snapshot before the cutoff, and each chain head), never events, and
/// records the gaps it cuts as checkpoints, so every page leaves a chain that verifies.
#[derive(Debug)]
pub struct Walker {
    cutoff: i64,
    keep: HashSet<i64>,
    checkpoints: Checkpoints,
    walks: HashMap<i64, Walk>,
    pub report: PruneReport,
}

impl Walker {
    pub fn new(cutoff: Timestamp, keep: HashSet<i64>, checkpoints: Checkpoints) -> Self {
        Self {
            cutoff: cutoff.as_millis(),
            keep,
            checkpoints,
            walks: HashMap::new(),
            report: PruneReport {
                cutoff,
                ..PruneReport::default()
            },
        }
    }

    /// Walks the next page of rows (ascending ids, after every row of the previous pages).
    pub fn page(&mut self, rows: impl IntoIterator<Item = WalkRow>) -> PageActions {
        let mut actions = PageActions::default();
        for row in rows {
            let checkpoints = &mut self.checkpoints;
            let target = row.target;
            let walk = self.walks.entry(target).or_insert_with(|| Walk {
                last_kept: 0,
                gap: checkpoints
                    .remove(&(target, 0))
                    .map(|checkpoint| Gap::from_checkpoint(0, checkpoint)),
            });
            let removable =
                row.last_check < self.cutoff && row.change == 0 && !self.keep.contains(&row.id);
            if removable {
                let after_id = walk.last_kept;
                let gap = walk.gap.get_or_insert_with(|| Gap {
                    after_id,
                    resume: Vec::new(),
                    removed: 0,
                    changed: true,
                });
                gap.resume = row.hash.unwrap_or_default();
                gap.removed += 1;
                gap.changed = true;
                // A gap that followed this snapshot joins the one it now belongs to.
                if let Some(checkpoint) = checkpoints.remove(&(target, row.id)) {
                    gap.resume = checkpoint.resume;
                    gap.removed += checkpoint.removed;
                    actions.absorbed.push((target, row.id));
                }
                actions.remove.push(row.id);
            } else {
                if let Some(gap) = walk.gap.take().filter(|gap| gap.changed) {
                    actions.write.push((target, gap.after_id, gap.checkpoint()));
                }
                walk.last_kept = row.id;
                walk.gap = checkpoints
                    .remove(&(target, row.id))
                    .map(|checkpoint| Gap::from_checkpoint(row.id, checkpoint));
            }
        }
        // Gaps still open at the end of the page are recorded now, so every commit verifies.
        for (target, walk) in &mut self.walks {
            if let Some(gap) = walk.gap.as_mut().filter(|gap| gap.changed) {
                actions
                    .write
                    .push((*target, gap.after_id, gap.checkpoint()));
                gap.changed = false;
            }
        }
        self.report.checkpoints += actions.write.len() as i64;
        self.report.removed += actions.remove.len() as i64;
        actions
    }
}

impl Gap {
    fn checkpoint(&self) -> ResumePoint {
        ResumePoint {
            resume: self.resume.clone(),
            removed: self.removed,
        }
    }
}

/// `WalkReads` for a connection type: the same statements on either database.
macro_rules! walk_reads_for {
    ($connection:ty) => {
        impl WalkReads for $connection {
            async fn id_span(&mut self) -> Result<(Option<i64>, Option<i64>), StoreError> {
                Ok(sqlx::query_as(ID_SPAN_SQL).fetch_one(self).await?)
            }

            async fn probe(&mut self, id: i64) -> Result<Option<(i64, i64)>, StoreError> {
                Ok(sqlx::query_as(PROBE_SQL)
                    .bind(id)
                    .fetch_optional(self)
                    .await?)
            }

            async fn kept(
                &mut self,
                cutoff: i64,
            ) -> Result<Vec<(Option<i64>, Option<i64>)>, StoreError> {
                Ok(sqlx::query_as(KEEP_SQL)
                    .bind(cutoff)
                    .fetch_all(self)
                    .await?)
            }

            async fn checkpoints(&mut self) -> Result<Vec<(i64, i64, Vec<u8>, i64)>, StoreError> {
                Ok(sqlx::query_as(CHECKPOINTS_SQL).fetch_all(self).await?)
            }

            async fn page(&mut self, after: i64, until: i64) -> Result<Vec<WalkRow>, StoreError> {
                Ok(sqlx::query_as(WALK_PAGE_SQL)
                    .bind(after)
                    .bind(until)
                    .bind(PAGE)
                    .fetch_all(self)
                    .await?)
            }
        }
    };
}

walk_reads_for!(sqlx::sqlite::SqliteConnection);
walk_reads_for!(sqlx::postgres::PgConnection);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SyncStatus;

    /// One record of a hand-built history: a snapshot of target `target` (`r`/`s<target>`), or
    /// an event on a target's chain or the fleet chain (`None`).
    #[derive(Debug, Clone)]
    enum Record {
        Snapshot {
            id: i64,
            target: i64,
        },
        Event {
            id: i64,
            target: Option<i64>,
            kind: &'static str,
            body: String,
        },
    }

    use Record::{Event, Snapshot};

    fn server(target: i64) -> String {
        format!("s{target}")
    }

    fn snapshot_fields<'a>(id: i64, server: &'a str) -> ChainFields<'a> {
        ChainFields {
            id,
            repo: "r",
            server,
            sync_status: SyncStatus::Synced,
            drift_count: 0,
            files_json: "[]",
            last_check: Timestamp::from_millis(id * 1000),
            received_at: Timestamp::from_millis(id * 1000 + 5),
            revision: None,
            run_url: None,
            message: None,
            stale_after_seconds: None,
        }
    }

    fn event_fields<'a>(
        id: i64,
        server: Option<&'a str>,
        kind: &'a str,
        body: &'a str,
    ) -> EventFields<'a> {
        EventFields {
            id,
            repo: server.map(|_| "r"),
            server,
            kind,
            at: Timestamp::from_millis(id * 1000),
            body,
        }
    }

    /// Each record's hash, linked as the writers link them: to the previous record of its chain.
    fn hashes(records: &[Record]) -> HashMap<i64, Hash> {
        let mut heads: HashMap<Option<i64>, Hash> = HashMap::new();
        let mut hashes = HashMap::new();
        let mut buffer = Vec::new();
        for record in records {
            let (id, chain, hash) = match record {
                Snapshot { id, target } => {
                    let server = server(*target);
                    let fields = snapshot_fields(*id, &server);
                    let previous = heads.get(&Some(*target));
                    (
                        *id,
                        Some(*target),
                        chain::link_fields(&fields, previous, &mut buffer),
                    )
                }
                Event {
                    id,
                    target,
                    kind,
                    body,
                } => {
                    let server = target.map(server);
                    let fields = event_fields(*id, server.as_deref(), kind, body);
                    let previous = heads.get(target);
                    (
                        *id,
                        *target,
                        chain::link_event(&fields, previous, &mut buffer),
                    )
                }
            };
            heads.insert(chain, hash);
            hashes.insert(id, hash);
        }
        hashes
    }

    fn target(id: i64, head: Option<(i64, Hash)>) -> TargetHead {
        TargetHead {
            id,
            repo: "r".to_owned(),
            server: server(id),
            head_id: head.map(|(id, _)| id),
            head_hash: head.map(|(_, hash)| hash.to_vec()),
            ack_id: None,
            retired_at: None,
        }
    }

    /// Feeds `records` in the order given, with the hashes of `hashed`.
    fn feed(verifier: &mut Verifier, records: &[Record], hashed: &HashMap<i64, Hash>) {
        for record in records {
            match record {
                Snapshot { id, target } => {
                    let server = server(*target);
                    let stored = hashed.get(id).map(|hash| hash.to_vec());
                    verifier.push_fields(*target, &snapshot_fields(*id, &server), stored);
                }
                Event {
                    id,
                    target,
                    kind,
                    body,
                } => {
                    let server = target.map(server);
                    let stored = hashed.get(id).map(|hash| hash.to_vec());
                    let fields = event_fields(*id, server.as_deref(), kind, body);
                    verifier.push_event(*target, &fields, stored);
                }
            }
        }
    }

    fn silence_body() -> String {
        r#"{"repos":["r"],"servers":["*"],"starts_at":"2026-01-01T00:00:00.000Z","ends_at":"2026-01-02T00:00:00.000Z","reason":"window","by":"ops"}"#.to_owned()
    }

    fn silence_row(id: i64, deleted: Option<(i64, &str)>) -> SilenceRow {
        SilenceRow {
            id,
            repos: r#"["r"]"#.to_owned(),
            servers: r#"["*"]"#.to_owned(),
            starts_at: 1_767_225_600_000,
            ends_at: 1_767_312_000_000,
            reason: "window".to_owned(),
            by: "ops".to_owned(),
            created_at: id * 1000,
            deleted_at: deleted.map(|(at, _)| at),
            deleted_by: deleted.map(|(_, by)| by.to_owned()),
        }
    }

    /// Two targets and the fleet chain, interleaved by id.
    fn interleaved() -> Vec<Record> {
        vec![
            Snapshot { id: 1, target: 1 },
            Event {
                id: 2,
                target: Some(1),
                kind: "retire",
                body: r#"{"by":"ops"}"#.to_owned(),
            },
            Snapshot { id: 3, target: 2 },
            Event {
                id: 4,
                target: None,
                kind: "silence",
                body: silence_body(),
            },
            Snapshot { id: 5, target: 1 },
            Event {
                id: 6,
                target: Some(1),
                kind: "revive",
                body: r#"{"snapshot":5}"#.to_owned(),
            },
            Event {
                id: 7,
                target: None,
                kind: "silence_end",
                body: r#"{"silence":4,"by":"ops"}"#.to_owned(),
            },
            Snapshot { id: 8, target: 2 },
        ]
    }

    fn verify(
        records: &[Record],
        hashed: &HashMap<i64, Hash>,
        targets: Vec<TargetHead>,
    ) -> Verification {
        let mut verifier = Verifier::new(Checkpoints::new(), targets);
        feed(&mut verifier, records, hashed);
        verifier.check_silence(silence_row(4, Some((7000, "ops"))));
        verifier.finish()
    }

    #[test]
    fn snapshots_and_events_of_a_target_form_one_chain_and_the_fleet_chain_its_own() {
        let records = interleaved();
        let hashed = hashes(&records);
        let targets = || {
            vec![
                target(1, Some((6, hashed[&6]))),
                target(2, Some((8, hashed[&8]))),
            ]
        };
        assert_eq!(
            verify(&records, &hashed, targets()),
            Verification {
                ok: true,
                checked: 8,
                first_bad: None,
                statements: None
            }
        );

        // Hashed as if each chain were snapshots only: the records after an event do not follow.
        let snapshots_only: Vec<Record> = records
            .iter()
            .filter(|record| matches!(record, Snapshot { .. }))
            .cloned()
            .collect();
        let mut unlinked = hashes(&snapshots_only);
        unlinked.extend(records.iter().filter_map(|record| match record {
            Event { id, .. } => Some((*id, hashed[id])),
            Snapshot { .. } => None,
        }));
        let outcome = verify(&records, &unlinked, targets());
        let bad = outcome.first_bad.unwrap();
        assert_eq!(
            (bad.id, bad.record, bad.kind),
            (5, RecordKind::Snapshot, None),
            "{}",
            bad.reason
        );

        // An event fed on another chain than the one it was hashed on is named, as an event.
        let mut moved = records.clone();
        moved[1] = Event {
            id: 2,
            target: Some(2),
            kind: "retire",
            body: r#"{"by":"ops"}"#.to_owned(),
        };
        let bad = verify(&moved, &hashed, targets()).first_bad.unwrap();
        assert_eq!(
            (bad.id, bad.record, bad.kind.as_deref(), bad.server.as_str()),
            (2, RecordKind::Event, Some("retire"), "s2"),
            "{}",
            bad.reason
        );

        // On the fleet chain: named with no repo or server.
        let mut edited = records.clone();
        edited[6] = Event {
            id: 7,
            target: None,
            kind: "silence_end",
            body: r#"{"silence":4,"by":"eve"}"#.to_owned(),
        };
        let bad = verify(&edited, &hashed, targets()).first_bad.unwrap();
        assert_eq!(
            (
                bad.id,
                bad.record,
                bad.kind.as_deref(),
                bad.repo.as_str(),
                bad.server.as_str()
            ),
            (7, RecordKind::Event, Some("silence_end"), "", ""),
            "{}",
            bad.reason
        );
    }

    #[test]
    fn a_broken_chain_is_named_before_a_row_that_disagrees_with_it() {
        let records = interleaved();
        let hashed = hashes(&records);
        let targets = || {
            vec![
                target(1, Some((6, hashed[&6]))),
                target(2, Some((8, hashed[&8]))),
            ]
        };
        let rows_only = |verifier: &mut Verifier| {
            verifier.check_silence(silence_row(4, Some((7000, "mallory"))));
        };
        let mut verifier = Verifier::new(Checkpoints::new(), targets());
        feed(&mut verifier, &records, &hashed);
        rows_only(&mut verifier);
        let bad = verifier.finish().first_bad.unwrap();
        assert_eq!(
            (bad.id, bad.record),
            (4, RecordKind::Silence),
            "{}",
            bad.reason
        );
        assert!(bad.reason.contains("deleted_by"), "{}", bad.reason);

        let mut broken = hashed.clone();
        broken.insert(8, [0; 32]);
        let mut verifier = Verifier::new(Checkpoints::new(), targets());
        feed(&mut verifier, &records, &broken);
        rows_only(&mut verifier);
        let bad = verifier.finish().first_bad.unwrap();
        assert_eq!(
            (bad.id, bad.record),
            (8, RecordKind::Snapshot),
            "{}",
            bad.reason
        );
    }

    #[test]
    fn events_that_end_nothing_and_rows_without_events_are_named() {
        let ack_end = |id, ack| Event {
            id,
            target: Some(1),
            kind: "ack_end",
            body: format!(r#"{{"ack":{ack},"reason":"deleted","by":"ops","snapshot":null}}"#),
        };
        let records = vec![
            Snapshot { id: 1, target: 1 },
            Event {
                id: 2,
                target: Some(1),
                kind: "ack",
                body: r#"{"reason":"known","until":"2026-02-01T00:00:00.000Z","files":null,"by":"ops"}"#.to_owned(),
            },
            ack_end(3, 2),
            ack_end(4, 2),
        ];
        let hashed = hashes(&records);
        let ack_row = AckRow {
            id: 2,
            target_id: 1,
            reason: "known".to_owned(),
            by: "ops".to_owned(),
            files: None,
            created_at: 2000,
            until: 1_769_904_000_000,
            ended_at: Some(3000),
            end_reason: Some("deleted".to_owned()),
            ended_by: Some("ops".to_owned()),
        };
        let run = |records: &[Record], ack_row: Option<AckRow>, head: i64| {
            let mut verifier = Verifier::new(
                Checkpoints::new(),
                vec![target(1, Some((head, hashed[&head])))],
            );
            feed(&mut verifier, records, &hashed);
            if let Some(row) = ack_row {
                verifier.check_ack(row);
            }
            verifier.finish()
        };
        assert!(run(&records[..3], Some(ack_row.clone()), 3).ok);
        let bad = run(&records, Some(ack_row.clone()), 4).first_bad.unwrap();
        assert_eq!(
            (bad.id, bad.kind.as_deref()),
            (4, Some("ack_end")),
            "{}",
            bad.reason
        );
        assert!(bad.reason.contains("second time"), "{}", bad.reason);
        let bad = run(&records[..3], None, 3).first_bad.unwrap();
        assert_eq!((bad.id, bad.record), (2, RecordKind::Ack), "{}", bad.reason);
        let mut open = ack_row;
        open.ended_at = None;
        let bad = run(&records[..3], Some(open), 3).first_bad.unwrap();
        assert_eq!((bad.id, bad.record), (2, RecordKind::Ack), "{}", bad.reason);
        assert!(
            bad.reason.contains("ended_at") && !bad.reason.contains("reason,"),
            "{}",
            bad.reason
        );
    }

    #[test]
    fn retention_cuts_gaps_that_follow_events_and_the_rest_verifies() {
        let records = vec![
            Snapshot { id: 1, target: 1 },
            Snapshot { id: 2, target: 1 },
            Event {
                id: 3,
                target: Some(1),
                kind: "retire",
                body: r#"{"by":"ops"}"#.to_owned(),
            },
            Snapshot { id: 4, target: 1 },
            Snapshot { id: 5, target: 1 },
        ];
        let hashed = hashes(&records);
        let row = |id: i64, change: i64| WalkRow {
            id,
            target: 1,
            last_check: id * 1000,
            change,
            hash: Some(hashed[&id].to_vec()),
        };
        // The first is a transition, 5 the chain head; 2 and 4 go, on either side of the event.
        let mut walker = Walker::new(
            Timestamp::from_millis(10_000),
            HashSet::from([5]),
            Checkpoints::new(),
        );
        let actions = walker.page([row(1, 3), row(2, 0), row(3, -1), row(4, 0), row(5, 0)]);
        assert_eq!(actions.remove, [2, 4]);
        let written: Vec<(i64, i64, Vec<u8>)> = actions
            .write
            .iter()
            .map(|(target, after, checkpoint)| (*target, *after, checkpoint.resume.clone()))
            .collect();
        assert_eq!(
            written,
            [(1, 1, hashed[&2].to_vec()), (1, 3, hashed[&4].to_vec())]
        );

        let checkpoints: Checkpoints = actions
            .write
            .into_iter()
            .map(|(target, after, checkpoint)| ((target, after), checkpoint))
            .collect();
        let retained = [records[0].clone(), records[2].clone(), records[4].clone()];
        let mut head = target(1, Some((5, hashed[&5])));
        head.retired_at = Some(3000);
        let mut verifier = Verifier::new(checkpoints.clone(), vec![head.clone()]);
        feed(&mut verifier, &retained, &hashed);
        assert_eq!(
            verifier.finish(),
            Verification {
                ok: true,
                checked: 3,
                first_bad: None,
                statements: None
            }
        );

        // Without the checkpoint that follows the event, the snapshot after the gap is named.
        let mut partial = checkpoints;
        partial.remove(&(1, 3));
        let mut verifier = Verifier::new(partial, vec![head]);
        feed(&mut verifier, &retained, &hashed);
        assert_eq!(verifier.finish().first_bad.map(|bad| bad.id), Some(5));
    }
}
