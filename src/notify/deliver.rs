//! Delivery: tasks that lease due deliveries, post them with their own HTTP client and timeouts,
//! and record each attempt. A failed attempt is retried with exponential back-off and jitter
//! until `retry_for` has passed since the delivery was decided, then marked failed. Every attempt
//! carries the same `X-GitOps-Event-Id`.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};

use crate::notify::config::{NotifyConfig, Receiver, ReceiverKind};
use crate::notify::payload::{NotificationEvent, signature};
use crate::store::{LeasedDelivery, Store, StoreError};
use crate::timestamp::Timestamp;

pub const DELIVERED: &str = "gitops_status_notifications_delivered_total";
pub const FAILED: &str = "gitops_status_notifications_failed_total";
pub const ATTEMPT_ERRORS: &str = "gitops_status_notification_attempt_errors_total";
pub const PENDING: &str = "gitops_status_notifications_pending";
pub const OLDEST_PENDING: &str = "gitops_status_notifications_oldest_pending_seconds";

/// Deliveries leased per pass.
const BATCH: i64 = 16;
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How long a lease lasts: longer than an attempt can take.
const LEASE: Duration = Duration::from_secs(60);

/// The HTTP client deliveries use: its own connection pool and timeouts, apart from ingest.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("gitops-status-server/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Makes one attempt at every due delivery it can lease; returns how many it attempted.
pub async fn deliver_due(
    store: &Store,
    config: &NotifyConfig,
    client: &reqwest::Client,
    retry_for: Duration,
    alert_hold: Duration,
) -> Result<usize, StoreError> {
    let now = Timestamp::now();
    let lease_until = now.plus_millis(LEASE.as_millis() as i64);
    let leased = store.lease_deliveries(now, lease_until, BATCH).await?;
    for delivery in &leased {
        attempt(store, config, client, delivery, retry_for, alert_hold).await?;
    }
    Ok(leased.len())
}

async fn attempt(
    store: &Store,
    config: &NotifyConfig,
    client: &reqwest::Client,
    delivery: &LeasedDelivery,
    retry_for: Duration,
    alert_hold: Duration,
) -> Result<(), StoreError> {
    let receiver_name = delivery.receiver.clone();
    let outcome = match config.receiver(&delivery.receiver) {
        Some(receiver) => send(client, receiver, delivery, alert_hold).await,
        None => Err("the receiver is no longer in the notify file".to_owned()),
    };
    let now = Timestamp::now();
    match outcome {
        Ok(()) => {
            store.delivery_succeeded(delivery.id, now).await?;
            metrics::counter!(DELIVERED, "receiver" => receiver_name).increment(1);
        }
        Err(error) => {
            let attempts = delivery.attempts + 1;
            let deadline = delivery.created_at + retry_for.as_millis() as i64;
            let retry_at = now.plus_millis(backoff(attempts).as_millis() as i64);
            let retry_at = (retry_at.as_millis() < deadline).then_some(retry_at);
            tracing::warn!(
                receiver = %delivery.receiver,
                event_id = %delivery.event_id,
                attempts,
                %error,
                gave_up = retry_at.is_none(),
                "notification not delivered"
            );
            store
                .delivery_attempt_failed(delivery.id, &error, retry_at)
                .await?;
            metrics::counter!(ATTEMPT_ERRORS, "receiver" => receiver_name.clone()).increment(1);
            if retry_at.is_none() {
                metrics::counter!(FAILED, "receiver" => receiver_name).increment(1);
            }
        }
    }
    Ok(())
}

/// Exponential from one second, capped at [`MAX_BACKOFF`], each wait between half and all of it.
pub fn backoff(attempts: i64) -> Duration {
    let exponent = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    let full = Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF);
    let jitter = RandomState::new().hash_one(attempts) % 1000;
    full / 2 + full / 2 * u32::try_from(jitter).unwrap_or(0) / 1000
}

/// One POST to the receiver; `Err` says why it did not take it.
async fn send(
    client: &reqwest::Client,
    receiver: &Receiver,
    delivery: &LeasedDelivery,
    alert_hold: Duration,
) -> Result<(), String> {
    let event: NotificationEvent = serde_json::from_str(&delivery.body)
        .map_err(|error| format!("the stored event is unreadable: {error}"))?;
    let (url, body) = match receiver.kind {
        ReceiverKind::Webhook => (receiver.url.to_string(), delivery.body.clone()),
        ReceiverKind::Slack => (receiver.url.to_string(), event.slack().to_string()),
        ReceiverKind::Alertmanager => {
            let Some(alerts) = event.alertmanager(Timestamp::now(), alert_hold) else {
                return Ok(());
            };
            let base = receiver.url.as_str().trim_end_matches('/');
            (format!("{base}/api/v2/alerts"), alerts.to_string())
        }
    };
    let mut request = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .header("x-gitops-event-id", &delivery.event_id);
    for (name, value) in &receiver.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return Err(format!("header {name:?} cannot be sent"));
        };
        request = request.header(name, value);
    }
    if let Some(secret) = &receiver.secret {
        request = request.header("x-gitops-signature", signature(secret, body.as_bytes()));
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|error| format!("cannot post: {error}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

/// Describes the notification metrics and creates each receiver's series at zero, so a scrape
/// shows them before the first delivery or failure and `rate()` works from the first one.
pub fn register_metrics(config: &NotifyConfig) {
    metrics::describe_counter!(DELIVERED, "Notifications delivered, by receiver");
    metrics::describe_counter!(
        FAILED,
        "Notifications given up after retrying for the retry period (24 h), by receiver"
    );
    metrics::describe_counter!(
        ATTEMPT_ERRORS,
        "Delivery attempts that failed (each is retried with back-off), by receiver"
    );
    metrics::describe_gauge!(PENDING, "Notifications not delivered yet, by receiver");
    metrics::describe_gauge!(
        OLDEST_PENDING,
        metrics::Unit::Seconds,
        "Age of the oldest notification not delivered yet (0 when none), by receiver"
    );
    metrics::describe_counter!(
        crate::notify::remind::ALERT_REFRESH_ERRORS,
        "Re-sends of firing alerts that an alertmanager receiver did not take, by receiver"
    );
    for receiver in &config.receivers {
        let name = receiver.name.clone();
        metrics::counter!(DELIVERED, "receiver" => name.clone()).absolute(0);
        metrics::counter!(FAILED, "receiver" => name.clone()).absolute(0);
        metrics::counter!(ATTEMPT_ERRORS, "receiver" => name.clone()).absolute(0);
        metrics::gauge!(PENDING, "receiver" => name.clone()).set(0.0);
        metrics::gauge!(OLDEST_PENDING, "receiver" => name.clone()).set(0.0);
        if receiver.kind == ReceiverKind::Alertmanager {
            metrics::counter!(crate::notify::remind::ALERT_REFRESH_ERRORS, "receiver" => name)
                .absolute(0);
        }
    }
}

/// Publishes the pending backlog per receiver.
pub async fn report_backlog(store: &Store, config: &NotifyConfig) -> Result<(), StoreError> {
    let backlog = store.pending_backlog().await?;
    let now = Timestamp::now().as_millis();
    for receiver in &config.receivers {
        let found = backlog.iter().find(|row| row.receiver == receiver.name);
        let (pending, age) = found.map_or((0.0, 0.0), |row| {
            (
                row.pending as f64,
                (now - row.oldest_created_at).max(0) as f64 / 1000.0,
            )
        });
        metrics::gauge!(PENDING, "receiver" => receiver.name.clone()).set(pending);
        metrics::gauge!(OLDEST_PENDING, "receiver" => receiver.name.clone()).set(age);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_with_jitter() {
        for attempts in 1..30 {
            let full = Duration::from_secs(1u64 << (attempts.min(20) - 1)).min(MAX_BACKOFF);
            let wait = backoff(attempts);
            assert!(wait >= full / 2 && wait <= full, "{attempts}: {wait:?}");
        }
    }
}
