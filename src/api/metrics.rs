//! `GET /metrics`: every target's latest state and the server's own metrics, in the Prometheus text
//! format.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use crate::error::{Problem, Result};
use crate::model::{StatusFilter, StatusRow, TargetState};

/// Media type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metrics.
///
/// Per target: `gitops_sync_status` (0 SYNCED, 1 OUT_OF_SYNC, 2 ERROR, as the Pushgateway-era
/// series), `gitops_target_state` (one series per state, 1 for the current one including STALE),
/// `gitops_drift_acknowledged` (1 while an acknowledgement covers the drift), `gitops_drift_count`,
/// `gitops_last_check_timestamp_seconds` and
/// `gitops_status_since_timestamp_seconds`. Then the server's own: `gitops_status_build_info`
/// (always 1, its labels say which build answers), snapshots ingested by result, request latency
/// by route, storage commit latency.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse> {
    let rows = state.status_rows(&StatusFilter::default()).await?;
    let mut body = target_exposition(&rows);
    body.push_str(&build_info());
    body.push_str(&state.telemetry.render());
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], body))
}

/// The per-target gauges. Written here rather than through the `metrics` exporter because its
/// label sanitizer takes a backslash before a quote or backslash for an escape already made, which
/// would change repo and server names that contain backslashes.
fn target_exposition(rows: &[StatusRow]) -> String {
    let mut out = String::with_capacity(256 + rows.len() * 512);
    family(
        &mut out,
        "gitops_sync_status",
        "Result of the latest drift check: 0 SYNCED, 1 OUT_OF_SYNC (drift), 2 ERROR (the check \
         failed). Same meaning as the Pushgateway-era series; ignores staleness.",
    );
    for row in rows {
        sample(
            &mut out,
            "gitops_sync_status",
            row,
            None,
            row.sync_status.code(),
        );
    }
    family(
        &mut out,
        "gitops_target_state",
        "1 for the target's current state, 0 for the others; STALE when no check arrived within \
         the target's stale-after.",
    );
    for row in rows {
        for state in TargetState::ALL {
            let value = i64::from(row.state == state);
            sample(&mut out, "gitops_target_state", row, Some(state), value);
        }
    }
    family(
        &mut out,
        "gitops_drift_acknowledged",
        "1 while an acknowledgement covers the target's drift (POST /api/acks), 0 otherwise.",
    );
    for row in rows {
        let value = i64::from(row.acknowledged.is_some());
        sample(&mut out, "gitops_drift_acknowledged", row, None, value);
    }
    family(
        &mut out,
        "gitops_drift_count",
        "Number of drifted files in the latest check.",
    );
    for row in rows {
        sample(&mut out, "gitops_drift_count", row, None, row.drift_count);
    }
    family(
        &mut out,
        "gitops_last_check_timestamp_seconds",
        "When the latest check ran, in Unix seconds.",
    );
    for row in rows {
        let seconds = seconds(row.last_check.as_millis());
        sample(
            &mut out,
            "gitops_last_check_timestamp_seconds",
            row,
            None,
            seconds,
        );
    }
    family(
        &mut out,
        "gitops_status_since_timestamp_seconds",
        "Start of the current unbroken run of the latest sync_status, in Unix seconds.",
    );
    for row in rows {
        let seconds = seconds(row.status_since.as_millis());
        sample(
            &mut out,
            "gitops_status_since_timestamp_seconds",
            row,
            None,
            seconds,
        );
    }
    out
}

/// `gitops_status_build_info{version,os,arch} 1`, the Prometheus convention for telling which
/// build runs where (join on it, or alert when replicas disagree).
fn build_info() -> String {
    let mut out = String::new();
    family(
        &mut out,
        "gitops_status_build_info",
        "Always 1; the labels name the running build: package version, OS and CPU architecture.",
    );
    let _ = writeln!(
        out,
        "gitops_status_build_info{{version=\"{}\",os=\"{}\",arch=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    out
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

fn sample(
    out: &mut String,
    name: &str,
    row: &StatusRow,
    state: Option<TargetState>,
    value: impl std::fmt::Display,
) {
    let _ = write!(
        out,
        "{name}{{repo=\"{}\",server=\"{}\"",
        LabelValue(&row.repo),
        LabelValue(&row.server)
    );
    if let Some(state) = state {
        let _ = write!(out, ",state=\"{}\"", state.as_str());
    }
    let _ = writeln!(out, "}} {value}");
}

/// A label value escaped as the text format requires: backslash, double quote and line feed.
struct LabelValue<'a>(&'a str);

impl std::fmt::Display for LabelValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Unix milliseconds as seconds; `f64`'s shortest round-trip form keeps the milliseconds exact.
fn seconds(millis: i64) -> f64 {
    millis as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(
            LabelValue(r#"a\"b\\c"#).to_string(),
            r#"a\\\"b\\\\c"#,
            "every backslash doubled, every quote escaped"
        );
        assert_eq!(LabelValue("x\ny").to_string(), "x\\ny");
        assert_eq!(LabelValue("grüße").to_string(), "grüße");
    }

    #[test]
    fn seconds_keep_millisecond_precision() {
        assert_eq!(seconds(1_776_767_400_000).to_string(), "1776767400");
        assert_eq!(seconds(1_776_767_400_120).to_string(), "1776767400.12");
        assert_eq!(seconds(1_776_767_400_007).to_string(), "1776767400.007");
    }
}
