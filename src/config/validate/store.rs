//! `[store]`: the etcd a fleet keeps its routing table in.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::Validator;
use crate::config::error::{ConfigError, KeyPath};
use crate::config::file::StoreFile;
use crate::config::model::{
    StoreConfig, StoreTls, DEFAULT_LEASE_SECONDS, DEFAULT_MAX_TXN_OPS,
    DEFAULT_STORE_START_TIMEOUT_MS, DEFAULT_STORE_TIMEOUT_MS,
};

/// The operations one change's transaction writes besides its entries: the audit record and the
/// change fence.
pub const TXN_OVERHEAD: usize = 2;

impl Validator {
    pub(super) fn store(
        &mut self,
        s: Option<&StoreFile>,
        admin: SocketAddr,
        folder: &Path,
    ) -> Option<StoreConfig> {
        let s = s?;
        let at = KeyPath::root().key("store");
        let before = self.errors.len();
        if s.etcd.is_empty() {
            self.errors.push(ConfigError::at_key(
                at.clone(),
                "needs etcd = [\"http://HOST:PORT\", ...]: the endpoints of the etcd the fleet shares",
            ));
        }
        for (i, endpoint) in s.etcd.iter().enumerate() {
            if let Err(why) = check_endpoint(endpoint, s.tls.is_some()) {
                self.errors
                    .push(ConfigError::at_value(at.key("etcd").index(i), why));
            }
        }
        let prefix = match s.prefix.as_deref() {
            None => {
                self.errors.push(ConfigError::at_key(
                    at.clone(),
                    "needs prefix = \"/tenantgate/<fleet>\": every key of the fleet's table is below it, one fleet per prefix",
                ));
                String::new()
            }
            Some(p) => {
                let trimmed = p.trim_end_matches('/');
                if !trimmed.starts_with('/')
                    || trimmed.len() < 2
                    || trimmed.contains(|c: char| c.is_whitespace() || c.is_control())
                {
                    self.errors.push(ConfigError::at_value(
                        at.key("prefix"),
                        format!("{p:?}: a prefix starts with '/', names something below the root (\"/tenantgate/prod\") and has no spaces"),
                    ));
                }
                trimmed.to_owned()
            }
        };
        let user = match (&s.username_env, &s.password_env) {
            (None, None) => None,
            (Some(u), Some(p)) => {
                let read = |v: &mut Self, key: &str, name: &str| match std::env::var(name) {
                    Ok(value) => Some(value),
                    Err(_) => {
                        v.errors.push(ConfigError::at_value(
                            at.key(key),
                            format!("environment variable {name} is not set (or not UTF-8)"),
                        ));
                        None
                    }
                };
                let user = read(self, "username_env", u);
                let password = read(self, "password_env", p);
                user.zip(password)
            }
            _ => {
                self.errors.push(ConfigError::at_key(
                    at.clone(),
                    "give both username_env and password_env, or neither",
                ));
                None
            }
        };
        let tls = s.tls.as_ref().map(|t| {
            let at = at.key("tls");
            let read = |v: &mut Self, key: &str, file: &str| {
                let path = folder.join(file);
                std::fs::read(&path)
                    .map_err(|e| {
                        v.errors.push(ConfigError::at_value(
                            at.key(key),
                            format!("cannot read {}: {e}", path.display()),
                        ))
                    })
                    .ok()
            };
            let ca = t.ca.as_deref().and_then(|f| read(self, "ca", f));
            let identity = match (&t.cert, &t.key) {
                (None, None) => None,
                (Some(c), Some(k)) => {
                    let cert = read(self, "cert", c);
                    let key = read(self, "key", k);
                    cert.zip(key)
                }
                _ => {
                    self.errors.push(ConfigError::at_key(
                        at.clone(),
                        "a client certificate needs both cert and key",
                    ));
                    None
                }
            };
            StoreTls { ca, identity }
        });
        let instance = match &s.instance {
            Some(name) => {
                let ok = !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
                if !ok {
                    self.errors.push(ConfigError::at_value(
                        at.key("instance"),
                        format!(
                            "{name:?}: an instance name is 1 to 64 letters, digits and . _ : -"
                        ),
                    ));
                }
                name.clone()
            }
            None => default_instance(admin),
        };
        let lease_seconds = s.lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS);
        if !(2..=3600).contains(&lease_seconds) {
            self.errors.push(ConfigError::at_value(
                at.key("lease_seconds"),
                format!("{lease_seconds} s: use 2 to 3600"),
            ));
        }
        let max_txn_ops = s.max_txn_ops.unwrap_or(DEFAULT_MAX_TXN_OPS);
        if max_txn_ops <= TXN_OVERHEAD + 1 {
            self.errors.push(ConfigError::at_value(
                at.key("max_txn_ops"),
                format!("{max_txn_ops}: a transaction needs room for an entry, its audit record and the change fence (at least {})", TXN_OVERHEAD + 2),
            ));
        }
        let ms = |v: &mut Self, key: &str, value: Option<u64>, default: u64| {
            let ms = value.unwrap_or(default);
            if !(1..=600_000).contains(&ms) {
                v.errors.push(ConfigError::at_value(
                    at.key(key),
                    format!("{ms} ms: use 1 to 600000"),
                ));
            }
            Duration::from_millis(ms)
        };
        let timeout = ms(self, "timeout_ms", s.timeout_ms, DEFAULT_STORE_TIMEOUT_MS);
        let start_timeout = ms(
            self,
            "start_timeout_ms",
            s.start_timeout_ms,
            DEFAULT_STORE_START_TIMEOUT_MS,
        );
        (self.errors.len() == before).then(|| StoreConfig {
            endpoints: s.etcd.clone(),
            prefix,
            user,
            tls,
            instance,
            lease: Duration::from_secs(lease_seconds),
            max_txn_ops,
            timeout,
            start_timeout,
        })
    }
}

fn check_endpoint(endpoint: &str, tls: bool) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| format!("{endpoint:?} is not a URL: write http://HOST:PORT"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") if tls => {}
        Some("https") => {
            return Err(format!(
                "{endpoint:?} is https: add tls = {{ ca = \"...\" }} to [store] to say how to verify it"
            ))
        }
        _ => return Err(format!("{endpoint:?}: an endpoint is http://HOST:PORT or https://HOST:PORT")),
    }
    if uri.host().is_none() || uri.port_u16().is_none() {
        return Err(format!(
            "{endpoint:?}: give the host and the port (2379 is etcd's)"
        ));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!(
            "{endpoint:?}: an endpoint has no path; the keys' prefix is `prefix`"
        ));
    }
    Ok(())
}

/// The host name and the admin port: unique across a fleet, also of several instances on one host.
fn default_instance(admin: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tenantgate".to_owned());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .take(50)
        .collect();
    format!("{host}:{}", admin.port())
}
