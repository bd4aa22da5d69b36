//! Group commit: one writer task per store takes every write waiting in its queue,
//! applies them in one transaction, commits once (one fsync for the lot), then
//! answers each caller and publishes what committed.

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::{DealReport, EventReceipt, LeadReceipt, OrderIdAssignment, StoreError};
use crate::domain::{Deal, Event, EventBody, Lead, LeadKey};

/// Most writes committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;

/// A write, queued for the writer task.
pub(super) enum Command {
    InsertLead {
        lead: Box<Lead>,
        assignment: OrderIdAssignment,
        reply: oneshot::Sender<Result<LeadReceipt, StoreError>>,
    },
    AssignOrderId {
        key: LeadKey,
        assignment: OrderIdAssignment,
        reply: oneshot::Sender<Result<Deal, StoreError>>,
    },
    InsertEvent {
        body: Box<EventBody>,
        reply: oneshot::Sender<Result<EventReceipt, StoreError>>,
    },
    ReportDeal {
        key: LeadKey,
        report: Box<DealReport>,
        reply: oneshot::Sender<Result<Deal, StoreError>>,
    },
    /// Answered once the writer has committed a write with it: proves the write path
    /// (lock, disk, connection) works.
    Ping {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Finish what was queued before, then stop.
    Stop,
}

/// What applying one command produced, held until the transaction commits.
pub(super) enum Outcome {
    Lead(Result<LeadReceipt, StoreError>),
    Deal(Result<Deal, StoreError>),
    Event(Result<EventReceipt, StoreError>),
    Ping(Result<(), StoreError>),
    Nothing,
}

/// What a committed transaction changed, for the store to announce.
#[derive(Default)]
pub(super) struct Committed {
    /// New events, in sequence order.
    pub events: Vec<Event>,
    /// Leads whose CRM deal id changed.
    pub deal_reports: Vec<LeadKey>,
}

/// A backend's write side.
#[async_trait]
pub(super) trait Transactor: Send + 'static {
    /// Applies the commands in one transaction and commits it. A logical refusal
    /// (unknown lead, conflicting deal id) is an outcome; a database error aborts
    /// the transaction and is returned.
    async fn apply_batch(
        &mut self,
        batch: &[Command],
    ) -> Result<(Vec<Outcome>, Committed), sqlx::Error>;

    /// Announces what committed (after the commit, before the callers are answered).
    fn announce(&mut self, committed: Committed);
}

/// The writer task: runs until the queue closes or a [`Command::Stop`] arrives.
pub(super) async fn run<T: Transactor>(mut transactor: T, mut queue: mpsc::Receiver<Command>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let stop = batch
            .iter()
            .position(|command| matches!(command, Command::Stop));
        if let Some(stop) = stop {
            // Commands queued after Stop are dropped; their callers see the store closed.
            batch.truncate(stop);
        }
        commit_batch(&mut transactor, std::mem::take(&mut batch)).await;
        if stop.is_some() {
            break;
        }
    }
}

/// Commits a batch in one transaction. When the transaction fails, each command is
/// retried in a transaction of its own, so one bad write cannot fail its neighbours.
async fn commit_batch<T: Transactor>(transactor: &mut T, batch: Vec<Command>) {
    if batch.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    match transactor.apply_batch(&batch).await {
        Ok((outcomes, committed)) => {
            crate::telemetry::store_committed(started.elapsed(), batch.len());
            transactor.announce(committed);
            reply_all(batch, outcomes);
        }
        Err(error) if batch.len() == 1 => {
            tracing::warn!(%error, "store write failed");
            let outcome = failed(&batch[0], StoreError::from(error));
            reply_all(batch, vec![outcome]);
        }
        Err(error) => {
            tracing::warn!(%error, size = batch.len(), "batch commit failed; retrying its writes one by one");
            for command in batch {
                let single = [command];
                let outcomes = match transactor.apply_batch(&single).await {
                    Ok((outcomes, committed)) => {
                        transactor.announce(committed);
                        outcomes
                    }
                    Err(error) => vec![failed(&single[0], StoreError::from(error))],
                };
                reply_all(Vec::from(single), outcomes);
            }
        }
    }
}

/// The outcome that tells a command's caller its write failed.
fn failed(command: &Command, error: StoreError) -> Outcome {
    match command {
        Command::InsertLead { .. } => Outcome::Lead(Err(error)),
        Command::AssignOrderId { .. } | Command::ReportDeal { .. } => Outcome::Deal(Err(error)),
        Command::InsertEvent { .. } => Outcome::Event(Err(error)),
        Command::Ping { .. } => Outcome::Ping(Err(error)),
        Command::Stop => Outcome::Nothing,
    }
}

/// Answers each command with its outcome; a command without one is told the write failed.
fn reply_all(batch: Vec<Command>, outcomes: Vec<Outcome>) {
    let mut outcomes = outcomes.into_iter();
    for command in batch {
        let outcome = outcomes.next();
        let error = || StoreError::Unavailable("write failed".to_owned());
        // A caller that gave up (its request was cancelled) is not waiting: ignore.
        match (command, outcome) {
            (Command::InsertLead { reply, .. }, Some(Outcome::Lead(result))) => {
                let _ = reply.send(result);
            }
            (Command::InsertLead { reply, .. }, _) => {
                let _ = reply.send(Err(error()));
            }
            (
                Command::AssignOrderId { reply, .. } | Command::ReportDeal { reply, .. },
                Some(Outcome::Deal(result)),
            ) => {
                let _ = reply.send(result);
            }
            (Command::AssignOrderId { reply, .. } | Command::ReportDeal { reply, .. }, _) => {
                let _ = reply.send(Err(error()));
            }
            (Command::InsertEvent { reply, .. }, Some(Outcome::Event(result))) => {
                let _ = reply.send(result);
            }
            (Command::InsertEvent { reply, .. }, _) => {
                let _ = reply.send(Err(error()));
            }
            (Command::Ping { reply }, Some(Outcome::Ping(result))) => {
                let _ = reply.send(result);
            }
            (Command::Ping { reply }, _) => {
                let _ = reply.send(Err(error()));
            }
            (Command::Stop, _) => {}
        }
    }
}
