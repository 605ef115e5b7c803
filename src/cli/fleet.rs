//! The fleet's commands: `apply` (a routing file made the fleet's table), `export` (the table back
//! out as a file `apply` takes unchanged) and `audit` (who changed what, and where). Each goes
//! through a gateway's admin API (`--context`, `--admin`, the current context) or, with `--store
//! FILE`, straight to the etcd that an instance file's `[store]` names (with that instance's own
//! settings for validation): the way in when no gateway runs yet, or none can be reached.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use serde_json::{json, Value};

use super::output;
use super::remote::{refused, Admin, Destination};
use super::AdminArgs;
use crate::config::load::load_with_store;
use crate::config::model::StoreConfig;
use crate::config::{load_with_text, GatewayConfig};
use crate::control::apply::{plan_apply, write_apply, Instance, RoutingFile};
use crate::control::source::AuditQuery;
use crate::control::store::{read_audit, read_mirrored, Entries};
use crate::store::Store;

/// `plan`'s exit code for changes (0: none, 1: invalid).
const EXIT_CHANGES: u8 = 2;

/// Which fleet a command acts on.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// A saved context (a gateway's admin API); without it, the current context.
    #[arg(long, value_name = "NAME", conflicts_with = "store")]
    context: Option<String>,
    /// A gateway's admin API URL (token from $TENANTGATE_ADMIN_TOKEN).
    #[arg(long, value_name = "URL", conflicts_with = "store")]
    admin: Option<String>,
    /// Go to the store directly: the instance file whose [store] names it (its own settings are
    /// used to validate).
    #[arg(long, value_name = "INSTANCE_FILE")]
    store: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl FleetArgs {
    fn admin(&self) -> anyhow::Result<Admin> {
        let args = AdminArgs {
            config: None,
            context: self.context.clone(),
            admin: self.admin.clone(),
            json: self.json,
        };
        Admin::new(&args, Destination::Chosen)
    }
}

/// An instance file's store, reached from the command line.
struct Direct {
    path: PathBuf,
    text: String,
    store_config: StoreConfig,
    store: Store,
    runtime: tokio::runtime::Runtime,
}

impl Direct {
    fn open(path: &Path) -> anyhow::Result<Direct> {
        let (config, text): (GatewayConfig, String) =
            load_with_text(path).map_err(|e| anyhow!("{e}"))?;
        let Some(store_config) = config.gateway.store.clone() else {
            bail!(
                "{} has no [store]: --store takes the file of an instance of the fleet",
                path.display()
            );
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let store = runtime.block_on(Store::connect(&store_config))?;
        Ok(Direct {
            path: path.to_path_buf(),
            text,
            store_config,
            store,
            runtime,
        })
    }

    fn entries(&self) -> anyhow::Result<Entries> {
        let snapshot = self
            .runtime
            .block_on(read_mirrored(&self.store))
            .with_context(|| format!("reading {}", self.store.label()))?;
        Ok(Entries::from_snapshot(&snapshot))
    }
}

/// Who the CLI is, in audit records.
fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into())
    )
}

pub fn apply(
    config: &Path,
    prune: bool,
    dry_run: bool,
    fleet: &FleetArgs,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    match &fleet.store {
        Some(instance) => apply_direct(
            &Direct::open(instance)?,
            config,
            &text,
            prune,
            dry_run,
            fleet.json,
        ),
        None => apply_remote(&fleet.admin()?, config, &text, prune, dry_run, fleet.json),
    }
}

fn apply_remote(
    admin: &Admin,
    config: &Path,
    text: &str,
    prune: bool,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let request = |dry: bool, expected: Option<i64>| {
        json!({
            "config": text,
            "source": config.display().to_string(),
            "prune": prune,
            "dry_run": dry,
            "expected_revision": expected,
        })
    };
    let (status, planned) = admin.post("/apply", Some(request(true, None)))?;
    if status != 200 {
        return Ok(refused(&planned));
    }
    let writes = planned["plan"]["writes"].as_array().map_or(0, Vec::len);
    if !json {
        print_plan(
            config,
            &format!("the fleet of {}", admin.label),
            &planned["plan"],
            prune,
        );
    }
    if dry_run || writes == 0 {
        if json {
            println!("{}", serde_json::to_string_pretty(&planned)?);
        }
        return Ok(exit_for(dry_run, writes));
    }
    let revision = planned["planned_at_revision"].as_i64();
    let (status, body) = admin.post("/apply", Some(request(false, revision)))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    }
    if status != 200 {
        return Ok(refused(&body));
    }
    if !json {
        print_applied(&body["revisions"]);
    }
    Ok(ExitCode::SUCCESS)
}

fn apply_direct(
    direct: &Direct,
    config: &Path,
    text: &str,
    prune: bool,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let entries = direct.entries()?;
    let origin = direct.store.origin();
    let list: Vec<_> = entries.iter().map(|(e, v)| (e, &*v.text)).collect();
    let current = match load_with_store(&direct.path, &direct.text, &origin, &list) {
        Ok(current) => Some(current),
        Err(errors) => {
            output::warning(&format!(
                "the store's table is not valid now, so the plan lists no changes, only what is written:\n{errors}"
            ));
            None
        }
    };
    let instance = Instance {
        path: &direct.path,
        text: &direct.text,
        origin: &origin,
    };
    let file = RoutingFile {
        path: config,
        text,
        prune,
    };
    let planned = plan_apply(current.as_ref(), instance, &entries, file);
    let plan = match planned {
        Ok(plan) => plan,
        Err(refusal) => return Ok(refused(&refusal.to_json())),
    };
    let label = format!("the store {}", direct.store.label());
    if !json {
        print_plan(config, &label, &plan.to_json(), prune);
    }
    if dry_run || plan.writes.is_empty() {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({ "dry_run": dry_run, "plan": plan.to_json() })
                )?
            );
        }
        return Ok(exit_for(dry_run, plan.writes.len()));
    }
    let written = direct.runtime.block_on(write_apply(
        &direct.store,
        direct.store_config.max_txn_ops,
        &actor(),
        &actor(),
        &plan,
    ));
    match written {
        Ok(revisions) => {
            let revisions = json!(revisions);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({ "result": "applied", "plan": plan.to_json(), "revisions": revisions })
                    )?
                );
            } else {
                print_applied(&revisions);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(refusal) => Ok(refused(&refusal.to_json())),
    }
}

fn exit_for(dry_run: bool, writes: usize) -> ExitCode {
    match (dry_run, writes) {
        (true, n) if n > 0 => ExitCode::from(EXIT_CHANGES),
        _ => ExitCode::SUCCESS,
    }
}

/// The plan as `plan` prints one, and what `apply` writes for it.
fn print_plan(config: &Path, against: &str, plan: &Value, prune: bool) {
    let revision = &plan["revision"];
    let changes = plan["changes"].as_array().cloned().unwrap_or_default();
    let writes = plan["writes"].as_array().cloned().unwrap_or_default();
    let unchanged = plan["unchanged"].as_u64().unwrap_or(0);
    let not_in_file = plan["not_in_file"].as_u64().unwrap_or(0);
    if changes.is_empty() && writes.is_empty() {
        println!(
            "{}: no changes against {against} (revision {revision})",
            config.display()
        );
    } else {
        println!(
            "{} against {against} (revision {revision}):",
            config.display()
        );
        for change in &changes {
            println!("  {}", change["summary"].as_str().unwrap_or("?"));
        }
        let deletes = writes.iter().filter(|w| w["action"] == "delete").count();
        println!(
            "{} change{}: {} entr{} to write ({} put, {deletes} removed), {unchanged} unchanged",
            changes.len(),
            if changes.len() == 1 { "" } else { "s" },
            writes.len(),
            if writes.len() == 1 { "y" } else { "ies" },
            writes.len() - deletes,
        );
    }
    if !prune && not_in_file > 0 {
        println!(
            "{not_in_file} entr{} of the store not in the file stay{} (--prune removes them)",
            if not_in_file == 1 { "y" } else { "ies" },
            if not_in_file == 1 { "s" } else { "" }
        );
    }
    let own: Vec<&str> = plan["instance_sections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !own.is_empty() {
        println!(
            "not applied, each instance's own: {}",
            own.iter()
                .map(|s| format!("[{s}]"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

fn print_applied(revisions: &Value) {
    let list: Vec<String> = revisions
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r.to_string())
        .collect();
    match list.len() {
        0 => println!("nothing to change"),
        1 => output::success(&format!("applied at revision {}", list[0])),
        n => output::success(&format!(
            "applied in {n} transactions, revisions {} to {}",
            list[0],
            list[n - 1]
        )),
    }
}

pub fn export(output: Option<&Path>, fleet: &FleetArgs) -> anyhow::Result<ExitCode> {
    let text = match &fleet.store {
        Some(instance) => {
            let direct = Direct::open(instance)?;
            let entries = direct.entries()?;
            format!(
                "# The shared routing table of the store {} at revision {}, exported {}.\n# tenantgate apply --config FILE takes it back unchanged.\n\n{}",
                direct.store.label(),
                entries.revision,
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                crate::config::shared::assemble(entries.iter().map(|(e, v)| (e, &*v.text)))
            )
        }
        None => {
            let admin = fleet.admin()?;
            let (status, body) = admin.get("/export")?;
            match (status, body) {
                (200, Value::String(text)) => text,
                (_, body) => return Ok(refused(&body)),
            }
        }
    };
    match output {
        Some(path) => {
            crate::atomic_file::replace(path, &text, crate::atomic_file::Access::AsBefore)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `--since`: `30m`, `12h`, `7d` ago, or an RFC 3339 time; as Unix milliseconds.
fn since(text: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number
        .parse()
        .with_context(|| format!("--since {text:?}: give 30m, 12h, 7d or an RFC 3339 time"))?;
    let span = match unit {
        "m" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        _ => bail!("--since {text:?}: give 30m, 12h, 7d or an RFC 3339 time"),
    };
    Ok((chrono::Utc::now() - span).timestamp_millis())
}

pub fn audit(
    tenant: Option<&str>,
    since_text: Option<&str>,
    limit: Option<usize>,
    fleet: &FleetArgs,
) -> anyhow::Result<ExitCode> {
    let query = AuditQuery {
        tenant: tenant.map(str::to_owned),
        since: since_text.map(since).transpose()?,
        limit,
    };
    let entries: Vec<Value> = match &fleet.store {
        Some(instance) => {
            let direct = Direct::open(instance)?;
            direct
                .runtime
                .block_on(read_audit(&direct.store, &query))
                .with_context(|| format!("reading the audit log of {}", direct.store.label()))?
        }
        None => {
            let admin = fleet.admin()?;
            let mut path = String::from("/audit?");
            if let Some(t) = &query.tenant {
                path.push_str(&format!("tenant={t}&"));
            }
            if let Some(ms) = query
                .since
                .and_then(chrono::DateTime::from_timestamp_millis)
            {
                path.push_str(&format!(
                    "since={}&",
                    ms.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ));
            }
            if let Some(n) = limit {
                path.push_str(&format!("limit={n}"));
            }
            let (status, body) = admin.get(path.trim_end_matches(['&', '?']))?;
            if status != 200 {
                return Ok(refused(&body));
            }
            body["entries"].as_array().cloned().unwrap_or_default()
        }
    };
    if fleet.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:>8} {:<18} {:<28} {:<22} {:<12} WHAT",
        "TIME", "REVISION", "INSTANCE", "ACTOR", "ACTION", "TENANT"
    );
    for e in &entries {
        let s = |k: &str| e[k].as_str().unwrap_or("-").to_owned();
        let what = match (e["result"].as_str(), e["summary"].as_str()) {
            (Some("refused"), _) => format!("refused: {}", s("reason")),
            (_, Some(summary)) => summary.to_owned(),
            _ => s("change"),
        };
        let revision = e["revision"]
            .as_i64()
            .map_or_else(|| e["generation"].to_string(), |r| r.to_string());
        println!(
            "{:<24} {:>8} {:<18} {:<28} {:<22} {:<12} {what}",
            s("time"),
            revision,
            s("instance"),
            s("actor"),
            e["change"]
                .as_str()
                .unwrap_or(e["action"].as_str().unwrap_or("-")),
            s("tenant"),
        );
    }
    Ok(ExitCode::SUCCESS)
}
