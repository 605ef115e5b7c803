//! Tokens already verified, so that a client sending the same JWT on every request pays for its
//! signature once, not per request.
//!
//! The cache is a fixed array of slots, each an atomically swapped entry: looking up and inserting
//! take no lock, and it never holds more entries than it has slots (a new token takes the older of
//! its two candidate slots). An entry is keyed by the SHA-256 of the whole token, so only the very
//! token that was verified finds it, and it holds what verification proved (the `Principal`), never
//! a decision about a tenant or a path: every request's host, tenant and role checks still run.
//!
//! An entry answers only while all of these hold, else the token is verified again:
//! - `now` is before the token's `exp` (the leeway is for verification, not for the cache) and not
//!   before its `nbf` less the leeway;
//! - the remote keys (`jwks_url`) are the generation the token was verified with: a JWKS that
//!   changes (a key removed) drops every entry. Local keys and every other `[jwt]` setting are fixed
//!   for a cache's life: a reload that changes them builds a new verifier with an empty cache.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::Principal;

/// The SHA-256 of a token.
pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

/// One verified token.
#[derive(Debug)]
pub struct Verified {
    pub digest: TokenDigest,
    /// Unix seconds: the token's `exp`.
    pub expires: i64,
    /// Unix seconds from which it is valid: its `nbf` less the leeway (`i64::MIN` without one).
    pub valid_from: i64,
    /// The remote key set's generation when it was verified.
    pub keys_generation: u64,
    pub principal: Arc<Principal>,
}

impl Verified {
    fn answers(&self, digest: &TokenDigest, now: i64, keys_generation: u64) -> bool {
        self.digest == *digest
            && now < self.expires
            && now >= self.valid_from
            && self.keys_generation == keys_generation
    }
}

pub struct TokenCache {
    slots: Box<[ArcSwapOption<Verified>]>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache of at most `size` tokens; 0 caches nothing.
    pub fn new(size: usize) -> TokenCache {
        TokenCache {
            slots: (0..size).map(|_| ArcSwapOption::empty()).collect(),
        }
    }

    /// The two slots a digest may live in.
    fn candidates(&self, digest: &TokenDigest) -> Option<(usize, usize)> {
        let len = self.slots.len();
        if len == 0 {
            return None;
        }
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&digest[..8]);
        let first = (u64::from_le_bytes(bytes) % len as u64) as usize;
        Some((first, (first + 1) % len))
    }

    /// The principal of `digest`'s token, if it is cached and still answers at `now`.
    pub fn get(
        &self,
        digest: &TokenDigest,
        now: i64,
        keys_generation: u64,
    ) -> Option<Arc<Principal>> {
        let (a, b) = self.candidates(digest)?;
        [a, b].into_iter().find_map(|i| {
            let slot = self.slots.get(i)?.load();
            let entry = slot.as_ref()?;
            entry
                .answers(digest, now, keys_generation)
                .then(|| Arc::clone(&entry.principal))
        })
    }

    /// Keeps `entry`, in an empty or spent candidate slot if there is one, else in place of the one
    /// that expires first.
    pub fn insert(&self, entry: Verified, now: i64) {
        let Some((a, b)) = self.candidates(&entry.digest) else {
            return;
        };
        let (Some(first), Some(second)) = (self.slots.get(a), self.slots.get(b)) else {
            return;
        };
        let free = |slot: &ArcSwapOption<Verified>| {
            slot.load().as_ref().map_or(i64::MIN, |e| {
                match e.digest == entry.digest || e.expires <= now {
                    true => i64::MIN,
                    false => e.expires,
                }
            })
        };
        let slot = match free(first) <= free(second) {
            true => first,
            false => second,
        };
        slot.store(Some(Arc::new(entry)));
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How many slots hold an entry (spent or not): never more than the size it was made with.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.load().is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::AuthMethod;

    fn principal(sub: &str) -> Arc<Principal> {
        Arc::new(Principal {
            method: AuthMethod::Jwt,
            tenant: Some("acme".into()),
            tenants: Vec::new(),
            subject: Some(sub.into()),
            roles: Vec::new(),
            key_id: None,
        })
    }

    fn entry(token: &str, expires: i64) -> Verified {
        Verified {
            digest: digest(token),
            expires,
            valid_from: i64::MIN,
            keys_generation: 0,
            principal: principal(token),
        }
    }

    #[test]
    fn a_cached_token_answers_until_it_expires_and_only_for_its_keys() {
        let cache = TokenCache::new(8);
        cache.insert(entry("t1", 100), 10);
        let d = digest("t1");
        assert_eq!(
            cache
                .get(&d, 99, 0)
                .and_then(|p| p.subject.clone())
                .as_deref(),
            Some("t1")
        );
        assert!(cache.get(&d, 100, 0).is_none(), "expired");
        assert!(cache.get(&d, 50, 1).is_none(), "the JWKS changed since");
        assert!(cache.get(&digest("t2"), 50, 0).is_none());
        let mut early = entry("t3", 100);
        early.valid_from = 40;
        cache.insert(early, 10);
        assert!(cache.get(&digest("t3"), 39, 0).is_none(), "not yet valid");
        assert!(cache.get(&digest("t3"), 40, 0).is_some());
    }

    #[test]
    fn a_cache_full_of_distinct_tokens_stays_at_its_bound() {
        let cache = TokenCache::new(64);
        for i in 0..10_000 {
            cache.insert(entry(&format!("token-{i}"), 1_000 + i), 0);
        }
        assert_eq!(cache.len(), 64);
        // The newest tokens are found; most of the first ones were pushed out.
        let found = (9_900..10_000)
            .filter(|i| cache.get(&digest(&format!("token-{i}")), 0, 0).is_some())
            .count();
        assert!(found > 0);
        let none = TokenCache::new(0);
        none.insert(entry("t", 100), 0);
        assert!(none.get(&digest("t"), 0, 0).is_none());
        assert_eq!(none.len(), 0);
    }

    #[test]
    fn a_spent_entry_gives_way_before_a_live_one() {
        let cache = TokenCache::new(2);
        cache.insert(entry("live", 1_000), 0);
        cache.insert(entry("spent", 5), 0);
        // Both slots are the two candidates of every digest in a cache of two.
        cache.insert(entry("new", 1_000), 10);
        assert!(cache.get(&digest("live"), 10, 0).is_some());
        assert!(cache.get(&digest("new"), 10, 0).is_some());
    }
}
