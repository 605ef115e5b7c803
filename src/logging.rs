//! Process-wide logging: one `tracing` subscriber for the gateway's own events, the access log
//! (target `tenantgate::access`) and Pingora's `log` records.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::model::LogFormat;

/// `RUST_LOG` overrides this. Pingora's informational lines are mostly start-up noise.
const DEFAULT_FILTER: &str =
    "info,pingora_core=warn,pingora_proxy=warn,pingora_load_balancing=warn";

/// Installs the subscriber; a second call (tests, the demo after a failed start) changes nothing.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
