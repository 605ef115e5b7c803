//! End to end: how long from saving a 100,000-tenant config file to the first request routed by the
//! new table, and whether any request fails meanwhile. Starts the release gateway and loopback
//! upstreams with the integration tests' harness, keeps steady load on it, and moves one tenant per
//! round to another pool (written as editors do: a temporary file renamed over the old one).
//!
//! `cargo bench --bench reload_latency` prints one line per round and a summary.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::load::{failures, Load};
use support::{send, Gateway, Upstream};

const TENANTS: usize = 100_000;
const ROUNDS: usize = 7;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let shared = Upstream::start("shared").await;
    let moved = Upstream::start("moved").await;
    let started = Instant::now();
    let gw = Gateway::start(
        &support::generated_tenants(TENANTS, &[]),
        &[&shared, &moved],
    )
    .await;
    println!(
        "{TENANTS} tenants: gateway ready {:.0} ms after start",
        started.elapsed().as_secs_f64() * 1e3
    );

    let load = Load::start(
        &gw,
        &[
            "t1.yourapp.test",
            "t2.yourapp.test",
            "api.customer-3.example",
        ],
        2,
    );
    load.wait_for(200).await;
    let mut file_to_route = Vec::new();
    let mut api_reload = Vec::new();
    let mut moved_so_far = Vec::new();
    for round in 0..ROUNDS {
        let tenant = 50_000 + round;
        moved_so_far.push(tenant);
        let text = gw.render(&support::generated_tenants(TENANTS, &moved_so_far));
        let temp = gw.config_path.with_file_name(".gateway.toml.new");
        std::fs::write(&temp, text).expect("write");
        let host = format!("t{tenant}.yourapp.test");
        let t0 = Instant::now();
        std::fs::rename(&temp, &gw.config_path).expect("rename");
        loop {
            let r = send(gw.get(&host, "/")).await;
            if r.body["upstream"] == "moved" {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "reload never took effect:\n{}",
                gw.log()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        file_to_route.push(ms);

        // The same file again through the API: nothing changes, but it is read and compared; then a
        // real change through the API, timed from the call to its answer.
        let edited = gw
            .render(&support::generated_tenants(TENANTS, &moved_so_far))
            .replace(
                &format!("[tenants.t{}]\npool = \"shared\"", 60_000 + round),
                &format!("[tenants.t{}]\npool = \"moved\"", 60_000 + round),
            );
        std::fs::write(&temp, edited).expect("write");
        let t1 = Instant::now();
        std::fs::rename(&temp, &gw.config_path).expect("rename");
        let (status, body) = gw.admin_post("/reload", None).await;
        let api_ms = t1.elapsed().as_secs_f64() * 1e3;
        assert_eq!(status, 200, "{body}");
        api_reload.push(api_ms);
        moved_so_far.push(60_000 + round);
        println!("round {round}: file saved -> first request on the new table {ms:>6.1} ms; POST /reload answered in {api_ms:>6.1} ms ({})", body["result"]);
        load.wait_for_more(100).await;
    }
    // The gateway's own account: time from reading the file to the new table in use.
    let own: Vec<String> = gw
        .log()
        .lines()
        .filter(|l| l.contains("routing table change") && l.contains("result=\"applied\""))
        .filter_map(|l| l.split("duration_ms=").nth(1))
        .map(|d| d.split_whitespace().next().unwrap_or("?").to_owned())
        .collect();
    println!(
        "the gateway's reload durations, in order (ms): {}",
        own.join(", ")
    );
    let samples = load.stop().await;
    let failed = failures(&samples);
    println!(
        "median: file -> routed {:.1} ms, POST /reload {:.1} ms; {} requests under load during the reloads, {} failed",
        median(&mut file_to_route),
        median(&mut api_reload),
        samples.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{:?}", &failed[..failed.len().min(5)]);
}
