//! The application: `build` does everything that can fail (opens the store, binds
//! every listener, assembles both servers, reads the TLS files), so that a started
//! application only serves; `run` serves until shutdown, then closes the store.

mod describe;
mod notify;
mod probe;

pub use describe::describe;
pub use probe::probe;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
#[cfg(feature = "console")]
use crate::console::{self, ConsoleOptions};
use crate::domain::{EventKind, LeadSource};
use crate::grpc::{GrpcOptions, GrpcServer};
use crate::http::{self, HttpState, RateLimiter};
use crate::net::{Limits, ServerTls, TlsEndpoint, TlsError};
use crate::own_crm::Action;
use crate::relay::{LeadRelay, RelayOptions};
use crate::signal::Hangups;
use crate::store::{self, LeadStore, OpenError};
use crate::telemetry;

/// How often histogram samples are folded in, whether or not anyone scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Why the application cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store")]
    Store(#[from] OpenError),
    #[error("cannot listen for {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the gRPC server")]
    Grpc(#[from] crate::grpc::BuildError),
    #[error("this build has no {0}: it was built without the `{1}` feature")]
    NotBuilt(&'static str, &'static str),
    #[error("cannot set up TLS for {server}")]
    Tls {
        server: &'static str,
        #[source]
        source: TlsError,
    },
}

impl StartError {
    /// The exit code of a start that failed: 2 for what the operator must change
    /// (another service holds the database), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Store(OpenError::Locked(_)) => 2,
            _ => 1,
        }
    }
}

/// A started application: store open, listeners bound, servers assembled, not yet
/// serving.
pub struct Application {
    http_listener: TcpListener,
    grpc_listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    console_listener: Option<TcpListener>,
    console_router: Router,
    store: Arc<dyn LeadStore>,
    relay: LeadRelay,
    router: http::HttpService,
    metrics_router: Router,
    rate_limit: Option<Arc<RateLimiter>>,
    grpc: GrpcServer,
    http_tls: Option<Arc<TlsEndpoint>>,
    grpc_tls: Option<Arc<TlsEndpoint>>,
    grpc_tls_mode: &'static str,
    limits: Limits,
    hangups: Option<Hangups>,
    shutdown: CancellationToken,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn endpoint(
    server: &'static str,
    tls: Option<ServerTls>,
    alpn: &'static [&'static [u8]],
) -> Result<Option<Arc<TlsEndpoint>>, StartError> {
    tls.map(|tls| TlsEndpoint::new(server, tls, alpn).map(Arc::new))
        .transpose()
        .map_err(|source| StartError::Tls { server, source })
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        telemetry::install_metrics(&known_labels(&settings));
        let store = store::open(&settings.database_url, settings.stream_buffer).await?;
        let http_listener = bind("HTTP", settings.http_addr).await?;
        let grpc_listener = bind("gRPC", settings.grpc_addr).await?;
        let metrics_listener = match settings.metrics_addr {
            Some(addr) => Some(bind("metrics", addr).await?),
            None => None,
        };
        #[cfg(not(feature = "console"))]
        if settings.console.addr.is_some() {
            return Err(StartError::NotBuilt("operator console", "console"));
        }
        let console_listener = match settings.console.addr {
            Some(addr) => Some(bind("the console", addr).await?),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let relay = LeadRelay::new(store.clone(), relay_options(&settings), shutdown.clone());
        tokio::spawn({
            let relay = relay.clone();
            async move { relay.match_stored_leads().await }
        });
        // The phone metadata loads once (about half a second), not on a lead's time.
        tokio::task::spawn_blocking(|| crate::domain::PhoneNumber::parse("+79990001122", None));
        // Ready (or not) from the first probe on.
        relay.check_readiness().await;
        let grpc_options = grpc_options(&settings);
        let grpc = GrpcServer::build(relay.clone(), &grpc_options).await?;
        let client_certificates = grpc_options.client_certificates;
        let grpc_addr = grpc_listener.local_addr().unwrap_or(settings.grpc_addr);
        if grpc_options.insecure && grpc_options.token.is_none() && !client_certificates {
            tracing::warn!(
                %grpc_addr,
                "--grpc-insecure: LeadService answers every peer that reaches it, without a \
                 token or client certificates; anyone who can reach it can read every lead \
                 and report deals"
            );
        }
        let console_router = console_router(&relay, &settings);
        let rate_limit = settings
            .rate_limit
            .map(|limit| Arc::new(http::rate_limiter(limit)));
        let http_state = Arc::new(HttpState {
            relay: relay.clone(),
            integrations: Arc::new(settings.integrations),
            body_budget: Arc::new(tokio::sync::Semaphore::new(
                settings.limits.body_budget_bytes,
            )),
            limits: settings.limits,
            export_page_size: settings.export_page_size,
            access: Arc::new(settings.access),
            rate_limit: rate_limit.clone(),
            serve_metrics: settings.metrics_addr.is_none(),
        });
        Ok(Self {
            http_listener,
            grpc_listener,
            metrics_listener,
            console_listener,
            console_router,
            store,
            metrics_router: http::metrics_router(http_state.clone()),
            router: http::router(http_state),
            rate_limit,
            grpc,
            grpc_tls_mode: match (&settings.grpc_tls, client_certificates) {
                (None, _) => "off",
                (Some(_), false) => "on",
                (Some(_), true) => "mutual",
            },
            relay,
            http_tls: endpoint("http", settings.http_tls, &[b"http/1.1"])?,
            grpc_tls: endpoint("grpc", settings.grpc_tls, &[b"h2"])?,
            limits: settings.limits,
            // Installed before the service reports itself listening, so that no
            // SIGHUP sent after that is missed.
            hangups: match Hangups::watch() {
                Ok(hangups) => Some(hangups),
                Err(error) => {
                    tracing::warn!(%error, "cannot watch SIGHUP: TLS certificates reload only at restart");
                    None
                }
            },
            shutdown,
        })
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_listener.local_addr().ok()
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_listener.local_addr().ok()
    }

    /// The separate metrics address, when one is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The console's address, unless it is off.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Cancelling it shuts the application down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled (or a server fails): stops
    /// accepting, lets in-flight webhooks finish, ends streams, closes the store.
    pub async fn run(self) -> Result<(), tonic::transport::Error> {
        let addr = |addr: Option<SocketAddr>| addr.map_or("none".to_owned(), |a| a.to_string());
        tracing::info!(
            http_addr = %addr(self.http_addr()),
            http_tls = self.http_tls.is_some(),
            grpc_addr = %addr(self.grpc_addr()),
            grpc_tls = %self.grpc_tls_mode,
            metrics_addr = %addr(self.metrics_addr()),
            console_addr = %addr(self.console_addr()),
            "listening"
        );
        notify::notify("READY=1\nSTATUS=serving");
        let Self {
            http_listener,
            grpc_listener,
            metrics_listener,
            console_listener,
            console_router,
            store,
            relay,
            router,
            metrics_router,
            rate_limit,
            grpc,
            http_tls,
            grpc_tls,
            limits,
            hangups,
            shutdown,
            ..
        } = self;
        let grpc_server = async {
            let result = grpc
                .serve(grpc_listener, grpc_tls.clone(), shutdown.clone())
                .await;
            // If the gRPC server fails, the whole service stops.
            shutdown.cancel();
            result
        };
        let http_server = async {
            http::serve(
                http_listener,
                router,
                limits,
                http_tls.clone(),
                true,
                shutdown.clone(),
            )
            .await;
            shutdown.cancel();
        };
        let metrics_server = async {
            if let Some(listener) = metrics_listener {
                let shutdown = shutdown.clone();
                http::serve(listener, metrics_router, limits, None, false, shutdown).await;
            }
        };
        // With the webhook's certificate, when it has one.
        let console_server = async {
            if let Some(listener) = console_listener {
                let tls = http_tls.clone();
                let shutdown = shutdown.clone();
                http::serve(listener, console_router, limits, tls, false, shutdown).await;
            }
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
        let announce_stop = async {
            shutdown.cancelled().await;
            notify::notify("STOPPING=1\nSTATUS=draining");
        };
        let watch = relay.keep_watch();
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
        let (grpc_result, (), (), (), (), (), (), ()) = tokio::join!(
            grpc_server,
            announce_stop,
            http_server,
            metrics_server,
            console_server,
            reload_tls,
            metrics_upkeep,
            watch
        );
        store.close().await;
        tracing::info!("stopped");
        grpc_result
    }
}

/// The label values every metric series present from start-up is made of.
fn known_labels(settings: &Settings) -> telemetry::KnownLabels {
    let (outcomes, refusals) = http::metric_labels();
    telemetry::KnownLabels {
        integrations: settings.integrations.keys().cloned().collect(),
        actions: Action::ALL
            .iter()
            .map(|action| action.as_str())
            .chain(["unknown"])
            .collect(),
        outcomes,
        sources: LeadSource::ALL
            .iter()
            .map(|source| source.as_str())
            .collect(),
        kinds: EventKind::ALL.iter().map(|kind| kind.as_str()).collect(),
        refusals,
        backend: store::backend_name(&settings.database_url),
        grpc_methods: crate::grpc::methods(),
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

/// The relay's part of the settings.
fn relay_options(settings: &Settings) -> RelayOptions {
    RelayOptions {
        order_id_mode: settings.order_id_mode,
        deal_wait: settings.deal_wait,
        heartbeat: settings.heartbeat,
        message_dedup_window: settings.message_dedup_window,
        default_statuses: settings.default_statuses.clone(),
        rejected_keep: settings.rejected_keep,
        max_subscribers: settings.grpc_max_subscribers,
        max_console_feeds: settings.console.max_feeds,
        max_consumers: settings.max_consumers,
        integrations: settings.integrations.keys().cloned().collect(),
        persons: settings.persons.clone(),
    }
}

/// The gRPC server's part of the settings.
fn grpc_options(settings: &Settings) -> GrpcOptions {
    GrpcOptions {
        token: settings.grpc_token.clone(),
        client_certificates: settings
            .grpc_tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca_path().is_some()),
        insecure: settings.grpc_insecure,
        keepalive_interval: settings.grpc_keepalive_interval,
        keepalive_timeout: settings.grpc_keepalive_timeout,
        max_concurrent_streams: settings.grpc_max_concurrent_streams,
        max_decoding_message_bytes: settings.grpc_max_recv_message_bytes,
        max_encoding_message_bytes: settings.grpc_max_send_message_bytes,
        max_page_bytes: settings.grpc_max_page_bytes,
        drain: settings.shutdown_drain,
        ..GrpcOptions::default()
    }
}

/// The console's pages and API.
#[cfg(feature = "console")]
fn console_router(relay: &LeadRelay, settings: &Settings) -> Router {
    console::router(
        relay.clone(),
        ConsoleOptions {
            integrations: settings.integrations.keys().cloned().collect(),
            token: settings.console.token.clone(),
            allowed_hosts: settings.console.allowed_hosts.clone(),
            tls: settings.http_tls.is_some(),
        },
    )
}

/// A build without the console serves none (and starts only with it off).
#[cfg(not(feature = "console"))]
fn console_router(_relay: &LeadRelay, _settings: &Settings) -> Router {
    Router::new()
}
