//! A config file after validation: every default applied, every name resolved, every address parsed.
//!
//! Nothing downstream of here re-checks the file; code that holds a `GatewayConfig` may rely on its
//! invariants (pools referenced by tenants and hosts exist, hosts are canonical and claimed once).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::persistent::{ChunkedVec, ShardedMap};
use crate::tenant::{TenantId, TenantStatus};
use crate::tls::certificate::ServingCertificate;
use crate::traffic_policy::IpList;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The file this was loaded from; relative paths inside it are relative to its folder.
    pub path: PathBuf,
    pub gateway: GatewaySettings,
    pub admin: AdminSettings,
    pub routing: RoutingConfig,
}

/// Settings fixed for the life of a process (changing them needs a restart or binary upgrade).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    pub http_listen: SocketAddr,
    pub https_listen: Option<SocketAddr>,
    pub threads: usize,
    pub log_format: LogFormat,
    pub h2c: bool,
    pub work_stealing: bool,
    /// `upstream_keepalive`; `None`: sized from the table at start.
    pub upstream_keepalive: Option<usize>,
    /// `[limits.redis]`: the store fleet-wide limits share (`None`: every limit is this instance's).
    pub fleet: Option<FleetConfig>,
    /// `[store]`: the etcd the fleet's routing table is kept in (`None`: this file holds it).
    pub store: Option<StoreConfig>,
    /// `[acme]`: certificates for custom domains from an ACME CA (`None`: files only).
    pub acme: Option<AcmeSettings>,
    /// `[tracing]`: spans over OTLP (`None`: no tracing; `traceparent` passes through untouched).
    pub tracing: Option<TracingSettings>,
}

/// Let's Encrypt's production directory, the default; its staging directory is one setting away.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    pub otlp_endpoint: String,
    /// 0 to 1, checked: never NaN, so the settings compare as equal to themselves.
    pub sample_ratio: f64,
    pub service_name: String,
}

impl Eq for TracingSettings {}

pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING_DIRECTORY: &str =
    "https://acme-staging-v02.api.letsencrypt.org/directory";
pub const DEFAULT_RENEW_BEFORE_DAYS: u32 = 30;
pub const DEFAULT_ON_DEMAND_WAIT_MS: u64 = 5_000;
pub const DEFAULT_ACME_MAX_PER_HOUR: u32 = 100;
pub const DEFAULT_ACME_MAX_PER_TENANT_PER_DAY: u32 = 20;
pub const DEFAULT_ACME_RETRY_AFTER_SECONDS: u64 = 60;

/// `[acme]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    pub directory: String,
    /// `directory_ca` as written, and where it is.
    pub directory_ca: Option<(String, PathBuf)>,
    pub contact: Vec<String>,
    /// In the order they are tried.
    pub challenges: Vec<AcmeChallenge>,
    pub renew_before: Duration,
    pub on_demand: bool,
    pub on_demand_wait: Duration,
    pub max_per_hour: u32,
    pub max_per_tenant_per_day: u32,
    pub state_dir: PathBuf,
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcmeChallenge {
    Http01,
    TlsAlpn01,
}

impl AcmeChallenge {
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// Where the fleet's routing table is kept, and who this instance is in the fleet.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub endpoints: Vec<String>,
    /// Starts with `/`, no trailing `/`.
    pub prefix: String,
    /// Read from the environment variables `[store]` names, at load.
    pub user: Option<(String, String)>,
    pub tls: Option<StoreTls>,
    pub instance: String,
    pub lease: Duration,
    pub max_txn_ops: usize,
    pub timeout: Duration,
    pub start_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreTls {
    /// PEM bytes, read at load.
    pub ca: Option<Vec<u8>>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

pub const DEFAULT_LEASE_SECONDS: u64 = 10;
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
pub const DEFAULT_STORE_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_STORE_START_TIMEOUT_MS: u64 = 10_000;

impl StoreConfig {
    /// How plans, status and logs name the store: endpoints and prefix, never the credentials.
    pub fn label(&self) -> String {
        format!("etcd {} {}", self.endpoints.join(","), self.prefix)
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("tls", &self.tls.is_some())
            .field("instance", &self.instance)
            .field("lease", &self.lease)
            .field("max_txn_ops", &self.max_txn_ops)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Where fleet-wide rate limits are counted, and what happens when it cannot be reached.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetConfig {
    pub url: String,
    pub mode: FleetMode,
    pub sync_interval: Duration,
    pub timeout: Duration,
    pub on_error: OnRedisError,
    pub key_prefix: String,
}

impl FleetConfig {
    /// The URL with any password replaced, for logs, plans and status.
    pub fn redacted_url(&self) -> String {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://***@{}", &self.url[..scheme], &self.url[at + 1..])
            }
            _ => self.url.clone(),
        }
    }
}

impl std::fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetConfig")
            .field("url", &self.redacted_url())
            .field("mode", &self.mode)
            .field("sync_interval", &self.sync_interval)
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetMode {
    /// Decide locally; reconcile counts with Redis in the background.
    Sync,
    /// Ask Redis for every request (an atomic script).
    Exact,
}

impl FleetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FleetMode::Sync => "sync",
            FleetMode::Exact => "exact",
        }
    }
}

/// What decides while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    /// This instance's own limiter, alone.
    Local,
    /// Nothing: rate-limited tenants' requests are refused (503).
    Deny,
}

impl OnRedisError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnRedisError::Local => "local",
            OnRedisError::Deny => "deny",
        }
    }
}

pub const DEFAULT_SYNC_INTERVAL_MS: u64 = 200;
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 50;
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "tenantgate";
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 100;
pub const DEFAULT_TENANT_SERIES_LIMIT: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Absolute (resolved against the config file's folder).
    pub audit_log: PathBuf,
    pub watch_config: bool,
    /// `None`: the admin API asks for no token (it then listens on loopback only).
    pub token: Option<AdminToken>,
    pub metrics_require_token: bool,
    /// `[metrics] listen`: a listener that serves `/metrics` only, never asking for the token.
    pub metrics_listen: Option<SocketAddr>,
}

/// The admin API's bearer token, as its SHA-256: the token itself is never kept in the config.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub sha256: [u8; 32],
    /// Where it came from (`token_sha256`, or `token_env = "NAME"`), for plans and status.
    pub source: String,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// What the routing table is built from.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// Canonical, longest first, so the most specific base domain matches.
    pub base_domains: Vec<String>,
    pub tenant_header: HeaderName,
    /// The tenant header as the operator spelled it, for the wire (HTTP/1 keeps header case).
    pub tenant_header_spelling: &'static str,
    /// One log line per request; part of the routing table so that a reload can switch it.
    pub access_log: bool,
    /// `[gateway] trusted_proxies`; part of the routing table so that a reload can change it.
    pub trusted_proxies: Arc<IpList>,
    pub pools: Vec<PoolConfig>,
    pub tenants: TenantList,
    pub hosts: Vec<HostConfig>,
    pub tls: TlsConfig,
    pub identity: IdentityConfig,
    pub metrics: MetricsConfig,
}

/// Which tenants get their own metric series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub tenant_series_limit: usize,
    /// Always labelled; the remaining slots go to the busiest tenants.
    pub tenant_series: Vec<TenantId>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            tenant_series_limit: DEFAULT_TENANT_SERIES_LIMIT,
            tenant_series: Vec::new(),
        }
    }
}

/// A token bucket: `per_second` on average, up to `burst` at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Finite and positive (validated), so equality is total.
    pub per_second: f64,
    pub burst: u32,
}

impl Eq for Rate {}

/// At most `max_in_flight` requests of a tenant at once; up to `queue` more wait `queue_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyLimit {
    pub max_in_flight: u32,
    pub queue: u32,
    pub queue_timeout: Duration,
}

/// A rate limit on the paths under `path_prefix`, counted per tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLimit {
    /// As a route rule's: starts with `/`, no trailing `/`.
    pub path_prefix: String,
    pub rate: Rate,
}

/// The limits that apply to one tenant, resolved from its own settings, its plan and `[limits]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantLimits {
    pub rate: Option<Rate>,
    /// Per API key or token subject, within `rate`.
    pub credential_rate: Option<Rate>,
    pub concurrency: Option<ConcurrencyLimit>,
    pub routes: Vec<RouteLimit>,
    /// `None`: every address.
    pub allow_ips: Option<Arc<IpList>>,
    pub deny_ips: Option<Arc<IpList>>,
    pub max_request_body_bytes: Option<u64>,
    pub max_request_header_bytes: Option<u64>,
}

/// How a request proves whom it acts for: tokens, API keys, the tenant source, role rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// For tenants' own hosts, unless the tenant says otherwise.
    pub tenant_source: TenantSource,
    /// A header carrying an API key, besides `Authorization: Bearer`.
    pub api_key_header: Option<HeaderName>,
    pub switch_tenant_header: HeaderName,
    pub jwt: Option<JwtConfig>,
    /// Apply to every tenant, besides each tenant's own.
    pub route_rules: Vec<RouteRule>,
}

pub const DEFAULT_SWITCH_TENANT_HEADER: &str = "x-switch-tenant";

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            tenant_source: TenantSource::Host,
            api_key_header: None,
            switch_tenant_header: HeaderName::from_static(DEFAULT_SWITCH_TENANT_HEADER),
            jwt: None,
            route_rules: Vec::new(),
        }
    }
}

/// What names the tenant of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantSource {
    /// The Host header; no credential is needed (route rules may still ask for one).
    Host,
    /// A verified credential: a token's tenant claim, or an API key's tenant.
    Claim,
    /// Both, and they must name the same tenant.
    HostAndClaim,
}

impl TenantSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantSource::Host => "host",
            TenantSource::Claim => "claim",
            TenantSource::HostAndClaim => "host_and_claim",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub issuer: Option<String>,
    /// Empty: `aud` is not checked.
    pub audience: Vec<String>,
    pub tenant_claim: String,
    pub tenants_claim: Option<String>,
    pub roles_claim: String,
    pub leeway_seconds: u64,
    /// Verified tokens remembered (0: every request is verified).
    pub cache_size: usize,
    /// From `[[jwt.keys]]` and `jwks_file`.
    pub keys: Vec<JwtKey>,
    pub jwks_file: Option<JwksFile>,
    pub jwks_url: Option<JwksUrl>,
}

pub const DEFAULT_TENANT_CLAIM: &str = "tid";
pub const DEFAULT_ROLES_CLAIM: &str = "roles";
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;
pub const DEFAULT_TOKEN_CACHE_SIZE: usize = 16 * 1024;
pub const MAX_TOKEN_CACHE_SIZE: usize = 1 << 24;
pub const DEFAULT_JWKS_REFRESH_SECONDS: u64 = 300;

/// A verification key bound to one algorithm: a token signed with any other is refused, whatever
/// its header says (no RS256/HS256 confusion).
#[derive(Clone)]
pub struct JwtKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    /// Where it was written (`jwt.keys[0]`, `jwks_file`, `jwks_url`), for operators.
    pub origin: String,
    /// Of the key material, to tell a changed key from the same one.
    pub digest: u64,
    pub key: Arc<DecodingKey>,
}

impl PartialEq for JwtKey {
    fn eq(&self, other: &Self) -> bool {
        self.kid == other.kid
            && self.alg == other.alg
            && self.origin == other.origin
            && self.digest == other.digest
    }
}

impl Eq for JwtKey {}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksFile {
    pub label: String,
    pub path: PathBuf,
    /// Of the file's bytes, to see that it changed on disk.
    pub file_digest: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksUrl {
    pub url: String,
    pub refresh: Duration,
}

/// Requests under `path_prefix` need a token carrying one of `roles`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    /// Starts with `/`, no trailing `/` (except the root itself).
    pub path_prefix: String,
    pub roles: Vec<String>,
}

/// One API key of a tenant, as its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyConfig {
    pub id: String,
    pub sha256: [u8; 32],
    /// Unix seconds.
    pub created: i64,
    pub expires: Option<i64>,
    pub revoked: Option<i64>,
}

impl std::fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("id", &self.id)
            .field("created", &self.created)
            .field("expires", &self.expires)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// What the HTTPS side serves: certificates, and how plain HTTP is pointed at it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub certificates: Vec<CertificateConfig>,
    /// Plain-HTTP requests are redirected to HTTPS unless their tenant says otherwise.
    pub https_redirect: bool,
    /// The port redirects name: `https_redirect_port`, else `https_listen`'s. `None` without an
    /// HTTPS listener (nothing to redirect to).
    pub redirect_port: Option<u16>,
    /// Sent on HTTPS responses unless the tenant says otherwise.
    pub hsts: Option<HstsConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HstsConfig {
    pub max_age_seconds: u64,
    pub include_subdomains: bool,
    pub preload: bool,
}

/// One year, what the HSTS preload list asks for.
pub const DEFAULT_HSTS_MAX_AGE_SECONDS: u64 = 31_536_000;

/// What `hsts = {}` means, and what a tenant's `hsts = true` gets without `[gateway] hsts`.
impl Default for HstsConfig {
    fn default() -> Self {
        HstsConfig {
            max_age_seconds: DEFAULT_HSTS_MAX_AGE_SECONDS,
            include_subdomains: false,
            preload: false,
        }
    }
}

impl HstsConfig {
    /// The `Strict-Transport-Security` header's value.
    pub fn header_value(&self) -> String {
        let mut value = format!("max-age={}", self.max_age_seconds);
        if self.include_subdomains {
            value.push_str("; includeSubDomains");
        }
        if self.preload {
            value.push_str("; preload");
        }
        value
    }
}

/// One `[[certificates]]` entry, loaded and checked.
#[derive(Debug, Clone)]
pub struct CertificateConfig {
    /// As written in the file, for operators (status, logs, plans).
    pub cert_label: String,
    /// Resolved against the config file's folder.
    pub cert: PathBuf,
    pub key: PathBuf,
    pub default: bool,
    pub tenant: Option<TenantId>,
    pub loaded: Arc<ServingCertificate>,
}

/// Two entries are the same when they name the same files holding the same certificate.
impl PartialEq for CertificateConfig {
    fn eq(&self, other: &Self) -> bool {
        self.cert == other.cert
            && self.key == other.key
            && self.default == other.default
            && self.tenant == other.tenant
            && self.loaded.fingerprint == other.loaded.fingerprint
            && self.loaded.files_digest == other.loaded.files_digest
    }
}

impl Eq for CertificateConfig {}

impl RoutingConfig {
    pub fn tenant(&self, id: &str) -> Option<&TenantConfig> {
        self.tenants.get(id)
    }
}

/// A config's tenants, in order (the file's, or the store's), each found by id in one lookup.
/// Copies share structure (`persistent`): a config that differs in one tenant from another costs
/// little more than one.
#[derive(Debug, Clone, Default)]
pub struct TenantList {
    list: ChunkedVec<Arc<TenantConfig>>,
    index: ShardedMap<Box<str>, usize>,
}

impl TenantList {
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&TenantConfig> {
        self.list.get(*self.index.get(id)?).map(|t| &**t)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &TenantConfig> + Clone {
        self.list.iter().map(|t| &**t)
    }

    /// Replaces the tenant of the same id where it stands, or adds it at the end.
    pub fn upsert(&mut self, tenant: Arc<TenantConfig>) {
        match self.index.get(tenant.id.as_str()) {
            Some(&i) => {
                self.list.set(i, tenant);
            }
            None => {
                self.index
                    .insert(Box::from(tenant.id.as_str()), self.list.len());
                self.list.push(tenant);
            }
        }
    }

    /// Removes the tenant; the last one takes its place in the order.
    pub fn remove(&mut self, id: &str) -> Option<Arc<TenantConfig>> {
        let i = self.index.remove(id)?;
        let removed = self.list.swap_remove(i)?;
        if let Some(moved) = self.list.get(i) {
            self.index.insert(Box::from(moved.id.as_str()), i);
        }
        Some(removed)
    }
}

impl FromIterator<TenantConfig> for TenantList {
    fn from_iter<I: IntoIterator<Item = TenantConfig>>(tenants: I) -> Self {
        let list: ChunkedVec<Arc<TenantConfig>> = tenants.into_iter().map(Arc::new).collect();
        let index = list
            .iter()
            .enumerate()
            .map(|(i, t)| (Box::from(t.id.as_str()), i))
            .collect();
        TenantList { list, index }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub name: String,
    pub upstreams: Vec<UpstreamConfig>,
    pub balancing: Balancing,
    pub health_check: Option<HealthCheckConfig>,
    pub timeouts: PoolTimeouts,
    /// The upstreams are reached over TLS.
    pub tls: Option<UpstreamTls>,
    pub retries: RetryPolicy,
    pub protocol: UpstreamProtocol,
}

/// What a pool's upstreams speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2 over TLS, agreed by ALPN.
    H2,
    /// HTTP/2 in the clear, by prior knowledge.
    H2c,
}

impl UpstreamProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::H2c => "h2c",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Sent as SNI and verified against the upstream's certificate.
    pub sni: String,
    pub verify: bool,
    /// Trust these instead of the system's roots.
    pub ca: Option<CaBundle>,
}

/// CA certificates read from a PEM file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub label: String,
    pub path: PathBuf,
    /// DER, one per certificate.
    pub certificates: Vec<Vec<u8>>,
    /// Of the file's bytes, to see that it changed on disk.
    pub file_digest: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// The address as the operator wrote it (`10.0.0.5:8080`, `backend.internal:8080`), for logs.
    pub label: String,
    pub addr: SocketAddr,
    /// Its share of the pool's requests against the others' (1 to `MAX_UPSTREAM_WEIGHT`).
    pub weight: u32,
}

pub const MAX_UPSTREAM_WEIGHT: u32 = 100;

/// When a request is tried again on another upstream of its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per request, the first included; `None`: as many as the pool has upstreams (what a
    /// pool without `retries` does).
    pub attempts: Option<u32>,
    pub on_connect: bool,
    pub on_reset: bool,
    pub on_5xx: bool,
    /// Methods retried after something was sent (`reset`, `5xx`); `None`: the idempotent ones.
    pub methods: Option<Vec<http::Method>>,
    /// Retries in a window, as a percent of the window's requests; `None`: no budget.
    pub budget_percent: Option<u32>,
}

impl Default for RetryPolicy {
    /// A pool without `retries`: failed connections go to the next upstream, and idempotent
    /// requests whose connection broke before a response, as nginx's `proxy_next_upstream error`.
    fn default() -> Self {
        RetryPolicy {
            attempts: None,
            on_connect: true,
            on_reset: true,
            on_5xx: false,
            methods: None,
            budget_percent: None,
        }
    }
}

impl RetryPolicy {
    /// Whether `method` may be sent again once something reached the upstream.
    pub fn replays(&self, method: &http::Method) -> bool {
        match &self.methods {
            Some(methods) => methods.contains(method),
            None => method.is_idempotent(),
        }
    }
}

/// How a pool spreads requests over its available upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balancing {
    /// Each upstream in turn.
    RoundRobin,
    /// The less busy of two upstreams picked at random ("power of two choices"): follows slow upstreams
    /// without the herding of a strict least-connections scan.
    LeastRequest,
}

impl Balancing {
    pub fn as_str(self) -> &'static str {
        match self {
            Balancing::RoundRobin => "round_robin",
            Balancing::LeastRequest => "least_request",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolTimeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
    /// How long an upstream that failed a connection is left out before it is tried again.
    pub fail: Duration,
}

/// The documented defaults (README, configuration reference), in milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_READ_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_FAIL_TIMEOUT_MS: u64 = 10_000;

impl Default for PoolTimeouts {
    fn default() -> Self {
        PoolTimeouts {
            connect: Duration::from_millis(DEFAULT_CONNECT_TIMEOUT_MS),
            read: Duration::from_millis(DEFAULT_READ_TIMEOUT_MS),
            write: Duration::from_millis(DEFAULT_WRITE_TIMEOUT_MS),
            idle: Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS),
            fail: Duration::from_millis(DEFAULT_FAIL_TIMEOUT_MS),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET path` must answer 200.
    Http { path: String, host: Option<String> },
    /// A TCP connection must open.
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantConfig {
    pub id: TenantId,
    pub name: String,
    pub status: TenantStatus,
    pub pool: String,
    /// Canonical exact hosts of this tenant besides its subdomains.
    pub domains: Vec<String>,
    /// Where `rollback` sends the tenant: the pool it was promoted from.
    pub previous_pool: Option<String>,
    /// A promotion in progress: part of the traffic goes to another pool.
    pub canary: Option<CanaryConfig>,
    /// `None`: as `[gateway]` says.
    pub https_redirect: Option<bool>,
    pub hsts: Option<bool>,
    /// `None`: as `[gateway]` says.
    pub tenant_source: Option<TenantSource>,
    pub api_keys: Vec<ApiKeyConfig>,
    pub route_rules: Vec<RouteRule>,
    pub plan: Option<String>,
    pub limits: TenantLimits,
    /// Its custom domains get ACME certificates (with `[acme]`); `false` in the file turns it off.
    pub acme: bool,
    /// What it answers while in maintenance (the default without a `maintenance` table).
    pub maintenance: Arc<MaintenancePage>,
}

/// The default `Retry-After` of a tenant in maintenance.
pub const DEFAULT_MAINTENANCE_RETRY_AFTER_SECONDS: u32 = 120;

/// The answer of a tenant in maintenance: 503 with `Retry-After`, and one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenancePage {
    pub retry_after_seconds: u32,
    pub answer: MaintenanceAnswer,
}

impl Default for MaintenancePage {
    fn default() -> Self {
        MaintenancePage {
            retry_after_seconds: DEFAULT_MAINTENANCE_RETRY_AFTER_SECONDS,
            answer: MaintenanceAnswer::Json,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaintenanceAnswer {
    /// The gateway's JSON error, `tenant_maintenance`.
    Json,
    /// The operator's page, read when the config was loaded.
    Page {
        body: bytes::Bytes,
        content_type: HeaderValue,
        /// Where it was read from (absolute), for `status` and diffs.
        path: PathBuf,
    },
    /// `302` to this URL.
    Redirect(HeaderValue),
}

/// `percent` (1 to 99) of a tenant's requests go to `pool`, the rest to the tenant's own pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryConfig {
    pub pool: String,
    pub percent: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Canonical host name.
    pub host: String,
    pub route: HostRoute,
}

/// Where a reserved host's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRoute {
    /// To this pool, with no tenant.
    Pool(String),
    /// To the pool of the tenant the request's credential names (a shared API host).
    Claim,
}

impl HostRoute {
    /// The pool's name, or `tenant's pool` for a shared host, for plans and listings.
    pub fn label(&self) -> String {
        match self {
            HostRoute::Pool(p) => p.clone(),
            HostRoute::Claim => "(the credential's tenant's pool)".to_owned(),
        }
    }

    pub fn pool(&self) -> Option<&str> {
        match self {
            HostRoute::Pool(p) => Some(p),
            HostRoute::Claim => None,
        }
    }
}
