//! The actions of the own-CRM protocol: each hands its parameters to the relay and
//! answers in the shape Roistat expects.

use axum::http::StatusCode;
use axum::response::Response;

use super::HttpState;
use super::error::json;
use crate::domain::{Decoding, EventBody};
use crate::own_crm::answer::{
    ClientsAnswer, ExportAnswer, ExportClient, ExportOrder, IdAnswer, OkAnswer, OrderAnswer,
    Pagination,
};
use crate::own_crm::{
    Action, Params, ParseError, RawRequest, parse_call, parse_export, parse_lead, parse_message,
    parse_task, parse_unknown_action,
};
use crate::relay::{Error, ExportPage, OrdersExport};

/// A 200 answer.
fn ok(body: &impl serde::Serialize) -> Response {
    json(StatusCode::OK, body)
}

/// Carries out an authenticated request's action. A request that sends data is
/// kept and answered `ok` whatever its form: one its action cannot read (no usable
/// id) is kept as an unknown action. Only a read whose paging cannot be read is
/// refused (it loses nothing).
pub async fn dispatch(
    state: &HttpState,
    integration: &str,
    action: Action,
    params: &Params,
    raw: &RawRequest,
) -> Result<Response, Error> {
    let relay = &state.relay;
    let received = |decoding: &mut Decoding| received(decoding, params, raw);
    Ok(match action {
        Action::Lead => match parse_lead(integration, params) {
            Ok(mut lead) => {
                received(&mut lead.decoding);
                let answer = relay.receive_lead(lead).await?;
                ok(&OrderAnswer::ok(&answer.order_id))
            }
            Err(error) => keep_unread(state, integration, params, raw, &error).await?,
        },
        Action::Message => match parse_message(integration, params) {
            Ok(mut message) => {
                received(&mut message.decoding);
                let order_id = relay.receive_message(message).await?;
                ok(&OrderAnswer::ok(&order_id))
            }
            Err(error) => keep_unread(state, integration, params, raw, &error).await?,
        },
        Action::Task => match parse_task(integration, params) {
            Ok(mut task) => {
                received(&mut task.decoding);
                let id = relay.receive_event(EventBody::Task(task)).await?;
                ok(&IdAnswer::task(&id.to_string()))
            }
            Err(error) => keep_unread(state, integration, params, raw, &error).await?,
        },
        Action::Call => match parse_call(integration, params) {
            Ok(mut call) => {
                received(&mut call.decoding);
                let id = relay.receive_event(EventBody::Call(call)).await?;
                ok(&IdAnswer::call(&id.to_string()))
            }
            Err(error) => keep_unread(state, integration, params, raw, &error).await?,
        },
        Action::Other => {
            let mut unknown = parse_unknown_action(integration, params, None);
            received(&mut unknown.decoding);
            relay
                .receive_event(EventBody::UnknownAction(unknown))
                .await?;
            ok(&OkAnswer::OK)
        }
        Action::ImportScheme => ok(&relay.scheme_for_roistat(integration).await?),
        Action::Export => {
            let query = parse_export(params)?;
            let export = relay
                .export_orders(integration, query, state.export_page_size)
                .await?;
            ok(&export_answer(&export))
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

/// A request whose action cannot read it (a lead without a usable `id`, a
/// message without `leadId`, ...): kept whole as an unknown action, answered `ok`.
async fn keep_unread(
    state: &HttpState,
    integration: &str,
    params: &Params,
    raw: &RawRequest,
    why: &ParseError,
) -> Result<Response, Error> {
    let mut unknown = parse_unknown_action(integration, params, Some(why));
    received(&mut unknown.decoding, params, raw);
    state
        .relay
        .receive_event(EventBody::UnknownAction(unknown))
        .await?;
    Ok(ok(&OkAnswer::OK))
}

/// Completes what an event says of its decoding: what decoding the parameters
/// lost before the action read them, every value of a repeated name, and, when
/// anything was lost, the request as it came.
fn received(decoding: &mut Decoding, params: &Params, raw: &RawRequest) {
    let mut notes = params.notes();
    notes.append(&mut decoding.notes);
    decoding.notes = notes;
    decoding.repeated = params.repeated().to_vec();
    if decoding.lossy() {
        decoding.raw_request = Some(raw.kept());
    }
}

fn pagination<T>(page: &ExportPage<T>) -> Pagination {
    Pagination {
        total_count: page.total_count,
        limit: page.limit,
    }
}

fn export_answer(export: &OrdersExport) -> ExportAnswer<'_> {
    let orders = export
        .page
        .records
        .iter()
        .map(|order| ExportOrder::of(order, &export.default_status))
        .collect();
    ExportAnswer {
        statuses: &export.scheme.statuses,
        fields: &export.scheme.fields,
        managers: &export.scheme.managers,
        orders,
        pagination: pagination(&export.page),
    }
}
