//! The control plane: every change to the running routing table goes through here, one at a time,
//! whoever asks for it (the file watcher, SIGHUP, the admin API, a promotion's steps).
//!
//! A change is prepared off the request path (parse, validate, diff, build the new table), refused
//! whole if anything is wrong, and otherwise swapped in at once. Changes made through the API are
//! written to the config file first (`edit`), so the file and the running table never disagree.
//! Every change, applied or refused, is audited (`audit`).
//!
//! Architecture invariant: the request path never waits on anything here. It reads the table
//! through `TableHandle`; this module only ever replaces that table whole.

pub mod audit;
pub mod edit;
pub mod file;
pub mod outcome;
pub mod promotion;
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

use crate::config::diff::{diff, Change};
use crate::config::load::check_fragment;
use crate::config::model::TenantConfig;
use crate::config::{load_str, GatewayConfig};
use crate::metrics::Metrics;
use crate::routing::{RoutingTable, TableHandle};
use crate::upstream::health::probe_now;
use audit::{Actor, AuditEntry, AuditLog, AuditOpenError};
use edit::{edit_tenant, TenantEdit};
pub use file::referenced_files;
use file::{digest, loaded_files_digest, ConfigFile};
pub use outcome::{ImportRequest, Imported, LastChange, Outcome, Refusal};
use promotion::PromotionRun;
use transfer::{plan_import, ImportPlan};

/// The config the running table was built from, and the exact text it came from.
#[derive(Debug)]
pub struct Applied {
    pub config: Arc<GatewayConfig>,
    pub text: Arc<str>,
    digest: u64,
    /// Of the certificate, key and CA files as they were read for this config.
    files: u64,
}

/// A prepared change: the validated config, what changes, and the new table (when something does).
struct Prepared {
    config: GatewayConfig,
    changes: Vec<Change>,
    table: Option<RoutingTable>,
    /// The text it was parsed from, carried through so it is neither copied nor hashed again.
    text: String,
    digest: u64,
}

pub struct ControlPlane {
    file: ConfigFile,
    table: Arc<TableHandle>,
    /// Held while a change is prepared and applied: changes happen one at a time.
    writer: tokio::sync::Mutex<()>,
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
    ) -> Result<ControlPlane, AuditOpenError> {
        let audit = AuditLog::open(&config.admin.audit_log)?;
        Ok(ControlPlane {
            file: ConfigFile::new(config.path.clone()),
            table,
            writer: tokio::sync::Mutex::new(()),
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
            Ok(prepared) => Ok(self.commit(&actor, prepared, started).await),
            Err(refusal) => {
                self.refused_digest.store(read, Ordering::Relaxed);
                self.record_refusal(&actor, "reload", None, &refusal);
                Err(refusal)
            }
        }
    }

    /// Changes one tenant through the config file: `decide` looks at the tenant as it is and says
    /// which keys to set (or refuses). The file is edited, validated, written and then applied; a
    /// change that cannot be written is not applied.
    pub async fn edit_tenant(
        &self,
        actor: &Actor,
        action: &str,
        id: &str,
        decide: impl FnOnce(&TenantConfig, &GatewayConfig) -> Result<Vec<TenantEdit>, Refusal>,
    ) -> Result<Outcome, Refusal> {
        let _writer = self.writer.lock().await;
        let started = Instant::now();
        let result = self.prepare_edit(id, decide).await;
        let prepared = match result {
            Ok(Some(prepared)) => prepared,
            Ok(None) => {
                return Ok(Outcome::Unchanged {
                    generation: self.table.load().generation(),
                })
            }
            Err(refusal) => {
                self.record_refusal(actor, action, Some(id), &refusal);
                return Err(refusal);
            }
        };
        self.persist_and_commit(actor, action, Some(id), prepared, started)
            .await
    }

    /// Writes a prepared change to the config file, then applies it. An operator may have saved
    /// while the change was prepared: the file is looked at again just before writing, so their
    /// edit is never written over.
    async fn persist_and_commit(
        &self,
        actor: &Actor,
        action: &str,
        tenant: Option<&str>,
        prepared: Prepared,
        started: Instant,
    ) -> Result<Outcome, Refusal> {
        if let Err(refusal) = self.file.write(&self.applied(), &prepared.text).await {
            self.record_refusal(actor, action, tenant, &refusal);
            return Err(refusal);
        }
        Ok(self.commit(actor, prepared, started).await)
    }

    /// Merges a tenant file into the config (`tenants push`): plans it, and unless it is a dry run
    /// or has conflicts under `fail`, writes and applies it like any other change.
    pub async fn import(&self, actor: Actor, request: ImportRequest) -> Result<Imported, Refusal> {
        const ACTION: &str = "tenants.push";
        let _writer = self.writer.lock().await;
        let started = Instant::now();
        let (plan, prepared) = match self.prepare_import(&request).await {
            Ok(planned) => planned,
            Err(refusal) => {
                if !request.dry_run {
                    self.record_refusal(&actor, ACTION, None, &refusal);
                }
                return Err(refusal);
            }
        };
        let generation = self.table.load().generation();
        if request.dry_run {
            return Ok(Imported {
                changes: prepared.map(|p| p.changes).unwrap_or_default(),
                plan,
                outcome: None,
                generation,
            });
        }
        if plan.conflicts() > 0 {
            let refusal = Refusal::PushConflict(Box::new(plan));
            self.record_refusal(&actor, ACTION, None, &refusal);
            return Err(refusal);
        }
        let outcome = match prepared {
            Some(prepared) => {
                self.persist_and_commit(&actor, ACTION, None, prepared, started)
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

    async fn prepare_import(
        &self,
        request: &ImportRequest,
    ) -> Result<(ImportPlan, Option<Prepared>), Refusal> {
        let generation = self.table.load().generation();
        if let Some(expected) = request.expected_generation {
            if expected != generation {
                return Err(Refusal::Conflict(format!(
                    "the routing table changed since the plan was made (generation {expected}, now {generation}); push again to see the new plan"
                )));
            }
        }
        let current = self.applied();
        self.file.read_unchanged(&current).await?;
        check_fragment(Path::new(&request.source), &request.fragment).map_err(Refusal::Invalid)?;
        let fragment: toml_edit::DocumentMut = request
            .fragment
            .parse()
            .map_err(|e: toml_edit::TomlError| Refusal::BadRequest(e.to_string()))?;
        let plan = plan_import(
            &current.text,
            &current.config,
            &fragment,
            request.on_conflict,
            request.with_keys,
        )?;
        let prepared = match &plan.text {
            Some(text) if plan.conflicts() == 0 => {
                Some(self.prepare(text.clone(), digest(text)).await?)
            }
            _ => None,
        };
        Ok((plan, prepared))
    }

    /// The tenant's entry, pools and plan as a tenant file (`tenants pull`).
    pub fn export(&self, id: &str, with_keys: bool, source: &str) -> Result<String, Refusal> {
        let applied = self.applied();
        transfer::export(
            &applied.text,
            &applied.config,
            self.table.load().generation(),
            id,
            with_keys,
            source,
        )
    }

    /// The latest audit entries about a tenant, oldest first (none if the log cannot be read).
    pub fn recent_changes(&self, tenant: &str, n: usize) -> Vec<Value> {
        self.audit.recent(tenant, n).unwrap_or_else(|e| {
            tracing::warn!(path = %self.audit.path().display(), error = %e, "cannot read the audit log");
            Vec::new()
        })
    }

    async fn prepare_edit(
        &self,
        id: &str,
        decide: impl FnOnce(&TenantConfig, &GatewayConfig) -> Result<Vec<TenantEdit>, Refusal>,
    ) -> Result<Option<Prepared>, Refusal> {
        let current = self.applied();
        self.file.read_unchanged(&current).await?;
        let tenant = current
            .config
            .routing
            .tenant(id)
            .ok_or_else(|| Refusal::UnknownTenant(id.to_owned()))?;
        let edits = decide(tenant, &current.config)?;
        if edits.is_empty() {
            return Ok(None);
        }
        let text = edit_tenant(&current.text, id, &edits)?;
        let edited = digest(&text);
        self.prepare(text, edited).await.map(Some)
    }

    /// Parses, validates, diffs and builds, on a blocking thread (a large file takes a while).
    async fn prepare(&self, text: String, digest: u64) -> Result<Prepared, Refusal> {
        let current = self.applied();
        let previous = self.table.load();
        let path = self.file.path().to_path_buf();
        let prepared = tokio::task::spawn_blocking(move || {
            let config = load_str(&path, &text).map_err(Refusal::Invalid)?;
            let changes = diff(&current.config, &config);
            let restart: Vec<Change> = changes
                .iter()
                .filter(|c| c.needs_restart())
                .cloned()
                .collect();
            if !restart.is_empty() {
                return Err(Refusal::NeedsRestart(restart));
            }
            let table = (!changes.is_empty()).then(|| {
                RoutingTable::build(&config.routing, previous.generation() + 1, Some(&previous))
            });
            Ok(Prepared {
                config,
                changes,
                table,
                text,
                digest,
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
    async fn commit(&self, actor: &Actor, prepared: Prepared, started: Instant) -> Outcome {
        let Prepared {
            config,
            changes,
            table,
            text,
            digest,
        } = prepared;
        let outcome = match table {
            Some(table) => {
                probe_new_upstreams(&table, &self.table.load()).await;
                let generation = table.generation();
                Metrics::get().observe_table(&table);
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
        self.audit.record(
            &changes
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
                .collect::<Vec<_>>(),
        );
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
        self.audit.record(&[AuditEntry {
            actor: actor.clone(),
            action: action.to_owned(),
            tenant: tenant.map(str::to_owned),
            old: Value::Null,
            new: Value::Null,
            generation,
            applied: false,
            reason: Some(refusal.to_string()),
        }]);
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
        self.audit.record(&[AuditEntry {
            actor: actor.clone(),
            action: action.to_owned(),
            tenant: Some(tenant.to_owned()),
            old: Value::Null,
            new,
            generation: self.table.load().generation(),
            applied: true,
            reason,
        }]);
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
