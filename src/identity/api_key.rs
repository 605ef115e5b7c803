//! Tenant API keys: `<tenant>_<32 random characters>`, of which the config keeps only a SHA-256.
//!
//! The tenant prefix lets a request's key find its tenant's few hashes with one map lookup, and lets
//! secret scanners and operators tell whose key leaked. Within a tenant, the presented key's hash is
//! compared with every stored hash in constant time, with no early exit.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::config::model::ApiKeyConfig;
use crate::gateway_error::GatewayError;

/// Characters of the random part; 32 of 62 symbols is about 190 bits.
pub const RANDOM_LEN: usize = 32;
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub fn sha256(key: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `count` random characters from the key alphabet (rejection sampling: no bias).
pub fn random_text(count: usize) -> Result<String, ring::error::Unspecified> {
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(count);
    let mut buf = [0u8; 64];
    while out.len() < count {
        rng.fill(&mut buf)?;
        for &b in &buf {
            // 248 = 4 * 62: values at or above it would favour the first symbols.
            if b < 248 && out.len() < count {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    Ok(out)
}

/// A new key for `tenant`.
pub fn generate(tenant: &str) -> Result<String, ring::error::Unspecified> {
    Ok(format!("{tenant}_{}", random_text(RANDOM_LEN)?))
}

/// The tenant a key claims by its prefix (not yet verified).
pub fn tenant_prefix(key: &str) -> Option<&str> {
    let (tenant, random) = key.split_once('_')?;
    (!tenant.is_empty() && random.len() == RANDOM_LEN).then_some(tenant)
}

/// One tenant's keys, as the request path checks them.
#[derive(Debug, Default)]
pub struct TenantKeys {
    keys: Box<[StoredKey]>,
}

#[derive(Debug)]
struct StoredKey {
    id: Box<str>,
    sha256: [u8; 32],
    expires: Option<i64>,
    revoked: Option<i64>,
}

impl TenantKeys {
    pub fn new(keys: &[ApiKeyConfig]) -> TenantKeys {
        TenantKeys {
            keys: keys
                .iter()
                .map(|k| StoredKey {
                    id: k.id.as_str().into(),
                    sha256: k.sha256,
                    expires: k.expires,
                    revoked: k.revoked,
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The id of the key `presented` is, if it is one of these and still valid at `now` (Unix
    /// seconds).
    pub fn check(&self, presented: &str, now: i64) -> Result<&str, GatewayError> {
        let digest = sha256(presented);
        let mut found: Option<&StoredKey> = None;
        for key in self.keys.iter() {
            if bool::from(key.sha256.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        let key = found.ok_or(GatewayError::InvalidApiKey)?;
        if key.revoked.is_some_and(|t| t <= now) {
            return Err(GatewayError::ApiKeyRevoked);
        }
        if key.expires.is_some_and(|t| t <= now) {
            return Err(GatewayError::ApiKeyExpired);
        }
        Ok(&key.id)
    }
}

/// Every tenant's keys, by tenant id, for the routing table.
pub type KeyIndex = HashMap<Box<str>, usize, RandomState>;

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(key: &str, id: &str, expires: Option<i64>, revoked: Option<i64>) -> ApiKeyConfig {
        ApiKeyConfig {
            id: id.into(),
            sha256: sha256(key),
            created: 0,
            expires,
            revoked,
        }
    }

    #[test]
    fn keys_have_the_documented_shape() {
        let key = generate("acme").unwrap();
        assert_eq!(tenant_prefix(&key), Some("acme"));
        assert_eq!(key.len(), "acme_".len() + RANDOM_LEN);
        assert!(key["acme_".len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(generate("acme").unwrap(), key);
        assert_eq!(tenant_prefix("acme_short"), None);
        assert_eq!(from_hex(&to_hex(&sha256(&key))), Some(sha256(&key)));
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn a_key_is_valid_until_revoked_or_expired() {
        let (a, b, c) = (
            generate("acme").unwrap(),
            generate("acme").unwrap(),
            generate("acme").unwrap(),
        );
        let keys = TenantKeys::new(&[
            stored(&a, "k1", None, None),
            stored(&b, "k2", Some(100), None),
            stored(&c, "k3", None, Some(50)),
        ]);
        assert_eq!(keys.check(&a, 1000), Ok("k1"));
        assert_eq!(keys.check(&b, 99), Ok("k2"));
        assert_eq!(keys.check(&b, 100), Err(GatewayError::ApiKeyExpired));
        assert_eq!(keys.check(&c, 10), Ok("k3"));
        assert_eq!(keys.check(&c, 50), Err(GatewayError::ApiKeyRevoked));
        assert_eq!(
            keys.check(&generate("acme").unwrap(), 0),
            Err(GatewayError::InvalidApiKey)
        );
    }
}
