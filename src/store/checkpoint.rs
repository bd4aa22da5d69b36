//! SQLite's log copied into the database file in the background: the writer's own
//! connection never checkpoints after a commit (`wal_autocheckpoint = 0`), so no
//! commit waits for one; a thread of its own runs a passive checkpoint (which never
//! blocks the writer nor readers) a few times a second on a connection of its own.
//! SQLite starts the log over only when a write begins with the log fully copied,
//! which a checkpoint racing a busy writer rarely achieves: so when the log grows
//! long, the writer itself runs a passive checkpoint once no write is waiting (or
//! after a few seconds when writes never pause), copying the little the background
//! one left.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::db::DbError;

/// How often the log is copied into the database file.
const INTERVAL: Duration = Duration::from_millis(100);
/// Log pages (4 KiB each) past which the log is long: the background checkpoints
/// have not let it start over, so the writer lends a hand.
const LONG_LOG_PAGES: i64 = 4096;
/// How long the writer puts off its checkpoint of a long log while writes keep
/// coming.
pub(super) const WRITER_OVERDUE: Duration = Duration::from_secs(2);

/// The background checkpoints of one database.
pub(super) struct Checkpointer {
    /// Set when a checkpoint finds the log long; cleared by the writer's checkpoint.
    pub long_log: Arc<AtomicBool>,
    stop: Mutex<Option<mpsc::Sender<()>>>,
    stopped: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

impl Checkpointer {
    pub fn start(path: &Path) -> Result<Self, DbError> {
        let unavailable = |error: rusqlite::Error| DbError::Unavailable(Arc::new(error));
        // A checkpoint leaves the database file on disk before the log is reused:
        // the connection syncs at `synchronous=FULL`.
        let conn =
            wal_coalesce::open(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(unavailable)?;
        if let Ok(bytes) = conn.query_row("PRAGMA page_size", [], |row| row.get::<_, u64>(0)) {
            PAGE_BYTES.store(bytes, Ordering::Relaxed);
        }
        let (stop, stop_requested) = mpsc::channel::<()>();
        let (stopped, on_stop) = oneshot::channel();
        let long_log = Arc::new(AtomicBool::new(false));
        let found_long = long_log.clone();
        let run = move |conn: &Connection| {
            if passive(conn).is_some_and(|pages| pages > LONG_LOG_PAGES) {
                found_long.store(true, Ordering::Relaxed);
            }
        };
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stop_requested.recv_timeout(INTERVAL) {
                    run(&conn);
                }
                run(&conn);
                drop(conn);
                let _ = stopped.send(());
            })
            .map_err(|error| DbError::Unavailable(Arc::new(error)))?;
        Ok(Self {
            long_log,
            stop: Mutex::new(Some(stop)),
            stopped: tokio::sync::Mutex::new(Some(on_stop)),
        })
    }

    /// Runs a last checkpoint and stops.
    pub async fn stop(&self) {
        if let Ok(mut stop) = self.stop.lock() {
            stop.take();
        }
        if let Some(stopped) = self.stopped.lock().await.take() {
            let _ = stopped.await;
        }
    }
}

/// Copies what it can of the log into the database file, without waiting for the
/// writer or readers; returns the log's length in pages.
pub(super) fn passive(conn: &Connection) -> Option<i64> {
    let started = std::time::Instant::now();
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        row.get::<_, i64>(1)
    });
    let pages = result
        .inspect_err(|error| tracing::warn!(%error, "cannot copy the log into the database file"))
        .ok()?;
    let page_bytes = PAGE_BYTES.load(Ordering::Relaxed);
    let log_bytes = u64::try_from(pages).unwrap_or(0) * page_bytes;
    crate::telemetry::sqlite_checkpointed(started.elapsed(), log_bytes);
    Some(pages)
}

/// The database's page size, read when the checkpointer starts.
static PAGE_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(4096);
