//! The gateway's Prometheus metrics.
//!
//! Architecture invariant: the request path never looks a metric up by label (that takes a lock in
//! the prometheus crate). Every series it touches is resolved once, here, into a handle that is only
//! an atomic add.

pub mod names;

use std::sync::LazyLock;

use crate::config::model::CertificateConfig;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::gateway_error::GatewayError;
use crate::routing::RoutingTable;

/// Status classes 1xx to 5xx, plus one slot for anything outside them.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

pub struct Metrics {
    registry: Registry,
    requests: [IntCounter; STATUS_CLASSES.len()],
    errors: [IntCounter; GatewayError::ALL.len()],
    duration: Histogram,
    retries: IntCounter,
    ejections: IntCounterVec,
    upstream_healthy: IntGaugeVec,
    generation: IntGauge,
    tenants: IntGaugeVec,
    certificate_expiry: IntGaugeVec,
    reloads: IntCounterVec,
    reload_duration: Histogram,
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

        let requests_vec = IntCounterVec::new(
            Opts::new(REQUESTS_TOTAL, "Requests answered, by status class"),
            &[LABEL_STATUS_CLASS],
        )
        .expect("static metric definition");
        let requests = STATUS_CLASSES.map(|class| requests_vec.with_label_values(&[class]));
        register(Box::new(requests_vec));

        let errors_vec = IntCounterVec::new(
            Opts::new(
                GATEWAY_ERRORS_TOTAL,
                "Responses the gateway made itself, by error code",
            ),
            &[LABEL_ERROR],
        )
        .expect("static metric definition");
        let errors = GatewayError::ALL.map(|e| errors_vec.with_label_values(&[e.code()]));
        register(Box::new(errors_vec));

        let duration = Histogram::with_opts(
            HistogramOpts::new(
                REQUEST_DURATION_SECONDS,
                "Time from request start to the end of the response",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
        )
        .expect("static metric definition");
        register(Box::new(duration.clone()));

        let retries = IntCounter::new(
            UPSTREAM_RETRIES_TOTAL,
            "Requests sent to another upstream after a failed connection",
        )
        .expect("static metric definition");
        register(Box::new(retries.clone()));

        let ejections = IntCounterVec::new(
            Opts::new(
                UPSTREAM_EJECTIONS_TOTAL,
                "Times an upstream was skipped for fail_timeout after a failed connection",
            ),
            &[LABEL_POOL, LABEL_UPSTREAM],
        )
        .expect("static metric definition");
        register(Box::new(ejections.clone()));

        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                UPSTREAM_HEALTHY,
                "1 when the upstream passes its active health check",
            ),
            &[LABEL_POOL, LABEL_UPSTREAM],
        )
        .expect("static metric definition");
        register(Box::new(upstream_healthy.clone()));

        let generation = IntGauge::new(CONFIG_GENERATION, "Generation of the routing table in use")
            .expect("static metric definition");
        register(Box::new(generation.clone()));

        let tenants = IntGaugeVec::new(
            Opts::new(TENANTS, "Tenants in the routing table, by status"),
            &[LABEL_STATUS],
        )
        .expect("static metric definition");
        register(Box::new(tenants.clone()));

        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS,
                "When each served certificate expires (notAfter, Unix seconds); alert on it minus time()",
            ),
            &[LABEL_CERT, LABEL_NAME],
        )
        .expect("static metric definition");
        register(Box::new(certificate_expiry.clone()));

        let build = IntGaugeVec::new(
            Opts::new(BUILD_INFO, "Always 1; labelled with the version"),
            &[LABEL_VERSION],
        )
        .expect("static metric definition");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        register(Box::new(build));

        let reloads = IntCounterVec::new(
            Opts::new(
                RELOADS_TOTAL,
                "Changes to the routing table (file reloads and admin API changes), by result: applied, unchanged, or the refusal's error code",
            ),
            &[LABEL_RESULT],
        )
        .expect("static metric definition");
        register(Box::new(reloads.clone()));

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

        Metrics {
            reloads,
            reload_duration,
            registry,
            requests,
            errors,
            duration,
            retries,
            ejections,
            upstream_healthy,
            generation,
            tenants,
            certificate_expiry,
        }
    }

    /// Counts one finished request.
    pub fn observe_request(&self, status: u16, seconds: f64) {
        let class = match status {
            100..=599 => usize::from(status / 100 - 1),
            _ => STATUS_CLASSES.len() - 1,
        };
        self.requests[class].inc();
        self.duration.observe(seconds);
    }

    pub fn observe_gateway_error(&self, error: GatewayError) {
        self.errors[error.index()].inc();
    }

    pub fn observe_retry(&self) {
        self.retries.inc();
    }

    /// The ejection counter of one upstream, resolved when its pool is built.
    pub fn upstream_ejections(&self, pool: &str, upstream: &str) -> IntCounter {
        self.ejections.with_label_values(&[pool, upstream])
    }

    pub fn upstream_healthy(&self, pool: &str, upstream: &str) -> IntGauge {
        self.upstream_healthy.with_label_values(&[pool, upstream])
    }

    /// Publishes a routing table that has just been put in use: its generation, tenants by status,
    /// and every upstream's health (so each series exists from the start, not from its first check).
    pub fn observe_table(&self, table: &RoutingTable) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let suspended = table.suspended_count();
        self.generation
            .set(i64::try_from(table.generation()).unwrap_or(i64::MAX));
        self.tenants
            .with_label_values(&["active"])
            .set(gauge(table.tenants().len() - suspended));
        self.tenants
            .with_label_values(&["suspended"])
            .set(gauge(suspended));
        for pool in table.pools() {
            for upstream in pool.upstreams() {
                self.upstream_healthy(pool.name(), &upstream.label)
                    .set(i64::from(upstream.state.is_healthy()));
            }
        }
    }

    /// The expiry of every certificate in use; those no longer served disappear.
    pub fn observe_certificates(&self, certificates: &[CertificateConfig]) {
        self.certificate_expiry.reset();
        for c in certificates {
            let name = c.loaded.names.first().map_or("", String::as_str);
            self.certificate_expiry
                .with_label_values(&[c.cert_label.as_str(), name])
                .set(c.loaded.not_after);
        }
    }

    /// Counts a change attempt; only applied ones have a meaningful duration.
    pub fn observe_reload(&self, result: &str, seconds: f64) {
        self.reloads.with_label_values(&[result]).inc();
        if result == "applied" {
            self.reload_duration.observe(seconds);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# metrics encoding failed: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_status_class() {
        let m = Metrics::get();
        let before = m.requests[1].get();
        m.observe_request(204, 0.001);
        m.observe_request(999, 0.001);
        assert_eq!(m.requests[1].get(), before + 1);
        let text = m.render();
        assert!(
            text.contains("tenantgate_requests_total{status_class=\"2xx\"}"),
            "{text}"
        );
        assert!(text.contains("tenantgate_build_info{version="), "{text}");
    }
}
