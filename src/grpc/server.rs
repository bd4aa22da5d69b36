//! The gRPC server: LeadService behind its gate (a bearer token, client
//! certificates, or a loopback listener the settings hold it to), health and reflection
//! open, HTTP/2 and TCP keepalive, bounds on what a caller can make it hold,
//! optionally over TLS.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Router, TcpIncoming};
use tonic_health::server::HealthReporter;

use super::LeadApi;
use super::stream::LeadRoutes;
use crate::net::TlsEndpoint;
use crate::proto::FILE_DESCRIPTOR_SET;
use crate::proto::lead_service_server::LeadServiceServer;
use crate::relay::{Error, LeadRelay};
use crate::telemetry;

/// Events buffered per subscriber between the store reader and the connection.
const STREAM_BUFFER: usize = 64;

/// How the gRPC server runs.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// Bearer token LeadService calls must carry.
    pub token: Option<SecretString>,
    /// Whether clients present certificates of a CA (mutual TLS).
    pub client_certificates: bool,
    /// Serve LeadService to any peer without a token or client certificates.
    pub insecure: bool,
    /// Pings keep idle streams alive through proxies and load balancers and find
    /// dead peers; TCP keepalive is the backstop.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub tcp_keepalive: Duration,
    /// Streams one connection may hold open at once.
    pub max_concurrent_streams: u32,
    /// The largest request the server decodes and the largest message it sends.
    pub max_decoding_message_bytes: usize,
    pub max_encoding_message_bytes: usize,
    /// Once shutdown starts, how long streams get before they are cut.
    pub drain: Duration,
    /// The most a page of `ListLeads` or `ListRejectedRequests` holds, encoded.
    pub max_page_bytes: usize,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        Self {
            token: None,
            client_certificates: false,
            insecure: false,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            tcp_keepalive: Duration::from_secs(60),
            max_concurrent_streams: 200,
            max_decoding_message_bytes: 4 * 1024 * 1024,
            max_encoding_message_bytes: 4 * 1024 * 1024,
            drain: Duration::from_secs(10),
            max_page_bytes: 1024 * 1024,
        }
    }
}

impl GrpcOptions {
    /// How LeadService callers are let in, in words.
    pub fn mode(&self) -> &'static str {
        match (&self.token, self.client_certificates, self.insecure) {
            (Some(_), true, _) => "bearer token and client certificates",
            (Some(_), false, _) => "bearer token",
            (None, true, _) => "client certificates",
            (None, false, true) => "insecure: any peer",
            (None, false, false) => "none: a loopback listener only",
        }
    }
}

/// The assembled server, ready to serve.
pub struct GrpcServer {
    router:
        Router<tower::layer::util::Stack<super::observe::Observe, tower::layer::util::Identity>>,
    health: HealthReporter,
    tcp_keepalive: Duration,
    drain: Duration,
}

/// Why the server cannot be assembled.
pub type BuildError = tonic_reflection::server::Error;

impl GrpcServer {
    pub async fn build(relay: LeadRelay, options: &GrpcOptions) -> Result<Self, BuildError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<LeadServiceServer<LeadApi>>().await;
        // Both reflection versions: older grpcurl releases speak only v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let api = Arc::new(LeadApi::new(relay, STREAM_BUFFER, options.max_page_bytes));
        let generated = LeadServiceServer::from_arc(api.clone())
            .max_decoding_message_size(options.max_decoding_message_bytes)
            .max_encoding_message_size(options.max_encoding_message_bytes);
        let lead_service = LeadRoutes::new(
            generated,
            api,
            options.max_decoding_message_bytes,
            options.max_encoding_message_bytes,
        );
        let lead_service =
            tonic::service::interceptor::InterceptedService::new(lead_service, Gate::new(options));
        let router = tonic::transport::Server::builder()
            .trace_fn(|request| {
                tracing::info_span!(
                    "grpc",
                    request_id = %telemetry::request_id(),
                    method = %request.uri().path()
                )
            })
            .http2_keepalive_interval(Some(options.keepalive_interval))
            .http2_keepalive_timeout(Some(options.keepalive_timeout))
            .max_concurrent_streams(Some(options.max_concurrent_streams))
            .layer(super::observe::Observe)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(lead_service);
        Ok(Self {
            router,
            health,
            tcp_keepalive: options.tcp_keepalive,
            drain: options.drain,
        })
    }

    /// Serves until `shutdown` is cancelled; health says "not serving" from then
    /// on, and streams still open after the drain are cut.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Option<Arc<TlsEndpoint>>,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let Self {
            router,
            health,
            tcp_keepalive,
            drain,
        } = self;
        let tcp = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(tcp_keepalive));
        let stop_reporting = async {
            shutdown.cancelled().await;
            health.set_not_serving::<LeadServiceServer<LeadApi>>().await;
        };
        let serving = async {
            match tls {
                Some(tls) => {
                    router
                        .serve_with_incoming_shutdown(tls.incoming(tcp), shutdown.cancelled())
                        .await
                }
                None => {
                    router
                        .serve_with_incoming_shutdown(tcp, shutdown.cancelled())
                        .await
                }
            }
        };
        // A client that stops reading would hold a graceful stop forever.
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(drain).await;
        };
        let (result, ()) = tokio::join!(
            async {
                tokio::select! {
                    result = serving => result,
                    () = deadline => {
                        tracing::warn!(?drain, "gRPC streams still open after the drain: cut");
                        Ok(())
                    }
                }
            },
            stop_reporting
        );
        result
    }
}

/// Who may call LeadService: a bearer token (checked in constant time) when one is
/// set. Without one, the listener is what admits (client certificates, or a
/// loopback address, which the settings hold it to).
#[derive(Clone)]
struct Gate {
    expected: Option<Arc<str>>,
}

impl Gate {
    fn new(options: &GrpcOptions) -> Self {
        Self {
            expected: options
                .token
                .as_ref()
                .map(|token| Arc::from(format!("Bearer {}", token.expose_secret()).as_str())),
        }
    }
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(expected) = &self.expected {
            let given = request
                .metadata()
                .get("authorization")
                .map(|value| value.as_bytes())
                .unwrap_or_default();
            return if bool::from(subtle::ConstantTimeEq::ct_eq(given, expected.as_bytes())) {
                Ok(request)
            } else {
                Err(Error::Unauthenticated("missing or wrong bearer token".into()).into())
            };
        }
        Ok(request)
    }
}
