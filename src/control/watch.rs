//! Reload triggers that need no one to call the API: the config file changing on disk, and SIGHUP.
//!
//! The file's folder is watched, not the file: editors that save by writing a temporary file and
//! renaming it over the old one (vim, most IDEs), and Kubernetes' symlink swaps, replace the file's
//! inode, which a watch on the file itself would lose. The file is read once it has been quiet for a
//! moment (a save is often several writes), and a reload of unchanged text is a no-op, so a
//! spurious event costs one read. `[admin] watch_config = false` leaves only SIGHUP and the API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use super::audit::Actor;
use super::ControlPlane;

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
        let _watcher = match watched.then(|| watch_file(self.control.path(), changed)) {
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /reload");
                None
            }
            None => None,
        };
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
        loop {
            tokio::select! {
                Some(()) = changes.recv() => {
                    quiet(&mut changes).await;
                    // Outcomes and refusals are logged, audited and shown in /status by the control plane.
                    let _ = self.control.reload(Actor::FileWatch).await;
                }
                Some(()) = next_hangup(&mut hangups) => {
                    let _ = self.control.reload(Actor::Signal).await;
                }
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

/// Watches the folder of `path` and sends `()` for every event that may have changed the file.
fn watch_file(
    path: &Path,
    changed: mpsc::UnboundedSender<()>,
) -> notify::Result<RecommendedWatcher> {
    let dir: PathBuf = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reading the file (our own reloads do) must not trigger a reload.
        if let EventKind::Access(kind) = event.kind {
            if kind != AccessKind::Close(AccessMode::Write) {
                return;
            }
        }
        let relevant = event.paths.iter().any(|p| {
            p.file_name().is_some_and(|n| {
                n == name.as_os_str() || n.to_str().is_some_and(|n| n.starts_with(".."))
            })
        });
        if relevant {
            let _ = changed.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
