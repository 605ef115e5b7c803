//! Per-tenant limits at run time: request rates (a tenant's, per credential within it, per route
//! prefix) and requests in flight. Nothing here reads a request: the proxy passes the tenant,
//! credential and path to [`fleet::decide`] and holds a [`concurrency::Permit`] while a request is
//! in flight.
//!
//! Every bucket lives in the routing table, inside its tenant's [`TenantLimiter`], and is carried to
//! the next table when its limit did not change: a reload keeps a tenant's counts, a changed limit
//! starts afresh.

pub mod concurrency;
pub mod fleet;
pub mod gcra;

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use foldhash::fast::RandomState;

use crate::config::model::{Rate, RouteLimit, TenantLimits};
use crate::path::covers_prefix;
use crate::tenant::TenantId;
use gcra::{Bucket, Exceeded, Gcra, Quota};

/// Which limit a request did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Tenant,
    /// Per API key or token subject.
    Credential,
    Route,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Tenant, Scope::Credential, Scope::Route];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Tenant => "tenant",
            Scope::Credential => "credential",
            Scope::Route => "route",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a request is counted as within its tenant, for per-credential limits.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    ApiKey(&'a str),
    Subject(&'a str),
}

/// One rate limit's bucket and what a fleet needs to share it.
#[derive(Debug)]
pub struct SharedBucket {
    pub gcra: Gcra,
    pub scope: Scope,
    pub bucket: Bucket,
    /// The Redis key below the configured prefix: `acme`, `acme:key:<id>`, `acme:sub:<subject>`,
    /// `acme:route:/search`.
    pub key: Box<str>,
    /// Requests admitted by this instance since the last sync.
    pub pending: AtomicU64,
    /// The fleet's count at the last sync; [`NOT_SYNCED`] before the first (or after a failure).
    pub synced_total: AtomicU64,
    /// Syncs in a row with nothing admitted here (written by the sync loop only).
    pub quiet_syncs: AtomicU32,
}

pub const NOT_SYNCED: u64 = u64::MAX;

impl SharedBucket {
    fn new(rate: Rate, scope: Scope, key: String) -> SharedBucket {
        SharedBucket {
            gcra: Gcra::new(rate),
            scope,
            bucket: Bucket::default(),
            key: key.into_boxed_str(),
            pending: AtomicU64::new(0),
            synced_total: AtomicU64::new(NOT_SYNCED),
            quiet_syncs: AtomicU32::new(0),
        }
    }

    fn take(&self, now: u64, count_pending: bool) -> Result<Quota, Exceeded> {
        let taken = self.bucket.take(&self.gcra, now);
        if taken.is_ok() && count_pending {
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    fn refund(&self, count_pending: bool) {
        self.bucket.refund(&self.gcra);
        if count_pending {
            let _ = self
                .pending
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1));
        }
    }
}

/// Per-credential buckets, made on a credential's first request.
#[derive(Debug)]
pub struct CredentialBuckets {
    rate: Rate,
    tenant: TenantId,
    keys: DashMap<Box<str>, Arc<SharedBucket>, RandomState>,
    subjects: DashMap<Box<str>, Arc<SharedBucket>, RandomState>,
}

impl CredentialBuckets {
    fn get(&self, credential: Credential<'_>) -> Arc<SharedBucket> {
        let (map, kind, name) = match credential {
            Credential::ApiKey(id) => (&self.keys, "key", id),
            Credential::Subject(s) => (&self.subjects, "sub", s),
        };
        if let Some(b) = map.get(name) {
            return Arc::clone(&b);
        }
        let fresh = || {
            Arc::new(SharedBucket::new(
                self.rate,
                Scope::Credential,
                format!("{}:{kind}:{name}", self.tenant),
            ))
        };
        Arc::clone(&map.entry(Box::from(name)).or_insert_with(fresh))
    }

    /// Every bucket made so far.
    pub fn each(&self, mut f: impl FnMut(&Arc<SharedBucket>)) {
        for map in [&self.keys, &self.subjects] {
            for entry in map.iter() {
                f(entry.value());
            }
        }
    }

    /// Forgets buckets that are full and have nothing to sync: they hold nothing a new one would not.
    pub fn forget_idle(&self, now: u64) {
        for map in [&self.keys, &self.subjects] {
            map.retain(|_, b| {
                !(b.bucket.is_full(now)
                    && b.pending.load(Ordering::Relaxed) == 0
                    && Arc::strong_count(b) == 1)
            });
        }
    }
}

/// A tenant's rate limits.
#[derive(Debug)]
pub struct TenantLimiter {
    tenant: Option<Arc<SharedBucket>>,
    credential: Option<Arc<CredentialBuckets>>,
    routes: Box<[(RouteLimit, Arc<SharedBucket>)]>,
}

impl TenantLimiter {
    /// The limiter for `limits`, keeping every bucket of `previous` whose limit is unchanged.
    pub fn build(
        id: &TenantId,
        limits: &TenantLimits,
        previous: Option<&TenantLimiter>,
    ) -> TenantLimiter {
        let tenant = limits.rate.map(|rate| {
            previous
                .and_then(|p| p.tenant.as_ref())
                .filter(|b| b.gcra == Gcra::new(rate))
                .map_or_else(
                    || Arc::new(SharedBucket::new(rate, Scope::Tenant, id.to_string())),
                    Arc::clone,
                )
        });
        let credential = limits.credential_rate.map(|rate| {
            previous
                .and_then(|p| p.credential.as_ref())
                .filter(|c| c.rate == rate)
                .map_or_else(
                    || {
                        Arc::new(CredentialBuckets {
                            rate,
                            tenant: id.clone(),
                            keys: DashMap::default(),
                            subjects: DashMap::default(),
                        })
                    },
                    Arc::clone,
                )
        });
        let routes = limits
            .routes
            .iter()
            .map(|r| {
                let kept = previous
                    .and_then(|p| p.routes.iter().find(|(old, _)| old == r))
                    .map(|(_, b)| Arc::clone(b));
                let bucket = kept.unwrap_or_else(|| {
                    Arc::new(SharedBucket::new(
                        r.rate,
                        Scope::Route,
                        format!("{id}:route:{}", r.path_prefix),
                    ))
                });
                (r.clone(), bucket)
            })
            .collect();
        TenantLimiter {
            tenant,
            credential,
            routes,
        }
    }

    /// Whether any rate limit applies to this tenant at all.
    pub fn is_limited(&self) -> bool {
        self.tenant.is_some() || self.credential.is_some() || !self.routes.is_empty()
    }

    /// Calls `f` with every bucket a request must fit, tenant first, until it breaks.
    fn each_applicable<B>(
        &self,
        credential: Option<Credential<'_>>,
        path: &str,
        mut f: impl FnMut(&Arc<SharedBucket>) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        if let Some(b) = &self.tenant {
            f(b)?;
        }
        if let (Some(c), Some(credential)) = (&self.credential, credential) {
            f(&c.get(credential))?;
        }
        for (route, b) in self.routes.iter() {
            if covers_prefix(&route.path_prefix, path) {
                f(b)?;
            }
        }
        ControlFlow::Continue(())
    }

    /// The buckets a request must fit, for `exact` mode's one Redis call.
    pub fn applicable(
        &self,
        credential: Option<Credential<'_>>,
        path: &str,
    ) -> Vec<Arc<SharedBucket>> {
        let mut out = Vec::new();
        let _ = self.each_applicable::<()>(credential, path, |b| {
            out.push(Arc::clone(b));
            ControlFlow::Continue(())
        });
        out
    }

    /// Decides on this instance alone: every applicable bucket gives one request's worth, or none
    /// does (those taken before the one that refused are given back). `Ok` holds the tightest quota
    /// (`None`: no rate limit applies).
    pub fn take_local(
        &self,
        credential: Option<Credential<'_>>,
        path: &str,
        now: u64,
        count_pending: bool,
    ) -> Result<Option<Quota>, Limited> {
        let mut tightest: Option<Quota> = None;
        let mut taken = 0usize;
        let outcome =
            self.each_applicable(credential, path, |b| match b.take(now, count_pending) {
                Ok(q) => {
                    taken += 1;
                    if tightest.is_none_or(|t| q.remaining < t.remaining) {
                        tightest = Some(q);
                    }
                    ControlFlow::Continue(())
                }
                Err(exceeded) => ControlFlow::Break(Limited {
                    scope: b.scope,
                    exceeded,
                }),
            });
        match outcome {
            ControlFlow::Continue(()) => Ok(tightest),
            ControlFlow::Break(limited) => {
                let mut left = taken;
                let _ = self.each_applicable::<()>(credential, path, |b| {
                    if left == 0 {
                        return ControlFlow::Break(());
                    }
                    left -= 1;
                    b.refund(count_pending);
                    ControlFlow::Continue(())
                });
                Err(limited)
            }
        }
    }

    /// Every bucket this limiter has made, for the fleet sync.
    pub fn each_bucket(&self, mut f: impl FnMut(&Arc<SharedBucket>)) {
        if let Some(b) = &self.tenant {
            f(b);
        }
        if let Some(c) = &self.credential {
            c.each(&mut f);
        }
        for (_, b) in self.routes.iter() {
            f(b);
        }
    }

    pub fn forget_idle(&self, now: u64) {
        if let Some(c) = &self.credential {
            c.forget_idle(now);
        }
    }
}

/// A request that did not fit one of its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub scope: Scope,
    pub exceeded: Exceeded,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn rate(per_second: f64, burst: u32) -> Rate {
        Rate { per_second, burst }
    }

    fn limiter(limits: &TenantLimits) -> TenantLimiter {
        TenantLimiter::build(&TenantId::parse("acme").expect("id"), limits, None)
    }

    #[test]
    fn a_request_must_fit_every_limit_and_a_refusal_takes_nothing() {
        let l = limiter(&TenantLimits {
            rate: Some(rate(1.0, 3)),
            credential_rate: Some(rate(1.0, 1)),
            routes: vec![RouteLimit {
                path_prefix: "/search".into(),
                rate: rate(1.0, 2),
            }],
            concurrency: None,
            ..TenantLimits::default()
        });
        let now = 10 * SECOND;
        let alice = Some(Credential::Subject("alice"));
        let bob = Some(Credential::Subject("bob"));
        let q = l.take_local(alice, "/search/x", now, false).expect("fits");
        assert_eq!(
            q.map(|q| q.remaining),
            Some(0),
            "alice's own limit is the tightest"
        );
        let refused = l
            .take_local(alice, "/other", now, false)
            .expect_err("alice is out");
        assert_eq!(refused.scope, Scope::Credential);
        // Alice's refusal gave back the tenant token it took: bob still gets two of the three.
        assert!(l.take_local(bob, "/search", now, false).is_ok());
        let refused = l
            .take_local(None, "/search", now, false)
            .expect_err("route is out");
        assert_eq!(refused.scope, Scope::Route);
        assert!(l.take_local(None, "/elsewhere", now, false).is_ok());
        let refused = l
            .take_local(None, "/elsewhere", now, false)
            .expect_err("tenant is out");
        assert_eq!(refused.scope, Scope::Tenant);
    }

    #[test]
    fn an_unchanged_limit_keeps_its_counts_and_a_changed_one_starts_afresh() {
        let limits = TenantLimits {
            rate: Some(rate(1.0, 1)),
            routes: vec![RouteLimit {
                path_prefix: "/a".into(),
                rate: rate(1.0, 1),
            }],
            ..TenantLimits::default()
        };
        let old = limiter(&limits);
        let now = 10 * SECOND;
        assert!(old.take_local(None, "/a", now, false).is_ok());
        let id = TenantId::parse("acme").expect("id");
        let same = TenantLimiter::build(&id, &limits, Some(&old));
        assert!(
            same.take_local(None, "/b", now, false).is_err(),
            "counts kept"
        );
        let changed = TenantLimits {
            rate: Some(rate(2.0, 1)),
            ..limits.clone()
        };
        let new = TenantLimiter::build(&id, &changed, Some(&old));
        let refused = new
            .take_local(None, "/a", now, false)
            .expect_err("route kept");
        assert_eq!(refused.scope, Scope::Route);
        assert!(
            new.take_local(None, "/b", now, false).is_ok(),
            "tenant bucket new"
        );
    }

    #[test]
    fn pending_counts_what_was_admitted_here_and_idle_credentials_are_forgotten() {
        let l = limiter(&TenantLimits {
            rate: Some(rate(100.0, 10)),
            credential_rate: Some(rate(100.0, 10)),
            ..TenantLimits::default()
        });
        let now = 10 * SECOND;
        for _ in 0..3 {
            assert!(l
                .take_local(Some(Credential::ApiKey("k1")), "/", now, true)
                .is_ok());
        }
        let mut pending = Vec::new();
        l.each_bucket(|b| pending.push((b.key.to_string(), b.pending.load(Ordering::Relaxed))));
        pending.sort();
        assert_eq!(pending, [("acme".into(), 3), ("acme:key:k1".into(), 3)]);
        let applicable = l.applicable(Some(Credential::ApiKey("k1")), "/");
        assert_eq!(applicable.len(), 2);
        drop(applicable);
        l.each_bucket(|b| b.pending.store(0, Ordering::Relaxed));
        l.forget_idle(now + SECOND);
        let mut left = 0;
        l.each_bucket(|_| left += 1);
        assert_eq!(left, 1, "only the tenant's own bucket stays");
    }
}
