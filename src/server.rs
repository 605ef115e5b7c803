//! Wiring: one Pingora `Server` holding the proxy, the admin API and the health checker, all reading
//! one `TableHandle`.

use std::net::SocketAddr;
use std::sync::Arc;

use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::proxy::ProxyServiceBuilder;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApi;
use crate::config::GatewayConfig;
use crate::control::audit::AuditOpenError;
use crate::control::watch::ConfigWatcher;
use crate::control::ControlPlane;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::routing::{RoutingTable, TableHandle};
use crate::upstream::health::HealthChecker;

/// After SIGTERM, how long in-flight requests get before the runtimes stop (Pingora's default is 300 s,
/// longer than any orchestrator waits).
const GRACE_PERIOD_SECONDS: u64 = 5;
const SHUTDOWN_TIMEOUT_SECONDS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Audit(#[from] AuditOpenError),
}

/// How this process starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Take the listening sockets over from a running gateway (Pingora's graceful upgrade): this
    /// process waits for them, then the old one is sent SIGQUIT.
    pub upgrade: bool,
}

/// A configured server, ready to run; callers may add services first.
pub struct GatewayServer {
    pub server: Server,
    pub control: Arc<ControlPlane>,
}

/// Where the old and new process of a graceful upgrade meet; one per data-plane port, so gateways
/// on one machine do not take each other's sockets.
pub fn upgrade_socket(config: &GatewayConfig) -> String {
    format!(
        "/tmp/tenantgate-upgrade-{}.sock",
        config.gateway.http_listen.port()
    )
}

/// Builds the server for `config` (read from `text`): checks its listen addresses are free (unless
/// upgrading), builds the routing table and adds the proxy, admin, health-check and reload services.
pub fn build(
    config: GatewayConfig,
    text: String,
    options: StartOptions,
) -> Result<GatewayServer, StartError> {
    if !options.upgrade {
        ensure_free("gateway.http_listen", config.gateway.http_listen)?;
        ensure_free("admin.listen", config.admin.listen)?;
    }

    let conf = ServerConf {
        threads: config.gateway.threads,
        work_stealing: config.gateway.work_stealing,
        grace_period_seconds: Some(GRACE_PERIOD_SECONDS),
        graceful_shutdown_timeout_seconds: Some(SHUTDOWN_TIMEOUT_SECONDS),
        upgrade_sock: upgrade_socket(&config),
        pid_file: format!("/tmp/tenantgate-{}.pid", config.gateway.http_listen.port()),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();

    let table = RoutingTable::build(&config.routing, 1, None);
    Metrics::get().observe_table(&table);
    let table = Arc::new(TableHandle::new(table));
    let (http_listen, admin_listen, h2c) = (
        config.gateway.http_listen,
        config.admin.listen,
        config.gateway.h2c,
    );
    let control = Arc::new(ControlPlane::new(config, text, Arc::clone(&table))?);

    let mut options = HttpServerOptions::default();
    options.h2c = h2c;
    let mut proxy =
        ProxyServiceBuilder::new(&server.configuration, Gateway::new(Arc::clone(&table)))
            .name("tenantgate proxy")
            .server_options(options)
            .build();
    proxy.add_tcp(&http_listen.to_string());
    server.add_service(proxy);

    let mut admin = Service::new(
        "tenantgate admin".to_owned(),
        HttpServer::new_app(AdminApi::new(Arc::clone(&control))),
    );
    admin.threads = Some(1);
    admin.add_tcp(&admin_listen.to_string());
    server.add_service(admin);

    let mut health = background_service(
        "tenantgate health checks",
        HealthChecker::new(Arc::clone(&table)),
    );
    health.threads = Some(1);
    server.add_service(health);

    let mut watcher = background_service(
        "tenantgate config watcher",
        ConfigWatcher::new(Arc::clone(&control)),
    );
    watcher.threads = Some(1);
    server.add_service(watcher);

    Ok(GatewayServer { server, control })
}

/// Fails fast, with the setting's name, when an address is taken (Pingora would retry for 30 s and
/// then panic).
fn ensure_free(what: &'static str, addr: SocketAddr) -> Result<(), StartError> {
    let listen_error = |source| StartError::Listen { what, addr, source };
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(listen_error)?;
    // Same socket options as Pingora's listener, so a port in TIME_WAIT is not reported as taken.
    socket.set_reuseaddr(true).map_err(listen_error)?;
    socket.bind(addr).map_err(listen_error)
}
