//! What the admin API answers: the JSON views of the running table (what `tenants show`,
//! `status` and `pools` print) and the response builders every endpoint uses.

use http::{header, Response, StatusCode};
use serde_json::{json, Value};

use crate::config::diff::{rfc3339, CertificateSummary};
use crate::config::model::{CertificateConfig, Rate, TenantLimits};
use crate::control::Refusal;
use crate::snapshot::RoutingTable;
use crate::tenant::TenantStatus;
use crate::traffic_policy::IpList;

/// The limits in force for a tenant, as `tenants show` prints them.
pub(super) fn limits_view(limits: &TenantLimits) -> Value {
    let rate = |r: &Rate| json!({ "requests_per_second": r.per_second, "burst": r.burst });
    json!({
        "rate_limit": limits.rate.as_ref().map(rate),
        "credential_rate_limit": limits.credential_rate.as_ref().map(rate),
        "concurrency": limits.concurrency.map(|c| json!({
            "max_in_flight": c.max_in_flight,
            "queue": c.queue,
            "queue_timeout_ms": u64::try_from(c.queue_timeout.as_millis()).unwrap_or(u64::MAX),
        })),
        "route_limits": limits.routes.iter().map(|r| json!({
            "path_prefix": r.path_prefix,
            "rate_limit": rate(&r.rate),
        })).collect::<Vec<_>>(),
        "allow_ips": limits.allow_ips.as_ref().map(|l| ip_list(l)),
        "deny_ips": limits.deny_ips.as_ref().map(|l| ip_list(l)),
        "max_request_body_bytes": limits.max_request_body_bytes,
        "max_request_header_bytes": limits.max_request_header_bytes,
    })
}

fn ip_list(list: &IpList) -> Vec<String> {
    list.entries().map(|n| n.to_string()).collect()
}

pub(super) fn tenant_counts(table: &RoutingTable) -> Value {
    json!({
        "total": table.tenant_count(),
        "active": table.count_with(TenantStatus::Active),
        "suspended": table.count_with(TenantStatus::Suspended),
        "maintenance": table.count_with(TenantStatus::Maintenance),
    })
}

pub(super) fn pools(table: &RoutingTable) -> Value {
    table
        .pools()
        .map(|p| {
            let upstreams: Vec<Value> = p
                .upstreams()
                .iter()
                .map(|u| {
                    json!({
                        "address": u.label,
                        "resolved": u.addr.to_string(),
                        "weight": u.weight(),
                        "healthy": u.state.is_healthy(),
                        "ejected": u.state.is_ejected(),
                        "available": u.state.is_available(),
                        "in_flight": u.state.in_flight(),
                    })
                })
                .collect();
            json!({
                "name": p.name(),
                "load_balancing": p.config.balancing.as_str(),
                "protocol": p.config.protocol.as_str(),
                "health_check": p.config.health_check.is_some(),
                "available": p.has_available(),
                "upstreams": upstreams,
            })
        })
        .collect()
}

/// A complete response for Pingora's `ServeHttp` apps (the admin API and the demo backends).
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Vec<u8>> {
    let length = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    headers.insert(header::CONTENT_LENGTH, length.into());
    resp
}

pub(super) fn json_response(status: StatusCode, value: &Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

pub(super) fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Vec<u8>> {
    json_response(status, &json!({ "error": code, "message": message }))
}

pub(super) fn refusal_response(refusal: &Refusal) -> Response<Vec<u8>> {
    let status =
        StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &refusal.to_json())
}

/// The certificates in use, with what an operator checks first: names, expiry, days left.
pub(super) fn certificates(certificates: &[CertificateConfig]) -> Vec<Value> {
    let now = chrono::Utc::now().timestamp();
    certificates
        .iter()
        .map(|c| {
            let mut view = CertificateSummary::of(c).to_json();
            view["cert"] = json!(c.cert_label);
            view["not_before"] = json!(rfc3339(c.loaded.not_before));
            view["days_left"] = json!(c.loaded.days_left(now));
            view
        })
        .collect()
}
