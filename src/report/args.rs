//! The `report` subcommand's flags and environment (and those of `report import-pushgateway`), the
//! exit codes `report --help` lists, and where the snapshots go: `GITOPS_STATUS_SERVER_URL` may be
//! the server's base URL or the full endpoint.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use reqwest::Url;

use crate::flag_values::{Secret, positive_duration};

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
}

/// Where snapshots go and how hard to try: shared by `report` and `report import-pushgateway`.
#[derive(Debug, Clone, Args)]
pub struct Delivery {
    /// The server's base URL (http://host:80, http://host/prefix/) or the full endpoint
    /// (http://host/api/status); snapshots go to BASE/api/status. Required unless --dry-run.
    #[arg(long, env = "GITOPS_STATUS_SERVER_URL", value_parser = status_endpoint)]
    pub url: Option<Url>,

    /// Bearer token for POST /api/status; prefer the environment variable to the flag.
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
