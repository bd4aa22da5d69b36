//! Group commit: one writer per store takes every write waiting in its queue,
//! applies them in one transaction, commits once (one fsync for the lot), then
//! announces what committed and answers each caller. A batch that fails is retried
//! write by write, so one bad write never fails its neighbours.
//!
//! Each write carries its caller's [`Reply`], typed by what that write produces: a
//! transaction fills the replies of its writes, and they are sent only once it
//! committed.

mod reply;

use reply::Pending;
pub(super) use reply::Reply;

use std::future::Future;
use std::time::Duration;

use crate::telemetry::{Attr, SpanRole, TraceContext, TraceSpan};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::{DbError, EventReceipt, ExportKind, LeadReceipt, NewEvent, NewLead, StoreError};
use crate::domain::{
    Client, Deal, DealReport, EncodedEvent, LeadKey, OrderIdMode, RejectedRequest, Scheme,
};

/// Most writes committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;

/// A write, as the writer applies it, with the reply its caller waits for.
#[derive(Debug)]
pub(super) enum Write {
    InsertLead {
        lead: Box<NewLead>,
        mode: OrderIdMode,
        reply: Reply<LeadReceipt>,
    },
    AssignOrderId {
        key: LeadKey,
        mode: OrderIdMode,
        reply: Reply<Deal>,
    },
    InsertEvent {
        event: Box<NewEvent>,
        /// How long an identical message or task is the same event.
        dedup_window: Duration,
        reply: Reply<EventReceipt>,
    },
    ReportDeal {
        key: LeadKey,
        report: Box<DealReport>,
        reply: Reply<Deal>,
    },
    PutScheme {
        integration: String,
        scheme: Box<Scheme>,
        /// When the scheme was published.
        reply: Reply<OffsetDateTime>,
    },
    PutClient {
        integration: String,
        client: Box<Client>,
        /// When the client was updated.
        reply: Reply<OffsetDateTime>,
    },
    ExportSnapshot {
        integration: String,
        kind: ExportKind,
        since: OffsetDateTime,
        restart: bool,
        /// The version the walk reads.
        reply: Reply<u64>,
    },
    EnsureConsumer {
        name: String,
        acked_sequence: u64,
        /// The most consumers there may be.
        max: u32,
        reply: Reply<()>,
    },
    AckConsumer {
        name: String,
        sequence: u64,
        max: u32,
        reply: Reply<()>,
    },
    DeleteConsumer {
        name: String,
        /// False when there was no such consumer.
        reply: Reply<bool>,
    },
    RecordRejected {
        request: Box<RejectedRequest>,
        /// How many to keep per integration.
        keep: u32,
        /// The record's id.
        reply: Reply<u64>,
    },
    /// Leads stored before persons, matched now (replies how many).
    MatchStored {
        leads: Vec<super::Backfilled>,
        reply: Reply<u64>,
    },
    /// Replies the new person's id and the split event's sequence.
    SplitPerson {
        person_id: u64,
        key: super::PersonKey,
        reply: Reply<(u64, u64)>,
    },
    /// An empty write: proves the write path (lock, disk, connection) works.
    Ping { reply: Reply<()> },
}

impl Write {
    /// Whether the write may append events (and so needs the event counter).
    pub fn appends_events(&self) -> bool {
        use Write::{InsertEvent, InsertLead, MatchStored, SplitPerson};
        matches!(
            self,
            InsertLead { .. } | InsertEvent { .. } | MatchStored { .. } | SplitPerson { .. }
        )
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

    /// The write's reply, whatever it carries.
    fn reply(&mut self) -> &mut dyn Pending {
        match self {
            Write::InsertLead { reply, .. } => reply,
            Write::AssignOrderId { reply, .. } | Write::ReportDeal { reply, .. } => reply,
            Write::InsertEvent { reply, .. } => reply,
            Write::PutScheme { reply, .. } | Write::PutClient { reply, .. } => reply,
            Write::ExportSnapshot { reply, .. } | Write::RecordRejected { reply, .. } => reply,
            Write::EnsureConsumer { reply, .. }
            | Write::AckConsumer { reply, .. }
            | Write::Ping { reply } => reply,
            Write::DeleteConsumer { reply, .. } => reply,
            Write::MatchStored { reply, .. } => reply,
            Write::SplitPerson { reply, .. } => reply,
        }
    }
}

/// What a write produced, or its logical refusal (an unknown lead, a conflicting
/// deal id): either is only told once the transaction committed.
pub(super) type Applied<T> = Result<T, StoreError>;

/// A message to the writer.
pub(super) enum Command {
    Write(Write),
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
    /// The backend's name, as metrics and traces label it.
    const BACKEND: &'static str;

    /// Applies the writes in one transaction and commits it, setting each write's
    /// reply. A database error aborts the transaction and is returned.
    fn apply_batch(
        &mut self,
        batch: &mut [Write],
    ) -> impl Future<Output = Result<Committed, DbError>> + Send;

    /// Announces what committed (after the commit, before the callers are answered).
    fn announce(&mut self, committed: Committed);

    /// After each batch: the backend's upkeep, told whether a write is waiting.
    fn upkeep(&mut self, _idle: bool) {}
}

/// Queues the write `make` builds around its reply, and waits for its outcome.
pub(super) async fn submit<T>(
    queue: &mpsc::Sender<Command>,
    make: impl FnOnce(Reply<T>) -> Write,
) -> Applied<T> {
    let (caller, answer) = oneshot::channel();
    queue
        .send(Command::Write(make(Reply::new(caller))))
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
        let mut stop = false;
        for command in commands.drain(..) {
            match command {
                // Writes queued after Stop are dropped: their callers see the store closed.
                Command::Write(_) if stop => {}
                Command::Write(write) => writes.push(write),
                Command::Stop => stop = true,
            }
        }
        commit_batch(&mut transactor, writes).await;
        if stop {
            break;
        }
        transactor.upkeep(queue.is_empty());
    }
    transactor
}

/// Commits a batch in one transaction; when that fails, each write is retried in a
/// transaction of its own.
async fn commit_batch<T: Transactor>(transactor: &mut T, mut writes: Vec<Write>) {
    if writes.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let span = commit_span::<T>(&mut writes);
    let applied = transactor.apply_batch(&mut writes).await;
    drop(span);
    match applied {
        Ok(committed) => {
            crate::telemetry::store_committed(T::BACKEND, started.elapsed(), writes.len());
            transactor.announce(committed);
        }
        Err(error) if writes.len() == 1 => {
            tracing::warn!(%error, "store write failed");
            writes[0].reply().fail(StoreError::from(error));
        }
        Err(error) => {
            tracing::warn!(%error, size = writes.len(), "batch commit failed; retrying its writes one by one");
            for write in &mut writes {
                write.reply().forget();
                match transactor.apply_batch(std::slice::from_mut(write)).await {
                    Ok(committed) => transactor.announce(committed),
                    Err(error) => {
                        tracing::warn!(%error, "store write failed");
                        write.reply().fail(StoreError::from(error));
                    }
                }
            }
        }
    }
    for write in &mut writes {
        write.reply().send();
    }
}

/// The commit's span, when traces are exported: a child of the first traced
/// write's caller, linked to every other's.
fn commit_span<T: Transactor>(writes: &mut [Write]) -> TraceSpan {
    if !crate::telemetry::tracing_on() {
        return TraceSpan::default();
    }
    let size = writes.len() as i64;
    let mut callers: Vec<TraceContext> = writes
        .iter_mut()
        .filter_map(|write| write.reply().trace())
        .collect();
    if callers.is_empty() {
        return TraceSpan::default();
    }
    let first = callers.remove(0);
    let attributes = vec![
        ("db.system.name", Attr::Str(T::BACKEND)),
        ("batch_size", Attr::Int(size)),
    ];
    TraceSpan::start(
        "store commit",
        SpanRole::Internal,
        Some(first),
        &callers,
        attributes,
    )
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

    fn message(lead_id: &str, reply: Reply<EventReceipt>) -> Write {
        Write::InsertEvent {
            event: Box::new(NewEvent {
                kind: EventKind::Message,
                integration: "default".into(),
                subject_id: lead_id.into(),
                identity: lead_id.into(),
                named_lead: lead_id.into(),
                body: bytes::Bytes::new(),
                trace_parent: None,
            }),
            dedup_window: Duration::ZERO,
            reply,
        }
    }

    impl Transactor for FakeTransactor {
        const BACKEND: &'static str = "fake";
        async fn apply_batch(&mut self, batch: &mut [Write]) -> Result<Committed, DbError> {
            let ids: Vec<String> = batch
                .iter()
                .map(|write| match write {
                    Write::InsertEvent { event, .. } => event.subject_id.clone(),
                    other => format!("{other:?}"),
                })
                .collect();
            self.batches.push(ids.clone());
            let mut committed = Committed::default();
            for (write, id) in batch.iter_mut().zip(&ids) {
                let Write::InsertEvent { reply, .. } = write else {
                    unreachable!("the tests queue messages only");
                };
                let sequence = id.parse().unwrap_or(0);
                reply.set(Ok(EventReceipt {
                    sequence,
                    created: true,
                }));
                committed.events.push(EncodedEvent {
                    sequence,
                    receive_time: OffsetDateTime::UNIX_EPOCH,
                    kind: EventKind::Message,
                    integration: "default".into(),
                    source: None,
                    body: bytes::Bytes::new(),
                    trace_parent: None,
                    person: None,
                });
            }
            // The poisoned write fails the transaction after the others were applied:
            // their outcomes must not reach the callers.
            if ids.iter().any(|id| id == "poison") {
                return Err(DbError::unavailable("poisoned write"));
            }
            Ok(committed)
        }

        fn announce(&mut self, committed: Committed) {
            self.announced
                .extend(committed.events.iter().map(|event| event.sequence));
        }
    }

    /// Queues writes, then runs the writer over them until the queue closes.
    async fn run_over(ids: &[&str]) -> (FakeTransactor, Vec<Applied<EventReceipt>>) {
        let (queue, commands) = mpsc::channel(16);
        let mut answers = vec![];
        for id in ids {
            let (caller, answer) = oneshot::channel();
            let write = message(id, Reply::new(caller));
            queue.send(Command::Write(write)).await.unwrap();
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
            assert_eq!(outcome.unwrap(), expected);
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
        assert_eq!(applied.next().unwrap().unwrap().sequence, 1);
        assert!(
            matches!(applied.next().unwrap(), Err(StoreError::Unavailable(_))),
            "the poisoned write's outcome from the failed transaction is not sent"
        );
        assert_eq!(applied.next().unwrap().unwrap().sequence, 3);
    }

    #[tokio::test]
    async fn writes_queued_after_stop_are_refused_as_closed() {
        let (queue, commands) = mpsc::channel(16);
        let (caller, before) = oneshot::channel();
        let write = message("1", Reply::new(caller));
        queue.send(Command::Write(write)).await.unwrap();
        queue.send(Command::Stop).await.unwrap();
        let (caller, after) = oneshot::channel();
        let write = message("2", Reply::new(caller));
        queue.send(Command::Write(write)).await.unwrap();

        run(FakeTransactor::default(), commands).await;

        assert!(before.await.unwrap().is_ok());
        assert!(after.await.is_err(), "the write after Stop is dropped");
        assert!(queue.is_closed(), "the writer has stopped");
    }
}
