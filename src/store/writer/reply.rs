//! A write's reply: where its outcome waits until its transaction commits.

use std::fmt;

use tokio::sync::oneshot;

use super::Applied;
use crate::store::{DbError, StoreError};
use crate::telemetry::TraceContext;

/// Where a write's outcome waits for its transaction to commit, then goes to the
/// caller.
pub(in crate::store) struct Reply<T> {
    caller: Option<oneshot::Sender<Applied<T>>>,
    /// Boxed, so that a write in the queue stays small whatever it produces.
    outcome: Option<Box<Applied<T>>>,
    /// The caller's span, when traces are exported: the commit's span is its child
    /// (the batch's first write's) or links to it (the others').
    trace: Option<TraceContext>,
}

impl<T> Reply<T> {
    pub(super) fn new(caller: oneshot::Sender<Applied<T>>) -> Self {
        Self {
            caller: Some(caller),
            outcome: None,
            trace: crate::telemetry::current_trace(),
        }
    }

    /// Keeps the write's outcome until its transaction commits.
    pub fn set(&mut self, outcome: Applied<T>) {
        self.outcome = Some(Box::new(outcome));
    }
}

impl<T> fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("settled", &self.outcome.is_some())
            .finish()
    }
}

/// A reply of any type, as the writer settles it.
pub(super) trait Pending: Send {
    /// The caller's span, when traces are exported.
    fn trace(&self) -> Option<TraceContext>;
    /// Forgets the outcome of a transaction that did not commit.
    fn forget(&mut self);
    /// Fails the write.
    fn fail(&mut self, error: StoreError);
    /// Sends the outcome to the caller; one without an outcome is told the write
    /// failed. A caller that gave up (its request was cancelled) is not waiting.
    fn send(&mut self);
}

impl<T: Send> Pending for Reply<T> {
    fn trace(&self) -> Option<TraceContext> {
        self.trace
    }

    fn forget(&mut self) {
        self.outcome = None;
    }

    fn fail(&mut self, error: StoreError) {
        self.set(Err(error));
    }

    fn send(&mut self) {
        let outcome = self.outcome.take().map_or_else(
            || {
                Err(StoreError::Failed(DbError::invalid(
                    "the writer produced no outcome for a write",
                )))
            },
            |outcome| *outcome,
        );
        if let Some(caller) = self.caller.take() {
            let _ = caller.send(outcome);
        }
    }
}
