//! What a reload costs before the swap: reading and validating a config file (`load_str`) and building
//! the routing table from it (`RoutingTable::build`), for 1,000 to 100,000 tenants; and how much memory
//! the built table holds (printed before the timings, counted by this bench's allocator).

use std::alloc::{GlobalAlloc, Layout};
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mimalloc::MiMalloc;
use tenantgate::config::load_str;
use tenantgate::routing::RoutingTable;

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
                RoutingTable::build(black_box(&config.routing), 2, Some(&previous))
                    .tenants()
                    .len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, reload_work);
criterion_main!(benches);
