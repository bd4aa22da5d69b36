//! The service's settings: flags, their environment variables, an optional TOML
//! file, and defaults, in that order of precedence (a flag beats its variable,
//! which beats the file, which beats the default). Every value is checked here,
//! whatever its source.

mod credentials;
mod error;
mod file;
mod persons;
mod sources;
mod traces;

pub use error::ConfigError;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;

use crate::net::is_loopback;
use std::num::NonZeroU32;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use clap::ArgMatches;
use clap::parser::ValueSource;
use secrecy::{ExposeSecret, SecretString};

use crate::cli::ServeArgs;
use crate::domain::OrderIdMode;
use crate::net::{AccessPolicy, Limits, ServerTls};
use crate::own_crm::Credentials;
use crate::telemetry::{LogFormat, TraceSettings};
use credentials::{default_statuses, integrations, one_of, read_secret};
use file::FileConfig;
use traces::traces;

/// Everything the application needs to start: one plain value per setting, named
/// like its flag. The application hands each part of the service its own.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where each setting given by a flag, the environment or the file came from,
    /// by its key (`grpc_addr`): `flag --grpc-addr`, `env ROISTAT_LEADS_GRPC_ADDR`,
    /// `file`. A key absent here has its default.
    pub sources: BTreeMap<String, String>,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// A second address for GET /metrics, besides the HTTP server's.
    pub metrics_addr: Option<SocketAddr>,
    pub database_url: String,
    /// Credentials by integration name; "default" is served at plain /webhook.
    pub integrations: BTreeMap<String, Credentials>,
    /// What Roistat is answered as a lead's order id.
    pub order_id_mode: OrderIdMode,
    /// In `crm` mode, how long a webhook waits for the CRM's deal id.
    pub deal_wait: Duration,
    /// A stream that delivered nothing for this long gets a heartbeat.
    pub heartbeat: Duration,
    /// How long an identical message or task is one event (zero: every copy).
    pub message_dedup_window: Duration,
    /// The status of an order without a reported one, by integration.
    pub default_statuses: BTreeMap<String, String>,
    /// Phone region and person matching, by integration.
    pub persons: BTreeMap<String, crate::domain::PersonSettings>,
    /// Requests refused after the token check kept per integration.
    pub rejected_keep: u32,
    /// The most StreamLeads subscribers at once.
    pub grpc_max_subscribers: usize,
    /// The most named consumers.
    pub max_consumers: u32,
    /// Live events kept in memory for subscribers.
    pub stream_buffer: usize,
    /// Records per export page when Roistat gives no `limit`.
    pub export_page_size: u64,
    pub log_format: LogFormat,
    /// Traces over OTLP.
    pub traces: TraceSettings,
    /// Bearer token LeadService calls must carry.
    pub grpc_token: Option<SecretString>,
    /// Serve LeadService to any peer without a token or client certificates.
    pub grpc_insecure: bool,
    pub grpc_keepalive_interval: Duration,
    pub grpc_keepalive_timeout: Duration,
    pub grpc_max_concurrent_streams: u32,
    pub grpc_max_recv_message_bytes: usize,
    pub grpc_max_send_message_bytes: usize,
    pub grpc_max_page_bytes: usize,
    /// Once shutdown starts, how long requests and streams get.
    pub shutdown_drain: Duration,
    /// Which source addresses may call the webhook.
    pub access: AccessPolicy,
    /// Webhook requests per second per client address.
    pub rate_limit: Option<NonZeroU32>,
    pub limits: Limits,
    /// The operator console's address (`None`: off) and its login token.
    pub console: ConsoleSettings,
    /// HTTPS for the webhook server (and the console), when set.
    pub http_tls: Option<ServerTls>,
    /// TLS (and perhaps client certificates) for the gRPC server, when set.
    pub grpc_tls: Option<ServerTls>,
}

/// Where the operator console listens, and who may open it.
#[derive(Debug, Clone, Default)]
pub struct ConsoleSettings {
    pub addr: Option<SocketAddr>,
    /// Visitors log in with it; without it, a loopback address only.
    pub token: Option<SecretString>,
    /// Without a token, the Host names answered besides the loopback ones,
    /// lowercased.
    pub allowed_hosts: Vec<String>,
    /// Live feeds open at once.
    pub max_feeds: usize,
}

/// The bounds of each number a setting may take.
mod bounds {
    use std::ops::RangeInclusive;

    pub const DEAL_WAIT_MS: RangeInclusive<u64> = 0..=60_000;
    pub const STREAM_BUFFER: RangeInclusive<u64> = 1..=1_000_000;
    pub const HEARTBEAT_MS: RangeInclusive<u64> = 10..=3_600_000;
    pub const EXPORT_PAGE_SIZE: RangeInclusive<u64> = 1..=10_000;
    pub const REJECTED_KEEP: RangeInclusive<u64> = 0..=1_000_000;
    pub const GRPC_MAX_SUBSCRIBERS: RangeInclusive<u64> = 1..=1_000_000;
    pub const CONSOLE_MAX_FEEDS: RangeInclusive<u64> = 1..=10_000;
    pub const HTTP_MAX_CONNECTIONS: RangeInclusive<u64> = 16..=1_000_000;
    /// At least one whole body (1 MiB), at most 4 GiB.
    pub const HTTP_BODY_BUDGET_BYTES: RangeInclusive<u64> = 1024 * 1024..=4 * 1024 * 1024 * 1024;
    pub const GRPC_MAX_CONCURRENT_STREAMS: RangeInclusive<u64> = 1..=100_000;
    pub const GRPC_MESSAGE_BYTES: RangeInclusive<u64> = 64 * 1024..=256 * 1024 * 1024;
    pub const GRPC_MAX_PAGE_BYTES: RangeInclusive<u64> = 16 * 1024..=256 * 1024 * 1024;
    pub const GRPC_KEEPALIVE_MS: RangeInclusive<u64> = 1_000..=3_600_000;
    pub const MAX_CONSUMERS: RangeInclusive<u64> = 1..=1_000_000;
    pub const SHUTDOWN_DRAIN_MS: RangeInclusive<u64> = 0..=600_000;
    /// A week, in milliseconds.
    pub const MESSAGE_DEDUP_WINDOW_MS: RangeInclusive<u64> = 0..=7 * 24 * 3_600_000;
}

/// A duration such as `1h`, `30m`, `90s`, `500ms` or `2d`; a bare number is seconds.
fn parse_duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let invalid = || ConfigError::Invalid {
        key,
        reason: format!("{text:?} is not a duration such as 1h, 30m, 90s or 500ms"),
    };
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let millis = match unit {
        "ms" => Some(number),
        "" | "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        "d" => number.checked_mul(86_400_000),
        _ => None,
    };
    millis.map(Duration::from_millis).ok_or_else(invalid)
}

/// `value` if it lies in `range`.
fn checked<T: PartialOrd + Display>(
    key: &'static str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange {
            key,
            range: format!("{} to {}", range.start(), range.end()),
            value: value.to_string(),
        })
    }
}

/// The effective settings: flags and environment (as parsed into `args`, with
/// `matches` telling which values are mere defaults), then the file, then defaults.
/// The shortest console token accepted: it is what stands between the network and
/// every lead.
pub const MIN_CONSOLE_TOKEN_CHARS: usize = 24;

pub fn load(args: ServeArgs, matches: &ArgMatches) -> Result<Settings, ConfigError> {
    let file = match &args.config {
        Some(path) => FileConfig::read(path)?,
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
                args.$field.clone()
            } else {
                file.$field.clone().unwrap_or(args.$field.clone())
            }
        };
    }
    let deal_wait_ms = checked("deal_wait_ms", pick!(deal_wait_ms), bounds::DEAL_WAIT_MS)?;
    let heartbeat_ms = checked("heartbeat_ms", pick!(heartbeat_ms), bounds::HEARTBEAT_MS)?;
    let stream_buffer = checked("stream_buffer", pick!(stream_buffer), bounds::STREAM_BUFFER)?;
    let export_page_size = checked(
        "export_page_size",
        pick!(export_page_size),
        bounds::EXPORT_PAGE_SIZE,
    )?;
    let rejected_keep = checked("rejected_keep", pick!(rejected_keep), bounds::REJECTED_KEEP)?;
    macro_rules! bounded {
        ($field:ident, $bounds:expr) => {
            checked(stringify!($field), pick!($field), $bounds)?
        };
    }
    let max_subscribers = bounded!(grpc_max_subscribers, bounds::GRPC_MAX_SUBSCRIBERS);
    let max_streams = bounded!(
        grpc_max_concurrent_streams,
        bounds::GRPC_MAX_CONCURRENT_STREAMS
    );
    let max_recv = bounded!(grpc_max_recv_message_bytes, bounds::GRPC_MESSAGE_BYTES);
    let max_send = bounded!(grpc_max_send_message_bytes, bounds::GRPC_MESSAGE_BYTES);
    let max_page = bounded!(grpc_max_page_bytes, bounds::GRPC_MAX_PAGE_BYTES);
    let keepalive_interval = bounded!(grpc_keepalive_interval_ms, bounds::GRPC_KEEPALIVE_MS);
    let keepalive_timeout = bounded!(grpc_keepalive_timeout_ms, bounds::GRPC_KEEPALIVE_MS);
    let max_consumers = bounded!(max_consumers, bounds::MAX_CONSUMERS);
    let drain = Duration::from_millis(bounded!(shutdown_drain_ms, bounds::SHUTDOWN_DRAIN_MS));
    let grpc_insecure = args.grpc_insecure || file.grpc_insecure.unwrap_or(false);
    let allow_empty_password =
        args.allow_empty_password || file.allow_empty_password.unwrap_or(false);
    let window = parse_duration("message_dedup_window", &pick!(message_dedup_window))?;
    checked(
        "message_dedup_window",
        window.as_millis() as u64,
        bounds::MESSAGE_DEDUP_WINDOW_MS,
    )?;
    let database_url = if explicit("database_url") {
        args.database_url.clone()
    } else {
        match (&file.database_url, &file.database_url_file) {
            (Some(_), Some(_)) => return Err(ConfigError::ValueAndFile("database_url".into())),
            (Some(url), None) => url.clone(),
            (None, Some(path)) => read_secret(path)?.expose_secret().trim().to_owned(),
            (None, None) => args.database_url.clone(),
        }
    };
    let integrations = integrations(&args, &file, allow_empty_password)?;
    let default_statuses = default_statuses(&args, &file)?;
    let grpc_token = grpc_token(&args, &file)?;
    let console = console(
        &args,
        &file,
        explicit("console_addr"),
        explicit("console_allowed_hosts"),
        explicit("console_max_feeds"),
    )?;
    let order_id_mode = pick!(order_id)
        .parse()
        .map_err(|reason| ConfigError::Invalid {
            key: "order_id",
            reason,
        })?;
    let log_format = pick!(log_format)
        .parse()
        .map_err(|reason| ConfigError::Invalid {
            key: "log_format",
            reason,
        })?;
    // A certificate and its key come from the same place: both flags (clap makes
    // each require the other) or both file keys.
    let http_tls = server_tls(
        "http_tls",
        args.http_tls_cert.clone().zip(args.http_tls_key.clone()),
        (file.http_tls_cert.clone(), file.http_tls_key.clone()),
        None,
    )?;
    let grpc_tls = server_tls(
        "grpc_tls",
        args.grpc_tls_cert.clone().zip(args.grpc_tls_key.clone()),
        (file.grpc_tls_cert.clone(), file.grpc_tls_key.clone()),
        args.grpc_tls_client_ca
            .clone()
            .or_else(|| file.grpc_tls_client_ca.clone()),
    )?;
    let grpc_addr = pick!(grpc_addr);
    let client_ca = grpc_tls
        .as_ref()
        .is_some_and(|tls| tls.client_ca_path().is_some());
    if !is_loopback(grpc_addr.ip()) && grpc_token.is_none() && !client_ca && !grpc_insecure {
        return Err(ConfigError::GrpcOpen(grpc_addr));
    }
    if let Some(addr) = console.addr
        && !is_loopback(addr.ip())
        && console.token.is_none()
    {
        return Err(ConfigError::ConsoleOpen(addr));
    }
    let sources = sources::of(matches, args.config.as_deref());
    let persons = persons::persons(&args, &file, &explicit, integrations.keys().cloned())?;
    Ok(Settings {
        sources,
        http_addr: pick!(http_addr),
        grpc_addr,
        metrics_addr: args.metrics_addr.or(file.metrics_addr),
        database_url,
        integrations,
        order_id_mode,
        deal_wait: Duration::from_millis(deal_wait_ms),
        heartbeat: Duration::from_millis(heartbeat_ms),
        message_dedup_window: window,
        default_statuses,
        rejected_keep: rejected_keep as u32,
        grpc_max_subscribers: max_subscribers as usize,
        max_consumers: max_consumers as u32,
        stream_buffer: stream_buffer as usize,
        export_page_size,
        log_format,
        traces: traces(&args, &file, &explicit)?,
        persons,
        grpc_token,
        grpc_insecure,
        grpc_keepalive_interval: Duration::from_millis(keepalive_interval),
        grpc_keepalive_timeout: Duration::from_millis(keepalive_timeout),
        grpc_max_concurrent_streams: max_streams as u32,
        grpc_max_recv_message_bytes: max_recv as usize,
        grpc_max_send_message_bytes: max_send as usize,
        grpc_max_page_bytes: max_page as usize,
        shutdown_drain: drain,
        rate_limit: args.rate_limit.or(file.rate_limit),
        access: AccessPolicy {
            allow: if explicit("webhook_allow") {
                args.webhook_allow.clone()
            } else {
                file.webhook_allow.clone().unwrap_or_default()
            },
            trusted_proxies: if explicit("trusted_proxies") {
                args.trusted_proxies.clone()
            } else {
                file.trusted_proxies.clone().unwrap_or_default()
            },
        },
        limits: Limits {
            drain,
            max_connections: bounded!(http_max_connections, bounds::HTTP_MAX_CONNECTIONS) as usize,
            body_budget_bytes: bounded!(http_body_budget_bytes, bounds::HTTP_BODY_BUDGET_BYTES)
                as usize,
            ..Limits::default()
        },
        console,
        http_tls,
        grpc_tls,
    })
}

fn console(
    args: &ServeArgs,
    file: &FileConfig,
    explicit_addr: bool,
    explicit_hosts: bool,
    explicit_feeds: bool,
) -> Result<ConsoleSettings, ConfigError> {
    let addr = match (&file.console_addr, explicit_addr) {
        (Some(addr), false) => {
            addr.parse::<crate::cli::Listen>()
                .map_err(|reason| ConfigError::Invalid {
                    key: "console_addr",
                    reason,
                })?
        }
        _ => args.console_addr,
    };
    let given = (&file.console_token, &file.console_token_file);
    let token = secret_token(&args.console_token, given, "console_token")?;
    if token.as_ref().is_some_and(is_blank) {
        return Err(ConfigError::Invalid {
            key: "console_token",
            reason: "is empty: set a token, or none to listen on a loopback address only"
                .to_owned(),
        });
    }
    if let Some(token) = &token
        && token.expose_secret().trim().chars().count() < MIN_CONSOLE_TOKEN_CHARS
    {
        return Err(ConfigError::Invalid {
            key: "console_token",
            reason: format!(
                "is shorter than {MIN_CONSOLE_TOKEN_CHARS} characters: anyone who can reach \
                 the console could guess it; make one with `openssl rand -hex 32`"
            ),
        });
    }
    let allowed_hosts = if explicit_hosts {
        args.console_allowed_hosts.clone()
    } else {
        file.console_allowed_hosts.clone().unwrap_or_default()
    };
    let max_feeds = if explicit_feeds {
        args.console_max_feeds
    } else {
        file.console_max_feeds.unwrap_or(args.console_max_feeds)
    };
    let max_feeds = checked("console_max_feeds", max_feeds, bounds::CONSOLE_MAX_FEEDS)? as usize;
    Ok(ConsoleSettings {
        addr: addr.0,
        token,
        max_feeds,
        allowed_hosts: allowed_hosts
            .iter()
            .map(|host| host.trim().to_ascii_lowercase())
            .filter(|host| !host.is_empty())
            .collect(),
    })
}

fn grpc_token(args: &ServeArgs, file: &FileConfig) -> Result<Option<SecretString>, ConfigError> {
    let given = (&file.grpc_token, &file.grpc_token_file);
    let token = secret_token(&args.grpc_token, given, "grpc_token")?;
    if token.as_ref().is_some_and(is_blank) {
        return Err(ConfigError::EmptyGrpcToken);
    }
    Ok(token)
}

/// A token from its flag (or environment variable), else from the file: the value
/// itself, or a file holding it.
fn secret_token(
    flag: &Option<SecretString>,
    (value, path): (&Option<String>, &Option<PathBuf>),
    key: &str,
) -> Result<Option<SecretString>, ConfigError> {
    match flag {
        Some(token) => Ok(Some(token.clone())),
        None => one_of(value.clone(), path.as_ref(), key),
    }
}

fn is_blank(token: &SecretString) -> bool {
    token.expose_secret().trim().is_empty()
}

/// One server's TLS settings: the certificate and key from flags or environment,
/// else from the file; a client CA needs them.
fn server_tls(
    what: &'static str,
    given: Option<(PathBuf, PathBuf)>,
    file: (Option<PathBuf>, Option<PathBuf>),
    client_ca: Option<PathBuf>,
) -> Result<Option<ServerTls>, ConfigError> {
    let pair = match (given, file) {
        (Some(pair), _) => Some(pair),
        (None, (Some(cert), Some(key))) => Some((cert, key)),
        (None, (None, None)) => None,
        (None, _) => return Err(ConfigError::TlsPair(what)),
    };
    match (pair, client_ca) {
        (Some((cert, key)), client_ca) => {
            Ok(Some(ServerTls::load(&cert, &key, client_ca.as_deref())?))
        }
        (None, Some(_)) => Err(ConfigError::ClientCaWithoutTls(what)),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        let parse = |text| parse_duration("window", text).map(|d| d.as_millis());
        assert_eq!(parse("1h").unwrap(), 3_600_000);
        assert_eq!(parse("30m").unwrap(), 1_800_000);
        assert_eq!(parse("90").unwrap(), 90_000);
        assert_eq!(parse("500ms").unwrap(), 500);
        assert_eq!(parse("0").unwrap(), 0);
        assert!(parse("1 hour").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn numbers_out_of_range_are_refused_with_their_bounds() {
        assert_eq!(
            checked("stream_buffer", 5, bounds::STREAM_BUFFER).unwrap(),
            5
        );
        let error = checked("stream_buffer", 0, bounds::STREAM_BUFFER).unwrap_err();
        assert_eq!(
            error.to_string(),
            "stream_buffer (--stream-buffer) must be from 1 to 1000000, not 0"
        );
    }
}
