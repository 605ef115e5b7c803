//! What a change did or why it was refused, as the admin API, the CLI and `/status` show it.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::edit::{EditError, PersistError};
use super::transfer::{self, ImportPlan, OnConflict};
use crate::config::diff::{diff, Change};
use crate::config::{ConfigErrors, GatewayConfig};

/// What a change did.
#[derive(Debug, Clone)]
pub enum Outcome {
    Applied {
        generation: u64,
        changes: Vec<Change>,
    },
    /// The text changed (comments, layout) or nothing did; the table stays as it is.
    Unchanged { generation: u64 },
}

impl Outcome {
    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Applied {
                generation,
                changes,
            } => json!({
                "result": "applied",
                "generation": generation,
                "changes": changes.iter().map(Change::to_json).collect::<Vec<_>>(),
            }),
            Outcome::Unchanged { generation } => json!({
                "result": "unchanged",
                "generation": generation,
                "changes": [],
            }),
        }
    }
}

/// The changes from `old` to `new`, or the refusal that names those a reload cannot make.
pub(crate) fn reloadable_changes(
    old: &GatewayConfig,
    new: &GatewayConfig,
) -> Result<Vec<Change>, Refusal> {
    let changes = diff(old, new);
    let restart: Vec<Change> = changes
        .iter()
        .filter(|c| c.needs_restart())
        .cloned()
        .collect();
    if restart.is_empty() {
        Ok(changes)
    } else {
        Err(Refusal::NeedsRestart(restart))
    }
}

/// Why a change was not made. Nothing of it was applied or written.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Invalid(ConfigErrors),
    #[error("the change needs a restart or a graceful upgrade, which a reload cannot do: {}", summaries(.0))]
    NeedsRestart(Vec<Change>),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the config file on disk has changed and its changes are not loaded yet (fix or reload it first)")]
    Diverged,
    #[error("{0}")]
    Persist(#[from] PersistError),
    #[error("{0}")]
    Edit(#[from] EditError),
    #[error("no tenant {0:?}")]
    UnknownTenant(String),
    #[error("no pool {0:?}")]
    UnknownPool(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("pool {pool:?} does not pass its health check now: {failures}")]
    Unhealthy { pool: String, failures: String },
    #[error("tenant {tenant:?} has no key {key:?}")]
    UnknownKey { tenant: String, key: String },
    #[error("the store cannot be reached, so no change can be made now (the table in use keeps serving): {0}")]
    StoreUnavailable(String),
    #[error("the store refused the change: {0}")]
    StoreRefused(String),
    #[error("this gateway keeps its routing table in its config file, not in a store: {0}")]
    NotAStore(String),
    #[error("{} of the pushed entries exist here with other contents (--on-conflict skip, overwrite or rename pushes anyway): {}", .0.conflicts(), conflict_list(.0))]
    PushConflict(Box<ImportPlan>),
}

fn conflict_list(plan: &ImportPlan) -> String {
    plan.items
        .iter()
        .filter(|i| matches!(i.action, transfer::Action::Conflict(_)))
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn summaries(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Refusal {
    /// The stable `error` code of the admin API's answer.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Invalid(_) => "invalid_config",
            Refusal::NeedsRestart(_) => "needs_restart",
            Refusal::Read { .. } => "config_unreadable",
            Refusal::Diverged => "config_diverged",
            Refusal::Persist(_) => "persist_failed",
            Refusal::Edit(_) => "config_not_editable",
            Refusal::UnknownTenant(_) => "unknown_tenant",
            Refusal::UnknownPool(_) => "unknown_pool",
            Refusal::UnknownKey { .. } => "unknown_key",
            Refusal::StoreUnavailable(_) => "store_unavailable",
            Refusal::StoreRefused(_) => "store_refused",
            Refusal::NotAStore(_) => "not_a_store",
            Refusal::Conflict(_) => "conflict",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::Unhealthy { .. } => "pool_unhealthy",
            Refusal::PushConflict(_) => "push_conflict",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Refusal::Invalid(_) | Refusal::BadRequest(_) => 422,
            Refusal::UnknownTenant(_) | Refusal::UnknownPool(_) | Refusal::UnknownKey { .. } => 404,
            Refusal::StoreUnavailable(_) => 503,
            Refusal::StoreRefused(_) => 502,
            Refusal::NotAStore(_) => 409,
            Refusal::NeedsRestart(_)
            | Refusal::Diverged
            | Refusal::Conflict(_)
            | Refusal::PushConflict(_) => 409,
            Refusal::Unhealthy { .. } => 503,
            Refusal::Read { .. } | Refusal::Persist(_) | Refusal::Edit(_) => 500,
        }
    }

    /// Every config error as `file:line:column: key: message` (empty for other refusals).
    pub fn config_errors(&self) -> Vec<String> {
        match self {
            Refusal::Invalid(e) => e.lines().collect(),
            _ => Vec::new(),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut body = json!({ "error": self.code(), "message": self.to_string() });
        match self {
            Refusal::Invalid(_) => body["errors"] = json!(self.config_errors()),
            Refusal::NeedsRestart(changes) => {
                body["changes"] = json!(changes.iter().map(Change::to_json).collect::<Vec<_>>())
            }
            Refusal::PushConflict(plan) => body["plan"] = plan.to_json(),
            _ => {}
        }
        body
    }
}

/// The last change attempt, for `GET /status`.
#[derive(Debug, Clone)]
pub struct LastChange {
    pub time: String,
    pub actor: String,
    pub result: &'static str,
    pub generation: u64,
    pub changes: usize,
    pub message: Option<String>,
    pub errors: Vec<String>,
}

impl LastChange {
    pub fn to_json(&self) -> Value {
        json!({
            "time": self.time,
            "actor": self.actor,
            "result": self.result,
            "generation": self.generation,
            "changes": self.changes,
            "message": self.message,
            "errors": self.errors,
        })
    }
}

/// A push of a tenant file (`POST /tenants`).
#[derive(Debug)]
pub struct ImportRequest {
    pub fragment: String,
    /// The file's name as the client knows it, to place errors in it.
    pub source: String,
    pub on_conflict: OnConflict,
    pub with_keys: bool,
    pub dry_run: bool,
    /// The generation the client saw the plan against: a push onto a table that changed since is
    /// refused rather than applied unseen.
    pub expected_generation: Option<u64>,
}

/// What a push did, or for a dry run, would do.
#[derive(Debug)]
pub struct Imported {
    pub plan: ImportPlan,
    /// `None` for a dry run.
    pub outcome: Option<Outcome>,
    /// For a dry run, the changes the push would make to the routing table.
    pub changes: Vec<Change>,
    /// The generation the plan was made against.
    pub generation: u64,
}
