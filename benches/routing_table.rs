//! What a reload costs before the swap: reading and validating a config file (`load_str`) and building
//! the routing table from it (`RoutingTable::build`), for 1,000 to 100,000 tenants; and how much memory
//! the built table holds (printed before the timings, counted by this bench's allocator).
//!
//! Beside them, what a change of one tenant costs as a delta (a fleet's store change): validating it
//! against the rest (`validate_delta`) and making the next table from the one in use
//! (`RoutingTable::apply`); and what publishing a table to the metrics costs, whole
//! (`observe_table`) and for a delta (`observe_delta`).

use std::alloc::{GlobalAlloc, Layout};
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mimalloc::MiMalloc;
use tenantgate::config::load::load_with_store;
use tenantgate::config::load_str;
use tenantgate::config::shared::{split, Entity};
use tenantgate::config::validate::{validate_delta, EntryChange, Mirror};
use tenantgate::metrics::Metrics;
use tenantgate::snapshot::table::TableDelta;
use tenantgate::snapshot::RoutingTable;

/// Counts live heap bytes, to measure what a built table keeps. Allocates with mimalloc, as the
/// gateway does, so the timings are the gateway's.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to mimalloc.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `alloc` above (mimalloc) with this layout.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

/// A config with `n` tenants over three pools, each tenant with a custom domain, as operators write it.
pub fn config_text(n: usize) -> String {
    let mut text = String::with_capacity(n * 100 + 1000);
    text.push_str("[gateway]\nbase_domains = [\"yourapp.test\"]\n\n");
    for pool in ["shared", "eu", "dedicated"] {
        let _ = writeln!(
            text,
            "[pools.{pool}]\nupstreams = [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\n"
        );
    }
    for i in 0..n {
        let pool = ["shared", "eu", "dedicated"][i % 3];
        let _ = writeln!(
            text,
            "[tenants.tenant-{i}]\nname = \"Tenant {i}\"\npool = \"{pool}\"\ndomains = [\"api.customer-{i}.example\"]\n"
        );
    }
    text
}

fn memory_report() {
    println!("routing table memory (live heap bytes held by RoutingTable::build):");
    for &n in &SIZES {
        let text = config_text(n);
        let config = load_str(Path::new("bench.toml"), &text).expect("valid");
        let before = LIVE.load(Ordering::Relaxed);
        let table = RoutingTable::build(&config.routing, 1, None);
        let held = LIVE.load(Ordering::Relaxed).saturating_sub(before);
        println!(
            "  {n:>7} tenants: {:>7.1} MiB ({:.0} bytes per tenant); config text {:.1} MiB",
            held as f64 / (1024.0 * 1024.0),
            held as f64 / n as f64,
            text.len() as f64 / (1024.0 * 1024.0)
        );
        black_box(table);
    }
}

fn reload_work(c: &mut Criterion) {
    memory_report();
    let mut group = c.benchmark_group("reload");
    group.sample_size(10);
    for &n in &SIZES {
        let text = config_text(n);
        group.bench_with_input(
            BenchmarkId::new("parse_and_validate", n),
            &text,
            |b, text| {
                b.iter(|| {
                    load_str(Path::new("bench.toml"), black_box(text))
                        .map(|c| c.routing.tenants.len())
                })
            },
        );
        let config = load_str(Path::new("bench.toml"), &text).expect("valid");
        let previous = RoutingTable::build(&config.routing, 1, None);
        group.bench_with_input(BenchmarkId::new("build_table", n), &config, |b, config| {
            b.iter(|| {
                RoutingTable::build(black_box(&config.routing), 2, Some(&previous)).tenant_count()
            })
        });
    }
    group.finish();
}

/// A store's entries, as the delta's validation reads them.
struct Entries(BTreeMap<Entity, String>);

impl Mirror for Entries {
    fn text(&self, entity: &Entity) -> Option<&str> {
        self.0.get(entity).map(String::as_str)
    }

    fn plans(&self) -> Vec<(&str, &str)> {
        Vec::new()
    }
}

const INSTANCE: &str = "[store]\netcd = [\"http://127.0.0.1:2379\"]\nprefix = \"/bench\"\n";

fn delta_work(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_tenant");
    group.sample_size(20);
    for &n in &SIZES {
        let text = config_text(n);
        let doc: toml_edit::DocumentMut = text.parse().expect("TOML");
        let entries = Entries(split(&doc).entries.into_iter().collect());
        let list: Vec<(&Entity, &str)> = entries.0.iter().map(|(e, t)| (e, t.as_str())).collect();
        let path = Path::new("instance.toml");
        let config = load_with_store(path, INSTANCE, "etcd:/bench/", &list).expect("valid");
        let table = RoutingTable::build(&config.routing, 1, None);
        let id = Entity::Tenant(format!("tenant-{}", n / 2));
        let mut changed = Entries(entries.0.clone());
        changed.0.insert(
            id.clone(),
            format!(
                "name = \"Renamed\"\npool = \"eu\"\ndomains = [\"api.customer-{}.example\"]\n",
                n / 2
            ),
        );
        let change = [EntryChange {
            entity: &id,
            text: changed.text(&id),
        }];
        group.bench_function(BenchmarkId::new("validate_delta", n), |b| {
            b.iter(|| {
                validate_delta(
                    &config,
                    INSTANCE,
                    &table,
                    &changed,
                    black_box(&change),
                    "etcd:/bench/",
                )
                .map(|d| d.tenants.len())
            })
        });
        let delta = validate_delta(&config, INSTANCE, &table, &changed, &change, "etcd:/bench/")
            .expect("valid");
        let touched = TableDelta {
            tenants: delta.tenants.clone(),
            pools: delta.pools.clone(),
            hosts: delta.hosts,
        };
        group.bench_function(BenchmarkId::new("apply_table", n), |b| {
            b.iter(|| {
                table
                    .apply(black_box(&delta.config.routing), &touched, 2)
                    .tenant_count()
            })
        });
        group.bench_function(BenchmarkId::new("publish_metrics", n), |b| {
            b.iter(|| Metrics::get().observe_table(black_box(&table)))
        });
        let next = table.apply(&delta.config.routing, &touched, 2);
        group.bench_function(BenchmarkId::new("publish_metrics_delta", n), |b| {
            b.iter(|| Metrics::get().observe_delta(&table, black_box(&next), &touched.tenants))
        });
    }
    group.finish();
}

criterion_group!(benches, reload_work, delta_work);
criterion_main!(benches);
