//! A refused request: its HTTP status, from the one table of [`Error::codes`], and
//! Roistat's error JSON. Every failure of the HTTP face is an [`Error`], from
//! whichever layer refused it; what reading a request can fail with is said as one
//! here.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::own_crm::answer::ErrorAnswer;
use crate::own_crm::{ActionError, ParseError};
use crate::relay::Error;

/// An error's HTTP status.
pub fn status(error: &Error) -> StatusCode {
    StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl From<ParseError> for Error {
    fn from(error: ParseError) -> Self {
        Error::InvalidArgument(error.to_string())
    }
}

impl From<ActionError> for Error {
    fn from(error: ActionError) -> Self {
        Error::InvalidArgument(error.to_string())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut response = json(status(&self), &ErrorAnswer::new(&self.to_string()));
        if matches!(self, Error::DealPending(_)) {
            response
                .extensions_mut()
                .insert(OutcomeLabel("deal_pending"));
        }
        response
    }
}

/// An answer's outcome label where its status alone does not say it (a 503 that
/// only waits for the CRM is no fault of the service).
#[derive(Debug, Clone, Copy)]
pub struct OutcomeLabel(pub &'static str);

/// A JSON answer.
pub fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_else(|_| b"{\"status\":\"error\"}".to_vec());
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
