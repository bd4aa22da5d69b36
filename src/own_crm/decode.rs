//! Decoding a request's parameters: a query string, a form body or a JSON object.
//! Unlike lenient decoders, invalid UTF-8 is refused, not replaced.

use std::collections::BTreeMap;

use percent_encoding::percent_decode;

/// At most this many parameters in one request (Roistat sends about a dozen).
pub const MAX_PARAMS: usize = 256;
pub const MAX_NAME_BYTES: usize = 256;
/// A lead's comment can be long; a body is capped separately.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Decoded request parameters; a later value for the same name replaces an earlier one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

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
    #[error("unsupported content type {0:?}: send a query string, a form or a JSON object")]
    UnsupportedBody(String),
}

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
/// into `params`.
pub fn decode_form(input: &[u8], params: &mut Params) -> Result<(), DecodeError> {
    for (name, value) in form_pairs(input) {
        add_param(params, decode_component(name)?, decode_component(value)?)?;
    }
    Ok(())
}

/// The raw `name=value` pairs of form-encoded text.
pub(super) fn form_pairs(input: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    input
        .split(|&byte| byte == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&byte| byte == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        })
}

pub(super) fn decode_bytes(raw: &[u8]) -> Vec<u8> {
    // In form encoding `+` is a space; a literal plus arrives as %2B.
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&byte| if byte == b'+' { b' ' } else { byte })
        .collect();
    percent_decode(&spaced).collect()
}

fn decode_component(raw: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(decode_bytes(raw)).map_err(|_| DecodeError::InvalidUtf8)
}

/// `user` and `token` of form-encoded text, read whatever the other parameters
/// hold (invalid UTF-8 is replaced), so that a request refused for its content
/// can still be told apart from one with the wrong credentials.
pub fn form_credentials(input: &[u8]) -> (Option<String>, Option<String>) {
    let (mut user, mut token) = (None, None);
    for (name, value) in form_pairs(input) {
        let slot = match name_is(name) {
            Some(Credential::User) => &mut user,
            Some(Credential::Token) => &mut token,
            None => continue,
        };
        *slot = Some(String::from_utf8_lossy(&decode_bytes(value)).into_owned());
    }
    (user, token)
}

enum Credential {
    User,
    Token,
}

/// Whether a raw (still encoded) parameter name is `user` or `token`; a name
/// without escapes is compared as it is, without decoding it.
fn name_is(raw: &[u8]) -> Option<Credential> {
    let plain = !raw.iter().any(|&byte| byte == b'%' || byte == b'+');
    let decoded;
    let name = if plain {
        raw
    } else {
        decoded = decode_bytes(raw);
        &decoded
    };
    match name {
        b"user" => Some(Credential::User),
        b"token" => Some(Credential::Token),
        _ => None,
    }
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
    fn credentials_are_read_despite_invalid_values() {
        let (user, token) = form_credentials(b"name=%FF&user=demo&token=abc%2B&x");
        assert_eq!(user.as_deref(), Some("demo"));
        assert_eq!(token.as_deref(), Some("abc+"));
        assert_eq!(form_credentials(b"a=b"), (None, None));
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
                let _ = form_credentials(&input);
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
        }
    }
}
