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
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

use crate::net::{HANDSHAKE_TIMEOUT, Limits, TlsEndpoint};

/// Serves `router` (an axum router, or a service around one) on `listener` (over
/// TLS when `tls` is given) until `shutdown` is cancelled, then stops accepting and
/// waits for in-flight requests to finish.
pub async fn serve<S>(
    listener: TcpListener,
    router: S,
    limits: Limits,
    tls: Option<Arc<TlsEndpoint>>,
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
    loop {
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
        tokio::spawn(async move {
            let result = match tls {
                None => {
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
                    Some(true) => match tls.accept(stream).await {
                        Ok(stream) => {
                            let connection =
                                builder.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(connection).await
                        }
                        Err(error) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
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
