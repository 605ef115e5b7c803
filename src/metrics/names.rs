//! Every metric name the gateway exports, in one place: dashboards and alerts depend on them, so a
//! rename is a breaking change. Prefix `tenantgate_`, base units, `_total` for counters.
//!
//! Per-tenant metrics carry `tenant`: the tenant's id for tenants with their own series (the
//! allow-list and the busiest, up to `[metrics] tenant_series_limit`), [`OTHER_TENANTS`] for the sum
//! of all others, and [`NO_TENANT`] for requests that matched no tenant.

// Per tenant.
pub const REQUESTS_TOTAL: &str = "tenantgate_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "tenantgate_request_duration_seconds";
pub const UPSTREAM_RESPONSE_SECONDS: &str = "tenantgate_upstream_response_seconds";
pub const REQUEST_BYTES_TOTAL: &str = "tenantgate_request_bytes_total";
pub const RESPONSE_BYTES_TOTAL: &str = "tenantgate_response_bytes_total";
pub const RATE_LIMITED_TOTAL: &str = "tenantgate_rate_limited_total";
pub const OVERLOADED_TOTAL: &str = "tenantgate_overloaded_total";
pub const UPSTREAM_ERRORS_TOTAL: &str = "tenantgate_upstream_errors_total";
pub const IN_FLIGHT_REQUESTS: &str = "tenantgate_in_flight_requests";

// Gateway-wide.
pub const GATEWAY_ERRORS_TOTAL: &str = "tenantgate_gateway_errors_total";
pub const UPSTREAM_RETRIES_TOTAL: &str = "tenantgate_upstream_retries_total";
pub const UPSTREAM_RETRIES_REFUSED_TOTAL: &str = "tenantgate_upstream_retries_refused_total";
pub const WEBSOCKET_CONNECTIONS: &str = "tenantgate_websocket_connections";
pub const WEBSOCKET_BYTES_TOTAL: &str = "tenantgate_websocket_bytes_total";
pub const UPSTREAM_EJECTIONS_TOTAL: &str = "tenantgate_upstream_ejections_total";
pub const UPSTREAM_HEALTHY: &str = "tenantgate_upstream_healthy";
pub const CONFIG_GENERATION: &str = "tenantgate_config_generation";
pub const TENANTS: &str = "tenantgate_tenants";
pub const TENANT_SERIES: &str = "tenantgate_tenant_series";
pub const RELOADS_TOTAL: &str = "tenantgate_reloads_total";
pub const RELOAD_DURATION_SECONDS: &str = "tenantgate_reload_duration_seconds";
pub const BUILD_INFO: &str = "tenantgate_build_info";
pub const CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS: &str =
    "tenantgate_certificate_expiry_timestamp_seconds";
/// ACME orders this instance finished, by outcome (`issued`, `failed`, `over_budget`).
pub const ACME_ORDERS_TOTAL: &str = "tenantgate_acme_orders_total";
pub const LIMITER_REDIS_UP: &str = "tenantgate_limiter_redis_up";
pub const LIMITER_REDIS_ERRORS_TOTAL: &str = "tenantgate_limiter_redis_errors_total";
pub const LIMITER_FALLBACKS_TOTAL: &str = "tenantgate_limiter_fallbacks_total";
/// With `[store]` only: 1 while this instance reaches the fleet's etcd.
pub const STORE_UP: &str = "tenantgate_store_up";
/// With `[store]` only: the store revision this instance's routing table is (what it serves).
pub const STORE_REVISION: &str = "tenantgate_store_revision";
/// With `[store]` only: the last store revision this instance has taken in (applied, refused, or
/// not about the table); above `STORE_REVISION` while a refused entry is held.
pub const STORE_SEEN_REVISION: &str = "tenantgate_store_seen_revision";

/// Every metric above, for the tests that check dashboards and the exposition against this list.
pub const ALL: &[&str] = &[
    REQUESTS_TOTAL,
    REQUEST_DURATION_SECONDS,
    UPSTREAM_RESPONSE_SECONDS,
    REQUEST_BYTES_TOTAL,
    RESPONSE_BYTES_TOTAL,
    RATE_LIMITED_TOTAL,
    OVERLOADED_TOTAL,
    UPSTREAM_ERRORS_TOTAL,
    IN_FLIGHT_REQUESTS,
    WEBSOCKET_CONNECTIONS,
    WEBSOCKET_BYTES_TOTAL,
    GATEWAY_ERRORS_TOTAL,
    UPSTREAM_RETRIES_TOTAL,
    UPSTREAM_RETRIES_REFUSED_TOTAL,
    UPSTREAM_EJECTIONS_TOTAL,
    UPSTREAM_HEALTHY,
    CONFIG_GENERATION,
    TENANTS,
    TENANT_SERIES,
    RELOADS_TOTAL,
    RELOAD_DURATION_SECONDS,
    BUILD_INFO,
    CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS,
    LIMITER_REDIS_UP,
    LIMITER_REDIS_ERRORS_TOTAL,
    LIMITER_FALLBACKS_TOTAL,
    STORE_UP,
    STORE_REVISION,
    STORE_SEEN_REVISION,
];

/// Label names.
pub const LABEL_TENANT: &str = "tenant";
pub const LABEL_STATUS_CLASS: &str = "status_class";
/// Which limit refused a request: `tenant`, `credential` (per API key or token subject) or `route`.
pub const LABEL_SCOPE: &str = "scope";
pub const LABEL_ERROR: &str = "error";
pub const LABEL_POOL: &str = "pool";
pub const LABEL_UPSTREAM: &str = "upstream";
pub const LABEL_STATUS: &str = "status";
pub const LABEL_VERSION: &str = "version";
pub const LABEL_RESULT: &str = "result";
/// `sync` or `exact`.
pub const LABEL_MODE: &str = "mode";
/// `local` (decided by this instance alone) or `deny`.
pub const LABEL_POLICY: &str = "policy";
/// A certificate's `cert` file as written in the config.
pub const LABEL_CERT: &str = "cert";
/// The first DNS name a certificate serves.
pub const LABEL_NAME: &str = "name";
pub const LABEL_OUTCOME: &str = "outcome";
/// `in` (from clients) or `out` (to clients).
pub const LABEL_DIRECTION: &str = "direction";
/// Why a retry was not made: `attempts` or `budget`.
pub const LABEL_REASON: &str = "reason";
/// The `cert` value of certificates issued by ACME (their `name` is the domain).
pub const ACME_CERT: &str = "acme";

/// The `tenant` value of the sum of every tenant without its own series.
pub const OTHER_TENANTS: &str = "_other";
/// The `tenant` value of requests that matched no tenant (unknown hosts, reserved hosts).
pub const NO_TENANT: &str = "_none";
