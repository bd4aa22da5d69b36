//! Reading the event log and the leads in it.

use time::OffsetDateTime;

use super::{from_json, from_micros, to_db_sequence, to_micros};
use crate::domain::{Event, EventBody, Lead, LeadKey, Stored};
use crate::store::db::{Conn, DbError, Row, query_opt, scalar};

/// An event from columns `sequence, receive_time, payload`.
fn event_from_row(row: &dyn Row) -> Result<Event, DbError> {
    let sequence = row.int(0)?;
    let record = from_json(row.text(2)?)
        .map_err(|error| DbError::invalid(format!("event {sequence} is unreadable: {error}")))?;
    Ok(Stored {
        sequence: sequence as u64,
        receive_time: from_micros(row.int(1)?),
        record,
    })
}

/// A stored lead's event, or an error if the event is not a lead.
fn lead_from_row(row: &dyn Row) -> Result<Stored<Lead>, DbError> {
    let event = event_from_row(row)?;
    match event.record {
        EventBody::Lead(lead) => Ok(Stored {
            sequence: event.sequence,
            receive_time: event.receive_time,
            record: lead,
        }),
        _ => Err(DbError::invalid(format!(
            "event {} is not a lead",
            event.sequence
        ))),
    }
}

/// Committed events after `after_sequence`, in order, at most `limit`.
pub(in crate::store) async fn events_after<C: Conn>(
    conn: &mut C,
    after_sequence: u64,
    limit: u32,
) -> Result<Vec<Event>, DbError> {
    conn.query(
        "SELECT sequence, receive_time, payload FROM events \
         WHERE sequence > $1 ORDER BY sequence LIMIT $2",
        &[
            to_db_sequence(after_sequence).into(),
            i64::from(limit).into(),
        ],
        event_from_row,
    )
    .await
}

/// The greatest committed sequence, 0 when there is none.
pub(in crate::store) async fn latest_sequence<C: Conn>(conn: &mut C) -> Result<u64, DbError> {
    let latest = scalar(conn, "SELECT last_sequence FROM event_counter", &[]).await?;
    Ok(latest as u64)
}

pub(super) async fn get_lead<C: Conn>(
    conn: &mut C,
    key: &LeadKey,
) -> Result<Option<Stored<Lead>>, DbError> {
    query_opt(
        conn,
        "SELECT e.sequence, e.receive_time, e.payload FROM leads l \
         JOIN events e ON e.sequence = l.sequence \
         WHERE l.integration = $1 AND l.lead_id = $2",
        &[(&key.integration).into(), (&key.lead_id).into()],
        lead_from_row,
    )
    .await
}

pub(super) async fn list_leads<C: Conn>(
    conn: &mut C,
    after_sequence: u64,
    limit: u32,
    integration: Option<&str>,
) -> Result<Vec<Stored<Lead>>, DbError> {
    // An empty integration means all of them.
    conn.query(
        "SELECT sequence, receive_time, payload FROM events \
         WHERE kind = 'lead' AND sequence > $1 AND ($3 = '' OR integration = $3) \
         ORDER BY sequence LIMIT $2",
        &[
            to_db_sequence(after_sequence).into(),
            i64::from(limit).into(),
            integration.unwrap_or_default().into(),
        ],
        lead_from_row,
    )
    .await
}

/// The smallest sequence of an event received at or after `time`.
pub(super) async fn first_sequence_at<C: Conn>(
    conn: &mut C,
    time: OffsetDateTime,
) -> Result<Option<u64>, DbError> {
    let first = query_opt(
        conn,
        "SELECT MIN(sequence) FROM events WHERE receive_time >= $1",
        &[to_micros(time).into()],
        |row| row.opt_int(0),
    )
    .await?;
    Ok(first.flatten().map(|sequence| sequence as u64))
}
