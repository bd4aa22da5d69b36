//! Persons: phones in E.164, leads joined by phone and e-mail (transitively),
//! merges and splits as events, `returning` and first-time streams, and the
//! client export from persons.

use roistat_leads::proto::{
    EventKind, GetLeadRequest, GetPersonRequest, Lead, LeadEvent, ListPersonsRequest, PhoneKind,
    SplitPersonRequest, StreamLeadsRequest, lead_event::Event,
};
use tonic::Code;

use crate::helpers::*;

backend_tests!(
    phones_are_read_in_e164_whatever_their_form,
    leads_sharing_a_phone_or_an_email_are_one_person_transitively,
    a_merge_keeps_the_older_id_streams_an_event_and_the_merged_id_resolves,
    a_split_moves_the_leads_of_a_link_to_a_new_person_that_stays_apart,
    first_time_only_streams_skip_returning_persons,
    persons_are_exported_as_clients_unless_the_crm_knows_them,
    matching_can_be_turned_off_per_integration,
);

/// Sends a lead with a phone and an e-mail.
pub(crate) async fn lead(app: &TestApp, id: &str, phone: &str, email: &str) {
    let (status, _) = app
        .webhook(&[
            ("action", "lead"),
            ("id", id),
            ("title", "Site form"),
            ("name", "Olga"),
            ("phone", phone),
            ("email", email),
        ])
        .await;
    assert_eq!(status, 200, "lead {id}");
}

pub(crate) async fn get_lead(app: &TestApp, id: &str) -> Lead {
    app.grpc()
        .await
        .get_lead(GetLeadRequest {
            lead_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

pub(crate) async fn person(app: &TestApp, person_id: u64) -> roistat_leads::proto::Person {
    app.grpc()
        .await
        .get_person(GetPersonRequest {
            person_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

pub(crate) fn lead_ids(person: &roistat_leads::proto::Person) -> Vec<&str> {
    person
        .leads
        .iter()
        .map(|lead| lead.lead_id.as_str())
        .collect()
}

async fn phones_are_read_in_e164_whatever_their_form(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let forms = [
        ("1", "+7 (999) 000-11-22", "+79990001122"),
        ("2", "89990001122", "+79990001122"),
        ("3", "79990001122", "+79990001122"),
        ("4", "8 (800) 555-35-35", "+78005553535"),
        ("5", "+1 650 253 0000", "+16502530000"),
        ("6", "+44 20 7946 0958", "+442079460958"),
        ("7", "not a phone", ""),
    ];
    for (id, phone, _) in forms {
        lead(&app, id, phone, "").await;
    }
    for (id, phone, e164) in forms {
        let stored = get_lead(&app, id).await;
        assert_eq!(stored.phone_e164, e164, "{phone}");
        assert_eq!(stored.phone_valid, !e164.is_empty(), "{phone}");
    }
    let mobile = get_lead(&app, "1").await;
    assert_eq!(mobile.phone_region, "RU");
    assert_eq!(mobile.phone_kind(), PhoneKind::Mobile);
    assert_eq!(get_lead(&app, "4").await.phone_kind(), PhoneKind::TollFree);
    assert_eq!(get_lead(&app, "5").await.phone_region, "US");
    // Garbage keeps its raw text and no E.164 value.
    assert_eq!(get_lead(&app, "7").await.phone, "not a phone");

    // A calltracking lead's number is in its title.
    let (status, _) = app
        .webhook(&[
            ("action", "lead"),
            ("id", "8"),
            ("title", "Звонок от 79990001122"),
        ])
        .await;
    assert_eq!(status, 200);
    let call = get_lead(&app, "8").await;
    assert_eq!(call.phone_e164, "+79990001122");
    assert_eq!(
        call.person_id, mobile.person_id,
        "the same number is the same person"
    );

    // A call's numbers too.
    let (status, _) = app
        .webhook(&[
            ("action", "call"),
            ("id", "c-1"),
            ("caller", "8 999 000 11 22"),
            ("callee", "74950000000"),
        ])
        .await;
    assert_eq!(status, 200);
    let events = app.stored_events().await;
    let Some(Event::Call(call)) = events.last().and_then(|event| event.event.clone()) else {
        panic!("no call: {events:?}");
    };
    assert_eq!(
        (call.caller_e164.as_str(), call.callee_e164.as_str()),
        ("+79990001122", "+74950000000")
    );
}

async fn leads_sharing_a_phone_or_an_email_are_one_person_transitively(options: Options) {
    let app = TestApp::spawn_with(options).await;
    lead(&app, "form", "+7 (999) 000-11-22", "").await;
    lead(&app, "chat", "89990001122", "").await;
    lead(&app, "mail", "", "Olga@Example.com").await;
    lead(&app, "other", "+7 999 555-00-00", "").await;

    let form = get_lead(&app, "form").await;
    let chat = get_lead(&app, "chat").await;
    let mail = get_lead(&app, "mail").await;
    assert_ne!(form.person_id, 0);
    assert_eq!(chat.person_id, form.person_id, "joined by the phone");
    assert!(!form.returning);
    assert!(chat.returning);
    assert_eq!(chat.person_first_seen, form.person_first_seen);
    assert_ne!(
        mail.person_id, form.person_id,
        "nothing links the e-mail yet"
    );
    assert_eq!(mail.email_normalized, "olga@example.com");

    // A lead with the phone of one and the e-mail of the other joins them.
    lead(&app, "both", "+79990001122", "olga@example.COM").await;
    let both = get_lead(&app, "both").await;
    assert_eq!(both.person_id, form.person_id, "the older person is kept");
    assert!(both.returning);

    let person = person(&app, form.person_id).await;
    assert_eq!(lead_ids(&person), ["form", "chat", "mail", "both"]);
    assert_eq!(person.phones, ["+79990001122"]);
    assert_eq!(person.emails, ["olga@example.com"]);
    assert_eq!(person.lead_count, 4);
    assert_eq!(person.aliases, [mail.person_id]);
    // What links each lead is shown with it.
    assert_eq!(person.leads[2].email_normalized, "olga@example.com");
    assert_eq!(person.leads[2].phone_e164, "");

    // Found by any phone form, or by the e-mail.
    let mut client = app.grpc().await;
    for phone in ["8 (999) 000-11-22", "+79990001122"] {
        let found = client
            .get_person(GetPersonRequest {
                phone: phone.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.person_id, form.person_id, "{phone}");
    }
    let found = client
        .get_person(GetPersonRequest {
            email: " OLGA@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.person_id, form.person_id);

    // ListPersons: by last seen, newest first; the merged person is not listed.
    let listed = client
        .list_persons(ListPersonsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<u64> = listed
        .persons
        .iter()
        .map(|person| person.person_id)
        .collect();
    let other = get_lead(&app, "other").await.person_id;
    assert_eq!(ids, [form.person_id, other]);
    let page = client
        .list_persons(ListPersonsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.persons.len(), 1);
    let next = client
        .list_persons(ListPersonsRequest {
            page_size: 1,
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.persons[0].person_id, other);

    // Bad requests are clear.
    for (request, code) in [
        (GetPersonRequest::default(), Code::InvalidArgument),
        (
            GetPersonRequest {
                phone: "garbage".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            GetPersonRequest {
                person_id: 999_999,
                ..Default::default()
            },
            Code::NotFound,
        ),
    ] {
        let status = client.get_person(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
    }
}

async fn a_merge_keeps_the_older_id_streams_an_event_and_the_merged_id_resolves(options: Options) {
    let app = TestApp::spawn_with(options).await;
    lead(&app, "a", "+79990001122", "").await;
    lead(&app, "b", "", "olga@example.com").await;
    let (a, b) = (get_lead(&app, "a").await, get_lead(&app, "b").await);
    lead(&app, "c", "89990001122", "olga@example.com").await;

    let events = app.stored_events().await;
    let merged: Vec<_> = events
        .iter()
        .filter_map(|event| match &event.event {
            Some(Event::PersonsMerged(merged)) => Some((event.sequence, merged.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(merged.len(), 1, "{events:?}");
    let (sequence, merged) = &merged[0];
    assert_eq!(merged.kept_person_id, a.person_id);
    assert_eq!(merged.merged_person_id, b.person_id);
    assert_eq!(merged.lead_id, "c");
    assert_eq!(merged.linked_by, "olga@example.com");
    let c_sequence = get_lead(&app, "c").await.sequence;
    assert!(
        *sequence > c_sequence,
        "the merge follows the lead that made it"
    );

    // The merged id resolves to the kept person; its leads moved.
    let resolved = person(&app, b.person_id).await;
    assert_eq!(resolved.person_id, a.person_id);
    assert_eq!(lead_ids(&resolved), ["a", "b", "c"]);
    // A stream filtered to the kind carries it.
    let mut stream = app
        .stream(StreamLeadsRequest {
            kinds: vec![EventKind::PersonsMerged as i32],
            ..Default::default()
        })
        .await;
    let event: LeadEvent = next_event(&mut stream).await;
    assert!(matches!(event.event, Some(Event::PersonsMerged(_))));
}

async fn a_split_moves_the_leads_of_a_link_to_a_new_person_that_stays_apart(options: Options) {
    let app = TestApp::spawn_with(options).await;
    lead(&app, "a", "+79990001122", "shared@example.com").await;
    lead(&app, "b", "+79995550000", "shared@example.com").await;
    let a = get_lead(&app, "a").await;
    assert_eq!(get_lead(&app, "b").await.person_id, a.person_id);

    let mut client = app.grpc().await;
    let split = client
        .split_person(SplitPersonRequest {
            person_id: a.person_id,
            phone: "8 999 555 00 00".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (kept, new) = (split.person.unwrap(), split.new_person.unwrap());
    assert_eq!(lead_ids(&kept), ["a"]);
    assert_eq!(lead_ids(&new), ["b"]);
    assert_eq!(new.person_id, split.sequence);
    let events = app.stored_events().await;
    let Some(Event::PersonSplit(event)) = events.last().and_then(|event| event.event.clone())
    else {
        panic!("no split event: {events:?}");
    };
    assert_eq!(
        (
            event.person_id,
            event.new_person_id,
            event.unlinked.as_str()
        ),
        (a.person_id, new.person_id, "+79995550000")
    );
    assert_eq!(event.lead_ids, ["b"]);

    // A later lead with the split phone joins the new person, even with the
    // shared e-mail: the two stay apart.
    lead(&app, "c", "+79995550000", "shared@example.com").await;
    assert_eq!(get_lead(&app, "c").await.person_id, new.person_id);
    assert_eq!(lead_ids(&person(&app, a.person_id).await), ["a"]);

    // A link no lead (or every lead) carries cannot be cut.
    for phone in ["+79991112233", "+79990001122"] {
        let status = client
            .split_person(SplitPersonRequest {
                person_id: a.person_id,
                phone: phone.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{phone}: {status:?}");
    }

    // The e-mail is now carried by both: it stands for the person of the newest
    // lead that carries it.
    lead(&app, "d", "+79990001122", "shared@example.com").await;
    assert_eq!(get_lead(&app, "d").await.person_id, a.person_id);
    lead(&app, "e", "", "Shared@Example.com").await;
    assert_eq!(get_lead(&app, "e").await.person_id, a.person_id);
    lead(&app, "f", "+79995550000", "").await;
    lead(&app, "g", "", "shared@example.com").await;
    assert_eq!(get_lead(&app, "g").await.person_id, a.person_id);
    assert_eq!(
        lead_ids(&person(&app, a.person_id).await),
        ["a", "d", "e", "g"]
    );
    assert_eq!(
        lead_ids(&person(&app, new.person_id).await),
        ["b", "c", "f"]
    );
}

async fn first_time_only_streams_skip_returning_persons(options: Options) {
    let app = TestApp::spawn_with(options).await;
    lead(&app, "first", "+79990001122", "").await;
    lead(&app, "again", "89990001122", "").await;
    lead(&app, "new", "+79995550000", "").await;
    let mut stream = app
        .stream(StreamLeadsRequest {
            first_time_only: true,
            kinds: vec![EventKind::Lead as i32],
            ..Default::default()
        })
        .await;
    let mut seen = vec![];
    for _ in 0..2 {
        let event = next_event(&mut stream).await;
        let Some(Event::Lead(lead)) = event.event else {
            panic!("{event:?}");
        };
        assert!(!lead.returning);
        seen.push(lead.lead_id);
    }
    assert_eq!(seen, ["first", "new"]);
    // Live too: a returning lead is skipped, a first-time one comes.
    lead(&app, "again-live", "+7 999 555 00 00", "").await;
    lead(&app, "new-live", "+79993334455", "").await;
    let event = next_event(&mut stream).await;
    assert_eq!(crate::helpers::lead_id(&event), Some("new-live"));
}

async fn persons_are_exported_as_clients_unless_the_crm_knows_them(options: Options) {
    let app = TestApp::spawn_with(options).await;
    lead(&app, "1", "8 (999) 000-11-22", "olga@example.com").await;
    lead(&app, "2", "+79995550000", "").await;
    let (status, export) = app
        .webhook(&[("action", "export_clients"), ("date", "0")])
        .await;
    assert_eq!(status, 200);
    let clients = export["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 2, "{export}");
    let first = get_lead(&app, "1").await.person_id;
    assert_eq!(clients[0]["id"], format!("person-{first}"));
    assert_eq!(clients[0]["phone"], "+79990001122");
    assert_eq!(clients[0]["email"], "olga@example.com");
    assert_eq!(clients[0]["name"], "Olga");

    // Once the CRM reports a client for one of its deals, that person is the
    // CRM's client: it is no longer listed as a person.
    let mut client = app.grpc().await;
    client
        .report_deal(roistat_leads::proto::ReportDealRequest {
            lead_id: "1".into(),
            client_id: Some("crm-7".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, export) = app
        .webhook(&[("action", "export_clients"), ("date", "0")])
        .await;
    let ids: Vec<&str> = export["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|client| client["id"].as_str().unwrap())
        .collect();
    let second = get_lead(&app, "2").await.person_id;
    assert_eq!(ids, [format!("person-{second}")]);
}

async fn matching_can_be_turned_off_per_integration(options: Options) {
    let app = TestApp::spawn_with(options.env("ROISTAT_LEADS_PERSON_MATCHING", "false")).await;
    lead(&app, "1", "+79990001122", "").await;
    lead(&app, "2", "+79990001122", "").await;
    let stored = get_lead(&app, "2").await;
    assert_eq!(stored.person_id, 0);
    assert!(!stored.returning);
    assert_eq!(stored.phone_e164, "+79990001122", "the phone is still read");
    let listed = app
        .grpc()
        .await
        .list_persons(ListPersonsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.persons.is_empty());
}
