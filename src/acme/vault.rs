//! Where the ACME account and the issued certificates are kept: a folder (`state_dir`, one
//! instance) or the fleet's store (every instance). In the store, pending challenges are kept too,
//! and an order holds a lock on its name, bound to the instance's lease.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

use crate::atomic_file::{self, Access};
use crate::store::{keys, Store, StoreError};

/// A certificate chain and its key, PEM, as kept.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredPair {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for StoredPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredPair").finish_non_exhaustive()
    }
}

/// A challenge as the fleet shares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Token and key authorization.
    Http01 {
        token: String,
        key_authorization: String,
    },
    /// Name and the key authorization's SHA-256.
    TlsAlpn01 { name: String, digest: Vec<u8> },
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{what} in the store is not what tenantgate wrote: {message}")]
    Corrupt { what: String, message: String },
}

pub enum Vault {
    Dir(PathBuf),
    Store {
        store: Box<Store>,
        instance: String,
        /// The lease (0 until granted) that locks and published challenges are bound to; the
        /// service keeps it alive.
        lease: AtomicI64,
    },
}

impl Vault {
    pub fn label(&self) -> String {
        match self {
            Vault::Dir(dir) => dir.display().to_string(),
            Vault::Store { store, .. } => format!("{}{}", store.origin(), keys::ACME),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Vault::Store { .. })
    }

    /// The account's credentials (JSON), if one was made.
    pub async fn account(&self) -> Result<Option<String>, VaultError> {
        match self {
            Vault::Dir(dir) => read_optional(&dir.join("account.json")),
            Vault::Store { store, .. } => {
                Ok(store.get(keys::ACME_ACCOUNT).await?.0.map(|kv| kv.value))
            }
        }
    }

    /// Keeps a new account, unless another instance kept one first: then that one is returned,
    /// and the caller uses it (one account per fleet).
    pub async fn keep_account(&self, credentials: &str) -> Result<String, VaultError> {
        match self {
            Vault::Dir(dir) => {
                write_private(&dir.join("account.json"), credentials)?;
                Ok(credentials.to_owned())
            }
            Vault::Store { store, .. } => {
                let txn = etcd_client::Txn::new()
                    .when([store.unchanged(keys::ACME_ACCOUNT, 0)])
                    .and_then([store.put(keys::ACME_ACCOUNT, credentials)]);
                if store.commit(txn).await?.is_some() {
                    return Ok(credentials.to_owned());
                }
                let (kv, _) = store.get(keys::ACME_ACCOUNT).await?;
                kv.map(|kv| kv.value).ok_or_else(|| VaultError::Corrupt {
                    what: keys::ACME_ACCOUNT.to_owned(),
                    message: "written by another instance, then gone".to_owned(),
                })
            }
        }
    }

    /// Every certificate kept, by name.
    pub async fn certificates(&self) -> Result<Vec<(String, StoredPair)>, VaultError> {
        match self {
            Vault::Dir(dir) => {
                let folder = dir.join("certs");
                let entries = match std::fs::read_dir(&folder) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(source) => {
                        return Err(VaultError::Io {
                            path: folder,
                            source,
                        })
                    }
                };
                let mut out = Vec::new();
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Some(name) = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_suffix(".pem"))
                    else {
                        continue;
                    };
                    let (Some(cert), Some(key)) = (
                        read_optional(&path)?,
                        read_optional(&folder.join(format!("{name}.key")))?,
                    ) else {
                        continue;
                    };
                    out.push((name.to_owned(), StoredPair { cert, key }));
                }
                Ok(out)
            }
            Vault::Store { store, .. } => {
                let snapshot = store.snapshot(keys::ACME_CERTS, None).await?;
                Ok(snapshot
                    .kvs
                    .into_iter()
                    .filter_map(|kv| parse_certificate(&kv.key, &kv.value))
                    .collect())
            }
        }
    }

    pub async fn keep_certificate(&self, name: &str, pair: &StoredPair) -> Result<(), VaultError> {
        let file_name = safe_name(name)?;
        match self {
            Vault::Dir(dir) => {
                let folder = dir.join("certs");
                write_private(&folder.join(format!("{file_name}.key")), &pair.key)?;
                write_private(&folder.join(format!("{file_name}.pem")), &pair.cert)
            }
            Vault::Store { store, .. } => {
                let value = serde_json::to_string(pair).map_err(|e| VaultError::Corrupt {
                    what: name.to_owned(),
                    message: e.to_string(),
                })?;
                let key = format!("{}{name}", keys::ACME_CERTS);
                let txn = etcd_client::Txn::new().and_then([store.put(&key, value)]);
                store.commit(txn).await?;
                Ok(())
            }
        }
    }

    /// Takes the fleet's lock on ordering `name`; false when another instance holds it. Alone,
    /// this instance always has it.
    pub async fn lock(&self, name: &str) -> Result<bool, VaultError> {
        let Vault::Store {
            store,
            instance,
            lease,
        } = self
        else {
            return Ok(true);
        };
        let lease = lease.load(Ordering::Relaxed);
        if lease == 0 {
            return Ok(false);
        }
        let key = format!("{}{name}", keys::ACME_LOCKS);
        let txn = etcd_client::Txn::new()
            .when([store.unchanged(&key, 0)])
            .and_then([store.put_leased(&key, instance.as_str(), lease)]);
        Ok(store.commit(txn).await?.is_some())
    }

    pub async fn unlock(&self, name: &str) -> Result<(), VaultError> {
        if let Vault::Store { store, lease, .. } = self {
            let key = format!("{}{name}", keys::ACME_LOCKS);
            let txn = etcd_client::Txn::new()
                .when([store.held_by(&key, lease.load(Ordering::Relaxed))])
                .and_then([store.delete(&key)]);
            store.commit(txn).await?;
        }
        Ok(())
    }

    /// Makes a challenge answerable by every instance (alone: nothing to do, the caller's own
    /// `Challenges` answers it). Bound to the lease, so a crashed order leaves nothing behind.
    pub async fn publish(&self, pending: &Pending) -> Result<(), VaultError> {
        let Vault::Store { store, lease, .. } = self else {
            return Ok(());
        };
        let (key, value) = pending_key_value(pending);
        let lease = lease.load(Ordering::Relaxed);
        let put = match lease {
            0 => store.put(&key, value),
            lease => store.put_leased(&key, value, lease),
        };
        store
            .commit(etcd_client::Txn::new().and_then([put]))
            .await?;
        Ok(())
    }

    pub async fn withdraw(&self, pending: &Pending) -> Result<(), VaultError> {
        if let Vault::Store { store, .. } = self {
            let (key, _) = pending_key_value(pending);
            store
                .commit(etcd_client::Txn::new().and_then([store.delete(&key)]))
                .await?;
        }
        Ok(())
    }
}

fn pending_key_value(pending: &Pending) -> (String, String) {
    match pending {
        Pending::Http01 {
            token,
            key_authorization,
        } => (
            format!("{}{token}", keys::ACME_HTTP01),
            key_authorization.clone(),
        ),
        Pending::TlsAlpn01 { name, digest } => {
            (format!("{}{name}", keys::ACME_TLS_ALPN01), hex(digest))
        }
    }
}

/// What a key below `acme/` in the store says, for the watch.
#[derive(Debug)]
pub enum Shared {
    Certificate(String, StoredPair),
    Challenge(Pending),
}

/// `key` below the prefix; `value` `None` when the key was deleted. `None` back for keys that are
/// not shared state (the account) or do not parse.
pub fn parse_shared(key: &str, value: Option<&str>) -> Option<(Shared, bool)> {
    let deleted = value.is_none();
    if let Some(name) = key.strip_prefix(keys::ACME_CERTS) {
        let pair = match value {
            Some(v) => serde_json::from_str(v).ok()?,
            None => StoredPair {
                cert: String::new(),
                key: String::new(),
            },
        };
        return Some((Shared::Certificate(name.to_owned(), pair), deleted));
    }
    if let Some(token) = key.strip_prefix(keys::ACME_HTTP01) {
        return Some((
            Shared::Challenge(Pending::Http01 {
                token: token.to_owned(),
                key_authorization: value.unwrap_or("").to_owned(),
            }),
            deleted,
        ));
    }
    if let Some(name) = key.strip_prefix(keys::ACME_TLS_ALPN01) {
        let digest = match value {
            Some(v) => unhex(v)?,
            None => Vec::new(),
        };
        return Some((
            Shared::Challenge(Pending::TlsAlpn01 {
                name: name.to_owned(),
                digest,
            }),
            deleted,
        ));
    }
    None
}

fn parse_certificate(key: &str, value: &str) -> Option<(String, StoredPair)> {
    let name = key.strip_prefix(keys::ACME_CERTS)?;
    let pair = serde_json::from_str(value).ok()?;
    Some((name.to_owned(), pair))
}

/// Names come from validated domains; this keeps a file name from ever leaving its folder.
fn safe_name(name: &str) -> Result<&str, VaultError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if ok {
        Ok(name)
    } else {
        Err(VaultError::Corrupt {
            what: name.to_owned(),
            message: "not a domain name".to_owned(),
        })
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, VaultError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(VaultError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), VaultError> {
    atomic_file::replace(path, text, Access::Private).map_err(|source| VaultError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn a_folder_keeps_keys_private_and_gives_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::Dir(dir.path().join("acme"));
        assert!(vault.account().await.unwrap().is_none());
        vault.keep_account("{\"id\":\"x\"}").await.unwrap();
        let pair = StoredPair {
            cert: "CERT".into(),
            key: "KEY".into(),
        };
        vault
            .keep_certificate("shop.example.test", &pair)
            .await
            .unwrap();
        for file in ["account.json", "certs/shop.example.test.key"] {
            let mode = std::fs::metadata(dir.path().join("acme").join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let kept = vault.certificates().await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].0, "shop.example.test");
        assert_eq!(kept[0].1.key, "KEY");
        assert!(vault
            .keep_certificate("../etc/passwd", &pair)
            .await
            .is_err());
    }

    #[test]
    fn shared_keys_parse_back_to_what_was_published() {
        let pending = Pending::TlsAlpn01 {
            name: "shop.example.test".into(),
            digest: vec![0, 1, 254, 255],
        };
        let (key, value) = pending_key_value(&pending);
        match parse_shared(&key, Some(&value)) {
            Some((Shared::Challenge(p), false)) => assert_eq!(p, pending),
            other => panic!("{other:?}"),
        }
        let (key, _) = pending_key_value(&Pending::Http01 {
            token: "tok".into(),
            key_authorization: "tok.thumb".into(),
        });
        assert!(matches!(
            parse_shared(&key, None),
            Some((Shared::Challenge(_), true))
        ));
        assert!(parse_shared(keys::ACME_ACCOUNT, Some("{}")).is_none());
    }
}
