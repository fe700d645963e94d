//! The opaque keyset cursors of paginated resources: `/history` pages and `/api/episodes` pages.
//! Each is a version tag and two integers, base64url-encoded; the tag keeps one resource's cursor
//! from being taken for another's.

use super::Snapshot;
use crate::timestamp::Timestamp;

/// Position of the last row a page returned: the keyset `(last_check, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub last_check: Timestamp,
    pub id: i64,
}

impl Cursor {
    const VERSION: &'static str = "v1";

    /// The position right after `snapshot` in a page.
    pub fn after(snapshot: &Snapshot) -> Self {
        Self {
            last_check: snapshot.last_check,
            id: snapshot.id,
        }
    }

    /// Encodes the cursor as an opaque URL-safe token.
    pub fn encode(self) -> String {
        encode(Self::VERSION, self.last_check.as_millis(), self.id)
    }

    pub fn decode(token: &str) -> Option<Self> {
        let (last_check, id) = decode(Self::VERSION, token)?;
        Some(Self {
            last_check: Timestamp::from_millis(last_check),
            id,
        })
    }
}

/// Position of the last episode a page of `/api/episodes` returned: the keyset
/// `(started_at, first_snapshot_id)`, unique since a target's episodes start at distinct times
/// and snapshot ids are unique across targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EpisodeCursor {
    pub started_at: Timestamp,
    pub first_snapshot_id: i64,
}

impl EpisodeCursor {
    const VERSION: &'static str = "e1";

    pub fn encode(self) -> String {
        encode(
            Self::VERSION,
            self.started_at.as_millis(),
            self.first_snapshot_id,
        )
    }

    pub fn decode(token: &str) -> Option<Self> {
        let (started_at, first_snapshot_id) = decode(Self::VERSION, token)?;
        Some(Self {
            started_at: Timestamp::from_millis(started_at),
            first_snapshot_id,
        })
    }
}

fn encode(version: &str, first: i64, second: i64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{version}.{first}.{second}"))
}

fn decode(version: &str, token: &str) -> Option<(i64, i64)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let plain = String::from_utf8(bytes).ok()?;
    let mut parts = plain.split('.');
    if parts.next()? != version {
        return None;
    }
    let first = parts.next()?.parse().ok()?;
    let second = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((first, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_forgeries() {
        let cursor = Cursor {
            last_check: Timestamp::from_millis(1_776_767_400_000),
            id: 42,
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        for forged in ["", "abc", "djEuMS4y.3", "djIuMS4y", "djEuMS4yLjM"] {
            assert_eq!(Cursor::decode(forged), None, "{forged}");
        }
    }

    #[test]
    fn an_episode_cursor_is_not_a_history_cursor() {
        let cursor = EpisodeCursor {
            started_at: Timestamp::from_millis(-5),
            first_snapshot_id: 7,
        };
        assert_eq!(EpisodeCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::decode(&cursor.encode()), None);
        let history = Cursor {
            last_check: Timestamp::from_millis(1),
            id: 2,
        };
        assert_eq!(EpisodeCursor::decode(&history.encode()), None);
    }
}
