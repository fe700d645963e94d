//! `GET /status.json`'s rows and filters, and the query that names one target.

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::lifecycle::{Ack, AckSummary};
use super::times::time_field;
use super::{FieldError, FileEntry, Snapshot, SyncStatus, query};
use crate::timestamp::Timestamp;

/// What a dashboard shows for a target: its last `sync_status`, or `STALE` when no check arrived
/// within the target's stale-after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TargetState {
    Synced,
    OutOfSync,
    Error,
    Stale,
}

impl TargetState {
    pub const ALL: [Self; 4] = [Self::Synced, Self::OutOfSync, Self::Error, Self::Stale];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Synced => "SYNCED",
            Self::OutOfSync => "OUT_OF_SYNC",
            Self::Error => "ERROR",
            Self::Stale => "STALE",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }
}

impl From<SyncStatus> for TargetState {
    fn from(status: SyncStatus) -> Self {
        match status {
            SyncStatus::Synced => Self::Synced,
            SyncStatus::OutOfSync => Self::OutOfSync,
            SyncStatus::Error => Self::Error,
        }
    }
}

/// The latest snapshot of one target, as `/status.json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct StatusRow {
    #[schema(example = "rsyslog")]
    pub repo: String,
    #[schema(example = "rsyslog-lab")]
    pub server: String,
    /// `sync_status`, or `STALE` when the last check is older than the target's stale-after.
    pub state: TargetState,
    pub sync_status: SyncStatus,
    pub stale: bool,
    /// 1 when `state` is `SYNCED` (the last check found no drift and is fresh), else 0: a number
    /// a Grafana alert rule can compare.
    #[schema(minimum = 0, maximum = 1)]
    pub in_sync: u8,
    pub drift_count: i64,
    /// Whole seconds since the target went stale (`stale_since`), 0 while it is fresh. It grows
    /// with the clock, so the answer (and its `ETag`) changes every second while a target is
    /// stale.
    #[schema(minimum = 0)]
    pub stale_seconds: i64,
    pub files: Vec<FileEntry>,
    #[schema(example = "rsyslog.conf, rsyslog.d/30-lab.conf")]
    pub files_text: String,
    #[schema(value_type = String, format = DateTime, example = "2026-04-21T10:30:00.000Z")]
    pub last_check: Timestamp,
    #[schema(value_type = String, format = DateTime, example = "2026-04-21T10:30:01.204Z")]
    pub received_at: Timestamp,
    /// Start of the current unbroken run of this `sync_status`.
    #[schema(value_type = String, format = DateTime, example = "2026-04-21T09:58:00.000Z")]
    pub status_since: Timestamp,
    /// When the target went stale (`last_check` plus its stale-after); null unless `stale`.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub stale_since: Option<Timestamp>,
    /// Id of the snapshot shown.
    pub snapshot_id: i64,
    /// The stale-after in force for this target: its own override or the server's default.
    pub stale_after_seconds: i64,
    pub revision: Option<String>,
    pub run_url: Option<String>,
    pub message: Option<String>,
    /// The acknowledgement that covers this target's drift now (SPEC "Drift lifecycle"); null
    /// when none applies. `state` is unchanged by it.
    pub acknowledged: Option<AckSummary>,
}

/// The fields in the schema's order, each time followed by its `_ms` twin.
impl Serialize for StatusRow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("StatusRow", 24)?;
        out.serialize_field("repo", &self.repo)?;
        out.serialize_field("server", &self.server)?;
        out.serialize_field("state", &self.state)?;
        out.serialize_field("sync_status", &self.sync_status)?;
        out.serialize_field("stale", &self.stale)?;
        out.serialize_field("in_sync", &self.in_sync)?;
        out.serialize_field("drift_count", &self.drift_count)?;
        out.serialize_field("stale_seconds", &self.stale_seconds)?;
        out.serialize_field("files", &self.files)?;
        out.serialize_field("files_text", &self.files_text)?;
        time_field(&mut out, "last_check", "last_check_ms", self.last_check)?;
        time_field(&mut out, "received_at", "received_at_ms", self.received_at)?;
        time_field(
            &mut out,
            "status_since",
            "status_since_ms",
            self.status_since,
        )?;
        time_field(&mut out, "stale_since", "stale_since_ms", self.stale_since)?;
        out.serialize_field("snapshot_id", &self.snapshot_id)?;
        out.serialize_field("stale_after_seconds", &self.stale_after_seconds)?;
        out.serialize_field("revision", &self.revision)?;
        out.serialize_field("run_url", &self.run_url)?;
        out.serialize_field("message", &self.message)?;
        out.serialize_field("acknowledged", &self.acknowledged)?;
        out.end()
    }
}

impl StatusRow {
    /// Builds the row from the target's latest snapshot, judging staleness at `now`.
    pub fn new(
        latest: Snapshot,
        status_since: Timestamp,
        ack: Option<&Ack>,
        now: Timestamp,
        default_stale_after_seconds: i64,
    ) -> Self {
        let acknowledged = ack
            .filter(|ack| {
                let files: Vec<&str> = latest.file_names().collect();
                ack.applies(now, latest.sync_status, &files)
            })
            .map(Ack::summary);
        let stale_after_seconds = latest
            .stale_after_seconds
            .unwrap_or(default_stale_after_seconds);
        let age_millis = now
            .as_millis()
            .saturating_sub(latest.last_check.as_millis());
        let stale = age_millis > stale_after_seconds.saturating_mul(1000);
        let stale_since = stale.then(|| {
            latest
                .last_check
                .plus_millis(stale_after_seconds.saturating_mul(1000))
        });
        let stale_seconds = stale_since.map_or(0, |since| {
            now.as_millis().saturating_sub(since.as_millis()).max(0) / 1000
        });
        let state = if stale {
            TargetState::Stale
        } else {
            latest.sync_status.into()
        };
        Self {
            repo: latest.repo,
            server: latest.server,
            in_sync: u8::from(state == TargetState::Synced),
            state,
            sync_status: latest.sync_status,
            stale,
            drift_count: latest.drift_count,
            stale_seconds,
            files: latest.files,
            files_text: latest.files_text,
            last_check: latest.last_check,
            received_at: latest.received_at,
            status_since,
            stale_since,
            snapshot_id: latest.id,
            stale_after_seconds,
            revision: latest.revision,
            run_url: latest.run_url,
            message: latest.message,
            acknowledged,
        }
    }
}

/// The first instant after `now` at which the clock alone changes the row [`StatusRow::new`]
/// builds from the same arguments: the target going stale (`stale`, `state`, `in_sync`,
/// `stale_since`), a stale target's `stale_seconds` gaining a second, or the acknowledgement in
/// force reaching `until`. Until then, the row built at any instant is the row built at `now`.
pub fn next_clock_change(
    latest: &Snapshot,
    ack: Option<&Ack>,
    now: Timestamp,
    default_stale_after_seconds: i64,
) -> Timestamp {
    let stale_after_millis = latest
        .stale_after_seconds
        .unwrap_or(default_stale_after_seconds)
        .saturating_mul(1000);
    let stale_since = latest.last_check.plus_millis(stale_after_millis);
    // Stale once the age exceeds the stale-after: from the millisecond after `stale_since`.
    let staleness = if now <= stale_since {
        stale_since.plus_millis(1)
    } else {
        let stale_seconds = now.as_millis().saturating_sub(stale_since.as_millis()) / 1000;
        stale_since.plus_millis(stale_seconds.saturating_add(1).saturating_mul(1000))
    };
    match ack.filter(|ack| ack.in_force(now)) {
        Some(ack) => staleness.min(ack.until),
        None => staleness,
    }
}

/// Query parameters of `GET /status.json`: the accepted names and their documentation;
/// `StatusFilter::from_query` validates the values.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusParams {
    /// Only targets of this repo (exact match).
    pub repo: Option<String>,
    /// Only targets on this server (exact match).
    pub server: Option<String>,
    /// Only targets in these states, comma-separated: `SYNCED`, `OUT_OF_SYNC`, `ERROR`, `STALE`.
    #[param(example = "OUT_OF_SYNC,STALE")]
    pub state: Option<String>,
    /// Only targets whose latest check had these results, comma-separated: `SYNCED`,
    /// `OUT_OF_SYNC`, `ERROR`. Unlike `state`, a stale target is selected by its last result.
    #[param(example = "OUT_OF_SYNC,ERROR")]
    pub sync_status: Option<String>,
}

/// The filters of `GET /status.json`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusFilter {
    pub repo: Option<String>,
    pub server: Option<String>,
    /// Empty means every state.
    pub states: Vec<TargetState>,
    /// Empty means every result of the latest check.
    pub sync_statuses: Vec<SyncStatus>,
}

impl StatusFilter {
    pub fn from_query(raw: Option<&str>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let params: StatusParams = query::read_query(raw, &mut errors);
        let filter = Self {
            repo: query::name_filter("repo", params.repo, &mut errors),
            server: query::name_filter("server", params.server, &mut errors),
            states: query::list(
                "state",
                params.state,
                TargetState::parse,
                "SYNCED, OUT_OF_SYNC, ERROR, STALE",
                &mut errors,
            ),
            sync_statuses: query::list(
                "sync_status",
                params.sync_status,
                SyncStatus::parse,
                "SYNCED, OUT_OF_SYNC, ERROR",
                &mut errors,
            ),
        };
        if errors.is_empty() {
            Ok(filter)
        } else {
            Err(errors)
        }
    }

    /// Whether `row` passes the state and result filters (repo and server select in the store).
    pub fn selects(&self, row: &StatusRow) -> bool {
        (self.states.is_empty() || self.states.contains(&row.state))
            && (self.sync_statuses.is_empty() || self.sync_statuses.contains(&row.sync_status))
    }
}

/// Query parameters that name one target: `GET /badge.svg` and the status page's target view.
/// The accepted names and their documentation; `TargetKey::from_query` validates the values.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TargetParams {
    /// The target's repo (exact match).
    #[param(example = "rsyslog", value_type = String, required = true)]
    pub repo: Option<String>,
    /// The target's server (exact match).
    #[param(example = "rsyslog-lab", value_type = String, required = true)]
    pub server: Option<String>,
}

/// One target, named by a query string with both `repo` and `server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetKey {
    pub repo: String,
    pub server: String,
}

impl TargetKey {
    pub fn from_query(raw: Option<&str>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let params: TargetParams = query::read_query(raw, &mut errors);
        let key = Self::required(params.repo, params.server, &mut errors);
        if errors.is_empty() {
            Ok(key)
        } else {
            Err(errors)
        }
    }

    /// The target named by both `repo` and `server`, each required and checked as a name.
    fn required(
        repo: Option<String>,
        server: Option<String>,
        errors: &mut Vec<FieldError>,
    ) -> Self {
        let mut required = |name: &str, value: Option<String>| {
            let value = query::name_filter(name, value, errors);
            if value.is_none() {
                errors.push(FieldError::new(name, "is required"));
            }
            value.unwrap_or_default()
        };
        Self {
            repo: required("repo", repo),
            server: required("server", server),
        }
    }

    /// The `/status.json` filter that selects exactly this target.
    pub fn status_filter(&self) -> StatusFilter {
        StatusFilter {
            repo: Some(self.repo.clone()),
            server: Some(self.server.clone()),
            states: Vec::new(),
            sync_statuses: Vec::new(),
        }
    }

    /// The query string that names this target, percent-encoded: `repo=...&server=...`.
    pub fn to_query(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("repo", &self.repo)
            .append_pair("server", &self.server)
            .finish()
    }
}

/// Query parameters of `GET /badge.svg`: the target, and what the badge's left half names.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BadgeParams {
    /// The target's repo (exact match).
    #[param(example = "rsyslog", value_type = String, required = true)]
    pub repo: Option<String>,
    /// The target's server (exact match).
    #[param(example = "rsyslog-lab", value_type = String, required = true)]
    pub server: Option<String>,
    /// What the left half says: `server` (the default), `repo`, or `target` for `repo / server`.
    #[param(pattern = "^(server|repo|target)$", example = "target")]
    pub label: Option<String>,
}

/// What the left half of a badge names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BadgeLabel {
    #[default]
    Server,
    Repo,
    Target,
}

impl BadgeLabel {
    /// The badge's target and label, validated: every bad parameter named at once.
    pub fn from_query(raw: Option<&str>) -> Result<(TargetKey, Self), Vec<FieldError>> {
        let mut errors = Vec::new();
        let params: BadgeParams = query::read_query(raw, &mut errors);
        let target = TargetKey::required(params.repo, params.server, &mut errors);
        let label = match params.label.as_deref() {
            None | Some("server") => Self::Server,
            Some("repo") => Self::Repo,
            Some("target") => Self::Target,
            Some(_) => {
                errors.push(FieldError::new("label", "must be server, repo or target"));
                Self::Server
            }
        };
        if errors.is_empty() {
            Ok((target, label))
        } else {
            Err(errors)
        }
    }

    /// The left half's text for `target`.
    pub fn text(self, target: &TargetKey) -> String {
        match self {
            Self::Server => target.server.clone(),
            Self::Repo => target.repo.clone(),
            Self::Target => format!("{} / {}", target.repo, target.server),
        }
    }
}
