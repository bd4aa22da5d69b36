//! Decoding a request's parameters: a query string, a form body or a JSON object.
//! Decoding never refuses: a byte that is not UTF-8 is replaced with U+FFFD, a name
//! sent twice keeps every value, what is past a limit or cannot be read at all is
//! left out, and each loss is noted, so that the request is kept whole beside what
//! was read (see [`Params::notes`]).

use std::collections::BTreeMap;
use std::fmt;

use percent_encoding::percent_decode;
use serde::de::{Deserializer, MapAccess, Visitor};

/// At most this many parameter names in one request (Roistat sends about a dozen);
/// past it, parameters are left out (and noted).
pub const MAX_PARAMS: usize = 256;
/// Longer names are cut (and noted).
pub const MAX_NAME_BYTES: usize = 256;
/// A lead's comment can be long; a longer value is cut (and noted), the body as a
/// whole is capped by the HTTP layer.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// At most this many notes; the rest are counted in the last.
const MAX_NOTES: usize = 32;

/// Decoded request parameters: a later value for the same name replaces an earlier
/// one, and every value of a repeated name is kept beside.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    values: BTreeMap<String, String>,
    repeated: Vec<(String, String)>,
    notes: Vec<String>,
    /// Notes past [`MAX_NOTES`].
    notes_dropped: usize,
    /// Parameters left out past [`MAX_PARAMS`].
    params_dropped: usize,
}

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter; a name already present keeps every value in
    /// [`Params::repeated`] (except `token`, which is never kept).
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        if let Some(previous) = self.values.get(&name).cloned() {
            if name != "token" {
                if !self.repeated.iter().any(|(seen, _)| *seen == name) {
                    self.note(format!(
                        "parameter {name:?} sent more than once: the last value is read, \
                         every value is kept in repeated_parameters"
                    ));
                    self.repeated.push((name.clone(), previous));
                }
                self.repeated.push((name.clone(), value.clone()));
            }
        } else if self.values.len() >= MAX_PARAMS {
            self.params_dropped += 1;
            return;
        }
        self.values.insert(name, value);
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// Every value of each name sent more than once, in the order sent.
    pub fn repeated(&self) -> &[(String, String)] {
        &self.repeated
    }

    /// Notes a loss: what could not be read as sent.
    pub fn note(&mut self, note: String) {
        if self.notes.len() < MAX_NOTES {
            self.notes.push(note);
        } else {
            self.notes_dropped += 1;
        }
    }

    /// What decoding (and reading the values since) lost; empty when the request
    /// was read whole.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = self.notes.clone();
        if self.params_dropped > 0 {
            notes.push(format!(
                "{} parameters past the first {MAX_PARAMS} names left out",
                self.params_dropped
            ));
        }
        if self.notes_dropped > 0 {
            notes.push(format!("{} more losses not listed", self.notes_dropped));
        }
        notes
    }

    /// Whether anything was lost.
    pub fn lossy(&self) -> bool {
        !self.notes.is_empty() || self.params_dropped > 0
    }

    /// Adds a decoded parameter, cutting a name or value past its limit.
    fn add(&mut self, mut name: String, mut value: String) {
        if name.len() > MAX_NAME_BYTES {
            cut(&mut name, MAX_NAME_BYTES);
            self.note(format!(
                "a parameter name over {MAX_NAME_BYTES} bytes cut to {name:?}"
            ));
        }
        if value.len() > MAX_VALUE_BYTES {
            cut(&mut value, MAX_VALUE_BYTES);
            self.note(format!(
                "the value of {name:?} over {MAX_VALUE_BYTES} bytes cut"
            ));
        }
        self.insert(name, value);
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut params = Params::new();
        for (name, value) in iter {
            params.insert(name, value);
        }
        params
    }
}

/// Cuts text to at most `max` bytes, at a character boundary.
fn cut(text: &mut String, max: usize) {
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

/// Decodes `application/x-www-form-urlencoded` text (a query string or a form body)
/// into `params`; `part` names it in notes ("query", "body").
pub fn decode_form(input: &[u8], part: &str, params: &mut Params) {
    for (raw_name, raw_value) in form_pairs(input) {
        let (name, name_lossy) = decode_component(raw_name);
        let (value, value_lossy) = decode_component(raw_value);
        if name_lossy {
            params.note(format!(
                "a parameter name in the {part} is not UTF-8: read as {name:?}"
            ));
        }
        if value_lossy {
            params.note(format!(
                "the value of {name:?} in the {part} is not UTF-8: bytes replaced with U+FFFD"
            ));
        }
        params.add(name, value);
    }
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

/// A form component as text, and whether a byte that was not UTF-8 was replaced.
fn decode_component(raw: &[u8]) -> (String, bool) {
    match String::from_utf8(decode_bytes(raw)) {
        Ok(text) => (text, false),
        Err(error) => (String::from_utf8_lossy(error.as_bytes()).into_owned(), true),
    }
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
/// as an object) as JSON text; nulls as empty strings. A member named twice keeps
/// both values. A body that is not UTF-8 is read with U+FFFD in place of what is
/// not; one that is not a JSON object is not read at all (and noted).
pub fn decode_json(body: &[u8], params: &mut Params) {
    let text = match std::str::from_utf8(body) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => {
            params.note("the body is not UTF-8: bytes replaced with U+FFFD".to_owned());
            String::from_utf8_lossy(body)
        }
    };
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    let members = deserializer
        .deserialize_any(MembersVisitor)
        .and_then(|members| deserializer.end().map(|()| members));
    match members {
        Ok(Some(members)) => {
            for (name, value) in members {
                let value = match value {
                    serde_json::Value::String(text) => text,
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                params.add(name, value);
            }
        }
        Ok(None) => params.note("the body is JSON but not an object: not read".to_owned()),
        Err(error) => params.note(format!("the body is not valid JSON ({error}): not read")),
    }
}

/// The members of a JSON object in the order sent, repeated names included;
/// `None` for JSON that is not an object.
struct MembersVisitor;

type Members = Option<Vec<(String, serde_json::Value)>>;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut members = vec![];
        while let Some(member) = map.next_entry::<String, serde_json::Value>()? {
            members.push(member);
        }
        Ok(Some(members))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Members, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Members, E> {
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Members, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Members, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Members, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Members, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Members, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(input: &[u8]) -> Params {
        let mut params = Params::new();
        decode_form(input, "query", &mut params);
        params
    }

    fn json(input: &[u8]) -> Params {
        let mut params = Params::new();
        decode_json(input, &mut params);
        params
    }

    #[test]
    fn form_decoding_handles_plus_and_percent() {
        let params = form(b"created_date=2015-06-28+09%3A12%3A54&phone=%2B7999&x=a%20b&flag&=v");
        assert_eq!(params.get("created_date"), Some("2015-06-28 09:12:54"));
        assert_eq!(params.get("phone"), Some("+7999"));
        assert_eq!(params.get("x"), Some("a b"));
        assert_eq!(params.get("flag"), Some(""));
        assert!(!params.lossy(), "{:?}", params.notes());
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced_and_noted() {
        // One Cyrillic letter cut in half: "Пр" then the first byte of "и".
        let params = form(b"text=%D0%9F%D1%80%D0&id=1");
        assert_eq!(params.get("text"), Some("Пр\u{fffd}"));
        assert_eq!(params.get("id"), Some("1"));
        assert!(params.lossy());
        assert!(
            params.notes()[0].contains("\"text\""),
            "{:?}",
            params.notes()
        );
        let params = json(b"{\"a\":\"\xff\",\"id\":2}");
        assert_eq!(params.get("a"), Some("\u{fffd}"));
        assert_eq!(params.get("id"), Some("2"));
        assert!(params.lossy());
    }

    #[test]
    fn repeated_names_keep_every_value() {
        let params = form(b"phone=1&phone=2&token=a&token=b&phone=3&x=y");
        assert_eq!(params.get("phone"), Some("3"));
        assert_eq!(
            params.repeated(),
            [
                ("phone".to_owned(), "1".to_owned()),
                ("phone".to_owned(), "2".to_owned()),
                ("phone".to_owned(), "3".to_owned()),
            ]
        );
        assert_eq!(params.notes().len(), 1, "{:?}", params.notes());
        let params = json(br#"{"id":"1","id":"2"}"#);
        assert_eq!(params.get("id"), Some("2"));
        assert_eq!(params.repeated().len(), 2);
    }

    #[test]
    fn what_is_past_a_limit_is_left_out_and_noted() {
        let many: Vec<String> = (0..MAX_PARAMS + 3).map(|n| format!("p{n}=1")).collect();
        let params = form(many.join("&").as_bytes());
        assert_eq!(params.len(), MAX_PARAMS);
        assert!(
            params
                .notes()
                .iter()
                .any(|note| note.starts_with("3 parameters"))
        );
        let long = format!("text={}", "я".repeat(MAX_VALUE_BYTES));
        let params = form(long.as_bytes());
        let text = params.get("text").unwrap();
        assert!(text.len() <= MAX_VALUE_BYTES && text.chars().all(|c| c == 'я'));
        assert!(params.lossy());
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
        let params = json(br#"{"id":90,"data":{"page":"p"},"name":null}"#);
        assert_eq!(params.get("id"), Some("90"));
        assert_eq!(params.get("data"), Some(r#"{"page":"p"}"#));
        assert_eq!(params.get("name"), Some(""));
        assert!(!params.lossy());
        for unreadable in [&b"[1]"[..], b"{\"a\":", b"7", b"{} x"] {
            let params = json(unreadable);
            assert!(params.is_empty() && params.lossy(), "{unreadable:?}");
        }
    }

    mod properties {
        use super::*;
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        use proptest::prelude::*;

        proptest! {
            /// Whatever bytes arrive, decoding reads parameters (and notes what it
            /// lost); it never fails.
            #[test]
            fn decoding_never_panics(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let params = form(&input);
                prop_assert!(params.len() <= MAX_PARAMS);
                let _ = json(&input);
                let _ = form_credentials(&input);
            }

            /// What a sender encodes is what the service reads back, whole.
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
                let params = form(query.as_bytes());
                prop_assert_eq!(params.len(), pairs.len());
                prop_assert!(!params.lossy());
                for (name, value) in &pairs {
                    prop_assert_eq!(params.get(name), Some(value.as_str()));
                }
            }
        }
    }
}
