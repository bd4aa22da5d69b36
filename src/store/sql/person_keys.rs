//! Finding the persons of phones and e-mails in the store: for the writer's
//! matching, and to tell its cache (see [`PersonCache`]) what a transaction made
//! true.

use std::collections::HashMap;

use super::person_cache::{Known, Learnt, PersonCache};
use super::person_store::{key_probe, newest_carrier};
use crate::store::db::{Arg, Conn, DbError, built_once};

/// What links leads: an integration's phone (E.164) or e-mail (folded), borrowed
/// from the batch's leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Key<'a> {
    pub integration: &'a str,
    pub phone: bool,
    pub value: &'a str,
}

/// A lead's phone as the store finds it by (through its indexed digits), else ''.
const LINKING_PHONE: &str = "CASE WHEN phone_digits <> '' THEN phone_e164 ELSE '' END";

/// A list of values to look up, repeated up to a power of two: a few statement
/// shapes, kept prepared, whatever the batch's size.
pub(super) fn padded<T: Clone>(values: &mut Vec<T>) {
    if let Some(last) = values.last().cloned() {
        values.resize(values.len().next_power_of_two(), last);
    }
}

/// For each key (phones first), the person of the latest matched lead that
/// carries it, as stored (phones through `leads_by_phone`, on their E.164 form's
/// last ten digits, e-mails through `leads_by_email`): one lead read a key
/// however many carry it.
pub(super) async fn read_keys<'a, C: Conn>(
    conn: &mut C,
    mut wanted: Vec<Key<'a>>,
) -> Result<Vec<(Key<'a>, i64)>, DbError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    // The padding repeats the last key: the kinds stay in order.
    padded(&mut wanted);
    let phones = wanted.iter().filter(|key| key.phone).count();
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
    Ok(found
        .into_iter()
        .filter_map(|(n, person_id)| Some((*wanted.get(n as usize)?, person_id?)))
        .collect())
}

/// The first seen time and split origin of stored persons.
pub(super) async fn stored_persons<C: Conn>(
    conn: &mut C,
    mut ids: Vec<i64>,
) -> Result<Vec<(i64, Known)>, DbError> {
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
        let known = Known {
            first_seen: row.int(1)?,
            split_from: row.opt_int(2)?,
        };
        Ok((row.int(0)?, known))
    })
    .await
}

/// Tells the cache what the store now holds for these keys (after a write the
/// cache could not follow: a split, the background match).
pub(super) async fn relearn<C: Conn>(
    conn: &mut C,
    mut keys: Vec<Key<'_>>,
    learnt: &mut Learnt,
) -> Result<(), DbError> {
    keys.sort_unstable_by_key(|key| (!key.phone, key.integration, key.value));
    keys.dedup();
    let found: HashMap<Key, i64> = read_keys(conn, keys.clone()).await?.into_iter().collect();
    for key in keys {
        match found.get(&key) {
            Some(id) => learnt.key(key.integration, key.phone, key.value, *id),
            None => learnt.forget_key(key.integration, key.phone, key.value),
        }
    }
    Ok(())
}

/// Tells the cache what the store now holds for the keys a person's leads carry
/// (after a split moved them to it).
pub(super) async fn relearn_leads_of<C: Conn>(
    conn: &mut C,
    integration: &str,
    person_id: i64,
    learnt: &mut Learnt,
) -> Result<(), DbError> {
    let sql =
        format!("SELECT DISTINCT {LINKING_PHONE}, email_folded FROM leads WHERE person_id = $1");
    let carried = conn
        .query(&sql, &[person_id.into()], |row| {
            Ok((row.text(0)?.to_owned(), row.text(1)?.to_owned()))
        })
        .await?;
    let keys = carried
        .iter()
        .flat_map(|(phone, email)| [(true, phone), (false, email)])
        .filter(|(_, value)| !value.is_empty())
        .map(|(phone, value)| Key {
            integration,
            phone,
            value,
        })
        .collect();
    relearn(conn, keys, learnt).await
}

/// Tells the cache what the store now holds for these persons.
pub(super) async fn relearn_persons<C: Conn>(
    conn: &mut C,
    ids: Vec<i64>,
    learnt: &mut Learnt,
) -> Result<(), DbError> {
    for (id, known) in stored_persons(conn, ids).await? {
        learnt.person(id, known);
    }
    Ok(())
}

/// Reads every matched lead's keys and every person into a cache that then
/// knows that a key it does not hold has no person: unless the store holds more
/// than the cache may, in which case it starts empty and learns as it goes.
pub(super) async fn load<C: Conn>(conn: &mut C, cache: &mut PersonCache) {
    *cache = match read_all(conn).await {
        Ok(read) => read,
        Err(error) => {
            tracing::warn!(%error, "persons could not be read into the writer's memory; it learns as it goes");
            PersonCache::default()
        }
    };
    if !cache.loaded() {
        cache.set_loaded(false);
    }
}

async fn read_all<C: Conn>(conn: &mut C) -> Result<PersonCache, DbError> {
    let mut cache = PersonCache::default();
    let sql = "SELECT COUNT(*) FROM leads WHERE person_id IS NOT NULL";
    let matched = crate::store::db::query_one(conn, sql, &[], |row| row.int(0)).await?;
    if 2 * matched as usize > PersonCache::CAPACITY {
        return Ok(cache);
    }
    let sql = "SELECT person_id, first_seen, split_from FROM persons WHERE merged_into IS NULL";
    conn.query(sql, &[], |row| {
        let known = Known {
            first_seen: row.int(1)?,
            split_from: row.opt_int(2)?,
        };
        cache.hold_person(row.int(0)?, known);
        Ok(())
    })
    .await?;
    // Oldest first: a key stands for the person of the newest lead carrying it.
    // A phone is found through its indexed digits, an e-mail through its text.
    let sql = format!(
        "SELECT integration, {LINKING_PHONE}, email_folded, person_id FROM leads \
         WHERE person_id IS NOT NULL ORDER BY sequence"
    );
    conn.query(&sql, &[], |row| {
        let (integration, person_id) = (row.text(0)?, row.int(3)?);
        for (phone, value) in [(true, row.text(1)?), (false, row.text(2)?)] {
            if !value.is_empty() {
                cache.hold(integration, phone, value, person_id);
            }
        }
        Ok(())
    })
    .await?;
    cache.set_loaded(true);
    Ok(cache)
}
