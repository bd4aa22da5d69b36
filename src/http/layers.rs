//! What runs around the handlers: a request id and span for every request, limits
//! on the request head, and, around the webhook, who may call it and how often, and
//! the count of its answers.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::HttpError;
use super::{HttpState, Shared, webhook};
use crate::net::{Limits, rate_key};
use crate::relay::{bounded, refused};
use crate::telemetry;

const REQUEST_ID: &str = "x-request-id";

/// What runs before every handler, in one layer: the request's id (the caller's
/// `x-request-id` when it sends a sane one, else a new one; the answer carries it
/// back) and span, the limits on the request head (414, 431), and the client's
/// address as the source policy finds it.
pub async fn front(State(state): State<Shared>, mut request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned);
    let request_id = given.unwrap_or_else(telemetry::request_id);
    // A path is the caller's to choose: only its start goes to the logs.
    let path = bounded(request.uri().path(), 64);
    let span = tracing::info_span!("http", request_id = %request_id, path = %path);
    let mut response = match head_refusal(&state.limits, &request) {
        Some(refusal) => refusal.into_response(),
        None => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| *peer);
            if let Some(peer) = peer {
                let client = state.access.client_ip(peer, request.headers());
                request.extensions_mut().insert(Client(client));
            }
            next.run(request).instrument(span).await
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// An oversized URI (414) or header block (431), refused before any handler runs.
fn head_refusal(limits: &Limits, request: &Request) -> Option<HttpError> {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_bytes > limits.max_uri_bytes {
        return Some(HttpError::new(
            StatusCode::URI_TOO_LONG,
            format!("request URI over {} bytes", limits.max_uri_bytes),
        ));
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > limits.max_header_bytes || headers.len() > limits.max_headers {
        return Some(HttpError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request headers over {} bytes or {} fields",
                limits.max_header_bytes, limits.max_headers
            ),
        ));
    }
    None
}

/// A per-client-address limit on webhook requests.
pub type RateLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// A limiter allowing `per_second` requests a second per address, in bursts of as many.
pub fn rate_limiter(per_second: NonZeroU32) -> RateLimiter {
    governor::RateLimiter::keyed(governor::Quota::per_second(per_second))
}

/// The client's address, as the webhook's source policy finds it (the peer, or
/// what a trusted proxy says in `X-Forwarded-For`).
#[derive(Debug, Clone, Copy)]
pub struct Client(pub IpAddr);

/// Around the webhook's routes: who may call them and how often, then the count of
/// every answer by integration, action and outcome, with its latency.
pub async fn webhook_gate(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let counted = webhook::configured_integration(&state, request.uri().path());
    let response = match admit(&state, &request, counted) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    };
    webhook::count(counted, &response, started);
    response
}

/// Refuses a webhook request from a source outside the allowlist (403) or beyond
/// the per-address rate limit (429), and remembers it under `integration` (the
/// configured one its path names); `None` admits it.
fn admit(state: &HttpState, request: &Request, integration: &str) -> Option<Response> {
    let Client(client) = request.extensions().get::<Client>().copied()?;
    let refusal = if !state.access.allows(client) {
        Some((
            HttpError::new(StatusCode::FORBIDDEN, "source address not allowed"),
            "not_allowed",
        ))
    } else if let Some(limiter) = &state.rate_limit
        && limiter.check_key(&rate_key(client)).is_err()
    {
        let error = HttpError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests from this address; retry later",
        );
        Some((error, "rate_limited"))
    } else {
        None
    };
    let (error, label) = refusal?;
    let path = request.uri().path();
    let status = error.status().as_u16();
    let record = refused(
        integration,
        client.to_string(),
        path,
        error.message().into(),
        status,
    );
    state.relay.record_refused(record, label);
    Some(error.into_response())
}
