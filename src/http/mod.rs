//! The HTTP face: Roistat's webhook, health and readiness, metrics, and the HTTP/1.1
//! server loop (which the console's server shares). It calls the relay only.

mod actions;
mod error;
mod layers;
mod probes;
mod serve;
mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};

pub use layers::{RateLimiter, rate_limiter};
pub use serve::serve;

use crate::net::{AccessPolicy, Limits};
use crate::own_crm::Credentials;
use crate::relay::{Error, LeadRelay, refused};

/// What the HTTP handlers share, behind one pointer (cloned per request).
type Shared = Arc<HttpState>;

/// What the HTTP handlers share.
pub struct HttpState {
    pub relay: LeadRelay,
    /// Credentials by integration; "default" is served at plain /webhook.
    pub integrations: Arc<BTreeMap<String, Credentials>>,
    pub limits: Limits,
    /// Bytes of webhook bodies that may be read at once (`Limits::body_budget_bytes`).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// Orders or clients per export page when Roistat gives no `limit`.
    pub export_page_size: u64,
    /// Which source addresses may call the webhook, and whose `X-Forwarded-For`
    /// names the client.
    pub access: Arc<AccessPolicy>,
    /// Webhook requests per second allowed per client address; `None`: no limit.
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// Whether `/metrics` is served here (not when it has an address of its own).
    pub serve_metrics: bool,
}

/// The outcomes and refusal reasons the HTTP face labels its metrics with, for the
/// series present from start-up.
pub fn metric_labels() -> (Vec<&'static str>, Vec<(&'static str, &'static str)>) {
    let before = webhook::REFUSED_BEFORE_TOKEN.map(|reason| ("before_token", reason));
    let after = webhook::OUTCOMES
        .into_iter()
        .filter(|outcome| !matches!(*outcome, "ok" | "unauthorized" | "unavailable" | "error"))
        .map(|outcome| ("after_token", outcome));
    (
        webhook::OUTCOMES.to_vec(),
        before.into_iter().chain(after).collect(),
    )
}

/// The HTTP face: its routes, behind the front that every request passes.
pub type HttpService = layers::Front<Router>;

/// The HTTP routes, behind the front.
pub fn router(state: Arc<HttpState>) -> HttpService {
    let default: MethodRouter<Shared> = get(webhook::receive_default)
        .post(webhook::receive_default)
        .fallback(webhook::method_not_allowed);
    let named: MethodRouter<Shared> = get(webhook::receive_named)
        .post(webhook::receive_named)
        .fallback(webhook::method_not_allowed);
    // A trailing slash, as people paste URLs into Roistat's settings, is the same
    // URL.
    let webhooks = Router::new()
        .route("/webhook", default.clone())
        .route("/webhook/", default)
        .route("/webhook/{integration}", named.clone())
        .route("/webhook/{integration}/", named);
    let mut router = Router::new().merge(webhooks);
    if state.serve_metrics {
        router = router.route("/metrics", get(probes::metrics));
    }
    let router = router
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .fallback(not_found)
        .with_state(state.clone());
    layers::Front::new(router, state)
}

/// Only `GET /metrics`, for a separate metrics address.
pub fn metrics_router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/metrics", get(probes::metrics))
        .fallback(|| async { Error::NotFound("no such path".into()) })
        .with_state(state)
}

/// A path that is not served: answered, and remembered as a refused request.
async fn not_found(State(state): State<Shared>, request: Request) -> Response {
    refuse(
        &state,
        &request,
        Error::NotFound("no such path".into()),
        "unknown_path",
    )
}

fn refuse(state: &HttpState, request: &Request, error: Error, label: &'static str) -> Response {
    let client = request
        .extensions()
        .get::<layers::Client>()
        .map_or_else(String::new, |layers::Client(ip)| ip.to_string());
    let status = error.http_status();
    let path = request.uri().path();
    let record = refused("", client, path, error.to_string(), status);
    state.relay.record_refused(record, label);
    error.into_response()
}
