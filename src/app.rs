//! The application: opens the store, binds both servers, runs them until shutdown,
//! then closes the store.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::config::LogFormat;
use crate::domain::OrderIdMode;
use crate::grpc::{LeadApi, LeadServiceServer};
use crate::http::{self, AccessPolicy, HttpState, Limits};
use crate::proto::FILE_DESCRIPTOR_SET;
use crate::relay::LeadRelay;
use crate::roistat::Credentials;
use crate::store::{self, LeadStore};
use crate::telemetry;
use crate::tls::{ServerTls, TlsEndpoint};

/// How often histogram samples are folded in, whether or not anyone scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);
const GRPC_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Everything the application needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// A second address for GET /metrics, besides the HTTP server's.
    pub metrics_addr: Option<SocketAddr>,
    pub database_url: String,
    /// Credentials by integration name; "default" is served at plain /webhook.
    pub integrations: BTreeMap<String, Credentials>,
    pub order_id_mode: OrderIdMode,
    pub deal_wait: Duration,
    /// Live events kept in memory for subscribers.
    pub stream_buffer: usize,
    /// A stream quiet for this long gets a heartbeat.
    pub heartbeat: Duration,
    /// Records per export page when Roistat gives no `limit`.
    pub export_page_size: u64,
    pub log_format: LogFormat,
    /// Bearer token LeadService calls must carry; `None` leaves it open.
    pub grpc_token: Option<SecretString>,
    /// Which source addresses may call the webhook.
    pub access: AccessPolicy,
    /// Webhook requests per second per client address.
    pub rate_limit: Option<std::num::NonZeroU32>,
    pub limits: Limits,
    /// HTTPS for the webhook server, when set.
    pub http_tls: Option<ServerTls>,
    /// TLS (and perhaps client certificates) for the gRPC server, when set.
    pub grpc_tls: Option<ServerTls>,
}

/// A started application: store open, listeners bound, not yet serving.
pub struct Application {
    settings: Settings,
    http_listener: TcpListener,
    grpc_listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    store: Arc<dyn LeadStore>,
    relay: LeadRelay,
    shutdown: CancellationToken,
}

impl Application {
    /// Opens the store (applying migrations) and binds both listeners, so that the
    /// bound addresses are known before serving (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        telemetry::metrics();
        let store = store::open(&settings.database_url, settings.stream_buffer)
            .await
            .context("cannot open the store")?;
        let http_listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", settings.http_addr))?;
        let grpc_listener = TcpListener::bind(settings.grpc_addr)
            .await
            .with_context(|| format!("cannot listen for gRPC on {}", settings.grpc_addr))?;
        let metrics_listener = match settings.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen for metrics on {addr}"))?,
            ),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let relay = LeadRelay::new(
            store.clone(),
            settings.order_id_mode,
            settings.deal_wait,
            settings.heartbeat,
            shutdown.clone(),
        );
        Ok(Self {
            settings,
            http_listener,
            grpc_listener,
            metrics_listener,
            store,
            relay,
            shutdown,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener
            .local_addr()
            .unwrap_or(self.settings.http_addr)
    }

    /// The separate metrics address, when one is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener
            .local_addr()
            .unwrap_or(self.settings.grpc_addr)
    }

    /// Cancelling it shuts the application down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled (or a server fails): stops
    /// accepting, lets in-flight webhooks finish, ends streams, closes the store.
    pub async fn run(self) -> anyhow::Result<()> {
        let (http_addr, grpc_addr) = (self.http_addr(), self.grpc_addr());
        let metrics_addr = self.metrics_addr().map(|addr| addr.to_string());
        let Self {
            settings,
            http_listener,
            grpc_listener,
            metrics_listener,
            store,
            relay,
            shutdown,
        } = self;

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
        let lead_api = LeadApi::new(relay.clone(), 64);
        let client_certificates = settings
            .grpc_tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca_path().is_some());
        if settings.grpc_token.is_none() && !client_certificates && !grpc_addr.ip().is_loopback() {
            tracing::warn!(
                %grpc_addr,
                "gRPC listens beyond loopback without --grpc-token or --grpc-tls-client-ca: anyone who reaches it can read every lead"
            );
        }
        let lead_service = LeadServiceServer::with_interceptor(
            lead_api,
            BearerAuth::new(settings.grpc_token.clone()),
        );
        let grpc = tonic::transport::Server::builder()
            .trace_fn(|request| {
                tracing::info_span!(
                    "grpc",
                    request_id = %telemetry::request_id(),
                    method = %request.uri().path()
                )
            })
            // Pings keep idle streams alive through proxies and load balancers and
            // find dead peers; TCP keepalive is the backstop.
            .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(lead_service);

        let http_state = HttpState {
            relay,
            integrations: Arc::new(settings.integrations),
            limits: settings.limits,
            export_page_size: settings.export_page_size,
            access: Arc::new(settings.access),
            rate_limit: settings
                .rate_limit
                .map(|limit| Arc::new(http::rate_limiter(limit))),
        };
        let rate_limit = http_state.rate_limit.clone();
        let metrics_router = http::metrics_router(http_state.clone());
        let router = http::router(http_state);

        let endpoint = |name, tls: Option<ServerTls>, alpn| {
            tls.map(|tls| TlsEndpoint::new(name, tls, alpn).map(Arc::new))
                .transpose()
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("cannot set up TLS for {name}"))
        };
        let http_tls = endpoint("http", settings.http_tls.clone(), &[b"http/1.1"])?;
        let grpc_tls = endpoint("grpc", settings.grpc_tls.clone(), &[b"h2"])?;
        // Installed before the service reports itself listening, so that no SIGHUP
        // sent after that is missed.
        let hangups = hangup_signal();
        tracing::info!(
            %http_addr,
            http_tls = http_tls.is_some(),
            %grpc_addr,
            grpc_tls = %match (&settings.grpc_tls, client_certificates) {
                (None, _) => "off",
                (Some(_), false) => "on",
                (Some(_), true) => "mutual",
            },
            metrics_addr = %metrics_addr.as_deref().unwrap_or("none"),
            "listening"
        );
        let grpc_shutdown = shutdown.clone();
        let grpc_server = async {
            let tcp = TcpIncoming::from(grpc_listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(TCP_KEEPALIVE));
            let result = match grpc_tls.clone() {
                Some(tls) => {
                    grpc.serve_with_incoming_shutdown(
                        tls.incoming(tcp),
                        grpc_shutdown.cancelled_owned(),
                    )
                    .await
                }
                None => {
                    grpc.serve_with_incoming_shutdown(tcp, grpc_shutdown.cancelled_owned())
                        .await
                }
            };
            // If the gRPC server fails, the whole service stops.
            shutdown.cancel();
            result
        };
        let http_server = async {
            http::serve(
                http_listener,
                router,
                settings.limits,
                http_tls.clone(),
                shutdown.clone(),
            )
            .await;
            shutdown.cancel();
        };
        let metrics_server = async {
            if let Some(listener) = metrics_listener {
                http::serve(
                    listener,
                    metrics_router,
                    settings.limits,
                    None,
                    shutdown.clone(),
                )
                .await;
            }
        };
        let stop_reporting = async {
            shutdown.cancelled().await;
            health.set_not_serving::<LeadServiceServer<LeadApi>>().await;
        };
        let reload_tls = async {
            let Some(mut hangups) = hangups else { return };
            let endpoints: Vec<_> = http_tls.iter().chain(&grpc_tls).cloned().collect();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(()) = hangups.recv() => reload(&endpoints),
                }
            }
        };
        let metrics_upkeep = async {
            let mut every = tokio::time::interval(METRICS_UPKEEP);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = every.tick() => {
                        telemetry::metrics().run_upkeep();
                        // Forget addresses whose budget is full again.
                        if let Some(limiter) = &rate_limit {
                            limiter.retain_recent();
                        }
                    }
                }
            }
        };
        let (grpc_result, (), (), (), (), ()) = tokio::join!(
            grpc_server,
            http_server,
            metrics_server,
            stop_reporting,
            reload_tls,
            metrics_upkeep
        );
        store.close().await;
        tracing::info!("stopped");
        grpc_result.context("gRPC server failed")
    }
}

/// Reads every server's TLS files again; a server whose files do not make a working
/// configuration keeps the one it has.
fn reload(endpoints: &[Arc<TlsEndpoint>]) {
    if endpoints.is_empty() {
        tracing::info!("SIGHUP: no TLS certificates to reload");
    }
    for endpoint in endpoints {
        match endpoint.reload() {
            Ok(()) => tracing::info!(server = %endpoint.name(), "TLS certificates reloaded"),
            Err(error) => tracing::error!(
                server = %endpoint.name(),
                %error,
                "cannot reload TLS certificates; keeping the previous ones"
            ),
        }
    }
}

/// SIGHUP, which asks for the TLS certificates to be read again (and no longer ends
/// the process); `None` where there is no such signal.
#[cfg(unix)]
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGHUP: TLS certificates reload only at restart");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Option<tokio::sync::mpsc::Receiver<()>> {
    None
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

/// Completes on Ctrl-C or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled, so no signal in between is missed.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {},
                        _ = terminate.recv() => {},
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
