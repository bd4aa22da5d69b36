//! The writer's transactions: a batch of writes applied in one transaction, leads
//! and events appended under the event counter.

use std::collections::HashSet;

use super::{WriteSide, consumers, crm, from_micros, now_micros, to_json};
use crate::domain::{Deal, EventBody, Lead, LeadKey, OrderIdMode, Stored};
use crate::store::db::{Arg, Conn, DbError, query_opt, scalar, values_placeholders};
use crate::store::writer::{Applied, Committed, Outcome, Write};
use crate::store::{EventReceipt, LeadReceipt, StoreError};

/// The event sequences a write transaction hands out.
#[derive(Debug, Default)]
pub(super) struct Sequences {
    /// The last sequence allocated (read from the counter at the transaction's start).
    last: i64,
    /// Whether any was allocated, so the counter must be written back.
    allocated: bool,
}

impl Sequences {
    fn starting_after(last: i64) -> Self {
        Self {
            last,
            allocated: false,
        }
    }

    /// The sequence the next event would get.
    fn peek(&self) -> i64 {
        self.last + 1
    }

    /// Takes the next sequence.
    fn take(&mut self) -> i64 {
        self.last += 1;
        self.allocated = true;
        self.last
    }

    /// The counter's new value, if events were appended.
    fn written_back(&self) -> Option<i64> {
        self.allocated.then_some(self.last)
    }
}

/// Applies a batch in one transaction on the writer's connection and commits it.
pub(super) async fn apply_batch<W: WriteSide>(
    side: &mut W,
    batch: &[Write],
) -> Result<(Vec<Applied>, Committed), DbError> {
    let conn = side.connection().await?;
    let result = transaction::<W>(conn, batch).await;
    if let Err(DbError::Unavailable(_)) = &result {
        // The connection may be what failed: the next batch connects afresh.
        side.discard();
    }
    result
}

async fn transaction<W: WriteSide>(
    conn: &mut W::Conn,
    batch: &[Write],
) -> Result<(Vec<Applied>, Committed), DbError> {
    conn.execute(W::BEGIN, &[]).await?;
    let applied = match writes::<W>(conn, batch).await {
        Ok(applied) => conn.execute("COMMIT", &[]).await.map(|_| applied),
        Err(error) => Err(error),
    };
    if applied.is_err() {
        // Nothing of the batch stays; the error says why.
        let _ = conn.execute("ROLLBACK", &[]).await;
    }
    applied
}

async fn writes<W: WriteSide>(
    conn: &mut W::Conn,
    batch: &[Write],
) -> Result<(Vec<Applied>, Committed), DbError> {
    W::begin_writes(conn, batch).await?;
    let mut sequences = Sequences::default();
    if batch.iter().any(Write::appends_events) {
        let last = scalar(conn, "SELECT last_sequence FROM event_counter", &[]).await?;
        sequences = Sequences::starting_after(last);
    }
    let mut committed = Committed::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut rest = batch;
    while !rest.is_empty() {
        // Consecutive new leads, the bulk of any busy batch, go in together.
        let run = leading_leads(rest);
        if run.len() > 1 {
            outcomes.extend(insert_leads(conn, &run, &mut committed, &mut sequences).await?);
            rest = &rest[run.len()..];
        } else {
            outcomes.push(apply(conn, &rest[0], &mut committed, &mut sequences).await?);
            rest = &rest[1..];
        }
    }
    if let Some(last) = sequences.written_back() {
        let sql = "UPDATE event_counter SET last_sequence = $1";
        conn.execute(sql, &[last.into()]).await?;
    }
    W::before_commit(conn, &committed).await?;
    Ok((outcomes, committed))
}

/// The leads at the start of `batch`, up to its first write of another kind.
fn leading_leads(batch: &[Write]) -> Vec<(&Lead, OrderIdMode)> {
    batch
        .iter()
        .map_while(|write| match write {
            Write::InsertLead { lead, mode } => Some((&**lead, *mode)),
            _ => None,
        })
        .collect()
}

/// Applies one write inside the batch's transaction.
async fn apply<C: Conn>(
    conn: &mut C,
    write: &Write,
    committed: &mut Committed,
    sequences: &mut Sequences,
) -> Result<Applied, DbError> {
    Ok(match write {
        Write::InsertLead { lead, mode } => insert_lead(conn, lead, *mode, committed, sequences)
            .await?
            .map(Outcome::Lead),
        Write::AssignOrderId { key, mode } => match crm::load_deal(conn, key).await? {
            Some((_, deal)) => Ok(Outcome::Deal(crm::assign(conn, deal, *mode).await?)),
            None => Err(StoreError::NotFound),
        },
        Write::InsertEvent { body } => insert_event(conn, body, committed, sequences)
            .await?
            .map(Outcome::Event),
        Write::ReportDeal { key, report } => crm::report_deal(conn, key, report, committed)
            .await?
            .map(Outcome::Deal),
        Write::PutScheme {
            integration,
            scheme,
        } => Ok(Outcome::Time(
            crm::put_scheme(conn, integration, scheme).await?,
        )),
        Write::PutClient {
            integration,
            client,
        } => Ok(Outcome::Time(
            crm::put_client(conn, integration, client).await?,
        )),
        Write::ExportSnapshot {
            integration,
            kind,
            since,
            restart,
        } => {
            let snapshot = crm::start_walk(conn, integration, *kind, *since, *restart).await?;
            Ok(Outcome::Number(snapshot))
        }
        Write::EnsureConsumer {
            name,
            acked_sequence,
        } => {
            consumers::ensure(conn, name, *acked_sequence).await?;
            Ok(Outcome::Done)
        }
        Write::AckConsumer { name, sequence } => {
            consumers::ack(conn, name, *sequence).await?;
            Ok(Outcome::Done)
        }
        Write::DeleteConsumer { name } => Ok(Outcome::Flag(consumers::delete(conn, name).await?)),
        Write::Ping => {
            // A real (empty) write: it needs the write lock and the disk, as a lead
            // would, so readiness fails when leads could not be committed.
            let sql = "UPDATE event_counter SET last_sequence = last_sequence";
            conn.execute(sql, &[]).await?;
            Ok(Outcome::Done)
        }
    })
}

/// Stores a lead unless its key is taken; a retry gets the stored lead's answer.
async fn insert_lead<C: Conn>(
    conn: &mut C,
    lead: &Lead,
    mode: OrderIdMode,
    committed: &mut Committed,
    sequences: &mut Sequences,
) -> Result<Result<LeadReceipt, StoreError>, DbError> {
    let key = lead.key();
    let now = now_micros();
    let order_id = mode.without_deal_id(&key.lead_id);
    // The common case in one statement: a new lead claims its key; the event it
    // names follows in the same transaction.
    let claimed = query_opt(
        conn,
        "INSERT INTO leads (integration, lead_id, sequence, order_id, deal_update_time) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (integration, lead_id) DO NOTHING \
         RETURNING sequence",
        &[
            (&key.integration).into(),
            (&key.lead_id).into(),
            sequences.peek().into(),
            order_id.into(),
            now.into(),
        ],
        |row| row.int(0),
    )
    .await?;
    if claimed.is_none() {
        // A retry: the lead is stored already.
        let Some((sequence, deal)) = crm::load_deal(conn, &key).await? else {
            return Err(DbError::invalid(
                "a lead's key is taken but the lead is gone",
            ));
        };
        let deal = crm::assign(conn, deal, mode).await?;
        return Ok(Ok(LeadReceipt {
            sequence,
            created: false,
            deal,
        }));
    }
    let order_id = order_id.map(str::to_owned);
    let body = EventBody::Lead(lead.clone());
    let event = append_event(conn, sequences.take(), &key, body, now).await?;
    let receipt = new_lead_receipt(key, event.sequence, order_id, event.receive_time);
    committed.events.push(event);
    Ok(Ok(receipt))
}

/// The receipt of a lead stored just now.
fn new_lead_receipt(
    key: LeadKey,
    sequence: u64,
    answered_order_id: Option<String>,
    update_time: time::OffsetDateTime,
) -> LeadReceipt {
    LeadReceipt {
        sequence,
        created: true,
        deal: Deal {
            key,
            deal_id: None,
            answered_order_id,
            details: Default::default(),
            update_time,
        },
    }
}

/// Inserts a run of leads with one statement per table instead of two per lead.
/// Leads stored already, and repeats within the run, then take the one-by-one
/// path, where they are retries. Outcomes are in the run's order.
async fn insert_leads<C: Conn>(
    conn: &mut C,
    run: &[(&Lead, OrderIdMode)],
    committed: &mut Committed,
    sequences: &mut Sequences,
) -> Result<Vec<Applied>, DbError> {
    let keys: Vec<LeadKey> = run.iter().map(|(lead, _)| lead.key()).collect();
    let sql = format!(
        "SELECT integration, lead_id FROM leads WHERE (integration, lead_id) IN (VALUES {})",
        values_placeholders(keys.len(), 2)
    );
    let args: Vec<Arg> = keys
        .iter()
        .flat_map(|key| [Arg::from(&key.integration), Arg::from(&key.lead_id)])
        .collect();
    let stored = conn
        .query(&sql, &args, |row| {
            Ok(LeadKey::new(row.text(0)?, row.text(1)?))
        })
        .await?;
    let mut taken: HashSet<LeadKey> = stored.into_iter().collect();
    // The first of each key not stored yet is new; the others are retries.
    let fresh: Vec<bool> = keys.iter().map(|key| taken.insert(key.clone())).collect();
    let now = now_micros();
    let receive_time = from_micros(now);
    let mut appended = Vec::new();
    let (mut lead_args, mut event_args) = (Vec::new(), Vec::new());
    let mut payloads = Vec::new();
    for (((lead, mode), key), _) in run.iter().zip(&keys).zip(&fresh).filter(|(_, f)| **f) {
        let sequence = sequences.take();
        let order_id = mode.without_deal_id(&key.lead_id).map(str::to_owned);
        let body = EventBody::Lead((*lead).clone());
        payloads.push(to_json(&body)?);
        appended.push((sequence, order_id, body));
    }
    let fresh_keys = keys.iter().zip(&fresh).filter(|(_, f)| **f).map(|(k, _)| k);
    for (((sequence, order_id, _), key), payload) in appended.iter().zip(fresh_keys).zip(&payloads)
    {
        lead_args.extend([
            Arg::from(&key.integration),
            Arg::from(&key.lead_id),
            Arg::Int(*sequence),
            Arg::from(order_id.as_deref()),
            Arg::Int(now),
        ]);
        event_args.extend([
            Arg::Int(*sequence),
            Arg::Text("lead"),
            Arg::from(&key.integration),
            Arg::from(&key.lead_id),
            Arg::Int(now),
            Arg::from(payload),
        ]);
    }
    if !appended.is_empty() {
        let sql = format!(
            "INSERT INTO leads (integration, lead_id, sequence, order_id, deal_update_time) \
             VALUES {}",
            values_placeholders(appended.len(), 5)
        );
        conn.execute(&sql, &lead_args).await?;
        let sql = format!(
            "INSERT INTO events (sequence, kind, integration, lead_id, receive_time, payload) \
             VALUES {}",
            values_placeholders(appended.len(), 6)
        );
        conn.execute(&sql, &event_args).await?;
    }
    // In the run's order: new leads from what was appended (in sequence order), the
    // others answered as retries now that the new ones are in.
    let mut appended = appended.into_iter();
    let mut outcomes = Vec::with_capacity(run.len());
    for (((lead, mode), key), fresh) in run.iter().zip(keys).zip(fresh) {
        let next = if fresh { appended.next() } else { None };
        let Some((sequence, order_id, body)) = next else {
            let retry = insert_lead(conn, lead, *mode, committed, sequences).await?;
            outcomes.push(retry.map(Outcome::Lead));
            continue;
        };
        committed.events.push(Stored {
            sequence: sequence as u64,
            receive_time,
            record: body,
        });
        let receipt = new_lead_receipt(key, sequence as u64, order_id, receive_time);
        outcomes.push(Ok(Outcome::Lead(receipt)));
    }
    Ok(outcomes)
}

/// Stores a message, task or call unless its identity is taken; a retry gets the
/// first delivery's sequence.
async fn insert_event<C: Conn>(
    conn: &mut C,
    body: &EventBody,
    committed: &mut Committed,
    sequences: &mut Sequences,
) -> Result<Result<EventReceipt, StoreError>, DbError> {
    let identity = body.identity();
    let integration = body.integration();
    let claimed = query_opt(
        conn,
        "INSERT INTO event_identities (integration, identity, sequence) VALUES ($1, $2, $3) \
         ON CONFLICT (integration, identity) DO NOTHING RETURNING sequence",
        &[
            integration.into(),
            (&identity).into(),
            sequences.peek().into(),
        ],
        |row| row.int(0),
    )
    .await?;
    if claimed.is_none() {
        let sequence = scalar(
            conn,
            "SELECT sequence FROM event_identities WHERE integration = $1 AND identity = $2",
            &[integration.into(), (&identity).into()],
        )
        .await?;
        return Ok(Ok(EventReceipt {
            sequence: sequence as u64,
            created: false,
        }));
    }
    let key = LeadKey::new(integration, body.subject_id());
    let event = append_event(conn, sequences.take(), &key, body.clone(), now_micros()).await?;
    let receipt = EventReceipt {
        sequence: event.sequence,
        created: true,
    };
    committed.events.push(event);
    Ok(Ok(receipt))
}

/// Appends an event to the log under `sequence`.
async fn append_event<C: Conn>(
    conn: &mut C,
    sequence: i64,
    key: &LeadKey,
    body: EventBody,
    receive_micros: i64,
) -> Result<Stored<EventBody>, DbError> {
    let payload = to_json(&body)?;
    conn.execute(
        "INSERT INTO events (sequence, kind, integration, lead_id, receive_time, payload) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            sequence.into(),
            body.kind().as_str().into(),
            (&key.integration).into(),
            (&key.lead_id).into(),
            receive_micros.into(),
            (&payload).into(),
        ],
    )
    .await?;
    Ok(Stored {
        sequence: sequence as u64,
        // What a reader of the store will see: microsecond precision.
        receive_time: from_micros(receive_micros),
        record: body,
    })
}
