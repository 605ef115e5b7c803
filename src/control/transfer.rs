//! Moving tenants between gateways. `export` cuts a tenant's entry, and the pools and plan it names,
//! out of the running config as a TOML fragment; `plan_import` works out what merging such a
//! fragment into another gateway's config does under a conflict policy, and the text it writes.
//!
//! Both work on the operators' TOML (toml_edit), so what moves is what the operator wrote (comments
//! and layout of the destination are kept), and the merged text goes through the same validation,
//! persistence and audit as any other change.
//!
//! API keys are secrets (hashes, but still): they travel only when asked for. A fragment's tenant
//! without `api_keys` means "keys not carried", so overwriting a tenant keeps the destination's keys.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{json, Value as Json};
use toml_edit::{DocumentMut, Item, Table, TableLike};

use super::Refusal;
use crate::config::model::GatewayConfig;
use crate::config::shared::owned_table;
use crate::tenant::TenantId;

/// What `plan_import` does with an entry that exists in the destination with other contents. An
/// entry that exists with the same contents is never a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Refuse the whole push, naming every conflict.
    Fail,
    /// Keep the destination's entry.
    Skip,
    /// Replace the destination's entry.
    Overwrite,
    /// Write the fragment's entry under a free name (`acme-2`), and point the pushed tenants at it.
    Rename,
}

impl OnConflict {
    pub const ALL: [&'static str; 4] = ["fail", "skip", "overwrite", "rename"];

    pub fn parse(s: &str) -> Option<OnConflict> {
        match s {
            "fail" => Some(OnConflict::Fail),
            "skip" => Some(OnConflict::Skip),
            "overwrite" => Some(OnConflict::Overwrite),
            "rename" => Some(OnConflict::Rename),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tenant,
    Pool,
    Plan,
}

impl Kind {
    fn section(self) -> &'static str {
        match self {
            Kind::Tenant => "tenants",
            Kind::Pool => "pools",
            Kind::Plan => "plans",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tenant => "tenant",
            Kind::Pool => "pool",
            Kind::Plan => "plan",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create,
    /// The destination has it with the same contents.
    Unchanged,
    /// The destination's entry differs and is kept (`skip`); the keys that differ.
    Skip(Vec<String>),
    /// The destination's entry differs and is replaced; the keys that differ.
    Overwrite(Vec<String>),
    /// Written under another name.
    Rename(String),
    /// The destination's entry differs (`fail`); the keys that differ.
    Conflict(Vec<String>),
    /// A pool or plan that no tenant being written uses (its tenant was skipped or is unchanged).
    NotNeeded,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Unchanged => "unchanged",
            Action::Skip(_) => "skip",
            Action::Overwrite(_) => "overwrite",
            Action::Rename(_) => "rename",
            Action::Conflict(_) => "conflict",
            Action::NotNeeded => "not_needed",
        }
    }

    fn writes(&self) -> bool {
        matches!(
            self,
            Action::Create | Action::Overwrite(_) | Action::Rename(_)
        )
    }
}

/// One entry of the fragment and what happens to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanItem {
    pub kind: Kind,
    pub name: String,
    pub action: Action,
    /// What else the operator should know (keys left out, domains dropped, other users of a pool).
    pub notes: Vec<String>,
}

impl PlanItem {
    pub fn to_json(&self) -> Json {
        let mut item = json!({
            "kind": self.kind.as_str(),
            "name": self.name,
            "action": self.action.as_str(),
            "notes": self.notes,
        });
        match &self.action {
            Action::Rename(to) => item["to"] = json!(to),
            Action::Overwrite(keys) | Action::Conflict(keys) | Action::Skip(keys) => {
                item["differs"] = json!(keys)
            }
            _ => {}
        }
        item
    }
}

impl fmt::Display for PlanItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, name) = (self.kind.as_str(), &self.name);
        match &self.action {
            Action::Create => write!(f, "create {kind} {name}"),
            Action::Unchanged => write!(f, "{kind} {name} is already the same"),
            Action::Skip(keys) => write!(
                f,
                "skip {kind} {name} (exists with other contents: {} differ)",
                keys.join(", ")
            ),
            Action::Overwrite(keys) => {
                write!(f, "overwrite {kind} {name} ({} differ)", keys.join(", "))
            }
            Action::Rename(to) => write!(f, "create {kind} {to} (renamed from {name})"),
            Action::Conflict(keys) => write!(
                f,
                "conflict: {kind} {name} exists with other contents ({} differ)",
                keys.join(", ")
            ),
            Action::NotNeeded => write!(f, "leave {kind} {name} (no tenant written uses it)"),
        }
    }
}

/// What a push does, and the config text it writes (`None`: nothing to write).
#[derive(Debug, Clone)]
pub struct ImportPlan {
    pub items: Vec<PlanItem>,
    pub text: Option<String>,
}

impl ImportPlan {
    pub fn conflicts(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i.action, Action::Conflict(_)))
            .count()
    }

    pub fn to_json(&self) -> Json {
        json!(self.items.iter().map(PlanItem::to_json).collect::<Vec<_>>())
    }
}

/// The tenant `id` of the running config (`text`, validated as `config`, in use as `generation`) as
/// a fragment: its entry, every pool it names (its pool, a canary's, the previous one) and its plan.
/// `source` says in the header where it came from.
pub fn export(
    text: &str,
    config: &GatewayConfig,
    generation: u64,
    id: &str,
    with_keys: bool,
    source: &str,
) -> Result<String, Refusal> {
    let tenant = config
        .routing
        .tenant(id)
        .ok_or_else(|| Refusal::UnknownTenant(id.to_owned()))?;
    let doc = parse(text, "the running config")?;
    let mut tenant_entry = entry(&doc, Kind::Tenant, id)
        .ok_or_else(|| Refusal::Conflict(format!("tenant {id} is not a table in the config")))?;
    let keys = tenant.api_keys.len();
    if !with_keys {
        tenant_entry.remove("api_keys");
    }
    let mut out = DocumentMut::new();
    insert(&mut out, Kind::Tenant, id, tenant_entry);
    let pools: BTreeSet<&str> = std::iter::once(tenant.pool.as_str())
        .chain(tenant.previous_pool.as_deref())
        .chain(tenant.canary.as_ref().map(|c| c.pool.as_str()))
        .collect();
    for pool in pools {
        if let Some(table) = entry(&doc, Kind::Pool, pool) {
            insert(&mut out, Kind::Pool, pool, table);
        }
    }
    if let Some(plan) = &tenant.plan {
        if let Some(table) = entry(&doc, Kind::Plan, plan) {
            insert(&mut out, Kind::Plan, plan, table);
        }
    }
    let mut header = format!(
        "# tenant {id}, pulled from {source} (generation {}) at {}.\n",
        generation,
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    header.push_str(&match (with_keys, keys) {
        (_, 0) => "# api keys: the tenant has none.\n".to_owned(),
        (true, n) => format!(
            "# api keys: {n} carried as SHA-256 hashes; keep this file as private as the keys.\n"
        ),
        (false, n) => format!(
            "# api keys: {n} not carried (pull --with-keys carries their hashes); a push keeps the destination's.\n"
        ),
    });
    let certificates = config
        .routing
        .tls
        .certificates
        .iter()
        .filter(|c| c.tenant.as_ref().is_some_and(|t| t.as_str() == id))
        .count();
    if certificates > 0 {
        header.push_str(&format!(
            "# not carried: {certificates} [[certificates]] entr{} for this tenant (files on that machine).\n",
            if certificates == 1 { "y" } else { "ies" }
        ));
    }
    header.push_str("# push it with: tenantgate tenants push FILE --context NAME\n\n");
    Ok(header + &out.to_string())
}

/// What merging `fragment` (already decoded and checked) into `current_text` does under `policy`.
/// Without `with_keys`, the fragment's API keys are left out.
pub fn plan_import(
    current_text: &str,
    current: &GatewayConfig,
    fragment: &DocumentMut,
    policy: OnConflict,
    with_keys: bool,
) -> Result<ImportPlan, Refusal> {
    let mut dest = parse(current_text, "the running config")?;
    let mut items = Vec::new();
    // The tenants first: which pools and plans are needed depends on which tenants are written
    // (or would be, but for a conflict).
    let mut written: Vec<(String, Table)> = Vec::new();
    let mut renames: Vec<(Kind, String, String)> = Vec::new();
    for (id, mut table) in entries(fragment, Kind::Tenant) {
        let mut notes = Vec::new();
        if !with_keys && table.remove("api_keys").is_some() {
            notes.push("its api keys are not pushed (--with-keys pushes them)".to_owned());
        }
        let keys_carried = table.contains_key("api_keys");
        let action = match entry(&dest, Kind::Tenant, &id) {
            None => Action::Create,
            Some(mut existing) => {
                if !keys_carried {
                    existing.remove("api_keys");
                }
                match (differing_keys(&existing, &table), policy) {
                    (keys, _) if keys.is_empty() => Action::Unchanged,
                    (keys, OnConflict::Fail) => Action::Conflict(keys),
                    (keys, OnConflict::Skip) => Action::Skip(keys),
                    (keys, OnConflict::Overwrite) => Action::Overwrite(keys),
                    (_, OnConflict::Rename) => {
                        Action::Rename(free_tenant_id(&dest, fragment, &id, &items)?)
                    }
                }
            }
        };
        if let Action::Rename(_) = action {
            // A key's prefix names its tenant: under another id it would only ever act for this one.
            if table.remove("api_keys").is_some() {
                notes.push(
                    "its api keys are left out: a key names the tenant it was made for".to_owned(),
                );
            }
            let dropped = drop_taken_domains(&mut table, current);
            if !dropped.is_empty() {
                notes.push(format!(
                    "domains already routed to a tenant here are left out: {}",
                    dropped.join(", ")
                ));
            }
        }
        if let Action::Overwrite(_) = action {
            if !keys_carried {
                if let Some(keys) =
                    entry(&dest, Kind::Tenant, &id).and_then(|t| t.get("api_keys").cloned())
                {
                    table.insert("api_keys", keys);
                    notes.push("keeps the api keys it has here".to_owned());
                }
            }
        }
        // A conflicting tenant needs its pools as much as one written: its conflicts are named too.
        if action.writes() || matches!(action, Action::Conflict(_)) {
            let name = match &action {
                Action::Rename(to) => to.clone(),
                _ => id.clone(),
            };
            written.push((name, table));
        }
        items.push(PlanItem {
            kind: Kind::Tenant,
            name: id,
            action,
            notes,
        });
    }

    for kind in [Kind::Pool, Kind::Plan] {
        for (name, table) in entries(fragment, kind) {
            let users: Vec<&str> = written
                .iter()
                .filter(|(_, t)| names_of(t, kind).contains(&name.as_str()))
                .map(|(id, _)| id.as_str())
                .collect();
            let existing = entry(&dest, kind, &name);
            let mut notes = Vec::new();
            let action = match existing {
                _ if users.is_empty() => Action::NotNeeded,
                None => Action::Create,
                Some(existing) => match (differing_keys(&existing, &table), policy) {
                    (keys, _) if keys.is_empty() => Action::Unchanged,
                    (keys, OnConflict::Fail) => Action::Conflict(keys),
                    (keys, OnConflict::Skip) => {
                        notes.push(format!(
                            "{} uses the {} that is here",
                            users.join(", "),
                            kind.as_str()
                        ));
                        Action::Skip(keys)
                    }
                    // Other tenants here are served by it: overwriting it would move them onto
                    // the source's upstreams. Only what the pushed tenants alone use is replaced.
                    (keys, OnConflict::Overwrite) => {
                        match other_users(current, kind, &name, &users) {
                            0 => Action::Overwrite(keys),
                            others => {
                                notes.push(format!(
                                    "kept: {others} other tenant{} here use{} it (rename pushes the source's as a copy)",
                                    if others == 1 { "" } else { "s" },
                                    if others == 1 { "s" } else { "" }
                                ));
                                Action::Skip(keys)
                            }
                        }
                    }
                    (_, OnConflict::Rename) => {
                        let to = free_name(&dest, fragment, kind, &name, &items);
                        renames.push((kind, name.clone(), to.clone()));
                        Action::Rename(to)
                    }
                },
            };
            if action.writes() {
                let target = match &action {
                    Action::Rename(to) => to.as_str(),
                    _ => name.as_str(),
                };
                put(&mut dest, kind, target, table);
            }
            items.push(PlanItem {
                kind,
                name,
                action,
                notes,
            });
        }
    }

    if items
        .iter()
        .any(|i| matches!(i.action, Action::Conflict(_)))
    {
        return Ok(ImportPlan { items, text: None });
    }
    let changes = items.iter().any(|i| i.action.writes());
    // No conflicts are left, so every tenant in `written` is written.
    for (id, mut table) in written {
        apply_renames(&mut table, &renames);
        put(&mut dest, Kind::Tenant, &id, table);
    }
    Ok(ImportPlan {
        items,
        text: changes.then(|| dest.to_string()),
    })
}

fn parse(text: &str, what: &str) -> Result<DocumentMut, Refusal> {
    text.parse()
        .map_err(|e: toml_edit::TomlError| Refusal::BadRequest(format!("{what} is not TOML: {e}")))
}

/// The entries of one section of `doc`, as owned standard tables, in file order.
fn entries(doc: &DocumentMut, kind: Kind) -> Vec<(String, Table)> {
    let Some(section) = doc.get(kind.section()).and_then(Item::as_table_like) else {
        return Vec::new();
    };
    section
        .iter()
        .filter_map(|(name, item)| Some((name.to_owned(), owned_table(item)?)))
        .collect()
}

fn entry(doc: &DocumentMut, kind: Kind, name: &str) -> Option<Table> {
    owned_table(doc.get(kind.section())?.get(name)?)
}

/// The `[tenants]`, `[pools]` or `[plans]` section, made (implicit: only its entries' headers are
/// written) when the document has none.
fn section_mut(doc: &mut DocumentMut, kind: Kind) -> Option<&mut dyn TableLike> {
    doc.entry(kind.section())
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_like_mut()
}

/// Adds an entry to a fresh document (the fragment).
fn insert(doc: &mut DocumentMut, kind: Kind, name: &str, table: Table) {
    if let Some(section) = section_mut(doc, kind) {
        section.insert(name, Item::Table(table));
    }
}

/// Writes an entry into the destination: in place of the one it replaces (in its style, inline or
/// not), or after the section's last entry.
fn put(doc: &mut DocumentMut, kind: Kind, name: &str, mut table: Table) {
    let Some(section) = section_mut(doc, kind) else {
        return;
    };
    match section.get_mut(name) {
        Some(Item::Table(old)) => {
            table.set_position(old.position());
            *table.decor_mut() = old.decor().clone();
            *old = table;
        }
        Some(Item::Value(toml_edit::Value::InlineTable(old))) => {
            let mut inline = table.into_inline_table();
            *inline.decor_mut() = old.decor().clone();
            *old = inline;
        }
        _ => {
            section.insert(name, Item::Table(table));
        }
    }
}

/// The top-level keys whose values differ between two entries, compared as the TOML values they
/// decode to: layout, comments and inline or table form do not count; sub-tables and arrays of
/// tables do.
fn differing_keys(old: &Table, new: &Table) -> Vec<String> {
    let (Some(old), Some(new)) = (as_value(old), as_value(new)) else {
        // Cannot happen for entries parsed from TOML; if it did, every key counts as changed.
        return old
            .iter()
            .chain(new.iter())
            .map(|(k, _)| k.to_owned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
    };
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

/// The entry as a value: printed as the one entry of a document (a table's own `Display` leaves
/// out its sub-tables), then parsed back.
fn as_value(table: &Table) -> Option<toml::Table> {
    let mut doc = DocumentMut::new();
    doc.insert("entry", Item::Table(table.clone()));
    let mut parsed: toml::Table = toml::from_str(&doc.to_string()).ok()?;
    match parsed.remove("entry")? {
        toml::Value::Table(t) => Some(t),
        _ => None,
    }
}

/// The pool (or plan) names a tenant entry refers to.
fn names_of(tenant: &Table, kind: Kind) -> Vec<&str> {
    match kind {
        Kind::Pool => ["pool", "previous_pool"]
            .iter()
            .filter_map(|k| tenant.get(k).and_then(Item::as_str))
            .chain(
                tenant
                    .get("canary")
                    .and_then(|c| c.get("pool"))
                    .and_then(Item::as_str),
            )
            .collect(),
        Kind::Plan => tenant
            .get("plan")
            .and_then(Item::as_str)
            .into_iter()
            .collect(),
        Kind::Tenant => Vec::new(),
    }
}

/// Points a tenant's references at the new names of renamed pools and plans. Each reference is
/// looked up once, by the name the file gave it, so renames cannot chain.
fn apply_renames(tenant: &mut Table, renames: &[(Kind, String, String)]) {
    let rename = |kind: Kind, item: Option<&mut Item>| {
        let Some(value) = item.and_then(Item::as_value_mut) else {
            return;
        };
        let to = renames
            .iter()
            .find(|(k, from, _)| *k == kind && value.as_str() == Some(from.as_str()))
            .map(|(_, _, to)| to.as_str());
        if let Some(to) = to {
            let decor = value.decor().clone();
            *value = toml_edit::Value::from(to);
            *value.decor_mut() = decor;
        }
    };
    rename(Kind::Pool, tenant.get_mut("pool"));
    rename(Kind::Pool, tenant.get_mut("previous_pool"));
    if let Some(canary) = tenant.get_mut("canary").and_then(Item::as_table_like_mut) {
        rename(Kind::Pool, canary.get_mut("pool"));
    }
    rename(Kind::Plan, tenant.get_mut("plan"));
}

/// Tenants of the destination, other than those being pushed, that use the pool or plan.
fn other_users(current: &GatewayConfig, kind: Kind, name: &str, pushed: &[&str]) -> usize {
    current
        .routing
        .tenants
        .iter()
        .filter(|t| !pushed.contains(&t.id.as_str()))
        .filter(|t| match kind {
            Kind::Pool => {
                t.pool == name
                    || t.previous_pool.as_deref() == Some(name)
                    || t.canary.as_ref().is_some_and(|c| c.pool == name)
            }
            Kind::Plan => t.plan.as_deref() == Some(name),
            Kind::Tenant => false,
        })
        .count()
}

/// `name-2`, `name-3`, ...: the first name that the destination, the file and this plan's other
/// renames all leave free.
fn free_name(
    dest: &DocumentMut,
    fragment: &DocumentMut,
    kind: Kind,
    name: &str,
    planned: &[PlanItem],
) -> String {
    let taken = |candidate: &str| {
        entry(dest, kind, candidate).is_some()
            || entry(fragment, kind, candidate).is_some()
            || planned
                .iter()
                .any(|i| i.kind == kind && i.action == Action::Rename(candidate.to_owned()))
    };
    let mut n = 2;
    loop {
        let candidate = format!("{name}-{n}");
        if !taken(&candidate) {
            return candidate;
        }
        n += 1;
    }
}

/// A free tenant id that is also a valid one (a long id leaves no room for the suffix).
fn free_tenant_id(
    dest: &DocumentMut,
    fragment: &DocumentMut,
    id: &str,
    planned: &[PlanItem],
) -> Result<String, Refusal> {
    let candidate = free_name(dest, fragment, Kind::Tenant, id, planned);
    TenantId::parse(&candidate)
        .map(|_| candidate.clone())
        .map_err(|e| {
            Refusal::BadRequest(format!(
                "tenant {id} cannot be renamed to {candidate}: the new id {e}"
            ))
        })
}

/// Removes from a renamed tenant the custom domains the destination already routes to a tenant.
fn drop_taken_domains(tenant: &mut Table, current: &GatewayConfig) -> Vec<String> {
    let taken = |domain: &str| {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        current
            .routing
            .tenants
            .iter()
            .any(|t| t.domains.contains(&domain))
    };
    let Some(list) = tenant.get_mut("domains").and_then(Item::as_array_mut) else {
        return Vec::new();
    };
    let dropped: Vec<String> = list
        .iter()
        .filter_map(|v| v.as_str())
        .filter(|d| taken(d))
        .map(str::to_owned)
        .collect();
    list.retain(|v| !v.as_str().is_some_and(|d| dropped.iter().any(|x| x == d)));
    dropped
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_str;

    const DEST: &str = r#"
[gateway]
http_listen = "127.0.0.1:8080"
base_domains = ["yourapp.test"]

[admin]
listen = "127.0.0.1:9900"

[pools.shared]
upstreams = ["127.0.0.1:9001"]

# The dedicated pool of globex.
[pools.globex-dedicated]
upstreams = ["127.0.0.1:9003"]

[plans.free]
rate_limit = { requests_per_second = 20 }

[tenants.globex]
pool = "globex-dedicated"
domains = ["shop.globex.test"]
"#;

    /// What `pull` makes of acme on a gateway where it has its own pool, a plan and a key.
    const SOURCE: &str = r#"
[gateway]
http_listen = "127.0.0.1:8080"
base_domains = ["yourapp.test"]

[admin]
listen = "127.0.0.1:9900"

[pools.shared]
upstreams = ["127.0.0.1:9001"]

[pools.acme-dedicated]
upstreams = ["127.0.0.1:9002"]   # acme's own

[plans.free]
rate_limit = { requests_per_second = 20 }

[tenants.acme]
name = "Acme"
pool = "acme-dedicated"
previous_pool = "shared"
plan = "free"
domains = ["shop.acme.test"]

[[tenants.acme.api_keys]]
id = "k1"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
created = "2026-01-01T00:00:00Z"

[tenants.initech]
pool = "shared"
"#;

    fn config(text: &str) -> GatewayConfig {
        load_str(Path::new("g.toml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn pulled(with_keys: bool) -> DocumentMut {
        export(SOURCE, &config(SOURCE), 7, "acme", with_keys, "prod")
            .expect("export")
            .parse()
            .expect("TOML")
    }

    fn push(dest: &str, fragment: &DocumentMut, policy: OnConflict) -> ImportPlan {
        plan_import(dest, &config(dest), fragment, policy, false).expect("plan")
    }

    fn actions(plan: &ImportPlan) -> Vec<String> {
        plan.items.iter().map(|i| i.to_string()).collect()
    }

    #[test]
    fn a_pull_carries_the_tenant_its_pools_and_plan_and_keys_only_when_asked() {
        let text = export(SOURCE, &config(SOURCE), 7, "acme", false, "prod").expect("export");
        assert!(text.contains("generation 7"), "{text}");
        assert!(text.contains("1 not carried"), "{text}");
        let doc: DocumentMut = text.parse().expect("TOML");
        assert_eq!(
            doc["tenants"]["acme"]["pool"].as_str(),
            Some("acme-dedicated")
        );
        assert!(doc["tenants"]["acme"].get("api_keys").is_none());
        assert!(doc["tenants"].get("initech").is_none());
        let pools: Vec<&str> = doc["pools"]
            .as_table()
            .expect("pools")
            .iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(pools, ["acme-dedicated", "shared"]);
        assert!(doc["plans"].get("free").is_some());
        // The source's comments on the entries travel with them.
        assert!(text.contains("# acme's own"), "{text}");
        assert!(pulled(true)["tenants"]["acme"].get("api_keys").is_some());
        // What pull writes is what push reads.
        crate::config::load::check_fragment(Path::new("acme.toml"), &text)
            .expect("a valid tenant file");
    }

    #[test]
    fn pushing_to_a_gateway_without_the_tenant_creates_what_is_missing() {
        let plan = push(DEST, &pulled(false), OnConflict::Fail);
        assert_eq!(
            actions(&plan),
            [
                "create tenant acme",
                "create pool acme-dedicated",
                "pool shared is already the same",
                "plan free is already the same",
            ]
        );
        let text = plan.text.expect("a new text");
        let merged = config(&text);
        let acme = merged.routing.tenant("acme").expect("acme");
        assert_eq!(acme.pool, "acme-dedicated");
        assert!(
            acme.api_keys.is_empty(),
            "keys are not pushed without --with-keys"
        );
        // The destination's own text is kept around the new entries.
        assert!(text.contains("# The dedicated pool of globex."), "{text}");
        assert!(
            text.find("[tenants.acme]") > text.find("[tenants.globex]"),
            "{text}"
        );
    }

    #[test]
    fn pushing_the_same_file_twice_changes_nothing_the_second_time() {
        let once = push(DEST, &pulled(false), OnConflict::Fail)
            .text
            .expect("text");
        let twice = push(&once, &pulled(false), OnConflict::Fail);
        assert!(twice.text.is_none(), "{:?}", actions(&twice));
        assert!(twice
            .items
            .iter()
            .all(|i| i.action == Action::Unchanged || i.action == Action::NotNeeded));
    }

    /// The destination has acme on the shared pool and an acme-dedicated pool of its own.
    fn dest_with_acme() -> String {
        format!(
            "{DEST}\n[pools.acme-dedicated]\nupstreams = [\"127.0.0.1:9999\"]\n\n[tenants.acme]\npool = \"shared\"\ndomains = [\"shop.acme.test\"]\napi_keys = [{{ id = \"here\", sha256 = \"1111111111111111111111111111111111111111111111111111111111111111\", created = \"2026-02-01T00:00:00Z\" }}]\n"
        )
    }

    #[test]
    fn conflicts_under_fail_are_all_named_and_nothing_is_written() {
        let plan = push(&dest_with_acme(), &pulled(false), OnConflict::Fail);
        assert!(plan.text.is_none());
        assert_eq!(plan.conflicts(), 2, "{:?}", actions(&plan));
        let tenant = &plan.items[0];
        assert_eq!(
            tenant.action,
            Action::Conflict(vec![
                "name".into(),
                "plan".into(),
                "pool".into(),
                "previous_pool".into()
            ])
        );
    }

    #[test]
    fn skip_keeps_the_destinations_entries() {
        let plan = push(&dest_with_acme(), &pulled(false), OnConflict::Skip);
        assert!(
            matches!(&plan.items[0].action, Action::Skip(keys) if keys.contains(&"pool".to_owned()))
        );
        // Nothing pushed uses the pools any more.
        assert!(
            plan.items[1..]
                .iter()
                .all(|i| i.action == Action::NotNeeded),
            "{:?}",
            actions(&plan)
        );
        assert!(plan.text.is_none());
    }

    #[test]
    fn overwrite_replaces_entries_in_place_and_keeps_keys_that_were_not_carried() {
        let dest = dest_with_acme();
        let plan = push(&dest, &pulled(false), OnConflict::Overwrite);
        assert!(matches!(plan.items[0].action, Action::Overwrite(_)));
        assert!(plan.items[0]
            .notes
            .iter()
            .any(|n| n.contains("keeps the api keys")));
        let text = plan.text.expect("text");
        let merged = config(&text);
        let acme = merged.routing.tenant("acme").expect("acme");
        assert_eq!(acme.pool, "acme-dedicated");
        assert_eq!(acme.api_keys.len(), 1);
        assert_eq!(acme.api_keys[0].id, "here");
        let pool = merged
            .routing
            .pools
            .iter()
            .find(|p| p.name == "acme-dedicated")
            .expect("pool");
        assert_eq!(pool.upstreams[0].label, "127.0.0.1:9002");
        // In place: the tenant is still after globex, once.
        assert_eq!(text.matches("[tenants.acme]").count(), 1, "{text}");

        // With keys carried and pushed, the file's keys replace the destination's.
        let with_keys = plan_import(
            &dest,
            &config(&dest),
            &pulled(true),
            OnConflict::Overwrite,
            true,
        )
        .expect("plan");
        let merged = config(&with_keys.text.expect("text"));
        assert_eq!(
            merged.routing.tenant("acme").expect("acme").api_keys[0].id,
            "k1"
        );
    }

    #[test]
    fn rename_writes_copies_under_free_names_and_points_the_copy_at_them() {
        let plan = push(&dest_with_acme(), &pulled(false), OnConflict::Rename);
        assert_eq!(plan.items[0].action, Action::Rename("acme-2".into()));
        assert!(
            plan.items[0]
                .notes
                .iter()
                .any(|n| n.contains("shop.acme.test")),
            "the domain acme has here is left out of the copy: {:?}",
            plan.items[0].notes
        );
        let pool = plan
            .items
            .iter()
            .find(|i| i.name == "acme-dedicated")
            .expect("pool");
        assert_eq!(pool.action, Action::Rename("acme-dedicated-2".into()));
        let merged = config(&plan.text.expect("text"));
        let copy = merged.routing.tenant("acme-2").expect("the copy");
        assert_eq!(copy.pool, "acme-dedicated-2");
        assert!(copy.domains.is_empty());
        let original = merged.routing.tenant("acme").expect("the original");
        assert_eq!(original.pool, "shared");
    }

    #[test]
    fn an_inline_tenant_is_overwritten_inline() {
        let dest = DEST.replace(
            "[tenants.globex]\npool = \"globex-dedicated\"\ndomains = [\"shop.globex.test\"]\n",
            "[tenants]\nglobex = { pool = \"globex-dedicated\" }\nacme = { pool = \"shared\" }\n",
        );
        let plan = push(&dest, &pulled(false), OnConflict::Overwrite);
        let text = plan.text.expect("text");
        assert!(text.contains("acme = {"), "{text}");
        assert_eq!(
            config(&text).routing.tenant("acme").expect("acme").pool,
            "acme-dedicated"
        );
    }

    #[test]
    fn differences_inside_sub_tables_count_and_layout_does_not() {
        let table = |text: &str| -> Table {
            let doc: DocumentMut = text.parse().expect("TOML");
            entry(&doc, Kind::Pool, "p").expect("pool p")
        };
        let base = table(
            "[pools.p]\nupstreams = [\"127.0.0.1:1\"]\n[pools.p.health_check]\npath = \"/a\"\n",
        );
        let other = table(
            "[pools.p]\nupstreams = [\"127.0.0.1:1\"]\n[pools.p.health_check]\npath = \"/b\"\n",
        );
        assert_eq!(differing_keys(&base, &other), ["health_check"]);
        let inline = table("[pools]\np = { upstreams = [\"127.0.0.1:1\"], health_check = { path = \"/a\" } }  # same\n");
        assert!(differing_keys(&base, &inline).is_empty());

        // Keys written as [[tenants.x.api_keys]], as pull writes them: a rotated key differs.
        let rotated = SOURCE.replace("id = \"k1\"", "id = \"k2\"");
        let fragment: DocumentMut = export(&rotated, &config(&rotated), 1, "acme", true, "prod")
            .expect("export")
            .parse()
            .expect("TOML");
        let once = push(DEST, &pulled(true), OnConflict::Fail)
            .text
            .expect("text");
        let plan =
            plan_import(&once, &config(&once), &fragment, OnConflict::Fail, true).expect("plan");
        assert_eq!(
            plan.items[0].action,
            Action::Conflict(vec!["api_keys".into()])
        );
    }

    #[test]
    fn overwrite_keeps_a_pool_that_other_tenants_here_use() {
        let dest = DEST.replace(
            "[pools.shared]\nupstreams = [\"127.0.0.1:9001\"]",
            "[pools.shared]\nupstreams = [\"127.0.0.1:7001\"]",
        ) + "\n[tenants.initech]\npool = \"shared\"\n";
        let plan = push(&dest, &pulled(false), OnConflict::Overwrite);
        let shared = plan
            .items
            .iter()
            .find(|i| i.name == "shared")
            .expect("shared");
        assert!(matches!(shared.action, Action::Skip(_)), "{shared:?}");
        assert!(
            shared.notes[0].contains("1 other tenant here uses it"),
            "{shared:?}"
        );
        let merged = config(&plan.text.expect("text"));
        let pool = merged
            .routing
            .pools
            .iter()
            .find(|p| p.name == "shared")
            .expect("pool");
        assert_eq!(
            pool.upstreams[0].label, "127.0.0.1:7001",
            "initech's upstreams are untouched"
        );
    }

    #[test]
    fn renames_never_chain_and_a_renamed_copy_carries_no_keys() {
        // The file has pools x and x-2; here both exist with other contents.
        let fragment: DocumentMut = "[tenants.acme]\npool = \"x\"\nprevious_pool = \"x-2\"\napi_keys = [{ id = \"k1\", sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\", created = \"2026-01-01T00:00:00Z\" }]\n\n[pools.x]\nupstreams = [\"127.0.0.1:2001\"]\n\n[pools.x-2]\nupstreams = [\"127.0.0.1:2002\"]\n"
            .parse()
            .expect("TOML");
        let dest = format!(
            "{DEST}\n[pools.x]\nupstreams = [\"127.0.0.1:3001\"]\n\n[pools.x-2]\nupstreams = [\"127.0.0.1:3002\"]\n\n[tenants.acme]\npool = \"x\"\n"
        );
        let plan =
            plan_import(&dest, &config(&dest), &fragment, OnConflict::Rename, true).expect("plan");
        let to = |name: &str| {
            plan.items
                .iter()
                .find(|i| i.name == name)
                .map(|i| i.action.clone())
        };
        assert_eq!(to("acme"), Some(Action::Rename("acme-2".into())));
        assert_eq!(to("x"), Some(Action::Rename("x-3".into())));
        assert_eq!(to("x-2"), Some(Action::Rename("x-2-2".into())));
        let merged = config(&plan.text.expect("text"));
        let copy = merged.routing.tenant("acme-2").expect("copy");
        assert_eq!(copy.pool, "x-3");
        assert_eq!(copy.previous_pool.as_deref(), Some("x-2-2"));
        assert!(copy.api_keys.is_empty(), "{:?}", plan.items[0].notes);
        let pool = |name: &str| {
            merged
                .routing
                .pools
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.upstreams[0].label.clone())
        };
        assert_eq!(pool("x-3").as_deref(), Some("127.0.0.1:2001"));
        assert_eq!(pool("x-2-2").as_deref(), Some("127.0.0.1:2002"));
        assert_eq!(pool("x").as_deref(), Some("127.0.0.1:3001"));
    }
}
