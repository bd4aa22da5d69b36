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

/// A start with nothing left to convert looks up the index of unconverted events
/// rather than reading the whole log.
#[tokio::test]
async fn the_conversion_at_start_reads_an_index_not_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("leads.db").display());
    drop(super::open(&url, 16).await.unwrap());
    let reader = SqliteConn::open_reader(&dir.path().join("leads.db")).unwrap();
    let mut sql = String::new();
    numbered_placeholders(crate::store::sql::UNCONVERTED, &mut sql);

    let plan: Vec<String> = reader
        .conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map([1, 1000], |row| row.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();

    assert_eq!(
        plan,
        ["SEARCH events USING INDEX events_unconverted (sequence>?)"],
        "{plan:?}"
    );
}
