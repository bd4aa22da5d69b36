//! The rest of the own-CRM protocol, with the tests acting as Roistat: deal details
//! and a scheme reported over gRPC, then `export`, `export_clients`,
//! `import_scheme`, `task` and `call` over HTTP.

use std::collections::BTreeSet;

use roistat_leads::proto::lead_event::Event;
use roistat_leads::proto::{
    Client, GetDealRequest, GetSchemeRequest, ReportClientRequest, ReportDealRequest, Scheme,
    StreamLeadsRequest, scheme,
};
use serde_json::{Value, json};

use crate::helpers::*;

backend_tests!(
    a_deal_report_is_a_partial_update_returned_by_get_deal,
    a_status_must_be_in_the_scheme_once_one_is_published,
    import_scheme_answers_the_published_scheme,
    an_export_walk_keeps_its_total_and_never_skips_or_repeats_an_order,
    export_answers_the_order_id_roistat_was_given,
    export_clients_pages_through_the_clients,
    tasks_and_calls_are_stored_streamed_and_answered_once,
    export_refuses_bad_input,
);

fn report(lead_id: &str) -> ReportDealRequest {
    ReportDealRequest {
        lead_id: lead_id.into(),
        ..Default::default()
    }
}

fn status(id: &str, name: &str) -> scheme::Status {
    scheme::Status {
        id: id.into(),
        name: name.into(),
    }
}

fn demo_scheme() -> Scheme {
    Scheme {
        statuses: vec![
            status("1", "New"),
            status("2", "Paid"),
            status("3", "Cancelled"),
        ],
        fields: vec![scheme::Field {
            id: "delivery".into(),
            name: "Delivery".into(),
        }],
        managers: vec![scheme::Manager {
            id: "7".into(),
            name: "Anna".into(),
            phone: "+79990000007".into(),
            email: "anna@example.com".into(),
        }],
        ..Default::default()
    }
}

/// GET /webhook with the right credentials; the answer's status and raw body.
async fn roistat_raw(app: &TestApp, params: &[(&str, &str)]) -> (u16, String) {
    let token = token();
    let mut query = vec![("user", LOGIN), ("token", token.as_str())];
    query.extend_from_slice(params);
    let response = within(
        "the HTTP answer",
        app.http
            .get(format!("{}/webhook", app.http_base))
            .query(&query)
            .send(),
    )
    .await
    .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The ids of an export page's orders.
fn order_ids(page: &Value) -> Vec<String> {
    page["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|order| order["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_deal_report_is_a_partial_update_returned_by_get_deal(options: Options) {
    let app = TestApp::spawn_with(options).await;
    app.lead("10").await;
    let mut client = app.grpc().await;

    let full = client
        .report_deal(ReportDealRequest {
            deal_id: "D-10".into(),
            name: Some("Sofa".into()),
            status: Some("1".into()),
            price: Some("120.340".into()),
            cost: Some("100.34".into()),
            manager_id: Some("7".into()),
            client_id: Some("c-1".into()),
            fields: [
                ("delivery".into(), "Courier".into()),
                ("color".into(), "red".into()),
            ]
            .into(),
            create_time: Some(prost_types::Timestamp {
                seconds: 1_393_673_200,
                nanos: 0,
            }),
            ..report("10")
        })
        .await
        .unwrap()
        .into_inner();
    let partial = client
        .report_deal(ReportDealRequest {
            status: Some("2".into()),
            fields: [("color".into(), String::new())].into(),
            ..report("10")
        })
        .await
        .unwrap()
        .into_inner();
    let fetched = client
        .get_deal(GetDealRequest {
            lead_id: "10".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(
        full.price.as_deref(),
        Some("120.34"),
        "stored as an exact decimal"
    );
    assert_eq!(fetched, partial);
    assert_eq!(fetched.deal_id, "D-10");
    assert_eq!(fetched.name.as_deref(), Some("Sofa"));
    assert_eq!(fetched.status.as_deref(), Some("2"));
    assert_eq!(
        (fetched.price.as_deref(), fetched.cost.as_deref()),
        (Some("120.34"), Some("100.34"))
    );
    assert_eq!(
        (fetched.manager_id.as_deref(), fetched.client_id.as_deref()),
        (Some("7"), Some("c-1"))
    );
    assert_eq!(
        fetched.fields,
        [("delivery".to_owned(), "Courier".to_owned())].into()
    );
    assert_eq!(fetched.create_time.unwrap().seconds, 1_393_673_200);
    let (first, second) = (full.update_time.unwrap(), partial.update_time.unwrap());
    assert!(
        (second.seconds, second.nanos) > (first.seconds, first.nanos),
        "each update bumps update_time"
    );

    for bad in [
        ReportDealRequest {
            price: Some("-1".into()),
            ..report("10")
        },
        ReportDealRequest {
            cost: Some("12,5".into()),
            ..report("10")
        },
        report("10"),
    ] {
        let error = client.report_deal(bad).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    }
    let unknown = client
        .report_deal(ReportDealRequest {
            name: Some("x".into()),
            ..report("nope")
        })
        .await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);
}

async fn a_status_must_be_in_the_scheme_once_one_is_published(options: Options) {
    let app = TestApp::spawn_with(options).await;
    app.lead("1").await;
    let mut client = app.grpc().await;

    let before = client
        .report_deal(ReportDealRequest {
            status: Some("anything".into()),
            ..report("1")
        })
        .await;
    let missing = client
        .get_scheme(GetSchemeRequest::default())
        .await
        .unwrap_err();
    let published = client
        .update_scheme(demo_scheme())
        .await
        .unwrap()
        .into_inner();
    let fetched = client
        .get_scheme(GetSchemeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let unknown = client
        .report_deal(ReportDealRequest {
            status: Some("anything".into()),
            ..report("1")
        })
        .await;
    let known = client
        .report_deal(ReportDealRequest {
            status: Some("2".into()),
            ..report("1")
        })
        .await;
    let duplicate = client
        .update_scheme(Scheme {
            statuses: vec![status("1", "a"), status("1", "b")],
            ..Default::default()
        })
        .await
        .unwrap_err();

    assert!(before.is_ok(), "no scheme yet: any status");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(published.integration, "default");
    assert_eq!(fetched.statuses, demo_scheme().statuses);
    assert_eq!(fetched.managers, demo_scheme().managers);
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert_eq!(known.unwrap().into_inner().status.as_deref(), Some("2"));
    assert_eq!(duplicate.code(), tonic::Code::InvalidArgument);
}

async fn import_scheme_answers_the_published_scheme(options: Options) {
    let app = TestApp::spawn_with(options).await;

    let empty = app.webhook(&[("action", "import_scheme")]).await;
    app.grpc().await.update_scheme(demo_scheme()).await.unwrap();
    let published = app.webhook(&[("action", "import_scheme")]).await;

    assert_eq!(
        empty,
        (200, json!({"statuses": [], "fields": [], "managers": []}))
    );
    assert_eq!(
        published,
        (
            200,
            json!({
                "statuses": [{"id": "1", "name": "New"}, {"id": "2", "name": "Paid"}, {"id": "3", "name": "Cancelled"}],
                "fields": [{"id": "delivery", "name": "Delivery"}],
                "managers": [{"id": "7", "name": "Anna", "phone": "+79990000007", "email": "anna@example.com"}],
            })
        )
    );
}

async fn an_export_walk_keeps_its_total_and_never_skips_or_repeats_an_order(options: Options) {
    let app = TestApp::spawn_with(options.arg("--export-page-size").arg("2")).await;
    let mut client = app.grpc().await;
    client.update_scheme(demo_scheme()).await.unwrap();
    for n in 1..=5 {
        let id = n.to_string();
        let visit = format!("v{n}");
        app.webhook(&[("action", "lead"), ("id", &id), ("visit", &visit)])
            .await;
        client
            .report_deal(ReportDealRequest {
                name: Some(format!("Deal {n}")),
                status: Some("1".into()),
                price: Some(format!("{n}0.50")),
                ..report(&id)
            })
            .await
            .unwrap();
    }

    // Roistat's first call has no limit: the service's page size applies.
    let (_, first) = app.webhook(&[("action", "export"), ("date", "0")]).await;
    // Mid-walk, the CRM updates a deal already listed and reports a new one.
    client
        .report_deal(ReportDealRequest {
            status: Some("2".into()),
            ..report("1")
        })
        .await
        .unwrap();
    app.lead("6").await;
    client
        .report_deal(ReportDealRequest {
            name: Some("Deal 6".into()),
            ..report("6")
        })
        .await
        .unwrap();
    let (_, second) = app
        .webhook(&[
            ("action", "export"),
            ("date", "0"),
            ("offset", "2"),
            ("limit", "2"),
        ])
        .await;
    let (_, third) = app
        .webhook(&[
            ("action", "export"),
            ("date", "0"),
            ("offset", "4"),
            ("limit", "2"),
        ])
        .await;
    let (_, beyond) = app
        .webhook(&[
            ("action", "export"),
            ("date", "0"),
            ("offset", "6"),
            ("limit", "2"),
        ])
        .await;
    // The next walk sees both changes, the updated deal last (ordered by update time).
    let (_, next_walk) = app
        .webhook(&[("action", "export"), ("date", "0"), ("limit", "10")])
        .await;

    for page in [&first, &second, &third, &beyond] {
        assert_eq!(
            page["pagination"],
            json!({"total_count": 5, "limit": 2}),
            "{page}"
        );
    }
    let walked: Vec<String> = [&first, &second, &third]
        .iter()
        .flat_map(|page| order_ids(page))
        .collect();
    assert_eq!(walked, ["1", "2", "3", "4", "5"]);
    assert!(order_ids(&beyond).is_empty());
    assert_eq!(
        first["orders"][0]["status"], "1",
        "the walk shows the deal as it was when it started"
    );
    assert_eq!(first["statuses"][1], json!({"id": "2", "name": "Paid"}));
    assert_eq!(next_walk["pagination"]["total_count"], 6);
    assert_eq!(order_ids(&next_walk), ["2", "3", "4", "5", "1", "6"]);
    assert_eq!(next_walk["orders"][4]["status"], "2");
    let order = &first["orders"][0];
    assert_eq!(order["name"], "Deal 1");
    assert_eq!(order["roistat"], "v1");
    assert!(
        order["date_create"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .is_ok()
    );
    assert_eq!(order["fields"], json!({}));
    // Money is written as an exact JSON number.
    let (_, raw) = roistat_raw(&app, &[("action", "export"), ("date", "0"), ("limit", "1")]).await;
    assert!(
        raw.contains(r#""price":20.5"#) || raw.contains(r#""price":20.50"#),
        "{raw}"
    );
    assert!(
        raw.contains(r#""cost":null"#),
        "a cost never reported is null, not 0: {raw}"
    );
    // Only orders changed at or after `date`.
    let (_, future) = app
        .webhook(&[("action", "export"), ("date", "4102444800")])
        .await;
    assert_eq!(future["pagination"]["total_count"], 0);
}

async fn export_answers_the_order_id_roistat_was_given(options: Options) {
    let app = TestApp::spawn_with(
        options
            .arg("--order-id")
            .arg("crm")
            .arg("--deal-wait-ms")
            .arg("0"),
    )
    .await;
    assert_eq!(app.lead("77").await.0, 503);
    app.grpc()
        .await
        .report_deal(ReportDealRequest {
            deal_id: "CRM-77".into(),
            price: Some("1000".into()),
            ..report("77")
        })
        .await
        .unwrap();
    assert_eq!(app.lead("77").await.1["order_id"], "CRM-77");

    let (status, page) = app.webhook(&[("action", "export"), ("date", "0")]).await;

    assert_eq!(status, 200);
    assert_eq!(order_ids(&page), ["CRM-77"]);
    assert_eq!(page["orders"][0]["price"], json!(1000));
}

async fn export_clients_pages_through_the_clients(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let mut grpc = app.grpc().await;
    for (id, name) in [("c1", "Robert"), ("c2", "Anna"), ("c3", "Ivan")] {
        grpc.report_client(ReportClientRequest {
            client: Some(Client {
                id: id.into(),
                name: name.into(),
                phone: "+79990001122".into(),
                email: format!("{id}@example.com"),
                company: "ACME".into(),
                birth_date: "1990-05-17".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    }
    let bad_date = grpc
        .report_client(ReportClientRequest {
            client: Some(Client {
                id: "c4".into(),
                birth_date: "17.05.1990".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    let no_id = grpc
        .report_client(ReportClientRequest {
            client: Some(Client::default()),
        })
        .await
        .unwrap_err();

    let (status, first) = app
        .webhook(&[("action", "export_clients"), ("date", "0"), ("limit", "2")])
        .await;
    let (_, second) = app
        .webhook(&[
            ("action", "export_clients"),
            ("date", "0"),
            ("offset", "2"),
            ("limit", "2"),
        ])
        .await;

    assert_eq!(bad_date.code(), tonic::Code::InvalidArgument);
    assert_eq!(no_id.code(), tonic::Code::InvalidArgument);
    assert_eq!(status, 200);
    assert_eq!(first["pagination"], json!({"total_count": 3, "limit": 2}));
    assert_eq!(
        first["clients"][0],
        json!({"id": "c1", "name": "Robert", "phone": "+79990001122", "email": "c1@example.com",
               "company": "ACME", "birth_date": "1990-05-17"})
    );
    assert_eq!(second["clients"].as_array().unwrap().len(), 1);
    assert_eq!(second["clients"][0]["id"], "c3");
}

async fn tasks_and_calls_are_stored_streamed_and_answered_once(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let task = [
        ("action", "task"),
        ("element_id", "100"),
        ("deadline", "2019-01-01T11:11:11"),
        ("text", "Call the client back"),
    ];
    let call = [
        ("action", "call"),
        ("id", "555"),
        ("callee", "74950000000"),
        ("caller", "79990001122"),
        ("date", "2019-01-01T11:11:11"),
        ("visit", "3121512"),
        ("marker", "google_cpc"),
        ("status", "ANSWER"),
        ("order_id", "100"),
        ("duration", "42"),
        ("file_url", "https://example.com/call.mp3"),
    ];

    let (task_status, task_answer) = app.webhook(&task).await;
    let task_retry = app.webhook(&task).await;
    let (call_status, call_answer) = app.webhook(&call).await;
    let call_retry = app.webhook(&call).await;

    assert_eq!((task_status, &task_answer["status"]), (200, &json!("ok")));
    assert!(
        task_answer["task_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(task_retry.1, task_answer, "a retry gets the same task id");
    assert_eq!((call_status, &call_answer["status"]), (200, &json!("ok")));
    assert!(
        call_answer["call_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(call_retry.1, call_answer);
    let mut stream = app.stream(StreamLeadsRequest::default()).await;
    let Some(Event::Task(streamed_task)) = next_event(&mut stream).await.event else {
        panic!("expected the task")
    };
    let Some(Event::Call(streamed_call)) = next_event(&mut stream).await.event else {
        panic!("expected the call")
    };
    assert_eq!(streamed_task.element_id, "100");
    assert_eq!(streamed_task.deadline.unwrap().seconds, 1_546_341_071);
    assert_eq!(streamed_task.text, "Call the client back");
    assert_eq!(
        (
            streamed_call.call_id.as_str(),
            streamed_call.status.as_str()
        ),
        ("555", "ANSWER")
    );
    assert_eq!(
        (streamed_call.duration, streamed_call.visit.as_str()),
        (42, "3121512")
    );
    assert_eq!(streamed_call.file_url, "https://example.com/call.mp3");
    assert_eq!(
        app.stored_events().await.len(),
        2,
        "retries are not new events"
    );

    // What cannot be read is kept as sent, never refused: Roistat would resend a
    // refused request forever.
    for unreadable in [
        vec![("action", "task"), ("text", "no element")],
        vec![
            ("action", "task"),
            ("element_id", "1"),
            ("deadline", "tomorrow"),
        ],
        vec![("action", "call"), ("caller", "1")],
        vec![("action", "call"), ("id", "9"), ("duration", "long")],
        vec![("action", "call"), ("id", "9"), ("date", "01.01.2019")],
    ] {
        let (status, body) = app.webhook(&unreadable).await;
        assert_eq!(
            (status, &body["status"]),
            (200, &json!("ok")),
            "{unreadable:?}"
        );
    }
    assert_eq!(
        app.stored_events().await.len(),
        2 + 5 + 1,
        "each kept as an event (and the first marker)"
    );
}

async fn export_refuses_bad_input(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let wrong_token = token_for(LOGIN, "wrong");

    for action in ["export", "export_clients", "import_scheme"] {
        let (status, body) = app
            .get_webhook(&[
                ("user", LOGIN),
                ("token", &wrong_token),
                ("action", action),
                ("date", "0"),
            ])
            .await;
        assert_eq!(
            (status, &body["status"]),
            (401, &json!("error")),
            "{action}"
        );
    }
    for action in ["export", "export_clients"] {
        for bad in [
            ("date", "yesterday"),
            ("offset", "-1"),
            ("limit", "0"),
            ("limit", "many"),
        ] {
            let (status, body) = app.webhook(&[("action", action), bad]).await;
            assert_eq!(status, 400, "{action} {bad:?}");
            assert_eq!(body["status"], "error");
        }
    }
    assert_eq!(
        app.webhook(&[("action", "export"), ("date", "0")]).await.0,
        200
    );
    let ids: BTreeSet<String> = order_ids(&app.webhook(&[("action", "export")]).await.1)
        .into_iter()
        .collect();
    assert!(ids.is_empty());
}
