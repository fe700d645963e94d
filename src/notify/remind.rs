//! While a state lasts: reminders (a route's `repeat`) to `webhook` and `slack` receivers, and
//! the re-sending of firing alerts to `alertmanager` receivers.
//!
//! A reminder is a delivery row like any other (leased, retried, counted), numbered after the
//! notification it follows: the started notification is reminder 0 of its (transition,
//! receiver), the next reminder is the highest number so far plus one. The unique key on
//! (transition, receiver, reminder) makes two replicas, or a restart, that decide the same
//! reminder write it once. A reminder is due `repeat` after the episode's last notification to the
//! receiver was delivered (or decided, if it never was), and none is written while one of them
//! is still pending: a receiver that is down gets one reminder when it is back, not the backlog of
//! every interval it missed. Targets that are acknowledged, silenced or retired get none.
//!
//! Alertmanager forgets a firing alert at its `endsAt`; [`refresh_alerts`] posts every open
//! episode's alert again every `alert_every`, with `endsAt` `alert_hold` ahead, the way Prometheus
//! does. These re-sends are not stored: Alertmanager merges the same alert (same labels) into
//! one, so a replica or a restart sending it again changes nothing, and a server that stops for
//! good lets the alerts resolve by themselves instead of firing for ever.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::Value;

use crate::notify::config::{NotifyConfig, ReceiverKind, Route};
use crate::notify::dispatch::{event_id, quiet};
use crate::notify::payload::{NotificationEvent, NotificationKind};
use crate::store::{Activity, NewDelivery, OpenEpisode, Store, StoreError};
use crate::timestamp::Timestamp;

/// Open episodes read per pass, oldest first: ended ones are closed as they are read, so a
/// backlog of them clears over a few passes.
const BATCH: i64 = 10_000;

/// The metric counting alert re-sends that Alertmanager did not take.
pub const ALERT_REFRESH_ERRORS: &str = "gitops_status_alert_refresh_errors_total";

/// The route that sent the episode's started notification to its receiver: the first route of
/// that receiver taking the target and state.
fn route_of<'a>(config: &'a NotifyConfig, episode: &OpenEpisode) -> Option<&'a Route> {
    config.routes.iter().find(|route| {
        config.receivers[route.receiver].name == episode.receiver
            && route.matches(&episode.repo, &episode.server, &episode.state)
    })
}

/// Closes the episodes that ended and writes the reminders that are due; returns how many
/// reminders it wrote.
pub async fn remind(
    store: &Store,
    config: &NotifyConfig,
    now: Timestamp,
) -> Result<usize, StoreError> {
    // Without a `repeat` or an Alertmanager nothing reads open episodes; they are closed once
    // one is configured.
    if !config.routes.iter().any(|route| route.repeat.is_some())
        && !config
            .receivers
            .iter()
            .any(|receiver| receiver.kind == ReceiverKind::Alertmanager)
    {
        return Ok(0);
    }
    let episodes = store.open_episodes(BATCH).await?;
    let mut silences = None;
    let mut written = 0;
    for episode in episodes {
        if episode.ended > 0 {
            store.close_episode(&episode, now).await?;
            continue;
        }
        let Some(receiver) = config.receiver(&episode.receiver) else {
            continue;
        };
        if receiver.kind == ReceiverKind::Alertmanager {
            continue;
        }
        let Some(every) = route_of(config, &episode).and_then(|route| route.repeat) else {
            continue;
        };
        let every = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        let due = episode.last_at.saturating_add(every);
        if episode.pending > 0 || now.as_millis() < due {
            continue;
        }
        if silences.is_none() {
            silences = Some(store.silences(Activity::Active, now, 1000).await?);
        }
        let silences = silences.as_deref().unwrap_or_default();
        if quiet(store, &episode.repo, &episode.server, silences, now, true).await? {
            continue;
        }
        let reminder = episode.last_reminder + 1;
        let event = NotificationEvent {
            event_id: format!("{}-reminder-{reminder}", event_id(episode.transition_id)),
            kind: NotificationKind::Reminder,
            state: episode.state.clone(),
            repo: episode.repo.clone(),
            server: episode.server.clone(),
            at: now,
            started_at: Some(Timestamp::from_millis(episode.at)),
            duration_seconds: Some((now.as_millis() - episode.at).max(0) / 1000),
            files: None,
            link: NotificationEvent::link_to(&episode.repo, &episode.server),
        };
        let body = serde_json::to_string(&event)
            .map_err(|error| StoreError::corrupt(format!("cannot encode an event: {error}")))?;
        store
            .insert_delivery(&NewDelivery {
                transition_id: episode.transition_id,
                receiver: episode.receiver.clone(),
                reminder,
                event_id: event.event_id,
                kind: NotificationKind::Reminder.as_str().to_owned(),
                status: "pending",
                body,
                created_at: now,
            })
            .await?;
        written += 1;
    }
    Ok(written)
}

/// Posts every open episode's firing alert again to each `alertmanager` receiver that has been
/// told of its start, in one request per receiver; returns how many alerts it posted.
pub async fn refresh_alerts(
    store: &Store,
    config: &NotifyConfig,
    client: &reqwest::Client,
    hold: Duration,
) -> Result<usize, StoreError> {
    if !config
        .receivers
        .iter()
        .any(|receiver| receiver.kind == ReceiverKind::Alertmanager)
    {
        return Ok(0);
    }
    let now = Timestamp::now();
    let silences = store.silences(Activity::Active, now, 1000).await?;
    let mut alerts: HashMap<&str, Vec<Value>> = HashMap::new();
    let episodes = store.open_episodes(BATCH).await?;
    for episode in &episodes {
        if episode.ended > 0 {
            store.close_episode(episode, now).await?;
            continue;
        }
        // A pending start fires the alert itself once delivered.
        if episode.status == "pending" {
            continue;
        }
        let Some(receiver) = config.receiver(&episode.receiver) else {
            continue;
        };
        if receiver.kind != ReceiverKind::Alertmanager
            || quiet(store, &episode.repo, &episode.server, &silences, now, true).await?
        {
            continue;
        }
        let Ok(event) = serde_json::from_str::<NotificationEvent>(&episode.body) else {
            continue;
        };
        if let Some(Value::Array(firing)) = event.alertmanager(now, hold) {
            alerts
                .entry(receiver.name.as_str())
                .or_default()
                .extend(firing);
        }
    }
    let mut posted = 0;
    for (name, firing) in alerts {
        let Some(receiver) = config.receiver(name) else {
            continue;
        };
        let count = firing.len();
        let base = receiver.url.as_str().trim_end_matches('/');
        let mut request = client
            .post(format!("{base}/api/v2/alerts"))
            .header(CONTENT_TYPE, "application/json");
        for (name, value) in &receiver.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                request = request.header(name, value);
            }
        }
        let outcome = request
            .body(Value::Array(firing).to_string())
            .send()
            .await
            .map_err(|error| format!("cannot post: {error}"))
            .and_then(|response| {
                let status = response.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("the receiver answered {status}"))
                }
            });
        match outcome {
            Ok(()) => posted += count,
            Err(error) => {
                tracing::warn!(receiver = %receiver.name, alerts = count, %error, "firing alerts not re-sent");
                metrics::counter!(ALERT_REFRESH_ERRORS, "receiver" => receiver.name.clone())
                    .increment(1);
            }
        }
    }
    Ok(posted)
}
