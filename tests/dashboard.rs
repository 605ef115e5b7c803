//! The shipped Grafana dashboard (`dashboards/tenantgate.json`) against the metrics the gateway
//! exports (`tenantgate::metrics::names`).
//!
//! Dashboards break silently: rename a metric and every panel over it shows "No data", with nothing
//! failing anywhere. This test reads every PromQL expression in the dashboard (panel targets and
//! template variable queries) and fails when one names a metric the gateway does not export, when a
//! per-tenant metric has no panel, or when a panel bypasses the `$datasource` variable.

use std::collections::HashSet;

use serde_json::{json, Value};
use tenantgate::metrics::names;

/// The per-tenant metrics: the dashboard shows each at least once.
const PER_TENANT: [&str; 11] = [
    names::REQUESTS_TOTAL,
    names::REQUEST_DURATION_SECONDS,
    names::UPSTREAM_RESPONSE_SECONDS,
    names::REQUEST_BYTES_TOTAL,
    names::RESPONSE_BYTES_TOTAL,
    names::RATE_LIMITED_TOTAL,
    names::OVERLOADED_TOTAL,
    names::UPSTREAM_ERRORS_TOTAL,
    names::IN_FLIGHT_REQUESTS,
    names::WEBSOCKET_CONNECTIONS,
    names::WEBSOCKET_BYTES_TOTAL,
];

/// The histograms, queried through their `_bucket`, `_count` and `_sum` series.
const HISTOGRAMS: [&str; 3] = [
    names::REQUEST_DURATION_SECONDS,
    names::UPSTREAM_RESPONSE_SECONDS,
    names::RELOAD_DURATION_SECONDS,
];

const PREFIX: &str = "tenantgate_";
const TENANT_FILTER: &str = r#"tenant=~"$tenant""#;

fn dashboard() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/tenantgate.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

/// Every PromQL string: each `expr` anywhere, and `query` and `definition` under `templating`.
fn expressions(dashboard: &Value) -> Vec<&str> {
    fn walk<'a>(value: &'a Value, in_templating: bool, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    let promql =
                        key == "expr" || (in_templating && (key == "query" || key == "definition"));
                    match v {
                        Value::String(s) if promql => out.push(s),
                        _ => walk(v, in_templating || key == "templating", out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, in_templating, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, false, &mut out);
    out
}

/// Each `tenantgate_[a-z_]+` metric named in `expr`, a histogram's `_bucket`, `_count` or `_sum`
/// cut back to the histogram, with the inside of the label selector right after it, if any.
fn metrics(expr: &str) -> Vec<(&str, Option<&str>)> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find(PREFIX) {
        let boundary =
            !rest[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || "_:".contains(c));
        let after = &rest[at + PREFIX.len()..];
        let len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(after.len());
        let (name, tail) = rest[at..].split_at(PREFIX.len() + len);
        if boundary && len > 0 {
            let histogram = ["_bucket", "_count", "_sum"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .find(|base| HISTOGRAMS.contains(base));
            let selector = tail.strip_prefix('{').and_then(|s| s.split_once('}'));
            found.push((
                histogram.unwrap_or(name),
                selector.map(|(inside, _)| inside),
            ));
        }
        rest = tail;
    }
    found
}

/// Every panel, those of collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let top = dashboard["panels"]
        .as_array()
        .expect("dashboard has panels");
    let nested = top
        .iter()
        .flat_map(|row| row["panels"].as_array().into_iter().flatten());
    top.iter().chain(nested).collect()
}

#[test]
fn queries_name_exported_metrics_and_cover_every_per_tenant_one() {
    let dashboard = dashboard();
    let mut seen = HashSet::new();
    let mut tenant_filtered = false;
    for expr in expressions(&dashboard) {
        for (name, selector) in metrics(expr) {
            let known = names::ALL.contains(&name);
            assert!(
                known,
                "`{name}` is not in metrics::names::ALL, in expression: {expr}"
            );
            tenant_filtered |=
                PER_TENANT.contains(&name) && selector.is_some_and(|s| s.contains(TENANT_FILTER));
            seen.insert(name);
        }
    }
    for metric in PER_TENANT {
        let shown = seen.contains(metric);
        assert!(
            shown,
            "no expression in the dashboard queries per-tenant `{metric}`"
        );
    }
    assert!(
        tenant_filtered,
        "no per-tenant metric is selected with {TENANT_FILTER}"
    );
}

#[test]
fn panel_ids_are_unique() {
    let dashboard = dashboard();
    let mut ids = HashSet::new();
    for panel in panels(&dashboard) {
        let title = &panel["title"];
        let id = panel["id"].as_u64();
        let id = id.unwrap_or_else(|| panic!("panel {title} has no numeric id"));
        assert!(
            ids.insert(id),
            "panel id {id} is used twice, again by {title}"
        );
    }
}

#[test]
fn every_query_uses_the_datasource_variable() {
    let dashboard = dashboard();
    let variable = json!({"type": "prometheus", "uid": "${datasource}"});
    for panel in panels(&dashboard) {
        let Some(targets) = panel["targets"].as_array() else {
            continue;
        };
        let title = &panel["title"];
        assert_eq!(panel["datasource"], variable, "datasource of panel {title}");
        for target in targets {
            let expr = &target["expr"];
            assert_eq!(
                target["datasource"], variable,
                "panel {title}, expression {expr}"
            );
        }
    }
    let list = dashboard["templating"]["list"].as_array();
    for var in list.into_iter().flatten().filter(|v| v["type"] == "query") {
        let query = &var["definition"];
        assert_eq!(var["datasource"], variable, "variable with query {query}");
    }
}
