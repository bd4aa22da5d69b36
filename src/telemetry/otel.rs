//! Traces over OTLP: off unless an endpoint is given. A handful of spans, recorded
//! by this module itself (the webhook request, the store commit it joined, each
//! gRPC call, a stream's delivery of an event) and sent in OTLP/gRPC batches by
//! [`export`](super::export). They carry ids and labels only, never what a lead
//! holds. Off, starting one is a check of a flag.
//!
//! A span is a small record: its ids, name, kind, times, a few attributes and
//! links; ended, it is pushed onto the exporter's list. (OpenTelemetry's SDK, tried
//! first, allocated and woke a task for every span and cost a sixth of the ingest
//! rate at a sampling ratio of 1.0; this costs a few percent.) Sampling follows
//! OpenTelemetry's `ParentBased(TraceIdRatioBased)`: a caller's sampled flag
//! decides for its trace, else the trace id's low 64 bits against the ratio.
//!
//! Context travels as W3C Trace Context: a `traceparent` header on the webhook or
//! in gRPC metadata makes the request's span a child of the caller's; within the
//! service the request's span is a task-local ([`TraceSpan::scope`]), so the
//! store's writes find the span they belong to; an event stores the `traceparent`
//! of the request that stored it, and streams hand it on.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::export;

pub const SPANS_DROPPED: &str = "roistat_leads_trace_spans_dropped_total";

/// Whether spans are recorded (set once, at start).
static ON: AtomicBool = AtomicBool::new(false);
/// New traces with a trace id's low 64 bits below this are sampled.
static SAMPLE_BELOW: AtomicU64 = AtomicU64::new(u64::MAX);

tokio::task_local! {
    /// The span the current request runs in.
    static CURRENT: Option<TraceContext>;
}

/// Describes the tracing metrics and starts their series.
pub(super) fn install_trace_metrics() {
    metrics::describe_counter!(
        SPANS_DROPPED,
        metrics::Unit::Count,
        "Spans not exported: the collector refused them or could not be reached, or more were waiting than OTEL_BSP_MAX_QUEUE_SIZE."
    );
    metrics::counter!(SPANS_DROPPED).absolute(0);
}

/// `count` spans were not exported.
pub fn spans_dropped(count: u64) {
    metrics::counter!(SPANS_DROPPED).increment(count);
}

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

/// Whether spans are recorded.
pub fn tracing_on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// A span's identity, as W3C Trace Context carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    /// Bit 0: sampled.
    pub flags: u8,
}

impl TraceContext {
    /// A `traceparent` as W3C Trace Context writes it: version 00 only, ids in
    /// lowercase hex, neither all zeros; `None` for anything else.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let value = traceparent.trim();
        let bytes = value.as_bytes();
        let lower_hex = |range: std::ops::Range<usize>| {
            bytes[range]
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        };
        if bytes.len() != 55
            || !value.starts_with("00-")
            || bytes[35] != b'-'
            || bytes[52] != b'-'
            || !lower_hex(3..35)
            || !lower_hex(36..52)
            || !lower_hex(53..55)
        {
            return None;
        }
        let trace_id = u128::from_str_radix(&value[3..35], 16).ok()?;
        let span_id = u64::from_str_radix(&value[36..52], 16).ok()?;
        let flags = u8::from_str_radix(&value[53..55], 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The caller's span a request's `traceparent` header (or gRPC metadata)
    /// names, if it names one this service reads.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        Self::parse(headers.get("traceparent")?.to_str().ok()?)
    }

    fn traceparent_text(&self) -> TraceparentText {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [b'-'; 55];
        text[..2].copy_from_slice(b"00");
        for (i, slot) in text[3..35].iter_mut().enumerate() {
            *slot = HEX[(self.trace_id >> (124 - 4 * i) & 0xf) as usize];
        }
        for (i, slot) in text[36..52].iter_mut().enumerate() {
            *slot = HEX[(self.span_id >> (60 - 4 * i) & 0xf) as usize];
        }
        text[53] = b'0';
        text[54] = HEX[usize::from(self.flags & 1)];
        TraceparentText(text)
    }

    fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// A `traceparent` written out: ASCII only.
struct TraceparentText([u8; 55]);

impl std::ops::Deref for TraceparentText {
    type Target = str;

    fn deref(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// A span's value of an attribute.
#[derive(Debug, Clone)]
pub enum Attr {
    Str(&'static str),
    Text(String),
    Int(i64),
}

/// What a span is to its trace (OTLP's span kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanRole {
    Internal = 1,
    Server = 2,
    Producer = 4,
}

/// A span as it is recorded and exported.
#[derive(Debug)]
pub(super) struct Record {
    pub context: TraceContext,
    /// 0: a trace's first span.
    pub parent_span_id: u64,
    pub name: &'static str,
    pub role: SpanRole,
    pub start_nanos: u64,
    pub end_nanos: u64,
    pub attributes: Vec<(&'static str, Attr)>,
    pub links: Vec<TraceContext>,
}

/// A span under way, ended and queued for export when dropped; nothing when
/// tracing is off.
#[derive(Debug, Default)]
pub struct TraceSpan {
    record: Option<Box<Record>>,
}

impl TraceSpan {
    /// Starts a span named `name` under `parent` (none: a new trace), linked to
    /// `links`; when tracing is off, a span that records nothing.
    pub fn start(
        name: &'static str,
        role: SpanRole,
        parent: Option<TraceContext>,
        links: &[TraceContext],
        attributes: Vec<(&'static str, Attr)>,
    ) -> Self {
        if !tracing_on() {
            return Self::default();
        }
        let (trace_id, parent_span_id, sampled) = match parent {
            Some(parent) => (parent.trace_id, parent.span_id, parent.sampled()),
            None => {
                let trace_id = u128::from(random()) << 64 | u128::from(random());
                let sampled = (trace_id as u64) < SAMPLE_BELOW.load(Ordering::Relaxed);
                (trace_id, 0, sampled)
            }
        };
        let context = TraceContext {
            trace_id,
            span_id: random() | 1,
            flags: u8::from(sampled),
        };
        Self {
            record: Some(Box::new(Record {
                context,
                parent_span_id,
                name,
                role,
                start_nanos: now_nanos(),
                end_nanos: 0,
                attributes,
                links: links.to_vec(),
            })),
        }
    }

    /// The span's identity, while tracing is on.
    pub fn context(&self) -> Option<TraceContext> {
        self.record.as_ref().map(|record| record.context)
    }

    /// Sets attributes known only later (an outcome, a status code).
    pub fn set(&mut self, attributes: Vec<(&'static str, Attr)>) {
        if let Some(record) = &mut self.record {
            record.attributes.extend(attributes);
        }
    }

    /// Links the span to another trace's span.
    pub fn link(&mut self, to: TraceContext) {
        if let Some(record) = &mut self.record {
            record.links.push(to);
        }
    }

    /// Runs `future` with this span as the current one (see [`current_trace`]).
    pub async fn scope<F: Future>(&self, future: F) -> F::Output {
        match self.context() {
            Some(context) => CURRENT.scope(Some(context), future).await,
            None => future.await,
        }
    }
}

impl Drop for TraceSpan {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take()
            && record.context.sampled()
        {
            record.end_nanos = now_nanos();
            export::push(*record);
        }
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// 64 random bits (xorshift64*, seeded per thread from the process's hasher keys):
/// ids need to be unique, not secret.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(now_nanos()) | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// The span the current request runs in, while tracing is on.
pub fn current_trace() -> Option<TraceContext> {
    if !tracing_on() {
        return None;
    }
    CURRENT.try_with(|context| *context).ok().flatten()
}

/// `future` with `context` as the current span (none: no span).
pub fn scoped<F: Future>(
    context: Option<TraceContext>,
    future: F,
) -> tokio::task::futures::TaskLocalFuture<Option<TraceContext>, F> {
    CURRENT.scope(context, future)
}

/// The `traceparent` of the span the current request runs in, while tracing is on.
pub fn current_trace_parent() -> Option<Arc<str>> {
    current_trace().map(|context| Arc::from(&*context.traceparent_text()))
}

/// A stream handed the event `sequence`, stored in the trace `traceparent`, to its
/// subscriber: a span in that trace, while tracing is on.
pub fn delivered(traceparent: &str, sequence: u64) {
    if !tracing_on() {
        return;
    }
    let _span = TraceSpan::start(
        "stream deliver",
        SpanRole::Producer,
        TraceContext::parse(traceparent),
        &[],
        vec![("sequence", Attr::Int(sequence as i64))],
    );
}

/// The exporter, kept to send what is still queued at shutdown.
#[derive(Default)]
pub struct Tracer {
    exporting: bool,
}

impl Tracer {
    /// Sends what is still queued (waiting up to 5 s) and stops recording.
    pub fn shutdown(self) {
        if self.exporting {
            ON.store(false, Ordering::Relaxed);
            if !export::stop(std::time::Duration::from_secs(5)) {
                tracing::warn!("traces still queued at shutdown were not all sent");
            }
        }
    }
}

/// Starts recording and exporting to `settings.endpoint` (which needs a Tokio
/// runtime).
pub(super) fn start(settings: &TraceSettings) -> Result<Tracer, String> {
    let Some(endpoint) = &settings.endpoint else {
        return Ok(Tracer::default());
    };
    export::start(endpoint)?;
    let below = if settings.sampling_ratio >= 1.0 {
        u64::MAX
    } else {
        (settings.sampling_ratio.max(0.0) * u64::MAX as f64) as u64
    };
    SAMPLE_BELOW.store(below, Ordering::Relaxed);
    ON.store(true, Ordering::Relaxed);
    Ok(Tracer { exporting: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_version_00_traceparents_with_real_ids_are_read() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(good).unwrap();
        assert_eq!(&*context.traceparent_text(), good);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
    }
}
