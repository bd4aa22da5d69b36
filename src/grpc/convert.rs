//! Domain model → generated protobuf messages.

use time::OffsetDateTime;

use crate::domain::{Deal, DealMessage, Event, EventBody, Lead, LeadSource, OrderIdMode};
use crate::proto;

pub fn timestamp(time: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.unix_timestamp(),
        nanos: time.nanosecond() as i32,
    }
}

pub fn source(source: LeadSource) -> proto::LeadSource {
    match source {
        LeadSource::LeadHunter => proto::LeadSource::LeadHunter,
        LeadSource::Calltracking => proto::LeadSource::Calltracking,
        LeadSource::Crm => proto::LeadSource::Crm,
        LeadSource::Jivosite => proto::LeadSource::Jivosite,
        LeadSource::Other => proto::LeadSource::Other,
    }
}

pub fn lead(lead: &Lead, sequence: u64, receive_time: OffsetDateTime) -> proto::Lead {
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
        create_time: lead.create_time.map(timestamp),
        source: source(lead.source) as i32,
        manager_id: lead.manager_id.clone(),
        extra: lead.extra.clone().into_iter().collect(),
        receive_time: Some(timestamp(receive_time)),
        sequence,
    }
}

pub fn message(message: &DealMessage) -> proto::DealMessage {
    proto::DealMessage {
        integration: message.integration.clone(),
        lead_id: message.lead_id.clone(),
        title: message.title.clone(),
        text: message.text.clone(),
        extra: message.extra.clone().into_iter().collect(),
    }
}

pub fn lead_event(event: &Event) -> proto::LeadEvent {
    let body = match &event.record {
        EventBody::Lead(record) => {
            proto::lead_event::Event::Lead(lead(record, event.sequence, event.receive_time))
        }
        EventBody::Message(record) => proto::lead_event::Event::Message(message(record)),
    };
    proto::LeadEvent {
        sequence: event.sequence,
        receive_time: Some(timestamp(event.receive_time)),
        event: Some(body),
    }
}

pub fn deal(deal: &Deal, mode: OrderIdMode) -> proto::Deal {
    proto::Deal {
        integration: deal.key.integration.clone(),
        lead_id: deal.key.lead_id.clone(),
        order_id: deal.order_id(mode).unwrap_or_default().to_owned(),
        deal_id: deal.deal_id.clone().unwrap_or_default(),
        order_id_answered: deal.answered_order_id.is_some(),
        update_time: Some(timestamp(deal.update_time)),
    }
}

const PAGE_TOKEN_PREFIX: &str = "after:";

/// The page token that continues a listing after `sequence`.
pub fn page_token(sequence: u64) -> String {
    format!("{PAGE_TOKEN_PREFIX}{sequence}")
}

/// The sequence a page token continues after; 0 for an empty token, `None` for a
/// token this service did not issue.
pub fn parse_page_token(token: &str) -> Option<u64> {
    if token.is_empty() {
        return Some(0);
    }
    token.strip_prefix(PAGE_TOKEN_PREFIX)?.parse().ok()
}
