//! Persons, in the writer's transactions: each new lead joins the person of a
//! lead that shares its valid phone or e-mail, or starts one; a lead that shares
//! them with two persons merges them (the older one is kept). Also the
//! background match of leads stored before persons, and an operator's split.

use std::collections::HashMap;

use super::events::append_event;
use super::person_store::{key_probe, newest_carrier};
use super::writes::Tx;
use super::{from_micros, now_micros};
use crate::codec;
use crate::domain::{EncodedEvent, EventBody, Identity, PersonLink, PersonsMerged, phone_digits};
use crate::store::db::{Arg, Conn, DbError, built_once, query_opt};

/// A lead to find the person of.
pub(super) struct Candidate<'a> {
    pub integration: &'a str,
    pub lead_id: &'a str,
    /// Its event's sequence: the id of the person it starts, if it starts one.
    pub sequence: i64,
    /// When it was received (Unix microseconds).
    pub seen_at: i64,
    pub identity: &'a Identity,
}

/// A lead's person: as its event tells it, and where the lead stands once the
/// batch's merges are done.
#[derive(Debug, Clone, Copy)]
pub(super) struct Matched {
    pub link: PersonLink,
    pub person_id: i64,
}

/// A person as matching sees it.
#[derive(Debug, Clone)]
struct State<'a> {
    integration: &'a str,
    first_seen: i64,
    split_from: Option<i64>,
    /// Merged into another in this batch.
    merged_into: Option<i64>,
    /// Not stored yet.
    new: bool,
    changed: bool,
}

/// What links leads: an integration's phone (E.164) or e-mail (folded), borrowed
/// from the batch's leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key<'a> {
    integration: &'a str,
    phone: bool,
    value: &'a str,
}

/// Where each key belongs.
type KeyMap<'a> = HashMap<Key<'a>, i64>;

/// Finds (or starts) each candidate's person, in order, merging persons a
/// candidate links; writes the persons and the merge events. The leads' own rows
/// are the caller's to write.
pub(super) async fn match_leads<'a, C: Conn>(
    conn: &mut C,
    candidates: &[Candidate<'a>],
    tx: &mut Tx<'_>,
) -> Result<Vec<Matched>, DbError> {
    let (mut keys, mut persons) = stored_keys(conn, candidates).await?;
    // Merged ids and where they went, within this batch.
    let mut merged_into: HashMap<i64, i64> = HashMap::new();
    let mut merges = Vec::new();
    let mut matched = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let own = own_keys(candidate);
        let mut found: Vec<i64> = Vec::new();
        for key in own.clone() {
            if let Some(id) = keys.get(&key).map(|id| resolve(&merged_into, *id))
                && !found.contains(&id)
            {
                found.push(id);
            }
        }
        let (person_id, returning) = match found.first() {
            None => {
                let id = candidate.sequence;
                persons.insert(
                    id,
                    State {
                        integration: candidate.integration,
                        first_seen: candidate.seen_at,
                        split_from: None,
                        merged_into: None,
                        new: true,
                        changed: true,
                    },
                );
                (id, false)
            }
            // Persons an operator split apart stay apart: the lead joins the person
            // of its first key (its phone's) and nothing merges.
            Some(&first)
                if found
                    .iter()
                    .any(|a| found.iter().any(|b| apart(&persons, *a, *b))) =>
            {
                (first, persons[&first].first_seen < candidate.seen_at)
            }
            Some(_) => {
                // The oldest person is kept.
                found.sort_by_key(|id| (persons[id].first_seen, *id));
                let kept = found[0];
                for &other in &found[1..] {
                    let linked_by = own
                        .clone()
                        .find(|key| {
                            keys.get(key).map(|id| resolve(&merged_into, *id)) == Some(other)
                        })
                        .map(|key| key.value.to_owned())
                        .unwrap_or_default();
                    let gone = persons.get_mut(&other).expect("a found person is loaded");
                    gone.merged_into = Some(kept);
                    gone.changed = true;
                    let gone = gone.clone();
                    let person = persons.get_mut(&kept).expect("a found person is loaded");
                    if gone.first_seen < person.first_seen {
                        person.first_seen = gone.first_seen;
                        person.changed = true;
                    }
                    merged_into.insert(other, kept);
                    merges.push(PersonsMerged {
                        integration: candidate.integration.to_owned(),
                        kept_person_id: kept as u64,
                        merged_person_id: other as u64,
                        lead_id: candidate.lead_id.to_owned(),
                        linked_by,
                    });
                }
                (kept, persons[&kept].first_seen < candidate.seen_at)
            }
        };
        for key in own {
            keys.entry(key).or_insert(person_id);
        }
        let person = persons.get_mut(&person_id).expect("the person is loaded");
        if candidate.seen_at < person.first_seen {
            // An older lead (the background match): it is the person's first now.
            person.first_seen = candidate.seen_at;
            person.changed = true;
        }
        matched.push(Matched {
            link: PersonLink {
                person_id: person_id as u64,
                returning,
                first_seen: from_micros(person.first_seen),
            },
            person_id,
        });
    }
    for entry in &mut matched {
        entry.person_id = resolve(&merged_into, entry.person_id);
    }
    write_persons(conn, &persons).await?;
    for merge in merges {
        record_merge(conn, merge, tx).await?;
    }
    Ok(matched)
}

/// A list of values to look up, repeated up to a power of two: a few statement
/// shapes, kept prepared, whatever the batch's size.
fn padded<T: Clone>(values: &mut Vec<T>) {
    if let Some(last) = values.last().cloned() {
        values.resize(values.len().next_power_of_two(), last);
    }
}

/// Where an id stands after the batch's merges.
fn resolve(merged_into: &HashMap<i64, i64>, mut id: i64) -> i64 {
    while let Some(next) = merged_into.get(&id) {
        id = *next;
    }
    id
}

/// Whether an operator split one of the two from the other.
fn apart(persons: &HashMap<i64, State<'_>>, a: i64, b: i64) -> bool {
    persons[&a].split_from == Some(b) || persons[&b].split_from == Some(a)
}

/// A candidate's keys, phone first.
fn own_keys<'a>(candidate: &Candidate<'a>) -> impl Iterator<Item = Key<'a>> + Clone + use<'a> {
    let integration = candidate.integration;
    let identity = candidate.identity;
    let key = move |phone, value: Option<&'a String>| {
        value.map(|value| Key {
            integration,
            phone,
            value,
        })
    };
    key(true, identity.phone.as_ref())
        .into_iter()
        .chain(key(false, identity.email.as_ref()))
}

/// The persons of the candidates' keys as stored: for each distinct key, the
/// person of the latest lead that carries it (phones through `leads_by_phone`, on
/// their E.164 form's last ten digits, e-mails through `leads_by_email`), one
/// lead read a key however many carry it; then those persons.
async fn stored_keys<'a, C: Conn>(
    conn: &mut C,
    candidates: &[Candidate<'a>],
) -> Result<(KeyMap<'a>, HashMap<i64, State<'a>>), DbError> {
    let mut wanted: Vec<Key<'a>> = candidates.iter().flat_map(own_keys).collect();
    if wanted.is_empty() {
        return Ok((KeyMap::new(), HashMap::new()));
    }
    // Phones first (the padding repeats the last key: the kinds stay in order).
    wanted.sort_unstable_by_key(|key| (!key.phone, key.integration, key.value));
    wanted.dedup();
    padded(&mut wanted);
    let phones = wanted.iter().filter(|key| key.phone).count();
    let (mut keys, mut persons) = (KeyMap::new(), HashMap::new());
    let mark = C::PLACEHOLDER;
    let sql = built_once("persons by key", mark, wanted.len(), || {
        // A key is a row: its place in `wanted`, the indexed value, the full one,
        // its integration.
        let rows: Vec<String> = (0..wanted.len())
            .map(|n| {
                let first = 3 * n + 1;
                format!(
                    "(CAST({n} AS BIGINT), {mark}{first}, {mark}{}, {mark}{})",
                    first + 1,
                    first + 2
                )
            })
            .collect();
        let latest = |phone| newest_carrier(phone, "k.column2", "k.column3", "k.column4");
        format!(
            "SELECT k.column1, CASE WHEN k.column1 < {mark}{} THEN ({}) ELSE ({}) END \
             FROM (VALUES {}) k",
            3 * wanted.len() + 1,
            latest(true),
            latest(false),
            rows.join(", ")
        )
    });
    let probes: Vec<String> = wanted
        .iter()
        .map(|key| key_probe(key.phone, key.value))
        .collect();
    let mut args: Vec<Arg> = Vec::with_capacity(3 * wanted.len() + 1);
    for (key, indexed) in wanted.iter().zip(&probes) {
        args.extend([Arg::from(indexed), key.value.into(), key.integration.into()]);
    }
    args.push((phones as i64).into());
    let found = conn
        .query(sql, &args, |row| Ok((row.int(0)?, row.opt_int(1)?)))
        .await?;
    for (n, person_id) in found {
        if let (Some(key), Some(person_id)) = (wanted.get(n as usize), person_id) {
            keys.insert(*key, person_id);
            persons.entry(person_id).or_insert(key.integration);
        }
    }
    let states = stored_persons(conn, persons.keys().copied().collect()).await?;
    let persons: HashMap<i64, State<'a>> = states
        .into_iter()
        .filter_map(|(id, first_seen, split_from)| {
            let integration = *persons.get(&id)?;
            let state = State {
                integration,
                first_seen,
                split_from,
                merged_into: None,
                new: false,
                changed: false,
            };
            Some((id, state))
        })
        .collect();
    keys.retain(|_, id| persons.contains_key(id));
    Ok((keys, persons))
}

/// The first seen time and split origin of stored persons.
async fn stored_persons<C: Conn>(
    conn: &mut C,
    mut ids: Vec<i64>,
) -> Result<Vec<(i64, i64, Option<i64>)>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    padded(&mut ids);
    let mark = C::PLACEHOLDER;
    let sql = built_once("persons by id", mark, ids.len(), || {
        let marks: Vec<String> = (1..=ids.len()).map(|n| format!("{mark}{n}")).collect();
        format!(
            "SELECT person_id, first_seen, split_from FROM persons WHERE person_id IN ({})",
            marks.join(", ")
        )
    });
    let args: Vec<Arg> = ids.iter().map(|id| Arg::from(*id)).collect();
    conn.query(sql, &args, |row| {
        Ok((row.int(0)?, row.int(1)?, row.opt_int(2)?))
    })
    .await
}

/// Inserts the new persons and updates the changed ones.
async fn write_persons<C: Conn>(
    conn: &mut C,
    persons: &HashMap<i64, State<'_>>,
) -> Result<(), DbError> {
    let new: Vec<(&i64, &State)> = persons.iter().filter(|(_, state)| state.new).collect();
    if !new.is_empty() {
        let mark = C::PLACEHOLDER;
        let sql = built_once("new persons", mark, new.len(), || {
            format!(
                "INSERT INTO persons (person_id, integration, first_seen, merged_into) VALUES {}",
                crate::store::db::values_placeholders_with(mark, new.len(), 4)
            )
        });
        let args: Vec<Arg> = new
            .iter()
            .flat_map(|(id, state)| {
                [
                    Arg::from(**id),
                    Arg::from(state.integration),
                    state.first_seen.into(),
                    state.merged_into.into(),
                ]
            })
            .collect();
        conn.execute(sql, &args).await?;
    }
    for (id, state) in persons
        .iter()
        .filter(|(_, state)| state.changed && !state.new)
    {
        conn.execute(
            "UPDATE persons SET first_seen = $1, merged_into = $2 WHERE person_id = $3",
            &[
                state.first_seen.into(),
                state.merged_into.into(),
                (*id).into(),
            ],
        )
        .await?;
    }
    Ok(())
}

/// Moves a merged person's stored leads and aliases to the kept one (its own row,
/// written with the others, points there too), and appends the event.
async fn record_merge<C: Conn>(
    conn: &mut C,
    merge: PersonsMerged,
    tx: &mut Tx<'_>,
) -> Result<(), DbError> {
    let (kept, merged) = (merge.kept_person_id as i64, merge.merged_person_id as i64);
    conn.execute(
        "UPDATE leads SET person_id = $1 WHERE person_id = $2",
        &[kept.into(), merged.into()],
    )
    .await?;
    conn.execute(
        "UPDATE persons SET merged_into = $1 WHERE merged_into = $2",
        &[kept.into(), merged.into()],
    )
    .await?;
    let lead_id = merge.lead_id.clone();
    append_person_event(conn, EventBody::PersonsMerged(merge), &lead_id, tx).await?;
    Ok(())
}

/// Appends a person event to the log.
pub(super) async fn append_person_event<C: Conn>(
    conn: &mut C,
    body: EventBody,
    subject_id: &str,
    tx: &mut Tx<'_>,
) -> Result<u64, DbError> {
    let event = EncodedEvent {
        sequence: tx.counters.sequences.take() as u64,
        receive_time: from_micros(now_micros()),
        kind: body.kind(),
        integration: body.integration().into(),
        source: None,
        body: codec::encode_body(&body).into(),
        trace_parent: crate::telemetry::current_trace_parent(),
        person: None,
    };
    let lead_ref = body.named_lead().to_owned();
    append_event(conn, &event, subject_id, &lead_ref).await?;
    let sequence = event.sequence;
    tx.committed.events.push(event);
    Ok(sequence)
}

/// A lead stored before persons, to match now.
#[derive(Debug, Clone)]
pub struct Backfilled {
    pub integration: String,
    pub lead_id: String,
    pub sequence: u64,
    pub receive_time: time::OffsetDateTime,
    pub identity: Identity,
    /// Its body with the phone and e-mail fields it lacked.
    pub body: bytes::Bytes,
}

/// Matches leads stored before persons, in sequence order, and writes their
/// person, phone and body. Leads matched meanwhile are left as they are.
pub(super) async fn match_stored<C: Conn>(
    conn: &mut C,
    leads: &[Backfilled],
    tx: &mut Tx<'_>,
) -> Result<u64, DbError> {
    let mut pending = Vec::with_capacity(leads.len());
    for lead in leads {
        let unmatched = query_opt(
            conn,
            "SELECT 1 FROM leads WHERE integration = $1 AND lead_id = $2 AND person_id IS NULL",
            &[(&lead.integration).into(), (&lead.lead_id).into()],
            |_| Ok(()),
        )
        .await?;
        if unmatched.is_some() {
            pending.push(lead);
        }
    }
    let candidates: Vec<Candidate> = pending
        .iter()
        .map(|lead| Candidate {
            integration: &lead.integration,
            lead_id: &lead.lead_id,
            sequence: lead.sequence as i64,
            seen_at: super::to_micros(lead.receive_time),
            identity: &lead.identity,
        })
        .collect();
    let matched = match_leads(conn, &candidates, tx).await?;
    for (lead, matched) in pending.iter().zip(&matched) {
        let phone = lead.identity.phone.as_deref().unwrap_or_default();
        conn.execute(
            "UPDATE leads SET person_id = $1, phone_e164 = $2, \
             phone_digits = CASE WHEN $2 = '' THEN phone_digits ELSE $5 END \
             WHERE integration = $3 AND lead_id = $4",
            &[
                matched.person_id.into(),
                phone.into(),
                (&lead.integration).into(),
                (&lead.lead_id).into(),
                phone_digits(phone).as_str().into(),
            ],
        )
        .await?;
        conn.execute(
            "UPDATE events SET body = $1, person_id = $2, person_returning = $3, \
             person_first_seen = $4 WHERE sequence = $5",
            &[
                lead.body.as_ref().into(),
                (matched.link.person_id as i64).into(),
                i64::from(matched.link.returning).into(),
                super::to_micros(matched.link.first_seen).into(),
                (lead.sequence as i64).into(),
            ],
        )
        .await?;
    }
    Ok(pending.len() as u64)
}

/// The person an id stands for now (itself, or the one it was merged into).
pub(super) async fn resolve_stored<C: Conn>(
    conn: &mut C,
    person_id: i64,
) -> Result<Option<i64>, DbError> {
    query_opt(
        conn,
        "SELECT COALESCE(merged_into, person_id) FROM persons WHERE person_id = $1",
        &[person_id.into()],
        |row| row.int(0),
    )
    .await
}
