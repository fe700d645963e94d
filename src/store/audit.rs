//! The integrity chain's bookkeeping that does not depend on the database: recomputing every
//! target's chain from rows read in arrival order (`Verifier`), and the retention walk that
//! decides which rows go and which checkpoints keep the chain verifiable (`Walker`). Each store
//! feeds them rows and carries out what they decide.

use std::collections::{HashMap, HashSet};

use crate::chain::{self, BadSnapshot, ChainFields, Checkpoint as ChainCheckpoint, Verification};
use crate::model::Snapshot;
use crate::store::{PruneReport, StoreError};
use crate::timestamp::Timestamp;

/// A gap retention cut into a target's chain: the retained snapshots after `after_id` (0: the
/// target's start) were hashed with `resume`, the hash of the last snapshot removed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    pub resume: Vec<u8>,
    pub removed: i64,
}

/// Checkpoints by (target id, the retained snapshot they follow).
pub type Checkpoints = HashMap<(i64, i64), ResumePoint>;

/// What `load_checkpoints` reads: `(target_id, after_id, resume_hash, removed)`.
pub const CHECKPOINTS_SQL: &str =
    "select target_id, after_id, resume_hash, removed from chain_checkpoints";

/// `CHECKPOINTS_SQL`'s rows by (target, the retained snapshot they follow).
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

/// A target's recorded chain head: `(id, repo, server, head_id, head_hash)`.
pub type TargetHead = (i64, String, String, Option<i64>, Option<Vec<u8>>);

/// Where a target's chain stands during verification.
#[derive(Debug)]
struct ChainPosition {
    /// What the next retained snapshot must link to.
    expected_previous: Option<Vec<u8>>,
    last_id: Option<i64>,
}

/// Recomputes every target's chain from its rows, fed in arrival order (by id), and names the
/// first snapshot (by id) whose stored hash does not follow.
#[derive(Debug)]
pub struct Verifier {
    checkpoints: Checkpoints,
    chains: HashMap<i64, ChainPosition>,
    checked: i64,
    bad: Option<BadSnapshot>,
    /// Each record's canonical encoding, written over and over into one allocation.
    buffer: Vec<u8>,
}

impl Verifier {
    pub fn new(checkpoints: Checkpoints) -> Self {
        Self {
            checkpoints,
            chains: HashMap::new(),
            checked: 0,
            bad: None,
            buffer: Vec::with_capacity(512),
        }
    }

    /// Checks the next snapshot by id, of target `target`, whose stored hash is `stored`.
    pub fn push(&mut self, target: i64, snapshot: &Snapshot, stored: Option<Vec<u8>>) {
        let files = chain::files_json(snapshot.file_names());
        self.push_fields(target, &ChainFields::of(snapshot, &files), stored);
    }

    /// Checks the next stored record by id, of target `target`, from its fields as stored.
    pub fn push_fields(&mut self, target: i64, fields: &ChainFields<'_>, stored: Option<Vec<u8>>) {
        self.checked += 1;
        let checkpoints = &self.checkpoints;
        let position = self.chains.entry(target).or_insert_with(|| ChainPosition {
            expected_previous: checkpoints
                .get(&(target, 0))
                .map(|checkpoint| checkpoint.resume.clone()),
            last_id: None,
        });
        if self.bad.is_none() {
            let previous = position
                .expected_previous
                .as_deref()
                .map(|bytes| chain::from_bytes(bytes).ok_or(bytes));
            let buffer = &mut self.buffer;
            let reason = match (&stored, previous) {
                (None, _) => Some("the snapshot has no hash".to_owned()),
                (Some(_), Some(Err(_))) => Some(
                    "the hash this snapshot follows (its predecessor's or a retention \
                     checkpoint's) is malformed"
                        .to_owned(),
                ),
                (Some(stored), Some(Ok(previous))) => {
                    (chain::link_fields(fields, Some(&previous), buffer)[..] != stored[..])
                        .then(|| mismatch(position.last_id))
                }
                (Some(stored), None) => (chain::link_fields(fields, None, buffer)[..]
                    != stored[..])
                    .then(|| mismatch(None)),
            };
            if let Some(reason) = reason {
                self.bad = Some(BadSnapshot {
                    id: fields.id,
                    repo: fields.repo.to_owned(),
                    server: fields.server.to_owned(),
                    reason,
                });
            }
        }
        // Go on from what is stored, so one bad row is reported once, not for every row after it.
        position.expected_previous = checkpoints
            .get(&(target, fields.id))
            .map(|checkpoint| checkpoint.resume.clone())
            .or(stored);
        position.last_id = Some(fields.id);
    }

    /// Checks every target's recorded head against the rows seen: removing a target's newest
    /// snapshots leaves no row to fail, but its head says what it was.
    pub fn finish(mut self, targets: Vec<TargetHead>) -> Verification {
        for (target, repo, server, head_id, head_hash) in targets {
            let position = self.chains.get(&target);
            let last_id = position.and_then(|position| position.last_id);
            let reason = match (head_id, last_id) {
                (Some(head), Some(last)) if head < last => Some((
                    last,
                    format!(
                        "the snapshot comes after its target's recorded chain head (id {head}): \
                         it was added to or moved into this target behind the server's back"
                    ),
                )),
                (Some(head), last) if last != Some(head) => Some((
                    head,
                    format!(
                        "the target's newest snapshot (id {head}) is missing; the newest stored \
                         is {}",
                        last.map_or("none".to_owned(), |id| format!("id {id}"))
                    ),
                )),
                (Some(head), _)
                    if head_hash != position.and_then(|p| p.expected_previous.clone()) =>
                {
                    Some((
                        head,
                        "the target's recorded chain head hash differs from its newest snapshot's"
                            .to_owned(),
                    ))
                }
                _ => None,
            };
            if let Some((id, reason)) = reason {
                if self.bad.as_ref().is_none_or(|bad| id < bad.id) {
                    self.bad = Some(BadSnapshot {
                        id,
                        repo,
                        server,
                        reason,
                    });
                }
            }
        }
        Verification {
            ok: self.bad.is_none(),
            checked: self.checked,
            first_bad: self.bad,
        }
    }
}

fn mismatch(previous_id: Option<i64>) -> String {
    match previous_id {
        Some(previous) => format!(
            "the hash does not match the snapshot's fields linked to the previous stored snapshot \
             of its target (id {previous}): this snapshot was edited, or one between them was \
             removed or edited"
        ),
        None => "the hash does not match the snapshot's fields as its target's first: this \
                 snapshot was edited, or one before it was removed or edited"
            .to_owned(),
    }
}

/// A snapshot as the retention walk sees it (`WALK_PAGE_SQL`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WalkRow {
    pub id: i64,
    #[sqlx(rename = "target_id")]
    pub target: i64,
    pub last_check: i64,
    pub change: i64,
    pub hash: Option<Vec<u8>>,
}

/// Snapshots walked per page (one transaction).
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
    /// The rows of `WALK_PAGE_SQL`: at most `PAGE` snapshots after `after`, up to `until`.
    async fn page(&mut self, after: i64, until: i64) -> Result<Vec<WalkRow>, StoreError>;
}

pub const ID_SPAN_SQL: &str = "select min(id), max(id) from snapshots";
pub const PROBE_SQL: &str =
    "select id, last_check from snapshots where id >= $1 order by id limit 1";
/// Each target's newest snapshot before the cutoff (`$1`), and its chain head: one index seek
/// per target on snapshots_target_time.
pub const KEEP_SQL: &str = "select (select s.id from snapshots s where s.target_id = t.id \
     and s.last_check < $1 order by s.last_check desc limit 1), t.head_id from targets t";
/// A page of the walk: after id `$1`, up to id `$2`, at most `$3` rows.
pub const WALK_PAGE_SQL: &str = "select id, target_id, last_check, change, hash from snapshots \
     where id > $1 and id <= $2 order by id limit $3";

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
    /// The last retained snapshot walked (0: none yet).
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

/// A retention run's walk over the snapshots in arrival order. It removes snapshots with
/// `last_check` before the cutoff, except transitions (`change != 0`) and the ids in `keep`
/// (each target's last snapshot before the cutoff, and each chain head), and records the gaps
/// it cuts as checkpoints, so every page leaves a chain that verifies.
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
