//! Logging, metrics and traces; it knows no other module of the service. Logs go
//! to standard error as text or JSON, filtered by `RUST_LOG` (default `info`);
//! every webhook and RPC runs in a span carrying a request id. Metrics are kept for
//! Prometheus and rendered at `GET /metrics`. Traces (`otel`, `export`) go to an
//! OpenTelemetry collector over OTLP/gRPC when an endpoint is given.

mod export;
mod grpc;
mod metrics;
mod otel;
mod process;
mod store;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;

pub use grpc::{GrpcMethod, grpc_answered, grpc_method};
pub use metrics::*;
pub use otel::*;
pub use store::*;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

impl LogFormat {
    pub const NAMES: [&'static str; 2] = ["text", "json"];

    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?}: expected text or json")),
        }
    }
}

/// Installs the global log subscriber and, with an OTLP endpoint, the trace
/// exporter (which needs a Tokio runtime). Fails only for an exporter that cannot
/// be built, or one this build lacks.
pub fn init(format: LogFormat, traces: &TraceSettings) -> Result<Tracer, String> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,hyper=warn,tower=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    otel::start(traces)
}

/// A new request id: unique within the process, and across replicas with near
/// certainty (a random prefix per process).
pub fn request_id() -> String {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(|| RandomState::new().hash_one(std::process::id()) as u32);
    format!("{prefix:08x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}
