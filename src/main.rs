//! Entry point: parse the configuration, set up logging, then serve or run the chosen subcommand.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use gitops_status_server::config::{Cli, Command, LogArgs, LogFormat, ServeArgs};
use gitops_status_server::store::Store;
use gitops_status_server::{AppState, Settings};
use tracing_subscriber::EnvFilter;

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
        Some(Command::Report(args)) => gitops_status_server::report::run(args).await.into(),
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
    let store = match Store::connect(&args.database_url).await {
        Ok(store) => store,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(
                "GITOPS_STATUS_LISTEN: cannot listen on {}: {error}",
                args.listen
            );
            store.close().await;
            return ExitCode::FAILURE;
        }
    };
    tracing::warn!("no tokens configured: anyone who can reach this server can record snapshots");
    match listener.local_addr() {
        Ok(address) => tracing::info!(%address, "listening"),
        Err(error) => tracing::warn!(%error, "listening on an unknown address"),
    }
    let app = gitops_status_server::app(AppState::new(store.clone(), Settings::from(&args)));
    let served = gitops_status_server::serve(
        listener,
        app,
        gitops_status_server::shutdown_signal(),
        args.shutdown_timeout,
    )
    .await;
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
