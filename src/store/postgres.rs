//! The PostgreSQL store, for several replicas sharing one database.
//!
//! Writes: each replica's writer task commits its batches; the event counter's row
//! lock orders commits across replicas (see `sql.rs`), so sequences are gap-free and
//! commit-ordered. Inside each transaction that appends events, `pg_notify` tells
//! every replica; a deal report is announced the same way.
//!
//! Live feed: a publisher task per replica reads the events after the last one it
//! published and publishes them in order. It is woken by this replica's commits, by
//! notifications from the others (one LISTEN connection), and, as a safety net for
//! notifications lost while that connection was down, by a slow timer.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use tokio::sync::{Mutex, Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::sql::{Shared, sql_store};
use super::writer::{self, Command, Committed, Outcome, Transactor};
use super::{DEAL_REPORTS_CAPACITY, StoreError};
use crate::domain::{Event, LeadKey};

const EVENTS_CHANNEL: &str = "roistat_leads_events";
const DEALS_CHANNEL: &str = "roistat_leads_deals";
const MAX_CONNECTIONS: u32 = 16;
/// A webhook gets 503 rather than waiting longer than this for a connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
const STATEMENT_TIMEOUT_MS: &str = "10000";
/// How often the publisher looks for events even without a notification.
const SAFETY_POLL: Duration = Duration::from_secs(1);
const PUBLISH_BATCH: u32 = 512;
const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);

/// The PostgreSQL implementation of [`super::LeadStore`].
pub struct PostgresStore {
    shared: Shared<Postgres>,
}

impl PostgresStore {
    /// Connects to the database at `url` and applies the migrations (concurrent
    /// replicas take turns: the migrator holds an advisory lock).
    pub async fn open(url: &str, feed_capacity: usize) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)?
            .application_name("roistat-leads")
            .options([("statement_timeout", STATEMENT_TIMEOUT_MS)]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;

        let (feed, _) = broadcast::channel(feed_capacity.max(1));
        let (deal_reports, _) = broadcast::channel(DEAL_REPORTS_CAPACITY);
        let (commands, queue) = mpsc::channel(writer::MAX_BATCH * 4);
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let published = latest_sequence(&pool).await?;

        let writer = tokio::spawn(writer::run(
            PgWriter {
                pool: pool.clone(),
                wake: wake.clone(),
                deal_reports: deal_reports.clone(),
            },
            queue,
        ));
        let publisher = tokio::spawn(publish(
            pool.clone(),
            feed.clone(),
            published,
            wake.clone(),
            stop.clone(),
        ));
        let listener = tokio::spawn(listen(
            pool.clone(),
            wake,
            deal_reports.clone(),
            stop.clone(),
        ));
        Ok(Self {
            shared: Shared {
                commands,
                write_pool: pool.clone(),
                pool,
                feed,
                deal_reports,
                tasks: Mutex::new(vec![writer, publisher, listener]),
                stop,
            },
        })
    }
}

struct PgWriter {
    pool: PgPool,
    wake: Arc<Notify>,
    deal_reports: broadcast::Sender<LeadKey>,
}

#[async_trait]
impl Transactor for PgWriter {
    async fn apply_batch(
        &mut self,
        batch: &[Command],
    ) -> Result<(Vec<Outcome>, Committed), sqlx::Error> {
        apply_batch(&self.pool, batch).await
    }

    fn announce(&mut self, committed: Committed) {
        if !committed.events.is_empty() {
            self.wake.notify_one();
        }
        for key in committed.deal_reports {
            let _ = self.deal_reports.send(key);
        }
    }
}

/// A batch that may append events takes the counter's lock first, and holds it to
/// commit: inserts on all replicas then run one transaction at a time, in sequence
/// order, so the existence check of a lead sees every committed copy (the same lead
/// retried on two replicas is one lead).
async fn begin_writes(tx: &mut Connection, batch: &[Command]) -> Result<(), sqlx::Error> {
    if super::sql::appends_events(batch) {
        sqlx::query("SELECT last_sequence FROM event_counter FOR UPDATE")
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Notifications are sent only if the transaction commits.
async fn before_commit(tx: &mut Connection, committed: &Committed) -> Result<(), sqlx::Error> {
    if let Some(last) = committed.events.last() {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(last.sequence.to_string())
            .execute(&mut *tx)
            .await?;
    }
    for key in &committed.deal_reports {
        let payload = serde_json::to_string(&[&key.integration, &key.lead_id])
            .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(DEALS_CHANNEL)
            .bind(payload)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Publishes committed events to this replica's feed, in order, exactly once each.
async fn publish(
    pool: PgPool,
    feed: broadcast::Sender<Arc<Event>>,
    mut published: u64,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(SAFETY_POLL) => {}
        }
        loop {
            match events_after(&pool, published, PUBLISH_BATCH).await {
                Ok(events) => {
                    let complete = events.len() < PUBLISH_BATCH as usize;
                    for event in events {
                        published = event.sequence;
                        let _ = feed.send(Arc::new(event));
                    }
                    if complete {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read new events; will retry");
                    break;
                }
            }
        }
    }
}

/// Listens for other replicas' commits and deal reports.
async fn listen(
    pool: PgPool,
    wake: Arc<Notify>,
    deal_reports: broadcast::Sender<LeadKey>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let mut listener = match connect_listener(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for notifications; will retry");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RECONNECT_BACKOFF) => continue,
                }
            }
        };
        // Whatever was committed while nobody listened.
        wake.notify_one();
        loop {
            let notification = tokio::select! {
                _ = stop.cancelled() => return,
                notification = listener.try_recv() => notification,
            };
            match notification {
                Ok(Some(notification)) if notification.channel() == EVENTS_CHANNEL => {
                    wake.notify_one()
                }
                Ok(Some(notification)) => {
                    if let Ok([integration, lead_id]) =
                        serde_json::from_str::<[String; 2]>(notification.payload())
                    {
                        let _ = deal_reports.send(LeadKey::new(&integration, lead_id));
                    }
                }
                // The connection was lost; the next call reconnects. Catch up meanwhile.
                Ok(None) => wake.notify_one(),
                Err(error) => {
                    tracing::warn!(%error, "notification connection failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn connect_listener(pool: &PgPool) -> Result<PgListener, StoreError> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([EVENTS_CHANNEL, DEALS_CHANNEL]).await?;
    Ok(listener)
}

sql_store!(PostgresStore, Postgres, begin_writes, before_commit);
