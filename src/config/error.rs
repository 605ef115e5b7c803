//! Config errors an operator can act on: each names the file, line, column and key it is about.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One step into the TOML document: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySegment {
    Key(String),
    Index(usize),
}

/// Where in the document a key lives, printed the way TOML spells it: `tenants.acme.domains[1]`,
/// `hosts."admin.yourapp.test".pool`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<KeySegment>);

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(KeySegment::Key(key.to_owned()));
        next
    }

    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(KeySegment::Index(index));
        next
    }

    pub fn segments(&self) -> &[KeySegment] {
        &self.0
    }

    /// This path below `base`, when it is below it (`tenants.acme.pool` below `tenants.acme` is
    /// `pool`).
    pub fn strip_prefix(&self, base: &KeyPath) -> Option<KeyPath> {
        self.0
            .strip_prefix(base.0.as_slice())
            .map(|rest| KeyPath(rest.to_vec()))
    }

    /// `rest` below this path.
    pub fn join(&self, rest: &KeyPath) -> KeyPath {
        let mut joined = self.clone();
        joined.0.extend(rest.0.iter().cloned());
        joined
    }

    /// Parses the dotted paths `serde_ignored` reports (`health_check.pth`, `domains.1`) below `self`.
    pub(crate) fn join_ignored(&self, ignored: &serde_ignored::Path<'_>) -> Self {
        fn walk(path: &serde_ignored::Path<'_>, out: &mut Vec<KeySegment>) {
            use serde_ignored::Path as P;
            match path {
                P::Root => {}
                P::Seq { parent, index } => {
                    walk(parent, out);
                    out.push(KeySegment::Index(*index));
                }
                P::Map { parent, key } => {
                    walk(parent, out);
                    out.push(KeySegment::Key(key.clone()));
                }
                P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                    walk(parent, out)
                }
            }
        }
        let mut next = self.clone();
        walk(ignored, &mut next.0);
        next
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                KeySegment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                KeySegment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Which part of a `key = value` line an error points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pointer {
    /// The key itself (an invalid tenant id, an unknown field).
    Key,
    /// The value (an unknown pool name, a bad address).
    Value,
}

/// A 1-based line and column (in characters) in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// Converts a byte offset into `text` to a line and column.
    pub fn of_offset(text: &str, offset: usize) -> Location {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: KeyPath,
    pub message: String,
    pub pointer: Pointer,
    /// Byte range in the file, when the parser knew it; otherwise found from `key` before reporting.
    pub span: Option<Range<usize>>,
    /// Filled in by the loader once the whole file has been checked.
    pub location: Option<Location>,
    /// The text the error is in when it is not the config file itself: a key of the fleet's store
    /// (`etcd:/tenantgate/prod/tenants/acme`). `location` is then a line and column of that key's
    /// value.
    pub origin: Option<std::sync::Arc<str>>,
}

impl ConfigError {
    pub fn at_key(key: KeyPath, message: impl Into<String>) -> Self {
        ConfigError {
            key,
            message: message.into(),
            pointer: Pointer::Key,
            span: None,
            location: None,
            origin: None,
        }
    }

    pub fn at_value(key: KeyPath, message: impl Into<String>) -> Self {
        ConfigError {
            pointer: Pointer::Value,
            ..ConfigError::at_key(key, message)
        }
    }
}

/// Everything wrong with one config file. The file is refused whole: nothing of it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// One line per error, `file:line:column: key: message`, the shape editors and CI annotate.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.errors.iter().map(|e| {
            let (line, column) = e.location.map_or((0, 0), |l| (l.line, l.column));
            match &e.origin {
                Some(origin) => format!("{origin}:{line}:{column}: {}: {}", e.key, e.message),
                None => format!(
                    "{}:{line}:{column}: {}: {}",
                    self.file.display(),
                    e.key,
                    e.message
                ),
            }
        })
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(
            f,
            "{} has {n} error{}; nothing was loaded:",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for line in self.lines() {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Why a config file could not be turned into a gateway configuration.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(ConfigErrors),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_print_as_toml_spells_them() {
        let p = KeyPath::root()
            .key("tenants")
            .key("acme")
            .key("domains")
            .index(1);
        assert_eq!(p.to_string(), "tenants.acme.domains[1]");
        let p = KeyPath::root()
            .key("hosts")
            .key("admin.yourapp.test")
            .key("pool");
        assert_eq!(p.to_string(), "hosts.\"admin.yourapp.test\".pool");
    }

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(
            Location::of_offset(text, 0),
            Location { line: 1, column: 1 }
        );
        assert_eq!(
            Location::of_offset(text, 6),
            Location { line: 2, column: 1 }
        );
        // 'é' is two bytes but one column.
        assert_eq!(
            Location::of_offset(text, 9),
            Location { line: 2, column: 3 }
        );
    }
}
