//! `tenantgate certs list` and `certs renew`: the certificates a running gateway serves, through
//! its admin API (`GET /certs`, `POST /certs/{name}/renew`).

use std::process::ExitCode;

use anyhow::anyhow;
use serde_json::Value;

use super::remote::{refused, Admin, Destination};
use super::AdminArgs;

pub fn list(args: &AdminArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(args, Destination::AnyGateway)?;
    let (status, body) = admin.get("/certs")?;
    if status != 200 {
        return Ok(refused(&body));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 6]> = body["certificates"]
        .as_array()
        .ok_or_else(|| anyhow!("{} answered /certs without a list", admin.label))?
        .iter()
        .map(row)
        .collect();
    let header = ["NAME", "SOURCE", "ISSUER", "EXPIRES", "DAYS", "RENEWAL"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    if rows.is_empty() {
        println!("(no certificates: no [[certificates]] and no [acme] names)");
    }
    Ok(ExitCode::SUCCESS)
}

fn row(c: &Value) -> [String; 6] {
    let text = |key: &str| match &c[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let mut renewal = text("renewal");
    if let Some(error) = c["error"].as_str() {
        renewal = format!("{renewal}: {error}");
    }
    [
        text("name"),
        text("source"),
        text("issuer"),
        text("not_after"),
        text("days_left"),
        renewal,
    ]
}

pub fn renew(args: &AdminArgs, name: &str) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(args, Destination::AnyGateway)?;
    let path = format!("/certs/{}/renew", name.trim_end_matches('.'));
    let (status, body) = admin.post(&path, None)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    }
    if status != 202 {
        return Ok(refused(&body));
    }
    if !args.json {
        println!(
            "{}: ordering a new certificate now (tenantgate certs list shows how it went)",
            body["name"].as_str().unwrap_or(name)
        );
    }
    Ok(ExitCode::SUCCESS)
}
