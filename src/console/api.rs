//! The console's JSON API: what its script reads. Read-only; a search's terms come
//! in a request body, never in a URL.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{SESSION_HOURS, Shared, view};
use crate::domain::{LeadKey, LeadSearch, RejectedFilter, SearchCursor, SearchField};
use crate::relay::{Error, RejectedCursor};
use crate::telemetry;

/// Results per page of a search, requests per page of the refused ones.
const PAGE: u32 = 50;
/// Named consumers shown.
const CONSUMERS: u32 = 1000;
/// The longest search term.
const MAX_TERM: usize = 256;

/// The answer to an integration that is not configured.
pub(super) fn unknown_integration() -> Response {
    error(StatusCode::BAD_REQUEST, "no such integration is configured")
}

/// An error answer: `{"error": message}`.
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn relay_error(failure: Error) -> Response {
    let status =
        StatusCode::from_u16(failure.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, &failure.to_string())
}

#[derive(Deserialize, Default)]
pub(super) struct Scope {
    #[serde(default)]
    integration: String,
}

impl super::Console {
    /// The integrations a choice means: one configured integration, or every one;
    /// `None` for one not configured.
    pub(super) fn scope(&self, integration: &str) -> Option<Vec<String>> {
        if integration.is_empty() {
            return Some(self.integrations.clone());
        }
        self.integrations
            .iter()
            .any(|known| known == integration)
            .then(|| vec![integration.to_owned()])
    }
}

/// `GET /api/meta`: the integrations, whether a session can end.
pub(super) async fn meta(State(console): State<Shared>) -> Response {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "integrations": console.integrations,
        "order_id_mode": console.relay.order_id_mode().as_str(),
        "login": console.auth.has_token(),
        "session_hours": SESSION_HOURS,
    }))
    .into_response()
}

/// `GET /api/overview`: leads per minute by source over the last 24 hours, the
/// webhooks' outcomes and latency since start, the store's size and latest sequence.
pub(super) async fn overview(
    State(console): State<Shared>,
    Query(scope): Query<Scope>,
) -> Response {
    if console.scope(&scope.integration).is_none() {
        return unknown_integration();
    }
    let since = OffsetDateTime::now_utc() - time::Duration::hours(24);
    let integration = Some(scope.integration.as_str()).filter(|name| !name.is_empty());
    let overview = match console.relay.overview(since, integration).await {
        Ok(overview) => overview,
        Err(failure) => return relay_error(failure),
    };
    let minutes: Vec<Value> = overview
        .lead_minutes
        .iter()
        .map(|(minute, source, count)| {
            json!({
                "minute": minute,
                "source": source.map(|source| source.as_str()),
                "count": count,
            })
        })
        .collect();
    let figures = webhook_figures(&telemetry::render_metrics(), integration);
    Json(json!({
        "since": view::time(since),
        "minutes": minutes,
        "outcomes": figures.outcomes,
        "ingest_p50_seconds": figures.quantile(0.5),
        "ingest_p99_seconds": figures.quantile(0.99),
        "latest_sequence": overview.latest_sequence,
        "store_bytes": overview.store_bytes,
        "subscribers": overview.subscribers,
        "scheme_missing": overview.scheme_missing,
    }))
    .into_response()
}

/// What the metrics say of the webhooks since start.
#[derive(Default)]
struct WebhookFigures {
    outcomes: serde_json::Map<String, Value>,
    /// The lead latency histogram: (upper bound in seconds, cumulative count).
    buckets: Vec<(f64, f64)>,
}

impl WebhookFigures {
    /// The upper bound of the bucket holding quantile `q`; `None` without samples.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        (total > 0.0).then_some(())?;
        self.buckets
            .iter()
            .find(|(_, count)| *count >= q * total)
            .map(|(bound, _)| *bound)
    }
}

/// The value of `label` in a sample's label set.
fn label<'a>(labels: &'a str, label: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{label}=\""))? + label.len() + 2;
    labels[start..].split('"').next()
}

fn webhook_figures(metrics: &str, integration: Option<&str>) -> WebhookFigures {
    let mut figures = WebhookFigures::default();
    for line in metrics.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if let Some(labels) = series.strip_prefix("roistat_leads_webhooks_total") {
            if integration.is_some_and(|name| label(labels, "integration") != Some(name)) {
                continue;
            }
            if let Some(outcome) = label(labels, "outcome") {
                let total = figures.outcomes.entry(outcome).or_insert(json!(0));
                *total = json!(total.as_f64().unwrap_or(0.0) + value);
            }
        } else if let Some(labels) = series.strip_prefix("roistat_leads_ingest_seconds_bucket")
            && label(labels, "action") == Some("lead")
            && let Some(bound) = label(labels, "le").and_then(|le| le.parse::<f64>().ok())
        {
            figures.buckets.push((bound, value));
        }
    }
    figures
        .buckets
        .sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    figures
}

#[derive(Deserialize)]
pub(super) struct SearchRequest {
    #[serde(default)]
    integration: String,
    field: String,
    term: String,
    #[serde(default)]
    cursor: Option<CursorJson>,
}

#[derive(Deserialize, serde::Serialize)]
pub(super) struct CursorJson {
    name: String,
    sequence: u64,
}

/// `POST /api/search`: a page of the leads a term finds.
pub(super) async fn search(
    State(console): State<Shared>,
    Json(request): Json<SearchRequest>,
) -> Response {
    let Some(integrations) = console.scope(&request.integration) else {
        return unknown_integration();
    };
    let Some(field) = SearchField::from_name(&request.field) else {
        return error(
            StatusCode::BAD_REQUEST,
            "field must be lead_id, order_id, phone, email, name or visit",
        );
    };
    if request.term.len() > MAX_TERM || request.term.contains('\0') {
        return error(
            StatusCode::BAD_REQUEST,
            "the term is over 256 bytes or holds a NUL",
        );
    }
    let term = field.normalize(&request.term);
    if term.is_empty() {
        let what = match field {
            SearchField::Phone => "a phone needs digits",
            _ => "give something to search for",
        };
        return error(StatusCode::BAD_REQUEST, what);
    }
    let search = LeadSearch {
        integrations,
        field,
        term,
        after: request.cursor.map(|cursor| SearchCursor {
            name: cursor.name,
            sequence: cursor.sequence,
        }),
        limit: PAGE,
    };
    let found = match console.relay.search_leads(&search).await {
        Ok(found) => found,
        Err(failure) => return relay_error(failure),
    };
    let cursor = match found.last() {
        Some(last) if found.len() == PAGE as usize => Some(CursorJson {
            name: last.name_key.clone(),
            sequence: last.event.sequence,
        }),
        _ => None,
    };
    Json(json!({
        "field": field.as_str(),
        "term": search.term,
        "results": found.iter().map(view::found).collect::<Vec<_>>(),
        "cursor": cursor,
    }))
    .into_response()
}

#[derive(Deserialize)]
pub(super) struct LeadQuery {
    integration: String,
    lead_id: String,
}

/// `GET /api/lead`: everything known about one lead.
pub(super) async fn lead(
    State(console): State<Shared>,
    Query(query): Query<LeadQuery>,
) -> Response {
    if console.scope(&query.integration).is_none() {
        return unknown_integration();
    }
    if query.lead_id.is_empty() || query.lead_id.len() > MAX_TERM || query.lead_id.contains('\0') {
        return error(StatusCode::BAD_REQUEST, "lead_id: 1 to 256 bytes, no NUL");
    }
    let key = LeadKey::new(&query.integration, query.lead_id.as_str());
    match console.relay.lead_view(&key).await {
        Ok(lead) => Json(view::lead(&lead)).into_response(),
        Err(failure) => relay_error(failure),
    }
}

/// `GET /api/consumers`: the named consumers and the live subscribers.
pub(super) async fn consumers(State(console): State<Shared>) -> Response {
    match console.relay.consumers_view(CONSUMERS).await {
        Ok(consumers) => Json(json!({
            "consumers": consumers
                .iter()
                .map(|found| view::consumer(&found.consumer, found.connected))
                .collect::<Vec<_>>(),
            "subscribers": console.relay.subscribers(),
        }))
        .into_response(),
        Err(failure) => relay_error(failure),
    }
}

#[derive(Deserialize)]
pub(super) struct PersonQuery {
    #[serde(default)]
    person_id: u64,
    #[serde(default)]
    integration: String,
    /// A phone in any form, or an e-mail.
    #[serde(default)]
    term: String,
}

/// `GET /api/person`: a person by id, or the person of a phone or e-mail.
pub(super) async fn person(
    State(console): State<Shared>,
    Query(query): Query<PersonQuery>,
) -> Response {
    let found = if query.person_id != 0 {
        console.relay.get_person(query.person_id).await
    } else {
        if console.scope(&query.integration).is_none() {
            return unknown_integration();
        }
        if query.term.trim().is_empty() || query.term.len() > MAX_TERM {
            return error(
                StatusCode::BAD_REQUEST,
                "give a phone or an e-mail (at most 256 bytes)",
            );
        }
        let (phone, email) = match query.term.contains('@') {
            true => ("", query.term.as_str()),
            false => (query.term.as_str(), ""),
        };
        console
            .relay
            .find_person(&query.integration, phone, email)
            .await
    };
    match found {
        Ok(person) => Json(view::person(&person)).into_response(),
        Err(failure) => relay_error(failure),
    }
}

#[derive(Deserialize)]
pub(super) struct RequestsQuery {
    #[serde(default)]
    integration: String,
    #[serde(default)]
    cursor: String,
}

/// `GET /api/requests`: refused and rejected webhook requests, newest first.
pub(super) async fn requests(
    State(console): State<Shared>,
    Query(query): Query<RequestsQuery>,
) -> Response {
    if console.scope(&query.integration).is_none() {
        return unknown_integration();
    }
    let Some(cursor) = RejectedCursor::parse(&query.cursor) else {
        return error(
            StatusCode::BAD_REQUEST,
            "cursor is not one this console gave",
        );
    };
    let filter = RejectedFilter {
        integration: Some(query.integration).filter(|name| !name.is_empty()),
        authenticated: None,
    };
    match console.relay.list_rejected(&filter, cursor, PAGE).await {
        Ok(page) => Json(json!({
            "requests": page.requests.iter().map(view::rejected).collect::<Vec<_>>(),
            "cursor": page.next.map(|next| next.token()),
        }))
        .into_response(),
        Err(failure) => relay_error(failure),
    }
}
