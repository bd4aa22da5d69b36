//! Persons as the API shows them.

use crate::codec;
use crate::domain::{Person, PersonLead};
use crate::proto;

pub fn person(person: &Person) -> proto::Person {
    proto::Person {
        integration: person.integration.clone(),
        person_id: person.person_id,
        leads: person.leads.iter().map(person_lead).collect(),
        phones: person.phones.clone(),
        emails: person.emails.clone(),
        first_seen: Some(proto::timestamp(person.first_seen)),
        last_seen: Some(proto::timestamp(person.last_seen)),
        aliases: person.aliases.clone(),
        lead_count: person.lead_count,
    }
}

fn person_lead(lead: &PersonLead) -> proto::PersonLead {
    proto::PersonLead {
        lead_id: lead.lead_id.clone(),
        sequence: lead.sequence,
        receive_time: Some(proto::timestamp(lead.receive_time)),
        source: codec::source(lead.source) as i32,
        title: lead.title.clone(),
        phone_e164: lead.phone_e164.clone(),
        email_normalized: lead.email.clone(),
    }
}
