//! What the rows the API reads (`acks`, `silences`, `targets.ack_id` and `targets.retired_at`)
//! must say, re-derived from the chained events as verification reads them, so an edit to those
//! rows behind the server's back does not go unnoticed: the chain protects the events, and this
//! ties the rows to the events. Memory follows the number of acknowledgements and silences.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::TargetHead;
use crate::chain::{EventFields, RecordKind};
use crate::timestamp::Timestamp;

/// An `acks` row, column for column (`ACKS_SQL`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AckRow {
    pub id: i64,
    pub target_id: i64,
    pub reason: String,
    pub by: String,
    pub files: Option<String>,
    pub created_at: i64,
    pub until: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub ended_by: Option<String>,
}

/// A `silences` row, column for column (`SILENCES_SQL`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SilenceRow {
    pub id: i64,
    pub repos: String,
    pub servers: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub reason: String,
    pub by: String,
    pub created_at: i64,
    pub deleted_at: Option<i64>,
    pub deleted_by: Option<String>,
}

/// An `ack` event's body.
#[derive(Debug, Deserialize)]
struct AckBody {
    reason: String,
    until: String,
    #[serde(default)]
    files: Option<Vec<String>>,
    by: String,
}

/// An `ack_end` event's body.
#[derive(Debug, Deserialize)]
struct AckEndBody {
    ack: i64,
    reason: String,
    #[serde(default)]
    by: Option<String>,
}

/// A `silence` event's body.
#[derive(Debug, Deserialize)]
struct SilenceBody {
    repos: Vec<String>,
    servers: Vec<String>,
    starts_at: String,
    ends_at: String,
    reason: String,
    by: String,
}

/// A `silence_end` event's body.
#[derive(Debug, Deserialize)]
struct SilenceEndBody {
    silence: i64,
    #[serde(default)]
    by: Option<String>,
}

/// What an acknowledgement's row must say.
#[derive(Debug)]
struct Ack {
    target: i64,
    reason: String,
    by: String,
    files: Option<Vec<String>>,
    created_at: i64,
    until: i64,
    /// `(ended_at, end_reason, ended_by)`.
    end: Option<(i64, String, Option<String>)>,
}

/// What a silence's row must say.
#[derive(Debug)]
struct Silence {
    repos: Vec<String>,
    servers: Vec<String>,
    starts_at: i64,
    ends_at: i64,
    reason: String,
    by: String,
    created_at: i64,
    /// `(deleted_at, deleted_by)`.
    end: Option<(i64, Option<String>)>,
}

/// The lifecycle as the chained events tell it.
#[derive(Debug, Default)]
pub(super) struct Lifecycle {
    /// By id; each leaves when its row is checked, so what remains has no row.
    acks: BTreeMap<i64, Ack>,
    silences: BTreeMap<i64, Silence>,
    /// Each target's acknowledgements made and not ended.
    open: HashMap<i64, BTreeSet<i64>>,
    /// Each target's last `retire` or `revive`: its id, and the time retired (`None`: revived).
    retirement: HashMap<i64, (i64, Option<i64>)>,
}

impl Lifecycle {
    /// Takes in the next event by id (`target` `None`: the fleet chain); an event that cannot
    /// be what its kind says (a body that does not parse, an end of nothing) is an error.
    pub(super) fn observe(
        &mut self,
        target: Option<i64>,
        fields: &EventFields<'_>,
    ) -> Result<(), String> {
        let id = fields.id;
        let at = fields.at.as_millis();
        match fields.kind {
            "ack" => {
                let target = on_target(target, fields)?;
                let body: AckBody = body(fields)?;
                self.acks.insert(
                    id,
                    Ack {
                        target,
                        until: time(&body.until, "until")?,
                        reason: body.reason,
                        by: body.by,
                        files: body.files,
                        created_at: at,
                        end: None,
                    },
                );
                self.open.entry(target).or_default().insert(id);
            }
            "ack_end" => {
                let target = on_target(target, fields)?;
                let body: AckEndBody = body(fields)?;
                let ack = self
                    .acks
                    .get_mut(&body.ack)
                    .filter(|ack| ack.target == target)
                    .ok_or_else(|| {
                        format!(
                            "it ends acknowledgement {}, which no earlier ack event of its target \
                             made",
                            body.ack
                        )
                    })?;
                if ack.end.is_some() {
                    return Err(format!(
                        "it ends acknowledgement {} a second time",
                        body.ack
                    ));
                }
                ack.end = Some((at, body.reason, body.by));
                if let Some(open) = self.open.get_mut(&target) {
                    open.remove(&body.ack);
                }
            }
            "silence" => {
                if target.is_some() {
                    return Err(
                        "a silence is recorded on the fleet chain, not on a target's".to_owned(),
                    );
                }
                let body: SilenceBody = body(fields)?;
                self.silences.insert(
                    id,
                    Silence {
                        starts_at: time(&body.starts_at, "starts_at")?,
                        ends_at: time(&body.ends_at, "ends_at")?,
                        repos: body.repos,
                        servers: body.servers,
                        reason: body.reason,
                        by: body.by,
                        created_at: at,
                        end: None,
                    },
                );
            }
            "silence_end" => {
                if target.is_some() {
                    return Err(
                        "a silence's end is recorded on the fleet chain, not on a target's"
                            .to_owned(),
                    );
                }
                let body: SilenceEndBody = body(fields)?;
                let silence = self.silences.get_mut(&body.silence).ok_or_else(|| {
                    format!(
                        "it ends silence {}, which no earlier silence event made",
                        body.silence
                    )
                })?;
                if silence.end.is_some() {
                    return Err(format!("it ends silence {} a second time", body.silence));
                }
                silence.end = Some((at, body.by));
            }
            "retire" | "revive" => {
                let target = on_target(target, fields)?;
                let _: serde_json::Map<String, serde_json::Value> = body(fields)?;
                let retired = (fields.kind == "retire").then_some(at);
                self.retirement.insert(target, (id, retired));
            }
            // A kind a newer server records: its hash was checked, its meaning is not known here.
            _ => {}
        }
        Ok(())
    }

    /// Checks an `acks` row against its events, and forgets them. Returns the target to name
    /// and what differs.
    pub(super) fn check_ack(&mut self, row: &AckRow) -> Option<(Option<i64>, String)> {
        let Some(ack) = self.acks.remove(&row.id) else {
            return Some((
                Some(row.target_id),
                "the acks row has no ack event of its id on the chain: it was added behind the \
                 server's back, or its event was removed"
                    .to_owned(),
            ));
        };
        let files = row
            .files
            .as_deref()
            .map(serde_json::from_str::<Option<Vec<String>>>);
        let (ended_at, end_reason, ended_by) = match ack.end {
            Some((at, reason, by)) => (Some(at), Some(reason), by),
            None => (None, None, None),
        };
        let differ = differences([
            ("target_id", row.target_id == ack.target),
            ("reason", row.reason == ack.reason),
            ("by", row.by == ack.by),
            (
                "files",
                match files {
                    None => ack.files.is_none(),
                    Some(Ok(files)) => files == ack.files,
                    Some(Err(_)) => false,
                },
            ),
            ("created_at", row.created_at == ack.created_at),
            ("until", row.until == ack.until),
            ("ended_at", row.ended_at == ended_at),
            ("end_reason", row.end_reason == end_reason),
            ("ended_by", row.ended_by == ended_by),
        ]);
        differ.map(|fields| {
            (
                Some(ack.target),
                format!(
                    "the acks row differs from its chained ack and ack_end events in {fields}: \
                     the row was edited behind the server's back"
                ),
            )
        })
    }

    /// Checks a `silences` row against its events, and forgets them.
    pub(super) fn check_silence(&mut self, row: &SilenceRow) -> Option<String> {
        let Some(silence) = self.silences.remove(&row.id) else {
            return Some(
                "the silences row has no silence event of its id on the fleet chain: it was \
                 added behind the server's back, or its event was removed"
                    .to_owned(),
            );
        };
        let list = |text: &str| serde_json::from_str::<Vec<String>>(text).ok();
        let (deleted_at, deleted_by) = match silence.end {
            Some((at, by)) => (Some(at), by),
            None => (None, None),
        };
        differences([
            ("repos", list(&row.repos) == Some(silence.repos)),
            ("servers", list(&row.servers) == Some(silence.servers)),
            ("starts_at", row.starts_at == silence.starts_at),
            ("ends_at", row.ends_at == silence.ends_at),
            ("reason", row.reason == silence.reason),
            ("by", row.by == silence.by),
            ("created_at", row.created_at == silence.created_at),
            ("deleted_at", row.deleted_at == deleted_at),
            ("deleted_by", row.deleted_by == deleted_by),
        ])
        .map(|fields| {
            format!(
                "the silences row differs from its chained silence and silence_end events in \
                 {fields}: the row was edited behind the server's back"
            )
        })
    }

    /// Checks a target's acknowledgement in force and retirement against its events: the id to
    /// name and what differs.
    pub(super) fn check_target(&self, target: &TargetHead) -> Option<(i64, String)> {
        let open = self.open.get(&target.id);
        let first_open = open.and_then(|open| open.first().copied());
        let acknowledged = match (target.ack_id, first_open) {
            (Some(ack), _) if !open.is_some_and(|open| open.contains(&ack)) => Some((
                ack,
                format!(
                    "the target's acknowledgement in force (ack_id {ack}) is not one its chain \
                     made and did not end: the targets row was edited behind the server's back"
                ),
            )),
            (None, Some(ack)) => Some((
                ack,
                format!(
                    "acknowledgement {ack} was made and not ended on the target's chain, but \
                     the targets row names none in force: it was edited behind the server's back"
                ),
            )),
            _ => None,
        };
        acknowledged.or_else(|| {
            let (id, retired) = self
                .retirement
                .get(&target.id)
                .copied()
                .unwrap_or((target.head_id.unwrap_or(0), None));
            (target.retired_at != retired).then(|| {
                let said = match retired {
                    Some(at) => format!("retired it at {}", Timestamp::from_millis(at)),
                    None => "did not leave it retired".to_owned(),
                };
                (
                    id,
                    format!(
                        "the targets row's retired_at disagrees with its chain, whose last \
                         retire or revive event {said}: the row was edited behind the server's \
                         back"
                    ),
                )
            })
        })
    }

    /// Acknowledgement and silence events whose rows were never checked, as they are named:
    /// `(id, target, record, reason)`.
    pub(super) fn rows_missing(&self) -> Vec<(i64, Option<i64>, RecordKind, String)> {
        let acks = self.acks.iter().map(|(id, ack)| {
            (
                *id,
                Some(ack.target),
                RecordKind::Ack,
                "the ack event has no acks row: the row was removed behind the server's back"
                    .to_owned(),
            )
        });
        let silences = self.silences.keys().map(|id| {
            (
                *id,
                None,
                RecordKind::Silence,
                "the silence event has no silences row: the row was removed behind the server's \
                 back"
                    .to_owned(),
            )
        });
        acks.chain(silences).collect()
    }
}

/// The names of the checks that failed, comma-separated; `None` when all passed.
fn differences<const N: usize>(checks: [(&str, bool); N]) -> Option<String> {
    let failed: Vec<&str> = checks
        .into_iter()
        .filter(|(_, equal)| !equal)
        .map(|(name, _)| name)
        .collect();
    (!failed.is_empty()).then(|| failed.join(", "))
}

fn on_target(target: Option<i64>, fields: &EventFields<'_>) -> Result<i64, String> {
    target.ok_or_else(|| {
        format!(
            "a {} event belongs on its target's chain, not on the fleet chain",
            fields.kind
        )
    })
}

fn body<T: DeserializeOwned>(fields: &EventFields<'_>) -> Result<T, String> {
    serde_json::from_str(fields.body).map_err(|error| {
        format!(
            "its body is not what a {} event holds: {error}",
            fields.kind
        )
    })
}

fn time(text: &str, name: &str) -> Result<i64, String> {
    Timestamp::parse_rfc3339(text)
        .map(Timestamp::as_millis)
        .ok_or_else(|| format!("its body's {name} is not an RFC 3339 time: {text:?}"))
}
