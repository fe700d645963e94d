//! `/api/stats`: over a window, the time each target spent in each state (and how much of it was
//! acknowledged or silenced), its drift episodes, how long they took to resync and which files
//! they touched; per target, or summed per repo, per server or over all (`group_by`). Pure
//! functions over targets' histories.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wildmatch::WildMatch;

use crate::model::times::time_field;
use crate::model::{FieldError, SyncStatus, TargetState, query};
use crate::rollups::DayTotals;
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
    /// What a row covers: `target` (the default; named by `repo` and `server`), `repo` (named by
    /// `repo`), `server` (named by `server`) or `all` (one row, named by neither). A group's
    /// numbers are its targets' taken together.
    #[param(pattern = "^(target|repo|server|all)$")]
    pub group_by: Option<String>,
    /// `json` (the default) or `csv` (`text/csv`: a header row, then a line per row of the JSON
    /// answer).
    #[param(pattern = "^(json|csv)$")]
    pub format: Option<String>,
}

/// What one row of `/api/stats` covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupBy {
    /// One target.
    #[default]
    Target,
    /// Every target of one repo.
    Repo,
    /// Every target on one server.
    Server,
    /// Every selected target.
    All,
}

impl GroupBy {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "target" => Some(Self::Target),
            "repo" => Some(Self::Repo),
            "server" => Some(Self::Server),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    /// Whether a row names its repo.
    pub fn names_repo(self) -> bool {
        matches!(self, Self::Target | Self::Repo)
    }

    /// Whether a row names its server.
    pub fn names_server(self) -> bool {
        matches!(self, Self::Target | Self::Server)
    }

    /// The name of the row a target of `repo` on `server` is counted in.
    fn key(self, repo: &str, server: &str) -> GroupKey {
        GroupKey {
            repo: self.names_repo().then(|| repo.to_owned()),
            server: self.names_server().then(|| server.to_owned()),
        }
    }
}

/// How `/api/stats` writes its rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatsFormat {
    #[default]
    Json,
    Csv,
}

/// A validated `/api/stats` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsRequest {
    pub repo: Option<String>,
    pub server: Option<String>,
    pub from: Timestamp,
    pub to: Timestamp,
    pub group_by: GroupBy,
    pub format: StatsFormat,
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
        let group_by = match params.group_by.as_deref() {
            None => GroupBy::Target,
            Some(text) => GroupBy::parse(text).unwrap_or_else(|| {
                errors.push(FieldError::new(
                    "group_by",
                    "must be target, repo, server or all",
                ));
                GroupBy::Target
            }),
        };
        let format = match params.format.as_deref() {
            None | Some("json") => StatsFormat::Json,
            Some("csv") => StatsFormat::Csv,
            Some(_) => {
                errors.push(FieldError::new("format", "must be json or csv"));
                StatsFormat::Json
            }
        };
        if errors.is_empty() {
            Ok(Self {
                repo,
                server,
                from,
                to,
                group_by,
                format,
            })
        } else {
            Err(errors)
        }
    }
}

/// What one target, or one group of targets (`group_by`), did over the window. A group's numbers
/// are its targets' taken together: seconds, checks and episodes summed, the mean over all their
/// resolved episodes, the longest of all their episodes, files counted over all their episodes.
#[derive(Debug, Clone, PartialEq, ToSchema)]
pub struct TargetStats {
    /// The row's repo: present when `group_by` is `target` (the default) or `repo`, absent
    /// otherwise.
    #[schema(example = "rsyslog", nullable = false)]
    pub repo: Option<String>,
    /// The row's server: present when `group_by` is `target` or `server`, absent otherwise.
    #[schema(example = "rsyslog-lab", nullable = false)]
    pub server: Option<String>,
    /// Targets counted in the row: 1 per target, a group's members otherwise.
    pub targets: i64,
    #[schema(value_type = String, format = DateTime)]
    pub from: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub to: Timestamp,
    /// Snapshots with `last_check` in the window.
    pub checks: i64,
    /// Time in each state within the window. Time before the target's first snapshot, after
    /// now, or while it was retired is in none.
    pub seconds: StateSeconds,
    /// Each state's share of the time counted in any state (the sum of `seconds`), in percent,
    /// rounded half up to three decimals, except that a share that is neither none nor all of
    /// the time never shows as 0 or 100 (0.001 and 99.999 at the extremes): 100 means always. The
    /// four need not sum to exactly 100. Null when no time was counted.
    pub percent: Option<StatePercent>,
    /// Time, of the OUT_OF_SYNC and ERROR time, during which an acknowledgement applied: from
    /// its creation until it ended (expired, resolved, deleted or replaced), and, when it names
    /// file globs, only while every file the holding snapshot lists matches one of them.
    pub acknowledged_seconds: f64,
    /// Time, of the time counted in any state, covered by a silence whose repo and server globs
    /// match the target (from `starts_at` until `ends_at`, or its deletion if sooner);
    /// overlapping silences count once.
    pub silenced_seconds: f64,
    /// Maximal runs of OUT_OF_SYNC snapshots that overlap the window, one begun before it
    /// included.
    pub drift_episodes: i64,
    /// Mean, over the episodes resolved before `to`, of the time from an episode's first
    /// OUT_OF_SYNC `last_check` to the next SYNCED one, rounded to milliseconds; null when none
    /// resolved.
    pub mean_time_to_resync_seconds: Option<f64>,
    /// The longest episode, an unresolved one counted up to `to` (or now, or the target's
    /// retirement); null when there is none.
    pub longest_drift_seconds: Option<f64>,
    /// Files by the number of episodes that drifted them, at most 10.
    pub top_files: Vec<TopFile>,
}

/// The fields in the schema's order, each time followed by its `_ms` twin; `repo` and `server`
/// only when the row is named by them.
impl Serialize for TargetStats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("TargetStats", 17)?;
        if let Some(repo) = &self.repo {
            out.serialize_field("repo", repo)?;
        }
        if let Some(server) = &self.server {
            out.serialize_field("server", server)?;
        }
        out.serialize_field("targets", &self.targets)?;
        time_field(&mut out, "from", "from_ms", self.from)?;
        time_field(&mut out, "to", "to_ms", self.to)?;
        out.serialize_field("checks", &self.checks)?;
        out.serialize_field("seconds", &self.seconds)?;
        out.serialize_field("percent", &self.percent)?;
        out.serialize_field("acknowledged_seconds", &self.acknowledged_seconds)?;
        out.serialize_field("silenced_seconds", &self.silenced_seconds)?;
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

/// `part` of `total` (> 0) in percent, rounded half up to thousandths, with a share that is
/// neither none nor all kept off 0 and 100.
fn percent(part: i64, total: i64) -> f64 {
    let (part, total) = (i128::from(part), i128::from(total));
    let thousandths = (part * 200_000 + total) / (2 * total);
    let thousandths = if 0 < part && part < total {
        thousandths.clamp(1, 99_999)
    } else {
        thousandths
    };
    thousandths as f64 / 1000.0
}

/// Milliseconds per state, summed exactly.
#[derive(Debug, Default)]
struct StateMillis {
    synced: i64,
    out_of_sync: i64,
    error: i64,
    stale: i64,
}

impl StateMillis {
    fn of(&mut self, state: TargetState) -> &mut i64 {
        match state {
            TargetState::Synced => &mut self.synced,
            TargetState::OutOfSync => &mut self.out_of_sync,
            TargetState::Error => &mut self.error,
            TargetState::Stale => &mut self.stale,
        }
    }

    fn add(&mut self, other: &Self) {
        self.synced += other.synced;
        self.out_of_sync += other.out_of_sync;
        self.error += other.error;
        self.stale += other.stale;
    }

    fn total(&self) -> i64 {
        self.synced + self.out_of_sync + self.error + self.stale
    }

    fn seconds(&self) -> StateSeconds {
        StateSeconds {
            synced: seconds(self.synced),
            out_of_sync: seconds(self.out_of_sync),
            error: seconds(self.error),
            stale: seconds(self.stale),
        }
    }

    /// Each state's share; `None` when no time was counted.
    fn percent(&self) -> Option<StatePercent> {
        let total = self.total();
        (total > 0).then(|| StatePercent {
            synced: percent(self.synced, total),
            out_of_sync: percent(self.out_of_sync, total),
            error: percent(self.error, total),
            stale: percent(self.stale, total),
        })
    }
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

/// Each state's share of the counted time, in percent (see `percent`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct StatePercent {
    #[serde(rename = "SYNCED")]
    #[schema(example = 99.5)]
    pub synced: f64,
    #[serde(rename = "OUT_OF_SYNC")]
    #[schema(example = 0.375)]
    pub out_of_sync: f64,
    #[serde(rename = "ERROR")]
    #[schema(example = 0.125)]
    pub error: f64,
    #[serde(rename = "STALE")]
    #[schema(example = 0.0)]
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
    /// The files it lists (OUT_OF_SYNC and ERROR snapshots may list files; SYNCED ones never
    /// do). Episodes count those of OUT_OF_SYNC snapshots; acknowledgements' globs judge both.
    pub files: Vec<String>,
}

/// A stretch of time in Unix milliseconds, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

impl Span {
    /// While an acknowledgement was in force: from its creation until it ended, at the latest
    /// its `until`.
    pub fn acknowledged(created_at: i64, until: i64, ended_at: Option<i64>) -> Self {
        Self::clipped(created_at, ended_at.unwrap_or(until).min(until))
    }

    /// While a silence was in force: from `starts_at` until `ends_at`, or until it was deleted
    /// if that came sooner.
    pub fn silenced(starts_at: i64, ends_at: i64, deleted_at: Option<i64>) -> Self {
        Self::clipped(starts_at, deleted_at.unwrap_or(ends_at).min(ends_at))
    }

    /// While a target was retired: from its retirement until the `last_check` of the snapshot
    /// that revived it (`None`: not revived). A reviving snapshot checked before the retirement
    /// ends it at once.
    pub fn retired(retired_at: i64, revived_check: Option<i64>) -> Self {
        Self::clipped(retired_at, revived_check.unwrap_or(i64::MAX))
    }

    fn clipped(start: i64, end: i64) -> Self {
        Self {
            start,
            end: end.max(start),
        }
    }

    fn millis(self) -> i64 {
        self.end - self.start
    }
}

/// The union of `spans`: sorted, disjoint and none empty.
pub fn union(spans: impl IntoIterator<Item = Span>) -> Vec<Span> {
    let mut spans: Vec<Span> = spans
        .into_iter()
        .filter(|span| span.start < span.end)
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.start <= last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    merged
}

/// How much of `span` a union (`union`) covers.
fn covered(span: Span, union: &[Span]) -> i64 {
    union
        .iter()
        .map(|part| (part.end.min(span.end) - part.start.max(span.start)).max(0))
        .sum()
}

/// The parts of `span` a union (`union`) leaves uncovered, in order.
fn uncovered(span: Span, union: &[Span]) -> Vec<Span> {
    let mut parts = Vec::new();
    let mut start = span.start;
    for hole in union {
        if hole.start >= span.end {
            break;
        }
        if hole.end <= start {
            continue;
        }
        if hole.start > start {
            parts.push(Span {
                start,
                end: hole.start,
            });
        }
        start = hole.end;
    }
    if start < span.end {
        parts.push(Span {
            start,
            end: span.end,
        });
    }
    parts
}

/// An acknowledgement of the target as the statistics see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckSpan {
    /// When it was in force (`Span::acknowledged`).
    pub span: Span,
    /// Glob patterns of the files it accepts; `None`: any.
    pub files: Option<Vec<String>>,
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
    /// The target's acknowledgements in force at some time of the window.
    pub acks: Vec<AckSpan>,
    /// When silences matching the target were in force (`Span::silenced`); they may overlap.
    pub silences: Vec<Span>,
    /// When the target was retired (`Span::retired`).
    pub retired: Vec<Span>,
}

/// The last snapshot before the window, with, when it is OUT_OF_SYNC, where its episode began and
/// every file the episode drifted before the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    pub check: Check,
    pub episode_start: Timestamp,
    pub episode_files: Vec<String>,
}

/// A stretch of the window a target spent in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stretch<'a> {
    pub span: Span,
    pub state: TargetState,
    /// The snapshot whose status holds, or, for STALE, the one that went stale.
    pub check: &'a Check,
}

/// The time a target counts in `[from, to)`, as stretches of one state in time order: a
/// snapshot's status holds from its `last_check` until the next snapshot's, and the part beyond
/// its stale-after (its own, or `default_stale_after_seconds`) is STALE. Nothing counts before the
/// target's first snapshot, from `now` on, or while it was retired.
pub fn timeline<'a>(
    history: &'a TargetHistory,
    from: Timestamp,
    to: Timestamp,
    now: Timestamp,
    default_stale_after_seconds: i64,
) -> Vec<Stretch<'a>> {
    let from = from.as_millis();
    let end = to.as_millis().min(now.as_millis());
    let retired = union(history.retired.iter().copied());
    let sequence: Vec<&Check> = history
        .before
        .iter()
        .map(|carried| &carried.check)
        .chain(&history.checks)
        .collect();
    let mut stretches = Vec::new();
    for (index, &check) in sequence.iter().enumerate() {
        let held_from = check.last_check.as_millis().max(from);
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
        let held = [
            (held_from, fresh_until, check.sync_status.into()),
            (fresh_until, held_until, TargetState::Stale),
        ];
        for (start, end, state) in held {
            for span in uncovered(Span { start, end }, &retired) {
                stretches.push(Stretch { span, state, check });
            }
        }
    }
    stretches
}

/// Whether an acknowledgement with these file globs (`None`: any) accepts these files.
fn accepts(globs: Option<&[WildMatch]>, files: &[String]) -> bool {
    globs.is_none_or(|globs| {
        files
            .iter()
            .all(|file| globs.iter().any(|glob| glob.matches(file)))
    })
}

/// What a row is named by (`GroupBy`); rows sort by it, repo then server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    repo: Option<String>,
    server: Option<String>,
}

/// An episode while it is being measured.
#[derive(Debug)]
struct Episode {
    start: i64,
    files: BTreeSet<String>,
}

/// The exact sums behind a row, in milliseconds: one target's, or a group's.
#[derive(Debug, Default)]
struct Tally {
    targets: i64,
    checks: i64,
    millis: StateMillis,
    acknowledged: i64,
    silenced: i64,
    episodes: i64,
    /// The resolved episodes' total time to resync, and how many there were.
    resolved_millis: i64,
    resolved: i64,
    longest: Option<i64>,
    file_episodes: HashMap<String, i64>,
}

impl Tally {
    /// One target's sums over `[from, to)`, judged at `now`.
    fn of_target(
        history: &TargetHistory,
        from: Timestamp,
        to: Timestamp,
        now: Timestamp,
        default_stale_after_seconds: i64,
    ) -> Self {
        let mut tally = Self::of_time(history, from, to, now, default_stale_after_seconds);
        tally.count_episodes(history, to.as_millis().min(now.as_millis()));
        tally
    }

    /// One target's checks and time over `[from, to)`, all of which add up over consecutive
    /// windows; no episodes, which do not.
    fn of_time(
        history: &TargetHistory,
        from: Timestamp,
        to: Timestamp,
        now: Timestamp,
        default_stale_after_seconds: i64,
    ) -> Self {
        let mut tally = Self {
            targets: 1,
            checks: history.checks.len() as i64,
            ..Self::default()
        };
        let silences = union(history.silences.iter().copied());
        let acks: Vec<(Span, Option<Vec<WildMatch>>)> = history
            .acks
            .iter()
            .map(|ack| {
                let globs = ack
                    .files
                    .as_ref()
                    .map(|globs| globs.iter().map(|glob| WildMatch::new(glob)).collect());
                (ack.span, globs)
            })
            .collect();
        for stretch in timeline(history, from, to, now, default_stale_after_seconds) {
            *tally.millis.of(stretch.state) += stretch.span.millis();
            tally.silenced += covered(stretch.span, &silences);
            if matches!(stretch.state, TargetState::OutOfSync | TargetState::Error) {
                let applying = union(
                    acks.iter()
                        .filter(|(_, globs)| accepts(globs.as_deref(), &stretch.check.files))
                        .map(|(span, _)| *span),
                );
                tally.acknowledged += covered(stretch.span, &applying);
            }
        }
        tally
    }

    /// One target's sums over the window from its rollups and the raw parts around them; the
    /// same as `of_target` over the raw history, to the millisecond.
    fn of_rolled(
        target: &RolledTarget,
        to: Timestamp,
        now: Timestamp,
        default_stale_after_seconds: i64,
    ) -> Self {
        let mut tally = Self {
            targets: 1,
            ..Self::default()
        };
        for part in &target.edges {
            let edge = Self::of_time(
                &part.history,
                part.from,
                part.to,
                now,
                default_stale_after_seconds,
            );
            tally.checks += edge.checks;
            tally.millis.add(&edge.millis);
            tally.acknowledged += edge.acknowledged;
            tally.silenced += edge.silenced;
        }
        let days = &target.days;
        tally.checks += days.checks;
        tally.millis.add(&StateMillis {
            synced: days.synced_ms,
            out_of_sync: days.out_of_sync_ms,
            error: days.error_ms,
            stale: days.stale_ms,
        });
        let (days_from, days_to) = (
            Timestamp::from_millis(target.days_span.start),
            Timestamp::from_millis(target.days_span.end),
        );
        if let Some(open) = &target.open {
            let held = TargetHistory {
                repo: String::new(),
                server: String::new(),
                before: Some(Carried {
                    check: open.clone(),
                    episode_start: open.last_check,
                    episode_files: Vec::new(),
                }),
                checks: Vec::new(),
                acks: Vec::new(),
                silences: Vec::new(),
                retired: Vec::new(),
            };
            for stretch in timeline(&held, days_from, days_to, now, default_stale_after_seconds) {
                *tally.millis.of(stretch.state) += stretch.span.millis();
            }
        }
        for part in &target.retired {
            let timeline = timeline(
                &part.history,
                part.from,
                part.to,
                now,
                default_stale_after_seconds,
            );
            for stretch in timeline {
                *tally.millis.of(stretch.state) -= stretch.span.millis();
            }
        }
        for part in &target.covered {
            let covered = Self::of_time(
                &part.history,
                part.from,
                part.to,
                now,
                default_stale_after_seconds,
            );
            tally.acknowledged += covered.acknowledged;
            tally.silenced += covered.silenced;
        }
        tally.count_episodes(&target.episodes, to.as_millis().min(now.as_millis()));
        tally
    }

    /// The drift episodes; an unresolved one lasts until `end`, or until the target was retired
    /// if it was at `end`.
    fn count_episodes(&mut self, history: &TargetHistory, end: i64) {
        let open_until = union(history.retired.iter().copied())
            .iter()
            .find(|span| span.start < end && end <= span.end)
            .map_or(end, |span| span.start);
        let carried_episode = history
            .before
            .as_ref()
            .filter(|carried| carried.check.sync_status == SyncStatus::OutOfSync)
            .map(|carried| Episode {
                start: carried.episode_start.as_millis(),
                files: carried.episode_files.iter().cloned().collect(),
            });
        let sequence = history
            .before
            .iter()
            .map(|carried| &carried.check)
            .chain(&history.checks);

        // Episodes, each with when it resolved (None: still open at `to`).
        let mut episodes: Vec<(Episode, Option<i64>)> = Vec::new();
        let mut open: Option<Episode> = None;
        for (index, check) in sequence.enumerate() {
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

        self.episodes = episodes.len() as i64;
        for (episode, resolved) in &episodes {
            if let Some(at) = resolved {
                self.resolved_millis += at - episode.start;
                self.resolved += 1;
            }
            let length = (resolved.unwrap_or(open_until) - episode.start).max(0);
            self.longest = self.longest.max(Some(length));
            for name in &episode.files {
                *self.file_episodes.entry(name.clone()).or_default() += 1;
            }
        }
    }

    fn add(&mut self, other: Self) {
        self.targets += other.targets;
        self.checks += other.checks;
        self.millis.add(&other.millis);
        self.acknowledged += other.acknowledged;
        self.silenced += other.silenced;
        self.episodes += other.episodes;
        self.resolved_millis += other.resolved_millis;
        self.resolved += other.resolved;
        self.longest = self.longest.max(other.longest);
        for (name, episodes) in other.file_episodes {
            *self.file_episodes.entry(name).or_default() += episodes;
        }
    }

    /// Whether the window holds anything of the target(s): time counted or a check.
    fn is_empty(&self) -> bool {
        self.checks == 0 && self.millis.total() == 0
    }

    fn into_row(self, key: GroupKey, from: Timestamp, to: Timestamp) -> TargetStats {
        let mut top_files: Vec<TopFile> = self
            .file_episodes
            .into_iter()
            .map(|(name, episodes)| TopFile { name, episodes })
            .collect();
        top_files.sort_by(|a, b| b.episodes.cmp(&a.episodes).then(a.name.cmp(&b.name)));
        top_files.truncate(TOP_FILES);
        TargetStats {
            repo: key.repo,
            server: key.server,
            targets: self.targets,
            from,
            to,
            checks: self.checks,
            seconds: self.millis.seconds(),
            percent: self.millis.percent(),
            acknowledged_seconds: seconds(self.acknowledged),
            silenced_seconds: seconds(self.silenced),
            drift_episodes: self.episodes,
            mean_time_to_resync_seconds: (self.resolved > 0).then(|| {
                let mean = self.resolved_millis as f64 / self.resolved as f64;
                seconds(mean.round() as i64)
            }),
            longest_drift_seconds: self.longest.map(seconds),
            top_files,
        }
    }
}

/// Computes the statistics of one target over `[from, to)`; `now` caps the time counted.
pub fn compute(
    history: TargetHistory,
    from: Timestamp,
    to: Timestamp,
    now: Timestamp,
    default_stale_after_seconds: i64,
) -> TargetStats {
    let tally = Tally::of_target(&history, from, to, now, default_stale_after_seconds);
    let key = GroupBy::Target.key(&history.repo, &history.server);
    tally.into_row(key, from, to)
}

/// What `/api/stats` reads: every target's raw history over the window, or, once the daily
/// rollups are complete for the server's default stale-after, the rollups of the window's whole
/// days and raw snapshots around them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsInput {
    Raw(Vec<TargetHistory>),
    Rolled(Vec<RolledTarget>),
}

/// Part of a target's window read from raw snapshots: a history over `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPart {
    pub from: Timestamp,
    pub to: Timestamp,
    pub history: TargetHistory,
}

/// A target's window as the daily rollups (`crate::rollups`) answer it: the whole days from
/// rollups, the partial days at the edges from raw snapshots, and from raw snapshots too the few
/// stretches of the days that events change (retirements, acknowledgements, silences).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledTarget {
    pub repo: String,
    pub server: String,
    /// The window before and after its whole days, each with its own history.
    pub edges: Vec<RawPart>,
    /// The whole days' rollups, summed.
    pub days: DayTotals,
    /// The whole days, `[start, end)`.
    pub days_span: Span,
    /// The target's latest snapshot, when it is before the days' end: its hold is open, so in
    /// no rollup.
    pub open: Option<Check>,
    /// Each retired stretch of the days, with a history whose retirements are left out: its
    /// time is taken back from the days'.
    pub retired: Vec<RawPart>,
    /// Each stretch of the days an acknowledgement or a silence covers: their time is counted
    /// from these.
    pub covered: Vec<RawPart>,
    /// The window's transitions (snapshots whose status or files changed), with the episode
    /// carried into it: drift episodes need no other snapshot.
    pub episodes: TargetHistory,
}

/// The rows of `/api/stats`: the targets' statistics over the request's window, judged at `now`,
/// one row per group of `request.group_by`, sorted by repo then server. A target the window
/// holds nothing of (no check, no time counted: retired throughout it, or a window after now) is
/// in no row, so a group exists only with members. Both inputs give the same rows.
pub fn report(
    input: &StatsInput,
    request: &StatsRequest,
    now: Timestamp,
    default_stale_after_seconds: i64,
) -> Vec<TargetStats> {
    let (from, to) = (request.from, request.to);
    let default = default_stale_after_seconds;
    match input {
        StatsInput::Raw(histories) => group(
            histories.iter().map(|history| {
                let tally = Tally::of_target(history, from, to, now, default);
                (history.repo.as_str(), history.server.as_str(), tally)
            }),
            request,
        ),
        StatsInput::Rolled(targets) => group(
            targets.iter().map(|target| {
                let tally = Tally::of_rolled(target, to, now, default);
                (target.repo.as_str(), target.server.as_str(), tally)
            }),
            request,
        ),
    }
}

fn group<'a>(
    tallies: impl Iterator<Item = (&'a str, &'a str, Tally)>,
    request: &StatsRequest,
) -> Vec<TargetStats> {
    let mut groups: BTreeMap<GroupKey, Tally> = BTreeMap::new();
    for (repo, server, tally) in tallies {
        if !tally.is_empty() {
            let key = request.group_by.key(repo, server);
            groups.entry(key).or_default().add(tally);
        }
    }
    groups
        .into_iter()
        .map(|(key, tally)| tally.into_row(key, request.from, request.to))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_rounds_half_up_to_thousandths_and_keeps_partial_shares_off_the_ends() {
        for (part, total, expected) in [
            (1, 3, 33.333),
            (2, 3, 66.667),
            (1, 8, 12.5),
            (1, 200_000, 0.001),
            (0, 5, 0.0),
            (5, 5, 100.0),
            // Rounded, these would claim none and all of the time.
            (1, 1_000_000_000, 0.001),
            (999_999_999, 1_000_000_000, 99.999),
            // A quarter, in milliseconds: no overflow.
            (7_948_799_999, 7_948_800_000, 99.999),
        ] {
            assert_eq!(percent(part, total), expected, "{part} of {total}");
        }
    }

    fn span(start: i64, end: i64) -> Span {
        Span { start, end }
    }

    #[test]
    fn unions_merge_overlapping_and_touching_spans_and_drop_empty_ones() {
        let merged = union([span(5, 7), span(0, 2), span(2, 3), span(6, 9), span(4, 4)]);
        assert_eq!(merged, [span(0, 3), span(5, 9)]);
        assert_eq!(covered(span(1, 6), &merged), 2 + 1);
        assert_eq!(uncovered(span(1, 10), &merged), [span(3, 5), span(9, 10)]);
        assert_eq!(uncovered(span(5, 9), &merged), []);
        assert_eq!(uncovered(span(3, 5), &merged), [span(3, 5)]);
    }

    #[test]
    fn spans_end_at_the_earliest_of_their_ends_and_never_before_they_begin() {
        assert_eq!(Span::acknowledged(10, 50, None), span(10, 50));
        assert_eq!(Span::acknowledged(10, 50, Some(30)), span(10, 30));
        assert_eq!(Span::acknowledged(10, 50, Some(70)), span(10, 50));
        assert_eq!(Span::silenced(10, 50, Some(5)), span(10, 10));
        assert_eq!(Span::retired(10, Some(40)), span(10, 40));
        assert_eq!(Span::retired(10, Some(5)), span(10, 10));
        assert_eq!(Span::retired(10, None), span(10, i64::MAX));
    }
}
