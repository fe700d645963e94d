//! The `report` subcommand's flags and environment (and those of `report import-pushgateway`,
//! `report ack` and `report unack`), the exit codes their `--help` lists, and where requests go:
//! `GITOPS_STATUS_SERVER_URL` may be the server's base URL or the full `/api/status` endpoint.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use reqwest::Url;

use crate::flag_values::{Secret, positive_duration};
use crate::timestamp::Timestamp;

/// The exit codes, as `report --help` lists them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  every snapshot was recorded (whatever the drift state, unless --fail-on-drift)
  1  a snapshot was not recorded: the server rejected it (4xx), or it stayed unreachable or
     failing (5xx) through every retry
  2  bad flags or environment (a missing --url / GITOPS_STATUS_SERVER_URL or --repo / REPO_NAME)
  3  no drift-check result, nothing posted: the output shows no host whose run completed (no
     marker and no PLAY RECAP line), the command could not start, or the input could not be read
  4  with --fail-on-drift: every snapshot was recorded and a host is OUT_OF_SYNC
  5  with --fail-on-drift: every snapshot was recorded and a host's check ended in ERROR";

/// The setting the URL comes from, as messages name it.
const URL_SETTING: &str = "--url / GITOPS_STATUS_SERVER_URL";

/// Options of the reporting client. The playbook comes after `--`, or its output from `--input`.
#[derive(Debug, Clone, Args)]
#[command(
    group(ArgGroup::new("source").required(true).args(["input", "command"])),
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub action: Option<ReportAction>,

    #[command(flatten)]
    pub delivery: Delivery,

    /// Repository whose configuration was checked (required).
    #[arg(long, env = "REPO_NAME")]
    pub repo: Option<String>,

    /// Server name to report when the run checked a single host (default: its inventory name).
    #[arg(long, env = "SERVER_NAME")]
    pub server: Option<String>,

    /// Prefix removed from drifted paths: /etc/rsyslog.conf becomes rsyslog.conf. Empty keeps paths.
    #[arg(long, env = "GITOPS_STATUS_STRIP_PREFIX", default_value = "/etc/")]
    pub strip_prefix: String,

    /// Commit of the checked configuration (default: CI_COMMIT_SHA or GITHUB_SHA).
    #[arg(long, env = "GITOPS_STATUS_REVISION")]
    pub revision: Option<String>,

    /// Link to the CI run (default: CI_PIPELINE_URL, or the GitHub Actions run).
    #[arg(long, env = "GITOPS_STATUS_RUN_URL")]
    pub run_url: Option<String>,

    /// Read captured ansible-playbook output from FILE, or from stdin with `-`, instead of running it.
    #[arg(long, env = "GITOPS_STATUS_INPUT", value_name = "FILE|-")]
    pub input: Option<PathBuf>,

    /// Exit 4 when a host is OUT_OF_SYNC and 5 when a check ended in ERROR, after reporting, so
    /// the pipeline step fails on drift as the playbook alone would.
    #[arg(long, env = "GITOPS_STATUS_FAIL_ON_DRIFT")]
    pub fail_on_drift: bool,

    /// Parse and print the snapshots, but do not send them.
    #[arg(long, env = "GITOPS_STATUS_DRY_RUN")]
    pub dry_run: bool,

    /// The drift-check command, e.g. `-- ansible-playbook -i inventory drift-check.yml`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// What `report` does instead of running a drift check.
#[derive(Debug, Clone, Subcommand)]
pub enum ReportAction {
    /// Post the state a running Pushgateway holds: one snapshot per target of its
    /// gitops_sync_status samples.
    ///
    /// Reads PUSHGATEWAY_URL/api/v1/metrics. A sample's target is its repo and server labels
    /// (the group's grouping key, or the sample's own labels); the snapshot has no files and is
    /// checked when Pushgateway received the push, so running the import again stores nothing
    /// new. Groups without gitops_sync_status are left alone.
    ///
    /// Exit codes: 0 every target recorded; 1 one was not (refused, unreachable, or a value
    /// other than 0, 1 or 2); 2 bad flags or environment; 3 the Pushgateway could not be read.
    ImportPushgateway(Box<ImportArgs>),

    /// Accept a target's current drift until a given time (a hotfix waiting for its PR).
    ///
    /// POSTs /api/acks for --repo / REPO_NAME and --server / SERVER_NAME. While it applies,
    /// /status.json shows the target as acknowledged (its state unchanged). It ends at --until,
    /// when the target is SYNCED again, when it is deleted (`report unack ID`), or when a newer
    /// acknowledgement of the target replaces it. Prints the acknowledgement as JSON on stdout.
    #[command(after_help = ACK_EXIT_CODES_HELP)]
    Ack(Box<AckArgs>),

    /// End an acknowledgement now (DELETE /api/acks/ID). Ending one that had ended already
    /// succeeds too.
    #[command(after_help = ACK_EXIT_CODES_HELP)]
    Unack(UnackArgs),
}

/// The exit codes of `report ack` and `report unack`, as their `--help` lists them.
pub const ACK_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  done
  1  not done: the server rejected the request (4xx, e.g. an unknown target or a bad --until),
     or it stayed unreachable or failing (5xx) through every retry
  2  bad flags or environment";

/// Options of `report ack`.
#[derive(Debug, Clone, Args)]
pub struct AckArgs {
    #[command(flatten)]
    pub delivery: Delivery,

    /// Repository of the target whose drift is accepted (required).
    #[arg(long, env = "REPO_NAME")]
    pub repo: Option<String>,

    /// Server of the target whose drift is accepted (required).
    #[arg(long, env = "SERVER_NAME")]
    pub server: Option<String>,

    /// Why the drift is accepted (1 to 1000 characters), e.g. the incident and the PR that brings
    /// the change into the repository.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,

    /// When it expires: an RFC 3339 time (2026-12-10T00:00:00Z) or a duration from now (24h, 3d,
    /// 1h 30m); in the future and at most 90 days ahead.
    #[arg(long, value_name = "WHEN", value_parser = until_value)]
    pub until: Until,

    /// A glob (`*`, `?`) of the drifted files it accepts; repeat for more. Every drifted file
    /// must match one for it to apply. Absent: whatever files drift.
    #[arg(long = "files", value_name = "GLOB")]
    pub files: Vec<String>,
}

impl AckArgs {
    /// What clap cannot require (an environment variable may give it): one line per missing
    /// setting, naming the flag and the variable.
    pub fn missing(&self) -> Vec<String> {
        let blank = |value: &Option<String>| value.as_deref().is_none_or(|v| v.trim().is_empty());
        let mut missing: Vec<String> = self.delivery.missing_url(false).into_iter().collect();
        if blank(&self.repo) {
            missing.push(
                "no repository name: set --repo / REPO_NAME to the repository of the target \
                 whose drift is accepted, e.g. rsyslog"
                    .to_owned(),
            );
        }
        if blank(&self.server) {
            missing.push(
                "no server name: set --server / SERVER_NAME to the server whose drift is \
                 accepted, e.g. rsyslog-lab"
                    .to_owned(),
            );
        }
        missing
    }
}

/// Options of `report unack`.
#[derive(Debug, Clone, Args)]
pub struct UnackArgs {
    /// The acknowledgement's id, as `report ack` printed it.
    #[arg(value_name = "ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,

    #[command(flatten)]
    pub delivery: Delivery,
}

impl UnackArgs {
    /// What clap cannot require: one line per missing setting.
    pub fn missing(&self) -> Vec<String> {
        self.delivery.missing_url(false).into_iter().collect()
    }
}

/// `--until`: a time, or a duration counted from when the request is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    At(Timestamp),
    In(Duration),
}

impl Until {
    /// The instant it names, `now` being when the request is made.
    pub fn at(self, now: Timestamp) -> Timestamp {
        match self {
            Self::At(at) => at,
            Self::In(duration) => {
                now.plus_millis(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
            }
        }
    }
}

/// Parses `--until`: RFC 3339 with an offset, or a humantime duration (`24h`, `3d`).
pub fn until_value(text: &str) -> Result<Until, String> {
    let text = text.trim();
    if let Some(at) = Timestamp::parse_rfc3339(text) {
        return Ok(Until::At(at));
    }
    humantime::parse_duration(text).map(Until::In).map_err(|_| {
        "must be an RFC 3339 time with an offset (2026-12-10T00:00:00Z) or a duration from now \
         (24h, 3d, 1h 30m)"
            .to_owned()
    })
}

/// Where requests go and how hard to try: shared by `report` and its subcommands.
#[derive(Debug, Clone, Args)]
pub struct Delivery {
    /// The server's base URL (http://host:80, http://host/prefix/) or the full endpoint
    /// (http://host/api/status); snapshots go to BASE/api/status, acknowledgements to
    /// BASE/api/acks. Required unless --dry-run.
    #[arg(long, env = "GITOPS_STATUS_SERVER_URL", value_parser = status_endpoint)]
    pub url: Option<Url>,

    /// Bearer token the server's writes need; prefer the environment variable to the flag.
    #[arg(long, env = "GITOPS_STATUS_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,

    /// Longest one POST attempt may take.
    #[arg(long, env = "GITOPS_STATUS_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub timeout: Duration,

    /// Retries after a connection error, timeout or 5xx (never after a 4xx).
    #[arg(long, env = "GITOPS_STATUS_RETRIES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,
}

impl Delivery {
    /// The line for a missing server URL, unless `dry_run` needs none.
    fn missing_url(&self, dry_run: bool) -> Option<String> {
        (self.url.is_none() && !dry_run).then(|| {
            format!(
                "no server to report to: set {URL_SETTING} to the server's base URL, e.g. \
                 http://gitops-status-server:80 (or the full http://.../api/status endpoint)"
            )
        })
    }
}

/// Options of `report import-pushgateway`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The Pushgateway's base URL, e.g. http://pushgateway:9091 (or its full
    /// .../api/v1/metrics URL).
    #[arg(value_name = "PUSHGATEWAY_URL", value_parser = pushgateway_metrics_url)]
    pub pushgateway: Url,

    #[command(flatten)]
    pub delivery: Delivery,

    /// Print the snapshots the groups make, but do not send them.
    #[arg(long, env = "GITOPS_STATUS_DRY_RUN")]
    pub dry_run: bool,
}

impl ImportArgs {
    /// What a run needs but clap cannot require: one line per missing setting.
    pub fn missing(&self) -> Vec<String> {
        self.delivery
            .missing_url(self.dry_run)
            .into_iter()
            .collect()
    }
}

impl ReportArgs {
    /// What a run needs but clap cannot require (an environment variable may give it, and
    /// `--dry-run` needs no URL): one line per missing setting, naming the flag and the variable.
    pub fn missing(&self) -> Vec<String> {
        let blank = |value: &Option<String>| value.as_deref().is_none_or(|v| v.trim().is_empty());
        let mut missing: Vec<String> = self
            .delivery
            .missing_url(self.dry_run)
            .into_iter()
            .collect();
        if blank(&self.repo) {
            missing.push(
                "no repository name: set --repo / REPO_NAME to the repository whose \
                 configuration was checked, e.g. rsyslog"
                    .to_owned(),
            );
        }
        missing
    }
}

/// `GITOPS_STATUS_SERVER_URL` to the `POST /api/status` endpoint. A base URL, with or without a
/// path prefix and trailing slash, gets `/api/status` appended; a URL that already ends in
/// `/api/status` (the seed's form) is the endpoint itself. Query and fragment are dropped.
pub fn status_endpoint(text: &str) -> Result<Url, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!(
            "{URL_SETTING} is empty; set it to the server's base URL, e.g. \
             http://gitops-status-server:80"
        ));
    }
    if !text.contains("://") {
        let host = text.trim_start_matches('/');
        let host = if host.starts_with(':') {
            format!("localhost{host}")
        } else {
            host.to_owned()
        };
        return Err(format!(
            "{URL_SETTING}: {text:?} has no scheme; write http://{host}"
        ));
    }
    let mut url = Url::parse(text).map_err(|error| {
        format!("{URL_SETTING}: {text:?} is not a URL ({error}); write e.g. http://gitops-status-server:80")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{URL_SETTING}: {text:?} must be an http:// or https:// URL with a host, e.g. \
             http://gitops-status-server:80"
        ));
    }
    let base = url.path().trim_end_matches('/');
    let path = if base.ends_with("/api/status") {
        base.to_owned()
    } else {
        format!("{base}/api/status")
    };
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// The server's endpoint at `path` (`/api/acks`), given its `/api/status` endpoint (as
/// `status_endpoint` makes it): both share the base URL and its path prefix.
pub fn api_url(status_endpoint: &Url, path: &str) -> Url {
    let base = status_endpoint.path();
    let base = base.strip_suffix("/api/status").unwrap_or(base);
    let mut url = status_endpoint.clone();
    url.set_path(&format!("{base}{path}"));
    url
}

/// A Pushgateway's URL to its `GET /api/v1/metrics`: a base URL (with or without a path prefix)
/// gets `/api/v1/metrics` appended; a URL that already ends in it is kept. Query and fragment are
/// dropped.
pub fn pushgateway_metrics_url(text: &str) -> Result<Url, String> {
    let text = text.trim();
    let mut url = Url::parse(text).map_err(|error| {
        format!(
            "PUSHGATEWAY_URL: {text:?} is not a URL ({error}); write e.g. http://pushgateway:9091"
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "PUSHGATEWAY_URL: {text:?} must be an http:// or https:// URL with a host, e.g. \
             http://pushgateway:9091"
        ));
    }
    let base = url.path().trim_end_matches('/');
    let path = if base.ends_with("/api/v1/metrics") {
        base.to_owned()
    } else {
        format!("{base}/api/v1/metrics")
    };
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Report {
        #[command(flatten)]
        args: ReportArgs,
    }

    fn endpoint(text: &str) -> Result<String, String> {
        status_endpoint(text).map(String::from)
    }

    #[test]
    fn a_base_url_or_the_full_endpoint_both_post_to_api_status() {
        for (given, expected) in [
            ("http://gitops:80", "http://gitops/api/status"),
            ("http://gitops:8080/", "http://gitops:8080/api/status"),
            ("http://gitops/api/status", "http://gitops/api/status"),
            ("http://gitops/api/status/", "http://gitops/api/status"),
            (
                "https://ops.example.org/gitops",
                "https://ops.example.org/gitops/api/status",
            ),
            (
                "https://ops.example.org/gitops/",
                "https://ops.example.org/gitops/api/status",
            ),
            (
                "https://ops.example.org/gitops/api/status",
                "https://ops.example.org/gitops/api/status",
            ),
            (
                " http://127.0.0.1:8080/x?y=1#z ",
                "http://127.0.0.1:8080/x/api/status",
            ),
            // Only a whole `api/status` at the end is the endpoint.
            (
                "http://gitops/my-api/status",
                "http://gitops/my-api/status/api/status",
            ),
        ] {
            assert_eq!(endpoint(given).as_deref(), Ok(expected), "{given}");
        }
    }

    #[test]
    fn other_endpoints_share_the_base_of_api_status() {
        for (given, expected) in [
            ("http://gitops:80", "http://gitops/api/acks"),
            ("http://gitops/api/status", "http://gitops/api/acks"),
            (
                "https://ops.example.org/gitops/",
                "https://ops.example.org/gitops/api/acks",
            ),
            (
                "https://ops.example.org/gitops/api/status",
                "https://ops.example.org/gitops/api/acks",
            ),
        ] {
            let endpoint = status_endpoint(given).unwrap();
            assert_eq!(
                api_url(&endpoint, "/api/acks").as_str(),
                expected,
                "{given}"
            );
        }
    }

    #[test]
    fn until_is_a_time_or_a_duration_from_now() {
        let now = Timestamp::from_millis(1_776_767_400_000);
        let at = |text: &str| until_value(text).map(|until| until.at(now).to_string());
        assert_eq!(at("24h").as_deref(), Ok("2026-04-22T10:30:00.000Z"));
        assert_eq!(at("3d").as_deref(), Ok("2026-04-24T10:30:00.000Z"));
        assert_eq!(at("1h 30m").as_deref(), Ok("2026-04-21T12:00:00.000Z"));
        assert_eq!(
            at("2026-05-01T12:00:00.123456+02:00").as_deref(),
            Ok("2026-05-01T10:00:00.123Z")
        );
        for bad in ["soon", "2026-05-01", "2026-05-01T12:00:00", "", "-3d"] {
            assert!(
                until_value(bad)
                    .unwrap_err()
                    .starts_with("must be an RFC 3339 time"),
                "{bad}"
            );
        }
    }

    #[test]
    fn ack_needs_a_server_a_repo_and_a_target() {
        let parse = |extra: &[&str]| {
            let base = ["report", "ack", "--reason", "INC-1", "--until", "1d"];
            Report::try_parse_from(base.iter().chain(extra))
        };
        let Some(ReportAction::Ack(ack)) = parse(&[]).unwrap().args.action else {
            panic!("not ack");
        };
        assert_eq!(ack.missing().len(), 3);
        let Some(ReportAction::Ack(ack)) = parse(&[
            "--url",
            "http://gitops",
            "--repo",
            "rsyslog",
            "--server",
            "lab",
            "--files",
            "a*",
            "--files",
            "b?",
        ])
        .unwrap()
        .args
        .action
        else {
            panic!("not ack");
        };
        assert!(ack.missing().is_empty());
        assert_eq!(ack.files, ["a*", "b?"]);
        assert_eq!(ack.until, Until::In(Duration::from_secs(86_400)));
        for bad in [
            &["report", "ack", "--until", "1d"][..],
            &["report", "ack", "--reason", "x"],
            &["report", "ack", "--reason", "x", "--until", "soon"],
            &["report", "unack", "0"],
            &["report", "unack"],
        ] {
            let error = Report::try_parse_from(bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad:?}: {error}");
        }
    }

    #[test]
    fn a_url_without_a_scheme_is_told_what_to_write() {
        for (given, hint) in [
            ("host:8080", "write http://host:8080"),
            ("localhost", "write http://localhost"),
            ("gitops/api/status", "write http://gitops/api/status"),
            (":8080", "write http://localhost:8080"),
        ] {
            assert_eq!(
                endpoint(given),
                Err(format!(
                    "--url / GITOPS_STATUS_SERVER_URL: \"{given}\" has no scheme; {hint}"
                ))
            );
        }
        assert_eq!(
            endpoint(" "),
            Err(
                "--url / GITOPS_STATUS_SERVER_URL is empty; set it to the server's base URL, \
                 e.g. http://gitops-status-server:80"
                    .to_owned()
            )
        );
        assert_eq!(
            endpoint("ftp://gitops"),
            Err(
                "--url / GITOPS_STATUS_SERVER_URL: \"ftp://gitops\" must be an http:// or \
                 https:// URL with a host, e.g. http://gitops-status-server:80"
                    .to_owned()
            )
        );
    }

    #[test]
    fn missing_settings_name_the_flag_and_the_variable() {
        let parse = |extra: &[&str]| {
            let base = ["report", "--input", "-"];
            Report::try_parse_from(base.iter().chain(extra))
                .unwrap()
                .args
        };
        assert_eq!(
            parse(&[]).missing(),
            [
                "no server to report to: set --url / GITOPS_STATUS_SERVER_URL to the server's \
                 base URL, e.g. http://gitops-status-server:80 (or the full \
                 http://.../api/status endpoint)",
                "no repository name: set --repo / REPO_NAME to the repository whose \
                 configuration was checked, e.g. rsyslog",
            ]
        );
        assert_eq!(parse(&["--repo", " "]).missing().len(), 2);
        assert!(
            parse(&["--repo", "rsyslog", "--dry-run"])
                .missing()
                .is_empty()
        );
        assert!(
            parse(&["--repo", "rsyslog", "--url", "http://gitops"])
                .missing()
                .is_empty()
        );
    }

    #[test]
    fn report_takes_a_command_or_an_input_but_not_both() {
        let base = ["report", "--url", "http://gitops:80", "--repo", "rsyslog"];
        let parse = |extra: &[&str]| Report::try_parse_from(base.iter().chain(extra));
        let args = parse(&[
            "--token",
            "s3cret",
            "--",
            "ansible-playbook",
            "-i",
            "inv",
            "check.yml",
        ])
        .unwrap()
        .args;
        assert_eq!(args.command, ["ansible-playbook", "-i", "inv", "check.yml"]);
        assert_eq!(args.strip_prefix, "/etc/");
        let delivery = &args.delivery;
        assert_eq!(
            (delivery.timeout, delivery.retries),
            (Duration::from_secs(10), 3)
        );
        assert!(!format!("{args:?}").contains("s3cret"));
        assert_eq!(delivery.token.as_ref().map(Secret::expose), Some("s3cret"));

        assert!(parse(&["--input", "-"]).is_ok());
        for bad in [
            &[][..],
            &["--input", "out.txt", "--", "ansible-playbook"],
            &["--input", "-", "--url", "ftp://gitops"],
            &["--input", "-", "--url", "gitops:80"],
            &["--input", "-", "--retries", "11"],
            &["--input", "-", "--timeout", "0s"],
        ] {
            let error = parse(bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad:?}: {error}");
        }
    }
}
