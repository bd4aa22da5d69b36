//! TLS for the servers: a certificate chain and its private key read from PEM files,
//! optionally a CA whose certificates clients must present (mutual TLS), reloaded from
//! the same files on demand. rustls with the ring provider; TLS 1.2 and 1.3.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};

/// Longest time a client gets to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes under way at once on the gRPC listener.
pub const MAX_HANDSHAKES: usize = 256;

/// Why TLS cannot be set up from the files given.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no PEM certificate in it", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("{}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("{}: no usable CA certificate", path.display())]
    ClientCa { path: PathBuf },
    #[error("{} and {}: {reason}", cert.display(), key.display())]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS: {0}")]
    Config(String),
}

/// One server's TLS material, read and checked at start.
#[derive(Clone)]
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    client_ca_path: Option<PathBuf>,
    cert_pem: Arc<[u8]>,
    key_pem: Arc<[u8]>,
    client_ca_pem: Option<Arc<[u8]>>,
}

/// Paths only: the key never appears in `Debug` output.
impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .field("client_ca", &self.client_ca_path)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the files and checks that they make a working server configuration:
    /// the certificates parse, the key parses and belongs to the first certificate,
    /// and the client CA (if any) holds at least one usable certificate.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map(Arc::from)
                .map_err(|source| TlsError::Read {
                    path: path.to_owned(),
                    source,
                })
        };
        let tls = Self {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            client_ca_path: client_ca.map(Path::to_owned),
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: client_ca.map(read).transpose()?,
        };
        tls.server_config(&[])?;
        Ok(tls)
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    pub fn client_ca_path(&self) -> Option<&Path> {
        self.client_ca_path.as_deref()
    }

    /// When the server's certificate (the first of its file) stops being valid;
    /// `None` if its encoding cannot be read that far.
    pub fn not_after(&self) -> Option<time::OffsetDateTime> {
        let first = CertificateDer::pem_slice_iter(&self.cert_pem)
            .next()?
            .ok()?;
        super::x509::not_after(&first)
    }

    /// A rustls server configuration offering `alpn` protocols.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let certs = certificates(&self.cert_pem, &self.cert_path)?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|error| TlsError::Key {
            path: self.key_path.clone(),
            reason: error.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config(error.to_string()))?;
        let builder = match (&self.client_ca_pem, &self.client_ca_path) {
            (Some(pem), Some(path)) => {
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(certificates(pem, path)?);
                if added == 0 {
                    return Err(TlsError::ClientCa { path: path.clone() });
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|error| TlsError::Certificate {
                            path: path.clone(),
                            reason: error.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|error| TlsError::Pair {
                cert: self.cert_path.clone(),
                key: self.key_path.clone(),
                reason: error.to_string(),
            })?;
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// Every certificate in a PEM file; at least one.
fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Certificate {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// A certificate whose end is nearer than this is warned about when it is loaded.
const EXPIRY_WARNING: time::Duration = time::Duration::days(14);

/// Publishes when the certificate `server` now uses expires, and warns when that is
/// soon or past.
fn report_validity(server: &'static str, files: &ServerTls) {
    let Some(not_after) = files.not_after() else {
        tracing::warn!(server = %server, "cannot read the TLS certificate's expiry");
        return;
    };
    crate::telemetry::tls_certificate_expiry(server, not_after);
    let left = not_after - time::OffsetDateTime::now_utc();
    if left <= time::Duration::ZERO {
        tracing::error!(server = %server, %not_after, "the TLS certificate has expired");
    } else if left < EXPIRY_WARNING {
        tracing::warn!(
            server = %server,
            %not_after,
            days_left = left.whole_days(),
            "the TLS certificate expires soon"
        );
    } else {
        tracing::info!(server = %server, %not_after, "TLS certificate loaded");
    }
}

/// The live TLS configuration of one server. Each handshake uses the configuration
/// current when it starts; [`TlsEndpoint::reload`] replaces it as a whole.
pub struct TlsEndpoint {
    name: &'static str,
    alpn: &'static [&'static [u8]],
    files: ServerTls,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsEndpoint {
    /// `name` says which server this is in logs; `alpn` lists the protocols it offers.
    pub fn new(
        name: &'static str,
        files: ServerTls,
        alpn: &'static [&'static [u8]],
    ) -> Result<Self, TlsError> {
        let config = files.server_config(alpn)?;
        report_validity(name, &files);
        Ok(Self {
            name,
            alpn,
            files,
            current: RwLock::new(config),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Reads the files again; on success new handshakes use them, on failure the
    /// previous configuration stays. Established connections are not touched.
    pub fn reload(&self) -> Result<(), TlsError> {
        let files = ServerTls::load(
            &self.files.cert_path,
            &self.files.key_path,
            self.files.client_ca_path.as_deref(),
        )?;
        let config = files.server_config(self.alpn)?;
        report_validity(self.name, &files);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }

    /// Completes the server side of a handshake within [`HANDSHAKE_TIMEOUT`].
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let config = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(stream))
            .await
        {
            Ok(accepted) => accepted,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    /// The connections of `tcp` whose handshake succeeded. Handshakes run
    /// concurrently, so a slow client holds up no other; a failed one is logged at
    /// debug level and dropped. Accepting stops once the stream is dropped.
    pub fn incoming<S>(
        self: Arc<Self>,
        tcp: S,
    ) -> impl Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send + 'static
    where
        S: Stream<Item = std::io::Result<TcpStream>> + Send + 'static,
    {
        let (ready, handshaken) = mpsc::channel(64);
        // Past this many handshakes under way, the next connection is not taken
        // from the kernel's backlog until one ends (each ends within its time).
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            tokio::pin!(tcp);
            loop {
                let Ok(place) = handshakes.clone().acquire_owned().await else {
                    break;
                };
                let accepted = tokio::select! {
                    _ = ready.closed() => break,
                    accepted = tcp.next() => accepted,
                };
                let stream = match accepted {
                    Some(Ok(stream)) => stream,
                    Some(Err(error)) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(server = %self.name, %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    None => break,
                };
                let (endpoint, ready) = (self.clone(), ready.clone());
                tokio::spawn(async move {
                    let _place = place;
                    let peer = stream.peer_addr().ok();
                    match endpoint.accept(stream).await {
                        Ok(stream) => {
                            let _ = ready.send(Ok(stream)).await;
                        }
                        Err(error) => {
                            tracing::debug!(server = %endpoint.name, ?peer, %error, "TLS handshake failed");
                        }
                    }
                });
            }
        });
        ReceiverStream::new(handshaken)
    }
}
