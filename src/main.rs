use std::process::ExitCode;

use clap::Parser;
use roistat_leads::app::{Application, shutdown_signal};
use roistat_leads::config::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let settings = match args.into_settings() {
                Ok(settings) => settings,
                Err(error) => {
                    eprintln!("roistat-leads: {error}");
                    return ExitCode::from(2);
                }
            };
            roistat_leads::telemetry::init();
            let app = match Application::build(settings).await {
                Ok(app) => app,
                Err(error) => {
                    tracing::error!("cannot start: {error:#}");
                    return ExitCode::FAILURE;
                }
            };
            let shutdown = app.shutdown_token();
            let signal = shutdown_signal();
            tokio::spawn(async move {
                signal.await;
                tracing::info!("shutting down");
                shutdown.cancel();
            });
            match app.run().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("stopped: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Tail(args) => match roistat_leads::tail::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("roistat-leads tail: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}
