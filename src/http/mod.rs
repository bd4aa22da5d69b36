//! The HTTP face: Roistat's webhook, health and readiness, and metrics. It calls
//! the relay only.

mod error;
mod layers;
mod probes;
mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::get;

pub use error::HttpError;
pub use layers::{Admission, RateLimiter, rate_limiter};

use crate::net::Limits;
use crate::relay::LeadRelay;
use crate::roistat::Credentials;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub relay: LeadRelay,
    /// Credentials by integration; "default" is served at plain /webhook.
    pub integrations: Arc<BTreeMap<String, Credentials>>,
    pub limits: Limits,
    /// Orders or clients per export page when Roistat gives no `limit`.
    pub export_page_size: u64,
    /// Who may call the webhook, and how often.
    pub admission: Admission,
}

/// The HTTP routes.
pub fn router(state: HttpState) -> Router {
    let method_not_allowed =
        || async { HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST") };
    let webhook = Router::new()
        .route(
            "/webhook",
            get(webhook::receive_default)
                .post(webhook::receive_default)
                .fallback(method_not_allowed),
        )
        .route(
            "/webhook/{integration}",
            get(webhook::receive_named)
                .post(webhook::receive_named)
                .fallback(method_not_allowed),
        )
        .layer(middleware::from_fn_with_state(
            state.admission.clone(),
            layers::admit,
        ))
        .layer(middleware::from_fn(webhook::count));
    Router::new()
        .merge(webhook)
        .route("/metrics", get(probes::metrics))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.limits,
            layers::enforce_head_limits,
        ))
        .layer(middleware::from_fn(layers::with_request_id))
        .with_state(state)
}

/// Only `GET /metrics`, for a separate metrics address.
pub fn metrics_router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(probes::metrics))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, "no such path")
}
