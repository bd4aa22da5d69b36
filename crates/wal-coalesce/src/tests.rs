use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags};

use super::{LOG_WRITES, open};

/// The write counter is global: tests that read it run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub(super) fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const FLAGS: OpenFlags = OpenFlags::SQLITE_OPEN_READ_WRITE
    .union(OpenFlags::SQLITE_OPEN_CREATE)
    .union(OpenFlags::SQLITE_OPEN_NO_MUTEX);

/// A WAL database through the VFS, with a table of numbered blobs.
fn wal_database(dir: &tempfile::TempDir) -> Connection {
    let conn = open(&dir.path().join("t.db"), FLAGS).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn.execute_batch(
        "CREATE TABLE t (n INTEGER PRIMARY KEY, k TEXT, b BLOB); CREATE INDEX t_k ON t (k);",
    )
    .unwrap();
    conn
}

fn insert(conn: &Connection, n: i64, size: usize) {
    let blob = vec![(n % 251) as u8; size];
    conn.execute(
        "INSERT INTO t VALUES (?1, ?2, ?3)",
        rusqlite::params![n, format!("key{}", n * 7919 % 10007), blob],
    )
    .unwrap();
}

/// Every row as another connection, through the default VFS, reads it: its
/// number and its blob.
fn read_back(path: &std::path::Path) -> Vec<(i64, Vec<u8>)> {
    let reader = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut rows = reader.prepare("SELECT n, b FROM t ORDER BY n").unwrap();
    rows.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The rows `insert` makes, by number and blob size.
fn expected(rows: impl Iterator<Item = (i64, usize)>) -> Vec<(i64, Vec<u8>)> {
    rows.map(|(n, size)| (n, vec![(n % 251) as u8; size]))
        .collect()
}

fn integrity(path: &std::path::Path) -> String {
    let conn = Connection::open(path).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn every_commit_is_seen_by_another_connection_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let conn = wal_database(&dir);
    let path = dir.path().join("t.db");
    for commit in 0..50 {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        for row in 0..12 {
            insert(&conn, commit * 12 + row, 300);
        }
        conn.execute_batch("COMMIT").unwrap();
        let rows = (0..(commit + 1) * 12).map(|n| (n, 300));
        assert_eq!(read_back(&path), expected(rows), "after commit {commit}");
    }
    drop(conn);
    assert_eq!(integrity(&path), "ok");
}

#[test]
fn a_commit_goes_to_the_log_in_one_write_instead_of_two_a_page() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let conn = wal_database(&dir);
    // Several pages a commit: the table, its index, and the blobs' overflow.
    let before = LOG_WRITES.load(Ordering::Relaxed);
    for commit in 0..100 {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        for row in 0..4 {
            insert(&conn, commit * 4 + row, 3000);
        }
        conn.execute_batch("COMMIT").unwrap();
    }
    let writes = LOG_WRITES.load(Ordering::Relaxed) - before;
    let frames: i64 = conn
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
        .unwrap();
    assert!(
        frames >= 500,
        "each commit wrote several pages: {frames} frames"
    );
    assert!(
        writes <= 100,
        "{writes} writes for 100 commits of {frames} frames in all"
    );
}

#[test]
fn a_transaction_larger_than_what_is_gathered_reaches_the_log_whole() {
    let dir = tempfile::tempdir().unwrap();
    let conn = wal_database(&dir);
    let path = dir.path().join("t.db");
    // 12 MiB in one transaction: past the gathering limit, in many pieces.
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    for n in 0..1200 {
        insert(&conn, n, 10_000);
    }
    conn.execute_batch("COMMIT").unwrap();
    assert_eq!(read_back(&path), expected((0..1200).map(|n| (n, 10_000))));
    drop(conn);
    assert_eq!(integrity(&path), "ok");
}

#[test]
fn pages_written_twice_in_a_transaction_read_back_right() {
    let dir = tempfile::tempdir().unwrap();
    let conn = wal_database(&dir);
    let path = dir.path().join("t.db");
    // A cache of a few pages spills to the log mid-transaction; the spilled pages
    // are read back and written again before the commit.
    conn.pragma_update(None, "cache_size", 10).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    for n in 0..3000 {
        insert(&conn, n, 200);
    }
    conn.execute("UPDATE t SET b = zeroblob(0) WHERE n % 3 = 0", [])
        .unwrap();
    conn.execute_batch("COMMIT").unwrap();
    let rows = (0..3000).map(|n| (n, if n % 3 == 0 { 0 } else { 200 }));
    assert_eq!(read_back(&path), expected(rows));
    drop(conn);
    assert_eq!(integrity(&path), "ok");
}

#[test]
fn the_log_starting_over_after_a_checkpoint_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let conn = wal_database(&dir);
    let path = dir.path().join("t.db");
    for round in 0..5 {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        for row in 0..200 {
            insert(&conn, round * 200 + row, 500);
        }
        conn.execute_batch("COMMIT").unwrap();
        // Copied into the database file and started over: the next commit writes
        // the log's header again, then frames from its start.
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
            .unwrap();
    }
    assert_eq!(read_back(&path), expected((0..1000).map(|n| (n, 500))));
    drop(conn);
    assert_eq!(integrity(&path), "ok");
}

#[test]
fn a_database_with_a_rollback_journal_works_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let conn = open(&path, FLAGS).unwrap();
    conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY, k TEXT, b BLOB)")
        .unwrap();
    for n in 0..100 {
        insert(&conn, n, 100);
    }
    conn.execute_batch("BEGIN; DELETE FROM t WHERE n >= 50; ROLLBACK")
        .unwrap();
    assert_eq!(read_back(&path), expected((0..100).map(|n| (n, 100))));
}

#[test]
fn open_sets_full_synchronous() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open(&dir.path().join("s.db"), FLAGS).unwrap();
    let level: i64 = conn
        .query_row("PRAGMA synchronous", [], |row| row.get(0))
        .unwrap();
    assert_eq!(level, 2, "FULL");
}

/// A transaction that spills pages to the log and rolls back leaves nothing
/// gathered to be written later: another connection (here on the default VFS, as a
/// second process or an operator's shell would be) that then commits frames at the
/// same offsets keeps them, through a crash (the connections are never closed
/// cleanly) and a reopen.
#[test]
fn a_rolled_back_spill_never_overwrites_what_another_connection_committed() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let ours = wal_database(&dir);
    ours.execute_batch("PRAGMA cache_size = 16; PRAGMA wal_autocheckpoint = 0;")
        .unwrap();
    insert(&ours, 1, 100);

    // A transaction larger than the cache spills frames to the log, then rolls back.
    // Its pages are appended, each written once: nothing reads a spilled frame back
    // (which would write the gathered bytes out first).
    ours.execute_batch("CREATE TABLE spill (b BLOB)").unwrap();
    // From an empty log, so that the rollback reads every page it needs from the
    // database file, not the log.
    ours.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    ours.execute_batch("BEGIN").unwrap();
    let blob = vec![7u8; 3000];
    for _ in 0..400 {
        ours.execute("INSERT INTO spill VALUES (?1)", [&blob])
            .unwrap();
    }
    ours.execute_batch("ROLLBACK").unwrap();

    // Another connection commits over the same part of the log.
    let other = Connection::open_with_flags(&path, FLAGS).unwrap();
    other
        .execute_batch("PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0;")
        .unwrap();
    for n in 2..60 {
        insert(&other, n, 2000);
    }

    // Ours reads (which writes out whatever it still gathered) and writes again.
    let count: i64 = ours
        .query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 59);
    insert(&ours, 60, 10);

    // A crash: neither connection is closed (no checkpoint at close).
    std::mem::forget(ours);
    std::mem::forget(other);
    let reopened = Connection::open_with_flags(&path, FLAGS).unwrap();
    let check: String = reopened
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let sizes = std::iter::once((1, 100))
        .chain((2..60).map(|n| (n, 2000)))
        .chain([(60, 10)]);
    assert_eq!(read_back(&path), expected(sizes));
}
