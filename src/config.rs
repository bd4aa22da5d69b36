//! Configuration: flags, their environment variables, an optional TOML file, and
//! defaults, in that order of precedence (a flag beats its variable, which beats
//! the file, which beats the default).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;
use serde::Deserialize;

use crate::app::Settings;
use crate::domain::{DEFAULT_INTEGRATION, OrderIdMode};
use crate::http::{AccessPolicy, Limits};
use crate::roistat::Credentials;
use crate::tls::ServerTls;
use ipnet::IpNet;

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
    ///
    /// SIGTERM or Ctrl-C stops it gracefully; SIGHUP reloads the TLS certificates.
    Serve(ServeArgs),
    /// Print the lead stream of a running service, one JSON object per line.
    Tail(crate::tail::TailArgs),
    /// Send a Roistat-shaped webhook to a running service, to check the set-up.
    Send(crate::send::SendArgs),
    /// Validate the configuration and print the effective settings, secrets masked.
    CheckConfig(ServeArgs),
}

/// What Roistat is answered as `order_id` for a new lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderIdArg {
    /// At once: the Roistat lead id (or the CRM deal id, if already reported).
    Lead,
    /// The CRM deal id reported through ReportDeal, waiting up to --deal-wait-ms;
    /// without one Roistat is answered 503 and retries.
    Crm,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML configuration file (see README); flags and environment variables
    /// override what it sets.
    #[arg(long, env = "ROISTAT_LEADS_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Address of the HTTP server that receives Roistat's webhooks.
    #[arg(long, env = "ROISTAT_LEADS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Address of the gRPC server (LeadService, health, reflection).
    #[arg(long, env = "ROISTAT_LEADS_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    /// Also serve GET /metrics on this address (it is always on the HTTP server).
    #[arg(long, env = "ROISTAT_LEADS_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

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

    /// Require `authorization: Bearer TOKEN` on LeadService calls (health and
    /// reflection stay open).
    #[arg(long, env = "ROISTAT_LEADS_GRPC_TOKEN", hide_env_values = true, value_parser = secret)]
    pub grpc_token: Option<SecretString>,

    /// Only these source networks may call the webhook (CIDRs, comma-separated);
    /// empty: everyone. Health and metrics stay open.
    #[arg(
        long,
        env = "ROISTAT_LEADS_WEBHOOK_ALLOW",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub webhook_allow: Vec<IpNet>,

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
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

fn secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value.to_owned()))
}

/// The configuration file. Every key is optional; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    http_addr: Option<SocketAddr>,
    grpc_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    database_url: Option<String>,
    database_url_file: Option<PathBuf>,
    roistat_user: Option<String>,
    roistat_password: Option<String>,
    roistat_password_file: Option<PathBuf>,
    roistat_token: Option<String>,
    roistat_token_file: Option<PathBuf>,
    order_id: Option<OrderIdArg>,
    deal_wait_ms: Option<u64>,
    stream_buffer: Option<u32>,
    heartbeat_ms: Option<u64>,
    export_page_size: Option<u64>,
    log_format: Option<LogFormat>,
    grpc_token: Option<String>,
    grpc_token_file: Option<PathBuf>,
    webhook_allow: Option<Vec<IpNet>>,
    rate_limit: Option<std::num::NonZeroU32>,
    trusted_proxies: Option<Vec<IpNet>>,
    http_tls_cert: Option<PathBuf>,
    http_tls_key: Option<PathBuf>,
    grpc_tls_cert: Option<PathBuf>,
    grpc_tls_key: Option<PathBuf>,
    grpc_tls_client_ca: Option<PathBuf>,
    #[serde(default)]
    integrations: Vec<FileIntegration>,
}

/// One Roistat project, served at `/webhook/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIntegration {
    name: String,
    login: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

/// The credentials of one integration, as given somewhere.
#[derive(Default)]
struct CredentialSource {
    login: Option<String>,
    password: Option<SecretString>,
    token: Option<SecretString>,
}

impl CredentialSource {
    fn is_empty(&self) -> bool {
        self.login.is_none() && self.password.is_none() && self.token.is_none()
    }

    fn build(self, what: &str) -> Result<Credentials, String> {
        let login = self.login.as_deref();
        match (&self.password, &self.token) {
            (Some(_), Some(_)) => Err(format!(
                "{what}: give either a password or a token, not both"
            )),
            (Some(password), None) => Ok(Credentials::from_password(
                login.unwrap_or_default(),
                password,
            )),
            (None, Some(token)) => {
                Credentials::from_token(login, token).map_err(|error| format!("{what}: {error}"))
            }
            (None, None) => Err(format!("{what}: no password or token")),
        }
    }
}

/// Reads a secret from a file (as container secrets are mounted), without the
/// trailing newline editors add.
fn read_secret(path: &Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    Ok(SecretString::from(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

fn one_of(
    value: Option<String>,
    file: Option<&PathBuf>,
    what: &str,
) -> Result<Option<SecretString>, String> {
    match (value, file) {
        (Some(_), Some(_)) => Err(format!("{what}: give the value or the file, not both")),
        (Some(value), None) => Ok(Some(SecretString::from(value))),
        (None, Some(path)) => read_secret(path).map(Some),
        (None, None) => Ok(None),
    }
}

/// One server's TLS settings: the certificate and key from flags or environment,
/// else from the file; a client CA needs them.
fn server_tls(
    what: &str,
    given: Option<(PathBuf, PathBuf)>,
    file: (Option<PathBuf>, Option<PathBuf>),
    client_ca: Option<PathBuf>,
) -> Result<Option<ServerTls>, String> {
    let pair = match (given, file) {
        (Some(pair), _) => Some(pair),
        (None, (Some(cert), Some(key))) => Some((cert, key)),
        (None, (None, None)) => None,
        (None, _) => return Err(format!("give both {what}_cert and {what}_key, or neither")),
    };
    match (pair, client_ca) {
        (Some((cert, key)), client_ca) => {
            ServerTls::load(&cert, &key, client_ca.as_deref()).map(Some)
        }
        (None, Some(_)) => Err(format!(
            "{what}_client_ca needs {what}_cert and {what}_key: client certificates are checked only over TLS"
        )),
        (None, None) => Ok(None),
    }
}

/// Integration names appear in URLs: keep them plain.
fn validate_integration_name(name: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'-' | b'_')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "integration name {name:?}: use 1 to 64 of a-z 0-9 - _"
        ))
    }
}

impl ServeArgs {
    /// The effective settings: flags and environment (as parsed into `self`, with
    /// `matches` telling which values are mere defaults), then the file, then defaults.
    pub fn into_settings(self, matches: &ArgMatches) -> Result<Settings, String> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|error| format!("{}: {error}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let explicit = |id: &str| {
            matches
                .value_source(id)
                .is_some_and(|source| source != ValueSource::DefaultValue)
        };
        macro_rules! pick {
            ($field:ident) => {
                if explicit(stringify!($field)) {
                    self.$field
                } else {
                    file.$field.unwrap_or(self.$field)
                }
            };
        }
        let database_url = if explicit("database_url") {
            self.database_url.clone()
        } else {
            match (&file.database_url, &file.database_url_file) {
                (Some(_), Some(_)) => {
                    return Err("give database_url or database_url_file, not both".to_owned());
                }
                (Some(url), None) => url.clone(),
                (None, Some(path)) => secrecy::ExposeSecret::expose_secret(&read_secret(path)?)
                    .trim()
                    .to_owned(),
                (None, None) => self.database_url.clone(),
            }
        };
        let integrations = self.integrations(&file)?;
        let grpc_token = match self.grpc_token.clone() {
            Some(token) => Some(token),
            None => one_of(
                file.grpc_token.clone(),
                file.grpc_token_file.as_ref(),
                "grpc_token",
            )?,
        };
        if grpc_token.as_ref().is_some_and(|token| {
            secrecy::ExposeSecret::expose_secret(token)
                .trim()
                .is_empty()
        }) {
            return Err("the gRPC token must not be empty".to_owned());
        }
        let order_id = pick!(order_id);
        // A certificate and its key come from the same place: both flags (clap makes
        // each require the other) or both file keys.
        let http_tls = server_tls(
            "http_tls",
            self.http_tls_cert.clone().zip(self.http_tls_key.clone()),
            (file.http_tls_cert.clone(), file.http_tls_key.clone()),
            None,
        )?;
        let grpc_tls = server_tls(
            "grpc_tls",
            self.grpc_tls_cert.clone().zip(self.grpc_tls_key.clone()),
            (file.grpc_tls_cert.clone(), file.grpc_tls_key.clone()),
            self.grpc_tls_client_ca
                .clone()
                .or_else(|| file.grpc_tls_client_ca.clone()),
        )?;
        Ok(Settings {
            http_addr: pick!(http_addr),
            grpc_addr: pick!(grpc_addr),
            metrics_addr: self.metrics_addr.or(file.metrics_addr),
            database_url,
            integrations,
            order_id_mode: match order_id {
                OrderIdArg::Lead => OrderIdMode::Lead,
                OrderIdArg::Crm => OrderIdMode::Crm,
            },
            deal_wait: Duration::from_millis(pick!(deal_wait_ms)),
            stream_buffer: pick!(stream_buffer).max(1) as usize,
            heartbeat: Duration::from_millis(pick!(heartbeat_ms).max(10)),
            export_page_size: pick!(export_page_size).clamp(1, 10_000),
            log_format: pick!(log_format),
            grpc_token,
            rate_limit: self.rate_limit.or(file.rate_limit),
            access: AccessPolicy {
                allow: if explicit("webhook_allow") {
                    self.webhook_allow.clone()
                } else {
                    file.webhook_allow.clone().unwrap_or_default()
                },
                trusted_proxies: if explicit("trusted_proxies") {
                    self.trusted_proxies.clone()
                } else {
                    file.trusted_proxies.clone().unwrap_or_default()
                },
            },
            limits: Limits::default(),
            http_tls,
            grpc_tls,
        })
    }

    /// Every integration's credentials. The default one (plain /webhook) takes them
    /// from flags or environment, else from the file's top level, else from an
    /// `[[integrations]]` entry named "default".
    fn integrations(&self, file: &FileConfig) -> Result<BTreeMap<String, Credentials>, String> {
        let mut integrations = BTreeMap::new();
        let from_flags = CredentialSource {
            login: self.roistat_user.clone(),
            password: self.roistat_password.clone(),
            token: self.roistat_token.clone(),
        };
        let from_file = CredentialSource {
            login: file.roistat_user.clone(),
            password: one_of(
                file.roistat_password.clone(),
                file.roistat_password_file.as_ref(),
                "roistat_password",
            )?,
            token: one_of(
                file.roistat_token.clone(),
                file.roistat_token_file.as_ref(),
                "roistat_token",
            )?,
        };
        let default = if from_flags.password.is_some() || from_flags.token.is_some() {
            Some(from_flags)
        } else if !from_file.is_empty() {
            Some(CredentialSource {
                login: from_flags.login.or(from_file.login),
                ..from_file
            })
        } else {
            None
        };
        if let Some(default) = default {
            integrations.insert(
                DEFAULT_INTEGRATION.to_owned(),
                default.build("the default integration (ROISTAT_PASSWORD or ROISTAT_TOKEN)")?,
            );
        }
        for entry in &file.integrations {
            validate_integration_name(&entry.name)?;
            let what = format!("integration {:?}", entry.name);
            if integrations.contains_key(&entry.name) {
                if entry.name == DEFAULT_INTEGRATION {
                    continue; // flags or the top level already set it
                }
                return Err(format!("{what} is declared twice"));
            }
            let source = CredentialSource {
                login: entry.login.clone(),
                password: one_of(entry.password.clone(), entry.password_file.as_ref(), &what)?,
                token: one_of(entry.token.clone(), entry.token_file.as_ref(), &what)?,
            };
            integrations.insert(entry.name.clone(), source.build(&what)?);
        }
        if integrations.is_empty() {
            return Err("no Roistat credentials: set ROISTAT_USER and ROISTAT_PASSWORD (or ROISTAT_TOKEN), \
                 pass --roistat-user and --roistat-password (or --roistat-token), \
                 or declare integrations in --config"
                .to_owned());
        }
        Ok(integrations)
    }
}

/// The effective settings as `key = value` lines, secrets masked.
pub fn describe(settings: &Settings) -> String {
    let mut lines =
        vec![
            format!("http_addr = {:?}", settings.http_addr.to_string()),
            format!("grpc_addr = {:?}", settings.grpc_addr.to_string()),
            format!(
                "metrics_addr = {}",
                settings.metrics_addr.map_or(
                    "(only /metrics on http_addr)".to_owned(),
                    |a| format!("{:?}", a.to_string())
                )
            ),
            format!("database_url = {:?}", mask_url(&settings.database_url)),
            format!(
                "rate_limit = {}",
                settings
                    .rate_limit
                    .map_or("0  # off".to_owned(), |limit| limit.to_string())
            ),
            format!(
                "webhook_allow = {:?}",
                settings
                    .access
                    .allow
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
            format!(
                "trusted_proxies = {:?}",
                settings
                    .access
                    .trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
            format!(
                "grpc_token = {}",
                if settings.grpc_token.is_some() {
                    "\"********\""
                } else {
                    "\"\"  # none: LeadService is open"
                }
            ),
            describe_tls("http_tls", settings.http_tls.as_ref()),
            describe_tls("grpc_tls", settings.grpc_tls.as_ref()),
            format!(
                "order_id = {:?}",
                match settings.order_id_mode {
                    OrderIdMode::Lead => "lead",
                    OrderIdMode::Crm => "crm",
                }
            ),
            format!("deal_wait_ms = {}", settings.deal_wait.as_millis()),
            format!("stream_buffer = {}", settings.stream_buffer),
            format!("heartbeat_ms = {}", settings.heartbeat.as_millis()),
            format!("export_page_size = {}", settings.export_page_size),
            format!(
                "log_format = {:?}",
                format!("{:?}", settings.log_format).to_lowercase()
            ),
        ];
    for (name, credentials) in &settings.integrations {
        let path = if name == DEFAULT_INTEGRATION {
            "/webhook".to_owned()
        } else {
            format!("/webhook/{name}")
        };
        lines.push(String::new());
        lines.push("[[integrations]]".to_owned());
        lines.push(format!("name = {name:?}  # {path}"));
        lines.push(format!(
            "login = {:?}",
            credentials.login().unwrap_or("(any)")
        ));
        lines.push("token = \"********\"".to_owned());
    }
    lines.join("\n")
}

/// A server's TLS files as `key = value` lines, or a comment that it is off.
fn describe_tls(what: &str, tls: Option<&ServerTls>) -> String {
    let Some(tls) = tls else {
        return format!("# {what}: off (plain text)");
    };
    let mut lines = vec![
        format!("{what}_cert = {:?}", tls.cert_path().display().to_string()),
        format!("{what}_key = {:?}", tls.key_path().display().to_string()),
    ];
    if let Some(ca) = tls.client_ca_path() {
        lines.push(format!("{what}_client_ca = {:?}", ca.display().to_string()));
    }
    lines.join("\n")
}

/// A database URL with its password hidden.
fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:********@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_masked() {
        assert_eq!(
            mask_url("postgres://app:s3cret@db:5432/leads"),
            "postgres://app:********@db:5432/leads"
        );
        assert_eq!(
            mask_url("sqlite://roistat-leads.db"),
            "sqlite://roistat-leads.db"
        );
    }

    #[test]
    fn integration_names_are_plain() {
        assert!(validate_integration_name("shop-b").is_ok());
        assert!(validate_integration_name("Shop B").is_err());
        assert!(validate_integration_name("").is_err());
    }
}
