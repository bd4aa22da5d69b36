//! The effective settings as the `check-config` command prints them: `key = value`
//! lines in the file's own format, secrets masked.

use super::grpc_options;
use crate::config::Settings;
use crate::domain::DEFAULT_INTEGRATION;
use crate::net::ServerTls;

/// The effective settings as `key = value` lines, secrets masked.
pub fn describe(settings: &Settings) -> String {
    let mut lines = vec![
        format!("http_addr = {:?}", settings.http_addr.to_string()),
        format!("grpc_addr = {:?}", settings.grpc_addr.to_string()),
        format!(
            "metrics_addr = {}",
            settings.metrics_addr.map_or(
                "\"\"  # none: /metrics is served on http_addr".to_owned(),
                |a| format!("{:?}  # /metrics only here", a.to_string())
            )
        ),
        format!(
            "console_addr = {:?}",
            settings
                .console
                .addr
                .map_or("off".to_owned(), |addr| addr.to_string())
        ),
        format!(
            "console_token = {}",
            if settings.console.token.is_some() {
                "\"********\"  # visitors log in with it"
            } else {
                "\"\"  # none: a loopback address, loopback Host names only"
            }
        ),
        format!(
            "console_allowed_hosts = {:?}",
            settings.console.allowed_hosts
        ),
        format!("console_max_feeds = {}", settings.console.max_feeds),
        format!("database_url = {:?}", mask_url(&settings.database_url)),
        format!("http_max_connections = {}", settings.limits.max_connections),
        format!(
            "http_body_budget_bytes = {}",
            settings.limits.body_budget_bytes
        ),
        format!(
            "rate_limit = {}",
            settings
                .rate_limit
                .map_or("0  # off".to_owned(), |limit| limit.to_string())
        ),
        format!(
            "webhook_allow = {:?}",
            settings
                .access
                .allow
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        ),
        format!(
            "trusted_proxies = {:?}",
            settings
                .access
                .trusted_proxies
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        ),
        format!(
            "grpc_token = {}",
            if settings.grpc_token.is_some() {
                "\"********\""
            } else {
                "\"\"  # none"
            }
        ),
        format!("grpc_insecure = {}", settings.grpc_insecure),
        format!("# LeadService callers: {}", grpc_options(settings).mode()),
        format!("grpc_max_subscribers = {}", settings.grpc_max_subscribers),
        format!(
            "grpc_max_concurrent_streams = {}",
            settings.grpc_max_concurrent_streams
        ),
        format!(
            "grpc_max_recv_message_bytes = {}",
            settings.grpc_max_recv_message_bytes
        ),
        format!(
            "grpc_max_send_message_bytes = {}",
            settings.grpc_max_send_message_bytes
        ),
        format!("grpc_max_page_bytes = {}", settings.grpc_max_page_bytes),
        format!(
            "grpc_keepalive_interval_ms = {}",
            settings.grpc_keepalive_interval.as_millis()
        ),
        format!(
            "grpc_keepalive_timeout_ms = {}",
            settings.grpc_keepalive_timeout.as_millis()
        ),
        format!("max_consumers = {}", settings.max_consumers),
        format!(
            "shutdown_drain_ms = {}",
            settings.shutdown_drain.as_millis()
        ),
        describe_tls("http_tls", settings.http_tls.as_ref()),
        describe_tls("grpc_tls", settings.grpc_tls.as_ref()),
        format!("order_id = {:?}", settings.order_id_mode.as_str()),
        format!("deal_wait_ms = {}", settings.deal_wait.as_millis()),
        format!("stream_buffer = {}", settings.stream_buffer),
        format!("heartbeat_ms = {}", settings.heartbeat.as_millis()),
        format!("export_page_size = {}", settings.export_page_size),
        format!(
            "message_dedup_window = {:?}",
            duration(settings.message_dedup_window)
        ),
        format!("rejected_keep = {}", settings.rejected_keep),
        format!("log_format = {:?}", settings.log_format.as_str()),
        format!(
            "otlp_endpoint = {}",
            settings.traces.endpoint.as_ref().map_or(
                "\"\"  # none: no traces exported".to_owned(),
                |endpoint| format!("{endpoint:?}")
            )
        ),
        format!("otlp_sampling_ratio = {}", settings.traces.sampling_ratio),
    ];
    for (name, credentials) in &settings.integrations {
        let path = if name == DEFAULT_INTEGRATION {
            "/webhook".to_owned()
        } else {
            format!("/webhook/{name}")
        };
        lines.push(String::new());
        lines.push("[[integrations]]".to_owned());
        lines.push(format!("name = {name:?}  # {path}"));
        lines.push(format!(
            "login = {:?}",
            credentials.login().unwrap_or("(any)")
        ));
        lines.push("token = \"********\"".to_owned());
        match settings.default_statuses.get(name) {
            Some(status) => lines.push(format!("default_status = {status:?}")),
            None => lines.push(
                "# no default_status: until the CRM publishes a scheme (UpdateScheme), this \
                 integration's orders export to Roistat with an empty status, which Roistat \
                 cannot map to a status group (serve warns, and sets \
                 roistat_leads_scheme_missing to 1)"
                    .to_owned(),
            ),
        }
    }
    lines
        .iter()
        .map(|line| with_source(line, &settings.sources))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `key = value` line with where its value came from, when not a default.
fn with_source(line: &str, sources: &std::collections::BTreeMap<String, String>) -> String {
    let Some((key, _)) = line.split_once(" = ") else {
        return line.to_owned();
    };
    match sources.get(key) {
        Some(source) if line.contains("  # ") => format!("{line}; from {source}"),
        Some(source) => format!("{line}  # from {source}"),
        None => line.to_owned(),
    }
}

/// A duration in the largest unit that writes it whole.
fn duration(duration: std::time::Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0".to_owned();
    }
    [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ]
    .into_iter()
    .find(|(unit, _)| millis.is_multiple_of(*unit))
    .map_or_else(
        || format!("{millis}ms"),
        |(unit, name)| format!("{}{name}", millis / unit),
    )
}

/// A server's TLS files as `key = value` lines, or a comment that it is off.
fn describe_tls(what: &str, tls: Option<&ServerTls>) -> String {
    let Some(tls) = tls else {
        return format!("# {what}: off (plain text)");
    };
    let mut lines = vec![
        format!("{what}_cert = {:?}", tls.cert_path().display().to_string()),
        format!("{what}_key = {:?}", tls.key_path().display().to_string()),
    ];
    if let Some(ca) = tls.client_ca_path() {
        lines.push(format!("{what}_client_ca = {:?}", ca.display().to_string()));
    }
    lines.join("\n")
}

/// A database URL with every form of its password hidden: in the user info
/// (which ends at the last `@` before the path: a password may hold `@`), and as a
/// `password=` query parameter.
fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority_and_path, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority_end = authority_and_path
        .find('/')
        .unwrap_or(authority_and_path.len());
    let (authority, path) = authority_and_path.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:********@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let query = query.map(|query| {
        query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                    format!("{name}=********")
                }
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(query) => format!("{scheme}://{authority}{path}?{query}"),
        None => format!("{scheme}://{authority}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_masked() {
        assert_eq!(
            mask_url("postgres://app:s3cret@db:5432/leads"),
            "postgres://app:********@db:5432/leads"
        );
        assert_eq!(
            mask_url("sqlite://roistat-leads.db"),
            "sqlite://roistat-leads.db"
        );
        assert_eq!(
            mask_url("postgres://app:p@ss@w0rd@db:5432/leads?sslmode=require"),
            "postgres://app:********@db:5432/leads?sslmode=require"
        );
        assert_eq!(
            mask_url("postgres://db/leads?user=app&password=s3cret&sslmode=require"),
            "postgres://db/leads?user=app&password=********&sslmode=require"
        );
        assert_eq!(
            mask_url("postgres://app@db/leads?PASSWORD=s3cret"),
            "postgres://app@db/leads?PASSWORD=********"
        );
    }
}
