//! Per-tenant traffic policy that needs no counting: which client addresses a tenant takes
//! (`allow_ips`, `deny_ips`) and how large a request may be (`max_request_header_bytes`,
//! `max_request_body_bytes`). Layered like the limits (tenant over plan over `[limits]`), and
//! checked in admission before any rate is counted, so a refused request spends no tenant's quota.
//!
//! The client address is the connection's peer, or behind `[gateway] trusted_proxies` the first
//! address of `X-Forwarded-For` (read from the right) that is not a trusted proxy: the hops the
//! operator's own load balancers appended are believed, nothing a client wrote before them.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Uri};
use ipnet::IpNet;

use crate::config::model::TenantLimits;
use crate::gateway_error::GatewayError;

/// A list of addresses and networks (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList(Box<[IpNet]>);

impl IpList {
    /// Every entry, or the entries that are neither an address nor a network, by index.
    pub fn parse(entries: &[String]) -> Result<IpList, Vec<(usize, String)>> {
        let mut nets = Vec::with_capacity(entries.len());
        let mut bad = Vec::new();
        for (i, text) in entries.iter().enumerate() {
            let text = text.trim();
            let parsed = text
                .parse::<IpNet>()
                .ok()
                .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from));
            match parsed {
                Some(net) => nets.push(net.trunc()),
                None => bad.push((
                    i,
                    format!("{text:?} is neither an address nor a network (192.0.2.0/24)"),
                )),
            }
        }
        match bad.is_empty() {
            true => Ok(IpList(nets.into())),
            false => Err(bad),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An IPv4 client on a dual-stack listener arrives as `::ffff:a.b.c.d`; it matches IPv4 entries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn entries(&self) -> impl Iterator<Item = &IpNet> {
        self.0.iter()
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: `peer`, or behind trusted proxies the last untrusted hop of
/// `X-Forwarded-For`. A hop that is not an address ends the walk at the last one believed.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &IpList) -> IpAddr {
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all(http::header::HeaderName::from_static("x-forwarded-for"))
        .iter()
        .rev()
        .flat_map(hops_right_to_left);
    for hop in hops {
        let Some(ip) = hop else { break };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

fn hops_right_to_left(value: &HeaderValue) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    value
        .to_str()
        .unwrap_or("")
        .rsplit(',')
        .map(|hop| parse_hop(hop.trim()))
}

/// `192.0.2.7`, `2001:db8::1`, `[2001:db8::1]:443` or `192.0.2.7:5000`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// The size of the request line and headers as sent over HTTP/1.1 (`name: value\r\n` each).
pub fn header_bytes(method: &str, uri: &Uri, headers: &HeaderMap) -> u64 {
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len());
    let line = method.len() + 1 + target + " HTTP/1.1\r\n".len();
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    u64::try_from(line + fields + 2).unwrap_or(u64::MAX)
}

/// What the policy looks at: the request as it arrived, read only as far as the tenant's policy
/// needs (most tenants have none, and pay nothing).
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// The connection's peer; `None` on a Unix socket.
    pub peer: Option<IpAddr>,
    pub trusted_proxies: &'a IpList,
    pub method: &'a str,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

/// The tenant's policy applied to what the request showed before its body: its address, its
/// headers' size and its declared length.
pub fn check(limits: &TenantLimits, seen: &Seen<'_>) -> Result<(), GatewayError> {
    if limits.allow_ips.is_some() || limits.deny_ips.is_some() {
        let client = seen
            .peer
            .map(|peer| client_ip(peer, seen.headers, seen.trusted_proxies));
        if let Some(client) = client {
            let denied = limits.deny_ips.as_ref().is_some_and(|d| d.contains(client));
            let not_allowed = limits
                .allow_ips
                .as_ref()
                .is_some_and(|a| !a.contains(client));
            if denied || not_allowed {
                return Err(GatewayError::IpNotAllowed);
            }
        }
    }
    if let Some(max) = limits.max_request_header_bytes {
        if header_bytes(seen.method, seen.uri, seen.headers) > max {
            return Err(GatewayError::RequestHeadersTooLarge);
        }
    }
    if let Some(max) = limits.max_request_body_bytes {
        if content_length(seen.headers).is_some_and(|length| length > max) {
            return Err(GatewayError::RequestTooLarge);
        }
    }
    Ok(())
}

/// The declared body length (`Content-Length`), when there is exactly one that is a number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn list(entries: &[&str]) -> IpList {
        let owned: Vec<String> = entries.iter().map(|e| (*e).to_owned()).collect();
        IpList::parse(&owned).expect("valid list")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn lists_take_addresses_and_networks_and_name_the_bad_entries() {
        let l = list(&[
            "10.0.0.0/8",
            "192.0.2.7",
            "2001:db8::/32",
            " 198.51.100.1/24 ",
        ]);
        assert!(l.contains(ip("10.1.2.3")));
        assert!(l.contains(ip("192.0.2.7")));
        assert!(!l.contains(ip("192.0.2.8")));
        assert!(l.contains(ip("2001:db8::99")));
        // A host part in a network is dropped, as the operator meant the network.
        assert!(l.contains(ip("198.51.100.200")));
        // IPv4 clients of a dual-stack listener.
        assert!(l.contains(ip("::ffff:10.9.9.9")));
        let bad = IpList::parse(&["10.0.0.0/33".into(), "ok".into(), "10.0.0.1".into()]);
        assert_eq!(
            bad.map_err(|e| e.iter().map(|b| b.0).collect::<Vec<_>>()),
            Err(vec![0, 1])
        );
    }

    #[test]
    fn the_client_is_the_peer_unless_it_is_a_trusted_proxy() {
        let trusted = list(&["10.0.0.0/8"]);
        let headers = xff(&["203.0.113.9, 10.0.0.5"]);
        // Not behind a trusted proxy: whatever the client wrote is ignored.
        assert_eq!(
            client_ip(ip("198.51.100.4"), &headers, &trusted),
            ip("198.51.100.4")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &headers, &IpList::default()),
            ip("10.0.0.2")
        );
        // Behind two of the operator's proxies: the first untrusted hop from the right.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &headers, &trusted),
            ip("203.0.113.9")
        );
        // A client that forges hops before the real ones is still seen at its own address.
        let forged = xff(&["1.2.3.4", "203.0.113.9"]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &forged, &trusted),
            ip("203.0.113.9")
        );
        // A hop that is not an address ends the walk at the last believed one.
        let broken = xff(&["203.0.113.9, garbage, 10.0.0.7"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &broken, &trusted), ip("10.0.0.7"));
        let ported = xff(&["[2001:db8::1]:443, 192.0.2.1:80"]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &ported, &trusted),
            ip("192.0.2.1")
        );
        // Nothing but trusted hops: the leftmost.
        let inside = xff(&["10.1.1.1, 10.0.0.5"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &inside, &trusted), ip("10.1.1.1"));
    }

    #[test]
    fn policy_refuses_by_address_then_size() {
        let limits = TenantLimits {
            allow_ips: Some(Arc::new(list(&["192.0.2.0/24"]))),
            deny_ips: Some(Arc::new(list(&["192.0.2.66"]))),
            max_request_header_bytes: Some(200),
            max_request_body_bytes: Some(1000),
            ..TenantLimits::default()
        };
        let uri: Uri = "/".parse().expect("uri");
        let trusted = list(&["10.0.0.0/8"]);
        let check_with = |limits: &TenantLimits, peer: &str, pairs: &[(&'static str, String)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(*name, value.parse().expect("value"));
            }
            let seen = Seen {
                peer: Some(ip(peer)),
                trusted_proxies: &trusted,
                method: "GET",
                uri: &uri,
                headers: &headers,
            };
            check(limits, &seen)
        };
        let length = |n: u64| ("content-length", n.to_string());
        assert_eq!(check_with(&limits, "192.0.2.1", &[length(1000)]), Ok(()));
        assert_eq!(
            check_with(&limits, "192.0.2.66", &[]),
            Err(GatewayError::IpNotAllowed)
        );
        assert_eq!(
            check_with(&limits, "198.51.100.1", &[]),
            Err(GatewayError::IpNotAllowed)
        );
        // Behind a trusted proxy, the address it forwarded for is the one judged.
        let forwarded = ("x-forwarded-for", "198.51.100.1".to_owned());
        assert_eq!(
            check_with(&limits, "10.0.0.1", &[forwarded]),
            Err(GatewayError::IpNotAllowed)
        );
        let inside = ("x-forwarded-for", "192.0.2.9".to_owned());
        assert_eq!(check_with(&limits, "10.0.0.1", &[inside]), Ok(()));
        assert_eq!(
            check_with(&limits, "192.0.2.1", &[("x-big", "x".repeat(200))]),
            Err(GatewayError::RequestHeadersTooLarge)
        );
        assert_eq!(
            check_with(&limits, "192.0.2.1", &[length(1001)]),
            Err(GatewayError::RequestTooLarge)
        );
        let none = TenantLimits::default();
        assert_eq!(
            check_with(
                &none,
                "1.1.1.1",
                &[length(1 << 40), ("x-big", "x".repeat(9000))]
            ),
            Ok(())
        );
    }

    #[test]
    fn header_bytes_count_what_http_1_1_sends() {
        let mut h = HeaderMap::new();
        h.insert("host", "a.test".parse().expect("value"));
        let uri: Uri = "/x?y=1".parse().expect("uri");
        // "GET /x?y=1 HTTP/1.1\r\n" + "host: a.test\r\n" + "\r\n"
        assert_eq!(header_bytes("GET", &uri, &h), 21 + 14 + 2);
    }

    #[test]
    fn a_content_length_counts_only_when_it_is_one_number() {
        let mut h = HeaderMap::new();
        assert_eq!(content_length(&h), None);
        h.insert("content-length", "42".parse().expect("value"));
        assert_eq!(content_length(&h), Some(42));
        h.append("content-length", "42".parse().expect("value"));
        assert_eq!(content_length(&h), None);
    }
}
