//! Turns what the hosts reported into `POST /api/status` bodies: which server each snapshot names,
//! `/etc/rsyslog.conf` -> `rsyslog.conf`, a file list cut to what the server takes, and the commit
//! and run link from the CI environment.

use std::collections::HashSet;

use serde::Serialize;

use super::parse::{PlaybookRun, Verdict};
use crate::model::{FileEntry, MAX_FILES, MAX_MESSAGE_CHARS, SyncStatus};
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
    /// How the state was decided, when the step output should say so; not sent.
    #[serde(skip)]
    pub note: Option<&'static str>,
}

/// The step output's note on a SYNCED decided from the recap alone.
pub const SYNCED_WITHOUT_MARKERS: &str = "no DRIFTED_FILES= or SYNC_STATUS= marker, and the PLAY \
     RECAP shows the run completed with no failed or unreachable task: the seed's playbook prints \
     its markers only on drift, so this is SYNCED";

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
        "no drift-check result: no host printed DRIFTED_FILES= or SYNC_STATUS=, and no PLAY RECAP \
         line shows a host whose run completed (was the output cut short, or did no task run?)"
    )]
    NoCompletedRun,
    #[error("no drift-check result: no host ran and ansible printed no error")]
    NoHosts,
    #[error(
        "ansible failed before any host ran ({0}); set --server / SERVER_NAME to record this as \
         an ERROR snapshot"
    )]
    UnnamedFailure(String),
}

/// One snapshot per host, or one ERROR snapshot for `SERVER_NAME` when ansible failed before any
/// host ran. A host without markers whose run completed is SYNCED; one whose run did not complete
/// is an ERROR, unless no host completed at all: then nothing is posted.
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
        .all(|verdict| matches!(verdict, Verdict::Unfinished(_)))
    {
        return Err(NoResult::NoCompletedRun);
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
    let mut note = None;
    let (sync_status, files, drift_count, message) = match verdict {
        Verdict::Synced => (SyncStatus::Synced, Vec::new(), 0, None),
        Verdict::CompletedWithoutMarkers => {
            note = Some(SYNCED_WITHOUT_MARKERS);
            (SyncStatus::Synced, Vec::new(), 0, None)
        }
        Verdict::OutOfSync(paths) => {
            let names = file_names(&paths, &context.strip_prefix);
            let drift_count = names.len();
            let (names, message) = cut_to_limit(names, MAX_FILES);
            let files = names.into_iter().map(|name| FileEntry { name }).collect();
            (SyncStatus::OutOfSync, files, drift_count, message)
        }
        Verdict::Error(reason) | Verdict::Unfinished(reason) => (
            SyncStatus::Error,
            Vec::new(),
            0,
            Some(clean_message(&reason)),
        ),
    };
    Report {
        repo: context.repo.clone(),
        server,
        sync_status,
        drift_count,
        files,
        last_check: context.last_check,
        revision: context.ci.revision.clone(),
        run_url: context.ci.run_url.clone(),
        message,
        note,
    }
}

/// The drifted files named relative to the managed root, each once, in the playbook's order.
fn file_names(paths: &[String], strip_prefix: &str) -> Vec<String> {
    let mut seen = HashSet::with_capacity(paths.len());
    paths
        .iter()
        .map(|path| relative_name(path, strip_prefix))
        .filter(|name| seen.insert(name.clone()))
        .collect()
}

/// A list longer than the server takes keeps its first `limit` names in sorted order, with a
/// message saying it was cut; the caller keeps the true count for `drift_count`. A list that fits
/// is returned as it is, without a message.
pub fn cut_to_limit(mut names: Vec<String>, limit: usize) -> (Vec<String>, Option<String>) {
    let count = names.len();
    if count <= limit {
        return (names, None);
    }
    names.sort_unstable();
    names.truncate(limit);
    let message = format!(
        "the drift check found {count} drifted files; the list was cut to the first {limit} \
         names in sorted order (the most a snapshot holds), drift_count has the true number"
    );
    (names, Some(message))
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
    use crate::report::parse::{HostOutput, Recap, parse_playbook_output};

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
            recap: None,
        }
    }

    /// A host that printed no marker; `ok` is its PLAY RECAP count, `None` without a recap line.
    fn silent(name: &str, ok: Option<u64>) -> HostOutput {
        HostOutput {
            host: name.to_owned(),
            recap: ok.map(|ok| Recap {
                ok,
                failed: 0,
                unreachable: 0,
            }),
            ..HostOutput::default()
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
    fn a_completed_run_without_markers_is_the_seed_synced_json() {
        let reports = build_reports(
            &run(vec![silent("10.0.0.7", Some(4))]),
            &context(Some("rsyslog-lab")),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&reports).unwrap(),
            json!([{
                "repo": "rsyslog",
                "server": "rsyslog-lab",
                "sync_status": "SYNCED",
                "drift_count": 0,
                "files": [],
                "last_check": "2026-04-21T10:30:00.000Z",
                "revision": "3f2c1ab",
                "run_url": "https://ci.example.org/repos/7/pipeline/912"
            }])
        );
        assert_eq!(reports[0].note, Some(SYNCED_WITHOUT_MARKERS));
    }

    #[test]
    fn the_seed_playbook_on_two_hosts_one_drifted_one_clean() {
        let mut drifted = host("lab-1", "OUT_OF_SYNC", &["/etc/rsyslog.conf"]);
        drifted.recap = Some(Recap {
            ok: 5,
            failed: 1,
            unreachable: 0,
        });
        let hosts = vec![drifted, silent("lab-2", Some(3)), silent("lab-3", None)];
        let reports = build_reports(&run(hosts), &context(None)).unwrap();
        let states: Vec<(&str, SyncStatus, Option<&str>)> = reports
            .iter()
            .map(|r| (r.server.as_str(), r.sync_status, r.message.as_deref()))
            .collect();
        assert_eq!(
            states,
            [
                ("lab-1", SyncStatus::OutOfSync, None),
                ("lab-2", SyncStatus::Synced, None),
                (
                    "lab-3",
                    SyncStatus::Error,
                    Some(
                        "the drift check printed no DRIFTED_FILES= or SYNC_STATUS= marker for \
                         this host, and the output has no PLAY RECAP line for it: its run did \
                         not complete"
                    )
                ),
            ]
        );
    }

    #[test]
    fn no_completed_run_posts_nothing() {
        assert_eq!(
            build_reports(
                &run(vec![silent("lab", None), silent("lab2", Some(0))]),
                &context(None)
            ),
            Err(NoResult::NoCompletedRun)
        );
        assert_eq!(
            build_reports(&run(Vec::new()), &context(None)),
            Err(NoResult::NoHosts)
        );
    }

    #[test]
    fn a_list_longer_than_the_limit_keeps_the_first_names_in_sorted_order() {
        let names = |list: &[&str]| list.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            cut_to_limit(names(&["c", "a", "b"]), 3),
            (names(&["c", "a", "b"]), None)
        );
        assert_eq!(
            cut_to_limit(names(&["d", "b", "c", "a"]), 2),
            (
                names(&["a", "b"]),
                Some(
                    "the drift check found 4 drifted files; the list was cut to the first 2 \
                     names in sorted order (the most a snapshot holds), drift_count has the \
                     true number"
                        .to_owned()
                )
            )
        );
    }

    #[test]
    fn twelve_thousand_drifted_files_are_recorded_cut_with_the_true_count() {
        let paths: Vec<String> = (0..12_000)
            .rev()
            .map(|n| format!("/etc/conf.d/{n:05}.conf"))
            .collect();
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        let reports = build_reports(
            &run(vec![host("lab", "OUT_OF_SYNC", &paths)]),
            &context(None),
        )
        .unwrap();
        let report = &reports[0];
        assert_eq!(report.sync_status, SyncStatus::OutOfSync);
        assert_eq!(report.drift_count, 12_000);
        assert_eq!(report.files.len(), MAX_FILES);
        assert_eq!(report.files[0].name, "conf.d/00000.conf");
        assert_eq!(report.files[MAX_FILES - 1].name, "conf.d/09999.conf");
        assert_eq!(
            report.message.as_deref(),
            Some(
                "the drift check found 12000 drifted files; the list was cut to the first 10000 \
                 names in sorted order (the most a snapshot holds), drift_count has the true \
                 number"
            )
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
