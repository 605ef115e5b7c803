//! Cost of resolving a request's host to its tenant and pool, for routing tables of 1,000 to 100,000
//! tenants. The per-lookup cost must not grow with the number of tenants.
//!
//! Each iteration resolves a different host from a set of 1,024 spread over the whole table, so the
//! figure includes the cache misses a real mix of tenants causes.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::HeaderName;
use tenantgate::config::model::{
    Balancing, PoolConfig, PoolTimeouts, RoutingConfig, TenantConfig, UpstreamConfig,
};
use tenantgate::host::{normalize_host, MAX_HOST_LEN};
use tenantgate::snapshot::RoutingTable;
use tenantgate::tenant::{TenantId, TenantStatus};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const PROBES: usize = 1_024;

fn routing_config(tenants: usize) -> RoutingConfig {
    let addr = SocketAddr::from(([127, 0, 0, 1], 9001));
    let pool = |name: &str| PoolConfig {
        name: name.to_owned(),
        upstreams: vec![UpstreamConfig {
            label: addr.to_string(),
            addr,
            weight: 1,
        }],
        balancing: Balancing::RoundRobin,
        health_check: None,
        timeouts: PoolTimeouts::default(),
        tls: None,
        retries: Default::default(),
        protocol: Default::default(),
    };
    RoutingConfig {
        base_domains: vec!["yourapp.test".into()],
        tenant_header: HeaderName::from_static("x-tenant-id"),
        tenant_header_spelling: "X-Tenant-ID",
        access_log: false,
        trusted_proxies: Default::default(),
        pools: vec![pool("shared"), pool("dedicated")],
        tenants: (0..tenants)
            .map(|i| TenantConfig {
                id: TenantId::parse(&format!("tenant-{i}")).expect("slug"),
                name: format!("Tenant {i}"),
                status: TenantStatus::Active,
                pool: if i % 10 == 0 { "dedicated" } else { "shared" }.to_owned(),
                domains: vec![format!("api.customer-{i}.example")],
                previous_pool: None,
                canary: None,
                https_redirect: None,
                hsts: None,
                tenant_source: None,
                api_keys: Vec::new(),
                route_rules: Vec::new(),
                plan: None,
                limits: Default::default(),
                acme: true,
                maintenance: Default::default(),
            })
            .collect(),
        hosts: Vec::new(),
        tls: Default::default(),
        identity: Default::default(),
        metrics: Default::default(),
    }
}

/// `PROBES` hosts spread evenly over the table.
fn probes(tenants: usize, host: impl Fn(usize) -> String) -> Vec<String> {
    (0..PROBES).map(|k| host(k * 7919 % tenants)).collect()
}

fn resolve(c: &mut Criterion) {
    let mut group = c.benchmark_group("resolve");
    group.throughput(Throughput::Elements(1));
    for &n in &SIZES {
        let table = RoutingTable::build(&routing_config(n), 1, None);
        let cases = [
            (
                "subdomain",
                probes(n, |i| format!("tenant-{i}.yourapp.test")),
            ),
            (
                "custom_domain",
                probes(n, |i| format!("api.customer-{i}.example")),
            ),
            ("unknown", probes(n, |i| format!("nobody-{i}.yourapp.test"))),
        ];
        for (name, hosts) in &cases {
            group.bench_with_input(BenchmarkId::new(*name, n), hosts, |b, hosts| {
                let mut k = 0;
                b.iter(|| {
                    k = (k + 1) % hosts.len();
                    black_box(table.resolve(black_box(&hosts[k]), 50).is_ok())
                })
            });
        }
    }
    group.finish();
}

fn normalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize_host");
    for host in ["acme.yourapp.test", "ACME.YourApp.Test.:8443"] {
        group.bench_function(host, |b| {
            let mut buf = [0u8; MAX_HOST_LEN];
            b.iter(|| normalize_host(black_box(host.as_bytes()), &mut buf).map(str::len))
        });
    }
    group.finish();
}

criterion_group!(benches, resolve, normalize);
criterion_main!(benches);
