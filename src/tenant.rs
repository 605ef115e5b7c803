//! Who a request is for: tenant identifiers and their lifecycle state.
//!
//! Nothing here knows about Pingora or TOML; the routing table and the config validator both build on
//! these types.

use std::fmt;
use std::sync::Arc;

/// Longest tenant id accepted: a tenant id is also a DNS label (`<id>.<base domain>`), and DNS labels
/// stop at 63 bytes.
pub const MAX_TENANT_ID_LEN: usize = 63;

/// A tenant's stable identifier: a slug that is also its subdomain label.
///
/// Cheap to clone (shared string) because every routing snapshot and metric label holds one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

/// Why a string is not a tenant id; the message is shown to operators as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTenantId {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_TENANT_ID_LEN} characters")]
    TooLong,
    #[error("may only contain lowercase letters, digits and '-'")]
    BadCharacter,
    #[error("may not start or end with '-'")]
    EdgeHyphen,
}

impl TenantId {
    pub fn parse(s: &str) -> Result<Self, InvalidTenantId> {
        check_slug(s)?;
        Ok(TenantId(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The slug rule shared by tenant ids and pool names: lowercase ASCII letters, digits and inner hyphens,
/// at most one DNS label long.
pub fn check_slug(s: &str) -> Result<(), InvalidTenantId> {
    if s.is_empty() {
        return Err(InvalidTenantId::Empty);
    }
    if s.len() > MAX_TENANT_ID_LEN {
        return Err(InvalidTenantId::TooLong);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(InvalidTenantId::BadCharacter);
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(InvalidTenantId::EdgeHyphen);
    }
    Ok(())
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({:?})", &*self.0)
    }
}

/// Whether a tenant is served. A suspended tenant keeps its routing entry (so it is refused with 403,
/// not 404) and can be re-activated without re-creating it. A tenant in maintenance is answered
/// 503 with `Retry-After` (or its own page): it is coming back, so it keeps its certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TenantStatus {
    Active,
    Suspended,
    Maintenance,
}

impl TenantStatus {
    /// Every status as written in the config and the admin API.
    pub const ALL: [&'static str; 3] = ["active", "suspended", "maintenance"];

    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Maintenance => "maintenance",
        }
    }

    /// Its names keep (and get) certificates: it is served, or will be again soon.
    pub fn keeps_certificates(self) -> bool {
        self != TenantStatus::Suspended
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_accepted() {
        for ok in ["acme", "a", "acme-corp", "t1", "0day", &"a".repeat(63)] {
            assert_eq!(
                TenantId::parse(ok).map(|t| t.to_string()),
                Ok(ok.to_string())
            );
        }
    }

    #[test]
    fn non_slugs_are_refused_with_the_reason() {
        assert_eq!(TenantId::parse(""), Err(InvalidTenantId::Empty));
        assert_eq!(
            TenantId::parse(&"a".repeat(64)),
            Err(InvalidTenantId::TooLong)
        );
        for bad in ["Acme", "acme_corp", "acme.corp", "ac me", "acmé"] {
            assert_eq!(
                TenantId::parse(bad),
                Err(InvalidTenantId::BadCharacter),
                "{bad}"
            );
        }
        assert_eq!(TenantId::parse("-acme"), Err(InvalidTenantId::EdgeHyphen));
        assert_eq!(TenantId::parse("acme-"), Err(InvalidTenantId::EdgeHyphen));
    }
}
