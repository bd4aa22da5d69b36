//! Readiness, the consumer figures of the metrics, and whether every integration
//! has a status to export orders with, kept fresh in the background: probes and
//! scrapes read what is known and cost nothing, however often they come.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::LeadRelay;
use crate::telemetry;

/// How often an empty write is committed to check the write path.
const PING_EVERY: Duration = Duration::from_secs(1);
/// A check older than this says nothing: the write path is stuck.
const STALE_AFTER: Duration = Duration::from_secs(5);
/// How often the consumers' figures are read for the metrics.
const CONSUMERS_EVERY: Duration = Duration::from_secs(2);
const CONSUMERS_PAGE: u32 = 1_000;
/// How often each integration's status to export with is looked at.
const SCHEMES_EVERY: Duration = Duration::from_secs(60);
/// While an integration has none, how often that is said again at `warn`.
const SCHEME_WARN_EVERY: Duration = Duration::from_secs(3600);

/// The outcome of the latest check of the write path.
#[derive(Default)]
pub(super) struct Readiness {
    latest: Mutex<Option<(Instant, bool)>>,
}

impl LeadRelay {
    /// Commits an empty write through the writer, as a lead would be, and remembers
    /// whether it committed.
    pub async fn check_readiness(&self) -> bool {
        let ok = self.store.ping().await.is_ok();
        telemetry::readiness_checked(ok);
        let mut latest = self
            .readiness
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *latest = Some((Instant::now(), ok));
        ok
    }

    /// Ready: the latest check of the write path committed, less than 5 s ago.
    pub fn ready(&self) -> bool {
        let latest = self
            .readiness
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        latest.is_some_and(|(at, ok)| ok && at.elapsed() < STALE_AFTER)
    }

    /// Until shutdown: checks the write path at most once a second, and refreshes
    /// the consumers' figures for the metrics.
    pub async fn keep_watch(&self) {
        let readiness = async {
            loop {
                self.check_readiness().await;
                tokio::time::sleep(PING_EVERY).await;
            }
        };
        let consumers = async {
            loop {
                self.refresh_consumer_metrics().await;
                tokio::time::sleep(CONSUMERS_EVERY).await;
            }
        };
        let schemes = async {
            let mut warned = HashMap::new();
            loop {
                self.watch_schemes(&mut warned).await;
                tokio::time::sleep(SCHEMES_EVERY).await;
            }
        };
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = readiness => {}
            () = consumers => {}
            () = schemes => {}
        }
    }

    /// Sets each integration's `scheme_missing` metric, and warns (at start, then
    /// once an hour while it lasts) of one whose orders export without a status.
    async fn watch_schemes(&self, warned: &mut HashMap<String, Instant>) {
        for integration in &self.options.integrations {
            let Ok(missing) = self.scheme_missing(integration).await else {
                continue;
            };
            telemetry::scheme_missing(integration, missing);
            if !missing {
                warned.remove(integration);
                continue;
            }
            let due = warned
                .get(integration)
                .is_none_or(|at| at.elapsed() >= SCHEME_WARN_EVERY);
            if due {
                warned.insert(integration.clone(), Instant::now());
                tracing::warn!(
                    integration,
                    "orders of this integration export to Roistat with an empty status, which \
                     Roistat cannot map to a status group: set its default_status \
                     (--default-status) or have the CRM publish a scheme (UpdateScheme)"
                );
            }
        }
    }

    /// Reads every consumer's pending count into the metrics; a consumer deleted
    /// since the last refresh disappears from them.
    async fn refresh_consumer_metrics(&self) {
        let mut figures = vec![];
        let mut after = String::new();
        loop {
            let Ok(page) = self.store.list_consumers(&after, CONSUMERS_PAGE).await else {
                return;
            };
            figures.extend(
                page.iter()
                    .map(|consumer| (consumer.name.clone(), consumer.pending)),
            );
            match page.last() {
                Some(last) if page.len() == CONSUMERS_PAGE as usize => after.clone_from(&last.name),
                _ => break,
            }
        }
        telemetry::set_consumers_pending(figures);
    }
}
