//! The admin API on its own listener (loopback by default): liveness, Prometheus metrics, and the
//! state of the running routing table.
//!
//! Architecture invariant: the admin API reads the same `TableHandle` as the proxy, never a copy, so
//! what it reports is what requests are routed by.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::metrics::Metrics;
use crate::routing::{RoutingTable, TableHandle};
use crate::tenant::TenantStatus;

pub struct AdminApi {
    table: Arc<TableHandle>,
    config_path: PathBuf,
    started: Instant,
}

impl AdminApi {
    pub fn new(table: Arc<TableHandle>, config_path: PathBuf) -> Self {
        AdminApi {
            table,
            config_path,
            started: Instant::now(),
        }
    }

    fn status(&self) -> Value {
        let table = self.table.load();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "config": self.config_path.display().to_string(),
            "generation": table.generation(),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "base_domains": table.base_domains().collect::<Vec<_>>(),
            "tenants": tenant_counts(&table),
            "hosts": table.hosts().iter().map(|h| json!({
                "host": h.host,
                "pool": table.pool(h.pool).map(|p| p.name()),
            })).collect::<Vec<_>>(),
            "pools": pools(&table),
        })
    }
}

fn tenant_counts(table: &RoutingTable) -> Value {
    let suspended = table
        .tenants()
        .iter()
        .filter(|t| t.status == TenantStatus::Suspended)
        .count();
    json!({
        "total": table.tenants().len(),
        "active": table.tenants().len() - suspended,
        "suspended": suspended,
    })
}

fn pools(table: &RoutingTable) -> Value {
    table
        .pools()
        .iter()
        .map(|p| {
            let upstreams: Vec<Value> = p
                .upstreams()
                .iter()
                .map(|u| {
                    json!({
                        "address": u.label,
                        "resolved": u.addr.to_string(),
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

fn json_response(status: StatusCode, value: &Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Vec<u8>> {
    json_response(status, &json!({ "error": code, "message": message }))
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path();
        let known = matches!(path, "/healthz" | "/metrics" | "/status");
        if known && req.method != Method::GET && req.method != Method::HEAD {
            return json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET",
            );
        }
        match path {
            "/healthz" => respond(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                Metrics::get().render().into_bytes(),
            ),
            "/status" => json_response(StatusCode::OK, &self.status()),
            _ => json_error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
        }
    }
}
