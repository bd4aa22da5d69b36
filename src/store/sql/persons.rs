//! Persons, in the writer's transactions: each new lead joins the person of a
//! lead that shares its valid phone or e-mail, or starts one; a lead that shares
//! them with two persons merges them (the older one is kept). Also the
//! background match of leads stored before persons, and an operator's split.

use std::collections::HashMap;

use super::events::append_event;
use super::person_cache::{Known, Learnt, Lookup, PersonCache};
use super::person_keys::{Key, read_keys, stored_persons};
use super::writes::Tx;
use super::{from_micros, now_micros};
use crate::codec;
use crate::domain::{EncodedEvent, EventBody, Identity, PersonLink, PersonsMerged};
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
    /// It carries keys of persons an operator split apart: which of them its keys
    /// stand for now, when it is a stored lead, is for the store to say.
    pub kept_apart: bool,
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

/// Where each key belongs.
type KeyMap<'a> = HashMap<Key<'a>, i64>;

/// Finds (or starts) each candidate's person, in order, merging persons a
/// candidate links; writes the persons and the merge events. The leads' own rows
/// are the caller's to write. `newest`: the candidates are newer than every
/// stored lead (new leads, not the background match of stored ones), so each is
/// the newest carrier of its keys.
pub(super) async fn match_leads<'a, C: Conn>(
    conn: &mut C,
    candidates: &[Candidate<'a>],
    newest: bool,
    tx: &mut Tx<'_>,
) -> Result<Vec<Matched>, DbError> {
    let (mut keys, mut persons) = stored_keys(conn, candidates, tx.persons).await?;
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
        let kept_apart = found
            .iter()
            .any(|a| found.iter().any(|b| apart(&persons, *a, *b)));
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
            Some(&first) if kept_apart => (first, persons[&first].first_seen < candidate.seen_at),
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
            // A key stands for the person of the newest lead carrying it.
            if newest {
                keys.insert(key, person_id);
            } else {
                keys.entry(key).or_insert(person_id);
            }
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
            kept_apart,
        });
    }
    for entry in &mut matched {
        entry.person_id = resolve(&merged_into, entry.person_id);
    }
    write_persons(conn, &persons).await?;
    for merge in merges {
        record_merge(conn, merge, tx).await?;
    }
    if tx.persons.is_some() {
        learn(tx.learnt, &keys, &persons, &merged_into);
    }
    Ok(matched)
}

/// Tells the writer's cache what the batch wrote: the persons, and each key's
/// person (for a stored lead `kept_apart`, the background match then asks the
/// store, which knows which lead is newest).
fn learn(
    learnt: &mut Learnt,
    keys: &KeyMap<'_>,
    persons: &HashMap<i64, State<'_>>,
    merged_into: &HashMap<i64, i64>,
) {
    for (key, id) in keys {
        let id = resolve(merged_into, *id);
        learnt.key(key.integration, key.phone, key.value, id);
    }
    for (id, state) in persons {
        match state.merged_into {
            Some(into) => learnt.merged(*id, into),
            None => learnt.person(
                *id,
                Known {
                    first_seen: state.first_seen,
                    split_from: state.split_from,
                },
            ),
        }
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
pub(super) fn own_keys<'a>(
    candidate: &Candidate<'a>,
) -> impl Iterator<Item = Key<'a>> + Clone + use<'a> {
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
/// person of the latest lead that carries it, then those persons. The writer's
/// cache answers what it holds; the rest is read.
async fn stored_keys<'a, C: Conn>(
    conn: &mut C,
    candidates: &[Candidate<'a>],
    cache: Option<&PersonCache>,
) -> Result<(KeyMap<'a>, HashMap<i64, State<'a>>), DbError> {
    let mut wanted: Vec<Key<'a>> = candidates.iter().flat_map(own_keys).collect();
    wanted.sort_unstable_by_key(|key| (!key.phone, key.integration, key.value));
    wanted.dedup();
    let mut keys = KeyMap::new();
    if let Some(cache) = cache {
        wanted.retain(
            |key| match cache.key(key.integration, key.phone, key.value) {
                Lookup::Person(person_id) => {
                    keys.insert(*key, person_id);
                    false
                }
                Lookup::Nobody => false,
                Lookup::Unknown => true,
            },
        );
    }
    keys.extend(read_keys(conn, wanted).await?);
    // Each person found, with the integration of a key that found it.
    let mut found: HashMap<i64, &'a str> = HashMap::new();
    for (key, person_id) in &keys {
        found.entry(*person_id).or_insert(key.integration);
    }
    let state = |integration, known: Known| State {
        integration,
        first_seen: known.first_seen,
        split_from: known.split_from,
        merged_into: None,
        new: false,
        changed: false,
    };
    let mut persons = HashMap::with_capacity(found.len());
    let mut unknown = Vec::new();
    for (&id, &integration) in &found {
        match cache.and_then(|cache| cache.person(id)) {
            Some(known) => {
                persons.insert(id, state(integration, known));
            }
            None => unknown.push(id),
        }
    }
    for (id, known) in stored_persons(conn, unknown).await? {
        if let Some(integration) = found.get(&id) {
            persons.insert(id, state(integration, known));
        }
    }
    keys.retain(|_, id| persons.contains_key(id));
    Ok((keys, persons))
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
