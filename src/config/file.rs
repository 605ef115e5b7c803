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
    /// `[jwt]`: how bearer tokens are verified; without it, tokens are never accepted.
    pub jwt: Option<JwtFile>,
    /// `[[route_rules]]`: paths that need a role, for every tenant.
    pub route_rules: Vec<Option<RouteRuleFile>>,
    /// `[limits]`: every tenant's limits unless its plan or itself says otherwise, and the Redis
    /// store that fleet-wide limits share.
    pub limits: LimitsFile,
    /// `[plans.<name>]`: limits shared by the tenants that name the plan.
    pub plans: Vec<Entry<PlanFile>>,
    /// `[metrics]`: which tenants get their own series.
    pub metrics: MetricsFile,
    /// `[store]`: the fleet's routing table in etcd. With it, this file holds only this instance's
    /// own settings (`config::shared` says which).
    pub store: Option<StoreFile>,
    /// `[acme]`: certificates for tenants' custom domains from an ACME CA. Each instance's own
    /// setting, like `[store]`.
    pub acme: Option<AcmeFile>,
    /// `[tracing]`: a span per request, exported over OTLP. Each instance's own, like `[acme]`.
    pub tracing: Option<TracingFile>,
    /// The store's entries were merged in (`load::merge_shared`): without them, an instance file's
    /// references to the table (a certificate's `tenant`) cannot be checked yet.
    pub merged: bool,
}

/// One `[section.<name>]` table.
#[derive(Debug)]
pub struct Entry<T> {
    pub name: String,
    /// `None` when the entry could not be decoded. Its error is already reported; its name still
    /// counts as defined, so references to it are not reported a second time.
    pub value: Option<T>,
}

impl<T> Entry<T> {
    /// An entry that could not be decoded, defined by name only.
    pub fn undecoded(name: String) -> Entry<T> {
        Entry { name, value: None }
    }
}

/// `[store]`: where a fleet of gateways keeps the routing table they share.
#[derive(Debug, Default, Deserialize)]
pub struct StoreFile {
    /// etcd endpoints: `http://HOST:PORT` (or `https://` with `tls`).
    #[serde(default)]
    pub etcd: Vec<String>,
    /// Every key of the fleet's table is below it: one fleet per prefix.
    pub prefix: Option<String>,
    /// The environment variables holding etcd's user name and password, when etcd asks for them.
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    /// TLS to etcd: `ca` to verify it by, `cert` and `key` for a client certificate.
    pub tls: Option<StoreTlsFile>,
    /// This instance's name in the fleet (audit records, promotion locks, canary counts). Default:
    /// the host name and the admin port.
    pub instance: Option<String>,
    /// How long a promotion lock or a published count outlives an instance that stopped. Default 10.
    pub lease_seconds: Option<u64>,
    /// The most operations etcd takes in one transaction (its `--max-txn-ops`, 128 by default): an
    /// `apply` of more entries is written in several transactions.
    pub max_txn_ops: Option<usize>,
    /// How long one call to etcd may take. Default 2000.
    pub timeout_ms: Option<u64>,
    /// How long start-up waits for etcd before giving up. Default 10000.
    pub start_timeout_ms: Option<u64>,
}

/// `[acme]`: where certificates for custom domains come from, and the limits that keep ordering
/// them safe.
#[derive(Debug, Default, Deserialize)]
pub struct AcmeFile {
    /// The ACME directory URL. Default: Let's Encrypt's production directory.
    pub directory: Option<String>,
    /// A PEM file to trust for the directory's own HTTPS (a private CA, a test CA).
    pub directory_ca: Option<String>,
    /// `mailto:` addresses the CA may write to about the account.
    pub contact: Option<StringOrList>,
    /// Which challenges are tried, in order: `http-01`, `tls-alpn-01`. Default both.
    pub challenges: Option<Vec<String>>,
    /// How long before expiry a certificate is renewed. Default 30 (at most a third of its life).
    pub renew_before_days: Option<u32>,
    /// Order a certificate during the first handshake for a name of an active tenant that has none.
    pub on_demand: Option<bool>,
    /// How long such a handshake waits for the certificate. Default 5000.
    pub on_demand_wait_ms: Option<u64>,
    /// Orders this instance starts per hour, all names together. Default 100.
    pub max_per_hour: Option<u32>,
    /// Orders per tenant per day. Default 20.
    pub max_per_tenant_per_day: Option<u32>,
    /// Where the account and certificates are kept. Default `acme` beside the config.
    pub state_dir: Option<String>,
    /// The wait after a failed order before the name is tried again; it doubles with each failure,
    /// up to six hours. Default 60.
    pub retry_after_seconds: Option<u64>,
}

/// `tls = { ... }` in `[store]`.
#[derive(Debug, Default, Deserialize)]
pub struct StoreTlsFile {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
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
    /// The load balancers in front of the gateway: behind them, the client is the first address
    /// of `X-Forwarded-For`, from the right, that is not one of them.
    pub trusted_proxies: Option<Vec<String>>,
    pub log_format: Option<LogFormatFile>,
    /// Accept HTTP/2 with prior knowledge on the plaintext listener. Off by default: detecting it costs
    /// a peek on every keep-alive request.
    pub h2c: Option<bool>,
    /// Let idle worker threads take tasks from busy ones. Off by default: each thread then runs its
    /// own connections start to finish, like nginx workers, which is faster for short requests.
    pub work_stealing: Option<bool>,
    /// Idle upstream connections kept for reuse, for the whole process. Default: follows the table
    /// (see `upstream_keepalive_for`), not Pingora's 128 per thread.
    pub upstream_keepalive: Option<usize>,
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
    /// Where the tenant of a request on a tenant's own host comes from (a tenant's own
    /// `tenant_source` wins). Default `host`.
    pub tenant_source: Option<TenantSourceFile>,
    /// A header that carries an API key, besides `Authorization: Bearer`.
    pub api_key_header: Option<String>,
    /// The header with which a request picks one of the tenants its token lists. Default
    /// `X-Switch-Tenant`.
    pub switch_tenant_header: Option<String>,
}

/// `tenant_source`: what names the tenant of a request.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantSourceFile {
    /// The Host header (or SNI): no credential needed.
    Host,
    /// A verified credential: the token's tenant claim, or the API key's tenant.
    Claim,
    /// Both, and they must agree.
    HostAndClaim,
}

/// `[jwt]`: the tokens the gateway trusts and the claims it reads.
#[derive(Debug, Default, Deserialize)]
pub struct JwtFile {
    /// When set, a token's `iss` must equal it.
    pub issuer: Option<String>,
    /// When set, a token's `aud` must contain it (a string or a list of accepted values).
    pub audience: Option<StringOrList>,
    /// The claim that names the tenant. Default `tid`.
    pub tenant_claim: Option<String>,
    /// The claim listing the tenants the subject may switch between.
    pub tenants_claim: Option<String>,
    /// The claim listing the subject's roles (a list, or a space-separated string). Default `roles`.
    pub roles_claim: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`. Default 30.
    pub leeway_seconds: Option<u64>,
    /// A JWKS document (RFC 7517) on disk, reloaded with the config when it changes.
    pub jwks_file: Option<String>,
    /// A JWKS document fetched over HTTP(S), cached and refreshed.
    pub jwks_url: Option<String>,
    /// How often `jwks_url` is fetched again. Default 300.
    pub jwks_refresh_seconds: Option<u64>,
    /// How many verified tokens are remembered, so that a token is verified once, not on every
    /// request. 0: none. Default 16384.
    pub cache_size: Option<usize>,
    /// Keys written in the config.
    #[serde(default)]
    pub keys: Vec<JwtKeyFile>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// `[[jwt.keys]]`: one verification key, bound to one algorithm.
#[derive(Debug, Default, Deserialize)]
pub struct JwtKeyFile {
    pub kid: Option<String>,
    /// HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA.
    pub alg: Option<String>,
    /// The shared secret of an HS* key, as written.
    pub secret: Option<String>,
    /// The environment variable holding the shared secret.
    pub secret_env: Option<String>,
    /// A public key (PEM, SubjectPublicKeyInfo) written inline.
    pub public_key: Option<String>,
    /// A public key PEM file, relative to the config file.
    pub public_key_file: Option<String>,
    /// The environment variable holding a public key PEM.
    pub public_key_env: Option<String>,
}

/// `[[route_rules]]` (or `[[tenants.<id>.route_rules]]`): a path prefix that needs a role.
#[derive(Debug, Default, Deserialize)]
pub struct RouteRuleFile {
    /// Matched by whole segments: `/admin` covers `/admin` and `/admin/x`, not `/administrator`.
    pub path_prefix: Option<String>,
    /// The request's token must carry at least one of these roles.
    #[serde(default)]
    pub roles: Vec<String>,
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
    /// The SHA-256 (hex) of the bearer token the admin API asks for.
    pub token_sha256: Option<String>,
    /// The environment variable holding the admin API's bearer token.
    pub token_env: Option<String>,
    /// Ask for the token on `/metrics` too. Default `false` (scrapers often hold no secret).
    pub metrics_require_token: Option<bool>,
}

/// `[tracing]`: OpenTelemetry spans, one per request, sent to an OTLP/HTTP collector.
#[derive(Debug, Default, Deserialize)]
pub struct TracingFile {
    /// The collector's OTLP/HTTP traces URL, `http://127.0.0.1:4318/v1/traces`.
    pub otlp_endpoint: Option<String>,
    /// The share of traces this gateway starts that are recorded (0 to 1, default 1); a request
    /// that arrives with a `traceparent` follows its sampled flag.
    pub sample_ratio: Option<f64>,
    /// `service.name` of the spans. Default `tenantgate`.
    pub service_name: Option<String>,
}

/// `[pools.<name>]`: a set of interchangeable upstreams and how to use them.
#[derive(Debug, Default, Deserialize)]
pub struct PoolFile {
    /// `"IP:PORT"` or `"HOST:PORT"`, or `{ addr = "...", weight = 3 }`.
    #[serde(default)]
    pub upstreams: Vec<UpstreamFile>,
    /// Retries on another upstream, and the budget that keeps them from multiplying an outage.
    pub retries: Option<RetriesFile>,
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
    /// `http1` (default), `h2` (HTTP/2 over the pool's `tls`, by ALPN) or `h2c` (HTTP/2 in the
    /// clear, by prior knowledge): what gRPC backends speak.
    pub protocol: Option<UpstreamProtocolFile>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocolFile {
    Http1,
    H2,
    H2c,
}

/// One entry of a pool's `upstreams`: an address, or an address with a weight.
#[derive(Debug, Clone)]
pub struct UpstreamFile {
    pub addr: String,
    /// Its share of the pool's requests against the others' (default 1).
    pub weight: Option<u32>,
}

/// The table form of an upstream, with its keys checked like every other table's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightedUpstreamFile {
    addr: String,
    weight: Option<u32>,
}

impl<'de> Deserialize<'de> for UpstreamFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UpstreamFile;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"IP:PORT\", \"HOST:PORT\" or { addr = \"...\", weight = N }")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<UpstreamFile, E> {
                Ok(UpstreamFile {
                    addr: s.to_owned(),
                    weight: None,
                })
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                map: M,
            ) -> Result<UpstreamFile, M::Error> {
                let w = WeightedUpstreamFile::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(UpstreamFile {
                    addr: w.addr,
                    weight: w.weight,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `retries = { attempts = 3, on = ["connect", "5xx", "reset"], methods = [...], budget_percent = 20 }`.
#[derive(Debug, Default, Deserialize)]
pub struct RetriesFile {
    /// Tries per request, the first included. Default 2.
    pub attempts: Option<u32>,
    /// What is retried: `connect` (nothing was sent), `reset` (the connection broke before a
    /// response), `5xx` (the upstream answered 500 to 599). Default `["connect", "reset"]`.
    pub on: Option<Vec<String>>,
    /// Methods retried after `reset` or `5xx` (something was sent). Default the idempotent ones.
    pub methods: Option<Vec<String>>,
    /// Retries within a 10 s window, as a percent of the pool's requests in it (at least 10
    /// retries). Default 20.
    pub budget_percent: Option<u32>,
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
    /// Overrides `[gateway] tenant_source` for this tenant's hosts.
    pub tenant_source: Option<TenantSourceFile>,
    /// Keys that act for this tenant; only their hashes are kept.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyFile>,
    /// Paths of this tenant that need a role, besides the global `[[route_rules]]`.
    #[serde(default)]
    pub route_rules: Vec<RouteRuleFile>,
    /// The `[plans.<name>]` whose limits apply where the tenant sets none of its own.
    pub plan: Option<String>,
    /// `false`: no ACME certificate for this tenant's domains (it brings its own `[[certificates]]`).
    pub acme: Option<bool>,
    /// What the tenant answers while `status = "maintenance"`.
    pub maintenance: Option<MaintenanceFile>,
    /// Overrides the plan's and `[limits]`'s `rate_limit`.
    pub rate_limit: Option<RateLimitFile>,
    /// Overrides the plan's and `[limits]`'s `credential_rate_limit`.
    pub credential_rate_limit: Option<RateLimitFile>,
    /// Overrides the plan's and `[limits]`'s `concurrency`.
    pub concurrency: Option<ConcurrencyFile>,
    /// Merged by `path_prefix` over the plan's and `[limits]`'s.
    #[serde(default)]
    pub route_limits: Vec<RouteLimitFile>,
    /// Client addresses and networks (CIDR) the tenant takes requests from; `[]` lifts an
    /// inherited list.
    pub allow_ips: Option<Vec<String>>,
    /// Client addresses and networks refused, whatever `allow_ips` says; `[]` lifts an inherited
    /// list.
    pub deny_ips: Option<Vec<String>>,
    /// The largest request body taken (413 `request_too_large`); 0 lifts an inherited limit.
    pub max_request_body_bytes: Option<u64>,
    /// The largest request line and headers taken (431); 0 lifts an inherited limit.
    pub max_request_header_bytes: Option<u64>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
pub struct LimitsFile {
    /// Requests per second a tenant may send (token bucket: a steady rate and a burst).
    pub rate_limit: Option<RateLimitFile>,
    /// The same, per API key or token subject, within the tenant's limit.
    pub credential_rate_limit: Option<RateLimitFile>,
    /// Requests of one tenant in flight at once.
    pub concurrency: Option<ConcurrencyFile>,
    /// Rate limits per path prefix, each counted per tenant.
    #[serde(default)]
    pub route_limits: Vec<RouteLimitFile>,
    /// Client addresses and networks (CIDR) the tenant takes requests from; `[]` lifts an
    /// inherited list.
    pub allow_ips: Option<Vec<String>>,
    /// Client addresses and networks refused, whatever `allow_ips` says; `[]` lifts an inherited
    /// list.
    pub deny_ips: Option<Vec<String>>,
    /// The largest request body taken (413 `request_too_large`); 0 lifts an inherited limit.
    pub max_request_body_bytes: Option<u64>,
    /// The largest request line and headers taken (431); 0 lifts an inherited limit.
    pub max_request_header_bytes: Option<u64>,
    /// Share rate limits across every gateway instance that names the same Redis.
    pub redis: Option<RedisFile>,
}

/// `rate_limit = { requests_per_second = 100, burst = 200 }`, or `{ unlimited = true }` to lift an
/// inherited limit.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RateLimitFile {
    pub requests_per_second: Option<f64>,
    /// Requests allowed at once after a quiet period. Default: one second's worth (at least 1).
    pub burst: Option<u32>,
    pub unlimited: Option<bool>,
}

/// `concurrency = { max_in_flight = 50, queue = 0, queue_timeout_ms = 100 }`, or
/// `{ unlimited = true }`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct ConcurrencyFile {
    pub max_in_flight: Option<u32>,
    /// Requests that may wait for a slot instead of being refused at once. Default 0.
    pub queue: Option<u32>,
    /// How long a queued request waits before it is refused. Default 100.
    pub queue_timeout_ms: Option<u64>,
    pub unlimited: Option<bool>,
}

/// `[[limits.route_limits]]` (also in plans and tenants).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RouteLimitFile {
    /// Matched by whole segments, as route rules are.
    pub path_prefix: Option<String>,
    pub rate_limit: Option<RateLimitFile>,
}

/// `[limits.redis]`.
#[derive(Debug, Default, Deserialize)]
pub struct RedisFile {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: Option<String>,
    /// `sync` (default): decide locally, reconcile counts in the background. `exact`: ask Redis for
    /// every request.
    pub mode: Option<FleetModeFile>,
    /// How often `sync` reconciles. Default 200.
    pub sync_interval_ms: Option<u64>,
    /// How long a Redis call may take before the `on_error` policy applies. Default 50.
    pub timeout_ms: Option<u64>,
    /// `local` (default): this instance's own limiter decides alone. `deny`: refuse rate-limited
    /// tenants' requests with 503.
    pub on_error: Option<OnRedisErrorFile>,
    /// Prefix of every Redis key. Default `tenantgate`.
    pub key_prefix: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetModeFile {
    Sync,
    Exact,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisErrorFile {
    Local,
    Deny,
}

/// `[plans.<name>]`: the limit settings of `[limits]`, for the tenants on the plan.
#[derive(Debug, Default, Deserialize)]
pub struct PlanFile {
    pub rate_limit: Option<RateLimitFile>,
    pub credential_rate_limit: Option<RateLimitFile>,
    pub concurrency: Option<ConcurrencyFile>,
    #[serde(default)]
    pub route_limits: Vec<RouteLimitFile>,
    /// Client addresses and networks (CIDR) the tenant takes requests from; `[]` lifts an
    /// inherited list.
    pub allow_ips: Option<Vec<String>>,
    /// Client addresses and networks refused, whatever `allow_ips` says; `[]` lifts an inherited
    /// list.
    pub deny_ips: Option<Vec<String>>,
    /// The largest request body taken (413 `request_too_large`); 0 lifts an inherited limit.
    pub max_request_body_bytes: Option<u64>,
    /// The largest request line and headers taken (431); 0 lifts an inherited limit.
    pub max_request_header_bytes: Option<u64>,
}

/// `[metrics]`.
#[derive(Debug, Default, Deserialize)]
pub struct MetricsFile {
    /// Serve `/metrics` (and nothing else) on this address too, for scrapers that cannot reach
    /// the admin listener. Each instance's own, like `[limits.redis]`.
    pub listen: Option<String>,
    /// At most this many tenants get their own label values; the rest are summed as `_other`.
    /// Default 100.
    pub tenant_series_limit: Option<usize>,
    /// Tenants that always get their own series (they count towards the limit).
    #[serde(default)]
    pub tenant_series: Vec<String>,
}

/// `[[tenants.<id>.api_keys]]`: written by `tenantgate key create`, never holding the key itself.
#[derive(Debug, Default, Deserialize)]
pub struct ApiKeyFile {
    pub id: Option<String>,
    /// SHA-256 of the whole key, hex.
    pub sha256: Option<String>,
    /// RFC 3339.
    pub created: Option<String>,
    /// RFC 3339; the key is refused from then on.
    pub expires: Option<String>,
    /// RFC 3339; set by `key revoke`, the key is refused from then on.
    pub revoked: Option<String>,
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
    Maintenance,
}

/// `maintenance = { ... }`: what a tenant with `status = "maintenance"` answers, besides 503
/// with `Retry-After`: the gateway's JSON error (default), a page of its own, or a redirect.
#[derive(Debug, Default, Deserialize)]
pub struct MaintenanceFile {
    /// A file to answer with (relative to the config file's folder), at most 1 MiB.
    pub body_file: Option<String>,
    /// Its `Content-Type`; default from the file's extension (`.html`, `.json`, `.txt`).
    pub content_type: Option<String>,
    /// An absolute URL to send clients to instead (302), a status page for example.
    pub redirect: Option<String>,
    /// The `Retry-After` seconds. Default 120.
    pub retry_after_seconds: Option<u32>,
}

/// `[hosts."<name>"]`: a reserved host that is not a tenant (an admin UI, a status page).
#[derive(Debug, Default, Deserialize)]
pub struct HostFile {
    pub pool: Option<String>,
    /// `claim`: a shared host (an API host) whose requests act for the tenant their credential
    /// names, routed to that tenant's pool. Default `host`: the reserved host's own `pool`.
    pub tenant_source: Option<TenantSourceFile>,
}
