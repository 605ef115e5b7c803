//! The routing table: an immutable snapshot of who is served where, built off the request path and
//! read by every request.
//!
//! Lookups cost the same for ten tenants or a million: one hash lookup for exact hosts, then one
//! suffix check per base domain and one hash lookup of the subdomain label.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use foldhash::fast::RandomState;
use http::{HeaderName, HeaderValue};

use super::host::label_below;
use crate::config::model::{MetricsConfig, RouteRule, RoutingConfig, TenantLimits, TenantSource};
use crate::gateway_error::GatewayError;
use crate::identity::api_key::TenantKeys;
use crate::identity::jwks::RemoteKeys;
use crate::identity::jwt::JwtVerifier;
use crate::limits::concurrency::InFlight;
use crate::limits::TenantLimiter;
use crate::metrics::tenant::TenantStats;
use crate::tenant::{TenantId, TenantStatus};
use crate::tls::store::CertificateStore;
use crate::upstream::Pool;

/// A tenant as the request path sees it.
#[derive(Debug)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub status: TenantStatus,
    pub pool: usize,
    pub domains: Vec<String>,
    /// The tenant header's value, built once so requests only clone a shared buffer.
    pub header_value: HeaderValue,
    /// Where `rollback` sends the tenant.
    pub previous_pool: Option<usize>,
    /// A promotion in progress: part of the traffic goes to another pool.
    pub canary: Option<Canary>,
    /// Plain-HTTP requests are redirected to HTTPS (the tenant's setting, else the gateway's).
    pub https_redirect: bool,
    /// HTTPS responses carry `Strict-Transport-Security`.
    pub hsts: bool,
    /// What names the tenant on this tenant's own hosts.
    pub tenant_source: TenantSource,
    pub api_keys: TenantKeys,
    pub route_rules: Box<[RouteRule]>,
    /// As configured: the concurrency cap is read from here.
    pub limits: TenantLimits,
    /// Rate-limit buckets, carried from the previous table where the limit is unchanged.
    pub limiter: TenantLimiter,
    /// Requests in flight, carried for as long as the tenant exists.
    pub in_flight: Arc<InFlight>,
    /// Its metric series, carried for as long as the tenant exists.
    pub stats: Arc<TenantStats>,
}

/// `percent` of a tenant's requests go to `pool`; `stats` counts how they fare, for the promotion's
/// error-rate gate.
#[derive(Debug)]
pub struct Canary {
    pub pool: usize,
    pub percent: u8,
    pub stats: Arc<CanaryStats>,
}

/// Requests sent to a canary pool and how many failed. Atomics: updated on the request path.
#[derive(Debug, Default)]
pub struct CanaryStats {
    requests: AtomicU64,
    failures: AtomicU64,
}

impl CanaryStats {
    pub fn observe(&self, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(requests, failures)` so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

/// A `[hosts]` entry: routed to a pool, but not a tenant (requests carry no tenant header); or a
/// shared host whose requests go where their credential's tenant goes (`pool` is `None`).
#[derive(Debug)]
pub struct ReservedHost {
    pub host: String,
    pub pool: Option<usize>,
}

/// What a host name leads to, before any credential is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Tenant(usize),
    /// A reserved host with its own pool.
    Reserved(usize),
    /// A shared host: the credential names the tenant.
    Shared,
}

/// The table's part of identity: verifiers and rules that apply to every tenant.
#[derive(Debug)]
pub struct IdentityTable {
    pub jwt: Option<JwtVerifier>,
    pub api_key_header: Option<HeaderName>,
    pub switch_tenant_header: HeaderName,
    pub route_rules: Box<[RouteRule]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    Tenant(usize),
    Reserved(usize),
}

/// Where one request goes, as indices into the table it was resolved against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub tenant: Option<usize>,
    pub pool: usize,
    /// The request is part of a promotion's canary traffic (`pool` is the canary pool).
    pub canary: bool,
}

/// Why a host is not routed, and the tenant it belongs to when there is one (a suspended tenant's
/// refusals are still that tenant's, in logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub error: GatewayError,
    pub tenant: Option<usize>,
}

impl Refused {
    pub(super) fn unknown() -> Self {
        Refused {
            error: GatewayError::UnknownTenant,
            tenant: None,
        }
    }
}

#[derive(Debug)]
pub struct RoutingTable {
    generation: u64,
    tenant_header: HeaderName,
    tenant_header_spelling: &'static str,
    access_log: bool,
    /// Canonical, longest first.
    base_domains: Box<[Box<str>]>,
    exact: HashMap<Box<str>, Destination, RandomState>,
    by_id: HashMap<Box<str>, usize, RandomState>,
    tenants: Box<[Tenant]>,
    hosts: Box<[ReservedHost]>,
    pools: Box<[Arc<Pool>]>,
    pool_index: HashMap<Box<str>, usize, RandomState>,
    /// Tenants and reserved hosts routed to each pool (a pool with one tenant and nothing else is
    /// that tenant's dedicated pool).
    pool_users: Box<[usize]>,
    certificates: CertificateStore,
    /// Where plain-HTTP requests are redirected (`None`: no HTTPS to redirect to).
    redirect_port: Option<u16>,
    /// Reserved hosts follow the gateway's settings.
    https_redirect: bool,
    hosts_hsts: bool,
    hsts: Option<HeaderValue>,
    identity: IdentityTable,
    metrics: MetricsConfig,
}

/// Whose traffic a host name carries, to tell whether two names (a connection's SNI, a request's
/// Host) belong to the same tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner(Destination);

impl RoutingTable {
    /// Builds the snapshot for `config`. What `previous` already had is carried over: an upstream
    /// (same pool, same address) keeps its health state, a canary (same tenant, same pool) its
    /// counters.
    pub fn build(
        config: &RoutingConfig,
        generation: u64,
        previous: Option<&RoutingTable>,
    ) -> RoutingTable {
        let pools: Box<[Arc<Pool>]> = config
            .pools
            .iter()
            .map(|p| {
                let old = previous.and_then(|t| t.pool_by_name(&p.name));
                Arc::new(Pool::new(p.clone(), |addr| {
                    old.and_then(|o| o.upstreams().iter().find(|u| u.addr == addr))
                        .map(|u| Arc::clone(&u.state))
                }))
            })
            .collect();
        let mut pool_index = HashMap::with_capacity_and_hasher(pools.len(), RandomState::default());
        for (i, p) in pools.iter().enumerate() {
            pool_index.insert(Box::from(p.name()), i);
        }
        // Validation guarantees every reference resolves; an unresolved one would be a bug, and
        // falls back to the first pool rather than panicking.
        let pool_of = |name: &str| pool_index.get(name).copied().unwrap_or(0);

        let tls = &config.tls;
        // A tenant may turn HSTS on without the gateway's own settings: it gets the default policy.
        let hsts_value = tls.hsts.clone().unwrap_or_default().header_value();
        let hsts_value = HeaderValue::from_str(&hsts_value).ok();
        let exact_hosts = config.hosts.len()
            + config
                .tenants
                .iter()
                .map(|t| t.domains.len())
                .sum::<usize>();
        let mut exact = HashMap::with_capacity_and_hasher(exact_hosts, RandomState::default());
        let mut by_id =
            HashMap::with_capacity_and_hasher(config.tenants.len(), RandomState::default());
        let tenants: Box<[Tenant]> = config
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| {
                by_id.insert(Box::from(t.id.as_str()), i);
                for domain in &t.domains {
                    exact.insert(Box::from(domain.as_str()), Destination::Tenant(i));
                }
                let canary = t.canary.as_ref().map(|c| Canary {
                    pool: pool_of(&c.pool),
                    percent: c.percent,
                    stats: previous
                        .and_then(|old| old.canary_stats(t.id.as_str(), &c.pool))
                        .unwrap_or_default(),
                });
                let old = previous.and_then(|p| p.tenant_by_id(t.id.as_str()));
                Tenant {
                    limits: t.limits.clone(),
                    limiter: TenantLimiter::build(&t.id, &t.limits, old.map(|o| &o.limiter)),
                    in_flight: old.map_or_else(Arc::default, |o| Arc::clone(&o.in_flight)),
                    stats: old.map_or_else(Arc::default, |o| Arc::clone(&o.stats)),
                    id: t.id.clone(),
                    name: t.name.clone(),
                    status: t.status,
                    pool: pool_of(&t.pool),
                    domains: t.domains.clone(),
                    // A slug is always a valid header value.
                    header_value: HeaderValue::from_str(t.id.as_str())
                        .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
                    previous_pool: t.previous_pool.as_deref().map(pool_of),
                    canary,
                    https_redirect: tls.redirect_port.is_some()
                        && t.https_redirect.unwrap_or(tls.https_redirect),
                    hsts: t.hsts.unwrap_or(tls.hsts.is_some()),
                    tenant_source: t.tenant_source.unwrap_or(config.identity.tenant_source),
                    api_keys: TenantKeys::new(&t.api_keys),
                    route_rules: t.route_rules.clone().into_boxed_slice(),
                }
            })
            .collect();
        let hosts: Box<[ReservedHost]> = config
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                exact.insert(Box::from(h.host.as_str()), Destination::Reserved(i));
                ReservedHost {
                    host: h.host.clone(),
                    pool: h.route.pool().map(pool_of),
                }
            })
            .collect();
        let mut pool_users = vec![0; pools.len()].into_boxed_slice();
        for pool in tenants
            .iter()
            .map(|t| t.pool)
            .chain(hosts.iter().filter_map(|h| h.pool))
        {
            if let Some(n) = pool_users.get_mut(pool) {
                *n += 1;
            }
        }
        RoutingTable {
            generation,
            tenant_header: config.tenant_header.clone(),
            tenant_header_spelling: config.tenant_header_spelling,
            access_log: config.access_log,
            base_domains: config
                .base_domains
                .iter()
                .map(|d| Box::from(d.as_str()))
                .collect(),
            exact,
            by_id,
            tenants,
            hosts,
            pools,
            pool_index,
            pool_users,
            certificates: CertificateStore::new(
                tls.certificates.iter().map(|c| (&*c.loaded, c.default)),
            ),
            redirect_port: tls.redirect_port,
            https_redirect: tls.https_redirect && tls.redirect_port.is_some(),
            hosts_hsts: tls.hsts.is_some(),
            hsts: hsts_value,
            identity: identity_table(config, previous),
            metrics: config.metrics.clone(),
        }
    }

    /// Who `host` (canonical) belongs to; `None` when nobody, or a suspended tenant counts too.
    pub fn owner(&self, host: &str) -> Option<Owner> {
        let destination = match self.exact.get(host) {
            Some(&d) => d,
            None => Destination::Tenant(self.subdomain_tenant(host)?),
        };
        Some(Owner(destination))
    }

    /// Whether a request for `host` may use a TLS connection opened for `server_name`: both name
    /// the same tenant (or the same reserved host). Otherwise the request is misdirected, and one
    /// tenant's connection would carry another's traffic.
    pub fn same_owner(&self, server_name: &str, host: &str) -> bool {
        server_name == host
            || self
                .owner(host)
                .is_some_and(|owner| self.owner(server_name) == Some(owner))
    }

    pub fn certificates(&self) -> &CertificateStore {
        &self.certificates
    }

    /// The port to redirect a plain-HTTP request of `tenant` (or of a reserved host, `None`) to, when
    /// it is to be redirected.
    pub fn https_redirect(&self, tenant: Option<usize>) -> Option<u16> {
        let wanted = match tenant {
            Some(i) => self.tenants.get(i).is_some_and(|t| t.https_redirect),
            None => self.https_redirect,
        };
        if wanted {
            self.redirect_port
        } else {
            None
        }
    }

    /// The `Strict-Transport-Security` value for an HTTPS response of `tenant` (or of a reserved
    /// host, `None`).
    pub fn hsts(&self, tenant: Option<usize>) -> Option<&HeaderValue> {
        let wanted = match tenant {
            Some(i) => self.tenants.get(i).is_some_and(|t| t.hsts),
            None => self.hosts_hsts,
        };
        if wanted {
            self.hsts.as_ref()
        } else {
            None
        }
    }

    /// Where a request for `host` (canonical: see `host::normalize_host`) goes. Exact hosts win over
    /// subdomains of a base domain; only a single label below a base domain is a tenant. `roll`
    /// (0 to 99, random per request) sends a tenant's canary share to its canary pool.
    /// (Host-only: a shared host, whose tenant a credential names, is refused here; requests go
    /// through `admit_request`.)
    pub fn resolve(&self, host: &str, roll: u8) -> Result<Route, Refused> {
        match self.target(host)? {
            Target::Tenant(i) => self.route_tenant(i, roll),
            Target::Reserved(i) => self.route_reserved(i),
            Target::Shared => Err(Refused {
                error: GatewayError::MissingCredentials,
                tenant: None,
            }),
        }
    }

    /// What `host` (canonical) names, before any credential is looked at.
    pub fn target(&self, host: &str) -> Result<Target, Refused> {
        let destination = match self.exact.get(host) {
            Some(&d) => d,
            None => Destination::Tenant(self.subdomain_tenant(host).ok_or_else(Refused::unknown)?),
        };
        Ok(match destination {
            Destination::Tenant(i) => Target::Tenant(i),
            Destination::Reserved(i) => match self.hosts.get(i).and_then(|h| h.pool) {
                Some(_) => Target::Reserved(i),
                None => Target::Shared,
            },
        })
    }

    /// Tenant `i`'s route, unless it is suspended; `roll` (0 to 99) sends its canary share to the
    /// canary pool.
    pub fn route_tenant(&self, i: usize, roll: u8) -> Result<Route, Refused> {
        let tenant = self.tenants.get(i).ok_or_else(Refused::unknown)?;
        if tenant.status == TenantStatus::Suspended {
            return Err(Refused {
                error: GatewayError::TenantSuspended,
                tenant: Some(i),
            });
        }
        let (pool, canary) = match &tenant.canary {
            Some(c) if roll < c.percent => (c.pool, true),
            _ => (tenant.pool, false),
        };
        Ok(Route {
            tenant: Some(i),
            pool,
            canary,
        })
    }

    pub(super) fn route_reserved(&self, i: usize) -> Result<Route, Refused> {
        let pool = self
            .hosts
            .get(i)
            .and_then(|h| h.pool)
            .ok_or_else(Refused::unknown)?;
        Ok(Route {
            tenant: None,
            pool,
            canary: false,
        })
    }

    pub fn identity(&self) -> &IdentityTable {
        &self.identity
    }

    fn subdomain_tenant(&self, host: &str) -> Option<usize> {
        for base in self.base_domains.iter() {
            let Some(label) = label_below(host, base) else {
                continue;
            };
            // Base domains are longest first, so a shorter one would only leave a longer label.
            if label.is_empty() || label.contains('.') {
                return None;
            }
            return self.by_id.get(label).copied();
        }
        None
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn tenant_header(&self) -> &HeaderName {
        &self.tenant_header
    }

    /// The tenant header as the operator wrote it, for the wire.
    pub fn tenant_header_spelling(&self) -> &'static str {
        self.tenant_header_spelling
    }

    pub fn access_log(&self) -> bool {
        self.access_log
    }

    pub fn base_domains(&self) -> impl Iterator<Item = &str> {
        self.base_domains.iter().map(|d| &**d)
    }

    pub fn tenant(&self, index: usize) -> Option<&Tenant> {
        self.tenants.get(index)
    }

    pub fn tenants(&self) -> &[Tenant] {
        &self.tenants
    }

    /// Counted on demand, not kept: only the admin API and the metrics ask, never a request.
    pub fn suspended_count(&self) -> usize {
        self.tenants
            .iter()
            .filter(|t| t.status == TenantStatus::Suspended)
            .count()
    }

    pub fn tenant_by_id(&self, id: &str) -> Option<&Tenant> {
        self.tenants.get(*self.by_id.get(id)?)
    }

    pub fn tenant_index(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// Which tenants get their own metric series.
    pub fn metrics_config(&self) -> &MetricsConfig {
        &self.metrics
    }

    pub fn hosts(&self) -> &[ReservedHost] {
        &self.hosts
    }

    pub fn pool(&self, index: usize) -> Option<&Arc<Pool>> {
        self.pools.get(index)
    }

    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    pub fn pool_by_name(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(*self.pool_index.get(name)?)
    }

    /// A pool routed to by this one tenant and nothing else is its dedicated pool.
    pub fn is_dedicated(&self, tenant: &Tenant) -> bool {
        self.pool_users.get(tenant.pool) == Some(&1)
    }

    /// The keys of a `jwks_url`, kept across tables that name the same URL.
    fn remote_keys(&self, url: &str) -> Option<Arc<RemoteKeys>> {
        let remote = self.identity.jwt.as_ref()?.remote()?;
        (remote.url() == url).then(|| Arc::clone(remote))
    }

    fn canary_stats(&self, tenant: &str, pool: &str) -> Option<Arc<CanaryStats>> {
        let canary = self.tenant_by_id(tenant)?.canary.as_ref()?;
        (self.pool(canary.pool)?.name() == pool).then(|| Arc::clone(&canary.stats))
    }
}

fn identity_table(config: &RoutingConfig, previous: Option<&RoutingTable>) -> IdentityTable {
    let identity = &config.identity;
    let jwt = identity.jwt.as_ref().map(|jwt| {
        let remote = jwt.jwks_url.as_ref().map(|u| {
            previous
                .and_then(|t| t.remote_keys(&u.url))
                .filter(|r| r.refresh() == u.refresh)
                .unwrap_or_else(|| Arc::new(RemoteKeys::new(&u.url, u.refresh)))
        });
        JwtVerifier::new(jwt, remote)
    });
    IdentityTable {
        jwt,
        api_key_header: identity.api_key_header.clone(),
        switch_tenant_header: identity.switch_tenant_header.clone(),
        route_rules: identity.route_rules.clone().into_boxed_slice(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_str;

    fn table(toml: &str) -> RoutingTable {
        let config = load_str(Path::new("t.toml"), toml).unwrap_or_else(|e| panic!("{e}"));
        RoutingTable::build(&config.routing, 1, None)
    }

    const CONFIG: &str = r#"
[gateway]
base_domains = ["yourapp.test", "eu.yourapp.test"]

[pools.shared]
upstreams = ["127.0.0.1:9001"]
[pools.acme-dedicated]
upstreams = ["127.0.0.1:9101"]
[pools.admin]
upstreams = ["127.0.0.1:9201"]

[tenants.acme]
pool = "acme-dedicated"
domains = ["api-acme-corp.factory.test"]
[tenants.globex]
pool = "shared"
status = "suspended"
[tenants.eu]
pool = "shared"

[hosts."admin.yourapp.test"]
pool = "admin"
"#;

    fn tenant_of<'t>(
        t: &'t RoutingTable,
        host: &str,
    ) -> Result<(Option<&'t str>, &'t str), GatewayError> {
        let route = t.resolve(host, 99).map_err(|r| r.error)?;
        let tenant = route
            .tenant
            .and_then(|i| t.tenant(i))
            .map(|t| t.id.as_str());
        let pool = t.pool(route.pool).map(|p| p.name()).unwrap_or("?");
        Ok((tenant, pool))
    }

    #[test]
    fn subdomains_custom_domains_and_reserved_hosts_route() {
        let t = table(CONFIG);
        assert_eq!(
            tenant_of(&t, "acme.yourapp.test"),
            Ok((Some("acme"), "acme-dedicated"))
        );
        assert_eq!(
            tenant_of(&t, "api-acme-corp.factory.test"),
            Ok((Some("acme"), "acme-dedicated"))
        );
        assert_eq!(tenant_of(&t, "admin.yourapp.test"), Ok((None, "admin")));
        // The more specific base domain wins: `acme.eu.yourapp.test` is acme, not a deeper name.
        assert_eq!(
            tenant_of(&t, "acme.eu.yourapp.test"),
            Ok((Some("acme"), "acme-dedicated"))
        );
        // `eu.yourapp.test` is itself tenant `eu` under `yourapp.test`.
        assert_eq!(tenant_of(&t, "eu.yourapp.test"), Ok((Some("eu"), "shared")));
    }

    #[test]
    fn a_canary_takes_its_share_by_roll_and_keeps_its_stats_across_rebuilds() {
        let text = CONFIG.replace(
            "[tenants.globex]",
            "[tenants.hooli]\npool = \"shared\"\ncanary = { pool = \"acme-dedicated\", percent = 25 }\n[tenants.globex]",
        );
        let config = load_str(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
        let t = RoutingTable::build(&config.routing, 1, None);
        let pool_at = |t: &RoutingTable, roll| {
            let r = t.resolve("hooli.yourapp.test", roll).expect("routed");
            (t.pool(r.pool).map(|p| p.name().to_owned()), r.canary)
        };
        assert_eq!(pool_at(&t, 0), (Some("acme-dedicated".into()), true));
        assert_eq!(pool_at(&t, 24), (Some("acme-dedicated".into()), true));
        assert_eq!(pool_at(&t, 25), (Some("shared".into()), false));
        assert_eq!(pool_at(&t, 99), (Some("shared".into()), false));

        let stats = |t: &RoutingTable| {
            let hooli = t.tenant_by_id("hooli").expect("hooli");
            Arc::clone(&hooli.canary.as_ref().expect("canary").stats)
        };
        stats(&t).observe(true);
        let rebuilt = RoutingTable::build(&config.routing, 2, Some(&t));
        assert_eq!(stats(&rebuilt).snapshot(), (1, 1));
        assert!(!t.is_dedicated(t.tenant_by_id("hooli").expect("hooli")));
        assert!(t.is_dedicated(t.tenant_by_id("acme").expect("acme")));
    }

    #[test]
    fn everything_else_is_unknown_or_suspended() {
        let t = table(CONFIG);
        assert_eq!(
            tenant_of(&t, "globex.yourapp.test"),
            Err(GatewayError::TenantSuspended)
        );
        let refused = t.resolve("globex.yourapp.test", 0).map(|_| ()).unwrap_err();
        assert_eq!(
            refused
                .tenant
                .and_then(|i| t.tenant(i))
                .map(|t| t.id.as_str()),
            Some("globex")
        );
        for host in [
            "nobody.yourapp.test",
            "yourapp.test",
            "www.acme.yourapp.test",
            "acme.yourapp.test.evil.test",
            "evilacme.yourapp.test",
            "acmeyourapp.test",
            "127.0.0.1",
            "[::1]",
        ] {
            assert_eq!(
                tenant_of(&t, host),
                Err(GatewayError::UnknownTenant),
                "{host}"
            );
        }
    }
}
