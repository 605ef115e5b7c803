//! Changes made through the admin API, written into the operators' TOML the way an operator would
//! make them: only the keys that change, keeping comments, order and layout (toml_edit), and the file
//! replaced atomically (temp file, fsync, rename, fsync of the folder).

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, InlineTable, Item, TableLike, Value};

use crate::atomic_file::{replace, Access};
use crate::config::model::CanaryConfig;
use crate::tenant::TenantStatus;

/// One key of a tenant's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantEdit {
    Status(TenantStatus),
    Pool(String),
    PreviousPool(Option<String>),
    Canary(Option<CanaryConfig>),
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("the config file is not TOML that can be edited: {0}")]
    Parse(String),
    #[error("tenant {0:?} is not a table in the config file")]
    NoTenant(String),
}

/// `text` with the edits applied to `[tenants.<id>]`, everything else as it was.
pub fn edit_tenant(text: &str, id: &str, edits: &[TenantEdit]) -> Result<String, EditError> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| EditError::Parse(e.to_string()))?;
    let tenant = doc
        .get_mut("tenants")
        .and_then(|t| t.get_mut(id))
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| EditError::NoTenant(id.to_owned()))?;
    for edit in edits {
        match edit {
            TenantEdit::Status(status) => set(tenant, "status", Value::from(status.as_str())),
            TenantEdit::Pool(pool) => set(tenant, "pool", Value::from(pool.as_str())),
            TenantEdit::PreviousPool(Some(pool)) => {
                set(tenant, "previous_pool", Value::from(pool.as_str()))
            }
            TenantEdit::PreviousPool(None) => {
                tenant.remove("previous_pool");
            }
            TenantEdit::Canary(Some(canary)) => {
                let mut table = InlineTable::new();
                table.insert("pool", Value::from(canary.pool.as_str()));
                table.insert("percent", Value::from(i64::from(canary.percent)));
                set(tenant, "canary", Value::InlineTable(table));
            }
            TenantEdit::Canary(None) => {
                tenant.remove("canary");
            }
        }
    }
    Ok(doc.to_string())
}

/// One `[[tenants.<id>.api_keys]]` entry as `key create` writes it.
#[derive(Debug, Clone)]
pub struct ApiKeyEntry {
    pub id: String,
    pub sha256: String,
    pub created: String,
    pub expires: Option<String>,
}

/// `text` with `entry` appended to the tenant's `api_keys`, in the style the tenant is written in
/// (an `[[tenants.<id>.api_keys]]` table, or an inline list for an inline tenant).
pub fn add_api_key(text: &str, id: &str, entry: &ApiKeyEntry) -> Result<String, EditError> {
    let mut doc = parse(text)?;
    let tenant = tenant_mut(&mut doc, id)?;
    let mut fields = vec![
        ("id", Value::from(entry.id.as_str())),
        ("sha256", Value::from(entry.sha256.as_str())),
        ("created", Value::from(entry.created.as_str())),
    ];
    if let Some(expires) = &entry.expires {
        fields.push(("expires", Value::from(expires.as_str())));
    }
    let is_table = tenant.is_table();
    let Some(tenant) = tenant.as_table_like_mut() else {
        return Err(EditError::NoTenant(id.to_owned()));
    };
    let as_table = |fields: Vec<(&str, Value)>| {
        let mut table = toml_edit::Table::new();
        for (k, v) in fields {
            table.insert(k, Item::Value(v));
        }
        table
    };
    match tenant.get_mut("api_keys") {
        Some(Item::ArrayOfTables(list)) => list.push(as_table(fields)),
        Some(Item::Value(Value::Array(list))) => {
            list.push(Value::InlineTable(fields.into_iter().collect()));
        }
        Some(_) => {
            return Err(EditError::Parse(format!(
                "tenants.{id}.api_keys is not a list"
            )))
        }
        None if is_table => {
            let mut list = toml_edit::ArrayOfTables::new();
            list.push(as_table(fields));
            tenant.insert("api_keys", Item::ArrayOfTables(list));
        }
        None => {
            let mut list = toml_edit::Array::new();
            list.push(Value::InlineTable(fields.into_iter().collect()));
            tenant.insert("api_keys", Item::Value(Value::Array(list)));
        }
    }
    Ok(doc.to_string())
}

/// `text` with the tenant's key `key_id` marked `revoked = when`; `None` when it has no such key.
pub fn revoke_api_key(
    text: &str,
    id: &str,
    key_id: &str,
    when: &str,
) -> Result<Option<String>, EditError> {
    let mut doc = parse(text)?;
    let tenant = tenant_mut(&mut doc, id)?
        .as_table_like_mut()
        .ok_or_else(|| EditError::NoTenant(id.to_owned()))?;
    let matches = |t: &dyn TableLike| t.get("id").and_then(Item::as_str) == Some(key_id);
    let found = match tenant.get_mut("api_keys") {
        Some(Item::ArrayOfTables(list)) => list.iter_mut().find(|t| matches(*t)).map(|t| {
            set(t, "revoked", Value::from(when));
        }),
        Some(Item::Value(Value::Array(list))) => list
            .iter_mut()
            .filter_map(Value::as_inline_table_mut)
            .find(|t| matches(*t))
            .map(|t| set(t, "revoked", Value::from(when))),
        _ => None,
    };
    Ok(found.map(|_| doc.to_string()))
}

fn parse(text: &str) -> Result<DocumentMut, EditError> {
    text.parse()
        .map_err(|e: toml_edit::TomlError| EditError::Parse(e.to_string()))
}

fn tenant_mut<'a>(doc: &'a mut DocumentMut, id: &str) -> Result<&'a mut Item, EditError> {
    doc.get_mut("tenants")
        .and_then(|t| t.get_mut(id))
        .filter(|t| t.is_table_like())
        .ok_or_else(|| EditError::NoTenant(id.to_owned()))
}

/// Sets `key`, keeping the comments around an existing value (`pool = "x"  # why`).
fn set(table: &mut dyn TableLike, key: &str, mut value: Value) {
    match table.get_mut(key).and_then(Item::as_value_mut) {
        Some(existing) => {
            *value.decor_mut() = existing.decor().clone();
            *existing = value;
        }
        None => {
            table.insert(key, Item::Value(value));
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct PersistError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Replaces the config file at `path` with `text` (`atomic_file::replace`, keeping its mode). A
/// file this process may not write is refused, even when its folder would allow replacing it:
/// read-only means read-only.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), PersistError> {
    let error = |source| PersistError {
        path: path.to_path_buf(),
        source,
    };
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if target.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .map_err(error)?;
    }
    replace(path, text, Access::AsBefore).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# The routing table.

[pools.shared]   # everyone
upstreams = ["127.0.0.1:9001"]

[tenants.acme]
name   = "Acme Corp"
pool   = "shared"          # promote when it grows
status = "active"

[tenants.globex]
pool = "shared"
"#;

    #[test]
    fn edits_change_only_their_keys_and_keep_comments() {
        let edited = edit_tenant(
            FILE,
            "acme",
            &[
                TenantEdit::Pool("acme-dedicated".into()),
                TenantEdit::PreviousPool(Some("shared".into())),
                TenantEdit::Status(TenantStatus::Suspended),
            ],
        )
        .expect("edit");
        assert_eq!(
            edited,
            FILE.replace(
                "pool   = \"shared\"          # promote when it grows\nstatus = \"active\"\n",
                "pool   = \"acme-dedicated\"          # promote when it grows\nstatus = \"suspended\"\nprevious_pool = \"shared\"\n",
            )
        );
    }

    #[test]
    fn a_canary_is_an_inline_table_and_removing_it_leaves_no_trace() {
        let with = edit_tenant(
            FILE,
            "globex",
            &[TenantEdit::Canary(Some(CanaryConfig {
                pool: "dedicated".into(),
                percent: 10,
            }))],
        )
        .expect("edit");
        assert!(with.contains("[tenants.globex]\npool = \"shared\"\ncanary = { pool = \"dedicated\", percent = 10 }\n"), "{with}");
        let without = edit_tenant(&with, "globex", &[TenantEdit::Canary(None)]).expect("edit");
        assert_eq!(without, FILE);
    }

    #[test]
    fn inline_tenants_can_be_edited_and_missing_ones_are_an_error() {
        let inline = "[tenants]\ninline = { pool = \"shared\" }  # kept\n";
        let edited =
            edit_tenant(inline, "inline", &[TenantEdit::Pool("other".into())]).expect("edit");
        assert_eq!(edited, "[tenants]\ninline = { pool = \"other\" }  # kept\n");
        assert!(matches!(
            edit_tenant(FILE, "nobody", &[TenantEdit::Pool("x".into())]),
            Err(EditError::NoTenant(_))
        ));
    }

    #[test]
    fn a_read_only_file_is_not_replaced_and_a_symlink_stays_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).expect("chmod");
        // Root may write anything; the refusal only shows for other users.
        let root = std::fs::OpenOptions::new().write(true).open(&path).is_ok();
        if !root {
            assert!(write_atomically(&path, "new").is_err());
            assert_eq!(std::fs::read_to_string(&path).expect("read"), "old");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");

        let link = dir.path().join("current.toml");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        write_atomically(&link, "via link").expect("persist");
        assert!(std::fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "via link");
    }
}
