//! Where the shared part of the routing table is kept, as the control plane sees it: this
//! instance's config file (`FileSource`, the default) or the fleet's store (`StoreSource`). Every
//! change the control plane makes goes through one `Source`:
//!
//! 1. `draft`: the TOML of what the change may touch, as the source holds it now (the whole file;
//!    or the store's entries, read fresh, once this instance has caught up with the store);
//! 2. the change edits that TOML (the same `edit` and `transfer` code for both);
//! 3. `check`: the edited TOML validated, with what it changes (a whole file is loaded again; a
//!    store's few changed entries are checked as a delta);
//! 4. `write`: persisted, guarded by what the draft read (the file must be as it was; the store's
//!    entries must be at the revisions read), and put in use.

use std::path::Path;

use async_trait::async_trait;
use serde_json::Value;

use super::audit::AuditEntry;
use super::{ControlPlane, Outcome, Prepared, Refusal};
use crate::config::diff::Change;
use crate::config::shared::Entity;
use crate::config::{ConfigErrors, GatewayConfig};

/// What a change may touch.
#[derive(Debug, Clone)]
pub enum Scope {
    /// One tenant's entry.
    Tenant(String),
    /// These entries (a push: its tenants, pools and plans), and whatever else the draft's edit
    /// adds (a renamed copy).
    Entries(Vec<Entity>),
}

/// What a change starts from.
#[derive(Debug)]
pub struct Draft {
    /// In a config file's layout: the whole file, or the entries read from the store.
    pub text: String,
    pub(super) base: Base,
    /// When the change began, for its duration.
    pub started: std::time::Instant,
}

/// What a write is guarded by.
#[derive(Debug)]
pub(super) enum Base {
    /// The file's text as the running table was built from it (`Applied::digest`).
    File,
    /// Each entry read and the revision it was last written at (0: it was not there).
    Store(Vec<(Entity, i64)>),
}

/// A change validated and ready to write.
#[derive(Debug)]
pub struct Checked {
    pub changes: Vec<Change>,
    pub(super) plan: Plan,
}

impl Checked {
    /// A change of nothing but what is written beside the entries (a fleet promotion's record).
    pub(super) fn beside_only() -> Checked {
        Checked {
            changes: Vec::new(),
            plan: Plan::Store {
                writes: Vec::new(),
                needs: Vec::new(),
                fence: None,
            },
        }
    }
}

#[derive(Debug)]
pub(super) enum Plan {
    /// The whole file, loaded and built.
    File(Box<Prepared>),
    /// The entries to write (`None`: delete), and those that must still exist when they are
    /// written (the pools and plans the written tenants name); `fence`: the revision the change
    /// was checked at, when it is valid only if the table has not changed since.
    Store {
        writes: Vec<(Entity, Option<String>)>,
        needs: Vec<Entity>,
        fence: Option<i64>,
    },
}

/// Who a change is made by and what it is, for its audit record.
#[derive(Debug, Clone)]
pub struct Note<'a> {
    pub actor: &'a super::audit::Actor,
    pub action: &'a str,
    pub tenant: Option<&'a str>,
}

/// Keys a change writes beside its entries, in the same transaction: a fleet's promotion state and
/// lock. A file has no such keys: its promotions live in this process (`FileSource` ignores this).
#[derive(Debug, Clone, Default)]
pub struct Beside {
    /// Written as given; `leased` ones are bound to this instance's lease.
    pub puts: Vec<(String, String, bool)>,
    pub deletes: Vec<String>,
    /// Must not exist when the change is written.
    pub absent: Vec<String>,
    /// Must be held by this instance's lease.
    pub held: Vec<String>,
    /// Must still be at this revision (0: absent).
    pub unchanged: Vec<(String, i64)>,
}

impl Beside {
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// Which audit records `audit` returns.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub tenant: Option<String>,
    /// Unix milliseconds.
    pub since: Option<i64>,
    pub limit: Option<usize>,
}

#[async_trait]
pub trait Source: Send + Sync {
    /// `"file"` or `"store"`, for status and messages.
    fn kind(&self) -> &'static str;

    /// The config of this instance's file text with the shared entries the source holds.
    fn load(&self, path: &Path, text: &str) -> Result<GatewayConfig, ConfigErrors>;

    /// Step 1: the TOML of what a change of `scope` may touch.
    async fn draft(&self, plane: &ControlPlane, scope: &Scope) -> Result<Draft, Refusal>;

    /// Step 3: the edited draft validated against the config in use; `None` when it changes
    /// nothing.
    async fn check(
        &self,
        plane: &ControlPlane,
        draft: &Draft,
        edited: String,
    ) -> Result<Option<Checked>, Refusal>;

    /// Step 4: persists the change and puts it in use.
    async fn write(
        &self,
        plane: &ControlPlane,
        draft: Draft,
        checked: Checked,
        note: Note<'_>,
        beside: &Beside,
    ) -> Result<Outcome, Refusal>;

    /// What `scope`'s entries say now, in a config file's layout, without reading anything fresh
    /// (`tenants pull`).
    fn read(&self, plane: &ControlPlane, scope: &Scope) -> String;

    /// Every shared entry as one routing file that `apply` takes unchanged, and the generation it
    /// is of.
    fn export(&self, plane: &ControlPlane) -> (String, u64);

    /// Records entries in the audit log (file: this instance's; store: the fleet's).
    fn record(&self, plane: &ControlPlane, entries: Vec<AuditEntry>);

    /// Audit records, oldest first.
    async fn audit(&self, plane: &ControlPlane, query: &AuditQuery) -> Result<Vec<Value>, Refusal>;
}
