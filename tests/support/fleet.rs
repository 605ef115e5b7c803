//! A fleet: one real etcd and several real gateways on one prefix, the store seeded with a routing
//! file by the real CLI (`tenantgate apply --store`), as an operator would.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::etcd::Etcd;
use super::{fill, free_addr, tenantgate, Gateway, Upstream, WAIT};

/// Every instance of a test fleet: its own listeners, the shared store, a short lease (a stopped
/// instance's locks go within seconds), and room for etcd answering slowly on a busy machine.
pub const INSTANCE: &str = r#"
[gateway]
http_listen = "{http}"

[admin]
listen = "{admin}"

[store]
etcd = ["{etcd}"]
prefix = "{prefix}"
instance = "{instance}"
lease_seconds = 3
timeout_ms = 3000
"#;

/// One instance of `Fleet::start_instances`.
#[derive(Default)]
pub struct Instance {
    /// Its `http` and `https` listeners, when chosen beforehand.
    pub listeners: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    pub vars: Vec<(&'static str, String)>,
}

pub struct Fleet {
    pub etcd: Etcd,
    pub gateways: Vec<Gateway>,
    pub prefix: String,
    /// An instance file for the CLI's `--store` (ports nobody listens on).
    pub instance_file: PathBuf,
    dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts etcd, seeds it with `routing` (upstreams filled in), and starts `n` gateways on it.
    pub async fn start(routing: &str, upstreams: &[&Upstream], n: usize) -> Fleet {
        let instances = (0..n).map(|_| Instance::default()).collect();
        Fleet::start_instances(routing, upstreams, INSTANCE, instances).await
    }

    /// As `start`, each instance from `template` (which has `INSTANCE`'s placeholders) with its
    /// own listeners and placeholders.
    pub async fn start_instances(
        routing: &str,
        upstreams: &[&Upstream],
        template: &str,
        instances: Vec<Instance>,
    ) -> Fleet {
        let etcd = Etcd::start();
        let prefix = "/tenantgate/test".to_owned();
        let dir = tempfile::tempdir().expect("temp dir");
        let instance_file = dir.path().join("cli-instance.toml");
        let (url, shared_prefix) = (etcd.url(), prefix.clone());
        let vars = |instance: &str| {
            vec![
                ("etcd", url.clone()),
                ("prefix", shared_prefix.clone()),
                ("instance", instance.to_owned()),
                ("http", free_addr().to_string()),
                ("admin", free_addr().to_string()),
            ]
        };
        std::fs::write(&instance_file, fill(INSTANCE, &vars("cli"))).expect("instance file");
        let mut fleet = Fleet {
            etcd,
            gateways: Vec::new(),
            prefix,
            instance_file,
            dir,
        };
        let routing = fleet.fill_upstreams(routing, upstreams);
        let out = fleet.apply(&routing, &[]).await;
        assert!(
            out.0.success(),
            "seeding the store failed:\n{}\n{}",
            out.1,
            out.2
        );
        for (i, instance) in instances.into_iter().enumerate() {
            let mut v: Vec<(&str, String)> = vars(&format!("gw-{}", i + 1))
                .into_iter()
                .filter(|(k, _)| *k != "http" && *k != "admin")
                .collect();
            v.extend(instance.vars);
            fleet
                .gateways
                .push(Gateway::start_on(template, &v, instance.listeners).await);
        }
        fleet
    }

    pub fn fill_upstreams(&self, template: &str, upstreams: &[&Upstream]) -> String {
        let vars: Vec<(&str, String)> = upstreams
            .iter()
            .map(|u| (u.name.as_str(), u.addr.to_string()))
            .collect();
        fill(template, &vars)
    }

    /// `tenantgate apply --config <routing> --store <instance file>` with `extra` arguments;
    /// (success, stdout, stderr).
    pub async fn apply(
        &self,
        routing: &str,
        extra: &[&str],
    ) -> (std::process::ExitStatus, String, String) {
        let file = self
            .dir
            .path()
            .join(format!("routing-{}.toml", next_name()));
        std::fs::write(&file, routing).expect("routing file");
        let store = self.instance_file.display().to_string();
        let file = file.display().to_string();
        let mut args = vec!["apply", "--config", &file, "--store", &store];
        args.extend_from_slice(extra);
        let out = tenantgate(&args).await;
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs the CLI against the store directly (`--store`); (success, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> (std::process::ExitStatus, String, String) {
        let store = self.instance_file.display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--store", &store]);
        let out = tenantgate(&all).await;
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Waits until every gateway's `/tenants/{id}` satisfies `check`.
    pub async fn wait_tenant(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) {
        for gw in &self.gateways {
            wait_tenant(gw, id, what, &check).await;
        }
    }

    /// Waits until every gateway serves store revision `revision` or later.
    pub async fn wait_revision(&self, revision: u64) {
        for gw in &self.gateways {
            let deadline = Instant::now() + WAIT;
            loop {
                let status = gw.admin_json("/status").await;
                if status["generation"].as_u64().unwrap_or(0) >= revision {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "gateway {} never reached revision {revision}: {status:#}",
                    gw.admin
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Waits until `gw`'s `/tenants/{id}` satisfies `check`.
pub async fn wait_tenant(gw: &Gateway, id: &str, what: &str, check: &impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let tenant = gw.admin_json(&format!("/tenants/{id}")).await;
        if check(&tenant) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gateway {}: tenant {id} never {what}: {tenant:#}",
            gw.admin
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn next_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}
