//! Roistat's own-CRM protocol: decoding a request's parameters, which action it asks
//! for, checking its token, reading leads and the like from it, and the answers
//! Roistat expects.

pub mod answer;
mod decode;
mod parse;
mod raw;
mod token;
mod values;

use std::fmt;

pub use decode::{
    MAX_NAME_BYTES, MAX_PARAMS, MAX_VALUE_BYTES, Params, decode_form, decode_json, form_credentials,
};
pub use parse::{
    ParseError, parse_call, parse_export, parse_lead, parse_message, parse_task,
    parse_unknown_action,
};
pub use raw::{BodyKind, KEPT_BYTES, RawRequest};
pub use token::{AuthError, Credentials, CredentialsError, token};
pub use values::{parse_number, parse_roistat_time};

/// What a request asks for: the `action` parameter of the own-CRM protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A new lead; Roistat expects an order id back.
    Lead,
    /// Additional information on a deal.
    Message,
    /// A task for the CRM.
    Task,
    /// A call from calltracking.
    Call,
    /// The CRM's statuses, fields and managers.
    ImportScheme,
    /// A page of orders.
    Export,
    /// A page of clients.
    ExportClients,
    /// An action this version does not know: kept whole, as an `UnknownAction`
    /// event, and answered `ok`.
    Other,
}

/// Why a request names no action at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("missing parameter: action (or id for a lead, leadId for a message)")]
    Missing,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::Lead,
        Action::Message,
        Action::Task,
        Action::Call,
        Action::ImportScheme,
        Action::Export,
        Action::ExportClients,
        Action::Other,
    ];

    /// The action's name on the wire, and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Lead => "lead",
            Action::Message => "message",
            Action::Task => "task",
            Action::Call => "call",
            Action::ImportScheme => "import_scheme",
            Action::Export => "export",
            Action::ExportClients => "export_clients",
            Action::Other => "other",
        }
    }

    /// The action a request asks for. Without one, a request with an `id` is a
    /// lead and one with a `leadId` a message, as the sample receiver of Roistat's
    /// own help page reads them.
    pub fn of(params: &Params) -> Result<Action, ActionError> {
        match params.get("action").map(str::trim) {
            None | Some("") if params.contains("id") => Ok(Action::Lead),
            None | Some("") if params.contains("leadId") => Ok(Action::Message),
            None | Some("") => Err(ActionError::Missing),
            Some(name) => Ok(Action::named(name).unwrap_or(Action::Other)),
        }
    }

    /// The action of this name on the wire, if it is one.
    pub fn named(name: &str) -> Option<Action> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str() == name.trim())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_read_by_name() {
        let params = |pairs: &[(&str, &str)]| pairs.iter().copied().collect::<Params>();
        assert_eq!(
            Action::of(&params(&[("action", " export ")])),
            Ok(Action::Export)
        );
        assert_eq!(Action::of(&params(&[])), Err(ActionError::Missing));
        assert_eq!(Action::of(&params(&[("id", "6")])), Ok(Action::Lead));
        assert_eq!(Action::of(&params(&[("leadId", "6")])), Ok(Action::Message));
        assert_eq!(
            Action::of(&params(&[("action", "versions")])),
            Ok(Action::Other),
            "an action this version does not know is kept, not refused"
        );
        for action in Action::ALL {
            let named = params(&[("action", action.as_str())]);
            assert_eq!(Action::of(&named), Ok(action));
        }
    }
}
