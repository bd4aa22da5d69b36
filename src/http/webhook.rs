//! Roistat's webhook: decode the request, authenticate it, dispatch its action to
//! the relay, and answer in the shape Roistat expects.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::HttpState;
use super::error::{HttpError, json};
use crate::domain::{DEFAULT_INTEGRATION, EventBody, ExportQuery, Order, Scheme};
use crate::net::Limits;
use crate::relay::ExportPage;
use crate::roistat::answer::{
    ClientsAnswer, ExportAnswer, ExportClient, ExportOrder, IdAnswer, OkAnswer, OrderAnswer,
    Pagination, money_json,
};
use crate::roistat::{
    self, Action, Params, parse_call, parse_export, parse_lead, parse_message, parse_task,
};
use crate::telemetry;

/// The action a webhook answer was for, for the metrics layer.
#[derive(Debug, Clone, Copy)]
struct Answered(&'static str);

/// `GET|POST /webhook`: the default integration.
pub async fn receive_default(State(state): State<HttpState>, request: Request) -> Response {
    receive(&state, DEFAULT_INTEGRATION, request).await
}

/// `GET|POST /webhook/{integration}`: one of the configured Roistat projects.
pub async fn receive_named(
    State(state): State<HttpState>,
    Path(integration): Path<String>,
    request: Request,
) -> Response {
    receive(&state, &integration, request).await
}

async fn receive(state: &HttpState, integration: &str, request: Request) -> Response {
    let mut action = None;
    let mut response = match handle(state, integration, request, &mut action).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    let label = action.map_or("unknown", Action::as_str);
    response.extensions_mut().insert(Answered(label));
    response
}

/// Counts every webhook answer by action and outcome, with its latency; what the
/// layers before the handler refused counts as action "unknown".
pub async fn count(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let action = response
        .extensions()
        .get::<Answered>()
        .map_or("unknown", |answered| answered.0);
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

/// Decode → authenticate → dispatch.
async fn handle(
    state: &HttpState,
    integration: &str,
    request: Request,
    action: &mut Option<Action>,
) -> Result<Response, HttpError> {
    let Some(credentials) = state.integrations.get(integration) else {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            format!("no integration {integration:?} is configured"),
        ));
    };
    let params = decode(request, &state.limits).await?;
    let asked = Action::of(&params);
    *action = asked.as_ref().ok().copied();
    if let Err(error) = credentials.verify(params.get("user"), params.get("token")) {
        tracing::warn!(%error, integration, "webhook refused: not authenticated");
        telemetry::auth_failed();
        return Err(HttpError::new(StatusCode::UNAUTHORIZED, error.to_string()));
    }
    dispatch(state, integration, asked?, &params).await
}

/// The request's parameters: the query string, then (for POST) the body, whose
/// values win, as in PHP's `$_REQUEST`, which Roistat's own modules read.
async fn decode(request: Request, limits: &Limits) -> Result<Params, HttpError> {
    let (parts, body) = request.into_parts();
    let mut params = Params::new();
    if let Some(query) = parts.uri.query() {
        roistat::decode_form(query.as_bytes(), &mut params)?;
    }
    if parts.method == Method::POST {
        let body = read_body(body, &parts.headers, limits).await?;
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
    Ok(params)
}

async fn dispatch(
    state: &HttpState,
    integration: &str,
    action: Action,
    params: &Params,
) -> Result<Response, HttpError> {
    let relay = &state.relay;
    Ok(match action {
        Action::Lead => {
            let answer = relay.receive_lead(parse_lead(integration, params)?).await?;
            ok(&OrderAnswer::ok(&answer.order_id))
        }
        Action::Message => {
            let message = parse_message(integration, params)?;
            relay.receive_event(EventBody::Message(message)).await?;
            ok(&OkAnswer::OK)
        }
        Action::Task => {
            let task = parse_task(integration, params)?;
            let id = relay
                .receive_event(EventBody::Task(task))
                .await?
                .to_string();
            ok(&IdAnswer::task(&id))
        }
        Action::Call => {
            let call = parse_call(integration, params)?;
            let id = relay
                .receive_event(EventBody::Call(call))
                .await?
                .to_string();
            ok(&IdAnswer::call(&id))
        }
        Action::ImportScheme => ok(&relay.scheme_or_empty(integration).await?),
        Action::Export => {
            let query = parse_export(params)?;
            let page = export_orders(state, integration, query).await?;
            let scheme = relay.scheme_or_empty(integration).await?;
            ok(&export_answer(&scheme, &page))
        }
        Action::ExportClients => {
            let query = parse_export(params)?;
            let page = relay
                .export_clients(integration, query, state.export_page_size)
                .await?;
            ok(&ClientsAnswer {
                clients: page
                    .records
                    .iter()
                    .map(|record| ExportClient::of(&record.client))
                    .collect(),
                pagination: pagination(&page),
            })
        }
    })
}

/// A 200 answer.
fn ok(body: &impl serde::Serialize) -> Response {
    json(StatusCode::OK, body)
}

async fn export_orders(
    state: &HttpState,
    integration: &str,
    query: ExportQuery,
) -> Result<ExportPage<Order>, HttpError> {
    Ok(state
        .relay
        .export_orders(integration, query, state.export_page_size)
        .await?)
}

fn pagination<T>(page: &ExportPage<T>) -> Pagination {
    Pagination {
        total_count: page.total_count,
        limit: page.limit,
    }
}

fn export_answer<'a>(scheme: &'a Scheme, page: &'a ExportPage<Order>) -> ExportAnswer<'a> {
    let orders = page
        .records
        .iter()
        .map(|order| {
            let details = &order.deal.details;
            let created = details.create_time.unwrap_or(order.lead_receive_time);
            ExportOrder {
                id: &order.order_id,
                name: details.name.as_deref().unwrap_or_default(),
                date_create: created.unix_timestamp().to_string(),
                status: details.status.as_deref().unwrap_or_default(),
                price: money_json(details.price),
                cost: money_json(details.cost),
                roistat: &order.visit,
                client_id: details.client_id.as_deref().unwrap_or_default(),
                manager_id: details.manager_id.as_deref().unwrap_or_default(),
                fields: &details.fields,
            }
        })
        .collect();
    ExportAnswer {
        statuses: &scheme.statuses,
        orders,
        pagination: pagination(page),
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
    let reading = axum::body::to_bytes(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.body_timeout, reading).await {
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
