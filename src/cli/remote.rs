//! Commands that act on a running gateway through its admin API: `reload`, `plan`, `tenants`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use serde_json::{json, Value};

use super::context::store::ContextStore;
use super::output;
use super::{load, AdminArgs, DEFAULT_CONFIG};
use crate::config::diff::{diff, Change};
use crate::config::load_str;

/// `plan` found changes (0: none, 1: the file is invalid).
const EXIT_CHANGES: u8 = 2;

/// A client of one gateway's admin API.
pub(super) struct Admin {
    pub(super) base: String,
    /// What the operator chose, for messages: `context prod (http://...)` or the URL.
    pub(super) label: String,
    token: Option<String>,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// The admin API refused the token (or its absence): exit code `EXIT_UNAUTHORIZED`.
#[derive(Debug, thiserror::Error)]
#[error("the admin API at {0} refused the token (401); check the context's token (tenantgate context add NAME --admin-url URL --replace) or ${ADMIN_TOKEN_ENV}")]
pub struct Unauthorized(pub String);

/// What a command may be pointed at by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Destination {
    /// A read or an action: the current context, else the gateway the config file names.
    AnyGateway,
    /// A push: only a gateway the operator named (`--context`, `--admin`) or chose as current.
    Chosen,
}

impl Admin {
    /// The admin API the arguments name: `--admin URL` (token from `$TENANTGATE_ADMIN_TOKEN`),
    /// `--context NAME`, an explicit `--config` file's, the current context, and last (never for
    /// a push) the default config file's.
    pub(super) fn new(args: &AdminArgs, destination: Destination) -> anyhow::Result<Admin> {
        if let Some(url) = &args.admin {
            return Admin::at(url, url.clone(), env_token());
        }
        if let Some(name) = &args.context {
            return Admin::of_context(&mut ContextStore::open()?, name);
        }
        if let Some(config) = &args.config {
            return Admin::of_config(config);
        }
        let mut store = ContextStore::open()?;
        if let Some(current) = store.current().map(str::to_owned) {
            return Admin::of_context(&mut store, &current);
        }
        match destination {
            Destination::Chosen => Err(anyhow!(
                "no destination: name one with --context NAME (or make one current: tenantgate context use NAME); a push never goes to an implicit gateway"
            )),
            Destination::AnyGateway => Admin::of_config(Path::new(DEFAULT_CONFIG)),
        }
    }

    fn of_context(store: &mut ContextStore, name: &str) -> anyhow::Result<Admin> {
        let context = store.resolve(name)?;
        let label = format!("context {} ({})", context.name, context.admin_url);
        Admin::at(&context.admin_url, label, context.token)
    }

    fn of_config(config: &Path) -> anyhow::Result<Admin> {
        let (config, _) = load(config).with_context(|| {
            format!(
                "finding the admin API in {} (or pass --context NAME or --admin URL)",
                config.display()
            )
        })?;
        let url = format!("http://{}", reachable(config.admin.listen));
        Admin::at(&url, url.clone(), env_token())
    }

    pub(super) fn at(base: &str, label: String, token: Option<String>) -> anyhow::Result<Admin> {
        let base = base.trim_end_matches('/').to_owned();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Admin {
            base,
            label,
            token: token.filter(|t| !t.is_empty()),
            client,
            runtime,
        })
    }

    /// Sends the request; returns the status and the body (JSON, or the text as a JSON string).
    /// A 401 is an `Unauthorized` error: nothing a command does goes on without its token.
    pub(super) fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let actor = format!(
            "cli:{}",
            std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "unknown".into())
        );
        let mut request = self.client.request(method, &url).header("x-actor", actor);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.runtime.block_on(async {
            let response = request.send().await.with_context(|| {
                format!(
                    "cannot reach the admin API at {} (is the gateway running?)",
                    self.label
                )
            })?;
            let status = response.status().as_u16();
            if status == 401 {
                return Err(anyhow::Error::new(Unauthorized(self.label.clone())));
            }
            let text = response.text().await?;
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Ok((status, body))
        })
    }

    pub(super) fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.call(reqwest::Method::GET, path, None)
    }

    pub(super) fn post(&self, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        self.call(reqwest::Method::POST, path, body)
    }
}

/// The environment variable the CLI reads the admin API's token from.
pub const ADMIN_TOKEN_ENV: &str = "TENANTGATE_ADMIN_TOKEN";

/// The token in `ADMIN_TOKEN_ENV`, for a gateway named by URL or config file rather than a context.
fn env_token() -> Option<String> {
    std::env::var(ADMIN_TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_owned())
}

/// An address to connect to for one the gateway listens on (`0.0.0.0` means this machine).
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

/// Prints a refused change's message and errors; exit 1.
pub(super) fn refused(body: &Value) -> ExitCode {
    let message = body["message"].as_str().unwrap_or("the change was refused");
    output::error(message);
    for line in body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        eprintln!("  {line}");
    }
    ExitCode::FAILURE
}

/// Prints an applied change's outcome.
pub(super) fn print_outcome(body: &Value) {
    let generation = &body["generation"];
    match body["result"].as_str() {
        Some("applied") => {
            let changes = body["changes"].as_array().map_or(0, Vec::len);
            output::success(&format!(
                "applied: generation {generation}, {changes} change{}",
                if changes == 1 { "" } else { "s" }
            ));
            for change in body["changes"].as_array().into_iter().flatten() {
                println!("  {}", change["summary"].as_str().unwrap_or("?"));
            }
        }
        _ => println!("unchanged: generation {generation}"),
    }
}

pub fn reload(args: &AdminArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(args, Destination::AnyGateway)?;
    let (status, body) = admin.post("/reload", None)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    }
    if status != 200 {
        return Ok(refused(&body));
    }
    if !args.json {
        print_outcome(&body);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn plan(args: &AdminArgs, against: Option<&Path>) -> anyhow::Result<ExitCode> {
    let new_path = args.config.clone().unwrap_or_else(|| DEFAULT_CONFIG.into());
    let new_text = std::fs::read_to_string(&new_path)
        .with_context(|| format!("cannot read {}", new_path.display()))?;
    let new_admin = match load_str(&new_path, &new_text) {
        Ok(config) => config.admin.listen,
        Err(errors) => {
            eprint!("error: {errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    // The new file is read as if it replaced the baseline file, so that what depends on the file's
    // path (the default audit log beside it, relative paths) compares like for like.
    let (baseline_path, old_text, baseline) = match against {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            (path.to_path_buf(), text, path.display().to_string())
        }
        None => {
            let admin = match (&args.admin, &args.context) {
                (None, None) => {
                    let url = format!("http://{}", reachable(new_admin));
                    Admin::at(&url, url.clone(), env_token())?
                }
                _ => Admin::new(args, Destination::Chosen)?,
            };
            let (_, running) = admin.get("/status")?;
            let path = running["config"]
                .as_str()
                .map(std::path::PathBuf::from)
                .ok_or_else(|| {
                    anyhow!(
                        "the gateway at {} did not say which config file it runs",
                        admin.label
                    )
                })?;
            let (code, body) = admin.get("/config")?;
            let text = body.as_str().filter(|_| code == 200).ok_or_else(|| {
                anyhow!(
                    "the gateway at {} did not return its config (status {code})",
                    admin.label
                )
            })?;
            (
                path,
                text.to_owned(),
                format!("the running gateway at {}", admin.label),
            )
        }
    };
    let new = load_str(&baseline_path, &new_text).map_err(|e| anyhow!("{e}"))?;
    let old = load_str(&baseline_path, &old_text)
        .map_err(|e| anyhow!("the baseline config does not validate with this version: {e}"))?;
    let changes = diff(&old, &new);
    if args.json {
        let list: Vec<Value> = changes.iter().map(Change::to_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "changes": list }))?
        );
    } else if changes.is_empty() {
        println!("{}: no changes against {baseline}", new_path.display());
    } else {
        println!("{} against {baseline}:", new_path.display());
        for change in &changes {
            println!("  {change}");
        }
        let n = changes.len();
        let restart = changes.iter().filter(|c| c.needs_restart()).count();
        if restart > 0 {
            println!("{n} change{}; a reload would refuse this file: {restart} of them need a restart or a graceful upgrade (see README)", if n == 1 { "" } else { "s" });
        } else {
            println!(
                "{n} change{}; a reload would apply them",
                if n == 1 { "" } else { "s" }
            );
        }
    }
    Ok(match changes.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(EXIT_CHANGES),
    })
}
