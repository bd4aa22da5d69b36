//! The SQL both stores run, written once over the surface of `db.rs`: `writes`
//! (the writer's transactions), `reads`, `crm` (deals, the scheme, clients,
//! export walks) and `consumers`. A backend provides connections ([`Backend`] for
//! reads, [`WriteSide`] for the writer) and its few differences as hooks.
//!
//! Sequences and versions come from a one-row counter table: a write transaction
//! that numbers anything reads the row once, numbers in memory, and writes it back
//! before it commits. On PostgreSQL every write transaction locks the counter's row first and
//! holds the lock until commit, so sequences are allocated in commit order and
//! never have gaps (a reader that saw sequence N will never later find a committed
//! event below N), and locks are always taken in the same order. On SQLite there is
//! one writer anyway.

mod backfill;
mod consumers;
mod crm;
mod events;
mod inspect;
mod leads;
mod person_cache;
mod person_keys;
mod person_store;
mod persons;
mod reads;
mod rejected;
mod writes;

use std::future::Future;
use std::ops::DerefMut;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::{Mutex, broadcast, mpsc, oneshot};

use super::db::{Conn, DbError};
use super::writer::{self, Command, Committed, Reply, Write};
use super::{
    ConsumerStore, CrmStore, EventLog, EventReceipt, ExportKind, ExportWindow, Inspection,
    LeadReceipt, LeadWrites, Lifecycle, NewEvent, NewLead, StoreError,
};
use crate::domain::{
    Client, ClientRecord, Consumer, Deal, DealReport, EncodedEvent, FoundLead, LeadKey, LeadSearch,
    LeadSource, Order, OrderIdMode, RejectedFilter, RejectedRequest, Scheme,
};

#[cfg(test)]
pub(super) use backfill::UNCONVERTED;
pub(super) use backfill::convert_stored;
pub use person_store::Backfilled;
pub use person_store::PersonKey;
#[cfg(feature = "postgres")]
pub(super) use reads::{events_after, latest_sequence};
pub(super) use writes::SqlTransactor;

/// A backend's read side.
pub(super) trait Backend: Send + Sync + 'static {
    type Conn: Conn;
    type Reader<'a>: DerefMut<Target = Self::Conn> + Send
    where
        Self: 'a;

    /// A connection for reads, from the backend's pool.
    fn reader(&self) -> impl Future<Output = Result<Self::Reader<'_>, DbError>> + Send;

    /// Stops the backend's background tasks and closes its connections; the
    /// writer has stopped by then.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// A backend's write side: the writer's own connection, and what differs.
pub(super) trait WriteSide: Send + 'static {
    type Conn: Conn;

    /// The backend's name, as metrics and traces label it.
    const NAME: &'static str;

    /// Starts a write transaction.
    const BEGIN: &'static str;

    /// Whether this writer is the store's only one, so it may keep what it
    /// committed of persons in memory.
    const SOLE_WRITER: bool;

    /// The writer's connection, connected again if it was lost.
    fn connection(&mut self) -> impl Future<Output = Result<&mut Self::Conn, DbError>> + Send;

    /// The connection failed in a way that may have broken it: forget it.
    fn discard(&mut self);

    /// Runs first in every write transaction; returns the counters (last sequence,
    /// last version) when it read them already.
    fn begin_writes(
        conn: &mut Self::Conn,
        batch: &[Write],
    ) -> impl Future<Output = Result<Option<(i64, i64)>, DbError>> + Send;

    /// Runs last in every write transaction, before it commits.
    fn before_commit(
        conn: &mut Self::Conn,
        committed: &Committed,
    ) -> impl Future<Output = Result<(), DbError>> + Send;

    /// Tells this process (and, through `before_commit`, the others) what committed.
    fn announce(&mut self, committed: Committed);

    /// After each batch: upkeep, which should wait for `idle` (no write waiting)
    /// unless it is overdue.
    fn upkeep(&mut self, _idle: bool) {}
}

/// A store: reads through the backend, writes through the writer.
pub(super) struct SqlStore<B> {
    pub backend: B,
    pub commands: mpsc::Sender<Command>,
    pub feed: broadcast::Sender<Arc<EncodedEvent>>,
    pub deal_reports: broadcast::Sender<LeadKey>,
    /// Completes once the writer has stopped; taken by `close`.
    pub writer_done: Mutex<Option<oneshot::Receiver<()>>>,
}

impl<B: Backend> SqlStore<B> {
    /// Queues the write `make` builds around its reply; its outcome once committed.
    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Write) -> Result<T, StoreError> {
        writer::submit(&self.commands, make).await
    }

    async fn reader(&self) -> Result<B::Reader<'_>, StoreError> {
        Ok(self.backend.reader().await?)
    }

    /// A consumer that a committed write just created or moved.
    async fn consumer(&self, name: &str) -> Result<Consumer, StoreError> {
        self.get_consumer(name).await?.ok_or(StoreError::NotFound)
    }
}

#[async_trait]
impl<B: Backend> EventLog for SqlStore<B> {
    async fn events_after(
        &self,
        after_sequence: u64,
        limit: u32,
    ) -> Result<Vec<EncodedEvent>, StoreError> {
        Ok(reads::events_after(&mut *self.reader().await?, after_sequence, limit).await?)
    }

    async fn latest_sequence(&self) -> Result<u64, StoreError> {
        Ok(reads::latest_sequence(&mut *self.reader().await?).await?)
    }

    async fn first_sequence_at(&self, time: OffsetDateTime) -> Result<Option<u64>, StoreError> {
        Ok(reads::first_sequence_at(&mut *self.reader().await?, time).await?)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<EncodedEvent>> {
        self.feed.subscribe()
    }

    async fn get_lead(&self, key: &LeadKey) -> Result<Option<EncodedEvent>, StoreError> {
        Ok(reads::get_lead(&mut *self.reader().await?, key).await?)
    }

    async fn list_leads(
        &self,
        after_sequence: u64,
        limit: u32,
        integration: Option<&str>,
    ) -> Result<Vec<EncodedEvent>, StoreError> {
        let mut conn = self.reader().await?;
        Ok(reads::list_leads(&mut *conn, after_sequence, limit, integration).await?)
    }
}

#[async_trait]
impl<B: Backend> LeadWrites for SqlStore<B> {
    async fn insert_lead(
        &self,
        lead: NewLead,
        mode: OrderIdMode,
    ) -> Result<LeadReceipt, StoreError> {
        let lead = Box::new(lead);
        self.write(|reply| Write::InsertLead { lead, mode, reply })
            .await
    }

    async fn assign_order_id(&self, key: &LeadKey, mode: OrderIdMode) -> Result<Deal, StoreError> {
        let key = key.clone();
        self.write(|reply| Write::AssignOrderId { key, mode, reply })
            .await
    }

    async fn insert_event(
        &self,
        event: NewEvent,
        dedup_window: Duration,
    ) -> Result<EventReceipt, StoreError> {
        let event = Box::new(event);
        self.write(|reply| Write::InsertEvent {
            event,
            dedup_window,
            reply,
        })
        .await
    }

    fn subscribe_deal_reports(&self) -> broadcast::Receiver<LeadKey> {
        self.deal_reports.subscribe()
    }
}

#[async_trait]
impl<B: Backend> CrmStore for SqlStore<B> {
    async fn report_deal(&self, key: &LeadKey, report: DealReport) -> Result<Deal, StoreError> {
        let (key, report) = (key.clone(), Box::new(report));
        self.write(|reply| Write::ReportDeal { key, report, reply })
            .await
    }

    async fn get_deal(&self, key: &LeadKey) -> Result<Option<Deal>, StoreError> {
        let deal = crm::load_deal(&mut *self.reader().await?, key).await?;
        Ok(deal.map(|(_, deal)| deal))
    }

    async fn put_scheme(
        &self,
        integration: &str,
        scheme: &Scheme,
    ) -> Result<OffsetDateTime, StoreError> {
        self.write(|reply| Write::PutScheme {
            integration: integration.to_owned(),
            scheme: Box::new(scheme.clone()),
            reply,
        })
        .await
    }

    async fn get_scheme(
        &self,
        integration: &str,
    ) -> Result<Option<(Scheme, OffsetDateTime)>, StoreError> {
        Ok(crm::get_scheme(&mut *self.reader().await?, integration).await?)
    }

    async fn put_client(
        &self,
        integration: &str,
        client: &Client,
    ) -> Result<OffsetDateTime, StoreError> {
        self.write(|reply| Write::PutClient {
            integration: integration.to_owned(),
            client: Box::new(client.clone()),
            reply,
        })
        .await
    }

    async fn export_snapshot(
        &self,
        integration: &str,
        kind: ExportKind,
        since: OffsetDateTime,
        restart: bool,
    ) -> Result<u64, StoreError> {
        if !restart {
            let mut conn = self.reader().await?;
            if let Some(snapshot) = crm::walk_snapshot(&mut *conn, integration, kind, since).await?
            {
                return Ok(snapshot);
            }
        }
        self.write(|reply| Write::ExportSnapshot {
            integration: integration.to_owned(),
            kind,
            since,
            restart,
            reply,
        })
        .await
    }

    async fn export_orders(
        &self,
        integration: &str,
        window: ExportWindow,
    ) -> Result<(u64, Vec<Order>), StoreError> {
        Ok(crm::export_orders(&mut *self.reader().await?, integration, window).await?)
    }

    async fn export_clients(
        &self,
        integration: &str,
        window: ExportWindow,
    ) -> Result<(u64, Vec<ClientRecord>), StoreError> {
        Ok(crm::export_clients(&mut *self.reader().await?, integration, window).await?)
    }

    async fn export_order(&self, key: &LeadKey) -> Result<Option<Order>, StoreError> {
        Ok(inspect::export_order(&mut *self.reader().await?, key).await?)
    }
}

#[async_trait]
impl<B: Backend> ConsumerStore for SqlStore<B> {
    async fn ensure_consumer(
        &self,
        name: &str,
        acked_sequence: u64,
        max: u32,
    ) -> Result<Consumer, StoreError> {
        self.write(|reply| Write::EnsureConsumer {
            name: name.to_owned(),
            acked_sequence,
            max,
            reply,
        })
        .await?;
        self.consumer(name).await
    }

    async fn ack_consumer(
        &self,
        name: &str,
        sequence: u64,
        max: u32,
    ) -> Result<Consumer, StoreError> {
        self.write(|reply| Write::AckConsumer {
            name: name.to_owned(),
            sequence,
            max,
            reply,
        })
        .await?;
        self.consumer(name).await
    }

    async fn get_consumer(&self, name: &str) -> Result<Option<Consumer>, StoreError> {
        Ok(consumers::get(&mut *self.reader().await?, name).await?)
    }

    async fn list_consumers(
        &self,
        after_name: &str,
        limit: u32,
    ) -> Result<Vec<Consumer>, StoreError> {
        Ok(consumers::list(&mut *self.reader().await?, after_name, limit).await?)
    }

    async fn delete_consumer(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write(|reply| Write::DeleteConsumer { name, reply })
            .await
    }
}

#[async_trait]
impl<B: Backend> Inspection for SqlStore<B> {
    async fn record_rejected(
        &self,
        request: RejectedRequest,
        keep: u32,
    ) -> Result<u64, StoreError> {
        let request = Box::new(request);
        self.write(|reply| Write::RecordRejected {
            request,
            keep,
            reply,
        })
        .await
    }

    async fn list_rejected(
        &self,
        filter: &RejectedFilter,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<RejectedRequest>, StoreError> {
        let mut conn = self.reader().await?;
        Ok(rejected::list(&mut *conn, filter, before, limit).await?)
    }

    async fn search_leads(&self, search: &LeadSearch) -> Result<Vec<FoundLead>, StoreError> {
        Ok(inspect::search_leads(&mut *self.reader().await?, search).await?)
    }

    async fn events_about(
        &self,
        key: &LeadKey,
        limit: u32,
    ) -> Result<Vec<EncodedEvent>, StoreError> {
        Ok(inspect::events_about(&mut *self.reader().await?, key, limit).await?)
    }

    async fn lead_minutes(
        &self,
        since: OffsetDateTime,
        integration: Option<&str>,
    ) -> Result<Vec<(i64, Option<LeadSource>, u64)>, StoreError> {
        Ok(inspect::lead_minutes(&mut *self.reader().await?, since, integration).await?)
    }

    async fn store_bytes(&self) -> Result<u64, StoreError> {
        Ok(inspect::store_bytes(&mut *self.reader().await?).await?)
    }
}

#[async_trait]
impl<B: Backend> Lifecycle for SqlStore<B> {
    async fn ping(&self) -> Result<(), StoreError> {
        self.write(|reply| Write::Ping { reply }).await
    }

    async fn close(&self) {
        let Some(done) = self.writer_done.lock().await.take() else {
            return;
        };
        let _ = self.commands.send(Command::Stop).await;
        let _ = done.await;
        self.backend.close().await;
    }
}

/// Database integers are signed; sequences beyond i64 never occur, and a cursor
/// beyond it means "after everything".
pub(super) fn to_db_sequence(sequence: u64) -> i64 {
    i64::try_from(sequence).unwrap_or(i64::MAX)
}

/// Times are stored as Unix microseconds.
pub(super) fn to_micros(time: OffsetDateTime) -> i64 {
    (time.unix_timestamp_nanos() / 1_000) as i64
}

pub(super) fn from_micros(micros: i64) -> OffsetDateTime {
    // Whole seconds, then the microseconds: no 128-bit arithmetic on a path every
    // replayed event takes.
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000) as u32;
    OffsetDateTime::from_unix_timestamp(seconds)
        .and_then(|time| time.replace_microsecond(fraction))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Now, at the precision the store keeps.
pub(super) fn now_micros() -> i64 {
    to_micros(OffsetDateTime::now_utc())
}

/// Text from outside (a lead's title, a refused request's action) as a text column
/// takes it: a NUL, which PostgreSQL cannot store, becomes U+FFFD. The event's own
/// payload keeps the text exactly.
pub(super) fn column_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// A record as stored JSON.
pub(super) fn to_json(value: &impl serde::Serialize) -> Result<String, DbError> {
    serde_json::to_string(value)
        .map_err(|error| DbError::invalid(format!("cannot encode: {error}")))
}

/// A record from stored JSON.
pub(super) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, DbError> {
    serde_json::from_str(text)
        .map_err(|error| DbError::invalid(format!("a stored record is unreadable: {error}")))
}
