//! One error type for the service's faces: each kind maps to both an HTTP status
//! and a gRPC code, so the webhook and the gRPC API never disagree about a failure.

use crate::domain::{InvalidValue, SchemeError};
use crate::store::StoreError;

/// A failure as callers see it; the message is safe to show to them. Whichever
/// face reports it, its HTTP status and gRPC code come from [`Error::codes`], the
/// one table of them: request decoding, validation, the store and the HTTP layers
/// all say what went wrong as one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    /// The method is not one the resource answers.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request did not arrive in time.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A request's body is over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// A request's URI is over its limit.
    #[error("{0}")]
    UriTooLong(String),
    /// A request's header block is over its limit.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// A body in a form this service does not read.
    #[error("{0}")]
    UnsupportedMedia(String),
    /// A value past what may be sent (an event over the message limit).
    #[error("{0}")]
    OutOfRange(String),
    /// A bound was reached (subscribers, consumers); the caller may retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Temporary: the caller should retry (Roistat does by itself).
    #[error("{0}")]
    Unavailable(String),
    /// In `crm` mode, the CRM has not reported the lead's deal id yet: Roistat
    /// retries, and nothing is wrong with the service.
    #[error("{0}")]
    DealPending(String),
    /// A fault of the service or its data; logged where it happened.
    #[error("internal error")]
    Internal,
}

impl Error {
    /// The table: each kind of failure as an HTTP status and a gRPC code.
    pub fn codes(&self) -> (u16, tonic::Code) {
        use tonic::Code;
        match self {
            Error::InvalidArgument(_) => (400, Code::InvalidArgument),
            Error::Unauthenticated(_) => (401, Code::Unauthenticated),
            Error::PermissionDenied(_) => (403, Code::PermissionDenied),
            Error::NotFound(_) => (404, Code::NotFound),
            Error::MethodNotAllowed(_) => (405, Code::Unimplemented),
            Error::Timeout(_) => (408, Code::DeadlineExceeded),
            Error::FailedPrecondition(_) => (409, Code::FailedPrecondition),
            Error::TooLarge(_) => (413, Code::ResourceExhausted),
            Error::UriTooLong(_) => (414, Code::ResourceExhausted),
            Error::UnsupportedMedia(_) => (415, Code::InvalidArgument),
            Error::OutOfRange(_) => (400, Code::OutOfRange),
            Error::ResourceExhausted(_) => (429, Code::ResourceExhausted),
            Error::HeadersTooLarge(_) => (431, Code::ResourceExhausted),
            Error::Unavailable(_) | Error::DealPending(_) => (503, Code::Unavailable),
            Error::Internal => (500, Code::Internal),
        }
    }

    pub fn http_status(&self) -> u16 {
        self.codes().0
    }

    pub fn grpc_code(&self) -> tonic::Code {
        self.codes().1
    }
}

impl From<InvalidValue> for Error {
    fn from(error: InvalidValue) -> Self {
        Error::InvalidArgument(error.to_string())
    }
}

impl From<SchemeError> for Error {
    fn from(error: SchemeError) -> Self {
        Error::InvalidArgument(error.to_string())
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Error::NotFound("lead not found".to_owned()),
            StoreError::Conflict(reason) => Error::FailedPrecondition(reason),
            StoreError::Exhausted(reason) => Error::ResourceExhausted(reason),
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "store unavailable");
                Error::Unavailable("store unavailable, retry later".to_owned())
            }
            StoreError::Failed(source) => {
                tracing::error!(error = %source, "store failed: stored data or a statement is wrong");
                Error::Internal
            }
            StoreError::Closed => Error::Unavailable("service is shutting down".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DbError;

    #[test]
    fn an_outage_is_unavailable_and_bad_data_internal() {
        let outage = Error::from(StoreError::Unavailable(DbError::unavailable("down")));
        assert_eq!(
            (outage.http_status(), outage.grpc_code()),
            (503, tonic::Code::Unavailable)
        );
        let corrupt = Error::from(StoreError::Failed(DbError::invalid("unreadable row")));
        assert_eq!(corrupt, Error::Internal);
        assert_eq!(
            (corrupt.http_status(), corrupt.grpc_code()),
            (500, tonic::Code::Internal)
        );
    }
}
