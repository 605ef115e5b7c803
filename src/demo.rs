//! `tenantgate demo`: small built-in backends on the shipped config's upstream addresses, so routing
//! can be seen working with nothing else installed.
//!
//! Each backend answers every request with JSON naming itself and echoing what the gateway told it
//! (tenant header, request id, forwarded headers).

use std::collections::HashMap;
use std::net::SocketAddr;

use async_trait::async_trait;
use http::{HeaderName, Response, StatusCode};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use serde_json::json;

use crate::admin::respond;
use crate::config::GatewayConfig;

/// The demo backends of one config: `<pool>-<n>` on each loopback upstream address.
pub struct DemoBackends {
    names: HashMap<SocketAddr, String>,
    tenant_header: HeaderName,
}

impl DemoBackends {
    /// Backends for every loopback upstream in `config`, and the addresses left out (not loopback:
    /// the demo only ever listens on this machine).
    pub fn for_config(config: &GatewayConfig) -> (DemoBackends, Vec<String>) {
        let mut names = HashMap::new();
        let mut skipped = Vec::new();
        for pool in &config.routing.pools {
            for (i, upstream) in pool.upstreams.iter().enumerate() {
                if upstream.addr.ip().is_loopback() {
                    names.insert(upstream.addr, format!("{}-{}", pool.name, i + 1));
                } else {
                    skipped.push(upstream.label.clone());
                }
            }
        }
        let backends = DemoBackends {
            names,
            tenant_header: config.routing.tenant_header.clone(),
        };
        (backends, skipped)
    }

    /// `(address, name)` of every backend, sorted by name.
    pub fn listeners(&self) -> Vec<(SocketAddr, String)> {
        let mut all: Vec<_> = self.names.iter().map(|(a, n)| (*a, n.clone())).collect();
        all.sort_by(|a, b| a.1.cmp(&b.1));
        all
    }

    /// A Pingora service listening on every backend address.
    pub fn into_service(self) -> Service<HttpServer<DemoBackends>> {
        let listeners = self.listeners();
        let mut service = Service::new("demo backends".to_owned(), HttpServer::new_app(self));
        service.threads = Some(1);
        for (addr, _) in listeners {
            service.add_tcp(&addr.to_string());
        }
        service
    }
}

#[async_trait]
impl ServeHttp for DemoBackends {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let local = session.server_addr().and_then(|a| a.as_inet()).copied();
        let backend = local
            .and_then(|a| self.names.get(&a))
            .map_or("unknown", String::as_str);
        let req = session.req_header();
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        let body = if req.uri.path() == "/healthz" {
            b"ok\n".to_vec()
        } else {
            let value = json!({
                "backend": backend,
                "address": local.map(|a| a.to_string()),
                "tenant": header(self.tenant_header.as_str()),
                "request_id": header("x-request-id"),
                "host": header("host"),
                "method": req.method.as_str(),
                "path": req.uri.path(),
                "x_forwarded_for": header("x-forwarded-for"),
                "x_forwarded_proto": header("x-forwarded-proto"),
            });
            let mut body = serde_json::to_vec_pretty(&value).unwrap_or_default();
            body.push(b'\n');
            body
        };
        respond(StatusCode::OK, "application/json", body)
    }
}
