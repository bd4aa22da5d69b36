//! The embedded SQLite store: one file, WAL journal, every commit fsync'd
//! (`synchronous=FULL`). The writer owns the only write connection on a thread of
//! its own, so a batch runs its statements without handing each to another
//! thread; reads use a small pool of connections beside it, which WAL lets run
//! while the writer commits. Migrations run first, on a connection of their own
//! (`migrate.rs`).

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, ToSql};
use tokio::sync::{Mutex as AsyncMutex, Semaphore, SemaphorePermit, broadcast, mpsc, oneshot};

use super::checkpoint::{self, Checkpointer};
use super::db::{Arg, Conn, DbError, Row, Source};
use super::sql::{self, Backend, SqlStore, SqlTransactor, WriteSide};
use super::writer::{self, Committed, Write};
use super::{DEAL_REPORTS_CAPACITY, OpenError};
use crate::domain::{EncodedEvent, LeadKey};

const READ_CONNECTIONS: usize = 4;
/// How much of the database file a read connection maps rather than copying each
/// page it reads (`SQLITE_MAX_MMAP_SIZE`, set where SQLite is built, allows it).
const READ_MMAP_BYTES: i64 = 1 << 40;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection (multi-row inserts vary in size).
const STATEMENT_CACHE: usize = 1024;

mod migrate;

pub(super) type SqliteStore = SqlStore<SqliteBackend>;

/// Opens (creating if missing) the database at `url` and applies the migrations.
pub(super) async fn open(url: &str, feed_capacity: usize) -> Result<SqliteStore, OpenError> {
    let path =
        migrate::database_path(url).map_err(|reason| OpenError::InvalidUrl(reason.into()))?;
    // One service per file: a second one's writes would interleave with this one's
    // (and its log pages with those gathered here).
    let lock = lock_beside(&path)?;
    let mut migrator = migrate::connect(&path).map_err(OpenError::Connect)?;
    migrate::run(&mut migrator).map_err(|error| OpenError::Migrate(error.into()))?;
    drop(migrator);

    let connect = |path: &Path| SqliteConn::open(path).map_err(OpenError::Connect);
    let mut writer_conn = connect(&path)?;
    // The log is copied into the database file by the checkpointer, not by commits.
    writer_conn
        .conn
        .pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(|error| OpenError::Connect(sqlite_error(error)))?;
    sql::convert_stored(&mut writer_conn, <SqliteWriteSide as WriteSide>::BEGIN)
        .await
        .map_err(OpenError::Convert)?;
    let readers = (0..READ_CONNECTIONS)
        .map(|_| SqliteConn::open_reader(&path).map_err(OpenError::Connect))
        .collect::<Result<Vec<_>, _>>()?;
    let checkpointer = Checkpointer::start(&path).map_err(OpenError::Connect)?;

    let (feed, _) = broadcast::channel(feed_capacity.max(1));
    let (deal_reports, _) = broadcast::channel(DEAL_REPORTS_CAPACITY);
    let (commands, queue) = mpsc::channel(writer::MAX_BATCH * 4);
    let (done, writer_done) = oneshot::channel();
    let side = SqliteWriteSide {
        conn: writer_conn,
        long_log: checkpointer.long_log.clone(),
        last_checkpoint: std::time::Instant::now(),
        feed: feed.clone(),
        deal_reports: deal_reports.clone(),
    };
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            // The writer's statements complete at once: a runtime of its own only
            // carries the queue and the replies.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(writer::run(SqlTransactor::new(side), queue));
            }
            let _ = done.send(());
        })
        .map_err(|error| OpenError::Connect(DbError::Unavailable(Arc::new(error))))?;
    Ok(SqlStore {
        backend: SqliteBackend {
            _lock: lock,
            path,
            idle: std::sync::Mutex::new(readers),
            permits: Semaphore::new(READ_CONNECTIONS),
            checkpointer,
        },
        commands,
        feed,
        deal_reports,
        writer_done: AsyncMutex::new(Some(writer_done)),
    })
}

/// Takes the lock file beside the database (`PATH.lock`), held while the store is
/// open: [`OpenError::Locked`] at once when another process holds it.
fn lock_beside(path: &Path) -> Result<std::fs::File, OpenError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|error| OpenError::Connect(DbError::Unavailable(Arc::new(error))))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::Locked(lock_path)),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(OpenError::Connect(DbError::Unavailable(Arc::new(error))))
        }
    }
}

/// The read side: a pool of connections.
pub(super) struct SqliteBackend {
    /// The lock beside the database, released when the store is dropped.
    _lock: std::fs::File,
    path: PathBuf,
    idle: std::sync::Mutex<Vec<SqliteConn>>,
    permits: Semaphore,
    checkpointer: Checkpointer,
}

/// A read connection taken from the pool, given back when dropped.
pub(super) struct PooledConn<'a> {
    backend: &'a SqliteBackend,
    conn: Option<SqliteConn>,
    _permit: SemaphorePermit<'a>,
}

impl Deref for PooledConn<'_> {
    type Target = SqliteConn;

    fn deref(&self) -> &SqliteConn {
        self.conn.as_ref().expect("held until dropped")
    }
}

impl DerefMut for PooledConn<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConn {
        self.conn.as_mut().expect("held until dropped")
    }
}

impl Drop for PooledConn<'_> {
    fn drop(&mut self) {
        if let (Some(conn), Ok(mut idle)) = (self.conn.take(), self.backend.idle.lock()) {
            idle.push(conn);
        }
    }
}

impl Backend for SqliteBackend {
    type Conn = SqliteConn;
    type Reader<'a> = PooledConn<'a>;

    async fn reader(&self) -> Result<PooledConn<'_>, DbError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| DbError::unavailable("store is closed"))?;
        let taken = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match taken {
            Some(conn) => conn,
            // A connection lost to a panic: open another.
            None => SqliteConn::open(&self.path)?,
        };
        Ok(PooledConn {
            backend: self,
            conn: Some(conn),
            _permit: permit,
        })
    }

    async fn close(&self) {
        self.permits.close();
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        self.checkpointer.stop().await;
    }
}

/// The writer's side: its connection, and the in-process feeds it announces to.
struct SqliteWriteSide {
    conn: SqliteConn,
    /// Set by the checkpointer when the log has grown long.
    long_log: Arc<AtomicBool>,
    /// When the writer last checkpointed between writes.
    last_checkpoint: std::time::Instant,
    feed: broadcast::Sender<Arc<EncodedEvent>>,
    deal_reports: broadcast::Sender<LeadKey>,
}

impl WriteSide for SqliteWriteSide {
    type Conn = SqliteConn;
    const NAME: &'static str = "sqlite";
    /// Takes the write lock at once, so a busy database is waited for up front.
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    /// The file is locked to this process: its writer is the only one.
    const SOLE_WRITER: bool = true;

    fn connection(&mut self) -> impl Future<Output = Result<&mut SqliteConn, DbError>> + Send {
        std::future::ready(Ok(&mut self.conn))
    }

    /// A local file does not break like a network connection: keep it.
    fn discard(&mut self) {}

    /// One process writes: nothing to coordinate.
    fn begin_writes(
        _conn: &mut SqliteConn,
        _batch: &[Write],
    ) -> impl Future<Output = Result<Option<(i64, i64)>, DbError>> + Send {
        std::future::ready(Ok(None))
    }

    /// Subscribers in this process learn of commits from `announce`.
    fn before_commit(
        _conn: &mut SqliteConn,
        _committed: &Committed,
    ) -> impl Future<Output = Result<(), DbError>> + Send {
        std::future::ready(Ok(()))
    }

    /// Lets a long log start over: the checkpointer copies it into the database
    /// file in the background, but only a checkpoint between two writes can find it
    /// fully copied, which SQLite needs to reuse it from the start. Done when no
    /// write waits, or, under writes that never pause, when overdue.
    fn upkeep(&mut self, idle: bool) {
        if !self.long_log.load(Ordering::Relaxed) {
            return;
        }
        if idle || self.last_checkpoint.elapsed() >= checkpoint::WRITER_OVERDUE {
            self.long_log.store(false, Ordering::Relaxed);
            self.last_checkpoint = std::time::Instant::now();
            checkpoint::passive(&self.conn.conn);
        }
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

/// A SQLite connection. Its statements run to completion when called: on a
/// runtime's worker thread the runtime is told the thread blocks meanwhile.
pub(super) struct SqliteConn {
    conn: Connection,
    /// The statement being run, with `$N` placeholders turned into `?N`.
    sql: String,
}

impl SqliteConn {
    fn open(path: &Path) -> Result<Self, DbError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // Every commit reaches the disk before it is acknowledged
        // (`synchronous=FULL`, which the VFS that gathers a commit's log writes
        // into one write also needs: `wal_coalesce::open` sets it).
        let conn = wal_coalesce::open(path, flags).map_err(sqlite_error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
        // A statement's own journal (kept while it may still be undone) stays in
        // memory rather than in a temporary file.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(sqlite_error)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Self {
            conn,
            sql: String::new(),
        })
    }

    /// A read connection: it maps the database file (the log is read as usual), so
    /// that reading a page costs no copy and no system call.
    fn open_reader(path: &Path) -> Result<Self, DbError> {
        let reader = Self::open(path)?;
        reader
            .conn
            .pragma_update(None, "mmap_size", READ_MMAP_BYTES)
            .map_err(sqlite_error)?;
        Ok(reader)
    }

    fn run<T>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        work: impl FnOnce(&mut rusqlite::Statement<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        // Statements built with `?N` already go as they are.
        let sql = if sql.contains('$') {
            numbered_placeholders(sql, &mut self.sql);
            self.sql.as_str()
        } else {
            sql
        };
        let conn = &self.conn;
        blocking(|| {
            let mut statement = conn.prepare_cached(sql)?;
            for (index, arg) in args.iter().enumerate() {
                statement.raw_bind_parameter(index + 1, SqlArg(*arg))?;
            }
            work(&mut statement)
        })
        .map_err(sqlite_error)
    }
}

impl Conn for SqliteConn {
    const INSERT_CHECKED: &'static str = "INSERT OR IGNORE";
    const PLACEHOLDER: char = '?';
    const SIZE_QUERY: &'static str =
        "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()";

    fn execute(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<u64, DbError>> + Send {
        let result = self.run(sql, args, |statement| statement.raw_execute());
        std::future::ready(result.map(|changed| changed as u64))
    }

    fn query<T, F>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        mut map: F,
    ) -> impl Future<Output = Result<Vec<T>, DbError>> + Send
    where
        T: Send,
        F: FnMut(&dyn Row) -> Result<T, DbError> + Send,
    {
        let mut mapped = Ok(Vec::new());
        let result = self.run(sql, args, |statement| {
            let mut rows = statement.raw_query();
            while let Some(row) = rows.next()? {
                match (&mut mapped, map(&SqliteRow(row))) {
                    (Ok(records), Ok(record)) => records.push(record),
                    (_, Err(error)) => {
                        mapped = Err(error);
                        break;
                    }
                    (Err(_), Ok(_)) => break,
                }
            }
            Ok(())
        });
        std::future::ready(result.and(mapped))
    }
}

/// Runs `work`, which blocks, telling a multi-threaded runtime so that its other
/// tasks move to another thread meanwhile.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// `$N` placeholders (what PostgreSQL takes) as `?N`, which SQLite binds by number
/// without looking names up.
fn numbered_placeholders(sql: &str, out: &mut String) {
    out.clear();
    let bytes = sql.as_bytes();
    let mut copied = 0;
    for (at, _) in sql.match_indices('$') {
        if bytes.get(at + 1).is_some_and(u8::is_ascii_digit) {
            out.push_str(&sql[copied..at]);
            out.push('?');
            copied = at + 1;
        }
    }
    out.push_str(&sql[copied..]);
}

struct SqlArg<'a>(Arg<'a>);

impl ToSql for SqlArg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Arg::Int(value) => ValueRef::Integer(value),
            Arg::Text(text) => ValueRef::Text(text.as_bytes()),
            Arg::Bytes(bytes) => ValueRef::Blob(bytes),
            Arg::NullInt | Arg::NullText => ValueRef::Null,
        }))
    }
}

struct SqliteRow<'a, 'b>(&'a rusqlite::Row<'b>);

impl SqliteRow<'_, '_> {
    fn value(&self, column: usize) -> Result<ValueRef<'_>, DbError> {
        self.0.get_ref(column).map_err(sqlite_error)
    }
}

fn wrong_type(column: usize, value: ValueRef<'_>) -> DbError {
    DbError::invalid(format!(
        "column {column} holds a {:?}, not the expected type",
        value.data_type()
    ))
}

impl Row for SqliteRow<'_, '_> {
    fn int(&self, column: usize) -> Result<i64, DbError> {
        self.opt_int(column)?
            .ok_or_else(|| DbError::invalid(format!("column {column} is NULL")))
    }

    fn opt_int(&self, column: usize) -> Result<Option<i64>, DbError> {
        match self.value(column)? {
            ValueRef::Integer(value) => Ok(Some(value)),
            ValueRef::Null => Ok(None),
            other => Err(wrong_type(column, other)),
        }
    }

    fn text(&self, column: usize) -> Result<&str, DbError> {
        self.opt_text(column)?
            .ok_or_else(|| DbError::invalid(format!("column {column} is NULL")))
    }

    fn opt_text(&self, column: usize) -> Result<Option<&str>, DbError> {
        match self.value(column)? {
            ValueRef::Text(bytes) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| DbError::invalid(format!("column {column} is not UTF-8"))),
            ValueRef::Null => Ok(None),
            other => Err(wrong_type(column, other)),
        }
    }

    fn bytes(&self, column: usize) -> Result<&[u8], DbError> {
        self.opt_bytes(column)?
            .ok_or_else(|| DbError::invalid(format!("column {column} is NULL")))
    }

    fn opt_bytes(&self, column: usize) -> Result<Option<&[u8]>, DbError> {
        match self.value(column)? {
            ValueRef::Blob(bytes) | ValueRef::Text(bytes) => Ok(Some(bytes)),
            ValueRef::Null => Ok(None),
            other => Err(wrong_type(column, other)),
        }
    }
}

/// A failure the database may get over (busy, locked, a full disk) is transient;
/// anything else means the data or the statement is wrong.
fn sqlite_error(error: rusqlite::Error) -> DbError {
    let transient = match &error {
        rusqlite::Error::SqliteFailure(failure, _) => matches!(
            failure.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
                | ErrorCode::ReadOnly
                | ErrorCode::PermissionDenied
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::OperationInterrupted
        ),
        _ => false,
    };
    let source: Source = Arc::new(error);
    if transient {
        DbError::Unavailable(source)
    } else {
        DbError::Invalid(source)
    }
}

#[cfg(test)]
mod tests;
