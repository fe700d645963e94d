//! The notifications' outbox: reading transitions for the dispatcher, the deliveries it decides,
//! the leases the delivery tasks take, and the STALE transitions the clock finds. The same SQL on
//! both stores; on SQLite these short writes go through the reader pool's connections and wait
//! for the writer like any other WAL writer would, off the ingest path.

use crate::store::{Store, StoreError};
use crate::timestamp::Timestamp;

/// Runs `$body` with `$pool` bound to the store's pool of either database.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite(store) => {
                let $pool = store.readers();
                $body
            }
            Store::Postgres(store) => {
                let $pool = store.pool();
                $body
            }
        }
    };
}

/// A row of the `transitions` outbox with its target's names.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Transition {
    pub id: i64,
    pub target_id: i64,
    pub repo: String,
    pub server: String,
    /// `entered`, `left`, `ack` or `ack_end`.
    pub kind: String,
    pub state: String,
    /// Milliseconds.
    pub at: i64,
    pub record_id: Option<i64>,
}

/// A decision the dispatcher took for one (transition, receiver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub transition_id: i64,
    pub receiver: String,
    /// 0 for the notification itself, n for its n-th reminder.
    pub reminder: i64,
    pub event_id: String,
    pub kind: String,
    /// `pending` (to send) or `skipped` (decided not to).
    pub status: &'static str,
    pub body: String,
    pub created_at: Timestamp,
}

/// A pending delivery a task holds for one attempt.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LeasedDelivery {
    pub id: i64,
    pub receiver: String,
    pub event_id: String,
    pub kind: String,
    pub body: String,
    pub attempts: i64,
    pub created_at: i64,
}

/// A started notification whose episode the reminder pass has not seen end.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OpenEpisode {
    /// The started notification's delivery id.
    pub id: i64,
    pub transition_id: i64,
    pub receiver: String,
    /// The started notification's status: `pending`, `delivered` or `failed`.
    pub status: String,
    /// The started notification's event.
    pub body: String,
    pub target_id: i64,
    pub repo: String,
    pub server: String,
    pub state: String,
    /// When the state was entered (ms).
    pub at: i64,
    /// The highest reminder number written (0: none yet).
    pub last_reminder: i64,
    /// How many of the episode's notifications to this receiver are pending.
    pub pending: i64,
    /// When the last of them was delivered, or decided when it was not (ms).
    pub last_at: i64,
    /// How many `left` transitions of the state came after: more than 0 ends the episode.
    pub ended: i64,
}

/// A delivery as `GET /api/notifications` shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub event_id: String,
    pub receiver: String,
    pub kind: String,
    pub status: String,
    pub repo: String,
    pub server: String,
    pub state: String,
    pub at: i64,
    pub created_at: i64,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
}

/// Pending deliveries of one receiver.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingBacklog {
    pub receiver: String,
    pub pending: i64,
    pub oldest_created_at: i64,
}

const TRANSITIONS_AFTER: &str = "select x.id, x.target_id, t.repo, t.server, x.kind, x.state, \
     x.at, x.record_id from transitions x join targets t on t.id = x.target_id \
     where x.id > $1 order by x.id limit $2";

const DECISIONS_AFTER: &str = "select transition_id, receiver, status from deliveries \
     where transition_id > $1 and reminder = 0";

const DECISION: &str = "select status from deliveries where transition_id = $1 \
     and receiver = $2 and reminder = 0";

/// The `entered` a `left` ends: the latest entering of that state before it.
const ENTERED_BEFORE: &str = "select id, at from transitions where target_id = $1 \
     and kind = 'entered' and state = $2 and at <= $3 and id < $4 order by at desc, id desc limit 1";

const LEFT_WITHIN: &str = "select count(*) from transitions where target_id = $1 \
     and kind = 'left' and state = $2 and at >= $3 and at < $4";

const INSERT_DELIVERY: &str = "insert into deliveries \
     (transition_id, receiver, reminder, event_id, kind, status, body, created_at, next_attempt_at) \
     values ($1, $2, $3, $4, $5, $6, $7, $8, $8) on conflict do nothing";

/// Started notifications whose episode may still be open, with what the reminder pass needs:
/// whether a `left` of the state came after, the highest reminder number so far, whether one of
/// the episode's notifications to this receiver is still pending, and when the last was
/// delivered (or decided, when none was delivered).
const OPEN_EPISODES: &str = "select d.id, d.transition_id, d.receiver, d.status, d.body, \
     x.target_id, t.repo, t.server, x.state, x.at, \
     (select max(r.reminder) from deliveries r where r.transition_id = d.transition_id \
       and r.receiver = d.receiver) as last_reminder, \
     (select count(*) from deliveries r where r.transition_id = d.transition_id \
       and r.receiver = d.receiver and r.status = 'pending') as pending, \
     (select max(coalesce(r.delivered_at, r.created_at)) from deliveries r \
       where r.transition_id = d.transition_id and r.receiver = d.receiver) as last_at, \
     (select count(*) from transitions y where y.target_id = x.target_id and y.kind = 'left' \
       and y.state = x.state and y.id > x.id) as ended \
     from deliveries d join transitions x on x.id = d.transition_id \
     join targets t on t.id = x.target_id \
     where d.kind = 'started' and d.reminder = 0 and d.status <> 'skipped' \
     and d.closed_at is null order by d.id limit $1";

const DELIVERY_COLUMNS: &str = "d.id, d.event_id, d.receiver, d.kind, d.status, t.repo, \
     t.server, x.state, x.at, d.created_at, d.attempts, d.next_attempt_at, d.delivered_at, \
     d.last_error";

const STALE_TIPS: &str = "select t.repo, t.server, x.kind, x.at from transitions x \
     join targets t on t.id = x.target_id where x.id in (select max(id) from transitions where state = 'STALE' group by target_id)";

const INSERT_STALE: &str = "insert into transitions (target_id, kind, state, at, record_id) \
     select id, $3, 'STALE', $4, null from targets where repo = $1 and server = $2 \
     on conflict do nothing";

impl Store {
    /// How far the dispatcher has decided every transition.
    pub async fn notify_cursor(&self) -> Result<i64, StoreError> {
        let sql = "select position from notify_cursor where id = 1";
        Ok(on_pool!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await?))
    }

    /// Moves the dispatcher's cursor forward (never back: another replica may be ahead).
    pub async fn advance_notify_cursor(&self, position: i64) -> Result<(), StoreError> {
        let sql = "update notify_cursor set position = $1 where id = 1 and position < $1";
        on_pool!(self, pool => sqlx::query(sql).bind(position).execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Transitions after `position`, in id order.
    pub async fn transitions_after(
        &self,
        position: i64,
        limit: i64,
    ) -> Result<Vec<Transition>, StoreError> {
        Ok(on_pool!(self, pool => sqlx::query_as(TRANSITIONS_AFTER)
            .bind(position)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// Every decision taken about transitions after `position`: (transition, receiver, status).
    pub async fn delivery_decisions(
        &self,
        position: i64,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        Ok(on_pool!(self, pool => sqlx::query_as(DECISIONS_AFTER)
            .bind(position)
            .fetch_all(pool)
            .await?))
    }

    /// The status of the decision about one (transition, receiver), if taken.
    pub async fn delivery_decision(
        &self,
        transition_id: i64,
        receiver: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(on_pool!(self, pool => sqlx::query_scalar(DECISION)
            .bind(transition_id)
            .bind(receiver)
            .fetch_optional(pool)
            .await?))
    }

    /// The `entered` transition (id, at) that the `left` one of the same state ends.
    pub async fn entered_before(
        &self,
        left: &Transition,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        Ok(on_pool!(self, pool => sqlx::query_as(ENTERED_BEFORE)
            .bind(left.target_id)
            .bind(&left.state)
            .bind(left.at)
            .bind(left.id)
            .fetch_optional(pool)
            .await?))
    }

    /// Whether the target left `state` in `[from, to)` (ms): the entering was a flap.
    pub async fn left_within(
        &self,
        target_id: i64,
        state: &str,
        from: i64,
        to: i64,
    ) -> Result<bool, StoreError> {
        let count: i64 = on_pool!(self, pool => sqlx::query_scalar(LEFT_WITHIN)
            .bind(target_id)
            .bind(state)
            .bind(from)
            .bind(to)
            .fetch_one(pool)
            .await?);
        Ok(count > 0)
    }

    /// Writes a decision; one already taken (by another replica) stays as it was.
    pub async fn insert_delivery(&self, delivery: &NewDelivery) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query(INSERT_DELIVERY)
            .bind(delivery.transition_id)
            .bind(&delivery.receiver)
            .bind(delivery.reminder)
            .bind(&delivery.event_id)
            .bind(&delivery.kind)
            .bind(delivery.status)
            .bind(&delivery.body)
            .bind(delivery.created_at.as_millis())
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Up to `limit` started notifications whose episode may still be open, oldest first.
    pub async fn open_episodes(&self, limit: i64) -> Result<Vec<OpenEpisode>, StoreError> {
        Ok(on_pool!(self, pool => sqlx::query_as(OPEN_EPISODES)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// Marks a started notification's episode over at `at`: the reminder pass stops reading it,
    /// and reminders of it still pending are skipped (the state they remind of is gone).
    pub async fn close_episode(
        &self,
        episode: &OpenEpisode,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let close = "update deliveries set closed_at = $2 where id = $1";
        let skip = "update deliveries set status = 'skipped', leased_until = null \
             where transition_id = $1 and receiver = $2 and reminder > 0 and status = 'pending'";
        on_pool!(self, pool => {
            sqlx::query(skip)
                .bind(episode.transition_id)
                .bind(&episode.receiver)
                .execute(pool)
                .await?;
            sqlx::query(close)
                .bind(episode.id)
                .bind(at.as_millis())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Takes up to `limit` due pending deliveries until `lease_until`: no other task or replica
    /// takes them before then (PostgreSQL skips rows another replica is leasing right now).
    pub async fn lease_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> Result<Vec<LeasedDelivery>, StoreError> {
        let lock = match self {
            Self::Sqlite(_) => "",
            Self::Postgres(_) => " for update skip locked",
        };
        let sql = format!(
            "update deliveries set leased_until = $1 where id in (select id from deliveries \
             where status = 'pending' and next_attempt_at <= $2 \
             and (leased_until is null or leased_until <= $2) \
             order by next_attempt_at, id limit $3{lock}) \
             returning id, receiver, event_id, kind, body, attempts, created_at"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(lease_until.as_millis())
            .bind(now.as_millis())
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// Records a successful attempt.
    pub async fn delivery_succeeded(&self, id: i64, at: Timestamp) -> Result<(), StoreError> {
        let sql = "update deliveries set status = 'delivered', attempts = attempts + 1, \
             delivered_at = $2, leased_until = null, last_error = null where id = $1";
        on_pool!(self, pool => sqlx::query(sql).bind(id).bind(at.as_millis()).execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Records a failed attempt: retried at `retry_at`, or given up when `None`.
    pub async fn delivery_attempt_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let sql = "update deliveries set attempts = attempts + 1, last_error = $2, \
             leased_until = null, status = case when $3 < 0 then 'failed' else status end, \
             next_attempt_at = case when $3 < 0 then next_attempt_at else $3 end where id = $1";
        let retry_at = retry_at.map_or(-1, Timestamp::as_millis);
        on_pool!(self, pool => sqlx::query(sql)
            .bind(id)
            .bind(error)
            .bind(retry_at)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Deliveries in `status` (every status but `skipped` when `None`), newest first.
    pub async fn deliveries(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let sql = format!(
            "select {DELIVERY_COLUMNS} from deliveries d \
             join transitions x on x.id = d.transition_id join targets t on t.id = x.target_id \
             where d.status <> 'skipped' and ($1 is null or d.status = $1) \
             order by d.id desc limit $2"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(status)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// Pending deliveries per receiver, with the oldest's creation time.
    pub async fn pending_backlog(&self) -> Result<Vec<PendingBacklog>, StoreError> {
        let sql = "select receiver, count(*) as pending, min(created_at) as oldest_created_at \
             from deliveries where status = 'pending' group by receiver";
        Ok(on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await?))
    }

    /// Each target's last STALE transition: (repo, server, kind, at).
    pub async fn stale_tips(&self) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        Ok(on_pool!(self, pool => sqlx::query_as(STALE_TIPS).fetch_all(pool).await?))
    }

    /// Writes an `entered` or `left` STALE transition found by the clock; the same one written
    /// by another replica is written once.
    pub async fn record_stale_transition(
        &self,
        repo: &str,
        server: &str,
        kind: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query(INSERT_STALE)
            .bind(repo)
            .bind(server)
            .bind(kind)
            .bind(at.as_millis())
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }
}
