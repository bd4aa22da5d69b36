//! SQLite's migrations: applied in order of their versions, each in a transaction
//! of its own, and recorded in the table earlier releases' migrator (sqlx's) kept,
//! `_sqlx_migrations`, with the same checksum (the SHA-384 of the file), so that
//! every store an earlier release wrote opens and migrates on. The files are
//! `migrations/sqlite/VERSION_DESCRIPTION.sql`, embedded by `build.rs`. Also here:
//! the file a database URL names, and the connection the migrations run on.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha384};

use super::{BUSY_TIMEOUT, sqlite_error};
use crate::store::DbError;

/// One migration file.
pub(super) struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Every migration, by version.
pub(super) const MIGRATIONS: &[Migration] =
    include!(concat!(env!("OUT_DIR"), "/sqlite_migrations.rs"));

/// Why the migrations cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "migration {0} was left half applied; the database needs an operator (restore a backup)"
    )]
    Dirty(i64),
    #[error("migration {0} was applied with other contents than this release's")]
    Changed(i64),
    #[error(
        "migration {0} was applied but is unknown to this release: the store was written by a newer one"
    )]
    Unknown(i64),
    #[error("migration {version} ({description}) failed")]
    Failed {
        version: i64,
        description: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// The record's table, as sqlx's migrator created it.
const RECORD: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
)";

/// The file a `sqlite://PATH` (or `sqlite:PATH`) URL names, its path
/// percent-decoded. A `mode` parameter (`rwc`, `rw`) is accepted and changes
/// nothing: the file is created when missing. The URL is refused with the reason
/// otherwise.
pub(super) fn database_path(url: &str) -> Result<PathBuf, String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or("a SQLite URL starts with sqlite://")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    for parameter in query.split('&').filter(|parameter| !parameter.is_empty()) {
        match parameter.split_once('=') {
            Some(("mode", "rwc" | "rw")) => {}
            _ => return Err(format!("unsupported SQLite URL parameter {parameter:?}")),
        }
    }
    let path = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| "the path is not UTF-8 once percent-decoded")?;
    if path.is_empty() || path == ":memory:" {
        return Err("a SQLite URL names a file: sqlite://PATH".into());
    }
    Ok(PathBuf::from(path.as_ref()))
}

/// The connection the migrations run on: the default VFS, the file created when
/// missing, and the WAL journal every connection after it uses.
pub(super) fn connect(path: &Path) -> Result<Connection, DbError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(sqlite_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sqlite_error)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite_error)?;
    Ok(conn)
}

/// Applies the migrations `conn`'s database has not had yet; returns how many.
pub(super) fn run(conn: &mut Connection) -> Result<usize, MigrateError> {
    run_these(conn, MIGRATIONS)
}

fn run_these(conn: &mut Connection, migrations: &[Migration]) -> Result<usize, MigrateError> {
    conn.execute_batch(RECORD)?;
    let dirty = conn
        .query_row(
            "SELECT version FROM _sqlx_migrations WHERE success = false ORDER BY version LIMIT 1",
            [],
            |row| row.get::<_, i64>(0),
        )
        .optional()?;
    if let Some(version) = dirty {
        return Err(MigrateError::Dirty(version));
    }
    let mut statement = conn.prepare("SELECT version, checksum FROM _sqlx_migrations")?;
    let applied = statement
        .query_map([], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    drop(statement);
    for (version, checksum) in &applied {
        match migrations.iter().find(|known| known.version == *version) {
            None => return Err(MigrateError::Unknown(*version)),
            Some(known) if checksum_of(known.sql) != *checksum => {
                return Err(MigrateError::Changed(*version));
            }
            Some(_) => {}
        }
    }
    let mut count = 0;
    for migration in migrations {
        if applied
            .iter()
            .any(|(version, _)| *version == migration.version)
        {
            continue;
        }
        let started = Instant::now();
        let failed = |source| MigrateError::Failed {
            version: migration.version,
            description: migration.description,
            source,
        };
        let tx = conn.transaction()?;
        tx.execute_batch(migration.sql).map_err(failed)?;
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?1, ?2, TRUE, ?3, -1)",
            params![
                migration.version,
                migration.description,
                checksum_of(migration.sql)
            ],
        )?;
        tx.commit()?;
        let nanos = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
        conn.execute(
            "UPDATE _sqlx_migrations SET execution_time = ?1 WHERE version = ?2",
            params![nanos, migration.version],
        )?;
        tracing::info!(
            version = migration.version,
            description = migration.description,
            "migration applied"
        );
        count += 1;
    }
    Ok(count)
}

fn checksum_of(sql: &str) -> Vec<u8> {
    Sha384::digest(sql.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_url_names_its_file() {
        let path = |url| database_path(url).map(|path| path.display().to_string());
        assert_eq!(path("sqlite://leads.db"), Ok("leads.db".into()));
        assert_eq!(
            path("sqlite:///var/lib/x.db?mode=rwc"),
            Ok("/var/lib/x.db".into())
        );
        assert_eq!(
            path("sqlite:data/leads%20a.db"),
            Ok("data/leads a.db".into())
        );
        assert!(path("sqlite::memory:").is_err());
        assert!(path("sqlite://").is_err());
        assert!(path("sqlite://x.db?cache=shared").is_err());
        assert!(path("postgres://x").is_err());
    }

    fn versions(conn: &Connection) -> Vec<(i64, String)> {
        let mut statement = conn
            .prepare("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn every_migration_is_embedded_in_order_with_its_file_name() {
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
            .unwrap()
            .count();
        assert_eq!(MIGRATIONS.len(), files);
        assert!(
            MIGRATIONS
                .windows(2)
                .all(|pair| pair[0].version < pair[1].version)
        );
        assert_eq!(
            (MIGRATIONS[0].version, MIGRATIONS[0].description),
            (1, "initial")
        );
    }

    #[test]
    fn a_new_store_gets_every_migration_once_with_sqlx_checksums() {
        let mut conn = Connection::open_in_memory().unwrap();

        assert_eq!(run(&mut conn).unwrap(), MIGRATIONS.len());
        assert_eq!(run(&mut conn).unwrap(), 0, "a second run applies nothing");

        let recorded = versions(&conn);
        assert_eq!(recorded.len(), MIGRATIONS.len());
        // The checksum sqlx's migrator recorded for 0001 in a store of release 0003
        // (tests/fixtures/store-0003-sqlite.sql).
        let checksum: Vec<u8> = conn
            .query_row(
                "SELECT checksum FROM _sqlx_migrations WHERE version = 1",
                [],
                |row| row.get(0),
            )
            .unwrap();
        let hex: String = checksum.iter().map(|byte| format!("{byte:02x}")).collect();
        assert!(
            hex.starts_with("546262bf640b4fce41942c29205b76c6d447714a"),
            "{hex}"
        );
    }

    #[test]
    fn a_store_from_a_newer_release_or_with_changed_migrations_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        run(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'future', TRUE, X'00', 0)",
            [],
        )
        .unwrap();
        assert!(matches!(run(&mut conn), Err(MigrateError::Unknown(9999))));

        let mut conn = Connection::open_in_memory().unwrap();
        run(&mut conn).unwrap();
        conn.execute(
            "UPDATE _sqlx_migrations SET checksum = X'00' WHERE version = 2",
            [],
        )
        .unwrap();
        assert!(matches!(run(&mut conn), Err(MigrateError::Changed(2))));

        let mut conn = Connection::open_in_memory().unwrap();
        run(&mut conn).unwrap();
        conn.execute(
            "UPDATE _sqlx_migrations SET success = false WHERE version = 3",
            [],
        )
        .unwrap();
        assert!(matches!(run(&mut conn), Err(MigrateError::Dirty(3))));
    }

    #[test]
    fn a_failing_migration_leaves_nothing_behind() {
        let broken = [
            Migration {
                version: 1,
                description: "first",
                sql: "CREATE TABLE kept (id INTEGER);",
            },
            Migration {
                version: 2,
                description: "broken",
                sql: "CREATE TABLE half (id INTEGER); NOT SQL;",
            },
        ];
        let mut conn = Connection::open_in_memory().unwrap();

        let error = run_these(&mut conn, &broken).unwrap_err();

        assert!(
            matches!(error, MigrateError::Failed { version: 2, .. }),
            "{error:?}"
        );
        assert_eq!(versions(&conn), vec![(1, "first".to_owned())]);
        let half: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'half'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(
            half, 0,
            "the failed migration's statements were rolled back"
        );
    }
}
