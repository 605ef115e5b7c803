//! Reload triggers that need no one to call the API: the config file changing on disk, and SIGHUP.
//!
//! The file's folder is watched, not the file: editors that save by writing a temporary file and
//! renaming it over the old one (vim, most IDEs), and Kubernetes' symlink swaps, replace the file's
//! inode, which a watch on the file itself would lose. The file is read once it has been quiet for a
//! moment (a save is often several writes), and a reload of unchanged text is a no-op, so a
//! spurious event costs one read. `[admin] watch_config = false` leaves only SIGHUP and the API.
//!
//! The certificate, key and CA files the config names are watched the same way (their folders,
//! by file name), so a certificate renewed on disk is served without anyone asking for a reload.
//! The set follows the config: after each change, new files' folders are watched too.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use async_trait::async_trait;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use super::audit::Actor;
use super::{referenced_files, ControlPlane};

/// A file is read once it has seen no change for this long (a save is often several writes)...
const DEBOUNCE: Duration = Duration::from_millis(50);
/// ...or after this long, for a file that keeps changing.
const QUIET_MAX: Duration = Duration::from_secs(2);

pub struct ConfigWatcher {
    control: Arc<ControlPlane>,
}

impl ConfigWatcher {
    pub fn new(control: Arc<ControlPlane>) -> Self {
        ConfigWatcher { control }
    }
}

#[async_trait]
impl BackgroundService for ConfigWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (changed, mut changes) = mpsc::unbounded_channel();
        let watched = self.control.applied().config.admin.watch_config;
        let mut watch = match watched.then(|| FileWatch::new(changed)) {
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /reload");
                None
            }
            None => None,
        };
        if let Some(w) = &mut watch {
            w.follow(&self.control);
        }
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP");
                None
            }
        };
        // What changed while this process was starting (a graceful upgrade waits for its sockets
        // while the old process may still take changes) is loaded now.
        let _ = self.control.reload(Actor::FileWatch).await;
        let mut generations = self.control.table().subscribe();
        loop {
            if let Some(w) = &mut watch {
                w.follow(&self.control);
            }
            tokio::select! {
                Some(()) = changes.recv() => {
                    quiet(&mut changes).await;
                    // Outcomes and refusals are logged, audited and shown in /status by the control plane.
                    let _ = self.control.reload(Actor::FileWatch).await;
                }
                Some(()) = next_hangup(&mut hangups) => {
                    let _ = self.control.reload(Actor::Signal).await;
                }
                // Any change (the API's too) may name new certificate files.
                _ = generations.changed() => {}
                _ = shutdown.changed() => break,
            }
        }
    }
}

/// Waits until the file has been quiet for `DEBOUNCE` (a slow copy is many writes), at most
/// `QUIET_MAX`.
async fn quiet(changes: &mut mpsc::UnboundedReceiver<()>) {
    let deadline = tokio::time::Instant::now() + QUIET_MAX;
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(DEBOUNCE, changes.recv()).await {
            Ok(Some(())) => continue,
            _ => return,
        }
    }
}

async fn next_hangup(hangups: &mut Option<Signal>) -> Option<()> {
    match hangups {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Watches the folders of the config file and of every file it names, and sends `()` for every
/// event that may have changed one of them.
struct FileWatch {
    watcher: RecommendedWatcher,
    folders: HashSet<PathBuf>,
    /// The file names that matter, in any watched folder (a same-named file in another watched
    /// folder costs one no-op reload).
    names: Arc<ArcSwap<HashSet<OsString>>>,
}

impl FileWatch {
    fn new(changed: mpsc::UnboundedSender<()>) -> notify::Result<FileWatch> {
        let names: Arc<ArcSwap<HashSet<OsString>>> = Arc::default();
        let wanted = Arc::clone(&names);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // Reading a file (our own reloads do) must not trigger a reload.
            if let EventKind::Access(kind) = event.kind {
                if kind != AccessKind::Close(AccessMode::Write) {
                    return;
                }
            }
            let wanted = wanted.load();
            let relevant = event.paths.iter().any(|p| {
                p.file_name().is_some_and(|n| {
                    wanted.contains(n) || n.to_str().is_some_and(|n| n.starts_with(".."))
                })
            });
            if relevant {
                let _ = changed.send(());
            }
        })?;
        Ok(FileWatch {
            watcher,
            folders: HashSet::new(),
            names,
        })
    }

    /// Watches what the config in use names (its own file included).
    fn follow(&mut self, control: &ControlPlane) {
        let applied = control.applied();
        let mut files = vec![control.path()];
        files.extend(referenced_files(&applied.config));
        let mut names = HashSet::new();
        for file in files {
            names.insert(
                file.file_name()
                    .map(|n| n.to_os_string())
                    .unwrap_or_default(),
            );
            let folder = match file.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if self.folders.contains(&folder) {
                continue;
            }
            match self.watcher.watch(&folder, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.folders.insert(folder);
                }
                Err(e) => {
                    tracing::warn!(folder = %folder.display(), error = %e, "cannot watch for file changes; reload with SIGHUP or POST /reload")
                }
            }
        }
        self.names.store(Arc::new(names));
    }
}
