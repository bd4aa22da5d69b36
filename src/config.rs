//! The command line: flags, their environment variables and defaults.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

use crate::app::Settings;
use crate::domain::OrderIdMode;
use crate::http::Limits;
use crate::roistat::Credentials;

#[derive(Debug, Parser)]
#[command(
    name = "roistat-leads",
    version,
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
    Serve(ServeArgs),
    /// Print the lead stream of a running service, one JSON object per line.
    Tail(crate::tail::TailArgs),
}

/// What Roistat is answered as `order_id` for a new lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrderIdArg {
    /// At once: the Roistat lead id (or the CRM deal id, if already reported).
    Lead,
    /// The CRM deal id reported through ReportDeal, waiting up to --deal-wait-ms;
    /// without one Roistat is answered 503 and retries.
    Crm,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the HTTP server that receives Roistat's webhooks.
    #[arg(long, env = "ROISTAT_LEADS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Address of the gRPC server (LeadService, health, reflection).
    #[arg(long, env = "ROISTAT_LEADS_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    /// Where leads are stored: sqlite://PATH (the file is created if missing).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://roistat-leads.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// The login set in Roistat's integration settings (sent as `user`).
    #[arg(long, env = "ROISTAT_USER")]
    pub roistat_user: Option<String>,

    /// The password set in Roistat's integration settings; the expected token is
    /// md5(login + password).
    #[arg(long, env = "ROISTAT_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub roistat_password: Option<SecretString>,

    /// The token itself (32 hex digits), instead of login and password.
    #[arg(long, env = "ROISTAT_TOKEN", hide_env_values = true, value_parser = secret)]
    pub roistat_token: Option<SecretString>,

    /// What Roistat is answered as `order_id`.
    #[arg(
        long,
        env = "ROISTAT_LEADS_ORDER_ID",
        value_enum,
        default_value = "lead"
    )]
    pub order_id: OrderIdArg,

    /// In `--order-id crm` mode, how long a webhook waits for the CRM's deal id.
    #[arg(long, env = "ROISTAT_LEADS_DEAL_WAIT_MS", default_value_t = 3000)]
    pub deal_wait_ms: u64,

    /// Live events kept in memory for subscribers; one that falls further behind
    /// catches up from the store.
    #[arg(
        long,
        env = "ROISTAT_LEADS_STREAM_BUFFER",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    pub stream_buffer: u32,

    /// A StreamLeads stream that delivered nothing for this long gets a heartbeat.
    #[arg(
        long,
        env = "ROISTAT_LEADS_HEARTBEAT_MS",
        default_value_t = 15000,
        value_parser = clap::value_parser!(u64).range(10..)
    )]
    pub heartbeat_ms: u64,

    /// Orders (or clients) per page of Roistat's export when it gives no `limit`;
    /// a larger `limit` it asks for is capped at 10000.
    #[arg(
        long,
        env = "ROISTAT_LEADS_EXPORT_PAGE_SIZE",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..=10_000)
    )]
    pub export_page_size: u64,
}

fn secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value.to_owned()))
}

impl ServeArgs {
    /// Checks the flags together and turns them into the application's settings.
    pub fn into_settings(self) -> Result<Settings, String> {
        let credentials = self.credentials()?;
        Ok(Settings {
            http_addr: self.http_addr,
            grpc_addr: self.grpc_addr,
            database_url: self.database_url,
            credentials,
            order_id_mode: match self.order_id {
                OrderIdArg::Lead => OrderIdMode::Lead,
                OrderIdArg::Crm => OrderIdMode::Crm,
            },
            deal_wait: Duration::from_millis(self.deal_wait_ms),
            stream_buffer: self.stream_buffer as usize,
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            export_page_size: self.export_page_size,
            limits: Limits::default(),
        })
    }

    fn credentials(&self) -> Result<Credentials, String> {
        let user = self.roistat_user.as_deref();
        match (&self.roistat_password, &self.roistat_token) {
            (Some(_), Some(_)) => {
                Err("give either --roistat-password or --roistat-token (ROISTAT_PASSWORD or ROISTAT_TOKEN), not both".to_owned())
            }
            (Some(password), None) => Ok(Credentials::from_password(user.unwrap_or_default(), password)),
            (None, Some(token)) => {
                Credentials::from_token(user, token).map_err(|error| format!("--roistat-token: {error}"))
            }
            (None, None) => Err(
                "no Roistat credentials: set ROISTAT_USER and ROISTAT_PASSWORD (or ROISTAT_TOKEN), \
                 or pass --roistat-user and --roistat-password (or --roistat-token)"
                    .to_owned(),
            ),
        }
    }
}
