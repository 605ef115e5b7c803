//! End to end: a fleet of three release gateways on one real etcd holding 100,000 tenants (each
//! with a custom domain). Measures how long the store takes to seed (`tenantgate apply --store`),
//! how long an instance takes to start from it, and, for 50 single-tenant changes made through one
//! instance's admin API, the time from the call until each of the three instances routes the
//! change (a suspension: its requests get 403). Each instance's own account of applying a change
//! (from its log) shows that a one-tenant change is a delta, not a rebuild of 100,000 tenants; one
//! change of a shared setting, which does rebuild, is shown beside it.
//!
//! `cargo bench --bench fleet` (needs etcd: `make test` installs it, or set TENANTGATE_ETCD).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use support::etcd::Etcd;
use support::fleet::INSTANCE;
use support::{fill, free_addr, Gateway, Upstream};

const TENANTS: usize = 100_000;
const INSTANCES: usize = 3;
const CHANGES: usize = 50;

fn routing() -> String {
    let mut text = String::with_capacity(TENANTS * 80);
    text.push_str(
        "[gateway]\nbase_domains = [\"yourapp.test\"]\n\n\
         [pools.shared]\nupstreams = [\"{shared}\"]\n\n",
    );
    for i in 0..TENANTS {
        let _ = writeln!(
            text,
            "[tenants.t{i}]\npool = \"shared\"\ndomains = [\"api.customer-{i}.example\"]\n"
        );
    }
    text
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The durations (ms) a gateway logged for changes it applied from the store.
fn applied_durations(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("routing table change") && l.contains("actor=store revision"))
        .filter_map(|l| l.split("duration_ms=").nth(1))
        .filter_map(|d| d.split_whitespace().next()?.parse().ok())
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let shared = Upstream::start("shared").await;
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = "/tenantgate/bench".to_owned();
    let vars = |instance: &str| {
        vec![
            ("etcd", etcd.url()),
            ("prefix", prefix.clone()),
            ("instance", instance.to_owned()),
        ]
    };
    // etcd here takes 10,000 operations a transaction (support::etcd): 11 transactions seed it.
    let instance_template = INSTANCE.replace(
        "timeout_ms = 1000",
        "timeout_ms = 5000\nmax_txn_ops = 10000",
    );
    let cli_instance = dir.path().join("cli.toml");
    let mut cli_vars = vars("bench-cli");
    cli_vars.extend([
        ("http", free_addr().to_string()),
        ("admin", free_addr().to_string()),
    ]);
    std::fs::write(&cli_instance, fill(&instance_template, &cli_vars)).expect("instance");
    let routing_file = dir.path().join("routing.toml");
    std::fs::write(
        &routing_file,
        fill(&routing(), &[("shared", shared.addr.to_string())]),
    )
    .expect("routing");
    let t0 = Instant::now();
    let out = apply_direct(&routing_file, &cli_instance).await;
    let seeded = t0.elapsed();
    let last_line = out.lines().last().unwrap_or_default().to_owned();
    println!(
        "seeded the store with {TENANTS} tenants by tenantgate apply --store in {:.1} s ({last_line})",
        seeded.as_secs_f64()
    );

    let mut gateways = Vec::new();
    let mut starts = Vec::new();
    for i in 1..=INSTANCES {
        let t = Instant::now();
        let gw = Gateway::start_with(&instance_template, &vars(&format!("gw-{i}"))).await;
        starts.push(t.elapsed().as_secs_f64() * 1e3);
        let log = gw.log();
        let own = log
            .lines()
            .find(|l| l.contains("read the fleet's table from the store"))
            .unwrap_or_default()
            .to_owned();
        let field = |name: &str| {
            own.split(&format!("{name}="))
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .unwrap_or("?")
                .to_owned()
        };
        println!(
            "gw-{i}: ready {:.0} ms after start (it read {} entries in {} ms and validated them in {} ms)",
            starts[i - 1],
            field("entries"),
            field("read_ms"),
            field("validated_ms")
        );
        gateways.push(gw);
    }

    // Steady light load on every instance, to see that no request waits or fails meanwhile.
    let loads: Vec<_> = gateways
        .iter()
        .map(|gw| support::load::Load::start(gw, &["t1.yourapp.test", "api.customer-2.example"], 1))
        .collect();

    let mut per_instance: Vec<Vec<f64>> = vec![Vec::new(); INSTANCES];
    let mut all_three = Vec::new();
    let mut answered = Vec::new();
    for round in 0..CHANGES {
        let id = format!("t{}", 1_000 + round * 997);
        let host = format!("{id}.yourapp.test");
        let t = Instant::now();
        let (status, body) = gateways[0]
            .admin_post(&format!("/tenants/{id}/suspend"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        answered.push(t.elapsed().as_secs_f64() * 1e3);
        let mut waits = tokio::task::JoinSet::new();
        for (i, gw) in gateways.iter().enumerate() {
            let (client, url, host) = (
                gw.client.clone(),
                format!("http://{}/", gw.http),
                host.clone(),
            );
            waits.spawn(async move {
                loop {
                    let r = client
                        .get(&url)
                        .header(reqwest::header::HOST, &host)
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status() == 403) {
                        return (i, t.elapsed().as_secs_f64() * 1e3);
                    }
                    assert!(t.elapsed() < Duration::from_secs(30), "never routed");
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
            });
        }
        let mut seen = [0.0; INSTANCES];
        while let Some(joined) = waits.join_next().await {
            let (i, ms) = joined.expect("a poller");
            seen[i] = ms;
        }
        for (i, ms) in seen.iter().enumerate() {
            per_instance[i].push(*ms);
        }
        all_three.push(seen.iter().copied().fold(0.0, f64::max));
    }
    // One change of a shared setting, for contrast: every tenant's limits may change, so every
    // instance validates and builds the whole table.
    let limits = format!(
        "{}\n[limits]\nrate_limit = {{ requests_per_second = 1000 }}\n",
        fill(&routing(), &[("shared", shared.addr.to_string())])
    );
    std::fs::write(&routing_file, limits).expect("routing");
    let t = Instant::now();
    apply_direct(&routing_file, &cli_instance).await;
    println!(
        "a [limits] change by apply (validates the whole 100,000-tenant file against the store): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut failed = 0;
    let mut requests = 0;
    for load in loads {
        let samples = load.stop().await;
        requests += samples.len();
        failed += support::load::failures(&samples).len();
    }

    println!();
    println!("time from the admin API call on gw-1 until the instance routes the suspension ({CHANGES} changes, {TENANTS} tenants):");
    println!("| instance | p50 | p99 | max |");
    println!("|---|---|---|---|");
    for (i, values) in per_instance.iter().enumerate() {
        println!(
            "| gw-{} | {:.1} ms | {:.1} ms | {:.1} ms |",
            i + 1,
            percentile(values, 50.0),
            percentile(values, 99.0),
            percentile(values, 100.0)
        );
    }
    println!(
        "| all three | {:.1} ms | {:.1} ms | {:.1} ms |",
        percentile(&all_three, 50.0),
        percentile(&all_three, 99.0),
        percentile(&all_three, 100.0)
    );
    println!(
        "the admin API's answer (written, and applied by gw-1 itself): p50 {:.1} ms, p99 {:.1} ms",
        percentile(&answered, 50.0),
        percentile(&answered, 99.0)
    );
    println!();
    println!("each instance's own time to validate and apply a change from the store (its log):");
    println!("| instance | one-tenant change p50 | p99 | the [limits] change |");
    println!("|---|---|---|---|");
    for (i, gw) in gateways.iter().enumerate() {
        let durations = applied_durations(&gw.log());
        let (single, setting) = durations.split_at(durations.len().saturating_sub(1));
        println!(
            "| gw-{} | {:.0} ms | {:.0} ms | {} |",
            i + 1,
            percentile(single, 50.0),
            percentile(single, 99.0),
            setting
                .first()
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms"))
        );
    }
    println!();
    println!(
        "instance start-up from the store: {}",
        starts
            .iter()
            .map(|ms| format!("{ms:.0} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("requests under load meanwhile: {requests}, failed: {failed}");
    drop(gateways);
    drop(etcd);
}

/// `tenantgate apply --config ROUTING --store INSTANCE`, which must succeed; its standard output.
async fn apply_direct(routing: &Path, instance: &Path) -> String {
    let out = support::tenantgate(&[
        "apply",
        "--config",
        &routing.display().to_string(),
        "--store",
        &instance.display().to_string(),
    ])
    .await;
    assert!(
        out.status.success(),
        "tenantgate apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
