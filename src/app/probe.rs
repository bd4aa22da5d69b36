//! `roistat-leads probe`: whether the service the settings describe is ready, asked
//! the way an orchestrator asks (`GET /readyz` on its HTTP address), without a shell
//! or a client of its own in the image: for a container's HEALTHCHECK and for exec
//! probes. Over HTTPS when the webhook has a certificate; like `curl -k`, it does
//! not check that certificate (it asks its own process, on this machine).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::config::Settings;

/// The whole exchange must end within this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// `Ok` when `/readyz` answers 200; else why not, in a line.
pub async fn probe(settings: &Settings) -> Result<(), String> {
    let addr = local(settings.http_addr);
    let asked = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|error| format!("cannot connect to {addr}: {error}"))?;
        match settings.http_tls {
            None => ask(stream).await,
            Some(_) => {
                let connector = tokio_rustls::TlsConnector::from(Arc::new(unchecked_client()));
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(|error| format!("TLS with {addr} failed: {error}"))?;
                ask(stream).await
            }
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, asked).await {
        Ok(Ok(200)) => Ok(()),
        Ok(Ok(status)) => Err(format!("{addr}/readyz answered {status}: not ready")),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(format!("{addr}/readyz did not answer within 3 s")),
    }
}

/// The address to dial for a listening one: an unspecified address is this machine.
fn local(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// `GET /readyz` on a connection; the answer's status.
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> Result<u16, String> {
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|error| format!("cannot send the probe: {error}"))?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|error| format!("no answer to the probe: {error}"))?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| "the answer is not HTTP".to_owned())
}

/// A TLS client that takes whatever certificate the service presents.
fn unchecked_client() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
