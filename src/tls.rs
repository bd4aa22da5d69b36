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
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, String> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map(Arc::from)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))
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

    /// A rustls server configuration offering `alpn` protocols.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, String> {
        let certs = certificates(&self.cert_pem, &self.cert_path)?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|error| {
            format!(
                "{}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {error}",
                self.key_path.display()
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS: {error}"))?;
        let builder = match (&self.client_ca_pem, &self.client_ca_path) {
            (Some(pem), Some(path)) => {
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(certificates(pem, path)?);
                if added == 0 {
                    return Err(format!("{}: no usable CA certificate", path.display()));
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|error| format!("{}: {error}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|error| {
            format!(
                "{} and {}: {error}",
                self.cert_path.display(),
                self.key_path.display()
            )
        })?;
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// Every certificate in a PEM file; at least one.
fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{}: {error}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
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
    ) -> Result<Self, String> {
        let config = files.server_config(alpn)?;
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
    pub fn reload(&self) -> Result<(), String> {
        let files = ServerTls::load(
            &self.files.cert_path,
            &self.files.key_path,
            self.files.client_ca_path.as_deref(),
        )?;
        let config = files.server_config(self.alpn)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }

    /// Completes the server side of a handshake within [`HANDSHAKE_TIMEOUT`].
    pub async fn accept(&self, stream: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        let config = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(stream))
            .await
        {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("timed out".to_owned()),
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
        tokio::spawn(async move {
            tokio::pin!(tcp);
            loop {
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
