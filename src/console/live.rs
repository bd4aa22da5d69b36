//! The live view's feed: Server-Sent Events from the service's own event stream,
//! each with its sequence as its id, so that a browser that reconnects resumes with
//! `Last-Event-ID`. The feed ends with the service's shutdown drain, as streams do.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::api::error;
use super::{Shared, view};
use crate::domain::{EncodedEvent, EventFilter, EventKind, LeadKey};
use crate::relay::{Audience, LeadRelay, StreamItem, StreamRequest, StreamStart};

/// Events a new feed starts with, before the live ones.
const BACKLOG: u64 = 100;
/// Events buffered per feed.
const BUFFER: usize = 64;

#[derive(Deserialize)]
pub(super) struct LiveQuery {
    #[serde(default)]
    integration: String,
}

/// `GET /api/live`: committed events as they come, after `Last-Event-ID` (else the
/// last hundred first).
pub(super) async fn feed(
    State(console): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<LiveQuery>,
) -> Response {
    if console.scope(&query.integration).is_none() {
        return super::api::unknown_integration();
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let after = match resume {
        Some(after) => after,
        None => match console.relay.latest_sequence().await {
            Ok(latest) => latest.saturating_sub(BACKLOG),
            Err(failure) => return error(StatusCode::SERVICE_UNAVAILABLE, &failure.to_string()),
        },
    };
    let filter = EventFilter {
        integrations: Some(query.integration)
            .filter(|name| !name.is_empty())
            .into_iter()
            .collect(),
        ..EventFilter::default()
    };
    let request = StreamRequest {
        start: Some(StreamStart::After(after)),
        consumer: None,
        filter,
        audience: Audience::ConsoleFeed,
    };
    let items = match console.relay.stream(request, BUFFER).await {
        Ok(items) => items,
        Err(failure) => return error(StatusCode::SERVICE_UNAVAILABLE, &failure.to_string()),
    };
    let (events, feed) = mpsc::channel(BUFFER);
    tokio::spawn(forward(console.relay.clone(), items, events));
    Sse::new(ReceiverStream::new(feed))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Turns stream items into SSE events until either side ends.
async fn forward(
    relay: LeadRelay,
    mut items: mpsc::Receiver<StreamItem>,
    events: mpsc::Sender<Result<Event, Infallible>>,
) {
    loop {
        // A browser that went away is noticed at once, not at the next event.
        let item = tokio::select! {
            _ = events.closed() => return,
            item = items.recv() => item,
        };
        let Some(item) = item else { return };
        let batch = match item {
            StreamItem::Replayed(batch) => batch,
            StreamItem::Live(event) => vec![(*event).clone()],
            StreamItem::Heartbeat { .. } => continue,
        };
        for event in batch {
            let line = sse_event(&relay, &event).await;
            if events.send(Ok(line)).await.is_err() {
                return;
            }
        }
    }
}

async fn sse_event(relay: &LeadRelay, event: &EncodedEvent) -> Event {
    let order_id = match event.kind {
        EventKind::Lead => match crate::codec::decode_lead(event) {
            Ok(lead) => relay
                .get_deal(&LeadKey::new(&lead.integration, lead.lead_id))
                .await
                .ok()
                .and_then(|deal| deal.answered_order_id),
            Err(_) => None,
        },
        _ => None,
    };
    Event::default()
        .id(event.sequence.to_string())
        .data(view::event(event, order_id.as_deref()).to_string())
}
