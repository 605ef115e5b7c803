//! The routing-table file exactly as operators write it: plain serde structs, no validation, no
//! defaults beyond "absent".
//!
//! Unknown keys are rejected, but not by `#[serde(deny_unknown_fields)]`: that stops at the first one.
//! The loader (`config::load`) decodes each section on its own through `serde_ignored` and turns every
//! ignored key into an error, so an operator sees all mistakes at once. Decode these structs only
//! through the loader.
//!
//! Every name here is part of the contract with operators' files; rename nothing, only add.

use serde::Deserialize;

/// One parsed file, section by section. Table entries keep the order they had in the file.
#[derive(Debug, Default)]
pub struct FileConfig {
    pub gateway: GatewayFile,
    pub admin: AdminFile,
    pub pools: Vec<Entry<PoolFile>>,
    pub tenants: Vec<Entry<TenantFile>>,
    pub hosts: Vec<Entry<HostFile>>,
}

/// One `[section.<name>]` table.
#[derive(Debug)]
pub struct Entry<T> {
    pub name: String,
    /// `None` when the entry could not be decoded. Its error is already reported; its name still
    /// counts as defined, so references to it are not reported a second time.
    pub value: Option<T>,
}

/// `[gateway]`: the data-plane listener and what every request gets.
#[derive(Debug, Default, Deserialize)]
pub struct GatewayFile {
    pub http_listen: Option<String>,
    #[serde(default)]
    pub base_domains: Vec<String>,
    pub tenant_header: Option<String>,
    pub threads: Option<usize>,
    pub access_log: Option<bool>,
    pub log_format: Option<LogFormatFile>,
    /// Accept HTTP/2 with prior knowledge on the plaintext listener. Off by default: detecting it costs
    /// a peek on every keep-alive request.
    pub h2c: Option<bool>,
    /// Let idle worker threads take tasks from busy ones. Off by default: each thread then runs its
    /// own connections start to finish, like nginx workers, which is faster for short requests.
    pub work_stealing: Option<bool>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormatFile {
    Text,
    Json,
}

/// `[admin]`: the operators' listener (admin API and `/metrics`).
#[derive(Debug, Default, Deserialize)]
pub struct AdminFile {
    pub listen: Option<String>,
    /// Where every change to the routing table is recorded (JSON lines); relative to the config
    /// file's folder. Default: `<config name>.audit.jsonl` beside the config file.
    pub audit_log: Option<String>,
    /// Reload when the config file changes on disk (default); with `false`, only SIGHUP, the API
    /// and `tenantgate reload` do.
    pub watch_config: Option<bool>,
}

/// `[pools.<name>]`: a set of interchangeable upstreams and how to use them.
#[derive(Debug, Default, Deserialize)]
pub struct PoolFile {
    #[serde(default)]
    pub upstreams: Vec<String>,
    pub load_balancing: Option<LoadBalancingFile>,
    pub health_check: Option<HealthCheckFile>,
    pub connect_timeout_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
    pub write_timeout_ms: Option<u64>,
    /// How long an idle upstream keep-alive connection is kept for reuse.
    pub idle_timeout_ms: Option<u64>,
    /// How long an upstream that refused a connection is skipped (passive health, like nginx's
    /// `fail_timeout`).
    pub fail_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancingFile {
    RoundRobin,
    LeastRequest,
}

/// `health_check = { ... }` inside a pool. Without `path` the check is a TCP connect.
#[derive(Debug, Default, Deserialize)]
pub struct HealthCheckFile {
    pub path: Option<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    /// Host header sent with the HTTP check; defaults to the upstream's address.
    pub host: Option<String>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
}

/// `[tenants.<id>]`: one customer.
#[derive(Debug, Default, Deserialize)]
pub struct TenantFile {
    pub name: Option<String>,
    pub status: Option<TenantStatusFile>,
    pub pool: Option<String>,
    #[serde(default)]
    pub domains: Vec<String>,
    /// The pool the tenant was promoted from; `rollback` moves it back there. Set by `promote`.
    pub previous_pool: Option<String>,
    /// A stepped promotion in progress: `percent` of the tenant's requests go to `pool` instead of
    /// the tenant's own `pool`. Set and cleared by `promote` and `rollback`.
    pub canary: Option<CanaryFile>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CanaryFile {
    pub pool: Option<String>,
    pub percent: Option<u8>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatusFile {
    Active,
    Suspended,
}

/// `[hosts."<name>"]`: a reserved host that is not a tenant (an admin UI, a status page).
#[derive(Debug, Default, Deserialize)]
pub struct HostFile {
    pub pool: Option<String>,
}
