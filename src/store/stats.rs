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
use crate::stats::{AckSpan, Carried, Check, Span, StatsRequest, TargetHistory};
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

/// `StatsReads` for a connection type of `$database`: the same statements on either.
macro_rules! stats_reads_for {
    ($connection:ty, $database:ty) => {
        impl StatsReads for $connection {
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

stats_reads_for!(sqlx::sqlite::SqliteConnection, sqlx::Sqlite);
stats_reads_for!(sqlx::postgres::PgConnection, sqlx::Postgres);
