//! The PostgreSQL store, for several replicas sharing one database.
//!
//! Writes: each replica's writer commits its batches on a connection of its own,
//! never queued behind readers. Every write transaction first locks the event
//! counter's row (see `sql/mod.rs`), so sequences are gap-free and commit-ordered
//! across replicas and no two transactions wait on each other in opposite orders.
//! Inside each transaction that appends events, `pg_notify` tells every replica; a
//! deal report is announced the same way. Every session commits synchronously
//! whatever the server's default, so an `ok` is never answered before the commit
//! is durable.
//!
//! Live feed: a publisher task per replica reads the events after the last one it
//! published and publishes them in order. It is woken by this replica's commits, by
//! notifications from the others (one LISTEN connection), and, as a safety net for
//! notifications lost while that connection was down, by a slow timer.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgListener, PgPoolOptions, PgRow,
};
use sqlx::query::Query;
use sqlx::{ConnectOptions, PgPool, Postgres, Row as _};
use tokio::sync::{Mutex, Notify, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::db::{Arg, Conn, DbError, Row, Source, query_one};
use super::sql::{self, Backend, SqlStore, SqlTransactor, WriteSide};
use super::writer::{self, Committed, Write};
use super::{DEAL_REPORTS_CAPACITY, OpenError};
use crate::domain::{EncodedEvent, LeadKey};

const EVENTS_CHANNEL: &str = "roistat_leads_events";
const DEALS_CHANNEL: &str = "roistat_leads_deals";
const MAX_CONNECTIONS: u32 = 16;
/// A read waits no longer than this for a connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
const STATEMENT_TIMEOUT_MS: &str = "10000";
/// How often the publisher looks for events even without a notification.
const SAFETY_POLL: Duration = Duration::from_secs(1);
const PUBLISH_BATCH: u32 = 512;
const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);

pub(super) type PostgresStore = SqlStore<PgBackend>;

/// The advisory lock replicas take turns under to convert stored events.
const CONVERSION_LOCK: i64 = 0x726f_6973_7461_7405;

/// Converts events stored before they were stored encoded, one replica at a time:
/// the others wait on the lock, then find nothing left to convert.
async fn convert_stored<C: Conn>(conn: &mut C) -> Result<u64, DbError> {
    let lock = [CONVERSION_LOCK.into()];
    conn.query("SELECT pg_advisory_lock($1)", &lock, |_| Ok(()))
        .await?;
    let converted = sql::convert_stored(conn, <PgWriteSide as WriteSide>::BEGIN).await;
    conn.query("SELECT pg_advisory_unlock($1)", &lock, |_| Ok(()))
        .await?;
    converted
}

/// Connects to the database at `url` and applies the migrations (concurrent
/// replicas take turns: the migrator holds an advisory lock).
pub(super) async fn open(url: &str, feed_capacity: usize) -> Result<PostgresStore, OpenError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|error| OpenError::InvalidUrl(error.into()))?
        .application_name("roistat-leads")
        .options([("statement_timeout", STATEMENT_TIMEOUT_MS)]);
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options.clone())
        .await
        .map_err(|error| OpenError::Connect(pg_error(error)))?;
    sqlx::migrate!("./migrations/postgres")
        .run(&pool)
        .await
        .map_err(|error| OpenError::Migrate(error.into()))?;
    let writer_conn = options
        .connect()
        .await
        .map_err(|error| OpenError::Connect(pg_error(error)))?;
    let mut writer_conn = PgConn(Box::new(writer_conn));
    convert_stored(&mut writer_conn)
        .await
        .map_err(OpenError::Convert)?;

    let (feed, _) = broadcast::channel(feed_capacity.max(1));
    let (deal_reports, _) = broadcast::channel(DEAL_REPORTS_CAPACITY);
    let (commands, queue) = mpsc::channel(writer::MAX_BATCH * 4);
    let wake = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let mut conn = PgConn(
        pool.acquire()
            .await
            .map_err(|e| OpenError::Connect(pg_error(e)))?,
    );
    let published = sql::latest_sequence(&mut conn)
        .await
        .map_err(OpenError::Connect)?;
    drop(conn);

    let side = PgWriteSide {
        options,
        conn: Some(writer_conn),
        wake: wake.clone(),
        deal_reports: deal_reports.clone(),
    };
    let (done, writer_done) = oneshot::channel();
    tokio::spawn(async move {
        writer::run(SqlTransactor::new(side), queue).await;
        let _ = done.send(());
    });
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
    let sampler = tokio::spawn(sample_pool(pool.clone(), stop.clone()));
    Ok(SqlStore {
        backend: PgBackend {
            pool,
            stop,
            tasks: Mutex::new(vec![publisher, listener, sampler]),
        },
        commands,
        feed,
        deal_reports,
        writer_done: Mutex::new(Some(writer_done)),
    })
}

/// Keeps the pool's metrics: its connections in use and idle, every second.
async fn sample_pool(pool: PgPool, stop: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = every.tick() => {
                let idle = pool.num_idle() as u32;
                crate::telemetry::postgres_pool(pool.size().saturating_sub(idle), idle);
            }
        }
    }
}

/// The read side: a pool, and the tasks that feed this replica's subscribers.
pub(super) struct PgBackend {
    pool: PgPool,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

type PooledConn = PgConn<PoolConnection<Postgres>>;

impl Backend for PgBackend {
    type Conn = PooledConn;
    type Reader<'a> = Box<PooledConn>;

    async fn reader(&self) -> Result<Box<PooledConn>, DbError> {
        let waiting = crate::telemetry::PoolWait::start();
        let conn = self.pool.acquire().await.map_err(pg_error)?;
        drop(waiting);
        Ok(Box::new(PgConn(conn)))
    }

    async fn close(&self) {
        self.stop.cancel();
        for task in self.tasks.lock().await.drain(..) {
            let _ = task.await;
        }
        self.pool.close().await;
    }
}

/// The writer's side: its own connection, connected again after a failure.
struct PgWriteSide {
    options: PgConnectOptions,
    conn: Option<PgConn<Box<PgConnection>>>,
    wake: Arc<Notify>,
    deal_reports: broadcast::Sender<LeadKey>,
}

impl WriteSide for PgWriteSide {
    type Conn = PgConn<Box<PgConnection>>;

    const NAME: &'static str = "postgresql";

    /// Every write transaction commits durably whatever the server's, database's or
    /// role's default, and whatever a pooler in between does with a session's
    /// settings: the transaction sets it itself (in the same round trip).
    const BEGIN: &'static str = "BEGIN; SET LOCAL synchronous_commit = on";
    /// Other replicas write to the same database.
    const SOLE_WRITER: bool = false;

    async fn connection(&mut self) -> Result<&mut PgConn<Box<PgConnection>>, DbError> {
        if self.conn.is_none() {
            let conn = self.options.connect().await.map_err(pg_error)?;
            self.conn = Some(PgConn(Box::new(conn)));
        }
        Ok(self.conn.as_mut().expect("connected just now"))
    }

    fn discard(&mut self) {
        self.conn = None;
    }

    /// Every write transaction takes the counter's lock first and holds it to
    /// commit: writes on all replicas then run one transaction at a time, in
    /// sequence order, so the existence check of a lead sees every committed copy
    /// (the same lead retried on two replicas is one lead), and no other lock is
    /// ever taken before it. The counters it locks are read by the same statement.
    async fn begin_writes(
        conn: &mut PgConn<Box<PgConnection>>,
        _batch: &[Write],
    ) -> Result<Option<(i64, i64)>, DbError> {
        let sql = "SELECT last_sequence, last_version FROM event_counter FOR UPDATE";
        let counters = query_one(conn, sql, &[], |row| Ok((row.int(0)?, row.int(1)?))).await?;
        Ok(Some(counters))
    }

    /// Notifications are sent only if the transaction commits.
    async fn before_commit(
        conn: &mut PgConn<Box<PgConnection>>,
        committed: &Committed,
    ) -> Result<(), DbError> {
        if let Some(last) = committed.events.last() {
            let sequence = last.sequence.to_string();
            let args = [EVENTS_CHANNEL.into(), (&sequence).into()];
            conn.execute("SELECT pg_notify($1, $2)", &args).await?;
        }
        for key in &committed.deal_reports {
            let payload = serde_json::to_string(&[&key.integration, &key.lead_id])
                .map_err(|error| DbError::invalid(error.to_string()))?;
            let args = [DEALS_CHANNEL.into(), (&payload).into()];
            conn.execute("SELECT pg_notify($1, $2)", &args).await?;
        }
        Ok(())
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

/// Publishes committed events to this replica's feed, in order, exactly once each.
async fn publish(
    pool: PgPool,
    feed: broadcast::Sender<Arc<EncodedEvent>>,
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
            let read = async {
                let mut conn = PgConn(pool.acquire().await.map_err(pg_error)?);
                sql::events_after(&mut conn, published, PUBLISH_BATCH).await
            };
            match read.await {
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

async fn connect_listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([EVENTS_CHANNEL, DEALS_CHANNEL]).await?;
    Ok(listener)
}

/// A PostgreSQL connection: the writer's own, or one of the pool's.
pub(super) struct PgConn<C>(C);

fn bind<'q>(
    query: Query<'q, Postgres, PgArguments>,
    arg: Arg<'q>,
) -> Query<'q, Postgres, PgArguments> {
    match arg {
        Arg::Int(value) => query.bind(value),
        Arg::Text(text) => query.bind(text),
        Arg::Bytes(bytes) => query.bind(bytes),
        Arg::NullInt => query.bind(None::<i64>),
        Arg::NullText => query.bind(None::<&str>),
    }
}

impl<C> Conn for PgConn<C>
where
    C: std::ops::DerefMut<Target = PgConnection> + Send,
{
    const SIZE_QUERY: &'static str = "SELECT pg_database_size(current_database())";

    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError> {
        if args.is_empty() {
            // Without arguments, over the simple protocol: nothing to prepare, and
            // several statements (a transaction's start) in one round trip.
            let done = sqlx::Executor::execute(&mut *self.0, sql)
                .await
                .map_err(pg_error)?;
            return Ok(done.rows_affected());
        }
        let query = args
            .iter()
            .fold(sqlx::query(sql), |query, arg| bind(query, *arg));
        let done = query.execute(&mut *self.0).await.map_err(pg_error)?;
        Ok(done.rows_affected())
    }

    async fn query<T, F>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        mut map: F,
    ) -> Result<Vec<T>, DbError>
    where
        T: Send,
        F: FnMut(&dyn Row) -> Result<T, DbError> + Send,
    {
        let query = args
            .iter()
            .fold(sqlx::query(sql), |query, arg| bind(query, *arg));
        let rows = query.fetch_all(&mut *self.0).await.map_err(pg_error)?;
        rows.iter().map(|row| map(&PgRowRef(row))).collect()
    }
}

struct PgRowRef<'a>(&'a PgRow);

impl Row for PgRowRef<'_> {
    fn int(&self, column: usize) -> Result<i64, DbError> {
        self.0.try_get(column).map_err(pg_error)
    }

    fn opt_int(&self, column: usize) -> Result<Option<i64>, DbError> {
        self.0.try_get(column).map_err(pg_error)
    }

    fn text(&self, column: usize) -> Result<&str, DbError> {
        self.0.try_get(column).map_err(pg_error)
    }

    fn opt_text(&self, column: usize) -> Result<Option<&str>, DbError> {
        self.0.try_get(column).map_err(pg_error)
    }

    // Unchecked: a text column's bytes are read as they come too (in the binary
    // protocol, BYTEA and TEXT values are both their bytes).
    fn bytes(&self, column: usize) -> Result<&[u8], DbError> {
        self.0.try_get_unchecked(column).map_err(pg_error)
    }

    fn opt_bytes(&self, column: usize) -> Result<Option<&[u8]>, DbError> {
        self.0.try_get_unchecked(column).map_err(pg_error)
    }
}

/// Connection trouble, timeouts, conflicts between transactions and exhausted
/// resources pass; data exceptions, constraint violations, statement errors and
/// unreadable values do not.
fn pg_error(error: sqlx::Error) -> DbError {
    let invalid = match &error {
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            ["22", "23", "42", "XX"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::TypeNotFound { .. } => true,
        _ => false,
    };
    let source: Source = Arc::new(error);
    if invalid {
        DbError::Invalid(source)
    } else {
        DbError::Unavailable(source)
    }
}
