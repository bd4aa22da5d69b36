//! Streaming events to subscribers: stored history, then live events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::inspect::{Connected, ConnectedStream};
use super::{Error, LeadRelay, RelayOptions};
use crate::domain::{EncodedEvent, EventFilter, validate_consumer_name};
use crate::store::{ConsumerStore, EventLog};
use crate::telemetry;

/// Events read from the store per query while a subscriber catches up.
const REPLAY_BATCH: u32 = 2048;
/// Waits between a subscriber's attempts to read an unavailable store.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// An explicit start of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// Events with a sequence greater than this (0: everything stored).
    After(u64),
    /// Events received at or after this time.
    At(OffsetDateTime),
    /// Only events committed after the subscription.
    OnlyNew,
}

/// What a subscriber asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRequest {
    /// `None`: the consumer's position, or the beginning for an ephemeral stream.
    pub start: Option<StreamStart>,
    /// A named, durable consumer; `None` for an ephemeral stream.
    pub consumer: Option<String>,
    pub filter: EventFilter,
    /// Whose seats it takes.
    pub audience: Audience,
}

/// Who a stream is for: each has its own bound, so that one cannot take the
/// other's seats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Audience {
    /// A StreamLeads subscriber (`--grpc-max-subscribers`).
    #[default]
    Subscriber,
    /// The console's live view (`--console-max-feeds`).
    ConsoleFeed,
}

/// What a stream carries.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// Stored events in sequence order, read while catching up.
    Replayed(Vec<EncodedEvent>),
    /// An event as it committed, shared with every other subscriber.
    Live(Arc<EncodedEvent>),
    /// The stream delivered nothing for the heartbeat interval. Every event up to
    /// `sequence` was delivered or filtered out.
    Heartbeat { sequence: u64, latest_sequence: u64 },
}

/// Streaming, with only what it needs: the event log, the consumers' positions,
/// its bounds, and the relay's shutdown.
#[derive(Clone)]
pub(super) struct Streams {
    log: Arc<dyn EventLog>,
    consumers: Arc<dyn ConsumerStore>,
    heartbeat: Duration,
    max_subscribers: usize,
    max_console_feeds: usize,
    max_consumers: u32,
    /// Open StreamLeads subscribers.
    pub(super) subscribers: Arc<AtomicUsize>,
    /// Open console feeds.
    pub(super) console_feeds: Arc<AtomicUsize>,
    /// Streams of named consumers open here.
    pub(super) connected: Arc<Connected>,
    shutdown: CancellationToken,
}

impl Streams {
    pub(super) fn new(
        log: Arc<dyn EventLog>,
        consumers: Arc<dyn ConsumerStore>,
        options: &RelayOptions,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            log,
            consumers,
            heartbeat: options.heartbeat,
            max_subscribers: options.max_subscribers,
            max_console_feeds: options.max_console_feeds,
            max_consumers: options.max_consumers,
            subscribers: Arc::default(),
            console_feeds: Arc::default(),
            connected: Arc::default(),
            shutdown,
        }
    }
}

impl LeadRelay {
    /// Streams events: see [`Streams::open`].
    pub async fn stream(
        &self,
        request: StreamRequest,
        buffer: usize,
    ) -> Result<mpsc::Receiver<StreamItem>, Error> {
        self.streams.open(request, buffer).await
    }
}

impl Streams {
    /// Streams events: stored history first, then live events, with no gap and no
    /// duplicate at the switch; events the filter refuses are skipped, heartbeats
    /// mark quiet periods. A subscriber that falls behind the live feed catches up
    /// from the store. The stream ends when the receiver is dropped or the service
    /// shuts down; while the store is unavailable it waits and retries.
    ///
    /// The starting point is fixed before this returns: an event committed after
    /// it is delivered even with [`StreamStart::OnlyNew`].
    pub(super) async fn open(
        &self,
        request: StreamRequest,
        buffer: usize,
    ) -> Result<mpsc::Receiver<StreamItem>, Error> {
        if let Some(name) = &request.consumer {
            validate_consumer_name(name)?;
        }
        // Counted from here; the guard goes with the subscriber's task.
        let seat = match request.audience {
            Audience::Subscriber => Seat::take(
                &self.subscribers,
                self.max_subscribers,
                "StreamLeads subscribers are open, the most allowed (--grpc-max-subscribers)",
                |_| {},
            )?,
            Audience::ConsoleFeed => Seat::take(
                &self.console_feeds,
                self.max_console_feeds,
                "console live feeds are open, the most allowed (--console-max-feeds)",
                telemetry::console_feeds,
            )?,
        };
        // Subscribed before reading the store, so nothing committed in between is missed.
        let live = self.log.subscribe();
        let explicit = match request.start {
            None => None,
            Some(StreamStart::After(sequence)) => Some(sequence),
            Some(StreamStart::OnlyNew) => Some(self.log.latest_sequence().await?),
            Some(StreamStart::At(time)) => Some(match self.log.first_sequence_at(time).await? {
                Some(first) => first - 1,
                None => self.log.latest_sequence().await?,
            }),
        };
        let cursor = match &request.consumer {
            Some(name) => {
                if let Some(start) = explicit {
                    // A consumer placed past the last event would skip what comes next.
                    let latest = self.log.latest_sequence().await?;
                    if start > latest {
                        return Err(Error::InvalidArgument(format!(
                            "after_sequence {start} is not stored yet (the latest is {latest}): \
                             a consumer cannot start past it"
                        )));
                    }
                }
                let max = self.max_consumers;
                let consumer = self
                    .consumers
                    .ensure_consumer(name, explicit.unwrap_or(0), max)
                    .await?;
                explicit.unwrap_or(consumer.acked_sequence)
            }
            None => explicit.unwrap_or(0),
        };
        tracing::info!(
            cursor,
            consumer = request.consumer.as_deref().unwrap_or(""),
            "stream opened"
        );
        let (sender, receiver) = mpsc::channel(buffer.max(1));
        let streams = self.clone();
        let connected = request
            .consumer
            .as_deref()
            .map(|name| ConnectedStream::open(&self.connected, name));
        tokio::spawn(async move {
            let _seat = seat;
            let _connected = connected;
            let metrics = telemetry::SubscriberMetrics::new();
            streams
                .feed_subscriber(cursor, live, &request.filter, &sender, &metrics)
                .await
        });
        Ok(receiver)
    }

    async fn feed_subscriber(
        &self,
        mut cursor: u64,
        mut live: broadcast::Receiver<Arc<EncodedEvent>>,
        filter: &EventFilter,
        out: &mpsc::Sender<StreamItem>,
        metrics: &telemetry::SubscriberMetrics,
    ) {
        let mut last_delivery = Instant::now();
        // The newest sequence this subscriber has heard of, for its lag.
        let mut newest = cursor;
        'catch_up: loop {
            let mut next = Some(self.read_ahead(cursor, out));
            while let Some(reading) = next.take() {
                let Ok(Some(batch)) = reading.await else {
                    return;
                };
                let last = batch.last().map_or(cursor, |event| event.sequence);
                newest = newest.max(last);
                // A full batch may have more behind it: read that while this one is
                // delivered.
                if batch.len() == REPLAY_BATCH as usize {
                    next = Some(self.read_ahead(last, out));
                }
                let mut batch = batch;
                batch.retain(|event| event.admitted_by(filter));
                cursor = last;
                if batch.is_empty() {
                    continue;
                }
                let behind = newest - batch.last().map_or(cursor, |event| event.sequence);
                metrics.events_sent(batch.len(), behind);
                if !self.deliver(out, StreamItem::Replayed(batch)).await {
                    return;
                }
                last_delivery = Instant::now();
            }
            loop {
                let event = tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = out.closed() => return,
                    _ = tokio::time::sleep_until(last_delivery + self.heartbeat) => {
                        let latest_sequence = self.log.latest_sequence().await.unwrap_or(cursor).max(cursor);
                        let heartbeat = StreamItem::Heartbeat { sequence: cursor, latest_sequence };
                        if !self.deliver(out, heartbeat).await {
                            return;
                        }
                        last_delivery = Instant::now();
                        continue;
                    }
                    event = live.recv() => event,
                };
                if let Ok(event) = &event {
                    newest = newest.max(event.sequence);
                }
                match event {
                    Ok(event) if event.sequence <= cursor => continue,
                    Ok(event) if event.sequence == cursor + 1 => {
                        cursor = event.sequence;
                        if event.admitted_by(filter) {
                            metrics.events_sent(1, newest - cursor);
                            if !self.deliver(out, StreamItem::Live(event)).await {
                                return;
                            }
                            last_delivery = Instant::now();
                        }
                    }
                    // A gap, or the feed dropped events we did not take in time:
                    // the store has them all.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        tracing::debug!(
                            cursor,
                            "subscriber fell behind the live feed; catching up from the store"
                        );
                        continue 'catch_up;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }

    /// [`Self::read_events`] as a task of its own, so it runs while the caller works.
    fn read_ahead(
        &self,
        cursor: u64,
        out: &mpsc::Sender<StreamItem>,
    ) -> tokio::task::JoinHandle<Option<Vec<EncodedEvent>>> {
        let (streams, out) = (self.clone(), out.clone());
        tokio::spawn(async move { streams.read_events(cursor, &out).await })
    }

    /// Reads stored events after `cursor`, retrying while the store is unavailable
    /// (a database restart should not end streams); `None` when the subscriber is
    /// gone or the service stops.
    async fn read_events(
        &self,
        cursor: u64,
        out: &mpsc::Sender<StreamItem>,
    ) -> Option<Vec<EncodedEvent>> {
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            match self.log.events_after(cursor, REPLAY_BATCH).await {
                Ok(events) => return Some(events),
                Err(error) => {
                    tracing::warn!(%error, cursor, "cannot read events for a subscriber; retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = out.closed() => return None,
                _ = self.shutdown.cancelled() => return None,
            }
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }

    /// Hands an item to the subscriber; false when it is gone or the service stops.
    async fn deliver(&self, out: &mpsc::Sender<StreamItem>, item: StreamItem) -> bool {
        tokio::select! {
            sent = out.send(item) => sent.is_ok(),
            _ = self.shutdown.cancelled() => false,
        }
    }
}

/// One of the subscribers' places, held while the subscriber is open.
struct Seat(Arc<AtomicUsize>, fn(usize));

impl Seat {
    /// A place among at most `max`; RESOURCE_EXHAUSTED when all are taken (`what`
    /// says which are all open). `report` is told how many are open after each
    /// change.
    fn take(
        count: &Arc<AtomicUsize>,
        max: usize,
        what: &str,
        report: fn(usize),
    ) -> Result<Self, Error> {
        let taken = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
            (open < max).then_some(open + 1)
        });
        match taken {
            Ok(open) => {
                report(open + 1);
                Ok(Self(count.clone(), report))
            }
            Err(open) => Err(Error::ResourceExhausted(format!(
                "{open} {what}: retry later"
            ))),
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let open = self.0.fetch_sub(1, Ordering::AcqRel);
        (self.1)(open - 1);
    }
}

#[cfg(test)]
mod tests;
