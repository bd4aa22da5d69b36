//! Health, readiness and metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::error::json;
use crate::own_crm::answer::OkAnswer;
use crate::relay::Error;
use crate::telemetry;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Response {
    json(StatusCode::OK, &OkAnswer::OK)
}

/// `GET /readyz`: the store could commit an empty write, as a lead, within the last
/// few seconds (checked in the background: a flood of probes costs nothing).
pub async fn readyz(State(state): State<Shared>) -> Response {
    if state.relay.ready() {
        json(StatusCode::OK, &OkAnswer::OK)
    } else {
        Error::Unavailable("store unavailable".into()).into_response()
    }
}

/// `GET /metrics`: Prometheus text, from what is kept in memory (the consumers'
/// figures are refreshed in the background, not read per scrape).
pub async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::render_metrics(),
    )
        .into_response()
}
