//! Reading a config file: TOML text to `FileConfig` (every unknown key and type error found), then to
//! a validated `GatewayConfig`, with each error placed at its file, line and column.
//!
//! Sections are decoded one entry at a time, so one malformed tenant does not hide the errors of the
//! others. Line and column are worked out only when there are errors: the happy path of a
//! 100,000-tenant file pays for one parse.

use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::error::{ConfigError, ConfigErrors, KeyPath, KeySegment, LoadError, Location, Pointer};
use super::file::{Entry, FileConfig, GatewayFile, LimitsFile, MetricsFile};
use super::model::GatewayConfig;
use super::shared::{Entity, Setting, SHARED_GATEWAY_KEYS, SHARED_SECTIONS};
use super::validate::validate;

/// The top-level sections, in the order the README documents them.
pub const SECTIONS: &[&str] = &[
    "gateway",
    "admin",
    "certificates",
    "pools",
    "tenants",
    "hosts",
    "jwt",
    "route_rules",
    "limits",
    "plans",
    "metrics",
    "store",
    "acme",
    "tracing",
];

/// Reads, decodes and validates the file at `path`.
pub fn load(path: &Path) -> Result<GatewayConfig, LoadError> {
    load_with_text(path).map(|(config, _)| config)
}

/// As `load`, and also returns the text the config was read from (the control plane keeps it, to
/// edit and to tell a real change on disk from a touch).
pub fn load_with_text(path: &Path) -> Result<(GatewayConfig, String), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let config = load_str(path, &text).map_err(LoadError::Invalid)?;
    Ok((config, text))
}

/// Decodes and validates `text` as if read from `path` (which names the file in errors).
pub fn load_str(path: &Path, text: &str) -> Result<GatewayConfig, ConfigErrors> {
    let (file, mut errors) = decode_file(text);
    // Validate what did decode even after errors, so references and claims are checked too.
    let checked = match validate(&file, path) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(errors),
        Err(more) => {
            let more = unreported(&errors, more);
            errors.extend(more);
            Err(errors)
        }
    };
    checked.map_err(|mut errors| {
        locate(text, &mut errors);
        // In file order, as an editor lists them (stable: errors at one place keep their order).
        errors.sort_by_key(|e| e.location.map(|l| (l.line, l.column)));
        ConfigErrors {
            file: path.to_path_buf(),
            errors,
        }
    })
}

/// The validation's errors but for those about a key the decoding already reported: a value left
/// out for its type is not also wrong, nor "missing `pool`" at its entry.
fn unreported(found: &[ConfigError], checked: Vec<ConfigError>) -> Vec<ConfigError> {
    checked
        .into_iter()
        .filter(|c| {
            let missing = c
                .message
                .strip_prefix("missing `")
                .and_then(|m| m.split_once('`'))
                .map(|(key, _)| c.key.key(key));
            !found
                .iter()
                .any(|f| f.key == c.key || Some(&f.key) == missing.as_ref())
        })
        .collect()
}

/// Decodes and validates this instance's file (`path`, read as `text`) together with the fleet's
/// shared entries from its store, with exactly the rules of a file that holds both. An error in
/// an entry is placed in that entry's text and named after it: `origin` (`etcd:/tenantgate/prod/`)
/// and the entry's key.
pub fn load_with_store(
    path: &Path,
    text: &str,
    origin: &str,
    entries: &[(&Entity, &str)],
) -> Result<GatewayConfig, ConfigErrors> {
    let (mut file, mut errors) = decode_file(text);
    let mut shared_errors = Vec::new();
    let shared = decode_store(entries, origin, &mut shared_errors);
    merge_shared(&mut file, shared);
    let checked = validate(&file, path);
    let more = match checked {
        Ok(config) if errors.is_empty() && shared_errors.is_empty() => return Ok(config),
        Ok(_) => Vec::new(),
        Err(more) => more,
    };
    let texts: std::collections::HashMap<&Entity, &str> = entries.iter().copied().collect();
    errors.extend(shared_errors);
    Err(place_errors(
        path,
        text,
        origin,
        |e: &Entity| texts.get(e).copied(),
        errors,
        more,
    ))
}

/// Every error of a config made of an instance's file (`text`) and store entries (`text_of`):
/// `found` are the decoding errors (those in entries already name theirs), `checked` the
/// validation's, each given to the entry its key is in (else the file), and all placed at a
/// line and column of their own text. The file's errors come first.
pub(crate) fn place_errors<'t>(
    path: &Path,
    text: &str,
    origin: &str,
    text_of: impl Fn(&Entity) -> Option<&'t str>,
    found: Vec<ConfigError>,
    checked: Vec<ConfigError>,
) -> ConfigErrors {
    let checked = unreported(&found, checked);
    let (mut errors, mut shared): (Vec<ConfigError>, Vec<ConfigError>) =
        found.into_iter().partition(|e| e.origin.is_none());
    for mut error in checked {
        match Entity::owning(&error.key).filter(|e| text_of(e).is_some()) {
            Some(entity) => {
                error.origin = Some(format!("{origin}{}", entity.key()).into());
                shared.push(error);
            }
            None => errors.push(error),
        }
    }
    locate(text, &mut errors);
    let mut by_origin: std::collections::BTreeMap<std::sync::Arc<str>, Vec<ConfigError>> =
        std::collections::BTreeMap::new();
    for error in shared {
        let key = error.origin.clone().unwrap_or_else(|| origin.into());
        by_origin.entry(key).or_default().push(error);
    }
    for (key, mut group) in by_origin {
        if let Some(entity) = key.strip_prefix(origin).and_then(Entity::parse) {
            if let Some(text) = text_of(&entity) {
                locate_below(text, &entity.path(), &mut group);
            }
        }
        errors.extend(group);
    }
    ConfigErrors {
        file: path.to_path_buf(),
        errors: stable_order(errors),
    }
}

/// Decodes and validates a routing file (`tenantgate apply`'s) as the fleet's shared table of the
/// instance whose file is `instance` (read as `instance_text`), together with `rest`: the store's
/// entries the file does not have and that stay (none when pruning). That is the table the store
/// will hold, checked by exactly the rules of one file that holds it all. The routing file's own
/// instance settings (listeners, `[admin]`, certificates) are not used. Each error is placed in
/// the text it is about: the routing file, an entry of the store (`origin`), or (certificates,
/// listeners) the instance's file, named by its path.
pub fn load_routing_file(
    instance: &Path,
    instance_text: &str,
    path: &Path,
    text: &str,
    rest: &[(&Entity, &str)],
    origin: &str,
) -> Result<GatewayConfig, ConfigErrors> {
    let (routing, mut errors) = decode_file(text);
    let mut shared_errors = Vec::new();
    let kept = decode_store(rest, origin, &mut shared_errors);
    let combined = combine(routing, kept, rest.iter().map(|(e, _)| *e));
    let (mut file, _) = decode_file(instance_text);
    merge_shared(&mut file, combined);
    let more = match validate(&file, instance) {
        Ok(config) if errors.is_empty() && shared_errors.is_empty() => return Ok(config),
        Ok(_) => Vec::new(),
        Err(more) => more,
    };
    let texts: std::collections::HashMap<&Entity, &str> = rest.iter().copied().collect();
    let mut own = Vec::new();
    for error in more {
        match Entity::owning(&error.key) {
            Some(entity) if texts.contains_key(&entity) => shared_errors.push(error),
            Some(_) => errors.push(error),
            None => own.push(error),
        }
    }
    locate(text, &mut errors);
    locate(instance_text, &mut own);
    let named: std::sync::Arc<str> = instance.display().to_string().into();
    for e in &mut own {
        e.origin = Some(std::sync::Arc::clone(&named));
    }
    errors.extend(own);
    let placed = place_errors(
        path,
        "",
        origin,
        |e: &Entity| texts.get(e).copied(),
        Vec::new(),
        shared_errors,
    );
    errors.extend(placed.errors);
    Err(ConfigErrors {
        file: path.to_path_buf(),
        errors: stable_order(errors),
    })
}

/// A routing file's shared sections with the store entries it does not have (`kept`, the
/// entities `kept_entities`): keyed entries side by side, a kept setting in place of the file's
/// (which then has none).
fn combine<'a>(
    mut routing: FileConfig,
    mut kept: FileConfig,
    kept_entities: impl Iterator<Item = &'a Entity>,
) -> FileConfig {
    routing.pools.append(&mut kept.pools);
    routing.tenants.append(&mut kept.tenants);
    routing.hosts.append(&mut kept.hosts);
    routing.plans.append(&mut kept.plans);
    let k = &mut kept;
    for entity in kept_entities {
        let Entity::Setting(setting) = entity else {
            continue;
        };
        match setting {
            Setting::Gateway => {
                take_shared_gateway(&mut routing.gateway, std::mem::take(&mut k.gateway));
            }
            Setting::Jwt => routing.jwt = k.jwt.take(),
            Setting::RouteRules => routing.route_rules = std::mem::take(&mut k.route_rules),
            Setting::Limits => {
                take_shared_limits(&mut routing.limits, std::mem::take(&mut k.limits));
            }
            Setting::Metrics => {
                routing.metrics = MetricsFile {
                    listen: None,
                    ..std::mem::take(&mut k.metrics)
                }
            }
        }
    }
    routing
}

/// The instance file's errors first, in file order; then each entry's, by key.
fn stable_order(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    errors.sort_by(|a, b| {
        (
            a.origin.is_some(),
            &a.origin,
            a.location.map(|l| (l.line, l.column)),
        )
            .cmp(&(
                b.origin.is_some(),
                &b.origin,
                b.location.map(|l| (l.line, l.column)),
            ))
    });
    errors
}

/// The shared parts of a config decoded from the store's entries, every error found and tagged
/// with the entry it is in (its span is in that entry's text).
pub fn decode_store(
    entries: &[(&Entity, &str)],
    origin: &str,
    errors: &mut Vec<ConfigError>,
) -> FileConfig {
    let mut file = FileConfig::default();
    for (entity, text) in entries {
        let before = errors.len();
        decode_entry(entity, text, &mut file, errors);
        if errors.len() > before {
            let tag: std::sync::Arc<str> = format!("{origin}{}", entity.key()).into();
            for e in &mut errors[before..] {
                e.origin = Some(std::sync::Arc::clone(&tag));
            }
        }
    }
    file
}

/// Decodes one entry of the store into the section it stands for.
fn decode_entry(entity: &Entity, text: &str, file: &mut FileConfig, errors: &mut Vec<ConfigError>) {
    let at = entity.path();
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            errors.push(ConfigError {
                span: e.span(),
                ..ConfigError::at_value(at, format!("invalid TOML: {}", e.message()))
            });
            // Still defined: what refers to it is not reported a second time.
            let name = || entity.name().unwrap_or_default().to_owned();
            match entity {
                Entity::Tenant(_) => file.tenants.push(Entry::undecoded(name())),
                Entity::Pool(_) => file.pools.push(Entry::undecoded(name())),
                Entity::Host(_) => file.hosts.push(Entry::undecoded(name())),
                Entity::Plan(_) => file.plans.push(Entry::undecoded(name())),
                Entity::Setting(_) => {}
            }
            return;
        }
    };
    let span = root.span();
    let table = root.into_inner();
    match entity {
        Entity::Setting(Setting::RouteRules) => {
            for (key, value) in table {
                let name = key.get_ref().as_ref();
                if name == "route_rules" {
                    file.route_rules = decode_list(value, &at.key(name), errors);
                } else {
                    errors.push(ConfigError {
                        span: Some(key.span()),
                        ..ConfigError::at_key(
                            at.key(name),
                            "the route_rules entry holds [[route_rules]] tables only",
                        )
                    });
                }
            }
            return;
        }
        Entity::Setting(Setting::Gateway) => {
            for (key, _) in table.iter() {
                let name = key.get_ref().as_ref();
                if !SHARED_GATEWAY_KEYS.contains(&name) {
                    errors.push(ConfigError {
                        span: Some(key.span()),
                        ..ConfigError::at_key(
                            at.key(name),
                            format!("gateway.{name} is each instance's own setting: it belongs in the instance's file, not the store (the store's gateway entry holds {})", SHARED_GATEWAY_KEYS.join(", ")),
                        )
                    });
                }
            }
        }
        _ => {}
    }
    let value = Spanned::new(span, DeValue::Table(table));
    match entity {
        Entity::Tenant(id) => file.tenants.push(Entry {
            name: id.clone(),
            value: decode_by_key(value, &at, errors, "must be a table"),
        }),
        Entity::Pool(name) => file.pools.push(Entry {
            name: name.clone(),
            value: decode_by_key(value, &at, errors, "must be a table"),
        }),
        Entity::Host(host) => {
            // Written canonical (`split` does), so that no two keys are one host.
            match crate::host::canonical_domain(host) {
                Ok(canonical) if canonical == *host => {}
                Ok(canonical) => errors.push(ConfigError::at_key(
                    at.clone(),
                    format!("a host's key in the store is its canonical name: hosts/{canonical}"),
                )),
                Err(_) => {}
            }
            file.hosts.push(Entry {
                name: host.clone(),
                value: decode(value, &at, errors),
            })
        }
        Entity::Plan(name) => file.plans.push(Entry {
            name: name.clone(),
            value: decode(value, &at, errors),
        }),
        Entity::Setting(Setting::Gateway) => {
            file.gateway = decode_section(value, &at, errors);
        }
        Entity::Setting(Setting::Jwt) => file.jwt = decode(value, &at, errors),
        Entity::Setting(Setting::Limits) => {
            let limits: LimitsFile = decode_section(value, &at, errors);
            if limits.redis.is_some() {
                errors.push(own_key_in_store(
                    &at,
                    "redis",
                    "how this instance reaches Redis",
                ));
            }
            file.limits = limits;
        }
        Entity::Setting(Setting::Metrics) => {
            let metrics: MetricsFile = decode_section(value, &at, errors);
            if metrics.listen.is_some() {
                errors.push(own_key_in_store(
                    &at,
                    "listen",
                    "where this instance serves /metrics",
                ));
            }
            file.metrics = metrics;
        }
        Entity::Setting(Setting::RouteRules) => {}
    }
}

/// A key of a shared section that is each instance's own (`limits.redis`, `metrics.listen`),
/// found in the store's entry.
fn own_key_in_store(section: &KeyPath, key: &str, what: &str) -> ConfigError {
    ConfigError::at_key(
        section.key(key),
        format!("{section}.{key} is {what}: it belongs in the instance's file, not the store"),
    )
}

/// Puts the store's shared parts into an instance's decoded file (which holds none of them:
/// `shared_in_instance` refuses those).
pub fn merge_shared(instance: &mut FileConfig, shared: FileConfig) {
    let FileConfig {
        gateway,
        pools,
        tenants,
        hosts,
        jwt,
        route_rules,
        limits,
        plans,
        metrics,
        ..
    } = shared;
    take_shared_gateway(&mut instance.gateway, gateway);
    instance.pools = pools;
    instance.tenants = tenants;
    instance.hosts = hosts;
    instance.jwt = jwt;
    instance.route_rules = route_rules;
    instance.plans = plans;
    instance.metrics = MetricsFile {
        listen: instance.metrics.listen.take(),
        ..metrics
    };
    take_shared_limits(&mut instance.limits, limits);
    instance.merged = true;
}

/// Puts the fleet's `[gateway]` keys (`SHARED_GATEWAY_KEYS`) of `shared` into `into`, which keeps
/// its own listeners, admin and TLS.
fn take_shared_gateway(into: &mut GatewayFile, shared: GatewayFile) {
    let GatewayFile {
        base_domains,
        tenant_header,
        tenant_source,
        api_key_header,
        switch_tenant_header,
        https_redirect,
        hsts,
        ..
    } = shared;
    into.base_domains = base_domains;
    into.tenant_header = tenant_header;
    into.tenant_source = tenant_source;
    into.api_key_header = api_key_header;
    into.switch_tenant_header = switch_tenant_header;
    into.https_redirect = https_redirect;
    into.hsts = hsts;
}

/// Puts the fleet's `[limits]` in place of `into`'s, which keeps its own Redis connection.
fn take_shared_limits(into: &mut LimitsFile, shared: LimitsFile) {
    let redis = into.redis.take();
    *into = LimitsFile { redis, ..shared };
}

/// The sections a tenant file (what `tenants pull` writes, `tenants push` reads) may hold.
pub const FRAGMENT_SECTIONS: &[&str] = &["tenants", "pools", "plans"];

/// Checks a tenant file: TOML with at least one tenant and no section but `FRAGMENT_SECTIONS`, every
/// entry decoding as it would in a config file. What its entries refer to is checked once it is
/// merged into a config.
pub fn check_fragment(path: &Path, text: &str) -> Result<(), ConfigErrors> {
    let (file, mut errors) = decode_file(text);
    if let Ok(root) = DeTable::parse(text) {
        for (key, _) in root.into_inner() {
            let name = key.get_ref().as_ref();
            if SECTIONS.contains(&name) && !FRAGMENT_SECTIONS.contains(&name) {
                errors.push(ConfigError {
                    span: Some(key.span()),
                    ..ConfigError::at_key(
                        KeyPath::root().key(name),
                        "a tenant file holds only [tenants.*], [pools.*] and [plans.*] entries",
                    )
                });
            }
        }
        if file.tenants.is_empty() && errors.is_empty() {
            errors.push(ConfigError::at_key(
                KeyPath::root().key("tenants"),
                "a tenant file names at least one tenant ([tenants.<id>])",
            ));
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    locate(text, &mut errors);
    errors.sort_by_key(|e| e.location.map(|l| (l.line, l.column)));
    Err(ConfigErrors {
        file: path.to_path_buf(),
        errors,
    })
}

/// TOML text to `FileConfig`, with every error found; what could not be decoded is left out.
pub fn decode_file(text: &str) -> (FileConfig, Vec<ConfigError>) {
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let error = ConfigError {
                span: e.span(),
                ..ConfigError::at_value(KeyPath::root(), format!("invalid TOML: {}", e.message()))
            };
            return (FileConfig::default(), vec![error]);
        }
    };
    let mut file = FileConfig::default();
    let mut errors = Vec::new();
    let root = root.into_inner();
    if root.contains_key("store") {
        errors.extend(shared_in_instance(&root));
    }
    for (key, value) in root {
        let at = KeyPath::root().key(key.get_ref());
        match key.get_ref().as_ref() {
            "gateway" => file.gateway = decode_section(value, &at, &mut errors),
            "admin" => file.admin = decode_section(value, &at, &mut errors),
            "pools" => file.pools = decode_entries(value, &at, &mut errors),
            "tenants" => file.tenants = decode_entries(value, &at, &mut errors),
            "hosts" => file.hosts = decode_entries(value, &at, &mut errors),
            "certificates" => file.certificates = decode_list(value, &at, &mut errors),
            "jwt" => file.jwt = decode(value, &at, &mut errors),
            "route_rules" => file.route_rules = decode_list(value, &at, &mut errors),
            "limits" => file.limits = decode_section(value, &at, &mut errors),
            "plans" => file.plans = decode_entries(value, &at, &mut errors),
            "metrics" => file.metrics = decode_section(value, &at, &mut errors),
            "store" => file.store = decode(value, &at, &mut errors),
            "acme" => file.acme = decode(value, &at, &mut errors),
            "tracing" => file.tracing = decode(value, &at, &mut errors),
            other => errors.push(ConfigError {
                span: Some(key.span()),
                ..ConfigError::at_key(
                    at,
                    format!(
                        "unknown section {other:?}; sections are: {}",
                        SECTIONS.join(", ")
                    ),
                )
            }),
        }
    }
    (file, errors)
}

/// With `[store]`, the fleet's sections and settings live in the store: each one this file also
/// has is an error (rather than a rule for which one wins, which an operator would have to know).
fn shared_in_instance(root: &DeTable<'_>) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut refuse = |span: Range<usize>, at: KeyPath, what: &str| {
        errors.push(ConfigError {
            span: Some(span),
            ..ConfigError::at_key(
                at,
                format!("{what} is the fleet's: with [store] it lives in the store (tenantgate apply writes it there, tenantgate export reads it back); this file holds only this instance's own settings"),
            )
        })
    };
    for (key, value) in root.iter() {
        let name = key.get_ref().as_ref();
        let at = KeyPath::root().key(name);
        match (name, value.get_ref()) {
            ("gateway", DeValue::Table(gateway)) => {
                for (k, _) in gateway.iter() {
                    let k_name = k.get_ref().as_ref();
                    if SHARED_GATEWAY_KEYS.contains(&k_name) {
                        refuse(k.span(), at.key(k_name), &format!("gateway.{k_name}"));
                    }
                }
            }
            ("limits", DeValue::Table(limits)) => {
                for (k, _) in limits.iter() {
                    let k_name = k.get_ref().as_ref();
                    if k_name != "redis" {
                        refuse(k.span(), at.key(k_name), &format!("limits.{k_name}"));
                    }
                }
            }
            ("metrics", DeValue::Table(metrics)) => {
                for (k, _) in metrics.iter() {
                    let k_name = k.get_ref().as_ref();
                    if k_name != "listen" {
                        refuse(k.span(), at.key(k_name), &format!("metrics.{k_name}"));
                    }
                }
            }
            (section, _) if SHARED_SECTIONS.contains(&section) => {
                refuse(key.span(), at, &format!("[{section}]"))
            }
            _ => {}
        }
    }
    errors
}

/// Decodes one value, reporting a type error or every key the struct does not know.
fn decode<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    at: &KeyPath,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let span = value.span();
    let mut unknown = Vec::new();
    let decoded = serde_ignored::deserialize(ValueDeserializer::from(value), |path| {
        unknown.push(at.join_ignored(&path))
    });
    match decoded {
        Ok(v) => {
            errors.extend(unknown.into_iter().map(|key| {
                ConfigError::at_key(
                    key,
                    "unknown key (the README's configuration reference lists them)",
                )
            }));
            Some(v)
        }
        Err(e) => {
            errors.push(ConfigError {
                span: e.span().or(Some(span)),
                ..ConfigError::at_value(at.clone(), e.message().to_owned())
            });
            None
        }
    }
}

/// Decodes a section of settings (`[gateway]`, `[admin]`), key by key (`decode_by_key`).
fn decode_section<T: DeserializeOwned + Default>(
    value: Spanned<DeValue<'_>>,
    at: &KeyPath,
    errors: &mut Vec<ConfigError>,
) -> T {
    decode_by_key(value, at, errors, "must be a table").unwrap_or_default()
}

/// Decodes a table key by key: a key with a type error is reported and left out, and the rest
/// decoded again. One bad value must not hide the others, nor the checks that depend on them
/// (`base_domains` for subdomain shadowing, listen addresses for overlaps, a tenant's domains for
/// claims). `None` when nothing could be salvaged (not a table, or an error not tied to one key).
fn decode_by_key<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    at: &KeyPath,
    errors: &mut Vec<ConfigError>,
    not_a_table: &str,
) -> Option<T> {
    let span = value.span();
    let DeValue::Table(mut table) = value.into_inner() else {
        errors.push(ConfigError {
            span: Some(span),
            ..ConfigError::at_value(at.clone(), not_a_table)
        });
        return None;
    };
    loop {
        let reported = errors.len();
        let attempt = Spanned::new(span.clone(), DeValue::Table(table.clone()));
        if let Some(decoded) = decode(attempt, at, errors) {
            return Some(decoded);
        }
        let bad = errors.get(reported).and_then(|e| e.span.clone())?;
        let inside = |s: Range<usize>| s.start <= bad.start && bad.end <= s.end;
        let culprit = table
            .iter()
            .find(|(k, v)| inside(k.span()) || inside(v.span()))
            .map(|(k, _)| k.get_ref().to_string());
        match culprit {
            Some(key) => {
                // Named by the key left out, so that a check of that key does not report it twice.
                if let Some(error) = errors.get_mut(reported) {
                    if error.key == *at {
                        error.key = at.key(&key);
                    }
                }
                table.remove(key.as_str());
            }
            // An error not tied to one key (a missing required key): nothing left to salvage.
            None => return None,
        }
    }
}

/// Decodes every `[section.<name>]` entry on its own, key by key: a tenant with one wrong value
/// is still checked for what its other keys claim.
fn decode_entries<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    at: &KeyPath,
    errors: &mut Vec<ConfigError>,
) -> Vec<Entry<T>> {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        errors.push(ConfigError {
            span: Some(span),
            ..ConfigError::at_value(at.clone(), "must be a table of named entries")
        });
        return Vec::new();
    };
    table
        .into_iter()
        .map(|(name, value)| {
            let name = name.into_inner().into_owned();
            let value = decode_by_key(value, &at.key(&name), errors, "must be a table");
            Entry { name, value }
        })
        .collect()
}

/// Decodes every `[[section]]` entry on its own.
fn decode_list<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    at: &KeyPath,
    errors: &mut Vec<ConfigError>,
) -> Vec<Option<T>> {
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        errors.push(ConfigError {
            span: Some(span),
            ..ConfigError::at_value(at.clone(), "must be a list of tables, written [[section]]")
        });
        return Vec::new();
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, value)| decode(value, &at.index(i), errors))
        .collect()
}

/// Gives every error a line and column, and the most precise key its span falls in.
fn locate(text: &str, errors: &mut [ConfigError]) {
    locate_below(text, &KeyPath::root(), errors)
}

/// `locate` for a text whose root is at `base` in a config file's key paths (an entry of the
/// store: `tenants.acme`), for errors whose keys are below it.
fn locate_below(text: &str, base: &KeyPath, errors: &mut [ConfigError]) {
    // The text parsed once already; if it does not now, the spans the parser gave are all we have.
    let root = DeTable::parse(text).ok();
    for error in errors.iter_mut() {
        if let (Some(root), Some(mut key)) = (&root, error.key.strip_prefix(base)) {
            match (&error.span, error.pointer) {
                (Some(span), Pointer::Value) => {
                    refine_key(root, span, &mut key);
                    error.key = base.join(&key);
                }
                (Some(_), Pointer::Key) => {}
                (None, pointer) => error.span = span_of(root, &key, pointer),
            }
        }
        let offset = error.span.as_ref().map_or(0, |s| s.start);
        error.location = Some(Location::of_offset(text, offset));
    }
}

/// The span of `key` (or of its value), falling back to the deepest ancestor that exists.
fn span_of(root: &Spanned<DeTable<'_>>, key: &KeyPath, pointer: Pointer) -> Option<Range<usize>> {
    let mut best = None;
    let mut node: Option<&DeValue<'_>> = None;
    for segment in key.segments() {
        let table = match node {
            None => Some(root.get_ref()),
            Some(n) => n.as_table(),
        };
        let found = match (segment, table, node) {
            (KeySegment::Key(k), Some(t), _) => {
                t.get_key_value(k.as_str()).map(|(k, v)| (k.span(), v))
            }
            (KeySegment::Index(i), _, Some(DeValue::Array(items))) => {
                items.get(*i).map(|v| (v.span(), v))
            }
            _ => None,
        };
        let Some((key_span, value)) = found else {
            break;
        };
        best = Some(match pointer {
            Pointer::Key => key_span,
            Pointer::Value => value.span(),
        });
        node = Some(value.get_ref());
    }
    best
}

/// Extends `key` down to the innermost entry below it whose key or value contains `span` (a serde
/// error on a tenant names the tenant; this finds the field inside it).
fn refine_key(root: &Spanned<DeTable<'_>>, span: &Range<usize>, key: &mut KeyPath) {
    let contains = |outer: Range<usize>| outer.start <= span.start && span.end <= outer.end;
    let mut path = key.clone();
    let found = match key.segments() {
        // The root itself (an entry of the store is a document of its own).
        [] => root
            .get_ref()
            .iter()
            .find(|(k, v)| contains(k.span()) || contains(v.span()))
            .map(|(k, v)| {
                path = path.key(k.get_ref());
                v.get_ref()
            }),
        _ => node_at(root, key),
    };
    let Some(mut node) = found else {
        return;
    };
    loop {
        let next = match node {
            DeValue::Table(t) => t
                .iter()
                .find(|(k, v)| contains(k.span()) || contains(v.span()))
                .map(|(k, v)| (path.key(k.get_ref()), v)),
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .find(|(_, v)| contains(v.span()))
                .map(|(i, v)| (path.index(i), v)),
            _ => None,
        };
        let Some((deeper, value)) = next else { break };
        path = deeper;
        node = value.get_ref();
    }
    *key = path;
}

fn node_at<'a, 'i>(root: &'a Spanned<DeTable<'i>>, key: &KeyPath) -> Option<&'a DeValue<'i>> {
    let (KeySegment::Key(first), rest) = key.segments().split_first()? else {
        return None;
    };
    let mut node = root.get_ref().get(first.as_str())?.get_ref();
    for segment in rest {
        node = match (segment, node) {
            (KeySegment::Key(k), DeValue::Table(t)) => t.get(k.as_str())?.get_ref(),
            (KeySegment::Index(i), DeValue::Array(items)) => items.get(*i)?.get_ref(),
            _ => return None,
        };
    }
    Some(node)
}
