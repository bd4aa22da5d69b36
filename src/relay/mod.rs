//! The relay's use cases, shared by the HTTP and gRPC faces: receive a lead or a
//! message, answer Roistat's order id, report deals, read leads; `stream` holds
//! streaming, `consumers` named consumers, `crm` the rest of the own-CRM protocol.
//! The faces call it, never the store.

mod consumers;
mod crm;
mod error;
mod inspect;
mod persons;
mod readiness;
mod rejected;
mod stream;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::{
    Deal, DealMessage, EncodedEvent, EventBody, Identity, Lead, LeadKey, OrderIdMode,
    PersonSettings, SearchKeys,
};
use crate::store::{LeadStore, NewEvent, NewLead};
use crate::{codec, telemetry};

pub use crm::{ExportPage, OrdersExport};
pub use error::Error;
pub use inspect::{ConsumerView, LeadView, Overview};
pub use persons::{PersonPage, SplitOutcome};
pub use rejected::{REFUSED_KEPT, RejectedCursor, RejectedPage, bounded, refused};
pub use stream::{Audience, StreamItem, StreamRequest, StreamStart};

/// The relay: one per process, cheap to share.
#[derive(Clone)]
pub struct LeadRelay {
    store: Arc<dyn LeadStore>,
    options: Arc<RelayOptions>,
    refused: Arc<rejected::RefusedRing>,
    readiness: Arc<readiness::Readiness>,
    streams: stream::Streams,
    /// The unknown actions warned about, by integration and name (see
    /// [`UNKNOWN_ACTIONS_WARNED`]).
    unknown_actions: Arc<std::sync::Mutex<HashSet<(String, String)>>>,
    shutdown: CancellationToken,
}

/// At most this many unknown actions (integration and name) are remembered, each
/// warned about once; past it, new ones are logged at debug level.
const UNKNOWN_ACTIONS_WARNED: usize = 1024;

/// How the relay behaves.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub order_id_mode: OrderIdMode,
    /// In `crm` mode, how long a webhook waits for the CRM's deal id.
    pub deal_wait: Duration,
    /// A stream that delivered nothing for this long gets a heartbeat.
    pub heartbeat: Duration,
    /// How long an identical message or task is one event (zero: every copy is
    /// stored).
    pub message_dedup_window: Duration,
    /// The status an order has in Roistat's export until the CRM reports one, by
    /// integration; without one, the first status of the published scheme.
    pub default_statuses: BTreeMap<String, String>,
    /// Requests refused after the token check kept per integration.
    pub rejected_keep: u32,
    /// The most StreamLeads subscribers at once.
    pub max_subscribers: usize,
    /// The most console live feeds at once.
    pub max_console_feeds: usize,
    /// The most named consumers.
    pub max_consumers: u32,
    /// The configured integrations (watched for a status to export orders with).
    pub integrations: Vec<String>,
    /// Phone region and person matching by integration (the default for others).
    pub persons: BTreeMap<String, PersonSettings>,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            order_id_mode: OrderIdMode::Lead,
            deal_wait: Duration::from_secs(3),
            heartbeat: Duration::from_secs(15),
            message_dedup_window: Duration::from_secs(3600),
            default_statuses: BTreeMap::new(),
            rejected_keep: 1_000,
            max_subscribers: 10_000,
            max_console_feeds: 32,
            max_consumers: 1_000,
            integrations: vec![crate::domain::DEFAULT_INTEGRATION.to_owned()],
            persons: BTreeMap::new(),
        }
    }
}

/// What Roistat is told about a received lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadAnswer {
    pub order_id: String,
    /// False for a retry of a lead already stored.
    pub created: bool,
}

impl LeadRelay {
    pub fn new(
        store: Arc<dyn LeadStore>,
        options: RelayOptions,
        shutdown: CancellationToken,
    ) -> Self {
        let streams =
            stream::Streams::new(store.clone(), store.clone(), &options, shutdown.clone());
        Self {
            store,
            options: Arc::new(options),
            refused: Arc::default(),
            readiness: Arc::default(),
            streams,
            unknown_actions: Arc::default(),
            shutdown,
        }
    }

    pub fn order_id_mode(&self) -> OrderIdMode {
        self.options.order_id_mode
    }

    /// Stores a lead (once, however often Roistat retries) and returns the order id
    /// to answer. In `crm` mode it waits up to the deal wait for the CRM's deal id,
    /// and is [`Error::Unavailable`] without one, so that Roistat asks again.
    pub async fn receive_lead(&self, lead: Lead) -> Result<LeadAnswer, Error> {
        let mode = self.options.order_id_mode;
        // Only in `crm` mode does a webhook wait for a report; subscribed before the
        // insert, so a report that lands in between is seen.
        let reports = (mode == OrderIdMode::Crm).then(|| self.store.subscribe_deal_reports());
        let mut lead = lead;
        let identity = self.read_identity(&mut lead);
        let new = new_lead(lead, identity);
        let (key, source) = (new.key.clone(), new.source);
        let receipt = self.store.insert_lead(new, mode).await?;
        if receipt.created {
            telemetry::lead_stored(&key.integration, source.as_str());
        } else {
            telemetry::retry_deduplicated("lead");
        }
        let created = receipt.created;
        tracing::info!(
            lead_id = %key.lead_id,
            sequence = receipt.sequence,
            created,
            "lead stored"
        );
        let deal = match (receipt.deal.answered_order_id.is_some(), reports) {
            (false, Some(reports)) => self.wait_for_deal(&key, reports).await?,
            _ => receipt.deal,
        };
        let Some(order_id) = deal.answered_order_id else {
            tracing::error!(lead_id = %key.lead_id, "a lead was fixed without an order id");
            return Err(Error::Internal);
        };
        Ok(LeadAnswer { order_id, created })
    }

    /// Waits for the CRM's deal id of a stored lead and fixes it as the order id.
    async fn wait_for_deal(
        &self,
        key: &LeadKey,
        mut reports: broadcast::Receiver<LeadKey>,
    ) -> Result<Deal, Error> {
        let deadline = Instant::now() + self.options.deal_wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::DealPending("deal id not reported yet".to_owned()));
                }
                _ = self.shutdown.cancelled() => {
                    return Err(Error::Unavailable("service is shutting down".to_owned()));
                }
                report = reports.recv() => match report {
                    Ok(reported) if &reported != key => continue,
                    // Our lead, or reports were missed: look at the store.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(Error::Unavailable("service is shutting down".to_owned()));
                    }
                },
            }
            let deal = self
                .store
                .assign_order_id(key, self.options.order_id_mode)
                .await?;
            if deal.answered_order_id.is_some() {
                return Ok(deal);
            }
        }
    }

    /// Stores a message, task or call once; the same one sent again is not a
    /// second event. Returns the event's sequence (of the first delivery).
    pub async fn receive_event(&self, mut body: EventBody) -> Result<u64, Error> {
        match &mut body {
            EventBody::UnknownAction(unknown) => {
                self.unknown_action_seen(&unknown.integration, &unknown.action);
            }
            EventBody::Call(call) => self.read_call(call),
            _ => {}
        }
        let kind = body.kind().as_str();
        let new = new_event(&body);
        let window = self.options.message_dedup_window;
        let receipt = self.store.insert_event(new, window).await?;
        if !receipt.created {
            telemetry::retry_deduplicated(kind);
        }
        tracing::info!(
            kind,
            id = %body.subject_id(),
            sequence = receipt.sequence,
            created = receipt.created,
            "event stored"
        );
        Ok(receipt.sequence)
    }

    /// Stores a message once (as [`LeadRelay::receive_event`]) and returns the
    /// order id to answer: the one fixed for the lead its `leadId` names by its
    /// Roistat id, else `leadId` as sent (an order id itself, or a lead this
    /// service has not seen).
    pub async fn receive_message(&self, message: DealMessage) -> Result<String, Error> {
        let key = LeadKey::new(&message.integration, message.lead_id.clone());
        self.receive_event(EventBody::Message(message)).await?;
        let deal = self.store.get_deal(&key).await?;
        Ok(deal
            .and_then(|deal| deal.answered_order_id)
            .unwrap_or(key.lead_id))
    }

    /// Warns, once per integration and name, that Roistat sent an action this
    /// version does not know (it is kept all the same).
    fn unknown_action_seen(&self, integration: &str, action: &str) {
        let Ok(mut seen) = self.unknown_actions.lock() else {
            return;
        };
        let key = (integration.to_owned(), action.to_owned());
        if seen.contains(&key) {
            return;
        }
        if seen.len() >= UNKNOWN_ACTIONS_WARNED {
            tracing::debug!(integration, action, "an unknown action, kept as an event");
            return;
        }
        seen.insert(key);
        tracing::warn!(
            integration,
            action,
            "Roistat sent an action this version does not know: every such request is \
             answered ok and kept as an UnknownAction event (this is said once per action)"
        );
    }

    /// A lead's event: its body is a `roistat.leads.v1.Lead` without `sequence`
    /// and `receive_time` (see [`codec`]).
    pub async fn get_lead(&self, key: &LeadKey) -> Result<EncodedEvent, Error> {
        self.store
            .get_lead(key)
            .await?
            .ok_or_else(|| Error::NotFound("lead not found".to_owned()))
    }

    /// One stored event by its sequence, whatever its kind.
    pub async fn get_event(&self, sequence: u64) -> Result<EncodedEvent, Error> {
        let Some(before) = sequence.checked_sub(1) else {
            return Err(Error::InvalidArgument(
                "sequence must be 1 or more".to_owned(),
            ));
        };
        let mut found = self.store.events_after(before, 1).await?;
        match found.pop() {
            Some(event) if event.sequence == sequence => Ok(event),
            _ => Err(Error::NotFound(format!("no event {sequence} is stored"))),
        }
    }

    pub async fn list_leads(
        &self,
        after_sequence: u64,
        limit: u32,
        integration: Option<&str>,
    ) -> Result<Vec<EncodedEvent>, Error> {
        Ok(self
            .store
            .list_leads(after_sequence, limit, integration)
            .await?)
    }
}

/// A lead ready to store, encoded here, on the request's task.
fn new_lead(mut lead: Lead, identity: Option<Identity>) -> NewLead {
    let body = codec::encode_lead(&lead).into();
    NewLead {
        key: lead.key(),
        source: lead.source,
        // The phone as read (E.164) when it could be: the form persons match by.
        search: SearchKeys::of(
            &lead.name,
            lead.phone_number
                .as_ref()
                .map_or(lead.phone.as_str(), |number| number.e164.as_str()),
            &lead.email,
        ),
        visit: std::mem::take(&mut lead.visit),
        title: std::mem::take(&mut lead.title),
        create_time: lead.create_time,
        body,
        trace_parent: telemetry::current_trace_parent(),
        identity,
    }
}

/// A message, task or call ready to store.
fn new_event(body: &EventBody) -> NewEvent {
    NewEvent {
        kind: body.kind(),
        integration: body.integration().to_owned(),
        subject_id: body.subject_id().to_owned(),
        identity: body.identity(),
        named_lead: body.named_lead().to_owned(),
        body: codec::encode_body(body).into(),
        trace_parent: telemetry::current_trace_parent(),
    }
}
