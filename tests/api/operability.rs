//! Metrics, JSON logs, the configuration file with several integrations, `send`
//! and `check-config`.

use std::collections::BTreeMap;
use std::path::Path;

use roistat_leads::proto::{AckLeadsRequest, GetLeadRequest, ListLeadsRequest, StreamLeadsRequest};
use serde_json::{Value, json};

use crate::helpers::*;

backend_tests!(several_integrations_each_take_their_own_credentials);

/// Prometheus text format: `# HELP`/`# TYPE` comments, blank lines, and samples
/// `name{label="value",...} number`. Returns the samples by their full name.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let bare = name.split('{').next().unwrap();
        assert!(
            !bare.is_empty()
                && bare
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = name.strip_prefix(bare) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line:?}"
            );
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(name.to_owned(), value);
    }
    samples
}

async fn metrics(app: &TestApp, base: &str) -> BTreeMap<String, f64> {
    let response = within("metrics", app.http.get(format!("{base}/metrics")).send())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    parse_prometheus(&response.text().await.unwrap())
}

fn sample(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_with_traffic() {
    let app = TestApp::spawn_with(
        Options::default()
            .arg("--metrics-addr")
            .arg("127.0.0.1:0")
            .in_a_process(),
    )
    .await;
    let metrics_base = {
        let line = app
            .logs()
            .into_iter()
            .find(|line| line.contains("listening"))
            .unwrap();
        format!("http://{}", field(&line, "metrics_addr=").unwrap())
    };
    let before = metrics(&app, &metrics_base).await;

    app.lead("1").await;
    app.lead("1").await;
    app.get_webhook(&[
        ("user", LOGIN),
        ("token", "0".repeat(32).as_str()),
        ("action", "lead"),
        ("id", "2"),
    ])
    .await;
    let mut stream = app.stream(StreamLeadsRequest::default()).await;
    next_event(&mut stream).await;
    app.grpc()
        .await
        .ack_leads(AckLeadsRequest {
            consumer: "billing".into(),
            sequence: 1,
        })
        .await
        .unwrap();
    app.lead("3").await;
    next_event(&mut stream).await;
    // The consumers' figures are refreshed in the background.
    let pending = r#"roistat_leads_consumer_pending{consumer="billing"}"#;
    let after = within("the consumer's figure", async {
        loop {
            let after = metrics(&app, &metrics_base).await;
            if after.contains_key(pending) {
                return after;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    let on_webhook_port = app
        .http
        .get(format!("{}/metrics", app.http_base))
        .send()
        .await
        .unwrap()
        .status();

    let ok = r#"roistat_leads_webhooks_total{integration="default",action="lead",outcome="ok"}"#;
    assert_eq!(sample(&before, ok), 0.0, "present from the start, at zero");
    assert!(before.contains_key(ok), "present from the start, at zero");
    assert_eq!(sample(&after, ok) - sample(&before, ok), 3.0);
    let refused = r#"roistat_leads_webhooks_total{integration="default",action="lead",outcome="unauthorized"}"#;
    assert_eq!(sample(&after, refused), 1.0);
    assert_eq!(sample(&after, "roistat_leads_auth_failures_total"), 1.0);
    assert_eq!(
        sample(
            &after,
            r#"roistat_leads_leads_total{integration="default",source="lead_hunter"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &after,
            r#"roistat_leads_retries_deduplicated_total{kind="lead"}"#
        ),
        1.0
    );
    assert_eq!(sample(&after, "roistat_leads_stream_subscribers"), 1.0);
    assert_eq!(sample(&after, "roistat_leads_events_sent_total"), 2.0);
    assert_eq!(sample(&after, pending), 1.0);
    assert!(
        sample(
            &after,
            r#"roistat_leads_ingest_seconds_count{action="lead"}"#
        ) >= 4.0
    );
    assert!(
        sample(
            &after,
            r#"roistat_leads_store_commit_seconds_count{backend="sqlite"}"#
        ) >= 2.0
    );
    assert!(
        after
            .keys()
            .any(|name| name.starts_with("roistat_leads_subscriber_lag_events_bucket"))
    );
    assert_eq!(
        on_webhook_port, 404,
        "with an address of its own, /metrics is not on the public port"
    );
}

#[tokio::test]
async fn json_logs_parse_and_carry_request_ids() {
    let app = TestApp::spawn_with(
        Options::default()
            .arg("--log-format")
            .arg("json")
            .in_a_process(),
    )
    .await;
    let token = token();

    let response = app
        .http
        .get(format!("{}/webhook", app.http_base))
        .query(&[
            ("user", LOGIN),
            ("token", &token),
            ("action", "lead"),
            ("id", "42"),
        ])
        .header("x-request-id", "roistat-retry-7")
        .send()
        .await
        .unwrap();
    let generated = app.lead("43").await;
    app.grpc()
        .await
        .list_leads(ListLeadsRequest::default())
        .await
        .unwrap();
    let mut stream = app.stream(StreamLeadsRequest::default()).await;
    next_event(&mut stream).await;

    assert_eq!(response.headers()["x-request-id"], "roistat-retry-7");
    assert_eq!(generated.0, 200);
    let lines: Vec<Value> = app
        .logs()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let stored: Vec<&Value> = lines
        .iter()
        .filter(|line| line["fields"]["message"] == "lead stored")
        .collect();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["fields"]["lead_id"], "42");
    assert_eq!(stored[0]["span"]["request_id"], "roistat-retry-7");
    let generated_id = stored[1]["span"]["request_id"].as_str().unwrap();
    assert!(!generated_id.is_empty() && generated_id != "roistat-retry-7");
    let opened = lines
        .iter()
        .find(|line| line["fields"]["message"] == "stream opened")
        .unwrap();
    assert_eq!(opened["span"]["name"], "grpc");
    assert!(
        opened["span"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(
        opened["span"]["method"]
            .as_str()
            .unwrap()
            .ends_with("/StreamLeads")
    );
}

/// Writes `text` as the configuration file `name` in the test's directory.
fn write_config(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn several_integrations_each_take_their_own_credentials(options: Options) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("shop-b.secret");
    std::fs::write(&secret, "b-password\n").unwrap();
    let config = write_config(
        dir.path(),
        "roistat-leads.toml",
        &format!(
            r#"
[[integrations]]
name = "default"
login = "{LOGIN}"
password = "{PASSWORD}"

[[integrations]]
name = "shop-b"
login = "b"
password_file = "{}"
"#,
            secret.display()
        ),
    );
    let options = options
        .without_env("ROISTAT_USER")
        .without_env("ROISTAT_PASSWORD")
        .arg("--config")
        .arg(config);
    let app = TestApp::spawn_with(options).await;
    let b_token = token_for("b", "b-password");
    let lead = |user: &'static str, token: String, id: &'static str| async move {
        vec![
            ("user", user.to_owned()),
            ("token", token),
            ("action", "lead".to_owned()),
            ("id", id.to_owned()),
        ]
    };
    let send = |path: &'static str, query: Vec<(&'static str, String)>| {
        let request = app
            .http
            .get(format!("{}{path}", app.http_base))
            .query(&query);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };

    let default_ok = send("/webhook", lead(LOGIN, token(), "1").await).await;
    let b_ok = send("/webhook/shop-b", lead("b", b_token.clone(), "1").await).await;
    let default_with_b = send("/webhook", lead("b", b_token.clone(), "2").await).await;
    let b_with_default = send("/webhook/shop-b", lead(LOGIN, token(), "2").await).await;
    let unknown = send("/webhook/shop-c", lead("b", b_token.clone(), "3").await).await;

    assert_eq!(default_ok, (200, json!({"status": "ok", "order_id": "1"})));
    assert_eq!(
        b_ok,
        (200, json!({"status": "ok", "order_id": "1"})),
        "the same id is another lead in another project"
    );
    assert_eq!(default_with_b.0, 401);
    assert_eq!(b_with_default.0, 401);
    assert_eq!((unknown.0, &unknown.1["status"]), (404, &json!("error")));

    let mut client = app.grpc().await;
    let in_b = client
        .get_lead(GetLeadRequest {
            lead_id: "1".into(),
            integration: "shop-b".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(in_b.integration, "shop-b");
    let listed = client
        .list_leads(ListLeadsRequest {
            integration: "shop-b".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.leads.len(), 1);
    assert_eq!(listed.leads[0].integration, "shop-b");
    let mut only_b = app
        .stream(StreamLeadsRequest {
            integrations: vec!["shop-b".into()],
            ..Default::default()
        })
        .await;
    let event = next_event(&mut only_b).await;
    assert_eq!((event.sequence, lead_id(&event)), (2, Some("1")));
}

#[tokio::test]
async fn send_checks_a_running_service_and_its_answer_is_the_exit_status() {
    let app = TestApp::spawn_with(Options::default()).await;
    let mut stream = app.stream(StreamLeadsRequest::default()).await;
    let url = format!("{}/webhook", app.http_base);
    let run = |args: Vec<String>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_roistat-leads"));
        command.arg("send").args(args).env_clear();
        async move { within("send", command.output()).await.unwrap() }
    };
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "--url".to_owned(),
            url.clone(),
            "--roistat-user".into(),
            LOGIN.into(),
        ];
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args
    };

    let lead = run(args(&[
        "--roistat-password",
        PASSWORD,
        "--id",
        "777",
        "--title",
        "Звонок от 79990001122",
    ]))
    .await;
    let message = run(args(&[
        "--roistat-password",
        PASSWORD,
        "--action",
        "message",
        "--id",
        "777",
    ]))
    .await;
    let refused = run(args(&["--roistat-password", "wrong", "--id", "778"])).await;

    assert!(lead.status.success(), "{lead:?}");
    assert_eq!(
        String::from_utf8_lossy(&lead.stdout).trim(),
        r#"200 {"status":"ok","order_id":"777"}"#
    );
    assert!(message.status.success(), "{message:?}");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).starts_with("401 "));
    let event = next_event(&mut stream).await;
    let Some(roistat_leads::proto::lead_event::Event::Lead(lead)) = event.event else {
        panic!("expected a lead, got {event:?}");
    };
    assert_eq!(lead.lead_id, "777");
    assert_eq!(
        lead.source(),
        roistat_leads::proto::LeadSource::Calltracking
    );
    assert_eq!(lead.phone, "+79990001122");
    assert_eq!(lead.page, "https://example.com/");
    assert!(lead.create_time.is_some());
    let next = next_event(&mut stream).await;
    assert!(matches!(
        next.event,
        Some(roistat_leads::proto::lead_event::Event::Message(_))
    ));
}

#[tokio::test]
async fn flags_beat_environment_beats_file_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "roistat-leads.toml",
        r#"
deal_wait_ms = 111
heartbeat_ms = 222
export_page_size = 333
roistat_user = "file-user"
roistat_password = "file-secret"
database_url = "postgres://app:db-secret@db.internal:5432/leads"
"#,
    );

    let output = check_config(
        &["--config", &config, "--export-page-size", "555"],
        &[
            ("ROISTAT_LEADS_HEARTBEAT_MS", "444"),
            ("ROISTAT_LEADS_EXPORT_PAGE_SIZE", "666"),
        ],
    )
    .await;
    let broken = write_config(dir.path(), "broken.toml", "deal_wait = 5\n");
    let refused = check_config(&["--config", &broken], &[]).await;
    let beyond = write_config(dir.path(), "beyond.toml", "stream_buffer = 0\n");
    let out_of_range = check_config(&["--config", &beyond], &[]).await;
    let flag_out_of_range =
        check_config(&["--heartbeat-ms", "1"], &[("ROISTAT_PASSWORD", "x")]).await;

    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    // Each value, and where check-config says it came from.
    let settings: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.split_once(" = "))
        .map(|(key, value)| (key, value.split("  # ").next().unwrap_or(value)))
        .collect();
    let sources: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.split_once(" = "))
        .filter_map(|(key, value)| Some((key, value.split_once("# from ")?.1)))
        .collect();
    assert_eq!(
        settings["deal_wait_ms"], "111",
        "the file beats the default"
    );
    assert_eq!(sources["deal_wait_ms"], "file");
    assert_eq!(sources["heartbeat_ms"], "env ROISTAT_LEADS_HEARTBEAT_MS");
    assert_eq!(sources["export_page_size"], "flag --export-page-size");
    assert!(
        !sources.contains_key("stream_buffer"),
        "a default says nothing"
    );
    assert_eq!(
        settings["heartbeat_ms"], "444",
        "the environment beats the file"
    );
    assert_eq!(
        settings["export_page_size"], "555",
        "a flag beats the environment"
    );
    assert_eq!(settings["stream_buffer"], "1024", "the default");
    assert_eq!(
        settings["database_url"],
        "\"postgres://app:********@db.internal:5432/leads\""
    );
    assert!(text.contains(r#"login = "file-user""#), "{text}");
    assert!(
        !text.contains("file-secret") && !text.contains("db-secret"),
        "secrets are masked: {text}"
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("deal_wait"),
        "{refused:?}"
    );
    // A number from the file is checked like the same flag.
    assert_eq!(out_of_range.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out_of_range.stderr)
            .contains("stream_buffer (--stream-buffer) must be from 1 to 1000000, not 0"),
        "{out_of_range:?}"
    );
    assert_eq!(flag_out_of_range.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&flag_out_of_range.stderr).contains("heartbeat_ms"),
        "{flag_out_of_range:?}"
    );
}

#[tokio::test]
async fn every_consumer_has_its_pending_count_in_the_metrics() {
    // More consumers than one page of the store's listing.
    const CONSUMERS: usize = 1_005;
    let app = TestApp::spawn_with(Options::default().args(["--max-consumers", "2000"])).await;
    app.lead("1").await;
    app.lead("2").await;
    let client = app.grpc().await;
    let mut acks = tokio::task::JoinSet::new();
    for n in 0..CONSUMERS {
        let mut client = client.clone();
        acks.spawn(async move {
            client
                .ack_leads(AckLeadsRequest {
                    consumer: format!("consumer-{n:04}"),
                    sequence: 1,
                })
                .await
                .map(|_| ())
        });
    }
    while let Some(ack) = within("the acks", acks.join_next()).await {
        ack.unwrap().unwrap();
    }

    // Refreshed in the background, not per scrape.
    let samples = within("every consumer's figure", async {
        loop {
            let samples = metrics(&app, &app.http_base).await;
            let count = samples
                .keys()
                .filter(|name| name.starts_with("roistat_leads_consumer_pending{"))
                .count();
            if count == CONSUMERS {
                return samples;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;

    let pending: Vec<f64> = samples
        .iter()
        .filter(|(name, _)| name.starts_with("roistat_leads_consumer_pending{"))
        .map(|(_, value)| *value)
        .collect();
    assert_eq!(pending.len(), CONSUMERS);
    assert!(pending.iter().all(|value| *value == 1.0), "{pending:?}");
    assert_eq!(
        sample(
            &samples,
            r#"roistat_leads_consumer_pending{consumer="consumer-1004"}"#
        ),
        1.0
    );
}

/// Every flag of `serve` is in the configuration reference, with its environment
/// variable: a flag added without a word there fails here.
#[test]
fn every_serve_flag_is_documented() {
    let reference = std::fs::read_to_string("docs/configuration.md").unwrap();
    let command =
        <roistat_leads::cli::ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
    let mut missing = vec![];
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if !reference.contains(&format!("`--{long}`")) {
            missing.push(format!("--{long}"));
        }
        if let Some(env) = arg.get_env()
            && !reference.contains(&format!("`{}`", env.to_string_lossy()))
        {
            missing.push(env.to_string_lossy().into_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md: {missing:?}"
    );
}
