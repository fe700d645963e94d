//! The opaque keyset cursor of `/history` pages.

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
        use base64::Engine as _;
        let plain = format!(
            "{}.{}.{}",
            Self::VERSION,
            self.last_check.as_millis(),
            self.id
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(plain)
    }

    pub fn decode(token: &str) -> Option<Self> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()?;
        let plain = String::from_utf8(bytes).ok()?;
        let mut parts = plain.split('.');
        if parts.next()? != Self::VERSION {
            return None;
        }
        let last_check = Timestamp::from_millis(parts.next()?.parse().ok()?);
        let id = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Self { last_check, id })
    }
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
}
