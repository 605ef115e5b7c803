//! When to order: the renewal time of a certificate, the wait after failures, and the budget of
//! orders that keeps one instance (or a flood of handshakes) from burning the CA's rate limits.
//! Plain arithmetic on Unix seconds, tested here.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// The most a failing name waits between attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(6 * 3600);

/// When a certificate valid from `not_before` to `not_after` is renewed: `renew_before` ahead of
/// its expiry, but never earlier than half-way through its life (a window longer than the life
/// would renew forever), less up to a tenth of the window (`jitter`, 0 to 1), so that names
/// issued together do not all renew in the same second.
pub fn renew_at(not_before: i64, not_after: i64, renew_before: Duration, jitter: f64) -> i64 {
    let life = (not_after - not_before).max(0);
    let before = i64::try_from(renew_before.as_secs()).unwrap_or(i64::MAX);
    let window = before.min(life / 2);
    let spread = (window as f64 * 0.1 * jitter.clamp(0.0, 1.0)) as i64;
    not_after - window - spread
}

/// The wait before attempt `failures + 1` after `failures` failures in a row: `first`, doubling,
/// at most `MAX_RETRY`.
pub fn retry_after(first: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    first.saturating_mul(1 << doublings).min(MAX_RETRY)
}

/// Orders started in the last hour (all names) and the last day (per tenant).
#[derive(Debug)]
pub struct OrderBudget {
    per_hour: u32,
    per_tenant_per_day: u32,
    hour: VecDeque<i64>,
    day: HashMap<String, VecDeque<i64>>,
}

/// Why an order may not start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverBudget {
    /// `max_per_hour` orders were started in the last hour; the next may start at `until`.
    Hour { until: i64 },
    /// The tenant had `max_per_tenant_per_day` orders in the last day.
    TenantDay { until: i64 },
}

impl OverBudget {
    pub fn until(&self) -> i64 {
        match self {
            OverBudget::Hour { until } | OverBudget::TenantDay { until } => *until,
        }
    }
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OverBudget::Hour { .. } => {
                f.write_str("[acme] max_per_hour orders already started in the last hour")
            }
            OverBudget::TenantDay { .. } => f.write_str(
                "[acme] max_per_tenant_per_day orders already started for this tenant today",
            ),
        }
    }
}

impl OrderBudget {
    pub fn new(per_hour: u32, per_tenant_per_day: u32) -> Self {
        OrderBudget {
            per_hour,
            per_tenant_per_day,
            hour: VecDeque::new(),
            day: HashMap::new(),
        }
    }

    /// Takes one order for `tenant` at `now`, or says when there will be room.
    pub fn take(&mut self, tenant: &str, now: i64) -> Result<(), OverBudget> {
        forget_before(&mut self.hour, now - 3600);
        if self.hour.len() >= self.per_hour as usize {
            let until = self.hour.front().map_or(now, |t| t + 3600);
            return Err(OverBudget::Hour { until });
        }
        let day = self.day.entry(tenant.to_owned()).or_default();
        forget_before(day, now - 86_400);
        if day.len() >= self.per_tenant_per_day as usize {
            let until = day.front().map_or(now, |t| t + 86_400);
            return Err(OverBudget::TenantDay { until });
        }
        day.push_back(now);
        self.hour.push_back(now);
        self.day.retain(|_, starts| !starts.is_empty());
        Ok(())
    }
}

fn forget_before(starts: &mut VecDeque<i64>, cutoff: i64) {
    while starts.front().is_some_and(|&t| t <= cutoff) {
        starts.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn a_long_certificate_renews_its_window_before_expiry() {
        let (from, to) = (0, 90 * DAY);
        let renew = Duration::from_secs(30 * 86_400);
        assert_eq!(renew_at(from, to, renew, 0.0), 60 * DAY);
        // Jitter moves it earlier by at most a tenth of the window.
        let jittered = renew_at(from, to, renew, 1.0);
        assert_eq!(jittered, 60 * DAY - 3 * DAY);
        assert!(renew_at(from, to, renew, 0.5) > jittered);
    }

    #[test]
    fn a_window_longer_than_the_life_renews_half_way_not_at_once() {
        // A 60-second test certificate with the 30-day default.
        let at = renew_at(1000, 1060, Duration::from_secs(30 * 86_400), 0.0);
        assert_eq!(at, 1030);
        let at = renew_at(1000, 1060, Duration::from_secs(30 * 86_400), 1.0);
        assert_eq!(at, 1027);
    }

    #[test]
    fn retries_double_up_to_six_hours() {
        let first = Duration::from_secs(60);
        assert_eq!(retry_after(first, 1), Duration::from_secs(60));
        assert_eq!(retry_after(first, 2), Duration::from_secs(120));
        assert_eq!(retry_after(first, 4), Duration::from_secs(480));
        assert_eq!(retry_after(first, 30), MAX_RETRY);
    }

    #[test]
    fn the_budget_holds_per_hour_and_per_tenant_per_day() {
        let mut budget = OrderBudget::new(3, 2);
        assert_eq!(budget.take("acme", 100), Ok(()));
        assert_eq!(budget.take("acme", 101), Ok(()));
        assert_eq!(
            budget.take("acme", 102),
            Err(OverBudget::TenantDay { until: 100 + DAY })
        );
        assert_eq!(budget.take("initech", 103), Ok(()));
        // The refused order did not count: three were started, the hour is full.
        assert_eq!(
            budget.take("globex", 104),
            Err(OverBudget::Hour { until: 3700 })
        );
        assert_eq!(budget.take("globex", 3701), Ok(()));
        // A day later acme has room again.
        assert_eq!(budget.take("acme", 101 + DAY), Ok(()));
    }
}
