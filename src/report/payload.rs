//! Turns what the hosts reported into `POST /api/status` bodies: which server each snapshot names,
//! `/etc/rsyslog.conf` -> `rsyslog.conf`, and the commit and run link from the CI environment.

use serde::Serialize;

use super::parse::{PlaybookRun, Verdict};
use crate::model::{FileEntry, MAX_MESSAGE_CHARS, SyncStatus};
use crate::timestamp::Timestamp;

/// One snapshot as the client sends it: the seed's fields plus `revision`, `run_url`, `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub repo: String,
    pub server: String,
    pub sync_status: SyncStatus,
    pub drift_count: usize,
    pub files: Vec<FileEntry>,
    /// The same instant on every retry, so the server can recognise a replay.
    pub last_check: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What every snapshot of one run shares.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub repo: String,
    /// `SERVER_NAME`: the name of the server when the run checked one host.
    pub server_name: Option<String>,
    /// Removed from the front of each drifted path (`/etc/`); empty keeps paths as printed.
    pub strip_prefix: String,
    pub ci: CiContext,
    pub last_check: Timestamp,
}

/// Why a run gives nothing to post.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoResult {
    #[error(
        "no drift-check result: no host printed DRIFTED_FILES= or SYNC_STATUS= \
         (is this the drift-check playbook, and does it run the marker tasks?)"
    )]
    NoMarkers,
    #[error("no drift-check result: no host ran and ansible printed no error")]
    NoHosts,
    #[error(
        "ansible failed before any host ran ({0}); set SERVER_NAME to record this as an ERROR \
         snapshot"
    )]
    UnnamedFailure(String),
}

/// One snapshot per host, or one ERROR snapshot for `SERVER_NAME` when ansible failed before any
/// host ran. A host that printed no marker while others did is an ERROR: its check did not finish.
pub fn build_reports(run: &PlaybookRun, context: &RunContext) -> Result<Vec<Report>, NoResult> {
    if run.hosts.is_empty() {
        let error = run.error.clone().ok_or(NoResult::NoHosts)?;
        let server = context
            .server_name
            .clone()
            .ok_or_else(|| NoResult::UnnamedFailure(error.clone()))?;
        return Ok(vec![report(context, server, Verdict::Error(error))]);
    }
    let verdicts: Vec<Verdict> = run.hosts.iter().map(|host| host.verdict()).collect();
    if verdicts
        .iter()
        .all(|verdict| *verdict == Verdict::NoMarkers)
    {
        return Err(NoResult::NoMarkers);
    }
    let single_host = run.hosts.len() == 1;
    Ok(run
        .hosts
        .iter()
        .zip(verdicts)
        .map(|(host, verdict)| {
            let server = match &context.server_name {
                Some(name) if single_host => name.clone(),
                _ => host.host.clone(),
            };
            report(context, server, verdict)
        })
        .collect())
}

fn report(context: &RunContext, server: String, verdict: Verdict) -> Report {
    let (sync_status, files, message) = match verdict {
        Verdict::Synced => (SyncStatus::Synced, Vec::new(), None),
        Verdict::OutOfSync(paths) => (
            SyncStatus::OutOfSync,
            file_entries(&paths, &context.strip_prefix),
            None,
        ),
        Verdict::Error(reason) => (SyncStatus::Error, Vec::new(), Some(clean_message(&reason))),
        Verdict::NoMarkers => (
            SyncStatus::Error,
            Vec::new(),
            Some(
                "the drift check printed no DRIFTED_FILES= or SYNC_STATUS= marker for this host"
                    .to_owned(),
            ),
        ),
    };
    Report {
        repo: context.repo.clone(),
        server,
        sync_status,
        drift_count: files.len(),
        files,
        last_check: context.last_check,
        revision: context.ci.revision.clone(),
        run_url: context.ci.run_url.clone(),
        message,
    }
}

/// The drifted files named relative to the managed root, each once, in the playbook's order.
fn file_entries(paths: &[String], strip_prefix: &str) -> Vec<FileEntry> {
    let mut entries: Vec<FileEntry> = Vec::with_capacity(paths.len());
    for path in paths {
        let name = relative_name(path, strip_prefix);
        if !entries.iter().any(|entry| entry.name == name) {
            entries.push(FileEntry { name });
        }
    }
    entries
}

/// `/etc/rsyslog.d/30-lab.conf` with prefix `/etc/` (or `/etc`) -> `rsyslog.d/30-lab.conf`.
/// Only whole path segments are removed; a path outside the prefix stays as it is.
pub fn relative_name(path: &str, strip_prefix: &str) -> String {
    if strip_prefix.is_empty() {
        return path.to_owned();
    }
    let root = strip_prefix.trim_end_matches('/');
    match path
        .strip_prefix(root)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(rest) if !rest.trim_start_matches('/').is_empty() => {
            rest.trim_start_matches('/').to_owned()
        }
        _ => path.to_owned(),
    }
}

/// A message the server accepts: no control characters but line breaks and tabs, at most
/// `MAX_MESSAGE_CHARS` characters, never empty.
fn clean_message(text: &str) -> String {
    let cleaned: String = text
        .trim()
        .chars()
        .map(|c| {
            if c.is_control() && !matches!(c, '\n' | '\r' | '\t') {
                ' '
            } else {
                c
            }
        })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if cleaned.is_empty() {
        "the drift check failed without a message".to_owned()
    } else {
        cleaned
    }
}

/// The commit and the link to the run, from the CI system's own variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CiContext {
    pub revision: Option<String>,
    pub run_url: Option<String>,
}

impl CiContext {
    /// Woodpecker and GitLab set `CI_COMMIT_SHA` and `CI_PIPELINE_URL`; GitHub Actions sets
    /// `GITHUB_SHA` and the parts of the run's URL. Empty variables count as unset.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let github_run = || {
            Some(format!(
                "{}/{}/actions/runs/{}",
                var("GITHUB_SERVER_URL")?.trim_end_matches('/'),
                var("GITHUB_REPOSITORY")?,
                var("GITHUB_RUN_ID")?
            ))
        };
        Self {
            revision: var("CI_COMMIT_SHA").or_else(|| var("GITHUB_SHA")),
            run_url: var("CI_PIPELINE_URL").or_else(github_run),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::report::parse::{HostOutput, parse_playbook_output};

    fn context(server_name: Option<&str>) -> RunContext {
        RunContext {
            repo: "rsyslog".to_owned(),
            server_name: server_name.map(str::to_owned),
            strip_prefix: "/etc/".to_owned(),
            ci: CiContext {
                revision: Some("3f2c1ab".to_owned()),
                run_url: Some("https://ci.example.org/repos/7/pipeline/912".to_owned()),
            },
            last_check: Timestamp::from_millis(1_776_767_400_000),
        }
    }

    fn host(name: &str, status: &str, files: &[&str]) -> HostOutput {
        HostOutput {
            host: name.to_owned(),
            drifted_files: Some(files.iter().map(|file| (*file).to_owned()).collect()),
            sync_status: Some(status.to_owned()),
            failure: None,
        }
    }

    fn run(hosts: Vec<HostOutput>) -> PlaybookRun {
        PlaybookRun { hosts, error: None }
    }

    #[test]
    fn the_seed_json_for_a_drifted_single_host_run_named_by_server_name() {
        let hosts = vec![host(
            "10.0.0.7",
            "OUT_OF_SYNC",
            &[
                "/etc/rsyslog.conf",
                "/etc/rsyslog.d/30-lab.conf",
                "/etc/rsyslog.conf",
            ],
        )];
        let reports = build_reports(&run(hosts), &context(Some("rsyslog-lab"))).unwrap();
        assert_eq!(
            serde_json::to_value(&reports).unwrap(),
            json!([{
                "repo": "rsyslog",
                "server": "rsyslog-lab",
                "sync_status": "OUT_OF_SYNC",
                "drift_count": 2,
                "files": [{ "name": "rsyslog.conf" }, { "name": "rsyslog.d/30-lab.conf" }],
                "last_check": "2026-04-21T10:30:00.000Z",
                "revision": "3f2c1ab",
                "run_url": "https://ci.example.org/repos/7/pipeline/912"
            }])
        );
    }

    #[test]
    fn several_hosts_keep_their_inventory_names() {
        let hosts = vec![host("lab-1", "SYNCED", &[]), host("lab-2", "SYNCED", &[])];
        let reports = build_reports(&run(hosts), &context(Some("rsyslog-lab"))).unwrap();
        let servers: Vec<&str> = reports
            .iter()
            .map(|report| report.server.as_str())
            .collect();
        assert_eq!(servers, ["lab-1", "lab-2"]);
        assert!(reports.iter().all(|report| report.files.is_empty()
            && report.drift_count == 0
            && report.message.is_none()));
    }

    #[test]
    fn no_markers_at_all_posts_nothing() {
        let silent = HostOutput {
            host: "lab".to_owned(),
            ..HostOutput::default()
        };
        assert_eq!(
            build_reports(&run(vec![silent.clone(), silent]), &context(None)),
            Err(NoResult::NoMarkers)
        );
        assert_eq!(
            build_reports(&run(Vec::new()), &context(None)),
            Err(NoResult::NoHosts)
        );
    }

    #[test]
    fn a_run_that_reached_no_host_is_an_error_for_server_name_only() {
        let text = "[ERROR]: the playbook: drift-check.yml could not be found\n";
        let failed = parse_playbook_output(text);
        let reports = build_reports(&failed, &context(Some("rsyslog-lab"))).unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].server, "rsyslog-lab");
        assert_eq!(reports[0].sync_status, SyncStatus::Error);
        assert_eq!(reports[0].message.as_deref(), Some(text.trim()));
        assert!(matches!(
            build_reports(&failed, &context(None)),
            Err(NoResult::UnnamedFailure(_))
        ));
    }

    #[test]
    fn error_messages_are_made_acceptable_to_the_server() {
        let mut failing = host("lab", "ERROR", &[]);
        failing.sync_status = None;
        failing.failure = Some(crate::report::parse::Failure {
            task: Some("Compare".to_owned()),
            message: format!("bad\u{7}bell\n{}", "x".repeat(MAX_MESSAGE_CHARS)),
            unreachable: false,
        });
        let reports = build_reports(&run(vec![failing]), &context(None)).unwrap();
        let message = reports[0].message.clone().unwrap();
        assert!(
            message.starts_with("task \"Compare\" failed: bad bell\nxxx"),
            "{message}"
        );
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS);
    }

    #[test]
    fn relative_names_strip_whole_segments_only() {
        for (path, prefix, expected) in [
            ("/etc/rsyslog.conf", "/etc/", "rsyslog.conf"),
            (
                "/etc/rsyslog.d/30-lab.conf",
                "/etc",
                "rsyslog.d/30-lab.conf",
            ),
            ("/etcetera/x.conf", "/etc", "/etcetera/x.conf"),
            ("/opt/app/app.conf", "/etc/", "/opt/app/app.conf"),
            ("/etc/", "/etc/", "/etc/"),
            ("/srv/root/a.conf", "/srv/root//", "a.conf"),
            ("/etc/rsyslog.conf", "", "/etc/rsyslog.conf"),
            ("/etc/rsyslog.conf", "/", "etc/rsyslog.conf"),
        ] {
            assert_eq!(relative_name(path, prefix), expected, "{path} - {prefix}");
        }
    }

    #[test]
    fn ci_metadata_from_woodpecker_gitlab_and_github() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        assert_eq!(
            CiContext::from_env(env(&[
                ("CI_COMMIT_SHA", "3f2c1ab"),
                (
                    "CI_PIPELINE_URL",
                    "https://ci.example.org/repos/7/pipeline/912"
                ),
            ])),
            CiContext {
                revision: Some("3f2c1ab".to_owned()),
                run_url: Some("https://ci.example.org/repos/7/pipeline/912".to_owned()),
            }
        );
        assert_eq!(
            CiContext::from_env(env(&[
                ("GITHUB_SHA", "9e1d"),
                ("GITHUB_SERVER_URL", "https://github.com/"),
                ("GITHUB_REPOSITORY", "acme/rsyslog"),
                ("GITHUB_RUN_ID", "42"),
            ])),
            CiContext {
                revision: Some("9e1d".to_owned()),
                run_url: Some("https://github.com/acme/rsyslog/actions/runs/42".to_owned()),
            }
        );
        assert_eq!(
            CiContext::from_env(env(&[("CI_COMMIT_SHA", " "), ("GITHUB_RUN_ID", "42")])),
            CiContext::default()
        );
    }
}
