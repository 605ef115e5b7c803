//! The control plane: every change to the running routing table goes through here, one at a time,
//! whoever asks for it (the file watcher, SIGHUP, the admin API, a promotion's steps).
//!
//! A change is prepared off the request path (parse, validate, diff, build the new table), refused
//! whole if anything is wrong, and otherwise swapped in at once. Changes made through the API are
//! written to where the table is kept first (`source`: the config file, or a fleet's store), so
//! that and the running table never disagree. Every change, applied or refused, is audited
//! (`audit`, or the store's audit records).
//!
//! Architecture invariant: the request path never waits on anything here. It reads the table
//! through `TableHandle`; this module only ever replaces that table whole.

pub mod apply;
pub mod audit;
pub mod edit;
pub mod file;
pub mod outcome;
pub mod promotion;
pub mod source;
pub mod store;
pub mod transfer;
pub mod watch;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::config::diff::Change;
use crate::config::load::check_fragment;
use crate::config::model::TenantConfig;
use crate::config::shared::{named_by, Entity};
use crate::config::GatewayConfig;
use crate::metrics::Metrics;
use crate::snapshot::table::TableDelta;
use crate::snapshot::{RoutingTable, TableHandle};
use crate::upstream::health::probe_now;
use audit::{Actor, AuditEntry, AuditLog, AuditOpenError};
use edit::{edit_tenant, ApiKeyEntry, TenantEdit};
pub use file::referenced_files;
use file::{digest, loaded_files_digest, ConfigFile, FileSource};
use outcome::reloadable_changes;
pub use outcome::{ImportRequest, Imported, LastChange, Outcome, Refusal};
use promotion::PromotionRun;
use source::{AuditQuery, Beside, Note, Scope, Source};
use store::StoreSource;
use transfer::plan_import;

/// The config the running table was built from, and the exact text it came from.
#[derive(Debug)]
pub struct Applied {
    pub config: Arc<GatewayConfig>,
    pub text: Arc<str>,
    digest: u64,
    /// Of the certificate, key and CA files as they were read for this config.
    files: u64,
}

/// `POST /apply`: a routing file for the fleet's store.
#[derive(Debug)]
pub struct ApplyRequest {
    pub text: String,
    /// The file's name as the client knows it, to place errors in it.
    pub source: String,
    /// Remove what the store has and the file does not.
    pub prune: bool,
    pub dry_run: bool,
    /// The revision the client saw its plan at: anything changed since, and nothing is written.
    pub expected_revision: Option<i64>,
}

/// What an apply did (or, for a dry run, would do).
#[derive(Debug)]
pub struct ApplyAnswer {
    pub plan: apply::ApplyPlan,
    /// The revision of each transaction written (none: a dry run, or nothing to change).
    pub revisions: Vec<i64>,
}

/// A prepared change: the validated config, what changes, and the new table (when something does).
#[derive(Debug)]
struct Prepared {
    config: GatewayConfig,
    changes: Vec<Change>,
    table: Option<RoutingTable>,
    /// The text it was parsed from, carried through so it is neither copied nor hashed again.
    text: String,
    digest: u64,
    /// The tenants a delta touched, when the table was made from the one in use by
    /// `RoutingTable::apply` (`None`: built whole).
    touched: Option<Vec<String>>,
}

pub struct ControlPlane {
    file: ConfigFile,
    /// Where changes are made: the config file, or the fleet's store (`store`, the same one).
    source: Arc<dyn Source>,
    store: Option<Arc<StoreSource>>,
    table: Arc<TableHandle>,
    /// Held while a change is prepared and applied: changes happen one at a time.
    writer: tokio::sync::Mutex<()>,
    /// With a store, held while one of this instance's changes is read, written and waited for:
    /// its table follows through the watch, which takes `writer`.
    changes: tokio::sync::Mutex<()>,
    applied: ArcSwap<Applied>,
    audit: AuditLog,
    last: ArcSwap<Option<LastChange>>,
    /// The digest of the last file text a reload refused (0: none since the last applied change):
    /// the watcher does not refuse the same broken file again for every event it sees, nor a
    /// promotion for every retry.
    refused_digest: AtomicU64,
    promotions: Mutex<HashMap<String, Arc<PromotionRun>>>,
}

impl ControlPlane {
    /// Takes over a running table built from `config`, which was read from `text`.
    pub fn new(
        config: GatewayConfig,
        text: String,
        table: Arc<TableHandle>,
        store: Option<Arc<StoreSource>>,
    ) -> Result<ControlPlane, AuditOpenError> {
        let audit = AuditLog::open(&config.admin.audit_log)?;
        let source: Arc<dyn Source> = match &store {
            Some(store) => Arc::clone(store) as Arc<dyn Source>,
            None => Arc::new(FileSource),
        };
        Ok(ControlPlane {
            file: ConfigFile::new(config.path.clone()),
            source,
            store,
            table,
            writer: tokio::sync::Mutex::new(()),
            changes: tokio::sync::Mutex::new(()),
            applied: ArcSwap::from_pointee(Applied {
                files: loaded_files_digest(&config),
                config: Arc::new(config),
                digest: digest(&text),
                text: text.into(),
            }),
            audit,
            last: ArcSwap::from_pointee(None),
            refused_digest: AtomicU64::new(0),
            promotions: Mutex::new(HashMap::new()),
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn table(&self) -> &Arc<TableHandle> {
        &self.table
    }

    /// The config in use and its text.
    pub fn applied(&self) -> Arc<Applied> {
        self.applied.load_full()
    }

    pub fn last_change(&self) -> Option<LastChange> {
        (**self.last.load()).clone()
    }

    pub fn audit_path(&self) -> &Path {
        self.audit.path()
    }

    /// The fleet's store, when the table is kept in one.
    pub fn store(&self) -> Option<&Arc<StoreSource>> {
        self.store.as_ref()
    }

    /// `"file"` or `"store"`.
    pub fn source_kind(&self) -> &'static str {
        self.source.kind()
    }

    /// Loads the config file again and applies what changed. Unchanged text, with its certificate
    /// and CA files unchanged, is not even parsed.
    pub async fn reload(&self, actor: Actor) -> Result<Outcome, Refusal> {
        let _writer = self.writer.lock().await;
        let started = Instant::now();
        let text = match self.file.read().await {
            Ok(text) => text,
            Err(refusal) => {
                self.record_refusal(&actor, "reload", None, &refusal);
                return Err(refusal);
            }
        };
        let current = self.applied();
        let files = ConfigFile::referenced_on_disk(&current.config).await;
        let unchanged = Outcome::Unchanged {
            generation: self.table.load().generation(),
        };
        let text_digest = digest(&text);
        if text_digest == current.digest && files == current.files {
            return Ok(unchanged);
        }
        // What was refused last is the text and the files together.
        let read = {
            let mut h = DefaultHasher::new();
            text_digest.hash(&mut h);
            files.hash(&mut h);
            h.finish()
        };
        // Reloads nobody asked for (the watcher, a promotion's retries) do not refuse the same
        // broken file again and again; an operator's SIGHUP or API call always gets an answer.
        let unasked = matches!(actor, Actor::FileWatch | Actor::Promotion);
        if unasked && read == self.refused_digest.load(Ordering::Relaxed) {
            return Ok(unchanged);
        }
        let result = self.prepare(text, text_digest).await;
        match result {
            Ok(prepared) => Ok(self.commit(&actor, prepared, started, true).await),
            Err(refusal) => {
                self.refused_digest.store(read, Ordering::Relaxed);
                self.record_refusal(&actor, "reload", None, &refusal);
                Err(refusal)
            }
        }
    }

    /// One change through the source: read what it may touch, let `edit` change that TOML (`None`:
    /// nothing to change), check the result and write it with `beside` in the same transaction (a
    /// store's promotion state). Refused whole, and recorded, when any step refuses.
    async fn change_with(
        &self,
        note: Note<'_>,
        scope: Scope,
        beside: &Beside,
        edit: impl FnOnce(&str, &GatewayConfig) -> Result<Option<String>, Refusal>,
    ) -> Result<Outcome, Refusal> {
        let _one_at_a_time = self.one_at_a_time().await;
        let result = async {
            let draft = self.source.draft(self, &scope).await?;
            let unchanged = Outcome::Unchanged {
                generation: self.table.load().generation(),
            };
            let current = self.applied();
            let Some(edited) = edit(&draft.text, &current.config)? else {
                return Ok(unchanged);
            };
            let checked = match self.source.check(self, &draft, edited).await? {
                Some(checked) => checked,
                None if !beside.is_empty() => source::Checked::beside_only(),
                None => return Ok(unchanged),
            };
            self.source
                .write(self, draft, checked, note.clone(), beside)
                .await
        }
        .await;
        if let Err(refusal) = &result {
            self.record_refusal(note.actor, note.action, note.tenant, refusal);
        }
        result
    }

    /// Changes are made one at a time: in file mode under the writer lock; with a store under its
    /// own, since the change's table comes back through the watch, which takes the writer lock.
    async fn one_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        match self.store {
            Some(_) => self.changes.lock().await,
            None => self.writer.lock().await,
        }
    }

    /// Changes one tenant: `decide` looks at the tenant as it is and says which keys to set (or
    /// refuses). The tenant's TOML is edited, validated, written and then applied; a change that
    /// cannot be written is not applied.
    pub async fn edit_tenant(
        &self,
        actor: &Actor,
        action: &str,
        id: &str,
        decide: impl FnOnce(&TenantConfig, &GatewayConfig) -> Result<Vec<TenantEdit>, Refusal>,
    ) -> Result<Outcome, Refusal> {
        self.edit_tenant_with(actor, action, id, &Beside::default(), decide)
            .await
    }

    /// `edit_tenant`, writing `beside` in the same transaction (a store's promotion state).
    pub(crate) async fn edit_tenant_with(
        &self,
        actor: &Actor,
        action: &str,
        id: &str,
        beside: &Beside,
        decide: impl FnOnce(&TenantConfig, &GatewayConfig) -> Result<Vec<TenantEdit>, Refusal>,
    ) -> Result<Outcome, Refusal> {
        self.change_tenant(actor, action, id, beside, |text, tenant, config| {
            let edits = decide(tenant, config)?;
            if edits.is_empty() && beside.puts.is_empty() {
                return Ok(None);
            }
            Ok(Some(edit_tenant(text, id, &edits)?))
        })
        .await
    }

    /// Adds an API key (its hash and dates; the key itself never reaches the gateway) to a tenant.
    pub async fn add_api_key(
        &self,
        actor: &Actor,
        id: &str,
        key: ApiKeyEntry,
    ) -> Result<Outcome, Refusal> {
        let beside = Beside::default();
        self.change_tenant(actor, "key.create", id, &beside, |text, tenant, _| {
            if tenant.api_keys.iter().any(|k| k.id == key.id) {
                return Err(Refusal::Conflict(format!(
                    "tenant {id} has a key {:?} already",
                    key.id
                )));
            }
            Ok(Some(edit::add_api_key(text, id, &key)?))
        })
        .await
    }

    /// Marks a tenant's key revoked as of `when` (RFC 3339).
    pub async fn revoke_api_key(
        &self,
        actor: &Actor,
        id: &str,
        key_id: &str,
        when: &str,
    ) -> Result<Outcome, Refusal> {
        let beside = Beside::default();
        self.change_tenant(actor, "key.revoke", id, &beside, |text, tenant, _| {
            if !tenant.api_keys.iter().any(|k| k.id == key_id) {
                return Err(Refusal::UnknownKey {
                    tenant: id.to_owned(),
                    key: key_id.to_owned(),
                });
            }
            Ok(edit::revoke_api_key(text, id, key_id, when)?)
        })
        .await
    }

    /// A change to one tenant, which must exist: `edit` gets the config's text, the tenant and
    /// the config, and gives the new text (`None`: nothing to change).
    async fn change_tenant(
        &self,
        actor: &Actor,
        action: &str,
        id: &str,
        beside: &Beside,
        edit: impl FnOnce(&str, &TenantConfig, &GatewayConfig) -> Result<Option<String>, Refusal>,
    ) -> Result<Outcome, Refusal> {
        let note = Note {
            actor,
            action,
            tenant: Some(id),
        };
        self.change_with(
            note,
            Scope::Tenant(id.to_owned()),
            beside,
            |text, config| {
                let tenant = config
                    .routing
                    .tenant(id)
                    .ok_or_else(|| Refusal::UnknownTenant(id.to_owned()))?;
                edit(text, tenant, config)
            },
        )
        .await
    }

    /// Merges a tenant file into the config (`tenants push`): plans it, and unless it is a dry run
    /// or has conflicts under `fail`, writes and applies it like any other change.
    pub async fn import(&self, actor: Actor, request: ImportRequest) -> Result<Imported, Refusal> {
        const ACTION: &str = "tenants.push";
        let _one_at_a_time = self.one_at_a_time().await;
        let note = Note {
            actor: &actor,
            action: ACTION,
            tenant: None,
        };
        let result = self.import_steps(note.clone(), &request).await;
        if let Err(refusal) = &result {
            if !request.dry_run {
                self.record_refusal(&actor, ACTION, None, refusal);
            }
        }
        result
    }

    async fn import_steps(
        &self,
        note: Note<'_>,
        request: &ImportRequest,
    ) -> Result<Imported, Refusal> {
        let generation = self.table.load().generation();
        if let Some(expected) = request.expected_generation {
            if expected != generation {
                return Err(Refusal::Conflict(format!(
                    "the routing table changed since the plan was made (generation {expected}, now {generation}); push again to see the new plan"
                )));
            }
        }
        check_fragment(Path::new(&request.source), &request.fragment).map_err(Refusal::Invalid)?;
        let fragment: toml_edit::DocumentMut = request
            .fragment
            .parse()
            .map_err(|e: toml_edit::TomlError| Refusal::BadRequest(e.to_string()))?;
        let scope = Scope::Entries(
            crate::config::shared::split(&fragment)
                .entries
                .into_iter()
                .map(|(entity, _)| entity)
                .collect(),
        );
        let draft = self.source.draft(self, &scope).await?;
        let current = self.applied();
        let plan = plan_import(
            &draft.text,
            &current.config,
            &fragment,
            request.on_conflict,
            request.with_keys,
        )?;
        let checked = match &plan.text {
            Some(text) if plan.conflicts() == 0 => {
                self.source.check(self, &draft, text.clone()).await?
            }
            _ => None,
        };
        if request.dry_run {
            return Ok(Imported {
                changes: checked.map(|c| c.changes).unwrap_or_default(),
                plan,
                outcome: None,
                generation,
            });
        }
        if plan.conflicts() > 0 {
            return Err(Refusal::PushConflict(Box::new(plan)));
        }
        let outcome = match checked {
            Some(checked) => {
                self.source
                    .write(self, draft, checked, note, &Beside::default())
                    .await?
            }
            None => Outcome::Unchanged { generation },
        };
        Ok(Imported {
            changes: Vec::new(),
            plan,
            outcome: Some(outcome),
            generation,
        })
    }

    /// Makes a routing file the fleet's table (`tenantgate apply`): planned against the store, and
    /// unless it is a dry run, written guarded by the revision the plan was made at (or the one the
    /// client saw its plan at).
    pub async fn apply(&self, actor: Actor, request: ApplyRequest) -> Result<ApplyAnswer, Refusal> {
        const ACTION: &str = "apply";
        let result = async {
            let Some(store) = self.store.as_ref() else {
                return Err(Refusal::NotAStore(
                    "apply writes a fleet's store; edit this gateway's file, or push tenants to it (tenantgate tenants push)".into(),
                ));
            };
            let _one_at_a_time = self.one_at_a_time().await;
            let at = store
                .store
                .ping()
                .await
                .map_err(|e| Refusal::StoreUnavailable(e.to_string()))?;
            if !store.caught_up(at).await {
                return Err(Refusal::StoreUnavailable(format!(
                    "this instance has not caught up with the store's revision {at}"
                )));
            }
            let entries = store.entries();
            let current = self.applied();
            let origin = store.store.origin();
            let text = request.text.clone();
            let source = request.source.clone();
            let prune = request.prune;
            let mut plan = tokio::task::spawn_blocking(move || {
                let instance = apply::Instance {
                    path: &current.config.path,
                    text: &current.text,
                    origin: &origin,
                };
                let file = apply::RoutingFile {
                    path: Path::new(&source),
                    text: &text,
                    prune,
                };
                apply::plan_apply(Some(&current.config), instance, &entries, file)
            })
            .await
            .map_err(|e| Refusal::Conflict(format!("planning failed: {e}")))??;
            if request.dry_run || plan.writes.is_empty() {
                return Ok(ApplyAnswer {
                    plan,
                    revisions: Vec::new(),
                });
            }
            if let Some(expected) = request.expected_revision {
                plan.revision = expected;
            }
            let revisions = apply::write_apply(
                &store.store,
                store.config.max_txn_ops,
                store.instance(),
                &actor.to_string(),
                &plan,
            )
            .await?;
            if let Some(&last) = revisions.last() {
                if !store.caught_up(last).await {
                    tracing::warn!(revision = last, "an apply written to the store has not come back through the watch yet");
                }
            }
            Ok(ApplyAnswer { plan, revisions })
        }
        .await;
        if let Err(refusal) = &result {
            if !request.dry_run {
                self.record_refusal(&actor, ACTION, None, refusal);
            }
        }
        result
    }

    /// The tenant's entry, pools and plan as a tenant file (`tenants pull`).
    pub fn export(&self, id: &str, with_keys: bool, source: &str) -> Result<String, Refusal> {
        let applied = self.applied();
        let tenant = applied
            .config
            .routing
            .tenant(id)
            .ok_or_else(|| Refusal::UnknownTenant(id.to_owned()))?;
        let mut entries = vec![Entity::Tenant(id.to_owned())];
        entries.extend(named_by(tenant));
        let text = self.source.read(self, &Scope::Entries(entries));
        transfer::export(
            &text,
            &applied.config,
            self.table.load().generation(),
            id,
            with_keys,
            source,
        )
    }

    /// Every shared entry as one routing file (`tenantgate export`), and the generation it is of.
    pub fn export_all(&self) -> (String, u64) {
        self.source.export(self)
    }

    /// The latest audit entries about a tenant, oldest first (none if the log cannot be read).
    pub async fn recent_changes(&self, tenant: &str, n: usize) -> Vec<Value> {
        let query = AuditQuery {
            tenant: Some(tenant.to_owned()),
            since: None,
            limit: Some(n),
        };
        self.audit_records(&query).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the audit log");
            Vec::new()
        })
    }

    /// Audit records (this instance's log, or the fleet's), oldest first.
    pub async fn audit_records(&self, query: &AuditQuery) -> Result<Vec<Value>, Refusal> {
        self.source.audit(self, query).await
    }

    /// Parses, validates, diffs and builds, on a blocking thread (a large file takes a while).
    async fn prepare(&self, text: String, digest: u64) -> Result<Prepared, Refusal> {
        let current = self.applied();
        let previous = self.table.load();
        let path = self.file.path().to_path_buf();
        let source = Arc::clone(&self.source);
        // A file's table counts its own generations; a store's are its revisions, which an
        // instance's own settings do not change.
        let generation = match self.store {
            Some(_) => previous.generation(),
            None => previous.generation() + 1,
        };
        let prepared = tokio::task::spawn_blocking(move || {
            let config = source.load(&path, &text).map_err(Refusal::Invalid)?;
            let changes = reloadable_changes(&current.config, &config)?;
            let (old, new) = (&current.config.routing, &config.routing);
            // A file that differs in a few tenants changes only those: the rest of a large table
            // is shared, not built again.
            let (table, touched) =
                match (changes.is_empty(), TableDelta::settings_unchanged(old, new)) {
                    (true, _) => (None, None),
                    (false, true) => {
                        let delta = TableDelta::between(old, new);
                        let table = previous.apply(new, &delta, generation);
                        (Some(table), Some(delta.tenants))
                    }
                    (false, false) => (
                        Some(RoutingTable::build(new, generation, Some(&previous))),
                        None,
                    ),
                };
            Ok(Prepared {
                config,
                changes,
                table,
                text,
                digest,
                touched,
            })
        })
        .await;
        prepared.unwrap_or_else(|e| {
            Err(Refusal::Conflict(format!(
                "preparing the change failed: {e}"
            )))
        })
    }

    /// Puts a prepared change in use: probes its new upstreams, swaps the table, records it.
    async fn commit(
        &self,
        actor: &Actor,
        prepared: Prepared,
        started: Instant,
        audit: bool,
    ) -> Outcome {
        let Prepared {
            config,
            changes,
            table,
            text,
            digest,
            touched,
        } = prepared;
        let outcome = match table {
            Some(table) => {
                let old = self.table.load();
                probe_new_upstreams(&table, &old).await;
                let generation = table.generation();
                match &touched {
                    Some(tenants) => Metrics::get().observe_delta(&*old, &table, tenants),
                    None => Metrics::get().observe_table(&table),
                }
                Metrics::get().observe_certificates(&config.routing.tls.certificates);
                self.table.store(table);
                Outcome::Applied {
                    generation,
                    changes,
                }
            }
            None => Outcome::Unchanged {
                generation: self.table.load().generation(),
            },
        };
        self.applied.store(Arc::new(Applied {
            files: loaded_files_digest(&config),
            config: Arc::new(config),
            digest,
            text: text.into(),
        }));
        self.refused_digest.store(0, Ordering::Relaxed);
        let (generation, changes, result) = match &outcome {
            Outcome::Applied {
                generation,
                changes,
            } => (*generation, changes.as_slice(), "applied"),
            Outcome::Unchanged { generation } => (*generation, &[][..], "unchanged"),
        };
        if audit && !changes.is_empty() {
            let entries = changes
                .iter()
                .map(|c| {
                    let (old, new) = c.values();
                    AuditEntry {
                        actor: actor.clone(),
                        action: c.action().to_owned(),
                        tenant: c.tenant().map(str::to_owned),
                        old,
                        new,
                        generation,
                        applied: true,
                        reason: None,
                    }
                })
                .collect();
            self.source.record(self, entries);
        }
        Metrics::get().observe_reload(result, started.elapsed().as_secs_f64());
        tracing::info!(
            %actor,
            result,
            generation,
            changes = changes.len(),
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "routing table change"
        );
        self.last.store(Arc::new(Some(LastChange {
            time: now(),
            actor: actor.to_string(),
            result,
            generation,
            changes: changes.len(),
            message: None,
            errors: Vec::new(),
        })));
        outcome
    }

    /// Records a refused change: audit, metrics, status, log. The running table is untouched.
    pub fn record_refusal(
        &self,
        actor: &Actor,
        action: &str,
        tenant: Option<&str>,
        refusal: &Refusal,
    ) {
        let generation = self.table.load().generation();
        self.source.record(
            self,
            vec![AuditEntry {
                actor: actor.clone(),
                action: action.to_owned(),
                tenant: tenant.map(str::to_owned),
                old: Value::Null,
                new: Value::Null,
                generation,
                applied: false,
                reason: Some(refusal.to_string()),
            }],
        );
        Metrics::get().observe_reload(refusal.code(), 0.0);
        tracing::warn!(%actor, action, tenant, error = %refusal, "routing table change refused");
        self.last.store(Arc::new(Some(LastChange {
            time: now(),
            actor: actor.to_string(),
            result: "refused",
            generation,
            changes: 0,
            message: Some(refusal.to_string()),
            errors: refusal.config_errors(),
        })));
    }

    /// Records an event of a change already made (a promotion that completed or rolled back).
    pub fn record_event(
        &self,
        actor: &Actor,
        action: &str,
        tenant: &str,
        new: Value,
        reason: Option<String>,
    ) {
        self.source.record(
            self,
            vec![AuditEntry {
                actor: actor.clone(),
                action: action.to_owned(),
                tenant: Some(tenant.to_owned()),
                old: Value::Null,
                new,
                generation: self.table.load().generation(),
                applied: true,
                reason,
            }],
        );
    }

    /// Records what the ACME client did for a tenant's name: `failure` set for an order that
    /// failed (the old certificate, if any, still serves).
    pub fn record_certificate(
        &self,
        action: &str,
        tenant: &str,
        new: Value,
        failure: Option<String>,
    ) {
        self.source.record(
            self,
            vec![AuditEntry {
                actor: Actor::Acme,
                action: action.to_owned(),
                tenant: Some(tenant.to_owned()),
                old: Value::Null,
                new,
                generation: self.table.load().generation(),
                applied: failure.is_none(),
                reason: failure,
            }],
        );
    }

    pub(crate) fn promotion(&self, tenant: &str) -> Option<Arc<PromotionRun>> {
        self.promotions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
    }

    /// Registers `run` as the tenant's promotion, unless one is running already (checked and
    /// registered at once, so two promotions of one tenant cannot both start).
    pub(crate) fn start_promotion(&self, tenant: &str, run: Arc<PromotionRun>) -> bool {
        let mut runs = self
            .promotions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if runs.get(tenant).is_some_and(|r| r.is_running()) {
            return false;
        }
        runs.insert(tenant.to_owned(), run);
        true
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A pool whose upstreams changed must not send traffic to an upstream nobody has checked: each
/// upstream the old table did not have (in a pool with a health check) is probed once, and starts
/// healthy or not by that result, before the new table is put in use.
async fn probe_new_upstreams(new: &RoutingTable, old: &RoutingTable) {
    let mut probes = tokio::task::JoinSet::new();
    for pool in new.pools().filter(|p| p.config.health_check.is_some()) {
        let known = old.pool_by_name(pool.name());
        for (index, upstream) in pool.upstreams().iter().enumerate() {
            let seen = known.is_some_and(|k| {
                k.upstreams()
                    .iter()
                    .any(|u| Arc::ptr_eq(&u.state, &upstream.state))
            });
            if seen {
                continue;
            }
            let pool = Arc::clone(pool);
            probes.spawn(async move {
                let Some(upstream) = pool.upstream(index) else { return };
                let result = probe_now(&pool, upstream).await;
                if let Err(e) = &result {
                    tracing::warn!(pool = pool.name(), upstream = %upstream.label, error = %e, "new upstream fails its first health check");
                }
                upstream.state.set_healthy(result.is_ok());
            });
        }
    }
    while probes.join_next().await.is_some() {}
}
