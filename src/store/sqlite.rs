//! The embedded SQLite store.
//!
//! One writer task owns the only write connection and commits concurrent writes
//! together (group commit): it takes every command waiting in its queue, applies them
//! in one transaction, commits with a full fsync (WAL, `synchronous=FULL`), then
//! answers each command and publishes the new events in sequence order. Reads use
//! a separate pool, which WAL lets run beside the writer.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use time::OffsetDateTime;
use tokio::sync::{Mutex, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{LeadReceipt, LeadStore, MessageReceipt, OrderIdAssignment, StoreError};
use crate::domain::{Deal, DealMessage, Event, EventBody, Lead, LeadKey, Stored};

/// Most commands committed in one transaction.
const MAX_BATCH: usize = 256;
const READ_CONNECTIONS: u32 = 4;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite implementation of [`LeadStore`].
pub struct SqliteStore {
    commands: mpsc::Sender<Command>,
    readers: SqlitePool,
    feed: broadcast::Sender<Arc<Event>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` and applies the migrations.
    pub async fn open(url: &str, feed_capacity: usize) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let mut write_connection = SqliteConnection::connect_with(&options).await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut write_connection)
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options)
            .await?;
        let (feed, _) = broadcast::channel(feed_capacity.max(1));
        let (commands, queue) = mpsc::channel(MAX_BATCH * 4);
        let writer = tokio::spawn(run_writer(write_connection, queue, feed.clone()));
        Ok(Self {
            commands,
            readers,
            feed,
            writer: Mutex::new(Some(writer)),
        })
    }

    async fn submit<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| StoreError::Unavailable("store is closed".to_owned()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("store writer stopped".to_owned()))?
    }
}

#[async_trait]
impl LeadStore for SqliteStore {
    async fn insert_lead(
        &self,
        lead: Lead,
        assignment: OrderIdAssignment,
    ) -> Result<LeadReceipt, StoreError> {
        self.submit(|reply| Command::InsertLead {
            lead: Box::new(lead),
            assignment,
            reply,
        })
        .await
    }

    async fn assign_order_id(
        &self,
        key: &LeadKey,
        assignment: OrderIdAssignment,
    ) -> Result<Deal, StoreError> {
        let key = key.clone();
        self.submit(|reply| Command::AssignOrderId {
            key,
            assignment,
            reply,
        })
        .await
    }

    async fn insert_message(&self, message: DealMessage) -> Result<MessageReceipt, StoreError> {
        self.submit(|reply| Command::InsertMessage { message, reply })
            .await
    }

    async fn report_deal(&self, key: &LeadKey, deal_id: &str) -> Result<Deal, StoreError> {
        let (key, deal_id) = (key.clone(), deal_id.to_owned());
        self.submit(|reply| Command::ReportDeal {
            key,
            deal_id,
            reply,
        })
        .await
    }

    async fn get_lead(&self, key: &LeadKey) -> Result<Option<Stored<Lead>>, StoreError> {
        let row = sqlx::query(
            "SELECT e.sequence, e.receive_time, e.payload FROM leads l \
             JOIN events e ON e.sequence = l.sequence \
             WHERE l.integration = ?1 AND l.lead_id = ?2",
        )
        .bind(&key.integration)
        .bind(&key.lead_id)
        .fetch_optional(&self.readers)
        .await?;
        row.map(|row| lead_from_event(event_from_row(&row)?))
            .transpose()
    }

    async fn list_leads(
        &self,
        after_sequence: u64,
        limit: u32,
    ) -> Result<Vec<Stored<Lead>>, StoreError> {
        sqlx::query(
            "SELECT sequence, receive_time, payload FROM events \
             WHERE kind = 'lead' AND sequence > ?1 ORDER BY sequence LIMIT ?2",
        )
        .bind(to_db_sequence(after_sequence))
        .bind(limit)
        .fetch_all(&self.readers)
        .await?
        .iter()
        .map(|row| lead_from_event(event_from_row(row)?))
        .collect()
    }

    async fn get_deal(&self, key: &LeadKey) -> Result<Option<Deal>, StoreError> {
        let row = sqlx::query(
            "SELECT deal_id, order_id, deal_update_time FROM leads \
             WHERE integration = ?1 AND lead_id = ?2",
        )
        .bind(&key.integration)
        .bind(&key.lead_id)
        .fetch_optional(&self.readers)
        .await?;
        row.map(|row| deal_from_row(key, &row)).transpose()
    }

    async fn events_after(
        &self,
        after_sequence: u64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        sqlx::query(
            "SELECT sequence, receive_time, payload FROM events \
             WHERE sequence > ?1 ORDER BY sequence LIMIT ?2",
        )
        .bind(to_db_sequence(after_sequence))
        .bind(limit)
        .fetch_all(&self.readers)
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn latest_sequence(&self) -> Result<u64, StoreError> {
        let latest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(sequence), 0) FROM events")
            .fetch_one(&self.readers)
            .await?;
        Ok(latest as u64)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.feed.subscribe()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        self.submit(|reply| Command::Ping { reply }).await
    }

    async fn close(&self) {
        if let Some(writer) = self.writer.lock().await.take() {
            // The writer finishes the commands queued before this one, then stops.
            let _ = self.commands.send(Command::Stop).await;
            let _ = writer.await;
        }
        self.readers.close().await;
    }
}

/// A write, queued for the writer task.
enum Command {
    InsertLead {
        lead: Box<Lead>,
        assignment: OrderIdAssignment,
        reply: oneshot::Sender<Result<LeadReceipt, StoreError>>,
    },
    AssignOrderId {
        key: LeadKey,
        assignment: OrderIdAssignment,
        reply: oneshot::Sender<Result<Deal, StoreError>>,
    },
    InsertMessage {
        message: DealMessage,
        reply: oneshot::Sender<Result<MessageReceipt, StoreError>>,
    },
    ReportDeal {
        key: LeadKey,
        deal_id: String,
        reply: oneshot::Sender<Result<Deal, StoreError>>,
    },
    Ping {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Stop,
}

/// What applying one command produced, held until the transaction commits.
enum Outcome {
    Lead(Result<LeadReceipt, StoreError>),
    Deal(Result<Deal, StoreError>),
    Message(Result<MessageReceipt, StoreError>),
    Nothing,
}

async fn run_writer(
    mut connection: SqliteConnection,
    mut queue: mpsc::Receiver<Command>,
    feed: broadcast::Sender<Arc<Event>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let stop = batch
            .iter()
            .position(|command| matches!(command, Command::Stop));
        if let Some(stop) = stop {
            batch.truncate(stop);
        }
        commit_batch(&mut connection, std::mem::take(&mut batch), &feed).await;
        if stop.is_some() {
            break;
        }
    }
    let _ = connection.close().await;
}

/// Commits a batch in one transaction. When the transaction fails, each command is
/// retried in a transaction of its own, so one bad write cannot fail its neighbours.
async fn commit_batch(
    connection: &mut SqliteConnection,
    batch: Vec<Command>,
    feed: &broadcast::Sender<Arc<Event>>,
) {
    if batch.is_empty() {
        return;
    }
    let mut events = Vec::new();
    match apply_in_transaction(connection, &batch, &mut events).await {
        Ok(outcomes) => {
            publish(feed, events);
            reply_all(batch, outcomes);
        }
        Err(error) if batch.len() == 1 => {
            tracing::warn!(%error, "store write failed");
            let outcome = failed(&batch[0], StoreError::from(error));
            reply_all(batch, vec![outcome]);
        }
        Err(error) => {
            tracing::warn!(%error, size = batch.len(), "batch commit failed; retrying its writes one by one");
            for command in batch {
                let single = [command];
                let mut events = Vec::new();
                let outcomes = match apply_in_transaction(connection, &single, &mut events).await {
                    Ok(outcomes) => {
                        publish(feed, events);
                        outcomes
                    }
                    Err(error) => vec![failed(&single[0], StoreError::from(error))],
                };
                reply_all(Vec::from(single), outcomes);
            }
        }
    }
}

fn publish(feed: &broadcast::Sender<Arc<Event>>, events: Vec<Event>) {
    for event in events {
        // No receivers is fine: subscribers read missed events from the store.
        let _ = feed.send(Arc::new(event));
    }
}

/// The outcome that tells a command's caller its write failed.
fn failed(command: &Command, error: StoreError) -> Outcome {
    match command {
        Command::InsertLead { .. } => Outcome::Lead(Err(error)),
        Command::AssignOrderId { .. } | Command::ReportDeal { .. } => Outcome::Deal(Err(error)),
        Command::InsertMessage { .. } => Outcome::Message(Err(error)),
        Command::Ping { .. } | Command::Stop => Outcome::Nothing,
    }
}

/// Answers each command with its outcome; a command without one is told the write failed.
fn reply_all(batch: Vec<Command>, outcomes: Vec<Outcome>) {
    let mut outcomes = outcomes.into_iter();
    for command in batch {
        let outcome = outcomes.next();
        let error = || StoreError::Unavailable("write failed".to_owned());
        match (command, outcome) {
            (Command::InsertLead { reply, .. }, Some(Outcome::Lead(result))) => {
                let _ = reply.send(result);
            }
            (Command::InsertLead { reply, .. }, _) => {
                let _ = reply.send(Err(error()));
            }
            (
                Command::AssignOrderId { reply, .. } | Command::ReportDeal { reply, .. },
                Some(Outcome::Deal(result)),
            ) => {
                let _ = reply.send(result);
            }
            (Command::AssignOrderId { reply, .. } | Command::ReportDeal { reply, .. }, _) => {
                let _ = reply.send(Err(error()));
            }
            (Command::InsertMessage { reply, .. }, Some(Outcome::Message(result))) => {
                let _ = reply.send(result);
            }
            (Command::InsertMessage { reply, .. }, _) => {
                let _ = reply.send(Err(error()));
            }
            (Command::Ping { reply }, Some(Outcome::Nothing)) => {
                let _ = reply.send(Ok(()));
            }
            (Command::Ping { reply }, _) => {
                let _ = reply.send(Err(error()));
            }
            (Command::Stop, _) => {}
        }
    }
}

async fn apply_in_transaction(
    connection: &mut SqliteConnection,
    batch: &[Command],
    events: &mut Vec<Event>,
) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut tx = connection.begin().await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for command in batch {
        outcomes.push(apply(&mut tx, command, events).await?);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Applies one command inside the batch's transaction. A logical refusal (unknown
/// lead, conflicting deal id) is an outcome; a database error aborts the batch.
async fn apply(
    tx: &mut SqliteConnection,
    command: &Command,
    events: &mut Vec<Event>,
) -> Result<Outcome, sqlx::Error> {
    Ok(match command {
        Command::InsertLead {
            lead, assignment, ..
        } => Outcome::Lead(insert_lead(tx, lead, *assignment, events).await?),
        Command::AssignOrderId {
            key, assignment, ..
        } => Outcome::Deal(match load_deal(tx, key).await? {
            Some((_, deal)) => Ok(assign(tx, deal, *assignment).await?),
            None => Err(StoreError::NotFound),
        }),
        Command::InsertMessage { message, .. } => {
            Outcome::Message(insert_message(tx, message, events).await?)
        }
        Command::ReportDeal { key, deal_id, .. } => {
            Outcome::Deal(report_deal(tx, key, deal_id).await?)
        }
        Command::Ping { .. } | Command::Stop => Outcome::Nothing,
    })
}

async fn insert_lead(
    tx: &mut SqliteConnection,
    lead: &Lead,
    assignment: OrderIdAssignment,
    events: &mut Vec<Event>,
) -> Result<Result<LeadReceipt, StoreError>, sqlx::Error> {
    let key = lead.key();
    if let Some((sequence, deal)) = load_deal(tx, &key).await? {
        let deal = assign(tx, deal, assignment).await?;
        return Ok(Ok(LeadReceipt {
            sequence,
            created: false,
            deal,
        }));
    }
    let now = OffsetDateTime::now_utc();
    let body = EventBody::Lead(lead.clone());
    let Some(event) = append_event(tx, "lead", &key, body, now).await? else {
        return Ok(Err(StoreError::Unavailable(
            "event payload is not serializable".to_owned(),
        )));
    };
    let order_id = match assignment {
        OrderIdAssignment::DealOrLeadId => Some(key.lead_id.clone()),
        OrderIdAssignment::DealIdOnly => None,
    };
    sqlx::query(
        "INSERT INTO leads (integration, lead_id, sequence, order_id, deal_update_time) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(&key.integration)
    .bind(&key.lead_id)
    .bind(to_db_sequence(event.sequence))
    .bind(&order_id)
    .bind(to_micros(now))
    .execute(&mut *tx)
    .await?;
    let receipt = LeadReceipt {
        sequence: event.sequence,
        created: true,
        deal: Deal {
            key,
            deal_id: None,
            answered_order_id: order_id,
            update_time: now,
        },
    };
    events.push(event);
    Ok(Ok(receipt))
}

async fn insert_message(
    tx: &mut SqliteConnection,
    message: &DealMessage,
    events: &mut Vec<Event>,
) -> Result<Result<MessageReceipt, StoreError>, sqlx::Error> {
    let identity = message.identity();
    let existing: Option<i64> = sqlx::query_scalar(
        "SELECT sequence FROM messages WHERE integration = ?1 AND identity = ?2",
    )
    .bind(&message.integration)
    .bind(&identity)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(sequence) = existing {
        return Ok(Ok(MessageReceipt {
            sequence: sequence as u64,
            created: false,
        }));
    }
    let key = LeadKey::new(&message.integration, message.lead_id.clone());
    let body = EventBody::Message(message.clone());
    let now = OffsetDateTime::now_utc();
    let Some(event) = append_event(tx, "message", &key, body, now).await? else {
        return Ok(Err(StoreError::Unavailable(
            "event payload is not serializable".to_owned(),
        )));
    };
    sqlx::query("INSERT INTO messages (integration, identity, sequence) VALUES (?1, ?2, ?3)")
        .bind(&key.integration)
        .bind(&identity)
        .bind(to_db_sequence(event.sequence))
        .execute(&mut *tx)
        .await?;
    let receipt = MessageReceipt {
        sequence: event.sequence,
        created: true,
    };
    events.push(event);
    Ok(Ok(receipt))
}

/// Appends an event to the log; `None` if its body cannot be encoded.
async fn append_event(
    tx: &mut SqliteConnection,
    kind: &str,
    key: &LeadKey,
    body: EventBody,
    receive_time: OffsetDateTime,
) -> Result<Option<Event>, sqlx::Error> {
    let Ok(payload) = serde_json::to_string(&body) else {
        return Ok(None);
    };
    let sequence: i64 = sqlx::query_scalar(
        "INSERT INTO events (kind, integration, lead_id, receive_time, payload) \
         VALUES (?1, ?2, ?3, ?4, ?5) RETURNING sequence",
    )
    .bind(kind)
    .bind(&key.integration)
    .bind(&key.lead_id)
    .bind(to_micros(receive_time))
    .bind(payload)
    .fetch_one(&mut *tx)
    .await?;
    Ok(Some(Stored {
        sequence: sequence as u64,
        // What a reader of the store will see: microsecond precision.
        receive_time: from_micros(to_micros(receive_time)),
        record: body,
    }))
}

async fn report_deal(
    tx: &mut SqliteConnection,
    key: &LeadKey,
    deal_id: &str,
) -> Result<Result<Deal, StoreError>, sqlx::Error> {
    let Some((_, mut deal)) = load_deal(tx, key).await? else {
        return Ok(Err(StoreError::NotFound));
    };
    if deal.deal_id.as_deref() == Some(deal_id) {
        return Ok(Ok(deal));
    }
    if deal.answered_order_id.is_some() && deal.answered_order_id == deal.deal_id {
        return Ok(Err(StoreError::Conflict(format!(
            "deal id {:?} was already answered to Roistat as order_id and cannot change",
            deal.deal_id.unwrap_or_default()
        ))));
    }
    let now = OffsetDateTime::now_utc();
    sqlx::query(
        "UPDATE leads SET deal_id = ?3, deal_update_time = ?4 \
         WHERE integration = ?1 AND lead_id = ?2",
    )
    .bind(&key.integration)
    .bind(&key.lead_id)
    .bind(deal_id)
    .bind(to_micros(now))
    .execute(&mut *tx)
    .await?;
    deal.deal_id = Some(deal_id.to_owned());
    deal.update_time = from_micros(to_micros(now));
    Ok(Ok(deal))
}

/// Fixes the order id of a deal that has none yet, as `assignment` says.
async fn assign(
    tx: &mut SqliteConnection,
    mut deal: Deal,
    assignment: OrderIdAssignment,
) -> Result<Deal, sqlx::Error> {
    if deal.answered_order_id.is_some() {
        return Ok(deal);
    }
    let order_id = match assignment {
        OrderIdAssignment::DealOrLeadId => deal.deal_id.clone().or(Some(deal.key.lead_id.clone())),
        OrderIdAssignment::DealIdOnly => deal.deal_id.clone(),
    };
    if order_id.is_some() {
        sqlx::query("UPDATE leads SET order_id = ?3 WHERE integration = ?1 AND lead_id = ?2")
            .bind(&deal.key.integration)
            .bind(&deal.key.lead_id)
            .bind(&order_id)
            .execute(&mut *tx)
            .await?;
        deal.answered_order_id = order_id;
    }
    Ok(deal)
}

/// The lead's event sequence and deal, if the lead is stored.
async fn load_deal(
    tx: &mut SqliteConnection,
    key: &LeadKey,
) -> Result<Option<(u64, Deal)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT sequence, deal_id, order_id, deal_update_time FROM leads \
         WHERE integration = ?1 AND lead_id = ?2",
    )
    .bind(&key.integration)
    .bind(&key.lead_id)
    .fetch_optional(&mut *tx)
    .await?;
    row.map(|row| {
        let sequence: i64 = row.try_get("sequence")?;
        let deal = deal_from_row(key, &row).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok((sequence as u64, deal))
    })
    .transpose()
}

fn deal_from_row(key: &LeadKey, row: &sqlx::sqlite::SqliteRow) -> Result<Deal, StoreError> {
    Ok(Deal {
        key: key.clone(),
        deal_id: row.try_get("deal_id")?,
        answered_order_id: row.try_get("order_id")?,
        update_time: from_micros(row.try_get("deal_update_time")?),
    })
}

fn event_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Event, StoreError> {
    let sequence: i64 = row.try_get("sequence")?;
    let payload: &str = row.try_get("payload")?;
    let record = serde_json::from_str(payload).map_err(|error| {
        StoreError::Unavailable(format!("event {sequence} is unreadable: {error}"))
    })?;
    Ok(Stored {
        sequence: sequence as u64,
        receive_time: from_micros(row.try_get("receive_time")?),
        record,
    })
}

fn lead_from_event(event: Event) -> Result<Stored<Lead>, StoreError> {
    match event.record {
        EventBody::Lead(lead) => Ok(Stored {
            sequence: event.sequence,
            receive_time: event.receive_time,
            record: lead,
        }),
        EventBody::Message(_) => Err(StoreError::Unavailable(format!(
            "event {} is not a lead",
            event.sequence
        ))),
    }
}

/// SQLite integers are signed; sequences beyond i64 never occur, and a cursor
/// beyond it means "after everything".
fn to_db_sequence(sequence: u64) -> i64 {
    i64::try_from(sequence).unwrap_or(i64::MAX)
}

fn to_micros(time: OffsetDateTime) -> i64 {
    (time.unix_timestamp_nanos() / 1_000) as i64
}

fn from_micros(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
