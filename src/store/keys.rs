//! The keys below a fleet's prefix that are not entries of the table (those are
//! `config::shared::Entity::key`).

/// Written by every change of the table; `apply` compares it with the revision its plan was made at.
pub const CHANGED: &str = "meta/changed";
/// One record per change, by time: `audit/<unix ms, 13 digits>-<instance>-<n>`.
pub const AUDIT: &str = "audit/";
/// A stepped promotion's plan and the step it is at, per tenant.
pub const PROMOTIONS: &str = "promotions/";
/// The lock of the instance running a tenant's promotion, bound to its lease.
pub const PROMOTION_LOCKS: &str = "locks/promotions/";
/// Each instance's counts of a tenant's canary traffic, bound to its lease.
pub const CANARY: &str = "canary/";

/// ACME: the account (`acme/account`), certificates by name (`acme/certs/<name>`), pending
/// challenges (`acme/http-01/<token>`, `acme/tls-alpn-01/<name>`), so that any instance serves
/// and answers them.
pub const ACME: &str = "acme/";
pub const ACME_ACCOUNT: &str = "acme/account";
pub const ACME_CERTS: &str = "acme/certs/";
pub const ACME_HTTP01: &str = "acme/http-01/";
pub const ACME_TLS_ALPN01: &str = "acme/tls-alpn-01/";
/// The lock of the instance ordering a name, bound to its lease.
pub const ACME_LOCKS: &str = "locks/acme/";

pub fn promotion(tenant: &str) -> String {
    format!("{PROMOTIONS}{tenant}")
}

pub fn promotion_lock(tenant: &str) -> String {
    format!("{PROMOTION_LOCKS}{tenant}")
}

pub fn canary(tenant: &str, instance: &str) -> String {
    format!("{CANARY}{tenant}/{instance}")
}

/// An audit record's key: sorted by time, unique per instance.
pub fn audit(unix_ms: i64, instance: &str, n: u64) -> String {
    format!("{AUDIT}{unix_ms:013}-{instance}-{n}")
}

/// The first audit key at or after `unix_ms`.
pub fn audit_from(unix_ms: i64) -> String {
    format!("{AUDIT}{unix_ms:013}")
}
