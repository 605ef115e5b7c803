//! Certificates for tenants' own domains from an ACME CA (`[acme]`): ordered at start and when
//! the routing table gains a name, on demand during a handshake, renewed before expiry, kept in
//! `state_dir` or the fleet's store.
//!
//! The routing table decides which names may have a certificate: a custom domain of an active
//! tenant that has not opted out (`acme = false`) and that no `[[certificates]]` file covers. A
//! name of no tenant, or of a suspended one, never causes an order, however many handshakes ask.
//! This module knows the table only through the closures `server.rs` hands it
//! (`WantedNames`, `NameOwner`).
//!
//! - `Acme`: what the listeners read (issued certificates for the SNI resolver, pending
//!   challenges) and the state of every name, for `/status`, `/certs` and the handshake hook.
//! - `AcmeService`: the background service that orders, renews, keeps and (in a fleet) follows.

pub mod challenge;
pub mod order;
pub mod schedule;
pub mod vault;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use instant_acme::{Account, AccountCredentials, NewAccount};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls::sign::CertifiedKey;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Notify, OnceCell};

use crate::config::diff::rfc3339;
use crate::config::model::{AcmeSettings, StoreConfig};
use crate::metrics::{AcmeExpiry, Metrics};
use crate::store::{keys, Store, Watched};
use crate::tls::certificate::{parse_pair, ServingCertificate};
use crate::tls::hello::BeforeHandshake;
use challenge::Challenges;
use schedule::{renew_at, retry_after, OrderBudget};
use vault::{parse_shared, Pending, Shared, StoredPair, Vault};

/// Orders in flight at once, per instance.
const MAX_CONCURRENT_ORDERS: usize = 4;
/// How often the service looks for names that are due, besides when woken.
const TICK: Duration = Duration::from_secs(1);
/// When another instance of the fleet holds a name's lock: look again after this.
const PEER_RECHECK_SECONDS: i64 = 10;
/// In a fleet, how long a published challenge gets to reach the other instances' watches
/// before the CA is told to validate.
const FLEET_PROPAGATION: Duration = Duration::from_millis(300);

/// A name the routing table wants a certificate for, and its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedName {
    pub name: String,
    pub tenant: String,
}

/// Every name the table in use wants a certificate for.
pub type WantedNames = Box<dyn Fn() -> Vec<WantedName> + Send + Sync>;
/// The active tenant that may have a certificate for a name (`None`: no tenant, a suspended one,
/// one that opted out, or a name a file certificate covers).
pub type NameOwner = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;
/// Where issued, renewed and failed orders are recorded (the audit log).
pub type AuditSink = Box<dyn Fn(CertificateEvent<'_>) + Send + Sync>;

/// One audit record of the ACME client.
pub struct CertificateEvent<'a> {
    /// `certificate_issued`, `certificate_renewed`, `certificate_order_failed`.
    pub action: &'static str,
    pub tenant: &'a str,
    pub detail: Value,
    pub failure: Option<String>,
}

/// A certificate this client holds for a name.
#[derive(Debug)]
pub struct Issued {
    pub certificate: ServingCertificate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No certificate yet; an order is due.
    Waiting,
    Ordering,
    Valid,
    /// The last order failed; the old certificate, if any, still serves.
    Failing,
    /// Another instance of the fleet is ordering it.
    Peer,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Ordering => "ordering",
            Phase::Valid => "valid",
            Phase::Failing => "failing",
            Phase::Peer => "ordering_elsewhere",
        }
    }
}

#[derive(Debug)]
struct NameState {
    tenant: String,
    /// Asked for by a handshake, not listed in the tenant's domains.
    on_demand: bool,
    phase: Phase,
    failures: u32,
    last_error: Option<String>,
    /// Unix seconds: when the next order is due (renewal, or retry after a failure).
    next_attempt: i64,
    forced: bool,
}

impl NameState {
    fn new(tenant: String, on_demand: bool) -> Self {
        NameState {
            tenant,
            on_demand,
            phase: Phase::Waiting,
            failures: 0,
            last_error: None,
            next_attempt: 0,
            forced: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("{0} is not a name this gateway orders certificates for (a custom domain of an active tenant, or a name asked for on demand)")]
    NotManaged(String),
}

/// What the listeners and the admin API read of the ACME client.
pub struct Acme {
    settings: AcmeSettings,
    issued: ArcSwap<HashMap<Box<str>, Arc<Issued>>>,
    challenges: Challenges,
    names: Mutex<BTreeMap<String, NameState>>,
    wake: Notify,
    /// Moves when an order ends or a certificate arrives: handshakes waiting on demand look again.
    settled: watch::Sender<u64>,
    wanted: WantedNames,
    owner: NameOwner,
    audit: AuditSink,
    /// `state_dir`, or the store's prefix.
    kept_in: Mutex<String>,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("directory", &self.settings.directory)
            .finish_non_exhaustive()
    }
}

impl Acme {
    pub fn new(
        settings: AcmeSettings,
        wanted: WantedNames,
        owner: NameOwner,
        audit: AuditSink,
    ) -> Arc<Acme> {
        let kept_in = settings.state_dir.display().to_string();
        Arc::new(Acme {
            settings,
            issued: ArcSwap::default(),
            challenges: Challenges::default(),
            names: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            settled: watch::channel(0).0,
            wanted,
            owner,
            audit,
            kept_in: Mutex::new(kept_in),
        })
    }

    /// The certificate issued for `name`, for the SNI resolver.
    pub fn certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.issued
            .load()
            .get(name)
            .map(|i| Arc::clone(&i.certificate.key))
    }

    pub fn challenges(&self) -> &Challenges {
        &self.challenges
    }

    /// Orders `name` again now, whatever its state (`tenantgate certs renew`).
    pub fn renew(&self, name: &str) -> Result<(), RenewError> {
        let mut names = self.lock_names();
        let state = names
            .get_mut(name)
            .ok_or_else(|| RenewError::NotManaged(name.to_owned()))?;
        state.forced = true;
        drop(names);
        self.wake.notify_one();
        Ok(())
    }

    /// For `/status`: the settings and a count of names by state, with the failing ones.
    pub fn status(&self) -> Value {
        let names = self.lock_names();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        let mut failing = Vec::new();
        for (name, state) in names.iter() {
            *counts.entry(state.phase.as_str()).or_default() += 1;
            if state.last_error.is_some() && failing.len() < 20 {
                failing.push(json!({
                    "name": name,
                    "tenant": state.tenant,
                    "failures": state.failures,
                    "error": state.last_error,
                    "next_attempt": rfc3339(state.next_attempt),
                }));
            }
        }
        let kept_in = self
            .kept_in
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        json!({
            "directory": self.settings.directory,
            "challenges": self.settings.challenges.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "on_demand": self.settings.on_demand,
            "state": kept_in,
            "names": names.len(),
            "by_state": counts,
            "failing": failing,
        })
    }

    /// Every name this client manages, for `GET /certs`: never the key.
    pub fn certificates(&self) -> Vec<Value> {
        let names = self.lock_names();
        let issued = self.issued.load();
        let now = unix_now();
        names
            .iter()
            .map(|(name, state)| {
                let cert = issued.get(name.as_str()).map(|i| &i.certificate);
                json!({
                    "name": name,
                    "source": "acme",
                    "tenant": state.tenant,
                    "on_demand": state.on_demand,
                    "issuer": cert.map(|c| c.issuer.clone()),
                    "not_before": cert.map(|c| rfc3339(c.not_before)),
                    "not_after": cert.map(|c| rfc3339(c.not_after)),
                    "days_left": cert.map(|c| c.days_left(now)),
                    "sha256": cert.map(|c| c.fingerprint.clone()),
                    "renewal": state.phase.as_str(),
                    "next_attempt": (state.phase != Phase::Ordering).then(|| rfc3339(state.next_attempt)),
                    "failures": state.failures,
                    "error": state.last_error,
                })
            })
            .collect()
    }

    fn lock_names(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NameState>> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Follows the table: new names are due now (or at their kept certificate's renewal time);
    /// names it no longer wants stop renewing and stop being served.
    fn reconcile(&self) {
        let wanted = (self.wanted)();
        let wanted_names: HashSet<&str> = wanted.iter().map(|w| w.name.as_str()).collect();
        let issued = self.issued.load_full();
        let mut names = self.lock_names();
        for w in &wanted {
            let state = names
                .entry(w.name.clone())
                .or_insert_with(|| NameState::new(w.tenant.clone(), false));
            state.tenant.clone_from(&w.tenant);
            state.on_demand = false;
            if let (Phase::Waiting, Some(held)) = (state.phase, issued.get(w.name.as_str())) {
                state.phase = Phase::Valid;
                state.next_attempt = self.renewal_time(&held.certificate);
            }
        }
        names.retain(|name, state| {
            wanted_names.contains(name.as_str())
                || (state.on_demand && (self.owner)(name).is_some())
        });
        let gone: Vec<Box<str>> = issued
            .keys()
            .filter(|name| !names.contains_key(&***name))
            .cloned()
            .collect();
        drop(names);
        if !gone.is_empty() {
            tracing::info!(names = ?gone, "no longer renewing certificates for names the routing table dropped");
            self.issued.rcu(|map| {
                let mut map = HashMap::clone(map);
                for name in &gone {
                    map.remove(name);
                }
                map
            });
        }
        self.observe_expiry();
    }

    fn renewal_time(&self, cert: &ServingCertificate) -> i64 {
        renew_at(
            cert.not_before,
            cert.not_after,
            self.settings.renew_before,
            fastrand::f64(),
        )
    }

    /// Takes a certificate into service (issued here, kept from before, or from the fleet),
    /// unless the one served already lasts longer. Returns it, and the one it replaced.
    fn install(&self, name: &str, pair: &StoredPair) -> Result<Option<Arc<Issued>>, String> {
        let label = Path::new(name);
        let certificate = parse_pair(pair.cert.as_bytes(), pair.key.as_bytes(), label, label)
            .map_err(|e| format!("the certificate for {name} does not load: {e}"))?;
        if !certificate.names.iter().any(|n| n == name) {
            return Err(format!(
                "the certificate for {name} names {:?}, not {name}",
                certificate.names
            ));
        }
        let previous = self.issued.load().get(name).cloned();
        if previous
            .as_ref()
            .is_some_and(|p| p.certificate.not_after >= certificate.not_after)
            && previous
                .as_ref()
                .is_some_and(|p| p.certificate.fingerprint == certificate.fingerprint)
        {
            return Ok(previous);
        }
        let next = self.renewal_time(&certificate);
        let issued = Arc::new(Issued { certificate });
        self.issued.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(Box::from(name), Arc::clone(&issued));
            map
        });
        if let Some(state) = self.lock_names().get_mut(name) {
            if state.phase != Phase::Ordering {
                state.phase = Phase::Valid;
                state.failures = 0;
                state.last_error = None;
                state.next_attempt = next;
            }
        }
        self.settled.send_modify(|n| *n += 1);
        Ok(previous)
    }

    fn observe_expiry(&self) {
        let issued = self.issued.load();
        let names = self.lock_names();
        let expiries: Vec<AcmeExpiry<'_>> = issued
            .iter()
            .filter_map(|(name, i)| {
                Some(AcmeExpiry {
                    name,
                    tenant: names.get(&**name)?.tenant.as_str(),
                    not_after: i.certificate.not_after,
                })
            })
            .collect();
        Metrics::get().observe_acme_certificates(expiries);
    }

    /// The names due now, marked as ordering, within the concurrency and the budget.
    fn take_due(&self, budget: &mut OrderBudget) -> Vec<(String, String)> {
        let now = unix_now();
        let mut names = self.lock_names();
        let mut running = names
            .values()
            .filter(|s| s.phase == Phase::Ordering)
            .count();
        let mut due = Vec::new();
        for (name, state) in names.iter_mut() {
            if running >= MAX_CONCURRENT_ORDERS {
                break;
            }
            if state.phase == Phase::Ordering || !(state.forced || now >= state.next_attempt) {
                continue;
            }
            match budget.take(&state.tenant, now) {
                Ok(()) => {
                    state.phase = Phase::Ordering;
                    state.forced = false;
                    running += 1;
                    due.push((name.clone(), state.tenant.clone()));
                }
                Err(over) => {
                    tracing::warn!(name, tenant = state.tenant, reason = %over, "ACME order postponed");
                    state.next_attempt = over.until();
                    state.forced = false;
                    state.last_error = Some(over.to_string());
                    Metrics::get().observe_acme_order("over_budget");
                }
            }
        }
        due
    }

    /// An order ended: its certificate is served and kept, or the name backs off.
    fn finish(&self, done: Done) {
        let (name, tenant) = (done.name, done.tenant);
        let result = match done.result {
            OrderResult::Busy => {
                if let Some(state) = self.lock_names().get_mut(&name) {
                    state.phase = Phase::Peer;
                    state.next_attempt = unix_now() + PEER_RECHECK_SECONDS;
                }
                return;
            }
            OrderResult::Issued(pair) => {
                self.install(&name, &pair).map(|previous| (pair, previous))
            }
            OrderResult::Failed(e) => Err(e),
        };
        if let Some(state) = self.lock_names().get_mut(&name) {
            state.phase = Phase::Waiting;
        }
        match result {
            Ok((_, previous)) => {
                let issued = self.issued.load();
                let Some(cert) = issued.get(name.as_str()) else {
                    return;
                };
                let c = &cert.certificate;
                if let Some(state) = self.lock_names().get_mut(&name) {
                    state.phase = Phase::Valid;
                    state.failures = 0;
                    state.last_error = None;
                    state.next_attempt = self.renewal_time(c);
                }
                let action = match previous {
                    Some(_) => "certificate_renewed",
                    None => "certificate_issued",
                };
                tracing::info!(name, tenant, issuer = c.issuer, not_after = %rfc3339(c.not_after), action, "ACME certificate in service");
                Metrics::get().observe_acme_order("issued");
                (self.audit)(CertificateEvent {
                    action,
                    tenant: &tenant,
                    detail: json!({
                        "name": name,
                        "issuer": c.issuer,
                        "not_after": rfc3339(c.not_after),
                        "sha256": c.fingerprint,
                    }),
                    failure: None,
                });
            }
            Err(error) => {
                let serving = self.issued.load().contains_key(name.as_str());
                let mut names = self.lock_names();
                let next = names.get_mut(&name).map(|state| {
                    state.failures += 1;
                    state.phase = Phase::Failing;
                    state.last_error = Some(error.clone());
                    let wait = retry_after(self.settings.retry_after, state.failures);
                    state.next_attempt =
                        unix_now() + i64::try_from(wait.as_secs()).unwrap_or(i64::MAX / 2);
                    state.next_attempt
                });
                drop(names);
                tracing::warn!(
                    name,
                    tenant,
                    error,
                    serving_old_certificate = serving,
                    next_attempt = next.map(rfc3339),
                    "ACME order failed"
                );
                Metrics::get().observe_acme_order("failed");
                (self.audit)(CertificateEvent {
                    action: "certificate_order_failed",
                    tenant: &tenant,
                    detail: json!({
                        "name": name,
                        "serving_old_certificate": serving,
                        "next_attempt": next.map(rfc3339),
                    }),
                    failure: Some(error),
                });
                self.settled.send_modify(|n| *n += 1);
            }
        }
        self.observe_expiry();
    }

    /// A certificate or challenge another instance put in the store (or removed).
    fn follow(&self, key: &str, value: Option<&str>) {
        let Some((shared, deleted)) = parse_shared(key, value) else {
            return;
        };
        match shared {
            Shared::Certificate(name, pair) if !deleted => {
                let wanted = self.lock_names().contains_key(&name);
                if wanted {
                    if let Err(e) = self.install(&name, &pair) {
                        tracing::warn!(name, error = e, "certificate from the store not taken");
                    }
                    self.observe_expiry();
                }
            }
            Shared::Certificate(..) => {}
            Shared::Challenge(pending) => self.put_up(&pending, !deleted),
        }
    }

    /// Makes a challenge answerable on this instance's listeners, or takes it down.
    fn put_up(&self, pending: &Pending, up: bool) {
        match (pending, up) {
            (
                Pending::Http01 {
                    token,
                    key_authorization,
                },
                true,
            ) => self.challenges.add_http(token, key_authorization),
            (Pending::Http01 { token, .. }, false) => self.challenges.remove_http(token),
            (Pending::TlsAlpn01 { name, digest }, true) => {
                if let Err(e) = self.challenges.add_tls_alpn(name, digest) {
                    tracing::warn!(error = %e, "TLS-ALPN-01 challenge not answerable");
                }
            }
            (Pending::TlsAlpn01 { name, .. }, false) => self.challenges.remove_tls_alpn(name),
        }
    }
}

#[async_trait]
impl BeforeHandshake for Acme {
    fn challenge_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.challenges.tls_alpn(name)
    }

    /// On demand: a name of an active tenant without a certificate is ordered, and the
    /// handshake waits for it up to `on_demand_wait`; then it gets whatever there is.
    async fn server_name(&self, name: &str) {
        if !self.settings.on_demand {
            return;
        }
        let canonical;
        let name = if name.ends_with('.') || name.bytes().any(|b| b.is_ascii_uppercase()) {
            canonical = name.trim_end_matches('.').to_ascii_lowercase();
            canonical.as_str()
        } else {
            name
        };
        if self.issued.load().contains_key(name) {
            return;
        }
        // Lock-free, and first: most handshakes without an issued certificate are for names a
        // file covers or that no active tenant owns.
        let Some(tenant) = (self.owner)(name) else {
            return;
        };
        let mut settled = self.settled.subscribe();
        {
            let mut names = self.lock_names();
            match names.get(name) {
                Some(state) => {
                    let backing_off = state.phase != Phase::Ordering
                        && !state.forced
                        && state.next_attempt > unix_now();
                    if backing_off {
                        return;
                    }
                }
                None => {
                    tracing::info!(name, tenant, "on-demand certificate order");
                    names.insert(name.to_owned(), NameState::new(tenant, true));
                }
            }
        }
        self.wake.notify_one();
        let deadline = tokio::time::Instant::now() + self.settings.on_demand_wait;
        loop {
            if self.issued.load().contains_key(name) {
                return;
            }
            let settled_without = self
                .lock_names()
                .get(name)
                .is_none_or(|s| matches!(s.phase, Phase::Failing | Phase::Valid));
            if settled_without {
                return;
            }
            match tokio::time::timeout_at(deadline, settled.changed()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }
}

/// How an order task ended.
struct Done {
    name: String,
    tenant: String,
    result: OrderResult,
}

enum OrderResult {
    Issued(StoredPair),
    Failed(String),
    /// Another instance holds the name's lock.
    Busy,
}

/// The background service: orders what is due, keeps what it gets, follows the fleet.
pub struct AcmeService {
    acme: Arc<Acme>,
    table_changes: watch::Receiver<u64>,
    store: Option<StoreConfig>,
}

impl AcmeService {
    pub fn new(
        acme: Arc<Acme>,
        table_changes: watch::Receiver<u64>,
        store: Option<StoreConfig>,
    ) -> Self {
        AcmeService {
            acme,
            table_changes,
            store,
        }
    }

    async fn open_vault(&self, shutdown: &mut ShutdownWatch) -> Option<Arc<Vault>> {
        let Some(config) = &self.store else {
            return Some(Arc::new(Vault::Dir(self.acme.settings.state_dir.clone())));
        };
        loop {
            match Store::connect(config).await {
                Ok(store) => {
                    return Some(Arc::new(Vault::Store {
                        store: Box::new(store),
                        instance: config.instance.clone(),
                        lease: AtomicI64::new(0),
                    }))
                }
                Err(e) => tracing::warn!(error = %e, "ACME: cannot reach the store yet"),
            }
            tokio::select! {
                _ = shutdown.changed() => return None,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// In a fleet: the lease this instance's ACME locks and challenges are bound to.
    async fn keep_lease(vault: Arc<Vault>, ttl: Duration) {
        let Vault::Store { store, lease, .. } = &*vault else {
            return;
        };
        loop {
            let current = lease.load(AtomicOrdering::Relaxed);
            let alive = match current {
                0 => false,
                id => store.keep_alive(id).await.unwrap_or(false),
            };
            if !alive {
                match store.grant(ttl).await {
                    Ok(id) => lease.store(id, AtomicOrdering::Relaxed),
                    Err(e) => {
                        lease.store(0, AtomicOrdering::Relaxed);
                        tracing::warn!(error = %e, "ACME: no lease from the store");
                    }
                }
            }
            tokio::time::sleep(ttl / 3).await;
        }
    }

    /// In a fleet: certificates and challenges other instances put in the store.
    async fn follow_store(acme: Arc<Acme>, vault: Arc<Vault>) {
        let Vault::Store { store, .. } = &*vault else {
            return;
        };
        let mut from = 0;
        loop {
            if from == 0 {
                match store.snapshot(keys::ACME, None).await {
                    Ok(snapshot) => {
                        for kv in &snapshot.kvs {
                            acme.follow(&kv.key, Some(&kv.value));
                        }
                        from = snapshot.revision + 1;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ACME: cannot read the store");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let mut watch = match store.watch_below(keys::ACME, from).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "ACME: cannot watch the store");
                    from = 0;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                match watch.next().await {
                    Ok(Some(Watched::Revisions(revisions))) => {
                        for revision in revisions {
                            for (key, kv) in &revision.changes {
                                acme.follow(key, kv.as_ref().map(|kv| kv.value.as_str()));
                            }
                            from = revision.revision + 1;
                        }
                    }
                    Ok(Some(Watched::Progress(_))) => {}
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "ACME: the store's watch ended; reading again");
                        from = 0;
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let acme = Arc::clone(&self.acme);
        let Some(vault) = self.open_vault(&mut shutdown).await else {
            return;
        };
        *acme.kept_in.lock().unwrap_or_else(PoisonError::into_inner) = vault.label();
        // Names come before kept certificates: a kept one is taken only for a name still wanted.
        acme.reconcile();
        match vault.certificates().await {
            Ok(kept) => {
                for (name, pair) in kept {
                    if acme.lock_names().contains_key(&name) {
                        if let Err(e) = acme.install(&name, &pair) {
                            tracing::warn!(name, error = e, "kept certificate not used");
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "ACME: cannot read the kept certificates"),
        }
        acme.reconcile();
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(config) = &self.store {
            tasks.spawn(Self::keep_lease(Arc::clone(&vault), config.lease));
            tasks.spawn(Self::follow_store(Arc::clone(&acme), Arc::clone(&vault)));
        }
        let account: Arc<OnceCell<Account>> = Arc::new(OnceCell::new());
        let mut budget = OrderBudget::new(
            acme.settings.max_per_hour,
            acme.settings.max_per_tenant_per_day,
        );
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(64);
        let mut table = self.table_changes.clone();
        tracing::info!(
            directory = acme.settings.directory,
            state = vault.label(),
            names = acme.lock_names().len(),
            "ACME certificates on"
        );
        loop {
            for (name, tenant) in acme.take_due(&mut budget) {
                let task = OrderTask {
                    acme: Arc::clone(&acme),
                    vault: Arc::clone(&vault),
                    account: Arc::clone(&account),
                };
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let result = task.run(&name).await;
                    let _ = done
                        .send(Done {
                            name,
                            tenant,
                            result,
                        })
                        .await;
                });
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                changed = table.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    acme.reconcile();
                }
                _ = acme.wake.notified() => {}
                Some(done) = done_rx.recv() => acme.finish(done),
                _ = tokio::time::sleep(TICK) => {}
            }
        }
        tasks.abort_all();
    }
}

/// One order's context.
struct OrderTask {
    acme: Arc<Acme>,
    vault: Arc<Vault>,
    account: Arc<OnceCell<Account>>,
}

impl OrderTask {
    async fn run(&self, name: &str) -> OrderResult {
        match self.vault.lock(name).await {
            Ok(true) => {}
            Ok(false) => return OrderResult::Busy,
            Err(e) => return OrderResult::Failed(format!("cannot take the fleet's lock: {e}")),
        }
        let result = self.order(name).await;
        if let Err(e) = self.vault.unlock(name).await {
            tracing::warn!(name, error = %e, "ACME: lock not released; it goes with the lease");
        }
        match result {
            Ok(pair) => OrderResult::Issued(pair),
            Err(e) => OrderResult::Failed(e),
        }
    }

    async fn order(&self, name: &str) -> Result<StoredPair, String> {
        let account = self
            .account
            .get_or_try_init(|| open_account(&self.acme.settings, &self.vault))
            .await?;
        let pair = order::order(account, name, &self.acme.settings.challenges, self).await?;
        if let Err(e) = self.vault.keep_certificate(name, &pair).await {
            // Served all the same; the next start orders it again.
            tracing::error!(name, error = %e, "ACME: the new certificate could not be kept");
        }
        Ok(pair)
    }
}

#[async_trait]
impl order::Publish for OrderTask {
    async fn publish(&self, pending: &Pending) -> Result<(), String> {
        self.acme.put_up(pending, true);
        if self.vault.is_shared() {
            self.vault
                .publish(pending)
                .await
                .map_err(|e| format!("cannot share the challenge through the store: {e}"))?;
            tokio::time::sleep(FLEET_PROPAGATION).await;
        }
        Ok(())
    }

    async fn withdraw(&self, pending: &Pending) {
        self.acme.put_up(pending, false);
        if let Err(e) = self.vault.withdraw(pending).await {
            tracing::warn!(error = %e, "ACME: challenge left in the store; it goes with the lease");
        }
    }
}

/// The account kept for this directory, or a new one (kept at once, so that a fleet shares one).
async fn open_account(settings: &AcmeSettings, vault: &Vault) -> Result<Account, String> {
    let builder = || match &settings.directory_ca {
        Some((label, path)) => {
            Account::builder_with_root(path).map_err(|e| format!("directory_ca {label}: {e}"))
        }
        None => Account::builder().map_err(|e| format!("HTTPS client: {e}")),
    };
    let kept = vault
        .account()
        .await
        .map_err(|e| format!("reading the account: {e}"))?;
    if let Some(text) = kept {
        if let Some(credentials) = kept_credentials(&text, &settings.directory) {
            return builder()?
                .from_credentials(credentials)
                .await
                .map_err(|e| format!("account: {e}"));
        }
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("new account at {}: {e}", settings.directory))?;
    let text = json!({ "directory": settings.directory, "credentials": credentials }).to_string();
    let kept = vault
        .keep_account(&text)
        .await
        .map_err(|e| format!("keeping the account: {e}"))?;
    if kept == text {
        tracing::info!(
            directory = settings.directory,
            id = account.id(),
            "ACME account created"
        );
        return Ok(account);
    }
    // Another instance of the fleet made one first: use it.
    let credentials = kept_credentials(&kept, &settings.directory).ok_or_else(|| {
        format!(
            "the store's {} is not an account for this directory",
            keys::ACME_ACCOUNT
        )
    })?;
    builder()?
        .from_credentials(credentials)
        .await
        .map_err(|e| format!("account: {e}"))
}

fn kept_credentials(text: &str, directory: &str) -> Option<AccountCredentials> {
    let mut kept: Value = serde_json::from_str(text).ok()?;
    if kept.get("directory")?.as_str()? != directory {
        return None;
    }
    serde_json::from_value(kept.get_mut("credentials")?.take()).ok()
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}
