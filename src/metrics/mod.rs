//! The gateway's Prometheus metrics.
//!
//! Architecture invariant: the request path never looks a metric up by label (that takes a lock in
//! the prometheus crate). Every series it touches is resolved once, here, into a handle that is only
//! an atomic add.

pub mod names;
pub mod tenant;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use crate::config::model::{CertificateConfig, FleetMode, MetricsConfig, OnRedisError};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::gateway_error::GatewayError;
use crate::limits::Scope;
use crate::tenant::TenantStatus;
use tenant::{RequestRecord, TenantSeries, TenantStats, STATUS_CLASSES};

/// What the metrics read of a routing table. The table sits above metrics and implements this, so
/// that metrics need not know its shape.
pub trait ObservedTable {
    fn generation(&self) -> u64;
    fn metrics_config(&self) -> &MetricsConfig;
    /// Every tenant, in the table's order (the guard's tie-break).
    fn observed_tenants(&self) -> impl Iterator<Item = ObservedTenant<'_>>;
    fn observed_tenant(&self, id: &str) -> Option<ObservedTenant<'_>>;
    /// The name of the pool in slot `index` of the table.
    fn pool_name(&self, index: usize) -> Option<&str>;
    /// Every upstream of every pool: the pool's name, the upstream's label, whether it is healthy.
    fn each_upstream(&self, f: &mut dyn FnMut(&str, &str, bool));
}

/// A tenant as the metrics see it.
pub struct ObservedTenant<'a> {
    pub id: &'a str,
    pub status: TenantStatus,
    /// The slot of its pool in the table (counted without hashing names).
    pub pool: usize,
    pub stats: &'a Arc<TenantStats>,
    pub in_flight: u32,
}

/// `direction` values of the WebSocket byte counter, in `TenantSeries::websocket_bytes` order.
const DIRECTIONS: [&str; 2] = ["in", "out"];

const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A contender takes a labelled tenant's place when its smoothed request count is more than this
/// many times the tenant's (hysteresis: two tenants of similar traffic do not swap at every scrape).
const EVICTION_FACTOR: u64 = 2;

/// The per-tenant metric families; a [`TenantSeries`] is one label value's handles into them.
struct TenantFamilies {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream: HistogramVec,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
    limited: IntCounterVec,
    overloaded: IntCounterVec,
    upstream_errors: IntCounterVec,
    in_flight: IntGaugeVec,
    websocket_bytes: IntCounterVec,
    websockets: IntGaugeVec,
}

impl TenantFamilies {
    fn series(&self, tenant: &str) -> TenantSeries {
        TenantSeries {
            requests: STATUS_CLASSES.map(|class| self.requests.with_label_values(&[tenant, class])),
            duration: self.duration.with_label_values(&[tenant]),
            upstream: self.upstream.with_label_values(&[tenant]),
            bytes_in: self.bytes_in.with_label_values(&[tenant]),
            bytes_out: self.bytes_out.with_label_values(&[tenant]),
            limited: Scope::ALL.map(|s| self.limited.with_label_values(&[tenant, s.as_str()])),
            overloaded: self.overloaded.with_label_values(&[tenant]),
            upstream_errors: self.upstream_errors.with_label_values(&[tenant]),
            websocket_bytes: DIRECTIONS
                .map(|d| self.websocket_bytes.with_label_values(&[tenant, d])),
        }
    }

    fn remove(&self, tenant: &str) {
        for class in STATUS_CLASSES {
            let _ = self.requests.remove_label_values(&[tenant, class]);
        }
        for scope in Scope::ALL {
            let _ = self.limited.remove_label_values(&[tenant, scope.as_str()]);
        }
        let _ = self.duration.remove_label_values(&[tenant]);
        let _ = self.upstream.remove_label_values(&[tenant]);
        let _ = self.bytes_in.remove_label_values(&[tenant]);
        let _ = self.bytes_out.remove_label_values(&[tenant]);
        let _ = self.overloaded.remove_label_values(&[tenant]);
        let _ = self.upstream_errors.remove_label_values(&[tenant]);
        let _ = self.in_flight.remove_label_values(&[tenant]);
        for direction in DIRECTIONS {
            let _ = self
                .websocket_bytes
                .remove_label_values(&[tenant, direction]);
        }
        let _ = self.websockets.remove_label_values(&[tenant]);
    }
}

pub struct Metrics {
    registry: Registry,
    families: TenantFamilies,
    /// Tenants without their own series.
    other: TenantSeries,
    /// Requests that matched no tenant.
    none: TenantSeries,
    /// Tenants with their own series, by id: the guard's state. Touched at publish and scrape only.
    labelled: Mutex<HashMap<String, Arc<TenantStats>>>,
    tenant_series: IntGauge,
    errors: [IntCounter; GatewayError::ALL.len()],
    retries: IntCounter,
    retries_refused: IntCounterVec,
    ejections: IntCounterVec,
    upstream_healthy: IntGaugeVec,
    generation: IntGauge,
    tenants: IntGaugeVec,
    certificate_expiry: IntGaugeVec,
    /// The expiry series of file certificates and of ACME ones, set apart and shown together.
    expiries: Mutex<CertificateExpiries>,
    acme_orders: IntCounterVec,
    reloads: IntCounterVec,
    reload_duration: Histogram,
    /// Per mode; a series appears with the first call, so a gateway without Redis shows none.
    redis_up_vec: IntGaugeVec,
    redis_up: [std::sync::OnceLock<IntGauge>; 2],
    redis_errors: [IntCounter; 2],
    fallbacks: [IntCounter; 2],
    /// Registered with the first call, so a gateway without a store shows none.
    store: std::sync::OnceLock<StoreGauges>,
}

#[derive(Default)]
struct CertificateExpiries {
    /// `cert` label, `name` label, notAfter.
    files: Vec<(String, String, i64)>,
    acme: Vec<(String, i64)>,
}

/// An ACME certificate as the expiry gauge shows it.
pub struct AcmeExpiry<'a> {
    pub name: &'a str,
    pub tenant: &'a str,
    pub not_after: i64,
}

struct StoreGauges {
    up: IntGauge,
    revision: IntGauge,
    seen: IntGauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    pub fn get() -> &'static Metrics {
        &METRICS
    }

    fn new() -> Metrics {
        use names::*;
        let registry = Registry::new();
        // Registration fails only for a duplicate name in this one registry: a bug caught by tests.
        let register = |c: Box<dyn prometheus::core::Collector>| {
            if let Err(e) = registry.register(c) {
                tracing::error!(error = %e, "metric registration failed");
            }
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let v = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition");
            register(Box::new(v.clone()));
            v
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let v =
                IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
            register(Box::new(v.clone()));
            v
        };
        let histogram_vec = |name: &str, help: &str, buckets: &[f64]| {
            let v = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &[LABEL_TENANT],
            )
            .expect("static metric definition");
            register(Box::new(v.clone()));
            v
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definition");
            register(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition");
            register(Box::new(g.clone()));
            g
        };

        let families = TenantFamilies {
            requests: counter_vec(
                REQUESTS_TOTAL,
                "Requests answered, by tenant and status class",
                &[LABEL_TENANT, LABEL_STATUS_CLASS],
            ),
            duration: histogram_vec(
                REQUEST_DURATION_SECONDS,
                "Time from request start to the end of the response, by tenant",
                &REQUEST_BUCKETS,
            ),
            upstream: histogram_vec(
                UPSTREAM_RESPONSE_SECONDS,
                "Time from choosing an upstream to its response header, by tenant",
                &REQUEST_BUCKETS,
            ),
            bytes_in: counter_vec(
                REQUEST_BYTES_TOTAL,
                "Request body bytes received from clients, by tenant",
                &[LABEL_TENANT],
            ),
            bytes_out: counter_vec(
                RESPONSE_BYTES_TOTAL,
                "Response body bytes sent to clients, by tenant",
                &[LABEL_TENANT],
            ),
            limited: counter_vec(
                RATE_LIMITED_TOTAL,
                "Requests refused with 429, by tenant and the limit they did not fit",
                &[LABEL_TENANT, LABEL_SCOPE],
            ),
            overloaded: counter_vec(
                OVERLOADED_TOTAL,
                "Requests refused with 503 tenant_overloaded (concurrency cap), by tenant",
                &[LABEL_TENANT],
            ),
            upstream_errors: counter_vec(
                UPSTREAM_ERRORS_TOTAL,
                "Failed upstream connections and exchanges, by tenant",
                &[LABEL_TENANT],
            ),
            in_flight: gauge_vec(
                IN_FLIGHT_REQUESTS,
                "Requests in flight, by tenant",
                &[LABEL_TENANT],
            ),
            websocket_bytes: counter_vec(
                WEBSOCKET_BYTES_TOTAL,
                "Bytes of upgraded (WebSocket) connections, by tenant and direction (in: from clients)",
                &[LABEL_TENANT, LABEL_DIRECTION],
            ),
            websockets: gauge_vec(
                WEBSOCKET_CONNECTIONS,
                "Upgraded (WebSocket) connections open, by tenant",
                &[LABEL_TENANT],
            ),
        };
        let other = families.series(OTHER_TENANTS);
        let none = families.series(NO_TENANT);
        let tenant_series = gauge(
            TENANT_SERIES,
            "Tenants with their own label values (the rest are summed under tenant=\"_other\")",
        );

        let errors_vec = counter_vec(
            GATEWAY_ERRORS_TOTAL,
            "Responses the gateway made itself, by error code",
            &[LABEL_ERROR],
        );
        let errors = GatewayError::ALL.map(|e| errors_vec.with_label_values(&[e.code()]));
        let retries = counter(
            UPSTREAM_RETRIES_TOTAL,
            "Requests sent to another upstream after a failed connection, a broken one or a 5xx (as the pool's retries say)",
        );
        let retries_refused = counter_vec(
            UPSTREAM_RETRIES_REFUSED_TOTAL,
            "Retries a pool did not make: the request had its attempts, or the pool's retry budget was spent",
            &[LABEL_POOL, LABEL_REASON],
        );
        let ejections = counter_vec(
            UPSTREAM_EJECTIONS_TOTAL,
            "Times an upstream was skipped for fail_timeout after a failed connection",
            &[LABEL_POOL, LABEL_UPSTREAM],
        );
        let upstream_healthy = gauge_vec(
            UPSTREAM_HEALTHY,
            "1 when the upstream passes its active health check",
            &[LABEL_POOL, LABEL_UPSTREAM],
        );
        let generation = gauge(CONFIG_GENERATION, "Generation of the routing table in use");
        let tenants = gauge_vec(
            TENANTS,
            "Tenants in the routing table, by status and pool",
            &[LABEL_STATUS, LABEL_POOL],
        );
        let certificate_expiry = gauge_vec(
            CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS,
            "When each served certificate expires (notAfter, Unix seconds); alert on it minus time()",
            &[LABEL_CERT, LABEL_NAME],
        );
        let acme_orders = counter_vec(
            ACME_ORDERS_TOTAL,
            "ACME orders finished by this instance, by outcome: issued, failed, over_budget (refused by [acme] max_per_hour or max_per_tenant_per_day)",
            &[LABEL_OUTCOME],
        );
        let build = gauge_vec(
            BUILD_INFO,
            "Always 1; labelled with the version",
            &[LABEL_VERSION],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let reloads = counter_vec(
            RELOADS_TOTAL,
            "Changes to the routing table (file reloads and admin API changes), by result: applied, unchanged, or the refusal's error code",
            &[LABEL_RESULT],
        );
        let reload_duration = Histogram::with_opts(
            HistogramOpts::new(
                RELOAD_DURATION_SECONDS,
                "Time to read, validate, build and swap in a changed routing table",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("static metric definition");
        register(Box::new(reload_duration.clone()));
        let redis_up_vec = gauge_vec(
            LIMITER_REDIS_UP,
            "1 when the last call to the rate-limit Redis succeeded, by mode (only with [limits.redis])",
            &[LABEL_MODE],
        );
        let redis_errors_vec = counter_vec(
            LIMITER_REDIS_ERRORS_TOTAL,
            "Failed or timed-out calls to the rate-limit Redis, by mode",
            &[LABEL_MODE],
        );
        let redis_errors = [FleetMode::Sync, FleetMode::Exact]
            .map(|m| redis_errors_vec.with_label_values(&[m.as_str()]));
        let fallbacks_vec = counter_vec(
            LIMITER_FALLBACKS_TOTAL,
            "Rate-limit decisions made by the on_error policy because Redis was unavailable",
            &[LABEL_POLICY],
        );
        let fallbacks = [OnRedisError::Local, OnRedisError::Deny]
            .map(|p| fallbacks_vec.with_label_values(&[p.as_str()]));

        Metrics {
            registry,
            families,
            other,
            none,
            labelled: Mutex::new(HashMap::new()),
            tenant_series,
            errors,
            retries,
            retries_refused,
            ejections,
            upstream_healthy,
            generation,
            tenants,
            certificate_expiry,
            expiries: Mutex::new(CertificateExpiries::default()),
            acme_orders,
            reloads,
            reload_duration,
            redis_up_vec,
            redis_up: Default::default(),
            redis_errors,
            fallbacks,
            store: std::sync::OnceLock::new(),
        }
    }

    /// Whether the store answers, and the revisions this instance has seen and serves.
    pub fn observe_store(&self, up: bool, seen: i64) {
        let gauges = self.store.get_or_init(|| {
            let gauge = |name: &str, help: &str| {
                let g = IntGauge::new(name, help).expect("static metric definition");
                if let Err(e) = self.registry.register(Box::new(g.clone())) {
                    tracing::error!(error = %e, "metric registration failed");
                }
                g
            };
            StoreGauges {
                up: gauge(
                    names::STORE_UP,
                    "1 while this instance reaches the fleet's store (etcd)",
                ),
                revision: gauge(
                    names::STORE_REVISION,
                    "The store revision this instance's routing table is, what it serves",
                ),
                seen: gauge(
                    names::STORE_SEEN_REVISION,
                    "The last store revision this instance has taken in",
                ),
            }
        });
        gauges.up.set(i64::from(up));
        gauges.seen.set(seen);
        gauges.revision.set(self.generation.get());
    }

    /// Counts a finished request of `tenant` (`None`: it matched no tenant).
    pub fn observe_request(&self, tenant: Option<&TenantStats>, record: &RequestRecord) {
        match tenant {
            Some(stats) => stats.observe(record, &self.other),
            None => self.none.observe(record),
        }
    }

    /// A call to the rate-limit Redis, and whether it succeeded.
    pub fn observe_redis(&self, ok: bool, mode: FleetMode) {
        self.redis_up[mode as usize]
            .get_or_init(|| self.redis_up_vec.with_label_values(&[mode.as_str()]))
            .set(i64::from(ok));
        if !ok {
            self.redis_errors[mode as usize].inc();
        }
    }

    pub fn observe_fallback(&self, policy: OnRedisError) {
        self.fallbacks[policy as usize].inc();
    }

    /// The cardinality guard: gives the allow-listed tenants and then the busiest their own series,
    /// up to the table's limit, and takes them from tenants that left the table.
    pub fn assign_tenant_series(&self, table: &impl ObservedTable) {
        let mut labelled = match self.labelled.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        let families = &self.families;
        let forget = |id: &str, stats: &TenantStats| {
            stats.series.store(None);
            families.remove(id);
        };
        labelled.retain(|id, stats| match table.observed_tenant(id) {
            Some(t) if Arc::ptr_eq(t.stats, stats) => true,
            _ => {
                forget(id, stats);
                false
            }
        });
        let config = table.metrics_config();
        let tenants: Vec<ObservedTenant<'_>> = table.observed_tenants().collect();
        let label = |labelled: &mut HashMap<String, Arc<TenantStats>>, t: &ObservedTenant<'_>| {
            t.stats.series.store(Some(Arc::new(families.series(t.id))));
            labelled.insert(t.id.to_owned(), Arc::clone(t.stats));
        };
        for id in &config.tenant_series {
            if let Some(t) = table.observed_tenant(id.as_str()) {
                if !labelled.contains_key(id.as_str()) {
                    label(&mut labelled, &t);
                }
            }
        }
        let score: Vec<u64> = tenants
            .iter()
            .map(|t| {
                use std::sync::atomic::Ordering::Relaxed;
                let score = t.stats.score.load(Relaxed) / 2 + t.stats.recent.swap(0, Relaxed);
                t.stats.score.store(score, Relaxed);
                score
            })
            .collect();
        // Busiest first; among equals, file order. Only the first few can get a place (the free
        // ones, and one per incumbent), so only those are sorted: a publish of a large table costs
        // a pass over its tenants, not a sort of them.
        let rank = |&i: &usize| (std::cmp::Reverse(score[i]), i);
        let mut contenders: Vec<usize> = (0..tenants.len())
            .filter(|&i| !labelled.contains_key(tenants[i].id))
            .collect();
        let wanted = config.tenant_series_limit.saturating_mul(2);
        if contenders.len() > wanted && wanted > 0 {
            contenders.select_nth_unstable_by_key(wanted, rank);
            contenders.truncate(wanted);
        }
        contenders.sort_by_key(rank);
        let mut contenders = contenders.into_iter().peekable();
        while labelled.len() < config.tenant_series_limit {
            match contenders.next() {
                Some(i) => label(&mut labelled, &tenants[i]),
                None => break,
            }
        }
        let listed = |id: &str| config.tenant_series.iter().any(|t| t.as_str() == id);
        let mut incumbents: Vec<usize> = tenants
            .iter()
            .enumerate()
            .filter(|(_, t)| labelled.contains_key(t.id) && !listed(t.id))
            .map(|(i, _)| i)
            .collect();
        incumbents.sort_by_key(|&i| score[i]);
        for incumbent in incumbents {
            match contenders.peek() {
                Some(&c) if score[c] > score[incumbent].saturating_mul(EVICTION_FACTOR) => {
                    let id = tenants[incumbent].id;
                    if let Some(stats) = labelled.remove(id) {
                        forget(id, &stats);
                    }
                    label(&mut labelled, &tenants[c]);
                    contenders.next();
                }
                _ => break,
            }
        }
        self.tenant_series
            .set(i64::try_from(labelled.len()).unwrap_or(i64::MAX));
    }

    /// Requests in flight and open WebSocket connections per labelled tenant, and the others'
    /// sums under `_other`.
    fn observe_in_flight(&self, table: &impl ObservedTable) {
        let (mut other, mut other_open) = (0i64, 0i64);
        for t in table.observed_tenants() {
            let n = i64::from(t.in_flight);
            let open = i64::try_from(t.stats.open_connections()).unwrap_or(i64::MAX);
            if t.stats.has_own_series() {
                self.families.in_flight.with_label_values(&[t.id]).set(n);
                self.families
                    .websockets
                    .with_label_values(&[t.id])
                    .set(open);
            } else {
                other += n;
                other_open += open;
            }
        }
        self.families
            .in_flight
            .with_label_values(&[names::OTHER_TENANTS])
            .set(other);
        self.families
            .websockets
            .with_label_values(&[names::OTHER_TENANTS])
            .set(other_open);
    }

    pub fn observe_gateway_error(&self, error: GatewayError) {
        self.errors[error.index()].inc();
    }

    pub fn observe_retry(&self) {
        self.retries.inc();
    }

    /// The ejection counter of one upstream, resolved when its pool is built.
    pub fn retries_refused(&self, pool: &str, reason: &str) -> IntCounter {
        self.retries_refused.with_label_values(&[pool, reason])
    }

    pub fn upstream_ejections(&self, pool: &str, upstream: &str) -> IntCounter {
        self.ejections.with_label_values(&[pool, upstream])
    }

    pub fn upstream_healthy(&self, pool: &str, upstream: &str) -> IntGauge {
        self.upstream_healthy.with_label_values(&[pool, upstream])
    }

    /// Publishes a routing table that has just been put in use: its generation, tenants by status,
    /// and every upstream's health (so each series exists from the start, not from its first check).
    pub fn observe_table(&self, table: &impl ObservedTable) {
        self.generation
            .set(i64::try_from(table.generation()).unwrap_or(i64::MAX));
        // Counted by pool slot and status: one pass, no hashing per tenant.
        const STATUSES: [TenantStatus; 3] = [
            TenantStatus::Active,
            TenantStatus::Suspended,
            TenantStatus::Maintenance,
        ];
        let mut counts: Vec<[i64; 3]> = Vec::new();
        for t in table.observed_tenants() {
            if counts.len() <= t.pool {
                counts.resize(t.pool + 1, [0; 3]);
            }
            let slot = STATUSES.iter().position(|s| *s == t.status).unwrap_or(0);
            counts[t.pool][slot] += 1;
        }
        self.tenants.reset();
        for (pool, by_status) in counts.into_iter().enumerate() {
            let pool = table.pool_name(pool).unwrap_or("");
            for (status, n) in STATUSES.into_iter().zip(by_status) {
                if n > 0 {
                    self.tenants
                        .with_label_values(&[status.as_str(), pool])
                        .set(n);
                }
            }
        }
        self.assign_tenant_series(table);
        self.observe_upstreams(table);
    }

    fn observe_upstreams(&self, table: &impl ObservedTable) {
        table.each_upstream(&mut |pool, upstream, healthy| {
            self.upstream_healthy(pool, upstream)
                .set(i64::from(healthy));
        });
    }

    /// The expiry of every certificate in use; those no longer served disappear.
    pub fn observe_certificates(&self, certificates: &[CertificateConfig]) {
        let files = certificates
            .iter()
            .map(|c| {
                let name = c.loaded.names.first().cloned().unwrap_or_default();
                (c.cert_label.clone(), name, c.loaded.not_after)
            })
            .collect();
        let mut expiries = self.expiries.lock().unwrap_or_else(PoisonError::into_inner);
        expiries.files = files;
        self.show_expiries(&expiries);
    }

    /// The expiry of every ACME certificate served, under the cardinality guard's rule: a name of
    /// a tenant with its own series has its own (`cert="acme"`); the others share
    /// `name="_other"`, which shows the soonest expiry among them.
    pub fn observe_acme_certificates<'a>(&self, issued: impl IntoIterator<Item = AcmeExpiry<'a>>) {
        let labelled = self.labelled.lock().unwrap_or_else(PoisonError::into_inner);
        let mut acme: Vec<(String, i64)> = Vec::new();
        let mut other: Option<i64> = None;
        for c in issued {
            if labelled.contains_key(c.tenant) {
                acme.push((c.name.to_owned(), c.not_after));
            } else {
                other = Some(other.map_or(c.not_after, |o| o.min(c.not_after)));
            }
        }
        drop(labelled);
        if let Some(soonest) = other {
            acme.push((names::OTHER_TENANTS.to_owned(), soonest));
        }
        let mut expiries = self.expiries.lock().unwrap_or_else(PoisonError::into_inner);
        expiries.acme = acme;
        self.show_expiries(&expiries);
    }

    fn show_expiries(&self, expiries: &CertificateExpiries) {
        self.certificate_expiry.reset();
        for (cert, name, not_after) in &expiries.files {
            self.certificate_expiry
                .with_label_values(&[cert.as_str(), name.as_str()])
                .set(*not_after);
        }
        for (name, not_after) in &expiries.acme {
            self.certificate_expiry
                .with_label_values(&[names::ACME_CERT, name.as_str()])
                .set(*not_after);
        }
    }

    /// One ACME order finished (`issued`, `failed`, `over_budget`).
    pub fn observe_acme_order(&self, outcome: &str) {
        self.acme_orders.with_label_values(&[outcome]).inc();
    }

    /// `observe_table` for a table made from `old` by a delta that touched `tenants`: the tenant
    /// counts and labelled series follow what it touched, at the cost of that; the cardinality
    /// guard's competition waits for the next scrape (it reads every tenant's counters).
    pub fn observe_delta<T: ObservedTable>(&self, old: &T, new: &T, tenants: &[String]) {
        self.generation
            .set(i64::try_from(new.generation()).unwrap_or(i64::MAX));
        let label = |table: &T, id: &str| {
            let t = table.observed_tenant(id)?;
            Some((
                t.status.as_str().to_owned(),
                table.pool_name(t.pool)?.to_owned(),
            ))
        };
        for id in tenants {
            let (before, after) = (label(old, id), label(new, id));
            if before == after {
                continue;
            }
            if let Some((status, pool)) = &before {
                let labels = [status.as_str(), pool.as_str()];
                if let Ok(g) = self.tenants.get_metric_with_label_values(&labels) {
                    g.dec();
                    if g.get() <= 0 {
                        let _ = self.tenants.remove_label_values(&labels);
                    }
                }
            }
            if let Some((status, pool)) = &after {
                self.tenants
                    .with_label_values(&[status.as_str(), pool.as_str()])
                    .inc();
            }
        }
        let mut labelled = self.labelled.lock().unwrap_or_else(|p| p.into_inner());
        for id in tenants {
            let Some(stats) = labelled.get(id.as_str()) else {
                continue;
            };
            let kept = new
                .observed_tenant(id)
                .is_some_and(|t| Arc::ptr_eq(t.stats, stats));
            if !kept {
                stats.series.store(None);
                self.families.remove(id);
                labelled.remove(id.as_str());
            }
        }
        let config = new.metrics_config();
        for id in &config.tenant_series {
            if labelled.contains_key(id.as_str()) {
                continue;
            }
            if let Some(t) = new.observed_tenant(id.as_str()) {
                t.stats
                    .series
                    .store(Some(Arc::new(self.families.series(t.id))));
                labelled.insert(t.id.to_owned(), Arc::clone(t.stats));
            }
        }
        self.tenant_series
            .set(i64::try_from(labelled.len()).unwrap_or(i64::MAX));
        drop(labelled);
        self.observe_upstreams(new);
    }

    /// Counts a change attempt; only applied ones have a meaningful duration.
    pub fn observe_reload(&self, result: &str, seconds: f64) {
        self.reloads.with_label_values(&[result]).inc();
        if result == "applied" {
            self.reload_duration.observe(seconds);
        }
    }

    /// The Prometheus text exposition of every metric, after the guard has looked at `table`.
    pub fn render(&self, table: &impl ObservedTable) -> String {
        self.assign_tenant_series(table);
        self.observe_in_flight(table);
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# metrics encoding failed: {e}\n"))
    }
}
