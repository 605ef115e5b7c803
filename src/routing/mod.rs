//! Routing: host names (`host`), the immutable routing table (`table`), and the handle through which
//! requests read the current table.
//!
//! Architecture invariant: a request loads the table once and keeps that snapshot to its end; a new
//! table is built aside and swapped in whole, so no request ever sees half of a change.

pub mod host;
pub mod table;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub use table::{Canary, CanaryStats, Refused, Route, RoutingTable, Tenant};

/// The current routing table, shared by the proxy, the admin API and the health checker.
#[derive(Debug)]
pub struct TableHandle {
    current: ArcSwap<RoutingTable>,
    /// The generation in use, for those who act when it changes (the health checker).
    generation: watch::Sender<u64>,
}

impl TableHandle {
    pub fn new(table: RoutingTable) -> Self {
        let (generation, _) = watch::channel(table.generation());
        TableHandle {
            current: ArcSwap::from_pointee(table),
            generation,
        }
    }

    /// The table in use now. Lock-free; the snapshot stays valid however long it is held.
    pub fn load(&self) -> Arc<RoutingTable> {
        self.current.load_full()
    }

    /// Makes `table` the one new requests see; requests already running keep theirs.
    pub fn store(&self, table: RoutingTable) {
        let generation = table.generation();
        self.current.store(Arc::new(table));
        self.generation.send_replace(generation);
    }

    /// Wakes whenever a new table is stored.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
