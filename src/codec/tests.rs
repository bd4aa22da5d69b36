//! The stored form is the proto's: what prost encodes for the same values, read back
//! unchanged; and one lead pinned byte for byte, so a change of encoding shows.

use std::collections::BTreeMap;

use prost::Message;
use time::macros::datetime;

use super::*;
use crate::domain::LeadSource;

fn extra() -> BTreeMap<String, String> {
    BTreeMap::from([("utm_source".to_owned(), "yandex".to_owned())])
}

fn lead() -> Lead {
    Lead {
        integration: "shop".to_owned(),
        lead_id: "4711".to_owned(),
        visit: "81234".to_owned(),
        title: "Callback request".to_owned(),
        text: "Call me <b>now</b>".to_owned(),
        name: "Роберт".to_owned(),
        phone: "+7 999 000-11-22".to_owned(),
        email: "r@example.com".to_owned(),
        page: "https://example.com/".to_owned(),
        fields: BTreeMap::from([("city".to_owned(), "Moscow".to_owned())]),
        data_json: r#"{"page":"https://example.com/","city":"Moscow"}"#.to_owned(),
        create_time: Some(datetime!(2026-01-02 03:04:05 UTC)),
        source: LeadSource::Calltracking,
        manager_id: "7".to_owned(),
        extra: extra(),
        decoding: Decoding::default(),
        phone_number: Some(crate::domain::PhoneNumber {
            e164: "+79990001122".to_owned(),
            valid: true,
            region: "RU".to_owned(),
            kind: crate::domain::PhoneKind::Mobile,
        }),
        email_normalized: "r@example.com".to_owned(),
    }
}

/// What a request read with losses carries.
fn lossy() -> Decoding {
    Decoding {
        raw_request: Some(crate::domain::KeptRequest {
            query: b"token=***&action=task&element_id=4711&text=a&text=Call+back&x=%FF".to_vec(),
            body: vec![],
            content_type: String::new(),
        }),
        repeated: vec![
            ("text".to_owned(), "a".to_owned()),
            ("text".to_owned(), "Call back".to_owned()),
        ],
        notes: vec![
            "parameter \"text\" sent more than once".to_owned(),
            "x: not UTF-8".to_owned(),
        ],
    }
}

fn message() -> DealMessage {
    DealMessage {
        integration: "shop".to_owned(),
        lead_id: "4711".to_owned(),
        title: "Duplicated lead".to_owned(),
        text: "The client wrote again".to_owned(),
        extra: extra(),
        resolved_lead_id: String::new(),
        decoding: Decoding::default(),
    }
}

fn task() -> Task {
    Task {
        integration: "shop".to_owned(),
        element_id: "4711".to_owned(),
        deadline: Some(datetime!(2026-01-03 10:00 UTC)),
        text: "Call back".to_owned(),
        extra: extra(),
        decoding: lossy(),
    }
}

fn call() -> Call {
    Call {
        integration: "shop".to_owned(),
        call_id: "c-1".to_owned(),
        callee: "74950000000".to_owned(),
        caller: "79990001122".to_owned(),
        date: Some(datetime!(2026-01-02 03:00 UTC)),
        visit: "81234".to_owned(),
        marker: "yandex_cpc".to_owned(),
        status: "ANSWER".to_owned(),
        order_id: "4711".to_owned(),
        duration: Some(95),
        file_url: "https://example.com/c-1.mp3".to_owned(),
        extra: extra(),
        decoding: Decoding::default(),
        callee_e164: "+74950000000".to_owned(),
        caller_e164: "+79990001122".to_owned(),
    }
}

fn unknown_action() -> UnknownAction {
    UnknownAction {
        integration: "shop".to_owned(),
        action: "versions".to_owned(),
        parameters: vec![("action".to_owned(), "versions".to_owned())],
        decoding: lossy(),
    }
}

fn bodies() -> [EventBody; 5] {
    [
        EventBody::Lead(lead()),
        EventBody::Message(message()),
        EventBody::Task(task()),
        EventBody::Call(call()),
        EventBody::UnknownAction(unknown_action()),
    ]
}

#[test]
fn every_kind_is_encoded_as_prost_encodes_its_message() {
    // A lead without the commit-time fields.
    let mut expected = lead_proto(&lead(), 0, datetime!(1970-01-01 0:00 UTC));
    expected.receive_time = None;
    assert_eq!(encode_lead(&lead()), expected.encode_to_vec());

    let message = message();
    let expected = proto::DealMessage {
        integration: message.integration.clone(),
        lead_id: message.lead_id.clone(),
        title: message.title.clone(),
        text: message.text.clone(),
        extra: message.extra.clone().into_iter().collect(),
        ..Default::default()
    };
    assert_eq!(
        encode_body(&EventBody::Message(message)),
        expected.encode_to_vec()
    );

    let task = task();
    let expected = proto::Task {
        integration: task.integration.clone(),
        element_id: task.element_id.clone(),
        deadline: task.deadline.map(proto::timestamp),
        text: task.text.clone(),
        extra: task.extra.clone().into_iter().collect(),
        decoding_lossy: true,
        raw_request: Some(proto::RawRequest {
            query: task.decoding.raw_request.clone().unwrap().query,
            ..Default::default()
        }),
        repeated_parameters: vec![
            proto::Parameter {
                name: "text".to_owned(),
                value: "a".to_owned(),
            },
            proto::Parameter {
                name: "text".to_owned(),
                value: "Call back".to_owned(),
            },
        ],
        decoding_notes: task.decoding.notes.clone(),
    };
    assert_eq!(
        encode_body(&EventBody::Task(task)),
        expected.encode_to_vec()
    );

    let call = call();
    let expected = proto::Call {
        integration: call.integration.clone(),
        call_id: call.call_id.clone(),
        callee: call.callee.clone(),
        caller: call.caller.clone(),
        date: call.date.map(proto::timestamp),
        visit: call.visit.clone(),
        marker: call.marker.clone(),
        status: call.status.clone(),
        order_id: call.order_id.clone(),
        duration: 95,
        file_url: call.file_url.clone(),
        extra: call.extra.clone().into_iter().collect(),
        callee_e164: call.callee_e164.clone(),
        caller_e164: call.caller_e164.clone(),
        ..Default::default()
    };
    assert_eq!(
        encode_body(&EventBody::Call(call)),
        expected.encode_to_vec()
    );
}

#[test]
fn every_kind_reads_back_as_it_was_stored() {
    for body in bodies() {
        let bytes = encode_body(&body);
        assert_eq!(decode_body(body.kind(), &bytes).unwrap(), body);
    }
    // Empty values are left out, and read back empty.
    let empty = EventBody::Message(DealMessage {
        integration: String::new(),
        lead_id: String::new(),
        title: String::new(),
        text: String::new(),
        extra: BTreeMap::new(),
        resolved_lead_id: String::new(),
        decoding: Decoding::default(),
    });
    assert!(encode_body(&empty).is_empty());
    assert_eq!(decode_body(EventKind::Message, &[]).unwrap(), empty);
}

#[test]
fn a_lead_is_stored_byte_for_byte_as_pinned() {
    let lead = Lead {
        integration: "default".to_owned(),
        lead_id: "42".to_owned(),
        visit: String::new(),
        title: String::new(),
        text: String::new(),
        name: "Ann".to_owned(),
        phone: "+7".to_owned(),
        email: String::new(),
        page: String::new(),
        fields: BTreeMap::new(),
        data_json: String::new(),
        create_time: Some(datetime!(1970-01-01 0:01 UTC)),
        source: LeadSource::LeadHunter,
        manager_id: String::new(),
        extra: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
        decoding: Decoding::default(),
        phone_number: None,
        email_normalized: String::new(),
    };
    let expected: &[u8] = &[
        0x0a, 7, b'd', b'e', b'f', b'a', b'u', b'l', b't', // 1: integration
        0x12, 2, b'4', b'2', // 2: lead_id
        0x32, 3, b'A', b'n', b'n', // 6: name
        0x3a, 2, b'+', b'7', // 7: phone
        0x62, 2, 0x08, 60, // 12: create_time { seconds: 60 }
        0x68, 1, // 13: source LEAD_HUNTER
        0x7a, 6, 0x0a, 1, b'k', 0x12, 1, b'v', // 15: extra { "k": "v" }
    ];
    assert_eq!(encode_lead(&lead), expected);
}

#[test]
fn a_message_names_the_lead_it_was_filed_under() {
    let bytes = encode_body(&EventBody::Message(message()));
    let filed = with_resolved_lead(&bytes, "4711");
    let EventBody::Message(read) = decode_body(EventKind::Message, &filed).unwrap() else {
        panic!("not a message");
    };
    assert_eq!(read.resolved_lead_id, "4711");
    assert_eq!(with_resolved_lead(&bytes, ""), bytes);
}

#[test]
fn a_stored_lead_is_framed_with_its_sequence_and_receive_time() {
    let receive_time = datetime!(2026-01-02 03:04:05.123456 UTC);
    let event = EncodedEvent {
        sequence: 99,
        receive_time,
        kind: EventKind::Lead,
        integration: "shop".into(),
        source: Some(LeadSource::Calltracking),
        body: encode_lead(&lead()).into(),
        trace_parent: None,
        person: Some(crate::domain::PersonLink {
            person_id: 7,
            returning: true,
            first_seen: datetime!(2025-12-31 00:00 UTC),
        }),
    };
    let mut sent = Vec::new();
    frame(&event).put_message(&mut sent);
    let decoded = proto::LeadEvent::decode(&sent[proto::MESSAGE_PREFIX..]).unwrap();
    assert_eq!(decoded.sequence, 99);
    assert_eq!(decoded.receive_time, Some(proto::timestamp(receive_time)));
    let Some(proto::lead_event::Event::Lead(sent_lead)) = decoded.event else {
        panic!("not a lead: {decoded:?}");
    };
    let expected = proto::Lead {
        person_id: 7,
        returning: true,
        person_first_seen: Some(proto::timestamp(datetime!(2025-12-31 00:00 UTC))),
        ..lead_proto(&lead(), 99, receive_time)
    };
    assert_eq!(*sent_lead, expected);
    assert_eq!(decode_lead(&event).unwrap(), *sent_lead);
}

#[test]
fn bytes_of_another_shape_are_an_error_not_a_panic() {
    let error = decode_body(EventKind::Lead, &[0x0a, 200, 1]).unwrap_err();
    assert!(error.to_string().contains("lead"), "{error}");
}
