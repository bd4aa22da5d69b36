//! Why a configuration cannot be used: each error says what to change.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::net::TlsError;
use crate::own_crm::CredentialsError;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{key} (--{}) must be from {range}, not {value}", key.replace('_', "-"))]
    OutOfRange {
        key: &'static str,
        range: String,
        value: String,
    },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("{0}: give either a password or a token, not both")]
    PasswordAndToken(String),
    #[error("{0}: no password or token")]
    NoSecret(String),
    #[error("{what}: {source}")]
    Credentials {
        what: String,
        #[source]
        source: CredentialsError,
    },
    #[error("{0}: give the value or the file, not both")]
    ValueAndFile(String),
    #[error("integration name {0:?}: use 1 to 64 of a-z 0-9 - _")]
    IntegrationName(String),
    #[error("integration {0:?} is declared twice")]
    DuplicateIntegration(String),
    #[error(
        "no Roistat credentials: set ROISTAT_USER and ROISTAT_PASSWORD (or ROISTAT_TOKEN), \
         pass --roistat-user and --roistat-password (or --roistat-token), \
         or declare integrations in --config"
    )]
    NoCredentials,
    #[error("the gRPC token must not be empty")]
    EmptyGrpcToken,
    #[error(
        "{0}: the Roistat password is empty, so every request would carry the login alone \
         (token md5(login)) and anyone who knows the login could send leads: set a password \
         in Roistat's integration settings and give it here, or pass --allow-empty-password \
         (ROISTAT_LEADS_ALLOW_EMPTY_PASSWORD=true) if an empty one is really wanted"
    )]
    EmptyPassword(String),
    #[error("give both {0}_cert and {0}_key, or neither")]
    TlsPair(&'static str),
    #[error(
        "{0}_client_ca needs {0}_cert and {0}_key: client certificates are checked only over TLS"
    )]
    ClientCaWithoutTls(&'static str),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "grpc_addr {0} is not a loopback address, and LeadService would have no way to tell \
         its callers apart (a proxy or sidecar on the same host makes every caller a loopback \
         peer): pass --grpc-token (ROISTAT_LEADS_GRPC_TOKEN) so callers present a token, \
         --grpc-tls-client-ca (with --grpc-tls-cert and --grpc-tls-key) so they present a \
         certificate of your CA, or --grpc-insecure (ROISTAT_LEADS_GRPC_INSECURE) to serve \
         every peer that reaches it; or listen on 127.0.0.1"
    )]
    GrpcOpen(SocketAddr),
    #[error(
        "console_addr {0} is not a loopback address, and the console has no --console-token: \
         pass --console-token (ROISTAT_LEADS_CONSOLE_TOKEN) so visitors log in, or listen on \
         127.0.0.1"
    )]
    ConsoleOpen(SocketAddr),
}
