//! The HTTP face: Roistat's webhook and the health endpoints.

mod access;
mod serve;

pub use access::AccessPolicy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use serve::serve;

use crate::domain::{
    DEFAULT_INTEGRATION, EventBody, Params, Scheme, parse_call, parse_export, parse_lead,
    parse_message, parse_task,
};
use crate::error::Error;
use crate::relay::{ExportAnswer, LeadRelay, OrderExport};
use crate::roistat::{
    self, Credentials, DecodeError, ErrorAnswer, IdAnswer, OkAnswer, OrderAnswer,
};
use crate::store::ExportedClient;
use crate::telemetry;
use tracing::Instrument;

/// Limits on what a request may carry. Roistat puts whole leads in the query string,
/// so the URI limit is generous; it stays below the 65,534 bytes the `http` crate can
/// represent at all (longer URIs get a bare 414 from the HTTP layer itself).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: usize,
    /// Time allowed for a request's head (slow clients are cut off).
    pub header_timeout: Duration,
    /// Time allowed for reading a request's body.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_uri_bytes: 60 * 1024,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub relay: LeadRelay,
    /// Credentials by integration; "default" is served at plain /webhook.
    pub integrations: Arc<BTreeMap<String, Credentials>>,
    pub limits: Limits,
    /// Orders or clients per export page when Roistat gives no `limit`.
    pub export_page_size: u64,
    /// Which source addresses may call the webhook.
    pub access: Arc<AccessPolicy>,
    /// Webhook requests per second allowed per client address; `None`: no limit.
    pub rate_limit: Option<Arc<RateLimiter>>,
}

/// A per-client-address limit on webhook requests.
pub type RateLimiter = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

/// A limiter allowing `per_second` requests a second per address, in bursts of as many.
pub fn rate_limiter(per_second: std::num::NonZeroU32) -> RateLimiter {
    governor::RateLimiter::keyed(governor::Quota::per_second(per_second))
}

/// The HTTP routes.
pub fn router(state: HttpState) -> Router {
    let limits = state.limits;
    let method_not_allowed =
        || async { HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST") };
    Router::new()
        .route(
            "/webhook",
            get(receive_default_webhook)
                .post(receive_default_webhook)
                .fallback(method_not_allowed),
        )
        .route(
            "/webhook/{integration}",
            get(receive_integration_webhook)
                .post(receive_integration_webhook)
                .fallback(method_not_allowed),
        )
        .route("/metrics", get(render_metrics))
        .route(
            "/healthz",
            get(|| async { roistat_json(StatusCode::OK, &OkAnswer::OK) }),
        )
        .route("/readyz", get(readyz))
        .fallback(|| async { HttpError::new(StatusCode::NOT_FOUND, "no such path") })
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            enforce_head_limits(limits, request, next)
        }))
        .layer(middleware::from_fn(with_request_id))
        .with_state(state)
}

/// Only `GET /metrics`, for a separate metrics address.
pub fn metrics_router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .fallback(|| async { HttpError::new(StatusCode::NOT_FOUND, "no such path") })
        .with_state(state)
}

/// Runs each request in a span with a request id: the caller's `x-request-id` when
/// it sends a sane one, else a new one; the answer carries it back.
async fn with_request_id(request: Request, next: Next) -> Response {
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

const REQUEST_ID: &str = "x-request-id";

/// `GET /metrics`: Prometheus text, with durable consumers' pending counts fresh.
async fn render_metrics(State(state): State<HttpState>) -> Response {
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

/// A refused request: an HTTP status and Roistat's error JSON.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<Error> for HttpError {
    fn from(error: Error) -> Self {
        let status =
            StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, error.to_string())
    }
}

impl From<DecodeError> for HttpError {
    fn from(error: DecodeError) -> Self {
        let status = match error {
            DecodeError::ParamTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, error.to_string())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        roistat_json(self.status, &ErrorAnswer::new(&self.message))
    }
}

/// The answer to a plain-HTTP request on the HTTPS port; the connection is closed.
fn plain_http_refused() -> Response {
    let mut response = HttpError::new(
        StatusCode::BAD_REQUEST,
        "this port speaks HTTPS: send the request to an https:// URL",
    )
    .into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

fn roistat_json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_else(|_| b"{\"status\":\"error\"}".to_vec());
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Refuses an oversized URI (414) or header block (431) before any handler runs.
async fn enforce_head_limits(limits: Limits, request: Request, next: Next) -> Response {
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

async fn readyz(State(state): State<HttpState>) -> Response {
    if state.relay.ready().await {
        roistat_json(StatusCode::OK, &OkAnswer::OK)
    } else {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
    }
}

/// `GET|POST /webhook`: the default integration.
async fn receive_default_webhook(State(state): State<HttpState>, request: Request) -> Response {
    receive_webhook(&state, DEFAULT_INTEGRATION, request).await
}

/// `GET|POST /webhook/{integration}`: one of the configured Roistat projects.
async fn receive_integration_webhook(
    State(state): State<HttpState>,
    Path(integration): Path<String>,
    request: Request,
) -> Response {
    receive_webhook(&state, &integration, request).await
}

/// Every Roistat action, dispatched on `action`; counted by action and outcome.
async fn receive_webhook(state: &HttpState, integration: &str, request: Request) -> Response {
    let started = Instant::now();
    let mut action = "unknown";
    let response = match handle_webhook(state, integration, request, &mut action).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    let outcome = match response.status().as_u16() {
        200 => "ok",
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        408 => "timeout",
        413 | 414 | 431 => "too_large",
        415 => "unsupported",
        429 => "rate_limited",
        503 => "unavailable",
        _ => "error",
    };
    telemetry::webhook_answered(action, outcome, started.elapsed());
    response
}

/// The actions of the own-CRM protocol, as metric labels.
const ACTIONS: &[&str] = &[
    "lead",
    "message",
    "task",
    "call",
    "import_scheme",
    "export",
    "export_clients",
];

async fn handle_webhook(
    state: &HttpState,
    integration: &str,
    request: Request,
    action_label: &mut &'static str,
) -> Result<Response, HttpError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    if let Some(peer) = peer {
        let client = state.access.client_ip(peer, request.headers());
        if !state.access.allows(client) {
            tracing::warn!(%client, "webhook refused: source address not allowed");
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                "source address not allowed",
            ));
        }
        if let Some(limiter) = &state.rate_limit
            && limiter.check_key(&client).is_err()
        {
            return Err(HttpError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests from this address; retry later",
            ));
        }
    }
    let Some(credentials) = state.integrations.get(integration) else {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            format!("no integration {integration:?} is configured"),
        ));
    };
    let (parts, body) = request.into_parts();
    let mut params = Params::new();
    if let Some(query) = parts.uri.query() {
        roistat::decode_form(query.as_bytes(), &mut params)?;
    }
    if parts.method == Method::POST {
        // Like PHP's $_REQUEST, which Roistat's own modules read: body over query.
        let body = read_body(body, &parts.headers, &state.limits).await?;
        if !body.is_empty() {
            match content_type(&parts.headers).as_deref() {
                Some("application/json") => roistat::decode_json(&body, &mut params)?,
                None | Some("application/x-www-form-urlencoded") | Some("text/plain") => {
                    roistat::decode_form(&body, &mut params)?
                }
                Some(other) => {
                    return Err(HttpError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        format!(
                            "unsupported content type {other:?}: send a query string, a form or a JSON object"
                        ),
                    ));
                }
            }
        }
    }

    let action = params.get("action").map(str::trim).unwrap_or_default();
    *action_label = ACTIONS
        .iter()
        .find(|known| **known == action)
        .copied()
        .unwrap_or("unknown");
    if let Err(error) = credentials.verify(params.get("user"), params.get("token")) {
        tracing::warn!(%error, integration, "webhook refused: not authenticated");
        telemetry::auth_failed();
        return Err(HttpError::new(StatusCode::UNAUTHORIZED, error.to_string()));
    }

    let relay = &state.relay;
    fn ok(body: &impl serde::Serialize) -> Response {
        roistat_json(StatusCode::OK, body)
    }
    match action {
        "lead" => {
            let lead = parse_lead(integration, &params).map_err(Error::from)?;
            let answer = relay.receive_lead(lead).await?;
            Ok(ok(&OrderAnswer::ok(&answer.order_id)))
        }
        "message" => {
            let message = parse_message(integration, &params).map_err(Error::from)?;
            relay.receive_event(EventBody::Message(message)).await?;
            Ok(ok(&OkAnswer::OK))
        }
        "task" => {
            let task = parse_task(integration, &params).map_err(Error::from)?;
            let id = relay
                .receive_event(EventBody::Task(task))
                .await?
                .to_string();
            Ok(ok(&IdAnswer {
                status: "ok",
                task_id: Some(&id),
                call_id: None,
            }))
        }
        "call" => {
            let call = parse_call(integration, &params).map_err(Error::from)?;
            let id = relay
                .receive_event(EventBody::Call(call))
                .await?
                .to_string();
            Ok(ok(&IdAnswer {
                status: "ok",
                task_id: None,
                call_id: Some(&id),
            }))
        }
        "import_scheme" => Ok(ok(&relay.scheme_or_empty(integration).await?)),
        "export" => {
            let query = parse_export(&params).map_err(Error::from)?;
            let page = relay
                .export_orders(integration, query, state.export_page_size)
                .await?;
            let scheme = relay.scheme_or_empty(integration).await?;
            Ok(ok(&export_answer(&scheme, &page)))
        }
        "export_clients" => {
            let query = parse_export(&params).map_err(Error::from)?;
            let page = relay
                .export_clients(integration, query, state.export_page_size)
                .await?;
            Ok(ok(&clients_answer(&page)))
        }
        "" => Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "missing parameter: action",
        )),
        other => Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown action {other:?}: expected lead, message, task, call, import_scheme, export or export_clients"
            ),
        )),
    }
}

fn export_answer<'a>(
    scheme: &'a Scheme,
    page: &'a ExportAnswer<OrderExport>,
) -> roistat::ExportAnswer<'a> {
    let orders = page
        .records
        .iter()
        .map(|export| {
            let deal = &export.order.deal;
            let details = &deal.details;
            let created = details
                .create_time
                .unwrap_or(export.order.lead_receive_time);
            roistat::ExportOrder {
                id: &export.order_id,
                name: details.name.as_deref().unwrap_or_default(),
                date_create: created.unix_timestamp().to_string(),
                status: details.status.as_deref().unwrap_or_default(),
                price: roistat::money_json(details.price),
                cost: roistat::money_json(details.cost),
                roistat: &export.order.visit,
                client_id: details.client_id.as_deref().unwrap_or_default(),
                manager_id: details.manager_id.as_deref().unwrap_or_default(),
                fields: &details.fields,
            }
        })
        .collect();
    roistat::ExportAnswer {
        statuses: &scheme.statuses,
        orders,
        pagination: roistat::Pagination {
            total_count: page.total_count,
            limit: page.limit,
        },
    }
}

fn clients_answer(page: &ExportAnswer<ExportedClient>) -> roistat::ClientsAnswer<'_> {
    roistat::ClientsAnswer {
        clients: page
            .records
            .iter()
            .map(|exported| {
                let client = &exported.client;
                roistat::ExportClient {
                    id: &client.id,
                    name: &client.name,
                    phone: &client.phone,
                    email: &client.email,
                    company: &client.company,
                    birth_date: client.birth_date.as_deref(),
                }
            })
            .collect(),
        pagination: roistat::Pagination {
            total_count: page.total_count,
            limit: page.limit,
        },
    }
}

/// The media type of a request, lowercased, without parameters.
fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    (!essence.is_empty()).then(|| essence.to_ascii_lowercase())
}

async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limits: &Limits,
) -> Result<axum::body::Bytes, HttpError> {
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {} bytes", limits.max_body_bytes),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.max_body_bytes as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(
        limits.body_timeout,
        axum::body::to_bytes(body, limits.max_body_bytes),
    )
    .await
    {
        Err(_) => Err(HttpError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time",
        )),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) => {
            let over_limit = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if over_limit {
                Err(too_large())
            } else {
                Err(HttpError::new(
                    StatusCode::BAD_REQUEST,
                    "request body could not be read",
                ))
            }
        }
    }
}
