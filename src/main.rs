//! Entry point: parse the configuration, set up logging, then serve or run the chosen subcommand.

use std::io::{ErrorKind, IsTerminal};
use std::process::ExitCode;

use clap::Parser;
use gitops_status_server::auth::{Tokens, TokensError};
use gitops_status_server::config::{
    Cli, Command, KeygenArgs, LogArgs, LogFormat, MigrateToArgs, Problem, ServeArgs, VerifyArgs,
};
use gitops_status_server::notify::{self, NotifyConfig, NotifyOptions};
use gitops_status_server::retention::{self, Policy};
use gitops_status_server::signing::{self, StatementKey};
use gitops_status_server::store::{MigrateError, Store, StoreError};
use gitops_status_server::telemetry::Telemetry;
use gitops_status_server::{AppState, Settings};
use gitops_status_server::{evidence, signer};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc: every request allocates and frees many small buffers
/// across the runtime's threads, and glibc spent a fifth of the server's CPU on it under ingest
/// (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    match cli.command {
        None => run_server(cli.serve).await,
        Some(Command::Serve(args)) => run_server(args).await,
        Some(Command::Openapi) => {
            print!("{}", gitops_status_server::openapi_json());
            ExitCode::SUCCESS
        }
        Some(Command::Verify(args)) => verify(args).await,
        Some(Command::Keygen(args)) => keygen(&args),
        Some(Command::VerifyEvidence(args)) => evidence::verify_command(&args),
        Some(Command::MigrateTo(args)) => migrate_to(args).await,
        Some(Command::Report(args)) => gitops_status_server::report::run(args).await.into(),
    }
}

/// Writes a new key pair and prints the public key.
fn keygen(args: &KeygenArgs) -> ExitCode {
    let public = signing::public_path(&args.path);
    match StatementKey::generate().and_then(|key| key.write(&args.path, &public).map(|()| key)) {
        Ok(key) => {
            println!(
                "private key: {} (mode 0600; give it to the server with --signing-key)",
                args.path.display()
            );
            println!(
                "public key:  {} (give it to verifiers: verify --public-key, verify-evidence \
                 --public-key)",
                public.display()
            );
            print!("{}", signing::public_pem(&key.public_key()));
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!("keygen: {error}");
            ExitCode::from(2)
        }
    }
}

/// Prints the verification as JSON on stdout: exit 0 intact, 1 broken, 2 unreadable.
async fn verify(args: VerifyArgs) -> ExitCode {
    let url = &args.database_url;
    let key = match args.public_key.as_deref().map(signing::load_public_key) {
        Some(Err(error)) => {
            tracing::error!("--public-key: {error}");
            return ExitCode::from(2);
        }
        Some(Ok(key)) => Some(key),
        None => None,
    };
    let verified = match Store::verify_database(url.value.as_str()).await {
        Ok(verification) => match &key {
            Some(key) => Store::verify_statements_database(url.value.as_str(), key)
                .await
                .map(|statements| verification.with_statements(statements)),
            None => Ok(verification),
        },
        Err(error) => Err(error),
    };
    match verified {
        Ok(verification) => {
            match serde_json::to_string_pretty(&verification) {
                Ok(json) => println!("{json}"),
                Err(error) => tracing::error!("cannot print the verification: {error}"),
            }
            if verification.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            tracing::error!("{}", url.problem(error));
            ExitCode::from(2)
        }
    }
}

/// Prints the copy's report as JSON on stdout: exit 0 copied and verified, 1 copied but
/// different, 2 not copied.
async fn migrate_to(args: MigrateToArgs) -> ExitCode {
    let (source, target) = (&args.database_url, &args.target);
    match gitops_status_server::store::migrate_to(source.value.as_str(), target.value.as_str())
        .await
    {
        Ok(report) => {
            match serde_json::to_string_pretty(&report) {
                Ok(json) => println!("{json}"),
                Err(error) => tracing::error!("cannot print the report: {error}"),
            }
            if report.ok {
                tracing::info!(
                    snapshots = report.snapshots,
                    targets = report.targets,
                    "copied and verified"
                );
                ExitCode::SUCCESS
            } else {
                tracing::error!(differences = ?report.differences, "the copy differs from the source");
                ExitCode::from(1)
            }
        }
        Err(MigrateError::Source(error)) => {
            tracing::error!("{}; nothing copied", source.problem(error));
            ExitCode::from(2)
        }
        Err(MigrateError::Target(error)) => {
            tracing::error!("{}; nothing copied", target.problem(error));
            ExitCode::from(2)
        }
        Err(error @ MigrateError::Copy(_)) => {
            tracing::error!("{error}; nothing copied");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(log: &LogArgs) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match log.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run_server(args: ServeArgs) -> ExitCode {
    tracing::debug!(?args, "configuration");
    let tokens = match load_tokens(&args) {
        Ok(tokens) => tokens,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let notify = match &args.notify_file {
        Some(file) => match NotifyConfig::load(&file.value, &file.name) {
            Ok(config) => Some(config),
            Err(error) => {
                tracing::error!("{error}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let signing_key = match &args.signing_key {
        Some(file) => match StatementKey::load(&file.value) {
            Ok(key) => Some(std::sync::Arc::new(key)),
            Err(error) => {
                tracing::error!("{}: {error}", file.name);
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    for warning in tokens.warnings() {
        tracing::warn!("{warning}");
    }
    // Before the store opens, so its writer's metrics land in what /metrics serves.
    let telemetry = Telemetry::global();
    let database = &args.database_url;
    let store = match Store::connect(database.value.as_str()).await {
        Ok(store) => store,
        Err(error) => {
            tracing::error!("{}", database.problem(error));
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(database = %database.value.describe(), "database open");
    let listen = &args.listen;
    let listener = match tokio::net::TcpListener::bind(listen.value.address).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!("{}", listen.problem(cannot_listen(&error)));
            store.close().await;
            return ExitCode::FAILURE;
        }
    };
    if tokens.is_empty() {
        tracing::warn!(
            "no tokens configured: WRITES ARE OPEN, anyone who can reach this server can \
             record snapshots; set --tokens-file or GITOPS_STATUS_WRITE_TOKEN"
        );
    } else if !tokens.reads_protected() {
        tracing::info!(tokens = ?tokens, "writes need a token; reads are open (no token has the read scope)");
    } else {
        tracing::info!(tokens = ?tokens, "writes and reads need a token");
    }
    match listener.local_addr() {
        Ok(address) => tracing::info!(%address, "listening"),
        Err(error) => tracing::warn!(%error, "listening on an unknown address"),
    }
    gitops_status_server::expiry::spawn(store.clone());
    let settings = Settings::from(&args);
    if let Some(config) = notify {
        tracing::info!(
            receivers = config.receivers.len(),
            routes = config.routes.len(),
            "notifications on"
        );
        notify::spawn(
            store.clone(),
            config,
            NotifyOptions::new(settings.stale_after_seconds()),
        );
    }
    {
        let store = store.clone();
        let stale_after = settings.stale_after_seconds();
        tokio::spawn(async move {
            match store.keep_rollups(stale_after).await {
                Ok(()) | Err(StoreError::Closed) => {}
                Err(error) => tracing::warn!(
                    %error,
                    "keeping the daily rollups failed; /api/stats reads raw snapshots"
                ),
            }
        });
    }
    if let Some(keep) = args.retention {
        retention::spawn(
            store.clone(),
            Policy {
                keep,
                every: args.retention_interval,
            },
        );
    }
    let signing_clock = signing_key.as_ref().map(|key| {
        tracing::info!(
            public_key = %hex::encode(key.public_key().as_bytes()),
            every = ?args.sign_interval,
            "signing head statements"
        );
        signer::spawn(
            store.clone(),
            std::sync::Arc::clone(key),
            args.sign_interval,
        )
    });
    if let Some(key) = &signing_key {
        signer::sign_now(&store, key, "start").await;
    }
    let state = AppState::new(store.clone(), settings)
        .with_telemetry(telemetry)
        .with_tokens(tokens)
        .with_public_key(signing_key.as_ref().map(|key| key.public_key()));
    let app = gitops_status_server::app(state);
    let served = gitops_status_server::serve(
        listener,
        app,
        gitops_status_server::shutdown_signal(),
        args.shutdown_timeout,
    )
    .await;
    if let (Some(clock), Some(key)) = (signing_clock, &signing_key) {
        clock.abort();
        signer::sign_now(&store, key, "shutdown").await;
    }
    store.close().await;
    match served {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!("server failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Why binding failed, and what to do about it.
fn cannot_listen(error: &std::io::Error) -> Problem {
    let cause = format!("cannot listen: {error}");
    match error.kind() {
        ErrorKind::AddrInUse => Problem::new(
            cause,
            "another process listens there; stop it or choose another port",
        ),
        ErrorKind::PermissionDenied => Problem::new(
            cause,
            "ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a port from 1024 up",
        ),
        ErrorKind::AddrNotAvailable => Problem::new(
            cause,
            "no interface of this machine has that address; use one it has, or :PORT for all",
        ),
        _ => Problem::without_hint(cause),
    }
}

/// The tokens of `--tokens-file` plus `GITOPS_STATUS_WRITE_TOKEN`.
fn load_tokens(args: &ServeArgs) -> Result<Tokens, TokensError> {
    let tokens = match &args.tokens_file {
        Some(file) => Tokens::load(&file.value, &file.name)?,
        None => Tokens::none(),
    };
    Ok(match &args.write_token {
        Some(token) => tokens.with_write_token(token.expose()),
        None => tokens,
    })
}
