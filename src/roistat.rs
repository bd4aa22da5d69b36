//! Roistat's wire dialect: decoding a request's parameters, checking its token, and
//! the answers Roistat expects.

use std::fmt;

use md5::{Digest, Md5};
use percent_encoding::percent_decode;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::domain::Params;

/// Why a request's parameters cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("request is not valid UTF-8")]
    InvalidUtf8,
    #[error("body is not a JSON object")]
    NotAJsonObject,
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("too many parameters (at most {MAX_PARAMS})")]
    TooManyParams,
    #[error("a parameter name over {MAX_NAME_BYTES} bytes or value over {MAX_VALUE_BYTES} bytes")]
    ParamTooLarge,
}

/// At most this many parameters in one request (Roistat sends about a dozen).
pub const MAX_PARAMS: usize = 256;
pub const MAX_NAME_BYTES: usize = 256;
/// A lead's comment can be long; a body is capped separately.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Adds a decoded parameter, within the limits.
fn add_param(params: &mut Params, name: String, value: String) -> Result<(), DecodeError> {
    if name.len() > MAX_NAME_BYTES || value.len() > MAX_VALUE_BYTES {
        return Err(DecodeError::ParamTooLarge);
    }
    params.insert(name, value);
    if params.len() > MAX_PARAMS {
        return Err(DecodeError::TooManyParams);
    }
    Ok(())
}

/// Decodes `application/x-www-form-urlencoded` text (a query string or a form body)
/// into `params`. Unlike lenient decoders, invalid UTF-8 is refused, not replaced.
pub fn decode_form(input: &[u8], params: &mut Params) -> Result<(), DecodeError> {
    for pair in input.split(|&byte| byte == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.iter().position(|&byte| byte == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        add_param(params, decode_component(name)?, decode_component(value)?)?;
    }
    Ok(())
}

fn decode_component(raw: &[u8]) -> Result<String, DecodeError> {
    // In form encoding `+` is a space; a literal plus arrives as %2B.
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&byte| if byte == b'+' { b' ' } else { byte })
        .collect();
    let bytes: Vec<u8> = percent_decode(&spaced).collect();
    String::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)
}

/// Decodes a JSON object body into `params`. Strings are taken as they are; numbers
/// and booleans as their JSON text; nested objects and arrays (such as `data` sent
/// as an object) as JSON text; nulls as empty strings.
pub fn decode_json(body: &[u8], params: &mut Params) -> Result<(), DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::InvalidUtf8)?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|error| DecodeError::InvalidJson(error.to_string()))?;
    let serde_json::Value::Object(object) = value else {
        return Err(DecodeError::NotAJsonObject);
    };
    for (name, value) in object {
        let value = match value {
            serde_json::Value::String(text) => text,
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        add_param(params, name, value)?;
    }
    Ok(())
}

/// The credentials of a Roistat integration: Roistat sends `user` (the login, may be
/// empty) and `token = md5(login + password)` as lowercase hex.
#[derive(Clone)]
pub struct Credentials {
    login: Option<String>,
    token: SecretString,
}

/// Why credentials cannot be built from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("a Roistat token is 32 hexadecimal digits (md5 of login + password)")]
    MalformedToken,
}

impl Credentials {
    /// From the login and password set in Roistat's integration settings.
    pub fn from_password(login: &str, password: &SecretString) -> Self {
        let mut hasher = Md5::new();
        hasher.update(login.as_bytes());
        hasher.update(password.expose_secret().as_bytes());
        Self {
            login: Some(login.to_owned()),
            token: SecretString::from(format!("{:x}", hasher.finalize())),
        }
    }

    /// From the token itself; `login`, when known, is checked against `user` too.
    pub fn from_token(login: Option<&str>, token: &SecretString) -> Result<Self, CredentialsError> {
        let token = token.expose_secret().trim().to_ascii_lowercase();
        if token.len() != 32 || !token.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(CredentialsError::MalformedToken);
        }
        Ok(Self {
            login: login.map(str::to_owned),
            token: SecretString::from(token),
        })
    }

    /// The expected token.
    pub fn token(&self) -> &SecretString {
        &self.token
    }

    /// The login `user` must match, when one is configured.
    pub fn login(&self) -> Option<&str> {
        self.login.as_deref()
    }

    /// Checks a request's `user` and `token`. The token comparison takes the same
    /// time wherever the first difference is.
    pub fn verify(&self, user: Option<&str>, token: Option<&str>) -> Result<(), AuthError> {
        let token = token.map(str::trim).unwrap_or_default();
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let given = token.to_ascii_lowercase();
        let matches: bool = given
            .as_bytes()
            .ct_eq(self.token.expose_secret().as_bytes())
            .into();
        if !matches {
            return Err(AuthError::WrongToken);
        }
        match (
            user.map(str::trim).filter(|user| !user.is_empty()),
            &self.login,
        ) {
            (Some(user), Some(login)) if user != login => Err(AuthError::WrongUser),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("login", &self.login)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    MissingToken,
    #[error("invalid token")]
    WrongToken,
    #[error("user does not match the integration login")]
    WrongUser,
}

/// `{"status":"ok","order_id":"..."}`: the answer that stops Roistat's retries of a lead.
#[derive(Debug, Serialize)]
pub struct OrderAnswer<'a> {
    pub status: &'static str,
    pub order_id: &'a str,
}

impl<'a> OrderAnswer<'a> {
    pub fn ok(order_id: &'a str) -> Self {
        Self {
            status: "ok",
            order_id,
        }
    }
}

/// `{"status":"ok","task_id":"..."}` and the like: an action answered with the id
/// this service gave the record.
#[derive(Debug, Serialize)]
pub struct IdAnswer<'a> {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<&'a str>,
}

/// `pagination` of an export page.
#[derive(Debug, Serialize)]
pub struct Pagination {
    pub total_count: u64,
    pub limit: u64,
}

/// An order as `action=export` lists it.
#[derive(Debug, Serialize)]
pub struct ExportOrder<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// Unix seconds, as a string.
    pub date_create: String,
    pub status: &'a str,
    /// A JSON number written from the stored decimal: never through a float.
    pub price: Box<serde_json::value::RawValue>,
    pub cost: Box<serde_json::value::RawValue>,
    /// The visit number.
    pub roistat: &'a str,
    pub client_id: &'a str,
    pub manager_id: &'a str,
    pub fields: &'a std::collections::BTreeMap<String, String>,
}

/// `{"statuses":[...],"orders":[...],"pagination":{...}}`.
#[derive(Debug, Serialize)]
pub struct ExportAnswer<'a> {
    pub statuses: &'a [crate::domain::SchemeEntry],
    pub orders: Vec<ExportOrder<'a>>,
    pub pagination: Pagination,
}

/// A client as `action=export_clients` lists it.
#[derive(Debug, Serialize)]
pub struct ExportClient<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub phone: &'a str,
    pub email: &'a str,
    pub company: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<&'a str>,
}

/// `{"clients":[...],"pagination":{...}}`.
#[derive(Debug, Serialize)]
pub struct ClientsAnswer<'a> {
    pub clients: Vec<ExportClient<'a>>,
    pub pagination: Pagination,
}

/// A decimal amount as a JSON number; 0 when the CRM reported none.
pub fn money_json(amount: Option<crate::domain::Money>) -> Box<serde_json::value::RawValue> {
    let text = amount.map_or_else(|| "0".to_owned(), |amount| amount.to_string());
    serde_json::value::RawValue::from_string(text).unwrap_or_else(|_| {
        serde_json::value::RawValue::from_string("0".to_owned()).expect("0 is JSON")
    })
}

/// `{"status":"ok"}`.
#[derive(Debug, Serialize)]
pub struct OkAnswer {
    pub status: &'static str,
}

impl OkAnswer {
    pub const OK: OkAnswer = OkAnswer { status: "ok" };
}

/// `{"status":"error","error":"..."}`: any failure; Roistat retries.
#[derive(Debug, Serialize)]
pub struct ErrorAnswer<'a> {
    pub status: &'static str,
    pub error: &'a str,
}

impl<'a> ErrorAnswer<'a> {
    pub fn new(error: &'a str) -> Self {
        Self {
            status: "error",
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_handles_plus_and_percent() {
        let mut params = Params::new();
        decode_form(
            b"created_date=2015-06-28+09%3A12%3A54&phone=%2B7999&x=a%20b&flag&=v",
            &mut params,
        )
        .unwrap();
        assert_eq!(params.get("created_date"), Some("2015-06-28 09:12:54"));
        assert_eq!(params.get("phone"), Some("+7999"));
        assert_eq!(params.get("x"), Some("a b"));
        assert_eq!(params.get("flag"), Some(""));
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let mut params = Params::new();
        assert_eq!(
            decode_form(b"name=%FF%FE", &mut params),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            decode_json(b"{\"a\":\"\xff\"}", &mut params),
            Err(DecodeError::InvalidUtf8)
        );
    }

    #[test]
    fn json_values_become_text() {
        let mut params = Params::new();
        decode_json(br#"{"id":90,"data":{"page":"p"},"name":null}"#, &mut params).unwrap();
        assert_eq!(params.get("id"), Some("90"));
        assert_eq!(params.get("data"), Some(r#"{"page":"p"}"#));
        assert_eq!(params.get("name"), Some(""));
        assert_eq!(
            decode_json(b"[1]", &mut params),
            Err(DecodeError::NotAJsonObject)
        );
    }

    #[test]
    fn token_is_md5_of_login_and_password() {
        let credentials = Credentials::from_password("demo", &SecretString::from("secret"));
        let token = format!("{:x}", Md5::digest(b"demosecret"));
        assert_eq!(credentials.verify(Some("demo"), Some(&token)), Ok(()));
        assert_eq!(
            credentials.verify(None, Some(&token.to_uppercase())),
            Ok(())
        );
        assert_eq!(
            credentials.verify(Some("other"), Some(&token)),
            Err(AuthError::WrongUser)
        );
        assert_eq!(
            credentials.verify(Some("demo"), Some("0".repeat(32).as_str())),
            Err(AuthError::WrongToken)
        );
        assert_eq!(
            credentials.verify(Some("demo"), None),
            Err(AuthError::MissingToken)
        );
        assert!(!format!("{credentials:?}").contains(&token));
    }

    #[test]
    fn empty_login_and_password_give_the_md5_of_nothing() {
        let credentials = Credentials::from_password("", &SecretString::from(""));
        assert_eq!(
            credentials.verify(Some(""), Some("d41d8cd98f00b204e9800998ecf8427e")),
            Ok(())
        );
    }

    mod properties {
        use super::*;
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        use proptest::prelude::*;

        proptest! {
            /// Whatever bytes arrive, decoding answers: a parameter map or an error.
            #[test]
            fn decoding_never_panics(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = decode_form(&input, &mut Params::new());
                let _ = decode_json(&input, &mut Params::new());
            }

            /// What a sender encodes is what the service reads back.
            #[test]
            fn form_encoding_round_trips(
                pairs in proptest::collection::btree_map("[a-zA-Z_]{1,12}", "\\PC{0,40}", 0..20)
            ) {
                let query = pairs
                    .iter()
                    .map(|(name, value)| format!(
                        "{}={}",
                        utf8_percent_encode(name, NON_ALPHANUMERIC),
                        utf8_percent_encode(value, NON_ALPHANUMERIC)
                    ))
                    .collect::<Vec<_>>()
                    .join("&");
                let mut params = Params::new();
                decode_form(query.as_bytes(), &mut params).unwrap();
                prop_assert_eq!(params.len(), pairs.len());
                for (name, value) in &pairs {
                    prop_assert_eq!(params.get(name), Some(value.as_str()));
                }
            }

            /// Any parameters make a lead or a clear refusal, and a lead keeps every
            /// parameter it does not read in `extra`.
            #[test]
            fn leads_keep_what_they_do_not_read(
                pairs in proptest::collection::btree_map("[a-z_]{1,10}", "\\PC{0,30}", 0..15),
                id in "[0-9]{1,9}"
            ) {
                let mut params: Params = pairs.clone().into_iter().collect();
                params.insert("id", id.clone());
                let lead = crate::domain::parse_lead("default", &params).unwrap();
                prop_assert_eq!(&lead.lead_id, &id);
                for (name, value) in &pairs {
                    let known = ["id", "visit", "title", "text", "name", "phone", "email", "data",
                        "created_date", "manager_id", "user", "token", "action"];
                    if !known.contains(&name.as_str()) {
                        prop_assert_eq!(lead.extra.get(name), Some(value));
                    }
                }
            }
        }
    }

    #[test]
    fn token_given_directly_must_be_hex() {
        assert!(Credentials::from_token(None, &SecretString::from("xyz")).is_err());
        let credentials = Credentials::from_token(
            None,
            &SecretString::from("6512BD43D9CAA6E02C990B0A82652DCA"),
        )
        .unwrap();
        assert_eq!(
            credentials.verify(Some("anyone"), Some("6512bd43d9caa6e02c990b0a82652dca")),
            Ok(())
        );
    }
}
