//! A SQLite VFS over the platform's default one that gathers the writes SQLite
//! makes to a write-ahead log (`-wal` file) and hands them to the operating system
//! as one write when SQLite syncs the log, instead of two writes for every frame
//! (a 24-byte header, then the page).
//!
//! A commit of twenty pages is forty system calls on the default VFS, and on a
//! virtual machine a write that dirties a clean page-cache page costs several
//! microseconds however small it is; gathered, the same commit is one call of the
//! same bytes.
//!
//! What SQLite sees does not change: the bytes reach the file in the order SQLite
//! wrote them, and before anything that could observe them, namely a sync, a read,
//! the file's size, a truncation, a file control or closing the file, each of which
//! first writes what is gathered. Only log files are gathered; the database file
//! and every other file are the default VFS's own.
//!
//! What is gathered and never synced belongs to no committed transaction: with
//! `synchronous=FULL` a commit always ends with a sync of the log. So when SQLite
//! releases a connection's write lock (after a commit, or a rollback of a
//! transaction that spilled pages to the log), whatever is still gathered is
//! discarded, never written later over frames another connection may since have
//! committed at the same offsets.
//!
//! **Use it only with `synchronous=FULL` (or `EXTRA`) on every connection that
//! writes.** SQLite publishes a commit to other connections (in the shared-memory
//! index) after it syncs the log when the connection syncs at commit; a connection
//! that commits without a sync (`NORMAL`, `OFF`) would publish frames still gathered
//! here, which another connection could then read from the file before they are in
//! it. [`open`] sets `synchronous=FULL` on every connection it opens.

#![deny(unsafe_op_in_unsafe_fn)]

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::Path;
use std::ptr;
use std::sync::{Mutex, OnceLock};

use rusqlite::ffi;
use rusqlite::{Connection, OpenFlags};

/// The VFS's registered name.
pub const NAME: &str = "wal-coalesce";
const NAME_C: &CStr = c"wal-coalesce";

/// The most bytes gathered before they are written out anyway.
const GATHER_LIMIT: usize = 4 << 20;
/// The most bytes handed to the default VFS in one write: the unix VFS takes at
/// most 128 KiB less one byte a call (it masks the length to 17 bits), so
/// gathered bytes go out in page-aligned pieces below that.
const WRITE_PIECE: usize = 124 << 10;
/// The buffer kept between syncs; a larger one (a big transaction's) is released.
const KEPT_CAPACITY: usize = 1 << 20;

/// Writes handed to the default VFS for log files, counted for the tests.
#[cfg(test)]
static LOG_WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_log_write() {
    #[cfg(test)]
    LOG_WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Registers the VFS (once per process) under [`NAME`], beside the default VFS,
/// which stays the default.
pub fn register() -> Result<&'static str, rusqlite::Error> {
    static REGISTERED: OnceLock<c_int> = OnceLock::new();
    let code = *REGISTERED.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find initialises SQLite and returns the default VFS,
        // which lives for the rest of the process, or null.
        let base = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
        if base.is_null() {
            return ffi::SQLITE_ERROR;
        }
        // SAFETY: `base` is a valid VFS; the new one is leaked, so it outlives
        // every connection, as SQLite requires of a registered VFS.
        unsafe {
            let vfs = Box::leak(Box::new(coalescing_vfs(base, NAME_C)));
            ffi::sqlite3_vfs_register(vfs, 0)
        }
    });
    if code == ffi::SQLITE_OK {
        Ok(NAME)
    } else {
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None))
    }
}

/// Opens a connection through this VFS with `synchronous=FULL`, which it needs.
pub fn open(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let vfs = register()?;
    let conn = Connection::open_with_flags_and_vfs(path, flags, vfs)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// A file as SQLite holds it: the default VFS's file follows it in the same
/// allocation (SQLite allocates `szOsFile` bytes and hands them to `xOpen`).
#[repr(C)]
struct File {
    /// What SQLite sees: must come first.
    base: ffi::sqlite3_file,
    /// The default VFS's file, right after this struct.
    inner: *mut ffi::sqlite3_file,
    /// For a log file: the bytes gathered since the last write to the file.
    gathered: Option<Box<Gathered>>,
    /// The database's name as SQLite passed it to `xOpen` (for a database file:
    /// its own; for a log file: its database's), which identifies one
    /// connection's pager: its files share the allocation of their names.
    database: usize,
}

/// The gathered bytes of each connection's log, by its database name's address
/// (see [`File::database`]), so that releasing the write lock on the database file
/// reaches them.
struct Logs(HashMap<usize, *mut Gathered>);

// SAFETY: a pointer is used only by the connection that owns both files, on the
// thread that is using that connection (SQLite calls a connection's VFS methods
// from one thread at a time); the map only keeps them.
unsafe impl Send for Logs {}

fn logs() -> &'static Mutex<Logs> {
    static LOGS: OnceLock<Mutex<Logs>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Logs(HashMap::new())))
}

/// The offset of the log's write lock among the shared-memory locks (`WAL_WRITE_LOCK`
/// in SQLite's `wal.c`).
const WAL_WRITE_LOCK: c_int = 0;

/// Contiguous bytes not written yet, and where they go.
#[derive(Default)]
struct Gathered {
    offset: i64,
    bytes: Vec<u8>,
}

/// The default VFS, kept in our VFS's `pAppData`.
///
/// # Safety
/// `vfs` must be the VFS made by [`coalescing_vfs`].
unsafe fn base_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: by the caller, `vfs` is ours, and its pAppData is the default VFS.
    unsafe { (*vfs).pAppData.cast() }
}

/// Our VFS over `base`, named `name`: files open through it, everything else is
/// `base`'s.
///
/// # Safety
/// `base` must be a valid, registered VFS that outlives the result.
unsafe fn coalescing_vfs(base: *mut ffi::sqlite3_vfs, name: &'static CStr) -> ffi::sqlite3_vfs {
    // SAFETY: by the caller, `base` is valid.
    let b = unsafe { &*base };
    let header = std::mem::size_of::<File>();
    ffi::sqlite3_vfs {
        iVersion: b.iVersion.min(3),
        szOsFile: (header + b.szOsFile as usize) as c_int,
        mxPathname: b.mxPathname,
        pNext: ptr::null_mut(),
        zName: name.as_ptr(),
        pAppData: base.cast(),
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: Some(x_dl_open),
        xDlError: Some(x_dl_error),
        xDlSym: Some(x_dl_sym),
        xDlClose: Some(x_dl_close),
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: b.xCurrentTimeInt64.and(Some(x_current_time_int64)),
        // System calls are the default VFS's to override, not ours.
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    }
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite hands `xOpen` `szOsFile` bytes at `file`, aligned for any
    // struct (sqlite3_malloc is 8-aligned, File's alignment), so a File and the
    // default VFS's file after it fit; `vfs` is ours.
    unsafe {
        let base = base_vfs(vfs);
        let inner = file
            .cast::<u8>()
            .add(std::mem::size_of::<File>())
            .cast::<ffi::sqlite3_file>();
        (*inner).pMethods = ptr::null();
        let Some(open) = (*base).xOpen else {
            (*file).pMethods = ptr::null();
            return ffi::SQLITE_ERROR;
        };
        let code = open(base, name, inner, flags, out_flags);
        if code != ffi::SQLITE_OK {
            // SQLite calls xClose only when pMethods is set: close what the
            // default VFS may have left open, and leave ours unset.
            close_inner(inner);
            (*file).pMethods = ptr::null();
            return code;
        }
        let is_log = flags & ffi::SQLITE_OPEN_WAL != 0;
        let mut gathered = is_log.then(Box::<Gathered>::default);
        let database = if name.is_null() {
            0
        } else if is_log {
            // SAFETY: SQLite passes a log file's name as an sqlite3_filename.
            ffi::sqlite3_filename_database(name) as usize
        } else {
            name as usize
        };
        if let Some(gathered) = gathered.as_mut()
            && database != 0
        {
            let pointer: *mut Gathered = &mut **gathered;
            logs()
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0
                .insert(database, pointer);
        }
        ptr::write(
            file.cast::<File>(),
            File {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                inner,
                gathered,
                database,
            },
        );
        code
    }
}

/// Closes the default VFS's file if it was opened.
///
/// # Safety
/// `inner` must be a file the default VFS's `xOpen` was given.
unsafe fn close_inner(inner: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: by the caller; pMethods is set only when the file is open.
    unsafe {
        match (*inner)
            .pMethods
            .as_ref()
            .and_then(|methods| methods.xClose)
        {
            Some(close) => close(inner),
            None => ffi::SQLITE_OK,
        }
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

/// Our file, and the default VFS's methods for its inner file.
///
/// # Safety
/// `file` must be a file opened by [`x_open`] and not closed.
unsafe fn parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (
    &'a mut File,
    *mut ffi::sqlite3_file,
    &'a ffi::sqlite3_io_methods,
) {
    // SAFETY: by the caller, `file` is an open File whose inner file is open, so
    // its methods are set.
    unsafe {
        let ours = &mut *file.cast::<File>();
        let inner = ours.inner;
        let methods = &*(*inner).pMethods;
        (ours, inner, methods)
    }
}

/// Writes what is gathered to the file.
///
/// # Safety
/// As [`parts`].
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: by the caller.
    let (ours, inner, methods) = unsafe { parts(file) };
    let Some(gathered) = ours.gathered.as_mut() else {
        return ffi::SQLITE_OK;
    };
    if gathered.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    let Some(write) = methods.xWrite else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let mut code = ffi::SQLITE_OK;
    let mut offset = gathered.offset;
    for piece in gathered.bytes.chunks(WRITE_PIECE) {
        // SAFETY: the piece is valid for its length (under WRITE_PIECE, so it fits
        // a c_int); `inner` is open.
        count_log_write();
        code = unsafe { write(inner, piece.as_ptr().cast(), piece.len() as c_int, offset) };
        if code != ffi::SQLITE_OK {
            break;
        }
        offset += piece.len() as i64;
    }
    // Written or not, the bytes are gone: a failed write fails what SQLite is doing
    // (its sync, read or close), as the write itself would have.
    gathered.bytes.clear();
    if gathered.bytes.capacity() > KEPT_CAPACITY {
        gathered.bytes.shrink_to(KEPT_CAPACITY);
    }
    code
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes an open file once; after it, the File is dropped in
    // place and never used again.
    unsafe {
        let flushed = flush(file);
        let (ours, inner, _) = parts(file);
        let closed = close_inner(inner);
        if ours.gathered.is_some() {
            let mut logs = logs()
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let ours_registered = logs
                .0
                .get(&ours.database)
                .is_some_and(|&pointer| ptr::eq(pointer, &**ours.gathered.as_ref().unwrap()));
            if ours_registered {
                logs.0.remove(&ours.database);
            }
        }
        drop(ours.gathered.take());
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: `file` is open (SQLite's contract); `data` holds `amount` bytes.
    unsafe {
        let (ours, inner, methods) = parts(file);
        let size = usize::try_from(amount).unwrap_or(0);
        let Some(gathered) = ours.gathered.as_mut() else {
            return methods.xWrite.map_or(ffi::SQLITE_IOERR_WRITE, |write| {
                write(inner, data, amount, offset)
            });
        };
        let end = gathered.offset + gathered.bytes.len() as i64;
        let contiguous = !gathered.bytes.is_empty() && offset == end;
        if contiguous && gathered.bytes.len() + size <= GATHER_LIMIT {
            gathered
                .bytes
                .extend_from_slice(std::slice::from_raw_parts(data.cast(), size));
            return ffi::SQLITE_OK;
        }
        // Not where the gathered bytes end: they go out first, so that writes
        // reach the file in SQLite's order.
        let code = flush(file);
        if code != ffi::SQLITE_OK {
            return code;
        }
        let (ours, inner, methods) = parts(file);
        if size >= WRITE_PIECE {
            count_log_write();
            return methods.xWrite.map_or(ffi::SQLITE_IOERR_WRITE, |write| {
                write(inner, data, amount, offset)
            });
        }
        if let Some(gathered) = ours.gathered.as_mut() {
            gathered.offset = offset;
            gathered
                .bytes
                .extend_from_slice(std::slice::from_raw_parts(data.cast(), size));
        }
        ffi::SQLITE_OK
    }
}

/// Declares a method that first writes out what is gathered, then calls the
/// default VFS's method of the same name, or answers `$missing` without one.
macro_rules! flushing {
    ($name:ident => $method:ident ( $($arg:ident : $ty:ty),* ), $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: SQLite calls file methods on open files only.
            unsafe {
                let code = flush(file);
                if code != ffi::SQLITE_OK {
                    return code;
                }
                let (_, inner, methods) = parts(file);
                match methods.$method {
                    Some(method) => method(inner $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

/// Declares a method passed to the default VFS as it is.
macro_rules! passed {
    ($name:ident => $method:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty, $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            // SAFETY: SQLite calls file methods on open files only.
            unsafe {
                let (_, inner, methods) = parts(file);
                match methods.$method {
                    Some(method) => method(inner $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

flushing!(x_read => xRead(buffer: *mut c_void, amount: c_int, offset: i64), ffi::SQLITE_IOERR_READ);
flushing!(x_truncate => xTruncate(size: i64), ffi::SQLITE_IOERR_TRUNCATE);
flushing!(x_sync => xSync(flags: c_int), ffi::SQLITE_IOERR_FSYNC);
flushing!(x_file_size => xFileSize(size: *mut i64), ffi::SQLITE_IOERR_FSTAT);
flushing!(x_file_control => xFileControl(op: c_int, arg: *mut c_void), ffi::SQLITE_NOTFOUND);
passed!(x_lock => xLock(level: c_int) -> c_int, ffi::SQLITE_OK);
passed!(x_unlock => xUnlock(level: c_int) -> c_int, ffi::SQLITE_OK);
passed!(x_check_reserved_lock => xCheckReservedLock(out: *mut c_int) -> c_int, ffi::SQLITE_OK);
passed!(x_sector_size => xSectorSize() -> c_int, 4096);
passed!(x_device_characteristics => xDeviceCharacteristics() -> c_int, 0);

/// Declares a method of io-methods version 2 or 3, passed on when the default
/// VFS's file has it.
macro_rules! versioned {
    ($name:ident => $method:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty, $version:expr, $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            // SAFETY: SQLite calls file methods on open files only; a method beyond
            // the default file's version is not read.
            unsafe {
                let (_, inner, methods) = parts(file);
                match (methods.iVersion >= $version).then_some(methods.$method).flatten() {
                    Some(method) => method(inner $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

versioned!(x_shm_map => xShmMap(region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int, 2, ffi::SQLITE_IOERR_SHMMAP);
unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: as the other methods: `file` is an open database file.
    unsafe {
        let (ours, inner, methods) = parts(file);
        let releases_write_lock = offset <= WAL_WRITE_LOCK
            && offset + n > WAL_WRITE_LOCK
            && flags == ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE;
        if releases_write_lock {
            // Before another connection may write the log: what this one still
            // gathers was never synced, so it is part of no committed transaction.
            let logs = logs()
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(&gathered) = logs.0.get(&ours.database) {
                (*gathered).bytes.clear();
            }
        }
        match (methods.iVersion >= 2)
            .then_some(methods.xShmLock)
            .flatten()
        {
            Some(lock) => lock(inner, offset, n, flags),
            None => ffi::SQLITE_IOERR_SHMLOCK,
        }
    }
}
versioned!(x_shm_barrier => xShmBarrier() -> (), 2, ());
versioned!(x_shm_unmap => xShmUnmap(delete: c_int) -> c_int, 2, ffi::SQLITE_OK);
versioned!(x_unfetch => xUnfetch(offset: i64, page: *mut c_void) -> c_int, 3, ffi::SQLITE_OK);

unsafe extern "C" fn x_fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: as the other methods; without memory mapping, SQLite reads instead.
    unsafe {
        let code = flush(file);
        if code != ffi::SQLITE_OK {
            return code;
        }
        let (_, inner, methods) = parts(file);
        match (methods.iVersion >= 3).then_some(methods.xFetch).flatten() {
            Some(fetch) => fetch(inner, offset, amount, out),
            None => {
                *out = ptr::null_mut();
                ffi::SQLITE_OK
            }
        }
    }
}

/// Declares a VFS method passed to the default VFS.
macro_rules! vfs_passed {
    ($name:ident => $method:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty, $missing:expr) => {
        unsafe extern "C" fn $name(vfs: *mut ffi::sqlite3_vfs $(, $arg: $ty)*) -> $ret {
            // SAFETY: SQLite calls these on our registered VFS.
            unsafe {
                let base = base_vfs(vfs);
                match (*base).$method {
                    Some(method) => method(base $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

vfs_passed!(x_delete => xDelete(name: *const c_char, sync_dir: c_int) -> c_int, ffi::SQLITE_IOERR_DELETE);
vfs_passed!(x_access => xAccess(name: *const c_char, flags: c_int, out: *mut c_int) -> c_int, ffi::SQLITE_IOERR_ACCESS);
vfs_passed!(x_full_pathname => xFullPathname(name: *const c_char, size: c_int, out: *mut c_char) -> c_int, ffi::SQLITE_ERROR);
vfs_passed!(x_dl_open => xDlOpen(name: *const c_char) -> *mut c_void, ptr::null_mut());
vfs_passed!(x_dl_error => xDlError(size: c_int, out: *mut c_char) -> (), ());
vfs_passed!(x_dl_close => xDlClose(handle: *mut c_void) -> (), ());
vfs_passed!(x_randomness => xRandomness(size: c_int, out: *mut c_char) -> c_int, 0);
vfs_passed!(x_sleep => xSleep(micros: c_int) -> c_int, 0);
vfs_passed!(x_current_time => xCurrentTime(out: *mut f64) -> c_int, ffi::SQLITE_ERROR);
vfs_passed!(x_get_last_error => xGetLastError(size: c_int, out: *mut c_char) -> c_int, 0);
vfs_passed!(x_current_time_int64 => xCurrentTimeInt64(out: *mut i64) -> c_int, ffi::SQLITE_ERROR);

type DlSym = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char);

unsafe extern "C" fn x_dl_sym(
    vfs: *mut ffi::sqlite3_vfs,
    handle: *mut c_void,
    symbol: *const c_char,
) -> Option<DlSym> {
    // SAFETY: as the other VFS methods.
    unsafe {
        let base = base_vfs(vfs);
        (*base)
            .xDlSym
            .and_then(|method| method(base, handle, symbol))
    }
}

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;
