//! The events' protobuf messages to and from the domain model. Reading a stored
//! event back into the domain model serves the console, the background match of
//! stored leads to persons, and the tests.

#[cfg(any(test, feature = "console"))]
use crate::domain::{Call, DealMessage, Task};
use crate::domain::{Decoding, Lead};
use crate::domain::{
    KeptRequest, LeadSource, PersonSplit, PersonsMerged, PhoneKind, PhoneNumber, UnknownAction,
};
use crate::proto;
use crate::proto::from_timestamp;

pub fn source(source: LeadSource) -> proto::LeadSource {
    match source {
        LeadSource::LeadHunter => proto::LeadSource::LeadHunter,
        LeadSource::Calltracking => proto::LeadSource::Calltracking,
        LeadSource::Crm => proto::LeadSource::Crm,
        LeadSource::Jivosite => proto::LeadSource::Jivosite,
        LeadSource::Other => proto::LeadSource::Other,
    }
}

/// A protobuf source as the domain's; `None` for an unknown or unspecified one.
pub fn source_from_proto(value: i32) -> Option<LeadSource> {
    match proto::LeadSource::try_from(value) {
        Ok(proto::LeadSource::LeadHunter) => Some(LeadSource::LeadHunter),
        Ok(proto::LeadSource::Calltracking) => Some(LeadSource::Calltracking),
        Ok(proto::LeadSource::Crm) => Some(LeadSource::Crm),
        Ok(proto::LeadSource::Jivosite) => Some(LeadSource::Jivosite),
        Ok(proto::LeadSource::Other) => Some(LeadSource::Other),
        Ok(proto::LeadSource::Unspecified) | Err(_) => None,
    }
}

fn time(time: Option<prost_types::Timestamp>) -> Option<time::OffsetDateTime> {
    time.as_ref().and_then(from_timestamp)
}

pub(super) fn lead(lead: proto::Lead) -> Lead {
    Lead {
        source: source_from_proto(lead.source).unwrap_or(LeadSource::Other),
        integration: lead.integration,
        lead_id: lead.lead_id,
        visit: lead.visit,
        title: lead.title,
        text: lead.text,
        name: lead.name,
        phone: lead.phone,
        email: lead.email,
        page: lead.page,
        fields: lead.fields.into_iter().collect(),
        data_json: lead.data_json,
        create_time: time(lead.create_time),
        manager_id: lead.manager_id,
        extra: lead.extra.into_iter().collect(),
        decoding: decoding(
            lead.raw_request,
            lead.repeated_parameters,
            lead.decoding_notes,
        ),
        phone_number: (!lead.phone_e164.is_empty()).then(|| PhoneNumber {
            e164: lead.phone_e164,
            valid: lead.phone_valid,
            region: lead.phone_region,
            kind: phone_kind_from_proto(lead.phone_kind),
        }),
        email_normalized: lead.email_normalized,
    }
}

pub fn phone_kind(kind: PhoneKind) -> proto::PhoneKind {
    match kind {
        PhoneKind::Unknown => proto::PhoneKind::Unspecified,
        PhoneKind::Mobile => proto::PhoneKind::Mobile,
        PhoneKind::FixedLine => proto::PhoneKind::FixedLine,
        PhoneKind::FixedLineOrMobile => proto::PhoneKind::FixedLineOrMobile,
        PhoneKind::TollFree => proto::PhoneKind::TollFree,
        PhoneKind::PremiumRate => proto::PhoneKind::PremiumRate,
        PhoneKind::SharedCost => proto::PhoneKind::SharedCost,
        PhoneKind::Voip => proto::PhoneKind::Voip,
        PhoneKind::PersonalNumber => proto::PhoneKind::PersonalNumber,
        PhoneKind::Pager => proto::PhoneKind::Pager,
        PhoneKind::Uan => proto::PhoneKind::Uan,
        PhoneKind::Voicemail => proto::PhoneKind::Voicemail,
    }
}

fn phone_kind_from_proto(value: i32) -> PhoneKind {
    PhoneKind::ALL
        .into_iter()
        .find(|kind| phone_kind(*kind) as i32 == value)
        .unwrap_or_default()
}

pub(super) fn persons_merged_proto(merged: &PersonsMerged) -> proto::PersonsMerged {
    proto::PersonsMerged {
        integration: merged.integration.clone(),
        kept_person_id: merged.kept_person_id,
        merged_person_id: merged.merged_person_id,
        lead_id: merged.lead_id.clone(),
        linked_by: merged.linked_by.clone(),
    }
}

pub(super) fn person_split_proto(split: &PersonSplit) -> proto::PersonSplit {
    proto::PersonSplit {
        integration: split.integration.clone(),
        person_id: split.person_id,
        new_person_id: split.new_person_id,
        unlinked: split.unlinked.clone(),
        lead_ids: split.lead_ids.clone(),
    }
}

#[cfg(any(test, feature = "console"))]
pub(super) fn persons_merged(merged: proto::PersonsMerged) -> PersonsMerged {
    PersonsMerged {
        integration: merged.integration,
        kept_person_id: merged.kept_person_id,
        merged_person_id: merged.merged_person_id,
        lead_id: merged.lead_id,
        linked_by: merged.linked_by,
    }
}

#[cfg(any(test, feature = "console"))]
pub(super) fn person_split(split: proto::PersonSplit) -> PersonSplit {
    PersonSplit {
        integration: split.integration,
        person_id: split.person_id,
        new_person_id: split.new_person_id,
        unlinked: split.unlinked,
        lead_ids: split.lead_ids,
    }
}

/// A domain lead as the API shows it (what the tests expect a stored lead to read
/// back as).
#[cfg(test)]
pub fn lead_proto(lead: &Lead, sequence: u64, receive_time: time::OffsetDateTime) -> proto::Lead {
    proto::Lead {
        integration: lead.integration.clone(),
        lead_id: lead.lead_id.clone(),
        visit: lead.visit.clone(),
        title: lead.title.clone(),
        text: lead.text.clone(),
        name: lead.name.clone(),
        phone: lead.phone.clone(),
        email: lead.email.clone(),
        page: lead.page.clone(),
        fields: lead.fields.clone().into_iter().collect(),
        data_json: lead.data_json.clone(),
        create_time: lead.create_time.map(proto::timestamp),
        source: source(lead.source) as i32,
        manager_id: lead.manager_id.clone(),
        extra: lead.extra.clone().into_iter().collect(),
        receive_time: Some(proto::timestamp(receive_time)),
        sequence,
        decoding_lossy: lead.decoding.lossy(),
        raw_request: lead.decoding.raw_request.as_ref().map(raw_request_proto),
        repeated_parameters: parameters_proto(&lead.decoding.repeated),
        decoding_notes: lead.decoding.notes.clone(),
        history: vec![],
        calls: vec![],
        phone_e164: lead
            .phone_number
            .as_ref()
            .map(|n| n.e164.clone())
            .unwrap_or_default(),
        phone_valid: lead.phone_number.as_ref().is_some_and(|n| n.valid),
        phone_region: lead
            .phone_number
            .as_ref()
            .map(|n| n.region.clone())
            .unwrap_or_default(),
        phone_kind: lead
            .phone_number
            .as_ref()
            .map_or(0, |n| phone_kind(n.kind) as i32),
        email_normalized: lead.email_normalized.clone(),
        person_id: 0,
        returning: false,
        person_first_seen: None,
    }
}

#[cfg(any(test, feature = "console"))]
pub(super) fn message(message: proto::DealMessage) -> DealMessage {
    DealMessage {
        integration: message.integration,
        lead_id: message.lead_id,
        title: message.title,
        text: message.text,
        extra: message.extra.into_iter().collect(),
        resolved_lead_id: message.resolved_lead_id,
        decoding: decoding(
            message.raw_request,
            message.repeated_parameters,
            message.decoding_notes,
        ),
    }
}

#[cfg(any(test, feature = "console"))]
pub(super) fn task(task: proto::Task) -> Task {
    Task {
        integration: task.integration,
        element_id: task.element_id,
        deadline: time(task.deadline),
        text: task.text,
        extra: task.extra.into_iter().collect(),
        decoding: decoding(
            task.raw_request,
            task.repeated_parameters,
            task.decoding_notes,
        ),
    }
}

#[cfg(any(test, feature = "console"))]
pub(super) fn call(call: proto::Call) -> Call {
    Call {
        integration: call.integration,
        call_id: call.call_id,
        callee: call.callee,
        caller: call.caller,
        date: time(call.date),
        visit: call.visit,
        marker: call.marker,
        status: call.status,
        order_id: call.order_id,
        duration: Some(call.duration).filter(|seconds| *seconds > 0),
        file_url: call.file_url,
        extra: call.extra.into_iter().collect(),
        decoding: decoding(
            call.raw_request,
            call.repeated_parameters,
            call.decoding_notes,
        ),
        callee_e164: call.callee_e164,
        caller_e164: call.caller_e164,
    }
}

pub(super) fn unknown_action_proto(unknown: &UnknownAction) -> proto::UnknownAction {
    proto::UnknownAction {
        integration: unknown.integration.clone(),
        action: unknown.action.clone(),
        parameters: parameters_proto(&unknown.parameters),
        decoding_lossy: unknown.decoding.lossy(),
        raw_request: unknown.decoding.raw_request.as_ref().map(raw_request_proto),
        repeated_parameters: parameters_proto(&unknown.decoding.repeated),
        decoding_notes: unknown.decoding.notes.clone(),
    }
}

/// Name and value pairs as the proto's `Parameter`s.
pub(super) fn parameters_proto(pairs: &[(String, String)]) -> Vec<proto::Parameter> {
    pairs
        .iter()
        .map(|(name, value)| proto::Parameter {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

pub(super) fn raw_request_proto(raw: &KeptRequest) -> proto::RawRequest {
    proto::RawRequest {
        query: raw.query.clone(),
        body: raw.body.clone(),
        content_type: raw.content_type.clone(),
    }
}

/// The decoding fields of an event message as the domain's.
fn decoding(
    raw: Option<proto::RawRequest>,
    repeated: Vec<proto::Parameter>,
    notes: Vec<String>,
) -> Decoding {
    Decoding {
        raw_request: raw.map(|raw| KeptRequest {
            query: raw.query,
            body: raw.body,
            content_type: raw.content_type,
        }),
        repeated: pairs(repeated),
        notes,
    }
}

fn pairs(parameters: Vec<proto::Parameter>) -> Vec<(String, String)> {
    parameters
        .into_iter()
        .map(|parameter| (parameter.name, parameter.value))
        .collect()
}

#[cfg(any(test, feature = "console"))]
pub(super) fn unknown_action(unknown: proto::UnknownAction) -> UnknownAction {
    UnknownAction {
        integration: unknown.integration,
        action: unknown.action,
        parameters: pairs(unknown.parameters),
        decoding: decoding(
            unknown.raw_request,
            unknown.repeated_parameters,
            unknown.decoding_notes,
        ),
    }
}
