//! From the file as written to a `GatewayConfig` the gateway can trust, collecting every error.
//!
//! Validation never stops at the first problem and never panics: an operator fixing a file should see
//! the whole list in one run of `tenantgate check`.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::error::{ConfigError, KeyPath};
use super::file::{
    AdminFile, CertificateFile, FileConfig, GatewayFile, HealthCheckFile, HostFile,
    LoadBalancingFile, LogFormatFile, PoolFile, RetriesFile, TenantFile, TenantStatusFile,
    TracingFile, UpstreamProtocolFile, UpstreamTlsFile,
};
use super::model::{
    AdminSettings, Balancing, CaBundle, CanaryConfig, CertificateConfig, GatewayConfig,
    GatewaySettings, HealthCheckConfig, HostConfig, HostRoute, HstsConfig, LogFormat, PoolConfig,
    PoolTimeouts, Probe, RetryPolicy, RoutingConfig, TenantConfig, TenantSource, TlsConfig,
    TracingSettings, UpstreamConfig, UpstreamProtocol, UpstreamTls, DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_FAIL_TIMEOUT_MS, DEFAULT_HSTS_MAX_AGE_SECONDS, DEFAULT_IDLE_TIMEOUT_MS,
    DEFAULT_READ_TIMEOUT_MS, DEFAULT_WRITE_TIMEOUT_MS, MAX_UPSTREAM_WEIGHT,
};
use crate::host::{canonical_domain, label_below};
use crate::tenant::{check_slug, TenantId, TenantStatus};
use crate::tls::certificate::{load_ca_bundle, load_pair, PemFile};
use crate::traffic_policy::IpList;

mod acme;
mod delta;
mod identity;
mod limits;
mod maintenance;
mod store;

pub use delta::{validate_delta, Delta, EntryChange, Mirror};
pub use store::TXN_OVERHEAD;

pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9900";
pub const DEFAULT_TENANT_HEADER: &str = "X-Tenant-ID";
pub const MAX_THREADS: usize = 1024;
pub const MAX_UPSTREAM_KEEPALIVE: usize = 1 << 20;

const DEFAULT_CHECK_INTERVAL_MS: u64 = 2_000;
const DEFAULT_CHECK_TIMEOUT_MS: u64 = 1_000;
const MIN_CHECK_INTERVAL_MS: u64 = 100;
const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 2;

/// Headers the gateway itself sets or that carry the framing of a request: the tenant header may be
/// none of them, or the gateway would corrupt requests or let a client's copy through.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-request-id",
];

/// Checks a decoded file and builds the model from it. `path` is only recorded, not read.
pub fn validate(file: &FileConfig, path: &Path) -> Result<GatewayConfig, Vec<ConfigError>> {
    let mut v = Validator {
        folder: path.parent().unwrap_or_else(|| Path::new("")).to_path_buf(),
        ..Validator::default()
    };
    let mut gateway = v.gateway(&file.gateway);
    gateway.fleet = v.fleet(file.limits.redis.as_ref());
    let limit_layers = v.limit_layers(&file.limits, &file.plans);
    let mut admin = v.admin(&file.admin, &gateway, path);
    admin.metrics_listen = v.metrics_listen(file.metrics.listen.as_deref(), &gateway, &admin);
    let folder = path.parent().unwrap_or_else(|| Path::new(""));
    gateway.store = v.store(file.store.as_ref(), admin.listen, folder);
    gateway.acme = v.acme(file.acme.as_ref(), &gateway, folder);
    gateway.tracing = v.tracing(file.tracing.as_ref());
    let base_domains = v.base_domains(&file.gateway.base_domains);
    let tenant_header_spelling = file
        .gateway
        .tenant_header
        .as_deref()
        .unwrap_or(DEFAULT_TENANT_HEADER);
    let tenant_header = v.tenant_header(tenant_header_spelling);

    let pool_names: PoolNames = file.pools.iter().map(|e| e.name.as_str()).collect();
    let pools = file
        .pools
        .iter()
        .filter_map(|e| Some((e.name.as_str(), e.value.as_ref()?)))
        .filter_map(|(name, pool)| v.pool(name, pool, folder))
        .collect();

    let mut claims = Claims {
        by_host: HashMap::with_capacity_and_hasher(file.tenants.len(), FastHash::default()),
        base_domains: &base_domains,
        tenant_ids: file.tenants.iter().map(|e| e.name.as_str()).collect(),
        rest: None,
    };
    let tenants: Vec<TenantConfig> = file
        .tenants
        .iter()
        .filter_map(|e| Some((e.name.as_str(), e.value.as_ref()?)))
        .filter_map(|(id, tenant)| v.tenant(id, tenant, &pool_names, &mut claims, &limit_layers))
        .collect();
    let hosts = file
        .hosts
        .iter()
        .filter_map(|e| Some((e.name.as_str(), e.value.as_ref()?)))
        .filter_map(|(name, host)| v.host(name, host, &pool_names, &mut claims))
        .collect();
    let tls = v.tls(file, &gateway, folder, &tenants, &base_domains);
    let identity = v.identity(file, folder);
    v.api_keys_unique(&mut HashMap::default(), &tenants);
    let tenant_ids: Vec<TenantId> = tenants.iter().map(|t| t.id.clone()).collect();
    let metrics = v.metrics(&file.metrics, &tenant_ids);
    let trusted_proxies = v.trusted_proxies(file.gateway.trusted_proxies.as_deref());

    if !v.errors.is_empty() {
        return Err(v.errors);
    }
    Ok(GatewayConfig {
        path: path.to_path_buf(),
        gateway,
        admin,
        routing: RoutingConfig {
            base_domains,
            tenant_header,
            tenant_header_spelling: intern(tenant_header_spelling),
            access_log: file.gateway.access_log.unwrap_or(true),
            trusted_proxies,
            pools,
            tenants: tenants.into_iter().collect(),
            hosts,
            tls,
            identity,
            metrics,
        },
    })
}

/// Every pool name in the file, also of pools that did not decode (their errors are reported once).
type PoolNames<'a> = HashSet<&'a str, FastHash>;

/// Validation keeps maps of every tenant and host; a fast hash matters at 100,000 tenants, and the
/// keys come from the operators' own file.
type FastHash = foldhash::fast::RandomState;

/// Who routes an exact host name, and where the file says so. Borrowed from the decoded file: a claim
/// becomes a `ConfigError` only when it conflicts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim<'a> {
    /// `tenants.<id>.domains[index]`.
    TenantDomain { tenant: &'a str, index: usize },
    /// `[hosts."<name>"]`, as written.
    Host { name: &'a str },
}

impl Claim<'_> {
    fn key(self) -> KeyPath {
        match self {
            Claim::TenantDomain { tenant, index } => KeyPath::root()
                .key("tenants")
                .key(tenant)
                .key("domains")
                .index(index),
            Claim::Host { name } => KeyPath::root().key("hosts").key(name),
        }
    }

    fn error(self, message: String) -> ConfigError {
        match self {
            Claim::TenantDomain { .. } => ConfigError::at_value(self.key(), message),
            Claim::Host { .. } => ConfigError::at_key(self.key(), message),
        }
    }

    fn owner(self) -> String {
        match self {
            Claim::TenantDomain { tenant, .. } => format!("tenant {tenant:?}"),
            Claim::Host { .. } => "a reserved host".to_owned(),
        }
    }
}

/// Every exact host claimed so far, and what a claim is checked against.
struct Claims<'a> {
    by_host: HashMap<String, Claim<'a>, FastHash>,
    base_domains: &'a [String],
    /// Every tenant id in the file, decoded or not: their subdomains are taken.
    tenant_ids: HashSet<&'a str, FastHash>,
    /// For a change of some entries of a config (`delta`): the claims and tenants of the rest.
    rest: Option<Rest<'a>>,
}

/// The part of a config a change leaves as it is, as far as host claims go.
struct Rest<'a> {
    claimed: &'a dyn Claimed,
    /// Hosts the changed entries claimed before: theirs to claim again, or nobody's.
    released: HashSet<String, FastHash>,
    /// Tenants the change removes or redefines: their ids are the change's to answer for.
    changed_tenants: HashSet<&'a str, FastHash>,
}

/// What the rest of a config says about host names, for checking a change of some of its entries
/// without the whole file. The routing table in use answers it.
pub trait Claimed {
    /// Who routes `host` (canonical) as an exact host.
    fn exact_owner(&self, host: &str) -> Option<ExactOwner>;
    fn has_tenant(&self, id: &str) -> bool;
}

/// An exact host's owner in the rest of a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExactOwner {
    /// A tenant's `domains`.
    Tenant(String),
    /// A `[hosts]` entry.
    Host(String),
}

impl ExactOwner {
    fn describe(&self) -> String {
        match self {
            ExactOwner::Tenant(id) => format!(
                "tenant {id:?} at {}",
                KeyPath::root().key("tenants").key(id).key("domains")
            ),
            ExactOwner::Host(h) => {
                format!("a reserved host at {}", KeyPath::root().key("hosts").key(h))
            }
        }
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<ConfigError>,
    /// The config file's folder: files the config names are relative to it.
    folder: PathBuf,
}

impl Validator {
    fn gateway(&mut self, g: &GatewayFile) -> GatewaySettings {
        let at = KeyPath::root().key("gateway");
        let http_listen = self.listen_address(
            at.key("http_listen"),
            g.http_listen.as_deref().unwrap_or(DEFAULT_HTTP_LISTEN),
        );
        let threads = match g.threads {
            Some(n) if (1..=MAX_THREADS).contains(&n) => n,
            Some(n) => {
                self.errors.push(ConfigError::at_value(
                    at.key("threads"),
                    format!("{n} worker threads: use 1 to {MAX_THREADS}, or leave it out for one per core"),
                ));
                1
            }
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        let https_listen = g.https_listen.as_deref().map(|text| {
            let addr = self.listen_address(at.key("https_listen"), text);
            if addr.port() != 0 && overlaps(addr, http_listen) {
                self.errors.push(ConfigError::at_value(
                    at.key("https_listen"),
                    format!("{addr} overlaps gateway.http_listen ({http_listen}); HTTPS needs its own port"),
                ));
            }
            addr
        });
        GatewaySettings {
            http_listen,
            https_listen,
            threads,
            log_format: match g.log_format {
                None | Some(LogFormatFile::Text) => LogFormat::Text,
                Some(LogFormatFile::Json) => LogFormat::Json,
            },
            h2c: g.h2c.unwrap_or(false),
            work_stealing: g.work_stealing.unwrap_or(false),
            upstream_keepalive: g.upstream_keepalive.filter(|&n| {
                let fits = (1..=MAX_UPSTREAM_KEEPALIVE).contains(&n);
                if !fits {
                    self.errors.push(ConfigError::at_value(
                        at.key("upstream_keepalive"),
                        format!("{n} idle upstream connections: use 1 to {MAX_UPSTREAM_KEEPALIVE}, or leave it out to size it from the pools"),
                    ));
                }
                fits
            }),
            fleet: None,
            store: None,
            acme: None,
            tracing: None,
        }
    }

    fn admin(&mut self, a: &AdminFile, gateway: &GatewaySettings, config: &Path) -> AdminSettings {
        let admin_key = KeyPath::root().key("admin").key("listen");
        let listen = self.listen_address(
            admin_key.clone(),
            a.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN),
        );
        let http_listen = gateway.http_listen;
        if let Some(https) = gateway.https_listen {
            if listen.port() != 0 && overlaps(listen, https) {
                self.errors.push(ConfigError::at_value(
                    KeyPath::root().key("gateway").key("https_listen"),
                    format!("{https} overlaps the admin API's address {listen}; the admin API needs its own port"),
                ));
            }
        }
        if overlaps(listen, http_listen) && listen.port() != 0 {
            // Point at the line the operator wrote: the admin address may be the default.
            let error = match a.listen {
                Some(_) => ConfigError::at_value(
                    admin_key,
                    format!("{listen} overlaps gateway.http_listen ({http_listen}); the admin API needs its own port"),
                ),
                None => ConfigError::at_value(
                    KeyPath::root().key("gateway").key("http_listen"),
                    format!("{http_listen} overlaps the admin API's default address {listen}; set [admin] listen or use another port"),
                ),
            };
            self.errors.push(error);
        }
        let folder = config.parent().unwrap_or_else(|| Path::new(""));
        let audit_log = match &a.audit_log {
            Some(path) if path.trim().is_empty() => {
                self.errors.push(ConfigError::at_value(
                    KeyPath::root().key("admin").key("audit_log"),
                    "is empty: give a file path, or leave the key out for the default beside the config",
                ));
                PathBuf::new()
            }
            Some(path) => folder.join(path),
            None => {
                let stem = config
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("tenantgate");
                folder.join(format!("{stem}.audit.jsonl"))
            }
        };
        let token = self.admin_token(a, listen);
        AdminSettings {
            listen,
            audit_log,
            watch_config: a.watch_config.unwrap_or(true),
            token,
            metrics_require_token: a.metrics_require_token.unwrap_or(false),
            metrics_listen: None,
        }
    }

    /// A pool's `retries`: a table of its own means a bound (`attempts`, default 2) and a budget
    /// (default 20 %).
    fn retries(&mut self, at: &KeyPath, r: &RetriesFile) -> RetryPolicy {
        let attempts = r.attempts.unwrap_or(2);
        if !(1..=10).contains(&attempts) {
            self.errors.push(ConfigError::at_value(
                at.key("attempts"),
                "must be from 1 (no retry) to 10",
            ));
        }
        let mut policy = RetryPolicy {
            attempts: Some(attempts),
            on_connect: true,
            on_reset: true,
            on_5xx: false,
            methods: None,
            budget_percent: Some(r.budget_percent.unwrap_or(20)),
        };
        if let Some(on) = &r.on {
            policy.on_connect = false;
            policy.on_reset = false;
            for (i, cause) in on.iter().enumerate() {
                match cause.as_str() {
                    "connect" => policy.on_connect = true,
                    "reset" => policy.on_reset = true,
                    "5xx" => policy.on_5xx = true,
                    other => self.errors.push(ConfigError::at_value(
                        at.key("on").index(i),
                        format!("{other:?} is not one of connect, reset, 5xx"),
                    )),
                }
            }
        }
        if let Some(methods) = &r.methods {
            let mut parsed = Vec::with_capacity(methods.len());
            for (i, m) in methods.iter().enumerate() {
                match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                    Ok(method) => parsed.push(method),
                    Err(_) => self.errors.push(ConfigError::at_value(
                        at.key("methods").index(i),
                        format!("{m:?} is not an HTTP method"),
                    )),
                }
            }
            policy.methods = Some(parsed);
        }
        if policy
            .budget_percent
            .is_some_and(|p| !(1..=100).contains(&p))
        {
            self.errors.push(ConfigError::at_value(
                at.key("budget_percent"),
                "must be from 1 to 100",
            ));
        }
        policy
    }

    /// `[tracing]`: where spans go, and how many.
    fn tracing(&mut self, t: Option<&TracingFile>) -> Option<TracingSettings> {
        let t = t?;
        let at = KeyPath::root().key("tracing");
        let endpoint = match t.otlp_endpoint.as_deref() {
            None => {
                self.errors.push(ConfigError::at_key(
                    at.clone(),
                    "needs otlp_endpoint, the collector's OTLP/HTTP traces URL (http://127.0.0.1:4318/v1/traces)",
                ));
                String::new()
            }
            Some(url) => {
                if !is_web_url(url) {
                    self.errors.push(ConfigError::at_value(
                        at.key("otlp_endpoint"),
                        format!("{url:?} is not an http:// or https:// URL"),
                    ));
                }
                url.to_owned()
            }
        };
        let sample_ratio = t.sample_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample_ratio) {
            self.errors.push(ConfigError::at_value(
                at.key("sample_ratio"),
                "must be from 0 (none) to 1 (every trace)",
            ));
        }
        let service_name = t
            .service_name
            .clone()
            .unwrap_or_else(|| "tenantgate".into());
        if service_name.trim().is_empty() {
            self.errors
                .push(ConfigError::at_value(at.key("service_name"), "is empty"));
        }
        Some(TracingSettings {
            otlp_endpoint: endpoint,
            sample_ratio,
            service_name,
        })
    }

    /// `[gateway] trusted_proxies`: addresses and networks.
    fn trusted_proxies(&mut self, entries: Option<&[String]>) -> Arc<IpList> {
        let at = KeyPath::root().key("gateway").key("trusted_proxies");
        Arc::new(
            self.addresses(&at, entries.unwrap_or_default())
                .unwrap_or_default(),
        )
    }

    /// A list of addresses and networks at `at`; each entry that is neither is an error at its
    /// index.
    fn addresses(&mut self, at: &KeyPath, entries: &[String]) -> Option<IpList> {
        match IpList::parse(entries) {
            Ok(list) => Some(list),
            Err(bad) => {
                for (i, why) in bad {
                    self.errors.push(ConfigError::at_value(at.index(i), why));
                }
                None
            }
        }
    }

    /// `[metrics] listen`, on a port of its own: the proxy's and the admin API's are taken.
    fn metrics_listen(
        &mut self,
        listen: Option<&str>,
        gateway: &GatewaySettings,
        admin: &AdminSettings,
    ) -> Option<SocketAddr> {
        let at = KeyPath::root().key("metrics").key("listen");
        let addr = self.listen_address(at.clone(), listen?);
        let taken = [
            ("gateway.http_listen", Some(gateway.http_listen)),
            ("gateway.https_listen", gateway.https_listen),
            ("admin.listen", Some(admin.listen)),
        ];
        for (key, other) in taken {
            if let Some(other) = other.filter(|o| addr.port() != 0 && overlaps(addr, *o)) {
                self.errors.push(ConfigError::at_value(
                    at.clone(),
                    format!("{addr} overlaps {key} ({other}); /metrics needs its own port"),
                ));
            }
        }
        Some(addr)
    }

    /// One key acts for one tenant: a hash under two tenants would make a key's tenant ambiguous.
    /// `owner` holds the hashes of tenants already counted (a delta's unchanged ones).
    fn api_keys_unique<'a>(
        &mut self,
        owner: &mut HashMap<[u8; 32], &'a str, FastHash>,
        tenants: impl IntoIterator<Item = &'a TenantConfig>,
    ) {
        for t in tenants {
            for (i, key) in t.api_keys.iter().enumerate() {
                if let Some(first) = owner.insert(key.sha256, t.id.as_str()) {
                    self.errors.push(ConfigError::at_value(
                        KeyPath::root()
                            .key("tenants")
                            .key(t.id.as_str())
                            .key("api_keys")
                            .index(i)
                            .key("sha256"),
                        format!("the same key hash is listed under tenant {first:?}; a key acts for one tenant"),
                    ));
                }
            }
        }
    }

    fn listen_address(&mut self, key: KeyPath, text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|_| {
            self.errors.push(ConfigError::at_value(
                key,
                format!(
                    "bad address {text:?}: expected IP:PORT, for example 0.0.0.0:8080 or [::]:8080"
                ),
            ));
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    }

    fn base_domains(&mut self, domains: &[String]) -> Vec<String> {
        let at = KeyPath::root().key("gateway").key("base_domains");
        let mut out: Vec<String> = Vec::new();
        for (i, domain) in domains.iter().enumerate() {
            match canonical_domain(domain) {
                Ok(d) if out.contains(&d) => self.errors.push(ConfigError::at_value(
                    at.index(i),
                    format!("{d:?} is listed twice"),
                )),
                Ok(d) => out.push(d),
                Err(e) => self.errors.push(ConfigError::at_value(
                    at.index(i),
                    format!("base domain {domain:?} {e}"),
                )),
            }
        }
        // Longest first: with `yourapp.test` and `eu.yourapp.test`, `acme.eu.yourapp.test` is tenant
        // `acme` under the more specific base domain.
        out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        out
    }

    fn tenant_header(&mut self, name: &str) -> HeaderName {
        let key = KeyPath::root().key("gateway").key("tenant_header");
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) if h.as_str().contains('_') => {
                // nginx and Apache drop headers with `_` by default, while CGI-style backends fold
                // `-` and `_` together: with `_` the backend could see only a client's copy.
                self.errors.push(ConfigError::at_value(
                    key,
                    format!(
                        "{name:?} contains '_', which many servers drop or fold into '-'; use '-'"
                    ),
                ));
                h
            }
            Ok(h) if RESERVED_HEADERS.contains(&h.as_str()) => {
                self.errors.push(ConfigError::at_value(
                    key,
                    format!("{name:?} is a header the gateway sets or that frames the request; choose another name"),
                ));
                h
            }
            Ok(h) => h,
            Err(_) => {
                self.errors.push(ConfigError::at_value(
                    key,
                    format!("{name:?} is not a valid HTTP header name"),
                ));
                HeaderName::from_static("x-tenant-id")
            }
        }
    }

    fn pool(&mut self, name: &str, p: &PoolFile, folder: &Path) -> Option<PoolConfig> {
        let at = KeyPath::root().key("pools").key(name);
        let before = self.errors.len();
        if let Err(e) = check_slug(name) {
            self.errors.push(ConfigError::at_key(
                at.clone(),
                format!("invalid pool name {name:?}: {e}"),
            ));
        }
        if p.upstreams.is_empty() {
            self.errors.push(ConfigError::at_value(
                at.key("upstreams"),
                "empty pool: list at least one upstream as \"IP:PORT\" or \"HOST:PORT\"",
            ));
        }
        let mut upstreams: Vec<UpstreamConfig> = Vec::new();
        for (i, entry) in p.upstreams.iter().enumerate() {
            let key = at.key("upstreams").index(i);
            let text = &entry.addr;
            let weight = entry.weight.unwrap_or(1);
            if !(1..=MAX_UPSTREAM_WEIGHT).contains(&weight) {
                self.errors.push(ConfigError::at_value(
                    key.key("weight"),
                    format!("must be from 1 to {MAX_UPSTREAM_WEIGHT}"),
                ));
            }
            match resolve_upstream(text) {
                Ok(addrs) => {
                    for addr in addrs {
                        if upstreams.iter().any(|u| u.addr == addr) {
                            self.errors.push(ConfigError::at_value(
                                key.clone(),
                                format!("{text:?} ({addr}) is already in this pool"),
                            ));
                        } else {
                            upstreams.push(UpstreamConfig {
                                label: text.clone(),
                                addr,
                                weight,
                            });
                        }
                    }
                }
                Err(why) => self.errors.push(ConfigError::at_value(
                    key,
                    format!("bad address {text:?}: {why}"),
                )),
            }
        }
        let health_check = p
            .health_check
            .as_ref()
            .map(|hc| self.health_check(&at.key("health_check"), hc));
        let timeouts = PoolTimeouts {
            connect: self.millis(
                &at,
                "connect_timeout_ms",
                p.connect_timeout_ms,
                DEFAULT_CONNECT_TIMEOUT_MS,
                1,
            ),
            read: self.millis(
                &at,
                "read_timeout_ms",
                p.read_timeout_ms,
                DEFAULT_READ_TIMEOUT_MS,
                1,
            ),
            write: self.millis(
                &at,
                "write_timeout_ms",
                p.write_timeout_ms,
                DEFAULT_WRITE_TIMEOUT_MS,
                1,
            ),
            idle: self.millis(
                &at,
                "idle_timeout_ms",
                p.idle_timeout_ms,
                DEFAULT_IDLE_TIMEOUT_MS,
                1,
            ),
            fail: self.millis(
                &at,
                "fail_timeout_ms",
                p.fail_timeout_ms,
                DEFAULT_FAIL_TIMEOUT_MS,
                0,
            ),
        };
        let tls = p
            .tls
            .as_ref()
            .and_then(|t| self.upstream_tls(&at.key("tls"), t, &upstreams, folder));
        let retries = p
            .retries
            .as_ref()
            .map(|r| self.retries(&at.key("retries"), r))
            .unwrap_or_default();
        let protocol = match p.protocol {
            None | Some(UpstreamProtocolFile::Http1) => UpstreamProtocol::Http1,
            Some(UpstreamProtocolFile::H2) => {
                if p.tls.is_none() {
                    self.errors.push(ConfigError::at_value(
                        at.key("protocol"),
                        "h2 is HTTP/2 over TLS: add tls = { ... } to the pool, or use h2c for HTTP/2 in the clear",
                    ));
                }
                UpstreamProtocol::H2
            }
            Some(UpstreamProtocolFile::H2c) => {
                if p.tls.is_some() {
                    self.errors.push(ConfigError::at_value(
                        at.key("protocol"),
                        "h2c is HTTP/2 in the clear: with tls, write protocol = \"h2\"",
                    ));
                }
                UpstreamProtocol::H2c
            }
        };
        if protocol != UpstreamProtocol::Http1
            && p.health_check.as_ref().is_some_and(|hc| hc.path.is_some())
        {
            self.errors.push(ConfigError::at_key(
                at.key("health_check").key("path"),
                "HTTP health checks speak HTTP/1.1; an HTTP/2 pool is checked by TCP connect (leave path out)",
            ));
        }
        (self.errors.len() == before).then(|| PoolConfig {
            name: name.to_owned(),
            tls,
            upstreams,
            retries,
            protocol,
            balancing: match p.load_balancing {
                None | Some(LoadBalancingFile::RoundRobin) => Balancing::RoundRobin,
                Some(LoadBalancingFile::LeastRequest) => Balancing::LeastRequest,
            },
            health_check,
            timeouts,
        })
    }

    fn health_check(&mut self, at: &KeyPath, hc: &HealthCheckFile) -> HealthCheckConfig {
        let probe = match &hc.path {
            None => Probe::Tcp,
            Some(path) => {
                // The probe is built from this at run time; what fails here would fail there.
                let buildable =
                    pingora::http::RequestHeader::build("GET", path.as_bytes(), None).is_ok();
                if !path.starts_with('/') || !buildable {
                    self.errors.push(ConfigError::at_value(
                        at.key("path"),
                        format!("{path:?} is not a request path: it must start with '/' and be a valid URI path (no spaces, quotes or angle brackets)"),
                    ));
                }
                if let Some(host) = &hc.host {
                    if host.is_empty() || HeaderValue::from_str(host).is_err() {
                        self.errors.push(ConfigError::at_value(
                            at.key("host"),
                            format!("{host:?} is not usable as a Host header"),
                        ));
                    }
                }
                Probe::Http {
                    path: path.clone(),
                    host: hc.host.clone(),
                }
            }
        };
        if hc.path.is_none() && hc.host.is_some() {
            self.errors.push(ConfigError::at_key(
                at.key("host"),
                "`host` applies to HTTP checks only; add a `path` or remove `host`",
            ));
        }
        HealthCheckConfig {
            probe,
            interval: self.millis(
                at,
                "interval_ms",
                hc.interval_ms,
                DEFAULT_CHECK_INTERVAL_MS,
                MIN_CHECK_INTERVAL_MS,
            ),
            timeout: self.millis(at, "timeout_ms", hc.timeout_ms, DEFAULT_CHECK_TIMEOUT_MS, 1),
            healthy_threshold: self.threshold(
                at,
                "healthy_threshold",
                hc.healthy_threshold,
                DEFAULT_HEALTHY_THRESHOLD,
            ),
            unhealthy_threshold: self.threshold(
                at,
                "unhealthy_threshold",
                hc.unhealthy_threshold,
                DEFAULT_UNHEALTHY_THRESHOLD,
            ),
        }
    }

    fn millis(
        &mut self,
        at: &KeyPath,
        key: &str,
        value: Option<u64>,
        default: u64,
        min: u64,
    ) -> Duration {
        let ms = value.unwrap_or(default);
        if ms < min {
            self.errors.push(ConfigError::at_value(
                at.key(key),
                format!("{ms} ms is too short; the least allowed is {min} ms"),
            ));
        }
        Duration::from_millis(ms)
    }

    fn threshold(&mut self, at: &KeyPath, key: &str, value: Option<u32>, default: u32) -> u32 {
        let n = value.unwrap_or(default);
        if n == 0 {
            self.errors.push(ConfigError::at_value(
                at.key(key),
                "must be at least 1 consecutive check",
            ));
        }
        n.max(1)
    }

    fn tenant<'a>(
        &mut self,
        id: &'a str,
        t: &TenantFile,
        pool_names: &PoolNames<'_>,
        claims: &mut Claims<'a>,
        limit_layers: &limits::LimitLayers,
    ) -> Option<TenantConfig> {
        let at = || KeyPath::root().key("tenants").key(id);
        let before = self.errors.len();
        let tenant_id = TenantId::parse(id)
            .map_err(|e| {
                self.errors.push(ConfigError::at_key(
                    at(),
                    format!("invalid tenant id {id:?}: {e}"),
                ))
            })
            .ok();
        let pool = match (&t.pool, pool_names) {
            // The common case, checked without building a key path.
            (Some(p), names) if names.contains(p.as_str()) => Some(p.clone()),
            _ => self.pool_reference(&at(), t.pool.as_deref(), pool_names, "tenant"),
        };
        let (previous_pool, canary) = match (&t.previous_pool, &t.canary) {
            (None, None) => (None, None),
            _ => self.promotion_state(&at(), t, t.pool.as_deref(), pool_names),
        };
        let mut domains = Vec::with_capacity(t.domains.len());
        for (index, domain) in t.domains.iter().enumerate() {
            let claim = Claim::TenantDomain { tenant: id, index };
            match canonical_domain(domain) {
                Ok(d) => {
                    if claims.claim(self, &d, claim) {
                        domains.push(d);
                    }
                }
                Err(e) => self
                    .errors
                    .push(claim.error(format!("domain {domain:?} {e}"))),
            }
        }
        let api_keys = self.api_keys(&at().key("api_keys"), &t.api_keys);
        let rules_at = at().key("route_rules");
        let route_rules = t
            .route_rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.route_rule(&rules_at.index(i), r))
            .collect();
        let limits = self.tenant_limits(&at(), t, limit_layers);
        let maintenance = self.maintenance(&at(), t.maintenance.as_ref());
        let (Some(id), Some(pool)) = (tenant_id, pool) else {
            return None;
        };
        (self.errors.len() == before).then(|| TenantConfig {
            name: t.name.clone().unwrap_or_else(|| id.to_string()),
            id,
            status: match t.status {
                None | Some(TenantStatusFile::Active) => TenantStatus::Active,
                Some(TenantStatusFile::Suspended) => TenantStatus::Suspended,
                Some(TenantStatusFile::Maintenance) => TenantStatus::Maintenance,
            },
            pool,
            domains,
            previous_pool,
            canary,
            https_redirect: t.https_redirect,
            hsts: t.hsts,
            tenant_source: identity::tenant_source(t.tenant_source),
            api_keys,
            route_rules,
            plan: t.plan.clone(),
            limits,
            acme: t.acme.unwrap_or(true),
            maintenance,
        })
    }

    fn host<'a>(
        &mut self,
        name: &'a str,
        h: &HostFile,
        pool_names: &PoolNames<'_>,
        claims: &mut Claims<'a>,
    ) -> Option<HostConfig> {
        let at = KeyPath::root().key("hosts").key(name);
        let route = match identity::tenant_source(h.tenant_source) {
            None | Some(TenantSource::Host) => self
                .pool_reference(&at, h.pool.as_deref(), pool_names, "reserved host")
                .map(HostRoute::Pool),
            Some(TenantSource::Claim) if h.pool.is_some() => {
                self.errors.push(ConfigError::at_key(
                    at.key("pool"),
                    "a host with tenant_source = \"claim\" routes to the pool of the tenant the credential names; remove pool",
                ));
                None
            }
            Some(TenantSource::Claim) => Some(HostRoute::Claim),
            Some(TenantSource::HostAndClaim) => {
                self.errors.push(ConfigError::at_value(
                    at.key("tenant_source"),
                    "a reserved host names no tenant, so host and claim cannot agree: use \"claim\" (the credential names the tenant) or \"host\"",
                ));
                None
            }
        };
        let host = match canonical_domain(name) {
            Ok(host) => claims
                .claim(self, &host, Claim::Host { name })
                .then_some(host),
            Err(e) => {
                self.errors
                    .push(ConfigError::at_key(at, format!("host {name:?} {e}")));
                None
            }
        };
        Some(HostConfig {
            host: host?,
            route: route?,
        })
    }

    /// A pool's `tls`: the name to verify, and the CA to verify it with.
    fn upstream_tls(
        &mut self,
        at: &KeyPath,
        t: &UpstreamTlsFile,
        upstreams: &[UpstreamConfig],
        folder: &Path,
    ) -> Option<UpstreamTls> {
        let verify = t.verify.unwrap_or(true);
        let sni = match &t.sni {
            Some(sni) => match canonical_domain(sni) {
                Ok(sni) => Some(sni),
                Err(e) => {
                    self.errors
                        .push(ConfigError::at_value(at.key("sni"), format!("{sni:?} {e}")));
                    None
                }
            },
            // The name the operator wrote the upstreams with, when they all agree on one.
            None => {
                let host_of = |u: &UpstreamConfig| {
                    let (host, _) = u.label.rsplit_once(':')?;
                    host.parse::<std::net::IpAddr>()
                        .is_err()
                        .then(|| host.to_ascii_lowercase())
                };
                let first = upstreams.first().and_then(host_of);
                match first {
                    Some(host) if upstreams.iter().all(|u| host_of(u).as_ref() == Some(&host)) => {
                        Some(host)
                    }
                    _ if !verify => Some(String::new()),
                    _ => {
                        self.errors.push(ConfigError::at_key(
                            at.clone(),
                            "missing `sni`: the upstreams are not all named by one host name; give the name their certificate is for",
                        ));
                        None
                    }
                }
            }
        };
        let ca = t.ca.as_deref().and_then(|label| {
            let path = folder.join(label);
            match load_ca_bundle(&path) {
                Ok((certificates, file_digest)) => Some(CaBundle {
                    label: label.to_owned(),
                    path,
                    certificates,
                    file_digest,
                }),
                Err(e) => {
                    self.errors
                        .push(ConfigError::at_value(at.key("ca"), e.to_string()));
                    None
                }
            }
        });
        if t.ca.is_some() && ca.is_none() {
            return None;
        }
        Some(UpstreamTls {
            sni: sni?,
            verify,
            ca,
        })
    }

    /// The HTTPS side: certificates (read and checked here), redirects and HSTS.
    fn tls(
        &mut self,
        file: &FileConfig,
        gateway: &GatewaySettings,
        folder: &Path,
        tenants: &[TenantConfig],
        base_domains: &[String],
    ) -> TlsConfig {
        let g = &file.gateway;
        let at = KeyPath::root().key("gateway");
        let mut certificates = Vec::with_capacity(file.certificates.len());
        let mut served: HashMap<String, usize, FastHash> = HashMap::default();
        let mut default: Option<usize> = None;
        for (i, entry) in file.certificates.iter().enumerate() {
            let Some(entry) = entry else { continue };
            // An instance file read before its store: the tenants it names are checked with it.
            let tenants = (file.store.is_none() || file.merged).then_some(tenants);
            if let Some(c) = self.certificate(i, entry, folder, tenants, base_domains) {
                let key = KeyPath::root().key("certificates").index(i);
                for name in &c.loaded.names {
                    if let Some(first) = served.insert(name.clone(), i) {
                        self.errors.push(ConfigError::at_key(
                            key.key("cert"),
                            format!("{name:?} is already served by certificates[{first}]; each name has one certificate"),
                        ));
                    }
                }
                if c.default {
                    match default {
                        Some(first) => self.errors.push(ConfigError::at_value(
                            key.key("default"),
                            format!(
                                "certificates[{first}] is the default already; only one can be"
                            ),
                        )),
                        None => default = Some(i),
                    }
                }
                certificates.push(c);
            }
        }
        if gateway.https_listen.is_none() && !file.certificates.is_empty() {
            self.errors.push(ConfigError::at_key(
                KeyPath::root().key("certificates"),
                "certificates are configured but nothing serves them: set [gateway] https_listen",
            ));
        }
        // With [acme], certificates come from the CA; files are optional.
        if gateway.https_listen.is_some() && file.certificates.is_empty() && gateway.acme.is_none()
        {
            self.errors.push(ConfigError::at_value(
                at.key("https_listen"),
                "an HTTPS listener needs certificates: add a [[certificates]] entry, or [acme] to get them from a CA",
            ));
        }
        let wants_redirect = g.https_redirect == Some(true)
            || file.tenants.iter().any(|e| {
                e.value
                    .as_ref()
                    .is_some_and(|t| t.https_redirect == Some(true))
            });
        if wants_redirect && gateway.https_listen.is_none() && g.https_redirect_port.is_none() {
            self.errors.push(ConfigError::at_key(
                at.clone(),
                "`https_redirect` sends clients to HTTPS, but there is no https_listen (or https_redirect_port) to send them to",
            ));
        }
        if g.https_redirect_port == Some(0) {
            self.errors.push(ConfigError::at_value(
                at.key("https_redirect_port"),
                "port 0 cannot be connected to",
            ));
        }
        let hsts = g.hsts.as_ref().map(|h| {
            let hsts = HstsConfig {
                max_age_seconds: h.max_age_seconds.unwrap_or(DEFAULT_HSTS_MAX_AGE_SECONDS),
                include_subdomains: h.include_subdomains.unwrap_or(false),
                preload: h.preload.unwrap_or(false),
            };
            if hsts.preload && (!hsts.include_subdomains || hsts.max_age_seconds < DEFAULT_HSTS_MAX_AGE_SECONDS) {
                self.errors.push(ConfigError::at_value(
                    at.key("hsts").key("preload"),
                    "the preload list requires include_subdomains = true and max_age_seconds of at least 31536000",
                ));
            }
            hsts
        });
        TlsConfig {
            certificates,
            https_redirect: g.https_redirect.unwrap_or(false),
            redirect_port: g
                .https_redirect_port
                .or(gateway.https_listen.map(|a| a.port())),
            hsts,
        }
    }

    fn certificate(
        &mut self,
        index: usize,
        c: &CertificateFile,
        folder: &Path,
        tenants: Option<&[TenantConfig]>,
        base_domains: &[String],
    ) -> Option<CertificateConfig> {
        let at = KeyPath::root().key("certificates").index(index);
        let (Some(cert_label), Some(key_label)) = (&c.cert, &c.key) else {
            let missing = match (&c.cert, &c.key) {
                (None, None) => "missing `cert` and `key` (PEM files)",
                (None, _) => "missing `cert` (the PEM certificate chain)",
                _ => "missing `key` (the PEM private key)",
            };
            self.errors.push(ConfigError::at_key(at, missing));
            return None;
        };
        let (cert, key) = (folder.join(cert_label), folder.join(key_label));
        let loaded = match load_pair(&cert, &key) {
            Ok(loaded) => loaded,
            Err(e) => {
                let field = match e.file() {
                    PemFile::Cert => "cert",
                    PemFile::Key => "key",
                };
                self.errors
                    .push(ConfigError::at_value(at.key(field), e.to_string()));
                return None;
            }
        };
        let tenant = match (c.tenant.as_deref(), tenants) {
            (None, _) => None,
            (Some(id), None) => match TenantId::parse(id) {
                Ok(id) => Some(id),
                Err(e) => {
                    self.errors.push(ConfigError::at_value(
                        at.key("tenant"),
                        format!("invalid tenant id {id:?}: {e}"),
                    ));
                    return None;
                }
            },
            (Some(id), Some(tenants)) => {
                let Some(owner) = tenants.iter().find(|t| t.id.as_str() == id) else {
                    self.errors.push(ConfigError::at_value(
                        at.key("tenant"),
                        format!("no tenant {id:?} is defined"),
                    ));
                    return None;
                };
                let foreign: Vec<&str> = loaded
                    .names
                    .iter()
                    .filter(|name| {
                        !owner.domains.contains(name)
                            && !base_domains
                                .iter()
                                .any(|base| label_below(name, base) == Some(id))
                    })
                    .map(String::as_str)
                    .collect();
                if !foreign.is_empty() {
                    self.errors.push(ConfigError::at_value(
                        at.key("cert"),
                        format!(
                            "the certificate of tenant {id:?} also serves {}, which {id:?} does not own (a tenant's certificate serves only its subdomain and its `domains`)",
                            foreign.join(", ")
                        ),
                    ));
                    return None;
                }
                Some(owner.id.clone())
            }
        };
        Some(CertificateConfig {
            cert_label: cert_label.clone(),
            cert,
            key,
            default: c.default.unwrap_or(false),
            tenant,
            loaded: std::sync::Arc::new(loaded),
        })
    }

    fn pool_reference(
        &mut self,
        at: &KeyPath,
        pool: Option<&str>,
        pool_names: &PoolNames<'_>,
        what: &str,
    ) -> Option<String> {
        let Some(pool) = pool else {
            self.errors.push(ConfigError::at_key(
                at.clone(),
                format!("missing `pool`: every {what} is routed to a pool"),
            ));
            return None;
        };
        self.known_pool(at.key("pool"), pool, pool_names)
    }

    /// `pool` if it is defined, else an error at `key` listing the pools that are.
    fn known_pool(
        &mut self,
        key: KeyPath,
        pool: &str,
        pool_names: &PoolNames<'_>,
    ) -> Option<String> {
        if pool_names.contains(pool) {
            return Some(pool.to_owned());
        }
        let mut known: Vec<&str> = pool_names.iter().copied().collect();
        known.sort_unstable();
        let known = match known.len() {
            0 => "no pools are defined".to_owned(),
            n if n > 10 => format!("pools include: {}, …", known[..10].join(", ")),
            _ => format!("pools are: {}", known.join(", ")),
        };
        self.errors.push(ConfigError::at_value(
            key,
            format!("unknown pool {pool:?} ({known})"),
        ));
        None
    }

    /// `previous_pool` and `canary`, which promotions write; both must name other defined pools.
    fn promotion_state(
        &mut self,
        at: &KeyPath,
        t: &TenantFile,
        pool: Option<&str>,
        pool_names: &PoolNames<'_>,
    ) -> (Option<String>, Option<CanaryConfig>) {
        let previous = t.previous_pool.as_deref().and_then(|p| {
            let key = at.key("previous_pool");
            let known = self.known_pool(key.clone(), p, pool_names)?;
            if Some(p) == pool {
                self.errors.push(ConfigError::at_value(
                    key,
                    format!("{p:?} is the tenant's current pool; rollback would change nothing"),
                ));
                return None;
            }
            Some(known)
        });
        let canary = t.canary.as_ref().and_then(|c| {
            let at = at.key("canary");
            let percent = match c.percent {
                Some(p @ 1..=99) => Some(p),
                Some(p) => {
                    self.errors.push(ConfigError::at_value(
                        at.key("percent"),
                        format!(
                            "{p}%: a canary takes 1 to 99 percent (0 is no canary, 100 is `pool`)"
                        ),
                    ));
                    None
                }
                None => {
                    self.errors
                        .push(ConfigError::at_key(at.clone(), "missing `percent`"));
                    None
                }
            };
            let target = match c.pool.as_deref() {
                None => {
                    self.errors
                        .push(ConfigError::at_key(at.clone(), "missing `pool`"));
                    None
                }
                Some(p) if Some(p) == pool => {
                    self.errors.push(ConfigError::at_value(
                        at.key("pool"),
                        format!("{p:?} is the tenant's own pool; a canary goes to another one"),
                    ));
                    None
                }
                Some(p) => self.known_pool(at.key("pool"), p, pool_names),
            };
            Some(CanaryConfig {
                pool: target?,
                percent: percent?,
            })
        });
        (previous, canary)
    }
}

impl<'a> Claims<'a> {
    /// Records that `claim` routes `host`, or reports why it may not: the host is already claimed,
    /// or it is another tenant's subdomain (exact hosts win over subdomains, so routing it elsewhere
    /// would silently take that tenant's traffic).
    fn claim(&mut self, v: &mut Validator, host: &str, claim: Claim<'a>) -> bool {
        if let Some(&first) = self.by_host.get(host) {
            v.errors.push(claim.error(format!(
                "host {host:?} is already claimed by {} at {}",
                first.owner(),
                first.key()
            )));
            return false;
        }
        if let Some(owner) = self.rest_owner(host) {
            v.errors.push(claim.error(format!(
                "host {host:?} is already claimed by {}",
                owner.describe()
            )));
            return false;
        }
        for base in self.base_domains {
            let Some(label) = label_below(host, base) else {
                continue;
            };
            let own = matches!(claim, Claim::TenantDomain { tenant, .. } if tenant == label);
            if !label.contains('.') && !own && self.is_tenant(label) {
                v.errors.push(claim.error(format!(
                    "{host:?} is the subdomain of tenant {label:?}; routing it to {} would take {label:?}'s traffic",
                    claim.owner()
                )));
                return false;
            }
        }
        self.by_host.insert(host.to_owned(), claim);
        true
    }
}

impl Claims<'_> {
    /// Who in the rest of the config (a change's) routes `host`, unless the change released it.
    fn rest_owner(&self, host: &str) -> Option<ExactOwner> {
        let rest = self.rest.as_ref()?;
        if rest.released.contains(host) {
            return None;
        }
        rest.claimed.exact_owner(host)
    }

    fn is_tenant(&self, id: &str) -> bool {
        self.tenant_ids.contains(id)
            || self
                .rest
                .as_ref()
                .is_some_and(|r| !r.changed_tenants.contains(id) && r.claimed.has_tenant(id))
    }
}

/// Whether two listeners would bind the same port on a shared address.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// An absolute `http://` or `https://` URL with a host (a collector, a status page).
fn is_web_url(url: &str) -> bool {
    url.parse::<http::Uri>()
        .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
}

/// A header name for the life of the process. Pingora copies a header name on every insert unless it is
/// `&'static`; a name is interned once per distinct spelling, so reloads do not grow memory.
fn intern(name: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, PoisonError};
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(&known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Parses `IP:PORT` or resolves `HOST:PORT` (every address it resolves to, as nginx does). Runs at
/// load time only: Pingora's peers must never resolve names on the request path.
fn resolve_upstream(text: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return if addr.port() == 0 {
            Err("port 0 cannot be connected to".into())
        } else {
            Ok(vec![addr])
        };
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("missing port: write it as HOST:PORT".into());
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err("port 0 cannot be connected to".into());
    }
    if host.is_empty() || host.contains(['[', ']', '/', ' ', '@']) {
        return Err("expected IP:PORT or HOST:PORT".into());
    }
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(format!("{host:?} resolves to no address"));
    }
    Ok(addrs)
}
