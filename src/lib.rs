//! tenantgate: a tenant-aware reverse proxy and gateway on Pingora.
//!
//! A request's path through the code (see ARCHITECTURE.md for the whole map):
//! `proxy` (Pingora phases) → `admission` (host → tenant → credential → limits, on the immutable
//! `snapshot` of the routing table) → `upstream` (pick an available upstream) → back through
//! `proxy` to the client, with `metrics` and the access log at the end. `config` turns the
//! operators' TOML into the model the table is built from; `server` wires everything into one
//! Pingora server; `cli` is the command line.

pub mod acme;
pub mod admin;
pub mod admission;
pub mod atomic_file;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod gateway_error;
pub mod host;
pub mod identity;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod path;
pub mod persistent;
pub mod proxy;
pub mod request_id;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod tenant;
pub mod tls;
pub mod traffic_policy;
pub mod upstream;
