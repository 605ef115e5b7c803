//! The config file as the control plane reads and writes it, and the files it names (certificates,
//! keys, CAs, a JWKS): what tells a real change on disk from a touch, and an operator's save not
//! loaded yet from the text the running table was built from.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;

use async_trait::async_trait;
use serde_json::Value;

use super::audit::AuditEntry;
use super::edit::write_atomically;
use super::source::{AuditQuery, Base, Beside, Checked, Draft, Note, Plan, Scope, Source};
use super::{Applied, ControlPlane, Outcome, Refusal};
use crate::config::model::{CaBundle, JwksFile};
use crate::config::shared::{assemble, split};
use crate::config::{load_str, ConfigErrors, GatewayConfig};
use crate::tls::certificate::{file_digest, pair_digest};

/// The file a gateway was started with. In file mode it holds the whole routing table; with a
/// `[store]`, only this instance's own settings.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    pub fn new(path: PathBuf) -> Self {
        ConfigFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn read(&self) -> Result<String, Refusal> {
        tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|source| Refusal::Read {
                path: self.path.clone(),
                source,
            })
    }

    /// The file's text, provided it is still the text `applied` was built from. An operator's edit
    /// that is not loaded yet (being fixed, or not picked up) must not be applied behind their back
    /// by an API change made on top of it, nor written over.
    pub async fn read_unchanged(&self, applied: &Applied) -> Result<String, Refusal> {
        let text = self.read().await?;
        if digest(&text) != applied.digest {
            return Err(Refusal::Diverged);
        }
        Ok(text)
    }

    /// Replaces the file with `text`, looking at it once more just before: an operator may have
    /// saved while the change was prepared.
    pub async fn write(&self, applied: &Applied, text: &str) -> Result<(), Refusal> {
        self.read_unchanged(applied).await?;
        write_atomically(&self.path, text).map_err(Refusal::Persist)
    }

    /// The digest of the files `config` names as they are on disk now (`u64::MAX` when one cannot
    /// be read, so that the reload that follows reports it).
    pub async fn referenced_on_disk(config: &std::sync::Arc<GatewayConfig>) -> u64 {
        let config = std::sync::Arc::clone(config);
        tokio::task::spawn_blocking(move || disk_files_digest(&config))
            .await
            .unwrap_or(u64::MAX)
    }
}

pub(super) fn digest(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// The config file as the source of the whole routing table: one instance, no store.
#[derive(Debug)]
pub struct FileSource;

#[async_trait]
impl Source for FileSource {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn load(&self, path: &Path, text: &str) -> Result<GatewayConfig, ConfigErrors> {
        load_str(path, text)
    }

    async fn draft(&self, plane: &ControlPlane, _scope: &Scope) -> Result<Draft, Refusal> {
        let text = plane.file.read_unchanged(&plane.applied()).await?;
        Ok(Draft {
            text,
            base: Base::File,
            started: Instant::now(),
        })
    }

    async fn check(
        &self,
        plane: &ControlPlane,
        draft: &Draft,
        edited: String,
    ) -> Result<Option<Checked>, Refusal> {
        if edited == draft.text {
            return Ok(None);
        }
        let edited_digest = digest(&edited);
        let prepared = plane.prepare(edited, edited_digest).await?;
        Ok(Some(Checked {
            changes: prepared.changes.clone(),
            plan: Plan::File(Box::new(prepared)),
        }))
    }

    async fn write(
        &self,
        plane: &ControlPlane,
        draft: Draft,
        checked: Checked,
        note: Note<'_>,
        _beside: &Beside,
    ) -> Result<Outcome, Refusal> {
        let Plan::File(prepared) = checked.plan else {
            return Err(Refusal::Conflict(
                "a change checked by another source".into(),
            ));
        };
        plane.file.write(&plane.applied(), &prepared.text).await?;
        Ok(plane
            .commit(note.actor, *prepared, draft.started, true)
            .await)
    }

    fn read(&self, plane: &ControlPlane, _scope: &Scope) -> String {
        plane.applied().text.to_string()
    }

    fn export(&self, plane: &ControlPlane) -> (String, u64) {
        let applied = plane.applied();
        let generation = plane.table.load().generation();
        let Ok(doc) = applied.text.parse::<toml_edit::DocumentMut>() else {
            return (String::new(), generation);
        };
        let entries = split(&doc).entries;
        (
            assemble(entries.iter().map(|(e, t)| (e, t.as_str()))),
            generation,
        )
    }

    fn record(&self, plane: &ControlPlane, entries: Vec<AuditEntry>) {
        plane.audit.record(&entries);
    }

    async fn audit(&self, plane: &ControlPlane, query: &AuditQuery) -> Result<Vec<Value>, Refusal> {
        let log = plane.audit.path().to_path_buf();
        let query = query.clone();
        tokio::task::spawn_blocking(move || super::audit::query(&log, &query))
            .await
            .map_err(|e| Refusal::Conflict(format!("reading the audit log failed: {e}")))?
            .map_err(|source| Refusal::Read {
                path: plane.audit.path().to_path_buf(),
                source,
            })
    }
}

/// Every file a config reads besides itself (certificates, keys, upstream CAs): a change to one of
/// them is a change to the config, even when its text stays the same.
pub fn referenced_files(config: &GatewayConfig) -> Vec<&Path> {
    let tls = &config.routing.tls;
    let certificates = tls
        .certificates
        .iter()
        .flat_map(|c| [c.cert.as_path(), c.key.as_path()]);
    let cas = upstream_cas(config).map(|ca| ca.path.as_path());
    let jwks = jwks_file(config).map(|j| j.path.as_path());
    certificates.chain(cas).chain(jwks).collect()
}

fn jwks_file(config: &GatewayConfig) -> Option<&JwksFile> {
    config.routing.identity.jwt.as_ref()?.jwks_file.as_ref()
}

/// The CA bundles the config's pools verify their upstreams with.
fn upstream_cas(config: &GatewayConfig) -> impl Iterator<Item = &CaBundle> {
    config
        .routing
        .pools
        .iter()
        .filter_map(|p| p.tls.as_ref()?.ca.as_ref())
}

/// The digest of the referenced files as `config` read them.
pub(super) fn loaded_files_digest(config: &GatewayConfig) -> u64 {
    let mut h = DefaultHasher::new();
    for c in &config.routing.tls.certificates {
        c.loaded.files_digest.hash(&mut h);
    }
    for ca in upstream_cas(config) {
        ca.file_digest.hash(&mut h);
    }
    if let Some(jwks) = jwks_file(config) {
        jwks.file_digest.hash(&mut h);
    }
    h.finish()
}

/// The same digest for the files on disk now. A file that cannot be read gives a digest no
/// loaded config has, so the reload that follows reports it.
fn disk_files_digest(config: &GatewayConfig) -> u64 {
    let read = |path: &Path| std::fs::read(path).ok();
    let mut h = DefaultHasher::new();
    for c in &config.routing.tls.certificates {
        match (read(&c.cert), read(&c.key)) {
            (Some(cert), Some(key)) => pair_digest(&cert, &key).hash(&mut h),
            _ => return u64::MAX,
        }
    }
    for ca in upstream_cas(config) {
        match read(&ca.path) {
            Some(bytes) => file_digest(&bytes).hash(&mut h),
            None => return u64::MAX,
        }
    }
    if let Some(jwks) = jwks_file(config) {
        match read(&jwks.path) {
            Some(bytes) => file_digest(&bytes).hash(&mut h),
            None => return u64::MAX,
        }
    }
    h.finish()
}
