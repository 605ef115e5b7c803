//! The routing table as operators write it (`file`), the rules it must follow (`validate`), and the
//! checked model the rest of the gateway is built from (`model`).
//!
//! Architecture invariant: nothing outside this module sees raw TOML. A file is either accepted
//! whole or refused whole with every error, each placed at its file, line, column and key.

pub mod diff;
pub mod error;
pub mod file;
pub mod load;
pub mod model;
pub mod shared;
pub mod validate;

pub use error::{ConfigError, ConfigErrors, KeyPath, LoadError, Location};
pub use load::{load, load_str, load_with_text};
pub use model::GatewayConfig;

#[cfg(test)]
mod tests;
