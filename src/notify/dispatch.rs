//! The dispatcher: reads the transitions outbox in id order from the durable cursor, applies the
//! routes, and writes one delivery row per (transition, receiver) it decided on: `pending` to
//! send, `skipped` when the target stays quiet (a flap shorter than the route's `for`, an
//! acknowledgement that applies, a silence, a retired target). Decisions are rows, so replicas
//! and restarts never decide twice; the cursor only passes transitions decided for every route.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::model::lifecycle::Silence;
use crate::model::{HistoryFilter, Order, StatusFilter};
use crate::notify::config::{NotifyConfig, Receiver, ReceiverKind, Route};
use crate::notify::payload::{NotificationEvent, NotificationKind};
use crate::store::{Activity, NewDelivery, Store, StoreError, Transition};
use crate::timestamp::Timestamp;

/// Transitions read per pass.
const BATCH: i64 = 500;
/// Acknowledgements older than this when first seen (a notify file added to a server with
/// history) are not announced.
const TOO_OLD_MS: i64 = 3600 * 1000;

/// How long a hole in the transition ids may be waited for: on PostgreSQL a transaction that took
/// a lower id can commit after one that took a higher id, and the cursor must not pass its row.
/// A hole older than this is a rolled-back transaction's.
const GAP_GRACE: Duration = Duration::from_secs(30);

/// Holes in the transition ids the dispatcher has seen, and since when.
#[derive(Debug, Default)]
pub struct Gaps {
    first_seen: HashMap<i64, Instant>,
}

impl Gaps {
    /// Whether the cursor may pass the missing ids starting at `missing`.
    fn may_pass(&mut self, missing: i64) -> bool {
        self.first_seen
            .entry(missing)
            .or_insert_with(Instant::now)
            .elapsed()
            >= GAP_GRACE
    }

    fn forget_before(&mut self, position: i64) {
        self.first_seen.retain(|missing, _| *missing > position);
    }
}

/// What to do about one (transition, receiver).
enum Decision {
    /// Not decidable yet: the route's `for` has not passed, or the entering it ends is undecided.
    NotYet,
    Skip,
    Send(NotificationEvent),
}

/// Decides every transition it can; returns how many decisions it wrote.
pub async fn dispatch(
    store: &Store,
    config: &NotifyConfig,
    gaps: &mut Gaps,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let cursor = store.notify_cursor().await?;
    let rows = store.transitions_after(cursor, BATCH).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let decided: HashSet<(i64, String)> = store
        .delivery_decisions(cursor)
        .await?
        .into_iter()
        .map(|(transition, receiver, _)| (transition, receiver))
        .collect();
    let silences = store.silences(Activity::Active, now, 1000).await?;
    let mut written = 0;
    let mut through = cursor;
    let mut blocked = false;
    for row in &rows {
        if row.id > through + 1 && !blocked && !gaps.may_pass(through + 1) {
            blocked = true;
        }
        let mut complete = true;
        for (route, receiver) in routes_of(config, row) {
            if decided.contains(&(row.id, receiver.name.clone())) {
                continue;
            }
            let decision = decide(store, route, receiver, row, cursor, &silences, now).await?;
            let (status, body, kind) = match decision {
                Decision::NotYet => {
                    complete = false;
                    continue;
                }
                Decision::Skip => ("skipped", String::new(), kind_of(row)),
                Decision::Send(event) => (
                    "pending",
                    serde_json::to_string(&event).map_err(|error| {
                        StoreError::corrupt(format!("cannot encode an event: {error}"))
                    })?,
                    event.kind,
                ),
            };
            store
                .insert_delivery(&NewDelivery {
                    transition_id: row.id,
                    receiver: receiver.name.clone(),
                    reminder: 0,
                    event_id: event_id(row.id),
                    kind: kind.as_str().to_owned(),
                    status,
                    body,
                    created_at: now,
                })
                .await?;
            written += 1;
        }
        blocked |= !complete;
        if !blocked {
            through = row.id;
        }
    }
    if through > cursor {
        store.advance_notify_cursor(through).await?;
        gaps.forget_before(through);
    }
    Ok(written)
}

/// The event id every delivery of a transition carries.
pub fn event_id(transition_id: i64) -> String {
    format!("gitops-status-{transition_id}")
}

/// The first route per receiver that takes this transition.
fn routes_of<'a>(config: &'a NotifyConfig, row: &Transition) -> Vec<(&'a Route, &'a Receiver)> {
    let mut seen = BTreeSet::new();
    config
        .routes
        .iter()
        .filter(|route| route.matches(&row.repo, &row.server, &row.state))
        .filter(|route| seen.insert(route.receiver))
        .map(|route| (route, &config.receivers[route.receiver]))
        .collect()
}

fn kind_of(row: &Transition) -> NotificationKind {
    match row.kind.as_str() {
        "entered" => NotificationKind::Started,
        "left" => NotificationKind::Resolved,
        "ack" => NotificationKind::Acknowledged,
        _ => NotificationKind::AckEnded,
    }
}

async fn decide(
    store: &Store,
    route: &Route,
    receiver: &Receiver,
    row: &Transition,
    cursor: i64,
    silences: &[Silence],
    now: Timestamp,
) -> Result<Decision, StoreError> {
    let kind = kind_of(row);
    let event = |at_start: Option<i64>, files: Option<Vec<String>>| NotificationEvent {
        event_id: event_id(row.id),
        kind,
        state: row.state.clone(),
        repo: row.repo.clone(),
        server: row.server.clone(),
        at: Timestamp::from_millis(row.at),
        started_at: at_start.map(Timestamp::from_millis),
        duration_seconds: at_start.map(|start| (row.at - start) / 1000),
        files,
        link: NotificationEvent::link_to(&row.repo, &row.server),
    };
    let alertmanager = receiver.kind == ReceiverKind::Alertmanager;
    match kind {
        NotificationKind::Started => {
            let hold = i64::try_from(route.hold.as_millis()).unwrap_or(i64::MAX);
            let until = row.at.saturating_add(hold);
            if now.as_millis() < until {
                return Ok(Decision::NotYet);
            }
            if hold > 0
                && store
                    .left_within(row.target_id, &row.state, row.at, until)
                    .await?
            {
                return Ok(Decision::Skip);
            }
            if quiet(store, &row.repo, &row.server, silences, now, true).await? {
                return Ok(Decision::Skip);
            }
            Ok(Decision::Send(event(None, None)))
        }
        NotificationKind::Resolved => {
            let Some((entered_id, entered_at)) = store.entered_before(row).await? else {
                return Ok(Decision::Skip);
            };
            match store.delivery_decision(entered_id, &receiver.name).await? {
                Some(status) if status == "skipped" => Ok(Decision::Skip),
                Some(_) => {
                    let files = episode_files(store, row, entered_at).await?;
                    Ok(Decision::Send(event(Some(entered_at), Some(files))))
                }
                // Decided before this receiver was configured: it never heard of the start.
                None if entered_id <= cursor => Ok(Decision::Skip),
                None => Ok(Decision::NotYet),
            }
        }
        // Reminders are written by `notify::remind`, never for a transition.
        NotificationKind::Reminder => Ok(Decision::Skip),
        NotificationKind::Acknowledged | NotificationKind::AckEnded => {
            if alertmanager
                || row.at < now.as_millis() - TOO_OLD_MS
                || quiet(store, &row.repo, &row.server, silences, now, false).await?
            {
                return Ok(Decision::Skip);
            }
            Ok(Decision::Send(event(None, None)))
        }
    }
}

/// Whether the target stays quiet now: retired, silenced, or (with `acked`) under an
/// acknowledgement that applies.
pub(crate) async fn quiet(
    store: &Store,
    repo: &str,
    server: &str,
    silences: &[Silence],
    now: Timestamp,
    acked: bool,
) -> Result<bool, StoreError> {
    if silences
        .iter()
        .any(|silence| silence.is_active(now) && silence.covers(repo, server))
    {
        return Ok(true);
    }
    let filter = StatusFilter {
        repo: Some(repo.to_owned()),
        server: Some(server.to_owned()),
        ..StatusFilter::default()
    };
    let Some(latest) = store.latest(&filter).await?.pop() else {
        return Ok(false);
    };
    if latest.retired_at.is_some() {
        return Ok(true);
    }
    let files: Vec<&str> = latest
        .snapshot
        .files
        .iter()
        .map(|file| file.name.as_str())
        .collect();
    Ok(acked
        && latest
            .ack
            .as_deref()
            .is_some_and(|ack| ack.applies(now, latest.snapshot.sync_status, &files)))
}

/// Every file seen drifted between the entering and the leaving, sorted.
async fn episode_files(
    store: &Store,
    row: &Transition,
    entered_at: i64,
) -> Result<Vec<String>, StoreError> {
    let filter = HistoryFilter {
        repo: Some(row.repo.clone()),
        server: Some(row.server.clone()),
        from: Some(Timestamp::from_millis(entered_at)),
        to: Some(Timestamp::from_millis(row.at)),
        order: Order::Asc,
        ..HistoryFilter::default()
    };
    let mut files = BTreeSet::new();
    for snapshot in store.history_page(&filter, 1000).await? {
        files.extend(snapshot.files.into_iter().map(|file| file.name));
    }
    Ok(files.into_iter().collect())
}
