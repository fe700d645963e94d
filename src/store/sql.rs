//! Query text both stores share: the schemas have the same tables and columns, and these
//! statements are plain SQL either database plans well. Binds go through `QueryBuilder`, which
//! writes each database's placeholders.

use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

use crate::model::lifecycle::{Ack, Silence};
use crate::model::{FileEntry, HistoryFilter, Order, Snapshot, SyncStatus, files_text};
use crate::rollups::Holder;
use crate::store::pipeline::{Effect, EventRow};
use crate::timestamp::Timestamp;

/// The columns a `Snapshot` is decoded from (`s`: snapshots, `t`: targets, `f`: filesets).
pub const SNAPSHOT_COLUMNS: &str = "select s.id, t.repo, t.server, s.sync_status, \
     s.drift_count, f.files, s.last_check, s.last_check + s.received_delay as received_at, \
     s.revision, s.run_url, s.message, s.stale_after, s.hash";

/// The head of an INSERT of snapshot rows: the columns in the table's order, values to follow.
pub const INSERT_SNAPSHOT_COLUMNS: &str = "insert into snapshots (id, target_id, last_check, \
     received_delay, sync_status, drift_count, fileset_id, change, stale_after, revision, \
     run_url, message, hash) ";

/// Rewrites a snapshot's (`$2`) derived transition flags (`$1`).
pub const SET_CHANGE_SQL: &str = "update snapshots set change = $1 where id = $2";

/// A target's (`$1`) latest snapshot by `last_check` (id, last_check, sync_status, fileset_id,
/// stale_after) and the `last_check` where its run of `sync_status` began.
pub const LATEST_CHECK_SQL: &str = "select s.id, s.last_check, s.sync_status, s.fileset_id, s.stale_after, \
     coalesce((select c.last_check from snapshots c where c.target_id = s.target_id \
               and c.change <> 0 and (c.change & 1) = 1 and c.last_check <= s.last_check \
               order by c.last_check desc limit 1), s.last_check) \
     from snapshots s where s.target_id = $1 order by s.last_check desc limit 1";

/// The head of an upsert of rollup deltas (`rollups::RollupDeltas`): columns in the table's order,
/// values to follow, then `ROLLUP_ADD`.
pub const INSERT_ROLLUP_COLUMNS: &str = "insert into rollups (target_id, day, checks, synced_ms, \
     out_of_sync_ms, error_ms, stale_ms) ";

/// What an upsert of rollup deltas does to a day that has a row: adds to it.
pub const ROLLUP_ADD: &str = " on conflict (target_id, day) do update set \
     checks = rollups.checks + excluded.checks, \
     synced_ms = rollups.synced_ms + excluded.synced_ms, \
     out_of_sync_ms = rollups.out_of_sync_ms + excluded.out_of_sync_ms, \
     error_ms = rollups.error_ms + excluded.error_ms, \
     stale_ms = rollups.stale_ms + excluded.stale_ms";

/// The default stale-after the rollups are kept for, and whether they are complete; no row: no
/// rollups are kept.
pub const ROLLUP_META_SQL: &str = "select stale_after, ready from rollup_meta where id = 1";

/// The stored snapshot of a target (`$1`) at a `last_check` (`$2`). Both databases take `$N`
/// placeholders.
pub fn snapshot_at_sql() -> String {
    format!(
        "{SNAPSHOT_COLUMNS} from snapshots s join targets t on t.id = s.target_id \
         left join filesets f on f.id = s.fileset_id where s.target_id = $1 and s.last_check = $2"
    )
}

/// A stored snapshot's neighbour, as far as transitions care.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Neighbour {
    pub id: i64,
    pub last_check: i64,
    pub sync_status: i64,
    pub fileset_id: Option<i64>,
    pub change: i64,
    pub stale_after: Option<i64>,
}

impl Neighbour {
    pub fn holder(&self) -> Holder {
        Holder {
            last_check: self.last_check,
            sync_status: self.sync_status,
            stale_after: self.stale_after,
        }
    }
}

/// The target's (`$1`) snapshot just before (`Desc`) or just after (`Asc`) a `last_check` (`$2`).
pub fn neighbour_sql(direction: Order) -> &'static str {
    match direction {
        Order::Desc => {
            "select id, last_check, sync_status, fileset_id, change, stale_after from snapshots \
             where target_id = $1 and last_check < $2 order by last_check desc limit 1"
        }
        Order::Asc => {
            "select id, last_check, sync_status, fileset_id, change, stale_after from snapshots \
             where target_id = $1 and last_check > $2 order by last_check asc limit 1"
        }
    }
}

fn push_target_filter<'a, DB>(query: &mut QueryBuilder<'a, DB>, filter: &HistoryFilter)
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
{
    if let Some(repo) = &filter.repo {
        query.push(" and t.repo = ").push_bind(repo.clone());
    }
    if let Some(server) = &filter.server {
        query.push(" and t.server = ").push_bind(server.clone());
    }
}

/// Earliest and latest `last_check` among the filter's targets, and the greatest id: one index
/// seek per target.
pub fn history_span<'a, DB>(filter: &HistoryFilter) -> QueryBuilder<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(
        "select min((select min(last_check) from snapshots where target_id = t.id)), \
         max((select max(last_check) from snapshots where target_id = t.id)), \
         (select max(id) from snapshots) from targets t where 1 = 1",
    );
    push_target_filter(&mut query, filter);
    query
}

/// The filtered snapshots, optionally only those with `last_check` in `[start, end)`, in page
/// order, at most `limit`.
pub fn history_window<'a, DB>(
    filter: &HistoryFilter,
    window: Option<(i64, i64)>,
    limit: usize,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(SNAPSHOT_COLUMNS);
    query.push(
        " from targets t join snapshots s on s.target_id = t.id \
         left join filesets f on f.id = s.fileset_id where 1 = 1",
    );
    push_target_filter(&mut query, filter);
    if let Some((start, end)) = window {
        query
            .push(" and s.last_check >= ")
            .push_bind(start)
            .push(" and s.last_check < ")
            .push_bind(end);
    }
    if !filter.sync_statuses.is_empty() {
        query.push(" and s.sync_status in (");
        let mut codes = query.separated(", ");
        for status in &filter.sync_statuses {
            codes.push_bind(status.code());
        }
        query.push(")");
    }
    if let Some(from) = filter.from {
        query
            .push(" and s.last_check >= ")
            .push_bind(from.as_millis());
    }
    if let Some(to) = filter.to {
        query.push(" and s.last_check < ").push_bind(to.as_millis());
    }
    if filter.changes_only {
        query.push(" and s.change != 0");
    }
    let (cmp_or_equal, cmp, direction) = match filter.order {
        Order::Desc => ("<=", "<", "desc"),
        Order::Asc => (">=", ">", "asc"),
    };
    if let Some(after) = filter.after {
        let at = after.last_check.as_millis();
        query
            .push(format_args!(" and s.last_check {cmp_or_equal} "))
            .push_bind(at)
            .push(format_args!(" and (s.last_check {cmp} "))
            .push_bind(at)
            .push(format_args!(" or s.id {cmp} "))
            .push_bind(after.id)
            .push(")");
    }
    query.push(format_args!(
        " order by s.last_check {direction}, s.id {direction} limit "
    ));
    query.push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
    query
}

/// Decodes a row selected with `SNAPSHOT_COLUMNS`.
pub fn snapshot_from_row<R>(row: &R) -> Result<Snapshot, sqlx::Error>
where
    R: Row,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
{
    let names: Vec<String> = match row.try_get::<Option<String>, _>("files")? {
        None => Vec::new(),
        Some(json) => serde_json::from_str(&json).map_err(|error| sqlx::Error::ColumnDecode {
            index: "files".to_owned(),
            source: Box::new(error),
        })?,
    };
    let code: i64 = row.try_get("sync_status")?;
    let sync_status = SyncStatus::from_code(code).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "sync_status".to_owned(),
        source: format!("unknown sync_status code {code}").into(),
    })?;
    Ok(Snapshot {
        id: row.try_get("id")?,
        repo: row.try_get("repo")?,
        server: row.try_get("server")?,
        sync_status,
        drift_count: row.try_get("drift_count")?,
        files_text: files_text(names.iter().map(String::as_str)),
        files: names.into_iter().map(|name| FileEntry { name }).collect(),
        last_check: Timestamp::from_millis(row.try_get("last_check")?),
        received_at: Timestamp::from_millis(row.try_get("received_at")?),
        revision: row.try_get("revision")?,
        run_url: row.try_get("run_url")?,
        message: row.try_get("message")?,
        stale_after_seconds: row.try_get("stale_after")?,
        hash: row
            .try_get::<Option<Vec<u8>>, _>("hash")?
            .map(hex::encode)
            .unwrap_or_default(),
    })
}

/// A value bound to a shared statement; each store binds it with its own driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Integer(Option<i64>),
    Text(Option<String>),
    Bytes(Vec<u8>),
}

/// The statements that write a chained event and apply its effect to the tables the API reads,
/// with their values in placeholder order. Both stores run them as they are.
pub fn event_statements(row: &EventRow) -> Vec<(&'static str, Vec<Value>)> {
    use Value::{Bytes, Integer, Text};
    let mut statements = vec![(
        "insert into events (id, target_id, kind, at, body, hash) values ($1, $2, $3, $4, $5, $6)",
        vec![
            Integer(Some(row.id)),
            Integer(row.target_id),
            Text(Some(row.kind.to_owned())),
            Integer(Some(row.at)),
            Text(Some(row.body.clone())),
            Bytes(row.hash.to_vec()),
        ],
    )];
    match &row.effect {
        Effect::Ack { target_id, ack } => {
            statements.push((
                "insert into acks (id, target_id, reason, by, files, created_at, until) \
                 values ($1, $2, $3, $4, $5, $6, $7)",
                vec![
                    Integer(Some(ack.id)),
                    Integer(Some(*target_id)),
                    Text(Some(ack.reason.clone())),
                    Text(Some(ack.by.clone())),
                    Text(ack.files.as_ref().map(|files| json_list(files))),
                    Integer(Some(ack.created_at.as_millis())),
                    Integer(Some(ack.until.as_millis())),
                ],
            ));
            statements.push((
                "update targets set ack_id = $2 where id = $1",
                vec![Integer(Some(*target_id)), Integer(Some(ack.id))],
            ));
        }
        Effect::EndAck {
            target_id,
            ack,
            reason,
            by,
        } => {
            statements.push((
                "update acks set ended_at = $2, end_reason = $3, ended_by = $4 where id = $1",
                vec![
                    Integer(Some(*ack)),
                    Integer(Some(row.at)),
                    Text(Some((*reason).to_owned())),
                    Text(by.clone()),
                ],
            ));
            statements.push((
                "update targets set ack_id = null where id = $1 and ack_id = $2",
                vec![Integer(Some(*target_id)), Integer(Some(*ack))],
            ));
        }
        Effect::Silence(silence) => statements.push((
            "insert into silences (id, repos, servers, starts_at, ends_at, reason, by, created_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8)",
            vec![
                Integer(Some(silence.id)),
                Text(Some(json_list(&silence.repos))),
                Text(Some(json_list(&silence.servers))),
                Integer(Some(silence.starts_at.as_millis())),
                Integer(Some(silence.ends_at.as_millis())),
                Text(Some(silence.reason.clone())),
                Text(Some(silence.by.clone())),
                Integer(Some(silence.created_at.as_millis())),
            ],
        )),
        Effect::EndSilence { silence, by } => statements.push((
            "update silences set deleted_at = $2, deleted_by = $3 where id = $1",
            vec![
                Integer(Some(*silence)),
                Integer(Some(row.at)),
                Text(Some(by.clone())),
            ],
        )),
        Effect::Retire { target_id } => statements.push((
            "update targets set retired_at = $2 where id = $1",
            vec![Integer(Some(*target_id)), Integer(Some(row.at))],
        )),
        Effect::Revive { target_id } => statements.push((
            "update targets set retired_at = null where id = $1",
            vec![Integer(Some(*target_id))],
        )),
    }
    statements
}

/// A list of names or patterns as stored: a compact JSON array.
pub fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_default()
}

/// A stored JSON array of strings.
pub fn parse_json_list(text: &str) -> Result<Vec<String>, sqlx::Error> {
    serde_json::from_str(text).map_err(|error| sqlx::Error::Decode(error.into()))
}

/// `Steps::silence_end`: a silence's (`$1`) end and deletion.
pub const SILENCE_END_SQL: &str = "select ends_at, deleted_at from silences where id = $1";

/// The fleet chain's newest record.
pub const FLEET_HEAD_SQL: &str =
    "select id, hash from events where target_id is null order by id desc limit 1";

/// The columns an `Ack` is decoded from (`a`: acks, `t`: targets).
pub const ACK_COLUMNS: &str = "select a.id, t.repo, t.server, a.reason, a.by, a.files, \
     a.created_at, a.until, a.ended_at, a.end_reason, a.ended_by";

/// The columns a `Silence` is decoded from.
pub const SILENCE_COLUMNS: &str = "select id, repos, servers, starts_at, ends_at, reason, by, \
     created_at, deleted_at, deleted_by from silences";

pub fn ack_from_row<R>(row: &R) -> Result<Ack, sqlx::Error>
where
    R: Row,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    let files: Option<String> = row.try_get("files")?;
    Ok(Ack {
        id: row.try_get("id")?,
        repo: row.try_get("repo")?,
        server: row.try_get("server")?,
        reason: row.try_get("reason")?,
        by: row.try_get("by")?,
        files: files.as_deref().map(parse_json_list).transpose()?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        until: Timestamp::from_millis(row.try_get("until")?),
        ended_at: row
            .try_get::<Option<i64>, _>("ended_at")?
            .map(Timestamp::from_millis),
        end_reason: row.try_get("end_reason")?,
        ended_by: row.try_get("ended_by")?,
    })
}

pub fn silence_from_row<R>(row: &R) -> Result<Silence, sqlx::Error>
where
    R: Row,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Silence {
        id: row.try_get("id")?,
        repos: parse_json_list(&row.try_get::<String, _>("repos")?)?,
        servers: parse_json_list(&row.try_get::<String, _>("servers")?)?,
        starts_at: Timestamp::from_millis(row.try_get("starts_at")?),
        ends_at: Timestamp::from_millis(row.try_get("ends_at")?),
        reason: row.try_get("reason")?,
        by: row.try_get("by")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        deleted_at: row
            .try_get::<Option<i64>, _>("deleted_at")?
            .map(Timestamp::from_millis),
        deleted_by: row.try_get("deleted_by")?,
    })
}

/// The head of the statement that writes transitions to the notifications' outbox; the values
/// follow, then [`ON_CONFLICT_DO_NOTHING`]: a transition already there (the same target, kind,
/// state and time) is not written twice.
pub const INSERT_TRANSITION_COLUMNS: &str =
    "insert into transitions (target_id, kind, state, at, record_id) ";

/// Ends an insert whose rows may already be stored.
pub const ON_CONFLICT_DO_NOTHING: &str = " on conflict do nothing";
