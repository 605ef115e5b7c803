//! Upstream pools at run time: which upstreams can take a request now, and which one gets it.
//!
//! Architecture invariant: selection is lock-free and allocation-free. Each upstream's state is a few
//! atomics shared (`Arc`) between the routing snapshot, the health checker and requests in flight, so
//! health survives as long as any of them holds the upstream.

pub mod health;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pingora::protocols::tls::CaType;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;
use prometheus::IntCounter;

use crate::config::model::{Balancing, PoolConfig, UpstreamProtocol, UpstreamTls};
use crate::metrics::Metrics;

/// Idle connections kept per upstream address when `upstream_keepalive` is left out: enough for a
/// burst of responses from hundreds of client connections to all go back to the pool (Pingora's 128
/// per thread closed three connections in four at 512 clients on one upstream).
pub const KEEPALIVE_PER_UPSTREAM: usize = 1024;
/// The most idle connections the default keeps, however many upstreams the table names: each is a
/// file descriptor.
pub const KEEPALIVE_DEFAULT_CAP: usize = 16 * 1024;

/// How many idle upstream connections the process keeps: `configured`, or
/// `KEEPALIVE_PER_UPSTREAM` for each distinct upstream address in `pools`, within
/// `KEEPALIVE_PER_UPSTREAM..=KEEPALIVE_DEFAULT_CAP`. Fixed at start (Pingora sizes its pool once).
pub fn keepalive_pool_size(configured: Option<usize>, pools: &[PoolConfig]) -> usize {
    if let Some(n) = configured {
        return n;
    }
    let addresses: std::collections::HashSet<SocketAddr> = pools
        .iter()
        .flat_map(|p| p.upstreams.iter().map(|u| u.addr))
        .collect();
    addresses
        .len()
        .saturating_mul(KEEPALIVE_PER_UPSTREAM)
        .clamp(KEEPALIVE_PER_UPSTREAM, KEEPALIVE_DEFAULT_CAP)
}

/// Health of one upstream, from active checks and from failed connections.
#[derive(Debug)]
pub struct UpstreamState {
    /// Set by the active health checker; true until a check says otherwise.
    healthy: AtomicBool,
    /// Passive health: milliseconds since `epoch()` until which the upstream is skipped after a
    /// failed connection; 0 when not ejected.
    ejected_until_ms: AtomicU64,
    /// Requests using this upstream now (kept for `least_request` pools only).
    in_flight: AtomicUsize,
}

impl Default for UpstreamState {
    fn default() -> Self {
        UpstreamState {
            healthy: AtomicBool::new(true),
            ejected_until_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl UpstreamState {
    /// Whether requests may be sent here now.
    pub fn is_available(&self) -> bool {
        if !self.healthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until == 0 || now_ms() >= until
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Records an active check's verdict. A passing check also ends a passive ejection: the upstream
    /// answers again, so there is no reason to wait out the rest of `fail_timeout`.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
        if healthy {
            self.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Skips this upstream for `duration` after it refused or timed out a connection.
    pub fn eject_for(&self, duration: Duration) {
        if duration.is_zero() {
            return;
        }
        let until =
            now_ms().saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until_ms.store(until.max(1), Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// One upstream of a pool.
#[derive(Debug)]
pub struct Upstream {
    pub label: String,
    pub addr: SocketAddr,
    weight: u32,
    /// Built once at load time with the pool's timeouts; cloned per request (no DNS, no parsing).
    pub peer: HttpPeer,
    pub state: Arc<UpstreamState>,
    /// Resolved once, so counting an ejection on the request path is an atomic add.
    ejections: IntCounter,
}

impl Upstream {
    pub fn weight(&self) -> u32 {
        self.weight
    }
}

/// Requests one HTTP/2 upstream connection carries at once (Pingora's default is 1).
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// A peer for one upstream address: plain, or TLS with the pool's SNI, verification and CA; over
/// HTTP/2 for `h2` (by ALPN) and `h2c` (prior knowledge: the only protocol Pingora then allows).
fn peer_for(
    addr: SocketAddr,
    tls: Option<&UpstreamTls>,
    ca: Option<&Arc<CaType>>,
    protocol: UpstreamProtocol,
) -> HttpPeer {
    let mut peer = match tls {
        None => HttpPeer::new(addr, false, String::new()),
        Some(tls) => {
            let mut peer = HttpPeer::new(addr, true, tls.sni.clone());
            peer.options.verify_cert = tls.verify;
            peer.options.verify_hostname = tls.verify;
            peer.options.ca = ca.cloned();
            peer
        }
    };
    if protocol != UpstreamProtocol::Http1 {
        peer.options.alpn = ALPN::H2;
        peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
    peer
}

/// Validation parsed every certificate already; one that does not parse now is left out.
fn ca_of(tls: &UpstreamTls) -> Option<Arc<CaType>> {
    let bundle = tls.ca.as_ref()?;
    let certs: Vec<WrappedX509> = bundle
        .certificates
        .iter()
        .filter_map(|der| {
            WrappedX509::try_new(der.clone(), |raw| {
                x509_parser::parse_x509_certificate(raw).map(|(_, cert)| cert)
            })
            .ok()
        })
        .collect();
    Some(Arc::from(certs))
}

/// Upstreams to leave out when choosing for one request (those that refused it a connection). Tracks
/// the first 64; a larger pool may try an upstream twice, which is harmless.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried(u64);

impl Tried {
    pub fn insert(&mut self, index: usize) {
        if index < 64 {
            self.0 |= 1 << index;
        }
    }

    pub fn contains(self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }
}

/// A pool at run time: its upstreams, their state, and the balancing cursor.
#[derive(Debug)]
pub struct Pool {
    pub config: PoolConfig,
    tls_ca: Option<Arc<CaType>>,
    upstreams: Box<[Upstream]>,
    cursor: AtomicUsize,
    /// With weights: upstream indices in smooth weighted round-robin order (nginx's algorithm,
    /// run once here), so a pick stays one atomic add and a lookup. Empty when all weigh 1.
    schedule: Box<[u16]>,
    /// With `retries`: how many retries the pool's traffic allows now.
    budget: Option<RetryBudget>,
    refused_retries: RefusedRetries,
}

/// Retries refused, by why; resolved once per pool.
#[derive(Debug)]
struct RefusedRetries {
    budget: IntCounter,
    attempts: IntCounter,
}

/// Why a retry was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRetry {
    /// The request has had its `attempts`.
    Attempts,
    /// The pool's retries in this window are at `budget_percent` of its requests.
    Budget,
}

/// Retries allowed in a window whatever the traffic: a quiet pool still retries a blip.
const MIN_RETRIES_PER_WINDOW: u64 = 10;
const BUDGET_WINDOW_MS: u64 = 10_000;

/// Retries as a share of requests, over a window of `BUDGET_WINDOW_MS` (and the window before it
/// for the requests, so a new window does not start with no room). Atomics only; a race at a
/// window's turn may let a retry or two more through, never an unbounded number.
#[derive(Debug)]
pub struct RetryBudget {
    percent: u64,
    window: AtomicU64,
    requests: AtomicU64,
    previous_requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    pub fn new(percent: u32) -> Self {
        RetryBudget {
            percent: u64::from(percent),
            window: AtomicU64::new(now_ms() / BUDGET_WINDOW_MS),
            requests: AtomicU64::new(0),
            previous_requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    fn roll(&self, now_ms: u64) {
        let window = now_ms / BUDGET_WINDOW_MS;
        let seen = self.window.load(Ordering::Relaxed);
        if seen != window
            && self
                .window
                .compare_exchange(seen, window, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let last = self.requests.swap(0, Ordering::Relaxed);
            // A window with no traffic in between leaves nothing to count.
            let carried = if window == seen + 1 { last } else { 0 };
            self.previous_requests.store(carried, Ordering::Relaxed);
            self.retries.store(0, Ordering::Relaxed);
        }
    }

    fn note_request(&self, now_ms: u64) {
        self.roll(now_ms);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn try_retry(&self, now_ms: u64) -> bool {
        self.roll(now_ms);
        let requests =
            self.requests.load(Ordering::Relaxed) + self.previous_requests.load(Ordering::Relaxed);
        let allowed = (requests * self.percent / 100).max(MIN_RETRIES_PER_WINDOW);
        if self.retries.fetch_add(1, Ordering::Relaxed) < allowed {
            return true;
        }
        self.retries.fetch_sub(1, Ordering::Relaxed);
        false
    }
}

/// Smooth weighted round robin over `weights`, one full turn: each index appears its weight's
/// number of times, spread out (weights 3, 1 give 0, 0, 1, 0).
fn weighted_schedule(weights: &[u32]) -> Box<[u16]> {
    if weights.iter().all(|&w| w == 1) {
        return Box::new([]);
    }
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, -(*i as i64)))
        else {
            break;
        };
        current[best] -= total;
        out.push(u16::try_from(best).unwrap_or(u16::MAX));
    }
    out.into()
}

impl Pool {
    /// Builds the pool's run-time form. `states` gives the state to keep for an upstream (by address),
    /// so a rebuilt pool need not forget what health checks learned.
    pub fn new(
        config: PoolConfig,
        mut states: impl FnMut(SocketAddr) -> Option<Arc<UpstreamState>>,
    ) -> Pool {
        let t = &config.timeouts;
        // Parsed once per pool: Pingora's connector reads it for every new upstream connection.
        let tls_ca = config.tls.as_ref().and_then(ca_of);
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                let mut peer = peer_for(
                    u.addr,
                    config.tls.as_ref(),
                    tls_ca.as_ref(),
                    config.protocol,
                );
                peer.options.connection_timeout = Some(t.connect);
                peer.options.read_timeout = Some(t.read);
                peer.options.write_timeout = Some(t.write);
                peer.options.idle_timeout = Some(t.idle);
                Upstream {
                    label: u.label.clone(),
                    addr: u.addr,
                    weight: u.weight,
                    peer,
                    state: match states(u.addr) {
                        // With no active check left, nothing would ever mark a carried-over
                        // unhealthy upstream healthy again.
                        Some(state) if config.health_check.is_none() => {
                            state.set_healthy(true);
                            state
                        }
                        Some(state) => state,
                        None => Arc::default(),
                    },
                    ejections: Metrics::get().upstream_ejections(&config.name, &u.label),
                }
            })
            .collect();
        let weights: Vec<u32> = config.upstreams.iter().map(|u| u.weight).collect();
        let metrics = Metrics::get();
        Pool {
            schedule: weighted_schedule(&weights),
            budget: config.retries.budget_percent.map(RetryBudget::new),
            refused_retries: RefusedRetries {
                budget: metrics.retries_refused(&config.name, "budget"),
                attempts: metrics.retries_refused(&config.name, "attempts"),
            },
            config,
            tls_ca,
            upstreams,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Counts a request for the retry budget (a pool without one counts nothing).
    pub fn note_request(&self) {
        if let Some(budget) = &self.budget {
            budget.note_request(now_ms());
        }
    }

    /// Whether a request that has been tried `attempts` times may be tried again, by the pool's
    /// `attempts` and its budget; a refusal is counted.
    pub fn allow_retry(&self, attempts: u32) -> Result<(), NoRetry> {
        let refused = match self.config.retries.attempts {
            Some(max) if attempts >= max => Some(NoRetry::Attempts),
            _ => match &self.budget {
                Some(budget) if !budget.try_retry(now_ms()) => Some(NoRetry::Budget),
                _ => None,
            },
        };
        match refused {
            None => Ok(()),
            Some(why) => {
                match why {
                    NoRetry::Attempts => self.refused_retries.attempts.inc(),
                    NoRetry::Budget => self.refused_retries.budget.inc(),
                }
                Err(why)
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The CA certificates upstream TLS is verified against, in Pingora's form; `None` for the
    /// system's roots (or no TLS).
    pub fn tls_ca(&self) -> Option<&Arc<CaType>> {
        self.tls_ca.as_ref()
    }

    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    pub fn upstream(&self, index: usize) -> Option<&Upstream> {
        self.upstreams.get(index)
    }

    /// Whether an upstream not in `tried` could take a request now (available, or at least healthy
    /// by active checks, as `select` would try).
    pub fn has_untried(&self, tried: Tried) -> bool {
        self.upstreams
            .iter()
            .enumerate()
            .any(|(i, u)| !tried.contains(i) && u.state.is_healthy())
    }

    /// Whether any upstream can take a request now.
    pub fn has_available(&self) -> bool {
        self.upstreams.iter().any(|u| u.state.is_available())
    }

    /// Picks an upstream not in `exclude`, by the pool's balancing rule: an available one when there
    /// is one. When every upstream is only ejected (refused a connection within `fail_timeout`),
    /// one that active checks still call healthy is tried anyway: it may be back already, and
    /// refusing every request for the rest of `fail_timeout` would turn a blip into an outage (for a
    /// single-upstream pool, any restart). Each request tries an upstream at most once.
    pub fn select(&self, exclude: Tried) -> Option<usize> {
        let state = |i: usize| &self.upstreams[i].state;
        self.pick(|i| !exclude.contains(i) && state(i).is_available())
            .or_else(|| self.pick(|i| !exclude.contains(i) && state(i).is_healthy()))
    }

    fn pick(&self, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.upstreams.len();
        // A turn of the schedule, or of the upstreams when they all weigh the same.
        let turn = match self.schedule.len() {
            0 => n,
            len => len,
        };
        let slot = |j: usize| match self.schedule.get(j % turn.max(1)) {
            Some(&i) => usize::from(i),
            None => j % n.max(1),
        };
        match self.config.balancing {
            Balancing::RoundRobin => {
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                (0..turn)
                    .map(|k| slot(start.wrapping_add(k)))
                    .find(|&i| usable(i))
            }
            Balancing::LeastRequest => {
                let weight = |i: usize| u64::from(self.upstreams[i].weight());
                let load = |i: usize| self.upstreams[i].state.in_flight() as u64;
                // Lighter is fewer requests per unit of weight: a/wa < b/wb.
                let lighter = |a: usize, b: usize| load(b) * weight(a) < load(a) * weight(b);
                if n >= 2 {
                    let a = slot(fastrand::usize(..turn));
                    let mut b = slot(fastrand::usize(..turn));
                    if b == a {
                        b = (a + 1 + fastrand::usize(..n - 1)) % n;
                    }
                    match (usable(a), usable(b)) {
                        (true, true) => return Some(if lighter(a, b) { b } else { a }),
                        (true, false) => return Some(a),
                        (false, true) => return Some(b),
                        (false, false) => {}
                    }
                }
                (0..n)
                    .filter(|&i| usable(i))
                    .reduce(|best, i| if lighter(best, i) { i } else { best })
            }
        }
    }

    /// Skips the upstream for the pool's `fail_timeout` after it failed a connection (passive
    /// health), and counts it.
    pub fn eject(&self, index: usize) {
        let fail = self.config.timeouts.fail;
        if let Some(upstream) = self.upstreams.get(index) {
            if !fail.is_zero() {
                upstream.state.eject_for(fail);
                upstream.ejections.inc();
            }
        }
    }

    /// Counts a request against the upstream until the returned guard drops, when the pool balances
    /// by load; otherwise does nothing (no shared counter to contend on).
    pub fn begin_request(&self, index: usize) -> Option<InFlight> {
        if self.config.balancing != Balancing::LeastRequest {
            return None;
        }
        let state = Arc::clone(&self.upstreams.get(index)?.state);
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(state))
    }
}

/// A request in flight on an upstream; the count drops with it, however the request ends.
#[derive(Debug)]
pub struct InFlight(Arc<UpstreamState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{PoolTimeouts, UpstreamConfig};

    fn pool(n: u16, balancing: Balancing) -> Pool {
        Pool::new(pool_config(n, balancing), |_| None)
    }

    fn pool_config(n: u16, balancing: Balancing) -> PoolConfig {
        PoolConfig {
            name: "p".into(),
            upstreams: (0..n)
                .map(|i| {
                    let addr = SocketAddr::from(([127, 0, 0, 1], 9000 + i));
                    UpstreamConfig {
                        label: addr.to_string(),
                        addr,
                        weight: 1,
                    }
                })
                .collect(),
            balancing,
            health_check: None,
            timeouts: PoolTimeouts::default(),
            tls: None,
            retries: Default::default(),
            protocol: Default::default(),
        }
    }

    fn weighted(weights: &[u32], balancing: Balancing) -> Pool {
        let mut config = pool_config(weights.len() as u16, balancing);
        for (u, &w) in config.upstreams.iter_mut().zip(weights) {
            u.weight = w;
        }
        Pool::new(config, |_| None)
    }

    #[test]
    fn weights_spread_a_turn_smoothly() {
        assert_eq!(&*weighted_schedule(&[1, 1, 1]), &[] as &[u16]);
        assert_eq!(&*weighted_schedule(&[3, 1]), &[0, 0, 1, 0]);
        assert_eq!(&*weighted_schedule(&[5, 1, 1]), &[0, 0, 1, 0, 2, 0, 0]);
        let p = weighted(&[3, 1], Balancing::RoundRobin);
        let picks: Vec<_> = (0..8).filter_map(|_| p.select(Tried::default())).collect();
        assert_eq!(picks, [0, 0, 1, 0, 0, 0, 1, 0]);
        // Failover still reaches every upstream within a turn.
        p.upstreams[0].state.set_healthy(false);
        for _ in 0..4 {
            assert_eq!(p.select(Tried::default()), Some(1));
        }
    }

    #[test]
    fn least_request_weighs_load_against_weight() {
        let p = weighted(&[4, 1], Balancing::LeastRequest);
        // Three requests on the heavy upstream are less load per weight than one on the light.
        let _heavy: Vec<_> = (0..3).filter_map(|_| p.begin_request(0)).collect();
        let _light = p.begin_request(1);
        for _ in 0..20 {
            assert_eq!(p.select(Tried::default()), Some(0));
        }
    }

    #[test]
    fn the_retry_budget_is_a_share_of_the_requests_with_a_floor() {
        let budget = RetryBudget::new(20);
        let start = budget.window.load(Ordering::Relaxed) * BUDGET_WINDOW_MS;
        // A quiet pool still has the floor.
        let granted = (0..50).filter(|_| budget.try_retry(start)).count() as u64;
        assert_eq!(granted, MIN_RETRIES_PER_WINDOW);
        // 200 requests allow 40 retries in the window, 10 of which are spent.
        for _ in 0..200 {
            budget.note_request(start + 1);
        }
        let granted = (0..100).filter(|_| budget.try_retry(start + 2)).count();
        assert_eq!(granted, 30);
        // The next window starts with the last one's requests, and no retries spent.
        let next = start + BUDGET_WINDOW_MS;
        let granted = (0..100).filter(|_| budget.try_retry(next)).count();
        assert_eq!(granted, 40);
        // After a silent window there is nothing to carry.
        let later = next + 3 * BUDGET_WINDOW_MS;
        let granted = (0..100).filter(|_| budget.try_retry(later)).count() as u64;
        assert_eq!(granted, MIN_RETRIES_PER_WINDOW);
    }

    #[test]
    fn the_keepalive_pool_follows_the_distinct_upstreams_within_its_bounds() {
        let two = pool_config(2, Balancing::RoundRobin);
        let same_two = pool_config(2, Balancing::LeastRequest);
        assert_eq!(keepalive_pool_size(None, &[]), KEEPALIVE_PER_UPSTREAM);
        assert_eq!(
            keepalive_pool_size(None, &[two.clone(), same_two]),
            2 * KEEPALIVE_PER_UPSTREAM
        );
        let many = pool_config(100, Balancing::RoundRobin);
        assert_eq!(keepalive_pool_size(None, &[many]), KEEPALIVE_DEFAULT_CAP);
        assert_eq!(keepalive_pool_size(Some(7), &[two]), 7);
    }

    #[test]
    fn round_robin_visits_every_upstream_in_turn() {
        let p = pool(3, Balancing::RoundRobin);
        let picks: Vec<_> = (0..6).filter_map(|_| p.select(Tried::default())).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn unavailable_and_excluded_upstreams_are_skipped() {
        let p = pool(3, Balancing::RoundRobin);
        p.upstreams[1].state.set_healthy(false);
        p.upstreams[2].state.eject_for(Duration::from_secs(60));
        for _ in 0..5 {
            assert_eq!(p.select(Tried::default()), Some(0));
        }
        // With 0 excluded, the ejected (but healthy) 2 is tried rather than nothing.
        let mut exclude = Tried::default();
        exclude.insert(0);
        assert_eq!(p.select(exclude), Some(2));
        exclude.insert(2);
        assert_eq!(p.select(exclude), None);
        assert!(p.has_available());
    }

    #[test]
    fn a_passing_check_ends_an_ejection_early() {
        let p = pool(2, Balancing::RoundRobin);
        p.upstreams[1].state.eject_for(Duration::from_secs(60));
        assert!(!p.upstreams[1].state.is_available());
        p.upstreams[1].state.set_healthy(true);
        assert!(p.upstreams[1].state.is_available());
    }

    #[test]
    fn an_ejected_upstream_is_avoided_until_its_ejection_ends() {
        let p = pool(2, Balancing::RoundRobin);
        p.upstreams[0].state.eject_for(Duration::from_millis(30));
        for _ in 0..4 {
            assert_eq!(p.select(Tried::default()), Some(1));
        }
        std::thread::sleep(Duration::from_millis(50));
        let picks: Vec<_> = (0..4).filter_map(|_| p.select(Tried::default())).collect();
        assert!(picks.contains(&0) && picks.contains(&1), "{picks:?}");
    }

    #[test]
    fn when_every_upstream_is_ejected_the_healthy_ones_are_still_tried() {
        let p = pool(2, Balancing::LeastRequest);
        p.upstreams[0].state.eject_for(Duration::from_secs(60));
        p.upstreams[1].state.eject_for(Duration::from_secs(60));
        assert!(!p.has_available());
        let first = p
            .select(Tried::default())
            .expect("an ejected upstream to try");
        let mut exclude = Tried::default();
        exclude.insert(first);
        assert_eq!(p.select(exclude), Some(1 - first));
        exclude.insert(1 - first);
        assert_eq!(p.select(exclude), None);
        // Unhealthy by active checks is never tried.
        p.upstreams[0].state.set_healthy(false);
        p.upstreams[1].state.set_healthy(false);
        assert_eq!(p.select(Tried::default()), None);
    }

    #[test]
    fn least_request_prefers_the_idle_upstream() {
        let p = pool(2, Balancing::LeastRequest);
        let _busy: Vec<_> = (0..3).filter_map(|_| p.begin_request(0)).collect();
        for _ in 0..20 {
            assert_eq!(p.select(Tried::default()), Some(1));
        }
        drop(_busy);
        assert_eq!(p.upstreams[0].state.in_flight(), 0);
    }

    #[test]
    fn least_request_falls_back_to_any_available_upstream() {
        let p = pool(4, Balancing::LeastRequest);
        for i in [0, 1, 3] {
            p.upstreams[i].state.set_healthy(false);
        }
        for _ in 0..20 {
            assert_eq!(p.select(Tried::default()), Some(2));
        }
        p.upstreams[2].state.set_healthy(false);
        assert_eq!(p.select(Tried::default()), None);
    }

    #[test]
    fn round_robin_does_not_count_in_flight_requests() {
        let p = pool(2, Balancing::RoundRobin);
        assert!(p.begin_request(0).is_none());
    }
}
