//! Reading the event log and the leads in it. Events are read as stored, their
//! bodies not decoded.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use time::OffsetDateTime;

use super::{from_json, from_micros, to_db_sequence, to_micros};
use crate::codec;
use crate::domain::{EncodedEvent, EventBody, EventKind, LeadKey, LeadSource, PersonLink};
use crate::store::db::{Conn, DbError, Row, query_opt, scalar};

/// The columns an event is read from.
pub(super) const EVENT: &str = "e.sequence, e.receive_time, e.kind, e.integration, e.source, \
     e.body, e.payload, e.trace_parent, e.person_id, e.person_returning, e.person_first_seen";
/// How many columns [`EVENT`] names: the columns a query adds after it start here.
pub(super) const EVENT_WIDTH: usize = 11;

/// Reads rows into events, their bodies cut from large shared buffers rather than
/// allocated one by one, and the integration's name shared while it repeats.
#[derive(Default)]
pub(super) struct EventReader {
    arena: BytesMut,
    integration: Option<Arc<str>>,
}

/// Bytes each shared buffer holds.
const ARENA_BYTES: usize = 256 * 1024;

impl EventReader {
    fn body(&mut self, bytes: &[u8]) -> Bytes {
        if self.arena.capacity() < bytes.len() {
            self.arena = BytesMut::with_capacity(ARENA_BYTES.max(bytes.len()));
        }
        self.arena.extend_from_slice(bytes);
        self.arena.split().freeze()
    }

    /// The integration a row names: the previous row's, compared as bytes, while
    /// it repeats.
    fn integration(&mut self, row: &dyn Row) -> Result<Arc<str>, DbError> {
        let name = row.bytes(3)?;
        if let Some(last) = &self.integration
            && last.as_bytes() == name
        {
            return Ok(last.clone());
        }
        let name: Arc<str> = row.text(3)?.into();
        self.integration = Some(name.clone());
        Ok(name)
    }

    /// An event from the columns of [`EVENT`].
    pub(super) fn read(&mut self, row: &dyn Row) -> Result<EncodedEvent, DbError> {
        let sequence = row.int(0)?;
        let kind = EventKind::from_bytes(row.bytes(2)?)
            .ok_or_else(|| DbError::invalid(format!("event {sequence} is of an unknown kind")))?;
        let (body, source) = match row.opt_bytes(5)? {
            Some(body) => (
                self.body(body),
                row.opt_bytes(4)?.and_then(LeadSource::from_bytes),
            ),
            // Written before events were stored encoded, and not converted yet.
            None => {
                let legacy: EventBody = from_json(row.text(6)?).map_err(|error| {
                    DbError::invalid(format!("event {sequence} is unreadable: {error}"))
                })?;
                (Bytes::from(codec::encode_body(&legacy)), legacy.source())
            }
        };
        Ok(EncodedEvent {
            sequence: sequence as u64,
            receive_time: from_micros(row.int(1)?),
            kind,
            integration: self.integration(row)?,
            source,
            body,
            trace_parent: row.opt_text(7)?.map(Into::into),
            person: match row.opt_int(8)? {
                Some(person_id) => Some(PersonLink {
                    person_id: person_id as u64,
                    returning: row.int(9)? != 0,
                    first_seen: from_micros(row.opt_int(10)?.unwrap_or_default()),
                }),
                None => None,
            },
        })
    }
}

/// Committed events after `after_sequence`, in order, at most `limit`.
pub(in crate::store) async fn events_after<C: Conn>(
    conn: &mut C,
    after_sequence: u64,
    limit: u32,
) -> Result<Vec<EncodedEvent>, DbError> {
    let mut reader = EventReader::default();
    conn.query(
        &format!("SELECT {EVENT} FROM events e WHERE e.sequence > $1 ORDER BY e.sequence LIMIT $2"),
        &[
            to_db_sequence(after_sequence).into(),
            i64::from(limit).into(),
        ],
        |row| reader.read(row),
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
) -> Result<Option<EncodedEvent>, DbError> {
    let mut reader = EventReader::default();
    query_opt(
        conn,
        &format!(
            "SELECT {EVENT} FROM leads l JOIN events e ON e.sequence = l.sequence \
             WHERE l.integration = $1 AND l.lead_id = $2"
        ),
        &[(&key.integration).into(), (&key.lead_id).into()],
        |row| reader.read(row),
    )
    .await
}

pub(super) async fn list_leads<C: Conn>(
    conn: &mut C,
    after_sequence: u64,
    limit: u32,
    integration: Option<&str>,
) -> Result<Vec<EncodedEvent>, DbError> {
    let mut reader = EventReader::default();
    // An empty integration means all of them.
    conn.query(
        &format!(
            "SELECT {EVENT} FROM events e \
             WHERE e.kind = 'lead' AND e.sequence > $1 AND ($3 = '' OR e.integration = $3) \
             ORDER BY e.sequence LIMIT $2"
        ),
        &[
            to_db_sequence(after_sequence).into(),
            i64::from(limit).into(),
            integration.unwrap_or_default().into(),
        ],
        |row| reader.read(row),
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
