//! Webhook requests the service refused, kept for the operator.

use time::OffsetDateTime;

/// A refused webhook request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRequest {
    /// Unique among the stored ones, or among those kept in memory.
    pub id: u64,
    pub time: OffsetDateTime,
    /// The integration the URL names; empty when it names none configured.
    pub integration: String,
    /// The client's address.
    pub source: String,
    /// Whether it passed the token check (and so was stored with its content).
    pub authenticated: bool,
    pub path: String,
    /// The action asked for, as sent.
    pub action: String,
    pub reason: String,
    pub status: u16,
    /// The raw query string and body, the token masked; empty when not
    /// authenticated.
    pub query: Vec<u8>,
    pub body: Vec<u8>,
}

/// Which refused requests a listing wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectedFilter {
    /// Only this integration; `None`: all.
    pub integration: Option<String>,
    /// Only those that passed (true) or failed (false) the token check; `None`: both.
    pub authenticated: Option<bool>,
}

impl RejectedFilter {
    pub fn matches(&self, request: &RejectedRequest) -> bool {
        self.integration
            .as_ref()
            .is_none_or(|name| *name == request.integration)
            && self
                .authenticated
                .is_none_or(|authenticated| authenticated == request.authenticated)
    }
}
