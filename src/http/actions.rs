//! The actions of the own-CRM protocol: each hands its parameters to the relay and
//! answers in the shape Roistat expects.

use axum::http::StatusCode;
use axum::response::Response;

use super::HttpState;
use super::error::json;
use crate::domain::EventBody;
use crate::own_crm::answer::{
    ClientsAnswer, ExportAnswer, ExportClient, ExportOrder, IdAnswer, OkAnswer, OrderAnswer,
    Pagination,
};
use crate::own_crm::{
    Action, Params, parse_call, parse_export, parse_lead, parse_message, parse_task,
    parse_unknown_action,
};
use crate::relay::{Error, ExportPage, OrdersExport};

/// A 200 answer.
fn ok(body: &impl serde::Serialize) -> Response {
    json(StatusCode::OK, body)
}

pub async fn dispatch(
    state: &HttpState,
    integration: &str,
    action: Action,
    params: &Params,
) -> Result<Response, Error> {
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
        Action::Other => {
            let unknown = parse_unknown_action(integration, params);
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
