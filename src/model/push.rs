//! The Pushgateway push path's input: the grouping key of `/metrics/job/{job}/{name}/{value}...`
//! (Pushgateway's URL, `@base64` values included) and the `gitops_sync_status` sample of a
//! Prometheus text exposition body, validated into a [`NewSnapshot`] by `POST /api/status`'s own
//! rules ([`SnapshotIn::validate`]).
//!
//! What Pushgateway does is the reference: a label name ending in `@base64` carries its value in
//! URL-safe base64 (padding optional, a lone `=` for the empty value), the grouping key's labels
//! override those of the pushed samples, and a pushed sample may not carry a timestamp. Labels of
//! the grouping key other than `job`, `repo` and `server` (an `instance`, say) are accepted and
//! ignored; so is every other metric of the body.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use percent_encoding::percent_decode_str;

use super::lenient::Lenient;
use super::{FieldError, NewSnapshot, SnapshotIn, SyncStatus};
use crate::timestamp::Timestamp;

/// The metric whose value is the drift check's result.
pub const SYNC_STATUS_METRIC: &str = "gitops_sync_status";

/// Marks a label name in the path whose value is base64-encoded, as Pushgateway does.
const BASE64_SUFFIX: &str = "@base64";

/// URL-safe base64 as Pushgateway decodes it (Go's `RawURLEncoding`): padding trimmed before,
/// and bits after the last whole byte ignored.
const PUSHGATEWAY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// The canonical push path, for messages.
const PUSH_PATH: &str = "/metrics/job/{job}/repo/{repo}/server/{server}";

/// The labels of a push URL, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupingKey {
    /// Every label, `job` included, by name.
    pub labels: BTreeMap<String, String>,
}

impl GroupingKey {
    /// Reads a request path `/metrics/job/{job}/{name}/{value}/...` (still percent-encoded) into
    /// the labels that could be read, naming every problem in `errors`: an odd number of
    /// segments, a bad label name, a repeated label, bad base64, a value that is not UTF-8, an
    /// empty job.
    pub fn read(path: &str, errors: &mut Vec<FieldError>) -> Self {
        let rest = path.strip_prefix("/metrics/").unwrap_or(path);
        let segments: Vec<&str> = rest.split('/').collect();
        let mut labels = BTreeMap::new();
        if segments.len() % 2 != 0 {
            errors.push(FieldError::new(
                "path",
                format!(
                    "must be /metrics/job/{{job}} followed by label name/value pairs, e.g. \
                     {PUSH_PATH}; got an odd number of segments after /metrics/ (a trailing \
                     slash?)"
                ),
            ));
            return Self { labels };
        }
        for (index, pair) in segments.chunks_exact(2).enumerate() {
            let Some((name, value)) = label(pair[0], pair[1], errors) else {
                continue;
            };
            if index == 0 && name != "job" {
                errors.push(FieldError::new(
                    "path",
                    format!("must start with /metrics/job/{{job}}, e.g. {PUSH_PATH}"),
                ));
            }
            if labels.contains_key(&name) {
                errors.push(FieldError::new(
                    name.clone(),
                    "is given more than once in the path",
                ));
                continue;
            }
            labels.insert(name, value);
        }
        if labels.get("job").is_some_and(String::is_empty) {
            errors.push(FieldError::new("job", "must not be empty"));
        }
        Self { labels }
    }

    /// The value of label `name`, when the path has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// One decoded label of the path, or `None` with its problem in `errors`.
fn label(
    raw_name: &str,
    raw_value: &str,
    errors: &mut Vec<FieldError>,
) -> Option<(String, String)> {
    let Ok(name) = percent_decode_str(raw_name).decode_utf8() else {
        errors.push(FieldError::new("path", "a label name is not UTF-8"));
        return None;
    };
    let (name, base64) = match name.strip_suffix(BASE64_SUFFIX) {
        Some(name) => (name.to_owned(), true),
        None => (name.into_owned(), false),
    };
    if !is_label_name(&name) || name.starts_with("__") {
        errors.push(FieldError::new(
            "path",
            format!(
                "{name:?} is not a label name: letters, digits and underscores, not starting \
                 with a digit or with __"
            ),
        ));
        return None;
    }
    let bytes: Vec<u8> = percent_decode_str(raw_value).collect();
    let bytes = if base64 {
        // Pushgateway ignores padding, so `=` alone is the empty value.
        let unpadded = bytes
            .iter()
            .rposition(|&byte| byte != b'=')
            .map_or(&[][..], |last| &bytes[..=last]);
        match PUSHGATEWAY_BASE64.decode(unpadded) {
            Ok(decoded) => decoded,
            Err(_) => {
                errors.push(FieldError::new(
                    name,
                    "is not URL-safe base64 (RFC 4648 section 5, as Pushgateway's @base64 \
                     takes; = alone for the empty value)",
                ));
                return None;
            }
        }
    } else {
        bytes
    };
    match String::from_utf8(bytes) {
        Ok(value) => Some((name, value)),
        Err(_) => {
            errors.push(FieldError::new(name, "must be UTF-8"));
            None
        }
    }
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The drift check's result a text exposition body reports: the value of its
/// `gitops_sync_status` samples, which must agree. Lines of other metrics and comments are not
/// read beyond their name.
pub fn sync_status_of(body: &[u8]) -> Result<SyncStatus, Vec<FieldError>> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(vec![FieldError::new(
            "body",
            "must be UTF-8 text in the Prometheus text exposition format",
        )]);
    };
    let mut errors = Vec::new();
    let mut found: Vec<(usize, SyncStatus)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        if &line[..name_end] != SYNC_STATUS_METRIC {
            continue;
        }
        match sample_value(&line[name_end..]) {
            Ok(status) => found.push((index + 1, status)),
            Err(problem) => errors.push(FieldError::new(
                SYNC_STATUS_METRIC,
                format!("line {}: {problem}", index + 1),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    match found.as_slice() {
        [] => Err(vec![FieldError::new(
            SYNC_STATUS_METRIC,
            "is missing: the body must hold a sample such as `gitops_sync_status 1` (0 SYNCED, \
             1 OUT_OF_SYNC, 2 ERROR) in the Prometheus text format",
        )]),
        [(_, first), rest @ ..] => match rest.iter().find(|(_, status)| status != first) {
            None => Ok(*first),
            Some((line, other)) => Err(vec![FieldError::new(
                SYNC_STATUS_METRIC,
                format!(
                    "has conflicting values: {} on line {} and {} on line {line}; push one \
                     result per target",
                    first.code(),
                    found[0].0,
                    other.code()
                ),
            )]),
        },
    }
}

/// The status a sample line reports, given what follows the metric name: an optional label set,
/// blanks, the value, and no timestamp.
fn sample_value(rest: &str) -> Result<SyncStatus, String> {
    let rest = match rest.strip_prefix('{') {
        Some(labels) => skip_label_set(labels)?,
        None => rest,
    };
    let mut fields = rest.split([' ', '\t']).filter(|field| !field.is_empty());
    let Some(value) = fields.next() else {
        return Err("has no value".to_owned());
    };
    if !rest.starts_with([' ', '\t']) {
        return Err("the value must follow the name or label set after a space".to_owned());
    }
    if fields.next().is_some() {
        return Err(
            "must not carry a timestamp (Pushgateway refuses them too): the server records \
             when it received the push"
                .to_owned(),
        );
    }
    let number: f64 = value
        .parse()
        .map_err(|_| format!("the value {value:?} is not a number"))?;
    SyncStatus::ALL
        .into_iter()
        .find(|status| number == status.code() as f64)
        .ok_or_else(|| format!("must be 0 (SYNCED), 1 (OUT_OF_SYNC) or 2 (ERROR), got {value}"))
}

/// What follows a label set `{name="value",...}` given after its `{`, or why it is malformed.
/// Values may hold `\\`, `\"` and `\n` escapes; a trailing comma is allowed, as in Prometheus.
fn skip_label_set(mut rest: &str) -> Result<&str, String> {
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if !is_label_name(name) {
            return Err("the label set is malformed: expected a label name or }".to_owned());
        }
        rest = rest[name_end..].trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('=')
            .map(|after| after.trim_start_matches([' ', '\t']))
            .and_then(|after| after.strip_prefix('"'))
            .ok_or_else(|| format!("the label {name} must be followed by =\"value\""))?;
        rest =
            skip_quoted(rest).ok_or_else(|| format!("the value of label {name} is malformed"))?;
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("the label set is malformed: expected , or } after a label".to_owned());
        }
    }
}

/// What follows a quoted label value given after its opening quote, or `None` when the value is
/// unterminated or holds an escape other than `\\`, `\"` or `\n`.
fn skip_quoted(text: &str) -> Option<&str> {
    let mut chars = text.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Some(&text[index + 1..]),
            '\\' => match chars.next() {
                Some((_, '\\' | '"' | 'n')) => {}
                _ => return None,
            },
            _ => {}
        }
    }
    None
}

/// A push as a snapshot: the target from the path, the result from the body, no files, checked
/// when received. Every problem of the path and of the body is named at once.
pub fn decode_push(
    path: &str,
    body: &[u8],
    received_at: Timestamp,
) -> Result<NewSnapshot, Vec<FieldError>> {
    let mut errors = Vec::new();
    let key = GroupingKey::read(path, &mut errors);
    let sync_status = sync_status_of(body).unwrap_or_else(|problems| {
        errors.extend(problems);
        // A stand-in: the body's problem is named already, and the rules still judge the path.
        SyncStatus::Synced
    });
    let mut target = |name: &str| match key.get(name) {
        Some(value) => Lenient::Read(value.to_owned()),
        None => {
            // Unless the path's shape, or this label's value, is named already.
            if !errors
                .iter()
                .any(|error| error.field == "path" || error.field == name)
            {
                errors.push(FieldError::new(
                    name,
                    format!("is required in the path: {PUSH_PATH}"),
                ));
            }
            // A stand-in that passes the rules, so only the missing label is named.
            Lenient::Read(name.to_owned())
        }
    };
    let input = SnapshotIn {
        repo: target("repo"),
        server: target("server"),
        sync_status: Lenient::Read(sync_status),
        ..SnapshotIn::default()
    };
    match input.validate(received_at) {
        Ok(snapshot) if errors.is_empty() => Ok(snapshot),
        Ok(_) => Err(errors),
        Err(rule_errors) => {
            errors.extend(rule_errors);
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2026-04-21T10:35:00Z").unwrap()
    }

    fn key(path: &str) -> Result<Vec<(String, String)>, Vec<String>> {
        let mut errors = Vec::new();
        let key = GroupingKey::read(path, &mut errors);
        if errors.is_empty() {
            Ok(key.labels.into_iter().collect())
        } else {
            Err(errors.into_iter().map(|error| error.field).collect())
        }
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn reads_the_grouping_key_in_any_order_with_base64_and_percent_encoded_values() {
        assert_eq!(
            key("/metrics/job/gitops_rsyslog/repo/rsyslog/server/rsyslog-lab"),
            Ok(pairs(&[
                ("job", "gitops_rsyslog"),
                ("repo", "rsyslog"),
                ("server", "rsyslog-lab")
            ]))
        );
        // prometheus_client sorts the labels and base64-encodes values with / or a space.
        assert_eq!(
            key("/metrics/job@base64/YS9i/instance/i/repo/r%20x/server@base64/cmFjay9sYWI="),
            Ok(pairs(&[
                ("instance", "i"),
                ("job", "a/b"),
                ("repo", "r x"),
                ("server", "rack/lab")
            ]))
        );
        // Padding is optional, `=` alone is the empty value, and `+` stays a plus in a path.
        assert_eq!(
            key("/metrics/job/j/repo@base64/cmFjay9sYWI/server@base64/=/x/a+b"),
            Ok(pairs(&[
                ("job", "j"),
                ("repo", "rack/lab"),
                ("server", ""),
                ("x", "a+b")
            ]))
        );
        // The URL-safe alphabet: `-` and `_` where standard base64 has `+` and `/`.
        assert_eq!(
            key("/metrics/job/j/server@base64/Pj4-Pz8_"),
            Ok(pairs(&[("job", "j"), ("server", ">>>???")]))
        );
    }

    #[test]
    fn names_every_problem_of_the_path() {
        assert_eq!(
            key("/metrics/job/j/repo/r/server/s/"),
            Err(vec!["path".into()])
        );
        assert_eq!(key("/metrics/job/j/repo"), Err(vec!["path".into()]));
        assert_eq!(
            key("/metrics/job/j/repo/a/repo/b/server@base64/!!/__x/1/9a/2/server/%FF"),
            Err(vec![
                "repo".into(),
                "server".into(),
                "path".into(),
                "path".into(),
                "server".into()
            ])
        );
        assert_eq!(key("/metrics/job/"), Err(vec!["job".into()]));
        assert_eq!(key("/metrics/job@base64/="), Err(vec!["job".into()]));
        assert_eq!(key("/metrics/jobs/j"), Err(vec!["path".into()]));
        // Standard base64's + and / are not URL-safe base64.
        assert_eq!(
            key("/metrics/job/j/server@base64/a+8"),
            Err(vec!["server".into()])
        );
    }

    fn status(body: &str) -> Result<SyncStatus, Vec<String>> {
        sync_status_of(body.as_bytes()).map_err(|errors| {
            errors
                .into_iter()
                .map(|error| format!("{}: {}", error.field, error.message))
                .collect()
        })
    }

    #[test]
    fn reads_the_value_of_the_seed_scripts_and_of_prometheus_client() {
        assert_eq!(
            status("gitops_sync_status{repo=\"rsyslog\",server=\"rsyslog-lab\"} 1\n"),
            Ok(SyncStatus::OutOfSync)
        );
        let client = "# HELP gitops_sync_status Drift.\n# TYPE gitops_sync_status gauge\n\
                      gitops_sync_status 2.0\n# HELP other x\nother{a=\"}\"} 7 123\n";
        assert_eq!(status(client), Ok(SyncStatus::Error));
        for (body, expected) in [
            ("gitops_sync_status 0", SyncStatus::Synced),
            ("  gitops_sync_status\t-0.0\r\n", SyncStatus::Synced),
            ("gitops_sync_status 1e0", SyncStatus::OutOfSync),
            ("gitops_sync_status{} 2", SyncStatus::Error),
            (
                "gitops_sync_status{a=\"x\\\"}\\\\\\n\", b = \"\",} 1",
                SyncStatus::OutOfSync,
            ),
            // Several samples that agree.
            (
                "gitops_sync_status{instance=\"a\"} 1\ngitops_sync_status{instance=\"b\"} 1.0",
                SyncStatus::OutOfSync,
            ),
        ] {
            assert_eq!(status(body), Ok(expected), "{body:?}");
        }
    }

    #[test]
    fn a_missing_malformed_or_conflicting_value_is_named() {
        let cases = [
            ("", "is missing"),
            ("gitops_sync_status_total 1\ngitops_sync 1", "is missing"),
            ("# gitops_sync_status 1", "is missing"),
            (
                "gitops_sync_status 3",
                "line 1: must be 0 (SYNCED), 1 (OUT_OF_SYNC) or 2",
            ),
            ("gitops_sync_status 0.5", "line 1: must be 0"),
            ("gitops_sync_status NaN", "line 1: must be 0"),
            ("gitops_sync_status +Inf", "line 1: must be 0"),
            (
                "gitops_sync_status one",
                "line 1: the value \"one\" is not a number",
            ),
            ("gitops_sync_status", "line 1: has no value"),
            (
                "gitops_sync_status 1 1776767400000",
                "line 1: must not carry a timestamp",
            ),
            (
                "gitops_sync_status{repo=\"a\"}1",
                "line 1: the value must follow",
            ),
            (
                "gitops_sync_status{repo=\"a} 1",
                "line 1: the value of label repo",
            ),
            (
                "gitops_sync_status{repo=\"\\t\"} 1",
                "line 1: the value of label repo",
            ),
            (
                "gitops_sync_status{repo=a} 1",
                "line 1: the label repo must be followed",
            ),
            (
                "gitops_sync_status{repo=\"a\" server=\"b\"} 1",
                "line 1: the label set is",
            ),
            (
                "gitops_sync_status{9=\"a\"} 1",
                "line 1: the label set is malformed",
            ),
            (
                "gitops_sync_status 0\n\ngitops_sync_status 1",
                "has conflicting values: 0 on line 1 and 1 on line 3",
            ),
        ];
        for (body, start) in cases {
            let errors = status(body).unwrap_err();
            assert_eq!(errors.len(), 1, "{body:?}: {errors:?}");
            let expected = format!("gitops_sync_status: {start}");
            assert!(errors[0].starts_with(&expected), "{body:?}: {errors:?}");
        }
        assert_eq!(
            status("gitops_sync_status 5\ngitops_sync_status x")
                .unwrap_err()
                .len(),
            2
        );
        assert_eq!(
            sync_status_of(b"gitops_sync_status \xff")
                .unwrap_err()
                .iter()
                .map(|error| error.field.as_str())
                .collect::<Vec<_>>(),
            ["body"]
        );
    }

    fn decode(path: &str, body: &str) -> Result<NewSnapshot, Vec<String>> {
        decode_push(path, body.as_bytes(), now())
            .map_err(|errors| errors.into_iter().map(|error| error.field).collect())
    }

    #[test]
    fn a_push_is_a_snapshot_with_no_files_checked_when_received() {
        let snapshot = decode(
            "/metrics/job/gitops_rsyslog/repo/%20rsyslog%20/server@base64/cmFjay9sYWI",
            "gitops_sync_status 1\n",
        )
        .unwrap();
        assert_eq!(
            snapshot,
            NewSnapshot {
                repo: "rsyslog".to_owned(),
                server: "rack/lab".to_owned(),
                sync_status: SyncStatus::OutOfSync,
                drift_count: 0,
                files: Vec::new(),
                last_check: now(),
                last_check_defaulted: true,
                received_at: now(),
                revision: None,
                run_url: None,
                message: None,
                stale_after_seconds: None,
            }
        );
    }

    #[test]
    fn a_push_names_the_problems_of_path_and_body_together() {
        assert_eq!(
            decode("/metrics/job/j/repo/r", "gitops_sync_status 1"),
            Err(vec!["server".into()])
        );
        assert_eq!(
            decode("/metrics/job/j", "gitops_sync_status 7"),
            Err(vec![
                "gitops_sync_status".into(),
                "repo".into(),
                "server".into()
            ])
        );
        // The rules of POST /api/status: no control characters, not empty, at most 256.
        assert_eq!(
            decode(
                "/metrics/job/j/repo@base64/=/server/a%09b",
                "gitops_sync_status 0"
            ),
            Err(vec!["repo".into(), "server".into()])
        );
        let long = "x".repeat(257);
        assert_eq!(
            decode(&format!("/metrics/job/j/repo/{long}/server/s"), "x 1"),
            Err(vec!["gitops_sync_status".into(), "repo".into()])
        );
        // A malformed path is named once, not followed by "repo is required".
        assert_eq!(
            decode("/metrics/job/j/repo", "gitops_sync_status 1"),
            Err(vec!["path".into()])
        );
    }
}
