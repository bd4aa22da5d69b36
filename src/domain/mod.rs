//! The relay's model: leads, deal messages, tasks, calls, deals, the events that
//! announce them, and the order-id policy. It knows neither HTTP, gRPC nor SQL.

mod crm;
mod event;
mod order;
mod person;
mod rejected;
mod search;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crm::{
    Call, Client, ClientRecord, DealDetails, DealUpdate, ExportQuery, Manager, Money, Scheme,
    SchemeEntry, SchemeError, Task,
};
pub use event::{EncodedEvent, Event, EventBody, EventFilter, EventKind, Stored};
pub use order::{Deal, DealReport, Order, OrderIdMode};
pub use person::{
    Identity, Person, PersonCursor, PersonLead, PersonLink, PersonSettings, PersonSplit,
    PersonsMerged, PhoneKind, PhoneNumber, PhoneRegion, email_key,
};
pub use rejected::{RejectedFilter, RejectedRequest};
pub use search::{
    FoundLead, LeadSearch, SearchCursor, SearchField, SearchKeys, fold, phone_digits,
};

/// The integration every lead belongs to when none is named: plain `/webhook`.
pub const DEFAULT_INTEGRATION: &str = "default";

/// Identifies a lead: Roistat lead ids are unique only within one Roistat project.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeadKey {
    pub integration: String,
    pub lead_id: String,
}

impl LeadKey {
    /// A key in `integration`, or in the default integration when it is empty.
    pub fn new(integration: &str, lead_id: impl Into<String>) -> Self {
        Self {
            integration: integration_or_default(integration).to_owned(),
            lead_id: lead_id.into(),
        }
    }
}

/// `name`, or the default integration when it is empty.
pub fn integration_or_default(name: &str) -> &str {
    if name.is_empty() {
        DEFAULT_INTEGRATION
    } else {
        name
    }
}

/// Where a lead came from, as told by the title Roistat gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadSource {
    LeadHunter,
    Calltracking,
    Crm,
    Jivosite,
    Other,
}

impl LeadSource {
    pub const ALL: [LeadSource; 5] = [
        LeadSource::LeadHunter,
        LeadSource::Calltracking,
        LeadSource::Crm,
        LeadSource::Jivosite,
        LeadSource::Other,
    ];

    /// Classifies a lead by its title, in the English and Russian forms Roistat uses.
    pub fn from_title(title: &str) -> Self {
        const PREFIXES: &[(&str, LeadSource)] = &[
            ("incoming call from", LeadSource::Calltracking),
            ("call from", LeadSource::Calltracking),
            ("звонок от", LeadSource::Calltracking),
            ("входящий звонок", LeadSource::Calltracking),
            ("caught lead", LeadSource::LeadHunter),
            ("hunted lead", LeadSource::LeadHunter),
            ("пойманный лид", LeadSource::LeadHunter),
            ("jivosite lead", LeadSource::Jivosite),
            ("crm lead", LeadSource::Crm),
        ];
        let title = title.trim().to_lowercase();
        PREFIXES
            .iter()
            .find(|(prefix, _)| title.starts_with(prefix))
            .map_or(LeadSource::Other, |(_, source)| *source)
    }

    /// The source's name, as stored and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            LeadSource::LeadHunter => "lead_hunter",
            LeadSource::Calltracking => "calltracking",
            LeadSource::Crm => "crm",
            LeadSource::Jivosite => "jivosite",
            LeadSource::Other => "other",
        }
    }

    /// The source of a stored name; `None` for a name this version does not know.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::from_bytes(name.as_bytes())
    }

    /// The source a stored name (as bytes) names.
    pub fn from_bytes(name: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|source| source.as_str().as_bytes() == name)
    }
}

impl fmt::Display for LeadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a request was read when reading it lost something (a byte that was not
/// UTF-8, a name sent more than once, a value kept only as text): the request as
/// it came, every value of each repeated name, and what was lost. Empty (the
/// default) for a request read whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decoding {
    /// The query and body as they came, the token masked; only when `notes` is not
    /// empty.
    pub raw_request: Option<KeptRequest>,
    /// Every value of each name sent more than once, in the order sent (the
    /// event's fields hold the last).
    pub repeated: Vec<(String, String)>,
    /// What decoding lost, one note each, for the operator.
    pub notes: Vec<String>,
}

impl Decoding {
    /// Whether decoding lost anything: then the event carries the request as it came.
    pub fn lossy(&self) -> bool {
        !self.notes.is_empty()
    }
}

/// A request's bytes as they came, the token masked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptRequest {
    pub query: Vec<u8>,
    pub body: Vec<u8>,
    /// The body's content type as sent; empty without one.
    pub content_type: String,
}

/// A lead as Roistat sent it with `action=lead`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    pub integration: String,
    pub lead_id: String,
    pub visit: String,
    pub title: String,
    pub text: String,
    pub name: String,
    pub phone: String,
    pub email: String,
    /// The landing page: the `page` key of `data`.
    pub page: String,
    /// The other keys of `data`.
    pub fields: BTreeMap<String, String>,
    /// `data` exactly as received.
    pub data_json: String,
    /// `created_date`: when Roistat received the lead.
    #[serde(with = "time::serde::timestamp::option")]
    pub create_time: Option<OffsetDateTime>,
    pub source: LeadSource,
    pub manager_id: String,
    /// Every parameter the service does not know, as received.
    pub extra: BTreeMap<String, String>,
    #[serde(default)]
    pub decoding: Decoding,
    /// `phone` read (or, without one, the number a calltracking title carries);
    /// set by the relay, which knows the integration's region.
    #[serde(default)]
    pub phone_number: Option<PhoneNumber>,
    /// `email` as leads are matched by it; empty when it is not an address.
    #[serde(default)]
    pub email_normalized: String,
}

impl Lead {
    pub fn key(&self) -> LeadKey {
        LeadKey::new(&self.integration, self.lead_id.clone())
    }
}

/// Additional information on a deal (`action=message`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealMessage {
    pub integration: String,
    /// `leadId` exactly as sent.
    pub lead_id: String,
    pub title: String,
    pub text: String,
    pub extra: BTreeMap<String, String>,
    /// The lead the message is about, resolved when it is stored: the lead whose
    /// answered order id is `lead_id`, else the lead whose Roistat id it is; empty
    /// when neither matches.
    #[serde(default)]
    pub resolved_lead_id: String,
    #[serde(default)]
    pub decoding: Decoding,
}

/// A request whose action this version does not know, kept whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnknownAction {
    pub integration: String,
    /// The `action` parameter as sent.
    pub action: String,
    /// Every parameter by name, the token left out.
    pub parameters: Vec<(String, String)>,
    #[serde(default)]
    pub decoding: Decoding,
}

/// A named, durable consumer of the lead stream and its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    /// Every event up to and including this sequence is acknowledged.
    pub acked_sequence: u64,
    /// Events stored after `acked_sequence`.
    pub pending: u64,
    pub ack_time: Option<OffsetDateTime>,
    pub create_time: OffsetDateTime,
}

/// Why a value cannot be part of the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} {reason}")]
pub struct InvalidValue {
    pub name: &'static str,
    pub reason: &'static str,
}

/// Checks a consumer name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn validate_consumer_name(name: &str) -> Result<(), InvalidValue> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(InvalidValue {
            name: "consumer",
            reason: "must be 1 to 64 of A-Z a-z 0-9 . _ -",
        })
    }
}

/// Checks an id a caller names a record by (a deal id, a client id): not empty,
/// at most 256 bytes, no control characters (a NUL cannot even be stored).
pub fn validate_id(name: &'static str, id: &str) -> Result<(), InvalidValue> {
    if id.trim().is_empty() {
        return Err(InvalidValue {
            name,
            reason: "must not be empty",
        });
    }
    if id.len() > 256 || id.chars().any(char::is_control) {
        return Err(InvalidValue {
            name,
            reason: "must be at most 256 bytes without control characters",
        });
    }
    Ok(())
}

/// Checks free text a caller reports (a name, a status): no NUL, which no store
/// can keep as text.
pub fn validate_text(name: &'static str, text: &str) -> Result<(), InvalidValue> {
    if text.contains('\0') {
        return Err(InvalidValue {
            name,
            reason: "must not contain a NUL character",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_in_both_languages() {
        let cases = [
            ("Incoming call from 11230001122", LeadSource::Calltracking),
            ("Call from 11230001122", LeadSource::Calltracking),
            ("Звонок от 79990001122", LeadSource::Calltracking),
            ("Hunted lead: 1", LeadSource::LeadHunter),
            ("Пойманный лид: 79990001122", LeadSource::LeadHunter),
            ("JivoSite Lead", LeadSource::Jivosite),
            ("CRM Lead", LeadSource::Crm),
            ("Заявка с сайта", LeadSource::Other),
            ("", LeadSource::Other),
        ];
        for (title, source) in cases {
            assert_eq!(LeadSource::from_title(title), source, "{title}");
        }
        for source in LeadSource::ALL {
            assert_eq!(LeadSource::from_name(source.as_str()), Some(source));
        }
    }

    #[test]
    fn ids_are_plain() {
        assert!(validate_id("deal_id", "D-1").is_ok());
        assert!(validate_id("deal_id", " ").is_err());
        assert!(validate_id("deal_id", "a\0b").is_err());
        assert!(validate_text("name", "a\0b").is_err());
        assert!(validate_consumer_name("billing.v2").is_ok());
        assert!(validate_consumer_name("bill ing").is_err());
    }
}
