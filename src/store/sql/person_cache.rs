//! The writer's memory of persons, for a store it is the only writer of
//! (SQLite, whose file is locked to one process): the person each phone or e-mail
//! stands for and each person's first-seen time, as committed. A returning
//! person's lead then reads no index, lead or person row to find them, and a new
//! key none. Read from the store before the first write ([`person_keys::load`]);
//! what a transaction learns is applied only once it commits (new leads' keys as
//! matched; after a split or the background match, what the store then holds).
//! Bounded: past [`PersonCache::CAPACITY`] keys it starts over, and then asks the
//! store for what it does not hold.
//!
//! [`person_keys::load`]: super::person_keys::load

use std::collections::HashMap;

/// A person as matching needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Known {
    /// When its first lead was received (Unix microseconds).
    pub first_seen: i64,
    /// The person an operator split it from.
    pub split_from: Option<i64>,
}

/// The committed state of persons the writer has seen.
#[derive(Debug, Default)]
pub(super) struct PersonCache {
    /// By integration: each key's person (of the newest matched lead that
    /// carries it, when that lead was matched).
    keys: HashMap<Box<str>, Keys>,
    /// Keys held, in all integrations.
    len: usize,
    persons: HashMap<i64, Known>,
    /// Persons merged since, and where they went.
    merged: HashMap<i64, i64>,
    /// It holds every key of every matched lead, and every person: a key it
    /// does not hold has no person.
    complete: bool,
    /// The store was read into it (or found too large to be).
    loaded: bool,
}

/// What the cache says of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookup {
    /// It stands for this person.
    Person(i64),
    /// No matched lead carries it.
    Nobody,
    /// Not known here: the store knows.
    Unknown,
}

/// One integration's keys: phones by their E.164 digits, e-mails by text.
#[derive(Debug, Default)]
struct Keys {
    phones: HashMap<u64, i64>,
    emails: HashMap<Box<str>, i64>,
}

/// A key as the cache holds it.
#[derive(Debug)]
enum CacheKey {
    Phone(u64),
    Email(Box<str>),
}

impl CacheKey {
    /// `None` for a phone not in E.164, which the cache does not hold.
    fn of(phone: bool, value: &str) -> Option<Self> {
        Some(if phone {
            CacheKey::Phone(phone_number(value)?)
        } else {
            CacheKey::Email(value.into())
        })
    }
}

/// A key and its person (`None`: no matched lead carries it).
type KeyChange = (CacheKey, Option<i64>);

/// What one transaction learnt, for the cache once it commits.
#[derive(Debug, Default)]
pub(super) struct Learnt {
    /// By integration, in the order learnt.
    keys: Vec<(Box<str>, Vec<KeyChange>)>,
    persons: Vec<(i64, Known)>,
    merged: Vec<(i64, i64)>,
}

impl Learnt {
    /// A key now stands for this person.
    pub fn key(&mut self, integration: &str, phone: bool, value: &str, person_id: i64) {
        self.push(integration, phone, value, Some(person_id));
    }

    /// No matched lead carries a key.
    pub fn forget_key(&mut self, integration: &str, phone: bool, value: &str) {
        self.push(integration, phone, value, None);
    }

    fn push(&mut self, integration: &str, phone: bool, value: &str, person_id: Option<i64>) {
        // A phone the cache does not hold: nothing to learn or forget.
        let Some(key) = CacheKey::of(phone, value) else {
            return;
        };
        let at = match self
            .keys
            .iter()
            .position(|(name, _)| **name == *integration)
        {
            Some(at) => at,
            None => {
                self.keys.push((integration.into(), Vec::new()));
                self.keys.len() - 1
            }
        };
        self.keys[at].1.push((key, person_id));
    }

    /// A person as written.
    pub fn person(&mut self, person_id: i64, known: Known) {
        self.persons.push((person_id, known));
    }

    /// A person merged into another.
    pub fn merged(&mut self, person_id: i64, into: i64) {
        self.merged.push((person_id, into));
    }
}

impl PersonCache {
    /// Keys held before it starts over (about 150 bytes each with their persons,
    /// as measured).
    pub const CAPACITY: usize = 1 << 20;

    /// What a key stands for.
    pub fn key(&self, integration: &str, phone: bool, value: &str) -> Lookup {
        let keys = self.keys.get(integration);
        let person_id = if phone {
            let Some(number) = phone_number(value) else {
                return Lookup::Unknown;
            };
            keys.and_then(|keys| keys.phones.get(&number))
        } else {
            keys.and_then(|keys| keys.emails.get(value))
        };
        self.found(person_id)
    }

    fn found(&self, person_id: Option<&i64>) -> Lookup {
        match person_id {
            Some(id) => Lookup::Person(self.resolve(*id)),
            None if self.complete => Lookup::Nobody,
            None => Lookup::Unknown,
        }
    }

    /// A person (not merged into another), if known.
    pub fn person(&self, person_id: i64) -> Option<Known> {
        self.persons.get(&person_id).copied()
    }

    /// Where a person stands now: itself, or the one it was merged into.
    fn resolve(&self, mut person_id: i64) -> i64 {
        while let Some(next) = self.merged.get(&person_id) {
            person_id = *next;
        }
        person_id
    }

    /// Whether the store was read into it.
    pub fn loaded(&self) -> bool {
        self.loaded
    }

    /// The store was read into it: with every matched lead's keys and every
    /// person when `complete`.
    pub fn set_loaded(&mut self, complete: bool) {
        self.loaded = true;
        self.complete = complete;
    }

    /// Takes in what a committed transaction learnt.
    pub fn learn(&mut self, learnt: Learnt) {
        let learning: usize = learnt.keys.iter().map(|(_, keys)| keys.len()).sum();
        if self.len + learning > Self::CAPACITY {
            // Starts over, and no longer knows which keys nobody carries.
            *self = Self::default();
            self.set_loaded(false);
        }
        for (person_id, into) in learnt.merged {
            self.persons.remove(&person_id);
            self.merged.insert(person_id, into);
        }
        self.persons.extend(learnt.persons);
        for (integration, learnt) in learnt.keys {
            for (key, person_id) in learnt {
                self.set(&integration, key, person_id);
            }
        }
    }

    /// Holds a key's person as the store loads it (oldest lead first).
    pub fn hold(&mut self, integration: &str, phone: bool, value: &str, person_id: i64) {
        if let Some(key) = CacheKey::of(phone, value) {
            self.set(integration, key, Some(person_id));
        }
    }

    /// Holds a person as the store loads it.
    pub fn hold_person(&mut self, person_id: i64, known: Known) {
        self.persons.insert(person_id, known);
    }

    fn set(&mut self, integration: &str, key: CacheKey, person_id: Option<i64>) {
        let keys = match self.keys.get_mut(integration) {
            Some(keys) => keys,
            None => self.keys.entry(integration.into()).or_default(),
        };
        let had = match (key, person_id) {
            (CacheKey::Phone(number), Some(id)) => keys.phones.insert(number, id),
            (CacheKey::Phone(number), None) => keys.phones.remove(&number),
            (CacheKey::Email(email), Some(id)) => keys.emails.insert(email, id),
            (CacheKey::Email(email), None) => keys.emails.remove(&email),
        };
        match (had, person_id) {
            (None, Some(_)) => self.len += 1,
            (Some(_), None) => self.len -= 1,
            _ => {}
        }
    }
}

/// A phone in E.164 (`+`, a country code, which never starts with 0, and up to
/// fifteen digits in all) as a number: one number for one text.
fn phone_number(e164: &str) -> Option<u64> {
    let digits = e164.strip_prefix('+')?;
    let usable = digits.len() <= 15 && !digits.starts_with('0');
    if !usable || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: Known = Known {
        first_seen: 1,
        split_from: None,
    };

    #[test]
    fn learns_only_what_it_is_given_and_follows_merges() {
        let mut cache = PersonCache::default();
        let mut learnt = Learnt::default();
        learnt.key("shop", true, "+79990001122", 7);
        learnt.key("shop", false, "olga@example.com", 9);
        learnt.person(7, KNOWN);
        learnt.person(9, KNOWN);
        assert_eq!(cache.key("shop", true, "+79990001122"), Lookup::Unknown);
        cache.learn(learnt);
        assert_eq!(cache.key("shop", true, "+79990001122"), Lookup::Person(7));
        // The kind and the integration are part of the key.
        assert_eq!(cache.key("shop", false, "+79990001122"), Lookup::Unknown);
        assert_eq!(cache.key("shop2", true, "+79990001122"), Lookup::Unknown);
        assert_eq!(cache.key("shop", true, "+7999000112"), Lookup::Unknown);
        // What is not a phone in E.164 is not held.
        let mut learnt = Learnt::default();
        learnt.key("shop", true, "79990001123", 8);
        cache.learn(learnt);
        assert_eq!(cache.key("shop", true, "79990001123"), Lookup::Unknown);
        assert_eq!(cache.key("shop", true, "+79990001123"), Lookup::Unknown);

        let mut learnt = Learnt::default();
        learnt.merged(9, 7);
        cache.learn(learnt);
        assert_eq!(
            cache.key("shop", false, "olga@example.com"),
            Lookup::Person(7)
        );
        assert_eq!(cache.person(9), None);
        assert_eq!(cache.person(7), Some(KNOWN));

        let mut learnt = Learnt::default();
        learnt.forget_key("shop", true, "+79990001122");
        cache.learn(learnt);
        assert_eq!(cache.key("shop", true, "+79990001122"), Lookup::Unknown);
    }

    #[test]
    fn a_complete_cache_answers_nobody_until_it_starts_over() {
        let mut cache = PersonCache::default();
        cache.hold("shop", true, "+79990001122", 7);
        cache.hold("shop", true, "+79990001122", 8);
        cache.set_loaded(true);
        // The newest lead's person.
        assert_eq!(cache.key("shop", true, "+79990001122"), Lookup::Person(8));
        assert_eq!(cache.key("shop", true, "+79990001133"), Lookup::Nobody);
        assert_eq!(cache.key("shop", false, "a@b.c"), Lookup::Nobody);
        // A phone it cannot hold is for the store to answer.
        assert_eq!(cache.key("shop", true, "89990001133"), Lookup::Unknown);
        assert_eq!(cache.key("shop", true, "+079990001133"), Lookup::Unknown);

        let mut learnt = Learnt::default();
        for n in 0..=PersonCache::CAPACITY {
            learnt.key("shop", false, &format!("p{n}@example.com"), 1);
        }
        cache.learn(learnt);
        assert!(cache.loaded());
        assert_eq!(cache.key("shop", true, "+79990001133"), Lookup::Unknown);
        assert_eq!(
            cache.key("shop", false, "p1@example.com"),
            Lookup::Person(1)
        );
    }
}
