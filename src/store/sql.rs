//! The SQL both stores share. SQLite and PostgreSQL run the same statements (`$N`
//! placeholders, `RETURNING`); `sql_store!` instantiates them for one database type,
//! with the backend's hooks for what differs: how a write transaction starts and
//! what it does just before it commits.
//!
//! Sequences come from a one-row counter table: a write transaction that appends
//! events reads it once, numbers its events in memory, and writes it back before it
//! commits. On PostgreSQL the transaction locks the counter's row first (`FOR
//! UPDATE`) and holds the lock until commit, so sequences are allocated in commit
//! order and never have gaps: a reader that saw sequence N will never later find a
//! committed event below N. On SQLite there is one writer anyway.

use std::sync::Arc;

use sqlx::Database;
use time::OffsetDateTime;
use tokio::sync::{Mutex, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::OrderIdAssignment;
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

/// The event sequences a write transaction hands out.
#[derive(Debug, Default)]
pub(super) struct Sequences {
    /// The last sequence allocated (read from the counter at the transaction's start).
    last: i64,
    /// Whether any was allocated, so the counter must be written back.
    allocated: bool,
}

impl Sequences {
    pub fn starting_after(last: i64) -> Self {
        Self {
            last,
            allocated: false,
        }
    }

    /// The sequence the next event would get.
    pub fn peek(&self) -> i64 {
        self.last + 1
    }

    /// Takes the next sequence.
    pub fn take(&mut self) -> i64 {
        self.last += 1;
        self.allocated = true;
        self.last
    }

    /// The counter's new value, if events were appended.
    pub fn written_back(&self) -> Option<i64> {
        self.allocated.then_some(self.last)
    }
}

/// The order id a new lead is answered at once: its own id, unless it must wait for
/// the CRM's deal id.
pub(super) fn initial_order_id(assignment: OrderIdAssignment, key: &LeadKey) -> Option<String> {
    match assignment {
        OrderIdAssignment::DealOrLeadId => Some(key.lead_id.clone()),
        OrderIdAssignment::DealIdOnly => None,
    }
}

/// The receipt of a lead stored just now.
pub(super) fn new_lead_receipt(
    key: LeadKey,
    sequence: u64,
    answered_order_id: Option<String>,
    update_time: OffsetDateTime,
) -> super::LeadReceipt {
    super::LeadReceipt {
        sequence,
        created: true,
        deal: crate::domain::Deal {
            key,
            deal_id: None,
            answered_order_id,
            details: Default::default(),
            update_time,
        },
    }
}

/// The leads at the start of `batch`, up to its first command of another kind.
pub(super) fn leading_leads(batch: &[Command]) -> Vec<(&Lead, OrderIdAssignment)> {
    batch
        .iter()
        .map_while(|command| match command {
            Command::InsertLead {
                lead, assignment, ..
            } => Some((&**lead, *assignment)),
            _ => None,
        })
        .collect()
}

/// `rows` groups of `columns` placeholders for a multi-row `VALUES`, numbered
/// (`($1, $2), ($3, $4)`) or, for SQLite, anonymous (`(?, ?), (?, ?)`): SQLite looks
/// named ones up by a linear scan, which costs quadratic time in statements with
/// hundreds of them.
pub(super) fn values_placeholders(rows: usize, columns: usize, anonymous: bool) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            if anonymous {
                sql.push('?');
            } else {
                sql.push('$');
                sql.push_str(&(row * columns + column + 1).to_string());
            }
        }
        sql.push(')');
    }
    sql
}

/// Whether a batch may append events (and so needs the counter).
pub(super) fn appends_events(batch: &[Command]) -> bool {
    batch.iter().any(|command| {
        matches!(
            command,
            Command::InsertLead { .. } | Command::InsertEvent { .. }
        )
    })
}

/// A stored lead's event, or an error if the event is not a lead.
pub(super) fn lead_from_event(event: Event) -> Result<Stored<Lead>, StoreError> {
    match event.record {
        EventBody::Lead(lead) => Ok(Stored {
            sequence: event.sequence,
            receive_time: event.receive_time,
            record: lead,
        }),
        _ => Err(StoreError::Unavailable(format!(
            "event {} is not a lead",
            event.sequence
        ))),
    }
}

/// A record as stored JSON.
pub(super) fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|error| StoreError::Unavailable(format!("cannot encode: {error}")))
}

/// A record from stored JSON.
pub(super) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Unavailable(format!("stored record is unreadable: {error}")))
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

            async fn insert_event(
                &self,
                body: $crate::domain::EventBody,
            ) -> Result<$crate::store::EventReceipt, $crate::store::StoreError> {
                self.shared
                    .submit(|reply| $crate::store::writer::Command::InsertEvent {
                        body: Box::new(body),
                        reply,
                    })
                    .await
            }

            async fn report_deal(
                &self,
                key: &$crate::domain::LeadKey,
                report: $crate::store::DealReport,
            ) -> Result<$crate::domain::Deal, $crate::store::StoreError> {
                let key = key.clone();
                self.shared
                    .submit(|reply| $crate::store::writer::Command::ReportDeal {
                        key,
                        report: Box::new(report),
                        reply,
                    })
                    .await
            }

            async fn put_scheme(
                &self,
                integration: &str,
                scheme: &$crate::domain::Scheme,
            ) -> Result<time::OffsetDateTime, $crate::store::StoreError> {
                let payload = $crate::store::sql::to_json(scheme)?;
                let now = time::OffsetDateTime::now_utc();
                sqlx::query(
                    "INSERT INTO schemes (integration, payload, update_time) VALUES ($1, $2, $3) \
                     ON CONFLICT (integration) DO UPDATE SET \
                       payload = excluded.payload, update_time = excluded.update_time",
                )
                .bind(integration)
                .bind(payload)
                .bind($crate::store::sql::to_micros(now))
                .execute(&self.shared.write_pool)
                .await?;
                Ok($crate::store::sql::from_micros($crate::store::sql::to_micros(now)))
            }

            async fn get_scheme(
                &self,
                integration: &str,
            ) -> Result<Option<($crate::domain::Scheme, time::OffsetDateTime)>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query("SELECT payload, update_time FROM schemes WHERE integration = $1")
                    .bind(integration)
                    .fetch_optional(&self.shared.pool)
                    .await?;
                row.map(|row| {
                    let payload: String = row.try_get("payload")?;
                    let update_time = $crate::store::sql::from_micros(row.try_get("update_time")?);
                    Ok(($crate::store::sql::from_json(&payload)?, update_time))
                })
                .transpose()
            }

            async fn put_client(
                &self,
                integration: &str,
                client: &$crate::domain::Client,
            ) -> Result<time::OffsetDateTime, $crate::store::StoreError> {
                let payload = $crate::store::sql::to_json(client)?;
                let now = $crate::store::sql::to_micros(time::OffsetDateTime::now_utc());
                let mut tx = self.shared.write_pool.begin().await?;
                let version = next_version(&mut tx).await?;
                sqlx::query(
                    "INSERT INTO client_versions (integration, client_id, version, update_time, payload) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(integration)
                .bind(&client.id)
                .bind(version)
                .bind(now)
                .bind(payload)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok($crate::store::sql::from_micros(now))
            }

            async fn export_snapshot(
                &self,
                integration: &str,
                kind: $crate::store::ExportKind,
                since: time::OffsetDateTime,
                restart: bool,
            ) -> Result<u64, $crate::store::StoreError> {
                let since = $crate::store::sql::to_micros(since);
                if !restart {
                    let snapshot: Option<i64> = sqlx::query_scalar(
                        "SELECT snapshot FROM export_walks WHERE integration = $1 AND kind = $2 AND since = $3",
                    )
                    .bind(integration)
                    .bind(kind.name())
                    .bind(since)
                    .fetch_optional(&self.shared.pool)
                    .await?;
                    if let Some(snapshot) = snapshot {
                        return Ok(snapshot as u64);
                    }
                }
                let latest: i64 = sqlx::query_scalar("SELECT last_version FROM version_counter")
                    .fetch_one(&self.shared.pool)
                    .await?;
                sqlx::query(
                    "INSERT INTO export_walks (integration, kind, since, snapshot) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (integration, kind, since) DO UPDATE SET snapshot = excluded.snapshot",
                )
                .bind(integration)
                .bind(kind.name())
                .bind(since)
                .bind(latest)
                .execute(&self.shared.write_pool)
                .await?;
                Ok(latest as u64)
            }

            async fn export_orders(
                &self,
                integration: &str,
                page: $crate::store::ExportPage,
            ) -> Result<(u64, Vec<$crate::store::ExportedOrder>), $crate::store::StoreError> {
                use sqlx::Row as _;
                // The latest version of each deal as of the snapshot, if it changed
                // at or after `since`; the same set for the count and every page.
                const WALK: &str = "WITH latest AS ( \
                       SELECT lead_id, MAX(version) AS version FROM deal_versions \
                       WHERE integration = $1 AND version <= $2 GROUP BY lead_id) \
                     SELECT v.lead_id, v.update_time, v.payload AS details, \
                       l.deal_id, l.order_id, e.receive_time, e.payload AS lead \
                     FROM latest \
                     JOIN deal_versions v ON v.integration = $1 AND v.lead_id = latest.lead_id \
                       AND v.version = latest.version \
                     JOIN leads l ON l.integration = $1 AND l.lead_id = v.lead_id \
                     JOIN events e ON e.sequence = l.sequence \
                     WHERE v.update_time >= $3";
                let (total, rows) =
                    export_walk(&self.shared.pool, WALK, "v.update_time, v.lead_id", integration, page).await?;
                let orders = rows
                    .iter()
                    .map(|row| {
                        let lead_id: String = row.try_get("lead_id")?;
                        let details: String = row.try_get("details")?;
                        let lead: String = row.try_get("lead")?;
                        let visit = match $crate::store::sql::from_json(&lead)? {
                            $crate::domain::EventBody::Lead(lead) => lead.visit,
                            _ => String::new(),
                        };
                        Ok($crate::store::ExportedOrder {
                            deal: $crate::domain::Deal {
                                key: $crate::domain::LeadKey::new(integration, lead_id),
                                deal_id: row.try_get("deal_id")?,
                                answered_order_id: row.try_get("order_id")?,
                                details: $crate::store::sql::from_json(&details)?,
                                update_time: $crate::store::sql::from_micros(row.try_get("update_time")?),
                            },
                            visit,
                            lead_receive_time: $crate::store::sql::from_micros(row.try_get("receive_time")?),
                        })
                    })
                    .collect::<Result<Vec<_>, $crate::store::StoreError>>()?;
                Ok((total as u64, orders))
            }

            async fn export_clients(
                &self,
                integration: &str,
                page: $crate::store::ExportPage,
            ) -> Result<(u64, Vec<$crate::store::ExportedClient>), $crate::store::StoreError> {
                use sqlx::Row as _;
                const WALK: &str = "WITH latest AS ( \
                       SELECT client_id, MAX(version) AS version FROM client_versions \
                       WHERE integration = $1 AND version <= $2 GROUP BY client_id) \
                     SELECT v.client_id, v.update_time, v.payload FROM latest \
                     JOIN client_versions v ON v.integration = $1 AND v.client_id = latest.client_id \
                       AND v.version = latest.version \
                     WHERE v.update_time >= $3";
                let (total, rows) =
                    export_walk(&self.shared.pool, WALK, "v.update_time, v.client_id", integration, page).await?;
                let clients = rows
                    .iter()
                    .map(|row| {
                        let payload: String = row.try_get("payload")?;
                        Ok($crate::store::ExportedClient {
                            client: $crate::store::sql::from_json(&payload)?,
                            update_time: $crate::store::sql::from_micros(row.try_get("update_time")?),
                        })
                    })
                    .collect::<Result<Vec<_>, $crate::store::StoreError>>()?;
                Ok((total as u64, clients))
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
                integration: Option<&str>,
            ) -> Result<
                Vec<$crate::domain::Stored<$crate::domain::Lead>>,
                $crate::store::StoreError,
            > {
                // An empty integration means all of them.
                sqlx::query(
                    "SELECT sequence, receive_time, payload FROM events \
                     WHERE kind = 'lead' AND sequence > $1 AND ($3 = '' OR integration = $3) \
                     ORDER BY sequence LIMIT $2",
                )
                .bind($crate::store::sql::to_db_sequence(after_sequence))
                .bind(i64::from(limit))
                .bind(integration.unwrap_or_default())
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
                let mut connection = self.shared.pool.acquire().await?;
                Ok(load_deal(&mut connection, key).await?.map(|(_, deal)| deal))
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

        /// Runs an export walk's query (`walk` binds $1 integration, $2 snapshot,
        /// $3 since): the whole walk's count, and one page of it in `order`.
        async fn export_walk(
            pool: &sqlx::Pool<$db>,
            walk: &str,
            order: &str,
            integration: &str,
            page: $crate::store::ExportPage,
        ) -> Result<(i64, Vec<Row>), sqlx::Error> {
            let snapshot = $crate::store::sql::to_db_sequence(page.snapshot);
            let since = $crate::store::sql::to_micros(page.since);
            let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM ({walk}) walk"))
                .bind(integration)
                .bind(snapshot)
                .bind(since)
                .fetch_one(pool)
                .await?;
            let rows = sqlx::query(&format!("{walk} ORDER BY {order} LIMIT $4 OFFSET $5"))
                .bind(integration)
                .bind(snapshot)
                .bind(since)
                .bind($crate::store::sql::to_db_sequence(page.limit))
                .bind($crate::store::sql::to_db_sequence(page.offset))
                .fetch_all(pool)
                .await?;
            Ok((total, rows))
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
            let mut sequences = $crate::store::sql::Sequences::default();
            if $crate::store::sql::appends_events(batch) {
                let last: i64 = sqlx::query_scalar("SELECT last_sequence FROM event_counter")
                    .fetch_one(&mut *tx)
                    .await?;
                sequences = $crate::store::sql::Sequences::starting_after(last);
            }
            let mut committed = $crate::store::writer::Committed::default();
            let mut outcomes = Vec::with_capacity(batch.len());
            let mut rest = batch;
            while !rest.is_empty() {
                // Consecutive new leads, the bulk of any busy batch, go in together.
                let run = $crate::store::sql::leading_leads(rest);
                if run.len() > 1 {
                    outcomes.extend(insert_leads(&mut tx, &run, &mut committed, &mut sequences).await?);
                    rest = &rest[run.len()..];
                } else {
                    outcomes.push(apply(&mut tx, &rest[0], &mut committed, &mut sequences).await?);
                    rest = &rest[1..];
                }
            }
            if let Some(last) = sequences.written_back() {
                sqlx::query("UPDATE event_counter SET last_sequence = $1")
                    .bind(last)
                    .execute(&mut *tx)
                    .await?;
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
            sequences: &mut $crate::store::sql::Sequences,
        ) -> Result<$crate::store::writer::Outcome, sqlx::Error> {
            use $crate::store::writer::{Command, Outcome};
            use $crate::store::StoreError;
            Ok(match command {
                Command::InsertLead {
                    lead, assignment, ..
                } => Outcome::Lead(insert_lead(tx, lead, *assignment, committed, sequences).await?),
                Command::AssignOrderId {
                    key, assignment, ..
                } => Outcome::Deal(match load_deal(tx, key).await? {
                    Some((_, deal)) => Ok(assign(tx, deal, *assignment).await?),
                    None => Err(StoreError::NotFound),
                }),
                Command::InsertEvent { body, .. } => {
                    Outcome::Event(insert_event(tx, body, committed, sequences).await?)
                }
                Command::ReportDeal { key, report, .. } => {
                    Outcome::Deal(report_deal(tx, key, report, committed).await?)
                }
                Command::Ping { .. } => {
                    // A real (empty) write: it needs the write lock and the disk, as a
                    // lead would, so readiness fails when leads could not be committed.
                    sqlx::query("UPDATE event_counter SET last_sequence = last_sequence")
                        .execute(&mut *tx)
                        .await?;
                    Outcome::Ping(Ok(()))
                }
                Command::Stop => Outcome::Nothing,
            })
        }

        async fn insert_lead(
            tx: &mut Connection,
            lead: &$crate::domain::Lead,
            assignment: $crate::store::OrderIdAssignment,
            committed: &mut $crate::store::writer::Committed,
            sequences: &mut $crate::store::sql::Sequences,
        ) -> Result<Result<$crate::store::LeadReceipt, $crate::store::StoreError>, sqlx::Error> {
            let key = lead.key();
            let now = time::OffsetDateTime::now_utc();
            let order_id = $crate::store::sql::initial_order_id(assignment, &key);
            // The common case in one statement: a new lead claims its key; the event
            // it names follows in the same transaction.
            let claimed: Option<i64> = sqlx::query_scalar(
                "INSERT INTO leads (integration, lead_id, sequence, order_id, deal_update_time) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (integration, lead_id) DO NOTHING \
                 RETURNING sequence",
            )
            .bind(&key.integration)
            .bind(&key.lead_id)
            .bind(sequences.peek())
            .bind(&order_id)
            .bind($crate::store::sql::to_micros(now))
            .fetch_optional(&mut *tx)
            .await?;
            if claimed.is_none() {
                // A retry: the lead is stored already.
                let Some((sequence, deal)) = load_deal(tx, &key).await? else {
                    return Ok(Err($crate::store::StoreError::Unavailable("lead vanished".to_owned())));
                };
                let deal = assign(tx, deal, assignment).await?;
                return Ok(Ok($crate::store::LeadReceipt {
                    sequence,
                    created: false,
                    deal,
                }));
            }
            let body = $crate::domain::EventBody::Lead(lead.clone());
            let event = append_event(tx, sequences.take(), "lead", &key, body, now).await?;
            let receipt = $crate::store::sql::new_lead_receipt(key, event.sequence, order_id, event.receive_time);
            committed.events.push(event);
            Ok(Ok(receipt))
        }

        /// Inserts a run of leads with one statement per table instead of two per
        /// lead. Leads stored already, and repeats within the run, then take the
        /// one-by-one path, where they are retries. Outcomes are in the run's order.
        async fn insert_leads(
            tx: &mut Connection,
            run: &[(&$crate::domain::Lead, $crate::store::OrderIdAssignment)],
            committed: &mut $crate::store::writer::Committed,
            sequences: &mut $crate::store::sql::Sequences,
        ) -> Result<Vec<$crate::store::writer::Outcome>, sqlx::Error> {
            use sqlx::Row as _;
            use $crate::store::writer::Outcome;
            let values_placeholders = |rows, columns| {
                $crate::store::sql::values_placeholders(
                    rows,
                    columns,
                    <$db as sqlx::Database>::NAME == "SQLite",
                )
            };
            let keys: Vec<$crate::domain::LeadKey> = run.iter().map(|(lead, _)| lead.key()).collect();
            let sql = format!(
                "SELECT integration, lead_id FROM leads WHERE (integration, lead_id) IN (VALUES {})",
                values_placeholders(keys.len(), 2)
            );
            let mut query = sqlx::query(&sql).persistent(false);
            for key in &keys {
                query = query.bind(&key.integration).bind(&key.lead_id);
            }
            let mut taken = std::collections::HashSet::new();
            for row in query.fetch_all(&mut *tx).await? {
                taken.insert($crate::domain::LeadKey::new(
                    row.try_get::<&str, _>(0)?,
                    row.try_get::<&str, _>(1)?,
                ));
            }
            // The first of each key not stored yet is new; the others are retries.
            let fresh: Vec<bool> = keys.iter().map(|key| taken.insert(key.clone())).collect();
            let count = fresh.iter().filter(|fresh| **fresh).count();
            let now = time::OffsetDateTime::now_utc();
            let micros = $crate::store::sql::to_micros(now);
            let mut appended = Vec::with_capacity(count);
            if count > 0 {
                let leads_sql = format!(
                    "INSERT INTO leads (integration, lead_id, sequence, order_id, deal_update_time) VALUES {}",
                    values_placeholders(count, 5)
                );
                let events_sql = format!(
                    "INSERT INTO events (sequence, kind, integration, lead_id, receive_time, payload) VALUES {}",
                    values_placeholders(count, 6)
                );
                let mut leads = sqlx::query(&leads_sql).persistent(false);
                let mut events = sqlx::query(&events_sql).persistent(false);
                for (((lead, assignment), key), _) in run.iter().zip(&keys).zip(&fresh).filter(|(_, fresh)| **fresh) {
                    let sequence = sequences.take();
                    let order_id = $crate::store::sql::initial_order_id(*assignment, key);
                    let body = $crate::domain::EventBody::Lead((*lead).clone());
                    let payload = serde_json::to_string(&body)
                        .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
                    leads = leads
                        .bind(&key.integration)
                        .bind(&key.lead_id)
                        .bind(sequence)
                        .bind(order_id.clone())
                        .bind(micros);
                    events = events
                        .bind(sequence)
                        .bind("lead")
                        .bind(&key.integration)
                        .bind(&key.lead_id)
                        .bind(micros)
                        .bind(payload);
                    appended.push((sequence, order_id, body));
                }
                leads.execute(&mut *tx).await?;
                events.execute(&mut *tx).await?;
            }
            // In the run's order: new leads from what was appended (in sequence
            // order), the others answered as retries now that the new ones are in.
            let receive_time = $crate::store::sql::from_micros(micros);
            let mut appended = appended.into_iter();
            let mut outcomes = Vec::with_capacity(run.len());
            for (((lead, assignment), key), fresh) in run.iter().zip(keys).zip(fresh) {
                let appended = if fresh { appended.next() } else { None };
                let Some((sequence, order_id, body)) = appended else {
                    outcomes.push(Outcome::Lead(
                        insert_lead(tx, lead, *assignment, committed, sequences).await?,
                    ));
                    continue;
                };
                committed.events.push($crate::domain::Stored {
                    sequence: sequence as u64,
                    receive_time,
                    record: body,
                });
                outcomes.push(Outcome::Lead(Ok($crate::store::sql::new_lead_receipt(
                    key,
                    sequence as u64,
                    order_id,
                    receive_time,
                ))));
            }
            Ok(outcomes)
        }

        async fn insert_event(
            tx: &mut Connection,
            body: &$crate::domain::EventBody,
            committed: &mut $crate::store::writer::Committed,
            sequences: &mut $crate::store::sql::Sequences,
        ) -> Result<Result<$crate::store::EventReceipt, $crate::store::StoreError>, sqlx::Error> {
            let identity = body.identity();
            let claimed: Option<i64> = sqlx::query_scalar(
                "INSERT INTO event_identities (integration, identity, sequence) VALUES ($1, $2, $3) \
                 ON CONFLICT (integration, identity) DO NOTHING RETURNING sequence",
            )
            .bind(body.integration())
            .bind(&identity)
            .bind(sequences.peek())
            .fetch_optional(&mut *tx)
            .await?;
            if claimed.is_none() {
                let sequence: i64 = sqlx::query_scalar(
                    "SELECT sequence FROM event_identities WHERE integration = $1 AND identity = $2",
                )
                .bind(body.integration())
                .bind(&identity)
                .fetch_one(&mut *tx)
                .await?;
                return Ok(Ok($crate::store::EventReceipt {
                    sequence: sequence as u64,
                    created: false,
                }));
            }
            let key = $crate::domain::LeadKey::new(body.integration(), body.subject_id());
            let now = time::OffsetDateTime::now_utc();
            let event = append_event(tx, sequences.take(), body.kind_name(), &key, body.clone(), now).await?;
            let receipt = $crate::store::EventReceipt {
                sequence: event.sequence,
                created: true,
            };
            committed.events.push(event);
            Ok(Ok(receipt))
        }

        /// Appends an event to the log under `sequence`.
        async fn append_event(
            tx: &mut Connection,
            sequence: i64,
            kind: &str,
            key: &$crate::domain::LeadKey,
            body: $crate::domain::EventBody,
            receive_time: time::OffsetDateTime,
        ) -> Result<$crate::domain::Event, sqlx::Error> {
            let payload = serde_json::to_string(&body)
                .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
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

        async fn report_deal(
            tx: &mut Connection,
            key: &$crate::domain::LeadKey,
            report: &$crate::store::DealReport,
            committed: &mut $crate::store::writer::Committed,
        ) -> Result<Result<$crate::domain::Deal, $crate::store::StoreError>, sqlx::Error> {
            use $crate::store::StoreError;
            let Some((_, mut deal)) = load_deal(tx, key).await? else {
                return Ok(Err(StoreError::NotFound));
            };
            let now = $crate::store::sql::to_micros(time::OffsetDateTime::now_utc());
            if let Some(deal_id) = report.deal_id.as_deref().filter(|id| deal.deal_id.as_deref() != Some(*id)) {
                // Conditional, so that a concurrent answer on another replica is
                // respected: a deal id Roistat was answered as order_id never changes.
                let updated = sqlx::query(
                    "UPDATE leads SET deal_id = $3, deal_update_time = $4 \
                     WHERE integration = $1 AND lead_id = $2 \
                       AND (order_id IS NULL OR deal_id IS NULL OR order_id <> deal_id) \
                     RETURNING deal_id",
                )
                .bind(&key.integration)
                .bind(&key.lead_id)
                .bind(deal_id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                if updated.is_none() {
                    return Ok(match load_deal(tx, key).await? {
                        None => Err(StoreError::NotFound),
                        Some((_, current)) if current.deal_id.as_deref() == Some(deal_id) => Ok(current),
                        Some((_, current)) => Err(StoreError::Conflict(format!(
                            "deal id {:?} was already answered to Roistat as order_id and cannot change",
                            current.deal_id.unwrap_or_default()
                        ))),
                    });
                }
                deal.deal_id = Some(deal_id.to_owned());
                deal.update_time = $crate::store::sql::from_micros(now);
                committed.deal_reports.push(key.clone());
            }
            if !report.update.is_empty() {
                let details = report.update.apply(std::mem::take(&mut deal.details));
                let version = next_version(tx).await?;
                sqlx::query(
                    "INSERT INTO deal_versions (integration, lead_id, version, update_time, payload) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&key.integration)
                .bind(&key.lead_id)
                .bind(version)
                .bind(now)
                .bind($crate::store::sql::to_json(&details).map_err(|e| sqlx::Error::Encode(Box::new(e)))?)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE leads SET deal_update_time = $3 WHERE integration = $1 AND lead_id = $2")
                    .bind(&key.integration)
                    .bind(&key.lead_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                deal.details = details;
                deal.update_time = $crate::store::sql::from_micros(now);
            }
            Ok(Ok(deal))
        }

        /// Allocates the next version number. On PostgreSQL the counter's row lock
        /// is held until commit, so versions commit in the order of their numbers.
        async fn next_version(tx: &mut Connection) -> Result<i64, sqlx::Error> {
            sqlx::query_scalar("UPDATE version_counter SET last_version = last_version + 1 RETURNING last_version")
                .fetch_one(&mut *tx)
                .await
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
                Some(row) => {
                    use sqlx::Row as _;
                    let mut deal = deal;
                    deal.deal_id = row.try_get("deal_id")?;
                    deal.answered_order_id = row.try_get("order_id")?;
                    Ok(deal)
                }
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
                "SELECT l.sequence, l.deal_id, l.order_id, l.deal_update_time, \
                   (SELECT v.payload FROM deal_versions v \
                    WHERE v.integration = l.integration AND v.lead_id = l.lead_id \
                    ORDER BY v.version DESC LIMIT 1) AS details \
                 FROM leads l WHERE l.integration = $1 AND l.lead_id = $2",
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
            let details: Option<String> = row.try_get("details")?;
            Ok($crate::domain::Deal {
                key: key.clone(),
                deal_id: row.try_get("deal_id")?,
                answered_order_id: row.try_get("order_id")?,
                details: match details {
                    Some(details) => $crate::store::sql::from_json(&details)?,
                    None => Default::default(),
                },
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

#[cfg(test)]
mod tests {
    use super::values_placeholders;

    #[test]
    fn placeholders_are_numbered_row_by_row() {
        assert_eq!(values_placeholders(1, 1, false), "($1)");
        assert_eq!(
            values_placeholders(2, 3, false),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(values_placeholders(2, 2, true), "(?, ?), (?, ?)");
    }
}
