//! A generated routing table of 1,000, 100,000 and 1,000,000 tenants (each with one custom domain),
//! run by the release gateway under steady load: its memory at start, what a change touching one
//! tenant costs (through the admin API, and as a file edit), what a full reload costs (a shared
//! setting changed, every tenant built again) and the memory it takes meanwhile, and the slowest
//! request seen while all of that happens.
//!
//! `cargo bench --bench scale` runs all three sizes; `SCALE_TENANTS=1000000` picks some
//! (comma-separated). One table per size is printed.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::load::{failures, Load};
use support::{send, Gateway, Upstream};

/// Resident memory of `pid`, in MiB (`VmRSS`, or `VmHWM` for the peak).
fn memory_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Samples `pid`'s RSS every 5 ms until stopped; the highest seen, in MiB.
struct PeakRss {
    stop: Arc<AtomicBool>,
    peak_kib: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    fn start(pid: u32) -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kib = Arc::new(AtomicU64::new(0));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak_kib));
        let task = tokio::spawn(async move {
            let started = Instant::now();
            while !s.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(120) {
                let kib = (memory_mib(pid, "VmRSS:") * 1024.0) as u64;
                p.fetch_max(kib, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        PeakRss {
            stop,
            peak_kib,
            task,
        }
    }

    async fn stop(self) -> f64 {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.peak_kib.load(Ordering::SeqCst) as f64 / 1024.0
    }
}

/// Waits until `host` is answered by `upstream`; the time it took, in ms.
async fn until_routed(gw: &Gateway, host: &str, field: &str, want: &str, t0: Instant) -> f64 {
    loop {
        let r = send(gw.get(host, "/")).await;
        if r.body[field] == want {
            return t0.elapsed().as_secs_f64() * 1e3;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the change never took effect:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// POSTs to the admin API with room for a slow answer (the harness's client gives up after 15 s;
/// a change of a million-tenant file takes longer).
async fn admin_post(gw: &Gateway, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let reply = client
        .post(format!("http://{}{path}", gw.admin))
        .bearer_auth(support::ADMIN_TOKEN)
        .send()
        .await
        .expect("admin request");
    let status = reply.status().as_u16();
    (status, reply.text().await.unwrap_or_default())
}

/// The gateway's own account of its table changes: (result, duration ms), in order.
fn changes_logged(gw: &Gateway) -> Vec<String> {
    gw.log()
        .lines()
        .filter(|l| l.contains("routing table change"))
        .filter_map(|l| l.split("duration_ms=").nth(1))
        .map(|d| d.split_whitespace().next().unwrap_or("?").to_owned())
        .collect()
}

async fn run(tenants: usize) {
    let shared = Upstream::start("shared").await;
    let moved = Upstream::start("moved").await;
    let started = Instant::now();
    let gw = Gateway::start(
        &support::generated_tenants(tenants, &[]),
        &[&shared, &moved],
    )
    .await;
    let ready_ms = started.elapsed().as_secs_f64() * 1e3;
    let pid = gw.pid();
    let last = tenants - 1;
    let hosts = [
        "t1.yourapp.test".to_owned(),
        format!("api.customer-{last}.example"),
        format!("t{}.yourapp.test", tenants / 2),
    ];
    let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    // A load per phase: each is bounded in requests, and a million-tenant change is long.
    let mut samples = Vec::new();
    let load = Load::start(&gw, &host_refs, 1);
    load.wait_for(200).await;
    let steady = memory_mib(pid, "VmRSS:");

    // One tenant through the admin API: suspend it, timed from the call to its answer.
    let target = tenants / 3;
    let t0 = Instant::now();
    let (status, body) = admin_post(&gw, &format!("/tenants/t{target}/suspend")).await;
    let admin_ms = t0.elapsed().as_secs_f64() * 1e3;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    samples.extend(load.stop().await);

    // One tenant as a file edit (written as editors do: a new file renamed over the old one).
    let edited = tenants / 4;
    let text = gw.read_config().replace(
        &format!("[tenants.t{edited}]\npool = \"shared\""),
        &format!("[tenants.t{edited}]\npool = \"moved\""),
    );
    let temp = gw.config_path.with_file_name(".gateway.toml.new");
    std::fs::write(&temp, &text).expect("write");
    let load = Load::start(&gw, &host_refs, 1);
    load.wait_for(100).await;
    let t0 = Instant::now();
    std::fs::rename(&temp, &gw.config_path).expect("rename");
    let file_ms = until_routed(
        &gw,
        &format!("t{edited}.yourapp.test"),
        "upstream",
        "moved",
        t0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    samples.extend(load.stop().await);

    // A full reload: a shared setting changes, so every tenant is built again.
    let text = gw
        .read_config()
        .replacen("access_log = false", "access_log = true", 1);
    std::fs::write(&temp, &text).expect("write");
    let load = Load::start(&gw, &host_refs, 1);
    load.wait_for(100).await;
    let peak = PeakRss::start(pid);
    std::fs::rename(&temp, &gw.config_path).expect("rename");
    let t0 = Instant::now();
    let (status, body) = admin_post(&gw, "/reload").await;
    let reload_ms = t0.elapsed().as_secs_f64() * 1e3;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let peak = peak.stop().await;
    let after = memory_mib(pid, "VmRSS:");

    samples.extend(load.stop().await);
    let failed = failures(&samples);
    let slowest = samples.iter().map(|s| s.latency).max().unwrap_or_default();
    println!("\n== {tenants} tenants (each with one custom domain), release gateway, one run");
    println!("| measure | value |\n|---|---|");
    println!("| ready after start | {ready_ms:.0} ms |");
    println!(
        "| RSS at start, under load | {steady:.0} MiB ({:.0} bytes per tenant) |",
        steady * 1024.0 * 1024.0 / tenants as f64
    );
    println!("| one tenant by the admin API (suspend), call to answer | {admin_ms:.1} ms |");
    println!("| one tenant by a file edit, save to first request routed by it | {file_ms:.1} ms |");
    println!(
        "| full reload (a shared setting changed), POST /reload to answer | {reload_ms:.0} ms |"
    );
    println!(
        "| RSS peak during the full reload / after it | {peak:.0} MiB ({:.2}x start) / {after:.0} MiB |",
        peak / steady.max(1.0)
    );
    println!(
        "| slowest request under load, whole run | {:.1} ms ({} requests, {} failed) |",
        slowest.as_secs_f64() * 1e3,
        samples.len(),
        failed.len()
    );
    println!(
        "| the gateway's own change durations, in order (ms) | {} |",
        changes_logged(&gw).join(", ")
    );
    assert!(failed.is_empty(), "{:?}", &failed[..failed.len().min(5)]);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let sizes = std::env::var("SCALE_TENANTS").unwrap_or_else(|_| "1000,100000,1000000".into());
    for size in sizes.split(',') {
        let tenants: usize = size
            .trim()
            .parse()
            .expect("SCALE_TENANTS: numbers, comma-separated");
        run(tenants.max(10)).await;
    }
}
