//! `tenantgate context add|list|use|remove`: the gateways an operator works with, by name, so that
//! `--context prod` (or the current context) says where a command goes. The store itself, and how
//! it keeps tokens out of plain text, is `store`.

pub mod store;

use std::process::ExitCode;

use anyhow::anyhow;
use serde_json::json;

use super::output::{self, Paint};
use super::remote::Admin;
use super::ContextCommand;
use store::{read_token_interactively, ContextStore, TokenInput, TokenKind};

pub fn run(command: ContextCommand) -> anyhow::Result<ExitCode> {
    let mut store = ContextStore::open()?;
    match command {
        ContextCommand::Add {
            name,
            admin_url,
            token_env,
            no_token,
            replace,
            json,
        } => {
            if !replace && store.get(&name).is_some() {
                return Err(anyhow!(
                    "context {name} exists already; --replace changes it"
                ));
            }
            let (input, token) = match (token_env, no_token) {
                (Some(var), _) => {
                    let token = std::env::var(&var).ok().filter(|t| !t.trim().is_empty());
                    let token = token.ok_or_else(|| {
                        anyhow!("--token-env {var}: ${var} is not set, so the connection cannot be checked")
                    })?;
                    (TokenInput::Env(var), Some(token.trim().to_owned()))
                }
                (None, true) => (TokenInput::None, None),
                (None, false) => match read_token_interactively(&name)? {
                    Some(token) => (TokenInput::Secret(token.clone()), Some(token)),
                    None => (TokenInput::None, None),
                },
            };
            // The connection (and the token) are checked before anything is saved.
            let admin = Admin::at(&admin_url, admin_url.clone(), token)?;
            let (status, body) = admin.get("/status")?;
            if status != 200 {
                return Err(anyhow!(
                    "{admin_url} answered /status with {status}; is it a tenantgate admin API? Nothing was saved"
                ));
            }
            if body["admin_token"].is_null() && !matches!(input, TokenInput::None) {
                output::warning(&format!(
                    "the admin API at {admin_url} asks for no token; the one given is saved anyway"
                ));
            }
            store.add(&name, &admin_url, input, replace)?;
            let saved = store
                .get(&name)
                .ok_or_else(|| anyhow!("context {name} was not saved"))?;
            if json {
                let answer = json!({
                    "name": name,
                    "admin_url": saved.admin_url,
                    "token": saved.token.label(),
                    "file": store.path().display().to_string(),
                    "gateway": { "version": body["version"], "generation": body["generation"], "tenants": body["tenants"]["total"] },
                });
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let tenants = body["tenants"]["total"].as_u64().unwrap_or(0);
                output::success(&format!(
                    "context {name} saved: {} (tenantgate {}, generation {}, {tenants} tenant{})",
                    saved.admin_url,
                    body["version"].as_str().unwrap_or("?"),
                    body["generation"],
                    if tenants == 1 { "" } else { "s" }
                ));
                let where_ = match &saved.token {
                    TokenKind::Sealed => format!(
                        "token sealed in {} (key: {})",
                        store.path().display(),
                        store.key_path().display()
                    ),
                    TokenKind::Env(var) => format!("token read from ${var} at each use"),
                    TokenKind::None => "no token".to_owned(),
                };
                println!("  {where_}");
                if store.current() != Some(name.as_str()) {
                    println!("  use it with --context {name}, or make it current: tenantgate context use {name}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ContextCommand::List { json } => {
            let contexts = store.list();
            if json {
                let list: Vec<_> = contexts
                    .iter()
                    .map(|c| {
                        json!({
                            "name": c.name,
                            "admin_url": c.admin_url,
                            "token": c.token.label(),
                            "last_used": c.last_used,
                            "current": c.current,
                        })
                    })
                    .collect();
                let answer = json!({ "current": store.current(), "contexts": list });
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(ExitCode::SUCCESS);
            }
            if contexts.is_empty() {
                println!("no contexts yet: tenantgate context add NAME --admin-url URL");
                return Ok(ExitCode::SUCCESS);
            }
            let paint = Paint::stdout();
            let name_w = contexts
                .iter()
                .map(|c| c.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            let url_w = contexts
                .iter()
                .map(|c| c.admin_url.len())
                .max()
                .unwrap_or(3)
                .max(9);
            println!(
                "  {:name_w$}  {:url_w$}  {:14}  LAST USED",
                "NAME", "ADMIN URL", "TOKEN"
            );
            for c in &contexts {
                let marker = if c.current {
                    paint.green("*")
                } else {
                    " ".to_owned()
                };
                println!(
                    "{marker} {:name_w$}  {:url_w$}  {:14}  {}",
                    c.name,
                    c.admin_url,
                    c.token.label(),
                    c.last_used.as_deref().unwrap_or("never")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ContextCommand::Use { name, json } => {
            store.use_context(&name)?;
            let url = store.get(&name).map(|c| c.admin_url).unwrap_or_default();
            match json {
                true => println!("{}", json!({ "current": name, "admin_url": url })),
                false => output::success(&format!("current context: {name} ({url})")),
            }
            Ok(ExitCode::SUCCESS)
        }
        ContextCommand::Remove { name, json } => {
            store.remove(&name)?;
            match json {
                true => println!("{}", json!({ "removed": name, "current": store.current() })),
                false => output::success(&format!("context {name} removed")),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
