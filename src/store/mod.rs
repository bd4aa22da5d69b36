//! Durable storage of leads, messages, deals and the event log behind them.
//! The store is seen through the roles its callers use ([`EventLog`],
//! [`LeadWrites`], [`CrmStore`], [`ConsumerStore`], [`Inspection`], [`PersonStore`],
//! [`Lifecycle`]);
//! [`LeadStore`] is all of them. Every backend implements them through the same SQL
//! (`sql/`), over the small database surface of `db.rs`; `open` picks one from the
//! database URL.

mod checkpoint;
mod db;
#[cfg(test)]
pub(crate) mod fake;
#[cfg(feature = "postgres")]
mod postgres;
mod sql;
mod sqlite;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::domain::{
    Client, ClientRecord, Consumer, Deal, DealReport, EncodedEvent, EventKind, FoundLead, Identity,
    LeadKey, LeadSearch, LeadSource, Order, OrderIdMode, Person, PersonCursor, RejectedFilter,
    RejectedRequest, Scheme, SearchKeys,
};

pub use db::DbError;
pub use sql::{Backfilled, PersonKey};

/// Deal reports a waiting webhook may fall behind before it re-reads the store.
const DEAL_REPORTS_CAPACITY: usize = 1024;

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The change contradicts what is stored (e.g. a deal id Roistat was already answered).
    #[error("{0}")]
    Conflict(String),
    /// The change would pass a bound (the number of consumers).
    #[error("{0}")]
    Exhausted(String),
    /// The store cannot be reached or cannot commit right now; retrying may succeed.
    #[error("store unavailable")]
    Unavailable(#[source] DbError),
    /// What is stored cannot be read, or the database refused a statement for
    /// good: retrying will not help, and an operator must look.
    #[error("store failed")]
    Failed(#[source] DbError),
    /// The store is closed (the service is stopping).
    #[error("store is closed")]
    Closed,
}

impl From<DbError> for StoreError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Unavailable(_) => StoreError::Unavailable(error),
            DbError::Invalid(_) => StoreError::Failed(error),
        }
    }
}

/// A lead ready to store: its key, the columns it is exported and searched by, and
/// its body already encoded in the form it is sent (on the request's task, so the
/// writer only writes).
#[derive(Debug, Clone, PartialEq)]
pub struct NewLead {
    pub key: LeadKey,
    pub source: LeadSource,
    pub visit: String,
    pub title: String,
    /// The lead's `created_date`.
    pub create_time: Option<OffsetDateTime>,
    pub search: SearchKeys,
    pub body: Bytes,
    /// The W3C `traceparent` of the request that stores it, when tracing is on.
    pub trace_parent: Option<Arc<str>>,
    /// What the lead is matched to a person by; `None` when matching is off for
    /// its integration.
    pub identity: Option<Identity>,
}

/// A message, task or call ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub integration: String,
    /// The id the event is filed under (a message's `leadId`, a task's
    /// `element_id`, a call's id).
    pub subject_id: String,
    /// What makes a copy the same event (see `EventBody::identity`).
    pub identity: String,
    /// The id it names its lead by: an order id or a Roistat lead id.
    pub named_lead: String,
    pub body: Bytes,
    /// The W3C `traceparent` of the request that stores it, when tracing is on.
    pub trace_parent: Option<Arc<str>>,
}

/// The outcome of storing a lead.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadReceipt {
    /// The lead's event sequence (of the first delivery, for a retry).
    pub sequence: u64,
    /// False when the lead was already stored: a retry, no new event.
    pub created: bool,
    pub deal: Deal,
}

/// The outcome of storing a message, task or call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventReceipt {
    /// The event's sequence (of the first delivery, for a retry).
    pub sequence: u64,
    pub created: bool,
}

/// Which records an export walk reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    Orders,
    Clients,
}

impl ExportKind {
    pub fn name(self) -> &'static str {
        match self {
            ExportKind::Orders => "orders",
            ExportKind::Clients => "clients",
        }
    }
}

/// What a page of an export walk covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportWindow {
    /// The walk: records as of this version, changed at or after `since`.
    pub snapshot: u64,
    pub since: OffsetDateTime,
    pub offset: u64,
    pub limit: u64,
}

/// The event log: every lead, message, task and call in sequence order, and the
/// feed of events as they commit. What streams read.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Committed events with a sequence greater than `after_sequence`, in order, at most `limit`.
    async fn events_after(
        &self,
        after_sequence: u64,
        limit: u32,
    ) -> Result<Vec<EncodedEvent>, StoreError>;

    /// The greatest committed sequence, 0 when there is none.
    async fn latest_sequence(&self) -> Result<u64, StoreError>;

    /// The smallest sequence of an event received at or after `time`.
    async fn first_sequence_at(&self, time: OffsetDateTime) -> Result<Option<u64>, StoreError>;

    /// A feed of events as they commit. A receiver that lags is told so and must
    /// read the missed events with [`EventLog::events_after`].
    fn subscribe(&self) -> broadcast::Receiver<Arc<EncodedEvent>>;

    /// A lead's event.
    async fn get_lead(&self, key: &LeadKey) -> Result<Option<EncodedEvent>, StoreError>;

    /// Leads' events in sequence order, after `after_sequence`, at most `limit`; only
    /// those of `integration` when it is given.
    async fn list_leads(
        &self,
        after_sequence: u64,
        limit: u32,
        integration: Option<&str>,
    ) -> Result<Vec<EncodedEvent>, StoreError>;
}

/// Receiving: leads, messages, tasks and calls written once each, and the order
/// ids Roistat is answered.
#[async_trait]
pub trait LeadWrites: Send + Sync + 'static {
    /// Stores a lead once: a lead already stored under the same key is left as it
    /// was. Then fixes its order id per `mode` if it has none yet.
    async fn insert_lead(
        &self,
        lead: NewLead,
        mode: OrderIdMode,
    ) -> Result<LeadReceipt, StoreError>;

    /// Fixes the order id of a stored lead per `mode` if it has none yet; returns
    /// the deal. [`StoreError::NotFound`] for an unknown lead.
    async fn assign_order_id(&self, key: &LeadKey, mode: OrderIdMode) -> Result<Deal, StoreError>;

    /// Stores a message, task, call or unknown action once: an identical copy
    /// within `dedup_window` of its first stored copy is a retry (zero: every copy
    /// is stored); a copy whose content differs is a new event. A message is filed
    /// under the lead it names: by the answered order id first, then by the
    /// Roistat lead id.
    async fn insert_event(
        &self,
        event: NewEvent,
        dedup_window: Duration,
    ) -> Result<EventReceipt, StoreError>;

    /// A feed of leads whose CRM deal id was just reported (on any replica).
    /// A receiver that lags must re-read the deals it waits for.
    fn subscribe_deal_reports(&self) -> broadcast::Receiver<LeadKey>;
}

/// The CRM's side: deals, the scheme, clients, and Roistat's export walks.
#[async_trait]
pub trait CrmStore: Send + Sync + 'static {
    /// Records what the CRM reports about a deal: its id and details (a new version
    /// of them). [`StoreError::Conflict`] when it would change a deal id Roistat was
    /// already answered; then nothing changes.
    async fn report_deal(&self, key: &LeadKey, report: DealReport) -> Result<Deal, StoreError>;

    async fn get_deal(&self, key: &LeadKey) -> Result<Option<Deal>, StoreError>;

    /// Replaces an integration's scheme.
    async fn put_scheme(
        &self,
        integration: &str,
        scheme: &Scheme,
    ) -> Result<OffsetDateTime, StoreError>;

    /// The scheme and when it was published; `None` before the first one.
    async fn get_scheme(
        &self,
        integration: &str,
    ) -> Result<Option<(Scheme, OffsetDateTime)>, StoreError>;

    /// Creates or replaces a client (a new version of it); returns its update time.
    async fn put_client(
        &self,
        integration: &str,
        client: &Client,
    ) -> Result<OffsetDateTime, StoreError>;

    /// The version an export walk reads: with `restart`, a new walk starts at the
    /// latest version; otherwise the walk under way for the same query continues
    /// (or starts, if there is none).
    async fn export_snapshot(
        &self,
        integration: &str,
        kind: ExportKind,
        since: OffsetDateTime,
        restart: bool,
    ) -> Result<u64, StoreError>;

    /// A page of orders as of a snapshot, by update time then lead id, and how
    /// many the whole walk has.
    async fn export_orders(
        &self,
        integration: &str,
        window: ExportWindow,
    ) -> Result<(u64, Vec<Order>), StoreError>;

    /// A page of clients as of a snapshot, by update time then id, and how many the
    /// whole walk has.
    async fn export_clients(
        &self,
        integration: &str,
        window: ExportWindow,
    ) -> Result<(u64, Vec<ClientRecord>), StoreError>;

    /// A lead's order as Roistat's export lists it now; `None` while its id is not
    /// fixed.
    async fn export_order(&self, key: &LeadKey) -> Result<Option<Order>, StoreError>;
}

/// Named, durable consumers and their positions in the event log.
#[async_trait]
pub trait ConsumerStore: Send + Sync + 'static {
    /// Creates a consumer positioned after `acked_sequence` unless it exists; returns
    /// it. [`StoreError::Exhausted`] when `max` consumers exist already.
    async fn ensure_consumer(
        &self,
        name: &str,
        acked_sequence: u64,
        max: u32,
    ) -> Result<Consumer, StoreError>;

    /// Moves a consumer (created if new, unless `max` exist) to `sequence` unless it
    /// already stands further; the caller checks that `sequence` is stored.
    async fn ack_consumer(
        &self,
        name: &str,
        sequence: u64,
        max: u32,
    ) -> Result<Consumer, StoreError>;

    async fn get_consumer(&self, name: &str) -> Result<Option<Consumer>, StoreError>;

    /// Consumers by name, after `after_name`, at most `limit`.
    async fn list_consumers(
        &self,
        after_name: &str,
        limit: u32,
    ) -> Result<Vec<Consumer>, StoreError>;

    /// False when there was no such consumer.
    async fn delete_consumer(&self, name: &str) -> Result<bool, StoreError>;
}

/// What operators look at: refused requests, searches, a lead's history, the
/// store's size.
#[async_trait]
pub trait Inspection: Send + Sync + 'static {
    /// Stores a request refused after the token check, keeping the newest `keep`
    /// of its integration; returns its id.
    async fn record_rejected(&self, request: RejectedRequest, keep: u32)
    -> Result<u64, StoreError>;

    /// Stored refused requests, newest first, with an id below `before` (all when
    /// `None`), at most `limit`.
    async fn list_rejected(
        &self,
        filter: &RejectedFilter,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<RejectedRequest>, StoreError>;

    /// Leads a search finds, a page of them (see [`LeadSearch`]).
    async fn search_leads(&self, search: &LeadSearch) -> Result<Vec<FoundLead>, StoreError>;

    /// The messages, tasks and calls filed under a lead, newest first, at most `limit`.
    async fn events_about(
        &self,
        key: &LeadKey,
        limit: u32,
    ) -> Result<Vec<EncodedEvent>, StoreError>;

    /// Leads per minute (Unix minutes) and source received since `since`, in
    /// `integration` (every one when `None`).
    async fn lead_minutes(
        &self,
        since: OffsetDateTime,
        integration: Option<&str>,
    ) -> Result<Vec<(i64, Option<LeadSource>, u64)>, StoreError>;

    /// The bytes the store takes on disk.
    async fn store_bytes(&self) -> Result<u64, StoreError>;
}

/// Persons: leads of one integration that share a valid phone or an e-mail.
#[async_trait]
pub trait PersonStore: Send + Sync + 'static {
    /// A person by its id or an id merged into it, with its oldest `max_leads` leads.
    async fn get_person(
        &self,
        person_id: u64,
        max_leads: u32,
    ) -> Result<Option<Person>, StoreError>;

    /// The person of a phone (E.164) or e-mail in an integration (the one with the
    /// latest lead, if a split left two).
    async fn find_person(
        &self,
        integration: &str,
        key: &PersonKey,
    ) -> Result<Option<u64>, StoreError>;

    /// An integration's persons by last seen, newest first, after `after`, at most
    /// `limit`; without their leads.
    async fn list_persons(
        &self,
        integration: &str,
        after: Option<PersonCursor>,
        limit: u32,
    ) -> Result<Vec<Person>, StoreError>;

    /// Moves the person's leads that carry `key` to a new person; returns its id
    /// and the sequence of the split's event. [`StoreError::NotFound`] for an
    /// unknown person, [`StoreError::Conflict`] when no lead (or every lead) of
    /// it carries the key.
    async fn split_person(&self, person_id: u64, key: PersonKey) -> Result<(u64, u64), StoreError>;

    /// Leads without a person (stored before persons), after `after_sequence`,
    /// in sequence order, at most `limit`.
    async fn unmatched_leads(
        &self,
        after_sequence: u64,
        limit: u32,
    ) -> Result<Vec<EncodedEvent>, StoreError>;

    /// Matches leads stored before persons (see [`Backfilled`]); returns how many
    /// were still unmatched and now are.
    async fn match_stored(&self, leads: Vec<Backfilled>) -> Result<u64, StoreError>;
}

/// The store as a whole: whether it can write, and its end.
#[async_trait]
pub trait Lifecycle: Send + Sync + 'static {
    /// Succeeds when the store can commit a write: an empty one goes through the
    /// writer, as a lead would.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Finishes pending writes and closes connections.
    async fn close(&self);
}

/// Storage of the relay, every role at once. Writes return only after they are
/// durably committed; every new event is then published on the event feed in
/// sequence order.
pub trait LeadStore:
    EventLog + LeadWrites + CrmStore + ConsumerStore + Inspection + PersonStore + Lifecycle
{
}

impl<S> LeadStore for S where
    S: EventLog + LeadWrites + CrmStore + ConsumerStore + Inspection + PersonStore + Lifecycle
{
}

/// The backend a database URL names, as metrics label it.
pub fn backend_name(url: &str) -> &'static str {
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        "postgresql"
    } else {
        "sqlite"
    }
}

/// Opens the store a database URL names, applying its migrations.
pub async fn open(url: &str, feed_capacity: usize) -> Result<Arc<dyn LeadStore>, OpenError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::open(url, feed_capacity).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        #[cfg(feature = "postgres")]
        return Ok(Arc::new(postgres::open(url, feed_capacity).await?));
        #[cfg(not(feature = "postgres"))]
        return Err(OpenError::NotBuilt("PostgreSQL", "postgres"));
    } else {
        // Only the scheme is shown: the rest of a URL may hold a password.
        let scheme = url.split(':').next().unwrap_or_default().to_owned();
        Err(OpenError::UnsupportedScheme(scheme))
    }
}

/// Why a store cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("this build has no {0} store: it was built without the `{1}` feature")]
    NotBuilt(&'static str, &'static str),
    #[error(
        "another process has this SQLite database open: {} is locked (one service per \
         database file; run replicas on PostgreSQL)",
        .0.display()
    )]
    Locked(std::path::PathBuf),
    #[error("unsupported database URL scheme {0:?}: expected sqlite://PATH or postgres://...")]
    UnsupportedScheme(String),
    #[error("invalid database URL")]
    InvalidUrl(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot connect to the database")]
    Connect(#[source] DbError),
    #[error("cannot apply the migrations")]
    Migrate(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot convert the stored events to their protobuf form")]
    Convert(#[source] DbError),
}
