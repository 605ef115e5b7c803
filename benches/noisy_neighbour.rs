//! End to end, with the release gateway, real loopback upstreams and (for the fleet part) a real
//! Redis, all started by the integration tests' harness:
//! - Noisy neighbour: tenant B sends steady traffic alone, then again while tenant A floods the same
//!   shared pool at 10x its rate limit. B's success rate and latency percentiles in both runs.
//! - Fleet hold: two gateway instances share tenant C's limit through Redis (`sync`, then `exact`),
//!   each driven at 1.5x the whole limit; what the pair admits in steady state against the limit.
//!   Two instances without Redis are shown for contrast.
//!
//! `cargo bench --bench noisy_neighbour` (needs redis-server: `TENANTGATE_REDIS_SERVER` or PATH).
//! Every load is open-loop (requests sent on a fixed schedule, not when the previous one answers),
//! bounded in count and time.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::redis::Redis;
use support::{Gateway, Upstream};
use tokio::task::JoinSet;

const RUN: Duration = Duration::from_secs(10);
const B_PER_SECOND: u32 = 200;
const A_LIMIT: u32 = 100;
const C_LIMIT: u32 = 100;

const NOISY: &str = r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]
access_log = false
threads = 1

[admin]
listen = "{admin}"

[pools.shared]
upstreams = ["{shared}"]

[tenants.a]
pool = "shared"
rate_limit = { requests_per_second = A_LIMIT, burst = A_LIMIT }
concurrency = { max_in_flight = 20 }

[tenants.b]
pool = "shared"
rate_limit = { requests_per_second = 1000, burst = 1000 }
"#;

/// One request's outcome: status (0: failed to get one) and when it started and how long it took.
#[derive(Clone, Copy)]
struct Outcome {
    status: u16,
    started: Duration,
    took: Duration,
}

/// Sends `per_second` requests a second to `host` for `run`, on schedule, and waits for them all.
async fn paced(gw: &Gateway, host: &str, per_second: u32, run: Duration) -> Vec<Outcome> {
    let total = (f64::from(per_second) * run.as_secs_f64()) as u32;
    let interval = Duration::from_secs_f64(1.0 / f64::from(per_second));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..total {
        let due = start + interval * i;
        tokio::time::sleep_until(due.into()).await;
        let req = gw.get(host, "/?sleep_ms=2");
        tasks.spawn(async move {
            let sent = Instant::now();
            let status = match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let _ = r.bytes().await;
                    status
                }
                Err(_) => 0,
            };
            Outcome {
                status,
                started: sent - start,
                took: sent.elapsed(),
            }
        });
    }
    let mut out = Vec::with_capacity(total as usize);
    while let Some(done) = tasks.join_next().await {
        if let Ok(o) = done {
            out.push(o);
        }
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

struct Summary {
    sent: usize,
    ok: usize,
    limited: usize,
    p50: Duration,
    p99: Duration,
}

fn summarize(outcomes: &[Outcome]) -> Summary {
    let mut ok_times: Vec<Duration> = outcomes
        .iter()
        .filter(|o| o.status == 200)
        .map(|o| o.took)
        .collect();
    ok_times.sort();
    Summary {
        sent: outcomes.len(),
        ok: ok_times.len(),
        limited: outcomes
            .iter()
            .filter(|o| o.status == 429 || o.status == 503)
            .count(),
        p50: percentile(&ok_times, 0.5),
        p99: percentile(&ok_times, 0.99),
    }
}

async fn noisy_neighbour() {
    let shared = Upstream::start("shared").await;
    let config = NOISY.replace("A_LIMIT", &A_LIMIT.to_string());
    let gw = Gateway::start(&config, &[&shared]).await;
    // Warm the connection pools on both sides.
    let _ = paced(&gw, "b.yourapp.test", B_PER_SECOND, Duration::from_secs(1)).await;

    let alone = summarize(&paced(&gw, "b.yourapp.test", B_PER_SECOND, RUN).await);
    let (b, a) = tokio::join!(
        paced(&gw, "b.yourapp.test", B_PER_SECOND, RUN),
        paced(&gw, "a.yourapp.test", A_LIMIT * 10, RUN),
    );
    let (with_flood, a) = (summarize(&b), summarize(&a));

    println!("\nnoisy neighbour: B steady at {B_PER_SECOND}/s for {}s; A's limit {A_LIMIT}/s, sent at 10x", RUN.as_secs());
    println!(
        "| run | B sent | B ok | B success | B p50 | B p99 | A sent | A ok | A refused (429/503) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, s, a) in [
        ("B alone", &alone, None),
        ("B while A floods", &with_flood, Some(&a)),
    ] {
        println!(
            "| {name} | {} | {} | {:.2}% | {} | {} | {} | {} | {} |",
            s.sent,
            s.ok,
            100.0 * s.ok as f64 / s.sent.max(1) as f64,
            ms(s.p50),
            ms(s.p99),
            a.map_or("-".into(), |a| a.sent.to_string()),
            a.map_or("-".into(), |a| a.ok.to_string()),
            a.map_or("-".into(), |a| a.limited.to_string()),
        );
    }
    println!(
        "B's p99 with the flood / alone: {:.2}x (target: within 1.20x); B's p50: {:.2}x",
        with_flood.p99.as_secs_f64() / alone.p99.as_secs_f64().max(1e-9),
        with_flood.p50.as_secs_f64() / alone.p50.as_secs_f64().max(1e-9),
    );
}

fn fleet_config(redis: Option<&Redis>, mode: &str) -> String {
    let redis = redis.map_or(String::new(), |r| {
        format!(
            "[limits.redis]\nurl = \"{}\"\nmode = \"{mode}\"\nkey_prefix = \"bench-{mode}\"\n",
            r.url()
        )
    });
    format!(
        r#"
[gateway]
http_listen = "{{http}}"
base_domains = ["yourapp.test"]
access_log = false
threads = 1

[admin]
listen = "{{admin}}"

{redis}
[pools.shared]
upstreams = ["{{shared}}"]

[tenants.c]
pool = "shared"
rate_limit = {{ requests_per_second = {C_LIMIT}, burst = 20 }}
"#
    )
}

async fn fleet_hold() {
    let shared = Upstream::start("shared").await;
    let redis = Redis::start();
    let run = Duration::from_secs(12);
    let steady_from = Duration::from_secs(2);
    let per_instance = C_LIMIT * 3 / 2;
    println!("\nfleet hold: two instances, tenant C limited to {C_LIMIT}/s (burst 20), each instance sent {per_instance}/s for {}s; admitted counted from {}s on", run.as_secs(), steady_from.as_secs());
    println!("| limit store | admitted in steady state | per second | of the limit |");
    println!("|---|---|---|---|");
    for (label, redis, mode) in [
        ("redis, sync (200 ms)", Some(&redis), "sync"),
        ("redis, exact", Some(&redis), "exact"),
        ("none (each instance alone)", None, "local"),
    ] {
        let config = fleet_config(redis, mode);
        let a = Gateway::start(&config, &[&shared]).await;
        let b = Gateway::start(&config, &[&shared]).await;
        let (x, y) = tokio::join!(
            paced(&a, "c.yourapp.test", per_instance, run),
            paced(&b, "c.yourapp.test", per_instance, run)
        );
        let steady = x
            .iter()
            .chain(&y)
            .filter(|o| o.status == 200 && o.started >= steady_from)
            .count();
        let seconds = (run - steady_from).as_secs_f64();
        let rate = steady as f64 / seconds;
        println!(
            "| {label} | {steady} | {rate:.1} | {:.3}x |",
            rate / f64::from(C_LIMIT)
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing and run it too.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        noisy_neighbour().await;
        fleet_hold().await;
    });
}
