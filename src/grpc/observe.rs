//! What every gRPC call is observed by: its span (exported when tracing is on, a
//! caller's `traceparent` metadata its parent), its count by method and status
//! code, and the latency of unary calls (a stream's length says nothing of the
//! service's speed). The status is read where gRPC puts it: in the answer's head
//! for a call that fails at once, else in the trailers after the last message.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http_body::Frame;
use pin_project_lite::pin_project;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::telemetry::{self, Attr, SpanRole, TraceContext, TraceSpan};

/// Observes each call of the service it wraps.
#[derive(Clone, Copy, Default)]
pub struct Observe;

impl<S> Layer<S> for Observe {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observed { inner }
    }
}

#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
}

impl<S> Service<http::Request<Body>> for Observed<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ObservedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let method = telemetry::grpc_method(request.uri().path());
        let (mut span, mut context) = (None, None);
        if telemetry::tracing_on() {
            let parent = TraceContext::from_headers(request.headers());
            let attributes = vec![
                ("rpc.system", Attr::Str("grpc")),
                ("rpc.method", Attr::Str(method.path)),
            ];
            let started = TraceSpan::start(method.path, SpanRole::Server, parent, &[], attributes);
            context = started.context();
            let shared = CallSpan(Arc::new(Mutex::new(started)));
            request.extensions_mut().insert(shared.clone());
            span = Some(shared);
        }
        ObservedFuture {
            future: telemetry::scoped(context, self.inner.call(request)),
            call: Some(Call {
                method,
                started: Instant::now(),
                span,
            }),
        }
    }
}

/// The call's exported span, for a method that links it to a lead's trace.
#[derive(Clone)]
pub struct CallSpan(Arc<Mutex<TraceSpan>>);

impl CallSpan {
    /// Links the call's span to another trace's span.
    pub fn link(&self, to: TraceContext) {
        if let Ok(mut span) = self.0.lock() {
            span.link(to);
        }
    }
}

/// A call under way: what its end is recorded with.
struct Call {
    method: telemetry::GrpcMethod,
    started: Instant,
    span: Option<CallSpan>,
}

impl Call {
    fn end(self, code: i32) {
        if let Some(CallSpan(span)) = &self.span
            && let Ok(mut span) = span.lock()
        {
            span.set(vec![("rpc.grpc.status_code", Attr::Int(i64::from(code)))]);
            // Ended here, whoever still holds the handle.
            *span = TraceSpan::default();
        }
        telemetry::grpc_answered(&self.method, code, self.started.elapsed());
    }
}

/// The status code in a header or trailer block, if it holds one.
fn status_code(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

pin_project! {
    pub struct ObservedFuture<F> {
        #[pin]
        future: tokio::task::futures::TaskLocalFuture<Option<TraceContext>, F>,
        call: Option<Call>,
    }
}

impl<F, E> Future for ObservedFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        let Some(call) = this.call.take() else {
            return Poll::Ready(result);
        };
        Poll::Ready(match result {
            Ok(response) => {
                if let Some(code) = status_code(response.headers()) {
                    call.end(code);
                    Ok(response)
                } else {
                    Ok(response.map(|body| {
                        Body::new(ObservedBody {
                            body,
                            call: Some(call),
                        })
                    }))
                }
            }
            Err(error) => {
                // The connection's failure, not an answer: UNKNOWN.
                call.end(2);
                Err(error)
            }
        })
    }
}

pin_project! {
    /// An answer's body, watched for the trailers that carry its status; one
    /// dropped before them (the caller went away) ends as CANCELLED.
    struct ObservedBody {
        #[pin]
        body: Body,
        call: Option<Call>,
    }

    impl PinnedDrop for ObservedBody {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.end(1);
            }
        }
    }
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(status_code)
                    && let Some(call) = this.call.take()
                {
                    call.end(code);
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.take() {
                    call.end(2);
                }
            }
            None => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Every method the server serves: LeadService's (from its descriptors), health's
/// and reflection's.
pub fn methods() -> Vec<telemetry::GrpcMethod> {
    static METHODS: std::sync::OnceLock<Vec<telemetry::GrpcMethod>> = std::sync::OnceLock::new();
    METHODS
        .get_or_init(|| {
            use prost::Message;
            let mut methods = vec![];
            let files = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
                .expect("the service's own descriptors decode");
            for file in &files.file {
                for service in &file.service {
                    for method in &service.method {
                        let path =
                            format!("/{}.{}/{}", file.package(), service.name(), method.name());
                        methods.push(telemetry::GrpcMethod {
                            path: Box::leak(path.into_boxed_str()),
                            streaming: method.server_streaming(),
                        });
                    }
                }
            }
            let others = [
                ("/grpc.health.v1.Health/Check", false),
                ("/grpc.health.v1.Health/Watch", true),
                (
                    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                    true,
                ),
                (
                    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                    true,
                ),
            ];
            methods.extend(
                others
                    .into_iter()
                    .map(|(path, streaming)| telemetry::GrpcMethod { path, streaming }),
            );
            methods
        })
        .clone()
}
