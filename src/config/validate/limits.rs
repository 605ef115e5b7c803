//! Checks of `[limits]`, `[plans]`, `[metrics]` and each tenant's limit settings. Limits come in
//! layers: a tenant's own setting wins over its plan's, which wins over `[limits]`; route limits are
//! merged by `path_prefix`. `{ unlimited = true }` lifts an inherited limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{FastHash, Validator};
use crate::config::error::{ConfigError, KeyPath};
use crate::config::file::{
    ConcurrencyFile, Entry, FleetModeFile, LimitsFile, MetricsFile, OnRedisErrorFile, PlanFile,
    RateLimitFile, RedisFile, RouteLimitFile, TenantFile,
};
use crate::config::model::{
    ConcurrencyLimit, FleetConfig, FleetMode, MetricsConfig, OnRedisError, Rate, RouteLimit,
    TenantLimits, DEFAULT_QUEUE_TIMEOUT_MS, DEFAULT_REDIS_KEY_PREFIX, DEFAULT_REDIS_TIMEOUT_MS,
    DEFAULT_SYNC_INTERVAL_MS, DEFAULT_TENANT_SERIES_LIMIT,
};
use crate::tenant::TenantId;
use crate::traffic_policy::IpList;

/// A rate far above what one gateway serves: a typo rather than a limit.
const MAX_REQUESTS_PER_SECOND: f64 = 10_000_000.0;
/// More series than any Prometheus should take from one target per metric.
const MAX_TENANT_SERIES: usize = 10_000;

/// One layer's setting: absent (inherit), a limit, or lifted.
#[derive(Debug, Clone, Copy)]
enum Setting<T> {
    Limit(T),
    Unlimited,
}

/// One layer of limit settings (`[limits]`, a plan, a tenant), checked but not merged.
#[derive(Debug, Default, Clone)]
pub(super) struct LimitLayer {
    rate: Option<Setting<Rate>>,
    credential_rate: Option<Setting<Rate>>,
    concurrency: Option<Setting<ConcurrencyLimit>>,
    routes: Vec<(String, Setting<Rate>)>,
    allow_ips: Option<Setting<Arc<IpList>>>,
    deny_ips: Option<Setting<Arc<IpList>>>,
    max_request_body_bytes: Option<Setting<u64>>,
    max_request_header_bytes: Option<Setting<u64>>,
}

/// `[limits]` and every plan, for the tenants to draw on.
#[derive(Debug, Default)]
pub(super) struct LimitLayers {
    global: LimitLayer,
    plans: HashMap<String, LimitLayer, FastHash>,
}

/// The fields a layer is made of, wherever they are written.
struct LayerFields<'a> {
    rate_limit: Option<&'a RateLimitFile>,
    credential_rate_limit: Option<&'a RateLimitFile>,
    concurrency: Option<&'a ConcurrencyFile>,
    route_limits: &'a [RouteLimitFile],
    allow_ips: Option<&'a [String]>,
    deny_ips: Option<&'a [String]>,
    max_request_body_bytes: Option<u64>,
    max_request_header_bytes: Option<u64>,
}

impl<'a> From<&'a LimitsFile> for LayerFields<'a> {
    fn from(l: &'a LimitsFile) -> Self {
        LayerFields {
            rate_limit: l.rate_limit.as_ref(),
            credential_rate_limit: l.credential_rate_limit.as_ref(),
            concurrency: l.concurrency.as_ref(),
            route_limits: &l.route_limits,
            allow_ips: l.allow_ips.as_deref(),
            deny_ips: l.deny_ips.as_deref(),
            max_request_body_bytes: l.max_request_body_bytes,
            max_request_header_bytes: l.max_request_header_bytes,
        }
    }
}

impl<'a> From<&'a PlanFile> for LayerFields<'a> {
    fn from(l: &'a PlanFile) -> Self {
        LayerFields {
            rate_limit: l.rate_limit.as_ref(),
            credential_rate_limit: l.credential_rate_limit.as_ref(),
            concurrency: l.concurrency.as_ref(),
            route_limits: &l.route_limits,
            allow_ips: l.allow_ips.as_deref(),
            deny_ips: l.deny_ips.as_deref(),
            max_request_body_bytes: l.max_request_body_bytes,
            max_request_header_bytes: l.max_request_header_bytes,
        }
    }
}

impl<'a> From<&'a TenantFile> for LayerFields<'a> {
    fn from(l: &'a TenantFile) -> Self {
        LayerFields {
            rate_limit: l.rate_limit.as_ref(),
            credential_rate_limit: l.credential_rate_limit.as_ref(),
            concurrency: l.concurrency.as_ref(),
            route_limits: &l.route_limits,
            allow_ips: l.allow_ips.as_deref(),
            deny_ips: l.deny_ips.as_deref(),
            max_request_body_bytes: l.max_request_body_bytes,
            max_request_header_bytes: l.max_request_header_bytes,
        }
    }
}

impl LimitLayers {
    pub(super) fn has_plan(&self, name: &str) -> bool {
        self.plans.contains_key(name)
    }

    /// A tenant's limits: its own layer over its plan's over `[limits]`.
    pub(super) fn resolve(&self, tenant: &LimitLayer, plan: Option<&str>) -> TenantLimits {
        let plan = plan.and_then(|p| self.plans.get(p));
        let layers = [Some(tenant), plan, Some(&self.global)];
        let pick = |field: fn(&LimitLayer) -> Option<Setting<Rate>>| {
            layers.iter().flatten().find_map(|l| field(l))
        };
        let limit = |s: Option<Setting<Rate>>| match s {
            Some(Setting::Limit(r)) => Some(r),
            _ => None,
        };
        let concurrency = layers
            .iter()
            .flatten()
            .find_map(|l| l.concurrency)
            .and_then(|s| match s {
                Setting::Limit(c) => Some(c),
                Setting::Unlimited => None,
            });
        // Most specific layer first: the first setting seen for a prefix wins.
        let mut routes: Vec<RouteLimit> = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for layer in layers.iter().flatten() {
            for (prefix, setting) in &layer.routes {
                if seen.contains(&prefix.as_str()) {
                    continue;
                }
                seen.push(prefix);
                if let Setting::Limit(rate) = setting {
                    routes.push(RouteLimit {
                        path_prefix: prefix.clone(),
                        rate: *rate,
                    });
                }
            }
        }
        let first = |field: fn(&LimitLayer) -> Option<Setting<Arc<IpList>>>| match layers
            .iter()
            .flatten()
            .find_map(|l| field(l))
        {
            Some(Setting::Limit(list)) => Some(list),
            _ => None,
        };
        let size = |field: fn(&LimitLayer) -> Option<Setting<u64>>| match layers
            .iter()
            .flatten()
            .find_map(|l| field(l))
        {
            Some(Setting::Limit(n)) => Some(n),
            _ => None,
        };
        TenantLimits {
            rate: limit(pick(|l| l.rate)),
            credential_rate: limit(pick(|l| l.credential_rate)),
            concurrency,
            routes,
            allow_ips: first(|l| l.allow_ips.clone()),
            deny_ips: first(|l| l.deny_ips.clone()),
            max_request_body_bytes: size(|l| l.max_request_body_bytes),
            max_request_header_bytes: size(|l| l.max_request_header_bytes),
        }
    }
}

/// A size limit; 0 lifts an inherited one.
fn size_setting(bytes: u64) -> Setting<u64> {
    match bytes {
        0 => Setting::Unlimited,
        n => Setting::Limit(n),
    }
}

impl Validator {
    /// `[limits]` and `[plans]`, checked once for every tenant to use.
    pub(super) fn limit_layers(
        &mut self,
        limits: &LimitsFile,
        plans: &[Entry<PlanFile>],
    ) -> LimitLayers {
        let global = self.limit_layer(&KeyPath::root().key("limits"), limits.into());
        let plans = plans
            .iter()
            .map(|e| {
                let at = KeyPath::root().key("plans").key(&e.name);
                let layer = e
                    .value
                    .as_ref()
                    .map(|p| self.limit_layer(&at, p.into()))
                    .unwrap_or_default();
                (e.name.clone(), layer)
            })
            .collect();
        LimitLayers { global, plans }
    }

    /// A tenant's own layer and its resolved limits.
    pub(super) fn tenant_limits(
        &mut self,
        at: &KeyPath,
        t: &TenantFile,
        layers: &LimitLayers,
    ) -> TenantLimits {
        if let Some(plan) = &t.plan {
            if !layers.has_plan(plan) {
                let mut known: Vec<&str> = layers.plans.keys().map(String::as_str).collect();
                known.sort_unstable();
                self.errors.push(ConfigError::at_value(
                    at.key("plan"),
                    format!(
                        "unknown plan {plan:?}; plans are: {}",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
        let own = self.limit_layer(at, t.into());
        layers.resolve(&own, t.plan.as_deref())
    }

    fn limit_layer(&mut self, at: &KeyPath, f: LayerFields<'_>) -> LimitLayer {
        let rate = f
            .rate_limit
            .and_then(|r| self.rate(&at.key("rate_limit"), r));
        let credential_rate = f
            .credential_rate_limit
            .and_then(|r| self.rate(&at.key("credential_rate_limit"), r));
        let concurrency = f
            .concurrency
            .and_then(|c| self.concurrency(&at.key("concurrency"), c));
        let mut routes: Vec<(String, Setting<Rate>)> = Vec::with_capacity(f.route_limits.len());
        for (i, r) in f.route_limits.iter().enumerate() {
            let at = at.key("route_limits").index(i);
            let prefix = self.path_prefix(&at, r.path_prefix.as_deref());
            let rate = match &r.rate_limit {
                None => {
                    self.errors
                        .push(ConfigError::at_key(at.clone(), "needs rate_limit"));
                    None
                }
                Some(rl) => self.rate(&at.key("rate_limit"), rl),
            };
            if let (Some(prefix), Some(rate)) = (prefix, rate) {
                if routes.iter().any(|(p, _)| *p == prefix) {
                    self.errors.push(ConfigError::at_value(
                        at.key("path_prefix"),
                        format!("{prefix:?} has a route limit already in this section"),
                    ));
                } else {
                    routes.push((prefix, rate));
                }
            }
        }
        LimitLayer {
            rate,
            credential_rate,
            concurrency,
            routes,
            allow_ips: f.allow_ips.map(|l| self.ip_list(&at.key("allow_ips"), l)),
            deny_ips: f.deny_ips.map(|l| self.ip_list(&at.key("deny_ips"), l)),
            max_request_body_bytes: f.max_request_body_bytes.map(size_setting),
            max_request_header_bytes: f.max_request_header_bytes.map(size_setting),
        }
    }

    /// An address list; `[]` lifts an inherited one.
    fn ip_list(&mut self, at: &KeyPath, entries: &[String]) -> Setting<Arc<IpList>> {
        if entries.is_empty() {
            return Setting::Unlimited;
        }
        match self.addresses(at, entries) {
            Some(list) => Setting::Limit(Arc::new(list)),
            None => Setting::Unlimited,
        }
    }

    fn rate(&mut self, at: &KeyPath, r: &RateLimitFile) -> Option<Setting<Rate>> {
        match (r.unlimited, r.requests_per_second, r.burst) {
            (Some(true), None, None) => return Some(Setting::Unlimited),
            (Some(true), _, _) => {
                self.errors.push(ConfigError::at_key(
                    at.clone(),
                    "unlimited = true takes no requests_per_second or burst",
                ));
                return None;
            }
            (Some(false), _, _) => {
                self.errors.push(ConfigError::at_value(
                    at.key("unlimited"),
                    "only `unlimited = true` means something; leave it out to set a limit",
                ));
                return None;
            }
            (None, None, _) => {
                self.errors.push(ConfigError::at_key(
                    at.clone(),
                    "needs requests_per_second (or unlimited = true)",
                ));
                return None;
            }
            (None, Some(_), _) => {}
        }
        let per_second = r.requests_per_second.unwrap_or_default();
        let before = self.errors.len();
        if !(per_second.is_finite() && per_second > 0.0 && per_second <= MAX_REQUESTS_PER_SECOND) {
            self.errors.push(ConfigError::at_value(
                at.key("requests_per_second"),
                format!("{per_second} must be above 0 and at most {MAX_REQUESTS_PER_SECOND}"),
            ));
        }
        // One second's worth by default, so a steady client at the rate is never refused.
        let burst = r.burst.unwrap_or_else(|| (per_second.ceil() as u32).max(1));
        if burst == 0 {
            self.errors.push(ConfigError::at_value(
                at.key("burst"),
                "must be at least 1 (a request is let through when a whole token is there)",
            ));
        }
        (self.errors.len() == before).then_some(Setting::Limit(Rate { per_second, burst }))
    }

    fn concurrency(
        &mut self,
        at: &KeyPath,
        c: &ConcurrencyFile,
    ) -> Option<Setting<ConcurrencyLimit>> {
        match (c.unlimited, c.max_in_flight) {
            (Some(true), None) if c.queue.is_none() && c.queue_timeout_ms.is_none() => {
                return Some(Setting::Unlimited)
            }
            (Some(true), _) => {
                self.errors.push(ConfigError::at_key(
                    at.clone(),
                    "unlimited = true takes no other setting",
                ));
                return None;
            }
            (Some(false), _) => {
                self.errors.push(ConfigError::at_value(
                    at.key("unlimited"),
                    "only `unlimited = true` means something; leave it out to set a limit",
                ));
                return None;
            }
            (None, None) => {
                self.errors.push(ConfigError::at_key(
                    at.clone(),
                    "needs max_in_flight (or unlimited = true)",
                ));
                return None;
            }
            (None, Some(_)) => {}
        }
        let before = self.errors.len();
        let max_in_flight = c.max_in_flight.unwrap_or_default();
        if max_in_flight == 0 {
            self.errors.push(ConfigError::at_value(
                at.key("max_in_flight"),
                "must be at least 1",
            ));
        }
        let queue_timeout =
            Duration::from_millis(c.queue_timeout_ms.unwrap_or(DEFAULT_QUEUE_TIMEOUT_MS));
        if queue_timeout > Duration::from_secs(60) {
            self.errors.push(ConfigError::at_value(
                at.key("queue_timeout_ms"),
                "at most 60000: a queued request holds a client connection",
            ));
        }
        (self.errors.len() == before).then_some(Setting::Limit(ConcurrencyLimit {
            max_in_flight,
            queue: c.queue.unwrap_or(0),
            queue_timeout,
        }))
    }

    /// `[limits.redis]`.
    pub(super) fn fleet(&mut self, redis: Option<&RedisFile>) -> Option<FleetConfig> {
        let r = redis?;
        let at = KeyPath::root().key("limits").key("redis");
        let before = self.errors.len();
        let url = match &r.url {
            None => {
                self.errors
                    .push(ConfigError::at_key(at.clone(), "needs url"));
                String::new()
            }
            Some(url) => {
                if !url.starts_with("redis://") {
                    self.errors.push(ConfigError::at_value(
                        at.key("url"),
                        "must start with redis:// (rediss:// is not supported yet)",
                    ));
                } else if let Err(e) = redis::Client::open(url.as_str()) {
                    self.errors.push(ConfigError::at_value(
                        at.key("url"),
                        format!("not a Redis URL: {e}"),
                    ));
                }
                url.clone()
            }
        };
        let ms = |v: &mut Self, key: &str, value: Option<u64>, default: u64, max: u64| {
            let ms = value.unwrap_or(default);
            if !(1..=max).contains(&ms) {
                v.errors.push(ConfigError::at_value(
                    at.key(key),
                    format!("{ms} ms: use 1 to {max}"),
                ));
            }
            Duration::from_millis(ms)
        };
        let sync_interval = ms(
            self,
            "sync_interval_ms",
            r.sync_interval_ms,
            DEFAULT_SYNC_INTERVAL_MS,
            10_000,
        );
        let timeout = ms(
            self,
            "timeout_ms",
            r.timeout_ms,
            DEFAULT_REDIS_TIMEOUT_MS,
            10_000,
        );
        let key_prefix = r
            .key_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_owned());
        if key_prefix.is_empty() || key_prefix.contains(char::is_whitespace) {
            self.errors.push(ConfigError::at_value(
                at.key("key_prefix"),
                "must be non-empty, without spaces",
            ));
        }
        (self.errors.len() == before).then_some(FleetConfig {
            url,
            mode: match r.mode {
                None | Some(FleetModeFile::Sync) => FleetMode::Sync,
                Some(FleetModeFile::Exact) => FleetMode::Exact,
            },
            sync_interval,
            timeout,
            on_error: match r.on_error {
                None | Some(OnRedisErrorFile::Local) => OnRedisError::Local,
                Some(OnRedisErrorFile::Deny) => OnRedisError::Deny,
            },
            key_prefix,
        })
    }

    /// `[metrics]`; `tenants` are the ids of the tenants that validated.
    pub(super) fn metrics(&mut self, m: &MetricsFile, tenants: &[TenantId]) -> MetricsConfig {
        let at = KeyPath::root().key("metrics");
        let limit = m.tenant_series_limit.unwrap_or(DEFAULT_TENANT_SERIES_LIMIT);
        if limit > MAX_TENANT_SERIES {
            self.errors.push(ConfigError::at_value(
                at.key("tenant_series_limit"),
                format!("{limit}: at most {MAX_TENANT_SERIES} tenants get their own series"),
            ));
        }
        if m.tenant_series.len() > limit {
            self.errors.push(ConfigError::at_value(
                at.key("tenant_series"),
                format!(
                    "{} tenants listed, but tenant_series_limit is {limit}",
                    m.tenant_series.len()
                ),
            ));
        }
        let mut listed = Vec::with_capacity(m.tenant_series.len());
        for (i, id) in m.tenant_series.iter().enumerate() {
            match tenants.iter().find(|t| t.as_str() == id) {
                Some(t) => listed.push(t.clone()),
                None => self.errors.push(ConfigError::at_value(
                    at.key("tenant_series").index(i),
                    format!("{id:?} is not a tenant"),
                )),
            }
        }
        MetricsConfig {
            tenant_series_limit: limit,
            tenant_series: listed,
        }
    }
}
