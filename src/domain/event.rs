//! Events: what the lead stream carries, in commit order.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    Call, DealMessage, Lead, LeadSource, PersonLink, PersonSplit, PersonsMerged, Task,
    UnknownAction,
};

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
    UnknownAction(UnknownAction),
    PersonsMerged(PersonsMerged),
    PersonSplit(PersonSplit),
}

/// One committed event of the lead stream.
pub type Event = Stored<EventBody>;

/// An event as stored and streamed: what filters need, beside its body encoded in
/// the form it is sent (see the `codec` module), which nothing on its way to a
/// subscriber decodes.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    pub sequence: u64,
    pub receive_time: OffsetDateTime,
    pub kind: EventKind,
    pub integration: Arc<str>,
    /// A lead's source; other events have none.
    pub source: Option<LeadSource>,
    pub body: Bytes,
    /// The W3C `traceparent` of the request that stored it, when tracing was on.
    pub trace_parent: Option<Arc<str>>,
    /// A lead's person, as of when it was stored (or matched, for a lead stored
    /// before persons); none for other events, or with matching off.
    pub person: Option<PersonLink>,
}

impl EncodedEvent {
    pub fn admitted_by(&self, filter: &EventFilter) -> bool {
        filter.admits(self.kind, self.source, &self.integration)
            && !(filter.first_time_only && self.person.is_some_and(|person| person.returning))
    }
}

/// The kinds of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Lead,
    Message,
    Task,
    Call,
    UnknownAction,
    PersonsMerged,
    PersonSplit,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Lead,
        EventKind::Message,
        EventKind::Task,
        EventKind::Call,
        EventKind::UnknownAction,
        EventKind::PersonsMerged,
        EventKind::PersonSplit,
    ];

    /// The kind's name, as stored and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Lead => "lead",
            EventKind::Message => "message",
            EventKind::Task => "task",
            EventKind::Call => "call",
            EventKind::UnknownAction => "unknown_action",
            EventKind::PersonsMerged => "persons_merged",
            EventKind::PersonSplit => "person_split",
        }
    }

    /// Whether an identical copy is the same event only within the dedup window
    /// (after it, a new one). A lead is one for good under its id; a call or task
    /// whose content changed is a new event (its new state), an identical copy a
    /// retry within the window.
    pub fn deduplicated_within_window(self) -> bool {
        match self {
            EventKind::Message | EventKind::Task | EventKind::Call | EventKind::UnknownAction => {
                true
            }
            // Leads are one under their id; person events are written once each.
            EventKind::Lead | EventKind::PersonsMerged | EventKind::PersonSplit => false,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::from_bytes(name.as_bytes())
    }

    /// The kind a stored name (as bytes) names.
    pub fn from_bytes(name: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str().as_bytes() == name)
    }
}

impl EventBody {
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::Lead(_) => EventKind::Lead,
            EventBody::Message(_) => EventKind::Message,
            EventBody::Task(_) => EventKind::Task,
            EventBody::Call(_) => EventKind::Call,
            EventBody::UnknownAction(_) => EventKind::UnknownAction,
            EventBody::PersonsMerged(_) => EventKind::PersonsMerged,
            EventBody::PersonSplit(_) => EventKind::PersonSplit,
        }
    }

    pub fn integration(&self) -> &str {
        match self {
            EventBody::Lead(lead) => &lead.integration,
            EventBody::Message(message) => &message.integration,
            EventBody::Task(task) => &task.integration,
            EventBody::Call(call) => &call.integration,
            EventBody::UnknownAction(unknown) => &unknown.integration,
            EventBody::PersonsMerged(merged) => &merged.integration,
            EventBody::PersonSplit(split) => &split.integration,
        }
    }

    /// How its request was read (what was lost, and the request when anything was).
    pub fn decoding(&self) -> &super::Decoding {
        static WHOLE: super::Decoding = super::Decoding {
            raw_request: None,
            repeated: Vec::new(),
            notes: Vec::new(),
        };
        match self {
            EventBody::Lead(lead) => &lead.decoding,
            EventBody::Message(message) => &message.decoding,
            EventBody::Task(task) => &task.decoding,
            EventBody::Call(call) => &call.decoding,
            EventBody::UnknownAction(unknown) => &unknown.decoding,
            // Written by the service itself: nothing was read.
            EventBody::PersonsMerged(_) | EventBody::PersonSplit(_) => &WHOLE,
        }
    }

    /// A lead's source; other events have none.
    pub fn source(&self) -> Option<LeadSource> {
        match self {
            EventBody::Lead(lead) => Some(lead.source),
            _ => None,
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
            EventBody::UnknownAction(unknown) => &unknown.action,
            EventBody::PersonsMerged(merged) => &merged.lead_id,
            EventBody::PersonSplit(split) => &split.unlinked,
        }
    }

    /// The id the event names its lead by: an order id or a Roistat lead id.
    pub fn named_lead(&self) -> &str {
        match self {
            EventBody::Lead(lead) => &lead.lead_id,
            EventBody::Message(message) => &message.lead_id,
            EventBody::Task(task) => &task.element_id,
            EventBody::Call(call) => &call.order_id,
            // It names no lead this version can tell.
            EventBody::UnknownAction(_) => "",
            EventBody::PersonsMerged(merged) => &merged.lead_id,
            EventBody::PersonSplit(_) => "",
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
                let deadline = unix_text(task.deadline);
                let mut parts = vec![task.element_id.as_str(), &deadline, &task.text];
                push_pairs(&mut parts, &task.extra);
                format!("task:{}", digest(&parts))
            }
            EventBody::Call(call) => {
                let (date, duration) = (unix_text(call.date), text_of(call.duration));
                let mut parts = vec![
                    call.call_id.as_str(),
                    &call.callee,
                    &call.caller,
                    &date,
                    &call.visit,
                    &call.marker,
                    &call.status,
                    &call.order_id,
                    &duration,
                    &call.file_url,
                ];
                push_pairs(&mut parts, &call.extra);
                format!("call:{}", digest(&parts))
            }
            EventBody::UnknownAction(unknown) => {
                let mut parts = vec![unknown.action.as_str()];
                for (name, value) in &unknown.parameters {
                    parts.extend([name.as_str(), value.as_str()]);
                }
                format!("unknown_action:{}", digest(&parts))
            }
            EventBody::PersonsMerged(merged) => format!(
                "persons_merged:{}:{}",
                merged.kept_person_id, merged.merged_person_id
            ),
            EventBody::PersonSplit(split) => {
                format!("person_split:{}:{}", split.person_id, split.new_person_id)
            }
        }
    }
}

/// A time as Unix seconds in text; empty for none.
fn unix_text(time: Option<OffsetDateTime>) -> String {
    time.map(|time| time.unix_timestamp().to_string())
        .unwrap_or_default()
}

fn text_of(number: Option<u64>) -> String {
    number.map(|number| number.to_string()).unwrap_or_default()
}

/// Adds names and values to what a digest is taken of.
fn push_pairs<'a>(parts: &mut Vec<&'a str>, pairs: &'a std::collections::BTreeMap<String, String>) {
    for (name, value) in pairs {
        parts.extend([name.as_str(), value.as_str()]);
    }
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

/// Which events a subscriber wants; an empty list admits everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Lead sources; other events have none and pass.
    pub sources: Vec<LeadSource>,
    pub kinds: Vec<EventKind>,
    pub integrations: Vec<String>,
    /// Skip the leads of persons seen before.
    pub first_time_only: bool,
}

impl EventFilter {
    pub fn matches(&self, body: &EventBody) -> bool {
        self.admits(body.kind(), body.source(), body.integration())
    }

    /// Whether an event of this kind, source and integration passes.
    pub fn admits(&self, kind: EventKind, source: Option<LeadSource>, integration: &str) -> bool {
        let kind_ok = self.kinds.is_empty() || self.kinds.contains(&kind);
        let source_ok = match source {
            Some(source) => self.sources.is_empty() || self.sources.contains(&source),
            None => true,
        };
        let integration_ok = self.integrations.is_empty()
            || self.integrations.iter().any(|name| name == integration);
        kind_ok && source_ok && integration_ok
    }
}
