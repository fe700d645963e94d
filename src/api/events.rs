//! `GET /api/events`: every transition and lifecycle event as Server-Sent Events, as it
//! commits, resumable from any id the stream sent. Each stream follows the database on its own
//! (a poll every half second from its position), so it works the same behind any replica.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream;
use futures_util::{Stream, StreamExt as _};
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;

use super::AppState;
use crate::error::{ApiError, Result};
use crate::model::feed::{FeedCursor, FeedItem, FeedLagged, FeedWatch};
use crate::model::{FieldError, query};
use crate::store::{Store, StoreError};

/// How often a stream looks for new rows.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How often an idle stream sends a comment, so proxies keep the connection open.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);
/// Events read ahead for one client; rows beyond them stay in the database.
pub const BUFFER: usize = 256;
/// How long a full buffer may stay unread before the client is told it lags and the stream ends.
pub const LAG_GRACE: Duration = Duration::from_secs(5);
/// Header a reconnecting `EventSource` sends with the last id it received.
const LAST_EVENT_ID: &str = "last-event-id";

/// Query parameters of `GET /api/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// `false`: send what is stored after the position, then end (for scripts and dumps).
    /// Default `true`: then keep following.
    pub follow: Option<String>,
}

/// What the reading task hands the response.
enum Message {
    Item(FeedItem),
    /// The buffer stayed full: the client resumes from here.
    Lagged(FeedCursor),
    /// The database failed; the stream ends and the client reconnects from its last id.
    Failed,
}

/// Follow transitions, acknowledgements, silences and retirements as they happen.
///
/// A `text/event-stream` (Server-Sent Events). It opens with a `ready` event whose `id` is the
/// position it starts from. Then every change, in the order committed, is an event: `event` is
/// its `kind` (`entered` and `left` for a target entering or leaving OUT_OF_SYNC, ERROR or
/// STALE; `ack`, `ack_end`, `silence`, `silence_end`, `retire` and `revive` for the lifecycle's
/// chained events), `id` the position after it (`<transition id>-<event id>`), `data` a
/// `FeedItem` as JSON. A `: keep-alive` comment comes every 15 s.
///
/// Without `Last-Event-ID` the stream starts at the present; with one (as `EventSource` sends
/// when it reconnects, or `0-0` for everything stored) it first sends every event stored after
/// it. A client that leaves 256 events unread for 5 s gets a `lagged` event whose `id` (and
/// `data.cursor`) is the position to reconnect from, and the stream ends: nothing is skipped.
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "lifecycle",
    params(
        EventParams,
        ("Last-Event-ID" = Option<String>, Header,
         description = "Resume after this id of the stream (`<transition id>-<event id>`; `0-0`: from the start)"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events; each change's `data` is a `FeedItem`; `ready` and `lagged` carry `{\"cursor\": id}`",
         content_type = "text/event-stream", body = SseFrame),
        (status = 400, description = "`Last-Event-ID` or a query parameter is invalid; `errors` names it",
         body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn event_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    let mut errors = Vec::new();
    let params: EventParams = query::read_query(raw.as_deref(), &mut errors);
    let follow = match params.follow.as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(_) => {
            errors.push(FieldError::new("follow", "must be true or false"));
            true
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::InvalidQuery(errors));
    }
    let resume = last_event_id(&headers)?;
    let mut watch = FeedWatch::default();
    let start = match resume {
        Some(cursor) => cursor,
        None => present(&state.store, &mut watch).await?,
    };
    let (sender, receiver) = mpsc::channel(BUFFER);
    tokio::spawn(follow_feed(
        state.store.clone(),
        start,
        watch,
        follow,
        sender,
    ));
    let ready = Event::default()
        .event("ready")
        .id(start.to_string())
        .data(serde_json::json!({ "cursor": start.to_string() }).to_string());
    let events = stream::unfold(receiver, |mut receiver| async move {
        let event = match receiver.recv().await? {
            Message::Item(item) => Event::default()
                .event(item.kind.as_str())
                .id(item.cursor.to_string())
                .data(serde_json::to_string(&item).unwrap_or_default()),
            Message::Lagged(cursor) => Event::default()
                .event("lagged")
                .id(cursor.to_string())
                .data(
                    serde_json::to_string(&FeedLagged {
                        cursor: cursor.to_string(),
                    })
                    .unwrap_or_default(),
                ),
            Message::Failed => return None,
        };
        Some((Ok(event), receiver))
    })
    // A bare `unfold` panics when polled after its end; layers may poll once more.
    .fuse();
    let events = stream::once(async move { Ok(ready) }).chain(events);
    Ok(Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(KEEP_ALIVE_EVERY)
            .text("keep-alive"),
    ))
}

/// The position `Last-Event-ID` names, if the client sent one.
fn last_event_id(headers: &HeaderMap) -> Result<Option<FeedCursor>> {
    let Some(value) = headers.get(LAST_EVENT_ID) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(FeedCursor::parse)
        .map(Some)
        .ok_or_else(|| {
            ApiError::InvalidHeader(vec![FieldError::new(
                "Last-Event-ID",
                "must be an id this stream sent: `<transition id>-<event id>`, such as `12-340`",
            )])
        })
}

/// The present as a settled position: the end of what is committed, once every writer that
/// could still commit below it has finished.
async fn present(store: &Store, watch: &mut FeedWatch) -> Result<FeedCursor, StoreError> {
    loop {
        let (end, writers) = store.feed_end().await?;
        if let Some(settled) = watch.observe(end, writers) {
            return Ok(settled);
        }
        tokio::time::sleep(POLL_EVERY / 10).await;
    }
}

/// Reads the stream's rows from `start` into the client's buffer until the client goes away,
/// lags, or (`follow` false) the stored rows are sent.
async fn follow_feed(
    store: Store,
    start: FeedCursor,
    mut watch: FeedWatch,
    follow: bool,
    sender: mpsc::Sender<Message>,
) {
    let mut cursor = start;
    let mut settled = start;
    // Not following: the stored rows are those up to the present as the request found it.
    let end = if follow {
        None
    } else {
        match present(&store, &mut watch).await {
            Ok(end) => Some(end),
            Err(error) => {
                tracing::warn!(%error, "the event stream cannot read the database");
                let _ = sender.send(Message::Failed).await;
                return;
            }
        }
    };
    loop {
        let observed = match end {
            Some(end) => Ok(Some(end)),
            None => store
                .feed_end()
                .await
                .map(|(end, writers)| watch.observe(end, writers)),
        };
        let page = match observed {
            Ok(position) => {
                settled = position.unwrap_or(settled);
                // A table whose settled end is not past the cursor reads nothing.
                if settled.transition > cursor.transition || settled.event > cursor.event {
                    store.feed_page(cursor, settled, BUFFER).await
                } else {
                    Ok(Vec::new())
                }
            }
            Err(error) => Err(error),
        };
        let items = match page {
            Ok(items) => items,
            Err(error) => {
                tracing::warn!(%error, "the event stream cannot read the database");
                let _ = sender.send(Message::Failed).await;
                return;
            }
        };
        let caught_up = items.len() < BUFFER;
        for item in items {
            let position = item.cursor;
            match sender.send_timeout(Message::Item(item), LAG_GRACE).await {
                Ok(()) => cursor = position,
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    let _ = sender.send(Message::Lagged(cursor)).await;
                    return;
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => return,
            }
        }
        if caught_up {
            if !follow {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(POLL_EVERY) => {}
                () = sender.closed() => return,
            }
        }
    }
}

/// One Server-Sent Event as a client library reads it: `data` is a `FeedItem` as JSON for a
/// change, `{"cursor": id}` for `ready` and `lagged`.
#[derive(Debug, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "documents the stream's frames; the stream writes them itself"
)]
pub struct SseFrame {
    /// The stream position after this event (resume with `Last-Event-ID`).
    pub id: Option<String>,
    /// The item's `kind`, or `ready` / `lagged`.
    pub event: Option<String>,
    /// JSON: a `FeedItem`, or `{"cursor": id}`.
    pub data: String,
}
