//! Replacing a file so that a reader, or a crash, sees the old contents or the new ones, never a
//! mix: a temporary file beside it, synced, renamed over it, and the folder synced. The config file
//! (API changes, `key create`) and the CLI's private files (contexts, pulled tenant files) are
//! written this way.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Who may read the file once it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// As the file being replaced allows (a new file: 0644 less the umask). The folder must exist:
    /// a config file is never written where there was none.
    AsBefore,
    /// The owner only (0600) from the first byte, and missing folders are made 0700: for files
    /// that hold secrets.
    Private,
}

/// Replaces the file at `path` with `text`. A symlink is written where it points (the link stays).
pub fn replace(path: &Path, text: &str, access: Access) -> std::io::Result<()> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mode = match access {
        Access::Private => {
            DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            0o600
        }
        Access::AsBefore => std::fs::metadata(&target).map_or(0o644, |m| m.permissions().mode()),
    };
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file");
    let temp = dir.join(format!(".{name}.tenantgate-{}.tmp", std::process::id()));
    // Left by a crash of an earlier process with the same id; `create_new` would refuse it forever.
    let _ = std::fs::remove_file(&temp);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        // The umask may have narrowed `mode`; the file keeps exactly the one it replaces.
        if access == Access::AsBefore {
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn a_replaced_file_keeps_its_mode_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        replace(&path, "new", Access::AsBefore).expect("replace");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        assert_eq!(mode(&path), 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn a_private_file_is_0600_in_a_0700_folder_made_for_it() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("new").join("contexts.toml");
        replace(&path, "secret", Access::Private).expect("replace");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("new")), 0o700);
    }

    #[test]
    fn a_missing_folder_is_not_made_for_a_shared_file() {
        let path = Path::new("/nonexistent-tenantgate-dir/gateway.toml");
        assert!(replace(path, "x", Access::AsBefore).is_err());
    }
}
