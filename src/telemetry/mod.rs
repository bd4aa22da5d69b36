//! Logging and metrics; it knows no other module of the service. Logs go to
//! standard error as text or JSON, filtered by `RUST_LOG` (default `info`); every
//! webhook and RPC runs in a span carrying a request id. Metrics are kept for
//! Prometheus and rendered at `GET /metrics`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

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

/// Installs the global log subscriber.
pub fn init(format: LogFormat) {
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
}

/// A new request id: unique within the process, and across replicas with near
/// certainty (a random prefix per process).
pub fn request_id() -> String {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(|| RandomState::new().hash_one(std::process::id()) as u32);
    format!("{prefix:08x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The process's metrics recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        const SECONDS: &[f64] = &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        const COUNTS: &[f64] = &[
            1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 10_000.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(Matcher::Suffix("_events".into()), COUNTS)
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(Matcher::Suffix("_size".into()), COUNTS)
            })
            .map(PrometheusBuilder::build_recorder);
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                // Another recorder already installed (embedding code): keep ours unused.
                let _ = metrics::set_global_recorder(recorder);
                handle
            }
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// A webhook answered: by action and outcome, with its latency.
pub fn webhook_answered(action: &'static str, outcome: &'static str, elapsed: Duration) {
    metrics::counter!("roistat_leads_webhooks_total", "action" => action, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("roistat_leads_ingest_seconds", "action" => action)
        .record(elapsed.as_secs_f64());
}

/// A webhook request refused, before or after the token check, and why.
pub fn request_refused(stage: &'static str, reason: &'static str) {
    metrics::counter!("roistat_leads_refused_requests_total", "stage" => stage, "reason" => reason)
        .increment(1);
}

/// A request refused for its credentials.
pub fn auth_failed() {
    metrics::counter!("roistat_leads_auth_failures_total").increment(1);
}

/// A new lead stored, by its source.
pub fn lead_stored(source: &'static str) {
    metrics::counter!("roistat_leads_leads_total", "source" => source).increment(1);
}

/// A retry recognised: no new event.
pub fn retry_deduplicated(kind: &'static str) {
    metrics::counter!("roistat_leads_retries_deduplicated_total", "kind" => kind).increment(1);
}

/// A store transaction committed.
pub fn store_committed(elapsed: Duration, writes: usize) {
    metrics::histogram!("roistat_leads_store_commit_seconds").record(elapsed.as_secs_f64());
    metrics::histogram!("roistat_leads_store_batch_size").record(writes as f64);
}

/// A StreamLeads subscriber's metrics: it is counted for as long as this lives, and
/// its per-event handles are looked up once, not for every event.
pub struct SubscriberMetrics {
    sent: metrics::Counter,
    lag: metrics::Histogram,
}

impl SubscriberMetrics {
    pub fn new() -> Self {
        metrics::gauge!("roistat_leads_stream_subscribers").increment(1.0);
        Self {
            sent: metrics::counter!("roistat_leads_events_sent_total"),
            lag: metrics::histogram!("roistat_leads_subscriber_lag_events"),
        }
    }

    /// An event handed to the subscriber `lag` events behind the newest it knows of.
    pub fn event_sent(&self, lag: u64) {
        self.sent.increment(1);
        self.lag.record(lag as f64);
    }
}

impl Default for SubscriberMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SubscriberMetrics {
    fn drop(&mut self) {
        metrics::gauge!("roistat_leads_stream_subscribers").decrement(1.0);
    }
}

/// A durable consumer's pending count, refreshed when metrics are scraped.
pub fn consumer_pending(consumer: &str, pending: u64) {
    metrics::gauge!("roistat_leads_consumer_pending", "consumer" => consumer.to_owned())
        .set(pending as f64);
}

/// When the certificate a server presents stops being valid (Unix seconds).
pub fn tls_certificate_expiry(server: &'static str, not_after: time::OffsetDateTime) {
    metrics::gauge!("roistat_leads_tls_certificate_expiry_timestamp_seconds", "server" => server)
        .set(not_after.unix_timestamp() as f64);
}
