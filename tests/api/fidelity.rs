//! What Roistat reads back is complete and true, and nothing it sends with a valid
//! token is dropped without a trace: the tests act as Roistat over HTTP and as the
//! CRM over gRPC.

use std::time::Duration;

use roistat_leads::proto::lead_event::Event;
use roistat_leads::proto::{
    Authentication, EventKind, GetEventRequest, GetSchemeRequest, ListRejectedRequestsRequest,
    Parameter, RejectedRequest, ReportDealRequest, Scheme, StreamLeadsRequest, scheme,
};
use serde_json::Value;
use time::OffsetDateTime;

use crate::helpers::*;

backend_tests!(
    a_lead_answered_and_never_reported_is_exported_with_the_default_status,
    a_deal_id_reported_in_crm_mode_is_exported_under_that_id,
    a_deal_change_brings_the_order_back_into_the_date_window,
    an_identical_message_is_one_event_within_the_window_and_two_across_it,
    a_message_is_filed_under_the_lead_its_order_id_names,
    trailing_slashes_and_requests_without_an_action_are_understood,
    refused_requests_are_kept_and_listed_without_their_token,
    an_unknown_action_is_answered_ok_and_kept_whole_once,
    only_the_newest_refused_requests_are_kept_and_they_page_newest_first,
);

fn statuses(ids: &[&str]) -> Scheme {
    Scheme {
        statuses: ids
            .iter()
            .map(|id| scheme::Status {
                id: (*id).into(),
                name: format!("Status {id}"),
            })
            .collect(),
        managers: vec![scheme::Manager {
            id: "7".into(),
            name: "Anna".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The export's orders by id.
fn orders(page: &Value) -> Vec<Value> {
    page["orders"].as_array().unwrap().clone()
}

fn order<'a>(orders: &'a [Value], id: &str) -> &'a Value {
    orders
        .iter()
        .find(|order| order["id"] == id)
        .unwrap_or_else(|| panic!("no order {id} in {orders:?}"))
}

async fn a_lead_answered_and_never_reported_is_exported_with_the_default_status(options: Options) {
    let app = TestApp::spawn_with(options.args(["--default-status", "new"])).await;
    let mut client = app.grpc().await;
    // Before any scheme, Roistat's scheme holds the default status alone.
    let (_, imported) = app.webhook(&[("action", "import_scheme")]).await;
    let missing = client
        .get_scheme(GetSchemeRequest::default())
        .await
        .unwrap_err();
    let without_default = client.update_scheme(statuses(&["1", "2"])).await;
    client
        .update_scheme(statuses(&["new", "paid"]))
        .await
        .unwrap();
    let lead = roistat_example_lead("90");
    let params: Vec<(&str, &str)> = lead.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(app.webhook(&params).await.0, 200);

    let (status, export) = app.webhook(&[("action", "export"), ("date", "0")]).await;

    assert_eq!(imported["statuses"][0]["id"], "new");
    assert_eq!(imported["statuses"][0]["name"], "new");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(
        without_default.unwrap_err().code(),
        tonic::Code::InvalidArgument,
        "a scheme must hold the configured default status"
    );
    assert_eq!(status, 200);
    let orders = orders(&export);
    let order = order(&orders, "90");
    assert_eq!(order["status"], "new");
    assert_eq!(
        order["date_create"], "1435482774",
        "the lead's created_date"
    );
    assert_eq!(
        order["name"], "Caught lead: 11230001122",
        "the lead's title"
    );
    assert_eq!(order["roistat"], "9");
    assert_eq!(
        (order["price"].to_string(), order["cost"].to_string()),
        ("null".into(), "null".into()),
        "never reported: null, which overwrites nothing Roistat has"
    );
    assert_eq!(export["statuses"].as_array().unwrap().len(), 2);
    assert_eq!(export["managers"][0]["name"], "Anna");
    assert!(export["fields"].is_array());
}

async fn a_deal_id_reported_in_crm_mode_is_exported_under_that_id(options: Options) {
    let options = options.args(["--order-id", "crm", "--deal-wait-ms", "0"]);
    let app = TestApp::spawn_with(options).await;
    assert_eq!(app.lead("1").await.0, 503);
    assert_eq!(app.lead("2").await.0, 503);
    let (_, before) = app.webhook(&[("action", "export"), ("date", "0")]).await;
    app.grpc()
        .await
        .report_deal(ReportDealRequest {
            lead_id: "1".into(),
            deal_id: "D-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let (_, after) = app.webhook(&[("action", "export"), ("date", "0")]).await;

    assert_eq!(before["pagination"]["total_count"], 0, "no id is fixed yet");
    let orders = orders(&after);
    assert_eq!(orders.len(), 1, "lead 2 has no id yet: {orders:?}");
    assert_eq!(order(&orders, "D-1")["status"], "");
}

/// Waits until the wall clock has passed `second` (Unix seconds): Roistat's `date`
/// counts whole seconds.
async fn until_past(second: i64) {
    within("the clock to move on", async {
        while OffsetDateTime::now_utc().unix_timestamp() <= second {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

async fn a_deal_change_brings_the_order_back_into_the_date_window(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let mut client = app.grpc().await;
    assert_eq!(app.lead("1").await.0, 200);
    assert_eq!(app.lead("2").await.0, 200);
    let fixed = OffsetDateTime::now_utc().unix_timestamp();
    until_past(fixed).await;
    let since = (fixed + 1).to_string();
    let (_, quiet) = app.webhook(&[("action", "export"), ("date", &since)]).await;
    client
        .report_deal(ReportDealRequest {
            lead_id: "2".into(),
            price: Some("99.90".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    let (_, changed) = app.webhook(&[("action", "export"), ("date", &since)]).await;

    assert_eq!(quiet["pagination"]["total_count"], 0);
    let orders = orders(&changed);
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(order(&orders, "2")["price"].to_string(), "99.9");
}

fn message<'a>(lead_id: &'a str, text: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("action", "message"),
        ("leadId", lead_id),
        ("title", "Duplicated lead"),
        ("text", text),
    ]
}

async fn an_identical_message_is_one_event_within_the_window_and_two_across_it(options: Options) {
    let short = options.on_a_new_database().await;
    let long = TestApp::spawn_with(options).await;
    let short = TestApp::spawn_with(short.args(["--message-dedup-window", "1s"])).await;

    for app in [&long, &short] {
        assert_eq!(app.webhook(&message("5", "again")).await.0, 200);
    }
    // A Roistat retry within the window is absorbed.
    assert_eq!(long.webhook(&message("5", "again")).await.0, 200);
    let sent = OffsetDateTime::now_utc();
    within("the short window to pass", async {
        while OffsetDateTime::now_utc() - sent < time::Duration::milliseconds(1_100) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(short.webhook(&message("5", "again")).await.0, 200);
    assert_eq!(short.webhook(&message("5", "again")).await.0, 200);

    let messages = |events: Vec<roistat_leads::proto::LeadEvent>| {
        events
            .into_iter()
            .filter(|event| matches!(event.event, Some(Event::Message(_))))
            .count()
    };
    assert_eq!(messages(long.stored_events().await), 1, "within the window");
    assert_eq!(
        messages(short.stored_events().await),
        2,
        "the notice again after the window is a new event; its own retry is not"
    );
}

async fn a_message_is_filed_under_the_lead_its_order_id_names(options: Options) {
    let app = TestApp::spawn_with(options.args(["--order-id", "crm", "--deal-wait-ms", "0"])).await;
    assert_eq!(app.lead("77").await.0, 503);
    app.grpc()
        .await
        .report_deal(ReportDealRequest {
            lead_id: "77".into(),
            deal_id: "CRM-77".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(app.lead("77").await.1["order_id"], "CRM-77");
    for lead_id in ["CRM-77", "77", "nobody"] {
        assert_eq!(app.webhook(&message(lead_id, lead_id)).await.0, 200);
    }

    let resolved: Vec<(String, String)> = app
        .stored_events()
        .await
        .into_iter()
        .filter_map(|event| match event.event {
            Some(Event::Message(message)) => Some((message.lead_id, message.resolved_lead_id)),
            _ => None,
        })
        .collect();

    assert_eq!(
        resolved,
        [
            ("CRM-77".to_owned(), "77".to_owned()),
            ("77".to_owned(), "77".to_owned()),
            ("nobody".to_owned(), String::new()),
        ]
    );
}

async fn trailing_slashes_and_requests_without_an_action_are_understood(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let token = token();

    let (slash, answer) = app
        .get_raw(&format!(
            "/webhook/?user={LOGIN}&token={token}&action=lead&id=1"
        ))
        .await;
    let (lead, lead_answer) = app
        .get_raw(&format!(
            "/webhook?user={LOGIN}&token={token}&id=2&title=CRM+Lead"
        ))
        .await;
    let (note, _) = app
        .get_raw(&format!(
            "/webhook?user={LOGIN}&token={token}&leadId=2&title=Note"
        ))
        .await;
    let (unknown, _) = app
        .get_raw(&format!("/webhook/nobody/?user={LOGIN}&token={token}&id=3"))
        .await;

    assert_eq!((slash, answer["order_id"].as_str()), (200, Some("1")));
    assert_eq!((lead, lead_answer["order_id"].as_str()), (200, Some("2")));
    assert_eq!(note, 200);
    assert_eq!(unknown, 404);
    let events = app.stored_events().await;
    assert!(
        matches!(events[1].event, Some(Event::Lead(_))),
        "{events:?}"
    );
    assert!(
        matches!(events[2].event, Some(Event::Message(_))),
        "{events:?}"
    );
    assert_eq!(events.len(), 3);
}

async fn list(app: &TestApp, authentication: Authentication) -> Vec<RejectedRequest> {
    app.grpc()
        .await
        .list_rejected_requests(ListRejectedRequestsRequest {
            authentication: authentication as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .requests
}

async fn refused_requests_are_kept_and_listed_without_their_token(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let token = token();
    // After the token check only two things are refused: a request that names no
    // action and has neither `id` nor `leadId`, and a read whose paging cannot be
    // read (a refused read loses nothing).
    let (unreadable, _) = app.webhook(&[("name", "x")]).await;
    let (invalid, _) = app
        .get_raw(&format!(
            "/webhook?user={LOGIN}&token={token}&action=export&date=yesterday"
        ))
        .await;
    let (wrong, _) = app
        .get_webhook(&[
            ("user", LOGIN),
            ("token", &"0".repeat(32)),
            ("action", "lead"),
        ])
        .await;

    let stored = list(&app, Authentication::Passed).await;
    let remembered = list(&app, Authentication::Failed).await;
    let all = list(&app, Authentication::Unspecified).await;

    assert_eq!((unreadable, invalid, wrong), (400, 400, 401));
    assert_eq!(stored.len(), 2, "{stored:?}");
    // Newest first.
    assert!(stored[0].reason.contains("date"), "{:?}", stored[0]);
    assert_eq!(
        (stored[0].action.as_str(), stored[0].http_status),
        ("export", 400)
    );
    assert!(stored[1].reason.contains("action"), "{:?}", stored[1]);
    assert_eq!(
        (stored[1].action.as_str(), stored[1].http_status),
        ("", 400)
    );
    assert_eq!(stored[1].integration, "default");
    assert_eq!(stored[1].source_address, "127.0.0.1");
    for request in &stored {
        let query = String::from_utf8_lossy(&request.query);
        assert!(query.contains("token=***"), "{query}");
        assert!(!query.contains(&token), "the token is never kept: {query}");
    }
    assert_eq!(remembered.len(), 1, "{remembered:?}");
    assert_eq!(remembered[0].reason, "invalid token");
    assert!(remembered[0].query.is_empty() && remembered[0].body.is_empty());
    assert_eq!(all.len(), 3);
    let events = app.stored_events().await;
    assert!(
        events.is_empty(),
        "nothing refused reaches the stream: {events:?}"
    );
    let mut stream = app.stream(StreamLeadsRequest::default()).await;
    let marker = next_event(&mut stream).await;
    assert!(lead_id(&marker).unwrap().starts_with("marker-"));
}

async fn only_the_newest_refused_requests_are_kept_and_they_page_newest_first(options: Options) {
    let app = TestApp::spawn_with(options.args(["--rejected-keep", "2"])).await;
    let mut client = app.grpc().await;
    for n in 0..3 {
        // A request that names no action, no id and no leadId: refused after the
        // token check.
        let text = format!("refused-{n}");
        let action = format!("task-{n}");
        assert_eq!(app.webhook(&[("text", &text)]).await.0, 400);
        let wrong = [
            ("user", LOGIN),
            ("token", "bad"),
            ("action", action.as_str()),
        ];
        assert_eq!(app.get_webhook(&wrong).await.0, 401);
    }

    let mut pages = vec![];
    let mut token = String::new();
    loop {
        let page = client
            .list_rejected_requests(ListRejectedRequestsRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages.push(page.requests);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let bad = client
        .list_rejected_requests(ListRejectedRequestsRequest {
            page_token: "after:1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();

    let listed: Vec<&RejectedRequest> = pages.iter().flatten().collect();
    assert_eq!(listed.len(), 5, "2 stored and 3 in memory: {listed:?}");
    let stored: Vec<String> = listed
        .iter()
        .filter(|request| request.authentication() == Authentication::Passed)
        .map(|request| String::from_utf8_lossy(&request.query).into_owned())
        .collect();
    assert_eq!(stored.len(), 2, "the newest two are kept: {stored:?}");
    assert!(stored[0].contains("text=refused-2"), "{stored:?}");
    assert!(stored[1].contains("text=refused-1"), "{stored:?}");
    let times: Vec<_> = listed
        .iter()
        .map(|request| {
            let time = request.time.unwrap();
            (time.seconds, time.nanos)
        })
        .collect();
    assert!(
        times.windows(2).all(|pair| pair[0] >= pair[1]),
        "newest first: {times:?}"
    );
    let mut ids: Vec<&str> = listed.iter().map(|request| request.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "no request twice");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

/// Roistat resends a refused request forever: an action this version does not know
/// (`versions`, which Roistat's CMS modules answer, or anything added later) is
/// answered ok and kept whole, once however often it is resent.
async fn an_unknown_action_is_answered_ok_and_kept_whole_once(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let versions = [
        ("action", "versions"),
        ("module", "1.2"),
        ("text", "Привет"),
    ];

    let first = app.webhook(&versions).await;
    let retry = app.webhook(&versions).await;
    let other = app.webhook(&[("action", "launch"), ("id", "1")]).await;

    for (status, body) in [&first, &retry, &other] {
        assert_eq!(*status, 200);
        assert_eq!(body["status"], "ok");
    }
    let events = app.stored_events().await;
    let unknown: Vec<_> = events
        .iter()
        .filter_map(|event| match &event.event {
            Some(Event::UnknownAction(unknown)) => Some((event, unknown)),
            _ => None,
        })
        .collect();
    assert_eq!(
        unknown.len(),
        2,
        "a resent request is one event: {events:?}"
    );
    let (event, versions) = unknown[0];
    assert_eq!(
        (versions.integration.as_str(), versions.action.as_str()),
        ("default", "versions")
    );
    let parameter = |name: &str, value: &str| Parameter {
        name: name.into(),
        value: value.into(),
    };
    assert_eq!(
        versions.parameters,
        vec![
            parameter("action", "versions"),
            parameter("module", "1.2"),
            parameter("text", "Привет"),
            parameter("user", LOGIN),
        ],
        "every parameter but the token"
    );
    assert_eq!(unknown[1].1.action, "launch");

    // As any event: read again by its sequence, and chosen by its kind.
    let mut client = app.grpc().await;
    let request = GetEventRequest {
        sequence: event.sequence,
    };
    assert_eq!(
        &client.get_event(request).await.unwrap().into_inner(),
        event
    );
    let mut only_unknown = app
        .stream(StreamLeadsRequest {
            kinds: vec![EventKind::UnknownAction as i32],
            ..Default::default()
        })
        .await;
    assert_eq!(next_event(&mut only_unknown).await.sequence, event.sequence);
    assert_eq!(
        next_event(&mut only_unknown).await.sequence,
        unknown[1].0.sequence
    );
}
