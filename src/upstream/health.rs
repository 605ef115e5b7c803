//! Active health checks: each upstream of a pool with `health_check` is probed on its interval (HTTP
//! `GET path` expecting 200, or a TCP connect), and flips between healthy and unhealthy after the
//! configured number of consecutive results. Probes are Pingora's own (`HttpHealthCheck`,
//! `TcpHealthCheck`); the thresholds and the state they drive are ours, shared with the request path
//! through `UpstreamState`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::tls::CaType;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::PeerOptions;
use tokio::sync::watch;

use super::{Pool, Upstream, UpstreamState};
use crate::config::model::{HealthCheckConfig, Probe, UpstreamTls};
use crate::metrics::Metrics;

/// Counts consecutive probe results that disagree with the current verdict.
#[derive(Debug, Default)]
pub struct Streak {
    against: u32,
}

impl Streak {
    /// Feeds one probe result; returns the new verdict when the streak reaches its threshold.
    pub fn observe(&mut self, passed: bool, healthy: bool, rise: u32, fall: u32) -> Option<bool> {
        if passed == healthy {
            self.against = 0;
            return None;
        }
        self.against += 1;
        let needed = if passed { rise } else { fall };
        if self.against >= needed {
            self.against = 0;
            Some(passed)
        } else {
            None
        }
    }
}

/// Runs the health checks of the routing table in use, following it across reloads: an upstream that
/// appears gets a probe loop, one that goes away loses it, one that stays keeps its loop and state.
pub struct HealthChecker {
    pools: CurrentPools,
    /// Changes whenever another table is put in use.
    changes: watch::Receiver<u64>,
}

/// The pools of the routing table in use (which hands this over, so that upstreams need not know
/// the table).
pub type CurrentPools = Box<dyn Fn() -> Vec<Arc<Pool>> + Send + Sync>;

impl HealthChecker {
    pub fn new(pools: CurrentPools, changes: watch::Receiver<u64>) -> Self {
        HealthChecker { pools, changes }
    }

    /// Makes the running probe loops match the current table. Loops are keyed by their upstream's
    /// shared state, which the loop itself holds, so a key cannot be reused while its loop runs.
    fn reconcile(&self, running: &mut HashMap<usize, Running>) {
        let pools = (self.pools)();
        let mut wanted: HashMap<usize, (&Pool, &Upstream, &HealthCheckConfig)> = HashMap::new();
        for pool in pools.iter().map(Arc::as_ref) {
            if let Some(check) = &pool.config.health_check {
                for upstream in pool.upstreams() {
                    wanted.insert(
                        Arc::as_ptr(&upstream.state) as usize,
                        (pool, upstream, check),
                    );
                }
            }
        }
        running.retain(|key, loop_| {
            let keep = wanted.get(key).is_some_and(|(pool, _, check)| {
                **check == loop_.check && pool.config.tls == loop_.tls
            });
            if !keep {
                loop_.handle.abort();
            }
            keep
        });
        for (key, (pool, upstream, check)) in wanted {
            running.entry(key).or_insert_with(|| Running {
                handle: tokio::spawn(watch_upstream(Target::new(pool, upstream), check.clone())),
                check: check.clone(),
                tls: pool.config.tls.clone(),
            });
        }
    }
}

struct Running {
    handle: tokio::task::JoinHandle<()>,
    check: HealthCheckConfig,
    /// A probe is rebuilt when the pool's TLS settings change, as when its check does.
    tls: Option<UpstreamTls>,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut generations = self.changes.clone();
        let mut running = HashMap::new();
        loop {
            self.reconcile(&mut running);
            tokio::select! {
                changed = generations.changed() => if changed.is_err() { break },
                _ = shutdown.changed() => break,
            }
        }
        for loop_ in running.values() {
            loop_.handle.abort();
        }
    }
}

/// Probes one upstream once, now: with the pool's own check, or a TCP connect within the pool's
/// connect timeout when it has none. Used before a new upstream takes traffic and before a promotion.
pub async fn probe_now(pool: &Pool, upstream: &Upstream) -> Result<(), String> {
    let check = pool
        .config
        .health_check
        .clone()
        .unwrap_or_else(|| HealthCheckConfig {
            probe: Probe::Tcp,
            interval: Duration::from_secs(1),
            timeout: pool.config.timeouts.connect,
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        });
    let target = Target::new(pool, upstream);
    let probe = probe_for(&check, &target);
    match tokio::time::timeout(bound(&check), probe.check(&target.backend)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// The probe has its own connect and read timeouts; this bounds anything else it might do.
fn bound(check: &HealthCheckConfig) -> Duration {
    check.timeout * 2 + Duration::from_millis(100)
}

/// What one probe loop watches.
struct Target {
    pool: String,
    label: String,
    backend: Backend,
    state: Arc<UpstreamState>,
    tls: Option<UpstreamTls>,
    ca: Option<Arc<CaType>>,
}

impl Target {
    fn new(pool: &Pool, upstream: &Upstream) -> Self {
        Target {
            pool: pool.name().to_owned(),
            label: upstream.label.clone(),
            backend: Backend {
                addr: PingoraAddr::Inet(upstream.addr),
                weight: 1,
                ext: Default::default(),
            },
            state: Arc::clone(&upstream.state),
            tls: pool.config.tls.clone(),
            ca: pool.tls_ca().cloned(),
        }
    }

    /// Probes go over TLS as requests do, verified the same way.
    fn secure(&self, options: &mut PeerOptions, sni: &mut String) {
        if let Some(tls) = &self.tls {
            sni.clone_from(&tls.sni);
            options.verify_cert = tls.verify;
            options.verify_hostname = tls.verify;
            options.ca = self.ca.clone();
        }
    }
}

fn probe_for(check: &HealthCheckConfig, target: &Target) -> Box<dyn HealthCheck + Send + Sync> {
    match &check.probe {
        Probe::Tcp => {
            let mut tcp = match &target.tls {
                Some(tls) => TcpHealthCheck::new_tls(&tls.sni),
                None => TcpHealthCheck::new(),
            };
            let template = &mut tcp.peer_template;
            target.secure(&mut template.options, &mut template.sni);
            tcp.peer_template.options.connection_timeout = Some(check.timeout);
            tcp
        }
        Probe::Http { path, host } => {
            // Over TLS, the name the certificate is for is also the name the backend serves.
            let host = host
                .clone()
                .or_else(|| {
                    let tls = target.tls.as_ref()?;
                    (!tls.sni.is_empty()).then(|| tls.sni.clone())
                })
                .unwrap_or_else(|| target.backend.addr.to_string());
            let mut http = HttpHealthCheck::new(&host, target.tls.is_some());
            let template = &mut http.peer_template;
            target.secure(&mut template.options, &mut template.sni);
            match RequestHeader::build("GET", path.as_bytes(), None) {
                Ok(mut req) => {
                    // Validated at load time; a failure here would only keep the default path.
                    if req.insert_header(http::header::HOST, host.as_str()).is_ok() {
                        http.req = req;
                    }
                }
                Err(e) => {
                    tracing::warn!(pool = %target.pool, error = %e, "health check path not usable")
                }
            }
            http.peer_template.options.connection_timeout = Some(check.timeout);
            http.peer_template.options.read_timeout = Some(check.timeout);
            Box::new(http)
        }
    }
}

async fn watch_upstream(target: Target, check: HealthCheckConfig) {
    let probe = probe_for(&check, &target);
    let metrics = Metrics::get();
    let gauge = metrics.upstream_healthy(&target.pool, &target.label);
    gauge.set(i64::from(target.state.is_healthy()));
    let mut streak = Streak::default();
    let mut ticks = tokio::time::interval(check.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outcome = tokio::time::timeout(bound(&check), probe.check(&target.backend)).await;
        let passed = matches!(outcome, Ok(Ok(())));
        let healthy = target.state.is_healthy();
        match streak.observe(
            passed,
            healthy,
            check.healthy_threshold,
            check.unhealthy_threshold,
        ) {
            Some(true) => {
                target.state.set_healthy(true);
                tracing::info!(pool = %target.pool, upstream = %target.label, "upstream is healthy again");
            }
            Some(false) => {
                target.state.set_healthy(false);
                let reason = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(pool = %target.pool, upstream = %target.label, %reason, "upstream failed its health check");
            }
            // A passing probe of a healthy upstream also ends a passive ejection early.
            None if passed && healthy && target.state.is_ejected() => {
                target.state.set_healthy(true)
            }
            None => {}
        }
        gauge.set(i64::from(target.state.is_healthy()));
    }
}

#[cfg(test)]
mod tests {
    use super::Streak;

    #[test]
    fn flips_only_after_the_threshold_of_consecutive_results() {
        let mut s = Streak::default();
        // Healthy, fall = 3: two failures and a pass reset the streak.
        assert_eq!(s.observe(false, true, 2, 3), None);
        assert_eq!(s.observe(false, true, 2, 3), None);
        assert_eq!(s.observe(true, true, 2, 3), None);
        assert_eq!(s.observe(false, true, 2, 3), None);
        assert_eq!(s.observe(false, true, 2, 3), None);
        assert_eq!(s.observe(false, true, 2, 3), Some(false));
        // Unhealthy, rise = 2.
        assert_eq!(s.observe(true, false, 2, 3), None);
        assert_eq!(s.observe(true, false, 2, 3), Some(true));
    }

    #[test]
    fn a_threshold_of_one_flips_at_once() {
        let mut s = Streak::default();
        assert_eq!(s.observe(false, true, 1, 1), Some(false));
        assert_eq!(s.observe(true, false, 1, 1), Some(true));
    }
}
