//! A change of some entries of a validated config (tenants, pools, reserved hosts, plans), checked
//! by the rules a whole file is checked by, at the cost of what it touches: the changed entries are
//! validated as in a file, and what a file's validation would check across entries (references,
//! host claims, key hashes, certificates, listed tenants) is checked against the rest of the config
//! as it is (`Claimed`, the running routing table, answers for host names).
//!
//! A change of a shared setting (`[gateway]`, `[jwt]`, `[limits]`, ...) can change every tenant:
//! the control plane validates the whole config for those.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::{Claims, Rest, Validator};
use crate::config::diff::{host_changes, pool_changes, tenant_changes, Change};
use crate::config::error::{ConfigError, ConfigErrors, KeyPath};
use crate::config::file::{Entry, FileConfig};
use crate::config::load::{decode_store, place_errors};
use crate::config::model::{GatewayConfig, HostConfig, PoolConfig, TenantConfig};
use crate::config::shared::{Entity, Setting};
use crate::host::{canonical_domain, label_below};

use super::Claimed;

/// One entry's new text, or `None` when the change removes it.
#[derive(Debug, Clone, Copy)]
pub struct EntryChange<'a> {
    pub entity: &'a Entity,
    pub text: Option<&'a str>,
}

/// The entries as they are with the change made, for what a change needs besides what it
/// changes: the plans and `[limits]` every tenant's limits come from, and the text of tenants on a
/// changed plan.
pub trait Mirror {
    fn text(&self, entity: &Entity) -> Option<&str>;
    /// Every plan entry, name and text.
    fn plans(&self) -> Vec<(&str, &str)>;
}

/// A validated change: the config with it made, what it touches, and what it changes in
/// operators' terms.
#[derive(Debug)]
pub struct Delta {
    pub config: GatewayConfig,
    pub tenants: Vec<String>,
    pub pools: Vec<String>,
    pub hosts: bool,
    pub changes: Vec<Change>,
}

/// Checks `changes` (of tenants, pools, hosts and plans; settings need a whole check) against
/// `current`, whose routing table answers `claimed`. `text` is this instance's file, `origin`
/// names the store in errors.
pub fn validate_delta(
    current: &GatewayConfig,
    text: &str,
    claimed: &dyn Claimed,
    mirror: &dyn Mirror,
    changes: &[EntryChange<'_>],
    origin: &str,
) -> Result<Delta, ConfigErrors> {
    let routing = &current.routing;
    let folder = current.path.parent().unwrap_or_else(|| Path::new(""));
    let mut v = Validator {
        folder: folder.to_path_buf(),
        ..Validator::default()
    };
    let mut found = Vec::new();

    let removed = |kind: fn(&Entity) -> Option<&str>| -> HashSet<&str> {
        changes
            .iter()
            .filter(|c| c.text.is_none())
            .filter_map(|c| kind(c.entity))
            .collect()
    };
    let removed_tenants = removed(|e| match e {
        Entity::Tenant(id) => Some(id),
        _ => None,
    });
    let removed_pools = removed(|e| match e {
        Entity::Pool(n) => Some(n),
        _ => None,
    });
    let removed_hosts = removed(|e| match e {
        Entity::Host(h) => Some(h),
        _ => None,
    });
    let changed_plans: HashSet<&str> = changes
        .iter()
        .filter_map(|c| match c.entity {
            Entity::Plan(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();

    // The changed entries, and the tenants on a changed plan (their limits may change).
    let mut written: Vec<(&Entity, &str)> = changes
        .iter()
        .filter(|c| !matches!(c.entity, Entity::Setting(_) | Entity::Plan(_)))
        .filter_map(|c| Some((c.entity, c.text?)))
        .collect();
    let on_changed_plans: Vec<Entity> = if changed_plans.is_empty() {
        Vec::new()
    } else {
        routing
            .tenants
            .iter()
            .filter(|t| t.plan.as_deref().is_some_and(|p| changed_plans.contains(p)))
            .map(|t| Entity::Tenant(t.id.to_string()))
            .filter(|e| !changes.iter().any(|c| c.entity == e))
            .collect()
    };
    for entity in &on_changed_plans {
        if let Some(text) = mirror.text(entity) {
            written.push((entity, text));
        }
    }
    let decoded = decode_store(&written, origin, &mut found);

    // Limits come from `[limits]` and every plan, as they are with the change made.
    let limits = Entity::Setting(Setting::Limits);
    let plans: Vec<(Entity, &str)> = mirror
        .plans()
        .into_iter()
        .map(|(name, text)| (Entity::Plan(name.to_owned()), text))
        .chain(mirror.text(&limits).map(|t| (limits.clone(), t)))
        .collect();
    let plan_refs: Vec<(&Entity, &str)> = plans.iter().map(|(e, t)| (e, *t)).collect();
    let layered = decode_store(&plan_refs, origin, &mut found);
    let layers = v.limit_layers(&layered.limits, &layered.plans);

    let pool_names: super::PoolNames = routing
        .pools
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| !removed_pools.contains(n))
        .chain(decoded.pools.iter().map(|e| e.name.as_str()))
        .collect();
    let pools: Vec<PoolConfig> = decoded
        .pools
        .iter()
        .filter_map(|e| Some((e.name.as_str(), e.value.as_ref()?)))
        .filter_map(|(name, pool)| v.pool(name, pool, folder))
        .collect();

    let tenant_names = |file: &FileConfig| -> Vec<String> {
        file.tenants.iter().map(|e| e.name.clone()).collect()
    };
    let redefined = tenant_names(&decoded);
    let mut changed_tenants: HashSet<&str, super::FastHash> =
        redefined.iter().map(String::as_str).collect();
    changed_tenants.extend(removed_tenants.iter().copied());
    let mut released: HashSet<String, super::FastHash> = HashSet::default();
    for id in &changed_tenants {
        if let Some(t) = routing.tenant(id) {
            released.extend(t.domains.iter().cloned());
        }
    }
    let changed_hosts: Vec<&str> = decoded
        .hosts
        .iter()
        .map(|e| e.name.as_str())
        .chain(removed_hosts.iter().copied())
        .collect();
    for name in &changed_hosts {
        // Only what the entry held itself: a new reserved host frees nobody's claim.
        if let Some(host) = canonical_domain(name)
            .ok()
            .filter(|h| routing.hosts.iter().any(|x| x.host == *h))
        {
            released.insert(host);
        }
    }
    let mut claims = Claims {
        by_host: HashMap::default(),
        base_domains: &routing.base_domains,
        tenant_ids: redefined.iter().map(String::as_str).collect(),
        rest: Some(Rest {
            claimed,
            released,
            changed_tenants: changed_tenants.clone(),
        }),
    };
    let hosts: Vec<HostConfig> = decoded
        .hosts
        .iter()
        .filter_map(|e| Some((e.name.as_str(), e.value.as_ref()?)))
        .filter_map(|(name, host)| v.host(name, host, &pool_names, &mut claims))
        .collect();
    let tenants: Vec<TenantConfig> = decoded
        .tenants
        .iter()
        .filter_map(|e| Some((e.name.as_str(), e.value.as_ref()?)))
        .filter_map(|(id, tenant)| v.tenant(id, tenant, &pool_names, &mut claims, &layers))
        .collect();
    new_tenants_subdomains(&mut v, &decoded.tenants, claimed, &claims);

    let unchanged = || {
        routing
            .tenants
            .iter()
            .filter(|t| !changed_tenants.contains(t.id.as_str()))
    };
    if tenants.iter().any(|t| !t.api_keys.is_empty()) {
        let mut owner: HashMap<[u8; 32], &str, super::FastHash> = HashMap::default();
        for t in unchanged() {
            for key in &t.api_keys {
                owner.insert(key.sha256, t.id.as_str());
            }
        }
        v.api_keys_unique(&mut owner, &tenants);
    }
    if !removed_pools.is_empty() {
        removed_pools_unused(&mut v, &removed_pools, unchanged(), routing, &changed_hosts);
    }
    if current.routing.identity.jwt.is_none() {
        for t in tenants.iter().filter(|t| !t.route_rules.is_empty()) {
            v.errors.push(ConfigError::at_key(
                KeyPath::root()
                    .key("tenants")
                    .key(t.id.as_str())
                    .key("route_rules"),
                super::identity::ROUTE_RULES_WITHOUT_JWT,
            ));
        }
    }
    removed_tenants_unreferenced(&mut v, &removed_tenants, current);
    certificates_still_owned(&mut v, &tenants, current);
    if current.gateway.https_listen.is_none() && current.routing.tls.redirect_port.is_none() {
        for t in tenants.iter().filter(|t| t.https_redirect == Some(true)) {
            v.errors.push(ConfigError::at_value(
                KeyPath::root()
                    .key("tenants")
                    .key(t.id.as_str())
                    .key("https_redirect"),
                "`https_redirect` sends clients to HTTPS, but this instance has no https_listen (or https_redirect_port) to send them to",
            ));
        }
    }

    if !found.is_empty() || !v.errors.is_empty() {
        return Err(place_errors(
            &current.path,
            text,
            origin,
            |e: &Entity| mirror.text(e),
            found,
            v.errors,
        ));
    }

    let mut next = current.clone();
    let mut out = Vec::new();
    let mut touched_pools = Vec::new();
    for name in &removed_pools {
        pool_changes(
            routing.pools.iter().find(|p| p.name == *name),
            None,
            &mut out,
        );
        touched_pools.push((*name).to_owned());
    }
    next.routing
        .pools
        .retain(|p| !removed_pools.contains(p.name.as_str()));
    for pool in pools {
        let old = routing.pools.iter().find(|p| p.name == pool.name);
        pool_changes(old, Some(&pool), &mut out);
        touched_pools.push(pool.name.clone());
        match next.routing.pools.iter_mut().find(|p| p.name == pool.name) {
            Some(slot) => *slot = pool,
            None => next.routing.pools.push(pool),
        }
    }
    let hosts_changed = !changed_hosts.is_empty();
    for name in &removed_hosts {
        let host = canonical_domain(name).unwrap_or_else(|_| (*name).to_owned());
        host_changes(
            routing.hosts.iter().find(|h| h.host == host),
            None,
            &mut out,
        );
        next.routing.hosts.retain(|h| h.host != host);
    }
    for host in hosts {
        host_changes(
            routing.hosts.iter().find(|h| h.host == host.host),
            Some(&host),
            &mut out,
        );
        match next.routing.hosts.iter_mut().find(|h| h.host == host.host) {
            Some(slot) => *slot = host,
            None => next.routing.hosts.push(host),
        }
    }
    let mut touched_tenants = Vec::new();
    for id in &removed_tenants {
        tenant_changes(routing.tenant(id), None, &mut out);
        next.routing.tenants.remove(id);
        touched_tenants.push((*id).to_owned());
    }
    for tenant in tenants {
        tenant_changes(routing.tenant(tenant.id.as_str()), Some(&tenant), &mut out);
        touched_tenants.push(tenant.id.to_string());
        next.routing.tenants.upsert(Arc::new(tenant));
    }
    Ok(Delta {
        config: next,
        tenants: touched_tenants,
        pools: touched_pools,
        hosts: hosts_changed,
        changes: out,
    })
}

/// A tenant new to the config owns its subdomains: an exact host of someone else's that is one of
/// them would take its traffic. (A file's validation finds this at the other claim; a change
/// reports it at the tenant that makes it.)
fn new_tenants_subdomains(
    v: &mut Validator,
    tenants: &[Entry<crate::config::file::TenantFile>],
    claimed: &dyn Claimed,
    claims: &Claims<'_>,
) {
    for e in tenants.iter().filter(|e| !claimed.has_tenant(&e.name)) {
        for base in claims.base_domains {
            let host = format!("{}.{base}", e.name);
            let own = |c: &super::Claim<'_>| matches!(c, super::Claim::TenantDomain { tenant, .. } if *tenant == e.name);
            let within = claims
                .by_host
                .get(&host)
                .filter(|c| !own(c))
                .map(|c| c.owner());
            let owner = within.or_else(|| claims.rest_owner(&host).map(|o| o.describe()));
            if let Some(owner) = owner {
                v.errors.push(ConfigError::at_key(
                    KeyPath::root().key("tenants").key(&e.name),
                    format!("{host:?}, the subdomain of tenant {:?}, is routed to {owner}; the new tenant would lose its traffic to it", e.name),
                ));
            }
        }
    }
}

/// A removed pool that tenants or reserved hosts the change leaves as they are still route to: as
/// a file's validation would, each reference is reported where it is.
fn removed_pools_unused<'a>(
    v: &mut Validator,
    removed: &HashSet<&str>,
    unchanged: impl Iterator<Item = &'a TenantConfig>,
    routing: &crate::config::model::RoutingConfig,
    changed_hosts: &[&str],
) {
    let gone = |p: &str| removed.contains(p);
    for t in unchanged {
        let at = KeyPath::root().key("tenants").key(t.id.as_str());
        let mut refer = |key: KeyPath, pool: &str| {
            if gone(pool) {
                v.errors.push(ConfigError::at_value(
                    key,
                    format!("unknown pool {pool:?} (the change removes it, and this tenant still routes to it)"),
                ));
            }
        };
        refer(at.key("pool"), &t.pool);
        if let Some(p) = &t.previous_pool {
            refer(at.key("previous_pool"), p);
        }
        if let Some(c) = &t.canary {
            refer(at.key("canary").key("pool"), &c.pool);
        }
    }
    let changed: HashSet<String> = changed_hosts
        .iter()
        .filter_map(|h| canonical_domain(h).ok())
        .collect();
    for h in routing.hosts.iter().filter(|h| !changed.contains(&h.host)) {
        if let Some(pool) = h.route.pool().filter(|p| gone(p)) {
            v.errors.push(ConfigError::at_value(
                KeyPath::root().key("hosts").key(&h.host).key("pool"),
                format!("unknown pool {pool:?} (the change removes it, and this host still routes to it)"),
            ));
        }
    }
}

/// A removed tenant must not be named by a certificate of this instance nor by `[metrics]`.
fn removed_tenants_unreferenced(
    v: &mut Validator,
    removed: &HashSet<&str>,
    current: &GatewayConfig,
) {
    for (i, c) in current.routing.tls.certificates.iter().enumerate() {
        if let Some(t) = c.tenant.as_ref().filter(|t| removed.contains(t.as_str())) {
            v.errors.push(ConfigError::at_value(
                KeyPath::root().key("certificates").index(i).key("tenant"),
                format!(
                    "no tenant {:?} is defined (the change removes it)",
                    t.as_str()
                ),
            ));
        }
    }
    for (i, t) in current.routing.metrics.tenant_series.iter().enumerate() {
        if removed.contains(t.as_str()) {
            v.errors.push(ConfigError::at_value(
                KeyPath::root().key("metrics").key("tenant_series").index(i),
                format!("{:?} is not a tenant (the change removes it)", t.as_str()),
            ));
        }
    }
}

/// A tenant's certificate serves only names the tenant owns: its subdomains and its `domains`.
fn certificates_still_owned(v: &mut Validator, tenants: &[TenantConfig], current: &GatewayConfig) {
    let bases = &current.routing.base_domains;
    for (i, c) in current.routing.tls.certificates.iter().enumerate() {
        let Some(owner) = c
            .tenant
            .as_ref()
            .and_then(|id| tenants.iter().find(|t| t.id == *id))
        else {
            continue;
        };
        let id = owner.id.as_str();
        let foreign: Vec<&str> = c
            .loaded
            .names
            .iter()
            .filter(|name| {
                !owner.domains.contains(name)
                    && !bases.iter().any(|base| label_below(name, base) == Some(id))
            })
            .map(String::as_str)
            .collect();
        if !foreign.is_empty() {
            v.errors.push(ConfigError::at_value(
                KeyPath::root().key("certificates").index(i).key("cert"),
                format!(
                    "the certificate of tenant {id:?} also serves {}, which {id:?} no longer owns after the change",
                    foreign.join(", ")
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::load::load_with_store;
    use crate::snapshot::RoutingTable;

    const INSTANCE: &str = "[gateway]\nhttp_listen = \"127.0.0.1:8080\"\n[admin]\nlisten = \"127.0.0.1:9900\"\n[store]\netcd = [\"http://127.0.0.1:2379\"]\nprefix = \"/t\"\n";
    const ORIGIN: &str = "etcd:/t/";

    struct Entries(BTreeMap<Entity, String>);

    impl Mirror for Entries {
        fn text(&self, entity: &Entity) -> Option<&str> {
            self.0.get(entity).map(String::as_str)
        }

        fn plans(&self) -> Vec<(&str, &str)> {
            self.0
                .iter()
                .filter_map(|(e, t)| match e {
                    Entity::Plan(name) => Some((name.as_str(), t.as_str())),
                    _ => None,
                })
                .collect()
        }
    }

    fn full(entries: &Entries) -> Result<GatewayConfig, ConfigErrors> {
        let list: Vec<(&Entity, &str)> = entries.0.iter().map(|(e, t)| (e, t.as_str())).collect();
        load_with_store(
            Path::new("/etc/tenantgate/gw.toml"),
            INSTANCE,
            ORIGIN,
            &list,
        )
    }

    struct Random(u64);

    impl Random {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len() as u64) as usize]
        }
    }

    const POOLS: &[&str] = &["p0", "p1", "p2", "p3"];

    /// A random entry of the given kind: mostly valid, sometimes naming what is missing, claiming
    /// what is taken or shadowing a tenant's subdomain.
    fn entry(r: &mut Random, entity: &Entity) -> String {
        match entity {
            Entity::Pool(_) => format!("upstreams = [\"127.0.0.1:{}\"]\n", 9000 + r.below(3)),
            Entity::Plan(_) => format!(
                "rate_limit = {{ requests_per_second = {} }}\n",
                1 + r.below(50)
            ),
            Entity::Host(_) => format!("pool = \"{}\"\n", r.pick(POOLS)),
            Entity::Tenant(_) => {
                let mut text = format!("pool = \"{}\"\n", r.pick(POOLS));
                if r.below(4) == 0 {
                    text += "status = \"suspended\"\n";
                }
                if r.below(3) == 0 {
                    text += &format!("plan = \"{}\"\n", r.pick(&["free", "pro"]));
                }
                match r.below(5) {
                    0 => text += &format!("domains = [\"d{}.custom.test\"]\n", r.below(6)),
                    1 => text += &format!("domains = [\"t{}.yourapp.test\"]\n", r.below(8)),
                    _ => {}
                }
                if r.below(5) == 0 {
                    text += &format!(
                        "canary = {{ pool = \"{}\", percent = 10 }}\n",
                        r.pick(POOLS)
                    );
                }
                if r.below(5) == 0 {
                    text += &format!(
                        "[[api_keys]]\nid = \"k1\"\nsha256 = \"{}\"\ncreated = \"2026-01-01T00:00:00Z\"\n",
                        format!("{:x}", r.below(3)).repeat(64)
                    );
                }
                text
            }
            Entity::Setting(_) => String::new(),
        }
    }

    fn random_entity(r: &mut Random) -> Entity {
        match r.below(10) {
            0..=5 => Entity::Tenant(format!("t{}", r.below(8))),
            6 | 7 => Entity::Pool(r.pick(POOLS).to_owned()),
            8 => Entity::Plan(r.pick(&["free", "pro"]).to_owned()),
            _ => Entity::Host(
                r.pick(&["h0.yourapp.test", "t1.yourapp.test", "d1.custom.test"])
                    .to_owned(),
            ),
        }
    }

    fn sorted<T: Clone, K: Ord>(items: impl Iterator<Item = T>, key: impl Fn(&T) -> K) -> Vec<T> {
        let mut v: Vec<T> = items.collect();
        v.sort_by_key(|t| key(t));
        v
    }

    #[test]
    fn a_delta_is_refused_exactly_when_the_whole_config_would_be() {
        let mut r = Random(42);
        let mut state = Entries(BTreeMap::new());
        state.0.insert(
            Entity::Setting(Setting::Gateway),
            "base_domains = [\"yourapp.test\"]\n".into(),
        );
        for p in POOLS {
            state.0.insert(
                Entity::Pool((*p).into()),
                "upstreams = [\"127.0.0.1:9000\"]\n".to_owned(),
            );
        }
        state.0.insert(
            Entity::Plan("free".into()),
            "rate_limit = { requests_per_second = 5 }\n".into(),
        );
        for i in 0..6 {
            state
                .0
                .insert(Entity::Tenant(format!("t{i}")), "pool = \"p0\"\n".into());
        }
        let mut current = full(&state).unwrap_or_else(|e| panic!("{e}"));
        let mut table = RoutingTable::build(&current.routing, 1, None);
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..1500 {
            let mut next = Entries(state.0.clone());
            let mut changed: Vec<Entity> = Vec::new();
            for _ in 0..1 + r.below(3) {
                let entity = random_entity(&mut r);
                if r.below(4) == 0 {
                    next.0.remove(&entity);
                } else {
                    let text = entry(&mut r, &entity);
                    next.0.insert(entity.clone(), text);
                }
                if !changed.contains(&entity) {
                    changed.push(entity);
                }
            }
            let changes: Vec<EntryChange<'_>> = changed
                .iter()
                .map(|e| EntryChange {
                    entity: e,
                    text: next.text(e),
                })
                .collect();
            let by_delta = validate_delta(&current, INSTANCE, &table, &next, &changes, ORIGIN);
            let by_file = full(&next);
            match (&by_delta, &by_file) {
                (Ok(delta), Ok(whole)) => {
                    accepted += 1;
                    let tenants = |c: &GatewayConfig| sorted(c.routing.tenants.iter().cloned(), |t| t.id.to_string());
                    assert_eq!(tenants(&delta.config), tenants(whole), "round {round}");
                    let pools = |c: &GatewayConfig| sorted(c.routing.pools.iter().cloned(), |p| p.name.clone());
                    assert_eq!(pools(&delta.config), pools(whole), "round {round}");
                    let hosts = |c: &GatewayConfig| sorted(c.routing.hosts.iter().cloned(), |h| h.host.clone());
                    assert_eq!(hosts(&delta.config), hosts(whole), "round {round}");
                }
                (Err(_), Err(_)) => refused += 1,
                (delta, whole) => panic!(
                    "round {round}: the delta says {}, the whole config {}\nchanged: {changed:?}\nbefore: {:#?}\nafter: {:#?}",
                    verdict(delta.as_ref().map(|_| ())),
                    verdict(whole.as_ref().map(|_| ())),
                    state.0,
                    next.0,
                ),
            }
            if let Ok(delta) = by_delta {
                let touched = crate::snapshot::table::TableDelta {
                    tenants: delta.tenants.clone(),
                    pools: delta.pools.clone(),
                    hosts: delta.hosts,
                };
                table = table.apply(&delta.config.routing, &touched, round + 2);
                current = delta.config;
                state = next;
            }
        }
        // Both kinds were seen often enough for the comparison to mean something.
        assert!(
            accepted > 100 && refused > 100,
            "{accepted} accepted, {refused} refused"
        );
    }

    fn verdict(r: Result<(), &ConfigErrors>) -> String {
        match r {
            Ok(()) => "valid".into(),
            Err(e) => format!("invalid:\n{e}"),
        }
    }

    #[test]
    fn errors_are_placed_in_the_entry_they_are_in() {
        let mut state = Entries(BTreeMap::new());
        state.0.insert(
            Entity::Pool("shared".into()),
            "upstreams = [\"127.0.0.1:9000\"]\n".into(),
        );
        state
            .0
            .insert(Entity::Tenant("acme".into()), "pool = \"shared\"\n".into());
        let current = full(&state).unwrap_or_else(|e| panic!("{e}"));
        let table = RoutingTable::build(&current.routing, 1, None);
        let acme = Entity::Tenant("acme".into());
        let mut next = Entries(state.0.clone());
        next.0.insert(
            acme.clone(),
            "name = \"Acme\"\npool = \"nowhere\"\nstatus = \"gone\"\n".into(),
        );
        let changes = [EntryChange {
            entity: &acme,
            text: next.text(&acme),
        }];
        let errors = validate_delta(&current, INSTANCE, &table, &next, &changes, ORIGIN)
            .expect_err("invalid");
        let lines: Vec<String> = errors.lines().collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("etcd:/t/tenants/acme:3:10: tenants.acme.status:")),
            "{lines:?}"
        );
        let whole = full(&next).expect_err("invalid");
        assert_eq!(
            whole.lines().collect::<Vec<_>>(),
            lines,
            "the same errors, placed the same"
        );
    }
}
