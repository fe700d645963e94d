//! `GET /badge.svg`: a shields-style SVG badge with one target's state, for READMEs and wikis.

use std::fmt::Write as _;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::error::{ApiError, Problem, Result};
use crate::model::{TargetKey, TargetParams, TargetState};

/// Media type of the badge.
pub const SVG: &str = "image/svg+xml";

/// Status badge of one target.
///
/// A flat, shields-style SVG: the server's name on the left, the target's state on the right in
/// its color (green synced, orange out of sync, red error, yellow stale, grey unknown for a target
/// that never reported). Answers `Cache-Control: no-cache` with an `ETag`, so image proxies
/// revalidate on every view and get `304` while the state is unchanged.
#[utoipa::path(
    get,
    path = "/badge.svg",
    tag = "badges",
    params(TargetParams),
    responses(
        (status = 200, description = "The badge", body = String, content_type = "image/svg+xml",
         headers(("etag" = String, description = "Changes when the badge does"),
                 ("cache-control" = String, description = "`no-cache`: revalidate on every view"))),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
        (status = 400, description = "`repo` or `server` is missing or invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn badge(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let target = TargetKey::from_query(query.as_deref()).map_err(ApiError::InvalidQuery)?;
    let rows = state.status_rows(&target.status_filter()).await?;
    let svg = render(&target.server, rows.first().map(|row| row.state));
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

/// Longest label shown, in characters; longer server names are cut with an ellipsis.
const MAX_LABEL_CHARS: usize = 40;

/// Text and color of the right half for a state; `None` is a target that never reported.
fn message(state: Option<TargetState>) -> (&'static str, &'static str) {
    match state {
        Some(TargetState::Synced) => ("synced", "#2e7d32"),
        Some(TargetState::OutOfSync) => ("out of sync", "#e65100"),
        Some(TargetState::Error) => ("error", "#c62828"),
        Some(TargetState::Stale) => ("stale", "#8d6e00"),
        None => ("unknown", "#6e6e6e"),
    }
}

/// Rough width of text in 11px Verdana: what shields-style badges are set in.
fn text_width(text: &str) -> usize {
    text.chars().count() * 7 + 10
}

/// The badge for `label` (the server) in `state`.
fn render(label: &str, state: Option<TargetState>) -> String {
    let label = if label.chars().count() > MAX_LABEL_CHARS {
        let cut: String = label.chars().take(MAX_LABEL_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        label.to_owned()
    };
    let (text, color) = message(state);
    let (left, right) = (text_width(&label), text_width(text));
    let width = left + right;
    let title = xml_escape(&format!("{label}: {text}"));
    let label = xml_escape(&label);
    // Centers are in tenths of a pixel with the text scaled down, as shields does, so half
    // pixels land exactly.
    let (left_center, right_center) = (left * 5, left * 10 + right * 5);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" aria-label="{title}"><title>{title}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/><rect x="{left}" width="{right}" height="20" fill="{color}"/><rect width="{width}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="110" transform="scale(.1)"><text x="{left_center}" y="150" fill="#010101" fill-opacity=".3">{label}</text><text x="{left_center}" y="140">{label}</text><text x="{right_center}" y="150" fill="#010101" fill-opacity=".3">{text}</text><text x="{right_center}" y="140">{text}</text></g></svg>"##
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
        let svg = render(r#"<a href="x">&'"#, Some(TargetState::Synced));
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
