//! What the rate limiter adds to a request: `limits::fleet::decide` for a tenant with no limit (the
//! baseline), with its own limit on this instance (`local`), with tenant, credential and route limits
//! nested, in fleet `sync` mode (local decision plus the count for the next sync), and in fleet
//! `exact` mode (one Lua script call to a real Redis on loopback per request).
//!
//! `exact` needs a redis-server: `TENANTGATE_REDIS_SERVER` (`scripts/ensure-redis.sh` prints one) or
//! PATH; the
//! bench starts its own on a free loopback port and stops it by PID. The bucket's rate is far above
//! what the loop sends, so every call is an admitted request, the common case.

use std::hint::black_box;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tenantgate::config::load_str;
use tenantgate::limits::fleet::{decide, Fleet};
use tenantgate::limits::Credential;
use tenantgate::snapshot::RoutingTable;

fn table(redis: &str, mode: &str) -> (RoutingTable, Option<Arc<Fleet>>) {
    let text = format!(
        r#"
[limits.redis]
url = "{redis}"
mode = "{mode}"
timeout_ms = 1000

[pools.shared]
upstreams = ["127.0.0.1:9001"]

[tenants.free]
pool = "shared"

[tenants.acme]
pool = "shared"
rate_limit = {{ requests_per_second = 10000000, burst = 1000000 }}

[tenants.nested]
pool = "shared"
rate_limit = {{ requests_per_second = 10000000, burst = 1000000 }}
credential_rate_limit = {{ requests_per_second = 10000000, burst = 1000000 }}
route_limits = [{{ path_prefix = "/search", rate_limit = {{ requests_per_second = 10000000, burst = 1000000 }} }}]
"#
    );
    let config = load_str(Path::new("bench.toml"), &text).expect("bench config");
    let fleet = config.gateway.fleet.clone().map(Fleet::new);
    (RoutingTable::build(&config.routing, 1, None), fleet)
}

struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<(RedisServer, String)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let binary = std::env::var("TENANTGATE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let child = Command::new(binary)
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = RedisServer(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((server, format!("redis://127.0.0.1:{port}/0")))
}

fn limits(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let redis = start_redis();
    let url = redis
        .as_ref()
        .map_or("redis://127.0.0.1:1/0".to_owned(), |(_, u)| u.clone());
    let mut group = c.benchmark_group("limit");

    let (local, _) = table(&url, "sync");
    let run = |table: &RoutingTable, fleet: Option<&Fleet>, tenant: &str, path: &'static str| {
        let limiter = &table.tenant_by_id(tenant).expect("tenant").limiter;
        let credential = Some(Credential::Subject("user-1"));
        runtime.block_on(decide(fleet, limiter, credential, path))
    };
    group.bench_function("unlimited", |b| {
        b.iter(|| black_box(run(&local, None, "free", "/")))
    });
    group.bench_function("local", |b| {
        b.iter(|| black_box(run(&local, None, "acme", "/")))
    });
    group.bench_function("local_nested", |b| {
        b.iter(|| black_box(run(&local, None, "nested", "/search/q")))
    });
    let (synced, fleet) = table(&url, "sync");
    let fleet = fleet.expect("fleet");
    group.bench_function("sync", |b| {
        b.iter(|| black_box(run(&synced, Some(&fleet), "acme", "/")))
    });
    match &redis {
        Some(_) => {
            let (exact, fleet) = table(&url, "exact");
            let fleet = fleet.expect("fleet");
            runtime
                .block_on(async { fleet.connect() })
                .expect("redis client");
            group.bench_function("exact", |b| {
                b.iter(|| black_box(run(&exact, Some(&fleet), "acme", "/")))
            });
            group.bench_function("exact_nested", |b| {
                b.iter(|| black_box(run(&exact, Some(&fleet), "nested", "/search/q")))
            });
        }
        None => eprintln!("no redis-server: the exact-mode benches are skipped"),
    }
    group.finish();
}

criterion_group!(benches, limits);
criterion_main!(benches);
