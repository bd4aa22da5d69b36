//! The SQLite connection's own details; the store's behaviour is tested over the
//! service's protocols, against both backends.

use super::{READ_MMAP_BYTES, SqliteConn, numbered_placeholders};

#[test]
fn read_connections_map_as_much_of_the_file_as_they_ask() {
    let dir = tempfile::tempdir().unwrap();
    let reader = SqliteConn::open_reader(&dir.path().join("leads.db")).unwrap();
    // SQLite lowers a larger request to what it was built to allow.
    let mapped: i64 = reader
        .conn
        .pragma_query_value(None, "mmap_size", |row| row.get(0))
        .unwrap();
    assert_eq!(mapped, READ_MMAP_BYTES);
}

#[test]
fn placeholders_are_numbered_for_sqlite() {
    let mut out = String::new();
    numbered_placeholders("SELECT $1, $12 WHERE a = $1 AND b = '$'", &mut out);
    assert_eq!(out, "SELECT ?1, ?12 WHERE a = ?1 AND b = '$'");
}
