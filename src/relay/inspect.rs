//! What the operator console shows: leads found by their keys, one lead with all
//! that is known about it, the consumers, and an overview.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use super::{Error, LeadRelay};
use crate::domain::{
    Consumer, Deal, EncodedEvent, FoundLead, LeadKey, LeadSearch, LeadSource, Order, Scheme,
};

/// Messages, tasks and calls shown with a lead.
const EVENTS_ABOUT: u32 = 200;

/// Everything known about one lead.
#[derive(Debug, Clone)]
pub struct LeadView {
    pub lead: EncodedEvent,
    pub deal: Deal,
    /// The published scheme (for status names), if any.
    pub scheme: Option<Scheme>,
    /// Messages, tasks and calls filed under it, newest first.
    pub events: Vec<EncodedEvent>,
    /// How Roistat's export lists its order now, with the status an order without a
    /// reported one has; `None` while its order id is not fixed.
    pub order: Option<(Order, String)>,
}

/// A named consumer, and how many streams of it this replica serves now.
#[derive(Debug, Clone)]
pub struct ConsumerView {
    pub consumer: Consumer,
    pub connected: usize,
}

/// The figures of the overview.
#[derive(Debug, Clone)]
pub struct Overview {
    /// Leads per minute (Unix minutes) and source.
    pub lead_minutes: Vec<(i64, Option<LeadSource>, u64)>,
    pub latest_sequence: u64,
    pub store_bytes: u64,
    pub subscribers: usize,
    /// Integrations whose orders export without a status.
    pub scheme_missing: Vec<String>,
}

/// Streams of named consumers open on this replica, by name.
#[derive(Debug, Default)]
pub(super) struct Connected(Mutex<HashMap<String, usize>>);

impl Connected {
    fn count(&self, name: &str) -> usize {
        self.0
            .lock()
            .map_or(0, |open| open.get(name).copied().unwrap_or(0))
    }
}

/// A named consumer's stream, counted while it is open.
pub(super) struct ConnectedStream {
    connected: Arc<Connected>,
    name: String,
}

impl ConnectedStream {
    pub(super) fn open(connected: &Arc<Connected>, name: &str) -> Self {
        if let Ok(mut open) = connected.0.lock() {
            *open.entry(name.to_owned()).or_default() += 1;
        }
        Self {
            connected: connected.clone(),
            name: name.to_owned(),
        }
    }
}

impl Drop for ConnectedStream {
    fn drop(&mut self) {
        if let Ok(mut open) = self.connected.0.lock()
            && let Some(count) = open.get_mut(&self.name)
        {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.name);
            }
        }
    }
}

impl LeadRelay {
    /// A page of leads a search finds.
    pub async fn search_leads(&self, search: &LeadSearch) -> Result<Vec<FoundLead>, Error> {
        Ok(self.store.search_leads(search).await?)
    }

    /// The messages, tasks and calls filed under a lead, newest first.
    pub async fn lead_history(&self, key: &LeadKey) -> Result<Vec<EncodedEvent>, Error> {
        Ok(self.store.events_about(key, EVENTS_ABOUT).await?)
    }

    /// One lead, its deal, what was filed under it, and its order in the export.
    pub async fn lead_view(&self, key: &LeadKey) -> Result<LeadView, Error> {
        let lead = self.get_lead(key).await?;
        let deal = self.get_deal(key).await?;
        let scheme = self
            .store
            .get_scheme(&key.integration)
            .await?
            .map(|(scheme, _)| scheme);
        let events = self.lead_history(key).await?;
        let order = match self.store.export_order(key).await? {
            Some(order) => {
                let scheme = self.scheme_for_roistat(&key.integration).await?;
                Some((order, self.default_status(&key.integration, &scheme)))
            }
            None => None,
        };
        Ok(LeadView {
            lead,
            deal,
            scheme,
            events,
            order,
        })
    }

    /// The named consumers (the first `limit` by name), with their open streams here.
    pub async fn consumers_view(&self, limit: u32) -> Result<Vec<ConsumerView>, Error> {
        let consumers = self.list_consumers("", limit).await?;
        Ok(consumers
            .into_iter()
            .map(|consumer| ConsumerView {
                connected: self.streams.connected.count(&consumer.name),
                consumer,
            })
            .collect())
    }

    /// Open StreamLeads subscribers (and console feeds) on this replica.
    pub fn subscribers(&self) -> usize {
        self.streams
            .subscribers
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Leads per minute since `since`, the latest sequence, the store's size.
    pub async fn overview(
        &self,
        since: OffsetDateTime,
        integration: Option<&str>,
    ) -> Result<Overview, Error> {
        Ok(Overview {
            lead_minutes: self.store.lead_minutes(since, integration).await?,
            latest_sequence: self.store.latest_sequence().await?,
            store_bytes: self.store.store_bytes().await?,
            subscribers: self.subscribers(),
            scheme_missing: self.integrations_without_status().await?,
        })
    }

    /// The greatest committed sequence.
    pub async fn latest_sequence(&self) -> Result<u64, Error> {
        Ok(self.store.latest_sequence().await?)
    }
}
