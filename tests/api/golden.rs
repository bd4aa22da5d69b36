//! Stores written by earlier versions (checked in under `tests/fixtures/`, with
//! every kind of stored row) open, migrate, and read back exactly as they were
//! written: the stored form can only change through a migration that converts it.

use std::collections::HashMap;

use roistat_leads::proto::lead_event::Event;
use roistat_leads::proto::{
    GetDealRequest, GetLeadRequest, GetSchemeRequest, LeadEvent, LeadSource, StreamLeadsRequest,
};
use serde_json::Value;
use sqlx::Connection;

use crate::helpers::*;

backend_tests!(
    a_store_written_by_release_0003_reads_back_as_written,
    a_store_written_by_release_0007_reads_back_as_written,
    a_store_written_by_release_0009_keeps_its_persons,
);

/// Loads a fixture into the test's database, before the service first opens it.
async fn load_fixture(options: &Options, name: &str) {
    let url = &options.database.url;
    let (path, is_sqlite) = match url.starts_with("sqlite:") {
        true => (format!("tests/fixtures/{name}-sqlite.sql"), true),
        false => (format!("tests/fixtures/{name}-postgres.sql"), false),
    };
    let fixture = std::fs::read_to_string(&path).expect("the fixture");
    if is_sqlite {
        options
            .database
            .sqlite_conn()
            .execute_batch(&fixture)
            .unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(&fixture).execute(&mut conn).await.unwrap();
    }
}

fn lead_of(event: &LeadEvent) -> &roistat_leads::proto::Lead {
    match &event.event {
        Some(Event::Lead(lead)) => lead,
        other => panic!("not a lead: {other:?}"),
    }
}

async fn a_store_written_by_release_0003_reads_back_as_written(options: Options) {
    load_fixture(&options, "store-0003").await;
    let app = TestApp::spawn_with(options.clone()).await;
    let mut client = app.grpc().await;

    // Every event, in order, with what each kind carries.
    let events = app.stored_events().await;
    let sequences: Vec<u64> = events.iter().map(|event| event.sequence).collect();
    assert_eq!(sequences, (1..=12).collect::<Vec<_>>());
    let seed = lead_of(&events[0]);
    assert_eq!(
        (
            seed.lead_id.as_str(),
            seed.name.as_str(),
            seed.visit.as_str()
        ),
        ("6", "Роберт", "9")
    );
    assert_eq!(seed.source(), LeadSource::LeadHunter);
    assert_eq!(seed.phone, "+11230001122");
    assert_eq!(seed.page, "http://site.com/");
    assert_eq!(seed.fields["640163"], "test");
    assert_eq!(
        seed.data_json,
        r#"{"page":"http:\/\/site.com\/","640163":"test"}"#
    );
    assert_eq!(seed.create_time.unwrap().seconds, 1_435_482_774);
    assert_eq!(seed.extra["utm_source"], "google");
    assert_eq!(seed.text, "Data of the form: 11230001122\nPromo-code: 1674");
    let malformed = lead_of(&events[1]);
    assert_eq!(malformed.data_json, "{not json");
    assert_eq!(malformed.extra["created_date"], "yesterday");
    assert_eq!(malformed.source(), LeadSource::Calltracking);
    assert_eq!(malformed.create_time, None);
    let Some(Event::Message(message)) = &events[5].event else {
        panic!("{:?}", events[5]);
    };
    assert_eq!(
        (message.lead_id.as_str(), message.title.as_str()),
        ("6", "Duplicated lead")
    );
    assert_eq!(message.text, "Duplicated lead from Robert");
    assert_eq!(message.extra["extra_param"], "x");
    let Some(Event::Task(task)) = &events[6].event else {
        panic!("{:?}", events[6]);
    };
    assert_eq!(
        (task.element_id.as_str(), task.text.as_str()),
        ("9", "Call back")
    );
    assert_eq!(task.deadline.unwrap().seconds, 1_546_341_071);
    let Some(Event::Call(call)) = &events[7].event else {
        panic!("{:?}", events[7]);
    };
    assert_eq!(
        (call.call_id.as_str(), call.status.as_str(), call.duration),
        ("c-1", "ANSWER", 61)
    );
    assert_eq!(
        (call.caller.as_str(), call.order_id.as_str()),
        ("79990003344", "9")
    );
    assert_eq!(call.file_url, "https://example.com/c-1.mp3");
    let other = lead_of(&events[8]);
    assert_eq!(
        (other.integration.as_str(), other.visit.as_str()),
        ("shop-b", "77")
    );
    assert_eq!(other.source(), LeadSource::Jivosite);
    assert_eq!(events[8].receive_time, other.receive_time);

    // Converted once, at start: every event stored in the form it is sent, every
    // lead searchable, a lead's source filterable.
    let db = &options.database;
    let unconverted = "SELECT COUNT(*) FROM events WHERE body IS NULL OR payload <> ''";
    assert_eq!(db.query_int(unconverted).await, 0);
    let searchable = "SELECT COUNT(*) FROM leads \
         WHERE lead_id = '6' AND integration = 'default' \
         AND phone_digits = '1230001122' AND name_folded = 'роберт'";
    assert_eq!(db.query_int(searchable).await, 1);
    // Sequences and versions now come from one row, which carries both on: what is
    // numbered next comes after everything numbered before.
    let counters = "SELECT COUNT(*) FROM event_counter \
         WHERE last_sequence >= (SELECT MAX(sequence) FROM events) AND last_version >= \
         (SELECT MAX(v) FROM (SELECT MAX(version) AS v FROM deal_versions \
          UNION ALL SELECT MAX(version) FROM client_versions \
          UNION ALL SELECT MAX(order_version) FROM leads) AS versions) \
         AND last_version > 0";
    assert_eq!(db.query_int(counters).await, 1);
    let mut jivosite = app
        .stream(StreamLeadsRequest {
            sources: vec![LeadSource::Jivosite as i32],
            kinds: vec![roistat_leads::proto::EventKind::Lead as i32],
            ..Default::default()
        })
        .await;
    assert_eq!(next_event(&mut jivosite).await.sequence, 9);

    // Deals: details as reported, order ids as answered, and the crm-mode leads.
    let deal = |lead_id: &str| GetDealRequest {
        lead_id: lead_id.into(),
        ..Default::default()
    };
    let sofa = client.get_deal(deal("9")).await.unwrap().into_inner();
    assert_eq!(
        (sofa.deal_id.as_str(), sofa.order_id.as_str()),
        ("D-9", "9")
    );
    assert_eq!(sofa.name.as_deref(), Some("Sofa"));
    assert_eq!(
        (sofa.price.as_deref(), sofa.cost.as_deref()),
        (Some("120.34"), Some("100.34"))
    );
    assert_eq!(sofa.fields["delivery"], "Courier");
    assert_eq!(sofa.create_time.unwrap().seconds, 1_393_673_200);
    let waiting = client.get_deal(deal("20")).await.unwrap().into_inner();
    assert!(!waiting.order_id_answered);
    let answered = client.get_deal(deal("21")).await.unwrap().into_inner();
    assert!(answered.order_id_answered && answered.order_id == "D-21");
    let reported = client.get_deal(deal("22")).await.unwrap().into_inner();
    assert_eq!(
        (reported.deal_id.as_str(), reported.order_id_answered),
        ("D-22", false)
    );
    let lead = client
        .get_lead(GetLeadRequest {
            lead_id: "6".into(),
            integration: "shop-b".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lead.sequence, 9);

    // The scheme, clients and consumers.
    let scheme = client
        .get_scheme(GetSchemeRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scheme.statuses.len(), 2);
    assert_eq!(scheme.managers[0].email, "anna@example.com");
    let (status, clients) = app
        .webhook(&[("action", "export_clients"), ("date", "0")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(clients["clients"][0]["company"], "Acme");
    assert_eq!(clients["clients"][0]["birth_date"], "1980-02-03");
    let billing = client
        .get_consumer(roistat_leads::proto::GetConsumerRequest {
            consumer: "billing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(billing.acked_sequence, 3);

    // Roistat's export lists every order whose id was fixed, answered or (in crm
    // mode) reported: the migration brought the ones never reported into it.
    let (status, export) = app.webhook(&[("action", "export"), ("date", "0")]).await;
    assert_eq!(status, 200);
    let orders: HashMap<&str, &Value> = export["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|order| (order["id"].as_str().unwrap(), order))
        .collect();
    let mut ids: Vec<&str> = orders.keys().copied().collect();
    ids.sort_unstable();
    assert_eq!(ids, ["10", "6", "7", "8", "9", "D-21", "D-22"]);
    assert_eq!(orders["9"]["price"].to_string(), "120.34");
    assert_eq!(orders["9"]["name"], "Sofa");
    assert_eq!(orders["9"]["date_create"], "1393673200");
    assert_eq!(orders["10"]["status"], "1");
    let seed = orders["6"];
    assert_eq!(seed["name"], "Caught lead: 11230001122");
    assert_eq!(seed["date_create"], "1435482774", "the lead's created_date");
    assert_eq!(seed["roistat"], "9");
    assert_eq!(seed["status"], "1", "the scheme's first status");
    assert_eq!(seed["price"], Value::Null, "never reported");
    assert_eq!(seed["manager_id"], "12", "the lead's own manager");
    // They entered the export now, so that Roistat's next walk, which asks only for
    // what changed since it last looked, picks them up.
    let since = (time::OffsetDateTime::now_utc().unix_timestamp() - 60).to_string();
    let (_, recent) = app
        .webhook(&[("action", "export"), ("date", since.as_str())])
        .await;
    assert_eq!(recent["pagination"]["total_count"], 5, "{recent}");

    // And the store takes new writes after the old ones (13 is the marker message
    // `stored_events` sent).
    assert_eq!(app.lead("30").await.0, 200);
    let mut stream = app
        .stream(StreamLeadsRequest {
            after_sequence: 13,
            ..Default::default()
        })
        .await;
    let next = next_event(&mut stream).await;
    assert_eq!((lead_id(&next), next.sequence), (Some("30"), 14));
}

/// A store written by the release whose last migration is 0007, with every kind of
/// event it had (a lead, a lead with an unreadable `created_date`, a message, a
/// task, a call, an unknown action, a lead sent as JSON), opens unchanged and reads
/// back as written; what is new (a call's next state, a lead's history and latest
/// calls, the lead's own manager in the export) works on it.
async fn a_store_written_by_release_0007_reads_back_as_written(options: Options) {
    load_fixture(&options, "store-0007").await;
    let app = TestApp::spawn_with(options.clone()).await;
    let mut client = app.grpc().await;

    let events = app.stored_events().await;
    let sequences: Vec<u64> = events.iter().map(|event| event.sequence).collect();
    assert_eq!(sequences, (1..=7).collect::<Vec<_>>());
    let seed = lead_of(&events[0]);
    assert_eq!(
        (
            seed.lead_id.as_str(),
            seed.name.as_str(),
            seed.manager_id.as_str()
        ),
        ("6", "Роберт", "12")
    );
    assert_eq!(seed.text, "Line 1\nLine 2");
    assert_eq!(seed.phone, "+11230001122");
    assert_eq!(seed.create_time.unwrap().seconds, 1_435_482_774);
    assert!(!seed.decoding_lossy && seed.raw_request.is_none());
    let unreadable = lead_of(&events[1]);
    assert_eq!(unreadable.extra["created_date"], "yesterday");
    assert!(
        !unreadable.decoding_lossy,
        "a store is read as written: no loss is made up after the fact"
    );
    let Some(Event::Message(message)) = &events[2].event else {
        panic!("{:?}", events[2]);
    };
    assert_eq!(
        (message.lead_id.as_str(), message.resolved_lead_id.as_str()),
        ("6", "6")
    );
    let Some(Event::Task(task)) = &events[3].event else {
        panic!("{:?}", events[3]);
    };
    assert_eq!(task.deadline.unwrap().seconds, 1_546_341_071);
    let Some(Event::Call(call)) = &events[4].event else {
        panic!("{:?}", events[4]);
    };
    assert_eq!(
        (call.call_id.as_str(), call.status.as_str(), call.duration),
        ("c-1", "ANSWER", 61)
    );
    let Some(Event::UnknownAction(unknown)) = &events[5].event else {
        panic!("{:?}", events[5]);
    };
    assert_eq!(unknown.action, "versions");
    assert_eq!(unknown.parameters.len(), 3, "{unknown:?}");
    let json = lead_of(&events[6]);
    assert_eq!(
        (json.lead_id.as_str(), json.page.as_str()),
        ("8", "https://shop/")
    );
    assert_eq!(json.source(), LeadSource::Jivosite);

    // The call's next state is a new event; its lead shows it beside the history.
    let (status, _) = app
        .webhook(&[
            ("action", "call"),
            ("id", "c-1"),
            ("order_id", "6"),
            ("status", "ANSWER"),
            ("duration", "61"),
            ("file_url", "https://example.com/c-1-final.mp3"),
        ])
        .await;
    assert_eq!(status, 200);
    let lead = client
        .get_lead(GetLeadRequest {
            lead_id: "6".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lead.calls.len(), 1);
    assert_eq!(lead.calls[0].file_url, "https://example.com/c-1-final.mp3");
    assert_eq!(
        lead.history.len(),
        4,
        "the message, the task and both calls"
    );

    // The export: the lead's own manager, nulls for what was never reported.
    let (status, export) = app.webhook(&[("action", "export"), ("date", "0")]).await;
    assert_eq!(status, 200);
    let orders = export["orders"].as_array().unwrap();
    let seed = orders.iter().find(|order| order["id"] == "6").unwrap();
    assert_eq!(seed["manager_id"], "12");
    assert_eq!(
        (&seed["price"], &seed["cost"]),
        (&Value::Null, &Value::Null)
    );
    let message = app
        .webhook(&[("action", "message"), ("leadId", "6"), ("text", "again")])
        .await;
    assert_eq!(message.1["order_id"], "6");

    // Leads stored before persons get theirs in the background, while the
    // service serves: the calltracking lead's number is read from its title.
    let lead = |id: &str| GetLeadRequest {
        lead_id: id.into(),
        ..Default::default()
    };
    let call = loop {
        let call = client.get_lead(lead("7")).await.unwrap().into_inner();
        if call.person_id != 0 {
            break call;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(call.phone_e164, "+79990001122");
    assert!(!call.returning);
    let seed = client.get_lead(lead("6")).await.unwrap().into_inner();
    assert_ne!(seed.person_id, 0);
    assert_ne!(seed.person_id, call.person_id);
    assert_eq!(seed.email_normalized, "email@mail.com");
    // A new lead with the same number joins the stored one's person.
    let (status, _) = app
        .webhook(&[("action", "lead"), ("id", "9"), ("phone", "89990001122")])
        .await;
    assert_eq!(status, 200);
    let again = client.get_lead(lead("9")).await.unwrap().into_inner();
    assert_eq!(again.person_id, call.person_id);
    assert!(again.returning);
    // Its progress is a metric: at least these three leads matched (the recorder is
    // the process's, which other tests' services share), and it is done.
    loop {
        let scrape = app.scrape().await;
        if scrape.contains("roistat_leads_person_backfill_running 0") {
            let matched: u64 = scrape
                .lines()
                .find_map(|line| line.strip_prefix("roistat_leads_person_backfill_leads_total "))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or_else(|| panic!("no backfill counter: {scrape}"));
            assert!(matched >= 3, "{scrape}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A store written by the release whose last migration is 0009 (persons): leads
/// joined by a phone written three ways, an e-mail that merged two persons, a
/// toll-free number, a call's numbers in E.164. Its persons, aliases and events
/// read back as written, and a new lead joins the stored person.
async fn a_store_written_by_release_0009_keeps_its_persons(options: Options) {
    use roistat_leads::proto::GetPersonRequest;
    load_fixture(&options, "store-0009").await;
    let app = TestApp::spawn_with(options.clone()).await;
    let mut client = app.grpc().await;

    let events = app.stored_events().await;
    let sequences: Vec<u64> = events.iter().map(|event| event.sequence).collect();
    assert_eq!(sequences, (1..=7).collect::<Vec<_>>());
    let leads: Vec<_> = [0, 1, 2, 3].iter().map(|&i| lead_of(&events[i])).collect();
    let persons: Vec<u64> = leads.iter().map(|lead| lead.person_id).collect();
    assert_eq!(persons, [1, 1, 3, 1], "as of when each was stored");
    let returning: Vec<bool> = leads.iter().map(|lead| lead.returning).collect();
    assert_eq!(returning, [false, true, false, true]);
    assert_eq!(leads[1].phone_e164, "+79990001122", "read from the title");
    let Some(Event::PersonsMerged(merged)) = &events[4].event else {
        panic!("{:?}", events[4]);
    };
    assert_eq!(
        (
            merged.kept_person_id,
            merged.merged_person_id,
            merged.linked_by.as_str()
        ),
        (1, 3, "olga@example.com")
    );
    let toll_free = lead_of(&events[5]);
    assert_eq!(
        (
            toll_free.phone_e164.as_str(),
            toll_free.email_normalized.as_str()
        ),
        ("+78005553535", "")
    );
    let Some(Event::Call(call)) = &events[6].event else {
        panic!("{:?}", events[6]);
    };
    assert_eq!(call.caller_e164, "+79990001122");

    // The merged id resolves; the person has the four leads.
    let person = client
        .get_person(GetPersonRequest {
            person_id: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(person.person_id, 1);
    assert_eq!(person.aliases, [3]);
    let ids: Vec<&str> = person
        .leads
        .iter()
        .map(|lead| lead.lead_id.as_str())
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4"]);
    assert_eq!(person.emails, ["olga@example.com"]);

    // A new lead in yet another form joins it.
    let (status, _) = app
        .webhook(&[
            ("action", "lead"),
            ("id", "8"),
            ("phone", "8-999-000-11-22"),
        ])
        .await;
    assert_eq!(status, 200);
    let lead = client
        .get_lead(GetLeadRequest {
            lead_id: "8".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((lead.person_id, lead.returning), (1, true));
}
