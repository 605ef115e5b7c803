//! The append-only audit log: one JSON line per change to the routing table, applied or refused,
//! whoever made it (a file edit, SIGHUP, the admin API, an automatic promotion step).
//!
//! Entries are written and synced one by one: changes are rare, and an audit trail that loses its
//! last lines in a crash is not one.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Value};

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The config file changed on disk.
    FileWatch,
    /// SIGHUP.
    Signal,
    /// The admin API: the client's address, and the name it gave itself (`X-Actor`), if any.
    Api { peer: String, name: Option<String> },
    /// A step of a stepped promotion, or its automatic rollback.
    Promotion,
    /// The ACME client: a certificate issued, renewed, or an order that failed.
    Acme,
    /// A revision of the fleet's store, applied from the watch (its change was audited by the
    /// instance that made it).
    Store { revision: i64 },
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::FileWatch => f.write_str("file-watch"),
            Actor::Signal => f.write_str("sighup"),
            Actor::Api { peer, name: None } => write!(f, "admin-api {peer}"),
            Actor::Api {
                peer,
                name: Some(n),
            } => write!(f, "admin-api {peer} ({n})"),
            Actor::Promotion => f.write_str("promotion"),
            Actor::Acme => f.write_str("acme"),
            Actor::Store { revision } => write!(f, "store revision {revision}"),
        }
    }
}

/// One entry. `result` is `applied` or `refused`; a refused entry says why in `reason`.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub actor: Actor,
    pub action: String,
    pub tenant: Option<String>,
    pub old: Value,
    pub new: Value,
    pub generation: u64,
    pub applied: bool,
    pub reason: Option<String>,
}

impl AuditEntry {
    fn to_json(&self) -> Value {
        json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "actor": self.actor.to_string(),
            "action": self.action,
            "tenant": self.tenant,
            "old": self.old,
            "new": self.new,
            "generation": self.generation,
            "result": if self.applied { "applied" } else { "refused" },
            "reason": self.reason,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit log {path}: {source}")]
pub struct AuditOpenError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating it, and its folder, if needed) the log for appending. Failing here stops
    /// start-up: a gateway that cannot audit must not accept changes.
    pub fn open(path: &Path) -> Result<AuditLog, AuditOpenError> {
        let open = || {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            OpenOptions::new().create(true).append(true).open(path)
        };
        let file = open().map_err(|source| AuditOpenError {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the entries as JSON lines and syncs them to disk. A failure is logged, not returned:
    /// by the time a change is audited it has been applied and persisted.
    pub fn record(&self, entries: &[AuditEntry]) {
        if entries.is_empty() {
            return;
        }
        let mut buf = Vec::with_capacity(entries.len() * 200);
        for entry in entries {
            // A `Value` always serializes.
            let _ = serde_json::to_writer(&mut buf, &entry.to_json());
            buf.push(b'\n');
        }
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit log");
        }
    }

    /// The last `n` entries about `tenant`, oldest first, from the log's last `RECENT_SCAN` bytes:
    /// `tenants show` wants the latest changes, and a long log is not read whole for them.
    pub fn recent(&self, tenant: &str, n: usize) -> std::io::Result<Vec<Value>> {
        let mut file = File::open(&self.path)?;
        let length = file.metadata()?.len();
        let start = length.saturating_sub(RECENT_SCAN);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail)?;
        // From the middle of the file, the first line is a fragment.
        let whole = match start {
            0 => &tail[..],
            _ => tail
                .iter()
                .position(|&b| b == b'\n')
                .map_or(&[][..], |i| &tail[i + 1..]),
        };
        let mut found: Vec<Value> = whole
            .split(|&b| b == b'\n')
            .rev()
            .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
            .filter(|entry| entry["tenant"] == tenant)
            .take(n)
            .collect();
        found.reverse();
        Ok(found)
    }
}

/// The entries of the log at `path` that `query` asks for, oldest first (`tenantgate audit` on a
/// gateway without a store). The whole log is read: this is an operator's question, not a
/// request's.
pub fn query(path: &Path, query: &super::source::AuditQuery) -> std::io::Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let since = query
        .since
        .and_then(chrono::DateTime::from_timestamp_millis);
    let mut found: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| query.tenant.as_deref().is_none_or(|t| entry["tenant"] == t))
        .filter(|entry| {
            let time = entry["time"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            match (since, time) {
                (Some(since), Some(time)) => time >= since,
                _ => true,
            }
        })
        .collect();
    if let Some(limit) = query.limit {
        let skip = found.len().saturating_sub(limit);
        found.drain(..skip);
    }
    Ok(found)
}

/// How much of the end of the audit log `recent` reads.
const RECENT_SCAN: u64 = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("sub").join("audit.jsonl");
        let log = AuditLog::open(&path).expect("open");
        let entry = AuditEntry {
            actor: Actor::Api {
                peer: "127.0.0.1:5000".into(),
                name: Some("cli".into()),
            },
            action: "tenant.moved".into(),
            tenant: Some("acme".into()),
            old: json!("shared"),
            new: json!("acme-dedicated"),
            generation: 3,
            applied: true,
            reason: None,
        };
        log.record(std::slice::from_ref(&entry));
        log.record(&[AuditEntry {
            applied: false,
            reason: Some("nope".into()),
            ..entry
        }]);
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["actor"], "admin-api 127.0.0.1:5000 (cli)");
        assert_eq!(lines[0]["tenant"], "acme");
        assert_eq!(lines[0]["old"], "shared");
        assert_eq!(lines[0]["result"], "applied");
        assert_eq!(lines[1]["result"], "refused");
        assert_eq!(lines[1]["reason"], "nope");
        assert!(lines[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));

        let recent = log.recent("acme", 1).expect("recent");
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0]["result"], "refused", "the newest one");
        assert_eq!(log.recent("acme", 10).expect("recent").len(), 2);
        assert!(log.recent("globex", 10).expect("recent").is_empty());
    }
}
