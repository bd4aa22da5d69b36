//! What subscribers see: end-to-end latency, fan-out, replay.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use axum::http::uri::PathAndQuery;
use bytes::Buf;
use prost::Message;
use roistat_leads::proto::lead_event::Event;
use roistat_leads::proto::lead_service_client::LeadServiceClient;
use roistat_leads::proto::{LeadEvent, StreamLeadsRequest};
use tokio::task::JoinSet;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, Streaming};
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

use crate::{connect, lead_query, percentile, rss_kib};

pub async fn e2e(http: &str, grpc: &str, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut stream = LeadServiceClient::new(connect(grpc).await?)
        .stream_leads(StreamLeadsRequest {
            only_new: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let total = rate * seconds;
    let run = std::process::id();
    let client = reqwest::Client::new();
    let url = format!("{http}/webhook");
    let sender = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
            let mut requests = JoinSet::new();
            for n in 0..total {
                ticks.tick().await;
                let id = format!("e2e-{run}-{n}");
                sent.lock().unwrap().insert(id.clone(), Instant::now());
                let request = client.get(&url).query(&lead_query(&id)).send();
                requests.spawn(async move {
                    request.await.map(|response| response.status().is_success())
                });
            }
            let mut failures = 0;
            while let Some(done) = requests.join_next().await {
                if !matches!(done, Ok(Ok(true))) {
                    failures += 1;
                }
            }
            failures
        })
    };
    let mut latencies = Vec::with_capacity(total as usize);
    while latencies.len() < total as usize {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .context("no event for 30 s")??
            .context("stream ended")?;
        let received = Instant::now();
        if let Some(Event::Lead(lead)) = event.event
            && let Some(started) = sent.lock().unwrap().remove(&lead.lead_id)
        {
            latencies.push(received - started);
        }
    }
    let failures = sender.await?;
    latencies.sort();
    println!(
        "e2e rate={rate}/s events={} failures={failures} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    Ok(())
}

/// Now, as the service stamps commits: microseconds since the Unix epoch.
fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as i64)
}

pub async fn fanout(
    http: &str,
    grpc: &str,
    pid: u32,
    subscribers: usize,
    events: usize,
) -> anyhow::Result<()> {
    // The server allows a bounded number of streams per connection: spread them.
    const STREAMS_PER_CONNECTION: usize = 100;
    let before = rss_kib(pid)?;
    let mut channels = vec![];
    for _ in 0..subscribers.div_ceil(STREAMS_PER_CONNECTION) {
        channels.push(connect(grpc).await?);
    }
    let mut streams = vec![];
    for n in 0..subscribers {
        let mut client = LeadServiceClient::new(channels[n / STREAMS_PER_CONNECTION].clone());
        let stream = client
            .stream_leads(StreamLeadsRequest {
                only_new: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        streams.push(stream);
    }
    // Let the server settle its per-stream state before reading its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid)?;
    let per_subscriber = (idle.saturating_sub(before)) as f64 / subscribers as f64;

    let started = Instant::now();
    let mut readers = JoinSet::new();
    for mut stream in streams {
        readers.spawn(async move {
            // Each lead's sequence, and how long after its commit it arrived here.
            let mut arrivals = Vec::with_capacity(events);
            while arrivals.len() < events {
                match tokio::time::timeout(Duration::from_secs(60), stream.message()).await {
                    Ok(Ok(Some(event))) if matches!(event.event, Some(Event::Lead(_))) => {
                        let committed = event.receive_time.map_or(0, |time| {
                            time.seconds * 1_000_000 + i64::from(time.nanos) / 1_000
                        });
                        let after = (now_micros() - committed).max(0) as u64;
                        arrivals.push((event.sequence, Duration::from_micros(after)));
                    }
                    Ok(Ok(Some(_))) => {}
                    _ => break,
                }
            }
            arrivals
        });
    }
    let client = reqwest::Client::new();
    for n in 0..events {
        let id = format!("fanout-{}-{n}", std::process::id());
        let response = client
            .get(format!("{http}/webhook"))
            .query(&lead_query(&id))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("webhook answered {}", response.status());
        }
    }
    let (mut complete, mut deliveries) = (0, Vec::with_capacity(subscribers * events));
    // For each event, when its last subscriber got it.
    let mut last: BTreeMap<u64, Duration> = BTreeMap::new();
    while let Some(arrivals) = readers.join_next().await {
        let arrivals = arrivals?;
        if arrivals.len() == events {
            complete += 1;
        }
        for (sequence, after) in arrivals {
            let slowest = last.entry(sequence).or_default();
            *slowest = (*slowest).max(after);
            deliveries.push(after);
        }
    }
    let elapsed = started.elapsed();
    deliveries.sort();
    let mut to_last: Vec<Duration> = last.into_values().collect();
    to_last.sort();
    println!(
        "fanout subscribers={subscribers} events={events} complete_subscribers={complete} \
         deliveries={} seconds={:.3} deliveries_per_s={:.0} delivery_p50_ms={:.2} \
         delivery_p99_ms={:.2} last_subscriber_p50_ms={:.2} last_subscriber_p99_ms={:.2} \
         rss_before_kib={before} rss_idle_kib={idle} kib_per_idle_subscriber={per_subscriber:.1}",
        deliveries.len(),
        elapsed.as_secs_f64(),
        deliveries.len() as f64 / elapsed.as_secs_f64(),
        percentile(&deliveries, 0.50),
        percentile(&deliveries, 0.99),
        percentile(&to_last, 0.50),
        percentile(&to_last, 0.99),
    );
    Ok(())
}

/// How the replay client reads the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Reader {
    /// The generated client as it comes.
    Stock,
    /// The same messages through a codec for bulk reads: a large receive buffer,
    /// and each message decoded from one contiguous slice (prost's fast path).
    Bulk,
    /// The bulk reader with decoding on a second thread: the connection's thread
    /// cuts the stream into messages and hands them over in batches, the other
    /// decodes each into the generated type, as a consumer would that keeps its
    /// connection's thread free.
    Split,
}

/// A bulk reader's receive buffer: 1 MiB, growing to 4 MiB.
fn bulk_buffers() -> BufferSettings {
    BufferSettings::new(1024 * 1024, 4 * 1024 * 1024)
}

/// Takes each message's bytes as they came, to be decoded elsewhere.
#[derive(Clone, Copy)]
struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = bytes::Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<bytes::Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        bulk_buffers()
    }
}

/// Messages handed to the decoding thread at a time.
const SPLIT_BATCH: usize = 512;

/// What a replaying reader has seen: events (heartbeats aside), and the last
/// sequence, which must rise.
#[derive(Default)]
struct Tally {
    received: u64,
    last: u64,
}

impl Tally {
    fn see(&mut self, event: &LeadEvent) -> anyhow::Result<()> {
        if event.sequence <= self.last {
            bail!("sequence {} after {}", event.sequence, self.last);
        }
        self.last = event.sequence;
        if !matches!(event.event, Some(Event::Heartbeat(_))) {
            self.received += 1;
        }
        Ok(())
    }
}

/// Decodes every message it is handed into a `LeadEvent` until it has seen
/// `events` events.
fn decode_thread(
    batches: std::sync::mpsc::Receiver<Vec<bytes::Bytes>>,
    events: u64,
) -> anyhow::Result<u64> {
    let mut tally = Tally::default();
    for batch in batches {
        for message in batch {
            tally.see(&LeadEvent::decode(message.as_ref())?)?;
            if tally.received == events {
                return Ok(events);
            }
        }
    }
    bail!("stream ended early: {} of {events} events", tally.received)
}

/// `StreamLeads` from the start of the log through the generated client stack,
/// each answer decoded by `decoder`.
async fn bulk_stream<D>(channel: Channel, decoder: D) -> anyhow::Result<Streaming<D::Item>>
where
    D: Decoder<Error = Status> + Copy + Send + 'static,
    D::Item: Send + Sync + 'static,
{
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await?;
    let path = PathAndQuery::from_static("/roistat.leads.v1.LeadService/StreamLeads");
    let request = tonic::Request::new(StreamLeadsRequest::default());
    let response = client
        .server_streaming(request, path, BulkCodec(decoder))
        .await?;
    Ok(response.into_inner())
}

/// Reads the stream on this thread and decodes it on another.
async fn replay_split(channel: Channel, events: u64) -> anyhow::Result<u64> {
    let (batches, decoded) = std::sync::mpsc::sync_channel::<Vec<bytes::Bytes>>(64);
    let (finished, mut done) = tokio::sync::oneshot::channel();
    let decoder = std::thread::spawn(move || {
        let result = decode_thread(decoded, events);
        let _ = finished.send(());
        result
    });
    let mut stream = bulk_stream(channel, RawDecoder).await?;
    let mut batch = Vec::with_capacity(SPLIT_BATCH);
    loop {
        let next = if batch.is_empty() {
            tokio::select! {
                message = stream.message() => message?,
                // The decoder has every event it waits for.
                _ = &mut done => break,
            }
        } else {
            // What has arrived goes to the decoder before this thread waits.
            match tokio::time::timeout(Duration::ZERO, stream.message()).await {
                Ok(message) => message?,
                Err(_) => {
                    if batches.send(std::mem::take(&mut batch)).is_err() {
                        break;
                    }
                    continue;
                }
            }
        };
        let Some(message) = next else { break };
        batch.push(message);
        if batch.len() == SPLIT_BATCH && batches.send(std::mem::take(&mut batch)).is_err() {
            break;
        }
    }
    if !batch.is_empty() {
        let _ = batches.send(batch);
    }
    drop(batches);
    decoder
        .join()
        .map_err(|_| anyhow::anyhow!("the decoding thread panicked"))?
}

/// Decodes `LeadEvent`s from contiguous slices of a large receive buffer.
#[derive(Clone, Copy)]
struct BulkDecoder;

impl Decoder for BulkDecoder {
    type Item = LeadEvent;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<LeadEvent>, Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        LeadEvent::decode(bytes.as_ref())
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        bulk_buffers()
    }
}

/// The replay request, encoded as the generated client does, with a bulk reader's
/// decoder for the answers.
#[derive(Clone, Copy)]
struct BulkCodec<D>(D);

impl<D> Codec for BulkCodec<D>
where
    D: Decoder<Error = Status> + Copy + Send + 'static,
    D::Item: Send + 'static,
{
    type Encode = StreamLeadsRequest;
    type Decode = D::Item;
    type Encoder = <ProstCodec<StreamLeadsRequest, LeadEvent> as Codec>::Encoder;
    type Decoder = D;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<StreamLeadsRequest, LeadEvent>::default().encoder()
    }

    fn decoder(&mut self) -> D {
        self.0
    }
}

pub async fn replay(grpc: &str, events: u64, reader: Reader) -> anyhow::Result<()> {
    // A client that reads a whole store opens HTTP/2's flow-control windows wide, so
    // the server is not held up waiting for window updates, and takes frames of up
    // to 1 MiB rather than 16 KiB, so that it handles a sixty-fourth as many.
    let channel = Channel::from_shared(grpc.to_owned())?
        .initial_stream_window_size(8 * 1024 * 1024)
        .initial_connection_window_size(16 * 1024 * 1024)
        .max_frame_size(1024 * 1024)
        .connect()
        .await?;
    let started = Instant::now();
    let mut stream = match reader {
        Reader::Stock => {
            let mut client =
                LeadServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);
            client
                .stream_leads(StreamLeadsRequest::default())
                .await?
                .into_inner()
        }
        Reader::Bulk => bulk_stream(channel, BulkDecoder).await?,
        Reader::Split => {
            let received = replay_split(channel, events).await?;
            report(reader, received, started.elapsed());
            return Ok(());
        }
    };
    let mut tally = Tally::default();
    while tally.received < events {
        // Every event decoded into the generated type, as a consumer would.
        let event = stream.message().await?.context("stream ended early")?;
        tally.see(&event)?;
    }
    report(reader, tally.received, started.elapsed());
    Ok(())
}

fn report(reader: Reader, received: u64, elapsed: Duration) {
    println!(
        "replay reader={reader:?} events={received} seconds={:.2} events_per_s={:.0}",
        elapsed.as_secs_f64(),
        received as f64 / elapsed.as_secs_f64()
    );
}
