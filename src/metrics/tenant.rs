//! Per-tenant series and the cardinality guard that keeps them bounded.
//!
//! Every tenant has a [`TenantStats`]; only some have their own [`TenantSeries`] (label values):
//! the `[metrics] tenant_series` allow-list, then the busiest tenants up to `tenant_series_limit`.
//! Requests of the others go to the `_other` series. The choice is made off the request path, when
//! a table is published and at each scrape: a tenant whose smoothed request count (half the last
//! score plus the requests since) is more than twice the quietest labelled one's takes its place. A series that appears starts at zero and one that goes disappears, as after a
//! restart, so `sum(rate(...))` over all `tenant` values stays right.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
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
    /// Bytes of upgraded (WebSocket) connections, `[in, out]`.
    pub(super) websocket_bytes: [IntCounter; 2],
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
    /// An upgraded connection: its bytes are WebSocket bytes, not body bytes.
    pub websocket: bool,
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
        let [bytes_in, bytes_out] = match r.websocket {
            true => [&self.websocket_bytes[0], &self.websocket_bytes[1]],
            false => [&self.bytes_in, &self.bytes_out],
        };
        if r.bytes_in > 0 {
            bytes_in.inc_by(r.bytes_in);
        }
        if r.bytes_out > 0 {
            bytes_out.inc_by(r.bytes_out);
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
    /// Requests since the tenant appeared; `recent` is reset by the guard, this never is.
    total: AtomicU64,
    rate: RateWindow,
    /// Upgraded (WebSocket) connections open now.
    websockets: AtomicU64,
    /// Bumped when an operator asks for the tenant's open connections to be closed; an upgraded
    /// connection that saw another value ends.
    close_generation: AtomicU64,
}

/// An upgraded connection of a tenant, counted open until dropped (when its session ends).
#[derive(Debug)]
pub struct OpenConnection {
    stats: std::sync::Arc<TenantStats>,
    /// The tenant's close generation when the connection was upgraded.
    generation: u64,
}

impl OpenConnection {
    /// Whether an operator has asked for it to be closed since it opened.
    pub fn must_close(&self) -> bool {
        self.stats.close_generation.load(Ordering::Relaxed) != self.generation
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.stats.websockets.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Seconds the live request rate (`GET /tenants/{id}`, `tenants show`) is averaged over.
pub const RATE_WINDOW_SECONDS: u64 = 10;
/// The window's two ends, and one slot more: the slot the next tick writes is never one a reader
/// of the current window uses.
const RATE_SAMPLES: usize = RATE_WINDOW_SECONDS as usize + 2;

/// `total` as it was at each of the last ticks (one a second), in a ring. The ticker is the only
/// writer, so a reader needs no lock: it sees the newest sample the tick count says is complete.
#[derive(Debug, Default)]
struct RateWindow {
    samples: [AtomicU64; RATE_SAMPLES],
    ticks: AtomicU64,
}

impl TenantStats {
    pub fn has_own_series(&self) -> bool {
        self.series.load().is_some()
    }

    /// Counts an upgraded connection open until the returned guard drops.
    pub fn connection_upgraded(self: &std::sync::Arc<Self>) -> OpenConnection {
        self.websockets.fetch_add(1, Ordering::Relaxed);
        OpenConnection {
            stats: std::sync::Arc::clone(self),
            generation: self.close_generation.load(Ordering::Relaxed),
        }
    }

    pub fn open_connections(&self) -> u64 {
        self.websockets.load(Ordering::Relaxed)
    }

    /// Ends the tenant's upgraded connections: each at its next frame, either way.
    pub fn close_connections(&self) {
        self.close_generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a finished request on the tenant's own series, or on `other`.
    pub fn observe(&self, r: &RequestRecord, other: &TenantSeries) {
        self.recent.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        match self.series.load().as_deref() {
            Some(own) => own.observe(r),
            None => other.observe(r),
        }
    }

    /// Takes this second's sample; called once a second by [`RequestRates`] only.
    pub fn tick(&self) {
        let ticks = self.rate.ticks.load(Ordering::Relaxed);
        let slot = (ticks % RATE_SAMPLES as u64) as usize;
        self.rate.samples[slot].store(self.total.load(Ordering::Relaxed), Ordering::Relaxed);
        self.rate.ticks.store(ticks + 1, Ordering::Release);
    }

    /// Requests per second over the last `RATE_WINDOW_SECONDS` (fewer for a tenant that just
    /// appeared; 0 until two ticks have been taken).
    pub fn request_rate(&self) -> f64 {
        let ticks = self.rate.ticks.load(Ordering::Acquire);
        let span = ticks.saturating_sub(1).min(RATE_WINDOW_SECONDS);
        if span == 0 {
            return 0.0;
        }
        let sample = |tick: u64| {
            self.rate.samples[(tick % RATE_SAMPLES as u64) as usize].load(Ordering::Relaxed)
        };
        let (newest, oldest) = (sample(ticks - 1), sample(ticks - 1 - span));
        newest.saturating_sub(oldest) as f64 / span as f64
    }
}

/// Takes every tenant's request-rate sample once a second, off the request path.
pub struct RequestRates {
    each: EachTenantStats,
}

/// Calls its argument with every tenant's stats in the routing table in use (which hands this over,
/// so that metrics need not know the table).
pub type EachTenantStats = Box<dyn Fn(&mut dyn FnMut(&TenantStats)) + Send + Sync>;

impl RequestRates {
    pub fn new(each: EachTenantStats) -> Self {
        RequestRates { each }
    }
}

#[async_trait]
impl BackgroundService for RequestRates {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.changed() => break,
            }
            (self.each)(&mut |stats| stats.tick());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_after(requests_per_tick: &[u64]) -> TenantStats {
        let stats = TenantStats::default();
        for n in requests_per_tick {
            stats.total.fetch_add(*n, Ordering::Relaxed);
            stats.tick();
        }
        stats
    }

    #[test]
    fn the_rate_is_zero_until_two_samples_exist() {
        assert_eq!(stats_after(&[]).request_rate(), 0.0);
        assert_eq!(stats_after(&[50]).request_rate(), 0.0);
    }

    #[test]
    fn the_rate_averages_over_the_ticks_taken_up_to_the_window() {
        // The first sample is the baseline: 10 and 30 requests in the two seconds after it.
        assert_eq!(stats_after(&[5, 10, 30]).request_rate(), 20.0);
        // Past the window, only the last ten seconds count: ten seconds of 7 after a burst.
        let mut ticks = vec![1000];
        ticks.extend([7; 10]);
        assert_eq!(stats_after(&ticks).request_rate(), 7.0);
        ticks.extend([0; 10]);
        assert_eq!(stats_after(&ticks).request_rate(), 0.0);
    }
}
