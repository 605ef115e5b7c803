//! What the modules below the table read of it, handed to them in their own terms: the metrics'
//! view of a table, and the closures the background services walk the table in use with. Those
//! modules never name `RoutingTable` or `TableHandle`; a change to the table's shape ends here.

use std::sync::Arc;

use rustls::sign::CertifiedKey;

use super::{RoutingTable, TableHandle, Target, Tenant};
use crate::acme::{NameOwner, WantedName, WantedNames};
use crate::config::model::MetricsConfig;
use crate::limits::fleet::EachLimiter;
use crate::metrics::tenant::EachTenantStats;
use crate::metrics::{ObservedTable, ObservedTenant};
use crate::tls::SelectCertificate;
use crate::upstream::health::CurrentPools;

impl ObservedTable for RoutingTable {
    fn generation(&self) -> u64 {
        RoutingTable::generation(self)
    }

    fn metrics_config(&self) -> &MetricsConfig {
        RoutingTable::metrics_config(self)
    }

    fn observed_tenants(&self) -> impl Iterator<Item = ObservedTenant<'_>> {
        self.tenants().map(observed)
    }

    fn observed_tenant(&self, id: &str) -> Option<ObservedTenant<'_>> {
        self.tenant_by_id(id).map(observed)
    }

    fn pool_name(&self, index: usize) -> Option<&str> {
        self.pool(index).map(|p| p.name())
    }

    fn each_upstream(&self, f: &mut dyn FnMut(&str, &str, bool)) {
        for pool in self.pools() {
            for upstream in pool.upstreams() {
                f(pool.name(), &upstream.label, upstream.state.is_healthy());
            }
        }
    }
}

fn observed(t: &Tenant) -> ObservedTenant<'_> {
    ObservedTenant {
        id: t.id.as_str(),
        status: t.status,
        pool: t.pool,
        stats: &t.stats,
        in_flight: t.in_flight.current(),
    }
}

/// Certificates issued at run time, by name.
pub type IssuedLookup = Box<dyn Fn(&str) -> Option<Arc<CertifiedKey>> + Send + Sync>;

/// The shape of `EachLimiter` and `EachTenantStats`: a walk over one part of every tenant.
type EachPart<T> = Box<dyn Fn(&mut dyn FnMut(&T)) + Send + Sync>;

impl TableHandle {
    /// The TLS listener's certificate choice: the table in use at each handshake, with
    /// `issued` (ACME's) asked after the files and before the default.
    pub fn certificate_selector(
        self: &Arc<Self>,
        issued: Option<IssuedLookup>,
    ) -> SelectCertificate {
        let handle = Arc::clone(self);
        match issued {
            None => Box::new(move |name| handle.load().certificates().select(name)),
            Some(issued) => Box::new(move |name| {
                handle
                    .load()
                    .certificates()
                    .select_with(name, |n| issued(n))
            }),
        }
    }

    /// ACME's names: every custom domain of an active tenant that has not opted out and that no
    /// certificate file covers, in the table in use when it is called.
    pub fn acme_wanted(self: &Arc<Self>) -> WantedNames {
        let handle = Arc::clone(self);
        Box::new(move || {
            let table = handle.load();
            let files = table.certificates();
            let mut wanted = Vec::new();
            for t in table.tenants() {
                if !t.status.keeps_certificates() || !t.acme {
                    continue;
                }
                for domain in &t.domains {
                    if !files.covers(domain) {
                        wanted.push(WantedName {
                            name: domain.clone(),
                            tenant: t.id.to_string(),
                        });
                    }
                }
            }
            wanted
        })
    }

    /// For on-demand orders: the active tenant a name (a handshake's SNI) routes to, when it may
    /// have an ACME certificate. A name of no tenant, a reserved or shared host, a suspended
    /// tenant or one with `acme = false`, or a name a file covers, has none.
    pub fn acme_owner(self: &Arc<Self>) -> NameOwner {
        let handle = Arc::clone(self);
        Box::new(move |name| {
            let table = handle.load();
            if table.certificates().covers(name) {
                return None;
            }
            let Ok(Target::Tenant(i)) = table.target(name) else {
                return None;
            };
            let tenant = table.tenant(i)?;
            (tenant.status.keeps_certificates() && tenant.acme).then(|| tenant.id.to_string())
        })
    }

    /// The health checker's pools: those of the table in use when it looks.
    pub fn current_pools(self: &Arc<Self>) -> CurrentPools {
        let handle = Arc::clone(self);
        Box::new(move || handle.load().pools().cloned().collect())
    }

    /// The limits' upkeep and fleet sync: every tenant's limiter in the table in use.
    pub fn each_limiter(self: &Arc<Self>) -> EachLimiter {
        self.each_tenant(|t| &t.limiter)
    }

    /// The request-rate sampler: every tenant's stats in the table in use.
    pub fn each_tenant_stats(self: &Arc<Self>) -> EachTenantStats {
        self.each_tenant(|t| &*t.stats)
    }

    /// Calls its argument with `part` of every tenant of the table in use when it is called.
    fn each_tenant<T: 'static>(self: &Arc<Self>, part: fn(&Tenant) -> &T) -> EachPart<T> {
        let handle = Arc::clone(self);
        Box::new(move |f| {
            for tenant in handle.load().tenants() {
                f(part(tenant));
            }
        })
    }
}
