//! Admission: from what a request brought (host, connection, credential, path) to the one thing
//! the gateway does with it: proxy it on a route, redirect it to HTTPS, or refuse it with a code.
//!
//! The steps, in the order they run (each may end the request):
//! 1. **host**: a bad host is `bad_host`; a host that names nothing is `unknown_tenant`; a
//!    reserved host with its own pool is served as it is;
//! 2. **connection**: over TLS, a host of another owner than the name the handshake asked for is
//!    `misdirected_request` (one tenant's connection never carries another's requests); over plain
//!    HTTP, a tenant (or the gateway, for shared and reserved hosts) that wants HTTPS gets a redirect.
//!    Both before any credential is read: a client learns nothing about a tenant it has no
//!    connection for, and a token is not checked on a request that goes elsewhere anyway;
//! 3. **credential**: a suspended host tenant is refused before any credential is read. A path that
//!    route rules or route limits guard is refused when it could be read as another
//!    (`ambiguous_path`). A credential is verified when the tenant source is `claim` or
//!    `host_and_claim`, or when a route rule covers the path; whenever one is verified on a tenant's
//!    host it must be that tenant's (`tenant_mismatch`). The credential's tenant may be switched
//!    (`X-Switch-Tenant`) to one its token lists; route rules (global, then the tenant's) each need
//!    one of their roles;
//! 4. **policy**: the tenant's address lists and size limits (`traffic_policy`), before any rate
//!    is counted;
//! 5. **limits**: the tenant's rate limits (this instance's or the fleet's), then its concurrency cap.
//!
//! Nothing here knows about Pingora: the proxy's `request_filter` gathers the inputs and acts on
//! the answer.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Uri};

use crate::config::model::{RouteRule, TenantSource};
use crate::gateway_error::GatewayError;
use crate::identity::{api_key, credential, single_header, AuthMethod, Credential, Principal};
use crate::limits::concurrency::Permit;
use crate::limits::fleet::{decide, Fleet, Verdict};
use crate::limits::gcra::Quota;
use crate::limits::{Credential as LimitKey, Limited};
use crate::path::{covers_prefix, is_ambiguous};
use crate::snapshot::table::{Refused, Route, RoutingTable, Target, Tenant};
use crate::traffic_policy::{self, Seen};

/// What the request came over.
#[derive(Debug, Clone, Copy)]
pub enum Connection<'a> {
    Plain,
    /// With the name the client asked for in its handshake, if it sent one.
    Tls {
        server_name: Option<&'a str>,
    },
}

/// Everything admission looks at, already read from the request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Canonical (`host::normalize_host`); `None`: missing or malformed.
    pub host: Option<&'a str>,
    pub method: &'a str,
    pub headers: &'a HeaderMap,
    pub uri: &'a Uri,
    /// The connection's peer address (`None` on a Unix socket).
    pub peer: Option<IpAddr>,
    pub connection: Connection<'a>,
    /// The request's canary roll, 0 to 99.
    pub roll: u8,
    /// Unix seconds (token and API-key expiry).
    pub now: i64,
}

/// A request the gateway will proxy.
#[derive(Debug)]
pub struct Admitted {
    pub route: Route,
    /// The verified credential, when one was needed.
    pub principal: Option<Arc<Principal>>,
    /// What the request left of its tightest rate limit, for the `RateLimit-*` headers.
    pub quota: Option<Quota>,
    /// Its place in its tenant's in-flight count (`None` for reserved hosts, and before limits).
    pub permit: Option<Permit>,
}

/// A request the gateway answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub error: GatewayError,
    /// The tenant the host belongs to, also when refused (for its metrics and log line).
    pub tenant: Option<usize>,
    /// The rate limit the request did not fit.
    pub limited: Option<Limited>,
}

#[derive(Debug)]
pub enum Admission {
    Proxy(Admitted),
    /// `308` to this HTTPS location.
    Redirect {
        location: HeaderValue,
        tenant: Option<usize>,
    },
    Refuse(Refusal),
}

/// All the steps. `fleet`: where fleet-wide rate limits are counted (`None`: this instance alone).
pub async fn admit(
    table: &RoutingTable,
    fleet: Option<&Fleet>,
    request: &Request<'_>,
) -> Admission {
    let admitted = match identify(table, request) {
        Admission::Proxy(admitted) => admitted,
        other => return other,
    };
    let Some((index, tenant)) = admitted
        .route
        .tenant
        .and_then(|i| Some((i, table.tenant(i)?)))
    else {
        return Admission::Proxy(admitted);
    };
    let seen = Seen {
        peer: request.peer,
        trusted_proxies: table.trusted_proxies(),
        method: request.method,
        uri: request.uri,
        headers: request.headers,
    };
    if let Err(error) = traffic_policy::check(&tenant.limits, &seen) {
        return Admission::Refuse(Refusal {
            error,
            tenant: Some(index),
            limited: None,
        });
    }
    match within_limits(
        fleet,
        tenant,
        admitted.principal.as_deref(),
        request.uri.path(),
    )
    .await
    {
        Ok((quota, permit)) => Admission::Proxy(Admitted {
            quota,
            permit: Some(permit),
            ..admitted
        }),
        Err((error, limited)) => Admission::Refuse(Refusal {
            error,
            tenant: Some(index),
            limited,
        }),
    }
}

/// Steps 1 to 3 (host, connection, credential): whom the request acts for and where it goes,
/// before any limit is counted. `Proxy` here has neither quota nor permit.
pub fn identify(table: &RoutingTable, request: &Request<'_>) -> Admission {
    match route(table, request) {
        Ok(Step::Route(route, principal)) => Admission::Proxy(Admitted {
            route,
            principal,
            quota: None,
            permit: None,
        }),
        Ok(Step::Redirect(location, tenant)) => Admission::Redirect { location, tenant },
        Err(refused) => Admission::Refuse(Refusal {
            error: refused.error,
            tenant: refused.tenant,
            limited: None,
        }),
    }
}

enum Step {
    Route(Route, Option<Arc<Principal>>),
    Redirect(HeaderValue, Option<usize>),
}

fn route(table: &RoutingTable, request: &Request<'_>) -> Result<Step, Refused> {
    // 1. host
    let host = request
        .host
        .ok_or_else(|| refuse(GatewayError::BadHost, None))?;
    let target = table.target(host)?;
    let host_tenant = match target {
        Target::Tenant(i) => Some(i),
        Target::Reserved(_) | Target::Shared => None,
    };

    // 2. connection
    match request.connection {
        Connection::Tls {
            server_name: Some(name),
        } if !table.same_owner(name, host) => {
            return Err(refuse(GatewayError::MisdirectedRequest, host_tenant));
        }
        Connection::Tls { .. } => {}
        Connection::Plain => {
            let location = table
                .https_redirect(host_tenant)
                .and_then(|port| https_location(host, port, request.uri));
            if let Some(location) = location {
                return Ok(Step::Redirect(location, host_tenant));
            }
        }
    }

    // 3. credential
    let path = request.uri.path();
    let source = match target {
        Target::Reserved(i) => return Ok(Step::Route(table.route_reserved(i)?, None)),
        Target::Tenant(i) => {
            let tenant = table.tenant(i).ok_or_else(Refused::unknown)?;
            if let Some(error) = tenant.refusal() {
                return Err(refuse(error, Some(i)));
            }
            guard_path(table, tenant, i, path)?;
            tenant.tenant_source
        }
        Target::Shared => TenantSource::Claim,
    };
    let host_rules = host_tenant.is_some_and(|i| rules_cover(table, i, path));
    if source == TenantSource::Host && !host_rules {
        let route = table.route_tenant(host_tenant.ok_or_else(Refused::unknown)?, request.roll)?;
        return Ok(Step::Route(route, None));
    }

    let headers = request.headers;
    let principal =
        authenticate(table, headers, request.now).map_err(|e| refuse(e, host_tenant))?;
    let switch_to = single_header(
        headers,
        &table.identity().switch_tenant_header,
        GatewayError::TenantSwitchForbidden,
    )
    .map_err(|e| refuse(e, host_tenant))?
    .map(str::trim);
    let acting = principal
        .acting_tenant(switch_to)
        .map_err(|e| refuse(e, host_tenant))?;
    let index = match host_tenant {
        Some(i) => {
            let same = table.tenant(i).is_some_and(|t| t.id.as_str() == acting);
            if !same {
                return Err(refuse(GatewayError::TenantMismatch, Some(i)));
            }
            i
        }
        None => {
            let i = table
                .tenant_index(acting)
                .ok_or_else(|| refuse(GatewayError::UnknownTenant, None))?;
            let tenant = table.tenant(i).ok_or_else(Refused::unknown)?;
            guard_path(table, tenant, i, path)?;
            i
        }
    };
    let missing_role = route_rules(table, index)
        .any(|r| covers_prefix(&r.path_prefix, path) && !principal.has_any_role(&r.roles));
    if missing_role {
        return Err(refuse(GatewayError::MissingRole, Some(index)));
    }
    let route = table.route_tenant(index, request.roll)?;
    Ok(Step::Route(route, Some(principal)))
}

/// The one place an ambiguous path is refused: where a route rule or a route limit guards tenant
/// `i`'s paths, a path that could be read as another one could slip past it.
fn guard_path(table: &RoutingTable, tenant: &Tenant, i: usize, path: &str) -> Result<(), Refused> {
    let guarded = !tenant.limits.routes.is_empty() || route_rules(table, i).next().is_some();
    match guarded && is_ambiguous(path) {
        true => Err(refuse(GatewayError::AmbiguousPath, Some(i))),
        false => Ok(()),
    }
}

/// The global route rules, then tenant `i`'s.
fn route_rules(table: &RoutingTable, i: usize) -> impl Iterator<Item = &RouteRule> {
    let own = table.tenant(i).map_or(&[][..], |t| &t.route_rules[..]);
    table.identity().route_rules.iter().chain(own)
}

fn rules_cover(table: &RoutingTable, i: usize, path: &str) -> bool {
    route_rules(table, i).any(|r| covers_prefix(&r.path_prefix, path))
}

/// Verifies the request's token or API key.
pub fn authenticate(
    table: &RoutingTable,
    headers: &HeaderMap,
    now: i64,
) -> Result<Arc<Principal>, GatewayError> {
    let identity = table.identity();
    match credential(headers, identity.api_key_header.as_ref())? {
        None => Err(GatewayError::MissingCredentials),
        Some(Credential::Jwt(token)) => match &identity.jwt {
            Some(verifier) => verifier.verify(token, now),
            // No [jwt]: no key can verify it.
            None => Err(GatewayError::UnknownKeyId),
        },
        Some(Credential::ApiKey(key)) => {
            let id = api_key::tenant_prefix(key).ok_or(GatewayError::InvalidApiKey)?;
            let tenant = table
                .tenant_index(id)
                .and_then(|i| table.tenant(i))
                .ok_or(GatewayError::InvalidApiKey)?;
            let key_id = tenant.api_keys.check(key, now)?;
            Ok(Arc::new(Principal {
                method: AuthMethod::ApiKey,
                tenant: Some(id.to_owned()),
                tenants: Vec::new(),
                subject: None,
                roles: Vec::new(),
                key_id: Some(key_id.to_owned()),
            }))
        }
    }
}

/// Step 4: the tenant's rate limits, then its concurrency cap. `Ok`: the tightest quota left and
/// the request's in-flight permit; `Err`: the refusal, with the limit it did not fit.
async fn within_limits(
    fleet: Option<&Fleet>,
    tenant: &Tenant,
    principal: Option<&Principal>,
    path: &str,
) -> Result<(Option<Quota>, Permit), (GatewayError, Option<Limited>)> {
    let key = principal.and_then(|p| {
        p.key_id
            .as_deref()
            .map(LimitKey::ApiKey)
            .or(p.subject.as_deref().map(LimitKey::Subject))
    });
    let quota = match decide(fleet, &tenant.limiter, key, path).await {
        Verdict::Admit(quota) => quota,
        Verdict::Limit(limited) => return Err((GatewayError::RateLimited, Some(limited))),
        Verdict::Unavailable => return Err((GatewayError::RateLimiterUnavailable, None)),
    };
    let permit = match &tenant.limits.concurrency {
        None => tenant.in_flight.enter(),
        Some(cap) => tenant
            .in_flight
            .enter_within(cap)
            .await
            .map_err(|_| (GatewayError::TenantOverloaded, None))?,
    };
    Ok((quota, permit))
}

/// Where a plain-HTTP request is redirected: the same host and path over HTTPS. `None` leaves the
/// request on plain HTTP: ACME HTTP-01 challenges (a certificate authority fetches them over HTTP
/// before the domain has a certificate), and request targets that do not make a valid URL.
pub fn https_location(host: &str, port: u16, uri: &Uri) -> Option<HeaderValue> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if uri.path().starts_with("/.well-known/acme-challenge/") || !path.starts_with('/') {
        return None;
    }
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    HeaderValue::from_str(&location).ok()
}

fn refuse(error: GatewayError, tenant: Option<usize>) -> Refused {
    Refused { error, tenant }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_str;

    const CONFIG: &str = r#"
[gateway]
base_domains = ["yourapp.test"]
https_redirect_port = 8443

[jwt]
[[jwt.keys]]
kid = "hs"
alg = "HS256"
secret = "test-secret-0123456789abcdef0123456789"

[[route_rules]]
path_prefix = "/admin"
roles = ["admin"]

[pools.shared]
upstreams = ["127.0.0.1:9001"]

[pools.console]
upstreams = ["127.0.0.1:9002"]

[tenants.acme]
pool = "shared"
domains = ["api.acme-corp.test"]
https_redirect = true

[tenants.initech]
pool = "shared"

[tenants.umbrella]
pool = "shared"
status = "suspended"

[hosts."admin.yourapp.test"]
pool = "console"

[hosts."api.yourapp.test"]
tenant_source = "claim"
"#;

    fn table() -> RoutingTable {
        let config = load_str(Path::new("t.toml"), CONFIG).unwrap_or_else(|e| panic!("{e}"));
        RoutingTable::build(&config.routing, 1, None)
    }

    fn identify_at(
        table: &RoutingTable,
        host: &str,
        path: &str,
        connection: Connection<'_>,
    ) -> Admission {
        let headers = HeaderMap::new();
        let uri: Uri = path.parse().unwrap();
        identify(
            table,
            &Request {
                host: Some(host),
                method: "GET",
                peer: None,
                headers: &headers,
                uri: &uri,
                connection,
                roll: 50,
                now: 0,
            },
        )
    }

    fn error(a: &Admission) -> Option<GatewayError> {
        match a {
            Admission::Refuse(r) => Some(r.error),
            _ => None,
        }
    }

    const TLS_ACME: Connection<'static> = Connection::Tls {
        server_name: Some("acme.yourapp.test"),
    };

    #[test]
    fn the_connection_is_checked_before_the_tenant_and_its_credential() {
        let t = table();
        // acme's connection, a suspended tenant's host: misdirected, not `tenant_suspended`.
        let a = identify_at(&t, "umbrella.yourapp.test", "/", TLS_ACME);
        assert_eq!(error(&a), Some(GatewayError::MisdirectedRequest));
        // acme's connection, the shared API host without a credential: misdirected too.
        let a = identify_at(&t, "api.yourapp.test", "/", TLS_ACME);
        assert_eq!(error(&a), Some(GatewayError::MisdirectedRequest));
        // Its own custom domain on acme's connection is the same owner.
        let a = identify_at(&t, "api.acme-corp.test", "/", TLS_ACME);
        assert!(matches!(a, Admission::Proxy(_)), "{a:?}");
        // The suspended tenant over its own connection.
        let own = Connection::Tls {
            server_name: Some("umbrella.yourapp.test"),
        };
        let a = identify_at(&t, "umbrella.yourapp.test", "/", own);
        assert_eq!(error(&a), Some(GatewayError::TenantSuspended));
    }

    #[test]
    fn plain_http_is_redirected_before_any_credential_is_read() {
        let t = table();
        match identify_at(&t, "acme.yourapp.test", "/admin?x=1", Connection::Plain) {
            Admission::Redirect { location, tenant } => {
                assert_eq!(location, "https://acme.yourapp.test:8443/admin?x=1");
                assert_eq!(tenant, t.tenant_index("acme"));
            }
            other => panic!("{other:?}"),
        }
        // initech does not ask for HTTPS: its admin path needs a token.
        let a = identify_at(&t, "initech.yourapp.test", "/admin", Connection::Plain);
        assert_eq!(error(&a), Some(GatewayError::MissingCredentials));
    }

    #[test]
    fn hosts_come_first_and_reserved_hosts_need_nothing() {
        let t = table();
        let headers = HeaderMap::new();
        let uri: Uri = "/".parse().unwrap();
        let bad = Request {
            host: None,
            method: "GET",
            peer: None,
            headers: &headers,
            uri: &uri,
            connection: TLS_ACME,
            roll: 0,
            now: 0,
        };
        assert_eq!(error(&identify(&t, &bad)), Some(GatewayError::BadHost));
        let a = identify_at(&t, "nobody.yourapp.test", "/", Connection::Plain);
        assert_eq!(error(&a), Some(GatewayError::UnknownTenant));
        let console = Connection::Tls {
            server_name: Some("admin.yourapp.test"),
        };
        match identify_at(&t, "admin.yourapp.test", "/admin", console) {
            Admission::Proxy(a) => assert_eq!(a.route.tenant, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_guarded_path_that_reads_as_another_is_refused_once_the_tenant_is_known() {
        let t = table();
        let own = Connection::Tls {
            server_name: Some("initech.yourapp.test"),
        };
        let a = identify_at(&t, "initech.yourapp.test", "/x/../admin", own);
        assert_eq!(error(&a), Some(GatewayError::AmbiguousPath));
    }

    #[test]
    fn redirects_keep_host_path_and_query_and_name_a_non_default_port() {
        let uri: Uri = "/cart?item=1".parse().unwrap();
        assert_eq!(
            https_location("acme.yourapp.test", 443, &uri).unwrap(),
            "https://acme.yourapp.test/cart?item=1"
        );
        assert_eq!(
            https_location("acme.yourapp.test", 8443, &uri).unwrap(),
            "https://acme.yourapp.test:8443/cart?item=1"
        );
        let absolute: Uri = "http://acme.yourapp.test/x".parse().unwrap();
        assert_eq!(
            https_location("acme.yourapp.test", 443, &absolute).unwrap(),
            "https://acme.yourapp.test/x"
        );
    }

    #[test]
    fn acme_challenges_stay_on_plain_http() {
        let uri: Uri = "/.well-known/acme-challenge/token123".parse().unwrap();
        assert!(https_location("acme.yourapp.test", 443, &uri).is_none());
    }

    #[tokio::test]
    async fn limits_come_last_and_give_a_permit() {
        let t = table();
        let headers = HeaderMap::new();
        let uri: Uri = "/orders".parse().unwrap();
        let own = Connection::Tls {
            server_name: Some("initech.yourapp.test"),
        };
        let request = Request {
            host: Some("initech.yourapp.test"),
            method: "GET",
            peer: None,
            headers: &headers,
            uri: &uri,
            connection: own,
            roll: 0,
            now: 0,
        };
        match admit(&t, None, &request).await {
            Admission::Proxy(a) => assert!(a.permit.is_some()),
            other => panic!("{other:?}"),
        }
    }
}
