//! The HTTP/1.1 server loop: hyper with explicit limits on the request head and a
//! head-read timeout, optionally TLS, and a graceful shutdown that lets in-flight
//! requests finish.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

use crate::net::{HANDSHAKE_TIMEOUT, Limits, TlsEndpoint};

/// Serves `router` (an axum router, or a service around one) on `listener` (over
/// TLS when `tls` is given) until `shutdown` is cancelled, then stops accepting and
/// waits for in-flight requests to finish. With `webhook`, the requests hyper
/// itself refuses are counted in the webhook's metrics.
pub async fn serve<S>(
    listener: TcpListener,
    router: S,
    limits: Limits,
    tls: Option<Arc<TlsEndpoint>>,
    webhook: bool,
    shutdown: CancellationToken,
) where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper refuses heads larger than its buffer itself; leave room above our
        // own limits so that the handler's clearer JSON errors answer first.
        .max_buf_size(limits.max_uri_bytes + limits.max_header_bytes + 16 * 1024)
        .max_headers(limits.max_headers * 2);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    // A connection is accepted only with a place free: past the cap, new ones wait
    // in the kernel's backlog, costing this process nothing.
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
    loop {
        let place = tokio::select! {
            _ = shutdown.cancelled() => break,
            place = connections.clone().acquire_owned() => match place {
                Ok(place) => place,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Handlers learn the peer's address through `ConnectInfo`, as with axum::serve.
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request.map(Body::new))
            });
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        let handshakes = handshakes.clone();
        tokio::spawn(async move {
            // Held until the connection ends.
            let _place = place;
            let result = match tls {
                None => {
                    let stream = HeadRefusals::new(stream, webhook);
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection).await
                }
                // The handshake runs here, off the accept loop, and is bounded in
                // time like the request head that follows it.
                Some(tls) => match opens_tls(&stream).await {
                    None => return,
                    // Plain HTTP on the TLS port (an http:// URL where https:// was
                    // meant): answered in the service's own error format.
                    Some(false) => {
                        let refusal = hyper::service::service_fn(|_| async {
                            Ok::<_, std::convert::Infallible>(plain_http_refused())
                        });
                        let connection = builder.serve_connection(TokioIo::new(stream), refusal);
                        watcher.watch(connection).await
                    }
                    Some(true) => match handshake(&tls, stream, &handshakes).await {
                        Some(stream) => {
                            let stream = HeadRefusals::new(stream, webhook);
                            let connection =
                                builder.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(connection).await
                        }
                        None => {
                            tracing::debug!(%peer, "TLS handshake failed or timed out");
                            return;
                        }
                    },
                },
            };
            if let Err(error) = result {
                tracing::debug!(%error, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight HTTP requests did not finish in time");
    }
}

/// A TLS handshake, one of at most `max_handshakes` under way; `None` when it fails
/// or (waiting for a place included) does not finish within the handshake time.
async fn handshake(
    tls: &TlsEndpoint,
    stream: tokio::net::TcpStream,
    handshakes: &Semaphore,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let shaken = async {
        let _place = handshakes.acquire().await.ok()?;
        tls.accept(stream).await.ok()
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, shaken)
        .await
        .ok()
        .flatten()
}

/// Whether a connection's first byte opens a TLS handshake (a record of type 22);
/// `None` when nothing arrives in time or the peer is gone.
async fn opens_tls(stream: &tokio::net::TcpStream) -> Option<bool> {
    const HANDSHAKE_RECORD: u8 = 0x16;
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => Some(first[0] == HANDSHAKE_RECORD),
        _ => None,
    }
}

/// The answer to a plain-HTTP request on the HTTPS port; the connection is closed.
fn plain_http_refused() -> Response<Body> {
    let body = r#"{"status":"error","error":"this port speaks HTTPS: send the request to an https:// URL"}"#;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

pin_project_lite::pin_project! {
    /// A connection whose requests hyper itself refuses (a request line or head
    /// past what it can hold, a head it cannot parse) get the service's JSON error
    /// body, as every other refusal does, instead of hyper's empty one, and are
    /// counted. hyper writes such an answer as one buffer that starts with its
    /// status line then `connection: close` and `content-length: 0`; that buffer is
    /// replaced. The connection is closed after it, as hyper intends.
    struct HeadRefusals<S> {
        #[pin]
        inner: S,
        // A replacement being written, and how far, and the length of what it
        // replaces (reported written once it is).
        replacing: Option<(&'static [u8], usize, usize)>,
        // Whether refusals count in the webhook's metrics.
        webhook: bool,
    }
}

impl<S> HeadRefusals<S> {
    fn new(inner: S, webhook: bool) -> Self {
        Self {
            inner,
            replacing: None,
            webhook,
        }
    }
}

/// hyper's own refusals, the JSON answer each gets, and its metric labels.
const HEAD_REFUSALS: [(&[u8], &[u8], &str); 3] = [
    (
        b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n",
        b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 67\r\n\r\n{\"status\":\"error\",\"error\":\"request URI over what the server reads\"}",
        "uri_too_long",
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n",
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 71\r\n\r\n{\"status\":\"error\",\"error\":\"request headers over what the server reads\"}",
        "headers_too_large",
    ),
    (
        b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n",
        b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 57\r\n\r\n{\"status\":\"error\",\"error\":\"not a valid HTTP/1.1 request\"}",
        "malformed_request",
    ),
];

impl<S: tokio::io::AsyncRead> tokio::io::AsyncRead for HeadRefusals<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite> tokio::io::AsyncWrite for HeadRefusals<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let mut this = self.project();
        if this.replacing.is_none() {
            let refusal = HEAD_REFUSALS
                .iter()
                .find(|(hyper, _, _)| buf.starts_with(hyper));
            let Some((_, answer, label)) = refusal else {
                return this.inner.poll_write(cx, buf);
            };
            if *this.webhook {
                crate::telemetry::request_refused("before_token", label);
                let outcome = super::webhook::outcome(status_of(answer));
                crate::telemetry::webhook_answered("", "unknown", outcome, Duration::ZERO);
            }
            *this.replacing = Some((answer, 0, buf.len()));
        }
        while let Some((answer, written, replaced)) = this.replacing.as_mut() {
            if *written == answer.len() {
                let replaced = *replaced;
                *this.replacing = None;
                return Poll::Ready(Ok(replaced));
            }
            match this.inner.as_mut().poll_write(cx, &answer[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(count)) => *written += count,
                other => return other,
            }
        }
        Poll::Ready(Ok(0))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// The status of an answer's status line.
fn status_of(answer: &[u8]) -> StatusCode {
    answer
        .get(9..12)
        .and_then(|code| StatusCode::from_bytes(code).ok())
        .unwrap_or(StatusCode::BAD_REQUEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_replacement_is_a_whole_json_answer() {
        for (hyper, answer, _) in HEAD_REFUSALS {
            let text = std::str::from_utf8(answer).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert_eq!(hyper[..12], answer[..12]);
            let length = format!("content-length: {}", body.len());
            assert!(head.contains(&length), "{head}");
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json["status"], "error");
        }
    }
}
