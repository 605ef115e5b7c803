//! The fleet's routing table in etcd: the keys below a fleet's prefix, reading them all at one
//! revision, watching them from there, and the transactions that change them. Entries are text
//! here (TOML that `config` reads); this module knows etcd and the layout, nothing of routing.
//!
//! Layout below the prefix (`keys`):
//! - `tenants/<id>`, `pools/<name>`, `hosts/<host>`, `plans/<name>`, and one key per shared
//!   setting (`gateway`, `jwt`, `route_rules`, `limits`, `metrics`): the table;
//! - `meta/changed`: written by every change of the table, compared by `apply` (a plan made at
//!   revision P applies only if nothing changed since);
//! - `audit/<time>-<instance>-<n>`: one record per change, written in the change's transaction;
//! - `promotions/<tenant>`: a stepped promotion's plan and the step it is at;
//! - `locks/promotions/<tenant>` and `canary/<tenant>/<instance>`: bound to the lease of the
//!   instance that holds them, so they vanish with it.

pub mod keys;

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, TlsOptions, Txn,
    TxnOp, WatchOptions, WatchResponse,
};

use crate::config::model::StoreConfig;

/// The runtime the store's connections live on, for the life of the process: etcd's client keeps
/// its channels' tasks on the runtime that connected it, and a gateway's runtimes start only after
/// the first table (read from the store) is built.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tenantgate-store")
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            // Without threads the process cannot run at all; there is nothing to fall back to.
            Err(e) => panic!("cannot start the store's runtime: {e}"),
        }
    })
}

/// What a value that is not UTF-8 reads as.
pub const NOT_TEXT: &str = "\u{0} (the value stored here is not UTF-8 text)";

/// Keys read per request when the whole prefix is read.
const PAGE: i64 = 2_000;
/// The largest answer taken from etcd (a page of large entries, a big watch batch).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store ({store}) cannot be reached: {reason}")]
    Unavailable { store: String, reason: String },
    #[error("revision {revision} is no longer in the store (compacted up to {compacted})")]
    Compacted { revision: i64, compacted: i64 },
    #[error("the store ({store}) refused: {reason}")]
    Refused { store: String, reason: String },
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// One key below the prefix, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// Below the prefix: `tenants/acme`.
    pub key: String,
    pub value: String,
    pub mod_revision: i64,
    pub lease: i64,
}

/// Keys below the prefix (relative) at one revision.
#[derive(Debug)]
pub struct Snapshot {
    pub revision: i64,
    pub kvs: Vec<Kv>,
}

/// What a watch saw at one revision: every key it changed (`value` `None`: deleted).
#[derive(Debug, Clone)]
pub struct Revision {
    pub revision: i64,
    pub changes: Vec<(String, Option<Kv>)>,
}

/// What a watch delivers.
#[derive(Debug)]
pub enum Watched {
    Revisions(Vec<Revision>),
    /// Nothing changed; the store is at this revision (etcd's progress notice).
    Progress(i64),
}

/// A connection to the fleet's etcd. Cheap to clone; calls are bounded by `[store] timeout_ms`.
#[derive(Clone)]
pub struct Store {
    client: Client,
    /// `/tenantgate/prod/`.
    root: String,
    label: String,
    timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to the store. etcd need not be up yet: calls fail (`Unavailable`) until it is.
    pub async fn connect(config: &StoreConfig) -> Result<Store, StoreError> {
        let label = config.label();
        let mut options = ConnectOptions::new()
            .with_timeout(config.timeout)
            .with_connect_timeout(config.timeout)
            .with_keep_alive(Duration::from_secs(2), config.timeout)
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &config.user {
            options = options.with_user(user, password);
        }
        if let Some(tls) = &config.tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.ca {
                t = t.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(t);
        }
        let client = tokio::time::timeout(
            config.timeout,
            Client::connect(&config.endpoints, Some(options)),
        )
        .await
        .map_err(|_| StoreError::Unavailable {
            store: label.clone(),
            reason: "no answer in time".into(),
        })?
        .map_err(|e| classify(&label, e))?;
        Ok(Store {
            client,
            root: format!("{}/", config.prefix),
            label,
            timeout: config.timeout,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The full key of `key` (below the prefix).
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    /// What errors and `export` call an entry: `etcd:/tenantgate/prod/`.
    pub fn origin(&self) -> String {
        format!("etcd:{}", self.root)
    }

    fn relative(&self, full: &[u8]) -> Option<String> {
        let full = std::str::from_utf8(full).ok()?;
        full.strip_prefix(&self.root).map(str::to_owned)
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> Option<Kv> {
        // A value that is not text is kept as one that no reader takes (TOML refuses a NUL):
        // refused where a change would be, never mistaken for a deleted key.
        let value = match kv.value_str() {
            Ok(text) => text.to_owned(),
            Err(_) => NOT_TEXT.to_owned(),
        };
        Some(Kv {
            key: self.relative(kv.key())?,
            value,
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        })
    }

    fn unavailable(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Unavailable {
            store: self.label.clone(),
            reason: reason.into(),
        }
    }

    /// Bounds a call by the store's timeout: a partitioned etcd answers nothing at all.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(|e| classify(&self.label, e)),
            Err(_) => {
                Err(self.unavailable(format!("no answer in {} ms", self.timeout.as_millis())))
            }
        }
    }

    /// Every key below `below` (relative, `""` for the whole prefix) at one revision, read in
    /// pages: the store's current revision, or `at`.
    pub async fn snapshot(&self, below: &str, at: Option<i64>) -> Result<Snapshot, StoreError> {
        self.snapshot_from(below, below, at).await
    }

    /// Every key below each of `below`, all at one revision: the first read's, or `at`.
    pub async fn snapshot_of(
        &self,
        below: &[&str],
        at: Option<i64>,
    ) -> Result<Snapshot, StoreError> {
        let mut whole = Snapshot {
            revision: at.unwrap_or(0),
            kvs: Vec::new(),
        };
        for part in below {
            let at = (whole.revision > 0).then_some(whole.revision);
            let read = self.snapshot(part, at).await?;
            whole.revision = read.revision;
            whole.kvs.extend(read.kvs);
        }
        Ok(whole)
    }

    /// The keys below `below` that sort at or after `from` (which starts with `below`), as
    /// `snapshot` reads them.
    pub async fn snapshot_from(
        &self,
        below: &str,
        from: &str,
        at: Option<i64>,
    ) -> Result<Snapshot, StoreError> {
        let end = prefix_end(self.key(below).as_bytes());
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let mut from = self.key(from).into_bytes();
        let mut revision = at.unwrap_or(0);
        let mut kvs = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let response = self.bounded(kv.get(from.clone(), Some(options))).await?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            for item in response.kvs() {
                if let Some(kv) = self.kv(item) {
                    kvs.push(kv);
                }
            }
            let Some(last) = response.kvs().last() else {
                break;
            };
            if !response.more() {
                break;
            }
            from = last.key().to_vec();
            from.push(0);
        }
        Ok(Snapshot { revision, kvs })
    }

    /// One key and the store's revision it was read at.
    pub async fn get(&self, key: &str) -> Result<(Option<Kv>, i64), StoreError> {
        let mut kv = self.client.kv_client();
        let response = self.bounded(kv.get(self.key(key), None)).await?;
        let revision = response.header().map_or(0, |h| h.revision());
        Ok((response.kvs().first().and_then(|k| self.kv(k)), revision))
    }

    /// Runs a transaction; `Ok(Some(revision))` when its conditions held and it was written,
    /// `Ok(None)` when they did not (nothing was written).
    pub async fn commit(&self, txn: Txn) -> Result<Option<i64>, StoreError> {
        let mut kv = self.client.kv_client();
        let response = self.bounded(kv.txn(txn)).await?;
        let revision = response.header().map_or(0, |h| h.revision());
        Ok(response.succeeded().then_some(revision))
    }

    /// A put of `key` in a transaction.
    pub fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> TxnOp {
        TxnOp::put(self.key(key), value, None)
    }

    /// A put bound to `lease`: the key goes when the lease does.
    pub fn put_leased(&self, key: &str, value: impl Into<Vec<u8>>, lease: i64) -> TxnOp {
        TxnOp::put(
            self.key(key),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )
    }

    pub fn delete(&self, key: &str) -> TxnOp {
        TxnOp::delete(self.key(key), None)
    }

    /// `key` was last written at `revision` (0: `key` does not exist).
    pub fn unchanged(&self, key: &str, revision: i64) -> Compare {
        if revision == 0 {
            Compare::version(self.key(key), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(self.key(key), CompareOp::Equal, revision)
        }
    }

    /// `key` exists.
    pub fn exists(&self, key: &str) -> Compare {
        Compare::version(self.key(key), CompareOp::Greater, 0)
    }

    /// `key` was not written after `revision`.
    pub fn not_since(&self, key: &str, revision: i64) -> Compare {
        Compare::mod_revision(self.key(key), CompareOp::Less, revision + 1)
    }

    /// `key` is held by `lease`.
    pub fn held_by(&self, key: &str, lease: i64) -> Compare {
        Compare::lease(self.key(key), CompareOp::Equal, lease)
    }

    /// Watches the whole prefix from `from` (inclusive). A start before what the store still has
    /// gives `StoreError::Compacted`, from the first message on.
    pub async fn watch(&self, from: i64) -> Result<Watch, StoreError> {
        self.watch_below("", from).await
    }

    /// As `watch`, for the keys below `below` (relative) only.
    pub async fn watch_below(&self, below: &str, from: i64) -> Result<Watch, StoreError> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from)
            .with_progress_notify();
        let mut client = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let stream = self
            .bounded(client.watch(self.key(below), Some(options)))
            .await?;
        Ok(Watch {
            store: self.clone(),
            stream,
            from,
        })
    }

    /// A lease of `ttl`; the caller keeps it alive (`keep_alive`).
    pub async fn grant(&self, ttl: Duration) -> Result<i64, StoreError> {
        let mut lease = self.client.lease_client();
        let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
        let response = self.bounded(lease.grant(seconds, None)).await?;
        Ok(response.id())
    }

    /// Renews `lease` once; false when etcd says it has expired.
    pub async fn keep_alive(&self, lease: i64) -> Result<bool, StoreError> {
        let mut client = self.client.lease_client();
        match tokio::time::timeout(self.timeout, client.keep_alive(lease)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => Ok(false),
            Ok(Err(e)) => Err(classify(&self.label, e)),
            Err(_) => Err(self.unavailable("no answer to a lease renewal in time")),
        }
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        let mut client = self.client.lease_client();
        self.bounded(client.revoke(lease)).await.map(|_| ())
    }

    /// Whether etcd answers at all (a cheap read of one key).
    pub async fn ping(&self) -> Result<i64, StoreError> {
        let mut kv = self.client.kv_client();
        let options = GetOptions::new().with_count_only();
        let response = self
            .bounded(kv.get(self.key(keys::CHANGED), Some(options)))
            .await?;
        Ok(response.header().map_or(0, |h| h.revision()))
    }
}

/// A watch of the whole prefix.
pub struct Watch {
    store: Store,
    stream: etcd_client::WatchStream,
    from: i64,
}

impl Watch {
    /// The next revisions the store made, or a progress notice. `None`: etcd ended the watch
    /// (watch again from the last revision seen).
    pub async fn next(&mut self) -> Result<Option<Watched>, StoreError> {
        loop {
            let message = self
                .stream
                .message()
                .await
                .map_err(|e| classify(&self.store.label, e))?;
            let Some(response) = message else {
                return Ok(None);
            };
            if response.canceled() {
                if response.compact_revision() > 0 {
                    return Err(StoreError::Compacted {
                        revision: self.from,
                        compacted: response.compact_revision(),
                    });
                }
                // Cancelled by etcd for another reason (a permission taken away): watched again
                // after a pause, as after an error, not at once.
                return Err(StoreError::Refused {
                    store: self.store.label.clone(),
                    reason: format!("etcd cancelled the watch: {}", response.cancel_reason()),
                });
            }
            if response.created() && response.events().is_empty() {
                continue;
            }
            return Ok(Some(self.revisions(response)));
        }
    }

    /// Asks etcd for a progress notice (`Watched::Progress`): the revision the watch is at.
    pub async fn request_progress(&mut self) -> Result<(), StoreError> {
        self.stream
            .request_progress()
            .await
            .map_err(|e| classify(&self.store.label, e))
    }

    fn revisions(&self, response: WatchResponse) -> Watched {
        let header = response.header().map_or(0, |h| h.revision());
        if response.events().is_empty() {
            return Watched::Progress(header);
        }
        let mut revisions: Vec<Revision> = Vec::new();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Some(key) = self.store.relative(kv.key()) else {
                continue;
            };
            let value = match event.event_type() {
                EventType::Put => self.store.kv(kv),
                EventType::Delete => None,
            };
            let revision = kv.mod_revision();
            match revisions.last_mut() {
                Some(last) if last.revision == revision => last.changes.push((key, value)),
                _ => revisions.push(Revision {
                    revision,
                    changes: vec![(key, value)],
                }),
            }
        }
        Watched::Revisions(revisions)
    }
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Transport failures and timeouts are the store being unavailable; everything else etcd says is a
/// refusal (too many operations, a request too large, no permission).
fn classify(store: &str, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    let unavailable = |reason: String| StoreError::Unavailable {
        store: store.to_owned(),
        reason,
    };
    match e {
        E::TransportError(t) => unavailable(t.to_string()),
        E::IoError(io) => unavailable(io.to_string()),
        E::GRpcStatus(status) => {
            use tonic::Code;
            let message = status.message().to_owned();
            match status.code() {
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Unknown
                | Code::Aborted => unavailable(if message.is_empty() {
                    format!("{:?}", status.code())
                } else {
                    message
                }),
                Code::OutOfRange if message.contains("compacted") => StoreError::Compacted {
                    revision: 0,
                    compacted: 0,
                },
                _ => StoreError::Refused {
                    store: store.to_owned(),
                    reason: message,
                },
            }
        }
        other => StoreError::Refused {
            store: store.to_owned(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_after_every_key_below_it() {
        assert_eq!(prefix_end(b"/t/"), b"/t0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }
}
