//! What `/api/stats` reads on PostgreSQL (the same reads as the SQLite store's, in one
//! repeatable-read snapshot): each target's snapshots over a window and the state it entered it in.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use sqlx::postgres::PgConnection;
use sqlx::{Postgres, QueryBuilder};

use crate::model::SyncStatus;
use crate::stats::{Carried, Check, StatsRequest, TargetHistory};
use crate::store::StoreError;
use crate::timestamp::Timestamp;

/// `(last_check, sync_status, stale_after, fileset_id)` of a snapshot.
type CheckRow = (i64, i64, Option<i64>, Option<i64>);

/// File sets by id, read once per request.
#[derive(Debug, Default)]
struct Filesets(HashMap<i64, Vec<String>>);

impl Filesets {
    async fn names(
        &mut self,
        connection: &mut PgConnection,
        id: Option<i64>,
    ) -> Result<Vec<String>, StoreError> {
        let Some(id) = id else {
            return Ok(Vec::new());
        };
        if let Some(names) = self.0.get(&id) {
            return Ok(names.clone());
        }
        let json: String = sqlx::query_scalar("select files from filesets where id = $1")
            .bind(id)
            .fetch_one(&mut *connection)
            .await?;
        let names: Vec<String> = serde_json::from_str(&json)
            .map_err(|error| StoreError::Database(format!("file set {id}: {error}")))?;
        self.0.insert(id, names.clone());
        Ok(names)
    }

    async fn check(
        &mut self,
        connection: &mut PgConnection,
        (last_check, code, stale_after, fileset): CheckRow,
    ) -> Result<Check, StoreError> {
        let sync_status = SyncStatus::from_code(code)
            .ok_or_else(|| StoreError::Database(format!("unknown sync_status code {code}")))?;
        let files = if sync_status == SyncStatus::OutOfSync {
            self.names(connection, fileset).await?
        } else {
            Vec::new()
        };
        Ok(Check {
            last_check: Timestamp::from_millis(last_check),
            sync_status,
            stale_after_seconds: stale_after,
            files,
        })
    }
}

/// Every matching target's history over the window, sorted by repo then server, in one read
/// transaction. Per target: one seek for the snapshot before the window, one range over
/// snapshots_target_time, and when the window opens mid-drift, a walk back over
/// snapshots_target_changes to the episode's start.
pub async fn histories(
    connection: &mut PgConnection,
    request: &StatsRequest,
) -> Result<Vec<TargetHistory>, StoreError> {
    sqlx::query("begin isolation level repeatable read read only")
        .execute(&mut *connection)
        .await?;
    let result = read_histories(connection, request).await;
    sqlx::query("rollback").execute(&mut *connection).await?;
    result
}

async fn read_histories(
    connection: &mut PgConnection,
    request: &StatsRequest,
) -> Result<Vec<TargetHistory>, StoreError> {
    let mut targets =
        QueryBuilder::<Postgres>::new("select id, repo, server from targets where 1 = 1");
    if let Some(repo) = &request.repo {
        targets.push(" and repo = ").push_bind(repo.clone());
    }
    if let Some(server) = &request.server {
        targets.push(" and server = ").push_bind(server.clone());
    }
    targets.push(" order by repo, server");
    let targets: Vec<(i64, String, String)> =
        targets.build_query_as().fetch_all(&mut *connection).await?;

    let (from, to) = (request.from.as_millis(), request.to.as_millis());
    let mut filesets = Filesets::default();
    let mut histories = Vec::new();
    for (target, repo, server) in targets {
        let before: Option<CheckRow> = sqlx::query_as(
            "select last_check, sync_status, stale_after, fileset_id from snapshots \
             where target_id = $1 and last_check < $2 order by last_check desc limit 1",
        )
        .bind(target)
        .bind(from)
        .fetch_optional(&mut *connection)
        .await?;
        let rows: Vec<CheckRow> = sqlx::query_as(
            "select last_check, sync_status, stale_after, fileset_id from snapshots \
             where target_id = $1 and last_check >= $2 and last_check < $3 order by last_check",
        )
        .bind(target)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *connection)
        .await?;
        if before.is_none() && rows.is_empty() {
            continue;
        }
        let before = match before {
            None => None,
            Some(row) => Some(carried(connection, &mut filesets, target, row).await?),
        };
        let mut checks = Vec::with_capacity(rows.len());
        for row in rows {
            checks.push(filesets.check(connection, row).await?);
        }
        histories.push(TargetHistory {
            repo,
            server,
            before,
            checks,
        });
    }
    Ok(histories)
}

/// The snapshot before the window; when it is OUT_OF_SYNC, its episode's start and files, from
/// the transitions back to the one that entered OUT_OF_SYNC.
async fn carried(
    connection: &mut PgConnection,
    filesets: &mut Filesets,
    target: i64,
    row: CheckRow,
) -> Result<Carried, StoreError> {
    let check = filesets.check(connection, row).await?;
    let mut episode_start = check.last_check;
    let mut episode_files = Vec::new();
    if check.sync_status == SyncStatus::OutOfSync {
        let transitions: Vec<(i64, i64, Option<i64>)> = {
            let mut rows = sqlx::query_as::<_, (i64, i64, Option<i64>)>(
                "select last_check, change, fileset_id from snapshots \
                 where target_id = $1 and change != 0 and last_check <= $2 \
                 order by last_check desc",
            )
            .bind(target)
            .bind(row.0)
            .fetch(&mut *connection);
            let mut walked = Vec::new();
            while let Some(transition) = rows.try_next().await? {
                walked.push(transition);
                // Bit 1: the status changed here, so the episode began here.
                if transition.1 & 1 == 1 {
                    break;
                }
            }
            walked
        };
        for (last_check, _, fileset) in transitions {
            episode_start = Timestamp::from_millis(last_check);
            episode_files.extend(filesets.names(connection, fileset).await?);
        }
    }
    Ok(Carried {
        check,
        episode_start,
        episode_files,
    })
}
