//! A real etcd for the fleet tests (Debian's `etcd-server`, which `make test` installs when
//! missing): on free loopback ports, its data in a temp folder, started and stopped by PID. The
//! binary is `$TENANTGATE_ETCD` or `etcd` on PATH.
//!
//! Tests write to it with the real client (`etcd_client`) where an operator would use etcdctl: a
//! hand-made bad value, a compaction.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::ServerProcess;
use super::{free_addr, WAIT};

pub struct Etcd {
    pub client: SocketAddr,
    peer: SocketAddr,
    /// Declared before `dir`: the server stops before its data folder goes.
    process: ServerProcess,
    dir: tempfile::TempDir,
}

fn binary() -> String {
    std::env::var("TENANTGATE_ETCD").unwrap_or_else(|_| "etcd".to_owned())
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let process = ServerProcess::new(
            "etcd",
            "`make test` installs etcd (scripts/ensure-etcd.sh)",
            dir.path().join("etcd.log"),
        );
        let mut etcd = Etcd {
            client: free_addr(),
            peer: free_addr(),
            process,
            dir,
        };
        etcd.spawn();
        etcd
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    fn spawn(&mut self) {
        let (client, peer) = (self.url(), format!("http://{}", self.peer));
        let mut command = Command::new(binary());
        command
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            // Large applies in one transaction, as the README suggests for a fleet's etcd.
            .args(["--max-txn-ops", "10000", "--max-request-bytes", "33554432"])
            .args(["--logger", "zap", "--log-level", "error"]);
        let addr = self.client;
        self.process.spawn(command, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Stops the server (by its PID): clients get refused connections until [`Etcd::restart`].
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub async fn connect(&self) -> etcd_client::Client {
        let deadline = Instant::now() + WAIT;
        loop {
            match etcd_client::Client::connect([self.url()], None).await {
                Ok(mut client) => {
                    if client.get("probe", None).await.is_ok() {
                        return client;
                    }
                }
                Err(e) if Instant::now() > deadline => panic!("cannot connect to etcd: {e}"),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes one key as an operator with etcdctl would (no validation).
    pub async fn put(&self, key: &str, value: &str) -> i64 {
        let mut client = self.connect().await;
        let response = client.put(key, value, None).await.expect("put");
        response.header().map_or(0, |h| h.revision())
    }

    pub async fn get(&self, key: &str) -> Option<String> {
        let mut client = self.connect().await;
        let response = client.get(key, None).await.expect("get");
        response
            .kvs()
            .first()
            .map(|kv| kv.value_str().unwrap_or_default().to_owned())
    }

    /// The keys below `prefix`, with their values.
    pub async fn list(&self, prefix: &str) -> Vec<(String, String)> {
        let mut client = self.connect().await;
        let options = etcd_client::GetOptions::new().with_prefix();
        let response = client.get(prefix, Some(options)).await.expect("get");
        response
            .kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key_str().unwrap_or_default().to_owned(),
                    kv.value_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Compacts the whole history up to the current revision: a watch from before it fails.
    pub async fn compact(&self) -> i64 {
        let mut client = self.connect().await;
        let revision = client
            .get("probe", None)
            .await
            .expect("get")
            .header()
            .map_or(0, |h| h.revision());
        let options = etcd_client::CompactionOptions::new().with_physical();
        client
            .compact(revision, Some(options))
            .await
            .expect("compact");
        revision
    }
}
