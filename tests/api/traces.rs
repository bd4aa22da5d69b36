//! Traces over OTLP, received by a collector in the test (OpenTelemetry's own
//! TraceService): the webhook's and the commit's spans with their parents, the
//! trace context a consumer of the stream gets, and ReportDeal linked to the lead.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use roistat_leads::proto::{ReportDealRequest, StreamLeadsRequest};
use tokio::sync::Notify;

use crate::helpers::*;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Every span exported to it, and the service's name.
#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
    arrived: Arc<Notify>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource in request.into_inner().resource_spans {
            let name = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.clone());
            if let Some(AnyValue::StringValue(name)) = name {
                self.services.lock().unwrap().push(name);
            }
            for scope in resource.scope_spans {
                self.spans.lock().unwrap().extend(scope.spans);
            }
        }
        self.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves on a random port; its endpoint URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        format!("http://{addr}")
    }

    /// Waits until a span named `name` that `matches` arrives.
    async fn span(&self, name: &str, matches: impl Fn(&Span) -> bool) -> Span {
        within(&format!("the span {name:?}"), async {
            loop {
                let arrived = self.arrived.notified();
                if let Some(span) = self
                    .spans
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|span| span.name == name && matches(span))
                {
                    return span.clone();
                }
                arrived.await;
            }
        })
        .await
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
}

async fn traced_app(collector: &Collector) -> TestApp {
    let endpoint = collector.start().await;
    TestApp::spawn_with(
        Options::default()
            .in_a_process()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_SERVICE_NAME", "leads-under-test")
            // Batches sent at once, not every five seconds.
            .env("OTEL_BSP_SCHEDULE_DELAY", "50"),
    )
    .await
}

#[tokio::test]
async fn a_webhook_its_commit_and_its_delivery_are_one_trace_the_consumer_continues() {
    let collector = Collector::default();
    let app = traced_app(&collector).await;
    let mut stream = app.stream(StreamLeadsRequest::default()).await;

    let token = token();
    let response = app
        .http
        .get(format!("{}/webhook", app.http_base))
        .query(&[
            ("user", LOGIN),
            ("token", token.as_str()),
            ("action", "lead"),
            ("id", "t-1"),
            ("name", "Olga"),
            ("phone", "+79990001122"),
        ])
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let event = next_event(&mut stream).await;

    let webhook = collector
        .span("webhook", |span| hex(&span.trace_id) == TRACE_ID)
        .await;
    assert_eq!(hex(&webhook.parent_span_id), CALLER_SPAN, "{webhook:?}");
    assert_eq!(
        attribute(&webhook, "integration"),
        Some(AnyValue::StringValue("default".into()))
    );
    assert_eq!(
        attribute(&webhook, "action"),
        Some(AnyValue::StringValue("lead".into()))
    );
    assert_eq!(
        attribute(&webhook, "outcome"),
        Some(AnyValue::StringValue("ok".into())),
        "{webhook:?}"
    );
    let commit = collector
        .span("store commit", |span| {
            span.parent_span_id == webhook.span_id
        })
        .await;
    assert_eq!(hex(&commit.trace_id), TRACE_ID);
    assert_eq!(
        attribute(&commit, "batch_size"),
        Some(AnyValue::IntValue(1))
    );
    assert_eq!(
        attribute(&webhook, "http.response.status_code"),
        Some(AnyValue::IntValue(200))
    );
    assert_eq!(
        event.traceparent,
        format!("00-{TRACE_ID}-{}-01", hex(&webhook.span_id)),
        "the consumer continues the webhook's span"
    );
    let delivery = collector
        .span("stream deliver", |span| {
            span.parent_span_id == webhook.span_id
        })
        .await;
    assert_eq!(hex(&delivery.trace_id), TRACE_ID);
    // No personal data goes with the spans.
    let all = format!("{:?}", collector.spans.lock().unwrap());
    assert!(
        !all.contains("Olga") && !all.contains("79990001122"),
        "{all}"
    );
    assert!(
        collector
            .services
            .lock()
            .unwrap()
            .iter()
            .all(|name| name == "leads-under-test")
    );
}

#[tokio::test]
async fn report_deal_continues_its_callers_trace_and_links_the_leads() {
    let collector = Collector::default();
    let app = traced_app(&collector).await;
    app.lead("t-2").await;
    let lead = app.stored_events().await.remove(0);
    let lead_span = &lead.traceparent[36..52];
    assert_eq!(lead.traceparent.len(), 55, "{lead:?}");

    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut request = tonic::Request::new(ReportDealRequest {
        lead_id: "t-2".into(),
        deal_id: "D-2".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{caller_trace}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    app.grpc().await.report_deal(request).await.unwrap();

    let call = collector
        .span("/roistat.leads.v1.LeadService/ReportDeal", |span| {
            hex(&span.trace_id) == caller_trace
        })
        .await;
    assert_eq!(hex(&call.parent_span_id), "b7ad6b7169203331");
    assert_eq!(
        attribute(&call, "rpc.grpc.status_code"),
        Some(AnyValue::IntValue(0))
    );
    assert!(
        call.links
            .iter()
            .any(|link| hex(&link.trace_id) == lead.traceparent[3..35]
                && hex(&link.span_id) == lead_span),
        "linked to the lead's trace: {call:?}"
    );
}

#[tokio::test]
async fn with_tracing_off_events_carry_no_trace_context() {
    let app = TestApp::spawn_with(Options::default()).await;
    app.lead("t-3").await;

    let events = app.stored_events().await;

    assert_eq!(events.len(), 1);
    assert_eq!(events[0].traceparent, "");
}
