//! Logging in to the console with its token. A session is a cookie holding its
//! expiry and an HMAC of it under a key derived from the token: nothing is kept on
//! the server, so a session survives restarts and is good on every replica that
//! has the same token; changing the token ends every session. The cookie is
//! HttpOnly and SameSite=Strict; login attempts are rate limited per address.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;
use time::OffsetDateTime;

use super::{LOGIN, Shared};
use crate::net::rate_key;

/// Past this many remembered addresses, the login limiter forgets those whose
/// budget is full again.
const PRUNE_LOGIN_LIMITER_AT: usize = 4096;

/// The key sessions are signed with: HKDF-SHA256 of the token (RFC 5869), bound to
/// this use by its `info`.
fn session_key(token: &SecretString) -> [u8; 32] {
    let mut key = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(
        Some(b"roistat-leads console"),
        token.expose_secret().as_bytes(),
    )
    .expand(b"session cookie v1", &mut key)
    .expect("32 bytes is a valid HKDF-SHA256 length");
    key
}

/// How long a session lasts.
pub const SESSION_HOURS: i64 = 12;
const COOKIE: &str = "roistat_leads_console";

type Limiter = governor::DefaultKeyedRateLimiter<IpAddr>;

pub(super) struct Auth {
    /// The token, and the session key derived from it.
    token: Option<(SecretString, [u8; 32])>,
    secure: bool,
    attempts: Limiter,
}

impl Auth {
    pub fn new(token: Option<&SecretString>, secure: bool) -> Self {
        let token = token.map(|token| (token.clone(), session_key(token)));
        // Five attempts at once, then one every six seconds, per address.
        let quota = governor::Quota::per_minute(NonZeroU32::new(10).expect("non-zero"))
            .allow_burst(NonZeroU32::new(5).expect("non-zero"));
        Self {
            token,
            secure,
            attempts: governor::RateLimiter::keyed(quota),
        }
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    fn signature(&self, expires: i64) -> Option<String> {
        let (_, key) = self.token.as_ref()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
        mac.update(format!("v1.{expires}").as_bytes());
        Some(hex(&mac.finalize().into_bytes()))
    }

    /// A new session's cookie.
    fn session_cookie(&self) -> Option<String> {
        let expires = OffsetDateTime::now_utc().unix_timestamp() + SESSION_HOURS * 3600;
        let signature = self.signature(expires)?;
        Some(format!(
            "{COOKIE}=v1.{expires}.{signature}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
            SESSION_HOURS * 3600,
            if self.secure { "; Secure" } else { "" }
        ))
    }

    /// Whether a request carries a session that is signed and not expired.
    pub fn session_valid(&self, headers: &HeaderMap) -> bool {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix(&format!("{COOKIE}=")))
            .any(|value| {
                let mut parts = value.splitn(3, '.');
                let (Some("v1"), Some(expires), Some(signature)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return false;
                };
                let Ok(expires) = expires.parse::<i64>() else {
                    return false;
                };
                let Some(expected) = self.signature(expires) else {
                    return false;
                };
                expires > now
                    && bool::from(subtle::ConstantTimeEq::ct_eq(
                        expected.as_bytes(),
                        signature.as_bytes(),
                    ))
            })
    }

    fn token_matches(&self, given: &str) -> bool {
        self.token.as_ref().is_some_and(|(token, _)| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                token.expose_secret().as_bytes(),
                given.as_bytes(),
            ))
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[derive(Deserialize)]
pub(super) struct LoginNotice {
    #[serde(default)]
    failed: Option<String>,
    #[serde(default)]
    limited: Option<String>,
}

/// `GET /login`: the form (straight to the console when it needs no login).
pub(super) async fn login_page(
    State(console): State<Shared>,
    Query(notice): Query<LoginNotice>,
) -> Response {
    if !console.auth.has_token() {
        return Redirect::to("/").into_response();
    }
    // Fixed texts only: nothing from the request is written into the page.
    let message = if notice.limited.is_some() {
        "Too many attempts from your address: wait a minute."
    } else if notice.failed.is_some() {
        "That is not the console's token."
    } else {
        ""
    };
    super::page_owned(LOGIN.replace("<!--MESSAGE-->", message))
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

/// `POST /login`: a session for the right token.
pub(super) async fn login(
    State(console): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    if !console.auth.has_token() {
        return Redirect::to("/").into_response();
    }
    let attempts = &console.auth.attempts;
    // Addresses whose budget is full again are forgotten, so that the limiter
    // holds at most about this many between prunes.
    if attempts.len() >= PRUNE_LOGIN_LIMITER_AT {
        attempts.retain_recent();
    }
    if attempts.check_key(&rate_key(peer.ip())).is_err() {
        tracing::warn!(peer = %peer.ip(), "console login attempts rate limited");
        return Redirect::to("/login?limited=1").into_response();
    }
    if !console.auth.token_matches(form.token.trim()) {
        tracing::warn!(peer = %peer.ip(), "console login with a wrong token");
        return Redirect::to("/login?failed=1").into_response();
    }
    let Some(cookie) = console.auth.session_cookie() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    tracing::info!(peer = %peer.ip(), "console login");
    let mut response = Redirect::to("/").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST /logout`: the session cookie is cleared.
pub(super) async fn logout(State(console): State<Shared>) -> Response {
    let mut response = Redirect::to(if console.auth.has_token() {
        "/login"
    } else {
        "/"
    })
    .into_response();
    let cleared = format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    if let Ok(cookie) = HeaderValue::from_str(&cleared) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}
