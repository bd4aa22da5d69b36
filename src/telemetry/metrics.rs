//! The metrics, all of them in one catalogue: each is described (its HELP line
//! says what it counts and in what unit, which its name ends with), and every
//! series whose labels are known in advance is present from start-up at zero, so
//! that `rate()` and absence alerts work from the first scrape.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const WEBHOOKS: &str = "roistat_leads_webhooks_total";
pub const INGEST_SECONDS: &str = "roistat_leads_ingest_seconds";
pub const LEADS: &str = "roistat_leads_leads_total";
pub const RETRIES: &str = "roistat_leads_retries_deduplicated_total";
pub const AUTH_FAILURES: &str = "roistat_leads_auth_failures_total";
pub const REFUSED: &str = "roistat_leads_refused_requests_total";
pub const COMMIT_SECONDS: &str = "roistat_leads_store_commit_seconds";
pub const BATCH_SIZE: &str = "roistat_leads_store_batch_size";
pub const READY: &str = "roistat_leads_ready";
pub const SUBSCRIBERS: &str = "roistat_leads_stream_subscribers";
pub const EVENTS_SENT: &str = "roistat_leads_events_sent_total";
pub const LAG: &str = "roistat_leads_subscriber_lag_events";
pub const CONSUMER_PENDING: &str = "roistat_leads_consumer_pending";
pub const TLS_EXPIRY: &str = "roistat_leads_tls_certificate_expiry_timestamp_seconds";
pub const BUILD_INFO: &str = "roistat_leads_build_info";
pub const SCHEME_MISSING: &str = "roistat_leads_scheme_missing";

/// The label values known before any traffic, for the series present from start-up.
#[derive(Debug, Clone, Default)]
pub struct KnownLabels {
    pub integrations: Vec<String>,
    pub actions: Vec<&'static str>,
    pub outcomes: Vec<&'static str>,
    pub sources: Vec<&'static str>,
    pub kinds: Vec<&'static str>,
    /// (stage, reason) of refused requests.
    pub refusals: Vec<(&'static str, &'static str)>,
    /// The store's backend (`sqlite`, `postgresql`).
    pub backend: &'static str,
    /// Every gRPC method served.
    pub grpc_methods: Vec<super::GrpcMethod>,
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

/// Installs the recorder, describes every metric, and sets every series whose
/// labels are known to zero.
pub fn install_metrics(known: &KnownLabels) {
    metrics();
    describe_counter!(
        WEBHOOKS,
        Unit::Count,
        "Webhook requests answered, by integration (empty: none configured at that path), action (unknown: refused before it was read) and outcome."
    );
    describe_histogram!(
        INGEST_SECONDS,
        Unit::Seconds,
        "Seconds from a webhook request's arrival to its answer, by action."
    );
    describe_counter!(
        LEADS,
        Unit::Count,
        "New leads stored (not retries), by integration and source."
    );
    describe_counter!(
        RETRIES,
        Unit::Count,
        "Roistat retries recognised as such, storing no new event, by kind."
    );
    describe_counter!(
        AUTH_FAILURES,
        Unit::Count,
        "Webhook requests refused for a missing or wrong token or user."
    );
    describe_counter!(
        REFUSED,
        Unit::Count,
        "Webhook requests refused, by stage (before_token: not stored; after_token: kept in the rejected-request log) and reason."
    );
    describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "Seconds a store write transaction took, from its first statement to its durable commit, by backend (sqlite, postgresql)."
    );
    describe_histogram!(
        BATCH_SIZE,
        Unit::Count,
        "Writes committed together in one store transaction (group commit), by backend."
    );
    describe_gauge!(
        READY,
        Unit::Count,
        "1 when the latest empty write through the store's writer committed less than 5 seconds ago (what /readyz answers), else 0."
    );
    describe_gauge!(
        SUBSCRIBERS,
        Unit::Count,
        "StreamLeads streams open on this replica."
    );
    describe_counter!(
        EVENTS_SENT,
        Unit::Count,
        "Events handed to StreamLeads subscribers."
    );
    describe_histogram!(
        LAG,
        Unit::Count,
        "How many events behind the newest it knew of a subscriber was when each event was handed to it."
    );
    describe_gauge!(
        TLS_EXPIRY,
        Unit::Seconds,
        "When the certificate a server presents stops being valid, in Unix seconds, by server (http, grpc)."
    );
    describe_gauge!(
        BUILD_INFO,
        Unit::Count,
        "Always 1; the version and commit labels say which build runs."
    );
    describe_gauge!(
        SCHEME_MISSING,
        Unit::Count,
        "1 while an integration's orders export to Roistat with an empty status (it has neither a default status nor a published scheme with one), else 0."
    );
    metrics::gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("ROISTAT_LEADS_COMMIT")
    )
    .set(1.0);
    for integration in &known.integrations {
        metrics::gauge!(SCHEME_MISSING, "integration" => integration.clone()).set(0.0);
    }
    super::grpc::install(&known.grpc_methods);
    super::store::install(known.backend);
    super::otel::install_trace_metrics();
    metrics::gauge!(READY).set(0.0);
    metrics::gauge!(SUBSCRIBERS).set(0.0);
    metrics::counter!(AUTH_FAILURES).absolute(0);
    metrics::counter!(EVENTS_SENT).absolute(0);
    let _ = metrics::histogram!(COMMIT_SECONDS, "backend" => known.backend);
    let _ = metrics::histogram!(BATCH_SIZE, "backend" => known.backend);
    let _ = metrics::histogram!(LAG);
    let integrations = known.integrations.iter().map(String::as_str).chain([""]);
    let latency: Vec<_> = known
        .actions
        .iter()
        .map(|&action| metrics::histogram!(INGEST_SECONDS, "action" => action))
        .collect();
    let mut handles = handles().write().unwrap_or_else(|p| p.into_inner());
    for integration in integrations {
        let counters = known
            .actions
            .iter()
            .flat_map(|&action| {
                known
                    .outcomes
                    .iter()
                    .map(move |&outcome| webhook_counter(integration, action, outcome))
            })
            .collect();
        let leads = known
            .sources
            .iter()
            .map(|&source| lead_counter(integration, source))
            .collect();
        let metrics = IntegrationMetrics {
            actions: known.actions.clone(),
            outcomes: known.outcomes.clone(),
            sources: known.sources.clone(),
            counters,
            latency: latency.clone(),
            leads,
        };
        for counter in metrics.counters.iter().chain(&metrics.leads) {
            counter_at_zero(counter.clone());
        }
        // Kept for the rest of the process, as the registry keeps the series.
        handles.insert(integration.to_owned(), Box::leak(Box::new(metrics)));
    }
    drop(handles);
    for &kind in &known.kinds {
        metrics::counter!(RETRIES, "kind" => kind).absolute(0);
    }
    for &(stage, reason) in &known.refusals {
        metrics::counter!(REFUSED, "stage" => stage, "reason" => reason).absolute(0);
    }
}

fn counter_at_zero(counter: metrics::Counter) {
    counter.increment(0);
}

fn webhook_counter(
    integration: &str,
    action: &'static str,
    outcome: &'static str,
) -> metrics::Counter {
    metrics::counter!(WEBHOOKS, "integration" => integration.to_owned(), "action" => action, "outcome" => outcome)
}

fn lead_counter(integration: &str, source: &'static str) -> metrics::Counter {
    metrics::counter!(LEADS, "integration" => integration.to_owned(), "source" => source)
}

/// An integration's per-request series, looked up once when the metrics are
/// installed rather than in the registry for every request.
#[derive(Debug)]
struct IntegrationMetrics {
    actions: Vec<&'static str>,
    outcomes: Vec<&'static str>,
    sources: Vec<&'static str>,
    /// By action, then outcome.
    counters: Vec<metrics::Counter>,
    /// By action.
    latency: Vec<metrics::Histogram>,
    /// By source.
    leads: Vec<metrics::Counter>,
}

impl IntegrationMetrics {
    /// The answer counter and latency histogram of an action and outcome.
    fn webhook(
        &self,
        action: &str,
        outcome: &str,
    ) -> Option<(&metrics::Counter, &metrics::Histogram)> {
        let a = self.actions.iter().position(|known| *known == action)?;
        let o = self.outcomes.iter().position(|known| *known == outcome)?;
        let counter = self.counters.get(a * self.outcomes.len() + o)?;
        Some((counter, self.latency.get(a)?))
    }

    /// The stored-lead counter of a source.
    fn lead(&self, source: &str) -> Option<&metrics::Counter> {
        let at = self.sources.iter().position(|known| *known == source)?;
        self.leads.get(at)
    }
}

fn handles() -> &'static RwLock<HashMap<String, &'static IntegrationMetrics>> {
    static HANDLES: OnceLock<RwLock<HashMap<String, &'static IntegrationMetrics>>> =
        OnceLock::new();
    HANDLES.get_or_init(RwLock::default)
}

/// The series of an integration known when the metrics were installed ("": a
/// path naming none).
fn integration_metrics(integration: &str) -> Option<&'static IntegrationMetrics> {
    let handles = handles().read().unwrap_or_else(|p| p.into_inner());
    handles.get(integration).copied()
}

/// A webhook answered: by integration, action and outcome, with its latency.
pub fn webhook_answered(
    integration: &str,
    action: &'static str,
    outcome: &'static str,
    elapsed: Duration,
) {
    let seconds = elapsed.as_secs_f64();
    match integration_metrics(integration).and_then(|known| known.webhook(action, outcome)) {
        Some((counter, latency)) => {
            counter.increment(1);
            latency.record(seconds);
        }
        None => {
            webhook_counter(integration, action, outcome).increment(1);
            metrics::histogram!(INGEST_SECONDS, "action" => action).record(seconds);
        }
    }
}

/// Whether an integration's orders export without a status.
pub fn scheme_missing(integration: &str, missing: bool) {
    metrics::gauge!(SCHEME_MISSING, "integration" => integration.to_owned()).set(if missing {
        1.0
    } else {
        0.0
    });
}

/// A webhook request refused, before or after the token check, and why.
pub fn request_refused(stage: &'static str, reason: &'static str) {
    metrics::counter!(REFUSED, "stage" => stage, "reason" => reason).increment(1);
}

/// A request refused for its credentials.
pub fn auth_failed() {
    metrics::counter!(AUTH_FAILURES).increment(1);
}

/// A new lead stored, by its integration and source.
pub fn lead_stored(integration: &str, source: &'static str) {
    match integration_metrics(integration).and_then(|known| known.lead(source)) {
        Some(counter) => counter.increment(1),
        None => lead_counter(integration, source).increment(1),
    }
}

/// A retry recognised: no new event.
pub fn retry_deduplicated(kind: &'static str) {
    metrics::counter!(RETRIES, "kind" => kind).increment(1);
}

/// A store transaction committed.
pub fn store_committed(backend: &'static str, elapsed: Duration, writes: usize) {
    // One store per process.
    static HANDLES: OnceLock<(metrics::Histogram, metrics::Histogram)> = OnceLock::new();
    let (commit, batch) = HANDLES.get_or_init(|| {
        metrics();
        (
            metrics::histogram!(COMMIT_SECONDS, "backend" => backend),
            metrics::histogram!(BATCH_SIZE, "backend" => backend),
        )
    });
    commit.record(elapsed.as_secs_f64());
    batch.record(writes as f64);
}

/// The latest readiness check.
pub fn readiness_checked(ready: bool) {
    metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}

/// A StreamLeads subscriber's metrics: it is counted for as long as this lives, and
/// its per-event handles are looked up once, not for every event.
pub struct SubscriberMetrics {
    sent: metrics::Counter,
    lag: metrics::Histogram,
}

impl SubscriberMetrics {
    pub fn new() -> Self {
        metrics::gauge!(SUBSCRIBERS).increment(1.0);
        Self {
            sent: metrics::counter!(EVENTS_SENT),
            lag: metrics::histogram!(LAG),
        }
    }

    /// `count` events handed to the subscriber, the last of them `lag` events
    /// behind the newest it knows of.
    pub fn events_sent(&self, count: usize, lag: u64) {
        self.sent.increment(count as u64);
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
        metrics::gauge!(SUBSCRIBERS).decrement(1.0);
    }
}

/// When the certificate a server presents stops being valid (Unix seconds).
pub fn tls_certificate_expiry(server: &'static str, not_after: time::OffsetDateTime) {
    metrics::gauge!(TLS_EXPIRY, "server" => server).set(not_after.unix_timestamp() as f64);
}

/// Every named consumer's pending count, as last read; rendered by this module
/// itself, so that a deleted consumer's series goes with it.
fn consumers() -> &'static Mutex<Vec<(String, u64)>> {
    static CONSUMERS: OnceLock<Mutex<Vec<(String, u64)>>> = OnceLock::new();
    CONSUMERS.get_or_init(Mutex::default)
}

/// Replaces the consumers' pending counts.
pub fn set_consumers_pending(figures: Vec<(String, u64)>) {
    *consumers().lock().unwrap_or_else(|p| p.into_inner()) = figures;
}

/// Every metric in Prometheus' text format.
pub fn render_metrics() -> String {
    let mut text = metrics().render();
    text.push_str(&format!(
        "# HELP {CONSUMER_PENDING} Events stored after a named consumer's acknowledged position, by consumer.\n\
         # TYPE {CONSUMER_PENDING} gauge\n"
    ));
    for (name, pending) in consumers().lock().unwrap_or_else(|p| p.into_inner()).iter() {
        // Consumer names are plain (A-Z a-z 0-9 . _ -): nothing to escape.
        text.push_str(&format!(
            "{CONSUMER_PENDING}{{consumer=\"{name}\"}} {pending}\n"
        ));
    }
    super::process::render(&mut text);
    text
}
