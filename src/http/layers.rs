//! What runs around the handlers: a request id and span for every request, limits
//! on the request head, and, for the webhook, who may call it and how often, and
//! the count of its answers.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::Service;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use super::{HttpState, Shared};
use crate::net::{Limits, rate_key};
use crate::relay::Error;
use crate::relay::{bounded, refused};
use crate::telemetry;

const REQUEST_ID: &str = "x-request-id";

/// What runs before every handler: the request's id (the caller's `x-request-id`
/// when it sends a sane one, else a new one; the answer carries it back) and span,
/// the limits on the request head (414, 431), and the client's address as the
/// source policy finds it. It wraps the whole router once, as a service of its
/// own: no boxed future, no copy of the request's future, no clone of a route.
#[derive(Clone)]
pub struct Front<S> {
    inner: S,
    state: Shared,
}

impl<S> Front<S> {
    pub fn new(inner: S, state: Shared) -> Self {
        Self { inner, state }
    }
}

impl<S> Service<Request> for Front<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = FrontFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let given = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .filter(|id| (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
            .and_then(|id| HeaderValue::from_str(id).ok());
        let request_id = given.unwrap_or_else(|| {
            HeaderValue::try_from(telemetry::request_id())
                .unwrap_or_else(|_| HeaderValue::from_static("-"))
        });
        if let Some((refusal, label)) = head_refusal(&self.state.limits, &request) {
            let source = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip().to_string())
                .unwrap_or_default();
            let status = refusal.http_status();
            let record = refused(
                "",
                source,
                request.uri().path(),
                refusal.to_string(),
                status,
            );
            self.state.relay.record_refused(record, label);
            let outcome = super::webhook::outcome(super::error::status(&refusal));
            telemetry::webhook_answered("", "unknown", outcome, std::time::Duration::ZERO);
            return FrontFuture::Refused {
                response: Some(refusal.into_response()),
                request_id,
            };
        }
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer);
        if let Some(peer) = peer {
            let client = self.state.access.client_ip(peer, request.headers());
            request.extensions_mut().insert(Client(client));
        }
        // A path is the caller's to choose: only its start goes to the logs.
        let span = tracing::info_span!(
            "http",
            request_id = request_id.to_str().unwrap_or_default(),
            path = %bounded(request.uri().path(), 64),
        );
        FrontFuture::Inner {
            inner: self.inner.call(request).instrument(span),
            request_id: Some(request_id),
        }
    }
}

pin_project! {
    /// The answer of [`Front`]: the handler's, or a refusal, with the request id.
    #[project = FrontProjection]
    pub enum FrontFuture<F> {
        Inner {
            #[pin]
            inner: Instrumented<F>,
            request_id: Option<HeaderValue>,
        },
        Refused {
            response: Option<Response>,
            request_id: HeaderValue,
        },
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for FrontFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (mut response, request_id) = match self.project() {
            FrontProjection::Inner { inner, request_id } => {
                let Ok(response) = ready!(inner.poll(cx));
                (response, request_id.take())
            }
            FrontProjection::Refused {
                response,
                request_id,
            } => match response.take() {
                Some(response) => (response, Some(request_id.clone())),
                None => return Poll::Pending,
            },
        };
        if let Some(request_id) = request_id {
            response.headers_mut().insert(REQUEST_ID, request_id);
        }
        Poll::Ready(Ok(response))
    }
}

/// An oversized URI (414) or header block (431), refused before any handler runs,
/// with its metric label.
fn head_refusal(limits: &Limits, request: &Request) -> Option<(Error, &'static str)> {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_bytes > limits.max_uri_bytes {
        let error = Error::UriTooLong(format!("request URI over {} bytes", limits.max_uri_bytes));
        return Some((error, "uri_too_long"));
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > limits.max_header_bytes || headers.len() > limits.max_headers {
        let error = Error::HeadersTooLarge(format!(
            "request headers over {} bytes or {} fields",
            limits.max_header_bytes, limits.max_headers
        ));
        return Some((error, "headers_too_large"));
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

/// Refuses a webhook request from a source outside the allowlist (403) or beyond
/// the per-address rate limit (429), and remembers it under `integration` (the
/// configured one its path names); `None` admits it.
pub fn admit(state: &HttpState, request: &Request, integration: &str) -> Option<Response> {
    let Client(client) = request.extensions().get::<Client>().copied()?;
    let refusal = if !state.access.allows(client) {
        Some((
            Error::PermissionDenied("source address not allowed".into()),
            "not_allowed",
        ))
    } else if let Some(limiter) = &state.rate_limit
        && limiter.check_key(&rate_key(client)).is_err()
    {
        let error =
            Error::ResourceExhausted("too many requests from this address; retry later".into());
        Some((error, "rate_limited"))
    } else {
        None
    };
    let (error, label) = refusal?;
    let path = request.uri().path();
    let status = error.http_status();
    let record = refused(
        integration,
        client.to_string(),
        path,
        error.to_string(),
        status,
    );
    state.relay.record_refused(record, label);
    Some(error.into_response())
}
