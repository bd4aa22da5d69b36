//! The lead relay's model: leads, deal messages, deals and events.
//! It knows neither HTTP, gRPC nor SQL; `parse` turns Roistat's parameters into it.

mod crm;
mod parse;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crm::{Call, Client, DealDetails, DealUpdate, Manager, Money, Scheme, SchemeEntry, Task};
pub use parse::{
    ExportQuery, Params, ParseError, parse_call, parse_export, parse_lead, parse_message,
    parse_roistat_time, parse_task,
};

/// The integration every lead belongs to until several Roistat projects can be configured.
pub const DEFAULT_INTEGRATION: &str = "default";

/// Identifies a lead: Roistat lead ids are unique only within one Roistat project.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeadKey {
    pub integration: String,
    pub lead_id: String,
}

impl LeadKey {
    /// A key in `integration`, or in the default integration when it is empty.
    pub fn new(integration: &str, lead_id: impl Into<String>) -> Self {
        let integration = if integration.is_empty() {
            DEFAULT_INTEGRATION
        } else {
            integration
        };
        Self {
            integration: integration.to_owned(),
            lead_id: lead_id.into(),
        }
    }
}

/// Where a lead came from, as told by the title Roistat gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadSource {
    LeadHunter,
    Calltracking,
    Crm,
    Jivosite,
    Other,
}

impl LeadSource {
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
    pub lead_id: String,
    pub title: String,
    pub text: String,
    pub extra: BTreeMap<String, String>,
}

/// A digest of `parts` that no other sequence of parts shares.
fn digest(parts: &[&str]) -> String {
    use md5::{Digest, Md5};
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    format!("{:x}", hasher.finalize())
}

/// A record once committed: its event sequence and when it was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    pub sequence: u64,
    pub receive_time: OffsetDateTime,
    pub record: T,
}

/// What an event announces. Leads dominate the stream, so the size difference
/// between variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum EventBody {
    Lead(Lead),
    Message(DealMessage),
    Task(Task),
    Call(Call),
}

impl EventBody {
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::Lead(_) => EventKind::Lead,
            EventBody::Message(_) => EventKind::Message,
            EventBody::Task(_) => EventKind::Task,
            EventBody::Call(_) => EventKind::Call,
        }
    }

    /// The kind's name, as stored.
    pub fn kind_name(&self) -> &'static str {
        match self {
            EventBody::Lead(_) => "lead",
            EventBody::Message(_) => "message",
            EventBody::Task(_) => "task",
            EventBody::Call(_) => "call",
        }
    }

    pub fn integration(&self) -> &str {
        match self {
            EventBody::Lead(lead) => &lead.integration,
            EventBody::Message(message) => &message.integration,
            EventBody::Task(task) => &task.integration,
            EventBody::Call(call) => &call.integration,
        }
    }

    /// The lead id (or, for tasks and calls, the id Roistat names them by) the
    /// event is filed under.
    pub fn subject_id(&self) -> &str {
        match self {
            EventBody::Lead(lead) => &lead.lead_id,
            EventBody::Message(message) => &message.lead_id,
            EventBody::Task(task) => &task.element_id,
            EventBody::Call(call) => &call.call_id,
        }
    }

    /// What makes a retry the same event: Roistat resends identical requests.
    /// Leads are identified by their key instead.
    pub fn identity(&self) -> String {
        match self {
            EventBody::Lead(lead) => format!("lead:{}", lead.lead_id),
            EventBody::Message(message) => {
                format!(
                    "message:{}",
                    digest(&[&message.lead_id, &message.title, &message.text])
                )
            }
            EventBody::Task(task) => {
                let deadline = task.deadline.map(|time| time.unix_timestamp().to_string());
                let deadline = deadline.as_deref().unwrap_or_default();
                format!("task:{}", digest(&[&task.element_id, deadline, &task.text]))
            }
            EventBody::Call(call) => format!("call:{}", call.call_id),
        }
    }
}

/// One committed event of the lead stream.
pub type Event = Stored<EventBody>;

/// The kinds of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Lead,
    Message,
    Task,
    Call,
}

/// Which events a subscriber wants; an empty list admits everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Lead sources; other events have none and pass.
    pub sources: Vec<LeadSource>,
    pub kinds: Vec<EventKind>,
    pub integrations: Vec<String>,
}

impl EventFilter {
    pub fn matches(&self, body: &EventBody) -> bool {
        let kind_ok = self.kinds.is_empty() || self.kinds.contains(&body.kind());
        let source_ok = match body {
            EventBody::Lead(lead) => self.sources.is_empty() || self.sources.contains(&lead.source),
            _ => true,
        };
        let integration_ok = self.integrations.is_empty()
            || self
                .integrations
                .iter()
                .any(|name| name == body.integration());
        kind_ok && source_ok && integration_ok
    }
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

/// Checks a consumer name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn validate_consumer_name(name: &str) -> Result<(), ParseError> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ParseError::Invalid {
            name: "consumer",
            reason: "must be 1 to 64 of A-Z a-z 0-9 . _ -",
        })
    }
}

/// The deal state of a lead.
#[derive(Debug, Clone, PartialEq)]
pub struct Deal {
    pub key: LeadKey,
    /// The CRM's deal id, once reported.
    pub deal_id: Option<String>,
    /// What Roistat was answered as `order_id`; fixed once set.
    pub answered_order_id: Option<String>,
    pub details: DealDetails,
    pub update_time: OffsetDateTime,
}

impl Deal {
    /// The order id Roistat is, or will be, answered for this lead under `mode`;
    /// `None` while the service still waits for the CRM's deal id.
    pub fn order_id(&self, mode: OrderIdMode) -> Option<&str> {
        self.answered_order_id
            .as_deref()
            .or(self.deal_id.as_deref())
            .or(match mode {
                OrderIdMode::Lead => Some(self.key.lead_id.as_str()),
                OrderIdMode::Crm => None,
            })
    }
}

/// What Roistat is answered as `order_id` for a new lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderIdMode {
    /// At once: the Roistat lead id, or the deal id if one was already reported.
    Lead,
    /// The CRM's deal id, once an internal service reports it.
    Crm,
}
