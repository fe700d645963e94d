//! Command line and environment: every flag has an env var, and `Debug` never prints a secret.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::flag_values::{Secret, positive_duration};
use crate::report::{EXIT_CODES_HELP, ReportArgs};

/// GitOps drift history: CI posts drift-check snapshots, Grafana and auditors read them.
#[derive(Debug, Parser)]
#[command(
    name = "gitops-status-server",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// With no subcommand, the server runs with these options.
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve(ServeArgs),
    /// Print the OpenAPI document generated from the handlers.
    Openapi,
    /// Recompute the integrity chain of a database and print the outcome as JSON. Exit code 0:
    /// intact; 1: broken (`first_bad` names the snapshot); 2: the database cannot be read.
    Verify(VerifyArgs),
    /// Copy a SQLite history into an empty PostgreSQL database, unchanged (ids, hashes,
    /// retention checkpoints), then verify the copy and compare it with the source target by
    /// target. Prints a JSON report. Exit code 0: copied and verified; 1: copied, but the copy
    /// differs or does not verify; 2: nothing copied (bad URL, unreadable source, broken source
    /// chain, or a target database that already holds history).
    MigrateTo(MigrateToArgs),
    /// Run the drift-check playbook (or read its output), parse its markers and POST one
    /// snapshot per host: the CI client that replaces update-gitops-status.sh.
    #[command(after_help = EXIT_CODES_HELP)]
    Report(ReportArgs),
}

/// Options of `migrate-to`.
#[derive(Clone, Args)]
pub struct MigrateToArgs {
    /// The PostgreSQL database to copy into: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE.
    /// Its schema is created when missing; it must hold no targets or snapshots.
    #[arg(value_name = "POSTGRES_URL")]
    pub target: String,

    /// The SQLite database to copy: sqlite://PATH. Opened read-only; never changed. Stop the
    /// server writing to it first, or the copy misses what arrives later.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://gitops-status.db"
    )]
    pub database_url: String,
}

impl fmt::Debug for MigrateToArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MigrateToArgs")
            .field("target", &redact_url(&self.target))
            .field("database_url", &redact_url(&self.database_url))
            .finish()
    }
}

/// Options of `verify`.
#[derive(Clone, Args)]
pub struct VerifyArgs {
    /// Database to verify: sqlite://PATH or postgres://USER@HOST/DATABASE. Read only; never
    /// migrated or changed.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://gitops-status.db"
    )]
    pub database_url: String,
}

impl fmt::Debug for VerifyArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyArgs")
            .field("database_url", &redact_url(&self.database_url))
            .finish()
    }
}

/// Options of the HTTP service.
#[derive(Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "GITOPS_STATUS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Database to store snapshots in: sqlite://PATH (created when missing).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://gitops-status.db"
    )]
    pub database_url: String,

    /// Age after which a target without a new check shows as STALE (e.g. 10m, 1h 30m).
    #[arg(long, env = "GITOPS_STATUS_STALE_AFTER", default_value = "10m", value_parser = positive_duration)]
    pub stale_after: Duration,

    /// Longest a request may take before it is answered 503 (e.g. 30s).
    #[arg(long, env = "GITOPS_STATUS_REQUEST_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub request_timeout: Duration,

    /// Longest the server waits for in-flight requests after SIGTERM or Ctrl-C.
    #[arg(long, env = "GITOPS_STATUS_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "GITOPS_STATUS_BODY_LIMIT", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_limit: u64,

    /// Remove snapshots whose last_check is older than this (e.g. 400d), except transitions,
    /// the state each target entered the retained window in, and what the integrity chain needs.
    /// Unset: keep everything.
    #[arg(long, env = "GITOPS_STATUS_RETENTION", value_parser = positive_duration)]
    pub retention: Option<Duration>,

    /// How often retention runs (with --retention).
    #[arg(long, env = "GITOPS_STATUS_RETENTION_INTERVAL", default_value = "1h", value_parser = positive_duration)]
    pub retention_interval: Duration,

    /// TOML file of bearer tokens ([[tokens]] with name, token or sha256, scopes, repos).
    /// Without any token, writes are open.
    #[arg(long, env = "GITOPS_STATUS_TOKENS_FILE", value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,

    /// One bearer token that may write every repo; prefer the environment variable to the flag.
    #[arg(long, env = "GITOPS_STATUS_WRITE_TOKEN", hide_env_values = true)]
    pub write_token: Option<Secret>,

    /// Requests served at once; more are answered 503 with Retry-After at once rather than queued.
    /// /healthz and /readyz are never refused.
    #[arg(long, env = "GITOPS_STATUS_MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
}

/// Logging options; the level comes from `RUST_LOG` (default `info`).
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log line format on stderr.
    #[arg(long, env = "GITOPS_STATUS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeArgs")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("stale_after", &self.stale_after)
            .field("request_timeout", &self.request_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("body_limit", &self.body_limit)
            .field("retention", &self.retention)
            .field("retention_interval", &self.retention_interval)
            .field("tokens_file", &self.tokens_file)
            .field("write_token", &self.write_token)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// The URL with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/gitops"),
            "postgres://app:***@db:5432/gitops"
        );
        assert_eq!(
            redact_url("sqlite://gitops-status.db"),
            "sqlite://gitops-status.db"
        );
        let args = Cli::parse_from([
            "gitops-status-server",
            "--database-url",
            "postgres://app:s3cret@db/gitops",
        ]);
        assert!(!format!("{args:?}").contains("s3cret"));
        let args = Cli::parse_from(["gitops-status-server", "--write-token", "s3cret"]);
        assert!(!format!("{args:?}").contains("s3cret"));
    }

    #[test]
    fn no_subcommand_means_serve_with_defaults() {
        let cli = Cli::parse_from(["gitops-status-server"]);
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cli.serve.database_url, "sqlite://gitops-status.db");
        assert_eq!(cli.serve.stale_after, Duration::from_secs(600));
    }

    #[test]
    fn rejects_a_zero_stale_after() {
        let error =
            Cli::try_parse_from(["gitops-status-server", "--stale-after", "0s"]).unwrap_err();
        assert!(error.to_string().contains("--stale-after"), "{error}");
    }
}
