//! StreamLeads: replay, live delivery, cursors, slow subscribers, shutdown.

use roistat_leads::proto::lead_event::Event;
use roistat_leads::proto::{EventKind, StreamLeadsRequest};

use crate::helpers::*;

backend_tests!(
    history_is_replayed_then_live_events_follow_without_gap_or_duplicate,
    a_stream_resumes_after_a_cursor,
    only_new_skips_the_history,
    a_subscriber_slower_than_the_live_buffer_catches_up_from_the_store,
    a_replay_longer_than_one_store_read_is_whole_and_in_order,
    streams_end_cleanly_on_shutdown,
);

fn after(sequence: u64) -> StreamLeadsRequest {
    StreamLeadsRequest {
        after_sequence: sequence,
        ..Default::default()
    }
}

async fn history_is_replayed_then_live_events_follow_without_gap_or_duplicate(options: Options) {
    let app = TestApp::spawn_with(options).await;
    for id in ["1", "2", "3"] {
        assert_eq!(app.lead(id).await.0, 200);
    }

    let mut stream = app.stream(after(0)).await;
    let mut received = vec![];
    for _ in 0..3 {
        received.push(next_event(&mut stream).await);
    }
    for id in ["4", "5"] {
        assert_eq!(app.lead(id).await.0, 200);
    }
    app.lead("2").await; // a retry: no event
    assert_eq!(
        app.webhook(&[
            ("action", "message"),
            ("leadId", "5"),
            ("title", "t"),
            ("text", "x")
        ])
        .await
        .0,
        200
    );
    for _ in 0..3 {
        received.push(next_event(&mut stream).await);
    }

    let sequences: Vec<u64> = received.iter().map(|event| event.sequence).collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5, 6]);
    let ids: Vec<_> = received
        .iter()
        .map(|event| lead_id(event).unwrap())
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "5"]);
    assert!(matches!(received[5].event, Some(Event::Message(_))));
    let Some(Event::Lead(lead)) = &received[0].event else {
        panic!("not a lead")
    };
    assert_eq!(lead.sequence, 1);
    assert_eq!(lead.receive_time, received[0].receive_time);
}

async fn a_stream_resumes_after_a_cursor(options: Options) {
    let app = TestApp::spawn_with(options).await;
    for id in ["a", "b", "c", "d"] {
        app.lead(id).await;
    }

    let mut stream = app.stream(after(2)).await;

    let third = next_event(&mut stream).await;
    let fourth = next_event(&mut stream).await;
    assert_eq!((third.sequence, lead_id(&third)), (3, Some("c")));
    assert_eq!((fourth.sequence, lead_id(&fourth)), (4, Some("d")));
}

async fn only_new_skips_the_history(options: Options) {
    let app = TestApp::spawn_with(options).await;
    app.lead("old-1").await;
    app.lead("old-2").await;

    let mut stream = app
        .stream(StreamLeadsRequest {
            only_new: true,
            ..Default::default()
        })
        .await;
    // The subscription is registered once the stream answered; a lead sent now is new.
    app.lead("new").await;

    let event = next_event(&mut stream).await;
    assert_eq!((event.sequence, lead_id(&event)), (3, Some("new")));
}

async fn a_subscriber_slower_than_the_live_buffer_catches_up_from_the_store(options: Options) {
    // A live buffer of one event: any subscriber that does not keep pace falls behind.
    let app = TestApp::spawn_with(options.arg("--stream-buffer").arg("1").in_a_process()).await;
    let mut stream = app.stream(after(0)).await;
    let first = app.lead("0").await;
    assert_eq!(first.0, 200);
    assert_eq!(next_event(&mut stream).await.sequence, 1);

    // Large leads sent concurrently, while the subscriber reads nothing: far more
    // than the connection's flow-control window and the buffers behind it.
    const LEADS: usize = 300;
    let text = "t".repeat(8 * 1024);
    let ids: Vec<String> = (1..=LEADS).map(|n| n.to_string()).collect();
    send_leads_concurrently(&app, ids, 8, &text).await;

    let mut sequences = vec![];
    for _ in 0..LEADS {
        sequences.push(next_event(&mut stream).await.sequence);
    }
    let expected: Vec<u64> = (2..=LEADS as u64 + 1).collect();
    assert_eq!(sequences, expected, "every event once, in order");
    assert!(
        app.logs()
            .iter()
            .any(|line| line.contains("catching up from the store")),
        "the subscriber should have fallen behind the live buffer"
    );
}

async fn a_replay_longer_than_one_store_read_is_whole_and_in_order(options: Options) {
    // The store is read in batches of a few hundred events, the next one while the
    // last is delivered: several batches, with messages spread across them.
    let app = TestApp::spawn_with(options).await;
    const LEADS: usize = 1_300;
    let ids: Vec<String> = (1..=LEADS).map(|n| format!("lead-{n}")).collect();
    send_leads_concurrently(&app, ids, 8, "text").await;
    for n in (100..=LEADS).step_by(100) {
        let lead = format!("lead-{n}");
        let (status, _) = app
            .webhook(&[("action", "message"), ("leadId", &lead), ("title", "again")])
            .await;
        assert_eq!(status, 200);
    }
    let total = LEADS + LEADS / 100;

    let mut everything = app.stream(after(0)).await;
    let mut sequences = vec![];
    for _ in 0..total {
        sequences.push(next_event(&mut everything).await.sequence);
    }
    let mut only_messages = app
        .stream(StreamLeadsRequest {
            kinds: vec![EventKind::Message as i32],
            ..Default::default()
        })
        .await;
    let mut messages = vec![];
    for _ in 0..LEADS / 100 {
        let event = next_event(&mut only_messages).await;
        assert!(matches!(event.event, Some(Event::Message(_))), "{event:?}");
        messages.push(lead_id(&event).unwrap().to_owned());
    }

    let expected: Vec<u64> = (1..=total as u64).collect();
    assert_eq!(sequences, expected, "every event once, in order");
    let expected: Vec<String> = (100..=LEADS)
        .step_by(100)
        .map(|n| format!("lead-{n}"))
        .collect();
    assert_eq!(messages, expected);
}

async fn streams_end_cleanly_on_shutdown(options: Options) {
    let mut app = TestApp::spawn_with(options).await;
    app.lead("1").await;
    let mut replaying = app.stream(after(0)).await;
    let mut live = app.stream(after(1)).await;
    assert_eq!(next_event(&mut replaying).await.sequence, 1);

    let status = app.terminate().await;

    assert!(status.success(), "exit status {status}");
    assert!(matches!(
        within("the end of the stream", replaying.message()).await,
        Ok(None)
    ));
    assert!(matches!(
        within("the end of the stream", live.message()).await,
        Ok(None)
    ));
}

/// A request StreamLeads cannot decode (its field 1 of another wire type) is
/// refused as any method refuses one, and no stream opens.
#[tokio::test]
async fn a_stream_request_that_cannot_be_decoded_is_refused() {
    use roistat_leads::proto::{GetLeadRequest, LeadEvent};
    let app = TestApp::spawn_with(Options::default()).await;
    app.lead("1").await;
    let mut grpc = tonic::client::Grpc::new(app.channel().await);
    within("the channel", grpc.ready()).await.unwrap();
    let wrong = GetLeadRequest {
        integration: "default".into(),
        lead_id: "1".into(),
    };

    let refused = within(
        "StreamLeads",
        grpc.server_streaming(
            tonic::Request::new(wrong),
            http::uri::PathAndQuery::from_static("/roistat.leads.v1.LeadService/StreamLeads"),
            tonic_prost::ProstCodec::<GetLeadRequest, LeadEvent>::default(),
        ),
    )
    .await
    .unwrap_err();

    assert_eq!(refused.code(), tonic::Code::Internal, "{refused:?}");
    assert!(refused.message().contains("wire type"), "{refused:?}");
}

/// A request larger than `--grpc-max-recv-message-bytes` is refused before it is
/// decoded.
#[tokio::test]
async fn a_stream_request_over_the_receive_limit_is_refused() {
    let app =
        TestApp::spawn_with(Options::default().args(["--grpc-max-recv-message-bytes", "65536"]))
            .await;
    let request = StreamLeadsRequest {
        integrations: vec!["x".repeat(70_000)],
        ..Default::default()
    };

    let refused = within("StreamLeads", app.grpc().await.stream_leads(request))
        .await
        .unwrap_err();

    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
}

/// An event larger than `--grpc-max-send-message-bytes` ends the stream with
/// OUT_OF_RANGE after the events before it, rather than being cut or skipped.
#[tokio::test]
async fn an_event_larger_than_a_message_may_be_ends_the_stream_before_it() {
    let app =
        TestApp::spawn_with(Options::default().args(["--grpc-max-send-message-bytes", "65536"]))
            .await;
    app.lead("1").await;
    let large = "x".repeat(40_000);
    let stored = within(
        "the large lead",
        app.http
            .post(format!("{}/webhook", app.http_base))
            .form(&[
                ("user", LOGIN),
                ("token", &token()),
                ("action", "lead"),
                ("id", "2"),
                ("title", &large),
                ("text", &large),
            ])
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(stored.status(), 200);
    app.lead("3").await;

    let mut stream = app.stream(after(0)).await;
    let first = next_event(&mut stream).await;
    let ended = within("the end of the stream", stream.message())
        .await
        .unwrap_err();

    assert_eq!(first.sequence, 1);
    assert_eq!(ended.code(), tonic::Code::OutOfRange, "{ended:?}");
    assert!(ended.message().contains("event 2"), "{ended:?}");
}
