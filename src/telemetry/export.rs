//! Ended spans' way out, over OTLP/gRPC: a span is pushed onto a list under a lock
//! (no task woken, no message sent for each), and one task on the runtime takes
//! the list every `OTEL_BSP_SCHEDULE_DELAY` milliseconds (5,000), or as soon as it
//! holds `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans (4,096), and sends it in requests of
//! that many, encoded here straight into OTLP's protobuf form. Past
//! `OTEL_BSP_MAX_QUEUE_SIZE` spans waiting (65,536), new ones are dropped and
//! counted, so a collector that is down costs memory up to that bound and no more.
//!
//! The resource: `service.name` from `OTEL_SERVICE_NAME`, else
//! `OTEL_RESOURCE_ATTRIBUTES`, else `roistat-leads`; every other attribute of
//! `OTEL_RESOURCE_ATTRIBUTES`; `service.version`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use tokio::sync::Notify;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::otel::{Attr, Record, TraceContext, spans_dropped};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Spans waiting for their export.
struct Queue {
    spans: Mutex<Vec<Record>>,
    /// Told when a batch is full, and at shutdown.
    full: Notify,
    stopping: AtomicBool,
    batch: usize,
    max_queue: usize,
    /// Told once the last export is done.
    finished: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .filter(|&value: &usize| value > 0)
        .unwrap_or(default)
}

/// Queues an ended span.
pub(super) fn push(span: Record) {
    let Some(queue) = QUEUE.get() else { return };
    let mut spans = queue.spans.lock().unwrap_or_else(|p| p.into_inner());
    if spans.len() >= queue.max_queue {
        drop(spans);
        spans_dropped(1);
        return;
    }
    spans.push(span);
    if spans.len() == queue.batch {
        drop(spans);
        queue.full.notify_one();
    }
}

/// Starts the export task to `endpoint` on the current Tokio runtime.
pub(super) fn start(endpoint: &str) -> Result<(), String> {
    let invalid = |error: &dyn std::fmt::Display| format!("OTLP endpoint {endpoint}: {error}");
    // Wide HTTP/2 windows: a batch of thousands of spans goes in a few writes.
    let mut channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .map_err(|error| invalid(&error))?
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(4 << 20))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10));
    if endpoint.starts_with("https:") {
        // The system's roots, as for PostgreSQL.
        let tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
        channel = channel.tls_config(tls).map_err(|error| invalid(&error))?;
    }
    let channel = channel.connect_lazy();
    let delay = Duration::from_millis(setting("OTEL_BSP_SCHEDULE_DELAY", 5000) as u64);
    let batch = setting("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 4096);
    let (finished, on_finished) = std::sync::mpsc::channel();
    let queue = Queue {
        spans: Mutex::new(Vec::with_capacity(batch)),
        full: Notify::new(),
        stopping: AtomicBool::new(false),
        batch,
        max_queue: setting("OTEL_BSP_MAX_QUEUE_SIZE", 65_536).max(batch),
        finished: Mutex::new(Some(on_finished)),
    };
    if QUEUE.set(queue).is_err() {
        return Err("traces: an exporter is already running".into());
    }
    let resource = resource();
    tokio::spawn(async move {
        let Some(queue) = QUEUE.get() else { return };
        let mut client = tonic::client::Grpc::new(channel);
        loop {
            tokio::select! {
                _ = queue.full.notified() => {}
                _ = tokio::time::sleep(delay) => {}
            }
            let stopping = queue.stopping.load(Ordering::Acquire);
            let spans = std::mem::take(&mut *queue.spans.lock().unwrap_or_else(|p| p.into_inner()));
            for chunk in spans.chunks(queue.batch) {
                let request = encode_request(&resource, chunk);
                if let Err(error) = send(&mut client, request).await {
                    spans_dropped(chunk.len() as u64);
                    tracing::debug!(%error, count = chunk.len(), "spans not exported");
                }
            }
            if stopping {
                let _ = finished.send(());
                break;
            }
        }
    });
    Ok(())
}

/// Sends what is queued and stops the export task; false when it did not finish
/// within `timeout`.
pub(super) fn stop(timeout: Duration) -> bool {
    let Some(queue) = QUEUE.get() else {
        return true;
    };
    queue.stopping.store(true, Ordering::Release);
    queue.full.notify_one();
    let finished = queue
        .finished
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    finished.is_none_or(|finished| finished.recv_timeout(timeout).is_ok())
}

async fn send(
    client: &mut tonic::client::Grpc<tonic::transport::Channel>,
    request: Bytes,
) -> Result<(), tonic::Status> {
    client
        .ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
    client
        .unary(tonic::Request::new(request), path, Raw)
        .await
        .map(|_| ())
}

/// A request already encoded, and an answer not read (it only counts rejected
/// spans, which are counted as exported).
#[derive(Clone, Copy)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        let remaining = src.remaining();
        src.advance(remaining);
        Ok(Some(()))
    }
}

/// The resource's attributes, encoded once as the `Resource` message.
fn resource() -> Vec<u8> {
    let mut attributes: Vec<(String, String)> = std::env::var("OTEL_RESOURCE_ATTRIBUTES")
        .unwrap_or_default()
        .split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
            Some((key.trim().to_owned(), value.into_owned()))
        })
        .filter(|(key, _)| !key.is_empty())
        .collect();
    let named = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty());
    let given = attributes.iter().position(|(key, _)| key == "service.name");
    let name = match (named, given) {
        (Some(name), _) => name,
        (None, Some(at)) => attributes[at].1.clone(),
        (None, None) => "roistat-leads".to_owned(),
    };
    attributes.retain(|(key, _)| key != "service.name" && key != "service.version");
    attributes.push(("service.name".into(), name));
    attributes.push(("service.version".into(), env!("CARGO_PKG_VERSION").into()));
    let mut resource = Vec::new();
    let mut scratch = Vec::new();
    for (key, value) in &attributes {
        scratch.clear();
        key_value(&mut scratch, key, &Attr::Text(value.clone()));
        message(&mut resource, 1, &scratch);
    }
    resource
}

/// `ExportTraceServiceRequest` { resource_spans: [ { resource, scope_spans: [ {
/// scope, spans } ] } ] }.
fn encode_request(resource: &[u8], spans: &[Record]) -> Bytes {
    let mut scope_spans = Vec::with_capacity(spans.len() * 224 + 64);
    let mut scope = Vec::new();
    string(&mut scope, 1, "roistat-leads");
    string(&mut scope, 2, env!("CARGO_PKG_VERSION"));
    message(&mut scope_spans, 1, &scope);
    let mut span_bytes = Vec::with_capacity(256);
    let mut scratch = Vec::with_capacity(64);
    for span in spans {
        span_bytes.clear();
        encode_span(&mut span_bytes, &mut scratch, span);
        message(&mut scope_spans, 2, &span_bytes);
    }
    let mut resource_spans = Vec::with_capacity(scope_spans.len() + resource.len() + 16);
    message(&mut resource_spans, 1, resource);
    message(&mut resource_spans, 2, &scope_spans);
    let mut request = Vec::with_capacity(resource_spans.len() + 8);
    message(&mut request, 1, &resource_spans);
    request.into()
}

/// A `Span`.
fn encode_span(out: &mut Vec<u8>, scratch: &mut Vec<u8>, span: &Record) {
    let context = span.context;
    message(out, 1, &context.trace_id.to_be_bytes());
    message(out, 2, &context.span_id.to_be_bytes());
    if span.parent_span_id != 0 {
        message(out, 4, &span.parent_span_id.to_be_bytes());
    }
    string(out, 5, span.name);
    varint_field(out, 6, span.role as u64);
    fixed64(out, 7, span.start_nanos);
    fixed64(out, 8, span.end_nanos);
    for (key, value) in &span.attributes {
        scratch.clear();
        key_value(scratch, key, value);
        message(out, 9, scratch);
    }
    for link in &span.links {
        scratch.clear();
        encode_link(scratch, link);
        message(out, 13, scratch);
    }
    // The trace flags, as W3C carries them.
    fixed32(out, 16, u32::from(context.flags));
}

/// A `Span.Link`.
fn encode_link(out: &mut Vec<u8>, link: &TraceContext) {
    message(out, 1, &link.trace_id.to_be_bytes());
    message(out, 2, &link.span_id.to_be_bytes());
    fixed32(out, 6, u32::from(link.flags));
}

/// A `KeyValue` whose `AnyValue` is a string or an int.
fn key_value(out: &mut Vec<u8>, key: &str, value: &Attr) {
    string(out, 1, key);
    let mut any = [0u8; 16];
    let mut any_len = 0;
    let text = match value {
        Attr::Str(text) => Some(*text),
        Attr::Text(text) => Some(text.as_str()),
        Attr::Int(number) => {
            let mut buf = &mut any[..];
            put_varint(&mut buf, 3 << 3);
            put_varint(&mut buf, *number as u64);
            any_len = 16 - buf.len();
            None
        }
    };
    match text {
        Some(text) => {
            put_varint(out, 2 << 3 | 2);
            put_varint(
                out,
                (varint_len(1 << 3 | 2) + varint_len(text.len() as u64) + text.len()) as u64,
            );
            string(out, 1, text);
        }
        None => message(out, 2, &any[..any_len]),
    }
}

fn varint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

fn put_varint(out: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8(value as u8 | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// A length-delimited field (a message, bytes or a string).
fn message(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, field << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn string(out: &mut Vec<u8>, field: u64, text: &str) {
    message(out, field, text.as_bytes());
}

fn varint_field(out: &mut Vec<u8>, field: u64, value: u64) {
    put_varint(out, field << 3);
    put_varint(out, value);
}

fn fixed64(out: &mut Vec<u8>, field: u64, value: u64) {
    put_varint(out, field << 3 | 1);
    out.extend_from_slice(&value.to_le_bytes());
}

fn fixed32(out: &mut Vec<u8>, field: u64, value: u32) {
    put_varint(out, field << 3 | 5);
    out.extend_from_slice(&value.to_le_bytes());
}
