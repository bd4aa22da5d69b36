//! What the servers share below the faces: TLS, the HTTP/1.1 server loop, and who
//! a peer is (the webhook's source policy).

mod access;
mod serve;
mod tls;
mod x509;

pub use access::{AccessPolicy, canonical, is_loopback, rate_key};
pub use serve::{Limits, serve};
pub use tls::{HANDSHAKE_TIMEOUT, ServerTls, TlsEndpoint, TlsError};
