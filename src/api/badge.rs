//! `GET /badge.svg`: a shields-style SVG badge with one target's state, for READMEs and wikis.

use std::fmt::Write as _;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::error::{ApiError, Problem, Result};
use crate::model::lifecycle::AckSummary;
use crate::model::{BadgeLabel, BadgeParams, StatusRow, SyncStatus, TargetState};

/// Media type of the badge.
pub const SVG: &str = "image/svg+xml";

/// Status badge of one target.
///
/// A flat, shields-style SVG: the server's name on the left (or, with `label`, the repo or both),
/// the target's state on the right in its color (green synced, orange out of sync, red error,
/// yellow stale, grey unknown for a target that never reported). Drift or an error that someone
/// acknowledged (`POST /api/acks`) says so, `out of sync (ack)` or `error (ack)`, in steel blue
/// (`#3a6ea5`) while the acknowledgement applies; its title (the tooltip) names who acknowledged
/// it, until when and why. A stale badge also says what the last check
/// found, `stale (last: out of sync, 2 files)`, acknowledged or not: an acknowledgement accepts
/// drift, not a silent reporter. Answers `Cache-Control: no-cache` with an `ETag`, so image
/// proxies revalidate on every view and get `304` while the state is unchanged.
#[utoipa::path(
    get,
    path = "/badge.svg",
    tag = "badges",
    params(BadgeParams),
    responses(
        (status = 200, description = "The badge", body = String, content_type = "image/svg+xml",
         headers(("etag" = String, description = "Changes when the badge does"),
                 ("cache-control" = String, description = "`no-cache`: revalidate on every view"))),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
        (status = 400, description = "`repo` or `server` is missing or invalid, or `label` is not one of its values; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn badge(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let (target, label) =
        BadgeLabel::from_query(query.as_deref()).map_err(ApiError::InvalidQuery)?;
    let rows = state.status_rows(&target.status_filter()).await?;
    let svg = render(&label.text(&target), rows.first());
    let etag = format!("\"{}\"", &hex(&Sha256::digest(svg.as_bytes()))[..32]);
    let etag = HeaderValue::from_str(&etag).expect("hex in quotes is a valid header value");
    let cache = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag.clone()),
    ];
    if headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .any(|given| given == etag || given == "*")
    {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    Ok((cache, [(header::CONTENT_TYPE, SVG)], svg).into_response())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// Longest label shown, in characters; longer names are cut with an ellipsis.
const MAX_LABEL_CHARS: usize = 40;

/// Color of a badge whose drift or error is acknowledged: calmer than orange and red, and
/// unlike any state's.
const ACKNOWLEDGED_COLOR: &str = "#3a6ea5";

/// Text and color of the right half for a target; `None` is a target that never reported.
fn message(row: Option<&StatusRow>) -> (String, &'static str) {
    let Some(row) = row else {
        return ("unknown".to_owned(), "#6e6e6e");
    };
    let (text, color) = state_text(row.state);
    if shown_ack(row).is_some() {
        return (format!("{text} (ack)"), ACKNOWLEDGED_COLOR);
    }
    if !row.stale {
        return (text.to_owned(), color);
    }
    let last = state_text(row.sync_status.into()).0;
    let text = match (row.sync_status, row.drift_count) {
        (SyncStatus::OutOfSync, 1) => format!("{text} (last: {last}, 1 file)"),
        (SyncStatus::OutOfSync, count) => format!("{text} (last: {last}, {count} files)"),
        _ => format!("{text} (last: {last})"),
    };
    (text, color)
}

/// The acknowledgement the badge shows: the one that applies, unless the target is stale (stale
/// says the reporter is silent, which no acknowledgement accepts).
fn shown_ack(row: &StatusRow) -> Option<&AckSummary> {
    row.acknowledged.as_ref().filter(|_| !row.stale)
}

fn state_text(state: TargetState) -> (&'static str, &'static str) {
    match state {
        TargetState::Synced => ("synced", "#2e7d32"),
        TargetState::OutOfSync => ("out of sync", "#e65100"),
        TargetState::Error => ("error", "#c62828"),
        TargetState::Stale => ("stale", "#8d6e00"),
    }
}

/// Rough width of text in 11px Verdana: what shields-style badges are set in.
fn text_width(text: &str) -> usize {
    text.chars().count() * 7 + 10
}

/// The badge for `label` and the target's latest status.
fn render(label: &str, row: Option<&StatusRow>) -> String {
    let label = if label.chars().count() > MAX_LABEL_CHARS {
        let cut: String = label.chars().take(MAX_LABEL_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        label.to_owned()
    };
    let (text, color) = message(row);
    let (left, right) = (text_width(&label), text_width(&text));
    let width = left + right;
    let name = xml_escape(&format!("{label}: {text}"));
    let title = match row.and_then(shown_ack) {
        Some(ack) => xml_escape(&format!(
            "{label}: {text}, acknowledged by {} until {}: {}",
            ack.by,
            ack.until,
            ack.reason.split_whitespace().collect::<Vec<_>>().join(" ")
        )),
        None => name.clone(),
    };
    let (label, text) = (xml_escape(&label), xml_escape(&text));
    // Centers are in tenths of a pixel with the text scaled down, as shields does, so half
    // pixels land exactly.
    let (left_center, right_center) = (left * 5, left * 10 + right * 5);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" aria-label="{name}"><title>{title}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/><rect x="{left}" width="{right}" height="20" fill="{color}"/><rect width="{width}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="110" transform="scale(.1)"><text x="{left_center}" y="150" fill="#010101" fill-opacity=".3">{label}</text><text x="{left_center}" y="140">{label}</text><text x="{right_center}" y="150" fill="#010101" fill-opacity=".3">{text}</text><text x="{right_center}" y="140">{text}</text></g></svg>"##
    )
}

fn xml_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_in_the_label() {
        let svg = render(r#"<a href="x">&'"#, None);
        assert!(
            svg.contains("&lt;a href=&quot;x&quot;&gt;&amp;&apos;"),
            "{svg}"
        );
        assert!(!svg.contains("<a "), "{svg}");
    }

    #[test]
    fn long_labels_are_cut() {
        let svg = render(&"x".repeat(300), None);
        assert!(svg.contains(&format!("{}…", "x".repeat(39))), "{svg}");
        assert!(!svg.contains(&"x".repeat(41)));
    }
}
