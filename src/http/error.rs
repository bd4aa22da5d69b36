//! A refused request: an HTTP status and Roistat's error JSON. Every failure of the
//! HTTP face becomes one, from whichever layer refused it.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::relay::Error;
use crate::roistat::answer::ErrorAnswer;
use crate::roistat::{ActionError, DecodeError, ParseError};

#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<Error> for HttpError {
    fn from(error: Error) -> Self {
        let status =
            StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, error.to_string())
    }
}

impl From<DecodeError> for HttpError {
    fn from(error: DecodeError) -> Self {
        let status = match error {
            DecodeError::ParamTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            DecodeError::UnsupportedBody(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, error.to_string())
    }
}

impl From<ParseError> for HttpError {
    fn from(error: ParseError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error.to_string())
    }
}

impl From<ActionError> for HttpError {
    fn from(error: ActionError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error.to_string())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        json(self.status, &ErrorAnswer::new(&self.message))
    }
}

/// A JSON answer.
pub fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_else(|_| b"{\"status\":\"error\"}".to_vec());
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
