//! LeadService's unary calls, health and reflection.

use roistat_leads::proto::{GetEventRequest, GetLeadRequest, ListLeadsRequest};
use tokio_stream::StreamExt;

use crate::helpers::*;

backend_tests!(
    get_event_reads_every_kind_as_the_stream_sends_it,
    get_lead_refuses_unknown_and_empty_ids,
    list_leads_pages_through_leads_in_receive_order,
    list_leads_refuses_bad_arguments,
    health_reports_serving,
    reflection_lists_the_service_in_v1_and_v1alpha,
);

fn list(page_size: i32, page_token: &str) -> ListLeadsRequest {
    ListLeadsRequest {
        page_size,
        page_token: page_token.into(),
        ..Default::default()
    }
}

async fn get_event_reads_every_kind_as_the_stream_sends_it(options: Options) {
    let app = TestApp::spawn_with(options).await;
    assert_eq!(app.lead("7").await.0, 200);
    let message = [("action", "message"), ("leadId", "7"), ("title", "t")];
    let task = [
        ("action", "task"),
        ("element_id", "7"),
        ("text", "Call back"),
    ];
    let call = [("action", "call"), ("id", "555"), ("order_id", "7")];
    for event in [&message[..], &task[..], &call[..]] {
        assert_eq!(app.webhook(event).await.0, 200, "{event:?}");
    }
    let streamed = app.stored_events().await;
    assert_eq!(streamed.len(), 4, "a lead, a message, a task and a call");
    let mut client = app.grpc().await;

    for event in &streamed {
        let request = GetEventRequest {
            sequence: event.sequence,
        };
        let read = client.get_event(request).await.unwrap().into_inner();
        assert_eq!(
            &read, event,
            "GetEvent({}) is what the stream sent",
            event.sequence
        );
    }
    let zero = client
        .get_event(GetEventRequest { sequence: 0 })
        .await
        .unwrap_err();
    let ahead = client
        .get_event(GetEventRequest { sequence: 1_000 })
        .await
        .unwrap_err();

    assert_eq!(zero.code(), tonic::Code::InvalidArgument);
    assert_eq!(ahead.code(), tonic::Code::NotFound);
    assert!(ahead.message().contains("1000"), "{}", ahead.message());
}

async fn get_lead_refuses_unknown_and_empty_ids(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let mut client = app.grpc().await;

    let unknown = client
        .get_lead(GetLeadRequest {
            lead_id: "404".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let empty = client
        .get_lead(GetLeadRequest::default())
        .await
        .unwrap_err();

    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
}

async fn list_leads_pages_through_leads_in_receive_order(options: Options) {
    let app = TestApp::spawn_with(options).await;
    for id in ["l1", "l2", "l3", "l4", "l5"] {
        app.lead(id).await;
    }
    // Messages are not leads and do not appear in the listing.
    app.webhook(&[("action", "message"), ("leadId", "l1"), ("text", "x")])
        .await;
    let mut client = app.grpc().await;

    let mut pages = vec![];
    let mut token = String::new();
    loop {
        let page = client
            .list_leads(list(2, &token))
            .await
            .unwrap()
            .into_inner();
        pages.push(
            page.leads
                .iter()
                .map(|lead| lead.lead_id.clone())
                .collect::<Vec<_>>(),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let everything = client.list_leads(list(0, "")).await.unwrap().into_inner();

    assert_eq!(pages, [vec!["l1", "l2"], vec!["l3", "l4"], vec!["l5"]]);
    assert_eq!(everything.leads.len(), 5);
    assert!(everything.next_page_token.is_empty());
}

async fn list_leads_refuses_bad_arguments(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let mut client = app.grpc().await;

    let bad_token = client
        .list_leads(list(10, "not-a-token"))
        .await
        .unwrap_err();
    let negative = client.list_leads(list(-1, "")).await.unwrap_err();

    assert_eq!(bad_token.code(), tonic::Code::InvalidArgument);
    assert_eq!(negative.code(), tonic::Code::InvalidArgument);
}

async fn health_reports_serving(options: Options) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let app = TestApp::spawn_with(options).await;
    let mut health = HealthClient::new(app.channel().await);

    for service in ["", "roistat.leads.v1.LeadService"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    }
}

async fn reflection_lists_the_service_in_v1_and_v1alpha(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let channel = app.channel().await;

    // The two versions are the same protocol with separately generated types.
    macro_rules! list_services {
        ($version:ident, $channel:expr) => {{
            use tonic_reflection::pb::$version::ServerReflectionRequest;
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut responses = ServerReflectionClient::new($channel)
                .server_reflection_info(tokio_stream::once(request))
                .await
                .unwrap()
                .into_inner();
            match within("reflection", responses.next())
                .await
                .unwrap()
                .unwrap()
                .message_response
            {
                Some(MessageResponse::ListServicesResponse(list)) => list
                    .service
                    .into_iter()
                    .map(|service| service.name)
                    .collect::<Vec<_>>(),
                other => panic!("unexpected answer {other:?}"),
            }
        }};
    }
    let v1 = list_services!(v1, channel.clone());
    let v1alpha = list_services!(v1alpha, channel);

    for services in [v1, v1alpha] {
        assert!(
            services.contains(&"roistat.leads.v1.LeadService".to_owned()),
            "{services:?}"
        );
        assert!(
            services.contains(&"grpc.health.v1.Health".to_owned()),
            "{services:?}"
        );
    }
}

#[tokio::test]
async fn a_grpc_token_guards_lead_service_but_not_health() {
    use roistat_leads::proto::lead_service_client::LeadServiceClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let app = TestApp::spawn_with(Options::default().arg("--grpc-token").arg("grpc-s3cret")).await;
    app.lead("1").await;
    let with_token = |token: &'static str| {
        let channel = app.channel();
        async move {
            LeadServiceClient::with_interceptor(
                channel.await,
                move |mut request: tonic::Request<()>| {
                    request
                        .metadata_mut()
                        .insert("authorization", format!("Bearer {token}").parse().unwrap());
                    Ok(request)
                },
            )
        }
    };
    let get = || GetLeadRequest {
        lead_id: "1".into(),
        ..Default::default()
    };

    let missing = LeadServiceClient::new(app.channel().await)
        .get_lead(get())
        .await
        .unwrap_err();
    let wrong = with_token("guess").await.get_lead(get()).await.unwrap_err();
    let right = with_token("grpc-s3cret").await.get_lead(get()).await;
    let health = HealthClient::new(app.channel().await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    let tail = |token: Option<&str>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_roistat-leads"));
        command
            .args([
                "tail",
                "--grpc-addr",
                app.grpc_addr.trim_start_matches("http://"),
            ])
            .env_clear()
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(token) = token {
            command.args(["--grpc-token", token]);
        }
        command.spawn().unwrap()
    };
    let refused = within("tail without a token", tail(None).wait_with_output())
        .await
        .unwrap();
    let mut allowed = tail(Some("grpc-s3cret"));
    let mut lines = tokio::io::BufReader::new(allowed.stdout.take().unwrap());
    let mut line = String::new();
    within(
        "a line from tail",
        tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line),
    )
    .await
    .unwrap();

    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    assert_eq!(right.unwrap().into_inner().lead_id, "1");
    assert!(health.is_ok(), "health stays open");
    assert!(!refused.status.success());
    assert!(line.contains(r#""lead_id":"1""#), "{line}");
}

#[tokio::test]
async fn how_lead_service_callers_are_let_in_is_logged_and_shown() {
    // Closed by construction: beyond loopback, only with a way to tell callers apart.
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:50051"] {
        let refused = serve_refused(&["--grpc-addr", addr], &[]).await;
        assert_eq!(refused.status.code(), Some(2), "{addr}: {refused:?}");
        let message = String::from_utf8_lossy(&refused.stderr);
        for way_out in ["--grpc-token", "--grpc-tls-client-ca", "--grpc-insecure"] {
            assert!(message.contains(way_out), "{addr}: {message}");
        }
        assert_eq!(message.lines().count(), 1, "one message: {message}");
    }
    let loopback = TestApp::spawn_with(
        Options::default()
            .args(["--grpc-addr", "127.0.0.1:0"])
            .in_a_process(),
    )
    .await;
    loopback.grpc().await;
    let insecure = TestApp::spawn_with(
        Options::default()
            .args(["--grpc-addr", "0.0.0.0:0"])
            .arg("--grpc-insecure")
            .in_a_process(),
    )
    .await;
    let guarded = TestApp::spawn_with(
        Options::default()
            .args(["--grpc-addr", "0.0.0.0:0"])
            .env("ROISTAT_LEADS_GRPC_TOKEN", "grpc-s3cret")
            .in_a_process(),
    )
    .await;
    let check = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_roistat-leads"));
        command
            .arg("check-config")
            .args(args)
            .env_clear()
            .env("ROISTAT_PASSWORD", "x");
        async move {
            let output = within("check-config", command.output()).await.unwrap();
            String::from_utf8(output.stdout).unwrap()
        }
    };

    let logged = |app: &TestApp, level: &str, text: &str| {
        app.logs()
            .iter()
            .any(|line| line.contains(level) && line.contains(text))
    };
    assert!(
        logged(&insecure, "WARN", "--grpc-insecure"),
        "{:?}",
        insecure.logs()
    );
    assert!(
        !logged(&guarded, "WARN", "--grpc-insecure"),
        "{:?}",
        guarded.logs()
    );
    assert!(
        check(&[])
            .await
            .contains("# LeadService callers: none: a loopback listener only")
    );
    assert!(
        check(&["--grpc-addr", "0.0.0.0:50051"]).await.is_empty(),
        "check-config fails as serve does"
    );
    assert!(
        check(&["--grpc-insecure"])
            .await
            .contains("# LeadService callers: insecure")
    );
    assert!(
        check(&["--grpc-token", "t"])
            .await
            .contains("# LeadService callers: bearer token")
    );
}
