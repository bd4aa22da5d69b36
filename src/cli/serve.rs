//! `roistat-leads serve` and `check-config`: the flags of the server, and the
//! environment variables beside them. The configuration module merges them with
//! the file and the defaults, and checks every value whatever its source.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use clap::builder::{PossibleValue, PossibleValuesParser};
use ipnet::IpNet;
use secrecy::SecretString;

/// Where the console listens unless told otherwise: off in a build without it.
#[cfg(feature = "console")]
pub const DEFAULT_CONSOLE_ADDR: &str = "127.0.0.1:8081";
#[cfg(not(feature = "console"))]
pub const DEFAULT_CONSOLE_ADDR: &str = "off";

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML configuration file (see docs/configuration.md); flags and environment variables
    /// override what it sets.
    #[arg(long, env = "ROISTAT_LEADS_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Address of the HTTP server that receives Roistat's webhooks.
    #[arg(long, env = "ROISTAT_LEADS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Address of the gRPC server (LeadService, health, reflection).
    /// Without --grpc-token, --grpc-tls-client-ca or --grpc-insecure it must be a
    /// loopback address (the service refuses to start otherwise).
    #[arg(
        long,
        env = "ROISTAT_LEADS_GRPC_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub grpc_addr: SocketAddr,

    /// Serve GET /metrics on this address instead of the HTTP server's.
    #[arg(long, env = "ROISTAT_LEADS_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Address of the operator console (a web page: live leads, search, a lead's
    /// story, consumers, refused requests), or `off`. Without --console-token it
    /// must be a loopback address (the service refuses to start otherwise) and
    /// answers only requests whose Host is localhost, 127.0.0.1, [::1] or one of
    /// --console-allowed-hosts.
    #[arg(
        long,
        env = "ROISTAT_LEADS_CONSOLE_ADDR",
        default_value = DEFAULT_CONSOLE_ADDR,
        value_name = "ADDR|off"
    )]
    pub console_addr: Listen,

    /// A token the console's visitors log in with (a form; the session is a signed
    /// cookie valid for 12 hours), at least 24 characters; with it, the console may
    /// listen on any address and answers every peer that logs in.
    #[arg(long, env = "ROISTAT_LEADS_CONSOLE_TOKEN", hide_env_values = true, value_parser = secret)]
    pub console_token: Option<SecretString>,

    /// Host names (comma-separated) the console answers besides localhost,
    /// 127.0.0.1 and [::1] when it has no token: a request with any other Host gets
    /// 421, so a web page whose name is rebound to 127.0.0.1 cannot read leads
    /// through an operator's browser.
    #[arg(
        long,
        env = "ROISTAT_LEADS_CONSOLE_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub console_allowed_hosts: Vec<String>,

    /// Console live feeds (the live view of an open browser tab) at once; more are
    /// refused with 503. Apart from --grpc-max-subscribers.
    #[arg(long, env = "ROISTAT_LEADS_CONSOLE_MAX_FEEDS", default_value_t = 32)]
    pub console_max_feeds: u64,

    /// Where leads are stored: sqlite://PATH (the file is created if missing) or
    /// postgres://USER:PASSWORD@HOST:PORT/DATABASE.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://roistat-leads.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// The login set in Roistat's integration settings (sent as `user`), for the
    /// default integration at /webhook.
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
        default_value = "lead",
        value_parser = order_id_modes()
    )]
    pub order_id: String,

    /// In `--order-id crm` mode, how long a webhook waits for the CRM's deal id.
    #[arg(long, env = "ROISTAT_LEADS_DEAL_WAIT_MS", default_value_t = 3000)]
    pub deal_wait_ms: u64,

    /// Live events kept in memory for subscribers; one that falls further behind
    /// catches up from the store.
    #[arg(long, env = "ROISTAT_LEADS_STREAM_BUFFER", default_value_t = 1024)]
    pub stream_buffer: u64,

    /// A StreamLeads stream that delivered nothing for this long gets a heartbeat.
    #[arg(long, env = "ROISTAT_LEADS_HEARTBEAT_MS", default_value_t = 15000)]
    pub heartbeat_ms: u64,

    /// Orders (or clients) per page of Roistat's export when it gives no `limit`;
    /// a larger `limit` it asks for is capped at 10000.
    #[arg(long, env = "ROISTAT_LEADS_EXPORT_PAGE_SIZE", default_value_t = 1000)]
    pub export_page_size: u64,

    /// How long an identical message, task, call or unknown action (Roistat's
    /// retry of it) is one event, from its first stored copy: 1h, 30m, 90s, 500ms; 0
    /// stores every copy. A call or task whose content changed is a new event.
    #[arg(
        long,
        env = "ROISTAT_LEADS_MESSAGE_DEDUP_WINDOW",
        default_value = "1h",
        value_name = "DURATION"
    )]
    pub message_dedup_window: String,

    /// The status an order of the default integration has in Roistat's export
    /// until the CRM reports one; it must be in every published scheme. Unset: the
    /// first status of the published scheme.
    #[arg(long, env = "ROISTAT_LEADS_DEFAULT_STATUS", value_name = "STATUS_ID")]
    pub default_status: Option<String>,

    /// The region phone numbers written without a country code are read in (an
    /// ISO 3166 code: RU, KZ, US, …), for integrations without their own
    /// `default_phone_region` in the file.
    #[arg(
        long,
        env = "ROISTAT_LEADS_DEFAULT_PHONE_REGION",
        value_name = "REGION",
        default_value = "RU"
    )]
    pub default_phone_region: String,

    /// Match leads to persons (leads of one integration sharing a valid phone or
    /// an e-mail); false turns it off for integrations without their own
    /// `person_matching` in the file.
    #[arg(
        long,
        env = "ROISTAT_LEADS_PERSON_MATCHING",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub person_matching: bool,

    /// Requests refused after the token check kept per integration, newest first
    /// (0 keeps none).
    #[arg(long, env = "ROISTAT_LEADS_REJECTED_KEEP", default_value_t = 1000)]
    pub rejected_keep: u64,

    /// Require `authorization: Bearer TOKEN` on LeadService calls (health and
    /// reflection stay open).
    #[arg(long, env = "ROISTAT_LEADS_GRPC_TOKEN", hide_env_values = true, value_parser = secret)]
    pub grpc_token: Option<SecretString>,

    /// Serve LeadService to any peer that reaches it, without --grpc-token or
    /// --grpc-tls-client-ca. Without one of the three, --grpc-addr must be a
    /// loopback address (a peer's loopback address proves nothing when a proxy or
    /// sidecar shares the host).
    #[arg(
        long,
        env = "ROISTAT_LEADS_GRPC_INSECURE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub grpc_insecure: bool,

    /// StreamLeads subscribers open at once, across connections; more are refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "ROISTAT_LEADS_GRPC_MAX_SUBSCRIBERS",
        default_value_t = 10_000
    )]
    pub grpc_max_subscribers: u64,

    /// Streams (calls) one gRPC connection may hold open at once.
    #[arg(
        long,
        env = "ROISTAT_LEADS_GRPC_MAX_CONCURRENT_STREAMS",
        default_value_t = 200
    )]
    pub grpc_max_concurrent_streams: u64,

    /// The largest request message the gRPC server decodes.
    #[arg(
        long,
        env = "ROISTAT_LEADS_GRPC_MAX_RECV_MESSAGE_BYTES",
        default_value_t = 4 * 1024 * 1024
    )]
    pub grpc_max_recv_message_bytes: u64,

    /// The largest message the gRPC server sends.
    #[arg(
        long,
        env = "ROISTAT_LEADS_GRPC_MAX_SEND_MESSAGE_BYTES",
        default_value_t = 4 * 1024 * 1024
    )]
    pub grpc_max_send_message_bytes: u64,

    /// The most a page of ListLeads or ListRejectedRequests holds, encoded (at
    /// least one item); the rest comes with the next page.
    #[arg(
        long,
        env = "ROISTAT_LEADS_GRPC_MAX_PAGE_BYTES",
        default_value_t = 1024 * 1024
    )]
    pub grpc_max_page_bytes: u64,

    /// How often the gRPC server pings an idle connection (HTTP/2 keepalive).
    #[arg(
        long,
        env = "ROISTAT_LEADS_GRPC_KEEPALIVE_INTERVAL_MS",
        default_value_t = 30_000
    )]
    pub grpc_keepalive_interval_ms: u64,

    /// How long a ping may go unanswered before the connection is dropped.
    #[arg(
        long,
        env = "ROISTAT_LEADS_GRPC_KEEPALIVE_TIMEOUT_MS",
        default_value_t = 20_000
    )]
    pub grpc_keepalive_timeout_ms: u64,

    /// Named consumers that may exist; creating one more (StreamLeads or AckLeads
    /// with a new name) is refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "ROISTAT_LEADS_MAX_CONSUMERS", default_value_t = 1_000)]
    pub max_consumers: u64,

    /// Once a stop is asked for, how long in-flight webhooks and open streams get
    /// before they are cut; the store is then closed cleanly.
    #[arg(
        long,
        env = "ROISTAT_LEADS_SHUTDOWN_DRAIN_MS",
        default_value_t = 10_000
    )]
    pub shutdown_drain_ms: u64,

    /// Accept an empty Roistat password (or token): every request then carries
    /// the login alone, md5(login) as its token. Refused at start without this.
    #[arg(
        long,
        env = "ROISTAT_LEADS_ALLOW_EMPTY_PASSWORD",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_empty_password: bool,

    /// Only these source networks may call the webhook (CIDRs, comma-separated);
    /// empty: everyone. Health and metrics stay open.
    #[arg(
        long,
        env = "ROISTAT_LEADS_WEBHOOK_ALLOW",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub webhook_allow: Vec<IpNet>,

    /// HTTP connections open at once (per listener: webhook, console, metrics);
    /// past it, new connections wait in the kernel's backlog, not in memory.
    #[arg(
        long,
        env = "ROISTAT_LEADS_HTTP_MAX_CONNECTIONS",
        default_value_t = 4096
    )]
    pub http_max_connections: u64,

    /// Bytes of webhook request bodies being read at once, across connections
    /// (each counts for its declared length, else the 1 MiB limit); past it, a
    /// request with a body gets 503 with Retry-After before its body is read.
    #[arg(
        long,
        env = "ROISTAT_LEADS_HTTP_BODY_BUDGET_BYTES",
        default_value_t = 64 * 1024 * 1024
    )]
    pub http_body_budget_bytes: u64,

    /// Proxies whose X-Forwarded-For is believed (CIDRs, comma-separated).
    #[arg(
        long,
        env = "ROISTAT_LEADS_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub trusted_proxies: Vec<IpNet>,

    /// At most this many webhook requests per second from one client address (in
    /// bursts of as many), 429 beyond; off by default: Roistat sends bursts from a few
    /// addresses. The client is found as for --webhook-allow.
    #[arg(long, env = "ROISTAT_LEADS_RATE_LIMIT", value_name = "PER_SECOND")]
    pub rate_limit: Option<std::num::NonZeroU32>,

    /// Serve the webhook over HTTPS with this certificate chain (PEM; with
    /// --http-tls-key).
    #[arg(
        long,
        env = "ROISTAT_LEADS_HTTP_TLS_CERT",
        value_name = "PEM",
        requires = "http_tls_key"
    )]
    pub http_tls_cert: Option<PathBuf>,

    /// The private key of --http-tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "ROISTAT_LEADS_HTTP_TLS_KEY",
        value_name = "PEM",
        requires = "http_tls_cert"
    )]
    pub http_tls_key: Option<PathBuf>,

    /// Serve gRPC over TLS with this certificate chain (PEM; with --grpc-tls-key).
    #[arg(
        long,
        env = "ROISTAT_LEADS_GRPC_TLS_CERT",
        value_name = "PEM",
        requires = "grpc_tls_key"
    )]
    pub grpc_tls_cert: Option<PathBuf>,

    /// The private key of --grpc-tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "ROISTAT_LEADS_GRPC_TLS_KEY",
        value_name = "PEM",
        requires = "grpc_tls_cert"
    )]
    pub grpc_tls_key: Option<PathBuf>,

    /// Mutual TLS on gRPC: every client must present a certificate issued by one of
    /// these CAs (PEM). Needs --grpc-tls-cert.
    #[arg(long, env = "ROISTAT_LEADS_GRPC_TLS_CLIENT_CA", value_name = "PEM")]
    pub grpc_tls_client_ca: Option<PathBuf>,

    /// Log lines as human-readable text or as JSON objects. RUST_LOG filters them.
    #[arg(
        long,
        env = "ROISTAT_LEADS_LOG_FORMAT",
        default_value = "text",
        value_parser = log_formats()
    )]
    pub log_format: String,

    /// Export traces over OTLP/gRPC to this OpenTelemetry collector endpoint
    /// (e.g. http://otel-collector:4317); off when empty. OTEL_SERVICE_NAME and
    /// OTEL_RESOURCE_ATTRIBUTES name the service as OpenTelemetry's SDKs read them.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// The share of traces sampled, 0.0 to 1.0, where a caller's traceparent does
    /// not decide (a sampled caller is always followed).
    #[arg(
        long,
        env = "ROISTAT_LEADS_OTLP_SAMPLING_RATIO",
        default_value_t = 1.0,
        value_name = "RATIO"
    )]
    pub otlp_sampling_ratio: f64,
}

/// A listening address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.trim() {
            "off" => Ok(Listen(None)),
            addr => addr
                .parse()
                .map(|addr| Listen(Some(addr)))
                .map_err(|_| format!("{addr:?} is neither an address (HOST:PORT) nor \"off\"")),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("off"),
        }
    }
}

fn secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value.to_owned()))
}

fn order_id_modes() -> PossibleValuesParser {
    PossibleValuesParser::new([
        PossibleValue::new("lead")
            .help("At once: the Roistat lead id (or the CRM deal id, if already reported)"),
        PossibleValue::new("crm").help(
            "The CRM deal id reported through ReportDeal, waiting up to --deal-wait-ms; \
             without one Roistat is answered 503 and retries",
        ),
    ])
}

fn log_formats() -> PossibleValuesParser {
    PossibleValuesParser::new([
        PossibleValue::new("text").help("Human-readable lines"),
        PossibleValue::new("json").help("One JSON object per line, for log pipelines"),
    ])
}
