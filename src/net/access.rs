//! Who a peer is: whether an address is this machine (what an unauthenticated
//! listener is held to), and, for the webhook, an optional allowlist of source networks and which
//! proxies are trusted to say, in `X-Forwarded-For`, whom they forward.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Whether `ip` is this machine: all of 127.0.0.0/8, `::1`, and their
/// IPv4-mapped IPv6 forms.
pub fn is_loopback(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a dual-stack socket reports an
/// IPv4 peer) as the IPv4 address it is; any other address as it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The key a per-address limit counts a client under: an IPv4 address, or the /64
/// of an IPv6 one (one subscriber's allocation, which it can fill at will).
pub fn rate_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            IpAddr::V6(Ipv6Addr::new(
                segments[0],
                segments[1],
                segments[2],
                segments[3],
                0,
                0,
                0,
                0,
            ))
        }
        v4 => v4,
    }
}

/// The webhook's source-address policy. Empty lists: everyone, and no proxy trusted.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// When not empty, only clients in these networks may call the webhook.
    pub allow: Vec<IpNet>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl AccessPolicy {
    /// The client's address. `X-Forwarded-For` is read from the right, starting from
    /// the peer, and only while each hop read is a trusted proxy: the first hop that
    /// is not one is the client (addresses further left could have been written by
    /// anyone). A hop that does not parse (`unknown`, a name) ends the walk: the
    /// client is then the last trusted hop read.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer.ip());
        if !self.is_trusted(client) {
            return client;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.into_iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        client
    }

    pub fn allows(&self, client: IpAddr) -> bool {
        let client = canonical(client);
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&client))
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|net| net.contains(&address))
    }
}

/// One hop of `X-Forwarded-For`: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or
/// `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let ip = hop
        .parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()?;
    Some(canonical(ip))
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

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_through_trusted_proxies() {
        let policy = policy(&[], &["10.0.0.0/8", "2001:db8:ffff::/48"]);
        let proxy: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        let client = |value: &str| policy.client_ip(proxy, &forwarded(value));

        assert_eq!(client("1.2.3.4, 203.0.113.9, 10.0.0.2"), ip("203.0.113.9"));
        assert_eq!(
            policy.client_ip(stranger, &forwarded("1.2.3.4")),
            stranger.ip()
        );
        assert_eq!(policy.client_ip(proxy, &HeaderMap::new()), proxy.ip());
        // Ports, in both forms.
        assert_eq!(client("203.0.113.9:5555, 10.0.0.2:80"), ip("203.0.113.9"));
        assert_eq!(client("[2001:db8::7]:443"), ip("2001:db8::7"));
        assert_eq!(client("2001:db8::8"), ip("2001:db8::8"));
        // A hop that does not parse ends the walk at the last trusted hop read.
        assert_eq!(client("203.0.113.9, unknown, 10.0.0.2"), ip("10.0.0.2"));
        assert_eq!(client("unknown"), proxy.ip());
        // Every hop trusted: the left-most one read.
        assert_eq!(client("10.1.1.1, 10.0.0.2"), ip("10.1.1.1"));
    }

    #[test]
    fn an_unparsable_hop_is_refused_by_an_allowlist_unless_its_proxy_is_allowed() {
        let strict = policy(&["203.0.113.0/24"], &["10.0.0.0/8"]);
        let proxy: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let client = strict.client_ip(proxy, &forwarded("unknown"));
        assert!(!strict.allows(client));
        let lenient = policy(&["10.0.0.0/8"], &["10.0.0.0/8"]);
        assert!(lenient.allows(lenient.client_ip(proxy, &forwarded("unknown"))));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let policy = policy(&["203.0.113.0/24"], &["10.0.0.0/8"]);
        let mapped: SocketAddr = "[::ffff:203.0.113.9]:80".parse().unwrap();
        assert_eq!(
            policy.client_ip(mapped, &HeaderMap::new()),
            ip("203.0.113.9")
        );
        assert!(policy.allows(ip("::ffff:203.0.113.9")));
        let mapped_proxy: SocketAddr = "[::ffff:10.0.0.5]:80".parse().unwrap();
        assert_eq!(
            policy.client_ip(mapped_proxy, &forwarded("203.0.113.4")),
            ip("203.0.113.4")
        );
        assert!(is_loopback(ip("::ffff:127.0.0.1")));
        assert!(is_loopback(ip("127.8.9.10")));
        assert!(is_loopback(ip("::1")));
        assert!(!is_loopback(ip("192.0.2.1")));
        assert!(!is_loopback(ip("::ffff:192.0.2.1")));
    }

    #[test]
    fn ipv6_clients_are_rate_limited_by_their_64() {
        assert_eq!(rate_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(
            rate_key(ip("2001:db8:1:2:ffff::1")),
            rate_key(ip("2001:db8:1:2::9"))
        );
        assert_ne!(
            rate_key(ip("2001:db8:1:3::1")),
            rate_key(ip("2001:db8:1:2::1"))
        );
        assert_eq!(rate_key(ip("203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(rate_key(ip("::ffff:203.0.113.9")), ip("203.0.113.9"));
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
