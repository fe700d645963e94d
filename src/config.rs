//! Command line and environment: every flag has an env var, and `Debug` never prints a secret.

use std::ffi::OsStr;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::flag_values::{Secret, positive_duration};
use crate::report::{EXIT_CODES_HELP, ReportArgs};

use crate::store::{DatabaseUrl, redact_url};

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
    /// Recompute the integrity chain of a database and print the outcome as JSON; with
    /// --public-key, check the signed head statements too. Exit code 0: intact; 1: broken
    /// (`first_bad` or `statements.first_bad` names the record); 2: the database cannot be read.
    Verify(VerifyArgs),
    /// Copy a SQLite history into an empty PostgreSQL database, unchanged (ids, hashes,
    /// retention checkpoints, chained events, signed head statements), then verify the copy and
    /// compare it with the source target by target. Prints a JSON report. Exit code 0: copied
    /// and verified; 1: copied, but the copy differs or does not verify; 2: nothing copied (bad
    /// URL, unreadable source, broken source chain, or a target database that already holds
    /// history).
    MigrateTo(MigrateToArgs),
    /// Write a new Ed25519 key pair for signing head statements: the private key to PATH
    /// (PKCS#8 PEM, mode 0600) and the public key to PATH.pub (SPKI PEM). Never overwrites a
    /// file. Prints the public key.
    Keygen(KeygenArgs),
    /// Check an evidence file (`GET /api/evidence`) offline, without the database, and print
    /// what it proves. Exit code 0: it checks out; 1: it does not (the reason is printed); 2:
    /// the file or the key cannot be read.
    VerifyEvidence(VerifyEvidenceArgs),
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
    #[arg(value_name = "POSTGRES_URL", value_parser = SettingParser(DatabaseUrl::parse_postgres))]
    pub target: Setting<DatabaseUrl>,

    /// The SQLite database to copy: sqlite://PATH. Opened read-only; never changed. Stop the
    /// server writing to it first, or the copy misses what arrives later.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://gitops-status.db",
        value_parser = SettingParser(DatabaseUrl::parse_sqlite)
    )]
    pub database_url: Setting<DatabaseUrl>,
}

impl fmt::Debug for MigrateToArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MigrateToArgs")
            .field("target", &self.target)
            .field("database_url", &self.database_url)
            .finish()
    }
}

/// Options of `keygen`.
#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Where to write the private key; the public key goes beside it, with `.pub` appended.
    #[arg(value_name = "PATH", default_value = "gitops-status-signing.pem")]
    pub path: PathBuf,
}

/// Options of `verify-evidence`.
#[derive(Debug, Clone, Args)]
pub struct VerifyEvidenceArgs {
    /// The evidence file, as `GET /api/evidence` wrote it.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The server's public key (SPKI PEM, the `.pub` file of `keygen`). Without it, the
    /// signatures are checked against the key the file names, which proves only that the file
    /// is consistent, not who signed it.
    #[arg(long, env = "GITOPS_STATUS_PUBLIC_KEY", value_name = "FILE")]
    pub public_key: Option<PathBuf>,
}

/// Options of `verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Also check the signed head statements with this public key (SPKI PEM, the `.pub` file of
    /// `keygen`): every signature, that they form one chain, and that every head they sign is
    /// on the stored chains.
    #[arg(long, env = "GITOPS_STATUS_PUBLIC_KEY", value_name = "FILE")]
    pub public_key: Option<PathBuf>,

    /// Database to verify: sqlite://PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE.
    /// Read only; never migrated or changed.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://gitops-status.db",
        value_parser = SettingParser(DatabaseUrl::parse)
    )]
    pub database_url: Setting<DatabaseUrl>,
}

/// Options of the HTTP service.
#[derive(Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on: IP:PORT, HOST:PORT (resolved at start, IPv4 preferred), or :PORT
    /// for every IPv4 interface (0.0.0.0:PORT; write [::]:PORT for IPv6 too).
    #[arg(long, env = "GITOPS_STATUS_LISTEN", default_value = "127.0.0.1:8080", value_parser = SettingParser(ListenAddress::parse))]
    pub listen: Setting<ListenAddress>,

    /// Database to store snapshots in: sqlite://PATH (an SQLite file, created when missing) or
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (several replicas may share it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://gitops-status.db",
        value_parser = SettingParser(DatabaseUrl::parse_writable)
    )]
    pub database_url: Setting<DatabaseUrl>,

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
    #[arg(
        long,
        env = "GITOPS_STATUS_TOKENS_FILE",
        value_name = "FILE",
        value_parser = SettingParser(path_setting)
    )]
    pub tokens_file: Option<Setting<PathBuf>>,

    /// TOML file of notification receivers ([[receivers]]: name, kind webhook|slack|alertmanager,
    /// url, headers, secret) and the routes to them ([[routes]]: receiver, repos, servers,
    /// states, for, repeat). Unset: no notifications are sent.
    #[arg(
        long,
        env = "GITOPS_STATUS_NOTIFY_FILE",
        value_name = "FILE",
        value_parser = SettingParser(path_setting)
    )]
    pub notify_file: Option<Setting<PathBuf>>,

    /// Ed25519 private key (PKCS#8 PEM, as `keygen` writes it) to sign head statements with: at
    /// start, every --sign-interval and at shutdown. The file must not be readable by group or
    /// others. Unset: nothing is signed.
    #[arg(
        long,
        env = "GITOPS_STATUS_SIGNING_KEY",
        value_name = "FILE",
        value_parser = SettingParser(path_setting)
    )]
    pub signing_key: Option<Setting<PathBuf>>,

    /// How often to sign a head statement (with --signing-key).
    #[arg(long, env = "GITOPS_STATUS_SIGN_INTERVAL", default_value = "1h", value_parser = positive_duration)]
    pub sign_interval: Duration,

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

/// A configured value and the setting it came from, named as the operator gave it: the flag
/// (`--listen`), the environment variable (`GITOPS_STATUS_LISTEN`), or the flag's default
/// (`--listen (default)`). Messages about the value name that setting.
#[derive(Debug, Clone)]
pub struct Setting<T> {
    pub value: T,
    pub name: String,
}

impl<T: fmt::Display> Setting<T> {
    /// The one line that says what is wrong with this setting: see `bad_setting`.
    pub fn problem(&self, why: impl fmt::Display) -> String {
        bad_setting(&self.name, &self.value, why)
    }
}

/// A file path, taken as written; what is wrong with the file is found when it is read.
fn path_setting(text: &str) -> Result<PathBuf, Problem> {
    Ok(PathBuf::from(text))
}

/// What is wrong with a configured value, and the fix when one is obvious.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub cause: String,
    pub hint: Option<String>,
}

impl Problem {
    pub fn new(cause: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            cause: cause.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn without_hint(cause: impl Into<String>) -> Self {
        Self {
            cause: cause.into(),
            hint: None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.hint {
            Some(hint) => write!(f, "{}; {hint}", self.cause),
            None => f.write_str(&self.cause),
        }
    }
}

impl std::error::Error for Problem {}

/// The one rendering of bad configuration, at parse time and at start alike:
/// `SETTING: VALUE: CAUSE; HINT`, on one line, with any password in the value hidden.
pub fn bad_setting(setting: &str, value: &dyn fmt::Display, why: impl fmt::Display) -> String {
    let value = redact_url(&value.to_string());
    let line = format!("{setting}: {value}: {why}");
    line.replace(['\n', '\r'], " ")
}

/// Parses a setting with a function of its text, remembering which setting the value came from.
/// A refused value is a clap error (exit code 2) rendered by `bad_setting`.
#[derive(Debug, Clone)]
pub struct SettingParser<T>(pub fn(&str) -> Result<T, Problem>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for SettingParser<T> {
    type Value = Setting<T>;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Self::Value, clap::Error> {
        self.parse_ref_(cmd, arg, value, ValueSource::CommandLine)
    }

    fn parse_ref_(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
        source: ValueSource,
    ) -> Result<Self::Value, clap::Error> {
        let name = setting_name(arg, source);
        let text = value.to_string_lossy();
        match (self.0)(&text) {
            Ok(value) => Ok(Setting { value, name }),
            Err(problem) => Err(clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("{}\n", bad_setting(&name, &text, problem)),
            )
            .with_cmd(cmd)),
        }
    }
}

/// `--flag`, `ENV_VAR`, `--flag (default)`, or `<VALUE_NAME>` for a positional argument.
fn setting_name(arg: Option<&clap::Arg>, source: ValueSource) -> String {
    let Some(arg) = arg else {
        return "value".to_owned();
    };
    let flag = match arg.get_long() {
        Some(long) => format!("--{long}"),
        None => match arg.get_value_names() {
            Some([name, ..]) => format!("<{name}>"),
            _ => arg.get_id().to_string(),
        },
    };
    match (source, arg.get_env()) {
        (ValueSource::EnvVariable, Some(env)) => env.to_string_lossy().into_owned(),
        (ValueSource::DefaultValue, _) => format!("{flag} (default)"),
        _ => flag,
    }
}

/// The address `serve` listens on, and how it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    pub address: SocketAddr,
    written: String,
}

impl ListenAddress {
    /// `IP:PORT`, `[IPv6]:PORT`, `HOST:PORT` (resolved now, the first IPv4 address preferred, as
    /// Go's `net.Listen` does), or `:PORT` for every IPv4 interface (`0.0.0.0:PORT`).
    pub fn parse(text: &str) -> Result<Self, Problem> {
        const FORMS: &str = "write IP:PORT, HOST:PORT or :PORT, e.g. 127.0.0.1:8080, \
                             localhost:8080 or :8080 (every interface)";
        let written = text.trim().to_owned();
        if let Ok(address) = written.parse::<SocketAddr>() {
            return Ok(Self { address, written });
        }
        let Some((host, port)) = written.rsplit_once(':') else {
            let hint = match written.parse::<u16>() {
                Ok(port) => format!("write :{port} for every interface, or 127.0.0.1:{port}"),
                Err(_) => FORMS.to_owned(),
            };
            return Err(Problem::new("no port", hint));
        };
        let Ok(port) = port.parse::<u16>() else {
            return Err(Problem::new(
                format!("the port {port:?} is not a number from 0 to 65535"),
                FORMS,
            ));
        };
        if host.is_empty() {
            return Ok(Self {
                address: SocketAddr::from(([0, 0, 0, 0], port)),
                written,
            });
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|error| {
                Problem::new(
                    format!("cannot resolve the host {host:?}: {error}"),
                    "write an IP address, e.g. 127.0.0.1:8080, or :8080 for every interface",
                )
            })?
            .collect();
        let address = addresses
            .iter()
            .find(|address| address.is_ipv4())
            .or(addresses.first())
            .copied()
            .ok_or_else(|| {
                Problem::new(
                    format!("the host {host:?} has no address"),
                    "write an IP address, e.g. 127.0.0.1:8080",
                )
            })?;
        Ok(Self { address, written })
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.written == self.address.to_string() {
            write!(f, "{}", self.address)
        } else {
            write!(f, "{} ({})", self.written, self.address)
        }
    }
}

impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeArgs")
            .field("listen", &self.listen)
            .field("database_url", &self.database_url)
            .field("stale_after", &self.stale_after)
            .field("request_timeout", &self.request_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("body_limit", &self.body_limit)
            .field("retention", &self.retention)
            .field("retention_interval", &self.retention_interval)
            .field("tokens_file", &self.tokens_file)
            .field("notify_file", &self.notify_file)
            .field("signing_key", &self.signing_key)
            .field("sign_interval", &self.sign_interval)
            .field("write_token", &self.write_token)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
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
        assert_eq!(cli.serve.listen.value.address.to_string(), "127.0.0.1:8080");
        assert_eq!(cli.serve.listen.name, "--listen (default)");
        assert_eq!(
            cli.serve.database_url.value.as_str(),
            "sqlite://gitops-status.db"
        );
        assert_eq!(cli.serve.stale_after, Duration::from_secs(600));
    }

    #[test]
    fn listen_takes_host_names_and_a_bare_port() {
        let parse = |text| ListenAddress::parse(text).map(|listen| listen.address.to_string());
        assert_eq!(parse("127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(parse("[::1]:8080").unwrap(), "[::1]:8080");
        assert_eq!(parse(":8080").unwrap(), "0.0.0.0:8080");
        assert_eq!(parse("localhost:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(
            ListenAddress::parse("localhost:8080").unwrap().to_string(),
            "localhost:8080 (127.0.0.1:8080)"
        );
        assert_eq!(
            parse("8080").unwrap_err().to_string(),
            "no port; write :8080 for every interface, or 127.0.0.1:8080"
        );
        assert!(
            parse("localhost:http")
                .unwrap_err()
                .to_string()
                .starts_with("the port \"http\" is not a number")
        );
        assert!(
            parse("no-such-host.invalid:8080")
                .unwrap_err()
                .to_string()
                .starts_with("cannot resolve the host \"no-such-host.invalid\"")
        );
    }

    #[test]
    fn a_setting_is_named_as_it_was_given() {
        let cli = Cli::try_parse_from(["gitops-status-server", "--listen", ":9000"]).unwrap();
        assert_eq!(cli.serve.listen.name, "--listen");
        assert_eq!(
            cli.serve.listen.problem("taken"),
            "--listen: :9000 (0.0.0.0:9000): taken"
        );
        let cli = Cli::try_parse_from([
            "gitops-status-server",
            "serve",
            "--database-url",
            "postgres://app:s3cret@db/gitops",
        ])
        .unwrap();
        let Some(Command::Serve(args)) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(
            args.database_url.problem("refused"),
            "--database-url: postgres://app:***@db/gitops: refused"
        );
        let error = Cli::try_parse_from(["gitops-status-server", "migrate-to", "sqlite://x.db"])
            .unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(
            error.to_string().starts_with(
                "error: <POSTGRES_URL>: sqlite://x.db: migrate-to copies into PostgreSQL"
            ),
            "{error}"
        );
    }

    #[test]
    fn rejects_a_zero_stale_after() {
        let error =
            Cli::try_parse_from(["gitops-status-server", "--stale-after", "0s"]).unwrap_err();
        assert!(error.to_string().contains("--stale-after"), "{error}");
    }
}
