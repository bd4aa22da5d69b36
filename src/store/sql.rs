//! The SQL both stores share. SQLite and PostgreSQL run the same statements (`$N`
//! placeholders, `RETURNING`); `sql_store!` instantiates them for one database type,
//! with the backend's hooks for what differs: how a write transaction starts and
//! what it does just before it commits.
//!
//! Sequences come from a one-row counter table, incremented inside the writing
//! transaction. On PostgreSQL the row lock this takes is held until commit, so
//! sequences are allocated in commit order and never have gaps: a reader that saw
//! sequence N will never later find a committed event below N.

use std::sync::Arc;

use sqlx::Database;
use time::OffsetDateTime;
use tokio::sync::{Mutex, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::StoreError;
use super::writer::Command;
use crate::domain::{Event, EventBody, Lead, LeadKey, Stored};

/// What every SQL store holds.
pub(super) struct Shared<DB: Database> {
    pub commands: mpsc::Sender<Command>,
    /// Reads go to the pool; writes go through `commands` to the writer task.
    pub pool: sqlx::Pool<DB>,
    /// For the few writes outside the writer task (consumer positions). On SQLite
    /// it is the writer's own single connection, so writes never contend.
    pub write_pool: sqlx::Pool<DB>,
    pub feed: broadcast::Sender<Arc<Event>>,
    pub deal_reports: broadcast::Sender<LeadKey>,
    /// The writer first, then any other background task.
    pub tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Stops the background tasks other than the writer.
    pub stop: CancellationToken,
}

impl<DB: Database> Shared<DB> {
    /// Queues a write and waits for its outcome.
    pub async fn submit<T>(
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

    /// Lets queued writes finish, stops the background tasks, closes the pool.
    pub async fn close(&self) {
        let mut tasks = self.tasks.lock().await;
        if tasks.is_empty() {
            return;
        }
        let _ = self.commands.send(Command::Stop).await;
        self.stop.cancel();
        for task in tasks.drain(..) {
            let _ = task.await;
        }
        self.pool.close().await;
        self.write_pool.close().await;
    }
}

/// A stored lead's event, or an error if the event is not a lead.
pub(super) fn lead_from_event(event: Event) -> Result<Stored<Lead>, StoreError> {
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
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Instantiates the shared statements for `$db`, and `LeadStore` for `$store`
/// (a struct with a `shared: Shared<$db>` field). `$begin_writes` runs first in
/// every write transaction; `$before_commit` runs last, before the commit.
macro_rules! sql_store {
    ($store:ty, $db:ty, $begin_writes:path, $before_commit:path) => {
        type Connection = <$db as sqlx::Database>::Connection;
        type Row = <$db as sqlx::Database>::Row;

        #[async_trait::async_trait]
        impl $crate::store::LeadStore for $store {
            async fn insert_lead(
                &self,
                lead: $crate::domain::Lead,
                assignment: $crate::store::OrderIdAssignment,
            ) -> Result<$crate::store::LeadReceipt, $crate::store::StoreError> {
                self.shared
                    .submit(|reply| $crate::store::writer::Command::InsertLead {
                        lead: Box::new(lead),
                        assignment,
                        reply,
                    })
                    .await
            }

            async fn assign_order_id(
                &self,
                key: &$crate::domain::LeadKey,
                assignment: $crate::store::OrderIdAssignment,
            ) -> Result<$crate::domain::Deal, $crate::store::StoreError> {
                let key = key.clone();
                self.shared
                    .submit(|reply| $crate::store::writer::Command::AssignOrderId {
                        key,
                        assignment,
                        reply,
                    })
                    .await
            }

            async fn insert_message(
                &self,
                message: $crate::domain::DealMessage,
            ) -> Result<$crate::store::MessageReceipt, $crate::store::StoreError> {
                self.shared
                    .submit(|reply| $crate::store::writer::Command::InsertMessage { message, reply })
                    .await
            }

            async fn report_deal(
                &self,
                key: &$crate::domain::LeadKey,
                deal_id: &str,
            ) -> Result<$crate::domain::Deal, $crate::store::StoreError> {
                let (key, deal_id) = (key.clone(), deal_id.to_owned());
                self.shared
                    .submit(|reply| $crate::store::writer::Command::ReportDeal {
                        key,
                        deal_id,
                        reply,
                    })
                    .await
            }

            async fn get_lead(
                &self,
                key: &$crate::domain::LeadKey,
            ) -> Result<
                Option<$crate::domain::Stored<$crate::domain::Lead>>,
                $crate::store::StoreError,
            > {
                let row = sqlx::query(
                    "SELECT e.sequence, e.receive_time, e.payload FROM leads l \
                     JOIN events e ON e.sequence = l.sequence \
                     WHERE l.integration = $1 AND l.lead_id = $2",
                )
                .bind(&key.integration)
                .bind(&key.lead_id)
                .fetch_optional(&self.shared.pool)
                .await?;
                row.map(|row| $crate::store::sql::lead_from_event(event_from_row(&row)?))
                    .transpose()
            }

            async fn list_leads(
                &self,
                after_sequence: u64,
                limit: u32,
            ) -> Result<
                Vec<$crate::domain::Stored<$crate::domain::Lead>>,
                $crate::store::StoreError,
            > {
                sqlx::query(
                    "SELECT sequence, receive_time, payload FROM events \
                     WHERE kind = 'lead' AND sequence > $1 ORDER BY sequence LIMIT $2",
                )
                .bind($crate::store::sql::to_db_sequence(after_sequence))
                .bind(i64::from(limit))
                .fetch_all(&self.shared.pool)
                .await?
                .iter()
                .map(|row| $crate::store::sql::lead_from_event(event_from_row(row)?))
                .collect()
            }

            async fn get_deal(
                &self,
                key: &$crate::domain::LeadKey,
            ) -> Result<Option<$crate::domain::Deal>, $crate::store::StoreError> {
                let row = sqlx::query(
                    "SELECT deal_id, order_id, deal_update_time FROM leads \
                     WHERE integration = $1 AND lead_id = $2",
                )
                .bind(&key.integration)
                .bind(&key.lead_id)
                .fetch_optional(&self.shared.pool)
                .await?;
                Ok(row.map(|row| deal_from_row(key, &row)).transpose()?)
            }

            async fn events_after(
                &self,
                after_sequence: u64,
                limit: u32,
            ) -> Result<Vec<$crate::domain::Event>, $crate::store::StoreError> {
                events_after(&self.shared.pool, after_sequence, limit).await
            }

            async fn latest_sequence(&self) -> Result<u64, $crate::store::StoreError> {
                latest_sequence(&self.shared.pool).await
            }

            fn subscribe(
                &self,
            ) -> tokio::sync::broadcast::Receiver<std::sync::Arc<$crate::domain::Event>> {
                self.shared.feed.subscribe()
            }

            fn subscribe_deal_reports(
                &self,
            ) -> tokio::sync::broadcast::Receiver<$crate::domain::LeadKey> {
                self.shared.deal_reports.subscribe()
            }

            async fn first_sequence_at(
                &self,
                time: time::OffsetDateTime,
            ) -> Result<Option<u64>, $crate::store::StoreError> {
                let first: Option<i64> =
                    sqlx::query_scalar("SELECT MIN(sequence) FROM events WHERE receive_time >= $1")
                        .bind($crate::store::sql::to_micros(time))
                        .fetch_one(&self.shared.pool)
                        .await?;
                Ok(first.map(|sequence| sequence as u64))
            }

            async fn ensure_consumer(
                &self,
                name: &str,
                acked_sequence: u64,
            ) -> Result<$crate::domain::Consumer, $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO consumers (name, acked_sequence, ack_time, create_time) \
                     VALUES ($1, $2, NULL, $3) ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind($crate::store::sql::to_db_sequence(acked_sequence))
                .bind($crate::store::sql::to_micros(time::OffsetDateTime::now_utc()))
                .execute(&self.shared.write_pool)
                .await?;
                self.get_consumer(name).await?.ok_or_else(|| {
                    $crate::store::StoreError::Unavailable("consumer vanished".to_owned())
                })
            }

            async fn ack_consumer(
                &self,
                name: &str,
                sequence: u64,
            ) -> Result<$crate::domain::Consumer, $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO consumers (name, acked_sequence, ack_time, create_time) \
                     VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO UPDATE SET \
                       acked_sequence = CASE WHEN excluded.acked_sequence > consumers.acked_sequence \
                         THEN excluded.acked_sequence ELSE consumers.acked_sequence END, \
                       ack_time = excluded.ack_time",
                )
                .bind(name)
                .bind($crate::store::sql::to_db_sequence(sequence))
                .bind($crate::store::sql::to_micros(time::OffsetDateTime::now_utc()))
                .execute(&self.shared.write_pool)
                .await?;
                self.get_consumer(name).await?.ok_or_else(|| {
                    $crate::store::StoreError::Unavailable("consumer vanished".to_owned())
                })
            }

            async fn get_consumer(
                &self,
                name: &str,
            ) -> Result<Option<$crate::domain::Consumer>, $crate::store::StoreError> {
                let row = sqlx::query("SELECT name, acked_sequence, ack_time, create_time, \
                     (SELECT last_sequence FROM event_counter) - acked_sequence AS pending \
                     FROM consumers WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.shared.pool)
                    .await?;
                row.as_ref().map(consumer_from_row).transpose()
            }

            async fn list_consumers(
                &self,
                after_name: &str,
                limit: u32,
            ) -> Result<Vec<$crate::domain::Consumer>, $crate::store::StoreError> {
                sqlx::query("SELECT name, acked_sequence, ack_time, create_time, \
                     (SELECT last_sequence FROM event_counter) - acked_sequence AS pending \
                     FROM consumers WHERE name > $1 ORDER BY name LIMIT $2")
                    .bind(after_name)
                    .bind(i64::from(limit))
                    .fetch_all(&self.shared.pool)
                    .await?
                    .iter()
                    .map(consumer_from_row)
                    .collect()
            }

            async fn delete_consumer(&self, name: &str) -> Result<bool, $crate::store::StoreError> {
                let deleted = sqlx::query("DELETE FROM consumers WHERE name = $1")
                    .bind(name)
                    .execute(&self.shared.write_pool)
                    .await?;
                Ok(deleted.rows_affected() > 0)
            }

            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.shared.pool).await?;
                self.shared
                    .submit(|reply| $crate::store::writer::Command::Ping { reply })
                    .await
            }

            async fn close(&self) {
                self.shared.close().await;
            }
        }

        /// A consumer row, with `pending`: the events stored after its position.
        fn consumer_from_row(row: &Row) -> Result<$crate::domain::Consumer, $crate::store::StoreError> {
            use sqlx::Row as _;
            let acked: i64 = row.try_get("acked_sequence")?;
            let pending: i64 = row.try_get("pending")?;
            let ack_time: Option<i64> = row.try_get("ack_time")?;
            Ok($crate::domain::Consumer {
                name: row.try_get("name")?,
                acked_sequence: acked as u64,
                pending: pending.max(0) as u64,
                ack_time: ack_time.map($crate::store::sql::from_micros),
                create_time: $crate::store::sql::from_micros(row.try_get("create_time")?),
            })
        }

        /// Committed events after `after_sequence`, in order, at most `limit`.
        async fn events_after(
            pool: &sqlx::Pool<$db>,
            after_sequence: u64,
            limit: u32,
        ) -> Result<Vec<$crate::domain::Event>, $crate::store::StoreError> {
            sqlx::query(
                "SELECT sequence, receive_time, payload FROM events \
                 WHERE sequence > $1 ORDER BY sequence LIMIT $2",
            )
            .bind($crate::store::sql::to_db_sequence(after_sequence))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(event_from_row)
            .collect()
        }

        async fn latest_sequence(pool: &sqlx::Pool<$db>) -> Result<u64, $crate::store::StoreError> {
            let latest: i64 = sqlx::query_scalar("SELECT last_sequence FROM event_counter")
                .fetch_one(pool)
                .await?;
            Ok(latest as u64)
        }

        /// Applies a batch of writes in one transaction and commits it.
        async fn apply_batch(
            pool: &sqlx::Pool<$db>,
            batch: &[$crate::store::writer::Command],
        ) -> Result<
            (
                Vec<$crate::store::writer::Outcome>,
                $crate::store::writer::Committed,
            ),
            sqlx::Error,
        > {
            let mut tx = pool.begin().await?;
            $begin_writes(&mut tx, batch).await?;
            let mut committed = $crate::store::writer::Committed::default();
            let mut outcomes = Vec::with_capacity(batch.len());
            for command in batch {
                outcomes.push(apply(&mut tx, command, &mut committed).await?);
            }
            $before_commit(&mut tx, &committed).await?;
            tx.commit().await?;
            Ok((outcomes, committed))
        }

        /// Applies one command inside the batch's transaction.
        async fn apply(
            tx: &mut Connection,
            command: &$crate::store::writer::Command,
            committed: &mut $crate::store::writer::Committed,
        ) -> Result<$crate::store::writer::Outcome, sqlx::Error> {
            use $crate::store::writer::{Command, Outcome};
            use $crate::store::StoreError;
            Ok(match command {
                Command::InsertLead {
                    lead, assignment, ..
                } => Outcome::Lead(insert_lead(tx, lead, *assignment, committed).await?),
                Command::AssignOrderId {
                    key, assignment, ..
                } => Outcome::Deal(match load_deal(tx, key).await? {
                    Some((_, deal)) => Ok(assign(tx, deal, *assignment).await?),
                    None => Err(StoreError::NotFound),
                }),
                Command::InsertMessage { message, .. } => {
                    Outcome::Message(insert_message(tx, message, committed).await?)
                }
                Command::ReportDeal { key, deal_id, .. } => {
                    Outcome::Deal(report_deal(tx, key, deal_id, committed).await?)
                }
                Command::Ping { .. } | Command::Stop => Outcome::Nothing,
            })
        }

        async fn insert_lead(
            tx: &mut Connection,
            lead: &$crate::domain::Lead,
            assignment: $crate::store::OrderIdAssignment,
            committed: &mut $crate::store::writer::Committed,
        ) -> Result<Result<$crate::store::LeadReceipt, $crate::store::StoreError>, sqlx::Error> {
            use $crate::store::OrderIdAssignment;
            let key = lead.key();
            if let Some((sequence, deal)) = load_deal(tx, &key).await? {
                let deal = assign(tx, deal, assignment).await?;
                return Ok(Ok($crate::store::LeadReceipt {
                    sequence,
                    created: false,
                    deal,
                }));
            }
            let now = time::OffsetDateTime::now_utc();
            let body = $crate::domain::EventBody::Lead(lead.clone());
            let event = append_event(tx, "lead", &key, body, now).await?;
            let order_id = match assignment {
                OrderIdAssignment::DealOrLeadId => Some(key.lead_id.clone()),
                OrderIdAssignment::DealIdOnly => None,
            };
            sqlx::query(
                "INSERT INTO leads (integration, lead_id, sequence, order_id, deal_update_time) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&key.integration)
            .bind(&key.lead_id)
            .bind($crate::store::sql::to_db_sequence(event.sequence))
            .bind(&order_id)
            .bind(event_micros(&event))
            .execute(&mut *tx)
            .await?;
            let receipt = $crate::store::LeadReceipt {
                sequence: event.sequence,
                created: true,
                deal: $crate::domain::Deal {
                    key,
                    deal_id: None,
                    answered_order_id: order_id,
                    update_time: event.receive_time,
                },
            };
            committed.events.push(event);
            Ok(Ok(receipt))
        }

        async fn insert_message(
            tx: &mut Connection,
            message: &$crate::domain::DealMessage,
            committed: &mut $crate::store::writer::Committed,
        ) -> Result<Result<$crate::store::MessageReceipt, $crate::store::StoreError>, sqlx::Error>
        {
            let identity = message.identity();
            let existing: Option<i64> = sqlx::query_scalar(
                "SELECT sequence FROM messages WHERE integration = $1 AND identity = $2",
            )
            .bind(&message.integration)
            .bind(&identity)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(sequence) = existing {
                return Ok(Ok($crate::store::MessageReceipt {
                    sequence: sequence as u64,
                    created: false,
                }));
            }
            let key = $crate::domain::LeadKey::new(&message.integration, message.lead_id.clone());
            let body = $crate::domain::EventBody::Message(message.clone());
            let now = time::OffsetDateTime::now_utc();
            let event = append_event(tx, "message", &key, body, now).await?;
            sqlx::query("INSERT INTO messages (integration, identity, sequence) VALUES ($1, $2, $3)")
                .bind(&key.integration)
                .bind(&identity)
                .bind($crate::store::sql::to_db_sequence(event.sequence))
                .execute(&mut *tx)
                .await?;
            let receipt = $crate::store::MessageReceipt {
                sequence: event.sequence,
                created: true,
            };
            committed.events.push(event);
            Ok(Ok(receipt))
        }

        /// Allocates the next sequence and appends the event to the log.
        async fn append_event(
            tx: &mut Connection,
            kind: &str,
            key: &$crate::domain::LeadKey,
            body: $crate::domain::EventBody,
            receive_time: time::OffsetDateTime,
        ) -> Result<$crate::domain::Event, sqlx::Error> {
            let payload = serde_json::to_string(&body)
                .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
            // On PostgreSQL this row lock is held until commit: see the module docs.
            let sequence: i64 = sqlx::query_scalar(
                "UPDATE event_counter SET last_sequence = last_sequence + 1 RETURNING last_sequence",
            )
            .fetch_one(&mut *tx)
            .await?;
            let micros = $crate::store::sql::to_micros(receive_time);
            sqlx::query(
                "INSERT INTO events (sequence, kind, integration, lead_id, receive_time, payload) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(sequence)
            .bind(kind)
            .bind(&key.integration)
            .bind(&key.lead_id)
            .bind(micros)
            .bind(payload)
            .execute(&mut *tx)
            .await?;
            Ok($crate::domain::Stored {
                sequence: sequence as u64,
                // What a reader of the store will see: microsecond precision.
                receive_time: $crate::store::sql::from_micros(micros),
                record: body,
            })
        }

        fn event_micros(event: &$crate::domain::Event) -> i64 {
            $crate::store::sql::to_micros(event.receive_time)
        }

        async fn report_deal(
            tx: &mut Connection,
            key: &$crate::domain::LeadKey,
            deal_id: &str,
            committed: &mut $crate::store::writer::Committed,
        ) -> Result<Result<$crate::domain::Deal, $crate::store::StoreError>, sqlx::Error> {
            use $crate::store::StoreError;
            match load_deal(tx, key).await? {
                None => return Ok(Err(StoreError::NotFound)),
                Some((_, deal)) if deal.deal_id.as_deref() == Some(deal_id) => return Ok(Ok(deal)),
                Some(_) => {}
            }
            // Conditional, so that a concurrent answer on another replica is respected:
            // a deal id Roistat was answered as order_id never changes.
            let updated = sqlx::query(
                "UPDATE leads SET deal_id = $3, deal_update_time = $4 \
                 WHERE integration = $1 AND lead_id = $2 \
                   AND (order_id IS NULL OR deal_id IS NULL OR order_id <> deal_id) \
                 RETURNING deal_id, order_id, deal_update_time",
            )
            .bind(&key.integration)
            .bind(&key.lead_id)
            .bind(deal_id)
            .bind($crate::store::sql::to_micros(time::OffsetDateTime::now_utc()))
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = updated {
                committed.deal_reports.push(key.clone());
                return Ok(deal_from_row(key, &row));
            }
            Ok(match load_deal(tx, key).await? {
                None => Err(StoreError::NotFound),
                Some((_, deal)) if deal.deal_id.as_deref() == Some(deal_id) => Ok(deal),
                Some((_, deal)) => Err(StoreError::Conflict(format!(
                    "deal id {:?} was already answered to Roistat as order_id and cannot change",
                    deal.deal_id.unwrap_or_default()
                ))),
            })
        }

        /// Fixes the order id of a deal that has none yet, as `assignment` says.
        async fn assign(
            tx: &mut Connection,
            deal: $crate::domain::Deal,
            assignment: $crate::store::OrderIdAssignment,
        ) -> Result<$crate::domain::Deal, sqlx::Error> {
            use $crate::store::OrderIdAssignment;
            if deal.answered_order_id.is_some() {
                return Ok(deal);
            }
            let fallback = match assignment {
                OrderIdAssignment::DealOrLeadId => Some(deal.key.lead_id.clone()),
                OrderIdAssignment::DealIdOnly => None,
            };
            // One statement, on the row as it is now: the deal id reported last wins.
            let updated = sqlx::query(
                "UPDATE leads SET order_id = COALESCE(deal_id, $3) \
                 WHERE integration = $1 AND lead_id = $2 AND order_id IS NULL \
                   AND COALESCE(deal_id, $3) IS NOT NULL \
                 RETURNING deal_id, order_id, deal_update_time",
            )
            .bind(&deal.key.integration)
            .bind(&deal.key.lead_id)
            .bind(fallback)
            .fetch_optional(&mut *tx)
            .await?;
            match updated {
                Some(row) => deal_from_row(&deal.key, &row).map_err(|e| sqlx::Error::Decode(Box::new(e))),
                None => Ok(load_deal(tx, &deal.key).await?.map_or(deal, |(_, current)| current)),
            }
        }

        /// The lead's event sequence and deal, if the lead is stored.
        async fn load_deal(
            tx: &mut Connection,
            key: &$crate::domain::LeadKey,
        ) -> Result<Option<(u64, $crate::domain::Deal)>, sqlx::Error> {
            use sqlx::Row as _;
            let row = sqlx::query(
                "SELECT sequence, deal_id, order_id, deal_update_time FROM leads \
                 WHERE integration = $1 AND lead_id = $2",
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

        fn deal_from_row(
            key: &$crate::domain::LeadKey,
            row: &Row,
        ) -> Result<$crate::domain::Deal, $crate::store::StoreError> {
            use sqlx::Row as _;
            Ok($crate::domain::Deal {
                key: key.clone(),
                deal_id: row.try_get("deal_id")?,
                answered_order_id: row.try_get("order_id")?,
                update_time: $crate::store::sql::from_micros(row.try_get("deal_update_time")?),
            })
        }

        fn event_from_row(row: &Row) -> Result<$crate::domain::Event, $crate::store::StoreError> {
            use sqlx::Row as _;
            let sequence: i64 = row.try_get("sequence")?;
            let payload: String = row.try_get("payload")?;
            let record = serde_json::from_str(&payload).map_err(|error| {
                $crate::store::StoreError::Unavailable(format!("event {sequence} is unreadable: {error}"))
            })?;
            Ok($crate::domain::Stored {
                sequence: sequence as u64,
                receive_time: $crate::store::sql::from_micros(row.try_get("receive_time")?),
                record,
            })
        }
    };
}

pub(super) use sql_store;
