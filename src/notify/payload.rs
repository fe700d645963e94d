//! What receivers get: the documented webhook event (stored with the delivery, so every attempt
//! posts the same bytes), and its Slack and Alertmanager renderings.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use utoipa::ToSchema;

use crate::timestamp::Timestamp;

/// What happened to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// The target entered `state` (and, with a route's `for`, stayed in it that long).
    Started,
    /// The target left `state`: `started_at`, `duration_seconds` and `files` describe the episode.
    Resolved,
    /// Someone acknowledged the target's drift.
    Acknowledged,
    /// The acknowledgement ended (expired, deleted, replaced).
    AckEnded,
    /// The target is still in `state` (a route's `repeat`): `started_at` and `duration_seconds`
    /// say since when.
    Reminder,
}

impl NotificationKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Resolved => "resolved",
            Self::Acknowledged => "acknowledged",
            Self::AckEnded => "ack_ended",
            Self::Reminder => "reminder",
        }
    }
}

/// The JSON a `webhook` receiver is posted, with headers `X-GitOps-Event-Id` (the `event_id`,
/// the same on every retry) and, when the receiver has a `secret`, `X-GitOps-Signature:
/// sha256=<hex HMAC-SHA256 of the body keyed with the secret>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NotificationEvent {
    /// Stable id of the event: receivers deduplicate retries by it.
    #[schema(example = "gitops-status-42")]
    pub event_id: String,
    pub kind: NotificationKind,
    /// The state entered or left (`OUT_OF_SYNC`, `ERROR`, `STALE`); for acknowledgements, the
    /// target's latest check result.
    #[schema(example = "OUT_OF_SYNC")]
    pub state: String,
    pub repo: String,
    pub server: String,
    /// When it happened.
    #[schema(value_type = String, format = DateTime)]
    #[serde(deserialize_with = "rfc3339")]
    pub at: Timestamp,
    /// `resolved` and `reminder`: when the episode began.
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(deserialize_with = "optional_rfc3339")]
    pub started_at: Option<Timestamp>,
    /// `resolved`: how long the episode lasted; `reminder`: how long it has lasted so far.
    pub duration_seconds: Option<i64>,
    /// `resolved` only: every file seen drifted during the episode, sorted.
    pub files: Option<Vec<String>>,
    /// The target's page, relative to the server's address.
    #[schema(example = "/target?repo=rsyslog&server=lab")]
    pub link: String,
}

impl NotificationEvent {
    /// The target page's path and query.
    pub fn link_to(repo: &str, server: &str) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("repo", repo)
            .append_pair("server", server)
            .finish();
        format!("/target?{query}")
    }

    fn headline(&self) -> String {
        let target = format!("{}/{}", self.repo, self.server);
        match self.kind {
            NotificationKind::Started => format!("{target} is {}", self.state),
            NotificationKind::Resolved => format!(
                "{target} is no longer {} (after {}s)",
                self.state,
                self.duration_seconds.unwrap_or(0)
            ),
            NotificationKind::Acknowledged => format!("{target}: drift acknowledged"),
            NotificationKind::AckEnded => {
                format!("{target}: acknowledgement ended, still {}", self.state)
            }
            NotificationKind::Reminder => format!(
                "{target} is still {} (for {}s)",
                self.state,
                self.duration_seconds.unwrap_or(0)
            ),
        }
    }

    /// A Slack incoming-webhook message.
    pub fn slack(&self) -> Value {
        let mut text = format!(
            "{} at {} (<{}|details>)",
            self.headline(),
            self.at,
            self.link
        );
        if let Some(files) = self.files.as_ref().filter(|files| !files.is_empty()) {
            text.push_str(&format!("\nFiles: {}", files.join(", ")));
        }
        json!({
            "text": self.headline(),
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        })
    }

    /// Alertmanager's `POST /api/v2/alerts` body sent at `now`, or `None` for events it has no
    /// use for (acknowledgements: Alertmanager has its own silences). A firing alert ends at
    /// `now + hold` unless it is sent again before: the episode's alert is re-sent while it lasts
    /// (see `notify::alerts`), so it resolves by itself if this server stops for good.
    pub fn alertmanager(&self, now: Timestamp, hold: std::time::Duration) -> Option<Value> {
        let hold = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
        let (starts_at, ends_at) = match self.kind {
            NotificationKind::Started => (self.at, now.plus_millis(hold)),
            NotificationKind::Reminder => {
                (self.started_at.unwrap_or(self.at), now.plus_millis(hold))
            }
            NotificationKind::Resolved => (self.started_at.unwrap_or(self.at), self.at),
            NotificationKind::Acknowledged | NotificationKind::AckEnded => return None,
        };
        Some(json!([{
            "labels": {
                "alertname": "GitOpsDrift",
                "repo": self.repo,
                "server": self.server,
                "state": self.state,
            },
            "annotations": {"summary": self.headline(), "link": self.link},
            "startsAt": starts_at.to_string(),
            "endsAt": ends_at.to_string(),
        }]))
    }
}

fn rfc3339<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
    let text = String::deserialize(deserializer)?;
    Timestamp::parse_rfc3339(&text)
        .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time")))
}

fn optional_rfc3339<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Timestamp>, D::Error> {
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(None),
        Some(text) => Timestamp::parse_rfc3339(&text)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time"))),
    }
}

/// `sha256=<hex HMAC-SHA256 of body keyed with secret>`, the `X-GitOps-Signature` value.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_rfc_4231() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn links_escape_names() {
        assert_eq!(
            NotificationEvent::link_to("a b", "x&y"),
            "/target?repo=a+b&server=x%26y"
        );
    }
}
