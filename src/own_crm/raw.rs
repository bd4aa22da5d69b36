//! A request as it came: its query string and body, before anything is decoded.
//! Its credentials can be read whatever else it holds (so that a request refused
//! for its content is told apart from one with the wrong token), and it can be
//! kept for the operator with the token masked.

use super::decode::{self, Params, form_pairs};
use crate::domain::KeptRequest;

/// How a request's body is encoded, as its content type says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (a GET), or an empty one.
    None,
    /// `application/x-www-form-urlencoded`, `text/plain` or no content type.
    Form,
    /// `application/json`.
    Json,
    /// Anything else: kept as sent, not read.
    Unsupported(String),
}

/// A request's query string and body, undecoded.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub query: Vec<u8>,
    pub body: Vec<u8>,
    pub body_kind: BodyKind,
    /// The body's content type as sent; empty without one.
    pub content_type: String,
}

/// The most of a request kept for the operator: query and body together.
pub const KEPT_BYTES: usize = 64 * 1024;

impl RawRequest {
    /// A request with a query and no body (a GET).
    pub fn query_only(query: Vec<u8>) -> Self {
        Self {
            query,
            body: vec![],
            body_kind: BodyKind::None,
            content_type: String::new(),
        }
    }

    /// The parameters: the query's, then the body's, whose values win (as in PHP's
    /// `$_REQUEST`, which Roistat's own modules read). What cannot be read is noted
    /// in them, never refused.
    pub fn decode(&self) -> Params {
        let mut params = Params::new();
        decode::decode_form(&self.query, "query", &mut params);
        match &self.body_kind {
            BodyKind::None => {}
            _ if self.body.is_empty() => {}
            BodyKind::Form => decode::decode_form(&self.body, "body", &mut params),
            BodyKind::Json => decode::decode_json(&self.body, &mut params),
            BodyKind::Unsupported(kind) => params.note(format!(
                "a body of content type {kind:?} is not read: send a query string, a form \
                 or a JSON object"
            )),
        }
        params
    }

    /// The request as it came, every token masked, whole: what an event whose
    /// decoding lost something keeps.
    pub fn kept(&self) -> KeptRequest {
        KeptRequest {
            query: self.masked_query(),
            body: self.masked_body(),
            content_type: self.content_type.clone(),
        }
    }

    /// The query with every `token` value masked, and every other occurrence of
    /// the token sent.
    fn masked_query(&self) -> Vec<u8> {
        mask_value(mask_form(&self.query), self.credentials().1.as_deref())
    }

    /// The body with every `token` value masked (as a form field, a JSON member
    /// whatever escapes its name uses), and every other occurrence of the token
    /// sent, whatever the content type.
    fn masked_body(&self) -> Vec<u8> {
        let masked = match self.body_kind {
            BodyKind::Json => mask_json(&self.body),
            BodyKind::Form | BodyKind::None => mask_form(&self.body),
            BodyKind::Unsupported(_) => self.body.clone(),
        };
        mask_value(masked, self.credentials().1.as_deref())
    }

    /// `user` and `token`, read leniently (invalid UTF-8 replaced, the rest of the
    /// request ignored); the body's win.
    pub fn credentials(&self) -> (Option<String>, Option<String>) {
        let (query_user, query_token) = decode::form_credentials(&self.query);
        let (body_user, body_token) = match self.body_kind {
            BodyKind::Form => decode::form_credentials(&self.body),
            BodyKind::Json => json_credentials(&self.body),
            BodyKind::None | BodyKind::Unsupported(_) => (None, None),
        };
        (body_user.or(query_user), body_token.or(query_token))
    }

    /// The action the request names, read leniently, for the operator.
    pub fn action(&self) -> String {
        let named = |input: &[u8]| {
            form_pairs(input)
                .find(|(name, _)| *name == b"action")
                .map(|(_, value)| String::from_utf8_lossy(&decode::decode_bytes(value)).into())
        };
        named(&self.body)
            .or_else(|| named(&self.query))
            .unwrap_or_default()
    }

    /// The query and body with every `token` value replaced by `***`, at most
    /// [`KEPT_BYTES`] together.
    pub fn masked(&self) -> (Vec<u8>, Vec<u8>) {
        let query = self.masked_query();
        let body = self.masked_body();
        let query_len = query.len().min(KEPT_BYTES);
        let body_len = body.len().min(KEPT_BYTES - query_len);
        (query[..query_len].to_vec(), body[..body_len].to_vec())
    }
}

/// `user` and `token` of a JSON object body, read whatever else it holds: from a
/// pass over the object that keeps nothing else (no tree of the rest is built
/// before the token is checked) when it parses, else found by a scan of the text.
fn json_credentials(body: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(body);
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    match serde::Deserializer::deserialize_map(&mut deserializer, CredentialsVisitor) {
        Ok(found) => found,
        Err(_) => (scan_member(body, b"user"), scan_member(body, b"token")),
    }
}

/// The `user` and `token` members of a JSON object; every other value is skipped
/// as it is read.
struct CredentialsVisitor;

impl<'de> serde::de::Visitor<'de> for CredentialsVisitor {
    type Value = (Option<String>, Option<String>);

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut user, mut token) = (None, None);
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let slot = match name.as_ref() {
                "user" => &mut user,
                "token" => &mut token,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
            };
            *slot = match map.next_value::<serde_json::Value>()? {
                serde_json::Value::String(text) => Some(text),
                serde_json::Value::Null => None,
                other => Some(other.to_string()),
            };
        }
        Ok((user, token))
    }
}

/// The value of the first `"name": value` member in JSON text that may not parse.
fn scan_member(input: &[u8], name: &[u8]) -> Option<String> {
    let key = [b"\"", name, b"\""].concat();
    let mut rest = input;
    while let Some(at) = rest.windows(key.len()).position(|window| window == key) {
        rest = &rest[at + key.len()..];
        let after = rest.trim_ascii_start();
        let Some(value) = after.strip_prefix(b":") else {
            continue;
        };
        let value = value.trim_ascii_start();
        let raw = &value[..json_value_len(value)];
        return Some(match serde_json::from_slice::<String>(raw) {
            Ok(text) => text,
            Err(_) => String::from_utf8_lossy(raw).trim_matches('"').to_owned(),
        });
    }
    None
}

const MASK: &[u8] = b"***";

/// Form-encoded text with the value of every `token` pair replaced.
fn mask_form(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    for (index, pair) in input.split(|&byte| byte == b'&').enumerate() {
        if index > 0 {
            out.push(b'&');
        }
        match pair.iter().position(|&byte| byte == b'=') {
            Some(at) if decode::decode_bytes(&pair[..at]) == b"token" => {
                out.extend_from_slice(&pair[..=at]);
                out.extend_from_slice(MASK);
            }
            _ => out.extend_from_slice(pair),
        }
    }
    out
}

/// A JSON body with the value of every member named `token` replaced (its name
/// compared once unescaped, so `"to\u006ben"` is one too), found by a scan of the
/// text, so that even a body that does not parse keeps no token.
fn mask_json(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut at = 0;
    while at < input.len() {
        if input[at] != b'"' {
            out.push(input[at]);
            at += 1;
            continue;
        }
        let string_len = json_value_len(&input[at..]);
        let string = &input[at..at + string_len];
        out.extend_from_slice(string);
        at += string_len;
        let spaces = input[at..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        let is_token_key = input.get(at + spaces) == Some(&b':')
            && serde_json::from_slice::<String>(string).is_ok_and(|name| name == "token");
        if !is_token_key {
            continue;
        }
        let value_start = at
            + spaces
            + 1
            + input[at + spaces + 1..]
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
        out.extend_from_slice(&input[at..value_start]);
        at = value_start + json_value_len(&input[value_start..]);
        out.push(b'"');
        out.extend_from_slice(MASK);
        out.push(b'"');
    }
    out
}

/// Bytes with every occurrence of the token's value (ASCII case ignored) masked,
/// wherever it stands: a part of a body no parser reads, a name written with
/// escapes. A value shorter than 8 bytes is not a token worth a search.
fn mask_value(mut bytes: Vec<u8>, token: Option<&str>) -> Vec<u8> {
    let Some(token) = token.map(str::as_bytes).filter(|token| token.len() >= 8) else {
        return bytes;
    };
    let mut at = 0;
    while at + token.len() <= bytes.len() {
        if bytes[at..at + token.len()].eq_ignore_ascii_case(token) {
            bytes.splice(at..at + token.len(), MASK.iter().copied());
            at += MASK.len();
        } else {
            at += 1;
        }
    }
    bytes
}

/// The length of the JSON scalar at the start of `input`: a string with its
/// escapes, or a bare word or number.
fn json_value_len(input: &[u8]) -> usize {
    if input.first() != Some(&b'"') {
        return input
            .iter()
            .take_while(|&&b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
            .count();
    }
    let mut index = 1;
    while index < input.len() {
        match input[index] {
            b'\\' => index += 2,
            b'"' => return index + 1,
            _ => index += 1,
        }
    }
    input.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(query: &str, body: &str, body_kind: BodyKind) -> RawRequest {
        RawRequest {
            query: query.as_bytes().to_vec(),
            body: body.as_bytes().to_vec(),
            body_kind,
            content_type: String::new(),
        }
    }

    #[test]
    fn credentials_come_from_the_body_first_and_survive_bad_values() {
        let request = raw("user=q&token=qq&name=%FF", "token=bb&x=%FE", BodyKind::Form);
        assert_eq!(request.credentials(), (Some("q".into()), Some("bb".into())));
        assert!(request.decode().lossy());
        let json = raw(
            "",
            r#"{"user":"u","token":"t","id":"\uD800"}"#,
            BodyKind::Json,
        );
        assert_eq!(json.credentials(), (Some("u".into()), Some("t".into())));
    }

    #[test]
    fn the_token_is_masked_everywhere() {
        let request = raw(
            "user=u&token=abc&action=lead",
            "to%6Ben=def&id=1",
            BodyKind::Form,
        );
        let (query, body) = request.masked();
        assert_eq!(query, b"user=u&token=***&action=lead");
        assert_eq!(body, b"to%6Ben=***&id=1");
        let json = raw(
            "",
            r#"{"id":1, "token" : "a\"b", "t":{"token":7}}"#,
            BodyKind::Json,
        );
        assert_eq!(
            json.masked().1,
            br#"{"id":1, "token" : "***", "t":{"token":"***"}}"#
        );
        let broken = raw("", r#"{"token":"secret"#, BodyKind::Json);
        assert_eq!(broken.masked().1, br#"{"token":"***""#);
        // A name written with escapes; a string that only looks like a key.
        let escaped = raw(
            "",
            r#"{"to\u006ben":"0123456789abcdef","text":"\"token\"","n":1}"#,
            BodyKind::Json,
        );
        assert_eq!(
            escaped.kept().body,
            br#"{"to\u006ben":"***","text":"\"token\"","n":1}"#
        );
        // Whatever carries the token, every occurrence of its value.
        let token = "0123456789ABCDEF0123456789abcdef";
        let elsewhere = RawRequest {
            query: format!("token={token}&x=1").into_bytes(),
            body: format!(
                "<lead><token>{token}</token><copy>{}</copy></lead>",
                token.to_lowercase()
            )
            .into_bytes(),
            body_kind: BodyKind::Unsupported("application/xml".into()),
            content_type: "application/xml".into(),
        };
        let kept = elsewhere.kept();
        assert_eq!(kept.query, b"token=***&x=1");
        assert_eq!(
            kept.body,
            b"<lead><token>***</token><copy>***</copy></lead>"
        );
        let (_, body) = elsewhere.masked();
        assert_eq!(body, kept.body);
    }

    #[test]
    fn what_is_kept_is_bounded() {
        let long = "x".repeat(KEPT_BYTES);
        let (query, body) = raw(&long, &long, BodyKind::Form).masked();
        assert_eq!(query.len() + body.len(), KEPT_BYTES);
    }

    #[test]
    fn the_action_is_read_leniently() {
        assert_eq!(
            raw("action=le%FFad", "", BodyKind::None).action(),
            "le\u{fffd}ad"
        );
        assert_eq!(
            raw("action=lead", "action=call", BodyKind::Form).action(),
            "call"
        );
    }
}
