//! `/api/stats`: per target over a window, the time spent in each state, the drift episodes, how
//! long they took to resync and which files they touched. Pure functions over a target's history.

use std::collections::{BTreeSet, HashMap};

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::model::times::time_field;
use crate::model::{FieldError, SyncStatus, query};
use crate::timestamp::Timestamp;

/// The window when `from` is not given: the 30 days before `to`.
pub const DEFAULT_WINDOW_MILLIS: i64 = 30 * 24 * 3600 * 1000;
/// Most files listed in `top_files`.
pub const TOP_FILES: usize = 10;

/// Query parameters of `GET /api/stats`: the accepted names and their documentation;
/// `StatsRequest::from_query` validates the values.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Only targets of this repo (exact match).
    pub repo: Option<String>,
    /// Only targets on this server (exact match).
    pub server: Option<String>,
    /// Start of the window, inclusive: RFC 3339 or Unix milliseconds. Default: 30 days before `to`.
    pub from: Option<String>,
    /// End of the window, exclusive: RFC 3339 or Unix milliseconds. Default: now.
    pub to: Option<String>,
}

/// A validated `/api/stats` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsRequest {
    pub repo: Option<String>,
    pub server: Option<String>,
    pub from: Timestamp,
    pub to: Timestamp,
}

impl StatsRequest {
    pub fn from_query(raw: Option<&str>, now: Timestamp) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let params: StatsParams = query::read_query(raw, &mut errors);
        let repo = query::name_filter("repo", params.repo, &mut errors);
        let server = query::name_filter("server", params.server, &mut errors);
        let to = query::time("to", params.to, &mut errors).unwrap_or(now);
        let from = query::time("from", params.from, &mut errors)
            .unwrap_or(to.plus_millis(-DEFAULT_WINDOW_MILLIS));
        if from >= to {
            errors.push(FieldError::new("to", "must be after from"));
        }
        if errors.is_empty() {
            Ok(Self {
                repo,
                server,
                from,
                to,
            })
        } else {
            Err(errors)
        }
    }
}

/// What one target did over the window.
#[derive(Debug, Clone, PartialEq, ToSchema)]
pub struct TargetStats {
    #[schema(example = "rsyslog")]
    pub repo: String,
    #[schema(example = "rsyslog-lab")]
    pub server: String,
    #[schema(value_type = String, format = DateTime)]
    pub from: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub to: Timestamp,
    /// Snapshots with `last_check` in the window.
    pub checks: i64,
    /// Time in each state within the window. Time before the target's first snapshot, or after
    /// now, is in none.
    pub seconds: StateSeconds,
    /// Maximal runs of OUT_OF_SYNC snapshots that overlap the window, one begun before it
    /// included.
    pub drift_episodes: i64,
    /// Mean, over the episodes resolved before `to`, of the time from an episode's first
    /// OUT_OF_SYNC `last_check` to the next SYNCED one, rounded to milliseconds; null when none
    /// resolved.
    pub mean_time_to_resync_seconds: Option<f64>,
    /// The longest episode, an unresolved one counted up to `to`; null when there is none.
    pub longest_drift_seconds: Option<f64>,
    /// Files by the number of episodes that drifted them, at most 10.
    pub top_files: Vec<TopFile>,
}

/// The fields in the schema's order, each time followed by its `_ms` twin.
impl Serialize for TargetStats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("TargetStats", 12)?;
        out.serialize_field("repo", &self.repo)?;
        out.serialize_field("server", &self.server)?;
        time_field(&mut out, "from", "from_ms", self.from)?;
        time_field(&mut out, "to", "to_ms", self.to)?;
        out.serialize_field("checks", &self.checks)?;
        out.serialize_field("seconds", &self.seconds)?;
        out.serialize_field("drift_episodes", &self.drift_episodes)?;
        out.serialize_field(
            "mean_time_to_resync_seconds",
            &self.mean_time_to_resync_seconds,
        )?;
        out.serialize_field("longest_drift_seconds", &self.longest_drift_seconds)?;
        out.serialize_field("top_files", &self.top_files)?;
        out.end()
    }
}

/// Whole milliseconds as seconds: the nearest `f64`, which prints with at most three decimals
/// (`56.403`, `60.0`), always as a JSON number with a fraction.
fn seconds(millis: i64) -> f64 {
    millis as f64 / 1000.0
}

/// Milliseconds per state, summed exactly.
#[derive(Debug, Default)]
struct StateMillis {
    synced: i64,
    out_of_sync: i64,
    error: i64,
    stale: i64,
}

/// Seconds per state, rounded to milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct StateSeconds {
    #[serde(rename = "SYNCED")]
    pub synced: f64,
    #[serde(rename = "OUT_OF_SYNC")]
    pub out_of_sync: f64,
    #[serde(rename = "ERROR")]
    pub error: f64,
    /// Time beyond a snapshot's stale-after before the next snapshot arrived.
    #[serde(rename = "STALE")]
    pub stale: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TopFile {
    #[schema(example = "rsyslog.conf")]
    pub name: String,
    /// Drift episodes in which the file drifted.
    pub episodes: i64,
}

/// One snapshot as the statistics see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub last_check: Timestamp,
    pub sync_status: SyncStatus,
    /// The snapshot's own stale-after, if it carried one.
    pub stale_after_seconds: Option<i64>,
    /// Files, for OUT_OF_SYNC snapshots (the only ones episodes count).
    pub files: Vec<String>,
}

/// A target's history as a window needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHistory {
    pub repo: String,
    pub server: String,
    /// The last snapshot before `from`: the state the window starts in.
    pub before: Option<Carried>,
    /// Snapshots with `last_check` in `[from, to)`, by `last_check`.
    pub checks: Vec<Check>,
}

/// The last snapshot before the window, with, when it is OUT_OF_SYNC, where its episode began and
/// every file the episode drifted before the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    pub check: Check,
    pub episode_start: Timestamp,
    pub episode_files: Vec<String>,
}

/// An episode while it is being measured.
#[derive(Debug)]
struct Episode {
    start: i64,
    files: BTreeSet<String>,
}

/// Computes the statistics of one target over `[from, to)`; `now` caps the time counted.
pub fn compute(
    history: TargetHistory,
    from: Timestamp,
    to: Timestamp,
    now: Timestamp,
    default_stale_after_seconds: i64,
) -> TargetStats {
    let from_ms = from.as_millis();
    let end = to.as_millis().min(now.as_millis());
    let checks = history.checks.len() as i64;
    let carried_episode = history
        .before
        .as_ref()
        .filter(|carried| carried.check.sync_status == SyncStatus::OutOfSync)
        .map(|carried| Episode {
            start: carried.episode_start.as_millis(),
            files: carried.episode_files.iter().cloned().collect(),
        });
    let sequence: Vec<Check> = history
        .before
        .map(|carried| carried.check)
        .into_iter()
        .chain(history.checks)
        .collect();

    // Whole milliseconds until the end: a sum of f64 seconds prints float noise (56.403000000000006).
    let mut millis = StateMillis::default();
    for (index, check) in sequence.iter().enumerate() {
        let held_from = check.last_check.as_millis().max(from_ms);
        let held_until = sequence
            .get(index + 1)
            .map_or(end, |next| next.last_check.as_millis())
            .min(end);
        if held_from >= held_until {
            continue;
        }
        let stale_after = check
            .stale_after_seconds
            .unwrap_or(default_stale_after_seconds)
            .saturating_mul(1000);
        let fresh_until = check
            .last_check
            .as_millis()
            .saturating_add(stale_after)
            .clamp(held_from, held_until);
        *match check.sync_status {
            SyncStatus::Synced => &mut millis.synced,
            SyncStatus::OutOfSync => &mut millis.out_of_sync,
            SyncStatus::Error => &mut millis.error,
        } += fresh_until - held_from;
        millis.stale += held_until - fresh_until;
    }

    // Episodes, each with when it resolved (None: still open at `to`).
    let mut episodes: Vec<(Episode, Option<i64>)> = Vec::new();
    let mut open: Option<Episode> = None;
    for (index, check) in sequence.iter().enumerate() {
        match check.sync_status {
            SyncStatus::OutOfSync => {
                let episode = open.get_or_insert_with(|| match (&carried_episode, index) {
                    (Some(carried), 0) => Episode {
                        start: carried.start,
                        files: carried.files.clone(),
                    },
                    _ => Episode {
                        start: check.last_check.as_millis(),
                        files: BTreeSet::new(),
                    },
                });
                episode.files.extend(check.files.iter().cloned());
            }
            SyncStatus::Synced | SyncStatus::Error => {
                if let Some(episode) = open.take() {
                    episodes.push((episode, None));
                }
                if check.sync_status == SyncStatus::Synced {
                    // Every episode not yet resolved resyncs here, whatever came between.
                    for (_, resolved) in episodes.iter_mut().filter(|(_, r)| r.is_none()) {
                        *resolved = Some(check.last_check.as_millis());
                    }
                }
            }
        }
    }
    if let Some(episode) = open {
        episodes.push((episode, None));
    }

    let resolved: Vec<i64> = episodes
        .iter()
        .filter_map(|(episode, resolved)| resolved.map(|at| at - episode.start))
        .collect();
    let longest = episodes
        .iter()
        .map(|(episode, resolved)| resolved.unwrap_or(end) - episode.start)
        .max();
    let mut file_episodes: HashMap<&str, i64> = HashMap::new();
    for (episode, _) in &episodes {
        for name in &episode.files {
            *file_episodes.entry(name).or_default() += 1;
        }
    }
    let mut top_files: Vec<TopFile> = file_episodes
        .into_iter()
        .map(|(name, episodes)| TopFile {
            name: name.to_owned(),
            episodes,
        })
        .collect();
    top_files.sort_by(|a, b| b.episodes.cmp(&a.episodes).then(a.name.cmp(&b.name)));
    top_files.truncate(TOP_FILES);

    TargetStats {
        repo: history.repo,
        server: history.server,
        from,
        to,
        checks,
        seconds: StateSeconds {
            synced: seconds(millis.synced),
            out_of_sync: seconds(millis.out_of_sync),
            error: seconds(millis.error),
            stale: seconds(millis.stale),
        },
        drift_episodes: episodes.len() as i64,
        mean_time_to_resync_seconds: (!resolved.is_empty()).then(|| {
            let mean = resolved.iter().sum::<i64>() as f64 / resolved.len() as f64;
            seconds(mean.round() as i64)
        }),
        longest_drift_seconds: longest.map(seconds),
        top_files,
    }
}
