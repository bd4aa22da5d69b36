//! Limits on what an HTTP request may carry and how long it may take, shared by
//! the settings and the HTTP servers.

use std::time::Duration;

/// Limits on what a request may carry. Roistat puts whole leads in the query string,
/// so the URI limit is generous; it stays below the 65,534 bytes the `http` crate can
/// represent at all (longer URIs get a bare 414 from the HTTP layer itself).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: usize,
    /// Connections open at once per HTTP server; past it, new ones wait in the
    /// kernel's backlog (not accepted).
    pub max_connections: usize,
    /// Bytes of webhook bodies being read at once, across connections; past it, a
    /// request with a body is answered 503 before its body is read.
    pub body_budget_bytes: usize,
    /// TLS handshakes under way at once; past it, a new one waits (within its
    /// handshake time).
    pub max_handshakes: usize,
    /// Time allowed for a request's head (slow clients are cut off).
    pub header_timeout: Duration,
    /// Time allowed for reading a request's body.
    pub body_timeout: Duration,
    /// Once shutdown starts, how long in-flight requests get to finish.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_uri_bytes: 60 * 1024,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 1024 * 1024,
            max_connections: 4096,
            body_budget_bytes: 64 * 1024 * 1024,
            max_handshakes: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            drain: Duration::from_secs(10),
        }
    }
}
