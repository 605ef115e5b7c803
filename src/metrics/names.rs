//! Every metric name the gateway exports, in one place: dashboards and alerts depend on them, so a
//! rename is a breaking change. Prefix `tenantgate_`, base units, `_total` for counters.

pub const REQUESTS_TOTAL: &str = "tenantgate_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "tenantgate_request_duration_seconds";
pub const GATEWAY_ERRORS_TOTAL: &str = "tenantgate_gateway_errors_total";
pub const UPSTREAM_RETRIES_TOTAL: &str = "tenantgate_upstream_retries_total";
pub const UPSTREAM_EJECTIONS_TOTAL: &str = "tenantgate_upstream_ejections_total";
pub const UPSTREAM_HEALTHY: &str = "tenantgate_upstream_healthy";
pub const CONFIG_GENERATION: &str = "tenantgate_config_generation";
pub const TENANTS: &str = "tenantgate_tenants";
pub const RELOADS_TOTAL: &str = "tenantgate_reloads_total";
pub const RELOAD_DURATION_SECONDS: &str = "tenantgate_reload_duration_seconds";
pub const BUILD_INFO: &str = "tenantgate_build_info";
pub const CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS: &str =
    "tenantgate_certificate_expiry_timestamp_seconds";

/// Label names.
pub const LABEL_STATUS_CLASS: &str = "status_class";
pub const LABEL_ERROR: &str = "error";
pub const LABEL_POOL: &str = "pool";
pub const LABEL_UPSTREAM: &str = "upstream";
pub const LABEL_STATUS: &str = "status";
pub const LABEL_VERSION: &str = "version";
pub const LABEL_RESULT: &str = "result";
/// A certificate's `cert` file as written in the config.
pub const LABEL_CERT: &str = "cert";
/// The first DNS name a certificate serves.
pub const LABEL_NAME: &str = "name";
