//! The event log's writes: messages, tasks and calls stored once (an identical
//! message or task only within the deduplication window), each filed under the lead
//! it is about.

use std::time::Duration;

use super::writes::Tx;
use super::{from_micros, now_micros, to_json};
use crate::domain::{EventBody, EventKind, LeadKey, Stored};
use crate::store::db::{Arg, Conn, DbError, query_opt};
use crate::store::{EventReceipt, StoreError};

pub(super) const EVENT_COLUMNS: &str =
    "sequence, kind, integration, lead_id, receive_time, payload, lead_ref";

/// An event's row.
pub(super) fn event_args<'a>(
    sequence: i64,
    kind: &'static str,
    key: &'a LeadKey,
    receive_micros: i64,
    payload: &'a str,
    lead_ref: Option<&'a str>,
) -> [Arg<'a>; 7] {
    [
        sequence.into(),
        kind.into(),
        (&key.integration).into(),
        (&key.lead_id).into(),
        receive_micros.into(),
        payload.into(),
        lead_ref.into(),
    ]
}

/// Appends an event to the log under `sequence`, filed under `lead_ref`.
pub(super) async fn append_event<C: Conn>(
    conn: &mut C,
    sequence: i64,
    key: &LeadKey,
    body: EventBody,
    lead_ref: &str,
    receive_micros: i64,
) -> Result<Stored<EventBody>, DbError> {
    let payload = to_json(&body)?;
    let lead_ref = Some(lead_ref).filter(|id| !id.is_empty());
    let kind = body.kind().as_str();
    let args = event_args(sequence, kind, key, receive_micros, &payload, lead_ref);
    let sql = format!("INSERT INTO events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
    conn.execute(&sql, &args).await?;
    Ok(Stored {
        sequence: sequence as u64,
        // What a reader of the store will see: microsecond precision.
        receive_time: from_micros(receive_micros),
        record: body,
    })
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
    let sql = "SELECT COALESCE( \
           (SELECT lead_id FROM leads WHERE integration = $1 AND order_id = $2 LIMIT 1), \
           (SELECT lead_id FROM leads WHERE integration = $1 AND lead_id = $2))";
    let found = query_opt(conn, sql, &[integration.into(), id.into()], |row| {
        Ok(row.opt_text(0)?.map(str::to_owned))
    })
    .await?;
    Ok(found.flatten())
}

/// The id a message, task or call names its lead by.
fn named_lead(body: &EventBody) -> &str {
    match body {
        EventBody::Lead(lead) => &lead.lead_id,
        EventBody::Message(message) => &message.lead_id,
        EventBody::Task(task) => &task.element_id,
        EventBody::Call(call) => &call.order_id,
    }
}

/// Stores a message, task or call unless it is a copy of one already stored; a
/// copy gets the first delivery's sequence. Calls are copies of the same call id
/// for good; an identical message or task is a copy only within `dedup_window` of
/// the first stored copy (zero: every copy is stored).
pub(super) async fn insert_event<C: Conn>(
    conn: &mut C,
    body: &EventBody,
    dedup_window: Duration,
    tx: &mut Tx<'_>,
) -> Result<Result<EventReceipt, StoreError>, DbError> {
    let identity = body.identity();
    let integration = body.integration();
    let now = now_micros();
    let stored = query_opt(
        conn,
        "SELECT sequence, first_time FROM event_identities \
         WHERE integration = $1 AND identity = $2",
        &[integration.into(), (&identity).into()],
        |row| Ok((row.int(0)?, row.int(1)?)),
    )
    .await?;
    let windowed = matches!(body.kind(), EventKind::Message | EventKind::Task);
    let window = i64::try_from(dedup_window.as_micros()).unwrap_or(i64::MAX);
    let sequence = tx.counters.sequences.peek();
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
            let args = [
                integration.into(),
                (&identity).into(),
                sequence.into(),
                now.into(),
            ];
            conn.execute(sql, &args).await?;
        }
        None => {
            let sql = "INSERT INTO event_identities (integration, identity, sequence, first_time) \
                 VALUES ($1, $2, $3, $4)";
            let args = [
                integration.into(),
                (&identity).into(),
                sequence.into(),
                now.into(),
            ];
            conn.execute(sql, &args).await?;
        }
    }
    let lead_ref = resolve_lead(conn, integration, named_lead(body)).await?;
    let mut body = body.clone();
    if let EventBody::Message(message) = &mut body {
        message.resolved_lead_id = lead_ref.clone().unwrap_or_default();
    }
    let key = LeadKey::new(integration, body.subject_id());
    let lead_ref = lead_ref.unwrap_or_default();
    let taken = tx.counters.sequences.take();
    let event = append_event(conn, taken, &key, body, &lead_ref, now).await?;
    let receipt = EventReceipt {
        sequence: event.sequence,
        created: true,
    };
    tx.committed.events.push(event);
    Ok(Ok(receipt))
}
