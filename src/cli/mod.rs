//! The command line: the subcommands, the server's flags (`serve`), and the client
//! commands `tail` and `send`. The clients use the generated proto and pure helpers
//! only, never the server's modules.

#[cfg(feature = "client")]
mod send;
mod serve;
#[cfg(feature = "client")]
mod tail;

use clap::{Parser, Subcommand};

#[cfg(feature = "client")]
pub use send::{SendAction, SendArgs};
pub use serve::{DEFAULT_CONSOLE_ADDR, Listen, ServeArgs};
#[cfg(feature = "client")]
pub use tail::{TailArgs, event_json};

#[derive(Debug, Parser)]
#[command(
    name = "roistat-leads",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ROISTAT_LEADS_COMMIT"), ")"),
    about = "Receives Roistat's own-CRM webhooks, stores every lead durably and serves them over gRPC",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook receiver (HTTP) and the LeadService (gRPC).
    ///
    /// SIGTERM or Ctrl-C stops it gracefully; SIGHUP reloads the TLS certificates.
    Serve(ServeArgs),
    /// Print the lead stream of a running service, one JSON object per line.
    #[cfg(feature = "client")]
    Tail(TailArgs),
    /// Send a Roistat-shaped webhook to a running service, to check the set-up.
    #[cfg(feature = "client")]
    Send(SendArgs),
    /// Validate the configuration and print the effective settings, secrets masked.
    CheckConfig(ServeArgs),
    /// Ask the service these settings describe whether it is ready (GET /readyz on
    /// its HTTP address, over HTTPS when it has a certificate): exit 0 when it is,
    /// 1 when not. For a container's HEALTHCHECK and exec probes.
    Probe(ServeArgs),
}

#[cfg(feature = "client")]
pub use send::run as send;
#[cfg(feature = "client")]
pub use tail::run as tail;

/// An error with its causes, outermost first, for command-line messages: clients'
/// own messages rarely say what went wrong (a refused connection, an untrusted
/// certificate).
pub fn causes(error: &dyn std::error::Error) -> String {
    with_causes(error.to_string(), error.source())
}

/// `text` followed by `source` and its causes.
pub fn with_causes(mut text: String, mut source: Option<&dyn std::error::Error>) -> String {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Wrappers often repeat their cause's message: say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
