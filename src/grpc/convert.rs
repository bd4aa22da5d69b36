//! The domain model to and from the generated protobuf messages.

use prost::Message;
use time::OffsetDateTime;
use tonic::Status;

use super::invalid;
use crate::codec;
use crate::domain::{
    Client, Consumer, Deal, DealReport, DealUpdate, EncodedEvent, EventFilter, EventKind, LeadKey,
    LeadSource, Manager, Money, OrderIdMode, RejectedRequest, Scheme, SchemeEntry,
};
use crate::proto::{self, from_timestamp, timestamp};
use crate::relay::{Audience, Error, StreamRequest, StreamStart};

/// A stored event as StreamLeads sends it: the stream's own frame, read back. One
/// that cannot be read is an internal error, logged.
pub fn lead_event(event: &EncodedEvent) -> Result<proto::LeadEvent, Status> {
    let mut bytes = bytes::BytesMut::new();
    codec::frame(event).put_message(&mut bytes);
    let message = bytes.split_off(proto::MESSAGE_PREFIX);
    proto::LeadEvent::decode(message.freeze()).map_err(|error| {
        tracing::error!(%error, sequence = event.sequence, "a stored event cannot be read");
        Status::from(Error::Internal)
    })
}

/// The latest state of each call in a history that is newest first.
pub fn latest_calls(history: &[proto::LeadEvent]) -> Vec<proto::Call> {
    let mut seen = std::collections::HashSet::new();
    history
        .iter()
        .filter_map(|event| match &event.event {
            Some(proto::lead_event::Event::Call(call)) => Some(call.as_ref()),
            _ => None,
        })
        .filter(|call| seen.insert(call.call_id.clone()))
        .cloned()
        .collect()
}

/// A source a request names; unknown or unspecified is refused.
fn source_from_proto(value: i32) -> Result<LeadSource, Status> {
    codec::source_from_proto(value).ok_or_else(|| invalid("sources: unknown or unspecified source"))
}

/// A kind a request names; unknown or unspecified is refused.
fn kind_from_proto(value: i32) -> Result<EventKind, Status> {
    codec::kind_from_proto(value).ok_or_else(|| invalid("kinds: unknown or unspecified kind"))
}

/// What a StreamLeads request asks for. At most one explicit start may be given.
pub fn stream_request(request: proto::StreamLeadsRequest) -> Result<StreamRequest, Status> {
    let mut starts = vec![];
    if request.after_sequence > 0 {
        starts.push(StreamStart::After(request.after_sequence));
    }
    if let Some(time) = &request.start_time {
        let time = from_timestamp(time).ok_or_else(|| invalid("start_time is out of range"))?;
        starts.push(StreamStart::At(time));
    }
    if request.only_new {
        starts.push(StreamStart::OnlyNew);
    }
    if starts.len() > 1 {
        return Err(invalid(
            "give at most one of after_sequence, start_time and only_new",
        ));
    }
    Ok(StreamRequest {
        start: starts.pop(),
        consumer: Some(request.consumer).filter(|name| !name.is_empty()),
        filter: EventFilter {
            sources: request
                .sources
                .into_iter()
                .map(source_from_proto)
                .collect::<Result<_, _>>()?,
            integrations: request.integrations,
            kinds: request
                .kinds
                .into_iter()
                .map(kind_from_proto)
                .collect::<Result<_, _>>()?,
            first_time_only: request.first_time_only,
        },
        audience: Audience::Subscriber,
    })
}

pub fn consumer(consumer: &Consumer) -> proto::Consumer {
    proto::Consumer {
        name: consumer.name.clone(),
        acked_sequence: consumer.acked_sequence,
        pending: consumer.pending,
        ack_time: consumer.ack_time.map(timestamp),
        create_time: Some(timestamp(consumer.create_time)),
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
        name: deal.details.name.clone(),
        status: deal.details.status.clone(),
        price: deal.details.price.map(|money| money.to_string()),
        cost: deal.details.cost.map(|money| money.to_string()),
        manager_id: deal.details.manager_id.clone(),
        client_id: deal.details.client_id.clone(),
        fields: deal.details.fields.clone().into_iter().collect(),
        create_time: deal.details.create_time.map(timestamp),
    }
}

fn money(name: &str, value: Option<String>) -> Result<Option<Money>, Status> {
    value
        .map(|text| {
            text.parse()
                .map_err(|reason| invalid(&format!("{name} {reason}")))
        })
        .transpose()
}

/// What a ReportDeal request reports, and about which lead.
pub fn deal_report(request: proto::ReportDealRequest) -> Result<(LeadKey, DealReport), Status> {
    let key = super::lead_key(&request.integration, &request.lead_id)?;
    let create_time = request
        .create_time
        .map(|time| from_timestamp(&time).ok_or_else(|| invalid("create_time is out of range")))
        .transpose()?;
    let report = DealReport {
        deal_id: Some(request.deal_id).filter(|id| !id.is_empty()),
        update: DealUpdate {
            name: request.name,
            status: request.status,
            price: money("price", request.price)?,
            cost: money("cost", request.cost)?,
            manager_id: request.manager_id,
            client_id: request.client_id,
            fields: request.fields.into_iter().collect(),
            create_time,
        },
    };
    Ok((key, report))
}

pub fn scheme_from_proto(scheme: proto::Scheme) -> Scheme {
    let entry = |id: String, name: String| SchemeEntry { id, name };
    Scheme {
        statuses: scheme
            .statuses
            .into_iter()
            .map(|s| entry(s.id, s.name))
            .collect(),
        fields: scheme
            .fields
            .into_iter()
            .map(|f| entry(f.id, f.name))
            .collect(),
        managers: scheme
            .managers
            .into_iter()
            .map(|m| Manager {
                id: m.id,
                name: m.name,
                phone: m.phone,
                email: m.email,
            })
            .collect(),
    }
}

pub fn scheme(integration: &str, scheme: &Scheme, update_time: OffsetDateTime) -> proto::Scheme {
    proto::Scheme {
        integration: integration.to_owned(),
        statuses: scheme
            .statuses
            .iter()
            .map(|s| proto::scheme::Status {
                id: s.id.clone(),
                name: s.name.clone(),
            })
            .collect(),
        fields: scheme
            .fields
            .iter()
            .map(|f| proto::scheme::Field {
                id: f.id.clone(),
                name: f.name.clone(),
            })
            .collect(),
        managers: scheme
            .managers
            .iter()
            .map(|m| proto::scheme::Manager {
                id: m.id.clone(),
                name: m.name.clone(),
                phone: m.phone.clone(),
                email: m.email.clone(),
            })
            .collect(),
        update_time: Some(timestamp(update_time)),
    }
}

pub fn client_from_proto(client: proto::Client) -> Client {
    Client {
        id: client.id.trim().to_owned(),
        name: client.name,
        phone: client.phone,
        email: client.email,
        company: client.company,
        birth_date: Some(client.birth_date).filter(|date| !date.is_empty()),
    }
}

pub fn client(integration: &str, client: &Client, update_time: OffsetDateTime) -> proto::Client {
    proto::Client {
        integration: integration.to_owned(),
        id: client.id.clone(),
        name: client.name.clone(),
        phone: client.phone.clone(),
        email: client.email.clone(),
        company: client.company.clone(),
        birth_date: client.birth_date.clone().unwrap_or_default(),
        update_time: Some(timestamp(update_time)),
    }
}

pub fn rejected_request(request: &RejectedRequest) -> proto::RejectedRequest {
    let (kind, authentication) = if request.authenticated {
        ("stored", proto::Authentication::Passed)
    } else {
        ("memory", proto::Authentication::Failed)
    };
    proto::RejectedRequest {
        id: format!("{kind}-{}", request.id),
        time: Some(timestamp(request.time)),
        integration: request.integration.clone(),
        source_address: request.source.clone(),
        authentication: authentication as i32,
        path: request.path.clone(),
        action: request.action.clone(),
        reason: request.reason.clone(),
        http_status: u32::from(request.status),
        query: request.query.clone(),
        body: request.body.clone(),
    }
}

const NAME_TOKEN_PREFIX: &str = "name:";

/// The page token that continues a listing by name after `name`.
pub fn name_token(name: &str) -> String {
    format!("{NAME_TOKEN_PREFIX}{name}")
}

/// The name a page token continues after; empty for an empty token, `None` for a
/// token this service did not issue.
pub fn parse_name_token(token: &str) -> Option<String> {
    if token.is_empty() {
        return Some(String::new());
    }
    token.strip_prefix(NAME_TOKEN_PREFIX).map(str::to_owned)
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
