//! What the console's script receives: events, leads, deals, consumers and refused
//! requests as JSON. Values are data; the script renders every one as text.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::codec;
use crate::domain::{
    Consumer, Deal, Decoding, EncodedEvent, EventBody, FoundLead, Person, RejectedRequest, Scheme,
};
use crate::own_crm::answer::ExportOrder;
use crate::relay::LeadView;

pub fn time(time: OffsetDateTime) -> Value {
    time.format(&Rfc3339).map_or(Value::Null, Value::String)
}

fn optional_time(value: Option<OffsetDateTime>) -> Value {
    value.map_or(Value::Null, time)
}

/// An event as a line of the live view or of a lead's story; `order_id`: what
/// Roistat was answered for a lead.
pub fn event(event: &EncodedEvent, order_id: Option<&str>) -> Value {
    let mut line = json!({
        "sequence": event.sequence,
        "kind": event.kind.as_str(),
        "integration": &*event.integration,
        "time": time(event.receive_time),
    });
    let decoded = match codec::decode_body(event.kind, &event.body) {
        Ok(decoded) => decoded,
        Err(error) => {
            tracing::error!(%error, sequence = event.sequence, "a stored event cannot be read");
            line["unreadable"] = Value::Bool(true);
            return line;
        }
    };
    let fields = match &decoded {
        EventBody::Lead(lead) => json!({
            "lead_id": lead.lead_id,
            "source": lead.source.as_str(),
            "name": lead.name,
            "phone": lead.phone,
            "email": lead.email,
            "title": lead.title,
            "visit": lead.visit,
            "order_id": order_id,
            "phone_e164": lead.phone_number.as_ref().map(|number| number.e164.as_str()),
            "person_id": event.person.map(|person| person.person_id),
            "returning": event.person.is_some_and(|person| person.returning),
        }),
        EventBody::Message(message) => json!({
            "lead_id": message.lead_id,
            "resolved_lead_id": message.resolved_lead_id,
            "title": message.title,
            "text": message.text,
        }),
        EventBody::Task(task) => json!({
            "lead_id": task.element_id,
            "title": "Task",
            "text": task.text,
            "deadline": optional_time(task.deadline),
        }),
        EventBody::Call(call) => json!({
            "lead_id": call.order_id,
            "call_id": call.call_id,
            "title": format!("Call {}", call.status),
            "phone": call.caller,
            "callee": call.callee,
            "visit": call.visit,
            "duration": call.duration,
            "file_url": call.file_url,
        }),
        EventBody::PersonsMerged(merged) => json!({
            "lead_id": merged.lead_id,
            "title": "Persons merged",
            "text": format!(
                "person {} merged into {} (linked by {})",
                merged.merged_person_id, merged.kept_person_id, merged.linked_by
            ),
            "person_id": merged.kept_person_id,
        }),
        EventBody::PersonSplit(split) => json!({
            "lead_id": "",
            "title": "Person split",
            "text": format!(
                "{} unlinked: leads {} left person {} for {}",
                split.unlinked,
                split.lead_ids.join(", "),
                split.person_id,
                split.new_person_id
            ),
            "person_id": split.new_person_id,
        }),
        EventBody::UnknownAction(unknown) => json!({
            "lead_id": "",
            "title": format!("Unknown action {:?}", unknown.action),
            "text": unknown
                .parameters
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("\n"),
        }),
    };
    if let (Value::Object(line), Value::Object(fields)) = (&mut line, fields) {
        line.extend(fields);
    }
    if let Value::Object(line) = &mut line {
        line.extend(decoding(decoded.decoding()));
    }
    line
}

/// What an event says of its decoding: nothing for a request read whole; else
/// that it was lossy, the notes, every value of a repeated name, and the request
/// as it came (as text, bytes that are not UTF-8 shown as U+FFFD).
fn decoding(decoding: &Decoding) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    if !decoding.lossy() {
        return fields;
    }
    let raw = decoding.raw_request.as_ref().map(|raw| {
        json!({
            "query": String::from_utf8_lossy(&raw.query),
            "body": String::from_utf8_lossy(&raw.body),
            "content_type": raw.content_type,
        })
    });
    fields.insert("decoding_lossy".into(), Value::Bool(true));
    fields.insert("decoding_notes".into(), json!(decoding.notes));
    fields.insert("repeated_parameters".into(), json!(decoding.repeated));
    fields.insert("raw_request".into(), raw.unwrap_or(Value::Null));
    fields
}

/// A search result.
pub fn found(lead: &FoundLead) -> Value {
    let order_id = lead.order_id.as_deref().or(lead.deal_id.as_deref());
    let mut line = event(&lead.event, order_id);
    line["deal_id"] = json!(lead.deal_id);
    line
}

fn deal(deal: &Deal, scheme: Option<&Scheme>) -> Value {
    let details = &deal.details;
    let status_name = details.status.as_ref().and_then(|status| {
        scheme?
            .statuses
            .iter()
            .find(|entry| &entry.id == status)
            .map(|entry| entry.name.clone())
    });
    json!({
        "deal_id": deal.deal_id,
        "answered_order_id": deal.answered_order_id,
        "update_time": time(deal.update_time),
        "name": details.name,
        "status": details.status,
        "status_name": status_name,
        "price": details.price.map(|money| money.to_string()),
        "cost": details.cost.map(|money| money.to_string()),
        "manager_id": details.manager_id,
        "client_id": details.client_id,
        "fields": details.fields,
        "create_time": optional_time(details.create_time),
    })
}

/// Everything known about a lead: the lead, its deal, its order in the export,
/// what was filed under it (newest first) and the latest state of each call.
pub fn lead(view: &LeadView) -> Value {
    let stored = match codec::decode_lead(&view.lead) {
        Ok(lead) => lead,
        Err(error) => {
            tracing::error!(%error, sequence = view.lead.sequence, "a stored lead cannot be read");
            return json!({ "unreadable": true, "sequence": view.lead.sequence });
        }
    };
    let events: Vec<Value> = view
        .events
        .iter()
        .map(|event| self::event(event, None))
        .collect();
    let mut calls_seen = std::collections::HashSet::new();
    let calls: Vec<&Value> = events
        .iter()
        .filter(|event| event["kind"] == "call")
        .filter(|event| calls_seen.insert(event["call_id"].to_string()))
        .collect();
    let decoded = match codec::decode_body(view.lead.kind, &view.lead.body) {
        Ok(EventBody::Lead(lead)) => decoding(&lead.decoding),
        _ => serde_json::Map::new(),
    };
    let source = codec::source_from_proto(stored.source).map(|source| source.as_str());
    let create_time = stored
        .create_time
        .as_ref()
        .and_then(crate::proto::from_timestamp);
    let order = view.order.as_ref().map(|(order, default_status)| {
        json!({
            "fixed_time": optional_time(order.fixed_time),
            "export": ExportOrder::of(order, default_status),
        })
    });
    let mut lead = json!({
        "integration": stored.integration,
        "lead_id": stored.lead_id,
        "sequence": view.lead.sequence,
        "receive_time": time(view.lead.receive_time),
        "source": source,
        "visit": stored.visit,
        "title": stored.title,
        "text": stored.text,
        "name": stored.name,
        "phone": stored.phone,
        "email": stored.email,
        "page": stored.page,
        "fields": stored.fields,
        "data_json": stored.data_json,
        "create_time": optional_time(create_time),
        "manager_id": stored.manager_id,
        "extra": stored.extra,
        "phone_e164": stored.phone_e164,
        "email_normalized": stored.email_normalized,
        "person_id": (stored.person_id != 0).then_some(stored.person_id),
        "returning": stored.returning,
        "deal": deal(&view.deal, view.scheme.as_ref()),
        "order": order,
        "calls": calls,
        "events": events,
    });
    if let Value::Object(lead) = &mut lead {
        lead.extend(decoded);
    }
    lead
}

/// A person: its leads over time (oldest first), across channels, and what
/// links them.
pub fn person(person: &Person) -> Value {
    json!({
        "person_id": person.person_id,
        "integration": person.integration,
        "first_seen": time(person.first_seen),
        "last_seen": time(person.last_seen),
        "lead_count": person.lead_count,
        "phones": person.phones,
        "emails": person.emails,
        "aliases": person.aliases,
        "leads": person.leads.iter().map(|lead| json!({
            "lead_id": lead.lead_id,
            "sequence": lead.sequence,
            "time": time(lead.receive_time),
            "source": lead.source.as_str(),
            "title": lead.title,
            "phone_e164": lead.phone_e164,
            "email": lead.email,
        })).collect::<Vec<_>>(),
    })
}

pub fn consumer(consumer: &Consumer, connected: usize) -> Value {
    json!({
        "name": consumer.name,
        "acked_sequence": consumer.acked_sequence,
        "pending": consumer.pending,
        "ack_time": optional_time(consumer.ack_time),
        "create_time": time(consumer.create_time),
        "connected": connected,
    })
}

pub fn rejected(request: &RejectedRequest) -> Value {
    json!({
        "id": request.id,
        "time": time(request.time),
        "integration": request.integration,
        "source": request.source,
        "authenticated": request.authenticated,
        "path": request.path,
        "action": request.action,
        "reason": request.reason,
        "status": request.status,
        "query": String::from_utf8_lossy(&request.query),
        "body": String::from_utf8_lossy(&request.body),
    })
}
