//! Bounds on what a caller can make the service spend: subscribers, consumers,
//! page sizes, the shutdown drain, a value no store can keep, and credentials that
//! would let anyone in.

use std::time::Duration;

use roistat_leads::proto::{
    AckLeadsRequest, DeleteConsumerRequest, ListLeadsRequest, ReportDealRequest, StreamLeadsRequest,
};

use crate::helpers::*;

backend_tests!(
    subscribers_beyond_the_bound_are_refused_until_one_leaves,
    named_consumers_are_bounded_and_never_start_past_the_last_event,
    a_value_no_store_can_keep_fails_its_own_call_only,
    a_list_page_is_bounded_in_bytes_as_well_as_in_items,
);

async fn subscribers_beyond_the_bound_are_refused_until_one_leaves(options: Options) {
    let app = TestApp::spawn_with(options.args(["--grpc-max-subscribers", "2"])).await;
    let first = app.stream(StreamLeadsRequest::default()).await;
    let _second = app.stream(StreamLeadsRequest::default()).await;

    let mut client = app.grpc().await;
    let refused = client
        .stream_leads(StreamLeadsRequest::default())
        .await
        .unwrap_err();
    drop(first);
    // The place is free once the server notices the stream is gone.
    let again = within("a place among the subscribers", async {
        loop {
            match client.stream_leads(StreamLeadsRequest::default()).await {
                Ok(stream) => return stream,
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(status) => panic!("{status:?}"),
            }
        }
    })
    .await;

    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.message().contains("--grpc-max-subscribers"));
    drop(again);
}

async fn named_consumers_are_bounded_and_never_start_past_the_last_event(options: Options) {
    let app = TestApp::spawn_with(options.args(["--max-consumers", "2"])).await;
    let mut client = app.grpc().await;
    assert_eq!(app.lead("1").await.0, 200);
    let ack = |consumer: &str| AckLeadsRequest {
        consumer: consumer.into(),
        sequence: 1,
    };
    let named = |consumer: &str, after_sequence| StreamLeadsRequest {
        consumer: consumer.into(),
        after_sequence,
        ..Default::default()
    };

    let past = client.stream_leads(named("ahead", 5)).await.unwrap_err();
    client.ack_leads(ack("one")).await.unwrap();
    client.stream_leads(named("two", 1)).await.unwrap();
    let third_by_ack = client.ack_leads(ack("three")).await.unwrap_err();
    let third_by_stream = client.stream_leads(named("three", 0)).await.unwrap_err();
    let existing = client.ack_leads(ack("one")).await;
    client
        .delete_consumer(DeleteConsumerRequest {
            consumer: "one".into(),
        })
        .await
        .unwrap();
    let after_delete = client.ack_leads(ack("three")).await;
    // A deleted consumer leaves the metrics (refreshed in the background).
    let gone = within("the deleted consumer's series to go", async {
        loop {
            let metrics = app.scrape().await;
            if metrics.contains(r#"consumer="three""#) {
                return metrics;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    assert_eq!(past.code(), tonic::Code::InvalidArgument, "{past:?}");
    assert_eq!(third_by_ack.code(), tonic::Code::ResourceExhausted);
    assert!(third_by_ack.message().contains("--max-consumers"));
    assert_eq!(third_by_stream.code(), tonic::Code::ResourceExhausted);
    assert!(
        existing.is_ok(),
        "a consumer that exists moves on: {existing:?}"
    );
    assert!(after_delete.is_ok(), "{after_delete:?}");
    assert!(!gone.contains(r#"consumer="one""#), "{gone}");
}

async fn a_value_no_store_can_keep_fails_its_own_call_only(options: Options) {
    let app = TestApp::spawn_with(options).await;
    let mut client = app.grpc().await;
    let ids: Vec<String> = (0..40).map(|n| format!("lead-{n}")).collect();
    let token = token();

    // Webhooks in flight while a report with a NUL arrives: they share batches.
    let senders = send_leads_concurrently(&app, ids.clone(), 8, "text");
    let reports = async {
        let mut refused = vec![];
        for n in 0..5 {
            let report = ReportDealRequest {
                lead_id: "lead-0".into(),
                deal_id: format!("D\u{0}{n}"),
                ..Default::default()
            };
            refused.push(client.report_deal(report).await.unwrap_err());
            let named = ReportDealRequest {
                lead_id: "lead-0".into(),
                name: Some("a\u{0}b".into()),
                ..Default::default()
            };
            refused.push(client.report_deal(named).await.unwrap_err());
        }
        refused
    };
    let ((), refused) = tokio::join!(senders, reports);
    // No webhook field can fail a batch either: a NUL in the title and the visit.
    let (status, _) = app
        .get_raw(&format!(
            "/webhook?user={LOGIN}&token={token}&action=lead&id=nul&title=a%00b&visit=9%0009"
        ))
        .await;
    let (lookup, _) = app
        .get_raw(&format!(
            "/webhook?user={LOGIN}&token={token}&action=message&leadId=x%00&text=t"
        ))
        .await;

    for status in &refused {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    assert_eq!(status, 200);
    assert_eq!(
        lookup, 200,
        "a message whose id has a control character is kept (as an unknown action)"
    );
    // An action named with a NUL is kept too: the name is the sender's to choose.
    let (unknown, _) = app
        .get_raw(&format!(
            "/webhook?user={LOGIN}&token={token}&action=x%00y&text=t"
        ))
        .await;
    assert_eq!(unknown, 200);
    let events = app.stored_events().await;
    assert_eq!(
        events.len(),
        43,
        "every lead of the batches, the NUL one, the message and the unknown action"
    );
}

async fn a_list_page_is_bounded_in_bytes_as_well_as_in_items(options: Options) {
    let app = TestApp::spawn_with(options.args(["--grpc-max-page-bytes", "16384"])).await;
    let text = "x".repeat(5_000);
    let ids: Vec<String> = (0..10).map(|n| n.to_string()).collect();
    send_leads_concurrently(&app, ids, 1, &text).await;
    let mut client = app.grpc().await;

    let mut pages = vec![];
    let mut token = String::new();
    loop {
        let page = client
            .list_leads(ListLeadsRequest {
                page_size: 100,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages.push(page.leads.len());
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }

    assert!(
        pages.iter().all(|count| (1..=3).contains(count)),
        "{pages:?}"
    );
    assert_eq!(pages.iter().sum::<usize>(), 10, "{pages:?}");
}

#[tokio::test]
async fn a_stream_that_stops_reading_does_not_hold_the_stop_past_the_drain() {
    let app = TestApp::spawn_with(
        Options::default()
            .args(["--shutdown-drain-ms", "300"])
            .in_a_process(),
    )
    .await;
    // More than the flow-control windows of a client that reads nothing.
    let text = "y".repeat(60_000);
    let ids: Vec<String> = (0..50).map(|n| n.to_string()).collect();
    send_leads_concurrently(&app, ids, 8, &text).await;
    let channel = tonic::transport::Endpoint::from_shared(app.grpc_addr.clone())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut stream = roistat_leads::proto::lead_service_client::LeadServiceClient::new(channel)
        .stream_leads(StreamLeadsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // The first event proves the server is sending; the others cannot fit in the
    // client's window, and it reads no more.
    next_event(&mut stream).await;

    let mut app = app;
    let status = app.terminate().await;

    assert!(status.success(), "{status}");
    assert!(
        app.logs().iter().any(|line| line.contains("cut")),
        "{:?}",
        app.logs()
    );
    assert!(app.logs().iter().any(|line| line.contains("stopped")));
    drop(stream);
}

#[tokio::test]
async fn an_empty_password_is_refused_at_start_unless_it_is_wanted() {
    let empty = [("ROISTAT_USER", "demo"), ("ROISTAT_PASSWORD", "")];

    let refused = check_config(&[], &empty).await;
    let wanted = check_config(&["--allow-empty-password"], &empty).await;

    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("set a password in Roistat's integration settings")
            && message.contains("--allow-empty-password"),
        "{message}"
    );
    assert!(wanted.status.success(), "{wanted:?}");

    // Accepted, the token is md5(login): what Roistat sends with an empty password.
    let app = TestApp::spawn_with(
        Options::default()
            .env("ROISTAT_PASSWORD", "")
            .env("ROISTAT_LEADS_ALLOW_EMPTY_PASSWORD", "true"),
    )
    .await;
    let md5_login = token_for(LOGIN, "");
    let (status, _) = app
        .get_webhook(&[
            ("user", LOGIN),
            ("token", &md5_login),
            ("action", "lead"),
            ("id", "1"),
        ])
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn refusals_are_logged_briefly_and_not_all_of_a_flood() {
    let app = TestApp::spawn_with(Options::default().in_a_process()).await;
    let long_path = format!("/{}", "p".repeat(3_000));
    for _ in 0..60 {
        assert_eq!(app.get_raw(&long_path).await.0, 404);
    }

    let logged: Vec<String> = app
        .logs()
        .into_iter()
        .filter(|line| line.contains("webhook request refused"))
        .collect();
    assert!(!logged.is_empty());
    assert!(
        logged.len() < 60,
        "a flood is not logged whole: {}",
        logged.len()
    );
    for line in &logged {
        assert!(!line.contains(&"p".repeat(100)), "a bounded path: {line}");
    }
}

/// A boolean setting takes true/false, 1/0, yes/no and on/off from the environment
/// and the file alike (a container's `ROISTAT_LEADS_GRPC_INSECURE=1` works).
#[tokio::test]
async fn booleans_are_read_in_every_common_form_from_every_source() {
    let base = [("ROISTAT_USER", "u"), ("ROISTAT_PASSWORD", "p")];
    let shown = |output: std::process::Output| {
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    for (value, expected) in [
        ("1", true),
        ("yes", true),
        ("ON", true),
        ("true", true),
        ("0", false),
        ("no", false),
        ("off", false),
    ] {
        let mut env = base.to_vec();
        env.push(("ROISTAT_LEADS_GRPC_INSECURE", value));
        let text = shown(check_config(&[], &env).await);
        assert!(
            text.contains(&format!("grpc_insecure = {expected}")),
            "{value}: {text}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    for (value, expected) in [
        ("\"yes\"", true),
        ("1", true),
        ("\"off\"", false),
        ("true", true),
    ] {
        let file = dir.path().join("config.toml");
        std::fs::write(&file, format!("grpc_insecure = {value}\n")).unwrap();
        let text = shown(check_config(&["--config", file.to_str().unwrap()], &base).await);
        assert!(
            text.contains(&format!("grpc_insecure = {expected}")),
            "{value}: {text}"
        );
    }
    let mut env = base.to_vec();
    env.push(("ROISTAT_LEADS_GRPC_INSECURE", "maybe"));
    let refused = check_config(&[], &env).await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
}

/// Under systemd, a secret's file named relative is the credential systemd handed
/// the service (`LoadCredential=`, read from `$CREDENTIALS_DIRECTORY`).
#[tokio::test]
async fn a_relative_secret_file_is_read_from_the_systemd_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("roistat_password"), "from-systemd\n").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "roistat_user = \"u\"\nroistat_password_file = \"roistat_password\"\n",
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let with = check_config(
        &args,
        &[("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap())],
    )
    .await;
    let without = check_config(&args, &[]).await;

    assert!(with.status.success(), "{with:?}");
    assert_eq!(without.status.code(), Some(2), "{without:?}");
    assert!(String::from_utf8_lossy(&without.stderr).contains("roistat_password"));
}

/// check-config says where each value came from: a flag, an environment variable by
/// its name, the file; a default says nothing. An environment variable that beats
/// the file shows as such.
#[tokio::test]
async fn check_config_shows_where_each_value_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "grpc_addr = \"127.0.0.1:50052\"\ndatabase_url = \"sqlite:///data/file.db\"\n",
    )
    .unwrap();
    let output = check_config(
        &[
            "--config",
            config.to_str().unwrap(),
            "--http-addr",
            "0.0.0.0:9001",
        ],
        &[
            ("ROISTAT_USER", "u"),
            ("ROISTAT_PASSWORD", "p"),
            ("DATABASE_URL", "sqlite:///data/env.db"),
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    for line in [
        "http_addr = \"0.0.0.0:9001\"  # from flag --http-addr",
        "grpc_addr = \"127.0.0.1:50052\"  # from file",
        "database_url = \"sqlite:///data/env.db\"  # from env DATABASE_URL",
        "console_max_feeds = 32\n",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
}

/// `--version` and the build-info metric say the version and the commit.
#[tokio::test]
async fn the_version_names_the_commit() {
    let output = within(
        "--version",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_roistat-leads"))
            .arg("--version")
            .output(),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let expected = format!("roistat-leads {} (", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected), "{text}");
    let commit = text
        .trim()
        .trim_start_matches(&expected)
        .trim_end_matches(')');
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{text}"
    );
    let app = TestApp::spawn_with(Options::default().in_a_process()).await;
    let scrape = app.scrape().await;
    assert!(scrape.contains(&format!("commit=\"{commit}\"")), "{scrape}");
}
