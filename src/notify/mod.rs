//! Notifications (SPEC "Notifications"): the notify file, the dispatcher that turns the
//! transitions outbox into deliveries, the delivery tasks, and the clock that finds STALE. All of
//! their state is in the database, so a restart (or `kill -9`) resumes where it stopped, and
//! none of it runs on the ingest path.

pub mod config;
pub mod deliver;
pub mod dispatch;
pub mod payload;
pub mod remind;
pub mod stale;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

pub use config::NotifyConfig;

use crate::store::{Store, StoreError};
use crate::timestamp::Timestamp;

/// How the notification tasks run.
#[derive(Debug, Clone)]
pub struct NotifyOptions {
    /// How often each task looks for work.
    pub every: Duration,
    /// The stale-after of targets whose snapshots carry none.
    pub stale_after_seconds: i64,
    /// How long a delivery is retried before it is marked failed.
    pub retry_for: Duration,
    /// Delivery tasks per replica.
    pub workers: usize,
    /// How often firing alerts are posted again to `alertmanager` receivers.
    pub alert_every: Duration,
    /// How far ahead of each post a firing alert's `endsAt` is: Alertmanager resolves it then
    /// unless it is posted again.
    pub alert_hold: Duration,
}

impl NotifyOptions {
    pub fn new(stale_after_seconds: i64) -> Self {
        Self {
            every: Duration::from_secs(1),
            stale_after_seconds,
            // At least 24 hours, as the SPEC promises.
            retry_for: Duration::from_secs(24 * 3600 + 600),
            workers: 2,
            // As Prometheus does: re-sent every minute, resolved by itself after four missed.
            alert_every: Duration::from_secs(60),
            alert_hold: Duration::from_secs(240),
        }
    }
}

/// Starts the STALE clock, the dispatcher and the delivery tasks; they stop when the store closes.
pub fn spawn(store: Store, config: NotifyConfig, options: NotifyOptions) -> Vec<JoinHandle<()>> {
    deliver::register_metrics(&config);
    let config = Arc::new(config);
    let client = deliver::client();
    let mut tasks = Vec::new();
    {
        let (store, config, options) = (store.clone(), Arc::clone(&config), options.clone());
        let gaps = Arc::new(tokio::sync::Mutex::new(dispatch::Gaps::default()));
        tasks.push(every(options.every, "deciding notifications", move || {
            let (store, config, gaps) = (store.clone(), Arc::clone(&config), Arc::clone(&gaps));
            let stale_after = options.stale_after_seconds;
            async move {
                let now = Timestamp::now();
                stale::record_stale(&store, stale_after, now).await?;
                dispatch::dispatch(&store, &config, &mut *gaps.lock().await, now).await?;
                remind::remind(&store, &config, now).await?;
                deliver::report_backlog(&store, &config).await
            }
        }));
    }
    {
        let (store, config, client) = (store.clone(), Arc::clone(&config), client.clone());
        let hold = options.alert_hold;
        tasks.push(every(
            options.alert_every,
            "re-sending firing alerts",
            move || {
                let (store, config, client) = (store.clone(), Arc::clone(&config), client.clone());
                async move {
                    remind::refresh_alerts(&store, &config, &client, hold).await?;
                    Ok(())
                }
            },
        ));
    }
    for _ in 0..options.workers.max(1) {
        let (store, config, client) = (store.clone(), Arc::clone(&config), client.clone());
        let (retry_for, hold) = (options.retry_for, options.alert_hold);
        tasks.push(every(
            options.every,
            "delivering notifications",
            move || {
                let (store, config, client) = (store.clone(), Arc::clone(&config), client.clone());
                async move {
                    // Keep going while there is a backlog; wait a tick once it is worked off.
                    while deliver::deliver_due(&store, &config, &client, retry_for, hold).await? > 0
                    {
                    }
                    Ok(())
                }
            },
        ));
    }
    tasks
}

/// Runs `pass` every `period` until the store closes; other errors are logged and retried.
fn every<F, Fut>(period: Duration, what: &'static str, mut pass: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match pass().await {
                Ok(()) => {}
                Err(StoreError::Closed) => break,
                Err(error) => tracing::warn!(%error, "{what} failed; retrying"),
            }
        }
    })
}
