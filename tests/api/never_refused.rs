//! Roistat resends a refused request forever, and its data never arrives: after the
//! token check, every request that can be a request at all is answered `ok` and
//! kept. What cannot be read is kept as sent and said so; where a byte is lost, the
//! request's bytes are kept. Each case goes through the real HTTP and gRPC faces.

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use roistat_leads::proto::lead_event::Event;
use roistat_leads::proto::{
    Call, GetLeadRequest, Lead, LeadEvent, ListLeadsRequest, Parameter, RawRequest,
    ReportDealRequest, Scheme, Task, UnknownAction, scheme,
};
use serde_json::{Value, json};

use crate::console::console_api;
use crate::helpers::*;

backend_tests!(
    times_and_numbers_in_every_form_are_read_and_the_rest_kept_as_sent,
    bytes_that_are_not_utf8_are_replaced_and_the_request_kept_byte_for_byte,
    every_value_of_a_repeated_name_is_kept,
    what_its_action_cannot_read_is_kept_and_only_a_nameless_request_is_refused,
    a_call_or_task_that_changes_is_a_new_event_and_get_lead_shows_the_latest,
    a_message_is_answered_with_the_order_id_of_its_lead,
    the_export_says_null_for_what_is_not_known,
    an_integration_without_a_status_to_export_is_measured_and_shown,
    any_bytes_after_the_token_are_kept_or_refused_for_naming_nothing,
    the_token_is_masked_in_every_carrier,
);

/// The events of one kind, as `pick` finds them.
fn of_kind<'a, T>(events: &'a [LeadEvent], pick: fn(&'a Event) -> Option<&'a T>) -> Vec<&'a T> {
    events
        .iter()
        .filter_map(|event| event.event.as_ref().and_then(pick))
        .collect()
}

fn leads(events: &[LeadEvent]) -> Vec<&Lead> {
    of_kind(events, |event| match event {
        Event::Lead(lead) => Some(lead),
        _ => None,
    })
}

fn calls(events: &[LeadEvent]) -> Vec<&Call> {
    of_kind(events, |event| match event {
        Event::Call(call) => Some(call),
        _ => None,
    })
}

fn tasks(events: &[LeadEvent]) -> Vec<&Task> {
    of_kind(events, |event| match event {
        Event::Task(task) => Some(task),
        _ => None,
    })
}

fn unknown_actions(events: &[LeadEvent]) -> Vec<&UnknownAction> {
    of_kind(events, |event| match event {
        Event::UnknownAction(unknown) => Some(unknown),
        _ => None,
    })
}

fn parameter(name: &str, value: &str) -> Parameter {
    Parameter {
        name: name.into(),
        value: value.into(),
    }
}

async fn get_lead(app: &TestApp, lead_id: &str) -> Lead {
    app.grpc()
        .await
        .get_lead(GetLeadRequest {
            lead_id: lead_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn times_and_numbers_in_every_form_are_read_and_the_rest_kept_as_sent(options: Options) {
    let app = TestApp::spawn_with(options).await;
    // The forms Roistat's own API and the public receivers write (protocol.md).
    let answers = [
        app.webhook(&[
            ("action", "call"),
            ("id", "c-1"),
            ("date", "2016-06-19T00:32:12+0000"),
            ("duration", "42.0"),
        ])
        .await,
        app.webhook(&[
            ("action", "call"),
            ("id", "c-2"),
            ("date", "2016-06-19T03:32:12+03:00"),
            ("duration", " 42 "),
        ])
        .await,
        app.webhook(&[
            ("action", "task"),
            ("element_id", "7"),
            ("deadline", "2019-01-01T11:11:11.000Z"),
        ])
        .await,
        app.webhook(&[
            ("action", "lead"),
            ("id", "1"),
            ("created_date", "1546341071"),
        ])
        .await,
        // Unreadable: kept as sent in extra, and said so.
        app.webhook(&[
            ("action", "call"),
            ("id", "c-3"),
            ("date", "soon"),
            ("duration", "long"),
        ])
        .await,
        app.webhook(&[
            ("action", "task"),
            ("element_id", "7"),
            ("deadline", "tomorrow"),
        ])
        .await,
    ];
    for (status, body) in &answers {
        assert_eq!((*status, &body["status"]), (200, &json!("ok")), "{body}");
    }

    let events = app.stored_events().await;
    let calls = calls(&events);
    let tasks = tasks(&events);
    assert_eq!((calls.len(), tasks.len()), (3, 2), "{events:?}");
    for call in &calls[..2] {
        assert_eq!(call.date.unwrap().seconds, 1_466_296_332, "{call:?}");
        assert_eq!(call.duration, 42);
        assert!(!call.decoding_lossy && call.extra.is_empty(), "{call:?}");
    }
    assert_eq!(tasks[0].deadline.unwrap().seconds, 1_546_341_071);
    assert!(!tasks[0].decoding_lossy);
    let lead = get_lead(&app, "1").await;
    assert_eq!(lead.create_time.unwrap().seconds, 1_546_341_071);

    let unreadable = calls[2];
    assert_eq!((unreadable.date, unreadable.duration), (None, 0));
    assert_eq!(unreadable.extra["date"], "soon");
    assert_eq!(unreadable.extra["duration"], "long");
    assert!(unreadable.decoding_lossy);
    assert_eq!(unreadable.decoding_notes.len(), 2, "{unreadable:?}");
    assert!(unreadable.decoding_notes[0].contains("date"));
    let raw = unreadable.raw_request.as_ref().unwrap();
    assert!(
        raw.query
            .ends_with(b"action=call&id=c-3&date=soon&duration=long")
    );
    assert_eq!(tasks[1].extra["deadline"], "tomorrow");
    assert!(tasks[1].decoding_lossy);
}

async fn bytes_that_are_not_utf8_are_replaced_and_the_request_kept_byte_for_byte(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let token = token();
    // One Cyrillic letter cut in half ("Привет" losing the last byte of "т"),
    // the token twice (query and body), once percent-encoded.
    let query = format!(
        "user={LOGIN}&token={token}&action=lead&id=1&name=%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1"
    );
    let (status, body) = app.get_raw(&format!("/webhook?{query}")).await;
    let form_body = format!("id=2&text=caf%E9&to%6Ben={token}").into_bytes();
    let form = app
        .http
        .post(format!(
            "{}/webhook?action=lead&user={LOGIN}",
            app.http_base
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body.clone())
        .send()
        .await
        .unwrap();
    let json_body = [
        b"{\"id\":\"3\",\"token\" : \"".as_slice(),
        token.as_bytes(),
        b"\",\"name\":\"\xff\xfe\"}",
    ]
    .concat();
    let json = app
        .http
        .post(format!("{}/webhook?action=lead", app.http_base))
        .header("content-type", "application/json; charset=utf-8")
        .body(json_body.clone())
        .send()
        .await
        .unwrap();

    assert_eq!(
        (status, body),
        (200, json!({"status": "ok", "order_id": "1"}))
    );
    assert_eq!(form.status(), 200);
    assert_eq!(json.status(), 200);

    let events = app.stored_events().await;
    let stored = leads(&events);
    assert_eq!(stored.len(), 3, "{events:?}");
    let masked = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .replace(&token, "***")
            .into_bytes()
    };
    let expected = [
        RawRequest {
            query: masked(query.as_bytes()),
            body: vec![],
            content_type: String::new(),
        },
        RawRequest {
            query: format!("action=lead&user={LOGIN}").into_bytes(),
            body: masked(&form_body),
            content_type: "application/x-www-form-urlencoded".into(),
        },
        RawRequest {
            query: b"action=lead".to_vec(),
            body: [
                b"{\"id\":\"3\",\"token\" : \"***\",\"name\":\"".as_slice(),
                b"\xff\xfe\"}",
            ]
            .concat(),
            content_type: "application/json; charset=utf-8".into(),
        },
    ];
    assert_eq!(stored[0].name, "Приве\u{fffd}");
    assert_eq!(stored[1].text, "caf\u{fffd}");
    assert_eq!(stored[2].name, "\u{fffd}\u{fffd}");
    for (lead, expected) in stored.iter().zip(&expected) {
        assert!(lead.decoding_lossy, "{lead:?}");
        assert_eq!(lead.raw_request.as_ref(), Some(expected), "byte for byte");
        let kept = [&expected.query[..], &expected.body[..]].concat();
        assert!(
            !kept
                .windows(token.len())
                .any(|window| window == token.as_bytes()),
            "the token is masked wherever it appears"
        );
        assert!(lead.decoding_notes[0].contains("UTF-8"), "{lead:?}");
    }

    // GetLead and ListLeads say the same; the console shows it.
    let got = get_lead(&app, "1").await;
    assert_eq!(got.raw_request.as_ref(), Some(&expected[0]));
    assert!(got.decoding_lossy);
    let listed = app
        .grpc()
        .await
        .list_leads(ListLeadsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let listed_raw: Vec<_> = listed
        .leads
        .iter()
        .map(|lead| lead.raw_request.clone())
        .collect();
    assert_eq!(listed_raw, expected.clone().map(Some));
    let shown = console_api(&app, "/api/lead?integration=default&lead_id=2").await;
    assert_eq!(shown["decoding_lossy"], true);
    assert_eq!(
        shown["raw_request"]["body"],
        String::from_utf8_lossy(&expected[1].body).as_ref()
    );
}

async fn every_value_of_a_repeated_name_is_kept(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let token = token();
    // The same name twice in the query, and once more in the body.
    let url = format!(
        "{}/webhook?user={LOGIN}&token={token}&action=lead&id=5&name=Olga&name=Ольга",
        app.http_base
    );
    let answer = app
        .http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=O.&utm_source=a&utm_source=b")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    let lead = get_lead(&app, "5").await;
    assert_eq!(lead.name, "O.", "the body's, the last, for old readers");
    assert_eq!(lead.extra["utm_source"], "b");
    assert_eq!(
        lead.repeated_parameters,
        vec![
            parameter("name", "Olga"),
            parameter("name", "Ольга"),
            parameter("name", "O."),
            parameter("utm_source", "a"),
            parameter("utm_source", "b"),
        ]
    );
    assert!(lead.decoding_lossy);
    assert_eq!(lead.decoding_notes.len(), 2, "{:?}", lead.decoding_notes);
}

async fn what_its_action_cannot_read_is_kept_and_only_a_nameless_request_is_refused(
    options: Options,
) {
    let app = TestApp::spawn_with(options).await;
    let token = token();
    let url = format!("{}/webhook?user={LOGIN}&token={token}", app.http_base);
    let long_id = "9".repeat(300);
    let kept = [
        vec![("action", "lead")],
        vec![("action", "lead"), ("id", "   ")],
        vec![("action", "lead"), ("id", &long_id)],
        vec![("action", "message"), ("text", "hi")],
        vec![("action", "task"), ("text", "no element")],
        vec![("action", "call"), ("caller", "1")],
    ];
    for params in &kept {
        let answer = app.webhook(params).await;
        assert_eq!(answer, (200, json!({"status": "ok"})), "{params:?}");
    }
    // Bodies that cannot be read: the query is, and the body is kept as sent.
    let post = |content_type: &str, body: Vec<u8>, id: &str| {
        app.http
            .post(format!("{url}&action=lead&id={id}"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let deep = "[".repeat(5000) + &"]".repeat(5000);
    let bodies = [
        ("application/json", b"[1,2]".to_vec(), "20"),
        ("application/json", b"{".to_vec(), "21"),
        ("application/xml", b"<lead/>".to_vec(), "22"),
        (
            "application/json",
            format!(r#"{{"data":{deep}}}"#).into_bytes(),
            "23",
        ),
        (
            "application/x-www-form-urlencoded",
            (0..300)
                .map(|n| format!("p{n}=v"))
                .collect::<Vec<_>>()
                .join("&")
                .into_bytes(),
            "24",
        ),
        (
            "application/x-www-form-urlencoded",
            format!("text={}", "x".repeat(65 * 1024 + 1)).into_bytes(),
            "25",
        ),
    ];
    for (content_type, body, id) in &bodies {
        let answer = post(content_type, body.clone(), id).await.unwrap();
        assert_eq!(answer.status(), 200, "{content_type} {id}");
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(answer["order_id"], *id);
    }
    // Only a request that names no action and has neither id nor leadId.
    let (nameless, error) = app.webhook(&[("title", "x")]).await;

    assert_eq!(nameless, 400);
    assert_eq!(error["status"], "error");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("missing parameter: action")
    );
    let events = app.stored_events().await;
    let unknown = unknown_actions(&events);
    let actions: Vec<&str> = unknown.iter().map(|u| u.action.as_str()).collect();
    assert_eq!(
        actions,
        ["lead", "lead", "lead", "message", "task", "call"],
        "{events:?}"
    );
    for unknown in &unknown {
        assert!(unknown.decoding_lossy, "{unknown:?}");
        assert!(
            unknown.decoding_notes[0].contains("kept as an unknown action"),
            "{unknown:?}"
        );
        assert!(!unknown.parameters.iter().any(|p| p.name == "token"));
    }
    assert!(unknown[2].parameters.contains(&parameter("id", &long_id)));
    let kept_leads = leads(&events);
    assert_eq!(kept_leads.len(), bodies.len());
    for (lead, (content_type, body, _)) in kept_leads.iter().zip(&bodies) {
        let raw = lead.raw_request.as_ref().expect("kept as sent");
        assert_eq!(raw.body, *body, "{content_type}");
        assert_eq!(raw.content_type, *content_type);
        assert!(lead.decoding_lossy);
    }
    let many = kept_leads[4];
    // user, token, action and id, then the first 252 of the body.
    assert_eq!(many.extra.len(), 256 - 4, "the first 256 names are read");
    let cut = kept_leads[5];
    assert_eq!(
        cut.text.len(),
        64 * 1024,
        "a value past 64 KiB is cut, and kept whole"
    );
}

async fn a_call_or_task_that_changes_is_a_new_event_and_get_lead_shows_the_latest(
    options: Options,
) {
    let app = TestApp::spawn_with(options).await;
    assert_eq!(app.lead("6").await.0, 200);
    let ringing = [
        ("action", "call"),
        ("id", "c-1"),
        ("order_id", "6"),
        ("status", "ACTIVE"),
    ];
    let answered = [
        ("action", "call"),
        ("id", "c-1"),
        ("order_id", "6"),
        ("status", "ANSWER"),
        ("duration", "61"),
        ("file_url", "https://example.com/c-1.mp3"),
    ];
    let other = [
        ("action", "call"),
        ("id", "c-2"),
        ("order_id", "6"),
        ("status", "BUSY"),
    ];
    let task = [
        ("action", "task"),
        ("element_id", "6"),
        ("text", "Call back"),
    ];
    let changed_task = [
        ("action", "task"),
        ("element_id", "6"),
        ("text", "Call back at 5"),
    ];

    let mut answers = vec![];
    for request in [
        &ringing[..],
        &ringing,
        &answered,
        &answered,
        &other,
        &task,
        &task,
        &changed_task,
    ] {
        answers.push(app.webhook(request).await);
    }
    for (status, body) in &answers {
        assert_eq!((*status, &body["status"]), (200, &json!("ok")));
    }
    // A retry gets the first copy's id; a change, a new one.
    assert_eq!(answers[0].1["call_id"], answers[1].1["call_id"]);
    assert_ne!(answers[0].1["call_id"], answers[2].1["call_id"]);
    assert_eq!(answers[2].1["call_id"], answers[3].1["call_id"]);
    assert_eq!(answers[5].1["task_id"], answers[6].1["task_id"]);
    assert_ne!(answers[5].1["task_id"], answers[7].1["task_id"]);

    let events = app.stored_events().await;
    let statuses: Vec<(&str, &str)> = calls(&events)
        .iter()
        .map(|call| (call.call_id.as_str(), call.status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [("c-1", "ACTIVE"), ("c-1", "ANSWER"), ("c-2", "BUSY")]
    );
    assert_eq!(tasks(&events).len(), 2);

    // GetLead: the latest state of each call, next to the history.
    let lead = get_lead(&app, "6").await;
    let latest: Vec<(&str, &str, u64)> = lead
        .calls
        .iter()
        .map(|call| (call.call_id.as_str(), call.status.as_str(), call.duration))
        .collect();
    assert_eq!(latest, [("c-2", "BUSY", 0), ("c-1", "ANSWER", 61)]);
    assert_eq!(lead.calls[1].file_url, "https://example.com/c-1.mp3");
    let history: Vec<u64> = lead.history.iter().map(|event| event.sequence).collect();
    let mut expected: Vec<u64> = events
        .iter()
        .filter(|event| matches!(event.event, Some(Event::Call(_) | Event::Task(_))))
        .map(|event| event.sequence)
        .collect();
    expected.reverse();
    assert_eq!(history, expected, "newest first");
    // The lists and the stream carry no history.
    let listed = app
        .grpc()
        .await
        .list_leads(ListLeadsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.leads[0].history.is_empty() && listed.leads[0].calls.is_empty());

    // The console: the latest call states beside the history.
    let shown = console_api(&app, "/api/lead?integration=default&lead_id=6").await;
    let shown_calls: Vec<(&str, &str)> = shown["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|call| {
            (
                call["call_id"].as_str().unwrap(),
                call["file_url"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown_calls,
        [("c-2", ""), ("c-1", "https://example.com/c-1.mp3")]
    );
    assert_eq!(shown["events"].as_array().unwrap().len(), 5);
}

async fn a_message_is_answered_with_the_order_id_of_its_lead(options: Options) {
    let app = TestApp::spawn_with(
        options
            .arg("--order-id")
            .arg("crm")
            .env("ROISTAT_LEADS_DEAL_WAIT_MS", "20000"),
    )
    .await;
    let mut client = app.grpc().await;
    let webhook = tokio::spawn(app.lead_request("7"));
    // The CRM reports its deal while the webhook waits.
    loop {
        let report = client
            .report_deal(ReportDealRequest {
                lead_id: "7".into(),
                deal_id: "D-7".into(),
                ..Default::default()
            })
            .await;
        if report.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(webhook.await.unwrap().1["order_id"], "D-7");

    let by_lead_id = app
        .webhook(&[("action", "message"), ("leadId", "7"), ("text", "again")])
        .await;
    let by_order_id = app
        .webhook(&[("action", "message"), ("leadId", "D-7"), ("text", "again!")])
        .await;
    let unknown = app
        .webhook(&[("action", "message"), ("leadId", "404"), ("text", "who?")])
        .await;

    assert_eq!(
        by_lead_id,
        (200, json!({"status": "ok", "order_id": "D-7"}))
    );
    assert_eq!(
        by_order_id,
        (200, json!({"status": "ok", "order_id": "D-7"}))
    );
    assert_eq!(unknown, (200, json!({"status": "ok", "order_id": "404"})));
}

async fn the_export_says_null_for_what_is_not_known(options: Options) {
    let app = TestApp::spawn_with(options.args(["--default-status", "new"])).await;
    let mut client = app.grpc().await;
    // A lead with Roistat's manager and no visit; one whose deal reports its own.
    let (status, _) = app
        .webhook(&[("action", "lead"), ("id", "1"), ("manager_id", "12")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.lead("2").await.0, 200);
    client
        .report_deal(ReportDealRequest {
            lead_id: "2".into(),
            deal_id: "D-2".into(),
            manager_id: Some("7".into()),
            price: Some("10.50".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    let (status, export) = app.webhook(&[("action", "export"), ("date", "0")]).await;
    assert_eq!(status, 200);
    let orders = export["orders"].as_array().unwrap();
    let order = |id: &str| orders.iter().find(|order| order["id"] == id).unwrap();
    let first = order("1");
    for field in ["price", "cost", "roistat", "client_id"] {
        assert_eq!(first[field], Value::Null, "{field}: {first}");
    }
    assert_eq!(first["manager_id"], "12", "the lead's own manager");
    assert_eq!(first["status"], "new");
    let second = order("2");
    assert_eq!(second["manager_id"], "7", "the CRM's manager first");
    assert_eq!(second["price"].to_string(), "10.5");
    assert_eq!(second["cost"], Value::Null);
}

async fn an_integration_without_a_status_to_export_is_measured_and_shown(options: Options) {
    let app = TestApp::spawn_with(options.in_a_process()).await;
    let missing = r#"roistat_leads_scheme_missing{integration="default"} 1"#;
    let present = r#"roistat_leads_scheme_missing{integration="default"} 0"#;
    within("the metric to say the status is missing", async {
        while !app.scrape().await.contains(missing) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    app.wait_for_logs("export to Roistat with an empty status", 1)
        .await;
    let overview = console_api(&app, "/api/overview").await;
    assert_eq!(overview["scheme_missing"], json!(["default"]));

    app.grpc()
        .await
        .update_scheme(Scheme {
            statuses: vec![scheme::Status {
                id: "1".into(),
                name: "New".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();

    assert!(app.scrape().await.contains(present));
    let overview = console_api(&app, "/api/overview").await;
    assert_eq!(overview["scheme_missing"], json!([]));
    let (_, export) = app.webhook(&[("action", "export"), ("date", "0")]).await;
    assert_eq!(export["statuses"][0]["id"], "1");

    // check-config says it before the service ever starts.
    let checked = check_config(&["--roistat-token", &"a".repeat(32)], &[]).await;
    let out = String::from_utf8_lossy(&checked.stdout);
    assert!(out.contains("# no default_status"), "{out}");
    let configured = check_config(
        &[
            "--roistat-token",
            &"a".repeat(32),
            "--default-status",
            "new",
        ],
        &[],
    )
    .await;
    assert!(!String::from_utf8_lossy(&configured.stdout).contains("# no default_status"));
}

/// Any bytes after the token decode to an event, or to the one refusal of a
/// request that names no action, no id and no leadId: never another 4xx, never a
/// 5xx. Sampled by proptest (no shrinking: each case is a request to the server).
async fn any_bytes_after_the_token_are_kept_or_refused_for_naming_nothing(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let url = format!("{}/webhook?user={LOGIN}&token={}", app.http_base, token());
    let interesting = proptest::collection::vec(
        proptest::prop_oneof![
            proptest::sample::select(vec![
                &b"action="[..],
                b"action=lead",
                b"action=call",
                b"action=task",
                b"action=message",
                b"id=",
                b"leadId=",
                b"element_id=",
                b"&",
                b"=",
                b"%",
                b"%FF",
                b"%D0",
                b"+",
                b"date=2019-01-01T11:11:11+03:00",
                b"duration=4.5",
                b"\"",
                b"{",
                b"}",
                b"\xff",
            ])
            .prop_map(<[u8]>::to_vec),
            proptest::collection::vec(proptest::num::u8::ANY, 0..8),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat());
    let content_types = [
        "application/x-www-form-urlencoded",
        "application/json",
        "text/plain",
        "application/octet-stream",
    ];
    let mut runner = TestRunner::deterministic();
    for case in 0..120 {
        let body = interesting.new_tree(&mut runner).unwrap().current();
        let content_type = content_types[case % content_types.len()];
        let answer = app
            .http
            .post(&url)
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let json: Value = answer.json().await.unwrap();
        match status {
            200 => assert_eq!(json["status"], "ok", "{body:?}"),
            400 => assert!(
                json["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("missing parameter: action"),
                "{content_type} {body:?}: {json}"
            ),
            other => panic!("{other} for {content_type} {body:?}: {json}"),
        }
    }
}

/// The kept copy of a request holds no token, whatever carried it: the query, a form
/// field with an encoded name, a JSON member with an escaped name, a body no parser
/// reads; in an event's raw request and in the refused-request log alike.
async fn the_token_is_masked_in_every_carrier(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let token = token();
    let upper = token.to_uppercase();
    let post = |query: String, content_type: &'static str, body: String| {
        app.http
            .post(format!("{}/webhook?{query}", app.http_base))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let carriers = [
        (
            format!("action=lead&id=1&token={token}&name=%FF"),
            "application/x-www-form-urlencoded",
            format!("note={upper}"),
        ),
        (
            "action=lead&id=2&name=%FF".to_owned(),
            "application/x-www-form-urlencoded",
            format!("user={LOGIN}&to%6Ben={token}"),
        ),
        (
            "action=lead&id=3".to_owned(),
            "application/json",
            format!(r#"{{"to\u006ben":"{token}","name":"a","name":"b"}}"#),
        ),
        (
            format!("action=lead&id=4&token={token}"),
            "application/xml",
            format!("<lead><token>{token}</token></lead>"),
        ),
        // Refused after the token check: kept in the rejected-request log.
        (
            format!("token={token}&title=x"),
            "application/xml",
            format!("<copy>{token}</copy>"),
        ),
    ];
    for (query, content_type, body) in &carriers {
        let answer = post(query.clone(), content_type, body.clone())
            .await
            .unwrap();
        assert!(
            [200, 400].contains(&answer.status().as_u16()),
            "{query}: {}",
            answer.status()
        );
    }

    let events = app.stored_events().await;
    let stored = leads(&events);
    assert_eq!(stored.len(), 4, "{events:?}");
    let rejected = app
        .grpc()
        .await
        .list_rejected_requests(roistat_leads::proto::ListRejectedRequestsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .requests;
    let mut kept: Vec<Vec<u8>> = stored
        .iter()
        .map(|lead| {
            let raw = lead.raw_request.as_ref().expect("lossy, so kept");
            [&raw.query[..], b"\n", &raw.body[..]].concat()
        })
        .collect();
    kept.extend(
        rejected
            .iter()
            .map(|request| [&request.query[..], b"\n", &request.body[..]].concat()),
    );
    assert_eq!(kept.len(), 5);
    for copy in &kept {
        let text = String::from_utf8_lossy(copy).to_lowercase();
        assert!(!text.contains(&token), "{text}");
        assert!(text.contains("***"), "{text}");
    }
}
