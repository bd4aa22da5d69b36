//! Start-up, restarts on the same database, and shutdown.

use roistat_leads::proto::{GetLeadRequest, StreamLeadsRequest};

use crate::helpers::*;

backend_tests!(
    leads_survive_a_restart_and_a_stream_resumes_from_its_cursor,
    sigterm_stops_the_service_with_exit_code_zero,
    logs_carry_ids_but_no_lead_content_or_secrets,
    an_unreadable_stored_row_is_an_internal_error_not_an_outage,
);

async fn leads_survive_a_restart_and_a_stream_resumes_from_its_cursor(options: Options) {
    let app = TestApp::spawn_with(options).await;
    for id in ["1", "2", "3"] {
        assert_eq!(app.lead(id).await.0, 200);
    }
    let mut stream = app.stream(StreamLeadsRequest::default()).await;
    let mut cursor = 0;
    for _ in 0..2 {
        cursor = next_event(&mut stream).await.sequence;
    }
    drop(stream);

    let app = app.restart().await;
    let retry = app.lead("2").await;
    app.lead("4").await;
    let mut resumed = app
        .stream(StreamLeadsRequest {
            after_sequence: cursor,
            ..Default::default()
        })
        .await;

    assert_eq!(
        retry.1["order_id"], "2",
        "a retry after the restart is still a retry"
    );
    let third = next_event(&mut resumed).await;
    let fourth = next_event(&mut resumed).await;
    assert_eq!((third.sequence, lead_id(&third)), (3, Some("3")));
    assert_eq!((fourth.sequence, lead_id(&fourth)), (4, Some("4")));
    let lead = app
        .grpc()
        .await
        .get_lead(GetLeadRequest {
            lead_id: "1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lead.sequence, 1);
}

async fn an_unreadable_stored_row_is_an_internal_error_not_an_outage(options: Options) {
    let app = TestApp::spawn_with(options.clone().in_a_process()).await;
    let mut client = app.grpc().await;
    assert_eq!(app.lead("1").await.0, 200);
    client
        .report_deal(roistat_leads::proto::ReportDealRequest {
            lead_id: "1".into(),
            status: Some("1".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    options
        .database
        .execute(
            "UPDATE events SET body = substr(body, 1, 3) WHERE sequence = 1; \
             UPDATE deal_versions SET payload = 'not JSON either'",
        )
        .await;
    let read = client
        .get_lead(GetLeadRequest {
            lead_id: "1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let (export, body) = app.webhook(&[("action", "export"), ("date", "0")]).await;
    let (ready, _) = app.get_raw("/readyz").await;

    assert_eq!(read.code(), tonic::Code::Internal, "{read:?}");
    assert_eq!(read.message(), "internal error");
    assert_eq!(
        export, 500,
        "not a 503 that Roistat would retry forever: {body}"
    );
    assert_eq!(body["status"], "error");
    app.wait_for_logs("store failed", 2).await;
    assert!(
        app.logs()
            .iter()
            .any(|line| line.contains("ERROR") && line.contains("a stored lead cannot be read")),
        "the fault is logged with its cause"
    );
    assert_eq!(ready, 200, "the store itself works");
}

#[tokio::test]
async fn serve_without_credentials_exits_with_a_one_line_explanation() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_roistat-leads"))
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .env_clear()
        .output();
    let output = within("the process to exit", output).await.unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ROISTAT_PASSWORD"), "{stderr}");
}

async fn sigterm_stops_the_service_with_exit_code_zero(options: Options) {
    let mut app = TestApp::spawn_with(options.in_a_process()).await;
    app.lead("1").await;

    let status = app.terminate().await;

    assert!(status.success(), "{status}");
    assert!(app.logs().iter().any(|line| line.contains("stopped")));
}

#[tokio::test]
async fn the_service_manager_is_told_when_it_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let manager = tokio::net::UnixDatagram::bind(&path).unwrap();
    let mut app = TestApp::spawn_with(
        Options::default()
            .in_a_process()
            .env("NOTIFY_SOCKET", path.to_str().unwrap()),
    )
    .await;
    let mut buffer = [0; 256];

    let len = within("READY=1", manager.recv(&mut buffer)).await.unwrap();
    let ready = String::from_utf8_lossy(&buffer[..len]).into_owned();
    app.lead("1").await;
    let status = app.terminate().await;
    let len = within("STOPPING=1", manager.recv(&mut buffer))
        .await
        .unwrap();
    let stopping = String::from_utf8_lossy(&buffer[..len]).into_owned();

    assert_eq!(ready.lines().next(), Some("READY=1"), "{ready}");
    assert!(status.success(), "{status}");
    assert_eq!(stopping.lines().next(), Some("STOPPING=1"), "{stopping}");
}

async fn logs_carry_ids_but_no_lead_content_or_secrets(options: Options) {
    let app = TestApp::spawn_with(options.in_a_process()).await;
    let params = roistat_example_lead("77");
    let query: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    app.webhook(&query).await;
    app.get_webhook(&[
        ("user", LOGIN),
        ("token", "0123456789abcdef0123456789abcdef"),
        ("action", "lead"),
        ("id", "78"),
    ])
    .await;

    let logs = app.logs().join("\n");

    assert!(logs.contains("lead_id=77"), "{logs}");
    for secret in [
        "Robert",
        "11230001122",
        "email@mail.com",
        "Promo-code",
        PASSWORD,
        &token(),
        "0123456789abcdef",
    ] {
        assert!(!logs.contains(secret), "logs contain {secret:?}:\n{logs}");
    }
}

#[tokio::test]
async fn a_locked_sqlite_store_answers_503_and_recovers_by_itself() {
    let app = TestApp::spawn_with(Options::default()).await;
    assert_eq!(app.lead("before").await.0, 200);
    // Another process takes the database's write lock and holds it, as a stuck
    // backup job or a full disk would stop every commit.
    let intruder = app.options.database.sqlite_conn();
    intruder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let (during, body) = app.lead("during").await;
    wait_for_readiness(&app, 503).await;
    intruder.execute_batch("ROLLBACK").unwrap();
    let (after, _) = app.lead("during").await;
    wait_for_readiness(&app, 200).await;

    assert_eq!(
        (during, body["status"].as_str()),
        (503, Some("error")),
        "never ok while nothing commits"
    );
    assert_eq!(
        after, 200,
        "Roistat's retry succeeds once the store is back"
    );
    let ids: Vec<String> = app
        .stored_events()
        .await
        .iter()
        .map(|e| lead_id(e).unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["before", "during"]);
}
