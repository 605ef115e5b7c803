//! The `tenantgate` command line: `run`, `check` and `demo` work on a config file; `reload`, `plan`
//! and `tenants` talk to a running gateway's admin API (`remote`, `tenants`), the one a saved
//! context names (`context`) or the config file's.
//!
//! Exit codes (the README lists them too): 0 success (and, for `plan`, no change); 1 an invalid
//! config, a refused change, an unreachable gateway or a failure to start; 2 a usage error, or for
//! `plan`, changes to apply; 3 `tenants push` found conflicts and changed nothing; 4 `tenants check`
//! found a tenant with no reachable upstream; 5 the admin API refused the token.

mod certs;
mod context;
mod fleet;
mod keys;
mod output;
mod remote;
mod tenants;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context as _;
use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};

use crate::config::model::HostRoute;
use crate::config::model::Probe;
use crate::config::{self, GatewayConfig, LoadError};
use crate::control::transfer::OnConflict;
use crate::demo::DemoBackends;
use crate::server::StartOptions;
use crate::tenant::TenantStatus;
use crate::tls;
use crate::tls::dev::{issue_leaf, write_pair, DevCa};

pub const DEFAULT_CONFIG: &str = "config/gateway.toml";

/// `tenants push`: entries conflict under `--on-conflict fail`; nothing was changed.
const EXIT_CONFLICT: u8 = 3;
/// `tenants check`: a tenant has a pool it serves from with no reachable upstream.
const EXIT_UNHEALTHY: u8 = 4;
/// The admin API refused the token.
const EXIT_UNAUTHORIZED: u8 = 5;

/// At most this many lines per list in `check`'s summary, so it stays one screen.
const SUMMARY_LIST_MAX: usize = 8;

#[derive(Debug, Parser)]
#[command(
    name = "tenantgate",
    version,
    about = "A tenant-aware reverse proxy and gateway on Pingora"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// The routing table (TOML).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Take over the listening sockets of a running gateway on the same ports (graceful
        /// upgrade): start this, then send the old process SIGQUIT.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config file without starting anything; prints a summary or every error.
    Check {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Run the gateway with built-in demo backends on the config's loopback upstream addresses.
    Demo {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Make a running gateway load its config file again.
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show what loading a config file would change: against the running gateway, or against
    /// another file. Exit 0: no change; 2: changes; 1: the file is invalid.
    Plan {
        #[command(flatten)]
        admin: AdminArgs,
        /// Compare with this file instead of the running gateway.
        #[arg(long)]
        against: Option<PathBuf>,
    },
    /// Certificates for local use.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Tenant API keys: create (prints the key once), list, revoke. In the config file, or with
    /// --context or --admin through a running gateway (the fleet's store, for a gateway with one).
    Key {
        #[arg(long, short, default_value = DEFAULT_CONFIG, global = true)]
        config: PathBuf,
        /// Through this saved context's gateway instead of the file.
        #[arg(long, global = true, value_name = "NAME")]
        context: Option<String>,
        /// Through the gateway with this admin API URL instead of the file.
        #[arg(long, global = true, value_name = "URL")]
        admin: Option<String>,
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Make an admin API token: prints it, and the token_sha256 line for [admin].
    AdminToken,
    /// The tenants of a running gateway: list, show, check, pull, push, promote, roll back,
    /// suspend, activate.
    Tenants {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Saved gateways (admin URL and token) that --context NAME, or the current one, points at.
    Context {
        #[command(subcommand)]
        command: ContextCommand,
    },
    /// Make a routing file the fleet's table (gateways with [store]): validated, planned against
    /// the store as `plan` prints it, and written in one transaction guarded by the revision the
    /// plan was made at. Exit 0: applied, or nothing to change; 2: --dry-run found changes; 1:
    /// invalid, refused, or the table changed meanwhile (nothing written).
    Apply {
        /// The routing file (a gateway file's shared sections; its instance sections are left alone).
        #[arg(long, short)]
        config: PathBuf,
        /// Also remove what the store has and the file does not.
        #[arg(long)]
        prune: bool,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        fleet: fleet::FleetArgs,
    },
    /// Print the fleet's table (or a gateway's shared sections) as one routing file that `apply`
    /// takes unchanged.
    Export {
        /// Write it here instead of to stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        fleet: fleet::FleetArgs,
    },
    /// The audit log: every change, who made it, through which instance, at which revision (the
    /// fleet's with a store, else the gateway's own).
    Audit {
        #[arg(long)]
        tenant: Option<String>,
        /// 30m, 12h, 7d ago, or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many, the latest.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        fleet: fleet::FleetArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ContextCommand {
    /// Save a gateway's admin API under NAME. The token is asked for (without echo), read from a
    /// pipe, or named by --token-env; the connection and token are checked before saving.
    Add {
        name: String,
        /// The admin API's base URL, for example http://127.0.0.1:9900.
        #[arg(long)]
        admin_url: String,
        /// Read the token from this environment variable at each use; nothing secret is saved.
        #[arg(long, value_name = "VAR", conflicts_with = "no_token")]
        token_env: Option<String>,
        /// The gateway's admin API has no token.
        #[arg(long)]
        no_token: bool,
        /// Replace a context of the same name.
        #[arg(long)]
        replace: bool,
        #[arg(long)]
        json: bool,
    },
    /// List saved contexts: name, URL, where the token comes from, last use; `*` is the current.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Make NAME the context commands use without --context.
    Use {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Forget NAME and its token.
    Remove {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Add a new key to TENANT; prints it once (only its SHA-256 goes into the file). The tenant's
    /// other keys stay valid: rotate by creating a new key, then revoking the old one.
    Create {
        tenant: String,
        /// When the key stops working: 30d, 12h, 90m, or an RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
        /// Print the key and its id as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (all tenants, or one) with their state: valid, expired, revoked.
    List {
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Mark a key revoked (from now on it is refused with 401 api_key_revoked).
    Revoke { tenant: String, id: String },
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Make a development CA (dev-ca.pem, beside the first certificate) and, for every
    /// [[certificates]] entry of the config whose files are missing, a certificate it signs: the
    /// base domains' wildcards for an entry without `tenant`, the tenant's own names for one with.
    /// For trying HTTPS locally; never for production.
    Dev {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Replace certificates that exist already (the CA is kept).
        #[arg(long)]
        force: bool,
    },
    /// Every name the running gateway serves: source (file, dev, acme), issuer, expiry and
    /// renewal state.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Order a new ACME certificate for NAME now (one the gateway manages), whatever its expiry.
    Renew {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where the running gateway's admin API is: `--admin`, `--context`, `--config`, the current
/// context, or the default config file, in that order.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The config file (for `plan`, the new one; default config/gateway.toml). The admin API's
    /// address is read from it unless --admin or --context is given.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// A saved context (tenantgate context add); without it, the current context is used.
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
    /// The admin API's base URL, for example http://127.0.0.1:9900 (token from
    /// $TENANTGATE_ADMIN_TOKEN).
    #[arg(long, global = true)]
    admin: Option<String>,
    /// Print the admin API's JSON answer instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum TenantsCommand {
    /// List tenants.
    List {
        #[arg(long, value_parser = PossibleValuesParser::new(TenantStatus::ALL))]
        status: Option<String>,
        #[arg(long)]
        pool: Option<String>,
    },
    /// Show one tenant: status, pool, isolation, promotion, plan and limits, keys (ids only),
    /// live request rate, latest audit entries.
    Show { id: String },
    /// Probe, now, every upstream of every pool a tenant uses (all tenants, or one). Exit 4 when
    /// a tenant has a pool it serves from with no reachable upstream.
    Check { id: Option<String> },
    /// Print a tenant's entry, and the pools and plan it uses, as a TOML file for `push`.
    Pull {
        id: String,
        /// Carry the tenant's API keys (their SHA-256 hashes: keep the file private).
        #[arg(long)]
        with_keys: bool,
        /// Write the file here, readable by you only (0600), instead of to stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Add the tenants of a file made by `pull` to the gateway of --context (or the current one):
    /// validated, saved in its config, audited and applied there. Prints the plan first. Exit 3
    /// on conflicts under --on-conflict fail (nothing is changed).
    Push {
        file: PathBuf,
        /// What to do with an entry that exists with other contents.
        #[arg(long, default_value = "fail", value_parser = PossibleValuesParser::new(OnConflict::ALL))]
        on_conflict: String,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Push the API keys the file carries (otherwise they are left out).
        #[arg(long)]
        with_keys: bool,
    },
    /// Move a tenant to another pool, at once or in weighted steps.
    Promote {
        id: String,
        /// The pool to move to (typically the tenant's dedicated pool).
        #[arg(long)]
        pool: String,
        /// Percent of traffic on the new pool at each step, for example 10,50,100.
        #[arg(long, value_delimiter = ',')]
        steps: Vec<u8>,
        /// Pause between steps, in milliseconds.
        #[arg(long)]
        pause_ms: Option<u64>,
        /// Roll back by itself when more than this fraction of canary requests fail (5xx).
        #[arg(long)]
        max_error_rate: Option<f64>,
        /// Fewer canary requests than this in a pause do not judge the step.
        #[arg(long)]
        min_requests: Option<u64>,
    },
    /// End a promotion in progress, or move a promoted tenant back to its previous pool.
    Rollback { id: String },
    /// Refuse the tenant's requests (403) without removing it.
    Suspend {
        id: String,
        /// Also end its open upgraded connections (WebSockets), which otherwise stay open.
        #[arg(long)]
        close_connections: bool,
    },
    /// Answer the tenant's requests 503 with Retry-After (or its maintenance page) until it is
    /// activated.
    Maintenance {
        id: String,
        /// Also end its open upgraded connections (WebSockets), which otherwise stay open.
        #[arg(long)]
        close_connections: bool,
    },
    /// Serve a suspended tenant, or one in maintenance, again.
    Activate { id: String },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::Run { config, upgrade } => run(&config, false, StartOptions { upgrade }),
        Command::Demo { config } => ensure_dev_certificates(&config, false)
            .and_then(|_| run(&config, true, StartOptions::default())),
        Command::Certs {
            command: CertsCommand::Dev { config, force },
        } => ensure_dev_certificates(&config, force).map(|made| {
            if made.is_empty() {
                println!(
                    "every certificate of {} exists already (--force replaces them)",
                    config.display()
                );
            }
            ExitCode::SUCCESS
        }),
        Command::Key {
            config,
            context,
            admin,
            command,
        } => {
            let through = (context.is_some() || admin.is_some()).then_some(AdminArgs {
                config: None,
                context,
                admin,
                json: false,
            });
            match command {
                KeyCommand::Create {
                    tenant,
                    expires,
                    json,
                } => match &through {
                    Some(args) => keys::create_through(args, &tenant, expires.as_deref(), json),
                    None => keys::create(&config, &tenant, expires.as_deref(), json),
                },
                KeyCommand::List { tenant, json } => match &through {
                    Some(args) => keys::list_through(args, tenant.as_deref(), json),
                    None => keys::list(&config, tenant.as_deref(), json),
                },
                KeyCommand::Revoke { tenant, id } => match &through {
                    Some(args) => keys::revoke_through(args, &tenant, &id),
                    None => keys::revoke(&config, &tenant, &id),
                },
            }
        }
        Command::AdminToken => keys::admin_token(),
        Command::Reload { admin } => remote::reload(&admin),
        Command::Certs {
            command: CertsCommand::List { admin },
        } => certs::list(&admin),
        Command::Certs {
            command: CertsCommand::Renew { name, admin },
        } => certs::renew(&admin, &name),
        Command::Plan { admin, against } => remote::plan(&admin, against.as_deref()),
        Command::Tenants { admin, command } => tenants::run(&admin, command),
        Command::Context { command } => context::run(command),
        Command::Apply {
            config,
            prune,
            dry_run,
            fleet,
        } => fleet::apply(&config, prune, dry_run, &fleet),
        Command::Export { output, fleet } => fleet::export(output.as_deref(), &fleet),
        Command::Audit {
            tenant,
            since,
            limit,
            fleet,
        } => fleet::audit(tenant.as_deref(), since.as_deref(), limit, &fleet),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            output::error(&format!("{e:#}"));
            match e.downcast_ref::<remote::Unauthorized>() {
                Some(_) => ExitCode::from(EXIT_UNAUTHORIZED),
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            print!("{}", summary(&config));
            ExitCode::SUCCESS
        }
        Err(LoadError::Invalid(errors)) => {
            for line in errors.lines() {
                eprintln!("error: {line}");
            }
            let n = errors.len();
            eprintln!(
                "{}: {n} error{}; the file is not valid",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            if errors.errors.iter().any(is_missing_certificate) {
                eprintln!(
                    "hint: to try the file out, `tenantgate certs dev --config {}` makes the missing certificates, signed by a development CA (`tenantgate demo` makes them itself)",
                    path.display()
                );
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A `[[certificates]]` file that is not there: on a fresh clone, the development ones.
fn is_missing_certificate(error: &config::ConfigError) -> bool {
    error.key.to_string().starts_with("certificates[") && error.message.starts_with("cannot read")
}

/// Makes the development certificates the config at `path` names and lacks (all with `force`),
/// printing each file made. Reads the file without validating it: validation needs the
/// certificates that this makes.
fn ensure_dev_certificates(path: &Path, force: bool) -> anyhow::Result<Vec<PathBuf>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (file, _) = config::load::decode_file(&text);
    let folder = path.parent().unwrap_or_else(|| Path::new(""));
    let bases: Vec<String> = file
        .gateway
        .base_domains
        .iter()
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    let mut made = Vec::new();
    let mut ca = None;
    for entry in file.certificates.iter().flatten() {
        let (Some(cert), Some(key)) = (&entry.cert, &entry.key) else {
            continue;
        };
        let (cert, key) = (folder.join(cert), folder.join(key));
        if !force && cert.exists() && key.exists() {
            continue;
        }
        let names: Vec<String> = match &entry.tenant {
            Some(id) => {
                let domains = file
                    .tenants
                    .iter()
                    .find(|t| t.name == *id)
                    .and_then(|t| t.value.as_ref())
                    .map(|t| t.domains.clone())
                    .unwrap_or_default();
                bases
                    .iter()
                    .map(|b| format!("{id}.{b}"))
                    .chain(domains)
                    .collect()
            }
            None if bases.is_empty() => vec!["localhost".to_owned()],
            None => bases
                .iter()
                .flat_map(|b| [format!("*.{b}"), b.clone()])
                .collect(),
        };
        if ca.is_none() {
            let dir = cert.parent().unwrap_or_else(|| Path::new("."));
            let (opened, created) = DevCa::open_or_create(dir)?;
            if created {
                println!(
                    "made development CA {}",
                    dir.join(tls::dev::CA_CERT_FILE).display()
                );
            }
            ca = Some(opened);
        }
        let Some(ca) = &ca else { continue };
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        write_pair(&issue_leaf(ca, &names)?, &cert, &key)?;
        println!("made {} for {}", cert.display(), names.join(", "));
        made.push(cert);
    }
    Ok(made)
}

/// Loads a config for a command, with every error in the message.
fn load(path: &Path) -> anyhow::Result<(GatewayConfig, String)> {
    config::load_with_text(path).map_err(|e| match e {
        // Already one line per error; anyhow would add nothing.
        LoadError::Invalid(errors) => anyhow::anyhow!("{errors}"),
        other => anyhow::Error::new(other),
    })
}

fn run(path: &Path, demo: bool, options: StartOptions) -> anyhow::Result<ExitCode> {
    // SIGHUP's default action ends the process; until the config watcher takes it over (after
    // start-up, which an upgrade prolongs), a reload request must not kill the gateway. The watcher
    // reloads once when it starts, so a SIGHUP caught here is not lost.
    signal_hook::flag::register(
        signal_hook::consts::SIGHUP,
        Arc::new(AtomicBool::new(false)),
    )
    .context("installing the SIGHUP handler")?;
    let (config, text) = load(path)?;
    let _log = crate::logging::init(config.gateway.log_format);
    // With a store, the table is read from it now: the demo's backends are its pools'.
    let loaded = crate::server::Loaded::open(config, text).context("cannot start the gateway")?;
    let config = &loaded.config;
    let demo = demo.then(|| DemoBackends::for_config(config));
    if let Some((backends, skipped)) = &demo {
        println!("{}", demo_banner(config, backends, skipped));
    }
    tracing::info!(
        config = %config.path.display(),
        http = %config.gateway.http_listen,
        admin = %config.admin.listen,
        threads = config.gateway.threads,
        tenants = config.routing.tenants.len(),
        pools = config.routing.pools.len(),
        store = config.gateway.store.as_ref().map(|s| s.label()),
        generation = loaded.generation,
        upgrade = options.upgrade,
        "tenantgate starting"
    );
    let mut built = crate::server::build(loaded, options).context("cannot start the gateway")?;
    if let Some((backends, _)) = demo {
        built.server.add_service(backends.into_service());
    }
    // `run` returns after a graceful shutdown (unlike `run_forever`, which exits the process), so
    // the log guard above still flushes the last lines.
    let shutdown = crate::server::DrainFirst::new(built.draining);
    built.server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(shutdown),
    });
    tracing::info!("tenantgate stopped");
    Ok(ExitCode::SUCCESS)
}

/// The one-screen summary `check` prints for a valid file.
pub fn summary(c: &GatewayConfig) -> String {
    let mut out = String::new();
    let r = &c.routing;
    let _ = writeln!(out, "{}: valid", c.path.display());
    let https = c
        .gateway
        .https_listen
        .map_or_else(String::new, |a| format!(" · https {a}"));
    let _ = writeln!(
        out,
        "  listen   http {}{https} · admin {}{} · {} worker thread{}",
        c.gateway.http_listen,
        c.admin.listen,
        c.admin
            .metrics_listen
            .map_or_else(String::new, |m| format!(" · metrics {m}")),
        c.gateway.threads,
        if c.gateway.threads == 1 { "" } else { "s" }
    );
    if let Some(store) = &c.gateway.store {
        // The table is the fleet's: this file has only the instance's own settings.
        let _ = writeln!(
            out,
            "  store    {} · instance {} · the routing table is the fleet's (tenantgate export --store {} prints it)",
            store.label(),
            store.instance,
            c.path.display()
        );
        certificate_lines(&mut out, c);
        return out;
    }
    let domains = if r.base_domains.is_empty() {
        "(none)".to_owned()
    } else {
        r.base_domains.join(", ")
    };
    let _ = writeln!(
        out,
        "  domains  {domains} · tenant header {}",
        r.tenant_header
    );

    let count = |status| r.tenants.iter().filter(|t| t.status == status).count();
    let (suspended, maintenance) = (
        count(TenantStatus::Suspended),
        count(TenantStatus::Maintenance),
    );
    let _ = writeln!(
        out,
        "  tenants  {} ({} active, {suspended} suspended{})",
        r.tenants.len(),
        count(TenantStatus::Active),
        match maintenance {
            0 => String::new(),
            n => format!(", {n} in maintenance"),
        }
    );
    let mut by_pool: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for t in r.tenants.iter() {
        let entry = by_pool.entry(t.pool.as_str()).or_default();
        entry.0 += 1;
        if t.status == TenantStatus::Suspended {
            entry.1 += 1;
        }
    }
    let mut by_pool: Vec<_> = by_pool.into_iter().collect();
    by_pool.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
    list(
        &mut out,
        by_pool.iter().map(|(pool, (n, s))| {
            let s = if *s > 0 {
                format!(" ({s} suspended)")
            } else {
                String::new()
            };
            format!("on {pool}: {n}{s}")
        }),
    );

    let _ = writeln!(out, "  pools    {}", r.pools.len());
    let width = r.pools.iter().map(|p| p.name.len()).max().unwrap_or(0);
    list(
        &mut out,
        r.pools.iter().map(|p| {
            let n = p.upstreams.len();
            let check = match &p.health_check {
                None => "no active health check".to_owned(),
                Some(hc) => match &hc.probe {
                    Probe::Http { path, .. } => {
                        format!("GET {path} every {} ms", hc.interval.as_millis())
                    }
                    Probe::Tcp => format!("TCP connect every {} ms", hc.interval.as_millis()),
                },
            };
            format!(
                "{:width$}  {n} upstream{}  {}  {check}",
                p.name,
                if n == 1 { " " } else { "s" },
                p.balancing.as_str(),
            )
        }),
    );

    certificate_lines(&mut out, c);
    let _ = writeln!(out, "  hosts    {}", r.hosts.len());
    list(
        &mut out,
        r.hosts.iter().map(|h| match &h.route {
            HostRoute::Pool(pool) => format!("{} -> pool {pool}", h.host),
            HostRoute::Claim => {
                format!("{} -> the pool of the tenant its credential names", h.host)
            }
        }),
    );
    out
}

/// `check`'s lines about the certificates a file serves.
fn certificate_lines(out: &mut String, c: &GatewayConfig) {
    let r = &c.routing;
    if let Some(acme) = &c.gateway.acme {
        let challenges: Vec<&str> = acme.challenges.iter().map(|c| c.as_str()).collect();
        let names: usize = r
            .tenants
            .iter()
            .filter(|t| t.status == TenantStatus::Active && t.acme)
            .map(|t| t.domains.len())
            .sum();
        let _ = writeln!(
            out,
            "  acme     {} ({}){}: up to {names} custom domains, kept in {}",
            acme.directory,
            challenges.join(", "),
            if acme.on_demand { ", on demand" } else { "" },
            acme.state_dir.display()
        );
    }
    if !r.tls.certificates.is_empty() {
        let _ = writeln!(out, "  certs    {}", r.tls.certificates.len());
        let now = chrono::Utc::now().timestamp();
        list(
            out,
            r.tls.certificates.iter().map(|cert| {
                let days = cert.loaded.days_left(now);
                let expiry = if days < 0 {
                    format!("EXPIRED {} days ago", -days)
                } else {
                    format!("{days} days left")
                };
                let role = match (&cert.tenant, cert.default) {
                    (Some(t), _) => format!(" (tenant {t})"),
                    (None, true) => " (default)".to_owned(),
                    (None, false) => String::new(),
                };
                format!(
                    "{}{role}: {} · {expiry}",
                    cert.cert_label,
                    cert.loaded.names.join(", ")
                )
            }),
        );
    }
}

fn list(out: &mut String, lines: impl ExactSizeIterator<Item = String>) {
    let total = lines.len();
    for line in lines.take(SUMMARY_LIST_MAX) {
        let _ = writeln!(out, "           {line}");
    }
    if total > SUMMARY_LIST_MAX {
        let _ = writeln!(out, "           … and {} more", total - SUMMARY_LIST_MAX);
    }
}

/// What `demo` prints: the backends it started and three requests to try.
fn demo_banner(c: &GatewayConfig, backends: &DemoBackends, skipped: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tenantgate demo: {} with built-in backends",
        c.path.display()
    );
    for (addr, name) in backends.listeners() {
        let _ = writeln!(out, "  backend {name:<20} {addr}");
    }
    for label in skipped {
        let _ = writeln!(
            out,
            "  (no demo backend for {label}: not a loopback address)"
        );
    }
    let port = c.gateway.http_listen.port();
    let base = c
        .routing
        .base_domains
        .last()
        .map_or("yourapp.test", String::as_str);
    let active = c
        .routing
        .tenants
        .iter()
        .find(|t| t.status == TenantStatus::Active);
    let with_domain = c.routing.tenants.iter().find(|t| !t.domains.is_empty());
    let suspended = c
        .routing
        .tenants
        .iter()
        .find(|t| t.status == TenantStatus::Suspended);
    let _ = writeln!(out, "\nTry:");
    if let Some(t) = active {
        let _ = writeln!(
            out,
            "  curl -s -H 'Host: {}.{base}' http://127.0.0.1:{port}/hello",
            t.id
        );
    }
    if let Some((t, domain)) = with_domain.and_then(|t| Some((t, t.domains.first()?))) {
        let _ = writeln!(
            out,
            "  curl -s -H 'Host: {domain}' http://127.0.0.1:{port}/   # {}'s custom domain",
            t.id
        );
    }
    match suspended {
        Some(t) => {
            let _ = writeln!(
                out,
                "  curl -s -H 'Host: {}.{base}' http://127.0.0.1:{port}/   # suspended: 403",
                t.id
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  curl -s -H 'Host: nobody.{base}' http://127.0.0.1:{port}/   # unknown: 404"
            );
        }
    }
    if let (Some(https), Some(t)) = (c.gateway.https_listen, active) {
        let ca = c
            .routing
            .tls
            .certificates
            .first()
            .and_then(|cert| cert.cert.parent())
            .map(|dir| dir.join(tls::dev::CA_CERT_FILE));
        if let Some(ca) = ca {
            let (host, port) = (format!("{}.{base}", t.id), https.port());
            let _ = writeln!(
                out,
                "  curl -s --cacert {} --resolve {host}:{port}:127.0.0.1 https://{host}:{port}/hello   # HTTPS",
                ca.display()
            );
        }
    }
    let _ = writeln!(
        out,
        "  curl -s http://{}/status   # admin API",
        c.admin.listen
    );
    out
}
