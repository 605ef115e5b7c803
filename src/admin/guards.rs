//! What the admin API checks before it routes a request: that a browser did not send it, that the
//! Host is not a rebound name, and that it carries the admin token. Each guard takes plain headers,
//! so the rules are tested without a socket.

use std::net::IpAddr;

use http::{header, HeaderMap, Response, StatusCode};
use subtle::ConstantTimeEq;

use super::views::json_error;
use crate::config::model::AdminSettings;
use crate::control::audit::Actor;
use crate::host::{normalize_host, MAX_HOST_LEN};
use crate::identity::api_key::sha256;
use crate::identity::bearer_token;

/// The admin API answers programs, not browsers. A request with an `Origin` header is refused, so
/// that a web page cannot post changes to it. So is a Host other than an IP address or
/// `localhost`, so that a name an attacker rebinds to this address (DNS rebinding) cannot read it.
pub(super) fn refused_client(headers: &HeaderMap) -> Option<Response<Vec<u8>>> {
    if headers.contains_key(header::ORIGIN) {
        return Some(json_error(
            StatusCode::FORBIDDEN,
            "browser_refused",
            "the admin API does not answer browsers (requests with an Origin header)",
        ));
    }
    let host = headers.get(header::HOST)?;
    let mut buf = [0u8; MAX_HOST_LEN];
    let allowed = normalize_host(host.as_bytes(), &mut buf).is_ok_and(|h| {
        h == "localhost"
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok()
    });
    (!allowed).then(|| {
        json_error(
            StatusCode::FORBIDDEN,
            "bad_host",
            "reach the admin API by IP address or localhost",
        )
    })
}

/// Who is asking: the client's address, and the name it gives itself in `X-Actor` (informational,
/// recorded in the audit log as given, at most 64 printable characters).
pub(super) fn actor(headers: &HeaderMap, peer: &str) -> Actor {
    let name = headers
        .get("x-actor")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        })
        .filter(|v| !v.is_empty());
    Actor::Api {
        peer: peer.to_owned(),
        name,
    }
}

/// Whether the request carries the admin token, when one is configured. `/healthz` is always open
/// (load balancers probe it), `/metrics` unless `metrics_require_token`. The presented token is
/// hashed and compared in constant time; the log line names the client, never what it sent.
pub(super) fn unauthorized(
    headers: &HeaderMap,
    peer: &str,
    admin: &AdminSettings,
    path: &str,
) -> Option<Response<Vec<u8>>> {
    let token = admin.token.as_ref()?;
    let open = path == "/healthz" || (path == "/metrics" && !admin.metrics_require_token);
    if open {
        return None;
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let valid = presented.is_some_and(|p| bool::from(sha256(p).ct_eq(&token.sha256)));
    if valid {
        return None;
    }
    tracing::warn!(
        peer,
        path,
        reason = if presented.is_some() {
            "wrong token"
        } else {
            "no token"
        },
        "admin API request refused"
    );
    let mut response = json_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "the admin API needs its bearer token (Authorization: Bearer ...)",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"tenantgate-admin\""),
    );
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::AdminToken;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("header value"));
        }
        map
    }

    fn error_code(response: &Response<Vec<u8>>) -> String {
        let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
        body["error"].as_str().unwrap_or_default().to_owned()
    }

    fn settings(token: Option<&str>, metrics_require_token: bool) -> AdminSettings {
        AdminSettings {
            listen: ([127, 0, 0, 1], 9000).into(),
            audit_log: std::path::PathBuf::new(),
            watch_config: false,
            token: token.map(|t| AdminToken {
                source: "test".to_owned(),
                sha256: sha256(t),
            }),
            metrics_require_token,
            metrics_listen: None,
        }
    }

    #[test]
    fn browsers_and_rebound_names_are_refused_and_addresses_pass() {
        let origin = headers(&[("host", "127.0.0.1:9000"), ("origin", "https://evil.test")]);
        assert_eq!(
            refused_client(&origin).map(|r| error_code(&r)),
            Some("browser_refused".to_owned())
        );
        let rebound = headers(&[("host", "evil.test:9000")]);
        assert_eq!(
            refused_client(&rebound).map(|r| error_code(&r)),
            Some("bad_host".to_owned())
        );
        for host in ["127.0.0.1:9000", "localhost", "[::1]:9000", "LOCALHOST:1"] {
            assert!(
                refused_client(&headers(&[("host", host)])).is_none(),
                "{host}"
            );
        }
        // HTTP/1.0 clients send no Host at all.
        assert!(refused_client(&HeaderMap::new()).is_none());
    }

    #[test]
    fn the_token_is_needed_except_for_healthz_and_open_metrics() {
        let admin = settings(Some("s3cret"), false);
        let right = headers(&[("authorization", "Bearer s3cret")]);
        let wrong = headers(&[("authorization", "Bearer s3cre")]);
        assert!(unauthorized(&right, "peer", &admin, "/status").is_none());
        let refused = unauthorized(&wrong, "peer", &admin, "/status").expect("refused");
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(refused.headers().contains_key(header::WWW_AUTHENTICATE));
        assert!(unauthorized(&HeaderMap::new(), "peer", &admin, "/status").is_some());
        assert!(unauthorized(&HeaderMap::new(), "peer", &admin, "/healthz").is_none());
        assert!(unauthorized(&HeaderMap::new(), "peer", &admin, "/metrics").is_none());
        let closed = settings(Some("s3cret"), true);
        assert!(unauthorized(&HeaderMap::new(), "peer", &closed, "/metrics").is_some());
        // No token configured: everything is open (the listener is loopback by default).
        let open = settings(None, false);
        assert!(unauthorized(&HeaderMap::new(), "peer", &open, "/status").is_none());
    }

    #[test]
    fn the_actor_name_is_printable_and_bounded() {
        let long = "x".repeat(100);
        let Actor::Api { peer, name } = actor(&headers(&[("x-actor", &long)]), "127.0.0.1:1")
        else {
            panic!("not an API actor");
        };
        assert_eq!(peer, "127.0.0.1:1");
        assert_eq!(name.map(|n| n.len()), Some(64));
        let Actor::Api { name, .. } = actor(&headers(&[("x-actor", "\t")]), "p") else {
            panic!("not an API actor");
        };
        assert_eq!(name, None);
    }
}
