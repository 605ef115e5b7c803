//! The control plane's side of a fleet's store (`[store]`): the store's entries as this instance
//! has seen them, each revision the watch delivers applied to the running table as a delta, and
//! changes written as etcd transactions that every instance then applies from its watch.
//!
//! Each revision is one transaction (one operator's change): it is applied or refused whole. An
//! entry whose new value is refused keeps the value the table has ("held"), and is tried again
//! after every revision that applies: a pool created later makes a tenant that named it valid.
//! Requests never wait on any of this; the table is replaced, never edited.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::audit::{Actor, AuditEntry};
use super::outcome::reloadable_changes;
use super::source::{AuditQuery, Base, Beside, Checked, Draft, Note, Plan, Scope, Source};
use super::{now, ControlPlane, Outcome, Prepared, Refusal};
use crate::config::diff::Change;
use crate::config::load::load_with_store;
use crate::config::model::{StoreConfig, TenantConfig};
use crate::config::shared::{assemble, named_by, same_value, split, Entity};
use crate::config::validate::{validate_delta, EntryChange, Mirror, TXN_OVERHEAD};
use crate::config::{ConfigErrors, GatewayConfig};
use crate::metrics::Metrics;
use crate::persistent::ShardedMap;
use crate::snapshot::table::TableDelta;
use crate::snapshot::RoutingTable;
use crate::store::{keys, Kv, Revision, Snapshot, Store, StoreError};

/// One entry of the table as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub text: Arc<str>,
    pub mod_revision: i64,
}

impl Entry {
    fn of(kv: &Kv) -> Entry {
        Entry {
            text: kv.value.as_str().into(),
            mod_revision: kv.mod_revision,
        }
    }
}

/// The store's keys as this instance last saw them: the table's entries, and the promotions with
/// their locks. Copies share structure, so each revision makes a new one cheaply.
#[derive(Debug, Clone, Default)]
pub struct Entries {
    pub revision: i64,
    /// Tenants, pools and hosts: the many.
    keyed: ShardedMap<Entity, Entry>,
    /// Plans and settings: the few, and every change reads the plans.
    few: Arc<BTreeMap<Entity, Entry>>,
    pub promotions: Arc<BTreeMap<String, Kv>>,
    pub locks: Arc<BTreeMap<String, Kv>>,
}

/// What an instance keeps of its store, read at one revision: the table's entries, the
/// promotions and their locks. Not the audit log, which grows with every change, nor the canary
/// counts, which the instance running a promotion reads itself.
pub async fn read_mirrored(store: &Store) -> Result<Snapshot, StoreError> {
    let mut below: Vec<&str> = Entity::stored_under().collect();
    below.extend([keys::PROMOTIONS, keys::PROMOTION_LOCKS]);
    store.snapshot_of(&below, None).await
}

impl Entries {
    pub fn from_snapshot(snapshot: &Snapshot) -> Entries {
        let mut entries = Entries {
            revision: snapshot.revision,
            keyed: ShardedMap::with_capacity(snapshot.kvs.len()),
            ..Entries::default()
        };
        for kv in &snapshot.kvs {
            entries.set(&kv.key, Some(kv));
        }
        entries
    }

    /// Takes in one key's new value (`None`: deleted); returns the table entry it is, if one.
    fn set(&mut self, key: &str, kv: Option<&Kv>) -> Option<Entity> {
        if let Some(tenant) = key.strip_prefix(keys::PROMOTIONS) {
            let map = Arc::make_mut(&mut self.promotions);
            match kv {
                Some(kv) => map.insert(tenant.to_owned(), kv.clone()),
                None => map.remove(tenant),
            };
            return None;
        }
        if let Some(tenant) = key.strip_prefix(keys::PROMOTION_LOCKS) {
            let map = Arc::make_mut(&mut self.locks);
            match kv {
                Some(kv) => map.insert(tenant.to_owned(), kv.clone()),
                None => map.remove(tenant),
            };
            return None;
        }
        let entity = Entity::parse(key)?;
        self.put(entity.clone(), kv.map(Entry::of));
        Some(entity)
    }

    fn put(&mut self, entity: Entity, entry: Option<Entry>) {
        match (&entity, entry) {
            (Entity::Tenant(_) | Entity::Pool(_) | Entity::Host(_), Some(e)) => {
                self.keyed.insert(entity, e);
            }
            (Entity::Tenant(_) | Entity::Pool(_) | Entity::Host(_), None) => {
                self.keyed.remove(&entity);
            }
            (_, Some(e)) => {
                Arc::make_mut(&mut self.few).insert(entity, e);
            }
            (_, None) => {
                Arc::make_mut(&mut self.few).remove(&entity);
            }
        }
    }

    pub fn get(&self, entity: &Entity) -> Option<&Entry> {
        match entity {
            Entity::Tenant(_) | Entity::Pool(_) | Entity::Host(_) => self.keyed.get(entity),
            _ => self.few.get(entity),
        }
    }

    pub fn len(&self) -> usize {
        self.keyed.len() + self.few.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Entity, &Entry)> {
        self.few.iter().chain(self.keyed.iter())
    }
}

impl Mirror for Entries {
    fn text(&self, entity: &Entity) -> Option<&str> {
        self.get(entity).map(|e| &*e.text)
    }

    fn plans(&self) -> Vec<(&str, &str)> {
        self.few
            .iter()
            .filter_map(|(e, v)| match e {
                Entity::Plan(name) => Some((name.as_str(), &*v.text)),
                _ => None,
            })
            .collect()
    }
}

/// Entries with some replaced: the store with a change made, or with held entries at the values
/// the table has.
struct Overlay<'a> {
    base: &'a Entries,
    over: &'a BTreeMap<Entity, Option<Entry>>,
}

impl Mirror for Overlay<'_> {
    fn text(&self, entity: &Entity) -> Option<&str> {
        match self.over.get(entity) {
            Some(entry) => entry.as_ref().map(|e| &*e.text),
            None => self.base.text(entity),
        }
    }

    fn plans(&self) -> Vec<(&str, &str)> {
        let mut plans: BTreeMap<&str, &str> = self.base.plans().into_iter().collect();
        for (entity, entry) in self.over {
            if let Entity::Plan(name) = entity {
                match entry {
                    Some(e) => plans.insert(name, &e.text),
                    None => plans.remove(name.as_str()),
                };
            }
        }
        plans.into_iter().collect()
    }
}

impl Overlay<'_> {
    /// Every entry, as a list for a whole validation.
    fn all(&self) -> Vec<(&Entity, &str)> {
        let mut out: Vec<(&Entity, &str)> = self
            .base
            .iter()
            .filter(|(e, _)| !self.over.contains_key(*e))
            .map(|(e, v)| (e, &*v.text))
            .collect();
        out.extend(
            self.over
                .iter()
                .filter_map(|(e, v)| Some((e, &*v.as_ref()?.text))),
        );
        out
    }
}

/// Whether this instance reaches the store, and since when.
#[derive(Debug, Clone)]
struct Health {
    up: bool,
    since: String,
    error: Option<String>,
}

/// An entry the table does not follow, because its value in the store was refused.
#[derive(Debug, Clone)]
struct Refused {
    revision: i64,
    errors: Vec<String>,
    message: String,
}

pub struct StoreSource {
    pub(crate) store: Store,
    pub(crate) config: StoreConfig,
    origin: String,
    entries: ArcSwap<Entries>,
    /// For each entry whose store value the table refused: the value the table has.
    held: Mutex<BTreeMap<Entity, Option<Entry>>>,
    refused: Mutex<BTreeMap<Entity, Refused>>,
    /// The last revision this instance has taken in (applied, refused or not about the table).
    seen: watch::Sender<i64>,
    up: AtomicBool,
    health: Mutex<Health>,
    /// This instance's lease (0 until granted): its promotion locks and canary counts are bound to
    /// it, and go when it stops renewing.
    pub(crate) lease: AtomicI64,
    audit_n: AtomicU64,
    /// Asks the watch for etcd's progress notice: the store's revision moves with writes below
    /// other prefixes too, which no event of this one reports.
    progress: tokio::sync::Notify,
    /// The last revision whose events were taken in (or the full read's).
    resume: AtomicI64,
}

impl std::fmt::Debug for StoreSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSource")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// A gateway's first look at its store: the entries at one revision, and the config they make
/// with the instance's file.
pub struct Opened {
    pub source: Arc<StoreSource>,
    pub config: GatewayConfig,
    pub revision: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the routing table in the store is not valid:\n{0}")]
    Invalid(ConfigErrors),
}

impl StoreSource {
    /// Connects to the store, reads everything at one revision (trying until `start_timeout`) and
    /// validates it with the instance's file (`path`, `text`).
    pub async fn open(config: &StoreConfig, path: &Path, text: &str) -> Result<Opened, OpenError> {
        let started = Instant::now();
        let deadline = started + config.start_timeout;
        let (store, snapshot) = loop {
            let attempt = async {
                let store = Store::connect(config).await?;
                let snapshot = read_mirrored(&store).await?;
                Ok::<_, StoreError>((store, snapshot))
            };
            match attempt.await {
                Ok(done) => break done,
                // Compacted: etcd compacted between two of the reads, which then start again.
                Err(e)
                    if (e.is_unavailable() || matches!(e, StoreError::Compacted { .. }))
                        && Instant::now() < deadline =>
                {
                    tracing::warn!(error = %e, "waiting for the store");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let read = started.elapsed();
        let entries = Entries::from_snapshot(&snapshot);
        let origin = store.origin();
        let list: Vec<(&Entity, &str)> = entries.iter().map(|(e, v)| (e, &*v.text)).collect();
        let loaded = load_with_store(path, text, &origin, &list).map_err(OpenError::Invalid)?;
        tracing::info!(
            store = store.label(),
            revision = snapshot.revision,
            entries = entries.len(),
            tenants = loaded.routing.tenants.len(),
            read_ms = u64::try_from(read.as_millis()).unwrap_or(u64::MAX),
            validated_ms =
                u64::try_from((started.elapsed() - read).as_millis()).unwrap_or(u64::MAX),
            "read the fleet's table from the store"
        );
        let (seen, _) = watch::channel(snapshot.revision);
        let source = StoreSource {
            store,
            config: config.clone(),
            origin,
            entries: ArcSwap::from_pointee(entries),
            held: Mutex::new(BTreeMap::new()),
            refused: Mutex::new(BTreeMap::new()),
            seen,
            up: AtomicBool::new(true),
            health: Mutex::new(Health {
                up: true,
                since: now(),
                error: None,
            }),
            lease: AtomicI64::new(0),
            audit_n: AtomicU64::new(0),
            progress: tokio::sync::Notify::new(),
            resume: AtomicI64::new(snapshot.revision),
        };
        Metrics::get().observe_store(true, snapshot.revision);
        Ok(Opened {
            source: Arc::new(source),
            config: loaded,
            revision: snapshot.revision,
        })
    }

    pub fn entries(&self) -> Arc<Entries> {
        self.entries.load_full()
    }

    /// The held entries, at the values the table has for them.
    fn held(&self) -> BTreeMap<Entity, Option<Entry>> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Entries the table now follows again.
    fn release(&self, entities: &[Entity]) {
        let mut h = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mut r = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        for e in entities {
            h.remove(e);
            r.remove(e);
        }
    }

    /// Where a watch resumes: after the last revision whose events this instance took in.
    /// (Not `seen`, which progress notices move: an etcd before 3.4.24 could send one ahead of
    /// events it had not delivered.)
    fn resume_from(&self) -> i64 {
        self.resume.load(Ordering::Relaxed) + 1
    }

    pub fn instance(&self) -> &str {
        &self.config.instance
    }

    pub fn seen(&self) -> i64 {
        *self.seen.borrow()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// What the watch and the health probe found; logged when it changes.
    pub fn set_health(&self, result: Result<(), &StoreError>) {
        let up = result.is_ok();
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if health.up != up {
            match result {
                Ok(()) => {
                    tracing::info!(store = self.store.label(), "the store is reachable again")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the store cannot be reached; serving the last table")
                }
            }
            health.since = now();
        }
        health.up = up;
        health.error = result.err().map(|e| e.to_string());
        self.up.store(up, Ordering::Relaxed);
        Metrics::get().observe_store(up, self.seen());
    }

    /// `GET /status`'s `store`.
    pub fn status(&self, generation: u64) -> Value {
        let health = self
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(e, r)| {
                json!({ "key": self.store.key(&e.key()), "revision": r.revision, "message": r.message, "errors": r.errors })
            })
            .collect::<Vec<_>>();
        json!({
            "kind": "etcd",
            "endpoints": self.config.endpoints,
            "prefix": self.config.prefix,
            "instance": self.config.instance,
            "up": health.up,
            "since": health.since,
            "error": health.error,
            "revision_seen": self.seen(),
            "revision_served": generation,
            "entries": self.entries.load().len(),
            "refused": refused,
        })
    }

    /// Waits until this instance has taken in `revision` (false: not within the store timeout).
    pub async fn caught_up(&self, revision: i64) -> bool {
        if self.seen() >= revision {
            return true;
        }
        self.progress.notify_one();
        let mut seen = self.seen.subscribe();
        tokio::time::timeout(self.config.timeout * 2, seen.wait_for(|s| *s >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// What the watch says about a revision with no event below this prefix.
    fn progressed(&self, revision: i64) {
        self.seen.send_if_modified(|seen| {
            let newer = revision > *seen;
            if newer {
                *seen = revision;
            }
            newer
        });
    }

    pub fn subscribe_seen(&self) -> watch::Receiver<i64> {
        self.seen.subscribe()
    }

    /// A refusal for a store that cannot be reached now: 503 `store_unavailable`.
    fn unavailable(&self, e: &StoreError) -> Refusal {
        Refusal::StoreUnavailable(e.to_string())
    }

    fn refusal(&self, e: StoreError) -> Refusal {
        match e {
            StoreError::Refused { reason, .. } => Refusal::StoreRefused(reason),
            other => self.unavailable(&other),
        }
    }

    /// The value of an audit record (what `tenantgate audit` reads), and its key.
    fn audit_record(
        &self,
        note: &Note<'_>,
        changes: &[Change],
        result: &str,
        reason: Option<&str>,
    ) -> (String, String) {
        let record = json!({
            "time": now(),
            "actor": note.actor.to_string(),
            "instance": self.config.instance,
            "action": note.action,
            "tenant": note.tenant,
            "result": result,
            "reason": reason,
            "changes": changes.iter().map(|c| {
                let (old, new) = c.values();
                json!({ "action": c.action(), "tenant": c.tenant(), "old": old, "new": new, "summary": c.to_string() })
            }).collect::<Vec<_>>(),
        });
        let n = self.audit_n.fetch_add(1, Ordering::Relaxed);
        let key = keys::audit(
            chrono::Utc::now().timestamp_millis(),
            &self.config.instance,
            n,
        );
        (key, record.to_string())
    }

    /// The draft of the entries `wanted`, read fresh from the store (each with its revision).
    async fn read_fresh(
        &self,
        wanted: &[Entity],
    ) -> Result<(Vec<(Entity, Option<Kv>)>, i64), Refusal> {
        let mut out = Vec::with_capacity(wanted.len());
        let mut revision = 0;
        for entity in wanted {
            let (kv, at) = self
                .store
                .get(&entity.key())
                .await
                .map_err(|e| self.refusal(e))?;
            revision = revision.max(at);
            out.push((entity.clone(), kv));
        }
        if wanted.is_empty() {
            revision = self.store.ping().await.map_err(|e| self.refusal(e))?;
        }
        Ok((out, revision))
    }
}

/// The entries a scope reads: a tenant's own entry, or those named.
fn scoped(scope: &Scope) -> Vec<Entity> {
    match scope {
        Scope::Tenant(id) => vec![Entity::Tenant(id.clone())],
        Scope::Entries(list) => list.clone(),
    }
}

#[async_trait]
impl Source for StoreSource {
    fn kind(&self) -> &'static str {
        "store"
    }

    fn load(&self, path: &Path, text: &str) -> Result<GatewayConfig, ConfigErrors> {
        let entries = self.entries();
        let held = self.held();
        let view = Overlay {
            base: &entries,
            over: &held,
        };
        load_with_store(path, text, &self.origin, &view.all())
    }

    async fn draft(&self, _plane: &ControlPlane, scope: &Scope) -> Result<Draft, Refusal> {
        if !self.is_up() {
            let error = self
                .health
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .error
                .clone()
                .unwrap_or_default();
            return Err(Refusal::StoreUnavailable(error));
        }
        let wanted = scoped(scope);
        let (read, revision) = self.read_fresh(&wanted).await?;
        // Checked against the table this instance runs: it must have taken in everything the
        // store had when the entries were read.
        if !self.caught_up(revision).await {
            return Err(Refusal::StoreUnavailable(format!(
                "this instance has not caught up with the store's revision {revision} (it is at {})",
                self.seen()
            )));
        }
        let text = assemble(
            read.iter()
                .filter_map(|(e, kv)| Some((e, kv.as_ref()?.value.as_str()))),
        );
        Ok(Draft {
            text,
            base: Base::Store(
                read.into_iter()
                    .map(|(e, kv)| (e, kv.map_or(0, |kv| kv.mod_revision)))
                    .collect(),
            ),
            started: Instant::now(),
        })
    }

    async fn check(
        &self,
        plane: &ControlPlane,
        draft: &Draft,
        edited: String,
    ) -> Result<Option<Checked>, Refusal> {
        let Base::Store(read) = &draft.base else {
            return Err(Refusal::Conflict("a draft of another source".into()));
        };
        let doc: toml_edit::DocumentMut = edited
            .parse()
            .map_err(|e: toml_edit::TomlError| Refusal::BadRequest(e.to_string()))?;
        let edited_entries = split(&doc).entries;
        let entries = self.entries();
        let mut writes: Vec<(Entity, Option<String>)> = Vec::new();
        for (entity, text) in &edited_entries {
            let same = entries
                .get(entity)
                .is_some_and(|e| same_value(&e.text, text));
            if !same {
                writes.push((entity.clone(), Some(text.clone())));
            }
        }
        // What the draft read and the edit left out is removed.
        for (entity, revision) in read {
            if *revision != 0 && !edited_entries.iter().any(|(e, _)| e == entity) {
                writes.push((entity.clone(), None));
            }
        }
        if writes.is_empty() {
            return Ok(None);
        }
        if writes.iter().any(|(e, _)| matches!(e, Entity::Setting(_))) {
            return Err(Refusal::BadRequest(
                "a shared setting is changed with tenantgate apply".into(),
            ));
        }
        // Checked against what the table runs on: held entries at the values it has for them.
        let mut over = self.held();
        for (entity, text) in &writes {
            let entry = text.as_ref().map(|t| Entry {
                text: t.as_str().into(),
                mod_revision: 0,
            });
            over.insert(entity.clone(), entry);
        }
        let written: Vec<Entity> = writes.iter().map(|(e, _)| e.clone()).collect();
        let current = plane.applied();
        let table = plane.table.load();
        let origin = self.origin.clone();
        // The revision this check stands for: everything up to it is in the table it ran against.
        let checked_at = self.seen();
        let checked = tokio::task::spawn_blocking(move || {
            let view = Overlay {
                base: &entries,
                over: &over,
            };
            let changes: Vec<EntryChange<'_>> = written
                .iter()
                .map(|entity| EntryChange {
                    entity,
                    text: view.text(entity),
                })
                .collect();
            validate_delta(
                &current.config,
                &current.text,
                &*table,
                &view,
                &changes,
                &origin,
            )
        })
        .await
        .map_err(|e| Refusal::Conflict(format!("checking the change failed: {e}")))?
        .map_err(Refusal::Invalid)?;
        let mut needs: Vec<Entity> = writes
            .iter()
            .filter(|(_, t)| t.is_some())
            .filter_map(|(e, _)| match e {
                Entity::Tenant(id) => checked.config.routing.tenant(id).map(named_by),
                _ => None,
            })
            .flatten()
            .filter(|e| !writes.iter().any(|(w, _)| w == e))
            .collect();
        needs.sort();
        needs.dedup();
        // A change that only edits tenants in place (their status, pool, canary, limits) is
        // judged by its own entries and what they name. One that claims hosts, adds or removes
        // entries, or adds key hashes is valid only beside the rest as it was checked: it is
        // written only if no change of the table came since.
        let current = plane.applied();
        let local = writes.iter().all(|(entity, text)| {
            let Entity::Tenant(id) = entity else {
                return false;
            };
            let (Some(old), Some(new)) = (
                current.config.routing.tenant(id),
                checked.config.routing.tenant(id),
            ) else {
                return false;
            };
            let hashes = |t: &TenantConfig| {
                let mut h: Vec<[u8; 32]> = t.api_keys.iter().map(|k| k.sha256).collect();
                h.sort_unstable();
                h
            };
            text.is_some() && old.domains == new.domains && hashes(old) == hashes(new)
        });
        Ok(Some(Checked {
            changes: checked.changes,
            plan: Plan::Store {
                writes,
                needs,
                fence: (!local).then_some(checked_at),
            },
        }))
    }

    async fn write(
        &self,
        _plane: &ControlPlane,
        draft: Draft,
        checked: Checked,
        note: Note<'_>,
        beside: &Beside,
    ) -> Result<Outcome, Refusal> {
        let (
            Base::Store(read),
            Plan::Store {
                writes,
                needs,
                fence,
            },
        ) = (draft.base, checked.plan)
        else {
            return Err(Refusal::Conflict("a draft of another source".into()));
        };
        let mut guards: Vec<etcd_client::Compare> = read
            .iter()
            .map(|(e, revision)| self.store.unchanged(&e.key(), *revision))
            .collect();
        for (entity, _) in &writes {
            if !read.iter().any(|(e, _)| e == entity) {
                // Written without being read first (a renamed copy): it must not exist yet.
                guards.push(self.store.unchanged(&entity.key(), 0));
            }
        }
        guards.extend(needs.iter().map(|e| self.store.exists(&e.key())));
        if let Some(at) = fence {
            guards.push(self.store.not_since(keys::CHANGED, at));
        }
        let lease = self.lease.load(Ordering::Relaxed);
        let leased = beside
            .held
            .iter()
            .chain(beside.puts.iter().filter(|p| p.2).map(|p| &p.0));
        if leased.clone().next().is_some() && lease == 0 {
            return Err(Refusal::StoreUnavailable(
                "this instance holds no lease yet (it has not reached the store since it started)"
                    .into(),
            ));
        }
        guards.extend(beside.absent.iter().map(|k| self.store.unchanged(k, 0)));
        guards.extend(beside.held.iter().map(|k| self.store.held_by(k, lease)));
        guards.extend(
            beside
                .unchanged
                .iter()
                .map(|(k, revision)| self.store.unchanged(k, *revision)),
        );
        let (audit_key, record) = self.audit_record(&note, &checked.changes, "applied", None);
        let mut ops: Vec<etcd_client::TxnOp> = writes
            .iter()
            .map(|(e, text)| match text {
                Some(text) => self.store.put(&e.key(), text.as_str()),
                None => self.store.delete(&e.key()),
            })
            .collect();
        for (key, value, leased) in &beside.puts {
            ops.push(match leased {
                true => self.store.put_leased(key, value.as_str(), lease),
                false => self.store.put(key, value.as_str()),
            });
        }
        ops.extend(beside.deletes.iter().map(|k| self.store.delete(k)));
        ops.push(self.store.put(&audit_key, record.clone()));
        ops.push(self.store.put(keys::CHANGED, record));
        if ops.len() > self.config.max_txn_ops || guards.len() > self.config.max_txn_ops {
            return Err(Refusal::StoreRefused(format!(
                "the change writes {} keys, over [store] max_txn_ops ({}); push fewer tenants at once",
                ops.len() - TXN_OVERHEAD,
                self.config.max_txn_ops
            )));
        }
        let txn = etcd_client::Txn::new().when(guards).and_then(ops);
        let revision = match self.store.commit(txn).await {
            Ok(Some(revision)) => revision,
            Ok(None) => {
                return Err(Refusal::Conflict(
                    "the store changed since this change was read (another instance or operator wrote the same entries or changed the table, or removed a pool or plan they name); nothing was written: read it again and retry".into(),
                ))
            }
            // Sent, and not answered: etcd may have written it or not.
            Err(e) if e.is_unavailable() => {
                return Err(Refusal::StoreUnavailable(format!(
                    "{e}; etcd did not confirm the change, so it may or may not have been written: look (GET /tenants/{{id}}, tenantgate audit) before trying again"
                )))
            }
            Err(e) => return Err(self.refusal(e)),
        };
        if !self.caught_up(revision).await {
            tracing::warn!(
                revision,
                "a change written to the store has not come back through the watch yet"
            );
        }
        // Checked before it was written, but this instance refused it when it came back (the
        // store held what the check could not see): say so, rather than that it is in use.
        let refused: Vec<String> = {
            let refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
            writes
                .iter()
                .filter_map(|(e, _)| refused.get(e).filter(|r| r.revision >= revision))
                .map(|r| r.message.clone())
                .collect()
        };
        if let Some(why) = refused.first() {
            return Err(Refusal::Conflict(format!(
                "the change was written to the store at revision {revision}, but this instance refused it when it came back, and keeps the previous values (GET /status, store.refused): {why}"
            )));
        }
        tracing::info!(
            actor = %note.actor,
            action = note.action,
            revision,
            changes = checked.changes.len(),
            duration_ms = u64::try_from(draft.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "routing table change written to the store"
        );
        Ok(Outcome::Applied {
            generation: u64::try_from(revision).unwrap_or(0),
            changes: checked.changes,
        })
    }

    fn read(&self, _plane: &ControlPlane, scope: &Scope) -> String {
        let entries = self.entries();
        let wanted = scoped(scope);
        assemble(
            wanted
                .iter()
                .filter_map(|e| Some((e, &*entries.get(e)?.text))),
        )
    }

    fn export(&self, _plane: &ControlPlane) -> (String, u64) {
        let entries = self.entries();
        let text = assemble(entries.iter().map(|(e, v)| (e, &*v.text)));
        (text, u64::try_from(entries.revision).unwrap_or(0))
    }

    fn record(&self, plane: &ControlPlane, entries: Vec<AuditEntry>) {
        // A record made while the store is away (a change refused for it) stays with the instance.
        if !self.is_up() {
            plane.audit.record(&entries);
            return;
        }
        let store = self.store.clone();
        let mut records = Vec::new();
        for entry in &entries {
            let note = Note {
                actor: &entry.actor,
                action: &entry.action,
                tenant: entry.tenant.as_deref(),
            };
            let result = if entry.applied { "applied" } else { "refused" };
            records.push(self.audit_record(&note, &[], result, entry.reason.as_deref()));
        }
        tokio::spawn(async move {
            for (key, value) in records {
                let txn = etcd_client::Txn::new().and_then(vec![store.put(&key, value)]);
                if let Err(e) = store.commit(txn).await {
                    tracing::warn!(error = %e, "cannot write an audit record to the store");
                }
            }
        });
    }

    async fn audit(
        &self,
        _plane: &ControlPlane,
        query: &AuditQuery,
    ) -> Result<Vec<Value>, Refusal> {
        read_audit(&self.store, query)
            .await
            .map_err(|e| self.refusal(e))
    }
}

/// The fleet's audit records, one per change made through it, oldest first, each flattened into one
/// line per routing change (a refused change is one line).
pub async fn read_audit(store: &Store, query: &AuditQuery) -> Result<Vec<Value>, StoreError> {
    let from = query
        .since
        .map_or_else(|| keys::AUDIT.to_owned(), keys::audit_from);
    let snapshot = store.snapshot_from(keys::AUDIT, &from, None).await?;
    let mut out = Vec::new();
    for kv in snapshot.kvs {
        let Ok(record) = serde_json::from_str::<Value>(&kv.value) else {
            continue;
        };
        let lines: Vec<Value> = match record["changes"].as_array() {
            Some(changes) if !changes.is_empty() => changes
                .iter()
                .map(|c| {
                    let mut line = record.clone();
                    if let Some(o) = line.as_object_mut() {
                        o.remove("changes");
                        o.insert("change".into(), c["action"].clone());
                        o.insert("tenant".into(), c["tenant"].clone());
                        o.insert("old".into(), c["old"].clone());
                        o.insert("new".into(), c["new"].clone());
                        o.insert("summary".into(), c["summary"].clone());
                    }
                    line
                })
                .collect(),
            _ => {
                let mut line = record.clone();
                if let Some(o) = line.as_object_mut() {
                    o.remove("changes");
                }
                vec![line]
            }
        };
        for mut line in lines {
            line["revision"] = json!(kv.mod_revision);
            let about = |t: &str| line["tenant"] == t;
            if query.tenant.as_deref().is_some_and(|t| !about(t)) {
                continue;
            }
            out.push(line);
        }
    }
    if let Some(limit) = query.limit {
        let skip = out.len().saturating_sub(limit);
        out.drain(..skip);
    }
    Ok(out)
}

impl ControlPlane {
    fn store_source(&self) -> Option<&Arc<StoreSource>> {
        self.store.as_ref()
    }

    /// Takes in one revision the watch saw (or the difference a full read found): the mirror
    /// follows it, and the table entries it changes are validated and applied as one delta.
    pub async fn take_revision(&self, revision: Revision) {
        let Some(store) = self.store_source() else {
            return;
        };
        let _writer = self.writer.lock().await;
        let started = Instant::now();
        let mut entries = (*store.entries()).clone();
        let mut changed: Vec<Entity> = Vec::new();
        // What the table was built from, for entries whose new value is refused.
        let mut previous: BTreeMap<Entity, Option<Entry>> = BTreeMap::new();
        for (key, kv) in &revision.changes {
            if let Some(entity) = Entity::parse(key) {
                previous
                    .entry(entity)
                    .or_insert_with_key(|e| entries.get(e).cloned());
            }
            if let Some(entity) = entries.set(key, kv.as_ref()) {
                changed.push(entity);
            }
        }
        entries.revision = entries.revision.max(revision.revision);
        store.entries.store(Arc::new(entries));
        if !changed.is_empty() {
            changed.sort();
            changed.dedup();
            self.apply_entries(store, revision.revision, changed, previous, started)
                .await;
        }
        store.resume.fetch_max(revision.revision, Ordering::Relaxed);
        store.seen.send_replace(store.seen().max(revision.revision));
        Metrics::get().observe_store(store.is_up(), store.seen());
    }

    /// Applies `changed` entries at `revision`, or holds them at the table's values; then tries the
    /// held ones again.
    async fn apply_entries(
        &self,
        store: &Arc<StoreSource>,
        revision: i64,
        changed: Vec<Entity>,
        mut previous: BTreeMap<Entity, Option<Entry>>,
        started: Instant,
    ) {
        match self.try_entries(store, revision, &changed, started).await {
            Ok(()) => store.release(&changed),
            Err(refusal) => {
                let errors = refusal.config_errors();
                let message = refusal.to_string();
                {
                    let mut h = store.held.lock().unwrap_or_else(PoisonError::into_inner);
                    let mut r = store.refused.lock().unwrap_or_else(PoisonError::into_inner);
                    for e in &changed {
                        // Held already: it keeps the older value, the one the table has.
                        let value = previous.remove(e).flatten();
                        h.entry(e.clone()).or_insert(value);
                        r.insert(
                            e.clone(),
                            Refused {
                                revision,
                                errors: errors.clone(),
                                message: message.clone(),
                            },
                        );
                    }
                }
                tracing::warn!(revision, keys = ?changed.iter().map(|e| e.key()).collect::<Vec<_>>(), error = %message, "a revision of the store was refused; the table keeps what it had for those entries");
                Metrics::get().observe_reload(refusal.code(), 0.0);
                self.last.store(Arc::new(Some(super::LastChange {
                    time: now(),
                    actor: format!("store revision {revision}"),
                    result: "refused",
                    generation: self.table.load().generation(),
                    changes: 0,
                    message: Some(message),
                    errors,
                })));
            }
        }
        self.settle_held(store, revision).await;
    }

    /// Tries the held entries again: all together first (a change written in several
    /// transactions, a swap of domains, may be valid only whole), then one by one, so that one
    /// entry still invalid does not hold back the others. Each that applies is released.
    async fn settle_held(&self, store: &Arc<StoreSource>, revision: i64) {
        loop {
            let held: Vec<Entity> = store.held().into_keys().collect();
            if held.is_empty() {
                return;
            }
            if self
                .try_entries(store, revision, &held, Instant::now())
                .await
                .is_ok()
            {
                store.release(&held);
                return;
            }
            if held.len() == 1 {
                return;
            }
            let mut progress = false;
            for entity in &held {
                let one = std::slice::from_ref(entity);
                if self
                    .try_entries(store, revision, one, Instant::now())
                    .await
                    .is_ok()
                {
                    store.release(one);
                    progress = true;
                }
            }
            if !progress {
                return;
            }
        }
    }

    /// Validates and applies entries of the store as they are now (held ones elsewhere at the
    /// table's values): a delta, or a whole validation when a shared setting is among them.
    async fn try_entries(
        &self,
        store: &Arc<StoreSource>,
        revision: i64,
        changed: &[Entity],
        started: Instant,
    ) -> Result<(), Refusal> {
        let entries = store.entries();
        let mut over = store
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for e in changed {
            over.remove(e);
        }
        let current = self.applied();
        let previous = self.table.load();
        let origin = store.origin.clone();
        let changed = changed.to_vec();
        let generation = u64::try_from(revision).unwrap_or(0);
        let built = tokio::task::spawn_blocking(move || {
            let view = Overlay {
                base: &entries,
                over: &over,
            };
            if changed.iter().any(|e| matches!(e, Entity::Setting(_))) {
                let config =
                    load_with_store(&current.config.path, &current.text, &origin, &view.all())
                        .map_err(Refusal::Invalid)?;
                let changes = reloadable_changes(&current.config, &config)?;
                let table = RoutingTable::build(&config.routing, generation, Some(&previous));
                return Ok::<_, Refusal>((config, changes, table, None));
            }
            let list: Vec<EntryChange<'_>> = changed
                .iter()
                .map(|entity| EntryChange {
                    entity,
                    text: view.text(entity),
                })
                .collect();
            let delta = validate_delta(
                &current.config,
                &current.text,
                &*previous,
                &view,
                &list,
                &origin,
            )
            .map_err(Refusal::Invalid)?;
            let touched = TableDelta {
                tenants: delta.tenants,
                pools: delta.pools,
                hosts: delta.hosts,
            };
            let table = previous.apply(&delta.config.routing, &touched, generation);
            Ok((delta.config, delta.changes, table, Some(touched.tenants)))
        })
        .await
        .map_err(|e| Refusal::Conflict(format!("applying the store's change failed: {e}")))??;
        let (config, changes, table, touched) = built;
        let current = self.applied();
        let prepared = Prepared {
            config,
            changes,
            table: Some(table),
            text: current.text.to_string(),
            digest: current.digest,
            touched,
        };
        let actor = Actor::Store { revision };
        self.commit(&actor, prepared, started, false).await;
        Ok(())
    }

    /// A full read of the store (after a compaction, or when the watch cannot resume): its
    /// difference from what this instance had is taken in as one revision.
    pub async fn resync(&self, snapshot: Snapshot) {
        let Some(store) = self.store_source() else {
            return;
        };
        let fresh = Entries::from_snapshot(&snapshot);
        let old = store.entries();
        let mut changes: Vec<(String, Option<Kv>)> = Vec::new();
        for kv in &snapshot.kvs {
            let same = match Entity::parse(&kv.key) {
                Some(entity) => old
                    .get(&entity)
                    .is_some_and(|e| e.text.as_ref() == kv.value),
                None => false,
            };
            if !same {
                changes.push((kv.key.clone(), Some(kv.clone())));
            }
        }
        for (entity, _) in old.iter() {
            if fresh.get(entity).is_none() {
                changes.push((entity.key(), None));
            }
        }
        for tenant in old
            .promotions
            .keys()
            .filter(|t| !fresh.promotions.contains_key(*t))
        {
            changes.push((keys::promotion(tenant), None));
        }
        for tenant in old.locks.keys().filter(|t| !fresh.locks.contains_key(*t)) {
            changes.push((keys::promotion_lock(tenant), None));
        }
        self.take_revision(Revision {
            revision: snapshot.revision,
            changes,
        })
        .await;
    }
}

/// The background service that keeps a store-mode gateway in step with its store: the watch (each
/// revision taken in as it comes; after a compaction, or a watch that cannot resume, a full read),
/// a probe that says whether etcd answers, and this instance's lease.
pub struct StoreWatcher {
    control: Arc<ControlPlane>,
}

impl StoreWatcher {
    pub fn new(control: Arc<ControlPlane>) -> Self {
        StoreWatcher { control }
    }
}

/// Waits between attempts to reach etcd again, doubling up to a second.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How often the probe asks etcd whether it answers.
const PROBE_EVERY: Duration = Duration::from_millis(500);

#[async_trait]
impl pingora::services::background::BackgroundService for StoreWatcher {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let Some(source) = self.control.store().cloned() else {
            return;
        };
        let probe = tokio::spawn(probe_loop(Arc::clone(&source)));
        let lease = tokio::spawn(lease_loop(Arc::clone(&self.control), Arc::clone(&source)));
        let publish = tokio::spawn(publish_loop(Arc::clone(&self.control), Arc::clone(&source)));
        let mut retry = RETRY_MIN;
        loop {
            let from = source.resume_from();
            tokio::select! {
                _ = shutdown.changed() => break,
                ended = self.follow(&source, from) => match ended {
                    // etcd ended the stream: watched again after a pause, never in a busy loop.
                    Ok(()) => {
                        tokio::time::sleep(RETRY_MIN).await;
                        retry = RETRY_MIN;
                    }
                    Err(StoreError::Compacted { compacted, .. }) => {
                        tracing::warn!(from, compacted, "the store compacted away revisions this instance had not seen; reading it whole");
                        match read_mirrored(&source.store).await {
                            Ok(snapshot) => self.control.resync(snapshot).await,
                            Err(e) => {
                                source.set_health(Err(&e));
                                tokio::time::sleep(retry).await;
                            }
                        }
                    }
                    Err(e) => {
                        source.set_health(Err(&e));
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                },
            }
        }
        probe.abort();
        lease.abort();
        publish.abort();
        let lease = source.lease.load(Ordering::Relaxed);
        if lease != 0 {
            // Locks and counts go at once rather than when the lease runs out.
            let _ = source.store.revoke(lease).await;
        }
    }
}

impl StoreWatcher {
    /// Follows the watch from `from` until it ends or fails.
    async fn follow(&self, source: &StoreSource, from: i64) -> Result<(), StoreError> {
        let mut watch = source.store.watch(from).await?;
        source.set_health(Ok(()));
        loop {
            tokio::select! {
                next = watch.next() => match next? {
                    Some(crate::store::Watched::Revisions(revisions)) => {
                        for revision in revisions {
                            self.control.take_revision(revision).await;
                        }
                        self.control.promotions_follow_store().await;
                    }
                    Some(crate::store::Watched::Progress(revision)) => source.progressed(revision),
                    None => return Ok(()),
                },
                _ = source.progress.notified() => watch.request_progress().await?,
            }
        }
    }
}

async fn probe_loop(source: Arc<StoreSource>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let result = source.store.ping().await;
        source.set_health(result.as_ref().map(|_| ()));
    }
}

/// Keeps this instance's lease alive (renewed three times per term), granting a new one when it
/// was lost (etcd was away longer than the term): what was bound to the old one is gone.
async fn lease_loop(control: Arc<ControlPlane>, source: Arc<StoreSource>) {
    let term = source.config.lease;
    loop {
        let lease = source.lease.load(Ordering::Relaxed);
        let alive = match lease {
            0 => false,
            id => source.store.keep_alive(id).await.unwrap_or(true),
        };
        if !alive {
            match source.store.grant(term).await {
                Ok(id) => {
                    if lease != 0 {
                        tracing::warn!(
                            old = lease,
                            new = id,
                            "this instance's lease had expired; its locks and counts were released"
                        );
                        control.lease_lost().await;
                    }
                    source.lease.store(id, Ordering::Relaxed);
                    // Promotions nobody runs (their instance stopped while this one started).
                    control.promotions_follow_store().await;
                }
                Err(e) => tracing::debug!(error = %e, "cannot grant this instance's lease yet"),
            }
        }
        tokio::time::sleep(term / 3).await;
    }
}

/// How often this instance publishes its canary counts of promotions in progress.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// Publishes, for each promotion of the fleet in progress, this instance's counts of the tenant's
/// canary traffic (`canary/<tenant>/<instance>`, bound to its lease): the instance running the
/// promotion judges the fleet's traffic, not its own share of it.
async fn publish_loop(control: Arc<ControlPlane>, source: Arc<StoreSource>) {
    let mut published: BTreeMap<String, super::promotion::CanaryCount> = BTreeMap::new();
    loop {
        tokio::time::sleep(PUBLISH_EVERY).await;
        let lease = source.lease.load(Ordering::Relaxed);
        if lease == 0 {
            continue;
        }
        let table = control.table.load();
        let entries = source.entries();
        for id in entries.promotions.keys() {
            let Some(canary) = table.tenant_by_id(id).and_then(|t| t.canary.as_ref()) else {
                continue;
            };
            let Some(pool) = table.pool(canary.pool) else {
                continue;
            };
            let (requests, failures) = canary.stats.snapshot();
            let count = super::promotion::CanaryCount {
                pool: pool.name().to_owned(),
                requests,
                failures,
            };
            if published.get(id) == Some(&count) {
                continue;
            }
            let key = keys::canary(id, source.instance());
            let value = serde_json::to_string(&count).unwrap_or_default();
            let txn =
                etcd_client::Txn::new().and_then(vec![source.store.put_leased(&key, value, lease)]);
            match source.store.commit(txn).await {
                Ok(_) => {
                    published.insert(id.clone(), count);
                }
                Err(e) => tracing::debug!(tenant = %id, error = %e, "cannot publish canary counts"),
            }
        }
        published.retain(|id, _| entries.promotions.contains_key(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_sort_table_keys_from_the_rest() {
        let kv = |key: &str, value: &str| Kv {
            key: key.into(),
            value: value.into(),
            mod_revision: 3,
            lease: 0,
        };
        let snapshot = Snapshot {
            revision: 9,
            kvs: vec![
                kv("tenants/acme", "pool = \"shared\"\n"),
                kv("plans/free", "rate_limit = { requests_per_second = 1 }\n"),
                kv("promotions/acme", "{}"),
                kv("locks/promotions/acme", "gw-1"),
                kv("audit/0000000000001-gw-1-0", "{}"),
                kv("meta/changed", "{}"),
            ],
        };
        let entries = Entries::from_snapshot(&snapshot);
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries.plans(),
            vec![("free", "rate_limit = { requests_per_second = 1 }\n")]
        );
        assert!(entries.promotions.contains_key("acme"));
        assert!(entries.locks.contains_key("acme"));
        assert_eq!(
            entries.text(&Entity::Tenant("acme".into())),
            Some("pool = \"shared\"\n")
        );
    }
}
