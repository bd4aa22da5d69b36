//! SQLite's log copied into the database file in the background: the writer's own
//! connection never checkpoints after a commit (`wal_autocheckpoint = 0`), so no
//! commit waits for one; a thread of its own runs a passive checkpoint (which never
//! blocks the writer nor readers) a few times a second on a connection of its own.
//! SQLite starts the log over only when a write begins with the log fully copied,
//! which a checkpoint racing the writer rarely achieves: so the writer itself runs a
//! passive checkpoint now and then when no write is waiting (or every few seconds
//! when writes never pause), copying the little the background one left.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::db::DbError;

/// How often the log is copied into the database file.
const INTERVAL: Duration = Duration::from_millis(100);
/// How often, at most, the writer checkpoints when it has nothing to do.
pub(super) const WRITER_INTERVAL: Duration = Duration::from_millis(250);
/// How long the writer goes without a checkpoint when writes never pause.
pub(super) const WRITER_OVERDUE: Duration = Duration::from_secs(2);

/// The background checkpoints of one database.
pub(super) struct Checkpointer {
    stop: Mutex<Option<mpsc::Sender<()>>>,
    stopped: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

impl Checkpointer {
    pub fn start(path: &Path) -> Result<Self, DbError> {
        let unavailable = |error: rusqlite::Error| DbError::Unavailable(Arc::new(error));
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(unavailable)?;
        // A checkpoint leaves the database file on disk before the log is reused.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable)?;
        let (stop, stop_requested) = mpsc::channel::<()>();
        let (stopped, on_stop) = oneshot::channel();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stop_requested.recv_timeout(INTERVAL) {
                    passive(&conn);
                }
                passive(&conn);
                drop(conn);
                let _ = stopped.send(());
            })
            .map_err(|error| DbError::Unavailable(Arc::new(error)))?;
        Ok(Self {
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
/// writer or readers.
pub(super) fn passive(conn: &Connection) {
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        row.get::<_, i64>(0)
    });
    if let Err(error) = result {
        tracing::warn!(%error, "cannot copy the log into the database file");
    }
}
