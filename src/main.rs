use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use roistat_leads::app::{self, Application};
use roistat_leads::cli::{Cli, Command, causes};
use roistat_leads::config;
use roistat_leads::signal::shutdown_signal;

/// The allocator of the service's build (the ceiling uses the same): requests
/// allocate on one thread and free on another, which glibc's arenas make slow.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    // Which values came from flags or the environment, and which are defaults.
    let sub_matches = matches
        .subcommand()
        .map(|(_, sub)| sub.clone())
        .unwrap_or_default();
    match cli.command {
        Command::CheckConfig(args) => match config::load(args, &sub_matches) {
            Ok(settings) => {
                println!("{}", app::describe(&settings));
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("roistat-leads: {error}");
                ExitCode::from(2)
            }
        },
        Command::Probe(args) => match config::load(args, &sub_matches) {
            Ok(settings) => match app::probe(&settings).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(why) => {
                    eprintln!("roistat-leads probe: {why}");
                    ExitCode::FAILURE
                }
            },
            Err(error) => {
                eprintln!("roistat-leads: {error}");
                ExitCode::from(2)
            }
        },
        Command::Serve(args) => {
            let settings = match config::load(args, &sub_matches) {
                Ok(settings) => settings,
                Err(error) => {
                    eprintln!("roistat-leads: {error}");
                    return ExitCode::from(2);
                }
            };
            let tracer = match roistat_leads::telemetry::init(settings.log_format, &settings.traces)
            {
                Ok(tracer) => tracer,
                Err(error) => {
                    eprintln!("roistat-leads: {error}");
                    return ExitCode::from(2);
                }
            };
            let code = serve(settings).await;
            let _ = tokio::task::spawn_blocking(move || tracer.shutdown()).await;
            code
        }
        #[cfg(feature = "client")]
        Command::Send(args) => roistat_leads::cli::send(args).await,
        #[cfg(feature = "client")]
        Command::Tail(args) => match roistat_leads::cli::tail(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("roistat-leads tail: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn serve(settings: config::Settings) -> ExitCode {
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!("cannot start: {}", causes(&error));
            return ExitCode::from(error.exit_code());
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
            tracing::error!("stopped: {}", causes(&error));
            ExitCode::FAILURE
        }
    }
}
