//! The gRPC server: LeadService behind its authentication, health and reflection,
//! HTTP/2 and TCP keepalive, optionally over TLS.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Router, TcpIncoming};
use tonic_health::server::HealthReporter;

use super::LeadApi;
use crate::net::TlsEndpoint;
use crate::proto::FILE_DESCRIPTOR_SET;
use crate::proto::lead_service_server::LeadServiceServer;
use crate::relay::LeadRelay;
use crate::telemetry;

/// Events buffered per subscriber between the store reader and the connection.
const STREAM_BUFFER: usize = 64;

/// How the gRPC server runs.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// Bearer token LeadService calls must carry; `None` leaves it open.
    pub token: Option<SecretString>,
    /// Pings keep idle streams alive through proxies and load balancers and find
    /// dead peers; TCP keepalive is the backstop.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub tcp_keepalive: Duration,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        Self {
            token: None,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            tcp_keepalive: Duration::from_secs(60),
        }
    }
}

/// The assembled server, ready to serve.
pub struct GrpcServer {
    router: Router,
    health: HealthReporter,
    tcp_keepalive: Duration,
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
        let lead_service = LeadServiceServer::with_interceptor(
            LeadApi::new(relay, STREAM_BUFFER),
            BearerAuth::new(options.token.clone()),
        );
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
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(lead_service);
        Ok(Self {
            router,
            health,
            tcp_keepalive: options.tcp_keepalive,
        })
    }

    /// Serves until `shutdown` is cancelled; health says "not serving" from then on.
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
        let (result, ()) = tokio::join!(serving, stop_reporting);
        result
    }
}

/// Checks `authorization: Bearer TOKEN` on LeadService calls, in constant time.
#[derive(Clone)]
struct BearerAuth {
    expected: Option<Arc<str>>,
}

impl BearerAuth {
    fn new(token: Option<SecretString>) -> Self {
        Self {
            expected: token
                .map(|token| Arc::from(format!("Bearer {}", token.expose_secret()).as_str())),
        }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes())
            .unwrap_or_default();
        if bool::from(subtle::ConstantTimeEq::ct_eq(given, expected.as_bytes())) {
            Ok(request)
        } else {
            Err(tonic::Status::unauthenticated(
                "missing or wrong bearer token",
            ))
        }
    }
}
