//! What the gateway reads from a request's headers and what it tells the upstream.
//!
//! The upstream trusts the tenant header, so it is always the gateway's: any client-sent copy is
//! removed, including spellings that some backends fold into the same name (`X_Tenant_ID` becomes
//! `X-Tenant-ID` in CGI-style header maps).

use std::io::Write;
use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use http::Uri;
use pingora::http::RequestHeader;
use pingora::Result;

use crate::host::BadHost;
use crate::identity::{AuthMethod, Principal};
use crate::request_id::{is_valid_request_id, new_request_id, REQUEST_ID_HEADER};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Names as sent on the wire. Pingora copies a header name on every insert unless it is `&'static str`.
pub const X_FORWARDED_FOR_WIRE: &str = "X-Forwarded-For";
pub const X_FORWARDED_PROTO_WIRE: &str = "X-Forwarded-Proto";
pub const X_FORWARDED_HOST_WIRE: &str = "X-Forwarded-Host";
pub const X_REQUEST_ID_WIRE: &str = "X-Request-ID";

/// What the upstream is told about a verified credential. Only the gateway sets them: client copies
/// are always removed, whether or not the request carried a credential.
pub const X_AUTH_SUBJECT_WIRE: &str = "X-Auth-Subject";
pub const X_AUTH_ROLES_WIRE: &str = "X-Auth-Roles";
pub const X_AUTH_METHOD_WIRE: &str = "X-Auth-Method";
pub const X_AUTH_KEY_ID_WIRE: &str = "X-Auth-Key-Id";
const IDENTITY_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("x-auth-subject"),
    HeaderName::from_static("x-auth-roles"),
    HeaderName::from_static("x-auth-method"),
    HeaderName::from_static("x-auth-key-id"),
];

/// The host a request is for: its Host header, or the HTTP/2 `:authority` (the request URI's
/// authority). When both are present they must agree; more than one Host header is refused.
/// Pingora 0.9 already refuses both cases for HTTP/1 before this runs; checking again keeps the
/// routing decision safe whatever the protocol layer lets through.
pub fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Result<&'a [u8], BadHost> {
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(BadHost::Repeated);
    }
    match (host, uri.authority()) {
        (Some(h), Some(a)) if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) => {
            Err(BadHost::Conflicting)
        }
        (Some(h), _) => Ok(h.as_bytes()),
        (None, Some(a)) => Ok(a.as_str().as_bytes()),
        (None, None) => Err(BadHost::Missing),
    }
}

/// The client's request id if it is safe to pass on, else a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let mut ids = headers.get_all(REQUEST_ID_HEADER).iter();
    match (ids.next(), ids.next()) {
        (Some(id), None) if is_valid_request_id(id.as_bytes()) => id.clone(),
        _ => new_request_id(),
    }
}

/// Whether `name` would reach a backend as `tenant_header`: backends that fold header names into
/// CGI-style variables (`HTTP_X_TENANT_ID`) make `-` and `_` the same (names are already lowercase
/// in `HeaderName`).
fn spells_like(name: &HeaderName, tenant_header: &HeaderName) -> bool {
    let fold = |b: u8| if b == b'_' { b'-' } else { b };
    let (a, b) = (name.as_str().as_bytes(), tenant_header.as_str().as_bytes());
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| fold(x) == fold(y))
}

/// What the upstream is told about this request.
pub struct Forwarded<'a> {
    /// For finding client-sent copies.
    pub tenant_header: &'a HeaderName,
    /// For setting it, as the operator spelled it.
    pub tenant_header_spelling: &'static str,
    /// `None` for reserved hosts: the request is for no tenant, so it carries no tenant header.
    pub tenant: Option<&'a HeaderValue>,
    pub client_ip: Option<IpAddr>,
    /// `http` or `https`, as the client connected.
    pub proto: &'static str,
    pub request_id: &'a HeaderValue,
    /// The verified credential, if the request needed one.
    pub identity: Option<&'a Principal>,
    /// Consumed by the gateway; not passed on.
    pub switch_tenant_header: &'a HeaderName,
}

/// Rewrites the upstream request's headers: the tenant and identity headers (client copies removed
/// first), the `X-Forwarded-*` set and `X-Request-ID`.
pub fn forward_headers(req: &mut RequestHeader, f: &Forwarded<'_>) -> Result<()> {
    let protected = |name: &HeaderName| {
        spells_like(name, f.tenant_header)
            || spells_like(name, f.switch_tenant_header)
            || IDENTITY_HEADERS.iter().any(|h| spells_like(name, h))
    };
    while let Some(spoofed) = req.headers.keys().find(|name| protected(name)).cloned() {
        req.remove_header(&spoofed);
    }
    if let Some(tenant) = f.tenant {
        req.insert_header(f.tenant_header_spelling, tenant.clone())?;
    }
    if let Some(identity) = f.identity {
        req.insert_header(X_AUTH_METHOD_WIRE, identity.method.as_str())?;
        if let Some(subject) = identity.subject.as_deref().and_then(header_text) {
            req.insert_header(X_AUTH_SUBJECT_WIRE, subject)?;
        }
        if let Some(key_id) = identity.key_id.as_deref().and_then(header_text) {
            req.insert_header(X_AUTH_KEY_ID_WIRE, key_id)?;
        }
        if identity.method == AuthMethod::Jwt {
            let roles = identity.roles.join(",");
            if let Some(roles) = header_text(&roles) {
                req.insert_header(X_AUTH_ROLES_WIRE, roles)?;
            }
        }
    }

    if let Some(ip) = f.client_ip {
        let xff = append_forwarded_for(req.headers.get_all(X_FORWARDED_FOR).iter(), ip);
        req.insert_header(X_FORWARDED_FOR_WIRE, xff)?;
    }
    req.insert_header(X_FORWARDED_PROTO_WIRE, HeaderValue::from_static(f.proto))?;
    let host = req.headers.get(HOST).cloned().or_else(|| {
        let authority = req.uri.authority()?;
        HeaderValue::from_str(authority.as_str()).ok()
    });
    match host {
        Some(host) => {
            req.insert_header(X_FORWARDED_HOST_WIRE, host)?;
        }
        None => {
            req.remove_header(&X_FORWARDED_HOST);
        }
    }
    req.insert_header(X_REQUEST_ID_WIRE, f.request_id.clone())?;
    Ok(())
}

/// A claim as a header value; `None` for text a header cannot carry (control characters), which is
/// then left out rather than sent altered.
fn header_text(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

/// `previous, values, client` as one header value (several client lines are one list, RFC 9110).
fn append_forwarded_for<'a>(
    previous: impl Iterator<Item = &'a HeaderValue>,
    ip: IpAddr,
) -> HeaderValue {
    let mut out = Vec::with_capacity(64);
    for value in previous {
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b", ");
    }
    match ip.to_canonical() {
        IpAddr::V4(v4) => write_ipv4(&mut out, v4),
        // Writing to a Vec cannot fail.
        ip => drop(write!(out, "{ip}")),
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// `a.b.c.d` without the formatting machinery (every proxied request writes one).
fn write_ipv4(out: &mut Vec<u8>, ip: std::net::Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if octet >= 100 {
            out.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            out.push(b'0' + octet / 10 % 10);
        }
        out.push(b'0' + octet % 10);
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (draft-ietf-httpapi-ratelimit-headers):
/// the limit's burst, what is left of it, and the seconds until it is whole again.
pub fn rate_limit_headers(
    limit: u32,
    remaining: u32,
    reset: std::time::Duration,
) -> [(&'static str, HeaderValue); 3] {
    [
        ("RateLimit-Limit", HeaderValue::from(limit)),
        ("RateLimit-Remaining", HeaderValue::from(remaining)),
        ("RateLimit-Reset", whole_seconds(reset)),
    ]
}

/// Seconds, rounded up, at least 1: a client that waits this long finds what it waits for.
pub fn whole_seconds(d: std::time::Duration) -> HeaderValue {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).expect("request");
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    fn values(r: &RequestHeader, name: &str) -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .collect()
    }

    #[test]
    fn ipv4_is_written_as_display_writes_it() {
        for octets in [
            [0, 0, 0, 0],
            [9, 10, 99, 100],
            [127, 0, 0, 1],
            [255, 254, 201, 110],
        ] {
            let ip = std::net::Ipv4Addr::from(octets);
            let mut out = Vec::new();
            write_ipv4(&mut out, ip);
            assert_eq!(
                String::from_utf8(out).as_deref(),
                Ok(ip.to_string().as_str())
            );
        }
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped());
        let xff = append_forwarded_for(std::iter::empty(), mapped);
        assert_eq!(xff, "10.0.0.7");
    }

    #[test]
    fn host_comes_from_the_header_or_the_authority() {
        let uri: Uri = "/x".parse().expect("uri");
        let h = req(&[("Host", "acme.yourapp.test")]);
        assert_eq!(
            request_host(&h.headers, &uri),
            Ok(&b"acme.yourapp.test"[..])
        );
        let absolute: Uri = "http://acme.yourapp.test/x".parse().expect("uri");
        assert_eq!(
            request_host(&HeaderMap::new(), &absolute),
            Ok(&b"acme.yourapp.test"[..])
        );
        let h = req(&[("Host", "ACME.yourapp.test")]);
        assert_eq!(
            request_host(&h.headers, &absolute),
            Ok(&b"ACME.yourapp.test"[..])
        );
    }

    #[test]
    fn missing_repeated_and_conflicting_hosts_are_refused() {
        let uri: Uri = "/".parse().expect("uri");
        assert_eq!(request_host(&HeaderMap::new(), &uri), Err(BadHost::Missing));
        let two = req(&[("Host", "a.test"), ("Host", "b.test")]);
        assert_eq!(request_host(&two.headers, &uri), Err(BadHost::Repeated));
        let absolute: Uri = "http://a.test/".parse().expect("uri");
        let other = req(&[("Host", "b.test")]);
        assert_eq!(
            request_host(&other.headers, &absolute),
            Err(BadHost::Conflicting)
        );
    }

    #[test]
    fn request_ids_are_kept_only_when_single_and_valid() {
        let kept = req(&[("X-Request-ID", "abc-123")]);
        assert_eq!(request_id(&kept.headers), "abc-123");
        for bad in [
            vec![("X-Request-ID", "has space")],
            vec![("X-Request-ID", "a"), ("X-Request-ID", "b")],
            vec![],
        ] {
            let r = req(&bad);
            let id = request_id(&r.headers);
            assert_eq!(id.len(), 36, "{bad:?} gave {id:?}");
        }
    }

    #[test]
    fn the_tenant_header_is_the_gateways_own() {
        let tenant_header = HeaderName::from_static("x-tenant-id");
        let mut r = req(&[
            ("X-Tenant-ID", "evil"),
            ("x-tenant-id", "evil2"),
            ("X_Tenant_ID", "evil3"),
            ("X-Tenant-IDs", "unrelated"),
            ("Host", "acme.yourapp.test:8080"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-For", "10.0.0.2"),
            ("X-Forwarded-Proto", "https"),
        ]);
        let tenant = HeaderValue::from_static("acme");
        let id = HeaderValue::from_static("rid-1");
        let switch = HeaderName::from_static("x-switch-tenant");
        let f = Forwarded {
            tenant_header: &tenant_header,
            tenant_header_spelling: "X-Tenant-ID",
            tenant: Some(&tenant),
            client_ip: Some("::ffff:192.0.2.7".parse().expect("ip")),
            proto: "http",
            request_id: &id,
            identity: None,
            switch_tenant_header: &switch,
        };
        forward_headers(&mut r, &f).expect("forward");
        assert_eq!(values(&r, "x-tenant-id"), ["acme"]);
        let wire: Vec<String> = r
            .case_header_iter()
            .map(|(n, _)| String::from_utf8_lossy(n.as_slice()).into_owned())
            .collect();
        for name in [
            "X-Tenant-ID",
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "X-Forwarded-Host",
            "X-Request-ID",
        ] {
            assert!(
                wire.iter().any(|w| w == name),
                "{name} not on the wire as spelled: {wire:?}"
            );
        }
        assert_eq!(values(&r, "x_tenant_id"), Vec::<String>::new());
        assert_eq!(values(&r, "x-tenant-ids"), ["unrelated"]);
        assert_eq!(
            values(&r, "x-forwarded-for"),
            ["10.0.0.1, 10.0.0.2, 192.0.2.7"]
        );
        assert_eq!(values(&r, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&r, "x-forwarded-host"), ["acme.yourapp.test:8080"]);
        assert_eq!(values(&r, "x-request-id"), ["rid-1"]);
    }

    #[test]
    fn underscore_and_hyphen_spellings_are_one_name_both_ways() {
        let hyphen = HeaderName::from_static("x-tenant-id");
        let underscore = HeaderName::from_static("x_tenant_id");
        assert!(spells_like(&underscore, &hyphen));
        assert!(spells_like(&hyphen, &underscore));
        assert!(spells_like(
            &HeaderName::from_static("x-tenant_id"),
            &hyphen
        ));
        assert!(!spells_like(
            &HeaderName::from_static("x-tenant-ids"),
            &hyphen
        ));
        assert!(!spells_like(
            &HeaderName::from_static("x-tenant-ix"),
            &hyphen
        ));
    }

    #[test]
    fn reserved_hosts_get_no_tenant_header_at_all() {
        let tenant_header = HeaderName::from_static("x-tenant-id");
        let mut r = req(&[("X-Tenant-ID", "evil"), ("Host", "admin.yourapp.test")]);
        let id = HeaderValue::from_static("rid");
        let switch = HeaderName::from_static("x-switch-tenant");
        let f = Forwarded {
            tenant_header: &tenant_header,
            tenant_header_spelling: "X-Tenant-ID",
            tenant: None,
            client_ip: None,
            proto: "http",
            request_id: &id,
            identity: None,
            switch_tenant_header: &switch,
        };
        forward_headers(&mut r, &f).expect("forward");
        assert!(r.headers.get("x-tenant-id").is_none());
        assert!(r.headers.get("x-forwarded-for").is_none());
    }

    #[test]
    fn identity_headers_are_the_gateways_own() {
        let tenant_header = HeaderName::from_static("x-tenant-id");
        let switch = HeaderName::from_static("x-switch-tenant");
        let mut r = req(&[
            ("X-Auth-Subject", "admin"),
            ("X_Auth_Roles", "admin"),
            ("x-auth-method", "jwt"),
            ("X-Auth-Key-Id", "k"),
            ("X-Switch-Tenant", "globex"),
            ("Host", "api.yourapp.test"),
        ]);
        let id = HeaderValue::from_static("rid-1");
        let tenant = HeaderValue::from_static("acme");
        let principal = Principal {
            method: AuthMethod::Jwt,
            tenant: Some("acme".into()),
            tenants: vec![],
            subject: Some("user-1".into()),
            roles: vec!["admin".into(), "billing".into()],
            key_id: None,
        };
        let f = Forwarded {
            tenant_header: &tenant_header,
            tenant_header_spelling: "X-Tenant-ID",
            tenant: Some(&tenant),
            client_ip: None,
            proto: "https",
            request_id: &id,
            identity: Some(&principal),
            switch_tenant_header: &switch,
        };
        forward_headers(&mut r, &f).expect("forward");
        assert_eq!(values(&r, "x-auth-subject"), ["user-1"]);
        assert_eq!(values(&r, "x-auth-roles"), ["admin,billing"]);
        assert_eq!(values(&r, "x-auth-method"), ["jwt"]);
        assert!(r.headers.get("x-auth-key-id").is_none());
        assert!(r.headers.get("x-switch-tenant").is_none());
        assert!(r.headers.keys().all(|k| !k.as_str().contains('_')));

        // Without a verified credential, client copies are removed and nothing is set.
        let mut r = req(&[("X-Auth-Subject", "admin"), ("X-Auth-Method", "jwt")]);
        let f = Forwarded {
            identity: None,
            ..f
        };
        forward_headers(&mut r, &f).expect("forward");
        assert!(r.headers.get("x-auth-subject").is_none());
        assert!(r.headers.get("x-auth-method").is_none());
    }
}
