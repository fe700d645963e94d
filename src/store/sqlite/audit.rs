//! The audit trail's integrity in SQLite: hashing history written before the chain existed,
//! verifying the chain, and retention that removes snapshots without breaking it.

use std::collections::{HashMap, HashSet};

use futures_util::TryStreamExt;
use sqlx::sqlite::SqliteConnection;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{SNAPSHOT_COLUMNS, snapshot_from_row};
use crate::chain::{self, BadSnapshot, Checkpoint as ChainCheckpoint, Hash, Verification};
use crate::store::{PruneReport, StoreError};
use crate::timestamp::Timestamp;

/// Snapshots read per page while hashing old history or pruning.
const PAGE: i64 = 5_000;
/// Free pages handed back to the file system per step after pruning (16 MiB of 4 KiB pages).
const VACUUM_STEP_PAGES: i64 = 4_096;

/// Every snapshot with what the chain needs, in arrival order.
fn chain_rows_sql() -> String {
    format!(
        "{SNAPSHOT_COLUMNS}, s.target_id from snapshots s join targets t on t.id = s.target_id \
         left join filesets f on f.id = s.fileset_id"
    )
}

/// The gaps retention cut, by (target, the retained snapshot they follow).
async fn load_checkpoints(
    connection: &mut SqliteConnection,
) -> Result<HashMap<(i64, i64), Checkpoint>, StoreError> {
    let rows: Vec<(i64, i64, Vec<u8>, i64)> =
        sqlx::query_as("select target_id, after_id, resume_hash, removed from chain_checkpoints")
            .fetch_all(connection)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(target, after, resume, removed)| ((target, after), Checkpoint { resume, removed }))
        .collect())
}

/// `(id, repo, server, head_id, head_hash)` of a target.
type TargetHead = (i64, String, String, Option<i64>, Option<Vec<u8>>);
/// `(id, target_id, last_check, change, hash)` of a snapshot retention walks over.
type WalkRow = (i64, i64, i64, i64, Option<Vec<u8>>);

#[derive(Debug, Clone)]
struct Checkpoint {
    resume: Vec<u8>,
    removed: i64,
}

/// Every retention checkpoint, by target then position, for re-checking an export.
pub async fn checkpoints(
    connection: &mut SqliteConnection,
) -> Result<Vec<ChainCheckpoint>, StoreError> {
    let rows: Vec<(String, String, i64, Vec<u8>, i64, i64)> = sqlx::query_as(
        "select t.repo, t.server, c.after_id, c.resume_hash, c.removed, c.pruned_at \
         from chain_checkpoints c join targets t on t.id = c.target_id \
         order by t.repo, t.server, c.after_id",
    )
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
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
        .collect())
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

/// Recomputes every target's chain from the stored rows, in one read transaction, and names the
/// first snapshot (by id) whose stored hash does not follow.
pub async fn verify(connection: &mut SqliteConnection) -> Result<Verification, StoreError> {
    sqlx::query("begin").execute(&mut *connection).await?;
    let result = verify_in_transaction(connection).await;
    sqlx::query("rollback").execute(&mut *connection).await?;
    result
}

/// Where a target's chain stands during verification.
#[derive(Debug)]
struct ChainPosition {
    /// What the next retained snapshot must link to.
    expected_previous: Option<Vec<u8>>,
    last_id: Option<i64>,
}

async fn verify_in_transaction(
    connection: &mut SqliteConnection,
) -> Result<Verification, StoreError> {
    let checkpoints = load_checkpoints(&mut *connection).await?;
    let targets: Vec<TargetHead> =
        sqlx::query_as("select id, repo, server, head_id, head_hash from targets")
            .fetch_all(&mut *connection)
            .await?;

    let mut chains: HashMap<i64, ChainPosition> = HashMap::new();
    let mut checked = 0;
    let mut bad: Option<BadSnapshot> = None;
    let sql = format!("{} order by s.id", chain_rows_sql());
    let mut rows = sqlx::query(&sql).fetch(&mut *connection);
    while let Some(row) = rows.try_next().await? {
        checked += 1;
        let snapshot = snapshot_from_row(&row)?;
        let target: i64 = row.try_get("target_id")?;
        let stored: Option<Vec<u8>> = row.try_get("hash")?;
        let position = chains.entry(target).or_insert_with(|| ChainPosition {
            expected_previous: checkpoints
                .get(&(target, 0))
                .map(|checkpoint| checkpoint.resume.clone()),
            last_id: None,
        });
        if bad.is_none() {
            let previous = position
                .expected_previous
                .as_deref()
                .map(|bytes| chain::from_bytes(bytes).ok_or(bytes));
            let reason = match (&stored, previous) {
                (None, _) => Some("the snapshot has no hash".to_owned()),
                (Some(_), Some(Err(_))) => Some(
                    "the hash this snapshot follows (its predecessor's or a retention \
                     checkpoint's) is malformed"
                        .to_owned(),
                ),
                (Some(stored), Some(Ok(previous))) => (chain::link(&snapshot, Some(&previous))[..]
                    != stored[..])
                    .then(|| mismatch(position.last_id)),
                (Some(stored), None) => {
                    (chain::link(&snapshot, None)[..] != stored[..]).then(|| mismatch(None))
                }
            };
            if let Some(reason) = reason {
                bad = Some(BadSnapshot {
                    id: snapshot.id,
                    repo: snapshot.repo.clone(),
                    server: snapshot.server.clone(),
                    reason,
                });
            }
        }
        // Go on from what is stored, so one bad row is reported once, not for every row after it.
        position.expected_previous = checkpoints
            .get(&(target, snapshot.id))
            .map(|checkpoint| checkpoint.resume.clone())
            .or(stored);
        position.last_id = Some(snapshot.id);
    }
    drop(rows);

    // Removing a target's newest snapshots leaves no row to fail: its head says what it was.
    for (target, repo, server, head_id, head_hash) in targets {
        let position = chains.get(&target);
        let last_id = position.and_then(|position| position.last_id);
        let reason = match (head_id, last_id) {
            (Some(head), Some(last)) if head < last => Some((
                last,
                format!(
                    "the snapshot comes after its target's recorded chain head (id {head}): it \
                     was added to or moved into this target behind the server's back"
                ),
            )),
            (Some(head), last) if last != Some(head) => Some((
                head,
                format!(
                    "the target's newest snapshot (id {head}) is missing; the newest stored is {}",
                    last.map_or("none".to_owned(), |id| format!("id {id}"))
                ),
            )),
            (Some(head), _) if head_hash != position.and_then(|p| p.expected_previous.clone()) => {
                Some((
                    head,
                    "the target's recorded chain head hash differs from its newest snapshot's"
                        .to_owned(),
                ))
            }
            _ => None,
        };
        if let Some((id, reason)) = reason {
            if bad.as_ref().is_none_or(|bad| id < bad.id) {
                bad = Some(BadSnapshot {
                    id,
                    repo,
                    server,
                    reason,
                });
            }
        }
    }
    Ok(Verification {
        ok: bad.is_none(),
        checked,
        first_bad: bad,
    })
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

/// A retention run in progress: it walks the snapshots in arrival order, a page per transaction,
/// so ingest keeps flowing between pages.
#[derive(Debug)]
pub struct Prune {
    cutoff: i64,
    /// The walk's end (see `expired_bound`); later snapshots are never candidates.
    until_id: i64,
    position: i64,
    /// Each target's newest snapshot before the cutoff (the state the retained window starts
    /// from) and its chain head.
    keep: HashSet<i64>,
    checkpoints: HashMap<(i64, i64), Checkpoint>,
    walks: HashMap<i64, Walk>,
    report: PruneReport,
    vacuuming: bool,
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

impl Prune {
    /// Plans a run that removes snapshots with `last_check` before `cutoff`, except transitions
    /// (`change != 0`), each target's last snapshot before the cutoff, and each chain head.
    pub async fn begin(
        connection: &mut SqliteConnection,
        cutoff: Timestamp,
    ) -> Result<Self, StoreError> {
        let cutoff = cutoff.as_millis();
        let until_id = expired_bound(connection, cutoff).await?;
        // One index seek per target on snapshots_target_time.
        let kept: Vec<(Option<i64>, Option<i64>)> = sqlx::query_as(
            "select (select s.id from snapshots s where s.target_id = t.id and s.last_check < ? \
                     order by s.last_check desc limit 1), t.head_id from targets t",
        )
        .bind(cutoff)
        .fetch_all(&mut *connection)
        .await?;
        let keep = kept
            .into_iter()
            .flat_map(|(boundary, head)| [boundary, head])
            .flatten()
            .collect();
        Ok(Self {
            cutoff,
            until_id,
            position: 0,
            keep,
            checkpoints: load_checkpoints(connection).await?,
            walks: HashMap::new(),
            report: PruneReport {
                cutoff: Timestamp::from_millis(cutoff),
                ..PruneReport::default()
            },
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
            return Ok(Some(self.report.clone()));
        }
        let step = free.min(VACUUM_STEP_PAGES);
        sqlx::query(&format!("pragma incremental_vacuum({step})"))
            .execute(&mut *connection)
            .await?;
        self.report.released_pages += step;
        Ok(None)
    }

    /// Walks one page of snapshots; returns true when the walk is over.
    async fn walk_page(&mut self, connection: &mut SqliteConnection) -> Result<bool, StoreError> {
        let rows: Vec<WalkRow> = sqlx::query_as(
            "select id, target_id, last_check, change, hash from snapshots \
             where id > ? and id <= ? order by id limit ?",
        )
        .bind(self.position)
        .bind(self.until_id)
        .bind(PAGE)
        .fetch_all(&mut *connection)
        .await?;
        let done = rows.len() < PAGE as usize;
        let mut removed = Vec::new();
        let mut absorbed = Vec::new();
        for (id, target, last_check, change, hash) in rows {
            self.position = id;
            let checkpoints = &mut self.checkpoints;
            let walk = self.walks.entry(target).or_insert_with(|| Walk {
                last_kept: 0,
                gap: checkpoints.remove(&(target, 0)).map(|checkpoint| Gap {
                    after_id: 0,
                    resume: checkpoint.resume,
                    removed: checkpoint.removed,
                    changed: false,
                }),
            });
            let removable = last_check < self.cutoff && change == 0 && !self.keep.contains(&id);
            if removable {
                let after_id = walk.last_kept;
                let gap = walk.gap.get_or_insert_with(|| Gap {
                    after_id,
                    resume: Vec::new(),
                    removed: 0,
                    changed: true,
                });
                gap.resume = hash.unwrap_or_default();
                gap.removed += 1;
                gap.changed = true;
                // A gap that followed this snapshot joins the one it now belongs to.
                if let Some(checkpoint) = checkpoints.remove(&(target, id)) {
                    gap.resume = checkpoint.resume;
                    gap.removed += checkpoint.removed;
                    absorbed.push((target, id));
                }
                removed.push(id);
            } else {
                if let Some(gap) = walk.gap.take().filter(|gap| gap.changed) {
                    write_checkpoint(connection, target, &gap).await?;
                    self.report.checkpoints += 1;
                }
                walk.last_kept = id;
                walk.gap = checkpoints.remove(&(target, id)).map(|checkpoint| Gap {
                    after_id: id,
                    resume: checkpoint.resume,
                    removed: checkpoint.removed,
                    changed: false,
                });
            }
        }
        // Gaps still open at the end of the page are recorded now, so every commit verifies.
        for (target, walk) in &mut self.walks {
            if let Some(gap) = walk.gap.as_mut().filter(|gap| gap.changed) {
                write_checkpoint(connection, *target, gap).await?;
                gap.changed = false;
                self.report.checkpoints += 1;
            }
        }
        for (target, after_id) in absorbed {
            sqlx::query("delete from chain_checkpoints where target_id = ? and after_id = ?")
                .bind(target)
                .bind(after_id)
                .execute(&mut *connection)
                .await?;
        }
        for ids in removed.chunks(500) {
            let mut delete = QueryBuilder::<Sqlite>::new("delete from snapshots where id in (");
            let mut list = delete.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            delete.push(")");
            delete.build().execute(&mut *connection).await?;
        }
        self.report.removed += removed.len() as i64;
        Ok(done)
    }
}

/// Where the walk can stop: the last id (arrival order) whose `last_check` is before the cutoff,
/// found by bisecting ids, so a run walks only history that can have expired, never the retained
/// window. Arrival order follows check time closely; a check that arrives long after it ran (and
/// so sits beyond the bound) waits for a later run.
async fn expired_bound(connection: &mut SqliteConnection, cutoff: i64) -> Result<i64, StoreError> {
    let (first, last): (Option<i64>, Option<i64>) =
        sqlx::query_as("select min(id), max(id) from snapshots")
            .fetch_one(&mut *connection)
            .await?;
    let (Some(first), Some(mut high)) = (first, last) else {
        return Ok(0);
    };
    // Every probe at or below `low` found an expired check; every one above `high` did not.
    let mut low = first - 1;
    while low < high {
        let middle = low + (high - low + 1) / 2;
        let probe: Option<(i64, i64)> = sqlx::query_as(
            "select id, last_check from snapshots where id >= ? order by id limit 1",
        )
        .bind(middle)
        .fetch_optional(&mut *connection)
        .await?;
        match probe {
            Some((id, last_check)) if last_check < cutoff && id <= high => low = id,
            _ => high = middle - 1,
        }
    }
    Ok(low.max(0))
}

async fn write_checkpoint(
    connection: &mut SqliteConnection,
    target: i64,
    gap: &Gap,
) -> Result<(), StoreError> {
    sqlx::query(
        "insert into chain_checkpoints (target_id, after_id, resume_hash, removed, pruned_at) \
         values (?, ?, ?, ?, ?) on conflict (target_id, after_id) do update set \
         resume_hash = excluded.resume_hash, removed = excluded.removed, \
         pruned_at = excluded.pruned_at",
    )
    .bind(target)
    .bind(gap.after_id)
    .bind(&gap.resume)
    .bind(gap.removed)
    .bind(Timestamp::now().as_millis())
    .execute(connection)
    .await?;
    Ok(())
}
