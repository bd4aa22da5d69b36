//! A power cut, simulated, in the manner of SQLite's own crash tests (its test VFS
//! that "crashes" by dropping writes not yet synced).
//!
//! A test VFS (`crash`) sits below the one under test and passes everything to the
//! platform's default VFS, while it records, for each file, what was written (and
//! truncated) since that file's last sync, over an image of the file as of that
//! sync. At chosen points during a workload the power "fails": each write not yet
//! synced is dropped, kept, or torn at a 512-byte boundary, at random, from a seed
//! printed on failure. The database and its log as the disk would then hold them
//! are written to a directory of their own and opened with the plain VFS: the
//! database must be whole (`integrity_check`), every transaction the workload saw
//! committed must be there whole, and no other but the one in flight may be there,
//! and only whole.
//!
//! The workload commits transactions of every size (a row to past what the VFS
//! gathers at once), checkpoints, and starts the log over (`RESTART`, `TRUNCATE`).
//! It runs on wal-coalesce over the crash VFS, and, as the control, on the crash VFS
//! alone. `CRASH_POINTS` (a factor, default 1) makes it longer; `CRASH_SEED` picks
//! the seed.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::Path;
use std::ptr;
use std::sync::{Mutex, MutexGuard, OnceLock};

use rusqlite::{Connection, OpenFlags, ffi};

use super::{GATHER_LIMIT, coalescing_vfs};

const CRASH_NAME: &CStr = c"crash-test";
const COALESCING_NAME: &CStr = c"wal-coalesce-over-crash-test";

/// What happened to a file since its last sync, in order.
#[derive(Clone)]
enum Op {
    Write { offset: usize, bytes: Vec<u8> },
    Truncate { size: usize },
}

/// A file as the disk holds it for sure (as of its last sync), and what came since.
#[derive(Default, Clone)]
struct Model {
    durable: Vec<u8>,
    pending: Vec<Op>,
}

impl Model {
    fn apply(image: &mut Vec<u8>, op: &Op) {
        match op {
            Op::Write { offset, bytes } => {
                let end = offset + bytes.len();
                if image.len() < end {
                    image.resize(end, 0);
                }
                image[*offset..end].copy_from_slice(bytes);
            }
            Op::Truncate { size } => image.truncate(*size),
        }
    }

    fn sync(&mut self) {
        for op in std::mem::take(&mut self.pending) {
            Self::apply(&mut self.durable, &op);
        }
    }

    /// The file after a power cut: each write since the sync dropped, kept or torn.
    fn after_cut(&self, rng: &mut Rng) -> Vec<u8> {
        let end = self
            .pending
            .iter()
            .fold(self.durable.len(), |end, op| match op {
                Op::Write { offset, bytes } => end.max(offset + bytes.len()),
                Op::Truncate { .. } => end,
            });
        let mut image = Vec::with_capacity(end);
        image.extend_from_slice(&self.durable);
        for op in &self.pending {
            match (rng.below(3), op) {
                (0, _) => {}
                (1, op) => Self::apply(&mut image, op),
                (_, Op::Write { offset, bytes }) => {
                    // Torn: the sectors up to a 512-byte boundary inside it reached
                    // the disk, the rest did not.
                    let sectors = bytes.len().div_ceil(512);
                    let kept = (rng.below(sectors as u64) as usize * 512).min(bytes.len());
                    let torn = Op::Write {
                        offset: *offset,
                        bytes: bytes[..kept].to_vec(),
                    };
                    Self::apply(&mut image, &torn);
                }
                (_, op) => Self::apply(&mut image, op),
            }
        }
        image
    }
}

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next() % bound }
    }
}

/// The disk after one power cut, and what the workload had seen committed then.
struct Cut {
    files: Vec<(String, Vec<u8>)>,
    committed: Vec<u64>,
    in_flight: Option<u64>,
}

/// What the crash VFS knows, shared by its files.
struct State {
    files: HashMap<String, Model>,
    calls: u64,
    /// A power cut is taken every this many writes, truncations and syncs.
    every: u64,
    rng: Rng,
    committed: Vec<u64>,
    in_flight: Option<u64>,
    cuts: Vec<Cut>,
}

impl State {
    /// Counts a call that changes a file, and takes a cut when one is due (before
    /// the call: what it does has not reached the disk).
    fn tick(&mut self) {
        self.calls += 1;
        if !self.calls.is_multiple_of(self.every) {
            return;
        }
        let rng = &mut self.rng;
        let mut files: Vec<(String, Vec<u8>)> = self
            .files
            .iter()
            .map(|(path, model)| (path.clone(), model.after_cut(rng)))
            .collect();
        files.sort();
        self.cuts.push(Cut {
            files,
            committed: self.committed.clone(),
            in_flight: self.in_flight,
        });
    }
}

fn state() -> MutexGuard<'static, Option<State>> {
    static STATE: Mutex<Option<State>> = Mutex::new(None);
    STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn with_state<T>(f: impl FnOnce(&mut State) -> T) -> Option<T> {
    state().as_mut().map(f)
}

/// A file of the crash VFS: the default VFS's file follows it, as in wal-coalesce.
#[repr(C)]
struct CrashFile {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    path: String,
}

unsafe fn crash_parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (
    &'a CrashFile,
    *mut ffi::sqlite3_file,
    &'a ffi::sqlite3_io_methods,
) {
    // SAFETY: SQLite calls methods on files `crash_open` opened.
    unsafe {
        let ours = &*file.cast::<CrashFile>();
        (ours, ours.inner, &*(*ours.inner).pMethods)
    }
}

unsafe extern "C" fn crash_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: as wal-coalesce's `x_open`: `szOsFile` bytes at `file`.
    unsafe {
        let base: *mut ffi::sqlite3_vfs = (*vfs).pAppData.cast();
        let inner = file
            .cast::<u8>()
            .add(std::mem::size_of::<CrashFile>())
            .cast::<ffi::sqlite3_file>();
        (*inner).pMethods = ptr::null();
        let code = (*base).xOpen.unwrap()(base, name, inner, flags, out_flags);
        if code != ffi::SQLITE_OK {
            if let Some(close) = (*inner).pMethods.as_ref().and_then(|m| m.xClose) {
                close(inner);
            }
            (*file).pMethods = ptr::null();
            return code;
        }
        let path = if name.is_null() {
            String::new()
        } else {
            CStr::from_ptr(name).to_string_lossy().into_owned()
        };
        with_state(|state| {
            state.files.entry(path.clone()).or_default();
        });
        ptr::write(
            file.cast::<CrashFile>(),
            CrashFile {
                base: ffi::sqlite3_file {
                    pMethods: &CRASH_METHODS,
                },
                inner,
                path,
            },
        );
        code
    }
}

unsafe extern "C" fn crash_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: closed once; the path is dropped in place.
    unsafe {
        let (_, inner, methods) = crash_parts(file);
        let code = methods.xClose.map_or(ffi::SQLITE_OK, |close| close(inner));
        ptr::drop_in_place(&mut (*file.cast::<CrashFile>()).path);
        code
    }
}

unsafe extern "C" fn crash_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: `data` holds `amount` bytes.
    unsafe {
        let (ours, inner, methods) = crash_parts(file);
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), amount as usize).to_vec();
        with_state(|state| {
            state.tick();
            if let Some(model) = state.files.get_mut(&ours.path) {
                model.pending.push(Op::Write {
                    offset: offset as usize,
                    bytes,
                });
            }
        });
        methods.xWrite.unwrap()(inner, data, amount, offset)
    }
}

unsafe extern "C" fn crash_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: as the other methods.
    unsafe {
        let (ours, inner, methods) = crash_parts(file);
        with_state(|state| {
            state.tick();
            if let Some(model) = state.files.get_mut(&ours.path) {
                model.pending.push(Op::Truncate {
                    size: size as usize,
                });
            }
        });
        methods.xTruncate.unwrap()(inner, size)
    }
}

unsafe extern "C" fn crash_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: as the other methods.
    unsafe {
        let (ours, inner, methods) = crash_parts(file);
        let code = methods.xSync.unwrap()(inner, flags);
        with_state(|state| {
            state.tick();
            if code == ffi::SQLITE_OK
                && let Some(model) = state.files.get_mut(&ours.path)
            {
                model.sync();
            }
        });
        code
    }
}

macro_rules! crash_passed {
    ($name:ident => $method:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty, $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            // SAFETY: SQLite calls file methods on open files only.
            unsafe {
                let (_, inner, methods) = crash_parts(file);
                match methods.$method {
                    Some(method) => method(inner $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

crash_passed!(crash_read => xRead(buffer: *mut c_void, amount: c_int, offset: i64) -> c_int, ffi::SQLITE_IOERR_READ);
crash_passed!(crash_file_size => xFileSize(size: *mut i64) -> c_int, ffi::SQLITE_IOERR_FSTAT);
crash_passed!(crash_lock => xLock(level: c_int) -> c_int, ffi::SQLITE_OK);
crash_passed!(crash_unlock => xUnlock(level: c_int) -> c_int, ffi::SQLITE_OK);
crash_passed!(crash_check_reserved_lock => xCheckReservedLock(out: *mut c_int) -> c_int, ffi::SQLITE_OK);
crash_passed!(crash_file_control => xFileControl(op: c_int, arg: *mut c_void) -> c_int, ffi::SQLITE_NOTFOUND);
crash_passed!(crash_sector_size => xSectorSize() -> c_int, 4096);
crash_passed!(crash_device_characteristics => xDeviceCharacteristics() -> c_int, 0);
crash_passed!(crash_shm_map => xShmMap(region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int, ffi::SQLITE_IOERR_SHMMAP);
crash_passed!(crash_shm_lock => xShmLock(offset: c_int, n: c_int, flags: c_int) -> c_int, ffi::SQLITE_IOERR_SHMLOCK);
crash_passed!(crash_shm_barrier => xShmBarrier() -> (), ());
crash_passed!(crash_shm_unmap => xShmUnmap(delete: c_int) -> c_int, ffi::SQLITE_OK);

/// No memory-mapped reads: every read goes through `xRead`.
unsafe extern "C" fn crash_fetch(
    _file: *mut ffi::sqlite3_file,
    _offset: i64,
    _amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: `out` is SQLite's.
    unsafe { *out = ptr::null_mut() };
    ffi::SQLITE_OK
}

unsafe extern "C" fn crash_unfetch(
    _file: *mut ffi::sqlite3_file,
    _offset: i64,
    _page: *mut c_void,
) -> c_int {
    ffi::SQLITE_OK
}

static CRASH_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(crash_close),
    xRead: Some(crash_read),
    xWrite: Some(crash_write),
    xTruncate: Some(crash_truncate),
    xSync: Some(crash_sync),
    xFileSize: Some(crash_file_size),
    xLock: Some(crash_lock),
    xUnlock: Some(crash_unlock),
    xCheckReservedLock: Some(crash_check_reserved_lock),
    xFileControl: Some(crash_file_control),
    xSectorSize: Some(crash_sector_size),
    xDeviceCharacteristics: Some(crash_device_characteristics),
    xShmMap: Some(crash_shm_map),
    xShmLock: Some(crash_shm_lock),
    xShmBarrier: Some(crash_shm_barrier),
    xShmUnmap: Some(crash_shm_unmap),
    xFetch: Some(crash_fetch),
    xUnfetch: Some(crash_unfetch),
};

unsafe extern "C" fn crash_delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    // SAFETY: as the other VFS methods.
    unsafe {
        let base: *mut ffi::sqlite3_vfs = (*vfs).pAppData.cast();
        let path = CStr::from_ptr(name).to_string_lossy().into_owned();
        with_state(|state| {
            state.tick();
            state.files.remove(&path);
        });
        (*base).xDelete.unwrap()(base, name, sync_dir)
    }
}

/// Registers the crash VFS over the default one, and wal-coalesce over it (once).
fn register() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: the default VFS lives for the process; both new VFSes are leaked.
        unsafe {
            let base = ffi::sqlite3_vfs_find(ptr::null());
            assert!(!base.is_null());
            let mut crash = *base;
            crash.szOsFile =
                (std::mem::size_of::<CrashFile>() + (*base).szOsFile as usize) as c_int;
            crash.zName = CRASH_NAME.as_ptr();
            crash.pNext = ptr::null_mut();
            crash.pAppData = base.cast();
            crash.xOpen = Some(crash_open);
            crash.xDelete = Some(crash_delete);
            crash.iVersion = crash.iVersion.min(3);
            crash.xSetSystemCall = None;
            crash.xGetSystemCall = None;
            crash.xNextSystemCall = None;
            let crash: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(crash));
            assert_eq!(ffi::sqlite3_vfs_register(crash, 0), ffi::SQLITE_OK);
            let coalescing = Box::leak(Box::new(coalescing_vfs(crash, COALESCING_NAME)));
            assert_eq!(ffi::sqlite3_vfs_register(coalescing, 0), ffi::SQLITE_OK);
        }
    });
}

/// The rows a transaction inserts: how many, and how large each.
fn plan(txn: u64, last: u64, rng: &mut Rng) -> (u64, usize) {
    match txn % 29 {
        // The last one, past what wal-coalesce gathers before it writes anyway (last:
        // every cut after it would copy it).
        _ if txn == last => (6, GATHER_LIMIT / 5),
        // Larger than the page cache: pages spill to the log before the commit.
        0 => (16, 2000),
        _ => (1 + rng.below(8), 20 + rng.below(180) as usize),
    }
}

/// Runs the workload on `vfs` with a power cut every `every` file operations, then
/// checks every cut. Returns how many cuts were checked.
fn run(vfs: &CStr, seed: u64, transactions: u64, every: u64) -> usize {
    let _serial = super::tests::serial();
    register();
    let dir = scratch();
    let path = dir.path().join("t.db");
    *state() = Some(State {
        files: HashMap::new(),
        calls: 0,
        every,
        rng: Rng(seed | 1),
        committed: vec![],
        in_flight: None,
        cuts: vec![],
    });
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags_and_vfs(&path, flags, vfs.to_str().unwrap()).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0;
         PRAGMA cache_size = 10; PRAGMA mmap_size = 0;
         CREATE TABLE t (txn INTEGER NOT NULL, n INTEGER NOT NULL, b BLOB NOT NULL);",
    )
    .unwrap();
    let mut rng = Rng(seed.rotate_left(17) | 1);
    let mut expected = BTreeMap::new();
    let mut checked = 0;
    for txn in 1..=transactions {
        let (rows, size) = plan(txn, transactions, &mut rng);
        expected.insert(txn, rows);
        with_state(|state| {
            state.in_flight = Some(txn);
            // The large last one: a cut now and then, each a copy of megabytes.
            if txn == transactions {
                state.every = every.max(1) * 97;
            }
        });
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        for n in 0..rows {
            let blob = vec![(txn % 251) as u8; size];
            conn.execute(
                "INSERT INTO t VALUES (?1, ?2, ?3)",
                rusqlite::params![txn as i64, n as i64, blob],
            )
            .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        with_state(|state| {
            state.committed.push(txn);
            state.in_flight = None;
        });
        match txn % 9 {
            3 => conn
                .execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
                .unwrap(),
            6 => conn
                .execute_batch("PRAGMA wal_checkpoint(RESTART)")
                .unwrap(),
            8 => conn
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap(),
            _ => {}
        }
        let cuts = with_state(|state| std::mem::take(&mut state.cuts)).unwrap();
        for cut in cuts {
            check(&cut, &expected, &path, seed);
            checked += 1;
        }
    }
    drop(conn);
    *state() = None;
    eprintln!("{checked} power cuts checked on {vfs:?}, seed {seed}");
    checked
}

/// A directory in memory where the machine has one: what the harness writes is
/// thrown away, and a sync there costs nothing.
fn scratch() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

/// Opens the disk a power cut left with the plain VFS, and checks it.
fn check(cut: &Cut, expected: &BTreeMap<u64, u64>, path: &Path, seed: u64) {
    let dir = scratch();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    for (file, image) in &cut.files {
        let Some(suffix) = file.strip_prefix(path.to_string_lossy().as_ref()) else {
            continue;
        };
        // The shared-memory index is rebuilt from the log: it is not on the disk.
        if suffix == "-shm" {
            continue;
        }
        std::fs::write(dir.path().join(format!("{name}{suffix}")), image).unwrap();
    }
    let at = format!(
        "seed {seed}, cut with {} committed, {:?} in flight",
        cut.committed.len(),
        cut.in_flight
    );
    let reopened = dir.path().join(&name);
    if !reopened.exists() {
        assert!(cut.committed.is_empty(), "{at}: no database file");
        return;
    }
    let conn = Connection::open(&reopened).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap_or_else(|error| panic!("{at}: {error}"));
    assert_eq!(integrity, "ok", "{at}");
    let has_table: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 't'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    if has_table == 0 {
        assert!(cut.committed.is_empty(), "{at}: the table is gone");
        return;
    }
    let mut found: BTreeMap<u64, u64> = BTreeMap::new();
    let mut rows = conn
        .prepare("SELECT txn, COUNT(*) FROM t GROUP BY txn")
        .unwrap();
    let counted = rows
        .query_map([], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64))
        })
        .unwrap();
    for row in counted {
        let (txn, count) = row.unwrap();
        found.insert(txn, count);
    }
    for txn in &cut.committed {
        assert_eq!(
            found.get(txn),
            expected.get(txn),
            "{at}: committed transaction {txn} is not there whole"
        );
    }
    for (txn, count) in &found {
        let allowed = cut.committed.contains(txn) || cut.in_flight == Some(*txn);
        assert!(allowed, "{at}: transaction {txn} was never committed");
        assert_eq!(
            Some(count),
            expected.get(txn),
            "{at}: transaction {txn} in part"
        );
    }
}

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5eed_c0a1_e5ce_0001)
}

fn factor() -> u64 {
    std::env::var("CRASH_POINTS")
        .ok()
        .and_then(|factor| factor.parse().ok())
        .unwrap_or(1)
        .max(1)
}

#[test]
fn every_acknowledged_transaction_survives_a_power_cut_through_wal_coalesce() {
    let seed = seed();
    let checked = run(COALESCING_NAME, seed, 500 * factor(), 1);
    assert!(checked >= 1000, "only {checked} cuts (seed {seed})");
}

#[test]
fn every_acknowledged_transaction_survives_a_power_cut_on_the_plain_vfs() {
    let seed = seed().wrapping_add(1);
    let checked = run(CRASH_NAME, seed, 500 * factor(), 1);
    assert!(checked >= 1000, "only {checked} cuts (seed {seed})");
}
