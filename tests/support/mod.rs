//! The one integration harness: starts the real `tenantgate` binary on free loopback ports in front of
//! real loopback upstreams, and talks to it over TCP with real clients.
//!
//! Config templates are TOML with `{http}` and `{admin}` for the gateway's listen addresses and
//! `{name}` for each upstream passed in; a gateway that loses a race for its port is restarted on new
//! ports.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod cli;
pub mod etcd;
pub mod fleet;
pub mod grpc;
pub mod load;
pub mod metrics;
pub mod otlp;
pub mod pebble;
pub mod pki;
pub mod process;
pub mod redis;
pub mod tokens;
pub mod upstream;
pub mod websocket;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use upstream::Upstream;

/// The binary under test, built by cargo for integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_tenantgate");

/// Every gateway the harness starts has this admin token in `ADMIN_TOKEN_ENV`, for configs that
/// name it with `token_env`.
pub const ADMIN_TOKEN_ENV: &str = "TENANTGATE_TEST_ADMIN_TOKEN";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Upper bound for anything the harness waits on.
pub const WAIT: Duration = Duration::from_secs(15);

/// A free loopback port (bound, then released for the gateway to take).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// A gateway template with `tenants` generated tenants `t0`, `t1`, … on `yourapp.test`, each with one
/// custom domain (`api.customer-<i>.example`), in pool `shared` but for those in `moved`, which are in
/// pool `moved` (upstreams `{shared}` and `{moved}`): the large tables the scale benches reload.
pub fn generated_tenants(tenants: usize, moved: &[usize]) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(tenants * 90);
    let _ = write!(
        text,
        "[gateway]\nhttp_listen = \"{{http}}\"\nbase_domains = [\"yourapp.test\"]\naccess_log = false\n\n\
         [admin]\nlisten = \"{{admin}}\"\n\n\
         [pools.shared]\nupstreams = [\"{{shared}}\"]\n\n[pools.moved]\nupstreams = [\"{{moved}}\"]\n\n",
    );
    for i in 0..tenants {
        let pool = if moved.contains(&i) {
            "moved"
        } else {
            "shared"
        };
        let _ = writeln!(
            text,
            "[tenants.t{i}]\npool = \"{pool}\"\ndomains = [\"api.customer-{i}.example\"]\n"
        );
    }
    text
}

/// Replaces `{key}` placeholders.
pub fn fill(template: &str, vars: &[(&str, String)]) -> String {
    vars.iter().fold(template.to_owned(), |text, (k, v)| {
        text.replace(&format!("{{{k}}}"), v)
    })
}

pub struct Gateway {
    pub http: SocketAddr,
    /// Reserved for `{https}`; only listening when the config uses it.
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    /// Keeps connections alive across requests, like a real client.
    pub client: reqwest::Client,
    child: Child,
    log_path: PathBuf,
    /// Every placeholder and its value, to render more configs with the same ports.
    vars: Vec<(String, String)>,
    dir: Arc<tempfile::TempDir>,
}

impl Gateway {
    /// Starts a gateway with `template`, upstreams named by `{name}` placeholders.
    pub async fn start(template: &str, upstreams: &[&Upstream]) -> Gateway {
        let vars: Vec<(&str, String)> = upstreams
            .iter()
            .map(|u| (u.name.as_str(), u.addr.to_string()))
            .collect();
        Gateway::start_with(template, &vars).await
    }

    pub async fn start_with(template: &str, vars: &[(&str, String)]) -> Gateway {
        Gateway::start_on(template, vars, None).await
    }

    /// As `start_with`, on listener addresses chosen beforehand (`http`, `https`): for servers
    /// that must know them before the gateway starts (pebble validates there).
    pub async fn start_on(
        template: &str,
        vars: &[(&str, String)],
        listeners: Option<(SocketAddr, SocketAddr)>,
    ) -> Gateway {
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let (http, https) = listeners.unwrap_or_else(|| (free_addr(), free_addr()));
            let admin = free_addr();
            let mut all = vec![
                ("http", http.to_string()),
                ("https", https.to_string()),
                ("admin", admin.to_string()),
            ];
            all.extend(vars.iter().map(|(k, v)| (*k, v.clone())));
            let config_path = dir.path().join("gateway.toml");
            std::fs::write(&config_path, fill(template, &all)).expect("write config");
            let log_path = dir.path().join("gateway.log");
            let child = spawn_gateway(&config_path, &log_path, &[]);
            let vars = all
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            let mut gw = Gateway {
                http,
                https,
                admin,
                config_path,
                client: client(),
                child,
                log_path,
                vars,
                dir: Arc::new(dir),
            };
            if gw.wait_ready().await {
                return gw;
            }
            last_log = gw.log();
        }
        panic!("gateway did not start; last log:\n{last_log}");
    }

    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let admin_up = self
                .client
                .get(format!("http://{}/healthz", self.admin))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if admin_up && TcpStream::connect(self.http).is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `template` with this gateway's ports and upstreams filled in.
    pub fn render(&self, template: &str) -> String {
        let vars: Vec<(&str, String)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        fill(template, &vars)
    }

    /// Replaces the config file (in place, as `echo > file` would).
    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config_path, text).expect("write config");
    }

    pub fn read_config(&self) -> String {
        std::fs::read_to_string(&self.config_path).expect("read config")
    }

    /// `POST` to the admin API (with the harness's admin token, which a gateway without one
    /// ignores); returns the status and JSON body.
    pub async fn admin_post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("http://{}{path}", self.admin))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = Reply::from(request.send().await.expect("admin request")).await;
        (reply.status, reply.body)
    }

    /// Sends a signal to this gateway's process (by its PID, with `kill`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Stops this process and starts a new one on the same config file and ports, as an operator's
    /// restart would.
    pub async fn restart(mut self) -> Gateway {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_gateway(&self.config_path, &self.log_path, &[]);
        assert!(
            self.wait_ready().await,
            "gateway did not restart; log:\n{}",
            self.log()
        );
        self
    }

    /// Starts a second process on the same config that takes over this one's listening sockets
    /// (graceful upgrade). It waits for them until this one is sent SIGQUIT.
    pub fn spawn_upgrade(&self) -> Gateway {
        let log_path = self.dir.path().join("gateway-upgrade.log");
        Gateway {
            http: self.http,
            https: self.https,
            admin: self.admin,
            config_path: self.config_path.clone(),
            client: client(),
            child: spawn_gateway(&self.config_path, &log_path, &["--upgrade"]),
            log_path,
            vars: self.vars.clone(),
            dir: Arc::clone(&self.dir),
        }
    }

    /// Waits until this process has exited.
    pub async fn wait_exit(&mut self) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway {} did not exit; log:\n{}", self.pid(), self.log());
    }

    /// Everything the gateway has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A request to this gateway's data-plane listener with `Host: host`.
    pub fn get(&self, host: &str, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("http://{}{path}", self.http))
            .header(reqwest::header::HOST, host)
    }

    /// `GET` on the admin API (with the harness's admin token), as JSON.
    pub async fn admin_json(&self, path: &str) -> Value {
        self.client
            .get(format!("http://{}{path}", self.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin request")
            .json()
            .await
            .expect("admin JSON")
    }

    pub async fn admin_text(&self, path: &str) -> String {
        self.client
            .get(format!("http://{}{path}", self.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin request")
            .text()
            .await
            .expect("admin text")
    }

    /// Waits until `/status` reports `addr` (in any pool) with `healthy`.
    pub async fn wait_upstream_health(&self, addr: SocketAddr, healthy: bool) {
        let deadline = Instant::now() + WAIT;
        let addr = addr.to_string();
        while Instant::now() < deadline {
            let status = self.admin_json("/status").await;
            let found = status["pools"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|p| p["upstreams"].as_array().into_iter().flatten())
                .any(|u| u["resolved"] == addr.as_str() && u["healthy"] == healthy);
            if found {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "upstream {addr} never became healthy={healthy}; log:\n{}",
            self.log()
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Only the process this harness started, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- gateway log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn spawn_gateway(config: &Path, log: &Path, extra: &[&str]) -> Child {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let err_file = log_file.try_clone().expect("log file");
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .args(extra)
        .env("RUST_LOG", "info")
        .env(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file)
        .spawn()
        .expect("spawn tenantgate")
}

/// Runs the `tenantgate` binary to completion. Async: the test's upstreams run on the test's runtime
/// and must keep answering while the command (which may talk to the gateway) runs.
pub async fn tenantgate(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .output()
        .await
        .expect("run tenantgate")
}

/// A client that never uses a proxy from the environment and never follows redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .expect("client")
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub async fn from(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The values the upstream saw for a request header (the test upstream echoes them).
    pub fn upstream_saw(&self, name: &str) -> Vec<String> {
        self.body["headers"][name]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    Reply::from(req.send().await.expect("request")).await
}

/// Writes raw bytes (for requests no well-behaved client would send) and returns the raw response,
/// read until the gateway closes the connection. Async: the test's upstreams run on the same runtime.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON body of a raw HTTP/1.1 response.
pub fn raw_body(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}
