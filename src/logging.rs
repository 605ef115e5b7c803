//! Process-wide logging: one `tracing` subscriber for the gateway's own events, the access log
//! (target `tenantgate::access`) and Pingora's `log` records.
//!
//! Lines go through a non-blocking writer: request threads hand them to a writer thread over a
//! lock-free queue instead of taking the stderr lock for every access-log line.

use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::model::LogFormat;

/// `RUST_LOG` overrides this. Pingora's informational lines are mostly start-up noise.
const DEFAULT_FILTER: &str =
    "info,pingora_core=warn,pingora_proxy=warn,pingora_load_balancing=warn";

/// Lines buffered for the writer thread; when full, request threads wait rather than drop lines.
const BUFFERED_LINES: usize = 64 * 1024;

/// Flushes buffered lines when dropped; keep it until the process is done.
pub struct LogGuard(#[allow(dead_code)] Option<WorkerGuard>);

/// Installs the subscriber. A second call (tests, a restart in the same process) changes nothing.
pub fn init(format: LogFormat) -> LogGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(BUFFERED_LINES)
        .lossy(false)
        .thread_name("tenantgate-log")
        .finish(std::io::stderr());
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    LogGuard(installed.is_ok().then_some(guard))
}
