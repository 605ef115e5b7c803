//! Rate limits shared by a fleet of gateways through Redis, in two modes:
//! - `sync`: every instance decides alone, on its own buckets; [`LimitsService`] adds what this instance
//!   admitted to one counter per bucket in Redis every `sync_interval` and charges each bucket what
//!   the other instances admitted meanwhile. No request waits on Redis, and a fleet's overshoot is
//!   bounded by one interval's traffic, not by the number of instances.
//! - `exact`: each request runs one Lua script (GCRA over every bucket it must fit, on Redis's clock)
//!   within `timeout`.
//!
//! When Redis fails or is slow, `on_error` decides: `local` (this instance's buckets alone) or `deny`
//! (503). After a failure, `exact` mode rests Redis for [`REST_AFTER_FAILURE`] rather than make every
//! request wait out the timeout; then the next request tries again, so the gateway recovers by
//! itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::gcra::{now_nanos, Exceeded, Quota};
use super::{Credential, Limited, SharedBucket, TenantLimiter, NOT_SYNCED};
use crate::config::model::{FleetConfig, FleetMode, OnRedisError};
use crate::metrics::Metrics;

/// How long `exact` mode leaves Redis alone after a failed call.
pub const REST_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// A bucket nothing was admitted to for this many syncs is no longer synced (its next request
/// starts it again, from a fresh baseline).
const QUIET_SYNCS_BEFORE_IDLE: u32 = 50;
/// Sync counters expire when no instance has touched them for this long.
const COUNTER_TTL_MS: u64 = 60_000;
/// At most this much debt from other instances' traffic is charged beyond a full bucket.
const MAX_DEBT: Duration = Duration::from_secs(2);

/// GCRA over every key, all or nothing, on Redis's clock (µs). ARGV holds each key's interval and
/// tolerance. Returns `{1, i, remaining, reset}` for the tightest key when all fit (and updates them),
/// `{0, i, retry_after, reset}` for the first that does not (and updates none).
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local next_tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local nxt = tat + interval
  if nxt - now > tolerance then
    return {0, i, nxt - now - tolerance, tat - now}
  end
  next_tats[i] = nxt
end
local best, best_remaining, best_reset = 0, -1, 0
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local ahead = next_tats[i] - now
  redis.call('SET', key, string.format('%.0f', next_tats[i]), 'PX', math.floor(ahead / 1000) + 1)
  local remaining = math.floor((tolerance - ahead) / interval)
  if best_remaining < 0 or remaining < best_remaining then
    best, best_remaining, best_reset = i, remaining, ahead
  end
end
return {1, best, best_remaining, best_reset}
";

/// The Redis side of fleet limits, shared by the proxy and [`LimitsService`].
pub struct Fleet {
    pub config: FleetConfig,
    /// Set by [`LimitsService`] when it starts, in its own runtime (the connection's driver task lives
    /// there).
    connection: ArcSwapOption<ConnectionManager>,
    /// `exact`: no call to Redis before this `now_nanos`.
    resting_until: AtomicU64,
    /// `sync`: the last sync reached Redis.
    synced: AtomicBool,
    script: redis::Script,
    metrics: &'static Metrics,
}

/// What the limits decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It fits; the tightest quota, for the `RateLimit-*` headers (`None`: no rate limit applies).
    Admit(Option<Quota>),
    Limit(Limited),
    /// Redis cannot be reached and `on_error = "deny"`.
    Unavailable,
}

impl Fleet {
    pub fn new(config: FleetConfig) -> Arc<Fleet> {
        Arc::new(Fleet {
            config,
            connection: ArcSwapOption::empty(),
            resting_until: AtomicU64::new(0),
            // Trusted until a sync fails: `deny` must not refuse the first requests after a start.
            synced: AtomicBool::new(true),
            script: redis::Script::new(GCRA_SCRIPT),
            metrics: Metrics::get(),
        })
    }

    /// Makes the connection (lazily: the first call connects). Call from the runtime that is to
    /// drive it; [`LimitsService`] does so when it starts.
    pub fn connect(&self) -> Result<(), redis::RedisError> {
        let client = redis::Client::open(self.config.url.as_str())?;
        let timeout = self.config.timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(200));
        let manager = ConnectionManager::new_lazy_with_config(client, config)?;
        self.connection.store(Some(Arc::new(manager)));
        Ok(())
    }

    fn connection(&self) -> Option<ConnectionManager> {
        self.connection.load().as_deref().cloned()
    }

    fn key(&self, kind: &str, bucket: &SharedBucket) -> String {
        format!("{}:{kind}:{}", self.config.key_prefix, bucket.key)
    }

    fn record(&self, ok: bool) {
        self.metrics.observe_redis(ok, self.config.mode);
    }

    /// One request under `exact` mode: every applicable bucket in one script call.
    async fn take_exact(&self, buckets: &[Arc<SharedBucket>]) -> Result<Verdict, ()> {
        let Some(mut connection) = self.connection() else {
            return Err(());
        };
        let mut call = self.script.prepare_invoke();
        for b in buckets {
            call.key(self.key("gcra", b))
                .arg((b.gcra.interval_ns / 1_000).max(1))
                .arg((b.gcra.tolerance_ns / 1_000).max(1));
        }
        let reply = tokio::time::timeout(
            self.config.timeout,
            call.invoke_async::<Vec<i64>>(&mut connection),
        )
        .await;
        let [fits, index, n, reset] = match reply {
            Ok(Ok(v)) => match <[i64; 4]>::try_from(v) {
                Ok(v) => v,
                Err(v) => {
                    tracing::warn!(reply = ?v, "unexpected reply from the rate-limit script");
                    return Err(());
                }
            },
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "rate limit in Redis failed");
                return Err(());
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.config.timeout.as_millis(),
                    "rate limit in Redis timed out"
                );
                return Err(());
            }
        };
        let bucket = usize::try_from(index - 1)
            .ok()
            .and_then(|i| buckets.get(i))
            .ok_or(())?;
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(match fits {
            1 => Verdict::Admit(Some(Quota {
                limit: bucket.gcra.burst,
                remaining: u32::try_from(n).unwrap_or(0),
                reset: micros(reset),
            })),
            _ => Verdict::Limit(Limited {
                scope: bucket.scope,
                exceeded: Exceeded {
                    limit: bucket.gcra.burst,
                    retry_after: micros(n),
                    reset: micros(reset),
                },
            }),
        })
    }

    /// One sync round over every bucket of the tenants' limiters that saw traffic lately.
    async fn sync(&self, each: &EachLimiter) {
        let now = now_nanos();
        let mut active: Vec<(Arc<SharedBucket>, u64)> = Vec::new();
        each(&mut |limiter| {
            limiter.forget_idle(now);
            limiter.each_bucket(|b| {
                let delta = b.pending.swap(0, Ordering::Relaxed);
                if delta > 0 {
                    b.quiet_syncs.store(0, Ordering::Relaxed);
                } else if b.synced_total.load(Ordering::Relaxed) == NOT_SYNCED
                    || b.quiet_syncs.fetch_add(1, Ordering::Relaxed) >= QUIET_SYNCS_BEFORE_IDLE
                {
                    b.synced_total.store(NOT_SYNCED, Ordering::Relaxed);
                    return;
                }
                active.push((Arc::clone(b), delta));
            });
        });
        let Some(mut connection) = self.connection() else {
            self.synced.store(false, Ordering::Relaxed);
            return;
        };
        let mut pipe = redis::pipe();
        if active.is_empty() {
            // Nothing to reconcile; still learn whether Redis is there.
            pipe.cmd("PING").ignore();
        }
        for (b, delta) in &active {
            let key = self.key("sync", b);
            pipe.incr(&key, *delta)
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(COUNTER_TTL_MS)
                .ignore();
        }
        let reply = tokio::time::timeout(
            self.config.timeout,
            pipe.query_async::<Vec<u64>>(&mut connection),
        )
        .await;
        match reply {
            Ok(Ok(totals)) if totals.len() == active.len() => {
                for ((b, delta), total) in active.iter().zip(totals) {
                    let before = b.synced_total.swap(total, Ordering::Relaxed);
                    let others = match before {
                        NOT_SYNCED => 0,
                        before => total.saturating_sub(before.saturating_add(*delta)),
                    };
                    b.bucket.charge(&b.gcra, others, now, MAX_DEBT);
                }
                self.synced.store(true, Ordering::Relaxed);
                self.record(true);
            }
            failed => {
                match failed {
                    Ok(Err(e)) => tracing::warn!(error = %e, "rate-limit sync with Redis failed"),
                    Err(_) => tracing::warn!("rate-limit sync with Redis timed out"),
                    Ok(Ok(_)) => tracing::warn!("rate-limit sync: unexpected reply from Redis"),
                }
                // What was admitted meanwhile is not pushed later: each instance limited alone, and
                // a late burst of counts would only punish the others. Start again from a baseline.
                for (b, _) in &active {
                    b.synced_total.store(NOT_SYNCED, Ordering::Relaxed);
                }
                self.synced.store(false, Ordering::Relaxed);
                self.record(false);
            }
        }
    }

    /// Whether Redis is to be asked (`exact`) or trusted (`sync`) now.
    fn is_available(&self, now: u64) -> bool {
        match self.config.mode {
            FleetMode::Sync => self.synced.load(Ordering::Relaxed),
            FleetMode::Exact => now >= self.resting_until.load(Ordering::Relaxed),
        }
    }
}

/// Decides whether a request fits its tenant's rate limits, on this instance or with the fleet.
pub async fn decide(
    fleet: Option<&Fleet>,
    limiter: &TenantLimiter,
    credential: Option<Credential<'_>>,
    path: &str,
) -> Verdict {
    if !limiter.is_limited() {
        return Verdict::Admit(None);
    }
    let now = now_nanos();
    let local = |count_pending| match limiter.take_local(credential, path, now, count_pending) {
        Ok(quota) => Verdict::Admit(quota),
        Err(limited) => Verdict::Limit(limited),
    };
    let Some(fleet) = fleet else {
        return local(false);
    };
    let mode = fleet.config.mode;
    if fleet.is_available(now) {
        match mode {
            FleetMode::Sync => return local(true),
            FleetMode::Exact => {
                let buckets = limiter.applicable(credential, path);
                if buckets.is_empty() {
                    return Verdict::Admit(None);
                }
                match fleet.take_exact(&buckets).await {
                    Ok(verdict) => {
                        fleet.record(true);
                        return verdict;
                    }
                    Err(()) => {
                        fleet.record(false);
                        let rest = u64::try_from(REST_AFTER_FAILURE.as_nanos()).unwrap_or(u64::MAX);
                        fleet
                            .resting_until
                            .store(now_nanos().saturating_add(rest), Ordering::Relaxed);
                    }
                }
            }
        }
    }
    fleet.metrics.observe_fallback(fleet.config.on_error);
    match fleet.config.on_error {
        // In `sync` mode the buckets keep counting what is admitted here, for when Redis is back.
        OnRedisError::Local => local(mode == FleetMode::Sync),
        OnRedisError::Deny => Verdict::Unavailable,
    }
}

/// How often idle per-credential buckets are forgotten when no fleet sync does it.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The limits' background work: forgets idle per-credential buckets (so memory follows the
/// credentials in use, not every one ever seen) and, with `[limits.redis]`, makes the Redis
/// connection and in `sync` mode reconciles counts every `sync_interval`.
pub struct LimitsService {
    fleet: Option<Arc<Fleet>>,
    each: EachLimiter,
}

/// Calls its argument with every tenant's limiter in the routing table in use (which hands this
/// over, so that limits need not know the table).
pub type EachLimiter = Box<dyn Fn(&mut dyn FnMut(&TenantLimiter)) + Send + Sync>;

impl LimitsService {
    pub fn new(fleet: Option<Arc<Fleet>>, each: EachLimiter) -> Self {
        LimitsService { fleet, each }
    }
}

#[async_trait]
impl BackgroundService for LimitsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let fleet = self.fleet.as_deref();
        if let Some(fleet) = fleet {
            match fleet.connect() {
                Ok(()) => {
                    tracing::info!(url = %fleet.config.redacted_url(), mode = fleet.config.mode.as_str(), "rate limits shared through Redis")
                }
                Err(e) => {
                    tracing::error!(url = %fleet.config.redacted_url(), error = %e, "cannot use Redis for rate limits; on_error applies");
                    fleet.synced.store(false, Ordering::Relaxed);
                }
            }
        }
        let period = match fleet {
            Some(f) if f.config.mode == FleetMode::Sync => f.config.sync_interval,
            _ => UPKEEP_INTERVAL,
        };
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.changed() => break,
            }
            match fleet {
                Some(f) if f.config.mode == FleetMode::Sync => f.sync(&self.each).await,
                _ => {
                    let now = now_nanos();
                    (self.each)(&mut |limiter| limiter.forget_idle(now));
                }
            }
        }
    }
}
