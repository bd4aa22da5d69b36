//! The store's own figures beyond its commits (which `metrics.rs` keeps by
//! backend): SQLite's log size and checkpoint time, PostgreSQL's pool; and the
//! console's open live feeds.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

pub const SQLITE_LOG_BYTES: &str = "roistat_leads_sqlite_log_bytes";
pub const SQLITE_CHECKPOINT_SECONDS: &str = "roistat_leads_sqlite_checkpoint_seconds";
pub const POSTGRES_POOL: &str = "roistat_leads_postgres_pool_connections";
pub const POSTGRES_POOL_WAITING: &str = "roistat_leads_postgres_pool_waiting";
pub const CONSOLE_FEEDS: &str = "roistat_leads_console_feeds";
pub const PERSON_BACKFILL_LEADS: &str = "roistat_leads_person_backfill_leads_total";
pub const PERSON_BACKFILL_RUNNING: &str = "roistat_leads_person_backfill_running";

/// Describes the metrics and starts the series of the `backend` in use.
pub(super) fn install(backend: &str) {
    metrics::describe_gauge!(
        SQLITE_LOG_BYTES,
        metrics::Unit::Bytes,
        "Bytes of SQLite's write-ahead log not yet started over, as the last checkpoint found it (SQLite store only)."
    );
    metrics::describe_histogram!(
        SQLITE_CHECKPOINT_SECONDS,
        metrics::Unit::Seconds,
        "Seconds a passive checkpoint of SQLite's log into the database file took (SQLite store only)."
    );
    metrics::describe_gauge!(
        POSTGRES_POOL,
        metrics::Unit::Count,
        "Connections of the PostgreSQL read pool, by state (in_use, idle) (PostgreSQL store only)."
    );
    metrics::describe_gauge!(
        POSTGRES_POOL_WAITING,
        metrics::Unit::Count,
        "Reads waiting for a connection of the PostgreSQL pool (PostgreSQL store only)."
    );
    metrics::describe_gauge!(
        CONSOLE_FEEDS,
        metrics::Unit::Count,
        "The operator console's live feeds open (at most --console-max-feeds)."
    );
    metrics::describe_counter!(
        PERSON_BACKFILL_LEADS,
        metrics::Unit::Count,
        "Leads stored before persons that the background match has given a person."
    );
    metrics::describe_gauge!(
        PERSON_BACKFILL_RUNNING,
        metrics::Unit::Count,
        "1 while the background match of leads stored before persons runs, 0 once every lead has a person."
    );
    metrics::gauge!(CONSOLE_FEEDS).set(0.0);
    metrics::counter!(PERSON_BACKFILL_LEADS).increment(0);
    metrics::gauge!(PERSON_BACKFILL_RUNNING).set(0.0);
    if backend == "postgresql" {
        metrics::gauge!(POSTGRES_POOL, "state" => "in_use").set(0.0);
        metrics::gauge!(POSTGRES_POOL, "state" => "idle").set(0.0);
        metrics::gauge!(POSTGRES_POOL_WAITING).set(0.0);
    } else {
        metrics::gauge!(SQLITE_LOG_BYTES).set(0.0);
        let _ = metrics::histogram!(SQLITE_CHECKPOINT_SECONDS);
    }
}

/// A checkpoint took `elapsed` and found `log_bytes` in the log.
pub fn sqlite_checkpointed(elapsed: Duration, log_bytes: u64) {
    metrics::histogram!(SQLITE_CHECKPOINT_SECONDS).record(elapsed.as_secs_f64());
    metrics::gauge!(SQLITE_LOG_BYTES).set(log_bytes as f64);
}

/// The PostgreSQL pool's connections, as last sampled.
pub fn postgres_pool(in_use: u32, idle: u32) {
    metrics::gauge!(POSTGRES_POOL, "state" => "in_use").set(f64::from(in_use));
    metrics::gauge!(POSTGRES_POOL, "state" => "idle").set(f64::from(idle));
}

/// Counts a read waiting for a pool connection while it lives.
pub struct PoolWait(());

static WAITING: AtomicI64 = AtomicI64::new(0);

impl PoolWait {
    pub fn start() -> Self {
        let waiting = WAITING.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!(POSTGRES_POOL_WAITING).set(waiting as f64);
        Self(())
    }
}

impl Drop for PoolWait {
    fn drop(&mut self) {
        let waiting = WAITING.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!(POSTGRES_POOL_WAITING).set(waiting as f64);
    }
}

/// The console's live feeds open.
pub fn console_feeds(open: usize) {
    metrics::gauge!(CONSOLE_FEEDS).set(open as f64);
}

/// The background match of stored leads gave `leads` more a person.
pub fn persons_backfilled(leads: u64) {
    metrics::counter!(PERSON_BACKFILL_LEADS).increment(leads);
}

/// Whether the background match of stored leads runs.
pub fn person_backfill_running(running: bool) {
    metrics::gauge!(PERSON_BACKFILL_RUNNING).set(if running { 1.0 } else { 0.0 });
}
