//! Named consumers' durable positions.

use super::{from_micros, now_micros, to_db_sequence};
use crate::domain::Consumer;
use crate::store::StoreError;
use crate::store::db::{Conn, DbError, Row, query_opt, scalar};

/// Columns of a consumer, with `pending`: the events stored after its position.
const CONSUMER_COLUMNS: &str = "name, acked_sequence, ack_time, create_time, \
     (SELECT last_sequence FROM event_counter) - acked_sequence AS pending";

fn consumer_from_row(row: &dyn Row) -> Result<Consumer, DbError> {
    Ok(Consumer {
        name: row.text(0)?.to_owned(),
        acked_sequence: row.int(1)? as u64,
        ack_time: row.opt_int(2)?.map(from_micros),
        create_time: from_micros(row.int(3)?),
        pending: row.int(4)?.max(0) as u64,
    })
}

/// Whether a consumer that does not exist yet may be created: fewer than `max`
/// exist. Writes are serialised, so the count holds until the transaction commits.
async fn room_for<C: Conn>(
    conn: &mut C,
    name: &str,
    max: u32,
) -> Result<Result<(), StoreError>, DbError> {
    let sql = "SELECT COUNT(*) FROM consumers WHERE name = $1";
    if scalar(conn, sql, &[name.into()]).await? > 0 {
        return Ok(Ok(()));
    }
    let count = scalar(conn, "SELECT COUNT(*) FROM consumers", &[]).await?;
    if count >= i64::from(max) {
        return Ok(Err(StoreError::Exhausted(format!(
            "{count} named consumers exist, the most allowed (--max-consumers): \
             delete one that is no longer used, or raise the bound"
        ))));
    }
    Ok(Ok(()))
}

/// Creates a consumer positioned after `acked_sequence` unless it exists.
pub(super) async fn ensure<C: Conn>(
    conn: &mut C,
    name: &str,
    acked_sequence: u64,
    max: u32,
) -> Result<Result<(), StoreError>, DbError> {
    if let Err(refused) = room_for(conn, name, max).await? {
        return Ok(Err(refused));
    }
    conn.execute(
        "INSERT INTO consumers (name, acked_sequence, ack_time, create_time) \
         VALUES ($1, $2, NULL, $3) ON CONFLICT (name) DO NOTHING",
        &[
            name.into(),
            to_db_sequence(acked_sequence).into(),
            now_micros().into(),
        ],
    )
    .await?;
    Ok(Ok(()))
}

/// Moves a consumer (created if new) to `sequence` unless it stands further.
pub(super) async fn ack<C: Conn>(
    conn: &mut C,
    name: &str,
    sequence: u64,
    max: u32,
) -> Result<Result<(), StoreError>, DbError> {
    if let Err(refused) = room_for(conn, name, max).await? {
        return Ok(Err(refused));
    }
    conn.execute(
        "INSERT INTO consumers (name, acked_sequence, ack_time, create_time) \
         VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO UPDATE SET \
           acked_sequence = CASE WHEN excluded.acked_sequence > consumers.acked_sequence \
             THEN excluded.acked_sequence ELSE consumers.acked_sequence END, \
           ack_time = excluded.ack_time",
        &[
            name.into(),
            to_db_sequence(sequence).into(),
            now_micros().into(),
        ],
    )
    .await?;
    Ok(Ok(()))
}

/// False when there was no such consumer.
pub(super) async fn delete<C: Conn>(conn: &mut C, name: &str) -> Result<bool, DbError> {
    let sql = "DELETE FROM consumers WHERE name = $1";
    Ok(conn.execute(sql, &[name.into()]).await? > 0)
}

pub(super) async fn get<C: Conn>(conn: &mut C, name: &str) -> Result<Option<Consumer>, DbError> {
    let sql = format!("SELECT {CONSUMER_COLUMNS} FROM consumers WHERE name = $1");
    query_opt(conn, &sql, &[name.into()], consumer_from_row).await
}

/// Consumers by name, after `after_name`, at most `limit`.
pub(super) async fn list<C: Conn>(
    conn: &mut C,
    after_name: &str,
    limit: u32,
) -> Result<Vec<Consumer>, DbError> {
    let sql =
        format!("SELECT {CONSUMER_COLUMNS} FROM consumers WHERE name > $1 ORDER BY name LIMIT $2");
    let args = [after_name.into(), i64::from(limit).into()];
    conn.query(&sql, &args, consumer_from_row).await
}
