//! `GET /api/events`' wire types: the stream's resume position and the event it sends for every
//! stored transition (the notifications' outbox) and chained lifecycle event.

use std::fmt;

use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};
use utoipa::ToSchema;

use super::times::time_field;
use crate::timestamp::Timestamp;

/// A position in the stream: the last transition and the last chained event sent. The two
/// tables keep their own ids, so a position names both; it is the SSE `id` of every event and
/// what `Last-Event-ID` gives back, written `<transition id>-<event id>` (`0-0`: the start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedCursor {
    pub transition: i64,
    pub event: i64,
}

impl FeedCursor {
    /// Reads `<transition id>-<event id>`: two non-negative decimal integers.
    pub fn parse(text: &str) -> Option<Self> {
        let (transition, event) = text.split_once('-')?;
        let number = |part: &str| {
            part.bytes()
                .all(|byte| byte.is_ascii_digit())
                .then(|| part.parse::<i64>().ok())
                .flatten()
        };
        Some(Self {
            transition: number(transition)?,
            event: number(event)?,
        })
    }
}

impl fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.transition, self.event)
    }
}

/// Which table an item comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeedSource {
    /// The notifications' outbox: a target entering or leaving OUT_OF_SYNC, ERROR or STALE.
    Transition,
    /// The integrity chain: an acknowledgement, its end, a silence, its end, a retirement, a
    /// revival.
    Event,
}

/// One item of `GET /api/events`, the `data` of its SSE event (whose `event` is `kind` and whose
/// `id` is `cursor`).
#[derive(Debug, Clone, PartialEq, ToSchema)]
#[schema(example = json!({
    "cursor": "12-340",
    "source": "transition",
    "repo": "rsyslog",
    "server": "rsyslog-lab",
    "kind": "entered",
    "state": "OUT_OF_SYNC",
    "at": "2026-12-03T14:00:00.000Z",
    "at_ms": 1_796_306_400_000_i64,
    "record_id": 339,
    "body": null
}))]
pub struct FeedItem {
    /// The stream position right after this item: resume from here with `Last-Event-ID`.
    #[schema(value_type = String, example = "12-340")]
    pub cursor: FeedCursor,
    /// Absent (like every field but `cursor`) in the `ready` and `lagged` events.
    #[schema(required = false)]
    pub source: FeedSource,
    /// Null for the fleet chain (silences).
    pub repo: Option<String>,
    pub server: Option<String>,
    /// Transitions: `entered` or `left`. Events: `ack`, `ack_end`, `silence`, `silence_end`,
    /// `retire` or `revive`.
    #[schema(required = false)]
    pub kind: String,
    /// Transitions: the state entered or left (`OUT_OF_SYNC`, `ERROR`, `STALE`). Null for events.
    pub state: Option<String>,
    /// When it happened: the snapshot's `last_check`, the event's time, when the target went
    /// stale.
    #[schema(value_type = String, format = DateTime, required = false)]
    pub at: Timestamp,
    /// Transitions: the snapshot or event that caused it (null for STALE found by the clock).
    /// Events: the event's own id on the chain.
    pub record_id: Option<i64>,
    /// Events: their chained body (e.g. an acknowledgement's `reason`, `until`, `files`, `by`);
    /// null for transitions.
    #[schema(value_type = Option<Object>)]
    pub body: Option<serde_json::Value>,
}

impl Serialize for FeedItem {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("FeedItem", 10)?;
        out.serialize_field("cursor", &self.cursor.to_string())?;
        out.serialize_field("source", &self.source)?;
        out.serialize_field("repo", &self.repo)?;
        out.serialize_field("server", &self.server)?;
        out.serialize_field("kind", &self.kind)?;
        out.serialize_field("state", &self.state)?;
        time_field(&mut out, "at", "at_ms", self.at)?;
        out.serialize_field("record_id", &self.record_id)?;
        out.serialize_field("body", &self.body)?;
        out.end()
    }
}

/// `data` of the `lagged` event: the client left too many events unread and the stream ended.
#[derive(Debug, Clone, Serialize)]
pub struct FeedLagged {
    /// Reconnect with this as `Last-Event-ID` (it is also the event's `id`): nothing after it
    /// was sent.
    pub cursor: String,
}

/// Where the stream may read up to: every transition and event at or below a settled position
/// is committed or never will be. SQLite commits in id order (one writer), so what it holds is
/// settled at once. PostgreSQL writers commit concurrently, so a row may commit after one with a
/// greater id: a position read while writers were in flight settles once every one of them has
/// finished (each holds the shared write lock from before it draws an id until it commits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedWatch {
    /// The latest position read while writers were in flight, and those writers.
    pending: Option<(FeedCursor, Vec<String>)>,
}

impl FeedWatch {
    /// Takes an observation (the greatest committed ids, then the writers in flight) and returns
    /// the furthest position now settled, if any became so.
    pub fn observe(&mut self, end: FeedCursor, writers: Vec<String>) -> Option<FeedCursor> {
        if writers.is_empty() {
            self.pending = None;
            return Some(end);
        }
        match self.pending.take() {
            Some((settled, before)) if before.iter().all(|writer| !writers.contains(writer)) => {
                self.pending = Some((end, writers));
                Some(settled)
            }
            // Keep waiting on the older position: replacing it under a steady load would never
            // settle anything.
            Some(waiting) => {
                self.pending = Some(waiting);
                None
            }
            None => {
                self.pending = Some((end, writers));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let cursor = FeedCursor {
            transition: 12,
            event: 340,
        };
        assert_eq!(cursor.to_string(), "12-340");
        assert_eq!(FeedCursor::parse("12-340"), Some(cursor));
        assert_eq!(FeedCursor::parse("0-0"), Some(FeedCursor::default()));
    }

    fn at(transition: i64, event: i64) -> FeedCursor {
        FeedCursor { transition, event }
    }

    fn writers(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn without_writers_in_flight_the_end_is_settled() {
        let mut watch = FeedWatch::default();
        assert_eq!(watch.observe(at(3, 9), Vec::new()), Some(at(3, 9)));
    }

    #[test]
    fn a_position_settles_when_its_writers_are_gone() {
        let mut watch = FeedWatch::default();
        assert_eq!(watch.observe(at(3, 9), writers(&["4/1", "5/7"])), None);
        // 5/7 is still writing; 6/2 started since: keep waiting on (3, 9).
        assert_eq!(watch.observe(at(4, 12), writers(&["5/7", "6/2"])), None);
        // Both writers of (3, 9) have finished; (5, 15) waits on 6/2 now.
        assert_eq!(watch.observe(at(5, 15), writers(&["6/2"])), Some(at(3, 9)));
        assert_eq!(watch.observe(at(5, 15), Vec::new()), Some(at(5, 15)));
    }

    #[test]
    fn cursor_refuses_anything_else() {
        for text in [
            "",
            "12",
            "-1-2",
            "1--2",
            "1-+2",
            "a-1",
            "1-2-3",
            "99999999999999999999-1",
        ] {
            assert_eq!(FeedCursor::parse(text), None, "{text}");
        }
    }
}
