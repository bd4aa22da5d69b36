//! What the servers share below the faces: TLS, the limits on an HTTP request, and
//! who a peer is (the webhook's source policy).

mod access;
mod limits;
mod tls;
mod x509;

pub use access::{AccessPolicy, is_loopback, rate_key};
pub use limits::Limits;
pub use tls::{HANDSHAKE_TIMEOUT, ServerTls, TlsEndpoint, TlsError};
