//! Commands that act on a running gateway through its admin API: `reload`, `plan`, `tenants`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use serde_json::{json, Value};

use super::{load, AdminArgs, TenantsCommand};
use crate::config::diff::{diff, Change};
use crate::config::load_str;
use crate::tenant::TenantId;

/// `plan` found changes (0: none, 1: the file is invalid).
const EXIT_CHANGES: u8 = 2;

/// A client of one gateway's admin API.
struct Admin {
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Admin {
    /// The admin API named by `--admin`, or the one the config file says the gateway listens on.
    fn new(args: &AdminArgs) -> anyhow::Result<Admin> {
        match &args.admin {
            Some(url) => Admin::at(url),
            None => {
                let (config, _) = load(&args.config).with_context(|| {
                    format!(
                        "finding the admin API in {} (or pass --admin URL)",
                        args.config.display()
                    )
                })?;
                Admin::at(&format!("http://{}", reachable(config.admin.listen)))
            }
        }
    }

    fn at(base: &str) -> anyhow::Result<Admin> {
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
            client,
            runtime,
        })
    }

    /// Sends the request; returns the status and the body (JSON, or the text as a JSON string).
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let actor = format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        );
        let mut request = self.client.request(method, &url).header("x-actor", actor);
        if let Ok(token) = std::env::var(ADMIN_TOKEN_ENV) {
            request = request.bearer_auth(token.trim());
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.runtime.block_on(async {
            let response = request.send().await.with_context(|| {
                format!(
                    "cannot reach the admin API at {} (is the gateway running? pass --admin URL)",
                    self.base
                )
            })?;
            let status = response.status().as_u16();
            let text = response.text().await?;
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Ok((status, body))
        })
    }
}

/// The environment variable the CLI reads the admin API's token from.
pub const ADMIN_TOKEN_ENV: &str = "TENANTGATE_ADMIN_TOKEN";

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
fn refused(body: &Value) -> ExitCode {
    let message = body["message"].as_str().unwrap_or("the change was refused");
    eprintln!("error: {message}");
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
fn print_outcome(body: &Value) {
    let generation = &body["generation"];
    match body["result"].as_str() {
        Some("applied") => {
            let changes = body["changes"].as_array().map_or(0, Vec::len);
            println!(
                "applied: generation {generation}, {changes} change{}",
                if changes == 1 { "" } else { "s" }
            );
            for change in body["changes"].as_array().into_iter().flatten() {
                println!("  {}", change["summary"].as_str().unwrap_or("?"));
            }
        }
        _ => println!("unchanged: generation {generation}"),
    }
}

pub fn reload(args: &AdminArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(args)?;
    let (status, body) = admin.call(reqwest::Method::POST, "/reload", None)?;
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
    let new_text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let new_admin = match load_str(&args.config, &new_text) {
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
            let admin = match &args.admin {
                Some(url) => Admin::at(url)?,
                None => Admin::at(&format!("http://{}", reachable(new_admin)))?,
            };
            let (_, running) = admin.call(reqwest::Method::GET, "/status", None)?;
            let path = running["config"]
                .as_str()
                .map(std::path::PathBuf::from)
                .ok_or_else(|| {
                    anyhow!(
                        "the gateway at {} did not say which config file it runs",
                        admin.base
                    )
                })?;
            let (code, body) = admin.call(reqwest::Method::GET, "/config", None)?;
            let text = body.as_str().filter(|_| code == 200).ok_or_else(|| {
                anyhow!(
                    "the gateway at {} did not return its config (status {code})",
                    admin.base
                )
            })?;
            (
                path,
                text.to_owned(),
                format!("the running gateway at {}", admin.base),
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
        println!("{}: no changes against {baseline}", args.config.display());
    } else {
        println!("{} against {baseline}:", args.config.display());
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

pub fn tenants(args: &AdminArgs, command: TenantsCommand) -> anyhow::Result<ExitCode> {
    // A tenant id goes into the URL's path: only slugs, so nothing in it can change the path.
    let id = match &command {
        TenantsCommand::List { .. } => None,
        TenantsCommand::Show { id }
        | TenantsCommand::Promote { id, .. }
        | TenantsCommand::Rollback { id }
        | TenantsCommand::Suspend { id }
        | TenantsCommand::Activate { id } => Some(id),
    };
    if let Some(id) = id {
        TenantId::parse(id).map_err(|e| anyhow!("{id:?} is not a tenant id: it {e}"))?;
    }
    let admin = Admin::new(args)?;
    let (status, body) = match &command {
        TenantsCommand::List { status, pool } => {
            let mut query = Vec::new();
            if let Some(s) = status {
                query.push(format!("status={s}"));
            }
            if let Some(p) = pool {
                query.push(format!("pool={p}"));
            }
            query.push("limit=100000".into());
            admin.call(
                reqwest::Method::GET,
                &format!("/tenants?{}", query.join("&")),
                None,
            )?
        }
        TenantsCommand::Show { id } => {
            admin.call(reqwest::Method::GET, &format!("/tenants/{id}"), None)?
        }
        TenantsCommand::Promote {
            id,
            pool,
            steps,
            pause_ms,
            max_error_rate,
            min_requests,
        } => {
            let mut body = json!({ "pool": pool, "steps": steps });
            if let Some(ms) = pause_ms {
                body["pause_ms"] = json!(ms);
            }
            if let Some(rate) = max_error_rate {
                body["max_error_rate"] = json!(rate);
            }
            if let Some(n) = min_requests {
                body["min_requests"] = json!(n);
            }
            admin.call(
                reqwest::Method::POST,
                &format!("/tenants/{id}/promote"),
                Some(body),
            )?
        }
        TenantsCommand::Rollback { id } => admin.call(
            reqwest::Method::POST,
            &format!("/tenants/{id}/rollback"),
            None,
        )?,
        TenantsCommand::Suspend { id } => admin.call(
            reqwest::Method::POST,
            &format!("/tenants/{id}/suspend"),
            None,
        )?,
        TenantsCommand::Activate { id } => admin.call(
            reqwest::Method::POST,
            &format!("/tenants/{id}/activate"),
            None,
        )?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    }
    if status != 200 {
        return Ok(refused(&body));
    }
    if args.json {
        return Ok(ExitCode::SUCCESS);
    }
    match command {
        TenantsCommand::List { .. } => print_tenant_table(&body),
        TenantsCommand::Show { .. } => print_tenant(&body),
        _ => {
            print_outcome(&body);
            print_tenant(&body["tenant"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn promotion_summary(t: &Value) -> String {
    let p = &t["promotion"];
    match p["state"].as_str() {
        Some("running") => format!(
            "running: {}% to {} (step {} of {})",
            p["percent"],
            str(&p["to"]),
            p["step"],
            p["of"]
        ),
        Some("paused") => format!(
            "paused at {}% to {} (promote again or roll back)",
            p["percent"],
            str(&p["to"])
        ),
        Some("completed") => format!("completed: {} -> {}", str(&p["from"]), str(&p["to"])),
        Some("rolled_back") => format!("rolled back: {}", str(&p["reason"])),
        Some("stopped") => format!("stopped: {}", str(&p["reason"])),
        _ => "-".to_owned(),
    }
}

fn str(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn print_tenant_table(body: &Value) {
    let tenants = body["tenants"].as_array().cloned().unwrap_or_default();
    let width = |key: &str, min: usize| {
        tenants
            .iter()
            .map(|t| str(&t[key]).len())
            .max()
            .unwrap_or(0)
            .max(min)
    };
    let (id_w, pool_w) = (width("id", 2), width("pool", 4));
    println!(
        "{:id_w$}  {:9}  {:pool_w$}  {:9}  PROMOTION",
        "ID", "STATUS", "POOL", "ISOLATION"
    );
    for t in &tenants {
        println!(
            "{:id_w$}  {:9}  {:pool_w$}  {:9}  {}",
            str(&t["id"]),
            str(&t["status"]),
            str(&t["pool"]),
            str(&t["isolation"]),
            promotion_summary(t)
        );
    }
    println!(
        "{} tenant{}",
        body["total"],
        if body["total"] == 1 { "" } else { "s" }
    );
}

fn print_tenant(t: &Value) {
    if t.is_null() {
        return;
    }
    println!("tenant {} ({})", str(&t["id"]), str(&t["name"]));
    println!("  status     {}", str(&t["status"]));
    println!(
        "  pool       {} ({})",
        str(&t["pool"]),
        str(&t["isolation"])
    );
    if let Some(previous) = t["previous_pool"].as_str() {
        println!("  previous   {previous} (rollback moves the tenant back there)");
    }
    if let Some(c) = t["canary"].as_object() {
        println!(
            "  canary     {}% to {} ({} requests, {} failed)",
            c["percent"],
            str(&c["pool"]),
            c["requests"],
            c["failures"]
        );
    }
    println!("  promotion  {}", promotion_summary(t));
    let domains: Vec<&str> = t["domains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !domains.is_empty() {
        println!("  domains    {}", domains.join(", "));
    }
}
