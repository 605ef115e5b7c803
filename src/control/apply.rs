//! `tenantgate apply`: a whole routing file made the fleet's table. The file is validated with an
//! instance's own settings, planned against the store (what it adds, changes and, with `prune`,
//! removes, in `plan`'s terms), and written in one transaction guarded by the revision the plan
//! was made at: if anything in the table changed since, nothing is written.
//!
//! etcd caps a transaction's operations (`--max-txn-ops`, 128 unless raised, mirrored by
//! `[store] max_txn_ops`). A plan larger than that is written in several transactions, chained:
//! each is guarded by the revision of the one before, pools and plans before the tenants that
//! name them, removals of tenants before the pools they used. Instances apply each as it comes;
//! one they refuse on its own (a tenant before its pool) is held until the next makes it valid.

use std::path::Path;

use serde_json::{json, Value};

use super::store::Entries;
use super::Refusal;
use crate::config::diff::{diff, Change};
use crate::config::load::load_routing_file;
use crate::config::shared::{same_value, split, Entity, Setting};
use crate::config::validate::TXN_OVERHEAD;
use crate::config::GatewayConfig;
use crate::store::{keys, Store, StoreError};

/// What applying a routing file would do.
#[derive(Debug)]
pub struct ApplyPlan {
    /// In `plan`'s terms.
    pub changes: Vec<Change>,
    /// Entries to write (`None`: remove), in the order they are written.
    pub writes: Vec<(Entity, Option<String>)>,
    /// Entries of the file the store already holds as they are.
    pub unchanged: usize,
    /// Entries of the store the file does not have, which `prune` would remove.
    pub not_in_file: usize,
    /// The store revision the plan was made against.
    pub revision: i64,
    /// Sections of the file that are each instance's own, which `apply` leaves alone.
    pub instance_sections: Vec<String>,
}

impl ApplyPlan {
    pub fn to_json(&self) -> Value {
        json!({
            "revision": self.revision,
            "changes": self.changes.iter().map(Change::to_json).collect::<Vec<_>>(),
            "writes": self.writes.iter().map(|(e, t)| json!({
                "key": e.key(),
                "action": if t.is_some() { "put" } else { "delete" },
            })).collect::<Vec<_>>(),
            "unchanged": self.unchanged,
            "not_in_file": self.not_in_file,
            "instance_sections": self.instance_sections,
        })
    }
}

/// The instance whose own settings a routing file is validated with.
#[derive(Debug, Clone, Copy)]
pub struct Instance<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    /// How errors name the store's entries (`etcd:/tenantgate/prod/`).
    pub origin: &'a str,
}

/// The routing file to apply.
#[derive(Debug, Clone, Copy)]
pub struct RoutingFile<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    /// Remove what the store has and the file does not.
    pub prune: bool,
}

/// Plans `file` against `entries` (the store at their revision), whose table is `current` (none:
/// the store holds no valid table now), validated with `instance`'s own settings.
pub fn plan_apply(
    current: Option<&GatewayConfig>,
    instance: Instance<'_>,
    entries: &Entries,
    file: RoutingFile<'_>,
) -> Result<ApplyPlan, Refusal> {
    let RoutingFile { path, text, prune } = file;
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        Refusal::BadRequest(format!("{} is not TOML: {e}", path.display()))
    })?;
    let split = split(&doc);
    let named: std::collections::HashSet<&Entity> = split.entries.iter().map(|(e, _)| e).collect();
    let in_file = |e: &Entity| named.contains(e);
    let rest: Vec<(&Entity, &str)> = match prune {
        true => Vec::new(),
        false => entries
            .iter()
            .filter(|(e, _)| !in_file(e))
            .map(|(e, v)| (e, &*v.text))
            .collect(),
    };
    let config = load_routing_file(
        instance.path,
        instance.text,
        path,
        text,
        &rest,
        instance.origin,
    )
    .map_err(Refusal::Invalid)?;
    let mut writes = Vec::new();
    let mut unchanged = 0;
    for (entity, value) in &split.entries {
        match entries.get(entity) {
            Some(e) if same_value(&e.text, value) => unchanged += 1,
            _ => writes.push((entity.clone(), Some(value.clone()))),
        }
    }
    let gone: Vec<Entity> = entries
        .iter()
        .map(|(e, _)| e)
        .filter(|e| !in_file(e))
        .cloned()
        .collect();
    let not_in_file = gone.len();
    if prune {
        writes.extend(gone.into_iter().map(|e| (e, None)));
    }
    writes.sort_by_key(|(e, t)| write_order(e, t.is_some()));
    // The table as it will be, against the one in use (nothing, when the store holds none that
    // is valid): an instance's own settings are the same on both sides.
    let changes = current.map_or_else(Vec::new, |current| diff(current, &config));
    Ok(ApplyPlan {
        changes,
        writes,
        unchanged,
        not_in_file,
        revision: entries.revision,
        instance_sections: split.instance_sections,
    })
}

/// Puts before removals; what others name before what names it (settings, pools and plans before
/// tenants and hosts), and the other way round for removals.
fn write_order(entity: &Entity, put: bool) -> (u8, u8) {
    let rank = match entity {
        Entity::Setting(Setting::Gateway) => 0,
        Entity::Pool(_) => 1,
        Entity::Plan(_) => 2,
        Entity::Setting(_) => 3,
        Entity::Tenant(_) => 4,
        Entity::Host(_) => 5,
    };
    match put {
        true => (0, rank),
        false => (1, 5 - rank),
    }
}

/// Writes a plan made at `plan.revision`: the first transaction only if the table's change fence
/// has not moved since, each next one only if it is still at the revision the one before wrote.
/// Returns the revision of each transaction.
pub async fn write_apply(
    store: &Store,
    max_txn_ops: usize,
    instance: &str,
    actor: &str,
    plan: &ApplyPlan,
) -> Result<Vec<i64>, Refusal> {
    let per_txn = max_txn_ops.saturating_sub(TXN_OVERHEAD).max(1);
    let batches: Vec<&[(Entity, Option<String>)]> = plan.writes.chunks(per_txn).collect();
    let mut revisions = Vec::with_capacity(batches.len());
    let mut guard = store.not_since(keys::CHANGED, plan.revision);
    let now = chrono::Utc::now();
    for (n, batch) in batches.iter().enumerate() {
        let changes: Vec<Value> = batch
            .iter()
            .map(|(e, t)| json!({ "key": e.key(), "action": if t.is_some() { "put" } else { "delete" } }))
            .collect();
        let mut ops: Vec<etcd_client::TxnOp> = batch
            .iter()
            .map(|(e, text)| match text {
                Some(text) => store.put(&e.key(), text.as_str()),
                None => store.delete(&e.key()),
            })
            .collect();
        let summary = if n == 0 {
            plan.changes.iter().map(|c| {
            let (old, new) = c.values();
            json!({ "action": c.action(), "tenant": c.tenant(), "old": old, "new": new, "summary": c.to_string() })
        }).collect::<Vec<_>>()
        } else {
            Vec::new()
        };
        let record = json!({
            "time": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "actor": actor,
            "instance": instance,
            "action": "apply",
            "tenant": Value::Null,
            "result": "applied",
            "reason": Value::Null,
            "transaction": format!("{} of {}", n + 1, batches.len()),
            "writes": changes,
            "changes": summary,
        })
        .to_string();
        let key = keys::audit(now.timestamp_millis(), instance, n as u64);
        ops.push(store.put(&key, record.clone()));
        ops.push(store.put(keys::CHANGED, record));
        let txn = etcd_client::Txn::new().when(vec![guard]).and_then(ops);
        let written = match store.commit(txn).await {
            Ok(Some(revision)) => revision,
            Ok(None) if n == 0 => {
                return Err(Refusal::Conflict(format!(
                    "the fleet's table changed since the plan was made (at revision {}): nothing was written; plan again",
                    plan.revision
                )))
            }
            Ok(None) => {
                return Err(Refusal::Conflict(format!(
                    "the fleet's table was changed by someone else after {} of {} transactions of this apply; the rest was not written: plan again",
                    n,
                    batches.len()
                )))
            }
            Err(e) => {
                // Earlier transactions stay written; a new plan and apply writes the rest.
                let partial = match n {
                    0 => String::new(),
                    _ => format!(
                        "; {n} of {} transactions of this apply were written (revisions {revisions:?}): plan and apply again to write the rest",
                        batches.len()
                    ),
                };
                return Err(match e {
                    StoreError::Refused { reason, .. } => Refusal::StoreRefused(format!(
                        "{reason} (a transaction of {} operations; lower [store] max_txn_ops to what etcd's --max-txn-ops allows){partial}",
                        batch.len() + TXN_OVERHEAD
                    )),
                    e => Refusal::StoreUnavailable(format!("{e}{partial}")),
                });
            }
        };
        guard = store.unchanged(keys::CHANGED, written);
        revisions.push(written);
    }
    Ok(revisions)
}
