//! Group commit: one writer per store takes every write waiting in its queue,
//! applies them in one transaction, commits once (one fsync for the lot), then
//! announces what committed and answers each caller. A batch that fails is retried
//! write by write, so one bad write never fails its neighbours.

use std::future::Future;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::{DbError, EventReceipt, ExportKind, LeadReceipt, NewEvent, NewLead, StoreError};
use crate::domain::{
    Client, Deal, DealReport, EncodedEvent, LeadKey, OrderIdMode, RejectedRequest, Scheme,
};

/// Most writes committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;

/// A write, as the writer applies it.
#[derive(Debug)]
pub(super) enum Write {
    InsertLead {
        lead: Box<NewLead>,
        mode: OrderIdMode,
    },
    AssignOrderId {
        key: LeadKey,
        mode: OrderIdMode,
    },
    InsertEvent {
        event: Box<NewEvent>,
        /// How long an identical message or task is the same event.
        dedup_window: Duration,
    },
    ReportDeal {
        key: LeadKey,
        report: Box<DealReport>,
    },
    PutScheme {
        integration: String,
        scheme: Box<Scheme>,
    },
    PutClient {
        integration: String,
        client: Box<Client>,
    },
    ExportSnapshot {
        integration: String,
        kind: ExportKind,
        since: OffsetDateTime,
        restart: bool,
    },
    EnsureConsumer {
        name: String,
        acked_sequence: u64,
        /// The most consumers there may be.
        max: u32,
    },
    AckConsumer {
        name: String,
        sequence: u64,
        max: u32,
    },
    DeleteConsumer {
        name: String,
    },
    RecordRejected {
        request: Box<RejectedRequest>,
        /// How many to keep per integration.
        keep: u32,
    },
    /// An empty write: proves the write path (lock, disk, connection) works.
    Ping,
}

impl Write {
    /// Whether the write may append events (and so needs the event counter).
    pub fn appends_events(&self) -> bool {
        matches!(self, Write::InsertLead { .. } | Write::InsertEvent { .. })
    }

    /// Whether the write may hand out versions, or read the latest one.
    pub fn uses_versions(&self) -> bool {
        matches!(
            self,
            Write::InsertLead { .. }
                | Write::AssignOrderId { .. }
                | Write::ReportDeal { .. }
                | Write::PutClient { .. }
                | Write::ExportSnapshot { .. }
        )
    }
}

/// What a write produced.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    Lead(LeadReceipt),
    Deal(Deal),
    Event(EventReceipt),
    Time(OffsetDateTime),
    Number(u64),
    Flag(bool),
    Done,
}

/// A write's outcome, or its logical refusal (an unknown lead, a conflicting deal
/// id): either is only told once the transaction committed.
pub(super) type Applied = Result<Outcome, StoreError>;

/// A message to the writer.
pub(super) enum Command {
    Write {
        write: Write,
        reply: oneshot::Sender<Applied>,
    },
    /// Finish what was queued before, then stop.
    Stop,
}

/// What a committed transaction changed, for the store to announce.
#[derive(Debug, Default)]
pub(super) struct Committed {
    /// New events, in sequence order.
    pub events: Vec<EncodedEvent>,
    /// Leads whose CRM deal id changed.
    pub deal_reports: Vec<LeadKey>,
}

/// A backend's write side.
pub(super) trait Transactor: Send + 'static {
    /// Applies the writes in one transaction and commits it: one outcome per write,
    /// in order. A database error aborts the transaction and is returned.
    fn apply_batch(
        &mut self,
        batch: &[Write],
    ) -> impl Future<Output = Result<(Vec<Applied>, Committed), DbError>> + Send;

    /// Announces what committed (after the commit, before the callers are answered).
    fn announce(&mut self, committed: Committed);

    /// After each batch: the backend's upkeep, told whether a write is waiting.
    fn upkeep(&mut self, _idle: bool) {}
}

/// Queues a write and waits for its outcome.
pub(super) async fn submit(queue: &mpsc::Sender<Command>, write: Write) -> Applied {
    let (reply, answer) = oneshot::channel();
    queue
        .send(Command::Write { write, reply })
        .await
        .map_err(|_| StoreError::Closed)?;
    answer.await.map_err(|_| StoreError::Closed)?
}

/// The writer: runs until the queue closes or a [`Command::Stop`] arrives, then
/// hands its transactor back.
pub(super) async fn run<T: Transactor>(mut transactor: T, mut queue: mpsc::Receiver<Command>) -> T {
    let mut commands = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut commands, MAX_BATCH).await > 0 {
        let mut writes = Vec::with_capacity(commands.len());
        let mut replies = Vec::with_capacity(commands.len());
        let mut stop = false;
        for command in commands.drain(..) {
            match command {
                // Writes queued after Stop are dropped: their callers see the store closed.
                Command::Write { .. } if stop => {}
                Command::Write { write, reply } => {
                    writes.push(write);
                    replies.push(reply);
                }
                Command::Stop => stop = true,
            }
        }
        commit_batch(&mut transactor, writes, replies).await;
        if stop {
            break;
        }
        transactor.upkeep(queue.is_empty());
    }
    transactor
}

/// Commits a batch in one transaction; when that fails, each write is retried in a
/// transaction of its own.
async fn commit_batch<T: Transactor>(
    transactor: &mut T,
    writes: Vec<Write>,
    replies: Vec<oneshot::Sender<Applied>>,
) {
    if writes.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    match transactor.apply_batch(&writes).await {
        Ok((outcomes, committed)) => {
            crate::telemetry::store_committed(started.elapsed(), writes.len());
            transactor.announce(committed);
            reply_all(replies, outcomes);
        }
        Err(error) if writes.len() == 1 => {
            tracing::warn!(%error, "store write failed");
            reply_all(replies, vec![Err(StoreError::from(error))]);
        }
        Err(error) => {
            tracing::warn!(%error, size = writes.len(), "batch commit failed; retrying its writes one by one");
            for (write, reply) in writes.into_iter().zip(replies) {
                let single = [write];
                let outcomes = match transactor.apply_batch(&single).await {
                    Ok((outcomes, committed)) => {
                        transactor.announce(committed);
                        outcomes
                    }
                    Err(error) => {
                        tracing::warn!(%error, "store write failed");
                        vec![Err(StoreError::from(error))]
                    }
                };
                reply_all(vec![reply], outcomes);
            }
        }
    }
}

/// Answers each caller with its outcome; one without an outcome is told the
/// write failed. A caller that gave up (its request was cancelled) is not waiting.
fn reply_all(replies: Vec<oneshot::Sender<Applied>>, outcomes: Vec<Applied>) {
    let mut outcomes = outcomes.into_iter();
    for reply in replies {
        let outcome = outcomes.next().unwrap_or_else(|| {
            Err(StoreError::Failed(DbError::invalid(
                "the writer produced no outcome for a write",
            )))
        });
        let _ = reply.send(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventKind;

    /// Applies writes in memory: a batch holding a poisoned write fails as a whole,
    /// as a database error aborts a real transaction.
    #[derive(Default)]
    struct FakeTransactor {
        batches: Vec<Vec<String>>,
        announced: Vec<u64>,
    }

    fn message(lead_id: &str) -> Write {
        Write::InsertEvent {
            event: Box::new(NewEvent {
                kind: EventKind::Message,
                integration: "default".into(),
                subject_id: lead_id.into(),
                identity: lead_id.into(),
                named_lead: lead_id.into(),
                body: bytes::Bytes::new(),
            }),
            dedup_window: Duration::ZERO,
        }
    }

    fn lead_id(write: &Write) -> String {
        match write {
            Write::InsertEvent { event, .. } => event.subject_id.clone(),
            other => format!("{other:?}"),
        }
    }

    impl Transactor for FakeTransactor {
        async fn apply_batch(
            &mut self,
            batch: &[Write],
        ) -> Result<(Vec<Applied>, Committed), DbError> {
            let ids: Vec<String> = batch.iter().map(lead_id).collect();
            self.batches.push(ids.clone());
            if ids.iter().any(|id| id == "poison") {
                return Err(DbError::unavailable("poisoned write"));
            }
            let mut committed = Committed::default();
            let outcomes = ids
                .iter()
                .map(|id| {
                    let sequence = id.parse().unwrap();
                    committed.events.push(EncodedEvent {
                        sequence,
                        receive_time: OffsetDateTime::UNIX_EPOCH,
                        kind: EventKind::Message,
                        integration: "default".into(),
                        source: None,
                        body: bytes::Bytes::new(),
                    });
                    Ok(Outcome::Event(EventReceipt {
                        sequence,
                        created: true,
                    }))
                })
                .collect();
            Ok((outcomes, committed))
        }

        fn announce(&mut self, committed: Committed) {
            self.announced
                .extend(committed.events.iter().map(|event| event.sequence));
        }
    }

    /// Queues writes, then runs the writer over them until the queue closes.
    async fn run_over(ids: &[&str]) -> (FakeTransactor, Vec<Applied>) {
        let (queue, commands) = mpsc::channel(16);
        let mut answers = vec![];
        for id in ids {
            let (reply, answer) = oneshot::channel();
            queue
                .send(Command::Write {
                    write: message(id),
                    reply,
                })
                .await
                .unwrap();
            answers.push(answer);
        }
        drop(queue);
        let transactor = run(FakeTransactor::default(), commands).await;
        let mut applied = vec![];
        for answer in answers {
            applied.push(answer.await.unwrap());
        }
        (transactor, applied)
    }

    #[tokio::test]
    async fn a_batch_commits_once_and_each_caller_gets_its_own_outcome() {
        let (transactor, applied) = run_over(&["1", "2", "3"]).await;

        assert_eq!(transactor.batches, vec![vec!["1", "2", "3"]]);
        assert_eq!(transactor.announced, vec![1, 2, 3]);
        for (index, outcome) in applied.into_iter().enumerate() {
            let expected = EventReceipt {
                sequence: index as u64 + 1,
                created: true,
            };
            assert_eq!(outcome.unwrap(), Outcome::Event(expected));
        }
    }

    #[tokio::test]
    async fn a_failed_batch_is_retried_write_by_write() {
        let (transactor, applied) = run_over(&["1", "poison", "3"]).await;

        assert_eq!(
            transactor.batches,
            vec![
                vec!["1", "poison", "3"],
                vec!["1"],
                vec!["poison"],
                vec!["3"]
            ]
        );
        assert_eq!(transactor.announced, vec![1, 3]);
        let mut applied = applied.into_iter();
        let first = applied.next().unwrap().unwrap();
        assert!(matches!(
            first,
            Outcome::Event(EventReceipt { sequence: 1, .. })
        ));
        assert!(matches!(
            applied.next().unwrap(),
            Err(StoreError::Unavailable(_))
        ));
        let third = applied.next().unwrap().unwrap();
        assert!(matches!(
            third,
            Outcome::Event(EventReceipt { sequence: 3, .. })
        ));
    }

    #[tokio::test]
    async fn writes_queued_after_stop_are_refused_as_closed() {
        let (queue, commands) = mpsc::channel(16);
        let (reply, before) = oneshot::channel();
        queue
            .send(Command::Write {
                write: message("1"),
                reply,
            })
            .await
            .unwrap();
        queue.send(Command::Stop).await.unwrap();
        let (reply, after) = oneshot::channel();
        queue
            .send(Command::Write {
                write: message("2"),
                reply,
            })
            .await
            .unwrap();

        run(FakeTransactor::default(), commands).await;

        assert!(before.await.unwrap().is_ok());
        assert!(after.await.is_err(), "the write after Stop is dropped");
        assert!(queue.is_closed(), "the writer has stopped");
    }
}
