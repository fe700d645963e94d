//! Reads of the drift lifecycle (acknowledgements, silences) and of the event stream
//! (`GET /api/events`), the same SQL on both stores.

use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::model::feed::{FeedCursor, FeedItem, FeedSource};
use crate::model::lifecycle::{Ack, Silence};
use crate::store::sql::{self, ACK_COLUMNS, SILENCE_COLUMNS};
use crate::store::{Store, StoreError};
use crate::timestamp::Timestamp;

/// Which acknowledgements or silences a list shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Activity {
    #[default]
    All,
    /// In force now (acknowledgements) or not over yet (silences).
    Active,
    /// Ended.
    Inactive,
}

impl Activity {
    fn code(self) -> i64 {
        match self {
            Self::All => 0,
            Self::Active => 1,
            Self::Inactive => 2,
        }
    }
}

/// Acknowledgements by target (`$1` repo, `$2` server, either null for any), activity (`$3`,
/// `Activity::code`) at `$4`, newest first, at most `$5`.
fn acks_sql() -> String {
    format!(
        "{ACK_COLUMNS} from acks a join targets t on t.id = a.target_id \
         where ($1 is null or t.repo = $1) and ($2 is null or t.server = $2) \
         and ($3 = 0 or ($3 = 1) = (a.ended_at is null and a.until > $4)) \
         order by a.id desc limit $5"
    )
}

fn ack_sql() -> String {
    format!("{ACK_COLUMNS} from acks a join targets t on t.id = a.target_id where a.id = $1")
}

/// Silences by activity (`$1`) at `$2`, newest first, at most `$3`.
fn silences_sql() -> String {
    format!(
        "{SILENCE_COLUMNS} where ($1 = 0 or ($1 = 1) = \
         (case when deleted_at is not null and deleted_at < ends_at then deleted_at \
          else ends_at end > $2)) order by id desc limit $3"
    )
}

fn silence_sql() -> String {
    format!("{SILENCE_COLUMNS} where id = $1")
}

impl Store {
    /// Acknowledgements, newest first.
    pub async fn acks(
        &self,
        repo: Option<&str>,
        server: Option<&str>,
        activity: Activity,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<Ack>, StoreError> {
        let sql = acks_sql();
        let (activity, now) = (activity.code(), now.as_millis());
        match self {
            Self::Sqlite(store) => sqlx::query(&sql)
                .bind(repo)
                .bind(server)
                .bind(activity)
                .bind(now)
                .bind(limit)
                .fetch_all(store.readers())
                .await?
                .iter()
                .map(sql::ack_from_row)
                .collect::<Result<_, _>>(),
            Self::Postgres(store) => sqlx::query(&sql)
                .bind(repo)
                .bind(server)
                .bind(activity)
                .bind(now)
                .bind(limit)
                .fetch_all(store.pool())
                .await?
                .iter()
                .map(sql::ack_from_row)
                .collect::<Result<_, _>>(),
        }
        .map_err(StoreError::from)
    }

    /// One acknowledgement by id.
    pub async fn ack(&self, id: i64) -> Result<Option<Ack>, StoreError> {
        let sql = ack_sql();
        let row = match self {
            Self::Sqlite(store) => sqlx::query(&sql)
                .bind(id)
                .fetch_optional(store.readers())
                .await?
                .map(|row| sql::ack_from_row(&row)),
            Self::Postgres(store) => sqlx::query(&sql)
                .bind(id)
                .fetch_optional(store.pool())
                .await?
                .map(|row| sql::ack_from_row(&row)),
        };
        Ok(row.transpose()?)
    }

    /// Silences, newest first.
    pub async fn silences(
        &self,
        activity: Activity,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<Silence>, StoreError> {
        let sql = silences_sql();
        let (activity, now) = (activity.code(), now.as_millis());
        match self {
            Self::Sqlite(store) => sqlx::query(&sql)
                .bind(activity)
                .bind(now)
                .bind(limit)
                .fetch_all(store.readers())
                .await?
                .iter()
                .map(sql::silence_from_row)
                .collect::<Result<_, _>>(),
            Self::Postgres(store) => sqlx::query(&sql)
                .bind(activity)
                .bind(now)
                .bind(limit)
                .fetch_all(store.pool())
                .await?
                .iter()
                .map(sql::silence_from_row)
                .collect::<Result<_, _>>(),
        }
        .map_err(StoreError::from)
    }

    /// One silence by id.
    pub async fn silence(&self, id: i64) -> Result<Option<Silence>, StoreError> {
        let sql = silence_sql();
        let row = match self {
            Self::Sqlite(store) => sqlx::query(&sql)
                .bind(id)
                .fetch_optional(store.readers())
                .await?
                .map(|row| sql::silence_from_row(&row)),
            Self::Postgres(store) => sqlx::query(&sql)
                .bind(id)
                .fetch_optional(store.pool())
                .await?
                .map(|row| sql::silence_from_row(&row)),
        };
        Ok(row.transpose()?)
    }

    /// Acknowledgements in force whose `until` has passed (the oldest 1,000): the expiry timer
    /// records their end.
    pub async fn expired_acks(&self, now: Timestamp) -> Result<Vec<Ack>, StoreError> {
        let sql = format!(
            "{ACK_COLUMNS} from acks a join targets t on t.id = a.target_id \
             where a.ended_at is null and a.until <= $1 order by a.until limit 1000"
        );
        match self {
            Self::Sqlite(store) => sqlx::query(&sql)
                .bind(now.as_millis())
                .fetch_all(store.readers())
                .await?
                .iter()
                .map(sql::ack_from_row)
                .collect::<Result<_, _>>(),
            Self::Postgres(store) => sqlx::query(&sql)
                .bind(now.as_millis())
                .fetch_all(store.pool())
                .await?
                .iter()
                .map(sql::ack_from_row)
                .collect::<Result<_, _>>(),
        }
        .map_err(StoreError::from)
    }
}

/// The greatest transition and event ids committed (0 for none).
pub(super) const FEED_END_SQL: &str = "select (select coalesce(max(id), 0) from transitions), \
     (select coalesce(max(id), 0) from events)";

/// Outbox rows after `$1` up to `$2`, at most `$3`, in id order. Acknowledgements made and ended
/// are left to their chained events, which carry their body.
const FEED_TRANSITIONS_SQL: &str = "select tr.id, t.repo, t.server, tr.kind, tr.state, tr.at, \
     tr.record_id from transitions tr join targets t on t.id = tr.target_id \
     where tr.id > $1 and tr.id <= $2 and tr.kind not in ('ack', 'ack_end') \
     order by tr.id limit $3";

/// Chained events after `$1` up to `$2`, at most `$3`, in id order; the fleet chain's have no
/// target.
const FEED_EVENTS_SQL: &str = "select e.id, t.repo, t.server, e.kind, e.at, e.body \
     from events e left join targets t on t.id = e.target_id \
     where e.id > $1 and e.id <= $2 order by e.id limit $3";

/// An item read from one table, with the id that places it in its table and the record id that
/// places it among the other table's (both share the snapshots' id space).
struct FeedRow {
    id: i64,
    order: i64,
    item: FeedItem,
}

fn transition_from_row<R>(row: &R) -> Result<FeedRow, sqlx::Error>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    let record_id: Option<i64> = row.try_get("record_id")?;
    Ok(FeedRow {
        id: row.try_get("id")?,
        // The clock's STALE rows follow the records of their page.
        order: record_id.unwrap_or(i64::MAX),
        item: FeedItem {
            cursor: FeedCursor::default(),
            source: FeedSource::Transition,
            repo: Some(row.try_get("repo")?),
            server: Some(row.try_get("server")?),
            kind: row.try_get("kind")?,
            state: Some(row.try_get("state")?),
            at: Timestamp::from_millis(row.try_get("at")?),
            record_id,
            body: None,
        },
    })
}

fn event_from_row<R>(row: &R) -> Result<FeedRow, sqlx::Error>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: i64 = row.try_get("id")?;
    let body: String = row.try_get("body")?;
    let body = serde_json::from_str(&body)
        .map_err(|error| sqlx::Error::Decode(format!("event {id}'s body: {error}").into()))?;
    Ok(FeedRow {
        id,
        order: id,
        item: FeedItem {
            cursor: FeedCursor::default(),
            source: FeedSource::Event,
            repo: row.try_get("repo")?,
            server: row.try_get("server")?,
            kind: row.try_get("kind")?,
            state: None,
            at: Timestamp::from_millis(row.try_get("at")?),
            record_id: Some(id),
            body: Some(body),
        },
    })
}

/// Interleaves the two tables' rows by the record that caused them, each table in its own id
/// order, and gives every item the position right after it. A table that filled its page may
/// have more rows: once its page is used up, the other's rows wait for the next page.
fn merge_feed(
    after: FeedCursor,
    transitions: Vec<FeedRow>,
    events: Vec<FeedRow>,
    limit: usize,
) -> Vec<FeedItem> {
    let transitions_full = transitions.len() >= limit;
    let events_full = events.len() >= limit;
    let mut transitions = transitions.into_iter().peekable();
    let mut events = events.into_iter().peekable();
    let mut cursor = after;
    let mut items = Vec::new();
    loop {
        let source = match (transitions.peek(), events.peek()) {
            (Some(t), Some(e)) if e.order <= t.order => FeedSource::Event,
            (Some(_), Some(_)) => FeedSource::Transition,
            (Some(_), None) if !events_full => FeedSource::Transition,
            (None, Some(_)) if !transitions_full => FeedSource::Event,
            _ => break,
        };
        let row = match source {
            FeedSource::Transition => transitions.next(),
            FeedSource::Event => events.next(),
        };
        let Some(mut row) = row else { break };
        match source {
            FeedSource::Transition => cursor.transition = row.id,
            FeedSource::Event => cursor.event = row.id,
        }
        row.item.cursor = cursor;
        items.push(row.item);
    }
    items
}

impl Store {
    /// The greatest transition and event ids committed, then the writers still in flight that
    /// may yet commit below them (PostgreSQL's; SQLite has none): what `FeedWatch::observe`
    /// takes.
    pub async fn feed_end(&self) -> Result<(FeedCursor, Vec<String>), StoreError> {
        match self {
            Self::Sqlite(store) => {
                let (transition, event): (i64, i64) = sqlx::query_as(FEED_END_SQL)
                    .fetch_one(store.readers())
                    .await?;
                Ok((FeedCursor { transition, event }, Vec::new()))
            }
            Self::Postgres(store) => store.feed_end().await,
        }
    }

    /// The stream's items after `after`, up to the settled position `upto`, at most `limit`:
    /// transitions and chained events interleaved by the record that caused them.
    pub async fn feed_page(
        &self,
        after: FeedCursor,
        upto: FeedCursor,
        limit: usize,
    ) -> Result<Vec<FeedItem>, StoreError> {
        let count = i64::try_from(limit).unwrap_or(i64::MAX);
        let (transitions, events) = match self {
            Self::Sqlite(store) => {
                let transitions = sqlx::query(FEED_TRANSITIONS_SQL)
                    .bind(after.transition)
                    .bind(upto.transition)
                    .bind(count)
                    .fetch_all(store.readers())
                    .await?;
                let events = sqlx::query(FEED_EVENTS_SQL)
                    .bind(after.event)
                    .bind(upto.event)
                    .bind(count)
                    .fetch_all(store.readers())
                    .await?;
                (
                    transitions
                        .iter()
                        .map(transition_from_row)
                        .collect::<Result<Vec<_>, _>>()?,
                    events
                        .iter()
                        .map(event_from_row)
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
            Self::Postgres(store) => {
                let transitions = sqlx::query(FEED_TRANSITIONS_SQL)
                    .bind(after.transition)
                    .bind(upto.transition)
                    .bind(count)
                    .fetch_all(store.pool())
                    .await?;
                let events = sqlx::query(FEED_EVENTS_SQL)
                    .bind(after.event)
                    .bind(upto.event)
                    .bind(count)
                    .fetch_all(store.pool())
                    .await?;
                (
                    transitions
                        .iter()
                        .map(transition_from_row)
                        .collect::<Result<Vec<_>, _>>()?,
                    events
                        .iter()
                        .map(event_from_row)
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
        };
        Ok(merge_feed(after, transitions, events, limit))
    }
}
