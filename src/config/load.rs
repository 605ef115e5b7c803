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
use super::file::{Entry, FileConfig};
use super::model::GatewayConfig;
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
    for (key, value) in root.into_inner() {
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

/// Decodes a section of settings (`[gateway]`, `[admin]`). A key with a type error is reported and
/// left out, and the rest decoded again: one bad value must not hide the others, nor the checks that
/// depend on them (`base_domains` for subdomain shadowing, listen addresses for overlaps).
fn decode_section<T: DeserializeOwned + Default>(
    value: Spanned<DeValue<'_>>,
    at: &KeyPath,
    errors: &mut Vec<ConfigError>,
) -> T {
    let span = value.span();
    let DeValue::Table(mut table) = value.into_inner() else {
        errors.push(ConfigError {
            span: Some(span),
            ..ConfigError::at_value(at.clone(), "must be a table")
        });
        return T::default();
    };
    loop {
        let reported = errors.len();
        let attempt = Spanned::new(span.clone(), DeValue::Table(table.clone()));
        if let Some(decoded) = decode(attempt, at, errors) {
            return decoded;
        }
        let Some(bad) = errors.get(reported).and_then(|e| e.span.clone()) else {
            return T::default();
        };
        let inside = |s: Range<usize>| s.start <= bad.start && bad.end <= s.end;
        let culprit = table
            .iter()
            .find(|(k, v)| inside(k.span()) || inside(v.span()))
            .map(|(k, _)| k.get_ref().to_string());
        match culprit {
            Some(key) => {
                table.remove(key.as_str());
            }
            // An error not tied to one key (a missing required key): nothing left to salvage.
            None => return T::default(),
        }
    }
}

/// Decodes every `[section.<name>]` entry on its own.
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
            let value = decode(value, &at.key(&name), errors);
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
    // The text parsed once already; if it does not now, the spans the parser gave are all we have.
    let root = DeTable::parse(text).ok();
    for error in errors.iter_mut() {
        if let Some(root) = &root {
            match (&error.span, error.pointer) {
                (Some(span), Pointer::Value) => refine_key(root, span, &mut error.key),
                (Some(_), Pointer::Key) => {}
                (None, pointer) => error.span = span_of(root, &error.key, pointer),
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
    let Some(mut node) = node_at(root, key) else {
        return;
    };
    let mut path = key.clone();
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
