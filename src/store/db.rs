//! The small database surface both backends provide: run a statement with
//! arguments, run a query and map its rows. Everything the stores do is written
//! once against it (`sql/`), in SQL both databases accept (`$N` placeholders,
//! `RETURNING`, `ON CONFLICT`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

/// The cause of a database failure.
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

/// A database failure, by what the caller can do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// The database cannot do the work now: unreachable, locked, out of space,
    /// timed out. Retrying may succeed.
    #[error("{0}")]
    Unavailable(Source),
    /// What is stored, or what was asked, cannot be right: an unreadable value, a
    /// statement the database refuses. Retrying will not help.
    #[error("{0}")]
    Invalid(Source),
}

impl DbError {
    /// A stored value that cannot be read.
    pub fn invalid(message: impl Into<String>) -> Self {
        DbError::Invalid(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
            message.into(),
        )))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        DbError::Unavailable(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
            message.into(),
        )))
    }
}

/// A value bound to a statement's placeholder.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
    /// NULL in an integer column.
    NullInt,
    /// NULL in a text column.
    NullText,
}

impl From<i64> for Arg<'_> {
    fn from(value: i64) -> Self {
        Arg::Int(value)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(value: &'a str) -> Self {
        Arg::Text(value)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(value: &'a String) -> Self {
        Arg::Text(value)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(value: &'a [u8]) -> Self {
        Arg::Bytes(value)
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(value: Option<&'a str>) -> Self {
        value.map_or(Arg::NullText, Arg::Text)
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(value: Option<i64>) -> Self {
        value.map_or(Arg::NullInt, Arg::Int)
    }
}

/// One row of a query's result; columns by position.
pub trait Row {
    fn int(&self, column: usize) -> Result<i64, DbError>;
    fn opt_int(&self, column: usize) -> Result<Option<i64>, DbError>;
    fn text(&self, column: usize) -> Result<&str, DbError>;
    fn opt_text(&self, column: usize) -> Result<Option<&str>, DbError>;
    /// A blob's bytes, or a text's without checking them.
    fn bytes(&self, column: usize) -> Result<&[u8], DbError>;
    fn opt_bytes(&self, column: usize) -> Result<Option<&[u8]>, DbError>;
}

/// A connection.
pub trait Conn: Send {
    /// How a multi-row insert is spelled whose rows were checked not to conflict
    /// (the caller checks that every row went in). On SQLite `INSERT OR IGNORE`:
    /// a plain multi-row insert could fail halfway, so SQLite keeps a journal of
    /// every page it changes, just in case.
    const INSERT_CHECKED: &'static str = "INSERT";

    /// A query of the bytes the database takes on disk.
    const SIZE_QUERY: &'static str;

    /// How the statements built by [`built_once`] number their placeholders:
    /// `$N`, which both databases take, or `?N`, which SQLite binds without
    /// rewriting the text first.
    const PLACEHOLDER: char = '$';

    /// Runs a statement; returns how many rows it changed.
    fn execute(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<u64, DbError>> + Send;

    /// Runs a query and maps each of its rows.
    fn query<T, F>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        map: F,
    ) -> impl Future<Output = Result<Vec<T>, DbError>> + Send
    where
        T: Send,
        F: FnMut(&dyn Row) -> Result<T, DbError> + Send;
}

/// The first row of a query, if any.
pub async fn query_opt<C, T, F>(
    conn: &mut C,
    sql: &str,
    args: &[Arg<'_>],
    map: F,
) -> Result<Option<T>, DbError>
where
    C: Conn,
    T: Send,
    F: FnMut(&dyn Row) -> Result<T, DbError> + Send,
{
    Ok(conn.query(sql, args, map).await?.into_iter().next())
}

/// The first row of a query that always returns one.
pub async fn query_one<C, T, F>(
    conn: &mut C,
    sql: &str,
    args: &[Arg<'_>],
    map: F,
) -> Result<T, DbError>
where
    C: Conn,
    T: Send,
    F: FnMut(&dyn Row) -> Result<T, DbError> + Send,
{
    query_opt(conn, sql, args, map)
        .await?
        .ok_or_else(|| DbError::invalid(format!("no row returned by: {sql}")))
}

/// The integer in the first column of the first row.
pub async fn scalar<C: Conn>(conn: &mut C, sql: &str, args: &[Arg<'_>]) -> Result<i64, DbError> {
    query_one(conn, sql, args, |row| row.int(0)).await
}

/// `rows` groups of `columns` numbered placeholders for a multi-row `VALUES`:
/// `($1, $2), ($3, $4)`.
pub fn values_placeholders(rows: usize, columns: usize) -> String {
    values_placeholders_with('$', rows, columns)
}

/// As [`values_placeholders`], with the placeholders spelled `?N` when `mark` is `?`.
pub fn values_placeholders_with(mark: char, rows: usize, columns: usize) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "{mark}{}", row * columns + column + 1);
        }
        sql.push(')');
    }
    sql
}

/// A statement whose text depends only on its shape (what it is, how many rows it
/// carries, how the connection numbers placeholders), built the first time and
/// kept: a multi-row insert is not formatted anew for every batch.
pub fn built_once(
    statement: &'static str,
    mark: char,
    rows: usize,
    build: impl FnOnce() -> String,
) -> &'static str {
    type Built = HashMap<(&'static str, char, usize), &'static str>;
    static BUILT: OnceLock<Mutex<Built>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // A few statements times the batch sizes a writer takes: bounded, kept for
    // the process.
    built
        .entry((statement, mark, rows))
        .or_insert_with(|| Box::leak(build().into_boxed_str()))
}

#[cfg(test)]
mod tests {
    use super::{built_once, values_placeholders, values_placeholders_with};

    #[test]
    fn a_statement_is_built_once_per_shape() {
        let first = built_once("test", '?', 2, || values_placeholders_with('?', 2, 1));
        let again = built_once("test", '?', 2, || unreachable!("built already"));
        assert_eq!(first, "(?1), (?2)");
        assert!(std::ptr::eq(first, again));
        assert_eq!(
            built_once("test", '$', 2, || values_placeholders(2, 1)),
            "($1), ($2)"
        );
    }

    #[test]
    fn placeholders_are_numbered_row_by_row() {
        assert_eq!(values_placeholders(1, 1), "($1)");
        assert_eq!(values_placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
