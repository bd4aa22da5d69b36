//! What runs around the handlers: a request id and span for every request, limits
//! on the request head, and, around the webhook, who may call it and how often.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::HttpError;
use crate::net::{AccessPolicy, Limits};
use crate::telemetry;

const REQUEST_ID: &str = "x-request-id";

/// Runs each request in a span with a request id: the caller's `x-request-id` when
/// it sends a sane one, else a new one; the answer carries it back.
pub async fn with_request_id(request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned);
    let request_id = given.unwrap_or_else(telemetry::request_id);
    let span = tracing::info_span!("http", request_id = %request_id, path = %request.uri().path());
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Refuses an oversized URI (414) or header block (431) before any handler runs.
pub async fn enforce_head_limits(
    State(limits): State<Limits>,
    request: Request,
    next: Next,
) -> Response {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_bytes > limits.max_uri_bytes {
        return HttpError::new(
            StatusCode::URI_TOO_LONG,
            format!("request URI over {} bytes", limits.max_uri_bytes),
        )
        .into_response();
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > limits.max_header_bytes || headers.len() > limits.max_headers {
        return HttpError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request headers over {} bytes or {} fields",
                limits.max_header_bytes, limits.max_headers
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// A per-client-address limit on webhook requests.
pub type RateLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// A limiter allowing `per_second` requests a second per address, in bursts of as many.
pub fn rate_limiter(per_second: NonZeroU32) -> RateLimiter {
    governor::RateLimiter::keyed(governor::Quota::per_second(per_second))
}

/// Who may call the webhook, and how often.
#[derive(Clone)]
pub struct Admission {
    pub access: Arc<AccessPolicy>,
    pub rate_limit: Option<Arc<RateLimiter>>,
}

/// Refuses webhook requests from sources outside the allowlist (403) and beyond
/// the per-address rate limit (429); the client is found as the policy says.
pub async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    if let Some(peer) = peer {
        let client = admission.access.client_ip(peer, request.headers());
        if !admission.access.allows(client) {
            tracing::warn!(%client, "webhook refused: source address not allowed");
            return HttpError::new(StatusCode::FORBIDDEN, "source address not allowed")
                .into_response();
        }
        if let Some(limiter) = &admission.rate_limit
            && limiter.check_key(&client).is_err()
        {
            return HttpError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests from this address; retry later",
            )
            .into_response();
        }
    }
    next.run(request).await
}
