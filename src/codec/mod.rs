//! Events in the form they are sent: the protobuf encoding of a `Lead`,
//! `DealMessage`, `Task` or `Call` of `roistat.leads.v1`, without the fields only
//! known at commit (a lead's `sequence` and `receive_time`). This is also how they
//! are stored, so a stream writes stored bytes as they are, and the stored form is
//! pinned by the proto itself (which only grows).

mod kinds;
mod model;

use bytes::Bytes;
use prost::Message;
use prost::encoding;
use time::OffsetDateTime;

use crate::domain::{
    Call, DealMessage, Decoding, EncodedEvent, EventBody, EventKind, Lead, PersonLink, Task,
    UnknownAction,
};
use crate::proto::{self, EventFrame};

pub use kinds::{forms, kind_from_proto};
#[cfg(test)]
pub use model::lead_proto;
pub use model::{phone_kind, source, source_from_proto};

/// Why stored bytes are not an event of their kind.
#[derive(Debug, Clone, thiserror::Error)]
#[error("a stored {kind} cannot be read: {reason}")]
pub struct DecodeError {
    kind: &'static str,
    reason: String,
}

/// Writes protobuf fields into a buffer, skipping the defaults (empty strings and
/// maps, zeros, absent times) as proto3 does.
struct Writer(Vec<u8>);

impl Writer {
    fn str(&mut self, tag: u32, value: &String) -> &mut Self {
        if !value.is_empty() {
            encoding::string::encode(tag, value, &mut self.0);
        }
        self
    }

    fn map(&mut self, tag: u32, values: &std::collections::BTreeMap<String, String>) -> &mut Self {
        encoding::btree_map::encode(
            encoding::string::encode,
            encoding::string::encoded_len,
            encoding::string::encode,
            encoding::string::encoded_len,
            tag,
            values,
            &mut self.0,
        );
        self
    }

    fn time(&mut self, tag: u32, value: Option<OffsetDateTime>) -> &mut Self {
        if let Some(time) = value {
            encoding::message::encode(tag, &proto::timestamp(time), &mut self.0);
        }
        self
    }

    fn uint(&mut self, tag: u32, value: u64) -> &mut Self {
        if value != 0 {
            encoding::uint64::encode(tag, &value, &mut self.0);
        }
        self
    }

    fn enumeration(&mut self, tag: u32, value: i32) -> &mut Self {
        if value != 0 {
            encoding::int32::encode(tag, &value, &mut self.0);
        }
        self
    }

    /// A lead's phone read and e-mail normalised (fields 24 to 28).
    fn identity(&mut self, lead: &Lead) -> &mut Self {
        if let Some(number) = &lead.phone_number {
            self.str(24, &number.e164);
            if number.valid {
                encoding::bool::encode(25, &true, &mut self.0);
            }
            self.str(26, &number.region)
                .enumeration(27, phone_kind(number.kind) as i32);
        }
        self.str(28, &lead.email_normalized)
    }

    /// The four decoding fields every event message carries, from `first`:
    /// `decoding_lossy`, `raw_request`, `repeated_parameters`, `decoding_notes`.
    /// Nothing at all for a request read whole.
    fn decoding(&mut self, first: u32, decoding: &Decoding) -> &mut Self {
        if decoding.lossy() {
            encoding::bool::encode(first, &true, &mut self.0);
        }
        if let Some(raw) = &decoding.raw_request {
            encoding::message::encode(first + 1, &model::raw_request_proto(raw), &mut self.0);
        }
        for parameter in model::parameters_proto(&decoding.repeated) {
            encoding::message::encode(first + 2, &parameter, &mut self.0);
        }
        encoding::string::encode_repeated(first + 3, &decoding.notes, &mut self.0);
        self
    }
}

/// A lead stored before persons with the phone and e-mail fields it lacks
/// (appended: a field may come in any order).
pub fn with_identity(body: &[u8], lead: &Lead) -> Bytes {
    let mut out = Writer(body.to_vec());
    out.identity(lead);
    Bytes::from(out.0)
}

/// A stored lead read back into the domain model.
pub fn lead_from_proto(lead: proto::Lead) -> Lead {
    model::lead(lead)
}

/// A lead as stored and sent (all fields of `Lead` but `sequence`, `receive_time`
/// and the person's, known at commit).
pub fn encode_lead(lead: &Lead) -> Vec<u8> {
    let mut out = Writer(Vec::with_capacity(
        256 + lead.text.len() + lead.data_json.len(),
    ));
    out.str(1, &lead.integration)
        .str(2, &lead.lead_id)
        .str(3, &lead.visit)
        .str(4, &lead.title)
        .str(5, &lead.text)
        .str(6, &lead.name)
        .str(7, &lead.phone)
        .str(8, &lead.email)
        .str(9, &lead.page)
        .map(10, &lead.fields)
        .str(11, &lead.data_json)
        .time(12, lead.create_time)
        .enumeration(13, source(lead.source) as i32)
        .str(14, &lead.manager_id)
        .map(15, &lead.extra)
        .decoding(decoding_field(EventKind::Lead), &lead.decoding)
        .identity(lead);
    out.0
}

/// The first decoding field of a kind that has them.
fn decoding_field(kind: EventKind) -> u32 {
    forms(kind)
        .decoding
        .expect("a kind read from a request has decoding fields")
}

fn encode_message(message: &DealMessage) -> Vec<u8> {
    let mut out = Writer(Vec::with_capacity(64 + message.text.len()));
    out.str(1, &message.integration)
        .str(2, &message.lead_id)
        .str(3, &message.title)
        .str(4, &message.text)
        .map(5, &message.extra)
        .str(6, &message.resolved_lead_id)
        .decoding(decoding_field(EventKind::Message), &message.decoding);
    out.0
}

fn encode_task(task: &Task) -> Vec<u8> {
    let mut out = Writer(Vec::with_capacity(64 + task.text.len()));
    out.str(1, &task.integration)
        .str(2, &task.element_id)
        .time(3, task.deadline)
        .str(4, &task.text)
        .map(5, &task.extra)
        .decoding(decoding_field(EventKind::Task), &task.decoding);
    out.0
}

fn encode_call(call: &Call) -> Vec<u8> {
    let mut out = Writer(Vec::with_capacity(128));
    out.str(1, &call.integration)
        .str(2, &call.call_id)
        .str(3, &call.callee)
        .str(4, &call.caller)
        .time(5, call.date)
        .str(6, &call.visit)
        .str(7, &call.marker)
        .str(8, &call.status)
        .str(9, &call.order_id)
        .uint(10, call.duration.unwrap_or(0))
        .str(11, &call.file_url)
        .map(12, &call.extra)
        .decoding(decoding_field(EventKind::Call), &call.decoding)
        .str(17, &call.callee_e164)
        .str(18, &call.caller_e164);
    out.0
}

/// A request of an unknown action: rare, so through the generated message.
fn encode_unknown_action(unknown: &UnknownAction) -> Vec<u8> {
    model::unknown_action_proto(unknown).encode_to_vec()
}

/// An event's body as stored and sent.
pub fn encode_body(body: &EventBody) -> Vec<u8> {
    match body {
        EventBody::Lead(lead) => encode_lead(lead),
        EventBody::Message(message) => encode_message(message),
        EventBody::Task(task) => encode_task(task),
        EventBody::Call(call) => encode_call(call),
        EventBody::UnknownAction(unknown) => encode_unknown_action(unknown),
        // Rare, and written by the service: through the generated messages.
        EventBody::PersonsMerged(merged) => model::persons_merged_proto(merged).encode_to_vec(),
        EventBody::PersonSplit(split) => model::person_split_proto(split).encode_to_vec(),
    }
}

/// A stored message's body with the lead it was filed under (`resolved_lead_id`,
/// field 6, which the request did not know: it is absent from the body).
pub fn with_resolved_lead(body: &[u8], lead_id: &str) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + lead_id.len() + 4);
    out.extend_from_slice(body);
    if !lead_id.is_empty() {
        encoding::string::encode(6, &lead_id.to_owned(), &mut out);
    }
    Bytes::from(out)
}

fn decode<M: Message + Default>(kind: EventKind, bytes: &[u8]) -> Result<M, DecodeError> {
    M::decode(bytes).map_err(|error| DecodeError {
        kind: kind.as_str(),
        reason: error.to_string(),
    })
}

/// An event's body from the bytes it was stored as.
#[cfg(any(test, feature = "console"))]
pub fn decode_body(kind: EventKind, bytes: &[u8]) -> Result<EventBody, DecodeError> {
    Ok(match kind {
        EventKind::Lead => EventBody::Lead(model::lead(decode(kind, bytes)?)),
        EventKind::Message => EventBody::Message(model::message(decode(kind, bytes)?)),
        EventKind::Task => EventBody::Task(model::task(decode(kind, bytes)?)),
        EventKind::Call => EventBody::Call(model::call(decode(kind, bytes)?)),
        EventKind::UnknownAction => {
            EventBody::UnknownAction(model::unknown_action(decode(kind, bytes)?))
        }
        EventKind::PersonsMerged => {
            EventBody::PersonsMerged(model::persons_merged(decode(kind, bytes)?))
        }
        EventKind::PersonSplit => EventBody::PersonSplit(model::person_split(decode(kind, bytes)?)),
    })
}

/// A stored lead as the API shows it, with its sequence and receive time.
pub fn decode_lead(event: &EncodedEvent) -> Result<proto::Lead, DecodeError> {
    let mut lead: proto::Lead = decode(EventKind::Lead, &event.body)?;
    lead.sequence = event.sequence;
    lead.receive_time = Some(proto::timestamp(event.receive_time));
    if let Some(person) = event.person {
        lead.person_id = person.person_id;
        lead.returning = person.returning;
        lead.person_first_seen = Some(proto::timestamp(person.first_seen));
    }
    Ok(lead)
}

/// The `name` of a stored lead (field 6 of `Lead`), read without the rest; empty
/// when it has none or cannot be read.
pub fn lead_name(body: &[u8]) -> String {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Name {
        #[prost(string, tag = "6")]
        name: String,
    }
    Name::decode(body).map(|lead| lead.name).unwrap_or_default()
}

/// The `manager_id` of a stored lead (field 14 of `Lead`), read without the rest;
/// empty when it has none or cannot be read.
pub fn lead_manager_id(body: &[u8]) -> String {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Manager {
        #[prost(string, tag = "14")]
        manager_id: String,
    }
    Manager::decode(body)
        .map(|lead| lead.manager_id)
        .unwrap_or_default()
}

/// The `LeadEvent` a stream sends for a stored event: its bytes, framed.
pub fn frame(event: &EncodedEvent) -> EventFrame<'_> {
    EventFrame {
        sequence: event.sequence,
        receive_time: Some(proto::timestamp(event.receive_time)),
        field: forms(event.kind).field,
        body: &event.body,
        trace_parent: event.trace_parent.as_deref(),
        person: event.person.map(frame_person),
    }
}

fn frame_person(person: PersonLink) -> proto::FramePerson {
    proto::FramePerson {
        person_id: person.person_id,
        returning: person.returning,
        first_seen: proto::timestamp(person.first_seen),
    }
}

#[cfg(test)]
mod tests;
