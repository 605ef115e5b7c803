//! Host names as they arrive in requests and as operators write them in the routing table.
//!
//! Both sides are brought to one canonical form (lowercase, no port, no trailing dot) so that a lookup
//! is a plain string comparison. The request side runs on every request: it validates and lowercases
//! in one pass and allocates nothing (a host that is already lowercase is returned as a borrow).

/// The longest host name DNS allows (253 characters, plus room for one trailing dot).
pub const MAX_HOST_LEN: usize = 254;

/// Scratch space for lowercasing a request's host without allocating.
pub type HostBuf = [u8; MAX_HOST_LEN];

/// Why a request's Host (or HTTP/2 authority) cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadHost {
    #[error("the request has no Host header")]
    Missing,
    #[error("the request has more than one Host header")]
    Repeated,
    #[error("the Host header and the request target name different hosts")]
    Conflicting,
    #[error("the host is empty")]
    Empty,
    #[error("the host is too long")]
    TooLong,
    #[error("the host has a character that is not allowed in a host name")]
    BadCharacter,
    #[error("the host has an empty label")]
    EmptyLabel,
    #[error("the port is not a number between 0 and 65535")]
    BadPort,
}

/// Canonicalises a Host header value or `:authority`: lowercase, port and one trailing dot removed.
///
/// Accepts DNS names and IP literals (`10.0.0.1:8080`, `[::1]:8080`); IP literals never name a tenant
/// but are well-formed requests, so they get 404, not 400.
pub fn normalize_host<'a>(raw: &'a [u8], buf: &'a mut HostBuf) -> Result<&'a str, BadHost> {
    if raw.is_empty() {
        return Err(BadHost::Empty);
    }
    let (name, port) = if raw[0] == b'[' {
        let close = raw
            .iter()
            .position(|&b| b == b']')
            .ok_or(BadHost::BadCharacter)?;
        let literal = &raw[1..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(BadHost::BadCharacter);
        }
        match &raw[close + 1..] {
            [] => (&raw[..=close], None),
            [b':', port @ ..] => (&raw[..=close], Some(port)),
            _ => return Err(BadHost::BadCharacter),
        }
    } else {
        match raw.iter().rposition(|&b| b == b':') {
            Some(colon) => (&raw[..colon], Some(&raw[colon + 1..])),
            None => (raw, None),
        }
    };
    if let Some(port) = port {
        check_port(port)?;
    }
    if name.first() == Some(&b'[') {
        return lowercase(name, buf);
    }
    let name = name.strip_suffix(b".").unwrap_or(name);
    check_dns_name(name)?;
    lowercase(name, buf)
}

fn check_port(port: &[u8]) -> Result<(), BadHost> {
    // An empty port is allowed by RFC 3986 (`host:`); anything else must be a u16.
    if port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return Err(BadHost::BadPort);
    }
    let value = port
        .iter()
        .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    if value > u32::from(u16::MAX) {
        return Err(BadHost::BadPort);
    }
    Ok(())
}

/// Checks letters, digits, hyphens and non-empty dot-separated labels of at most 63 bytes.
fn check_dns_name(name: &[u8]) -> Result<(), BadHost> {
    if name.is_empty() {
        return Err(BadHost::Empty);
    }
    if name.len() > MAX_HOST_LEN - 1 {
        return Err(BadHost::TooLong);
    }
    let mut label_len = 0usize;
    for &b in name {
        match b {
            b'.' => {
                if label_len == 0 {
                    return Err(BadHost::EmptyLabel);
                }
                label_len = 0;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' => {
                label_len += 1;
                if label_len > 63 {
                    return Err(BadHost::TooLong);
                }
            }
            _ => return Err(BadHost::BadCharacter),
        }
    }
    if label_len == 0 {
        return Err(BadHost::EmptyLabel);
    }
    Ok(())
}

fn lowercase<'a>(name: &'a [u8], buf: &'a mut HostBuf) -> Result<&'a str, BadHost> {
    let ascii = if name.iter().any(u8::is_ascii_uppercase) {
        let out = buf.get_mut(..name.len()).ok_or(BadHost::TooLong)?;
        for (o, b) in out.iter_mut().zip(name) {
            *o = b.to_ascii_lowercase();
        }
        &*out
    } else {
        name
    };
    std::str::from_utf8(ascii).map_err(|_| BadHost::BadCharacter)
}

/// Why a host name written in the config is not usable as a routing key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDomain {
    #[error("is not a host name: {0}")]
    NotAHostName(BadHost),
    #[error("must not carry a port (routing ignores the port)")]
    HasPort,
    #[error(
        "wildcards are not supported here; subdomains of `base_domains` already map to tenants"
    )]
    Wildcard,
}

/// Brings a host name from the config to the form requests are compared in (lowercase, no trailing
/// dot), or says why it can never match a request.
/// What stands before `.base` in `host` (`acme` for `acme.yourapp.test` under `yourapp.test`), or
/// `None` when `host` is not below `base`. The label may be empty or hold dots; callers decide.
pub fn label_below<'a>(host: &'a str, base: &str) -> Option<&'a str> {
    host.strip_suffix(base)?.strip_suffix('.')
}

pub fn canonical_domain(name: &str) -> Result<String, InvalidDomain> {
    if name.starts_with("*.") {
        return Err(InvalidDomain::Wildcard);
    }
    if name.contains(':') {
        return Err(InvalidDomain::HasPort);
    }
    let bytes = name.as_bytes();
    let bytes = bytes.strip_suffix(b".").unwrap_or(bytes);
    check_dns_name(bytes).map_err(InvalidDomain::NotAHostName)?;
    Ok(name.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, BadHost> {
        let mut buf = [0u8; MAX_HOST_LEN];
        normalize_host(raw.as_bytes(), &mut buf).map(str::to_owned)
    }

    #[test]
    fn lowercases_and_drops_port_and_trailing_dot() {
        assert_eq!(norm("acme.yourapp.test"), Ok("acme.yourapp.test".into()));
        assert_eq!(norm("ACME.YourApp.Test"), Ok("acme.yourapp.test".into()));
        assert_eq!(
            norm("acme.yourapp.test:8080"),
            Ok("acme.yourapp.test".into())
        );
        assert_eq!(
            norm("acme.yourapp.test.:443"),
            Ok("acme.yourapp.test".into())
        );
        assert_eq!(norm("acme.yourapp.test."), Ok("acme.yourapp.test".into()));
        assert_eq!(norm("localhost:"), Ok("localhost".into()));
    }

    #[test]
    fn ip_literals_are_well_formed_hosts() {
        assert_eq!(norm("127.0.0.1:8080"), Ok("127.0.0.1".into()));
        assert_eq!(norm("[::1]:8080"), Ok("[::1]".into()));
        assert_eq!(norm("[FE80::1]"), Ok("[fe80::1]".into()));
    }

    #[test]
    fn malformed_hosts_are_refused() {
        assert_eq!(norm(""), Err(BadHost::Empty));
        assert_eq!(norm(":80"), Err(BadHost::Empty));
        assert_eq!(norm("."), Err(BadHost::Empty));
        assert_eq!(norm("acme..test"), Err(BadHost::EmptyLabel));
        assert_eq!(norm(".acme.test"), Err(BadHost::EmptyLabel));
        assert_eq!(norm("acme.test.."), Err(BadHost::EmptyLabel));
        assert_eq!(norm("acme test"), Err(BadHost::BadCharacter));
        assert_eq!(norm("acme_corp.test"), Err(BadHost::BadCharacter));
        assert_eq!(norm("user@acme.test"), Err(BadHost::BadCharacter));
        assert_eq!(norm("acme.test/x"), Err(BadHost::BadCharacter));
        assert_eq!(norm("acme.test:http"), Err(BadHost::BadPort));
        assert_eq!(norm("acme.test:65536"), Err(BadHost::BadPort));
        assert_eq!(norm("acme.test:123456"), Err(BadHost::BadPort));
        assert_eq!(norm("[::1"), Err(BadHost::BadCharacter));
        assert_eq!(norm("[]"), Err(BadHost::BadCharacter));
        assert_eq!(norm("[::1]x"), Err(BadHost::BadCharacter));
        assert_eq!(
            norm(&format!("{}.test", "a".repeat(64))),
            Err(BadHost::TooLong)
        );
        assert_eq!(norm(&"a.".repeat(128)), Err(BadHost::TooLong));
    }

    #[test]
    fn longest_legal_name_fits_the_buffer() {
        let name = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "D".repeat(61)
        );
        assert_eq!(name.len(), 253);
        assert_eq!(norm(&format!("{name}.")), Ok(name.to_ascii_lowercase()));
    }

    #[test]
    fn config_domains_are_canonicalised_or_refused() {
        assert_eq!(
            canonical_domain("API.Acme.Test."),
            Ok("api.acme.test".into())
        );
        assert_eq!(
            canonical_domain("*.acme.test"),
            Err(InvalidDomain::Wildcard)
        );
        assert_eq!(
            canonical_domain("acme.test:443"),
            Err(InvalidDomain::HasPort)
        );
        assert_eq!(
            canonical_domain("acme..test"),
            Err(InvalidDomain::NotAHostName(BadHost::EmptyLabel))
        );
    }
}
