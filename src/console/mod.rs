//! The operator console: a web page, served on a listener of its own, where an
//! operator watches leads arrive, finds one and sees what happened to it, and sees
//! the consumers and the refused requests. Its pages and scripts are embedded in
//! the binary; every value from a lead is rendered as text by the script, under a
//! Content-Security-Policy that allows no inline script. It is read-only, and reads
//! through the relay only.
//!
//! Who may open it: without a token it listens on a loopback address only (the
//! settings refuse any other) and answers only requests whose `Host` is a loopback
//! name or one allowed by name, so that a web page whose name is rebound to
//! 127.0.0.1 cannot read it through an operator's browser; with a token, every
//! visitor logs in through a form (`auth`).

mod api;
mod auth;
mod live;
mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use secrecy::SecretString;

use crate::relay::LeadRelay;

pub use auth::SESSION_HOURS;

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");
const ICON: &str = include_str!("assets/icon.svg");

/// The policy every answer carries: scripts, styles and requests from this origin
/// only, nothing inline, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the console knows.
pub struct ConsoleOptions {
    /// The integrations an operator chooses among.
    pub integrations: Vec<String>,
    /// Visitors log in with it; `None`: a loopback listener, and loopback `Host`
    /// names only.
    pub token: Option<SecretString>,
    /// Without a token, `Host` names answered besides the loopback ones.
    pub allowed_hosts: Vec<String>,
    /// Served over TLS: the session cookie is marked `Secure`.
    pub tls: bool,
}

struct Console {
    relay: LeadRelay,
    integrations: Vec<String>,
    auth: auth::Auth,
    allowed_hosts: Vec<String>,
}

type Shared = Arc<Console>;

/// The console's routes.
pub fn router(relay: LeadRelay, options: ConsoleOptions) -> Router {
    let console = Arc::new(Console {
        relay,
        integrations: options.integrations,
        auth: auth::Auth::new(options.token.as_ref(), options.tls),
        allowed_hosts: options.allowed_hosts,
    });
    let app = Router::new()
        .route("/", get(index))
        .route("/api/meta", get(api::meta))
        .route("/api/overview", get(api::overview))
        .route("/api/live", get(live::feed))
        .route("/api/search", post(api::search))
        .route("/api/lead", get(api::lead))
        .route("/api/person", get(api::person))
        .route("/api/consumers", get(api::consumers))
        .route("/api/requests", get(api::requests))
        .route("/logout", post(auth::logout))
        .route_layer(middleware::from_fn_with_state(console.clone(), admit));
    Router::new()
        .merge(app)
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/assets/console.js", get(script))
        .route("/assets/console.css", get(style))
        .route("/assets/icon.svg", get(icon))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(console.clone(), guard))
        .with_state(console)
}

/// Who may see more than the login page: with a token, a visitor with a valid
/// session (else to the login form, or 401 for the API); without, a loopback peer.
async fn admit(State(console): State<Shared>, request: Request, next: Next) -> Response {
    if console.auth.has_token() {
        if console.auth.session_valid(request.headers()) {
            return next.run(request).await;
        }
        return if request.uri().path().starts_with("/api/") {
            api::error(StatusCode::UNAUTHORIZED, "log in first (POST /login)")
        } else {
            Redirect::to("/login").into_response()
        };
    }
    next.run(request).await
}

/// What every answer gets: without a token, the `Host` rule; and the headers that
/// keep a browser strict.
async fn guard(State(console): State<Shared>, request: Request, next: Next) -> Response {
    let foreign = !console.auth.has_token() && !console.host_allowed(&request);
    let mut response = if foreign {
        (
            StatusCode::MISDIRECTED_REQUEST,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            FOREIGN_HOST,
        )
            .into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

impl Console {
    /// Whether a request names this console by a loopback name (`localhost`,
    /// `127.0.0.1`, `[::1]`, any port) or an allowed one. The `Host` is what a
    /// browser sends for the name it resolved: a page whose name was rebound to
    /// 127.0.0.1 still sends its own.
    fn host_allowed(&self, request: &Request) -> bool {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .or_else(|| request.uri().host())
            .unwrap_or_default();
        let name = host_name(host).to_ascii_lowercase();
        matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]")
            || self.allowed_hosts.contains(&name)
    }
}

/// A `Host` value without its port.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// The answer to a request for another name (DNS rebinding, or a name not allowed).
pub const FOREIGN_HOST: &str = "this console has no --console-token, so it answers only \
     requests for localhost, 127.0.0.1 or [::1] (or a name given with \
     --console-allowed-hosts): a web page whose name resolves to this machine must not \
     read it through your browser\n";

fn page(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn page_owned(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

async fn index() -> Response {
    page(INDEX)
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

async fn icon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], ICON).into_response()
}

async fn not_found() -> Response {
    api::error(StatusCode::NOT_FOUND, "no such page")
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn the_host_name_is_read_without_its_port() {
        assert_eq!(host_name("localhost:8081"), "localhost");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("[::1]:8081"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("evil.example:80"), "evil.example");
    }
}
