//! An in-memory fake of the roles streaming uses ([`EventLog`], [`ConsumerStore`]),
//! for unit tests of the relay that run in milliseconds. It keeps the contract of
//! the real stores (events in sequence order, each published on the feed after it
//! is stored) and can be told to fail reads, as an unavailable database would.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::broadcast;

use super::{ConsumerStore, DbError, EventLog, StoreError};
use crate::domain::{Consumer, EncodedEvent, EventKind, LeadKey};

/// Events and consumers in memory.
pub(crate) struct FakeLog {
    state: Mutex<State>,
    feed: broadcast::Sender<Arc<EncodedEvent>>,
    /// Calls of `events_after`, failed ones included.
    reads: AtomicUsize,
}

#[derive(Default)]
struct State {
    events: Vec<Arc<EncodedEvent>>,
    consumers: BTreeMap<String, Consumer>,
    /// `events_after` calls to let through before failing `failures` of them.
    reads_before_failing: usize,
    failures: usize,
}

impl FakeLog {
    /// An empty log whose feed holds `feed_capacity` events for a slow receiver.
    pub fn new(feed_capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            feed: broadcast::channel(feed_capacity).0,
            reads: AtomicUsize::new(0),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the fake's lock is never poisoned")
    }

    /// Stores `count` messages, each published on the feed as it "commits"; returns
    /// the last sequence.
    pub fn append(&self, count: usize) -> u64 {
        let mut state = self.state();
        for _ in 0..count {
            let event = Arc::new(EncodedEvent {
                sequence: state.events.len() as u64 + 1,
                receive_time: OffsetDateTime::now_utc(),
                kind: EventKind::Message,
                integration: "default".into(),
                source: None,
                body: bytes::Bytes::new(),
                trace_parent: None,
                person: None,
            });
            state.events.push(event.clone());
            // Nobody listening is not an error.
            let _ = self.feed.send(event);
        }
        state.events.len() as u64
    }

    /// After `reads` more calls of `events_after` succeed, the next `failures` fail
    /// as an unavailable database does.
    pub fn fail_reads(&self, reads: usize, failures: usize) {
        let mut state = self.state();
        state.reads_before_failing = reads;
        state.failures = failures;
    }

    /// How often `events_after` was called.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// Failures still to come.
    pub fn failures_left(&self) -> usize {
        self.state().failures
    }
}

#[async_trait]
impl EventLog for FakeLog {
    async fn events_after(
        &self,
        after_sequence: u64,
        limit: u32,
    ) -> Result<Vec<EncodedEvent>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let mut state = self.state();
        if state.reads_before_failing > 0 {
            state.reads_before_failing -= 1;
        } else if state.failures > 0 {
            state.failures -= 1;
            return Err(StoreError::Unavailable(DbError::unavailable(
                "the fake database is down",
            )));
        }
        let start = usize::try_from(after_sequence)
            .unwrap_or(usize::MAX)
            .min(state.events.len());
        let events = &state.events[start..];
        let taken = events.iter().take(limit as usize);
        Ok(taken.map(|event| (**event).clone()).collect())
    }

    async fn latest_sequence(&self) -> Result<u64, StoreError> {
        Ok(self.state().events.len() as u64)
    }

    async fn first_sequence_at(&self, time: OffsetDateTime) -> Result<Option<u64>, StoreError> {
        let state = self.state();
        let first = state.events.iter().find(|event| event.receive_time >= time);
        Ok(first.map(|event| event.sequence))
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<EncodedEvent>> {
        self.feed.subscribe()
    }

    async fn get_lead(&self, _key: &LeadKey) -> Result<Option<EncodedEvent>, StoreError> {
        // The fake stores messages only.
        Ok(None)
    }

    async fn list_leads(
        &self,
        _after_sequence: u64,
        _limit: u32,
        _integration: Option<&str>,
    ) -> Result<Vec<EncodedEvent>, StoreError> {
        Ok(vec![])
    }
}

#[async_trait]
impl ConsumerStore for FakeLog {
    async fn ensure_consumer(
        &self,
        name: &str,
        acked_sequence: u64,
        max: u32,
    ) -> Result<Consumer, StoreError> {
        let mut state = self.state();
        let count = state.consumers.len();
        if let Some(consumer) = state.consumers.get(name) {
            return Ok(consumer.clone());
        }
        if count >= max as usize {
            return Err(StoreError::Exhausted(format!("{count} consumers exist")));
        }
        let consumer = Consumer {
            name: name.to_owned(),
            acked_sequence,
            pending: 0,
            ack_time: None,
            create_time: OffsetDateTime::now_utc(),
        };
        state.consumers.insert(name.to_owned(), consumer.clone());
        Ok(consumer)
    }

    async fn ack_consumer(
        &self,
        name: &str,
        sequence: u64,
        max: u32,
    ) -> Result<Consumer, StoreError> {
        self.ensure_consumer(name, sequence, max).await?;
        let mut state = self.state();
        let consumer = state.consumers.get_mut(name).ok_or(StoreError::NotFound)?;
        consumer.acked_sequence = consumer.acked_sequence.max(sequence);
        consumer.ack_time = Some(OffsetDateTime::now_utc());
        Ok(consumer.clone())
    }

    async fn get_consumer(&self, name: &str) -> Result<Option<Consumer>, StoreError> {
        Ok(self.state().consumers.get(name).cloned())
    }

    async fn list_consumers(
        &self,
        after_name: &str,
        limit: u32,
    ) -> Result<Vec<Consumer>, StoreError> {
        let state = self.state();
        let after = state
            .consumers
            .values()
            .filter(|consumer| consumer.name.as_str() > after_name);
        Ok(after.take(limit as usize).cloned().collect())
    }

    async fn delete_consumer(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.state().consumers.remove(name).is_some())
    }
}
