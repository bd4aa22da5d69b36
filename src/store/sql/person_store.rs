//! Reading persons, an operator's split, and the [`PersonStore`] role of a SQL
//! store.

use async_trait::async_trait;

use super::person_keys::{relearn, relearn_leads_of, relearn_persons};
use super::persons::{Candidate, append_person_event, match_leads, own_keys, resolve_stored};
use super::reads::{EVENT, EventReader};
use super::writes::Tx;
use super::{Backend, SqlStore, from_micros, to_db_sequence, to_micros};
use crate::domain::{
    EncodedEvent, EventBody, Identity, LeadSource, Person, PersonCursor, PersonLead, PersonSplit,
    phone_digits,
};
use crate::store::db::{Conn, DbError, Row, query_opt};
use crate::store::writer::Write;
use crate::store::{PersonStore, StoreError};

/// What links leads: a valid phone in E.164, or an e-mail folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersonKey {
    Phone(String),
    Email(String),
}

impl PersonKey {
    /// Whether it is a phone, and its value.
    fn parts(&self) -> (bool, &str) {
        match self {
            PersonKey::Phone(phone) => (true, phone),
            PersonKey::Email(email) => (false, email),
        }
    }

    /// The leads' column that holds it, and its value.
    pub(super) fn column(&self) -> (&'static str, &str) {
        let (phone, value) = self.parts();
        (key_columns(phone).1, value)
    }
}

/// The leads' columns a key is found by: the indexed one, and the one that holds
/// the whole value (a phone is indexed by its E.164 form's last ten digits).
fn key_columns(phone: bool) -> (&'static str, &'static str) {
    if phone {
        ("phone_digits", "phone_e164")
    } else {
        ("email_folded", "email_folded")
    }
}

/// The value a key is looked up by in its indexed column.
pub(super) fn key_probe(phone: bool, value: &str) -> String {
    if phone {
        phone_digits(value)
    } else {
        value.to_owned()
    }
}

/// A statement for the person of the newest matched lead that carries a key;
/// `probe`, `value` and `integration` are SQL expressions (placeholders, or an
/// outer query's columns).
pub(super) fn newest_carrier(phone: bool, probe: &str, value: &str, integration: &str) -> String {
    let (indexed, column) = key_columns(phone);
    format!(
        "SELECT l.person_id FROM leads l \
         WHERE l.{indexed} = {probe} AND l.{indexed} <> '' AND l.{column} = {value} \
           AND l.integration = {integration} AND l.person_id IS NOT NULL \
         ORDER BY l.sequence DESC LIMIT 1"
    )
}

/// Moves the leads of `person_id` that carry `key` to a new person, split from
/// it; appends the event. Returns the new person's id and the event's sequence.
pub(super) async fn split<C: Conn>(
    conn: &mut C,
    person_id: u64,
    key: &PersonKey,
    tx: &mut Tx<'_>,
) -> Result<Result<(u64, u64), StoreError>, DbError> {
    let Some(person) = resolve_stored(conn, person_id as i64).await? else {
        return Ok(Err(StoreError::NotFound));
    };
    let (column, value) = key.column();
    let leads = conn
        .query(
            &format!(
                "SELECT lead_id, receive_time, {column} FROM leads \
                 WHERE person_id = $1 ORDER BY sequence"
            ),
            &[person.into()],
            |row| Ok((row.text(0)?.to_owned(), row.int(1)?, row.text(2)? == value)),
        )
        .await?;
    let (moving, staying): (Vec<_>, Vec<_>) = leads.into_iter().partition(|lead| lead.2);
    if moving.is_empty() || staying.is_empty() {
        let reason = if moving.is_empty() {
            format!("no lead of person {person} carries {value}")
        } else {
            format!("every lead of person {person} carries {value}: there is nothing to split")
        };
        return Ok(Err(StoreError::Conflict(reason)));
    }
    let new_id = tx.counters.sequences.peek();
    let lead_ids: Vec<String> = moving.iter().map(|lead| lead.0.clone()).collect();
    let integration: String = query_opt(
        conn,
        "SELECT integration FROM persons WHERE person_id = $1",
        &[person.into()],
        |row| Ok(row.text(0)?.to_owned()),
    )
    .await?
    .unwrap_or_default();
    let first = |leads: &[(String, i64, bool)]| leads.iter().map(|lead| lead.1).min();
    conn.execute(
        "INSERT INTO persons (person_id, integration, first_seen, split_from) \
         VALUES ($1, $2, $3, $4)",
        &[
            new_id.into(),
            integration.as_str().into(),
            first(&moving).unwrap_or_default().into(),
            person.into(),
        ],
    )
    .await?;
    conn.execute(
        "UPDATE persons SET first_seen = $1 WHERE person_id = $2",
        &[first(&staying).unwrap_or_default().into(), person.into()],
    )
    .await?;
    conn.execute(
        &format!("UPDATE leads SET person_id = $1 WHERE person_id = $2 AND {column} = $3"),
        &[new_id.into(), person.into(), value.into()],
    )
    .await?;
    if tx.persons.is_some() {
        // Keys the moved leads carry may stand for either person now.
        relearn_leads_of(conn, &integration, new_id, tx.learnt).await?;
        relearn_persons(conn, vec![person, new_id], tx.learnt).await?;
    }
    let body = EventBody::PersonSplit(PersonSplit {
        integration,
        person_id: person as u64,
        new_person_id: new_id as u64,
        unlinked: value.to_owned(),
        lead_ids,
    });
    let sequence = append_person_event(conn, body, value, tx).await?;
    debug_assert_eq!(sequence as i64, new_id);
    Ok(Ok((new_id as u64, sequence)))
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
            seen_at: to_micros(lead.receive_time),
            identity: &lead.identity,
        })
        .collect();
    let matched = match_leads(conn, &candidates, false, tx).await?;
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
                to_micros(matched.link.first_seen).into(),
                (lead.sequence as i64).into(),
            ],
        )
        .await?;
    }
    if tx.persons.is_some() {
        // Where persons split apart meet, the store knows which one each key of
        // these leads stands for (whichever lead is newest).
        let keys = candidates
            .iter()
            .zip(&matched)
            .filter(|(_, matched)| matched.kept_apart)
            .flat_map(|(candidate, _)| own_keys(candidate))
            .collect();
        relearn(conn, keys, tx.learnt).await?;
    }
    Ok(pending.len() as u64)
}

/// A person's row, its latest lead's receive time, its leads' count and its latest
/// lead's sequence (read from its leads: a returning lead writes no person row).
const PERSON_COLUMNS: &str = "p.person_id, p.integration, p.first_seen, \
     (SELECT l.receive_time FROM leads l WHERE l.person_id = p.person_id \
        ORDER BY l.sequence DESC LIMIT 1), \
     (SELECT COUNT(*) FROM leads l WHERE l.person_id = p.person_id), \
     (SELECT MAX(l.sequence) FROM leads l WHERE l.person_id = p.person_id)";

fn person_from_row(row: &dyn Row) -> Result<Person, DbError> {
    Ok(Person {
        person_id: row.int(0)? as u64,
        integration: row.text(1)?.to_owned(),
        first_seen: from_micros(row.int(2)?),
        last_seen: from_micros(row.opt_int(3)?.unwrap_or_default()),
        lead_count: row.int(4)? as u64,
        last_sequence: row.opt_int(5)?.unwrap_or_default() as u64,
        aliases: Vec::new(),
        leads: Vec::new(),
        phones: Vec::new(),
        emails: Vec::new(),
    })
}

/// A person, found by its id or an id merged into it, with its oldest leads.
async fn get_person<C: Conn>(
    conn: &mut C,
    person_id: u64,
    max_leads: u32,
) -> Result<Option<Person>, DbError> {
    let Some(id) = resolve_stored(conn, person_id as i64).await? else {
        return Ok(None);
    };
    let sql = format!("SELECT {PERSON_COLUMNS} FROM persons p WHERE p.person_id = $1");
    let Some(mut person) = query_opt(conn, &sql, &[id.into()], person_from_row).await? else {
        return Ok(None);
    };
    person.aliases = conn
        .query(
            "SELECT person_id FROM persons WHERE merged_into = $1 ORDER BY person_id",
            &[id.into()],
            |row| Ok(row.int(0)? as u64),
        )
        .await?;
    person.leads = conn
        .query(
            "SELECT l.lead_id, l.sequence, l.receive_time, e.source, l.title, l.phone_e164, \
             l.email_folded FROM leads l JOIN events e ON e.sequence = l.sequence \
             WHERE l.person_id = $1 ORDER BY l.sequence LIMIT $2",
            &[id.into(), i64::from(max_leads).into()],
            |row| {
                Ok(PersonLead {
                    lead_id: row.text(0)?.to_owned(),
                    sequence: row.int(1)? as u64,
                    receive_time: from_micros(row.int(2)?),
                    source: row
                        .opt_bytes(3)?
                        .and_then(LeadSource::from_bytes)
                        .unwrap_or(LeadSource::Other),
                    title: row.text(4)?.to_owned(),
                    phone_e164: row.text(5)?.to_owned(),
                    email: row.text(6)?.to_owned(),
                })
            },
        )
        .await?;
    let keys = |column: &str| {
        format!(
            "SELECT DISTINCT {column} FROM leads WHERE person_id = $1 AND {column} <> '' \
             ORDER BY {column}"
        )
    };
    person.phones = conn
        .query(&keys("phone_e164"), &[id.into()], |row| {
            Ok(row.text(0)?.to_owned())
        })
        .await?;
    // Only addresses link leads (and only they are stored folded for it).
    person.emails = conn
        .query(&keys("email_folded"), &[id.into()], |row| {
            Ok(row.text(0)?.to_owned())
        })
        .await?
        .into_iter()
        .filter(|email| crate::domain::email_key(email).is_some())
        .collect();
    Ok(Some(person))
}

async fn find_person<C: Conn>(
    conn: &mut C,
    integration: &str,
    key: &PersonKey,
) -> Result<Option<u64>, DbError> {
    let (phone, value) = key.parts();
    let probe = key_probe(phone, value);
    let sql = newest_carrier(phone, "$3", "$1", "$2");
    let args = [value.into(), integration.into(), probe.as_str().into()];
    let found = query_opt(conn, &sql, &args, |row| row.int(0)).await?;
    Ok(found.map(|id| id as u64))
}

async fn list_persons<C: Conn>(
    conn: &mut C,
    integration: &str,
    after: Option<PersonCursor>,
    limit: u32,
) -> Result<Vec<Person>, DbError> {
    // The integration's leads, newest first, each where it is its person's latest.
    let before = after.map_or(i64::MAX, |cursor| cursor.before_sequence as i64);
    let sql = "SELECT p.person_id, p.integration, p.first_seen, l.receive_time, \
           (SELECT COUNT(*) FROM leads c WHERE c.person_id = l.person_id), l.sequence \
         FROM events e \
         JOIN leads l ON l.integration = e.integration AND l.lead_id = e.lead_id \
         JOIN persons p ON p.person_id = l.person_id \
         WHERE e.kind = 'lead' AND e.integration = $1 AND e.sequence < $2 \
           AND NOT EXISTS (SELECT 1 FROM leads n \
             WHERE n.person_id = l.person_id AND n.sequence > l.sequence) \
         ORDER BY e.sequence DESC LIMIT $3";
    conn.query(
        sql,
        &[integration.into(), before.into(), i64::from(limit).into()],
        person_from_row,
    )
    .await
}

async fn unmatched_leads<C: Conn>(
    conn: &mut C,
    after_sequence: u64,
    limit: u32,
) -> Result<Vec<EncodedEvent>, DbError> {
    let mut reader = EventReader::default();
    conn.query(
        &format!(
            "SELECT {EVENT} FROM leads l JOIN events e ON e.sequence = l.sequence \
             WHERE l.person_id IS NULL AND l.sequence > $1 ORDER BY l.sequence LIMIT $2"
        ),
        &[
            to_db_sequence(after_sequence).into(),
            i64::from(limit).into(),
        ],
        |row| reader.read(row),
    )
    .await
}

#[async_trait]
impl<B: Backend> PersonStore for SqlStore<B> {
    async fn get_person(
        &self,
        person_id: u64,
        max_leads: u32,
    ) -> Result<Option<Person>, StoreError> {
        Ok(get_person(&mut *self.reader().await?, person_id, max_leads).await?)
    }

    async fn find_person(
        &self,
        integration: &str,
        key: &PersonKey,
    ) -> Result<Option<u64>, StoreError> {
        Ok(find_person(&mut *self.reader().await?, integration, key).await?)
    }

    async fn list_persons(
        &self,
        integration: &str,
        after: Option<PersonCursor>,
        limit: u32,
    ) -> Result<Vec<Person>, StoreError> {
        Ok(list_persons(&mut *self.reader().await?, integration, after, limit).await?)
    }

    async fn split_person(&self, person_id: u64, key: PersonKey) -> Result<(u64, u64), StoreError> {
        self.write(|reply| Write::SplitPerson {
            person_id,
            key,
            reply,
        })
        .await
    }

    async fn unmatched_leads(
        &self,
        after_sequence: u64,
        limit: u32,
    ) -> Result<Vec<EncodedEvent>, StoreError> {
        Ok(unmatched_leads(&mut *self.reader().await?, after_sequence, limit).await?)
    }

    async fn match_stored(&self, leads: Vec<Backfilled>) -> Result<u64, StoreError> {
        self.write(|reply| Write::MatchStored { leads, reply })
            .await
    }
}
