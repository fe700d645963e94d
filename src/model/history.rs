//! `GET /history`'s rows, parameters and validated request.

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::times::time_field;
use super::{Cursor, FieldError, FileEntry, SyncStatus, page, query};
use crate::timestamp::Timestamp;

/// One stored snapshot: the reply to `POST /api/status` and a row of `/history`.
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct Snapshot {
    /// Arrival order; unique across all targets.
    #[schema(example = 912)]
    pub id: i64,
    #[schema(example = "rsyslog")]
    pub repo: String,
    #[schema(example = "rsyslog-lab")]
    pub server: String,
    pub sync_status: SyncStatus,
    #[schema(example = 2)]
    pub drift_count: i64,
    /// Sorted by name.
    pub files: Vec<FileEntry>,
    /// The file names joined with `", "`, for table cells that cannot show arrays.
    #[schema(example = "rsyslog.conf, rsyslog.d/30-lab.conf")]
    pub files_text: String,
    #[schema(value_type = String, format = DateTime, example = "2026-04-21T10:30:00.000Z")]
    pub last_check: Timestamp,
    #[schema(value_type = String, format = DateTime, example = "2026-04-21T10:30:01.204Z")]
    pub received_at: Timestamp,
    pub revision: Option<String>,
    pub run_url: Option<String>,
    pub message: Option<String>,
    /// The per-target stale-after this snapshot carried, if any.
    pub stale_after_seconds: Option<i64>,
    /// Hex SHA-256 linking this snapshot to its target's previous one (docs/audit.md).
    #[schema(example = "1fea84a3574e71a194f9a3152f8fa472981d3f3a58b18f129cfa8a800cf4a026")]
    pub hash: String,
}

/// The fields in the schema's order, each time followed by its `_ms` twin.
impl Serialize for Snapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Snapshot", 16)?;
        out.serialize_field("id", &self.id)?;
        out.serialize_field("repo", &self.repo)?;
        out.serialize_field("server", &self.server)?;
        out.serialize_field("sync_status", &self.sync_status)?;
        out.serialize_field("drift_count", &self.drift_count)?;
        out.serialize_field("files", &self.files)?;
        out.serialize_field("files_text", &self.files_text)?;
        time_field(&mut out, "last_check", "last_check_ms", self.last_check)?;
        time_field(&mut out, "received_at", "received_at_ms", self.received_at)?;
        out.serialize_field("revision", &self.revision)?;
        out.serialize_field("run_url", &self.run_url)?;
        out.serialize_field("message", &self.message)?;
        out.serialize_field("stale_after_seconds", &self.stale_after_seconds)?;
        out.serialize_field("hash", &self.hash)?;
        out.end()
    }
}

impl Snapshot {
    pub fn file_names(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|file| file.name.as_str())
    }
}

/// A JSON page of `/history`.
pub type SnapshotPage = super::JsonPage<Snapshot>;

/// Joins file names the way `files_text` shows them.
pub fn files_text<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().collect::<Vec<_>>().join(", ")
}

/// Sort direction of `/history`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// How `/history` renders its rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExportFormat {
    /// One page as a JSON array, with a `Link` header to the next page.
    #[default]
    Json,
    /// The whole selection as CSV.
    Csv,
    /// The whole selection as newline-delimited JSON.
    Ndjson,
}

/// Query parameters of `GET /history`: the accepted names and their documentation;
/// `HistoryRequest::from_query` validates the values.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Only snapshots of this repo (exact match).
    pub repo: Option<String>,
    /// Only snapshots of this server (exact match).
    pub server: Option<String>,
    /// Only these results, comma-separated: `SYNCED`, `OUT_OF_SYNC`, `ERROR`.
    pub sync_status: Option<String>,
    /// Earliest `last_check`, inclusive: RFC 3339 or integer Unix milliseconds.
    #[param(example = "2026-04-21T00:00:00.000Z")]
    pub from: Option<String>,
    /// Latest `last_check`, exclusive: RFC 3339 or integer Unix milliseconds.
    #[param(example = "1776816000000")]
    pub to: Option<String>,
    /// Only transitions: a target's first snapshot and those whose `sync_status` or file set
    /// differs from the target's previous snapshot by `last_check`.
    #[param(value_type = Option<bool>)]
    pub changes_only: Option<String>,
    /// `desc` (newest first, the default) or `asc`, by `last_check` then `id`.
    #[param(pattern = "^(asc|desc)$")]
    pub order: Option<String>,
    /// Page size, 1..=10000 (default 100). For exports, a cap on the rows streamed (default: all).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 10000)]
    pub limit: Option<String>,
    /// Opaque token from a previous page's `Link: <...>; rel="next"` header.
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

/// The filters of `GET /history`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub repo: Option<String>,
    pub server: Option<String>,
    /// Empty means every status.
    pub sync_statuses: Vec<SyncStatus>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub changes_only: bool,
    pub order: Order,
    /// Resume after this row.
    pub after: Option<Cursor>,
}

/// A validated `/history` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRequest {
    pub filter: HistoryFilter,
    /// Page size for JSON; for exports, `None` streams everything.
    pub limit: Option<usize>,
    /// `None`: as `Accept` negotiates.
    pub format: Option<ExportFormat>,
    /// Wrap a JSON page with its next cursor.
    pub envelope: bool,
}

/// Default page size of `/history` (and of every paginated resource).
pub const DEFAULT_HISTORY_LIMIT: usize = 100;
/// Largest page size of `/history` (and of every paginated resource).
pub const MAX_HISTORY_LIMIT: usize = 10_000;

impl HistoryRequest {
    pub fn from_query(raw: Option<&str>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let params: HistoryParams = query::read_query(raw, &mut errors);
        let from = query::time("from", params.from, &mut errors);
        let to = query::time("to", params.to, &mut errors);
        if let (Some(from), Some(to)) = (from, to) {
            if from > to {
                errors.push(FieldError::new("to", "must not be before from"));
            }
        }
        let changes_only = query::flag("changes_only", params.changes_only, &mut errors);
        let order = page::order(params.order, &mut errors);
        let limit = page::limit(params.limit, &mut errors);
        let after = params.cursor.and_then(|token| {
            let cursor = Cursor::decode(&token);
            if cursor.is_none() {
                errors.push(page::bad_cursor());
            }
            cursor
        });
        let (format, envelope) = page::format(params.format, params.envelope, &mut errors);
        let filter = HistoryFilter {
            repo: query::name_filter("repo", params.repo, &mut errors),
            server: query::name_filter("server", params.server, &mut errors),
            sync_statuses: query::list(
                "sync_status",
                params.sync_status,
                SyncStatus::parse,
                "SYNCED, OUT_OF_SYNC, ERROR",
                &mut errors,
            ),
            from,
            to,
            changes_only,
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
    fn history_query_collects_every_bad_parameter() {
        let result = HistoryRequest::from_query(Some(
            "limit=0&order=up&from=soon&sever=x&repo=a&repo=b&changes_only=yes",
        ));
        assert_eq!(
            fields(result),
            ["changes_only", "from", "limit", "order", "repo", "sever"]
        );
    }

    #[test]
    fn envelope_is_a_boolean_for_json_pages_and_selects_json() {
        let fields = |query| fields(HistoryRequest::from_query(Some(query)));
        assert_eq!(fields("envelope=yes"), ["envelope"]);
        assert_eq!(fields("envelope=true&format=csv"), ["envelope"]);
        assert_eq!(fields("envelope=true&format=ndjson"), ["envelope"]);
        let request = HistoryRequest::from_query(Some("envelope=true")).unwrap();
        assert!(request.envelope);
        assert_eq!(request.format, Some(ExportFormat::Json));
        let request = HistoryRequest::from_query(Some("envelope=false&format=csv")).unwrap();
        assert!(!request.envelope);
        assert_eq!(request.format, Some(ExportFormat::Csv));
    }
}
