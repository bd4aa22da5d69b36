//! The gRPC face: `roistat.leads.v1.LeadService` (its `StreamLeads` in `stream`,
//! beside the generated server), the server around it (health, reflection,
//! authentication) in `server`, and conversions between the generated messages and
//! the domain model in `convert`. It calls the relay only.

mod convert;
mod observe;
mod persons;
mod server;
mod stream;

pub use observe::methods;
pub use server::{BuildError, GrpcOptions, GrpcServer};

use tonic::{Request, Response, Status};

use crate::codec;
use crate::domain::{EncodedEvent, LeadKey, RejectedFilter, integration_or_default, validate_id};
use crate::proto;
use crate::proto::lead_service_server::LeadService;
use crate::relay::{Error, LeadRelay, RejectedCursor};
use crate::telemetry::TraceContext;

const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        Status::new(error.grpc_code(), error.to_string())
    }
}

/// The LeadService implementation.
pub struct LeadApi {
    relay: LeadRelay,
    /// Events buffered per subscriber between the store reader and the connection.
    stream_buffer: usize,
    /// The most a listing's page holds, encoded.
    max_page_bytes: usize,
}

impl LeadApi {
    pub fn new(relay: LeadRelay, stream_buffer: usize, max_page_bytes: usize) -> Self {
        Self {
            relay,
            stream_buffer,
            max_page_bytes,
        }
    }

    /// As many of `items` as fit in a page, in order: at least one, then while the
    /// page stays within its bytes. True when some were left out.
    fn fit<T: prost::Message>(&self, items: &mut Vec<T>) -> bool {
        let mut bytes = 0;
        let fits = items
            .iter()
            .position(|item| {
                bytes += item.encoded_len() + 8;
                bytes > self.max_page_bytes
            })
            .map_or(items.len(), |over| over.max(1));
        let cut = fits < items.len();
        items.truncate(fits);
        cut
    }
}

#[tonic::async_trait]
impl LeadService for LeadApi {
    async fn get_lead(
        &self,
        request: Request<proto::GetLeadRequest>,
    ) -> Result<Response<proto::Lead>, Status> {
        let request = request.into_inner();
        let key = lead_key(&request.integration, &request.lead_id)?;
        let lead = self.relay.get_lead(&key).await?;
        let mut lead = decode_lead(&lead)?;
        let history = self.relay.lead_history(&key).await?;
        lead.history = history
            .iter()
            .map(convert::lead_event)
            .collect::<Result<_, _>>()?;
        lead.calls = convert::latest_calls(&lead.history);
        Ok(Response::new(lead))
    }

    async fn get_event(
        &self,
        request: Request<proto::GetEventRequest>,
    ) -> Result<Response<proto::LeadEvent>, Status> {
        let event = self.relay.get_event(request.into_inner().sequence).await?;
        Ok(Response::new(convert::lead_event(&event)?))
    }

    async fn list_leads(
        &self,
        request: Request<proto::ListLeadsRequest>,
    ) -> Result<Response<proto::ListLeadsResponse>, Status> {
        let request = request.into_inner();
        let page_size = page_size(request.page_size)?;
        let after = convert::parse_page_token(&request.page_token)
            .ok_or_else(|| invalid("page_token is not one this service issued"))?;
        let integration = integration_filter(&request.integration)?;
        let leads = self
            .relay
            .list_leads(after, page_size, integration.as_deref())
            .await?;
        let full = leads.len() == page_size as usize;
        let mut leads: Vec<proto::Lead> =
            leads.iter().map(decode_lead).collect::<Result<_, _>>()?;
        let cut = self.fit(&mut leads);
        let next_page_token = match leads.last() {
            Some(last) if full || cut => convert::page_token(last.sequence),
            _ => String::new(),
        };
        Ok(Response::new(proto::ListLeadsResponse {
            leads,
            next_page_token,
        }))
    }

    async fn get_deal(
        &self,
        request: Request<proto::GetDealRequest>,
    ) -> Result<Response<proto::Deal>, Status> {
        let request = request.into_inner();
        let key = lead_key(&request.integration, &request.lead_id)?;
        let deal = self.relay.get_deal(&key).await?;
        Ok(Response::new(convert::deal(
            &deal,
            self.relay.order_id_mode(),
        )))
    }

    async fn report_deal(
        &self,
        request: Request<proto::ReportDealRequest>,
    ) -> Result<Response<proto::Deal>, Status> {
        let span = request.extensions().get::<observe::CallSpan>().cloned();
        let (key, report) = convert::deal_report(request.into_inner())?;
        let deal = self.relay.report_deal(&key, report).await?;
        // The caller's span (its traceparent the parent) linked to the lead's trace.
        if let Some(span) = span
            && let Ok(lead) = self.relay.get_lead(&key).await
            && let Some(trace) = lead.trace_parent.as_deref().and_then(TraceContext::parse)
        {
            span.link(trace);
        }
        Ok(Response::new(convert::deal(
            &deal,
            self.relay.order_id_mode(),
        )))
    }

    async fn update_scheme(
        &self,
        request: Request<proto::Scheme>,
    ) -> Result<Response<proto::Scheme>, Status> {
        let request = request.into_inner();
        let integration = integration(&request.integration)?;
        let (scheme, update_time) = self
            .relay
            .update_scheme(&integration, convert::scheme_from_proto(request))
            .await?;
        Ok(Response::new(convert::scheme(
            &integration,
            &scheme,
            update_time,
        )))
    }

    async fn get_scheme(
        &self,
        request: Request<proto::GetSchemeRequest>,
    ) -> Result<Response<proto::Scheme>, Status> {
        let integration = integration(&request.into_inner().integration)?;
        let (scheme, update_time) = self.relay.get_scheme(&integration).await?;
        Ok(Response::new(convert::scheme(
            &integration,
            &scheme,
            update_time,
        )))
    }

    async fn report_client(
        &self,
        request: Request<proto::ReportClientRequest>,
    ) -> Result<Response<proto::Client>, Status> {
        let client = request
            .into_inner()
            .client
            .ok_or_else(|| invalid("client is required"))?;
        let integration = integration(&client.integration)?;
        let (client, update_time) = self
            .relay
            .report_client(&integration, convert::client_from_proto(client))
            .await?;
        Ok(Response::new(convert::client(
            &integration,
            &client,
            update_time,
        )))
    }

    async fn get_person(
        &self,
        request: Request<proto::GetPersonRequest>,
    ) -> Result<Response<proto::Person>, Status> {
        let request = request.into_inner();
        let person = if request.person_id != 0 {
            self.relay.get_person(request.person_id).await?
        } else {
            let integration = integration(&request.integration)?;
            self.relay
                .find_person(&integration, &request.phone, &request.email)
                .await?
        };
        Ok(Response::new(persons::person(&person)))
    }

    async fn list_persons(
        &self,
        request: Request<proto::ListPersonsRequest>,
    ) -> Result<Response<proto::ListPersonsResponse>, Status> {
        let request = request.into_inner();
        let integration = integration(&request.integration)?;
        let page = self
            .relay
            .list_persons(&integration, request.page_size, &request.page_token)
            .await?;
        Ok(Response::new(proto::ListPersonsResponse {
            persons: page.persons.iter().map(persons::person).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn split_person(
        &self,
        request: Request<proto::SplitPersonRequest>,
    ) -> Result<Response<proto::SplitPersonResponse>, Status> {
        let request = request.into_inner();
        let split = self
            .relay
            .split_person(request.person_id, &request.phone, &request.email)
            .await?;
        Ok(Response::new(proto::SplitPersonResponse {
            person: Some(persons::person(&split.person)),
            new_person: Some(persons::person(&split.new_person)),
            sequence: split.sequence,
        }))
    }

    async fn ack_leads(
        &self,
        request: Request<proto::AckLeadsRequest>,
    ) -> Result<Response<proto::AckLeadsResponse>, Status> {
        let request = request.into_inner();
        let consumer = self.relay.ack(&request.consumer, request.sequence).await?;
        Ok(Response::new(proto::AckLeadsResponse {
            consumer: Some(convert::consumer(&consumer)),
        }))
    }

    async fn get_consumer(
        &self,
        request: Request<proto::GetConsumerRequest>,
    ) -> Result<Response<proto::Consumer>, Status> {
        let consumer = self
            .relay
            .get_consumer(&request.into_inner().consumer)
            .await?;
        Ok(Response::new(convert::consumer(&consumer)))
    }

    async fn list_consumers(
        &self,
        request: Request<proto::ListConsumersRequest>,
    ) -> Result<Response<proto::ListConsumersResponse>, Status> {
        let request = request.into_inner();
        let page_size = page_size(request.page_size)?;
        let after = convert::parse_name_token(&request.page_token)
            .ok_or_else(|| invalid("page_token is not one this service issued"))?;
        let consumers = self.relay.list_consumers(&after, page_size).await?;
        let next_page_token = match consumers.last() {
            Some(last) if consumers.len() == page_size as usize => convert::name_token(&last.name),
            _ => String::new(),
        };
        Ok(Response::new(proto::ListConsumersResponse {
            consumers: consumers.iter().map(convert::consumer).collect(),
            next_page_token,
        }))
    }

    async fn list_rejected_requests(
        &self,
        request: Request<proto::ListRejectedRequestsRequest>,
    ) -> Result<Response<proto::ListRejectedRequestsResponse>, Status> {
        let request = request.into_inner();
        let page_size = page_size(request.page_size)?;
        let cursor = RejectedCursor::parse(&request.page_token)
            .ok_or_else(|| invalid("page_token is not one this service issued"))?;
        let filter = RejectedFilter {
            integration: integration_filter(&request.integration)?,
            authenticated: match request.authentication() {
                proto::Authentication::Unspecified => None,
                proto::Authentication::Passed => Some(true),
                proto::Authentication::Failed => Some(false),
            },
        };
        let page = self.relay.list_rejected(&filter, cursor, page_size).await?;
        Ok(Response::new(proto::ListRejectedRequestsResponse {
            requests: page
                .requests
                .iter()
                .map(convert::rejected_request)
                .collect(),
            next_page_token: page.next.map(|next| next.token()).unwrap_or_default(),
        }))
    }

    async fn delete_consumer(
        &self,
        request: Request<proto::DeleteConsumerRequest>,
    ) -> Result<Response<proto::DeleteConsumerResponse>, Status> {
        self.relay
            .delete_consumer(&request.into_inner().consumer)
            .await?;
        Ok(Response::new(proto::DeleteConsumerResponse {}))
    }
}

/// A request's page size: 0 means the default; larger than the maximum is capped.
fn page_size(requested: i32) -> Result<u32, Status> {
    match requested {
        size if size < 0 => Err(invalid("page_size must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        size => Ok((size as u32).min(MAX_PAGE_SIZE)),
    }
}

/// A request refused for what it holds, through the one status table.
pub(crate) fn invalid(message: &str) -> Status {
    Status::from(Error::InvalidArgument(message.to_owned()))
}

/// A request's integration: empty means the default one. It names stored rows, so
/// it must be plain text (no NUL, which a database cannot even store).
fn integration(name: &str) -> Result<String, Status> {
    let name = integration_or_default(name);
    validate_id("integration", name).map_err(|error| invalid(&error.to_string()))?;
    Ok(name.to_owned())
}

/// An integration filter: empty means all.
fn integration_filter(name: &str) -> Result<Option<String>, Status> {
    if name.is_empty() {
        return Ok(None);
    }
    integration(name).map(Some)
}

pub(crate) fn lead_key(integration_name: &str, lead_id: &str) -> Result<LeadKey, Status> {
    let lead_id = lead_id.trim();
    if lead_id.is_empty() {
        return Err(invalid("lead_id must not be empty"));
    }
    validate_id("lead_id", lead_id).map_err(|error| invalid(&error.to_string()))?;
    Ok(LeadKey::new(&integration(integration_name)?, lead_id))
}

/// A stored lead as the API shows it; one that cannot be read is an internal error,
/// logged.
fn decode_lead(event: &EncodedEvent) -> Result<proto::Lead, Status> {
    codec::decode_lead(event).map_err(|error| {
        tracing::error!(%error, sequence = event.sequence, "store failed");
        Status::from(Error::Internal)
    })
}
