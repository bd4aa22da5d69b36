//! Traces over OTLP: off unless an endpoint is given. Only spans of the target
//! [`TRACE_TARGET`] are exported (the webhook request, the store commit it joined,
//! each gRPC call, a stream's delivery of an event), never log events, so no
//! personal data leaves with them; the logs do not show these spans. Off, those
//! spans are disabled at their call sites and cost a check of a cached flag.
//!
//! Context travels as W3C Trace Context: a `traceparent` header on the webhook or
//! in gRPC metadata starts the request's span under the caller's; an event stores
//! the `traceparent` of the request that stored it, and streams hand it on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The target of the spans that are exported.
pub const TRACE_TARGET: &str = "roistat_leads::otel";

/// Whether spans are exported (set once, at start).
static ON: AtomicBool = AtomicBool::new(false);

/// How traces are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// The OTLP collector's gRPC endpoint (`http://host:4317`); none: tracing off.
    pub endpoint: Option<String>,
    /// The share of new traces sampled, 0.0 to 1.0; a caller's sampled flag is
    /// followed.
    pub sampling_ratio: f64,
}

impl Default for TraceSettings {
    fn default() -> Self {
        Self {
            endpoint: None,
            sampling_ratio: 1.0,
        }
    }
}

/// Whether spans are exported.
pub fn tracing_on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The exporter, kept to flush what is still buffered at shutdown.
#[derive(Default)]
pub struct Tracer {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Tracer {
    /// Sends what is still buffered and stops exporting.
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "traces still buffered at shutdown were not all sent");
        }
    }
}

/// `traceparent` as W3C Trace Context writes it: version 00 only, ids in lowercase
/// hex, neither all zeros.
pub fn valid_traceparent(value: &str) -> bool {
    let bytes = value.as_bytes();
    let hex = |range: std::ops::Range<usize>| {
        bytes[range.clone()]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            && bytes[range].iter().any(|&b| b != b'0')
    };
    bytes.len() == 55
        && value.starts_with("00-")
        && bytes[35] == b'-'
        && bytes[52] == b'-'
        && hex(3..35)
        && hex(36..52)
        && bytes[53..55].iter().all(u8::is_ascii_hexdigit)
}

#[cfg(feature = "otlp")]
mod on {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
    };
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::*;

    /// The exporter and the layer that feeds it.
    pub(in crate::telemetry) fn layer<S>(
        settings: &TraceSettings,
        endpoint: &str,
    ) -> Result<(Tracer, impl tracing_subscriber::Layer<S>), String>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint);
        if endpoint.starts_with("https:") {
            // The system's roots, as for PostgreSQL.
            let tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
            builder = builder.with_tls_config(tls);
        }
        let exporter = builder
            .build()
            .map_err(|error| format!("OTLP exporter to {endpoint}: {error}"))?;
        let processor =
            opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                exporter,
                opentelemetry_sdk::runtime::Tokio,
            )
            .build();
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sampling_ratio,
        )));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(resource())
            .build();
        let tracer = provider.tracer("roistat-leads");
        ON.store(true, Ordering::Relaxed);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false);
        Ok((
            Tracer {
                provider: Some(provider),
            },
            layer,
        ))
    }

    /// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` as the SDK reads them; the
    /// service's name when they give none, and its version.
    fn resource() -> Resource {
        let detected = Resource::builder().build();
        let named = detected
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
        let builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ));
        if named {
            builder.build()
        } else {
            builder.with_service_name("roistat-leads").build()
        }
    }

    fn parse(traceparent: &str) -> Option<SpanContext> {
        if !valid_traceparent(traceparent) {
            return None;
        }
        let trace_id = TraceId::from_hex(&traceparent[3..35]).ok()?;
        let span_id = SpanId::from_hex(&traceparent[36..52]).ok()?;
        let flags = u8::from_str_radix(&traceparent[53..55], 16).ok()?;
        Some(SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(flags & 1),
            true,
            TraceState::default(),
        ))
    }

    pub(super) fn set_parent(span: &tracing::Span, traceparent: &str) {
        if let Some(parent) = parse(traceparent) {
            let context = opentelemetry::Context::new().with_remote_span_context(parent);
            let _ = span.set_parent(context);
        }
    }

    pub(super) fn add_link(span: &tracing::Span, traceparent: &str) {
        if let Some(linked) = parse(traceparent) {
            span.add_link(linked);
        }
    }

    pub(super) fn traceparent(span: &tracing::Span) -> Option<String> {
        let context = span.context();
        let span_context = context.span().span_context().clone();
        span_context.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                span_context.trace_id(),
                span_context.span_id(),
                span_context.trace_flags().to_u8()
            )
        })
    }
}

#[cfg(feature = "otlp")]
pub(super) use on::layer;

/// Makes `traceparent` (a caller's W3C context) the parent of `span`; an
/// unreadable one is ignored (the span starts a trace of its own).
pub fn set_remote_parent(span: &tracing::Span, traceparent: Option<&str>) {
    #[cfg(feature = "otlp")]
    if let Some(traceparent) = traceparent
        && tracing_on()
    {
        on::set_parent(span, traceparent.trim());
    }
    #[cfg(not(feature = "otlp"))]
    let _ = (span, traceparent);
}

/// Links `span` to the trace `traceparent` names (a lead's, from ReportDeal).
pub fn link_to(span: &tracing::Span, traceparent: &str) {
    #[cfg(feature = "otlp")]
    if tracing_on() {
        on::add_link(span, traceparent);
    }
    #[cfg(not(feature = "otlp"))]
    let _ = (span, traceparent);
}

/// The `traceparent` of `span`, when tracing is on.
pub fn trace_parent_of(span: &tracing::Span) -> Option<Arc<str>> {
    #[cfg(feature = "otlp")]
    if tracing_on() {
        return on::traceparent(span).map(Into::into);
    }
    #[cfg(not(feature = "otlp"))]
    let _ = span;
    None
}

/// A stream handed the event `sequence` stored in the trace `traceparent` to its
/// subscriber: a span in that trace, when tracing is on.
pub fn delivered(traceparent: &str, sequence: u64) {
    if !tracing_on() {
        return;
    }
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "stream deliver",
        otel.kind = "producer",
        sequence = sequence as i64,
    );
    set_remote_parent(&span, Some(traceparent));
}

/// The `traceparent` of the current span, when tracing is on.
pub fn current_trace_parent() -> Option<Arc<str>> {
    if !tracing_on() {
        return None;
    }
    trace_parent_of(&tracing::Span::current())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_version_00_traceparents_with_real_ids_are_read() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }
}
