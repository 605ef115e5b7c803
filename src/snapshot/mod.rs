//! The runtime snapshot: the immutable routing table (`table`) and the handle through which requests
//! read the current one.
//!
//! It sits above what it holds (pools, limiters, verifiers, certificates, metric series): those
//! modules never name the table; the background services that walk it are handed closures built
//! here (`readers`), so a change to the table's shape stays in this module.
//!
//! Architecture invariant: a request loads the table once and keeps that snapshot to its end; a new
//! table is built aside and swapped in whole, so no request ever sees half of a change.

mod readers;
pub mod table;

use std::sync::Arc;

use std::sync::mpsc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub use readers::IssuedLookup;
pub use table::{Canary, CanaryStats, Refused, Route, RoutingTable, Target, Tenant};

/// The current routing table, shared by the proxy, the admin API and the health checker.
#[derive(Debug)]
pub struct TableHandle {
    current: ArcSwap<RoutingTable>,
    /// The generation in use, for those who act when it changes (the health checker).
    generation: watch::Sender<u64>,
    /// Where replaced tables go to be dropped (`None`: no thread could be started; they are then
    /// dropped by whoever lets go of them last).
    retired: Option<mpsc::Sender<Arc<RoutingTable>>>,
}

/// How often the thread that drops replaced tables looks whether their last request has ended.
const RETIRE_TICK: Duration = Duration::from_millis(50);

impl TableHandle {
    pub fn new(table: RoutingTable) -> Self {
        let (generation, _) = watch::channel(table.generation());
        TableHandle {
            current: ArcSwap::from_pointee(table),
            generation,
            retired: start_retiring(),
        }
    }

    /// The table in use now. Lock-free; the snapshot stays valid however long it is held.
    pub fn load(&self) -> Arc<RoutingTable> {
        self.current.load_full()
    }

    /// Makes `table` the one new requests see; requests already running keep theirs.
    pub fn store(&self, table: RoutingTable) {
        let generation = table.generation();
        let old = self.current.swap(Arc::new(table));
        self.generation.send_replace(generation);
        if let Some(retired) = &self.retired {
            // Fails only if the thread is gone; the table is then dropped here.
            let _ = retired.send(old);
        }
    }

    /// Wakes whenever a new table is stored.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// A thread that holds every replaced table until no request uses it any more, and drops it then:
/// freeing a million tenants takes a while, and it must not be a request that pays for it (the last
/// request of an old table would otherwise free it on a worker thread, between two requests).
fn start_retiring() -> Option<mpsc::Sender<Arc<RoutingTable>>> {
    let (send, receive) = mpsc::channel::<Arc<RoutingTable>>();
    let spawned = std::thread::Builder::new()
        .name("tenantgate-retire".into())
        .spawn(move || {
            let mut held: Vec<Arc<RoutingTable>> = Vec::new();
            loop {
                match receive.recv_timeout(RETIRE_TICK) {
                    Ok(table) => held.push(table),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                // Only this thread holds it: no request can take it again (it is not current).
                held.retain(|t| Arc::strong_count(t) > 1);
            }
        });
    match spawned {
        Ok(_) => Some(send),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the thread that drops replaced routing tables");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_replaced_table_is_dropped_off_the_request_path_once_its_last_user_lets_go() {
        let config = crate::config::load_str(
            Path::new("t.toml"),
            "[pools.p]\nupstreams = [\"127.0.0.1:9\"]\n[tenants.acme]\npool = \"p\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let handle = TableHandle::new(RoutingTable::build(&config.routing, 1, None));
        let in_use = handle.load();
        let watch = Arc::downgrade(&in_use);
        handle.store(RoutingTable::build(&config.routing, 2, Some(&in_use)));
        std::thread::sleep(RETIRE_TICK * 3);
        assert!(watch.upgrade().is_some(), "a request still holds it");
        // The request's end leaves the retiring thread as the last holder: it drops the table.
        drop(in_use);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while watch.upgrade().is_some() {
            assert!(std::time::Instant::now() < deadline, "never dropped");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(handle.load().generation(), 2);
    }
}
