//! One error type for the service's two faces: each kind maps to both an HTTP status
//! and a gRPC code, so the webhook and the gRPC API never disagree about a failure.

use crate::domain::ParseError;
use crate::store::StoreError;

/// A failure as callers see it; the message is safe to show to them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// Temporary: the caller should retry (Roistat does by itself).
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal,
}

impl Error {
    pub fn http_status(&self) -> u16 {
        match self {
            Error::InvalidArgument(_) => 400,
            Error::Unauthenticated(_) => 401,
            Error::NotFound(_) => 404,
            Error::FailedPrecondition(_) => 409,
            Error::Unavailable(_) => 503,
            Error::Internal => 500,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Error::InvalidArgument(_) => tonic::Code::InvalidArgument,
            Error::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Error::NotFound(_) => tonic::Code::NotFound,
            Error::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Error::Unavailable(_) => tonic::Code::Unavailable,
            Error::Internal => tonic::Code::Internal,
        }
    }
}

impl From<ParseError> for Error {
    fn from(error: ParseError) -> Self {
        Error::InvalidArgument(error.to_string())
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Error::NotFound("lead not found".to_owned()),
            StoreError::Conflict(reason) => Error::FailedPrecondition(reason),
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "store unavailable");
                Error::Unavailable("store unavailable, retry later".to_owned())
            }
        }
    }
}

/// An error with its causes, outermost first, for command-line messages: clients'
/// own messages rarely say what went wrong (a refused connection, an untrusted
/// certificate).
pub fn causes(error: &dyn std::error::Error) -> String {
    with_causes(error.to_string(), error.source())
}

/// `text` followed by `source` and its causes.
pub fn with_causes(mut text: String, mut source: Option<&dyn std::error::Error>) -> String {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Wrappers often repeat their cause's message: say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
