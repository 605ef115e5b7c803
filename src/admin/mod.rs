//! The admin API on its own listener (loopback by default): liveness, metrics, the state of the
//! running routing table, and the changes operators make to it (reload, promote, rollback, suspend,
//! activate), all through the control plane.
//!
//! Architecture invariant: the admin API reads the same `TableHandle` as the proxy and changes it only
//! through `ControlPlane`, so what it reports is what requests are routed by, and every change is
//! validated, persisted and audited.

mod bodies;
mod guards;
mod query;
mod router;
mod scrape;
mod views;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::acme::Acme;
use crate::config::diff::{api_key_summary, rfc3339};
use crate::config::model::{Probe, TenantConfig};
use crate::control::audit::Actor;
use crate::control::source::AuditQuery;
use crate::control::{ControlPlane, Outcome, Refusal};
use crate::metrics::tenant::RATE_WINDOW_SECONDS;
use crate::metrics::Metrics;
use crate::snapshot::RoutingTable;
use crate::tenant::TenantStatus;
use crate::upstream::health::probe_now;
use bodies::{read_body, read_body_up_to, MAX_APPLY_BODY};
use query::{Query, QueryError};
use router::{Route, TenantAction, Unrouted};
pub use scrape::ScrapeEndpoint;
pub(crate) use views::respond;
use views::{
    certificates, json_error, json_response, limits_view, pools, refusal_response, tenant_counts,
};

/// `GET /pools/health` probes at most this many upstreams at once.
const PROBES_AT_ONCE: usize = 32;
/// `GET /tenants` pages: at most this many tenants per answer unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 1000;
/// Audit entries `GET /tenants/{id}` shows.
const RECENT_CHANGES: usize = 10;

pub struct AdminApi {
    control: Arc<ControlPlane>,
    /// With `[acme]`: its names for `/status` and `/certs`, and forced renewals.
    acme: Option<Arc<Acme>>,
    started: Instant,
}

impl AdminApi {
    pub fn new(control: Arc<ControlPlane>, acme: Option<Arc<Acme>>) -> Self {
        AdminApi {
            control,
            acme,
            started: Instant::now(),
        }
    }

    /// `GET /certs`: every name served, whatever its source (file, dev, acme), with its
    /// issuer, expiry and renewal state.
    fn certs(&self) -> Response<Vec<u8>> {
        let applied = self.control.applied();
        let now = chrono::Utc::now().timestamp();
        let mut list: Vec<Value> = Vec::new();
        for c in &applied.config.routing.tls.certificates {
            let source = match c.loaded.issuer.as_str() {
                crate::tls::dev::DEV_CA_NAME => "dev",
                _ => "file",
            };
            for name in &c.loaded.names {
                list.push(json!({
                    "name": name,
                    "source": source,
                    "cert": c.cert_label,
                    "default": c.default,
                    "tenant": c.tenant.as_ref().map(|t| t.as_str()),
                    "issuer": c.loaded.issuer,
                    "not_before": rfc3339(c.loaded.not_before),
                    "not_after": rfc3339(c.loaded.not_after),
                    "days_left": c.loaded.days_left(now),
                    "sha256": c.loaded.fingerprint,
                    "renewal": "manual",
                }));
            }
        }
        if let Some(acme) = &self.acme {
            list.extend(acme.certificates());
        }
        json_response(
            StatusCode::OK,
            &json!({ "acme": self.acme.is_some(), "certificates": list }),
        )
    }

    /// `POST /certs/{name}/renew`: orders the name again now.
    fn renew(&self, name: &str) -> Response<Vec<u8>> {
        let Some(acme) = &self.acme else {
            return json_error(
                StatusCode::CONFLICT,
                "acme_disabled",
                "this gateway has no [acme] section: its certificates come from files",
            );
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match acme.renew(&name) {
            Ok(()) => json_response(
                StatusCode::ACCEPTED,
                &json!({ "name": name, "renewal": "ordering", "message": "an order starts now; GET /certs shows how it went" }),
            ),
            Err(e) => json_error(StatusCode::NOT_FOUND, "not_an_acme_name", &e.to_string()),
        }
    }

    fn status(&self) -> Value {
        let table = self.control.table().load();
        let applied = self.control.applied();
        let store = self.control.store().map(|s| s.status(table.generation()));
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "config": self.control.path().display().to_string(),
            "source": self.control.source_kind(),
            "store": store,
            "audit_log": self.control.audit_path().display().to_string(),
            "generation": table.generation(),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "last_change": self.control.last_change().map(|c| c.to_json()),
            "base_domains": table.base_domains().collect::<Vec<_>>(),
            "listen": {
                "http": applied.config.gateway.http_listen.to_string(),
                "https": applied.config.gateway.https_listen.map(|a| a.to_string()),
                "admin": applied.config.admin.listen.to_string(),
                "metrics": applied.config.admin.metrics_listen.map(|a| a.to_string()),
            },
            "admin_token": applied.config.admin.token.as_ref().map(|t| t.source.clone()),
            "certificates": certificates(&applied.config.routing.tls.certificates),
            "acme": self.acme.as_ref().map(|a| a.status()),
            "tenants": tenant_counts(&table),
            "hosts": table.hosts().iter().map(|h| json!({
                "host": h.host,
                "pool": h.pool.and_then(|p| table.pool(p)).map(|p| p.name()),
                "tenant_source": if h.pool.is_some() { "host" } else { "claim" },
            })).collect::<Vec<_>>(),
            "pools": pools(&table),
        })
    }

    fn tenant_view(&self, table: &RoutingTable, t: &TenantConfig) -> Value {
        let running = table.tenant_by_id(t.id.as_str());
        let canary = t.canary.as_ref().map(|c| {
            let (requests, failures) = running
                .and_then(|r| r.canary.as_ref())
                .map_or((0, 0), |c| c.stats.snapshot());
            json!({ "pool": c.pool, "percent": c.percent, "requests": requests, "failures": failures })
        });
        let fleet = self.control.fleet_record(t.id.as_str());
        let promotion = match (fleet, self.control.promotion(t.id.as_str()), &t.canary) {
            // A fleet's promotion: the store says where it is and who runs it.
            (Some(record), _, _) => {
                record.to_json(self.control.fleet_lock(t.id.as_str()).as_deref())
            }
            (None, Some(run), _) if run.is_running() || t.canary.is_none() => run.to_json(),
            // A canary with no runner: a promotion interrupted by a restart.
            (None, _, Some(c)) => json!({ "state": "paused", "to": c.pool, "percent": c.percent }),
            (None, Some(run), None) => run.to_json(),
            (None, None, None) => Value::Null,
        };
        json!({
            "id": t.id.as_str(),
            "name": t.name,
            "status": t.status.as_str(),
            "pool": t.pool,
            "isolation": match running.is_some_and(|r| table.is_dedicated(r)) {
                true => "dedicated",
                false => "shared",
            },
            "previous_pool": t.previous_pool,
            "domains": t.domains,
            "canary": canary,
            "promotion": promotion,
        })
    }

    fn tenants(&self, query: &Query) -> Result<Response<Vec<u8>>, QueryError> {
        let status = query.choice("status", &TenantStatus::ALL)?;
        let pool = query.get("pool");
        let limit = query.count("limit")?.unwrap_or(DEFAULT_PAGE);
        let offset = query.count("offset")?.unwrap_or(0);
        let table = self.control.table().load();
        let applied = self.control.applied();
        let matching: Vec<&TenantConfig> = applied
            .config
            .routing
            .tenants
            .iter()
            .filter(|t| status.is_none_or(|s| t.status.as_str() == s))
            .filter(|t| pool.is_none_or(|p| t.pool == p))
            .collect();
        let page: Vec<Value> = matching
            .iter()
            .skip(offset)
            .take(limit)
            .map(|t| self.tenant_view(&table, t))
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "total": matching.len(), "offset": offset, "tenants": page }),
        ))
    }

    /// One tenant with everything `tenants show` prints: the list's view, plus its plan and the
    /// limits in force, its keys (never their hashes), its latest audit entries and its live rate.
    async fn tenant(&self, id: &str) -> Response<Vec<u8>> {
        let recent = self.control.recent_changes(id, RECENT_CHANGES).await;
        let table = self.control.table().load();
        let applied = self.control.applied();
        let Some(t) = applied.config.routing.tenant(id) else {
            return refusal_response(&Refusal::UnknownTenant(id.to_owned()));
        };
        let mut view = self.tenant_view(&table, t);
        let running = table.tenant_by_id(id);
        let now = chrono::Utc::now().timestamp();
        view["plan"] = json!(t.plan);
        view["limits"] = limits_view(&t.limits);
        view["api_keys"] = t.api_keys.iter().map(|k| api_key_summary(k, now)).collect();
        view["traffic"] = json!({
            "requests_per_second": running.map_or(0.0, |r| r.stats.request_rate()),
            "window_seconds": RATE_WINDOW_SECONDS,
            "in_flight": running.map_or(0, |r| r.in_flight.current()),
        });
        view["recent_changes"] = json!(recent);
        json_response(StatusCode::OK, &view)
    }

    /// `GET /tenants/{id}/export`: the tenant file `tenants pull` prints.
    fn export(&self, id: &str, query: &Query) -> Result<Response<Vec<u8>>, QueryError> {
        let with_keys = query.flag("with_keys")?.unwrap_or(false);
        let origin = format!(
            "the gateway with admin API {}",
            self.control.applied().config.admin.listen
        );
        Ok(match self.control.export(id, with_keys, &origin) {
            Ok(text) => respond(StatusCode::OK, "application/toml", text.into_bytes()),
            Err(refusal) => refusal_response(&refusal),
        })
    }

    /// `POST /tenants`: a push of a tenant file, planned, and applied unless it is a dry run.
    async fn import(&self, actor: Actor, body: &[u8]) -> Response<Vec<u8>> {
        let request = match bodies::import_request(body) {
            Ok(request) => request,
            Err(refusal) => return refusal_response(&refusal),
        };
        let dry_run = request.dry_run;
        match self.control.import(actor, request).await {
            Ok(imported) => {
                let mut answer = json!({
                    "dry_run": dry_run,
                    "plan": imported.plan.to_json(),
                    "conflicts": imported.plan.conflicts(),
                    "planned_at_generation": imported.generation,
                });
                match &imported.outcome {
                    Some(outcome) => {
                        let result = outcome.to_json();
                        for key in ["result", "generation", "changes"] {
                            answer[key] = result[key].clone();
                        }
                    }
                    None => {
                        answer["result"] = json!("dry_run");
                        answer["generation"] = json!(imported.generation);
                        answer["changes"] = json!(imported
                            .changes
                            .iter()
                            .map(|c| c.to_json())
                            .collect::<Vec<_>>());
                    }
                }
                json_response(StatusCode::OK, &answer)
            }
            Err(refusal) => refusal_response(&refusal),
        }
    }

    /// `GET /export`: every shared entry as one routing file, which `tenantgate apply` takes
    /// unchanged.
    fn export_all(&self) -> Response<Vec<u8>> {
        let (text, generation) = self.control.export_all();
        let what = match self.control.store() {
            Some(store) => format!(
                "the fleet's store {} at revision {generation}",
                store.store.label()
            ),
            None => format!(
                "{} at generation {generation}",
                self.control.path().display()
            ),
        };
        let header = format!(
            "# The shared routing table of {what}, exported {}.\n# tenantgate apply --config FILE takes it back unchanged.\n\n",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        respond(
            StatusCode::OK,
            "application/toml",
            (header + &text).into_bytes(),
        )
    }

    /// `GET /audit`: the audit records (the fleet's with a store), oldest first.
    async fn audit(&self, query: &Query) -> Result<Response<Vec<u8>>, QueryError> {
        let wanted = AuditQuery {
            tenant: query.get("tenant").map(str::to_owned),
            since: query.time("since")?,
            limit: query.count("limit")?,
        };
        Ok(match self.control.audit_records(&wanted).await {
            Ok(entries) => json_response(
                StatusCode::OK,
                &json!({ "source": self.control.source_kind(), "entries": entries }),
            ),
            Err(refusal) => refusal_response(&refusal),
        })
    }

    /// `POST /apply`: a routing file made the fleet's table (or, as a dry run, planned).
    async fn apply(&self, actor: Actor, body: &[u8]) -> Response<Vec<u8>> {
        let request = match bodies::apply_request(body) {
            Ok(request) => request,
            Err(refusal) => return refusal_response(&refusal),
        };
        let dry_run = request.dry_run;
        match self.control.apply(actor, request).await {
            Ok(answer) => {
                let result = match (dry_run, answer.plan.writes.is_empty()) {
                    (true, _) => "dry_run",
                    (false, true) => "unchanged",
                    (false, false) => "applied",
                };
                json_response(
                    StatusCode::OK,
                    &json!({
                        "result": result,
                        "dry_run": dry_run,
                        "planned_at_revision": answer.plan.revision,
                        "plan": answer.plan.to_json(),
                        "revisions": answer.revisions,
                        "generation": self.control.table().load().generation(),
                    }),
                )
            }
            Err(refusal) => refusal_response(&refusal),
        }
    }

    /// `POST /tenants/{id}/keys`: a key's hash and dates, made by the CLI (the key itself never
    /// reaches the gateway).
    async fn add_key(&self, actor: Actor, id: &str, body: &[u8]) -> Response<Vec<u8>> {
        let entry = match bodies::key_entry(body) {
            Ok(entry) => entry,
            Err(refusal) => {
                self.control
                    .record_refusal(&actor, "key.create", Some(id), &refusal);
                return refusal_response(&refusal);
            }
        };
        let result = self.control.add_api_key(&actor, id, entry).await;
        self.changed(result, Some(id))
    }

    /// `POST /tenants/{id}/keys/{key}/revoke`: refused from now on.
    async fn revoke_key(&self, actor: Actor, id: &str, key: &str) -> Response<Vec<u8>> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let result = self.control.revoke_api_key(&actor, id, key, &now).await;
        self.changed(result, Some(id))
    }

    /// `GET /pools/health`: probes every upstream of the pools asked for (all by default) now, as
    /// a health check would, and says what the health checker currently thinks of each.
    async fn pool_health(&self, query: &Query) -> Response<Vec<u8>> {
        let wanted: Vec<&str> = query.all("pool").collect();
        let pools: Vec<_> = self
            .control
            .table()
            .load()
            .pools()
            .filter(|p| wanted.is_empty() || wanted.contains(&p.name()))
            .cloned()
            .collect();
        if let Some(missing) = wanted
            .iter()
            .find(|w| !pools.iter().any(|p| p.name() == **w))
        {
            return refusal_response(&Refusal::UnknownPool((*missing).to_owned()));
        }
        let mut probes = tokio::task::JoinSet::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(PROBES_AT_ONCE));
        for (p, pool) in pools.iter().enumerate() {
            for (u, _) in pool.upstreams().iter().enumerate() {
                let pool = Arc::clone(pool);
                let slots = Arc::clone(&slots);
                probes.spawn(async move {
                    // Never closed, so acquiring only waits.
                    let _slot = slots.acquire_owned().await;
                    let started = Instant::now();
                    let result = match pool.upstream(u) {
                        Some(upstream) => probe_now(&pool, upstream).await,
                        None => Err("gone".to_owned()),
                    };
                    (p, u, result, started.elapsed())
                });
            }
        }
        let mut results = Vec::new();
        while let Some(joined) = probes.join_next().await {
            if let Ok(result) = joined {
                results.push(result);
            }
        }
        let answer: Vec<Value> = pools
            .iter()
            .enumerate()
            .map(|(p, pool)| {
                let upstreams: Vec<Value> = pool
                    .upstreams()
                    .iter()
                    .enumerate()
                    .map(|(u, upstream)| {
                        let probe = results.iter().find(|r| r.0 == p && r.1 == u);
                        json!({
                            "address": upstream.label,
                            "reachable": probe.is_some_and(|r| r.2.is_ok()),
                            "error": probe.and_then(|r| r.2.as_ref().err()),
                            "probe_ms": probe.map(|r| r.3.as_secs_f64() * 1000.0),
                            "healthy": upstream.state.is_healthy(),
                            "available": upstream.state.is_available(),
                        })
                    })
                    .collect();
                let reachable = upstreams.iter().filter(|u| u["reachable"] == true).count();
                json!({
                    "name": pool.name(),
                    "check": match &pool.config.health_check {
                        Some(hc) => match &hc.probe {
                            Probe::Http { path, .. } => format!("GET {path}"),
                            Probe::Tcp => "TCP connect".to_owned(),
                        },
                        None => "TCP connect".to_owned(),
                    },
                    "reachable": reachable,
                    "upstreams": upstreams,
                })
            })
            .collect();
        json_response(StatusCode::OK, &json!({ "pools": answer }))
    }

    /// The answer to a change: the outcome, and the tenant as it is now.
    fn changed(&self, result: Result<Outcome, Refusal>, tenant: Option<&str>) -> Response<Vec<u8>> {
        match result {
            Ok(outcome) => {
                let mut body = outcome.to_json();
                if let Some(id) = tenant {
                    let table = self.control.table().load();
                    let applied = self.control.applied();
                    if let Some(t) = applied.config.routing.tenant(id) {
                        body["tenant"] = self.tenant_view(&table, t);
                    }
                }
                json_response(StatusCode::OK, &body)
            }
            Err(refusal) => refusal_response(&refusal),
        }
    }

    /// A tenant's promotion, rollback or status change; with `close_connections`, its upgraded
    /// connections (WebSockets) end too, which otherwise outlive a suspension or a promotion.
    async fn tenant_action(
        &self,
        actor: Actor,
        id: &str,
        action: TenantAction,
        close_connections: bool,
        body: &[u8],
    ) -> Response<Vec<u8>> {
        let result = match action {
            TenantAction::Promote => match bodies::promotion_request(body) {
                Ok(request) => self.control.promote(actor, id, request).await,
                Err(refusal) => {
                    self.control
                        .record_refusal(&actor, "tenant.promote", Some(id), &refusal);
                    Err(refusal)
                }
            },
            TenantAction::Rollback => self.control.rollback(actor, id).await,
            TenantAction::Suspend => {
                self.control
                    .set_status(actor, id, TenantStatus::Suspended)
                    .await
            }
            TenantAction::Maintenance => {
                self.control
                    .set_status(actor, id, TenantStatus::Maintenance)
                    .await
            }
            TenantAction::Activate => {
                self.control
                    .set_status(actor, id, TenantStatus::Active)
                    .await
            }
        };
        if close_connections && result.is_ok() {
            if let Some(tenant) = self.control.table().load().tenant_by_id(id) {
                tenant.stats.close_connections();
            }
        }
        self.changed(result, Some(id))
    }

    /// The answer of one endpoint; a query value outside the document is the caller's 400.
    async fn serve(
        &self,
        route: Route<'_>,
        query: &Query,
        peer: &str,
        session: &mut ServerSession,
    ) -> Result<Response<Vec<u8>>, QueryError> {
        let actor = || guards::actor(&session.req_header().headers, peer);
        Ok(match route {
            Route::Healthz => respond(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            Route::Metrics => metrics_response(&self.control),
            Route::Status => json_response(StatusCode::OK, &self.status()),
            Route::Config => respond(
                StatusCode::OK,
                "application/toml",
                self.control.applied().text.as_bytes().to_vec(),
            ),
            Route::Certs => self.certs(),
            Route::RenewCert(name) => self.renew(name),
            Route::Tenants => self.tenants(query)?,
            Route::Tenant(id) => self.tenant(id).await,
            Route::TenantExport(id) => self.export(id, query)?,
            Route::PoolHealth => self.pool_health(query).await,
            Route::Export => self.export_all(),
            Route::Audit => self.audit(query).await?,
            Route::Reload => {
                let actor = actor();
                self.changed(self.control.reload(actor).await, None)
            }
            Route::RevokeKey(id, key) => self.revoke_key(actor(), id, key).await,
            Route::Apply => {
                let actor = actor();
                match read_body_up_to(session, MAX_APPLY_BODY).await {
                    Ok(body) => self.apply(actor, &body).await,
                    Err(answer) => answer,
                }
            }
            Route::PushTenant | Route::AddKey(_) | Route::TenantAction(..) => {
                let close_connections = query.flag("close_connections")?.unwrap_or(false);
                let actor = actor();
                let body = match read_body(session).await {
                    Ok(body) => body,
                    Err(answer) => return Ok(answer),
                };
                match route {
                    Route::AddKey(id) => self.add_key(actor, id, &body).await,
                    Route::TenantAction(id, action) => {
                        self.tenant_action(actor, id, action, close_connections, &body)
                            .await
                    }
                    _ => self.import(actor, &body).await,
                }
            }
        })
    }
}

/// The client's address as the audit log and refusal logs name it.
fn peer_label(session: &ServerSession) -> String {
    session
        .client_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}

/// `/metrics`: the Prometheus text of every metric, on the admin listener and on `[metrics]
/// listen`.
pub(crate) fn metrics_response(control: &ControlPlane) -> Response<Vec<u8>> {
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        Metrics::get().render(&*control.table().load()).into_bytes(),
    )
}

#[async_trait]
impl ServeHttp for AdminApi {
    /// Guards first (browsers, rebound names, the token), then the endpoint the route names.
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let headers = &session.req_header().headers;
        if let Some(refusal) = guards::refused_client(headers) {
            return refusal;
        }
        let peer = peer_label(session);
        let path = session.req_header().uri.path().to_owned();
        let admin = &self.control.applied().config.admin;
        if let Some(refusal) = guards::unauthorized(headers, &peer, admin, &path) {
            return refusal;
        }
        let query = Query::parse(session.req_header().uri.query().unwrap_or(""));
        let method = session.req_header().method.clone();
        match router::route(&method, &path) {
            Ok(route) => match self.serve(route, &query, &peer, session).await {
                Ok(answer) => answer,
                Err(e) => json_error(StatusCode::BAD_REQUEST, "bad_query", &e.to_string()),
            },
            Err(Unrouted::MethodNotAllowed { allow }) => {
                let mut answer = json_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    &format!("{path} takes {allow}"),
                );
                answer
                    .headers_mut()
                    .insert(header::ALLOW, header::HeaderValue::from_static(allow));
                answer
            }
            Err(Unrouted::NotFound) => {
                json_error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint")
            }
        }
    }
}
