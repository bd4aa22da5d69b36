//! Roistat's webhook: read the request as it came, authenticate it, decode it,
//! dispatch its action. A request refused after the token check is kept with what
//! it carried; one refused before it is counted and remembered without it.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::actions::dispatch;
use super::error::OutcomeLabel;
use super::layers::{self, Client};
use super::{HttpState, Shared};
use crate::domain::{DEFAULT_INTEGRATION, RejectedRequest};
use crate::net::Limits;
use crate::own_crm::{Action, AuthError, BodyKind, RawRequest, form_credentials};
use crate::relay::{Error, bounded, refused};
use crate::telemetry::{self, Attr, SpanRole, TraceContext, TraceSpan};

/// `GET|POST /webhook` (and `/webhook/`): the default integration.
pub async fn receive_default(State(state): State<Shared>, request: Request) -> Response {
    receive(&state, DEFAULT_INTEGRATION, request).await
}

/// `GET|POST /webhook/{integration}` (and with a trailing slash): one of the
/// configured Roistat projects.
pub async fn receive_named(
    State(state): State<Shared>,
    Path(integration): Path<String>,
    request: Request,
) -> Response {
    receive(&state, &integration, request).await
}

/// Handles a webhook request: who may call and how often first, then the request
/// itself; every answer is counted, under the action it was for.
async fn receive(state: &HttpState, integration: &str, request: Request) -> Response {
    gated(state, request, |request| {
        handle(state, integration, request)
    })
    .await
}

/// A webhook path asked with a method other than GET or POST: a source that may
/// not call the webhook is told so first (403 before 405).
pub async fn method_not_allowed(State(state): State<Shared>, request: Request) -> Response {
    gated(&state, request, |request| {
        let error = Error::MethodNotAllowed("use GET or POST".into());
        let answer = super::refuse(&state, &request, error, "method_not_allowed");
        std::future::ready(Answered::before_action(answer))
    })
    .await
}

/// What a webhook request was answered, and the action it was for when that was
/// known.
pub struct Answered {
    response: Response,
    action: Option<Action>,
}

impl Answered {
    /// An answer given before the request's action was known.
    fn before_action(response: Response) -> Self {
        Self {
            response,
            action: None,
        }
    }

    /// The answer's metric labels: its action and outcome. What was refused before
    /// the action was known counts as action "unknown".
    fn labels(&self) -> (&'static str, &'static str) {
        let action = self.action.map_or("unknown", Action::as_str);
        let outcome = match self.response.extensions().get::<OutcomeLabel>() {
            Some(OutcomeLabel(label)) => label,
            None => outcome(self.response.status()),
        };
        (action, outcome)
    }
}

/// Admits a webhook request (the source allowlist and rate limit) before `answer`
/// sees it, and counts whatever is answered under the configured integration its
/// path names (a path that names none counts under integration ""), with its
/// latency.
async fn gated<F: Future<Output = Answered>>(
    state: &HttpState,
    request: Request,
    answer: impl FnOnce(Request) -> F,
) -> Response {
    let started = Instant::now();
    let counted = configured_integration(state, request.uri().path());
    // Exported when tracing is on: ids and labels only, never what the request
    // carries.
    let mut span = TraceSpan::default();
    if telemetry::tracing_on() {
        let parent = TraceContext::from_headers(request.headers());
        let attributes = vec![("integration", Attr::Text(counted.to_owned()))];
        span = TraceSpan::start("webhook", SpanRole::Server, parent, &[], attributes);
    }
    let answered = match layers::admit(state, &request, counted) {
        Some(refusal) => Answered::before_action(refusal),
        None => span.scope(answer(request)).await,
    };
    let (action, outcome) = answered.labels();
    telemetry::webhook_answered(counted, action, outcome, started.elapsed());
    if span.context().is_some() {
        let status = i64::from(answered.response.status().as_u16());
        span.set(vec![
            ("action", Attr::Str(action)),
            ("outcome", Attr::Str(outcome)),
            ("http.response.status_code", Attr::Int(status)),
        ]);
    }
    answered.response
}

/// The configured integration a webhook path names; "" for none.
pub fn configured_integration<'a>(state: &'a HttpState, path: &str) -> &'a str {
    let named = match path.trim_end_matches('/').strip_prefix("/webhook") {
        Some("") => DEFAULT_INTEGRATION,
        Some(named) => named.trim_start_matches('/'),
        None => "",
    };
    state
        .integrations
        .get_key_value(named)
        .map_or("", |(name, _)| name.as_str())
}

/// The outcomes of webhook answers, as metric labels.
pub const OUTCOMES: [&str; 14] = [
    "ok",
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "timeout",
    "conflict",
    "too_large",
    "unsupported",
    "rate_limited",
    "unavailable",
    "deal_pending",
    "error",
];

/// Why requests are refused before the token check, as metric labels.
pub const REFUSED_BEFORE_TOKEN: [&str; 15] = [
    "unknown_integration",
    "missing_token",
    "wrong_token",
    "wrong_user",
    "not_allowed",
    "rate_limited",
    "unknown_path",
    "method_not_allowed",
    "too_large",
    "timeout",
    "unreadable_body",
    "uri_too_long",
    "headers_too_large",
    "malformed_request",
    "body_budget",
];

/// A status as a metric label.
pub fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "ok",
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        409 => "conflict",
        413 | 414 | 431 => "too_large",
        415 => "unsupported",
        429 => "rate_limited",
        503 => "unavailable",
        _ => "error",
    }
}

/// Read → authenticate → decode → dispatch. The action is read from the request
/// as sent once (for the refusal's record and the label of an answer given before
/// decoding), and once from the decoded parameters (what is carried out).
async fn handle(state: &HttpState, integration: &str, request: Request) -> Answered {
    // Written out only when a refusal is recorded.
    let client_ip = request.extensions().get::<Client>().map(|Client(ip)| *ip);
    let client = || client_ip.map_or_else(String::new, |ip| ip.to_string());
    // The URI shares the request's bytes: no copy of the path.
    let uri = request.uri().clone();
    let path = uri.path();
    let refuse = |error: Error, label: &'static str, integration: &str| {
        let status = error.http_status();
        let record = refused(integration, client(), path, error.to_string(), status);
        state.relay.record_refused(record, label);
        error.into_response()
    };
    let Some(credentials) = state.integrations.get(integration) else {
        let message = format!("no integration {integration:?} is configured");
        let error = Error::NotFound(message);
        return Answered::before_action(refuse(error, "unknown_integration", ""));
    };
    // A token in the query is checked before any body is read: a request with the
    // wrong one costs no more than its head.
    let query = request.uri().query().unwrap_or_default().as_bytes();
    if let (user, Some(token)) = form_credentials(query)
        && let Err(error) = credentials.verify(user.as_deref(), Some(&token))
    {
        let named = Action::named(&RawRequest::query_only(query.to_vec()).action());
        return unauthenticated(refuse, error, integration, named);
    }
    // A body over the limit, over the budget of bodies read at once, or not sent in
    // time is refused whatever carries the token: saying so reveals nothing, and
    // nothing was read to keep.
    let (raw, _budget) = match read(request, &state.limits, &state.body_budget).await {
        Ok(read) => read,
        Err(error) => {
            let label = match error {
                Error::TooLarge(_) => "too_large",
                Error::Timeout(_) => "timeout",
                Error::Unavailable(_) => "body_budget",
                _ => "unreadable_body",
            };
            let mut response = refuse(error, label, integration);
            if label == "body_budget" {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            return Answered::before_action(response);
        }
    };
    let sent = raw.action();
    let named = Action::named(&sent);
    let (user, token) = raw.credentials();
    if let Err(error) = credentials.verify(user.as_deref(), token.as_deref()) {
        return unauthenticated(refuse, error, integration, named);
    }
    let (action, result) = authenticated(state, integration, &raw).await;
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            let status = super::error::status(&error);
            if status.is_client_error() {
                let record = rejected(integration, client(), path, &raw, &sent, &error);
                let label = outcome(status);
                state.relay.record_rejected(record, label).await;
            }
            error.into_response()
        }
    };
    Answered { response, action }
}

/// A request refused for its credentials: counted, remembered without what it
/// carried, answered 401.
fn unauthenticated(
    refuse: impl Fn(Error, &'static str, &str) -> Response,
    error: AuthError,
    integration: &str,
    action: Option<Action>,
) -> Answered {
    telemetry::auth_failed();
    let label = match error {
        AuthError::MissingToken => "missing_token",
        AuthError::WrongToken => "wrong_token",
        AuthError::WrongUser => "wrong_user",
    };
    let error = Error::Unauthenticated(error.to_string());
    Answered {
        response: refuse(error, label, integration),
        action,
    }
}

/// Decodes an authenticated request (which never fails: what cannot be read is
/// noted and kept) and carries out its action; the action, when it names one.
async fn authenticated(
    state: &HttpState,
    integration: &str,
    raw: &RawRequest,
) -> (Option<Action>, Result<Response, Error>) {
    let params = raw.decode();
    match Action::of(&params) {
        Ok(action) => (
            Some(action),
            dispatch(state, integration, action, &params, raw).await,
        ),
        Err(error) => (None, Err(error.into())),
    }
}

/// A request refused after the token check, as it is kept.
fn rejected(
    integration: &str,
    source: String,
    path: &str,
    raw: &RawRequest,
    action: &str,
    error: &Error,
) -> RejectedRequest {
    let (query, body) = raw.masked();
    RejectedRequest {
        id: 0,
        time: OffsetDateTime::now_utc(),
        integration: integration.to_owned(),
        source,
        authenticated: true,
        path: bounded(path, 256),
        action: bounded(action, 256),
        reason: error.to_string(),
        status: error.http_status(),
        query,
        body,
    }
}

/// The request as it came, and its share of the body budget (held while the body
/// is); an error when its body cannot be read (too large, too slow, over the
/// budget).
async fn read(
    request: Request,
    limits: &Limits,
    budget: &Arc<Semaphore>,
) -> Result<(RawRequest, Option<OwnedSemaphorePermit>), Error> {
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().unwrap_or_default().as_bytes().to_vec();
    if parts.method != Method::POST {
        return Ok((RawRequest::query_only(query), None));
    }
    let declared = declared_length(&parts.headers);
    if declared.is_some_and(|length| length > limits.max_body_bytes as u64) {
        return Err(too_large(limits));
    }
    // Each body counts for what it says it is, else for the most it may be.
    let share = declared.map_or(limits.max_body_bytes, |length| length as usize);
    let share = u32::try_from(share.max(1)).unwrap_or(u32::MAX);
    let Ok(permit) = budget.clone().try_acquire_many_owned(share) else {
        return Err(Error::Unavailable(
            "too many request bodies are being read at once; retry shortly".into(),
        ));
    };
    let content_type_sent = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default();
    let body_kind = match content_type(&parts.headers).as_deref() {
        Some("application/json") => BodyKind::Json,
        None | Some("application/x-www-form-urlencoded") | Some("text/plain") => BodyKind::Form,
        Some(other) => BodyKind::Unsupported(other.to_owned()),
    };
    let body = read_body(body, limits).await?;
    let raw = RawRequest {
        query,
        body: body.to_vec(),
        body_kind,
        content_type: content_type_sent,
    };
    Ok((raw, Some(permit)))
}

/// The media type of a request, lowercased, without parameters.
fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    (!essence.is_empty()).then(|| essence.to_ascii_lowercase())
}

/// The body's length as its head declares it.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
}

fn too_large(limits: &Limits) -> Error {
    Error::TooLarge(format!("request body over {} bytes", limits.max_body_bytes))
}

async fn read_body(body: Body, limits: &Limits) -> Result<axum::body::Bytes, Error> {
    let reading = axum::body::to_bytes(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.body_timeout, reading).await {
        Err(_) => Err(Error::Timeout("request body not received in time".into())),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) => {
            let over_limit = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if over_limit {
                Err(too_large(limits))
            } else {
                Err(Error::InvalidArgument(
                    "request body could not be read".into(),
                ))
            }
        }
    }
}
