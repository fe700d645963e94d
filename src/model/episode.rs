//! `GET /api/episodes`' rows, parameters and validated request: the maximal runs of one state per
//! target, under the rules of `/api/stats` (src/stats.rs).

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::lifecycle::AckSummary;
use super::times::time_field;
use super::{EpisodeCursor, ExportFormat, FieldError, FileEntry, Order, TargetState, page, query};
use crate::timestamp::Timestamp;

/// One maximal run of one state of one target.
///
/// A snapshot's state holds from its `last_check` until the next snapshot's, except the time past
/// its stale-after (its own `stale_after_seconds`, or the server's `--stale-after`), which is a
/// STALE episode of its own. A retired target's last episode ends when it was retired; a later
/// snapshot starts a new one.
#[derive(Debug, Clone, PartialEq, ToSchema)]
pub struct Episode {
    #[schema(example = "rsyslog")]
    pub repo: String,
    #[schema(example = "rsyslog-lab")]
    pub server: String,
    pub state: TargetState,
    /// The first snapshot's `last_check`; for a STALE episode, the last snapshot's `last_check`
    /// plus its stale-after.
    #[schema(value_type = String, format = DateTime, example = "2026-04-21T09:58:00.000Z")]
    pub started_at: Timestamp,
    /// Where the next episode starts, or when the target was retired; null while open.
    #[schema(value_type = Option<String>, format = DateTime, example = "2026-04-21T10:40:00.000Z")]
    pub ended_at: Option<Timestamp>,
    /// From `started_at` to `ended_at`, or to now while open (never below 0), rounded to
    /// milliseconds.
    #[schema(example = 2520.0)]
    pub duration_seconds: f64,
    /// Snapshots in the episode; 0 for STALE, which no check reported.
    #[schema(example = 21)]
    pub checks: i64,
    /// Every file a snapshot of the episode listed, sorted, each once.
    pub files: Vec<FileEntry>,
    /// The file names joined with `", "`, for table cells that cannot show arrays.
    #[schema(example = "rsyslog.conf, rsyslog.d/30-lab.conf")]
    pub files_text: String,
    /// The episode's first snapshot; for STALE, the snapshot that went stale.
    #[schema(example = 891)]
    pub first_snapshot_id: i64,
    /// The episode's last snapshot; for STALE, the snapshot that went stale.
    #[schema(example = 912)]
    pub last_snapshot_id: i64,
    /// The acknowledgement that covered an OUT_OF_SYNC or ERROR episode: the latest made while
    /// the episode lasted (its span from creation to its end, or to `until` while it has not
    /// ended, overlaps the episode). Null otherwise.
    pub acknowledged: Option<AckSummary>,
}

/// The fields in the schema's order, each time followed by its `_ms` twin.
impl Serialize for Episode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Episode", 15)?;
        out.serialize_field("repo", &self.repo)?;
        out.serialize_field("server", &self.server)?;
        out.serialize_field("state", &self.state)?;
        time_field(&mut out, "started_at", "started_at_ms", self.started_at)?;
        time_field(&mut out, "ended_at", "ended_at_ms", self.ended_at)?;
        out.serialize_field("duration_seconds", &self.duration_seconds)?;
        out.serialize_field("checks", &self.checks)?;
        out.serialize_field("files", &self.files)?;
        out.serialize_field("files_text", &self.files_text)?;
        out.serialize_field("first_snapshot_id", &self.first_snapshot_id)?;
        out.serialize_field("last_snapshot_id", &self.last_snapshot_id)?;
        out.serialize_field("acknowledged", &self.acknowledged)?;
        out.end()
    }
}

impl Episode {
    /// Where a page that ends with this episode resumes.
    pub fn cursor(&self) -> EpisodeCursor {
        EpisodeCursor {
            started_at: self.started_at,
            first_snapshot_id: self.first_snapshot_id,
        }
    }
}

/// What the episodes are judged by: the time open episodes last until, and the stale-after of
/// snapshots that carry none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpisodeClock {
    pub now: Timestamp,
    pub default_stale_after_seconds: i64,
}

/// A JSON page of `/api/episodes`.
pub type EpisodePage = super::JsonPage<Episode>;

/// Query parameters of `GET /api/episodes`: the accepted names and their documentation;
/// `EpisodeRequest::from_query` validates the values.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EpisodeParams {
    /// Only episodes of this repo (exact match).
    pub repo: Option<String>,
    /// Only episodes of this server (exact match).
    pub server: Option<String>,
    /// Only episodes in these states, comma-separated: `SYNCED`, `OUT_OF_SYNC`, `ERROR`, `STALE`.
    #[param(example = "OUT_OF_SYNC,ERROR")]
    pub state: Option<String>,
    /// Only episodes that overlap the window from here (inclusive): an episode that ends at or
    /// before `from` is left out. RFC 3339 or integer Unix milliseconds.
    #[param(example = "2026-04-01T00:00:00.000Z")]
    pub from: Option<String>,
    /// Only episodes that overlap the window up to here (exclusive): an episode that starts at or
    /// after `to` is left out. RFC 3339 or integer Unix milliseconds. `to` equal to `from` selects
    /// the episode in force at that instant.
    #[param(example = "1777593600000")]
    pub to: Option<String>,
    /// `true`: only open episodes (each target's current one); `false`: only ended ones.
    #[param(value_type = Option<bool>)]
    pub open: Option<String>,
    /// `desc` (latest first, the default) or `asc`, by `started_at`, then `first_snapshot_id`.
    #[param(pattern = "^(asc|desc)$")]
    pub order: Option<String>,
    /// Page size, 1..=10000 (default 100). For exports, a cap on the rows streamed (default: all).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 10000)]
    pub limit: Option<String>,
    /// Opaque token from a previous page's `Link: <...>; rel="next"` header or `next_cursor`.
    pub cursor: Option<String>,
    /// `json` (default), `csv` or `ndjson`. `Accept: text/csv` or `application/x-ndjson` select the
    /// same. CSV and NDJSON stream the whole selection.
    #[param(pattern = "^(json|csv|ndjson)$")]
    pub format: Option<String>,
    /// `true` answers a JSON page as `{"items": [...], "next_cursor": "..." | null}` instead of a
    /// bare array (the `Link` header is sent either way), and selects JSON whatever `Accept`
    /// says. Not with `format=csv` or `format=ndjson`.
    #[param(value_type = Option<bool>)]
    pub envelope: Option<String>,
}

/// The filters of `GET /api/episodes`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpisodeFilter {
    pub repo: Option<String>,
    pub server: Option<String>,
    /// Empty means every state.
    pub states: Vec<TargetState>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// `Some(true)`: only open episodes; `Some(false)`: only ended ones.
    pub open: Option<bool>,
    pub order: Order,
    /// Resume after this episode.
    pub after: Option<EpisodeCursor>,
}

impl EpisodeFilter {
    /// Whether episodes of `state` are wanted.
    pub fn wants(&self, state: TargetState) -> bool {
        self.states.is_empty() || self.states.contains(&state)
    }
}

/// A validated `/api/episodes` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpisodeRequest {
    pub filter: EpisodeFilter,
    /// Page size for JSON; for exports, `None` streams everything.
    pub limit: Option<usize>,
    /// `None`: as `Accept` negotiates.
    pub format: Option<ExportFormat>,
    /// Wrap a JSON page with its next cursor.
    pub envelope: bool,
}

impl EpisodeRequest {
    pub fn from_query(raw: Option<&str>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let params: EpisodeParams = query::read_query(raw, &mut errors);
        let from = query::time("from", params.from, &mut errors);
        let to = query::time("to", params.to, &mut errors);
        if let (Some(from), Some(to)) = (from, to) {
            if from > to {
                errors.push(FieldError::new("to", "must not be before from"));
            }
        }
        let open = params.open.map(|text| match text.as_str() {
            "true" => true,
            "false" => false,
            _ => {
                errors.push(FieldError::new("open", "must be true or false"));
                false
            }
        });
        let order = page::order(params.order, &mut errors);
        let limit = page::limit(params.limit, &mut errors);
        let after = params.cursor.and_then(|token| {
            let cursor = EpisodeCursor::decode(&token);
            if cursor.is_none() {
                errors.push(page::bad_cursor());
            }
            cursor
        });
        let (format, envelope) = page::format(params.format, params.envelope, &mut errors);
        let filter = EpisodeFilter {
            repo: query::name_filter("repo", params.repo, &mut errors),
            server: query::name_filter("server", params.server, &mut errors),
            states: query::list(
                "state",
                params.state,
                TargetState::parse,
                "SYNCED, OUT_OF_SYNC, ERROR, STALE",
                &mut errors,
            ),
            from,
            to,
            open,
            order,
            after,
        };
        if errors.is_empty() {
            Ok(Self {
                filter,
                limit,
                format,
                envelope,
            })
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::error_fields as fields;

    #[test]
    fn episode_query_collects_every_bad_parameter() {
        let result = EpisodeRequest::from_query(Some(
            "limit=0&order=up&from=soon&state=LATE&open=yes&sever=x&cursor=djEuMS4y",
        ));
        assert_eq!(
            fields(result),
            ["cursor", "from", "limit", "open", "order", "sever", "state"]
        );
        let fields = |query| fields(EpisodeRequest::from_query(Some(query)));
        assert_eq!(fields("from=2&to=1"), ["to"]);
        assert_eq!(fields("envelope=true&format=csv"), ["envelope"]);
    }

    #[test]
    fn episode_query_reads_filters_and_paging() {
        let cursor = EpisodeCursor {
            started_at: Timestamp::from_millis(10),
            first_snapshot_id: 3,
        };
        let request = EpisodeRequest::from_query(Some(&format!(
            "repo=r&state=STALE,ERROR&from=1&to=20&open=false&order=asc&limit=5&cursor={}&envelope=true",
            cursor.encode()
        )))
        .unwrap();
        assert_eq!(
            request.filter,
            EpisodeFilter {
                repo: Some("r".to_owned()),
                server: None,
                states: vec![TargetState::Stale, TargetState::Error],
                from: Some(Timestamp::from_millis(1)),
                to: Some(Timestamp::from_millis(20)),
                open: Some(false),
                order: Order::Asc,
                after: Some(cursor),
            }
        );
        assert_eq!(request.limit, Some(5));
        assert_eq!(request.format, Some(ExportFormat::Json));
        assert!(request.envelope);
    }
}
