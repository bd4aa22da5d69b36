//! The embedded SQLite store: one file, WAL journal, every commit fsync'd
//! (`synchronous=FULL`). The writer task owns the only write connection; reads
//! use a separate pool, which WAL lets run beside the writer.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};
use tokio::sync::{Mutex, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::sql::{Shared, sql_store};
use super::writer::{self, Command, Committed, Outcome, Transactor};
use crate::domain::{Event, LeadKey};

const READ_CONNECTIONS: u32 = 4;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows a read may queue ahead of its reader: a whole replay batch.
const ROW_BUFFER: usize = 512;

/// The SQLite implementation of [`super::LeadStore`].
pub struct SqliteStore {
    shared: Shared<Sqlite>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` and applies the migrations.
    pub async fn open(url: &str, feed_capacity: usize) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        // SQLite has one writer at a time: one connection, owned by the writer task.
        let write_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&write_pool)
            .await?;
        // A replay batch's rows cross from SQLite's thread without waiting for the
        // reader to make room (the default of 50 made it wait, and wake it, ten times
        // per batch).
        let pool = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options.row_buffer_size(ROW_BUFFER))
            .await?;
        let (feed, _) = broadcast::channel(feed_capacity.max(1));
        let (deal_reports, _) = broadcast::channel(super::DEAL_REPORTS_CAPACITY);
        let (commands, queue) = mpsc::channel(writer::MAX_BATCH * 4);
        let transactor = SqliteWriter {
            pool: write_pool.clone(),
            feed: feed.clone(),
            deal_reports: deal_reports.clone(),
        };
        let writer = tokio::spawn(writer::run(transactor, queue));
        Ok(Self {
            shared: Shared {
                commands,
                pool,
                write_pool,
                feed,
                deal_reports,
                tasks: Mutex::new(vec![writer]),
                stop: CancellationToken::new(),
            },
        })
    }
}

struct SqliteWriter {
    pool: SqlitePool,
    feed: broadcast::Sender<Arc<Event>>,
    deal_reports: broadcast::Sender<LeadKey>,
}

#[async_trait]
impl Transactor for SqliteWriter {
    async fn apply_batch(
        &mut self,
        batch: &[Command],
    ) -> Result<(Vec<Outcome>, Committed), sqlx::Error> {
        apply_batch(&self.pool, batch).await
    }

    fn announce(&mut self, committed: Committed) {
        // No receivers is fine: subscribers read missed events from the store.
        for event in committed.events {
            let _ = self.feed.send(Arc::new(event));
        }
        for key in committed.deal_reports {
            let _ = self.deal_reports.send(key);
        }
    }
}

/// One process writes: nothing to coordinate before a write transaction.
async fn begin_writes(_tx: &mut Connection, _batch: &[Command]) -> Result<(), sqlx::Error> {
    Ok(())
}

/// Subscribers in this process learn of commits from `announce`.
async fn before_commit(_tx: &mut Connection, _committed: &Committed) -> Result<(), sqlx::Error> {
    Ok(())
}

sql_store!(SqliteStore, Sqlite, begin_writes, before_commit);
