//! Who may call the webhook: an optional allowlist of source networks, and which
//! proxies are trusted to say, in `X-Forwarded-For`, whom they forward.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The webhook's source-address policy. Empty lists: everyone, and no proxy trusted.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// When not empty, only clients in these networks may call the webhook.
    pub allow: Vec<IpNet>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl AccessPolicy {
    /// The client's address: the peer's, unless the peer is a trusted proxy; then
    /// the right-most address of `X-Forwarded-For` that is not itself a trusted
    /// proxy (addresses further left could have been written by the client).
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.ip();
        if !self.is_trusted(client) {
            return client;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        for hop in forwarded.into_iter().rev() {
            client = hop;
            if !self.is_trusted(hop) {
                break;
            }
        }
        client
    }

    pub fn allows(&self, client: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&client))
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|net| net.contains(&address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], trusted: &[&str]) -> AccessPolicy {
        AccessPolicy {
            allow: allow.iter().map(|net| net.parse().unwrap()).collect(),
            trusted_proxies: trusted.iter().map(|net| net.parse().unwrap()).collect(),
        }
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let policy = policy(&[], &["10.0.0.0/8"]);
        let proxy: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        let headers = forwarded("1.2.3.4, 203.0.113.9, 10.0.0.2");

        assert_eq!(
            policy.client_ip(proxy, &headers),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(policy.client_ip(stranger, &headers), stranger.ip());
        assert_eq!(policy.client_ip(proxy, &HeaderMap::new()), proxy.ip());
    }

    #[test]
    fn an_empty_allowlist_allows_everyone() {
        assert!(policy(&[], &[]).allows("8.8.8.8".parse().unwrap()));
        let only = policy(&["203.0.113.0/24", "2001:db8::/32"], &[]);
        assert!(only.allows("203.0.113.200".parse().unwrap()));
        assert!(only.allows("2001:db8::1".parse().unwrap()));
        assert!(!only.allows("127.0.0.1".parse().unwrap()));
    }
}
