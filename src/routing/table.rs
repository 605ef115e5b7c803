//! The routing table: an immutable snapshot of who is served where, built off the request path and
//! read by every request.
//!
//! Lookups cost the same for ten tenants or a million: one hash lookup for exact hosts, then one
//! suffix check per base domain and one hash lookup of the subdomain label.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;
use http::{HeaderName, HeaderValue};

use crate::config::model::RoutingConfig;
use crate::gateway_error::GatewayError;
use crate::tenant::{TenantId, TenantStatus};
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
}

/// A `[hosts]` entry: routed to a pool, but not a tenant (requests carry no tenant header).
#[derive(Debug)]
pub struct ReservedHost {
    pub host: String,
    pub pool: usize,
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
}

/// Why a host is not routed, and the tenant it belongs to when there is one (a suspended tenant's
/// refusals are still that tenant's, in logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub error: GatewayError,
    pub tenant: Option<usize>,
}

impl Refused {
    fn unknown() -> Self {
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
    /// Canonical, longest first.
    base_domains: Box<[Box<str>]>,
    exact: HashMap<Box<str>, Destination, RandomState>,
    by_id: HashMap<Box<str>, usize, RandomState>,
    tenants: Box<[Tenant]>,
    hosts: Box<[ReservedHost]>,
    pools: Box<[Arc<Pool>]>,
}

impl RoutingTable {
    /// Builds the snapshot for `config`. An upstream that `previous` also had (same pool, same
    /// address) keeps its health state.
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
        let pool_index: HashMap<&str, usize> = pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name(), i))
            .collect();
        // Validation guarantees every reference resolves; an unresolved one would be a bug, and
        // falls back to the first pool rather than panicking.
        let pool_of = |name: &str| pool_index.get(name).copied().unwrap_or(0);

        let mut exact = HashMap::with_capacity_and_hasher(
            config.hosts.len()
                + config
                    .tenants
                    .iter()
                    .map(|t| t.domains.len())
                    .sum::<usize>(),
            RandomState::default(),
        );
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
                Tenant {
                    id: t.id.clone(),
                    name: t.name.clone(),
                    status: t.status,
                    pool: pool_of(&t.pool),
                    domains: t.domains.clone(),
                    // A slug is always a valid header value.
                    header_value: HeaderValue::from_str(t.id.as_str())
                        .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
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
                    pool: pool_of(&h.pool),
                }
            })
            .collect();
        RoutingTable {
            generation,
            tenant_header: config.tenant_header.clone(),
            tenant_header_spelling: config.tenant_header_spelling,
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
        }
    }

    /// Where a request for `host` (canonical: see `host::normalize_host`) goes. Exact hosts win over
    /// subdomains of a base domain; only a single label below a base domain is a tenant.
    pub fn resolve(&self, host: &str) -> Result<Route, Refused> {
        let destination = match self.exact.get(host) {
            Some(&d) => d,
            None => Destination::Tenant(self.subdomain_tenant(host).ok_or_else(Refused::unknown)?),
        };
        match destination {
            Destination::Tenant(i) => {
                let tenant = self.tenants.get(i).ok_or_else(Refused::unknown)?;
                match tenant.status {
                    TenantStatus::Active => Ok(Route {
                        tenant: Some(i),
                        pool: tenant.pool,
                    }),
                    TenantStatus::Suspended => Err(Refused {
                        error: GatewayError::TenantSuspended,
                        tenant: Some(i),
                    }),
                }
            }
            Destination::Reserved(i) => {
                let host = self.hosts.get(i).ok_or_else(Refused::unknown)?;
                Ok(Route {
                    tenant: None,
                    pool: host.pool,
                })
            }
        }
    }

    fn subdomain_tenant(&self, host: &str) -> Option<usize> {
        for base in self.base_domains.iter() {
            let Some(label) = host
                .strip_suffix(&**base)
                .and_then(|rest| rest.strip_suffix('.'))
            else {
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

    pub fn base_domains(&self) -> impl Iterator<Item = &str> {
        self.base_domains.iter().map(|d| &**d)
    }

    pub fn tenant(&self, index: usize) -> Option<&Tenant> {
        self.tenants.get(index)
    }

    pub fn tenants(&self) -> &[Tenant] {
        &self.tenants
    }

    pub fn tenant_by_id(&self, id: &str) -> Option<&Tenant> {
        self.tenants.get(*self.by_id.get(id)?)
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
        self.pools.iter().find(|p| p.name() == name)
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
        let route = t.resolve(host).map_err(|r| r.error)?;
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
    fn everything_else_is_unknown_or_suspended() {
        let t = table(CONFIG);
        assert_eq!(
            tenant_of(&t, "globex.yourapp.test"),
            Err(GatewayError::TenantSuspended)
        );
        let refused = t.resolve("globex.yourapp.test").map(|_| ()).unwrap_err();
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
