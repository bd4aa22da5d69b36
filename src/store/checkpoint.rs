//! SQLite's log copied into the database file in the background: the writer's own
//! connection never checkpoints (`wal_autocheckpoint = 0`), so no commit waits for
//! one; a thread of its own runs a passive checkpoint (which never blocks the
//! writer nor readers) a few times a second on a connection of its own. Under
//! steady writes a passive checkpoint rarely finds the log fully copied at the
//! moment the next write begins, which is when SQLite starts the log over: once the
//! log is long, a restarting checkpoint holds the next write back for the moment it
//! takes to copy what the passive one left, so that the log starts over.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::db::DbError;

/// How often the log is copied into the database file.
const INTERVAL: Duration = Duration::from_millis(100);
/// Log pages (4 KiB each) past which the log is made to start over.
const RESTART_PAGES: i64 = 4096;
/// How long the restarting checkpoint waits for the writer and readers; it tries
/// again at the next interval.
const RESTART_WAIT: Duration = Duration::from_millis(50);

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
        conn.busy_timeout(RESTART_WAIT).map_err(unavailable)?;
        let (stop, stop_requested) = mpsc::channel::<()>();
        let (stopped, on_stop) = oneshot::channel();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stop_requested.recv_timeout(INTERVAL) {
                    checkpoint(&conn);
                }
                checkpoint(&conn);
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

fn checkpoint(conn: &Connection) {
    let run = |mode: &str| {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
        })
    };
    let result = match run("PASSIVE") {
        Ok((_, logged)) if logged > RESTART_PAGES => run("RESTART"),
        other => other,
    };
    if let Err(error) = result {
        tracing::warn!(%error, "cannot copy the log into the database file");
    }
}
