//! Storing leads: each once, under its key, with the event that announces it and,
//! when its order id is fixed at once, the version that brings it into the export.

use std::borrow::Cow;
use std::collections::HashSet;

use super::crm;
use super::events::{EVENT_COLUMN_COUNT, EVENT_COLUMNS, event_args};
use super::persons::{self, Candidate, Matched};
use super::writes::Tx;
use super::{column_text, from_micros, now_micros, to_micros};
use crate::domain::{Deal, EncodedEvent, EventKind, LeadKey, OrderIdMode, PersonLink};
use crate::store::db::{Arg, Conn, DbError, built_once, values_placeholders_with};
use crate::store::writer::{Applied, Write};
use crate::store::{LeadReceipt, NewLead, StoreError};

const LEAD_COLUMNS: &str = "integration, lead_id, sequence, order_id, deal_update_time, \
     visit, title, create_time, receive_time, order_version, order_time, \
     name_folded, phone_digits, email_folded, person_id, phone_e164";
const LEAD_COLUMN_COUNT: usize = 16;

/// The leads at the start of `batch`, up to its first write of another kind.
pub(super) fn leading_leads(batch: &[Write]) -> usize {
    batch
        .iter()
        .take_while(|write| matches!(write, Write::InsertLead { .. }))
        .count()
}

/// The text columns of a lead, as its columns can hold them.
struct LeadTexts<'a> {
    visit: Cow<'a, str>,
    title: Cow<'a, str>,
    name: Cow<'a, str>,
    email: Cow<'a, str>,
}

impl<'a> LeadTexts<'a> {
    fn of(lead: &'a NewLead) -> Self {
        Self {
            visit: column_text(&lead.visit),
            title: column_text(&lead.title),
            name: column_text(&lead.search.name),
            email: column_text(&lead.search.email),
        }
    }
}

/// A new lead's row: `order_id` is what it is answered at once, if anything;
/// `version` fixes it in the export; `person_id` is its person's, if it matched.
fn lead_args<'a>(
    lead: &'a NewLead,
    texts: &'a LeadTexts<'_>,
    (sequence, order_id, version): (i64, Option<&'a str>, Option<i64>),
    (now, person_id): (i64, Option<i64>),
) -> [Arg<'a>; LEAD_COLUMN_COUNT] {
    [
        (&lead.key.integration).into(),
        (&lead.key.lead_id).into(),
        sequence.into(),
        order_id.into(),
        now.into(),
        texts.visit.as_ref().into(),
        texts.title.as_ref().into(),
        lead.create_time.map(to_micros).into(),
        now.into(),
        version.into(),
        version.map(|_| now).into(),
        texts.name.as_ref().into(),
        (&lead.search.phone).into(),
        texts.email.as_ref().into(),
        person_id.into(),
        lead.identity
            .as_ref()
            .and_then(|identity| identity.phone.as_deref())
            .unwrap_or_default()
            .into(),
    ]
}

/// A new lead's event, as committed.
fn lead_event(
    lead: &NewLead,
    sequence: i64,
    receive_micros: i64,
    person: Option<PersonLink>,
) -> EncodedEvent {
    EncodedEvent {
        sequence: sequence as u64,
        receive_time: from_micros(receive_micros),
        kind: EventKind::Lead,
        integration: lead.key.integration.as_str().into(),
        source: Some(lead.source),
        body: lead.body.clone(),
        trace_parent: lead.trace_parent.clone(),
        person,
    }
}

/// Answers a lead whose key is taken: a retry gets the stored lead's answer.
async fn answer_retry<C: Conn>(
    conn: &mut C,
    lead: &NewLead,
    mode: OrderIdMode,
    tx: &mut Tx<'_>,
) -> Result<Result<LeadReceipt, StoreError>, DbError> {
    let key = &lead.key;
    let Some((sequence, deal)) = crm::load_deal(conn, key).await? else {
        return Err(DbError::invalid(
            "a lead's key is taken but the lead is gone",
        ));
    };
    let deal = crm::assign(conn, deal, mode, tx).await?;
    Ok(Ok(LeadReceipt {
        sequence,
        created: false,
        deal,
    }))
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

/// A lead of a run that is new: its numbers and what it was answered.
struct Appended {
    sequence: i64,
    version: Option<i64>,
    order_id: Option<String>,
}

/// Inserts a run of leads (one or more) with one statement per table, each new
/// one with its person (see `persons`). Leads stored already, and repeats within
/// the run, are retries. Sets the reply of each write of the run, which holds
/// leads only (see [`leading_leads`]).
pub(super) async fn insert_leads<C: Conn>(
    conn: &mut C,
    writes: &mut [Write],
    tx: &mut Tx<'_>,
) -> Result<(), DbError> {
    let run: Vec<(&NewLead, OrderIdMode)> = writes
        .iter()
        .filter_map(|write| match write {
            Write::InsertLead { lead, mode, .. } => Some((&**lead, *mode)),
            _ => None,
        })
        .collect();
    let outcomes = insert_run(conn, &run, tx).await?;
    let replies = writes.iter_mut().filter_map(|write| match write {
        Write::InsertLead { reply, .. } => Some(reply),
        _ => None,
    });
    for (reply, outcome) in replies.zip(outcomes) {
        reply.set(outcome);
    }
    Ok(())
}

/// [`insert_leads`]' work: the outcomes, in the run's order.
async fn insert_run<C: Conn>(
    conn: &mut C,
    run: &[(&NewLead, OrderIdMode)],
    tx: &mut Tx<'_>,
) -> Result<Vec<Applied<LeadReceipt>>, DbError> {
    let keys: Vec<&LeadKey> = run.iter().map(|(lead, _)| &lead.key).collect();
    let sql = built_once("leads stored", C::PLACEHOLDER, keys.len(), || {
        format!(
            "SELECT integration, lead_id FROM leads WHERE (integration, lead_id) IN (VALUES {})",
            values_placeholders_with(C::PLACEHOLDER, keys.len(), 2)
        )
    });
    let args: Vec<Arg> = keys
        .iter()
        .flat_map(|key| [Arg::from(&key.integration), Arg::from(&key.lead_id)])
        .collect();
    let stored = conn
        .query(sql, &args, |row| {
            Ok(LeadKey::new(row.text(0)?, row.text(1)?))
        })
        .await?;
    let mut taken: HashSet<LeadKey> = stored.into_iter().collect();
    // The first of each key not stored yet is new; the others are retries.
    let fresh: Vec<bool> = keys
        .iter()
        .map(|key| taken.insert((*key).clone()))
        .collect();
    let now = now_micros();
    let mut appended = Vec::new();
    let mut persons_of_new: Vec<Option<Matched>> = Vec::new();
    for ((_, mode), key) in run
        .iter()
        .zip(&keys)
        .zip(&fresh)
        .filter_map(|(l, f)| f.then_some(l))
    {
        let order_id = mode.without_deal_id(&key.lead_id).map(str::to_owned);
        appended.push(Appended {
            sequence: tx.counters.sequences.take(),
            version: order_id.as_ref().map(|_| tx.counters.versions.take()),
            order_id,
        });
    }
    if !appended.is_empty() {
        let new_leads: Vec<_> = run
            .iter()
            .zip(&keys)
            .zip(&fresh)
            .filter_map(|(l, f)| f.then_some(l))
            .collect();
        let texts: Vec<LeadTexts> = new_leads
            .iter()
            .map(|((lead, _), _)| LeadTexts::of(lead))
            .collect();
        let leads_and_keys: Vec<(&NewLead, &LeadKey)> = new_leads
            .iter()
            .map(|((lead, _), key)| (*lead, **key))
            .collect();
        let matched = match_persons(conn, &leads_and_keys, &appended, now, tx).await?;
        let (mut lead_rows, mut event_rows) = (Vec::new(), Vec::new());
        for (((((lead, _), key), new), texts), matched) in
            new_leads.iter().zip(&appended).zip(&texts).zip(&matched)
        {
            let numbers = (new.sequence, new.order_id.as_deref(), new.version);
            let person_id = matched.map(|matched| matched.person_id);
            lead_rows.extend(lead_args(lead, texts, numbers, (now, person_id)));
            event_rows.extend(event_args(
                new.sequence,
                EventKind::Lead,
                key,
                now,
                &lead.body,
                (Some(&key.lead_id), Some(lead.source.as_str())),
                (
                    lead.trace_parent.as_deref(),
                    matched.map(|matched| matched.link),
                ),
            ));
        }
        persons_of_new = matched;
        let (count, mark) = (appended.len(), C::PLACEHOLDER);
        let rows = count as u64;
        let sql = built_once("leads", mark, count, || {
            format!(
                "{} INTO leads ({LEAD_COLUMNS}) VALUES {}",
                C::INSERT_CHECKED,
                values_placeholders_with(mark, count, LEAD_COLUMN_COUNT)
            )
        });
        let leads = conn.execute(sql, &lead_rows).await?;
        let sql = built_once("lead events", mark, count, || {
            format!(
                "{} INTO events ({EVENT_COLUMNS}) VALUES {}",
                C::INSERT_CHECKED,
                values_placeholders_with(mark, count, EVENT_COLUMN_COUNT)
            )
        });
        let events = conn.execute(sql, &event_rows).await?;
        if (leads, events) != (rows, rows) {
            // Checked free above, in this transaction: the store is not what it seems.
            return Err(DbError::invalid(format!(
                "{rows} new leads were checked free, but {leads} leads and {events} events went in"
            )));
        }
    }
    // In the run's order: new leads from what was appended (in sequence order), the
    // others answered as retries now that the new ones are in.
    let receive_time = from_micros(now);
    let mut appended = appended.into_iter().zip(persons_of_new);
    let mut outcomes = Vec::with_capacity(run.len());
    for ((lead, mode), fresh) in run.iter().zip(fresh) {
        let next = if fresh { appended.next() } else { None };
        let Some((new, matched)) = next else {
            let retry = answer_retry(conn, lead, *mode, tx).await?;
            outcomes.push(retry);
            continue;
        };
        let person = matched.map(|matched| matched.link);
        tx.committed
            .events
            .push(lead_event(lead, new.sequence, now, person));
        let (key, sequence) = (lead.key.clone(), new.sequence as u64);
        let receipt = new_lead_receipt(key, sequence, new.order_id, receive_time);
        outcomes.push(Ok(receipt));
    }
    Ok(outcomes)
}

/// The persons of new leads, in order; none for a lead whose integration has
/// matching off.
async fn match_persons<C: Conn>(
    conn: &mut C,
    new_leads: &[(&NewLead, &LeadKey)],
    appended: &[Appended],
    now: i64,
    tx: &mut Tx<'_>,
) -> Result<Vec<Option<Matched>>, DbError> {
    let candidates: Vec<Candidate> = new_leads
        .iter()
        .zip(appended)
        .filter_map(|((lead, key), new)| {
            let identity = lead.identity.as_ref()?;
            Some(Candidate {
                integration: &key.integration,
                lead_id: &key.lead_id,
                sequence: new.sequence,
                seen_at: now,
                identity,
            })
        })
        .collect();
    if candidates.is_empty() {
        return Ok(vec![None; new_leads.len()]);
    }
    let mut matched = persons::match_leads(conn, &candidates, true, tx)
        .await?
        .into_iter();
    Ok(new_leads
        .iter()
        .map(|(lead, _)| lead.identity.as_ref().and_then(|_| matched.next()))
        .collect())
}
