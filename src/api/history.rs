//! `GET /history`: the audit trail, as keyset-paginated JSON pages or streamed CSV / NDJSON exports.

use std::borrow::Cow;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::Serialize;

use super::AppState;
use super::paging::PageAnswer;
use crate::error::{ApiError, Problem, Result};
use crate::model::{
    Cursor, DEFAULT_HISTORY_LIMIT, ExportFormat, HistoryParams, HistoryRequest, Snapshot,
    SnapshotPage,
};
use crate::store::StoreError;

/// Columns of the CSV export, in order: the SPEC's twelve, then the times' Unix-milliseconds
/// twins.
pub const CSV_COLUMNS: [&str; 14] = [
    "id",
    "repo",
    "server",
    "sync_status",
    "drift_count",
    "files",
    "last_check",
    "received_at",
    "revision",
    "run_url",
    "message",
    "hash",
    "last_check_ms",
    "received_at_ms",
];

/// What makes a spreadsheet read a cell as a formula (OWASP's CSV injection list).
pub const FORMULA_TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A CSV cell a spreadsheet shows as text and never runs: a value that begins with a formula
/// trigger, after any leading `'`s, gets one more `'` in front. Removing one leading `'` from a
/// cell that begins with `'`s and then a trigger restores the value exactly, so a value that
/// itself begins with `'=` (sent as `''=`) survives the round trip (docs/audit.md).
pub fn spreadsheet_cell(value: &str) -> Cow<'_, str> {
    if value.trim_start_matches('\'').starts_with(FORMULA_TRIGGERS) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// Rows encoded per chunk of an export.
pub(super) const EXPORT_CHUNK_ROWS: usize = 256;

/// History of snapshots, newest first.
///
/// Filters by repo, server, sync_status and a `[from, to)` window on `last_check`; `changes_only`
/// keeps only transitions. JSON answers one page and, when more rows exist, a
/// `Link: <...>; rel="next"` header whose cursor stays stable while new snapshots arrive;
/// `envelope=true` wraps the page as `{"items": [...], "next_cursor": ...}`. A JSON page carries
/// an `ETag` and answers a matching `If-None-Match` with 304.
/// `format=csv` or `format=ndjson` (or the matching `Accept`) streams the whole selection.
#[utoipa::path(
    get,
    path = "/history",
    tag = "history",
    params(
        HistoryParams,
        ("If-None-Match" = Option<String>, Header, description = "Entity tags of pages the client holds; a match answers 304 (JSON pages only)"),
    ),
    responses(
        (status = 200, description = "Snapshots, ordered by last_check then id",
         headers(
            ("Link" = String, description = "`<...>; rel=\"next\"` when more rows exist (JSON only)"),
            ("ETag" = String, description = "Weak tag of the JSON page and its `Link`"),
         ),
         content(
            (SnapshotPage = "application/json"),
            (String = "text/csv"),
            (Snapshot = "application/x-ndjson")
         )),
        (status = 304, description = "`If-None-Match` names the page's current tag: no body",
         headers(("ETag" = String, description = "The page's tag"))),
        (status = 400, description = "A query parameter is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn history_list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let request = HistoryRequest::from_query(query.as_deref()).map_err(ApiError::InvalidQuery)?;
    let format = request
        .format
        .unwrap_or_else(|| negotiated_format(&headers));
    if format == ExportFormat::Json {
        let limit = request.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
        // One row more than asked tells whether a next page exists without counting.
        let mut rows = state.store.history_page(&request.filter, limit + 1).await?;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|row| Cursor::after(row).encode())
        } else {
            None
        };
        let page = PageAnswer {
            path: "/history",
            query: query.as_deref(),
            envelope: request.envelope,
            rows,
            next_cursor,
        };
        return page.respond(&headers);
    }

    // Check the database before committing to a 200 that a failing stream would truncate.
    state.store.ping().await?;
    let rows = state
        .store
        .history_stream(request.filter, request.limit)
        .ready_chunks(EXPORT_CHUNK_ROWS);
    Ok(export_response(format, rows, &CSV_COLUMNS, csv_chunk))
}

/// A streamed export: CSV (a header row of `csv_columns`, then `csv_chunk`'s rows) or NDJSON
/// (one object per line).
pub(super) fn export_response<T: Serialize + Send + 'static>(
    format: ExportFormat,
    rows: impl Stream<Item = Vec<Result<T, StoreError>>> + Send + 'static,
    csv_columns: &[&str],
    csv_chunk: fn(&[T]) -> Vec<u8>,
) -> Response {
    let (content_type, body) = match format {
        ExportFormat::Csv => (
            "text/csv; charset=utf-8",
            export_body(rows, csv_chunk, Some(csv_line(csv_columns))),
        ),
        _ => (
            "application/x-ndjson",
            export_body(rows, ndjson_chunk, None),
        ),
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `json`, unless `Accept` names CSV or NDJSON before JSON.
pub(super) fn negotiated_format(headers: &HeaderMap) -> ExportFormat {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    for media in accept {
        let essence = media.split(';').next().unwrap_or_default().trim();
        match essence.to_ascii_lowercase().as_str() {
            "text/csv" => return ExportFormat::Csv,
            "application/x-ndjson" | "application/ndjson" => return ExportFormat::Ndjson,
            "application/json" => return ExportFormat::Json,
            _ => {}
        }
    }
    ExportFormat::Json
}

fn export_body<T: Send + 'static>(
    rows: impl Stream<Item = Vec<Result<T, StoreError>>> + Send + 'static,
    encode: fn(&[T]) -> Vec<u8>,
    header: Option<Vec<u8>>,
) -> Body {
    let header = header.map(|line| Ok(Bytes::from(line)));
    let chunks = rows.map(move |chunk| {
        let rows = chunk
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| {
                // The status line is gone; all that is left is to cut the body short.
                tracing::error!(%error, "export failed mid-stream");
                std::io::Error::other(error)
            })?;
        Ok::<_, std::io::Error>(Bytes::from(encode(&rows)))
    });
    Body::from_stream(futures_util::stream::iter(header).chain(chunks))
}

/// One CSV record of plain cells.
fn csv_line(cells: &[&str]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = writer.write_record(cells);
    writer.into_inner().unwrap_or_default()
}

/// CSV records of `rows`' cells, each guarded against spreadsheet formulas.
pub(super) fn csv_records<const N: usize>(rows: impl Iterator<Item = [String; N]>) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for record in rows {
        for cell in &record {
            let _ = writer.write_field(spreadsheet_cell(cell).as_bytes());
        }
        let _ = writer.write_record(None::<&[u8]>);
    }
    writer.into_inner().unwrap_or_default()
}

fn csv_chunk(snapshots: &[Snapshot]) -> Vec<u8> {
    csv_records(snapshots.iter().map(|snapshot| {
        [
            snapshot.id.to_string(),
            snapshot.repo.clone(),
            snapshot.server.clone(),
            snapshot.sync_status.as_str().to_owned(),
            snapshot.drift_count.to_string(),
            snapshot.files_text.clone(),
            snapshot.last_check.to_string(),
            snapshot.received_at.to_string(),
            snapshot.revision.clone().unwrap_or_default(),
            snapshot.run_url.clone().unwrap_or_default(),
            snapshot.message.clone().unwrap_or_default(),
            snapshot.hash.clone(),
            snapshot.last_check.as_millis().to_string(),
            snapshot.received_at.as_millis().to_string(),
        ]
    }))
}

fn ndjson_chunk<T: Serialize>(rows: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        // Serializing these plain structs cannot fail.
        let _ = serde_json::to_writer(&mut out, row);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn cells_a_spreadsheet_would_run_get_a_quote_that_one_strip_undoes() {
        for (value, cell) in [
            ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
            ("+1", "'+1"),
            ("-rf", "'-rf"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("'=already", "''=already"),
            ("''-twice", "'''-twice"),
            ("'plain", "'plain"),
            ("''", "''"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(spreadsheet_cell(value), cell, "{value:?}");
            let restored = match cell.strip_prefix('\'') {
                Some(rest) if rest.trim_start_matches('\'').starts_with(FORMULA_TRIGGERS) => rest,
                _ => cell,
            };
            assert_eq!(restored, value, "{cell:?}");
        }
    }

    #[test]
    fn accept_header_selects_exports() {
        let mut headers = HeaderMap::new();
        assert_eq!(negotiated_format(&headers), ExportFormat::Json);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/csv;q=0.9, */*"),
        );
        assert_eq!(negotiated_format(&headers), ExportFormat::Csv);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/x-ndjson"),
        );
        assert_eq!(negotiated_format(&headers), ExportFormat::Ndjson);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/csv"),
        );
        assert_eq!(negotiated_format(&headers), ExportFormat::Json);
    }
}
