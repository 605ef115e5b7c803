//! `tenantgate tenants ...`: the tenants of a running gateway, through its admin API. Reading
//! (`list`, `show`, `check`, `pull`) and acting (`suspend`, `activate`, `promote`, `rollback`,
//! `push`); every change is made by the gateway's control plane, so it is validated, persisted,
//! audited and hot-reloaded there, never edited here.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use serde_json::{json, Value};

use super::context::store::write_private;
use super::output::{self, Paint};
use super::remote::{print_outcome, refused, Admin, Destination};
use super::{AdminArgs, TenantsCommand, EXIT_CONFLICT, EXIT_UNHEALTHY};
use crate::tenant::TenantId;

pub fn run(args: &AdminArgs, command: TenantsCommand) -> anyhow::Result<ExitCode> {
    // A tenant id goes into the URL's path: only slugs, so nothing in it can change the path.
    let id = match &command {
        TenantsCommand::List { .. } | TenantsCommand::Push { .. } => None,
        TenantsCommand::Check { id } => id.as_ref(),
        TenantsCommand::Show { id }
        | TenantsCommand::Pull { id, .. }
        | TenantsCommand::Promote { id, .. }
        | TenantsCommand::Rollback { id }
        | TenantsCommand::Suspend { id, .. }
        | TenantsCommand::Maintenance { id, .. }
        | TenantsCommand::Activate { id } => Some(id),
    };
    if let Some(id) = id {
        TenantId::parse(id).map_err(|e| anyhow!("{id:?} is not a tenant id: it {e}"))?;
    }
    match command {
        TenantsCommand::Push {
            file,
            on_conflict,
            dry_run,
            with_keys,
        } => {
            let admin = Admin::new(args, Destination::Chosen)?;
            push(
                &admin,
                args.json,
                &file,
                on_conflict.as_str(),
                dry_run,
                with_keys,
            )
        }
        TenantsCommand::Pull {
            id,
            with_keys,
            output,
        } => pull(
            &Admin::new(args, Destination::AnyGateway)?,
            args.json,
            &id,
            with_keys,
            output.as_deref(),
        ),
        TenantsCommand::Check { id } => check(
            &Admin::new(args, Destination::AnyGateway)?,
            args.json,
            id.as_deref(),
        ),
        command => act(
            &Admin::new(args, Destination::AnyGateway)?,
            args.json,
            command,
        ),
    }
}

/// The commands that are one admin API call: list, show, and the four actions.
fn act(admin: &Admin, json: bool, command: TenantsCommand) -> anyhow::Result<ExitCode> {
    let (status, body) = match &command {
        TenantsCommand::List { status, pool } => {
            let mut query = vec!["limit=100000".to_owned()];
            if let Some(s) = status {
                query.push(format!("status={s}"));
            }
            if let Some(p) = pool {
                query.push(format!("pool={}", percent_encode(p)));
            }
            admin.get(&format!("/tenants?{}", query.join("&")))?
        }
        TenantsCommand::Show { id } => admin.get(&format!("/tenants/{id}"))?,
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
            admin.post(&format!("/tenants/{id}/promote"), Some(body))?
        }
        TenantsCommand::Rollback { id } => admin.post(&format!("/tenants/{id}/rollback"), None)?,
        TenantsCommand::Suspend {
            id,
            close_connections,
        } => admin.post(
            &format!("/tenants/{id}/suspend{}", close_query(*close_connections)),
            None,
        )?,
        TenantsCommand::Maintenance {
            id,
            close_connections,
        } => admin.post(
            &format!(
                "/tenants/{id}/maintenance{}",
                close_query(*close_connections)
            ),
            None,
        )?,
        TenantsCommand::Activate { id } => admin.post(&format!("/tenants/{id}/activate"), None)?,
        TenantsCommand::Check { .. }
        | TenantsCommand::Pull { .. }
        | TenantsCommand::Push { .. } => return Err(anyhow!("not a single call")),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    }
    if status != 200 {
        return Ok(refused(&body));
    }
    if json {
        return Ok(ExitCode::SUCCESS);
    }
    match command {
        TenantsCommand::List { .. } => print_tenant_table(&body),
        TenantsCommand::Show { .. } => print_tenant(&body, true),
        _ => {
            print_outcome(&body);
            print_tenant(&body["tenant"], false);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tenants pull ID`: the tenant file on stdout (for `> acme.toml`) or in `output`, what was
/// pulled on stderr.
fn pull(
    admin: &Admin,
    json: bool,
    id: &str,
    with_keys: bool,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let query = if with_keys { "?with_keys=true" } else { "" };
    let (status, body) = admin.get(&format!("/tenants/{id}/export{query}"))?;
    if status != 200 {
        if json {
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        return Ok(refused(&body));
    }
    let fragment = body
        .as_str()
        .ok_or_else(|| anyhow!("the gateway at {} did not answer with TOML", admin.label))?;
    // The file may hold key hashes: readable by its owner only, whatever the umask.
    if let Some(path) = output {
        write_private(path, fragment)?;
    }
    if json {
        let answer = json!({ "tenant": id, "from": admin.label, "with_keys": with_keys, "fragment": fragment });
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        if output.is_none() {
            print!("{fragment}");
        }
        let paint = Paint::stderr();
        eprintln!(
            "{} tenant {id} from {}{}",
            paint.green("pulled"),
            admin.label,
            if with_keys {
                " with its api key hashes: keep the file private"
            } else {
                " (api keys not carried; --with-keys carries their hashes)"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `tenants push FILE`: asks the gateway for the plan (a dry run), prints it, and applies it unless
/// this is a dry run or the plan has conflicts. The apply names the generation the plan was made
/// against, so a table changed in between is refused rather than changed unseen.
fn push(
    admin: &Admin,
    json: bool,
    file: &Path,
    on_conflict: &str,
    dry_run: bool,
    with_keys: bool,
) -> anyhow::Result<ExitCode> {
    let fragment =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut request = json!({
        "fragment": fragment,
        "source": file.display().to_string(),
        "on_conflict": on_conflict,
        "with_keys": with_keys,
        "dry_run": true,
    });
    let (status, plan) = admin.post("/tenants", Some(request.clone()))?;
    if status != 200 {
        if json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        }
        return Ok(refused(&plan));
    }
    let conflicts = plan["conflicts"].as_u64().unwrap_or(0);
    let writes = plan["plan"].as_array().into_iter().flatten().any(|i| {
        matches!(
            i["action"].as_str(),
            Some("create" | "overwrite" | "rename")
        )
    });
    if !json {
        println!("push {} to {}:", file.display(), admin.label);
        print_plan(&plan["plan"]);
    }
    if conflicts > 0 {
        if json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        }
        output::error(&format!(
            "{conflicts} conflict{}: nothing pushed (--on-conflict skip, overwrite or rename decides them)",
            if conflicts == 1 { "" } else { "s" }
        ));
        return Ok(ExitCode::from(EXIT_CONFLICT));
    }
    if dry_run || !writes {
        if json {
            let mut plan = plan;
            if !dry_run {
                plan["dry_run"] = json!(false);
                plan["result"] = json!("unchanged");
            }
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else if dry_run {
            for change in plan["changes"].as_array().into_iter().flatten() {
                println!("  {}", change["summary"].as_str().unwrap_or("?"));
            }
            println!("dry run: nothing was changed");
        } else {
            output::success("nothing to push: the gateway has all of it already");
        }
        return Ok(ExitCode::SUCCESS);
    }
    request["dry_run"] = json!(false);
    request["expected_generation"] = plan["planned_at_generation"].clone();
    let (status, body) = admin.post("/tenants", Some(request))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    }
    if status != 200 {
        return Ok(refused(&body));
    }
    if !json {
        print_outcome(&body);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plan(plan: &Value) {
    let paint = Paint::stdout();
    for item in plan.as_array().into_iter().flatten() {
        let (kind, name) = (str(&item["kind"]), str(&item["name"]));
        let differs = item["differs"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let line = match str(&item["action"]) {
            "create" => format!("{} {kind} {name}", paint.green("+ create")),
            "unchanged" => paint.dim(&format!("= {kind} {name} (already the same)")),
            "skip" => format!(
                "{} {kind} {name} (differs here: {differs}; kept as it is)",
                paint.yellow("- skip")
            ),
            "overwrite" => format!("{} {kind} {name} ({differs})", paint.yellow("~ overwrite")),
            "rename" => format!(
                "{} {kind} {} (renamed from {name})",
                paint.cyan("+ create"),
                str(&item["to"])
            ),
            "conflict" => format!(
                "{} {kind} {name} exists with other contents ({differs})",
                paint.red("! conflict")
            ),
            "not_needed" => paint.dim(&format!("= {kind} {name} (no tenant pushed uses it)")),
            other => format!("? {other} {kind} {name}"),
        };
        println!("  {line}");
        for note in item["notes"].as_array().into_iter().flatten() {
            println!("      {}", paint.dim(str(note)));
        }
    }
}

/// `tenants check [ID]`: every pool each tenant uses, probed now. A tenant is down when a pool it
/// serves from (its pool, a canary's) has no reachable upstream; its previous pool (where a
/// rollback goes) is shown, and only warned about.
fn check(admin: &Admin, json: bool, id: Option<&str>) -> anyhow::Result<ExitCode> {
    let tenants: Vec<Value> = match id {
        Some(id) => {
            let (status, body) = admin.get(&format!("/tenants/{id}"))?;
            if status != 200 {
                return Ok(refused(&body));
            }
            vec![body]
        }
        None => {
            let (status, body) = admin.get("/tenants?limit=100000")?;
            if status != 200 {
                return Ok(refused(&body));
            }
            body["tenants"].as_array().cloned().unwrap_or_default()
        }
    };
    let uses = |t: &Value| -> Vec<(String, &'static str)> {
        let mut pools = vec![(str(&t["pool"]).to_owned(), "serves")];
        if let Some(canary) = t["canary"]["pool"].as_str() {
            pools.push((canary.to_owned(), "canary"));
        }
        if let Some(previous) = t["previous_pool"].as_str() {
            pools.push((previous.to_owned(), "rollback"));
        }
        pools
    };
    let mut wanted: Vec<String> = tenants
        .iter()
        .flat_map(|t| uses(t).into_iter().map(|(p, _)| p))
        .collect();
    wanted.sort();
    wanted.dedup();
    let query: Vec<String> = wanted
        .iter()
        .map(|p| format!("pool={}", percent_encode(p)))
        .collect();
    let (status, health) = match wanted.is_empty() {
        true => (200, json!({ "pools": [] })),
        false => admin.get(&format!("/pools/health?{}", query.join("&")))?,
    };
    if status != 200 {
        return Ok(refused(&health));
    }
    let pool = |name: &str| {
        health["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let mut report = Vec::new();
    let mut down = 0;
    for t in &tenants {
        let pools: Vec<Value> = uses(t)
            .into_iter()
            .map(|(name, role)| {
                let p = pool(&name);
                let total = p["upstreams"].as_array().map_or(0, Vec::len);
                json!({
                    "name": name,
                    "role": role,
                    "reachable": p["reachable"],
                    "upstreams": total,
                    "check": p["check"],
                    "details": p["upstreams"],
                })
            })
            .collect();
        let healthy = pools
            .iter()
            .filter(|p| p["role"] != "rollback")
            .all(|p| p["reachable"].as_u64().unwrap_or(0) > 0);
        if !healthy {
            down += 1;
        }
        report.push(json!({
            "tenant": t["id"],
            "status": t["status"],
            "healthy": healthy,
            "pools": pools,
        }));
    }
    if json {
        let answer = json!({ "tenants": report, "unhealthy": down });
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print_check(&report, &admin.label);
    }
    Ok(match down {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::from(EXIT_UNHEALTHY),
    })
}

fn print_check(report: &[Value], label: &str) {
    let paint = Paint::stdout();
    let id_w = report
        .iter()
        .map(|t| str(&t["tenant"]).len())
        .max()
        .unwrap_or(0)
        .max(6);
    println!("checked every pool's upstreams now, from {label}");
    println!("{:id_w$}  {:9}  POOLS", "TENANT", "STATUS");
    let mut down = 0;
    for t in report {
        let pools: Vec<String> = t["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let (reachable, total) = (
                    p["reachable"].as_u64().unwrap_or(0),
                    p["upstreams"].as_u64().unwrap_or(0),
                );
                let counts = format!("{reachable}/{total}");
                let counts = match (reachable, p["role"].as_str()) {
                    (0, Some("rollback")) => paint.yellow(&counts),
                    (0, _) => paint.red(&counts),
                    (r, _) if r < total => paint.yellow(&counts),
                    _ => paint.green(&counts),
                };
                let role = match p["role"].as_str() {
                    Some("serves") => String::new(),
                    Some(role) => format!(" ({role})"),
                    None => String::new(),
                };
                format!("{}{role} {counts}", str(&p["name"]))
            })
            .collect();
        let verdict = match t["healthy"].as_bool() {
            Some(true) => paint.green("ok"),
            _ => {
                down += 1;
                paint.red("DOWN")
            }
        };
        println!(
            "{:id_w$}  {:9}  {}  {verdict}",
            str(&t["tenant"]),
            str(&t["status"]),
            pools.join(", ")
        );
        // Why an upstream is not reachable, for the pools that are not whole.
        for p in t["pools"].as_array().into_iter().flatten() {
            for u in p["details"].as_array().into_iter().flatten() {
                if u["reachable"] == false {
                    println!(
                        "{:id_w$}    {} {}: {}",
                        "",
                        str(&p["name"]),
                        str(&u["address"]),
                        paint.dim(str(&u["error"]))
                    );
                }
            }
        }
    }
    let n = report.len();
    match down {
        0 => output::success(&format!(
            "{n} tenant{} checked, every one has a reachable upstream",
            if n == 1 { "" } else { "s" }
        )),
        _ => output::error(&format!(
            "{down} of {n} tenant{} have a pool with no reachable upstream",
            if n == 1 { "" } else { "s" }
        )),
    }
}

/// Pool names go into a query string: anything but unreserved characters is escaped.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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
    let paint = Paint::stdout();
    for t in &tenants {
        // Padded apart from the colour: escape codes have no width.
        let status = str(&t["status"]);
        let pad = " ".repeat(9usize.saturating_sub(status.len()));
        println!(
            "{:id_w$}  {}{pad}  {:pool_w$}  {:9}  {}",
            str(&t["id"]),
            status_word(paint, status),
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

fn close_query(close_connections: bool) -> &'static str {
    match close_connections {
        true => "?close_connections=true",
        false => "",
    }
}

fn status_word(paint: Paint, status: &str) -> String {
    match status {
        "active" => paint.green(status),
        "suspended" | "maintenance" => paint.yellow(status),
        other => other.to_owned(),
    }
}

/// One tenant; with `detail` (`tenants show`), also its limits, keys, traffic and latest changes.
fn print_tenant(t: &Value, detail: bool) {
    if t.is_null() {
        return;
    }
    let paint = Paint::stdout();
    println!("tenant {} ({})", paint.bold(str(&t["id"])), str(&t["name"]));
    println!("  status     {}", status_word(paint, str(&t["status"])));
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
    if !detail {
        return;
    }
    if let Some(plan) = t["plan"].as_str() {
        println!("  plan       {plan}");
    }
    print_limits(&t["limits"]);
    let traffic = &t["traffic"];
    println!(
        "  traffic    {:.1} requests/s (last {} s), {} in flight",
        traffic["requests_per_second"].as_f64().unwrap_or(0.0),
        traffic["window_seconds"],
        traffic["in_flight"]
    );
    let keys = t["api_keys"].as_array().cloned().unwrap_or_default();
    match keys.is_empty() {
        true => println!("  api keys   none"),
        false => {
            println!("  api keys   {}", keys.len());
            for k in &keys {
                let state = match str(&k["state"]) {
                    "valid" => paint.green("valid"),
                    other => paint.yellow(other),
                };
                let expires = k["expires"]
                    .as_str()
                    .map_or_else(String::new, |e| format!(", expires {e}"));
                println!(
                    "    {}  {state}  created {}{expires}",
                    str(&k["id"]),
                    str(&k["created"])
                );
            }
        }
    }
    let changes = t["recent_changes"].as_array().cloned().unwrap_or_default();
    if !changes.is_empty() {
        println!("  recent changes (audit log, newest last)");
        for c in &changes {
            let result = match str(&c["result"]) {
                "applied" => paint.green("applied"),
                other => paint.red(other),
            };
            println!(
                "    {}  {}  {result}  by {}{}",
                str(&c["time"]),
                str(&c["action"]),
                str(&c["actor"]),
                c["reason"]
                    .as_str()
                    .map_or_else(String::new, |r| format!(": {r}"))
            );
        }
    }
}

fn print_limits(limits: &Value) {
    let rate = |r: &Value| {
        let per_second = r["requests_per_second"].as_f64().unwrap_or(0.0);
        // 200, not 200.0; 0.5 stays 0.5.
        let per_second = format!("{per_second}");
        format!("{per_second} requests/s, burst {}", r["burst"])
    };
    let mut lines = Vec::new();
    if !limits["rate_limit"].is_null() {
        lines.push(format!("rate {}", rate(&limits["rate_limit"])));
    }
    if !limits["credential_rate_limit"].is_null() {
        lines.push(format!(
            "per credential {}",
            rate(&limits["credential_rate_limit"])
        ));
    }
    let c = &limits["concurrency"];
    if !c.is_null() {
        lines.push(format!(
            "at most {} in flight, queue {} for {} ms",
            c["max_in_flight"], c["queue"], c["queue_timeout_ms"]
        ));
    }
    for r in limits["route_limits"].as_array().into_iter().flatten() {
        lines.push(format!(
            "{}: {}",
            str(&r["path_prefix"]),
            rate(&r["rate_limit"])
        ));
    }
    match lines.split_first() {
        None => println!("  limits     none"),
        Some((first, rest)) => {
            println!("  limits     {first}");
            for line in rest {
                println!("             {line}");
            }
        }
    }
}
