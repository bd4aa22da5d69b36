//! The event log's writes: messages, tasks and calls stored once (an identical
//! message or task only within the deduplication window), each filed under the lead
//! it is about.

use std::time::Duration;

use super::from_micros;
use super::now_micros;
use super::writes::Tx;
use crate::codec;
use crate::domain::{EncodedEvent, EventKind, LeadKey, PersonLink};
use crate::store::db::{Arg, Conn, DbError, query_opt};
use crate::store::{EventReceipt, NewEvent, StoreError};

/// An event's row. `payload` held the JSON of versions before 0005; it stays empty.
pub(super) const EVENT_COLUMNS: &str = "sequence, kind, integration, lead_id, receive_time, \
     payload, lead_ref, body, source, trace_parent, person_id, person_returning, \
     person_first_seen";
pub(super) const EVENT_COLUMN_COUNT: usize = 13;

/// An event's row: filed under `key` (its integration and subject id), about the
/// lead `lead_ref` (if any), of a lead `source` (if a lead), stored in the trace
/// `trace_parent` (if tracing was on), of the person `person` (if a lead matched).
pub(super) fn event_args<'a>(
    sequence: i64,
    kind: EventKind,
    key: &'a LeadKey,
    receive_micros: i64,
    body: &'a [u8],
    (lead_ref, source): (Option<&'a str>, Option<&'static str>),
    (trace_parent, person): (Option<&'a str>, Option<PersonLink>),
) -> [Arg<'a>; EVENT_COLUMN_COUNT] {
    [
        sequence.into(),
        kind.as_str().into(),
        (&key.integration).into(),
        (&key.lead_id).into(),
        receive_micros.into(),
        "".into(),
        lead_ref.into(),
        body.into(),
        source.into(),
        trace_parent.into(),
        person.map(|person| person.person_id as i64).into(),
        i64::from(person.is_some_and(|person| person.returning)).into(),
        person
            .map(|person| super::to_micros(person.first_seen))
            .into(),
    ]
}

/// Appends a committed event to the log, filed under `subject_id` and about the
/// lead `lead_ref` (none when empty).
pub(super) async fn append_event<C: Conn>(
    conn: &mut C,
    event: &EncodedEvent,
    subject_id: &str,
    lead_ref: &str,
) -> Result<(), DbError> {
    // An unknown action's name is the sender's to choose.
    let key = LeadKey::new(&event.integration, super::column_text(subject_id));
    let lead_ref = Some(lead_ref).filter(|id| !id.is_empty());
    let source = event.source.map(|source| source.as_str());
    let micros = super::to_micros(event.receive_time);
    let args = event_args(
        event.sequence as i64,
        event.kind,
        &key,
        micros,
        &event.body,
        (lead_ref, source),
        (event.trace_parent.as_deref(), event.person),
    );
    let sql = format!(
        "INSERT INTO events ({EVENT_COLUMNS}) VALUES {}",
        crate::store::db::values_placeholders(1, EVENT_COLUMN_COUNT)
    );
    conn.execute(&sql, &args).await?;
    Ok(())
}

/// The lead `id` names in an integration: the lead answered `id` as its order id,
/// else the lead whose Roistat id it is.
async fn resolve_lead<C: Conn>(
    conn: &mut C,
    integration: &str,
    id: &str,
) -> Result<Option<String>, DbError> {
    if id.is_empty() {
        return Ok(None);
    }
    // Only order ids other than the lead's own id are indexed (`leads_by_order_id`):
    // the others are found by the key.
    let sql = "SELECT COALESCE( \
           (SELECT lead_id FROM leads \
            WHERE integration = $1 AND order_id = $2 AND order_id <> lead_id LIMIT 1), \
           (SELECT lead_id FROM leads WHERE integration = $1 AND lead_id = $2))";
    let found = query_opt(conn, sql, &[integration.into(), id.into()], |row| {
        Ok(row.opt_text(0)?.map(str::to_owned))
    })
    .await?;
    Ok(found.flatten())
}

/// Stores a message, task or call unless it is a copy of one already stored; a
/// copy gets the first delivery's sequence. An identical message, task, call or
/// unknown action is a copy only within `dedup_window` of the first stored copy
/// (zero: every copy is stored); one whose content differs is a new event.
pub(super) async fn insert_event<C: Conn>(
    conn: &mut C,
    new: &NewEvent,
    dedup_window: Duration,
    tx: &mut Tx<'_>,
) -> Result<Result<EventReceipt, StoreError>, DbError> {
    let integration = new.integration.as_str();
    let now = now_micros();
    let stored = query_opt(
        conn,
        "SELECT sequence, first_time FROM event_identities \
         WHERE integration = $1 AND identity = $2",
        &[integration.into(), (&new.identity).into()],
        |row| Ok((row.int(0)?, row.int(1)?)),
    )
    .await?;
    let windowed = new.kind.deduplicated_within_window();
    let window = i64::try_from(dedup_window.as_micros()).unwrap_or(i64::MAX);
    let sequence = tx.counters.sequences.peek();
    let args = [
        integration.into(),
        (&new.identity).into(),
        sequence.into(),
        now.into(),
    ];
    match stored {
        Some((first, first_time)) if !windowed || now.saturating_sub(first_time) < window => {
            return Ok(Ok(EventReceipt {
                sequence: first as u64,
                created: false,
            }));
        }
        // The first copy is older than the window: this one is a new event, and
        // the first copy of what comes after it.
        Some(_) => {
            let sql = "UPDATE event_identities SET sequence = $3, first_time = $4 \
                 WHERE integration = $1 AND identity = $2";
            conn.execute(sql, &args).await?;
        }
        None => {
            let sql = "INSERT INTO event_identities (integration, identity, sequence, first_time) \
                 VALUES ($1, $2, $3, $4)";
            conn.execute(sql, &args).await?;
        }
    }
    let lead_ref = resolve_lead(conn, integration, &new.named_lead)
        .await?
        .unwrap_or_default();
    let body = match new.kind {
        // A message says which lead it was filed under.
        EventKind::Message => codec::with_resolved_lead(&new.body, &lead_ref),
        _ => new.body.clone(),
    };
    let event = EncodedEvent {
        sequence: tx.counters.sequences.take() as u64,
        receive_time: from_micros(now),
        kind: new.kind,
        integration: integration.into(),
        source: None,
        body,
        trace_parent: new.trace_parent.clone(),
        person: None,
    };
    append_event(conn, &event, &new.subject_id, &lead_ref).await?;
    let receipt = EventReceipt {
        sequence: event.sequence,
        created: true,
    };
    tx.committed.events.push(event);
    Ok(Ok(receipt))
}
