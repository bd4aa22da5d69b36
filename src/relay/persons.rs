//! Persons: a lead's phone and e-mail read for matching as it arrives, the
//! person calls (get, find, list, split), and the background match of leads
//! stored before persons.

use std::time::{Duration, Instant};

use super::{Error, LeadRelay};
use crate::codec;
use crate::domain::{
    Call, Identity, Lead, LeadSource, Person, PersonCursor, PersonSettings, PhoneNumber, email_key,
};
use crate::store::{Backfilled, PersonKey, StoreError};
use crate::telemetry;

/// Leads a person shows at most.
pub const PERSON_LEADS: u32 = 1_000;
/// Persons a page lists by default and at most.
const PERSONS_PAGE: u32 = 100;
const PERSONS_PAGE_MAX: u32 = 1_000;
/// Leads the background match reads and writes at once.
const BACKFILL_BATCH: u32 = 500;

/// A page of persons and where the next one starts (empty: the last page).
#[derive(Debug, Clone)]
pub struct PersonPage {
    pub persons: Vec<Person>,
    pub next_page_token: String,
}

/// What a split left: the person, the new one, and the split event's sequence.
#[derive(Debug, Clone)]
pub struct SplitOutcome {
    pub person: Person,
    pub new_person: Person,
    pub sequence: u64,
}

impl LeadRelay {
    /// How an integration's leads are matched.
    pub fn person_settings(&self, integration: &str) -> PersonSettings {
        self.options
            .persons
            .get(integration)
            .copied()
            .unwrap_or_default()
    }

    /// Reads a lead's phone (or the number its title carries) and e-mail; returns
    /// what it is matched by, `None` when matching is off for its integration.
    pub(super) fn read_identity(&self, lead: &mut Lead) -> Option<Identity> {
        let settings =
            self.person_settings(crate::domain::integration_or_default(&lead.integration));
        let phone = lead_phone(lead);
        lead.phone_number = phone.and_then(|raw| PhoneNumber::parse(raw, Some(settings.region)));
        let email = email_key(&lead.email);
        lead.email_normalized = email.clone().unwrap_or_default();
        settings.matching.then(|| Identity {
            phone: lead
                .phone_number
                .as_ref()
                .and_then(PhoneNumber::match_key)
                .map(str::to_owned),
            email,
        })
    }

    /// Reads a call's numbers in E.164.
    pub(super) fn read_call(&self, call: &mut Call) {
        let region = self
            .person_settings(crate::domain::integration_or_default(&call.integration))
            .region;
        let e164 = |raw: &str| {
            PhoneNumber::parse(raw, Some(region))
                .map(|number| number.e164)
                .unwrap_or_default()
        };
        call.callee_e164 = e164(&call.callee);
        call.caller_e164 = e164(&call.caller);
    }

    /// A person by its id, or an id merged into it.
    pub async fn get_person(&self, person_id: u64) -> Result<Person, Error> {
        if person_id == 0 {
            return Err(Error::InvalidArgument(
                "person_id, phone or email is required".to_owned(),
            ));
        }
        self.store
            .get_person(person_id, PERSON_LEADS)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no person {person_id}")))
    }

    /// The person of a phone (any form, read in the integration's region) or an
    /// e-mail in an integration.
    pub async fn find_person(
        &self,
        integration: &str,
        phone: &str,
        email: &str,
    ) -> Result<Person, Error> {
        let integration = crate::domain::integration_or_default(integration);
        let key = self.person_key(integration, phone, email)?;
        match self.store.find_person(integration, &key).await? {
            Some(id) => self.get_person(id).await,
            None => Err(Error::NotFound(format!(
                "no person in {integration} has this {}",
                if phone.is_empty() { "e-mail" } else { "phone" }
            ))),
        }
    }

    /// The link a phone or an e-mail makes.
    fn person_key(&self, integration: &str, phone: &str, email: &str) -> Result<PersonKey, Error> {
        match (phone.trim(), email.trim()) {
            ("", "") => Err(Error::InvalidArgument(
                "a phone or an email is required".to_owned(),
            )),
            (phone, "") => {
                let region = self.person_settings(integration).region;
                PhoneNumber::parse(phone, Some(region))
                    .and_then(|number| number.match_key().map(str::to_owned))
                    .map(PersonKey::Phone)
                    .ok_or_else(|| {
                        Error::InvalidArgument(
                            "phone is not a valid phone number (only valid numbers link leads)"
                                .to_owned(),
                        )
                    })
            }
            ("", email) => email_key(email)
                .map(PersonKey::Email)
                .ok_or_else(|| Error::InvalidArgument("email is not an e-mail address".to_owned())),
            _ => Err(Error::InvalidArgument(
                "give a phone or an email, not both".to_owned(),
            )),
        }
    }

    /// An integration's persons, the most recently seen first.
    pub async fn list_persons(
        &self,
        integration: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<PersonPage, Error> {
        let integration = crate::domain::integration_or_default(integration);
        let limit = match page_size {
            ..0 => {
                return Err(Error::InvalidArgument(
                    "page_size must not be negative".to_owned(),
                ));
            }
            0 => PERSONS_PAGE,
            size => (size as u32).min(PERSONS_PAGE_MAX),
        };
        let after = match page_token {
            "" => None,
            token => Some(parse_cursor(token).ok_or_else(|| {
                Error::InvalidArgument("page_token is not one this service gave".to_owned())
            })?),
        };
        let persons = self.store.list_persons(integration, after, limit).await?;
        let next_page_token = match persons.last() {
            Some(last) if persons.len() == limit as usize => last.last_sequence.to_string(),
            _ => String::new(),
        };
        Ok(PersonPage {
            persons,
            next_page_token,
        })
    }

    /// Cuts a wrong link: the person's leads that carry the phone or e-mail go to
    /// a new person.
    pub async fn split_person(
        &self,
        person_id: u64,
        phone: &str,
        email: &str,
    ) -> Result<SplitOutcome, Error> {
        let person = self.get_person(person_id).await?;
        let key = self.person_key(&person.integration, phone, email)?;
        let (new_id, sequence) = match self.store.split_person(person.person_id, key).await {
            Err(StoreError::Conflict(reason)) => return Err(Error::InvalidArgument(reason)),
            other => other?,
        };
        tracing::info!(
            person_id = person.person_id,
            new_person_id = new_id,
            sequence,
            "person split"
        );
        Ok(SplitOutcome {
            person: self.get_person(person.person_id).await?,
            new_person: self.get_person(new_id).await?,
            sequence,
        })
    }

    /// Gives every lead stored before persons its person, oldest first, a batch
    /// at a time, while the service serves; resumes where it stopped (the leads
    /// without one) after a restart. Leads of integrations with matching off are
    /// passed over.
    pub async fn match_stored_leads(&self) {
        let (started, mut after, mut matched) = (Instant::now(), 0u64, 0u64);
        let mut logged = Instant::now();
        loop {
            let events = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                read = self.store.unmatched_leads(after, BACKFILL_BATCH) => read,
            };
            let events = match events {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(%error, "the background match of stored leads cannot read; retrying in 5 s");
                    self.pause(Duration::from_secs(5)).await;
                    continue;
                }
            };
            let Some(last) = events.last() else { break };
            if after == 0 {
                telemetry::person_backfill_running(true);
                tracing::info!("matching leads stored before persons, in the background");
            }
            after = last.sequence;
            let batch: Vec<Backfilled> = events
                .iter()
                .filter_map(|event| self.backfilled(event))
                .collect();
            if batch.is_empty() {
                continue;
            }
            match self.store.match_stored(batch).await {
                Ok(count) => {
                    matched += count;
                    telemetry::persons_backfilled(count);
                }
                Err(error) => {
                    tracing::warn!(%error, "the background match of stored leads cannot write; retrying in 5 s");
                    after = events[0].sequence.saturating_sub(1);
                    self.pause(Duration::from_secs(5)).await;
                }
            }
            if logged.elapsed() >= Duration::from_secs(10) {
                logged = Instant::now();
                tracing::info!(matched, up_to_sequence = after, "matching stored leads");
            }
        }
        if after > 0 {
            tracing::info!(
                matched,
                seconds = started.elapsed().as_secs_f64(),
                "every stored lead has its person"
            );
        }
        telemetry::person_backfill_running(false);
    }

    async fn pause(&self, time: Duration) {
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            _ = tokio::time::sleep(time) => {}
        }
    }

    /// A stored lead ready to match; `None` when its integration has matching
    /// off, or its body cannot be read.
    fn backfilled(&self, event: &crate::domain::EncodedEvent) -> Option<Backfilled> {
        if !self.person_settings(&event.integration).matching {
            return None;
        }
        let mut lead = match codec::decode_lead(event) {
            Ok(lead) => codec::lead_from_proto(lead),
            Err(error) => {
                tracing::warn!(sequence = event.sequence, %error, "a stored lead cannot be read; it gets no person");
                return None;
            }
        };
        let identity = self.read_identity(&mut lead)?;
        Some(Backfilled {
            integration: event.integration.to_string(),
            lead_id: lead.lead_id.clone(),
            sequence: event.sequence,
            receive_time: event.receive_time,
            identity,
            body: codec::with_identity(&event.body, &lead),
        })
    }
}

/// The phone a lead is matched by: `phone`, else for a call or a caught lead the
/// number its title (or text) carries (`Звонок от 79990001122`).
fn lead_phone(lead: &Lead) -> Option<&str> {
    if !lead.phone.trim().is_empty() {
        return Some(&lead.phone);
    }
    if !matches!(
        lead.source,
        LeadSource::Calltracking | LeadSource::LeadHunter
    ) {
        return None;
    }
    number_in(&lead.title).or_else(|| number_in(&lead.text))
}

/// The first run of text that reads as a phone number: digits with `+`, spaces,
/// brackets and dashes between them, ten digits or more.
fn number_in(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        if bytes[start] == b'+' || bytes[start].is_ascii_digit() {
            let mut end = start;
            let mut digits = 0;
            while end < bytes.len()
                && matches!(bytes[end], b'0'..=b'9' | b'+' | b' ' | b'(' | b')' | b'-')
            {
                digits += usize::from(bytes[end].is_ascii_digit());
                end += 1;
            }
            if (10..=15).contains(&digits) {
                return Some(text[start..end].trim());
            }
            start = end.max(start + 1);
        } else {
            start += 1;
        }
    }
    None
}

/// A page token: the sequence of the last person's latest lead.
fn parse_cursor(token: &str) -> Option<PersonCursor> {
    Some(PersonCursor {
        before_sequence: token.parse().ok().filter(|sequence| *sequence > 0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calltracking_title_carries_its_number() {
        assert_eq!(number_in("Звонок от 79990001122"), Some("79990001122"));
        assert_eq!(
            number_in("Incoming call from +7 (999) 000-11-22, 2 min"),
            Some("+7 (999) 000-11-22")
        );
        assert_eq!(number_in("Caught lead: order 12345"), None);
        assert_eq!(number_in(""), None);
    }

    #[test]
    fn page_tokens_read_back() {
        assert_eq!(parse_cursor("42").unwrap().before_sequence, 42);
        assert!(parse_cursor("x.1").is_none());
        assert!(parse_cursor("0").is_none());
    }
}
