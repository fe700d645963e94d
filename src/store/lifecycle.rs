//! Reads of the drift lifecycle (acknowledgements, silences), the same SQL on both stores.

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
