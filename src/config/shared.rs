//! Which part of a config the fleet shares and which is each instance's own, and how the shared
//! part is kept in a store: one entry per tenant, pool, reserved host and plan, and one per shared
//! setting, each the TOML of that section exactly as a file writes it.
//!
//! A gateway with `[store]` reads the shared part from the store and its own settings from its
//! file; `apply` cuts a routing file into entries (`split`), `export` puts entries back together
//! into one file (`assemble`) that `apply` takes unchanged.

use std::fmt;

use toml_edit::{DocumentMut, Item, Table};

use super::error::{KeyPath, KeySegment};
use super::model::TenantConfig;
use crate::host::canonical_domain;

/// `[gateway]` keys that are part of the routing table: the fleet's, in the store's `gateway`
/// entry. The others (`http_listen`, `https_listen`, `https_redirect_port`, `threads`,
/// `log_format`, `h2c`, `work_stealing`, `upstream_keepalive`, `access_log`) are each instance's.
pub const SHARED_GATEWAY_KEYS: &[&str] = &[
    "base_domains",
    "tenant_header",
    "tenant_source",
    "api_key_header",
    "switch_tenant_header",
    "https_redirect",
    "hsts",
];

/// Sections the store holds whole (`[limits]` but for `[limits.redis]`, which is how this
/// instance reaches Redis, and `[metrics]` but for `listen`, where this instance serves it).
pub const SHARED_SECTIONS: &[&str] = &[
    "pools",
    "tenants",
    "hosts",
    "plans",
    "jwt",
    "route_rules",
    "limits",
    "metrics",
];

/// A shared setting the store keeps under one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Setting {
    /// The `SHARED_GATEWAY_KEYS` of `[gateway]`.
    Gateway,
    Jwt,
    RouteRules,
    Limits,
    Metrics,
}

impl Setting {
    pub const ALL: [Setting; 5] = [
        Setting::Gateway,
        Setting::Jwt,
        Setting::RouteRules,
        Setting::Limits,
        Setting::Metrics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Setting::Gateway => "gateway",
            Setting::Jwt => "jwt",
            Setting::RouteRules => "route_rules",
            Setting::Limits => "limits",
            Setting::Metrics => "metrics",
        }
    }
}

/// One entry of the shared table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    Tenant(String),
    Pool(String),
    Host(String),
    Plan(String),
    Setting(Setting),
}

impl Entity {
    /// The key below the store's prefix: `tenants/acme`, `hosts/admin.yourapp.test`, `jwt`.
    pub fn key(&self) -> String {
        match self {
            Entity::Tenant(id) => format!("tenants/{id}"),
            Entity::Pool(name) => format!("pools/{name}"),
            Entity::Host(host) => format!("hosts/{host}"),
            Entity::Plan(name) => format!("plans/{name}"),
            Entity::Setting(s) => s.name().to_owned(),
        }
    }

    /// Where the table's entries sit below the store's prefix: each keyed section's folder and each
    /// setting's key (`parse` takes what they hold).
    pub fn stored_under() -> impl Iterator<Item = &'static str> {
        ["tenants/", "pools/", "hosts/", "plans/"]
            .into_iter()
            .chain(Setting::ALL.into_iter().map(Setting::name))
    }

    /// The entity a key below the prefix names; `None` for keys that are not part of the table
    /// (the audit log, locks, counts).
    pub fn parse(key: &str) -> Option<Entity> {
        let keyed = |section: &str| {
            let name = key.strip_prefix(section)?.strip_prefix('/')?;
            (!name.is_empty() && !name.contains('/')).then(|| name.to_owned())
        };
        if let Some(id) = keyed("tenants") {
            return Some(Entity::Tenant(id));
        }
        if let Some(name) = keyed("pools") {
            return Some(Entity::Pool(name));
        }
        if let Some(host) = keyed("hosts") {
            return Some(Entity::Host(host));
        }
        if let Some(name) = keyed("plans") {
            return Some(Entity::Plan(name));
        }
        Setting::ALL
            .into_iter()
            .find(|s| s.name() == key)
            .map(Entity::Setting)
    }

    /// The section a keyed entity sits in (`tenants`), or the setting's own section.
    pub fn section(&self) -> &'static str {
        match self {
            Entity::Tenant(_) => "tenants",
            Entity::Pool(_) => "pools",
            Entity::Host(_) => "hosts",
            Entity::Plan(_) => "plans",
            Entity::Setting(s) => s.name(),
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Entity::Tenant(n) | Entity::Pool(n) | Entity::Host(n) | Entity::Plan(n) => Some(n),
            Entity::Setting(_) => None,
        }
    }

    /// Where the entry's value sits in a config file: errors name keys below it, and a line and
    /// column inside the entry are found below it. `route_rules` is a list: its entry holds the
    /// `[[route_rules]]` tables themselves, so its root is the file's.
    pub fn path(&self) -> KeyPath {
        match self {
            Entity::Setting(Setting::RouteRules) => KeyPath::root(),
            Entity::Setting(s) => KeyPath::root().key(s.name()),
            keyed => KeyPath::root()
                .key(keyed.section())
                .key(keyed.name().unwrap_or_default()),
        }
    }

    /// The entity a config error at `key` is about, when it is one of the shared entries.
    pub fn owning(key: &KeyPath) -> Option<Entity> {
        use KeySegment::Key;
        let segments = key.segments();
        let (Some(Key(section)), second) = (segments.first(), segments.get(1)) else {
            return None;
        };
        let name = match second {
            Some(Key(name)) => Some(name.clone()),
            _ => None,
        };
        Some(match (section.as_str(), name) {
            ("tenants", Some(n)) => Entity::Tenant(n),
            ("pools", Some(n)) => Entity::Pool(n),
            ("hosts", Some(n)) => Entity::Host(n),
            ("plans", Some(n)) => Entity::Plan(n),
            ("gateway", Some(k)) if SHARED_GATEWAY_KEYS.contains(&k.as_str()) => {
                Entity::Setting(Setting::Gateway)
            }
            ("limits", Some(k)) if k == "redis" => return None,
            ("metrics", Some(k)) if k == "listen" => return None,
            ("jwt", _) => Entity::Setting(Setting::Jwt),
            ("route_rules", _) => Entity::Setting(Setting::RouteRules),
            ("limits", _) => Entity::Setting(Setting::Limits),
            ("metrics", _) => Entity::Setting(Setting::Metrics),
            _ => return None,
        })
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// The pools and plan a tenant's entry names (each once, sorted): what must exist beside it, and
/// what a tenant file of it carries.
pub fn named_by(t: &TenantConfig) -> Vec<Entity> {
    let mut named: Vec<Entity> = std::iter::once(t.pool.as_str())
        .chain(t.previous_pool.as_deref())
        .chain(t.canary.as_ref().map(|c| c.pool.as_str()))
        .map(|p| Entity::Pool(p.to_owned()))
        .collect();
    named.extend(t.plan.iter().map(|p| Entity::Plan(p.clone())));
    named.sort();
    named.dedup();
    named
}

/// The shared entries of a routing file, each as the TOML its entry in the store holds, in file
/// order; and the instance's own sections the file also had (which `apply` leaves alone).
#[derive(Debug, Default)]
pub struct Split {
    pub entries: Vec<(Entity, String)>,
    pub instance_sections: Vec<String>,
}

/// Cuts a routing file (already checked) into the store's entries.
pub fn split(doc: &DocumentMut) -> Split {
    let mut out = Split::default();
    for (section, item) in doc.iter() {
        match section {
            "gateway" => {
                let Some(gateway) = item.as_table_like() else {
                    continue;
                };
                let mut shared = Table::new();
                let mut own = false;
                for (key, value) in gateway.iter() {
                    if SHARED_GATEWAY_KEYS.contains(&key) {
                        shared.insert(key, value.clone());
                    } else {
                        own = true;
                    }
                }
                if !shared.is_empty() {
                    out.entries
                        .push((Entity::Setting(Setting::Gateway), body(&shared)));
                }
                if own {
                    out.instance_sections.push("gateway".to_owned());
                }
            }
            "limits" => {
                let Some(mut limits) = owned_table(item) else {
                    continue;
                };
                if limits.remove("redis").is_some() {
                    out.instance_sections.push("limits.redis".to_owned());
                }
                if !limits.is_empty() {
                    out.entries
                        .push((Entity::Setting(Setting::Limits), body(&limits)));
                }
            }
            "metrics" => {
                let Some(mut metrics) = owned_table(item) else {
                    continue;
                };
                if metrics.remove("listen").is_some() {
                    out.instance_sections.push("metrics.listen".to_owned());
                }
                if !metrics.is_empty() {
                    out.entries
                        .push((Entity::Setting(Setting::Metrics), body(&metrics)));
                }
            }
            "jwt" => {
                if let Some(table) = owned_table(item) {
                    out.entries
                        .push((Entity::Setting(Setting::Jwt), body(&table)));
                }
            }
            "route_rules" => {
                let mut root = Table::new();
                root.insert("route_rules", item.clone());
                out.entries
                    .push((Entity::Setting(Setting::RouteRules), body(&root)));
            }
            "tenants" | "pools" | "hosts" | "plans" => {
                let Some(entries) = item.as_table_like() else {
                    continue;
                };
                for (name, entry) in entries.iter() {
                    let Some(table) = owned_table(entry) else {
                        continue;
                    };
                    let name = name.to_owned();
                    let entity = match section {
                        "tenants" => Entity::Tenant(name),
                        "pools" => Entity::Pool(name),
                        // A host's key is its canonical name: two spellings of one host are one
                        // key, not two entries that claim it.
                        "hosts" => Entity::Host(canonical_domain(&name).unwrap_or(name)),
                        _ => Entity::Plan(name),
                    };
                    out.entries.push((entity, body(&table)));
                }
            }
            other => out.instance_sections.push(other.to_owned()),
        }
    }
    out
}

/// The entries as one routing file, sections in the order the README documents them. An entry
/// that is not TOML (the store holds what it was given) is left out: `export` checks first.
pub fn assemble<'a>(entries: impl IntoIterator<Item = (&'a Entity, &'a str)>) -> String {
    let mut entries: Vec<(&Entity, &str)> = entries.into_iter().collect();
    let rank = |e: &Entity| match e {
        Entity::Setting(Setting::Gateway) => 0,
        Entity::Pool(_) => 1,
        Entity::Tenant(_) => 2,
        Entity::Host(_) => 3,
        Entity::Setting(Setting::Jwt) => 4,
        Entity::Setting(Setting::RouteRules) => 5,
        Entity::Setting(Setting::Limits) => 6,
        Entity::Plan(_) => 7,
        Entity::Setting(Setting::Metrics) => 8,
    };
    entries.sort_by(|(a, _), (b, _)| (rank(a), *a).cmp(&(rank(b), *b)));
    let mut doc = DocumentMut::new();
    for (entity, text) in entries {
        let Ok(fragment) = text.parse::<DocumentMut>() else {
            continue;
        };
        let mut root = fragment.as_table().clone();
        unplace(&mut root);
        root.decor_mut().clear();
        match entity {
            Entity::Setting(Setting::RouteRules) => {
                if let Some(rules) = root.remove("route_rules") {
                    doc.insert("route_rules", rules);
                }
            }
            Entity::Setting(s) => {
                doc.insert(s.name(), Item::Table(root));
            }
            keyed => {
                let section = doc.entry(keyed.section()).or_insert_with(|| {
                    let mut t = Table::new();
                    t.set_implicit(true);
                    Item::Table(t)
                });
                if let (Some(section), Some(name)) = (section.as_table_like_mut(), keyed.name()) {
                    section.insert(name, Item::Table(root));
                }
            }
        }
    }
    doc.to_string()
}

/// A table's entries as the text of a document of their own (an entry's value in the store).
fn body(table: &Table) -> String {
    let mut doc = DocumentMut::new();
    for (key, item) in table.iter() {
        doc.insert(key, item.clone());
    }
    let mut text = doc.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// An entry written as `[x.name]` or `name = { ... }`, as a standard table with no place of its own
/// in any document (it is placed where it is inserted).
pub fn owned_table(item: &Item) -> Option<Table> {
    let mut table = match item {
        Item::Table(t) => t.clone(),
        Item::Value(toml_edit::Value::InlineTable(t)) => t.clone().into_table(),
        _ => return None,
    };
    unplace(&mut table);
    table.decor_mut().clear();
    Some(table)
}

/// Forgets the tables' positions in the document they came from, so that they print right after
/// the table they are inserted under.
fn unplace(table: &mut Table) {
    table.set_position(None);
    for (_, item) in table.iter_mut() {
        match item {
            Item::Table(t) => unplace(t),
            Item::ArrayOfTables(list) => {
                for t in list.iter_mut() {
                    unplace(t);
                }
            }
            _ => {}
        }
    }
}

/// Whether two entries' texts say the same, compared as the TOML values they decode to: layout and
/// comments do not count.
pub fn same_value(a: &str, b: &str) -> bool {
    // Equal texts are the common case (an applied file's untouched entries), and need no parsing.
    if a == b {
        return true;
    }
    match (a.parse::<toml::Table>(), b.parse::<toml::Table>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
