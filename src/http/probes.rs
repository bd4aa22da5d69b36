//! Health, readiness and metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use super::error::{HttpError, json};
use crate::roistat::answer::OkAnswer;
use crate::telemetry;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Response {
    json(StatusCode::OK, &OkAnswer::OK)
}

/// `GET /readyz`: the store can commit a lead.
pub async fn readyz(State(state): State<HttpState>) -> Response {
    if state.relay.ready().await {
        json(StatusCode::OK, &OkAnswer::OK)
    } else {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
    }
}

/// `GET /metrics`: Prometheus text, with durable consumers' pending counts fresh.
pub async fn metrics(State(state): State<HttpState>) -> Response {
    const PAGE: u32 = 1000;
    let mut after = String::new();
    while let Ok(consumers) = state.relay.list_consumers(&after, PAGE).await {
        for consumer in &consumers {
            telemetry::consumer_pending(&consumer.name, consumer.pending);
        }
        match consumers.last() {
            Some(last) if consumers.len() == PAGE as usize => after.clone_from(&last.name),
            _ => break,
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::metrics().render(),
    )
        .into_response()
}
