//! `tenantgate key create|list|revoke` and `tenantgate admin-token`: secrets made here, printed once,
//! and only their SHA-256 written to the config file.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::remote::{refused, Admin, Destination};
use super::AdminArgs;
use crate::config::diff::api_key_summary;
use crate::config::{load_str, GatewayConfig};
use crate::control::edit::{add_api_key, revoke_api_key, write_atomically, ApiKeyEntry};
use crate::identity::api_key::{generate, random_text, sha256, to_hex};

/// Reads the config; an invalid file is not edited (the edit could not be checked).
fn read(config: &Path) -> anyhow::Result<(String, GatewayConfig)> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let parsed = load_str(config, &text).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n{} has errors; fix them before editing keys",
            config.display()
        )
    })?;
    Ok((text, parsed))
}

/// Checks the edited text like a reload would, then writes it atomically.
fn write(config: &Path, text: &str) -> anyhow::Result<()> {
    load_str(config, text)
        .map_err(|e| anyhow::anyhow!("the edited config would be invalid:\n{e}"))?;
    write_atomically(config, text)?;
    Ok(())
}

/// `30d`, `12h`, `90m`, or an RFC 3339 time, to an RFC 3339 time.
fn expiry(text: &str, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number
        .parse()
        .with_context(|| format!("--expires {text:?}: give 30d, 12h, 90m or an RFC 3339 time"))?;
    let span = match unit {
        "d" => chrono::Duration::days(n),
        "h" => chrono::Duration::hours(n),
        "m" => chrono::Duration::minutes(n),
        _ => bail!("--expires {text:?}: give 30d, 12h, 90m or an RFC 3339 time"),
    };
    if n <= 0 {
        bail!("--expires {text:?} is not in the future");
    }
    Ok((now + span).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// A new key for `tenant`, and its entry (hash and dates), with an id none of `taken` has.
fn new_key(
    tenant: &str,
    expires: Option<&str>,
    taken: impl Fn(&str) -> bool,
) -> anyhow::Result<(String, ApiKeyEntry)> {
    let now = chrono::Utc::now();
    let key =
        generate(tenant).map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    let mut id = String::new();
    while id.is_empty() || taken(&id) {
        let suffix =
            random_text(6).map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        id = format!("k-{}-{}", now.format("%Y%m%d"), suffix.to_ascii_lowercase());
    }
    let entry = ApiKeyEntry {
        id,
        sha256: to_hex(&sha256(&key)),
        created: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        expires: expires.map(|e| expiry(e, now)).transpose()?,
    };
    Ok((key, entry))
}

/// Prints the new key (once) and where it went.
fn print_created(tenant: &str, key: &str, entry: &ApiKeyEntry, into: &str, json: bool) {
    if json {
        let out = serde_json::json!({
            "tenant": tenant, "id": entry.id, "key": key,
            "created": entry.created, "expires": entry.expires,
        });
        println!("{out}");
    } else {
        println!("{key}");
        eprintln!(
            "key {} of tenant {tenant} added to {into} (only its SHA-256 is stored){}.\nThis is the only time the key is shown.",
            entry.id,
            entry.expires.as_deref().map(|e| format!(", expires {e}")).unwrap_or_default(),
        );
    }
}

/// `key create --context`: the key is made here and only its hash is sent; the gateway saves it
/// where it keeps its table (its file, or the fleet's store) and uses it at once.
pub fn create_through(
    args: &AdminArgs,
    tenant: &str,
    expires: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(args, Destination::AnyGateway)?;
    let (key, entry) = new_key(tenant, expires, |_| false)?;
    let body = serde_json::json!({
        "id": entry.id, "sha256": entry.sha256, "created": entry.created, "expires": entry.expires,
    });
    let (status, answer) = admin.post(&format!("/tenants/{tenant}/keys"), Some(body))?;
    if status != 200 {
        return Ok(refused(&answer));
    }
    print_created(
        tenant,
        &key,
        &entry,
        &format!("the gateway at {}", admin.label),
        json,
    );
    Ok(ExitCode::SUCCESS)
}

/// `key revoke --context`.
pub fn revoke_through(args: &AdminArgs, tenant: &str, key_id: &str) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(args, Destination::AnyGateway)?;
    let (status, answer) = admin.post(&format!("/tenants/{tenant}/keys/{key_id}/revoke"), None)?;
    if status != 200 {
        return Ok(refused(&answer));
    }
    eprintln!(
        "key {key_id} of tenant {tenant} revoked through {}",
        admin.label
    );
    Ok(ExitCode::SUCCESS)
}

/// `key list --context`: the keys `tenants show` lists, for one tenant or every one.
pub fn list_through(
    args: &AdminArgs,
    tenant: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(args, Destination::AnyGateway)?;
    let ids: Vec<String> = match tenant {
        Some(id) => vec![id.to_owned()],
        None => {
            let (status, body) = admin.get("/tenants?limit=1000000")?;
            if status != 200 {
                return Ok(refused(&body));
            }
            body["tenants"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["id"].as_str().map(str::to_owned))
                .collect()
        }
    };
    let mut rows = Vec::new();
    for id in &ids {
        let (status, body) = admin.get(&format!("/tenants/{id}"))?;
        if status != 200 {
            return Ok(refused(&body));
        }
        for key in body["api_keys"].as_array().into_iter().flatten() {
            let mut row = key.clone();
            row["tenant"] = serde_json::json!(id);
            rows.push(row);
        }
    }
    print_keys(&rows, json);
    Ok(ExitCode::SUCCESS)
}

pub fn create(
    config: &Path,
    tenant: &str,
    expires: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (text, parsed) = read(config)?;
    let Some(t) = parsed.routing.tenant(tenant) else {
        bail!("no tenant {tenant:?} in {}", config.display());
    };
    let (key, entry) = new_key(tenant, expires, |id| t.api_keys.iter().any(|k| k.id == id))?;
    let edited = add_api_key(&text, tenant, &entry)?;
    write(config, &edited)?;
    if json {
        print_created(tenant, &key, &entry, "", true);
    } else {
        print_created(tenant, &key, &entry, &config.display().to_string(), false);
        eprintln!("A running gateway that watches the file uses it at once (else run `tenantgate reload`).");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(config: &Path, tenant: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let (_, parsed) = read(config)?;
    let now = chrono::Utc::now().timestamp();
    let mut rows = Vec::new();
    for t in parsed.routing.tenants.iter() {
        if tenant.is_some_and(|id| id != t.id.as_str()) {
            continue;
        }
        for k in &t.api_keys {
            let mut row = api_key_summary(k, now);
            row["tenant"] = serde_json::json!(t.id.as_str());
            rows.push(row);
        }
    }
    if let Some(id) = tenant {
        if parsed.routing.tenant(id).is_none() {
            bail!("no tenant {id:?} in {}", config.display());
        }
    }
    print_keys(&rows, json);
    Ok(ExitCode::SUCCESS)
}

fn print_keys(rows: &[serde_json::Value], json: bool) {
    if json {
        println!("{}", serde_json::Value::Array(rows.to_vec()));
        return;
    }
    println!(
        "{:<16} {:<22} {:<8} {:<21} {:<21}",
        "TENANT", "ID", "STATE", "CREATED", "EXPIRES"
    );
    for r in rows {
        let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
        println!(
            "{:<16} {:<22} {:<8} {:<21} {:<21}",
            s("tenant"),
            s("id"),
            s("state"),
            s("created"),
            s("expires")
        );
    }
}

pub fn revoke(config: &Path, tenant: &str, key_id: &str) -> anyhow::Result<ExitCode> {
    let (text, parsed) = read(config)?;
    if parsed.routing.tenant(tenant).is_none() {
        bail!("no tenant {tenant:?} in {}", config.display());
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let Some(edited) = revoke_api_key(&text, tenant, key_id, &now)? else {
        bail!("tenant {tenant} has no key {key_id:?} (`tenantgate key list {tenant}` lists them)");
    };
    write(config, &edited)?;
    eprintln!(
        "key {key_id} of tenant {tenant} revoked in {} as of {now}",
        config.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A new admin token, and the line that makes the admin API ask for it.
pub fn admin_token() -> anyhow::Result<ExitCode> {
    let token =
        random_text(40).map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    println!("{token}");
    eprintln!(
        "Put this under [admin] (the token itself is not stored):\n  token_sha256 = \"{}\"\nand give the token to the CLI as TENANTGATE_ADMIN_TOKEN.",
        to_hex(&sha256(&token))
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_spans_or_times() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(expiry("30d", now).unwrap(), "2026-01-31T00:00:00Z");
        assert_eq!(expiry("12h", now).unwrap(), "2026-01-01T12:00:00Z");
        assert_eq!(
            expiry("2027-05-01T10:00:00+02:00", now).unwrap(),
            "2027-05-01T08:00:00Z"
        );
        assert!(expiry("soon", now).is_err());
        assert!(expiry("0d", now).is_err());
    }
}
