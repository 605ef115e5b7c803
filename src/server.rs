//! Wiring: one Pingora `Server` holding the proxy, the admin API and the health checker, all reading
//! one `TableHandle`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::protocols::ALPN;
use pingora::proxy::ProxyServiceBuilder;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownSignal, ShutdownSignalWatch, UnixShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};

use crate::acme::{Acme, AcmeService, CertificateEvent};
use crate::admin::{AdminApi, ScrapeEndpoint};
use crate::config::GatewayConfig;
use crate::control::audit::AuditOpenError;
use crate::control::store::{StoreSource, StoreWatcher};
use crate::control::watch::ConfigWatcher;
use crate::control::ControlPlane;
use crate::identity::jwks::JwksRefresher;
use crate::limits::fleet::{Fleet, LimitsService};
use crate::metrics::tenant::RequestRates;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::snapshot::{RoutingTable, TableHandle};
use crate::telemetry::Tracing;
use crate::tls::hello::ReadClientHello;
use crate::tls::{KeepServerName, SniResolver};
use crate::upstream::health::HealthChecker;
use crate::upstream::keepalive_pool_size;

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
    #[error("cannot set up TLS: {0}")]
    Tls(Box<pingora::Error>),
    #[error("{0}")]
    Store(#[from] crate::control::store::OpenError),
    #[error("{0}")]
    Tracing(#[from] crate::telemetry::TracingError),
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
    /// Set when a graceful shutdown or upgrade begins (see `DrainFirst`).
    pub draining: Arc<AtomicBool>,
}

/// How long keep-alive clients are told to reconnect before the listeners go (see `DrainFirst`).
const DRAIN: Duration = Duration::from_secs(1);

/// Pingora's shutdown signals, with a drain first. On SIGQUIT (graceful upgrade) and SIGTERM the
/// gateway answers every request with `Connection: close` for `DRAIN`, so busy clients move to new
/// connections (served by the new process, after an upgrade) of their own accord. Only then does
/// Pingora hand over or close the listeners and drop idle connections. Without it, a client that sends
/// on a kept-alive connection just as it is dropped gets a reset. SIGINT exits the process at once
/// (exit code 130).
pub struct DrainFirst {
    draining: Arc<AtomicBool>,
}

impl DrainFirst {
    pub fn new(draining: Arc<AtomicBool>) -> Self {
        DrainFirst { draining }
    }
}

#[async_trait]
impl ShutdownSignalWatch for DrainFirst {
    async fn recv(&self) -> ShutdownSignal {
        let signals = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = signals else {
            tracing::error!("cannot install signal handlers; falling back to Pingora's");
            return UnixShutdownSignalWatch.recv().await;
        };
        let requested = tokio::select! {
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => {
                // Pingora's fast shutdown stops the runtimes under listeners that were never told
                // to stop, and a listener can then spin on a failing accept forever (seen with
                // Pingora 0.9.1: Ctrl-C left a gateway at 100% CPU). "At once" is the process's
                // exit, then.
                tracing::info!("SIGINT: exiting at once");
                std::process::exit(130);
            }
        };
        self.draining.store(true, Ordering::Relaxed);
        tracing::info!(
            drain_ms = u64::try_from(DRAIN.as_millis()).unwrap_or(u64::MAX),
            "shutting down: telling keep-alive clients to reconnect"
        );
        tokio::time::sleep(DRAIN).await;
        requested
    }
}

/// Where the old and new process of a graceful upgrade meet: one per config file (by its real
/// path), so gateways on one machine do not take each other's sockets, and an upgrade that moves a
/// listen address still finds its predecessor. The name must be the same for two different builds,
/// hence a fixed hash (FNV-1a), not the standard library's.
pub fn upgrade_socket(config: &GatewayConfig) -> String {
    format!("/tmp/tenantgate-upgrade-{:016x}.sock", config_key(config))
}

fn config_key(config: &GatewayConfig) -> u64 {
    let path = std::fs::canonicalize(&config.path).unwrap_or_else(|_| config.path.clone());
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}
/// What a gateway starts from: its config (with a store, the instance file's with the store's
/// table) and the text of its file.
pub struct Loaded {
    pub config: GatewayConfig,
    pub text: String,
    pub store: Option<Arc<StoreSource>>,
    /// Of the first table: 1, or the store's revision.
    pub generation: u64,
}

impl Loaded {
    /// The file's config, and with `[store]` the fleet's table read from it at one revision.
    pub fn open(config: GatewayConfig, text: String) -> Result<Loaded, StartError> {
        let Some(store) = config.gateway.store.clone() else {
            return Ok(Loaded {
                config,
                text,
                store: None,
                generation: 1,
            });
        };
        let opened =
            crate::store::runtime().block_on(StoreSource::open(&store, &config.path, &text))?;
        Ok(Loaded {
            config: opened.config,
            text,
            store: Some(opened.source),
            generation: u64::try_from(opened.revision).unwrap_or(0),
        })
    }
}

/// Builds the server for what was loaded: checks its listen addresses are free (unless
/// upgrading), builds the routing table and adds the proxy, admin, health-check and reload services.
pub fn build(loaded: Loaded, options: StartOptions) -> Result<GatewayServer, StartError> {
    let Loaded {
        config,
        text,
        store,
        generation,
    } = loaded;
    if !options.upgrade {
        ensure_free("gateway.http_listen", config.gateway.http_listen)?;
        if let Some(https) = config.gateway.https_listen {
            ensure_free("gateway.https_listen", https)?;
        }
        ensure_free("admin.listen", config.admin.listen)?;
        if let Some(metrics) = config.admin.metrics_listen {
            ensure_free("metrics.listen", metrics)?;
        }
    }

    let conf = ServerConf {
        threads: config.gateway.threads,
        work_stealing: config.gateway.work_stealing,
        // Pingora keeps this many per thread, in one pool for the process.
        upstream_keepalive_pool_size: keepalive_pool_size(
            config.gateway.upstream_keepalive,
            &config.routing.pools,
        )
        .div_ceil(config.gateway.threads.max(1)),
        grace_period_seconds: Some(GRACE_PERIOD_SECONDS),
        graceful_shutdown_timeout_seconds: Some(SHUTDOWN_TIMEOUT_SECONDS),
        upgrade_sock: upgrade_socket(&config),
        pid_file: format!("/tmp/tenantgate-{:016x}.pid", config_key(&config)),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();

    let table = RoutingTable::build(&config.routing, generation, None);
    Metrics::get().observe_table(&table);
    Metrics::get().observe_certificates(&config.routing.tls.certificates);
    let table = Arc::new(TableHandle::new(table));
    let (http_listen, https_listen, admin_listen, metrics_listen, h2c) = (
        config.gateway.http_listen,
        config.gateway.https_listen,
        config.admin.listen,
        config.admin.metrics_listen,
        config.gateway.h2c,
    );
    let fleet = config.gateway.fleet.clone().map(Fleet::new);
    let acme_settings = config.gateway.acme.clone();
    let tracing = match &config.gateway.tracing {
        Some(settings) => Some(Arc::new(Tracing::new(settings)?)),
        None => None,
    };
    let store_config = config.gateway.store.clone();
    let control = Arc::new(ControlPlane::new(
        config,
        text,
        Arc::clone(&table),
        store.clone(),
    )?);
    let acme = acme_settings.map(|settings| {
        let audit_to = Arc::clone(&control);
        Acme::new(
            settings,
            table.acme_wanted(),
            table.acme_owner(),
            Box::new(move |event: CertificateEvent<'_>| {
                audit_to.record_certificate(event.action, event.tenant, event.detail, event.failure)
            }),
        )
    });

    let mut options = HttpServerOptions::default();
    options.h2c = h2c;
    let draining = Arc::new(AtomicBool::new(false));
    let gateway = Gateway::new(
        Arc::clone(&table),
        Arc::clone(&draining),
        fleet.clone(),
        acme.clone(),
    )
    .with_tracing(tracing.clone());
    let mut proxy = ProxyServiceBuilder::new(&server.configuration, gateway)
        .name("tenantgate proxy")
        .server_options(options)
        .build();
    proxy.add_tcp(&http_listen.to_string());
    if let Some(https) = https_listen {
        proxy.add_tls_with_settings(
            &https.to_string(),
            None,
            tls_settings(&table, acme.as_ref())?,
        );
        if let Some(acme) = &acme {
            // TLS-ALPN-01 answers and on-demand orders happen before Pingora's handshake.
            let hook: Arc<dyn crate::tls::hello::BeforeHandshake> = acme.clone();
            proxy
                .endpoints()
                .set_pre_tls_callback(Arc::new(ReadClientHello::new(hook)));
        }
    }
    server.add_service(proxy);

    let mut admin = Service::new(
        "tenantgate admin".to_owned(),
        HttpServer::new_app(AdminApi::new(Arc::clone(&control), acme.clone())),
    );
    admin.threads = Some(1);
    admin.add_tcp(&admin_listen.to_string());
    server.add_service(admin);
    if let Some(listen) = metrics_listen {
        let mut scrape = Service::new(
            "tenantgate metrics".to_owned(),
            HttpServer::new_app(ScrapeEndpoint::new(Arc::clone(&control))),
        );
        scrape.threads = Some(1);
        scrape.add_tcp(&listen.to_string());
        server.add_service(scrape);
    }

    if let Some(tracing) = tracing {
        let mut flush = background_service("tenantgate span export", SpanFlush(tracing));
        flush.threads = Some(1);
        server.add_service(flush);
    }

    let mut health = background_service(
        "tenantgate health checks",
        HealthChecker::new(table.current_pools(), table.subscribe()),
    );
    health.threads = Some(1);
    server.add_service(health);

    let keys_of = Arc::clone(&table);
    let mut jwks = background_service(
        "tenantgate JWKS refresh",
        JwksRefresher::new(move || keys_of.load().identity().jwt.as_ref()?.remote().cloned()),
    );
    jwks.threads = Some(1);
    server.add_service(jwks);

    let mut limits = background_service(
        "tenantgate limits",
        LimitsService::new(fleet, table.each_limiter()),
    );
    limits.threads = Some(1);
    server.add_service(limits);

    let mut rates = background_service(
        "tenantgate request rates",
        RequestRates::new(table.each_tenant_stats()),
    );
    rates.threads = Some(1);
    server.add_service(rates);

    let mut watcher = background_service(
        "tenantgate config watcher",
        ConfigWatcher::new(Arc::clone(&control)),
    );
    watcher.threads = Some(1);
    server.add_service(watcher);

    if let Some(acme) = &acme {
        let mut certificates = background_service(
            "tenantgate ACME",
            AcmeService::new(Arc::clone(acme), table.subscribe(), store_config),
        );
        certificates.threads = Some(1);
        server.add_service(certificates);
    }

    if store.is_some() {
        let mut follow = background_service(
            "tenantgate store watch",
            StoreWatcher::new(Arc::clone(&control)),
        );
        follow.threads = Some(1);
        server.add_service(follow);
    }

    Ok(GatewayServer {
        server,
        control,
        draining,
    })
}

/// The HTTPS listener's TLS: certificates chosen per handshake from the routing table in use, the
/// client's SNI kept for the request phases, HTTP/2 offered before HTTP/1.1. Pingora builds the
/// rustls config with TLS 1.2 and 1.3 only, and rustls offers no weak cipher suites.
fn tls_settings(
    table: &Arc<TableHandle>,
    acme: Option<&Arc<Acme>>,
) -> Result<TlsSettings, StartError> {
    let mut tls = TlsSettings::with_callbacks(Box::new(KeepServerName)).map_err(StartError::Tls)?;
    let issued = acme.map(|acme| {
        let acme = Arc::clone(acme);
        Box::new(move |name: &str| acme.certificate(name)) as crate::snapshot::IssuedLookup
    });
    tls.set_cert_resolver(Arc::new(SniResolver::new(
        table.certificate_selector(issued),
    )));
    tls.set_alpn(ALPN::H2H1);
    Ok(tls)
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

/// Sends the spans still queued when the process stops (the exporter's own thread would be cut).
struct SpanFlush(Arc<Tracing>);

#[async_trait]
impl pingora::services::background::BackgroundService for SpanFlush {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let _ = shutdown.changed().await;
        let tracing = Arc::clone(&self.0);
        // The provider's shutdown blocks on the export; off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
    }
}
