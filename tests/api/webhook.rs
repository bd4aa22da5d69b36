//! The HTTP ingress, as Roistat uses it.

use roistat_leads::proto::lead_event::Event;
use roistat_leads::proto::{GetLeadRequest, LeadSource};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

backend_tests!(
    a_lead_is_parsed_stored_and_answered_with_its_id,
    roistat_quirks_in_the_raw_query_are_undone,
    sources_are_classified_from_the_title,
    a_retried_lead_gets_the_same_answer_and_no_second_event,
    a_burst_of_new_repeated_and_stored_leads_is_stored_exactly_once,
    malformed_data_json_does_not_reject_the_lead,
    form_and_json_bodies_are_accepted,
    a_message_is_stored_streamed_and_deduplicated,
    wrong_credentials_are_refused_and_nothing_is_stored,
    an_empty_user_is_accepted_with_the_right_token,
    a_token_can_be_configured_instead_of_a_password,
    oversized_requests_get_413_414_431_with_json_errors,
    garbage_on_the_socket_does_not_wedge_the_server,
    health_and_readiness_answer,
);

fn get_lead(lead_id: &str) -> GetLeadRequest {
    GetLeadRequest {
        lead_id: lead_id.into(),
        ..Default::default()
    }
}

async fn a_lead_is_parsed_stored_and_answered_with_its_id(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let params = roistat_example_lead("90");
    let mut query: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    query.push(("utm_campaign", "spring"));

    let (status, body) = app.webhook(&query).await;

    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "ok", "order_id": "90"}));
    let lead = app
        .grpc()
        .await
        .get_lead(get_lead("90"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lead.integration, "default");
    assert_eq!(lead.visit, "9");
    assert_eq!(lead.title, "Caught lead: 11230001122");
    assert_eq!(lead.text, "Data of the form: 11230001122\nPromo-code: 1674");
    assert_eq!(lead.name, "Robert");
    assert_eq!(lead.phone, "+11230001122");
    assert_eq!(lead.email, "email@mail.com");
    assert_eq!(lead.page, "http://site.com/");
    assert_eq!(lead.fields.get("640163").map(String::as_str), Some("test"));
    assert_eq!(lead.fields.len(), 1);
    assert_eq!(
        lead.data_json,
        r#"{"page":"http:\/\/site.com\/","640163":"test"}"#
    );
    assert_eq!(lead.create_time.unwrap().seconds, 1_435_482_774);
    assert_eq!(lead.source(), LeadSource::LeadHunter);
    assert_eq!(lead.manager_id, "12");
    assert_eq!(
        lead.extra.get("utm_campaign").map(String::as_str),
        Some("spring")
    );
    assert!(
        !lead.extra.contains_key("token"),
        "credentials are not lead data"
    );
    assert_eq!(lead.sequence, 1);
    assert!(lead.receive_time.is_some());
}

async fn roistat_quirks_in_the_raw_query_are_undone(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let token = token();
    // An unencoded `+` in the phone (decoded as a space), a `%20` in the date,
    // `data` with escaped slashes, a Russian calltracking title.
    let query = format!(
        "/webhook?user={LOGIN}&token={token}&action=lead&id=7&phone=+79990001122\
         &created_date=2015-06-28%2009:12:54&title=%D0%97%D0%B2%D0%BE%D0%BD%D0%BE%D0%BA+%D0%BE%D1%82+79990001122"
    );

    let (status, _) = app.get_raw(&query).await;

    assert_eq!(status, 200);
    let lead = app
        .grpc()
        .await
        .get_lead(get_lead("7"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lead.phone, "+79990001122");
    assert_eq!(lead.create_time.unwrap().seconds, 1_435_482_774);
    assert_eq!(lead.title, "Звонок от 79990001122");
    assert_eq!(lead.source(), LeadSource::Calltracking);
}

async fn sources_are_classified_from_the_title(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let cases = [
        (
            "1",
            "Incoming call from 11230001122",
            LeadSource::Calltracking,
        ),
        ("2", "Пойманный лид: 79990001122", LeadSource::LeadHunter),
        ("3", "CRM Lead", LeadSource::Crm),
        ("4", "JivoSite Lead", LeadSource::Jivosite),
        ("5", "Order from the site", LeadSource::Other),
    ];
    let mut client = app.grpc().await;
    for (id, title, source) in cases {
        let (status, _) = app
            .webhook(&[("action", "lead"), ("id", id), ("title", title)])
            .await;
        assert_eq!(status, 200);
        let lead = client.get_lead(get_lead(id)).await.unwrap().into_inner();
        assert_eq!(lead.source(), source, "{title}");
    }
}

async fn a_burst_of_new_repeated_and_stored_leads_is_stored_exactly_once(options: Options) {
    // Sent all at once, so that the writer commits them in shared batches: new
    // leads, repeats of them within the burst, and leads stored before it.
    let app = TestApp::spawn_with(options).await;
    for n in 0..20 {
        assert_eq!(app.lead(&format!("stored-{n}")).await.0, 200);
    }
    let mut ids: Vec<String> = (0..120).map(|n| format!("new-{n}")).collect();
    ids.extend((0..120).step_by(3).map(|n| format!("new-{n}")));
    ids.extend((0..20).map(|n| format!("stored-{n}")));
    let mut burst = tokio::task::JoinSet::new();
    for id in &ids {
        let request = app.lead_request(id);
        let id = id.clone();
        burst.spawn(async move { (id, request.await) });
    }
    let mut answers = vec![];
    while let Some(answer) = within("the burst", burst.join_next()).await {
        answers.push(answer.unwrap());
    }
    let events = app.stored_events().await;

    for (id, (status, body)) in &answers {
        assert_eq!(*status, 200, "{id}: {body}");
        assert_eq!(body["order_id"].as_str(), Some(id.as_str()), "{id}");
    }
    let mut stored: Vec<&str> = events.iter().filter_map(lead_id).collect();
    stored.sort_unstable();
    let mut expected: Vec<String> = (0..120)
        .map(|n| format!("new-{n}"))
        .chain((0..20).map(|n| format!("stored-{n}")))
        .collect();
    expected.sort_unstable();
    assert_eq!(stored, expected, "each lead once");
    let sequences: Vec<u64> = events.iter().map(|event| event.sequence).collect();
    assert_eq!(sequences, (1..=140).collect::<Vec<u64>>(), "no gap");
}

async fn a_retried_lead_gets_the_same_answer_and_no_second_event(options: Options) {
    let app = TestApp::spawn_with(options).await;

    let first = app.lead("42").await;
    let second = app.lead("42").await;

    assert_eq!(first, (200, json!({"status": "ok", "order_id": "42"})));
    assert_eq!(second, first);
    let events = app.stored_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(lead_id(&events[0]), Some("42"));
}

async fn malformed_data_json_does_not_reject_the_lead(options: Options) {
    let app = TestApp::spawn_with(options.in_a_process()).await;

    let (status, body) = app
        .webhook(&[
            ("action", "lead"),
            ("id", "5"),
            ("data", "{\"page\": broken"),
        ])
        .await;

    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let lead = app
        .grpc()
        .await
        .get_lead(get_lead("5"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lead.data_json, "{\"page\": broken");
    assert!(lead.fields.is_empty());
    assert_eq!(lead.page, "");
    assert!(
        app.logs()
            .iter()
            .any(|line| line.contains("malformed `data`"))
    );
}

async fn form_and_json_bodies_are_accepted(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let token = token();
    let url = format!("{}/webhook", app.http_base);

    let form = app
        .http
        .post(&url)
        .form(&[
            ("user", LOGIN),
            ("token", &token),
            ("action", "lead"),
            ("id", "100"),
            ("name", "Anna"),
        ])
        .send()
        .await
        .unwrap();
    let json_body = app
        .http
        .post(&url)
        .json(
            &json!({"user": LOGIN, "token": token, "action": "lead", "id": 101,
                      "data": {"page": "http://site.com", "color": "red"}}),
        )
        .send()
        .await
        .unwrap();
    // Query and body together: the body's value wins, as in PHP's $_REQUEST.
    let mixed = app
        .http
        .post(format!(
            "{url}?action=lead&id=999&user={LOGIN}&token={token}"
        ))
        .form(&[("id", "102")])
        .send()
        .await
        .unwrap();

    assert_eq!(
        form.json::<serde_json::Value>().await.unwrap()["order_id"],
        "100"
    );
    assert_eq!(
        json_body.json::<serde_json::Value>().await.unwrap()["order_id"],
        "101"
    );
    assert_eq!(
        mixed.json::<serde_json::Value>().await.unwrap()["order_id"],
        "102"
    );
    let mut client = app.grpc().await;
    assert_eq!(
        client
            .get_lead(get_lead("100"))
            .await
            .unwrap()
            .into_inner()
            .name,
        "Anna"
    );
    let lead = client.get_lead(get_lead("101")).await.unwrap().into_inner();
    assert_eq!(lead.page, "http://site.com");
    assert_eq!(lead.fields.get("color").map(String::as_str), Some("red"));
}

async fn a_message_is_stored_streamed_and_deduplicated(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let message = [
        ("action", "message"),
        ("leadId", "155"),
        ("title", "Duplicated lead"),
        ("text", "Duplicated lead from Robert"),
    ];

    let first = app.webhook(&message).await;
    let retry = app.webhook(&message).await;
    // Some senders name the body `message`.
    let other = app
        .webhook(&[
            ("action", "message"),
            ("leadId", "155"),
            ("title", "History"),
            ("message", "Hello"),
        ])
        .await;

    // The seed's one answer for both event types: the order id the message's lead
    // has (155 is not a lead here: its id as sent).
    for answer in [&first, &retry, &other] {
        assert_eq!(answer, &(200, json!({"status": "ok", "order_id": "155"})));
    }
    let events = app.stored_events().await;
    assert_eq!(events.len(), 2, "the retry is not a second event");
    let texts: Vec<_> = events
        .iter()
        .map(|event| match &event.event {
            Some(Event::Message(message)) => (
                message.lead_id.as_str(),
                message.title.as_str(),
                message.text.as_str(),
            ),
            other => panic!("not a message: {other:?}"),
        })
        .collect();
    assert_eq!(
        texts,
        [
            ("155", "Duplicated lead", "Duplicated lead from Robert"),
            ("155", "History", "Hello")
        ]
    );
}

async fn wrong_credentials_are_refused_and_nothing_is_stored(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let token = token();
    let wrong = token_for(LOGIN, "guess");
    let cases: [&[(&str, &str)]; 4] = [
        &[
            ("user", LOGIN),
            ("token", &wrong),
            ("action", "lead"),
            ("id", "1"),
        ],
        &[("user", LOGIN), ("action", "lead"), ("id", "1")],
        &[
            ("user", "intruder"),
            ("token", &token),
            ("action", "lead"),
            ("id", "1"),
        ],
        &[
            ("user", LOGIN),
            ("token", &wrong),
            ("action", "message"),
            ("leadId", "1"),
        ],
    ];

    for query in cases {
        let (status, body) = app.get_webhook(query).await;
        assert_eq!(status, 401, "{query:?}");
        assert_eq!(body["status"], "error");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|error| !error.is_empty())
        );
    }

    let not_found = app.grpc().await.get_lead(get_lead("1")).await.unwrap_err();
    assert_eq!(not_found.code(), tonic::Code::NotFound);
    assert!(app.stored_events().await.is_empty());
}

async fn an_empty_user_is_accepted_with_the_right_token(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let token = token();

    let (status, _) = app
        .get_webhook(&[
            ("user", ""),
            ("token", &token),
            ("action", "lead"),
            ("id", "1"),
        ])
        .await;

    assert_eq!(status, 200);
}

async fn a_token_can_be_configured_instead_of_a_password(options: Options) {
    let token = token_for("", "");
    let app = TestApp::spawn_with(
        options
            .without_env("ROISTAT_USER")
            .without_env("ROISTAT_PASSWORD")
            .env("ROISTAT_TOKEN", &token),
    )
    .await;

    let (ok, _) = app
        .get_webhook(&[
            ("user", ""),
            ("token", "d41d8cd98f00b204e9800998ecf8427e"),
            ("action", "lead"),
            ("id", "1"),
        ])
        .await;
    let (refused, _) = app
        .get_webhook(&[
            ("token", &token_for(LOGIN, PASSWORD)),
            ("action", "lead"),
            ("id", "2"),
        ])
        .await;

    assert_eq!((ok, refused), (200, 401));
}

async fn oversized_requests_get_413_414_431_with_json_errors(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let url = format!("{}/webhook", app.http_base);
    let token = token();
    // A refused request's connection is closed: no connection is reused here.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    let long_text = "x".repeat(62 * 1024);
    let (uri_status, uri_body) = app
        .webhook(&[("action", "lead"), ("id", "1"), ("text", &long_text)])
        .await;
    // Beyond what an HTTP URI can hold at all: only a raw socket can send it.
    let beyond_http = raw_exchange(
        &app,
        format!(
            "GET /webhook?id=1&text={} HTTP/1.1\r\nhost: x\r\n\r\n",
            "x".repeat(100 * 1024)
        )
        .as_bytes(),
    )
    .await;
    let big_body = http
        .post(format!("{url}?user={LOGIN}&token={token}&action=lead&id=2"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("text={}", "y".repeat(1536 * 1024)))
        .send()
        .await
        .unwrap();
    // A body over the limit is 413 whatever carries the token (here the body
    // itself): saying so reveals nothing.
    let big_body_with_token = http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "user={LOGIN}&token={token}&action=lead&id=5&text={}",
            "y".repeat(1536 * 1024)
        ))
        .send()
        .await
        .unwrap();
    let mut many_headers = http.get(format!("{url}?user={LOGIN}&token={token}&action=lead&id=3"));
    for i in 0..120 {
        many_headers = many_headers.header(format!("x-filler-{i}"), "z");
    }
    let many_headers = many_headers.send().await.unwrap();
    let huge_header = http
        .get(format!("{url}?user={LOGIN}&token={token}&action=lead&id=4"))
        .header("x-filler", "h".repeat(40 * 1024))
        .send()
        .await
        .unwrap();

    assert_eq!(uri_status, 414);
    assert!(
        beyond_http.starts_with("HTTP/1.1 414"),
        "{}",
        &beyond_http[..40.min(beyond_http.len())]
    );
    let (_, beyond_body) = beyond_http.split_once("\r\n\r\n").unwrap();
    let beyond_json: serde_json::Value = serde_json::from_str(beyond_body).unwrap();
    assert_eq!(beyond_json["status"], "error", "{beyond_http}");
    assert!(beyond_http.contains("content-type: application/json"));
    assert_eq!(uri_body["status"], "error");
    assert_eq!(big_body_with_token.status(), 413);
    assert_eq!(
        big_body_with_token
            .json::<serde_json::Value>()
            .await
            .unwrap()["status"],
        "error"
    );
    assert_eq!(big_body.status(), 413);
    assert_eq!(
        big_body.json::<serde_json::Value>().await.unwrap()["status"],
        "error"
    );
    assert_eq!(many_headers.status(), 431);
    assert_eq!(huge_header.status(), 431);
    assert_eq!(
        huge_header.json::<serde_json::Value>().await.unwrap()["status"],
        "error"
    );
    assert!(app.stored_events().await.is_empty());
}

async fn garbage_on_the_socket_does_not_wedge_the_server(options: Options) {
    let app = TestApp::spawn_with(options).await;

    for garbage in [
        &b"\x00\x01\x02 GARBAGE\r\n\r\n"[..],
        b"GET /webhook?id=%ZZ HTTP/1.1\r\n\r\n",
        b"POST",
    ] {
        let answer = raw_exchange(&app, garbage).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{answer}"
        );
    }

    assert_eq!(app.lead("1").await.0, 200);
}

async fn health_and_readiness_answer(options: Options) {
    let app = TestApp::spawn_with(options).await;

    assert_eq!(
        app.get_raw("/healthz").await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(app.get_raw("/readyz").await, (200, json!({"status": "ok"})));
    let (status, body) = app.get_raw("/nowhere").await;
    assert_eq!((status, body["status"].as_str()), (404, Some("error")));
}

/// Writes raw bytes to the HTTP port, closes the write side, and returns what the
/// server answered before closing (possibly nothing).
pub(crate) async fn raw_exchange(app: &TestApp, request: &[u8]) -> String {
    let address = app.http_base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = socket.write_all(request).await;
    let _ = socket.shutdown().await;
    let mut answer = Vec::new();
    let _ = within(
        "the server to answer or close",
        socket.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn the_webhook_allowlist_refuses_other_sources_and_believes_only_trusted_proxies() {
    let closed = TestApp::spawn_with(
        Options::default()
            .arg("--webhook-allow")
            .arg("203.0.113.0/24"),
    )
    .await;
    let behind_proxy = TestApp::spawn_with(
        Options::default()
            .arg("--webhook-allow")
            .arg("203.0.113.0/24")
            .arg("--trusted-proxies")
            .arg("127.0.0.0/8"),
    )
    .await;
    let open = TestApp::spawn_with(
        Options::default()
            .arg("--webhook-allow")
            .arg("127.0.0.0/8,::1/128"),
    )
    .await;
    let forwarded = |app: &TestApp, from: &str| {
        let request = app
            .http
            .get(format!("{}/webhook", app.http_base))
            .query(&[
                ("user", LOGIN),
                ("token", &token()),
                ("action", "lead"),
                ("id", "1"),
            ])
            .header("x-forwarded-for", from.to_owned());
        async move { request.send().await.unwrap().status().as_u16() }
    };

    let (refused, body) = closed.lead("1").await;
    let spoofed = forwarded(&closed, "203.0.113.5").await;
    let via_proxy = forwarded(&behind_proxy, "198.51.100.1, 203.0.113.5").await;
    let via_proxy_outsider = forwarded(&behind_proxy, "198.51.100.1").await;
    let with_port = forwarded(&behind_proxy, "203.0.113.5:41000").await;
    let with_v6_port = forwarded(&behind_proxy, "203.0.113.5, [2001:db8::1]:41000").await;
    // A hop that does not parse ends the walk at the last trusted hop (the proxy,
    // outside the allowlist), not at whatever is written left of it.
    let unknown = forwarded(&behind_proxy, "203.0.113.5, unknown").await;
    let (allowed, _) = open.lead("1").await;
    let (health, _) = closed.get_raw("/healthz").await;

    assert_eq!((refused, body["status"].as_str()), (403, Some("error")));
    assert_eq!(
        spoofed, 403,
        "X-Forwarded-For from an untrusted peer is ignored"
    );
    assert_eq!(via_proxy, 200);
    assert_eq!(via_proxy_outsider, 403);
    assert_eq!(with_port, 200, "ip:port hops are read");
    assert_eq!(
        with_v6_port, 403,
        "[v6]:port is read, and outside the allowlist"
    );
    assert_eq!(unknown, 403);
    assert_eq!(allowed, 200);
    assert_eq!(health, 200);
    let stored = closed
        .grpc()
        .await
        .list_leads(roistat_leads::proto::ListLeadsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(stored.leads.is_empty(), "a refused source stores nothing");
}

#[tokio::test]
async fn a_rate_limit_answers_429_beyond_the_budget_of_an_address() {
    let limited = TestApp::spawn_with(Options::default().arg("--rate-limit").arg("1")).await;
    let unlimited = TestApp::spawn_with(Options::default()).await;

    let mut statuses = vec![];
    for n in 0..10 {
        statuses.push(limited.lead(&n.to_string()).await);
    }
    let mut unlimited_statuses = vec![];
    for n in 0..10 {
        unlimited_statuses.push(unlimited.lead(&n.to_string()).await.0);
    }

    assert_eq!(statuses[0].0, 200, "the first request is within the budget");
    let refused: Vec<_> = statuses
        .iter()
        .filter(|(status, _)| *status == 429)
        .collect();
    assert!(!refused.is_empty(), "{statuses:?}");
    assert_eq!(refused[0].1["status"], "error");
    assert!(
        unlimited_statuses.iter().all(|status| *status == 200),
        "off by default"
    );
}

/// Reads the status line and the rest of an answer on a socket, without closing it.
async fn answer_on(socket: &mut tokio::net::TcpStream) -> (u16, String) {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = within("an answer", socket.read(&mut chunk)).await.unwrap();
        answer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        if read == 0 || text.contains("\r\n\r\n") && text.contains('}') {
            let status = text
                .get(9..12)
                .and_then(|code| code.parse().ok())
                .unwrap_or(0);
            return (status, text);
        }
    }
}

/// Before the token is checked, memory is bounded: a wrong token in the query is
/// refused before any body is read, and bodies being read at once share a budget;
/// past it, a request with a body gets 503 with Retry-After, while requests without
/// one are answered as ever.
#[tokio::test]
async fn bodies_are_read_within_a_budget_and_a_wrong_query_token_reads_none() {
    let app =
        TestApp::spawn_with(Options::default().args(["--http-body-budget-bytes", "1048576"])).await;
    let address = app.http_base.trim_start_matches("http://").to_owned();
    let token = token();

    // A wrong token in the query: 401 at once, though the body never comes (read,
    // it would end in 408 after the body's time).
    let mut wrong = tokio::net::TcpStream::connect(&address).await.unwrap();
    wrong
        .write_all(
            b"POST /webhook?token=00000000000000000000000000000000&action=lead HTTP/1.1\r\n\
              host: x\r\ncontent-type: application/x-www-form-urlencoded\r\n\
              content-length: 500000\r\n\r\nid=1",
        )
        .await
        .unwrap();
    let (status, answer) = answer_on(&mut wrong).await;
    assert_eq!(status, 401, "{answer}");

    // A body of 1 MiB being sent slowly takes the whole budget...
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(
        format!(
            "POST /webhook?user={LOGIN}&token={token}&action=lead&id=1 HTTP/1.1\r\n\
             host: x\r\ncontent-type: application/x-www-form-urlencoded\r\n\
             content-length: 1048576\r\n\r\ntext=",
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // ...so another body waits for none of it: 503, retry shortly.
    let refused = within("the budget to be taken", async {
        loop {
            let answer = app
                .http
                .post(format!(
                    "{}/webhook?user={LOGIN}&token={token}",
                    app.http_base
                ))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("action=lead&id=2")
                .send()
                .await
                .unwrap();
            if answer.status() == 503 {
                return answer;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert!(body["error"].as_str().unwrap().contains("retry"), "{body}");
    // A request without a body needs none of the budget.
    assert_eq!(app.lead("3").await.0, 200);

    // Once the slow body is done, the budget is free again.
    slow.write_all(&vec![b'x'; 1048576 - 5]).await.unwrap();
    let (status, answer) = answer_on(&mut slow).await;
    assert_eq!(status, 200, "{answer}");
    let again = app
        .http
        .post(format!(
            "{}/webhook?user={LOGIN}&token={token}",
            app.http_base
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("action=lead&id=2")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

/// Connections past `--http-max-connections` are not accepted: they wait in the
/// kernel's backlog until a place is free, costing the service nothing.
#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let app = TestApp::spawn_with(Options::default().args(["--http-max-connections", "16"])).await;
    let address = app.http_base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    let waiting = tokio::spawn({
        let address = address.clone();
        async move {
            let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
            socket
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            socket.read_to_end(&mut answer).await.unwrap();
            String::from_utf8_lossy(&answer).into_owned()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a 17th connection was served");

    drop(held.pop());
    let answer = within("the waiting connection to be served", waiting)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
