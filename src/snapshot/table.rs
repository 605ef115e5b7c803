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

use crate::config::model::{
    MaintenancePage, MetricsConfig, PoolConfig, RouteRule, RoutingConfig, TenantConfig,
    TenantLimits, TenantSource,
};
use crate::config::validate::{Claimed, ExactOwner};
use crate::gateway_error::GatewayError;
use crate::host::label_below;
use crate::identity::api_key::TenantKeys;
use crate::identity::jwks::RemoteKeys;
use crate::identity::jwt::JwtVerifier;
use crate::limits::concurrency::InFlight;
use crate::limits::TenantLimiter;
use crate::metrics::tenant::TenantStats;
use crate::persistent::{ChunkedVec, ShardedMap};
use crate::tenant::{TenantId, TenantStatus};
use crate::tls::store::CertificateStore;
use crate::traffic_policy::IpList;
use crate::upstream::Pool;

/// A tenant as the request path sees it.
#[derive(Debug)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub status: TenantStatus,
    pub pool: usize,
    pub domains: Vec<String>,
    /// Its domains get ACME certificates (when `[acme]` is set).
    pub acme: bool,
    /// What it answers while in maintenance.
    pub maintenance: Arc<MaintenancePage>,
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
    /// Shared with the next table when its `[jwt]` is the same, cache and all.
    pub jwt: Option<Arc<JwtVerifier>>,
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
    pub fn unknown() -> Self {
        Refused {
            error: GatewayError::UnknownTenant,
            tenant: None,
        }
    }
}

#[derive(Debug)]
pub struct RoutingTable {
    generation: u64,
    /// What only a change of settings changes; the tables a change of tenants, pools or hosts
    /// makes share it.
    settings: Arc<Settings>,
    exact: ShardedMap<Box<str>, Destination>,
    by_id: ShardedMap<Box<str>, usize>,
    tenants: ChunkedVec<Arc<Tenant>>,
    hosts: Arc<[ReservedHost]>,
    /// A pool removed by a change leaves its slot empty (`None`): the indices the tenants hold stay
    /// valid. A later pool takes the slot; a full build closes the gaps.
    pools: Arc<[Option<Arc<Pool>>]>,
    pool_index: Arc<HashMap<Box<str>, usize, RandomState>>,
    /// Tenants and reserved hosts routed to each pool (a pool with one tenant and nothing else is
    /// that tenant's dedicated pool).
    pool_users: Arc<[usize]>,
}

#[derive(Debug)]
struct Settings {
    tenant_header: HeaderName,
    tenant_header_spelling: &'static str,
    access_log: bool,
    trusted_proxies: Arc<IpList>,
    /// Canonical, longest first.
    base_domains: Box<[Box<str>]>,
    certificates: CertificateStore,
    /// Where plain-HTTP requests are redirected (`None`: no HTTPS to redirect to).
    redirect_port: Option<u16>,
    /// The gateway's own `https_redirect`; reserved hosts follow it, tenants unless they say
    /// otherwise.
    https_redirect: bool,
    /// `[gateway] hsts` is set: reserved hosts send it, tenants unless they say otherwise.
    hsts_on: bool,
    hsts: Option<HeaderValue>,
    /// For tenants that set none of their own.
    tenant_source: TenantSource,
    identity: IdentityTable,
    metrics: MetricsConfig,
}

/// What a change of the config touches, by name; each is looked up in the new config, and one
/// that is not there any more is removed.
#[derive(Debug, Default, Clone)]
pub struct TableDelta {
    pub tenants: Vec<String>,
    pub pools: Vec<String>,
    /// The reserved hosts changed (they are few: all are laid out again).
    pub hosts: bool,
}

impl TableDelta {
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty() && self.pools.is_empty() && !self.hosts
    }

    /// Whether `old` and `new` differ at most in tenants, pools and reserved hosts: then `apply`
    /// of `between` makes the table `build` would, touching only what changed.
    pub fn settings_unchanged(old: &RoutingConfig, new: &RoutingConfig) -> bool {
        old.base_domains == new.base_domains
            && old.tenant_header == new.tenant_header
            && old.tenant_header_spelling == new.tenant_header_spelling
            && old.access_log == new.access_log
            && old.tls == new.tls
            && old.identity == new.identity
            && old.metrics == new.metrics
    }

    /// Everything that differs between two configs (a scan of both: for changes that do not
    /// already know what they touch).
    pub fn between(old: &RoutingConfig, new: &RoutingConfig) -> TableDelta {
        let mut delta = TableDelta {
            hosts: old.hosts != new.hosts,
            ..TableDelta::default()
        };
        for t in new.tenants.iter() {
            if old.tenants.get(t.id.as_str()) != Some(t) {
                delta.tenants.push(t.id.to_string());
            }
        }
        for t in old.tenants.iter() {
            if new.tenants.get(t.id.as_str()).is_none() {
                delta.tenants.push(t.id.to_string());
            }
        }
        let find = |pools: &[PoolConfig], name: &str| pools.iter().position(|p| p.name == name);
        for p in &new.pools {
            if find(&old.pools, &p.name).and_then(|i| old.pools.get(i)) != Some(p) {
                delta.pools.push(p.name.clone());
            }
        }
        for p in &old.pools {
            if find(&new.pools, &p.name).is_none() {
                delta.pools.push(p.name.clone());
            }
        }
        delta
    }
}

/// Whose traffic a host name carries, to tell whether two names (a connection's SNI, a request's
/// Host) belong to the same tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner(Destination);

impl Settings {
    fn new(config: &RoutingConfig, previous: Option<&RoutingTable>) -> Settings {
        let tls = &config.tls;
        // A tenant may turn HSTS on without the gateway's own settings: it gets the default policy.
        let hsts_value = tls.hsts.clone().unwrap_or_default().header_value();
        Settings {
            tenant_header: config.tenant_header.clone(),
            tenant_header_spelling: config.tenant_header_spelling,
            access_log: config.access_log,
            trusted_proxies: Arc::clone(&config.trusted_proxies),
            base_domains: config
                .base_domains
                .iter()
                .map(|d| Box::from(d.as_str()))
                .collect(),
            certificates: CertificateStore::new(
                tls.certificates.iter().map(|c| (&*c.loaded, c.default)),
            ),
            redirect_port: tls.redirect_port,
            https_redirect: tls.https_redirect,
            hsts_on: tls.hsts.is_some(),
            hsts: HeaderValue::from_str(&hsts_value).ok(),
            tenant_source: config.identity.tenant_source,
            identity: identity_table(config, previous),
            metrics: config.metrics.clone(),
        }
    }
}

impl Tenant {
    /// Why its requests are not served now: suspended, or down for maintenance.
    pub fn refusal(&self) -> Option<GatewayError> {
        match self.status {
            TenantStatus::Active => None,
            TenantStatus::Suspended => Some(GatewayError::TenantSuspended),
            TenantStatus::Maintenance => Some(GatewayError::TenantMaintenance),
        }
    }

    /// The request path's view of `t`. What `old` (the same tenant in the previous table) had is
    /// carried over: rate buckets whose limit is unchanged, the in-flight count, the metric
    /// series, and canary counters of the same canary pool.
    fn build(
        t: &TenantConfig,
        settings: &Settings,
        pool_of: impl Fn(&str) -> usize,
        old: Option<(&Tenant, &RoutingTable)>,
    ) -> Tenant {
        let canary = t.canary.as_ref().map(|c| Canary {
            pool: pool_of(&c.pool),
            percent: c.percent,
            stats: old
                .and_then(|(o, table)| {
                    let canary = o.canary.as_ref()?;
                    (table.pool(canary.pool)?.name() == c.pool).then(|| Arc::clone(&canary.stats))
                })
                .unwrap_or_default(),
        });
        let old = old.map(|(o, _)| o);
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
            acme: t.acme,
            maintenance: Arc::clone(&t.maintenance),
            // A slug is always a valid header value.
            header_value: HeaderValue::from_str(t.id.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            previous_pool: t.previous_pool.as_deref().map(&pool_of),
            canary,
            https_redirect: settings.redirect_port.is_some()
                && t.https_redirect.unwrap_or(settings.https_redirect),
            hsts: t.hsts.unwrap_or(settings.hsts_on),
            tenant_source: t.tenant_source.unwrap_or(settings.tenant_source),
            api_keys: TenantKeys::new(&t.api_keys),
            route_rules: t.route_rules.clone().into_boxed_slice(),
        }
    }
}

/// A pool for `config`, whose upstreams keep the health state they had in `old` (same address).
fn pool_from(config: &PoolConfig, old: Option<&Arc<Pool>>) -> Arc<Pool> {
    Arc::new(Pool::new(config.clone(), |addr| {
        old.and_then(|o| o.upstreams().iter().find(|u| u.addr == addr))
            .map(|u| Arc::clone(&u.state))
    }))
}

impl RoutingTable {
    /// Builds the snapshot for `config`. What `previous` already had is carried over: an upstream
    /// (same pool, same address) keeps its health state, a tenant its buckets, counters and
    /// series, a canary (same tenant, same pool) its counters.
    pub fn build(
        config: &RoutingConfig,
        generation: u64,
        previous: Option<&RoutingTable>,
    ) -> RoutingTable {
        let pools: Arc<[Option<Arc<Pool>>]> = config
            .pools
            .iter()
            .map(|p| Some(pool_from(p, previous.and_then(|t| t.pool_by_name(&p.name)))))
            .collect();
        let mut pool_index = HashMap::with_capacity_and_hasher(pools.len(), RandomState::default());
        for (i, p) in config.pools.iter().enumerate() {
            pool_index.insert(Box::from(p.name.as_str()), i);
        }
        // Validation guarantees every reference resolves; an unresolved one would be a bug, and
        // falls back to the first pool rather than panicking.
        let pool_of = |name: &str| pool_index.get(name).copied().unwrap_or(0);
        let settings = Settings::new(config, previous);
        let exact_hosts = config.hosts.len()
            + config
                .tenants
                .iter()
                .map(|t| t.domains.len())
                .sum::<usize>();
        let mut exact = ShardedMap::with_capacity(exact_hosts);
        let mut by_id = ShardedMap::with_capacity(config.tenants.len());
        let tenants: ChunkedVec<Arc<Tenant>> = config
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| {
                by_id.insert(Box::from(t.id.as_str()), i);
                for domain in &t.domains {
                    exact.insert(Box::from(domain.as_str()), Destination::Tenant(i));
                }
                let old = previous.and_then(|p| Some((p.tenant_by_id(t.id.as_str())?, p)));
                Arc::new(Tenant::build(t, &settings, pool_of, old))
            })
            .collect();
        let hosts = reserved_hosts(config, &mut exact, pool_of);
        let mut pool_users = vec![0; pools.len()];
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
            settings: Arc::new(settings),
            exact,
            by_id,
            tenants,
            hosts,
            pools,
            pool_index: Arc::new(pool_index),
            pool_users: pool_users.into(),
        }
    }

    /// The table for `config`, which differs from the one this table was built from only in what
    /// `delta` names: the tenants, pools and hosts it touches are made anew (carrying their
    /// state, as `build` does), everything else is shared with this table. What a change of a
    /// million-tenant table costs is then what it touches, not the million.
    pub fn apply(
        &self,
        config: &RoutingConfig,
        delta: &TableDelta,
        generation: u64,
    ) -> RoutingTable {
        let mut pools: Vec<Option<Arc<Pool>>> = self.pools.to_vec();
        let mut pool_index = (*self.pool_index).clone();
        for name in &delta.pools {
            match config.pools.iter().find(|p| &p.name == name) {
                Some(p) => {
                    let pool = pool_from(p, self.pool_by_name(name));
                    // Its own slot, else the first empty one, else a new one.
                    let slot = pool_index
                        .get(name.as_str())
                        .copied()
                        .or_else(|| pools.iter().position(Option::is_none));
                    match slot.and_then(|i| Some((i, pools.get_mut(i)?))) {
                        Some((i, free)) => {
                            *free = Some(pool);
                            pool_index.insert(Box::from(name.as_str()), i);
                        }
                        None => {
                            pools.push(Some(pool));
                            pool_index.insert(Box::from(name.as_str()), pools.len() - 1);
                        }
                    }
                }
                None => {
                    if let Some(slot) = pool_index
                        .remove(name.as_str())
                        .and_then(|i| pools.get_mut(i))
                    {
                        *slot = None;
                    }
                }
            }
        }
        let mut pool_users = self.pool_users.to_vec();
        pool_users.resize(pools.len(), 0);
        let pool_of = |name: &str| pool_index.get(name).copied().unwrap_or(0);
        let mut exact = self.exact.clone();
        let mut hosts = Arc::clone(&self.hosts);
        if delta.hosts {
            for (i, h) in self.hosts.iter().enumerate() {
                if exact.get(h.host.as_str()) == Some(&Destination::Reserved(i)) {
                    exact.remove(h.host.as_str());
                }
                if let Some(n) = h.pool.and_then(|p| pool_users.get_mut(p)) {
                    *n = n.saturating_sub(1);
                }
            }
            hosts = reserved_hosts(config, &mut exact, pool_of);
            for pool in hosts.iter().filter_map(|h| h.pool) {
                if let Some(n) = pool_users.get_mut(pool) {
                    *n += 1;
                }
            }
        }
        let mut by_id = self.by_id.clone();
        let mut tenants = self.tenants.clone();
        for id in &delta.tenants {
            let index = by_id.get(id.as_str()).copied();
            let old = index.and_then(|i| tenants.get(i).cloned());
            if let (Some(i), Some(o)) = (index, &old) {
                for domain in &o.domains {
                    if exact.get(domain.as_str()) == Some(&Destination::Tenant(i)) {
                        exact.remove(domain.as_str());
                    }
                }
                if let Some(n) = pool_users.get_mut(o.pool) {
                    *n = n.saturating_sub(1);
                }
            }
            match (config.tenants.get(id), index) {
                (Some(t), _) => {
                    let tenant = Tenant::build(
                        t,
                        &self.settings,
                        pool_of,
                        old.as_deref().map(|o| (o, self)),
                    );
                    let i = match index {
                        Some(i) => {
                            tenants.set(i, Arc::new(tenant));
                            i
                        }
                        None => {
                            tenants.push(Arc::new(tenant));
                            by_id.insert(Box::from(id.as_str()), tenants.len() - 1);
                            tenants.len() - 1
                        }
                    };
                    for domain in &t.domains {
                        exact.insert(Box::from(domain.as_str()), Destination::Tenant(i));
                    }
                    if let Some(n) = pool_users.get_mut(pool_of(&t.pool)) {
                        *n += 1;
                    }
                }
                (None, Some(i)) => {
                    by_id.remove(id.as_str());
                    tenants.swap_remove(i);
                    // The last tenant took the hole: its id and domains point at it again.
                    if let Some(moved) = tenants.get(i) {
                        let from = tenants.len();
                        by_id.insert(Box::from(moved.id.as_str()), i);
                        for domain in &moved.domains {
                            if exact.get(domain.as_str()) == Some(&Destination::Tenant(from)) {
                                exact.insert(Box::from(domain.as_str()), Destination::Tenant(i));
                            }
                        }
                    }
                }
                (None, None) => {}
            }
        }
        RoutingTable {
            generation,
            settings: Arc::clone(&self.settings),
            exact,
            by_id,
            tenants,
            hosts,
            pools: pools.into(),
            pool_index: Arc::new(pool_index),
            pool_users: pool_users.into(),
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
        &self.settings.certificates
    }

    /// The port to redirect a plain-HTTP request of `tenant` (or of a reserved host, `None`) to, when
    /// it is to be redirected.
    pub fn https_redirect(&self, tenant: Option<usize>) -> Option<u16> {
        let wanted = match tenant {
            Some(i) => self.tenants.get(i).is_some_and(|t| t.https_redirect),
            None => self.settings.https_redirect && self.settings.redirect_port.is_some(),
        };
        if wanted {
            self.settings.redirect_port
        } else {
            None
        }
    }

    /// The `Strict-Transport-Security` value for an HTTPS response of `tenant` (or of a reserved
    /// host, `None`).
    pub fn hsts(&self, tenant: Option<usize>) -> Option<&HeaderValue> {
        let wanted = match tenant {
            Some(i) => self.tenants.get(i).is_some_and(|t| t.hsts),
            None => self.settings.hsts_on,
        };
        if wanted {
            self.settings.hsts.as_ref()
        } else {
            None
        }
    }

    /// Where a request for `host` (canonical: see `host::normalize_host`) goes. Exact hosts win over
    /// subdomains of a base domain; only a single label below a base domain is a tenant. `roll`
    /// (0 to 99, random per request) sends a tenant's canary share to its canary pool.
    /// (Host-only: a shared host, whose tenant a credential names, is refused here; requests go
    /// through `admission::admit`.)
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
        if let Some(error) = tenant.refusal() {
            return Err(Refused {
                error,
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

    pub fn route_reserved(&self, i: usize) -> Result<Route, Refused> {
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
        &self.settings.identity
    }

    fn subdomain_tenant(&self, host: &str) -> Option<usize> {
        for base in self.settings.base_domains.iter() {
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
        &self.settings.tenant_header
    }

    /// The tenant header as the operator wrote it, for the wire.
    pub fn tenant_header_spelling(&self) -> &'static str {
        self.settings.tenant_header_spelling
    }

    pub fn access_log(&self) -> bool {
        self.settings.access_log
    }

    /// `[gateway] trusted_proxies`: whose `X-Forwarded-For` names the client.
    pub fn trusted_proxies(&self) -> &IpList {
        &self.settings.trusted_proxies
    }

    pub fn base_domains(&self) -> impl Iterator<Item = &str> {
        self.settings.base_domains.iter().map(|d| &**d)
    }

    pub fn tenant(&self, index: usize) -> Option<&Tenant> {
        self.tenants.get(index).map(|t| &**t)
    }

    pub fn tenants(&self) -> impl ExactSizeIterator<Item = &Tenant> + Clone {
        self.tenants.iter().map(|t| &**t)
    }

    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// Counted on demand, not kept: only the admin API and the metrics ask, never a request.
    pub fn count_with(&self, status: TenantStatus) -> usize {
        self.tenants.iter().filter(|t| t.status == status).count()
    }

    pub fn tenant_by_id(&self, id: &str) -> Option<&Tenant> {
        self.tenant(*self.by_id.get(id)?)
    }

    pub fn tenant_index(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// Which tenants get their own metric series.
    pub fn metrics_config(&self) -> &MetricsConfig {
        &self.settings.metrics
    }

    pub fn hosts(&self) -> &[ReservedHost] {
        &self.hosts
    }

    pub fn pool(&self, index: usize) -> Option<&Arc<Pool>> {
        self.pools.get(index)?.as_ref()
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> + Clone {
        self.pools.iter().flatten()
    }

    pub fn pool_by_name(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pool(*self.pool_index.get(name)?)
    }

    /// A pool routed to by this one tenant and nothing else is its dedicated pool.
    pub fn is_dedicated(&self, tenant: &Tenant) -> bool {
        self.pool_users.get(tenant.pool) == Some(&1)
    }

    /// The keys of a `jwks_url`, kept across tables that name the same URL.
    fn remote_keys(&self, url: &str) -> Option<Arc<RemoteKeys>> {
        let remote = self.settings.identity.jwt.as_ref()?.remote()?;
        (remote.url() == url).then(|| Arc::clone(remote))
    }
}

/// The reserved hosts of `config`, each entered in `exact`.
fn reserved_hosts(
    config: &RoutingConfig,
    exact: &mut ShardedMap<Box<str>, Destination>,
    pool_of: impl Fn(&str) -> usize,
) -> Arc<[ReservedHost]> {
    config
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            exact.insert(Box::from(h.host.as_str()), Destination::Reserved(i));
            ReservedHost {
                host: h.host.clone(),
                pool: h.route.pool().map(&pool_of),
            }
        })
        .collect()
}

/// The table answers, for a change of some of its tenants and hosts, who holds a host name now.
impl Claimed for RoutingTable {
    fn exact_owner(&self, host: &str) -> Option<ExactOwner> {
        Some(match *self.exact.get(host)? {
            Destination::Tenant(i) => ExactOwner::Tenant(self.tenant(i)?.id.to_string()),
            Destination::Reserved(i) => ExactOwner::Host(self.hosts.get(i)?.host.clone()),
        })
    }

    fn has_tenant(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
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
        let kept = previous
            .and_then(|t| t.identity().jwt.as_ref())
            .filter(|v| v.is_built_from(jwt, remote.as_ref()));
        match kept {
            Some(verifier) => Arc::clone(verifier),
            None => Arc::new(JwtVerifier::new(jwt, remote)),
        }
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

    /// Where a host went: tenant, pool, whether the pool is the tenant's dedicated one.
    type Routed = Result<(Option<String>, String, bool), GatewayError>;

    /// Every host a config routes, and some it does not, with where each goes.
    fn routes(t: &RoutingTable, hosts: &[String]) -> Vec<(String, Routed)> {
        hosts
            .iter()
            .map(|h| {
                let routed = t.resolve(h, 99).map_err(|r| r.error).map(|route| {
                    let tenant = route.tenant.and_then(|i| t.tenant(i));
                    let pool = t
                        .pool(route.pool)
                        .map(|p| p.name().to_owned())
                        .unwrap_or_default();
                    let dedicated = tenant.is_some_and(|x| t.is_dedicated(x));
                    (tenant.map(|x| x.id.to_string()), pool, dedicated)
                });
                (h.clone(), routed)
            })
            .collect()
    }

    /// A config of `tenants` tenants over `pools` pools, varied by `seed`: pools, domains, hosts and
    /// suspensions move around from one seed to the next, tenant `t{i}` exists when `keep(i)`.
    fn generated(seed: u64, tenants: usize, pools: usize) -> String {
        let mut x = seed;
        let mut next = move |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        let mut text = String::from("[gateway]\nbase_domains = [\"yourapp.test\"]\n");
        let live: Vec<usize> = (0..pools).filter(|_| next(5) != 0).collect();
        let live = if live.is_empty() { vec![0] } else { live };
        for p in &live {
            text += &format!(
                "[pools.p{p}]\nupstreams = [\"127.0.0.1:{}\"]\n",
                9000 + p * 10 + next(2) as usize
            );
        }
        let mut domains_taken = std::collections::HashSet::new();
        for i in 0..tenants {
            if next(6) == 0 {
                continue;
            }
            let pool = live[next(live.len() as u64) as usize];
            text += &format!("[tenants.t{i}]\npool = \"p{pool}\"\n");
            if next(4) == 0 {
                text += "status = \"suspended\"\n";
            }
            let d = next(tenants as u64 * 2);
            if domains_taken.insert(d) {
                text += &format!("domains = [\"d{d}.custom.test\"]\n");
            }
        }
        for h in 0..3 {
            if next(2) == 0 {
                let pool = live[next(live.len() as u64) as usize];
                text += &format!("[hosts.\"h{h}.yourapp.test\"]\npool = \"p{pool}\"\n");
            }
        }
        text
    }

    #[test]
    fn a_delta_routes_exactly_like_a_full_build() {
        let parse = |text: &str| {
            load_str(Path::new("t.toml"), text)
                .unwrap_or_else(|e| panic!("{e}\n{text}"))
                .routing
        };
        let mut hosts: Vec<String> = (0..40).map(|i| format!("t{i}.yourapp.test")).collect();
        hosts.extend((0..80).map(|d| format!("d{d}.custom.test")));
        hosts.extend((0..3).map(|h| format!("h{h}.yourapp.test")));
        let mut config = parse(&generated(1, 40, 6));
        let mut table = RoutingTable::build(&config, 1, None);
        for seed in 2..60 {
            let next = parse(&generated(seed, 40, 6));
            let delta = TableDelta::between(&config, &next);
            let applied = table.apply(&next, &delta, seed);
            let built = RoutingTable::build(&next, seed, None);
            assert_eq!(
                routes(&applied, &hosts),
                routes(&built, &hosts),
                "seed {seed}"
            );
            assert_eq!(applied.tenant_count(), built.tenant_count());
            let mut a: Vec<&str> = applied.pools().map(|p| p.name()).collect();
            let mut b: Vec<&str> = built.pools().map(|p| p.name()).collect();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "seed {seed}");
            for t in next.tenants.iter() {
                let (x, y) = (
                    applied.tenant_by_id(t.id.as_str()),
                    built.tenant_by_id(t.id.as_str()),
                );
                assert_eq!(x.map(|x| x.status), y.map(|y| y.status));
            }
            config = next;
            table = applied;
        }
    }

    #[test]
    fn a_delta_carries_what_it_does_not_touch_and_copies_little() {
        let text = generated(3, 40, 4);
        let config = load_str(Path::new("t.toml"), &text).expect("valid").routing;
        let table = RoutingTable::build(&config, 1, None);
        let id = config
            .tenants
            .iter()
            .next()
            .expect("a tenant")
            .id
            .to_string();
        let edited = text.replacen(
            &format!("[tenants.{id}]\n"),
            &format!("[tenants.{id}]\nname = \"Renamed\"\n"),
            1,
        );
        let next = load_str(Path::new("t.toml"), &edited)
            .expect("valid")
            .routing;
        let delta = TableDelta::between(&config, &next);
        assert_eq!(delta.tenants, vec![id.clone()]);
        assert!(delta.pools.is_empty() && !delta.hosts);
        let applied = table.apply(&next, &delta, 2);
        assert_eq!(
            applied.tenant_by_id(&id).map(|t| t.name.as_str()),
            Some("Renamed")
        );
        let before = table.tenant_by_id(&id).expect("before");
        let after = applied.tenant_by_id(&id).expect("after");
        assert!(
            Arc::ptr_eq(&before.stats, &after.stats),
            "the tenant keeps its series"
        );
        assert!(Arc::ptr_eq(&before.in_flight, &after.in_flight));
        for other in config.tenants.iter().filter(|t| t.id.as_str() != id) {
            let (x, y) = (
                table.tenant_by_id(other.id.as_str()),
                applied.tenant_by_id(other.id.as_str()),
            );
            assert!(
                std::ptr::eq(x.expect("x"), y.expect("y")),
                "untouched tenants are shared"
            );
        }
        assert!(Arc::ptr_eq(&table.settings, &applied.settings));
    }
}
