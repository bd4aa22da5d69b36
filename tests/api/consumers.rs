//! Durable named consumers, acknowledgements, heartbeats, filters and `tail`.

use std::process::Stdio;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use roistat_leads::proto::lead_event::Event;
use roistat_leads::proto::{
    AckLeadsRequest, DeleteConsumerRequest, EventKind, GetConsumerRequest, LeadEvent, LeadSource,
    ListConsumersRequest, StreamLeadsRequest,
};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;

backend_tests!(
    a_named_consumer_resumes_after_its_last_ack_across_a_restart,
    two_consumers_progress_independently,
    acks_are_cumulative_idempotent_and_never_move_backwards,
    consumers_are_listed_and_deleted,
    explicit_starts_override_a_consumers_position,
    heartbeats_arrive_on_an_idle_stream,
    filters_skip_events_and_heartbeats_let_the_consumer_move_on,
);

fn consumer_stream(name: &str) -> StreamLeadsRequest {
    StreamLeadsRequest {
        consumer: name.into(),
        ..Default::default()
    }
}

fn ack(consumer: &str, sequence: u64) -> AckLeadsRequest {
    AckLeadsRequest {
        consumer: consumer.into(),
        sequence,
    }
}

fn get(consumer: &str) -> GetConsumerRequest {
    GetConsumerRequest {
        consumer: consumer.into(),
    }
}

async fn send_leads(app: &TestApp, ids: &[&str]) {
    for id in ids {
        assert_eq!(app.lead(id).await.0, 200);
    }
}

/// The next event that is not a heartbeat.
async fn next_lead_event(stream: &mut tonic::Streaming<LeadEvent>) -> LeadEvent {
    loop {
        let event = next_event(stream).await;
        if !matches!(event.event, Some(Event::Heartbeat(_))) {
            return event;
        }
    }
}

async fn a_named_consumer_resumes_after_its_last_ack_across_a_restart(options: Options) {
    let app = TestApp::spawn_with(options).await;
    send_leads(&app, &["1", "2", "3", "4", "5"]).await;
    let mut stream = app.stream(consumer_stream("crm-sync")).await;
    let mut client = app.grpc().await;
    for expected in 1..=5 {
        let event = next_lead_event(&mut stream).await;
        assert_eq!(event.sequence, expected);
        if expected <= 3 {
            client
                .ack_leads(ack("crm-sync", event.sequence))
                .await
                .unwrap();
        }
    }
    drop(stream);

    let app = app.restart().await;
    let consumer = app
        .grpc()
        .await
        .get_consumer(get("crm-sync"))
        .await
        .unwrap()
        .into_inner();
    let mut resumed = app.stream(consumer_stream("crm-sync")).await;
    let fourth = next_lead_event(&mut resumed).await;
    let fifth = next_lead_event(&mut resumed).await;
    send_leads(&app, &["6"]).await;
    let sixth = next_lead_event(&mut resumed).await;

    assert_eq!((consumer.acked_sequence, consumer.pending), (3, 2));
    assert!(consumer.ack_time.is_some());
    assert_eq!((fourth.sequence, lead_id(&fourth)), (4, Some("4")));
    assert_eq!((fifth.sequence, lead_id(&fifth)), (5, Some("5")));
    assert_eq!(
        (sixth.sequence, lead_id(&sixth)),
        (6, Some("6")),
        "nothing between"
    );
}

async fn two_consumers_progress_independently(options: Options) {
    let app = TestApp::spawn_with(options).await;
    send_leads(&app, &["1", "2", "3", "4", "5"]).await;
    let mut client = app.grpc().await;

    client.ack_leads(ack("billing", 2)).await.unwrap();
    client.ack_leads(ack("analytics", 4)).await.unwrap();
    let mut billing = app.stream(consumer_stream("billing")).await;
    let mut analytics = app.stream(consumer_stream("analytics")).await;

    assert_eq!(next_lead_event(&mut billing).await.sequence, 3);
    assert_eq!(next_lead_event(&mut analytics).await.sequence, 5);
    let billing = client
        .get_consumer(get("billing"))
        .await
        .unwrap()
        .into_inner();
    let analytics = client
        .get_consumer(get("analytics"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((billing.acked_sequence, billing.pending), (2, 3));
    assert_eq!((analytics.acked_sequence, analytics.pending), (4, 1));
}

async fn acks_are_cumulative_idempotent_and_never_move_backwards(options: Options) {
    let app = TestApp::spawn_with(options).await;
    send_leads(&app, &["1", "2", "3", "4"]).await;
    let mut client = app.grpc().await;

    let forward = client.ack_leads(ack("c", 4)).await.unwrap().into_inner();
    let backward = client.ack_leads(ack("c", 2)).await.unwrap().into_inner();
    let again = client.ack_leads(ack("c", 4)).await.unwrap().into_inner();
    let beyond = client.ack_leads(ack("c", 99)).await.unwrap_err();
    let bad_name = client.ack_leads(ack("no spaces", 1)).await.unwrap_err();
    let unknown = client.get_consumer(get("never-seen")).await.unwrap_err();

    assert_eq!(forward.consumer.unwrap().acked_sequence, 4);
    assert_eq!(
        backward.consumer.unwrap().acked_sequence,
        4,
        "an ack never moves back"
    );
    assert_eq!(again.consumer.unwrap().acked_sequence, 4);
    assert_eq!(beyond.code(), tonic::Code::InvalidArgument);
    assert_eq!(bad_name.code(), tonic::Code::InvalidArgument);
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(
        client
            .get_consumer(get("c"))
            .await
            .unwrap()
            .into_inner()
            .pending,
        0
    );
}

async fn consumers_are_listed_and_deleted(options: Options) {
    let app = TestApp::spawn_with(options).await;
    send_leads(&app, &["1"]).await;
    let mut client = app.grpc().await;
    for name in ["zeta", "alpha", "mid"] {
        client.ack_leads(ack(name, 1)).await.unwrap();
    }

    let first = client
        .list_consumers(ListConsumersRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let second = client
        .list_consumers(ListConsumersRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    client
        .delete_consumer(DeleteConsumerRequest {
            consumer: "mid".into(),
        })
        .await
        .unwrap();
    let gone = client.get_consumer(get("mid")).await.unwrap_err();
    let twice = client
        .delete_consumer(DeleteConsumerRequest {
            consumer: "mid".into(),
        })
        .await
        .unwrap_err();

    let names = |consumers: &[roistat_leads::proto::Consumer]| -> Vec<String> {
        consumers
            .iter()
            .map(|consumer| consumer.name.clone())
            .collect()
    };
    assert_eq!(names(&first.consumers), ["alpha", "mid"]);
    assert_eq!(names(&second.consumers), ["zeta"]);
    assert!(second.next_page_token.is_empty());
    assert_eq!(gone.code(), tonic::Code::NotFound);
    assert_eq!(twice.code(), tonic::Code::NotFound);
}

async fn explicit_starts_override_a_consumers_position(options: Options) {
    let app = TestApp::spawn_with(options).await;
    send_leads(&app, &["1", "2", "3"]).await;
    let mut client = app.grpc().await;
    client.ack_leads(ack("ops", 1)).await.unwrap();

    let mut explicit = app
        .stream(StreamLeadsRequest {
            consumer: "ops".into(),
            after_sequence: 2,
            ..Default::default()
        })
        .await;
    let mut fresh_only_new = app
        .stream(StreamLeadsRequest {
            consumer: "latecomer".into(),
            only_new: true,
            ..Default::default()
        })
        .await;
    let since_the_start = app
        .stream(StreamLeadsRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await;
    send_leads(&app, &["4"]).await;

    assert_eq!(next_lead_event(&mut explicit).await.sequence, 3);
    assert_eq!(next_lead_event(&mut fresh_only_new).await.sequence, 4);
    let mut since_the_start = since_the_start;
    assert_eq!(next_lead_event(&mut since_the_start).await.sequence, 1);
    // The explicit start did not move the stored position; the new consumer was
    // created where it started.
    assert_eq!(
        client
            .get_consumer(get("ops"))
            .await
            .unwrap()
            .into_inner()
            .acked_sequence,
        1
    );
    assert_eq!(
        client
            .get_consumer(get("latecomer"))
            .await
            .unwrap()
            .into_inner()
            .acked_sequence,
        3
    );
    let conflicting = client
        .stream_leads(StreamLeadsRequest {
            after_sequence: 1,
            only_new: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(conflicting.code(), tonic::Code::InvalidArgument);
}

async fn heartbeats_arrive_on_an_idle_stream(options: Options) {
    let app = TestApp::spawn_with(options.arg("--heartbeat-ms").arg("100")).await;
    send_leads(&app, &["1", "2"]).await;
    let mut stream = app.stream(StreamLeadsRequest::default()).await;
    next_lead_event(&mut stream).await;
    next_lead_event(&mut stream).await;

    let heartbeat = next_event(&mut stream).await;

    let Some(Event::Heartbeat(beat)) = heartbeat.event else {
        panic!("expected a heartbeat, got {heartbeat:?}");
    };
    assert_eq!((heartbeat.sequence, beat.latest_sequence), (2, 2));
}

async fn filters_skip_events_and_heartbeats_let_the_consumer_move_on(options: Options) {
    let app = TestApp::spawn_with(options.arg("--heartbeat-ms").arg("100")).await;
    for (id, title) in [
        ("1", "Caught lead: 1"),
        ("2", "Incoming call from 2"),
        ("3", "JivoSite Lead"),
        ("4", "Звонок от 4"),
    ] {
        assert_eq!(
            app.webhook(&[("action", "lead"), ("id", id), ("title", title)])
                .await
                .0,
            200
        );
    }
    app.webhook(&[("action", "message"), ("leadId", "2"), ("text", "hello")])
        .await;
    let mut client = app.grpc().await;

    let mut calls = app
        .stream(StreamLeadsRequest {
            consumer: "calls".into(),
            sources: vec![LeadSource::Calltracking as i32],
            kinds: vec![EventKind::Lead as i32],
            ..Default::default()
        })
        .await;
    let mut messages = app
        .stream(StreamLeadsRequest {
            kinds: vec![EventKind::Message as i32],
            ..Default::default()
        })
        .await;

    let first = next_lead_event(&mut calls).await;
    let second = next_lead_event(&mut calls).await;
    let heartbeat = next_event(&mut calls).await;
    let message = next_lead_event(&mut messages).await;
    client
        .ack_leads(ack("calls", heartbeat.sequence))
        .await
        .unwrap();

    assert_eq!((first.sequence, second.sequence), (2, 4));
    assert!(matches!(heartbeat.event, Some(Event::Heartbeat(_))));
    assert_eq!(
        heartbeat.sequence, 5,
        "the filtered message still moves the stream on"
    );
    assert_eq!(message.sequence, 5);
    let consumer = client
        .get_consumer(get("calls"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((consumer.acked_sequence, consumer.pending), (5, 0));
    let bad = client
        .stream_leads(StreamLeadsRequest {
            sources: vec![0],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

/// `roistat-leads tail` against `app`, its standard output piped.
fn spawn_tail(app: &TestApp, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_roistat-leads"))
        .args([
            "tail",
            "--grpc-addr",
            app.grpc_addr.trim_start_matches("http://"),
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start tail")
}

#[tokio::test]
async fn tail_prints_json_lines_and_acks_as_a_consumer() {
    let app = TestApp::spawn_with(Options::default()).await;
    send_leads(&app, &["first"]).await;
    let mut tail = spawn_tail(&app, &["--consumer", "operator"]);
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();

    let line = within("a line", lines.next_line()).await.unwrap().unwrap();
    send_leads(&app, &["second"]).await;
    app.webhook(&[
        ("action", "message"),
        ("leadId", "second"),
        ("title", "Duplicated lead"),
        ("text", "again"),
    ])
    .await;
    let second = within("a line", lines.next_line()).await.unwrap().unwrap();
    let third = within("a line", lines.next_line()).await.unwrap().unwrap();
    kill(Pid::from_raw(tail.id().unwrap() as i32), Signal::SIGINT).unwrap();
    let status = within("tail to exit", tail.wait()).await.unwrap();

    let first: serde_json::Value = serde_json::from_str(&line).unwrap();
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    let third: serde_json::Value = serde_json::from_str(&third).unwrap();
    assert_eq!(first["sequence"], 1);
    assert_eq!(first["lead"]["lead_id"], "first");
    assert_eq!(first["lead"]["source"], "LEAD_SOURCE_LEAD_HUNTER");
    assert!(first["receive_time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(second["lead"]["lead_id"], "second");
    assert_eq!(third["message"]["title"], "Duplicated lead");
    assert!(status.success(), "{status}");
    let consumer = app
        .grpc()
        .await
        .get_consumer(get("operator"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(consumer.acked_sequence, 3);
}

#[tokio::test]
async fn tail_starts_after_a_sequence_and_filters_by_source() {
    let app = TestApp::spawn_with(Options::default()).await;
    for (id, title) in [
        ("1", "Caught lead: 1"),
        ("2", "Incoming call from 2"),
        ("3", "Incoming call from 3"),
    ] {
        app.webhook(&[("action", "lead"), ("id", id), ("title", title)])
            .await;
    }
    let mut tail = spawn_tail(&app, &["--after", "2", "--source", "calltracking"]);
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();

    let line = within("a line", lines.next_line()).await.unwrap().unwrap();

    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (
            event["sequence"].as_u64(),
            event["lead"]["lead_id"].as_str()
        ),
        (Some(3), Some("3"))
    );
}

#[tokio::test]
async fn tail_ends_cleanly_when_its_output_is_closed() {
    let app = TestApp::spawn_with(Options::default()).await;
    send_leads(&app, &["1"]).await;
    let mut tail = spawn_tail(&app, &[]);
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    within("a line", lines.next_line()).await.unwrap().unwrap();

    // The reader goes away, as with `| head -1`, while tail waits for the next
    // event: it must notice without another event to write.
    drop(lines);
    let status = within("tail to exit", tail.wait()).await.unwrap();

    assert!(status.success(), "{status}");
}
