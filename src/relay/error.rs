//! One error type for the service's faces: each kind maps to both an HTTP status
//! and a gRPC code, so the webhook and the gRPC API never disagree about a failure.

use crate::domain::{InvalidValue, SchemeError};
use crate::store::StoreError;

/// A failure as callers see it; the message is safe to show to them.
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
    #[error("{0}")]
    FailedPrecondition(String),
    /// A bound was reached (subscribers, consumers); the caller may retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Temporary: the caller should retry (Roistat does by itself).
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the service or its data; logged where it happened.
    #[error("internal error")]
    Internal,
}

impl Error {
    pub fn http_status(&self) -> u16 {
        match self {
            Error::InvalidArgument(_) => 400,
            Error::Unauthenticated(_) => 401,
            Error::PermissionDenied(_) => 403,
            Error::NotFound(_) => 404,
            Error::FailedPrecondition(_) => 409,
            Error::ResourceExhausted(_) => 429,
            Error::Unavailable(_) => 503,
            Error::Internal => 500,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Error::InvalidArgument(_) => tonic::Code::InvalidArgument,
            Error::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Error::PermissionDenied(_) => tonic::Code::PermissionDenied,
            Error::NotFound(_) => tonic::Code::NotFound,
            Error::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Error::ResourceExhausted(_) => tonic::Code::ResourceExhausted,
            Error::Unavailable(_) => tonic::Code::Unavailable,
            Error::Internal => tonic::Code::Internal,
        }
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
