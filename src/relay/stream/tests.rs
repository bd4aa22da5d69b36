//! The stream's switch from history to live events, over the in-memory fake of
//! the event log: no gap, no repeat, whatever the subscriber or the store does.

use super::*;
use crate::store::fake::FakeLog;

/// Streaming over the fake log, with heartbeats out of the way.
fn streams(log: &Arc<FakeLog>) -> (Streams, CancellationToken) {
    let options = RelayOptions {
        heartbeat: Duration::from_secs(3600),
        ..RelayOptions::default()
    };
    let shutdown = CancellationToken::new();
    let streams = Streams::new(log.clone(), log.clone(), &options, shutdown.clone());
    (streams, shutdown)
}

fn from_start() -> StreamRequest {
    StreamRequest {
        start: Some(StreamStart::After(0)),
        ..StreamRequest::default()
    }
}

/// What a subscriber received, in order, until it has `last`.
#[derive(Debug, Default)]
struct Received {
    sequences: Vec<u64>,
    replayed: usize,
    live: usize,
}

async fn receive_until(items: &mut mpsc::Receiver<StreamItem>, last: u64) -> Received {
    let mut received = Received::default();
    while received.sequences.last() < Some(&last) {
        match items.recv().await.expect("the stream ended early") {
            StreamItem::Replayed(batch) => {
                received.replayed += batch.len();
                received
                    .sequences
                    .extend(batch.iter().map(|event| event.sequence));
            }
            StreamItem::Live(event) => {
                received.live += 1;
                received.sequences.push(event.sequence);
            }
            StreamItem::Heartbeat { .. } => {}
        }
    }
    received
}

fn every(first: u64, last: u64) -> Vec<u64> {
    (first..=last).collect()
}

#[tokio::test]
async fn catch_up_then_live_without_gap_or_repeat() {
    let log = FakeLog::new(16_384);
    // More than two batches of history.
    log.append(2 * REPLAY_BATCH as usize + 904);
    let (streams, _shutdown) = streams(&log);
    let mut items = streams.open(from_start(), 1).await.unwrap();

    // Events commit while the subscriber is still reading history.
    let first = receive_until(&mut items, 10).await;
    let during = log.append(100);
    let rest = receive_until(&mut items, during).await;
    // And after it switched to the live feed.
    let after = log.append(3);
    let live = receive_until(&mut items, after).await;

    let mut sequences = first.sequences;
    sequences.extend(rest.sequences);
    sequences.extend(&live.sequences);
    assert_eq!(sequences, every(1, after), "no gap and no repeat");
    assert_eq!(
        (live.live, live.replayed),
        (3, 0),
        "events after the switch come from the live feed"
    );
}

#[tokio::test]
async fn a_subscriber_that_lags_past_the_live_buffer_catches_up_from_the_store() {
    // The live feed holds 4 events for a slow subscriber.
    let log = FakeLog::new(4);
    let (streams, _shutdown) = streams(&log);
    let mut items = streams.open(from_start(), 1).await.unwrap();
    log.append(1);
    let first = receive_until(&mut items, 1).await;
    let reads_before = log.reads();

    // Far more than the feed holds, while the subscriber does not read.
    let last = log.append(500);
    let rest = receive_until(&mut items, last).await;

    let mut sequences = first.sequences;
    sequences.extend(rest.sequences);
    assert_eq!(sequences, every(1, last), "no gap and no repeat");
    assert!(
        log.reads() > reads_before,
        "the subscriber went back to the store for what the feed dropped"
    );
    assert!(
        rest.replayed > 0,
        "what the feed dropped was replayed from the store"
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_error_mid_catch_up_is_retried_without_losing_events() {
    let log = FakeLog::new(16_384);
    let last = log.append(3 * REPLAY_BATCH as usize);
    // The first batch reads; the next two reads fail.
    log.fail_reads(1, 2);
    let (streams, _shutdown) = streams(&log);
    let mut items = streams.open(from_start(), 1).await.unwrap();

    let received = receive_until(&mut items, last).await;

    assert_eq!(received.sequences, every(1, last), "no gap and no repeat");
    assert_eq!(log.failures_left(), 0, "both failures were met and retried");
}

#[tokio::test]
async fn shutdown_ends_the_stream_and_frees_its_seat() {
    let log = FakeLog::new(16);
    let (streams, shutdown) = streams(&log);
    let mut catching_up = streams.open(from_start(), 1).await.unwrap();
    log.append(1);
    receive_until(&mut catching_up, 1).await;
    assert_eq!(streams.subscribers.load(Ordering::SeqCst), 1);

    shutdown.cancel();

    while let Some(item) = catching_up.recv().await {
        assert!(
            matches!(item, StreamItem::Live(_) | StreamItem::Replayed(_)),
            "only what was already on its way arrives: {item:?}"
        );
    }
    for _ in 0..100 {
        if streams.subscribers.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        streams.subscribers.load(Ordering::SeqCst),
        0,
        "the ended stream's seat is free"
    );
}

#[tokio::test]
async fn a_named_consumer_resumes_after_its_acknowledged_sequence() {
    let log = FakeLog::new(64);
    log.append(20);
    let max = RelayOptions::default().max_consumers;
    log.ack_consumer("billing", 12, max).await.unwrap();
    let (streams, _shutdown) = streams(&log);
    let request = StreamRequest {
        consumer: Some("billing".into()),
        ..StreamRequest::default()
    };
    let mut items = streams.open(request, 8).await.unwrap();

    let received = receive_until(&mut items, 20).await;

    assert_eq!(received.sequences, every(13, 20));
}

#[tokio::test]
async fn subscribers_past_the_bound_are_refused() {
    let log = FakeLog::new(16);
    let options = RelayOptions {
        max_subscribers: 1,
        ..RelayOptions::default()
    };
    let streams = Streams::new(log.clone(), log.clone(), &options, CancellationToken::new());
    let _open = streams.open(from_start(), 1).await.unwrap();

    let refused = streams.open(from_start(), 1).await.unwrap_err();

    assert!(
        matches!(refused, Error::ResourceExhausted(_)),
        "{refused:?}"
    );
}
