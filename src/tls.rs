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

    /// When the server's certificate (the first of its file) stops being valid;
    /// `None` if its encoding cannot be read that far.
    pub fn not_after(&self) -> Option<time::OffsetDateTime> {
        let first = CertificateDer::pem_slice_iter(&self.cert_pem)
            .next()?
            .ok()?;
        not_after(&first)
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

/// The `notAfter` time of a DER-encoded X.509 certificate (RFC 5280, 4.1):
/// Certificate → tbsCertificate → [version], serialNumber, signature, issuer,
/// validity { notBefore, notAfter }.
fn not_after(certificate: &[u8]) -> Option<time::OffsetDateTime> {
    const SEQUENCE: u8 = 0x30;
    let (certificate, _) = der(certificate, Some(SEQUENCE))?;
    let (tbs, _) = der(certificate, Some(SEQUENCE))?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der(rest, Some(0xa0))?.1; // the explicit version
    }
    rest = der(rest, Some(0x02))?.1; // serialNumber
    rest = der(rest, Some(SEQUENCE))?.1; // signature
    rest = der(rest, Some(SEQUENCE))?.1; // issuer
    let (validity, _) = der(rest, Some(SEQUENCE))?;
    let (_, after_not_before) = der(validity, None)?;
    let tag = *after_not_before.first()?;
    let (value, _) = der(after_not_before, None)?;
    let text = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
    let digits = |range: std::ops::Range<usize>| text.get(range)?.parse::<u16>().ok();
    // UTCTime has two year digits (50–99 are 19xx), GeneralizedTime four.
    let (year, start) = match (tag, text.len()) {
        (0x17, 12) => {
            let year = digits(0..2)?;
            (if year < 50 { 2000 + year } else { 1900 + year }, 2)
        }
        (0x18, 14) => (digits(0..4)?, 4),
        _ => return None,
    };
    let field = |n: usize| {
        digits(start + 2 * n..start + 2 * n + 2).and_then(|value| u8::try_from(value).ok())
    };
    let date = time::Date::from_calendar_date(
        i32::from(year),
        time::Month::try_from(field(0)?).ok()?,
        field(1)?,
    )
    .ok()?;
    let time = time::Time::from_hms(field(2)?, field(3)?, field(4)?).ok()?;
    Some(time::PrimitiveDateTime::new(date, time).assume_utc())
}

/// One DER element of `input` (of tag `tag`, when given): its contents and what
/// follows it.
fn der(input: &[u8], tag: Option<u8>) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if tag.is_some_and(|tag| tag != found) {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |length, byte| length << 8 | usize::from(*byte))
    };
    rest.split_at_checked(length)
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
    ) -> Result<Self, String> {
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
    pub fn reload(&self) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::not_after;
    use time::macros::datetime;

    fn certificate_until(end: time::OffsetDateTime) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = end;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_end_of_validity_is_read_from_the_certificate() {
        // Until 2049 as UTCTime, from 2050 as GeneralizedTime (RFC 5280).
        for end in [
            datetime!(2030-01-01 00:00:00 UTC),
            datetime!(2049-12-31 23:59:59 UTC),
            datetime!(2051-06-15 12:30:45 UTC),
        ] {
            assert_eq!(not_after(&certificate_until(end)), Some(end));
        }
    }

    #[test]
    fn a_truncated_certificate_has_no_end_rather_than_a_panic() {
        let der = certificate_until(datetime!(2030-01-01 00:00:00 UTC));
        for length in 0..der.len() {
            let _ = not_after(&der[..length]);
        }
        assert_eq!(not_after(b"not DER at all"), None);
    }
}
