//! Per-tenant series and the cardinality guard that keeps them bounded.
//!
//! Every tenant has a [`TenantStats`]; only some have their own [`TenantSeries`] (label values):
//! the `[metrics] tenant_series` allow-list, then the busiest tenants up to `tenant_series_limit`.
//! Requests of the others go to the `_other` series. The choice is made off the request path, when
//! a table is published and at each scrape: a tenant whose smoothed request count (half the last
//! score plus the requests since) is more than twice the quietest labelled one's takes its place. A series that appears starts at zero and one that goes disappears, as after a
//! restart, so `sum(rate(...))` over all `tenant` values stays right.

use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use prometheus::{Histogram, IntCounter};

use crate::limits::Scope;

/// Status classes 1xx to 5xx, plus one slot for anything outside them.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// One `tenant` label value's handles, resolved once: observing is atomic adds only.
#[derive(Debug)]
pub struct TenantSeries {
    pub(super) requests: [IntCounter; STATUS_CLASSES.len()],
    pub(super) duration: Histogram,
    pub(super) upstream: Histogram,
    pub(super) bytes_in: IntCounter,
    pub(super) bytes_out: IntCounter,
    pub(super) limited: [IntCounter; Scope::ALL.len()],
    pub(super) overloaded: IntCounter,
    pub(super) upstream_errors: IntCounter,
}

/// What one finished request leaves in its tenant's metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestRecord {
    /// 0 when no response was sent.
    pub status: u16,
    pub seconds: f64,
    /// From choosing an upstream to its response header, when one answered.
    pub upstream_seconds: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub limited: Option<Scope>,
    pub overloaded: bool,
    pub upstream_errors: u32,
}

impl TenantSeries {
    pub(super) fn observe(&self, r: &RequestRecord) {
        let class = match r.status {
            100..=599 => usize::from(r.status / 100 - 1),
            _ => STATUS_CLASSES.len() - 1,
        };
        if let Some(seconds) = r.upstream_seconds {
            self.upstream.observe(seconds);
        }
        if r.bytes_in > 0 {
            self.bytes_in.inc_by(r.bytes_in);
        }
        if r.bytes_out > 0 {
            self.bytes_out.inc_by(r.bytes_out);
        }
        if let Some(scope) = r.limited {
            self.limited[scope.index()].inc();
        }
        if r.overloaded {
            self.overloaded.inc();
        }
        if r.upstream_errors > 0 {
            self.upstream_errors.inc_by(u64::from(r.upstream_errors));
        }
        self.requests[class].inc();
        // Last: a scrape that sees a request's duration sees all of the request.
        self.duration.observe(r.seconds);
    }
}

/// A tenant's place in the metrics, kept across reloads for as long as the tenant exists.
#[derive(Debug, Default)]
pub struct TenantStats {
    /// `None`: counted under `_other`.
    pub(super) series: ArcSwapOption<TenantSeries>,
    /// Requests since the guard last looked, to find the busiest tenants.
    pub(super) recent: AtomicU64,
    /// The guard's smoothed view of `recent` (half the last score plus the new count), so that one
    /// quiet interval does not cost a busy tenant its series. Written by the guard only.
    pub(super) score: AtomicU64,
}

impl TenantStats {
    pub fn has_own_series(&self) -> bool {
        self.series.load().is_some()
    }

    /// Counts a finished request on the tenant's own series, or on `other`.
    pub fn observe(&self, r: &RequestRecord, other: &TenantSeries) {
        self.recent.fetch_add(1, Ordering::Relaxed);
        match self.series.load().as_deref() {
            Some(own) => own.observe(r),
            None => other.observe(r),
        }
    }
}
