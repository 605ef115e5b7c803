//! The generic cell rate algorithm: a token bucket kept as one number, the "theoretical arrival time"
//! (TAT) of the next request at the steady rate. One `AtomicU64` per bucket, updated by compare and
//! swap: no lock, and the same arithmetic as the Redis script of `exact` mode.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use crate::config::model::Rate;

/// Nanoseconds on a monotonic clock that starts at 1 s, so 0 never looks like "now".
pub fn now_nanos() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(START.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .saturating_add(1_000_000_000)
}

/// A rate in the algorithm's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Time one request "costs": 1 / rate.
    pub interval_ns: u64,
    /// How far ahead of now the TAT may run: `burst` intervals.
    pub tolerance_ns: u64,
    pub burst: u32,
}

impl Gcra {
    pub fn new(rate: Rate) -> Gcra {
        let interval_ns = (1e9 / rate.per_second).round().max(1.0) as u64;
        Gcra {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(rate.burst)),
            burst: rate.burst,
        }
    }
}

/// What a request that fit leaves of a limit, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// A request that did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: u32,
    /// Until one request fits again.
    pub retry_after: Duration,
    pub reset: Duration,
}

/// One bucket's state. Whoever holds it decides what it limits (a tenant, a key, a route).
#[derive(Debug, Default)]
pub struct Bucket {
    tat: AtomicU64,
}

impl Bucket {
    /// Takes one request's worth at `now`, or says when one would fit.
    pub fn take(&self, g: &Gcra, now: u64) -> Result<Quota, Exceeded> {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(g.interval_ns);
            let ahead = next - now;
            if ahead > g.tolerance_ns {
                let reset = tat.saturating_sub(now);
                return Err(Exceeded {
                    limit: g.burst,
                    retry_after: Duration::from_nanos(ahead - g.tolerance_ns),
                    reset: Duration::from_nanos(reset),
                });
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    let remaining = (g.tolerance_ns - ahead) / g.interval_ns;
                    return Ok(Quota {
                        limit: g.burst,
                        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                        reset: Duration::from_nanos(ahead),
                    });
                }
                Err(current) => tat = current,
            }
        }
    }

    /// Gives back one request taken by `take` (another limit refused the request).
    pub fn refund(&self, g: &Gcra) {
        let _ = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some(tat.saturating_sub(g.interval_ns))
            });
    }

    /// Charges `n` requests admitted elsewhere (other instances of a fleet), as debt: the TAT may
    /// run past the tolerance, and this instance then lets nothing through until it has caught up.
    /// The debt is capped at `max_debt` beyond a full bucket, so a burst of stale counts cannot
    /// block a tenant for long.
    pub fn charge(&self, g: &Gcra, n: u64, now: u64, max_debt: Duration) {
        if n == 0 {
            return;
        }
        let cap = now
            .saturating_add(g.tolerance_ns)
            .saturating_add(u64::try_from(max_debt.as_nanos()).unwrap_or(u64::MAX));
        let _ = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some(
                    tat.max(now)
                        .saturating_add(n.saturating_mul(g.interval_ns))
                        .min(cap),
                )
            });
    }

    /// True when the bucket is full at `now`: it holds nothing a fresh bucket would not.
    pub fn is_full(&self, now: u64) -> bool {
        self.tat.load(Ordering::Relaxed) <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn gcra(per_second: f64, burst: u32) -> Gcra {
        Gcra::new(Rate { per_second, burst })
    }

    #[test]
    fn a_full_bucket_lets_the_burst_through_then_refills_at_the_rate() {
        let g = gcra(10.0, 5);
        let b = Bucket::default();
        let now = 100 * SECOND;
        let remaining: Vec<u32> = (0..5)
            .map(|_| b.take(&g, now).map(|q| q.remaining))
            .collect::<Result<_, _>>()
            .expect("the burst fits");
        assert_eq!(remaining, [4, 3, 2, 1, 0]);
        let refused = b.take(&g, now).expect_err("the sixth does not");
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert_eq!(refused.limit, 5);
        assert_eq!(refused.reset, Duration::from_millis(500));
        // One interval later exactly one more fits.
        assert!(b.take(&g, now + SECOND / 10).is_ok());
        assert!(b.take(&g, now + SECOND / 10).is_err());
        // After a quiet second the whole burst is back.
        let later = now + 2 * SECOND;
        assert_eq!(b.take(&g, later).map(|q| q.remaining), Ok(4));
    }

    #[test]
    fn a_steady_client_at_the_rate_is_never_refused() {
        let g = gcra(100.0, 1);
        let b = Bucket::default();
        let start = 10 * SECOND;
        for i in 0..1_000 {
            assert!(b.take(&g, start + i * SECOND / 100).is_ok(), "request {i}");
        }
    }

    #[test]
    fn over_a_long_run_admissions_match_rate_times_time_plus_burst() {
        let g = gcra(50.0, 10);
        let b = Bucket::default();
        let start = 10 * SECOND;
        // 500 requests per second offered for 10 s, in 1 ms steps.
        let admitted = (0..10_000u64)
            .filter(|ms| b.take(&g, start + ms * 1_000_000).is_ok())
            .count();
        assert!((500..=511).contains(&admitted), "{admitted}");
    }

    #[test]
    fn a_refund_gives_back_exactly_one_request() {
        let g = gcra(1.0, 2);
        let b = Bucket::default();
        let now = 5 * SECOND;
        assert!(b.take(&g, now).is_ok());
        assert!(b.take(&g, now).is_ok());
        assert!(b.take(&g, now).is_err());
        b.refund(&g);
        assert!(b.take(&g, now).is_ok());
    }

    #[test]
    fn charged_debt_blocks_until_paid_and_is_capped() {
        let g = gcra(10.0, 10);
        let b = Bucket::default();
        let now = 5 * SECOND;
        b.charge(&g, 15, now, Duration::from_secs(1));
        // 15 requests of debt on a 10-request bucket: nothing fits for half a second.
        let refused = b.take(&g, now).expect_err("in debt");
        assert_eq!(refused.retry_after, Duration::from_millis(600));
        assert!(b.take(&g, now + 600 * 1_000_000).is_ok());
        // A huge charge is capped at one second beyond a full bucket.
        let c = Bucket::default();
        c.charge(&g, 1_000_000, now, Duration::from_secs(1));
        assert!(c.take(&g, now + SECOND).is_err());
        assert!(c.take(&g, now + SECOND + SECOND / 10).is_ok());
    }

    #[test]
    fn concurrent_takers_never_exceed_the_burst() {
        let g = gcra(0.001, 1_000);
        let b = std::sync::Arc::new(Bucket::default());
        let now = 5 * SECOND;
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let b = &b;
                    s.spawn(move || (0..1_000).filter(|_| b.take(&g, now).is_ok()).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        assert_eq!(admitted, 1_000);
    }
}
