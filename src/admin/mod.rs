//! The admin API on its own listener (loopback by default): liveness, metrics, the state of the
//! running routing table, and the changes operators make to it (reload, promote, rollback, suspend,
//! activate), all through the control plane.
//!
//! Architecture invariant: the admin API reads the same `TableHandle` as the proxy and changes it only
//! through `ControlPlane`, so what it reports is what requests are routed by, and every change is
//! validated, persisted and audited.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::acme::Acme;
use crate::config::diff::{api_key_summary, rfc3339, CertificateSummary};
use crate::config::model::{
    AdminSettings, CertificateConfig, Probe, Rate, TenantConfig, TenantLimits,
};
use crate::control::audit::Actor;
use crate::control::edit::ApiKeyEntry;
use crate::control::promotion::{
    PromotionRequest, DEFAULT_MAX_ERROR_RATE, DEFAULT_MIN_REQUESTS, DEFAULT_PAUSE,
};
use crate::control::source::AuditQuery;
use crate::control::transfer::OnConflict;
use crate::control::{ApplyRequest, ControlPlane, ImportRequest, Outcome, Refusal};
use crate::host::{normalize_host, MAX_HOST_LEN};
use crate::identity::api_key::sha256;
use crate::identity::bearer_token;
use crate::metrics::tenant::RATE_WINDOW_SECONDS;
use crate::metrics::Metrics;
use crate::snapshot::RoutingTable;
use crate::tenant::TenantStatus;
use crate::upstream::health::probe_now;
use subtle::ConstantTimeEq;

/// Request bodies are JSON objects, the largest a pushed tenant file with its keys; anything
/// larger is refused.
const MAX_BODY: usize = 1024 * 1024;
/// `POST /apply` carries a whole routing file: 100,000 tenants are about 8 MiB of TOML.
const MAX_APPLY_BODY: usize = 64 * 1024 * 1024;
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

    fn tenants(&self, query: &str) -> Response<Vec<u8>> {
        let mut status = None;
        let mut pool = None;
        let mut limit = DEFAULT_PAGE;
        let mut offset = 0;
        for (key, value) in query_pairs(query) {
            match key {
                "status" => status = Some(value),
                "pool" => pool = Some(value),
                "limit" => limit = value.parse().unwrap_or(DEFAULT_PAGE),
                "offset" => offset = value.parse().unwrap_or(0),
                _ => {}
            }
        }
        let table = self.control.table().load();
        let applied = self.control.applied();
        let matching: Vec<&TenantConfig> = applied
            .config
            .routing
            .tenants
            .iter()
            .filter(|t| status.as_ref().is_none_or(|s| t.status.as_str() == s))
            .filter(|t| pool.as_ref().is_none_or(|p| t.pool == *p))
            .collect();
        let page: Vec<Value> = matching
            .iter()
            .skip(offset)
            .take(limit)
            .map(|t| self.tenant_view(&table, t))
            .collect();
        json_response(
            StatusCode::OK,
            &json!({ "total": matching.len(), "offset": offset, "tenants": page }),
        )
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
    fn export(&self, id: &str, query: &str) -> Response<Vec<u8>> {
        let with_keys = query_values(query, "with_keys").any(|v| v == "true" || v == "1");
        let origin = format!(
            "the gateway with admin API {}",
            self.control.applied().config.admin.listen
        );
        match self.control.export(id, with_keys, &origin) {
            Ok(text) => respond(StatusCode::OK, "application/toml", text.into_bytes()),
            Err(refusal) => refusal_response(&refusal),
        }
    }

    /// `POST /tenants`: a push of a tenant file, planned, and applied unless it is a dry run.
    async fn import(&self, actor: Actor, body: &[u8]) -> Response<Vec<u8>> {
        let request = match import_request(body) {
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
    async fn audit(&self, query: &str) -> Response<Vec<u8>> {
        let mut wanted = AuditQuery::default();
        for (key, value) in query_pairs(query) {
            match key {
                "tenant" => wanted.tenant = Some(value),
                "since" => match chrono::DateTime::parse_from_rfc3339(&value) {
                    Ok(t) => wanted.since = Some(t.timestamp_millis()),
                    Err(_) => {
                        return refusal_response(&Refusal::BadRequest(format!(
                            "since={value:?} is not an RFC 3339 time"
                        )))
                    }
                },
                "limit" => wanted.limit = value.parse().ok(),
                _ => {}
            }
        }
        match self.control.audit_records(&wanted).await {
            Ok(entries) => json_response(
                StatusCode::OK,
                &json!({ "source": self.control.source_kind(), "entries": entries }),
            ),
            Err(refusal) => refusal_response(&refusal),
        }
    }

    /// `POST /apply`: a routing file made the fleet's table (or, as a dry run, planned).
    async fn apply(&self, actor: Actor, body: &[u8]) -> Response<Vec<u8>> {
        let request = match apply_request(body) {
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
        let key: KeyBody = match serde_json::from_slice(body) {
            Ok(key) => key,
            Err(e) => {
                let refusal = Refusal::BadRequest(format!(
                    "expected {{\"id\": ..., \"sha256\": ..., \"created\": ...}} with optional expires: {e}"
                ));
                self.control
                    .record_refusal(&actor, "key.create", Some(id), &refusal);
                return refusal_response(&refusal);
            }
        };
        let entry = ApiKeyEntry {
            id: key.id,
            sha256: key.sha256,
            created: key.created,
            expires: key.expires,
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
    async fn pool_health(&self, query: &str) -> Response<Vec<u8>> {
        let wanted: Vec<String> = query_values(query, "pool").collect();
        let pools: Vec<_> = self
            .control
            .table()
            .load()
            .pools()
            .filter(|p| wanted.is_empty() || wanted.iter().any(|w| w == p.name()))
            .cloned()
            .collect();
        if let Some(missing) = wanted
            .iter()
            .find(|w| !pools.iter().any(|p| p.name() == w.as_str()))
        {
            return refusal_response(&Refusal::UnknownPool(missing.clone()));
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

    async fn tenant_action(
        &self,
        actor: Actor,
        id: &str,
        action: &str,
        body: &[u8],
    ) -> Response<Vec<u8>> {
        let result = match action {
            "promote" => match promotion_request(body) {
                Ok(request) => self.control.promote(actor, id, request).await,
                Err(refusal) => {
                    self.control
                        .record_refusal(&actor, "tenant.promote", Some(id), &refusal);
                    Err(refusal)
                }
            },
            "rollback" => self.control.rollback(actor, id).await,
            "suspend" => {
                self.control
                    .set_status(actor, id, TenantStatus::Suspended)
                    .await
            }
            "activate" => {
                self.control
                    .set_status(actor, id, TenantStatus::Active)
                    .await
            }
            _ => return json_error(StatusCode::NOT_FOUND, "not_found", "no such tenant action"),
        };
        self.changed(result, Some(id))
    }
}

/// The body of `POST /tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    fragment: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    on_conflict: Option<String>,
    #[serde(default)]
    with_keys: bool,
    #[serde(default)]
    dry_run: bool,
    expected_generation: Option<u64>,
}

fn import_request(body: &[u8]) -> Result<ImportRequest, Refusal> {
    let body: ImportBody = serde_json::from_slice(body).map_err(|e| {
        Refusal::BadRequest(format!(
            "expected {{\"fragment\": \"<TOML>\"}} with optional source, on_conflict, with_keys, dry_run, expected_generation: {e}"
        ))
    })?;
    let policy = body.on_conflict.as_deref().unwrap_or("fail");
    let on_conflict = OnConflict::parse(policy).ok_or_else(|| {
        Refusal::BadRequest(format!(
            "on_conflict {policy:?} is not one of {}",
            OnConflict::ALL.join(", ")
        ))
    })?;
    Ok(ImportRequest {
        fragment: body.fragment,
        source: body.source.unwrap_or_else(|| "tenant file".to_owned()),
        on_conflict,
        with_keys: body.with_keys,
        dry_run: body.dry_run,
        expected_generation: body.expected_generation,
    })
}

/// The body of `POST /tenants/{id}/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    id: String,
    sha256: String,
    created: String,
    #[serde(default)]
    expires: Option<String>,
}

/// The body of `POST /apply`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    config: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    prune: bool,
    #[serde(default)]
    dry_run: bool,
    expected_revision: Option<i64>,
}

fn apply_request(body: &[u8]) -> Result<ApplyRequest, Refusal> {
    let body: ApplyBody = serde_json::from_slice(body).map_err(|e| {
        Refusal::BadRequest(format!(
            "expected {{\"config\": \"<TOML>\"}} with optional source, prune, dry_run, expected_revision: {e}"
        ))
    })?;
    Ok(ApplyRequest {
        text: body.config,
        source: body.source.unwrap_or_else(|| "routing file".to_owned()),
        prune: body.prune,
        dry_run: body.dry_run,
        expected_revision: body.expected_revision,
    })
}

/// A query string's `key=value` pairs, values percent-decoded.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, String)> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, percent_decode(v)))
}

/// The values of `key` in a query string (`pool=a&pool=b`).
fn query_values<'a>(query: &'a str, key: &'a str) -> impl Iterator<Item = String> + 'a {
    query_pairs(query)
        .filter(move |(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(u8::try_from(byte).unwrap_or(b'?'));
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The limits in force for a tenant, as `tenants show` prints them.
fn limits_view(limits: &TenantLimits) -> Value {
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
    })
}

/// The body of `POST /tenants/{id}/promote`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    pool: String,
    #[serde(default)]
    steps: Vec<u8>,
    pause_ms: Option<u64>,
    max_error_rate: Option<f64>,
    min_requests: Option<u64>,
}

fn promotion_request(body: &[u8]) -> Result<PromotionRequest, Refusal> {
    let body: PromoteBody = serde_json::from_slice(body)
        .map_err(|e| Refusal::BadRequest(format!("expected {{\"pool\": \"...\"}} with optional steps, pause_ms, max_error_rate, min_requests: {e}")))?;
    Ok(PromotionRequest {
        pool: body.pool,
        steps: body.steps,
        pause: body.pause_ms.map_or(DEFAULT_PAUSE, Duration::from_millis),
        max_error_rate: body.max_error_rate.unwrap_or(DEFAULT_MAX_ERROR_RATE),
        min_requests: body.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS),
    })
}

fn tenant_counts(table: &RoutingTable) -> Value {
    let suspended = table.suspended_count();
    json!({
        "total": table.tenant_count(),
        "active": table.tenant_count() - suspended,
        "suspended": suspended,
    })
}

fn pools(table: &RoutingTable) -> Value {
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

fn refusal_response(refusal: &Refusal) -> Response<Vec<u8>> {
    let status =
        StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &refusal.to_json())
}

/// The request body, up to `MAX_BODY`, or the answer to give instead.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    read_body_up_to(session, MAX_BODY).await
}

/// The request body, up to `limit` bytes.
async fn read_body_up_to(
    session: &mut ServerSession,
    limit: usize,
) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(json_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        &format!("the request body is over {} MiB", limit / (1024 * 1024)),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.to_vec()),
            Err(_) => {
                return Err(json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    "the request body could not be read",
                ))
            }
        }
    }
}

/// The admin API answers programs, not browsers. A request with an `Origin` header is refused, so
/// that a web page cannot post changes to it. So is a Host other than an IP address or
/// `localhost`, so that a name an attacker rebinds to this address (DNS rebinding) cannot read it.
fn refused_client(session: &ServerSession) -> Option<Response<Vec<u8>>> {
    let headers = &session.req_header().headers;
    if headers.contains_key(header::ORIGIN) {
        return Some(json_error(
            StatusCode::FORBIDDEN,
            "browser_refused",
            "the admin API does not answer browsers (requests with an Origin header)",
        ));
    }
    let host = headers.get(header::HOST)?;
    let mut buf = [0u8; MAX_HOST_LEN];
    let allowed = normalize_host(host.as_bytes(), &mut buf).is_ok_and(|h| {
        h == "localhost"
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok()
    });
    (!allowed).then(|| {
        json_error(
            StatusCode::FORBIDDEN,
            "bad_host",
            "reach the admin API by IP address or localhost",
        )
    })
}

/// Who is asking: the client's address, and the name it gives itself in `X-Actor` (informational,
/// recorded in the audit log as given, at most 64 printable characters).
fn actor(session: &ServerSession) -> Actor {
    let peer = session
        .client_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let name = session
        .req_header()
        .headers
        .get("x-actor")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        })
        .filter(|v| !v.is_empty());
    Actor::Api { peer, name }
}

/// Whether the request carries the admin token, when one is configured. `/healthz` is always open
/// (load balancers probe it), `/metrics` unless `metrics_require_token`. The presented token is
/// hashed and compared in constant time; the log line names the client, never what it sent.
fn unauthorized(
    session: &ServerSession,
    admin: &AdminSettings,
    path: &str,
) -> Option<Response<Vec<u8>>> {
    let token = admin.token.as_ref()?;
    let open = path == "/healthz" || (path == "/metrics" && !admin.metrics_require_token);
    if open {
        return None;
    }
    let presented = session
        .req_header()
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let valid = presented.is_some_and(|p| bool::from(sha256(p).ct_eq(&token.sha256)));
    if valid {
        return None;
    }
    let peer = session
        .client_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    tracing::warn!(
        peer,
        path,
        reason = if presented.is_some() {
            "wrong token"
        } else {
            "no token"
        },
        "admin API request refused"
    );
    let mut response = json_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "the admin API needs its bearer token (Authorization: Bearer ...)",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"tenantgate-admin\""),
    );
    Some(response)
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if let Some(refusal) = refused_client(session) {
            return refusal;
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        let applied = self.control.applied();
        if let Some(refusal) = unauthorized(session, &applied.config.admin, &path) {
            return refusal;
        }
        drop(applied);
        let query = session.req_header().uri.query().unwrap_or("").to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let reading = method == Method::GET || method == Method::HEAD;
        match (reading, segments.as_slice()) {
            (true, ["healthz"]) => respond(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            (true, ["metrics"]) => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                Metrics::get()
                    .render(&*self.control.table().load())
                    .into_bytes(),
            ),
            (true, ["status"]) => json_response(StatusCode::OK, &self.status()),
            (true, ["certs"]) => self.certs(),
            (false, ["certs", name, "renew"]) if method == Method::POST => self.renew(name),
            (true, ["config"]) => respond(
                StatusCode::OK,
                "application/toml",
                self.control.applied().text.as_bytes().to_vec(),
            ),
            (true, ["tenants"]) => self.tenants(&query),
            (true, ["export"]) => self.export_all(),
            (true, ["audit"]) => self.audit(&query).await,
            (false, ["apply"]) if method == Method::POST => {
                let actor = actor(session);
                match read_body_up_to(session, MAX_APPLY_BODY).await {
                    Ok(body) => self.apply(actor, &body).await,
                    Err(answer) => answer,
                }
            }
            (false, ["tenants", id, "keys"]) if method == Method::POST => {
                let actor = actor(session);
                match read_body(session).await {
                    Ok(body) => self.add_key(actor, id, &body).await,
                    Err(answer) => answer,
                }
            }
            (false, ["tenants", id, "keys", key, "revoke"]) if method == Method::POST => {
                let actor = actor(session);
                self.revoke_key(actor, id, key).await
            }
            (true, ["tenants", id]) => self.tenant(id).await,
            (true, ["tenants", id, "export"]) => self.export(id, &query),
            (true, ["pools", "health"]) => self.pool_health(&query).await,
            (false, ["tenants"]) if method == Method::POST => {
                let actor = actor(session);
                match read_body(session).await {
                    Ok(body) => self.import(actor, &body).await,
                    Err(answer) => answer,
                }
            }
            (false, ["reload"]) if method == Method::POST => {
                let actor = actor(session);
                self.changed(self.control.reload(actor).await, None)
            }
            (false, ["tenants", id, action]) if method == Method::POST => {
                let actor = actor(session);
                match read_body(session).await {
                    Ok(body) => self.tenant_action(actor, id, action, &body).await,
                    Err(answer) => answer,
                }
            }
            (_, ["tenants"]) => json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET, or POST to push a tenant file",
            ),
            (
                _,
                ["healthz" | "metrics" | "status" | "config" | "export" | "audit" | "certs"]
                | ["tenants", _]
                | ["tenants", _, "export"]
                | ["pools", "health"],
            ) => json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET",
            ),
            (
                _,
                ["reload" | "apply"]
                | ["tenants", _, _]
                | ["tenants", _, "keys", _, "revoke"]
                | ["certs", _, "renew"],
            ) => json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use POST",
            ),
            _ => json_error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
        }
    }
}

/// The certificates in use, with what an operator checks first: names, expiry, days left.
fn certificates(certificates: &[CertificateConfig]) -> Vec<Value> {
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
