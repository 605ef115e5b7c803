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
    /// `[[certificates]]`, in file order; `None` where an entry did not decode.
    pub certificates: Vec<Option<CertificateFile>>,
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
    /// The HTTPS listener; without it the gateway serves plain HTTP only.
    pub https_listen: Option<String>,
    /// Answer plain-HTTP requests with a redirect to HTTPS (every tenant; a tenant's own
    /// `https_redirect` wins).
    pub https_redirect: Option<bool>,
    /// The port redirects name, when clients reach HTTPS on another port than `https_listen`'s
    /// (behind NAT or a load balancer).
    pub https_redirect_port: Option<u16>,
    /// `Strict-Transport-Security` on every HTTPS response (a tenant's own `hsts` wins).
    pub hsts: Option<HstsFile>,
}

/// `hsts = { ... }` in `[gateway]`.
#[derive(Debug, Default, Deserialize)]
pub struct HstsFile {
    pub max_age_seconds: Option<u64>,
    pub include_subdomains: Option<bool>,
    pub preload: Option<bool>,
}

/// `[[certificates]]`: a certificate chain and its key. The names it serves come from its
/// subjectAltName entries.
#[derive(Debug, Default, Deserialize)]
pub struct CertificateFile {
    /// Chain, PEM, leaf first; relative to the config file's folder.
    pub cert: Option<String>,
    pub key: Option<String>,
    /// Served when the client's SNI matches no certificate, or it sends none.
    pub default: Option<bool>,
    /// The tenant this certificate belongs to: every name it serves must then be that tenant's.
    pub tenant: Option<String>,
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
    /// Reach the upstreams over TLS.
    pub tls: Option<UpstreamTlsFile>,
}

/// `tls = { ... }` inside a pool.
#[derive(Debug, Default, Deserialize)]
pub struct UpstreamTlsFile {
    /// The name sent as SNI and verified in the upstream's certificate. Default: the host of an
    /// upstream written as `HOST:PORT`.
    pub sni: Option<String>,
    /// CA certificates (PEM) that the upstream's certificate must chain to. Default: the system's.
    pub ca: Option<String>,
    /// `false` accepts any certificate (testing only). Default `true`.
    pub verify: Option<bool>,
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
    /// Overrides `[gateway] https_redirect` for this tenant.
    pub https_redirect: Option<bool>,
    /// Overrides whether this tenant's HTTPS responses carry `[gateway] hsts`.
    pub hsts: Option<bool>,
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
