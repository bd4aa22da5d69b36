//! The TOML configuration file. Every key is optional; unknown keys are refused, so
//! a typo is an error, not a silent default.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub http_addr: Option<SocketAddr>,
    pub grpc_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    /// An address, or "off".
    pub console_addr: Option<String>,
    pub console_token: Option<String>,
    pub console_token_file: Option<PathBuf>,
    pub console_allowed_hosts: Option<Vec<String>>,
    pub console_max_feeds: Option<u64>,
    pub database_url: Option<String>,
    pub database_url_file: Option<PathBuf>,
    pub roistat_user: Option<String>,
    pub roistat_password: Option<String>,
    pub roistat_password_file: Option<PathBuf>,
    pub roistat_token: Option<String>,
    pub roistat_token_file: Option<PathBuf>,
    pub order_id: Option<String>,
    pub deal_wait_ms: Option<u64>,
    pub stream_buffer: Option<u64>,
    pub heartbeat_ms: Option<u64>,
    pub export_page_size: Option<u64>,
    pub message_dedup_window: Option<String>,
    pub default_status: Option<String>,
    pub default_phone_region: Option<String>,
    #[serde(default, deserialize_with = "boolish")]
    pub person_matching: Option<bool>,
    pub rejected_keep: Option<u64>,
    pub log_format: Option<String>,
    pub otlp_endpoint: Option<String>,
    pub otlp_sampling_ratio: Option<f64>,
    pub grpc_token: Option<String>,
    pub grpc_token_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "boolish")]
    pub grpc_insecure: Option<bool>,
    pub grpc_max_subscribers: Option<u64>,
    pub grpc_max_concurrent_streams: Option<u64>,
    pub grpc_max_recv_message_bytes: Option<u64>,
    pub grpc_max_send_message_bytes: Option<u64>,
    pub grpc_max_page_bytes: Option<u64>,
    pub grpc_keepalive_interval_ms: Option<u64>,
    pub grpc_keepalive_timeout_ms: Option<u64>,
    pub max_consumers: Option<u64>,
    pub shutdown_drain_ms: Option<u64>,
    #[serde(default, deserialize_with = "boolish")]
    pub allow_empty_password: Option<bool>,
    pub webhook_allow: Option<Vec<IpNet>>,
    pub rate_limit: Option<NonZeroU32>,
    pub http_max_connections: Option<u64>,
    pub http_body_budget_bytes: Option<u64>,
    pub trusted_proxies: Option<Vec<IpNet>>,
    pub http_tls_cert: Option<PathBuf>,
    pub http_tls_key: Option<PathBuf>,
    pub grpc_tls_cert: Option<PathBuf>,
    pub grpc_tls_key: Option<PathBuf>,
    pub grpc_tls_client_ca: Option<PathBuf>,
    #[serde(default)]
    pub integrations: Vec<FileIntegration>,
}

/// One Roistat project, served at `/webhook/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileIntegration {
    pub name: String,
    pub login: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// The status of an order until the CRM reports one.
    pub default_status: Option<String>,
    /// The region of phones written without a country code.
    pub default_phone_region: Option<String>,
    /// Whether its leads are matched to persons.
    #[serde(default, deserialize_with = "boolish")]
    pub person_matching: Option<bool>,
}

impl FileConfig {
    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::File {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// The top-level keys a file sets.
    pub fn keys(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .map(|table| table.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// A boolean as every source of a setting takes it: `true`/`false`, or the text
/// (or number) `1`/`0`, `yes`/`no`, `on`/`off`, `true`/`false`, any case.
fn boolish<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Boolish {
        Bool(bool),
        Number(i64),
        Text(String),
    }
    let value = match Boolish::deserialize(deserializer)? {
        Boolish::Bool(value) => value,
        Boolish::Number(1) => true,
        Boolish::Number(0) => false,
        Boolish::Number(other) => {
            return Err(serde::de::Error::custom(format!(
                "{other} is not a boolean: use true or false"
            )));
        }
        Boolish::Text(text) => match text.trim().to_ascii_lowercase().as_str() {
            "1" | "yes" | "on" | "true" | "y" | "t" => true,
            "0" | "no" | "off" | "false" | "n" | "f" => false,
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "{text:?} is not a boolean: use true/false, 1/0, yes/no or on/off"
                )));
            }
        },
    };
    Ok(Some(value))
}
