//! What changes between two validated configs, in the terms operators think in: tenants added,
//! removed, suspended, moved between pools; pools and hosts changed; settings changed.
//!
//! `tenantgate plan` prints it, `/reload` returns it, and the audit log records one entry per change.
//! Settings that need a new listening socket or a new process are marked: a reload refuses them.

use std::collections::HashMap;
use std::fmt;

/// Maps of every tenant on both sides of a reload: a fast hash matters at 100,000 tenants.
type Index<'a, T> = HashMap<&'a str, T, foldhash::fast::RandomState>;

use serde_json::{json, Value};

use super::model::{
    ApiKeyConfig, CanaryConfig, CertificateConfig, GatewayConfig, HostConfig, MaintenanceAnswer,
    MaintenancePage, PoolConfig, TenantConfig, TenantList,
};
use crate::tenant::TenantStatus;

/// One change, as one line of a plan and one audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    TenantAdded {
        id: String,
        pool: String,
    },
    TenantRemoved {
        id: String,
        pool: String,
    },
    TenantSuspended {
        id: String,
    },
    TenantActivated {
        id: String,
    },
    /// Into or out of maintenance (the transitions the two above do not name).
    TenantStatus {
        id: String,
        from: TenantStatus,
        to: TenantStatus,
    },
    /// What a tenant answers while in maintenance.
    TenantMaintenancePage {
        id: String,
        from: String,
        to: String,
    },
    TenantMoved {
        id: String,
        from: String,
        to: String,
    },
    TenantCanary {
        id: String,
        from: Option<CanaryConfig>,
        to: Option<CanaryConfig>,
    },
    /// Name, domains or previous pool.
    TenantEdited {
        id: String,
        fields: Vec<&'static str>,
    },
    PoolAdded {
        name: String,
    },
    PoolRemoved {
        name: String,
    },
    /// What about the pool changed: upstreams, load balancing, health check, timeouts.
    PoolEdited {
        name: String,
        fields: Vec<&'static str>,
    },
    HostAdded {
        host: String,
        pool: String,
    },
    HostRemoved {
        host: String,
        pool: String,
    },
    HostMoved {
        host: String,
        from: String,
        to: String,
    },
    Setting {
        key: &'static str,
        from: String,
        to: String,
        needs_restart: bool,
    },
    /// A `[[certificates]]` entry, by its `cert` file as written.
    CertificateAdded {
        file: String,
        to: CertificateSummary,
    },
    CertificateRemoved {
        file: String,
        from: CertificateSummary,
    },
    /// The files now hold another certificate, or the entry's `key`, `default` or `tenant` changed.
    CertificateReplaced {
        file: String,
        from: CertificateSummary,
        to: CertificateSummary,
    },
}

/// What operators recognise a certificate by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    pub names: Vec<String>,
    pub fingerprint: String,
    pub not_after: String,
    pub default: bool,
    pub tenant: Option<String>,
}

impl CertificateSummary {
    pub fn of(c: &CertificateConfig) -> Self {
        CertificateSummary {
            names: c.loaded.names.clone(),
            fingerprint: c.loaded.fingerprint.clone(),
            not_after: rfc3339(c.loaded.not_after),
            default: c.default,
            tenant: c.tenant.as_ref().map(|t| t.to_string()),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "names": self.names,
            "sha256": self.fingerprint,
            "not_after": self.not_after,
            "default": self.default,
            "tenant": self.tenant,
        })
    }
}

/// An API key as operators see it (`key list`, `tenants show`): id, state and dates, never its
/// hash. `state` is valid, expired or revoked at `now` (Unix seconds), by the rule requests are
/// checked with.
pub fn api_key_summary(key: &ApiKeyConfig, now: i64) -> Value {
    let state = match (key.revoked, key.expires) {
        (Some(r), _) if r <= now => "revoked",
        (_, Some(e)) if e <= now => "expired",
        _ => "valid",
    };
    json!({
        "id": key.id,
        "state": state,
        "created": rfc3339(key.created),
        "expires": key.expires.map(rfc3339),
        "revoked": key.revoked.map(rfc3339),
    })
}

/// Unix seconds as an RFC 3339 date, for people.
/// A maintenance answer in a few words, for plans and the audit log.
pub fn maintenance_summary(page: &MaintenancePage) -> String {
    let answer = match &page.answer {
        MaintenanceAnswer::Json => "the JSON error".to_owned(),
        MaintenanceAnswer::Page { path, body, .. } => {
            format!("{} ({} bytes)", path.display(), body.len())
        }
        MaintenanceAnswer::Redirect(to) => format!("302 to {}", to.to_str().unwrap_or("?")),
    };
    format!("{answer}, Retry-After {}", page.retry_after_seconds)
}

pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map_or_else(
        || unix.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

impl Change {
    /// The audit log's `action`.
    pub fn action(&self) -> &'static str {
        match self {
            Change::TenantAdded { .. } => "tenant.added",
            Change::TenantRemoved { .. } => "tenant.removed",
            Change::TenantSuspended { .. } => "tenant.suspended",
            Change::TenantActivated { .. } => "tenant.activated",
            Change::TenantStatus { .. } => "tenant.status",
            Change::TenantMaintenancePage { .. } => "tenant.maintenance_page",
            Change::TenantMoved { .. } => "tenant.moved",
            Change::TenantCanary { .. } => "tenant.canary",
            Change::TenantEdited { .. } => "tenant.edited",
            Change::PoolAdded { .. } => "pool.added",
            Change::PoolRemoved { .. } => "pool.removed",
            Change::PoolEdited { .. } => "pool.edited",
            Change::HostAdded { .. } => "host.added",
            Change::HostRemoved { .. } => "host.removed",
            Change::HostMoved { .. } => "host.moved",
            Change::Setting { .. } => "setting.changed",
            Change::CertificateAdded { .. } => "certificate.added",
            Change::CertificateRemoved { .. } => "certificate.removed",
            Change::CertificateReplaced { .. } => "certificate.replaced",
        }
    }

    pub fn tenant(&self) -> Option<&str> {
        match self {
            Change::TenantAdded { id, .. }
            | Change::TenantRemoved { id, .. }
            | Change::TenantSuspended { id }
            | Change::TenantActivated { id }
            | Change::TenantStatus { id, .. }
            | Change::TenantMaintenancePage { id, .. }
            | Change::TenantMoved { id, .. }
            | Change::TenantCanary { id, .. }
            | Change::TenantEdited { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The old and new value, for the audit log and API answers.
    pub fn values(&self) -> (Value, Value) {
        let canary = |c: &Option<CanaryConfig>| match c {
            Some(c) => json!({ "pool": c.pool, "percent": c.percent }),
            None => Value::Null,
        };
        match self {
            Change::TenantAdded { pool, .. } => (Value::Null, json!({ "pool": pool })),
            Change::TenantRemoved { pool, .. } => (json!({ "pool": pool }), Value::Null),
            Change::TenantSuspended { .. } => (json!("active"), json!("suspended")),
            Change::TenantActivated { .. } => (json!("suspended"), json!("active")),
            Change::TenantStatus { from, to, .. } => (json!(from.as_str()), json!(to.as_str())),
            Change::TenantMaintenancePage { from, to, .. } => (json!(from), json!(to)),
            Change::TenantMoved { from, to, .. } => (json!(from), json!(to)),
            Change::TenantCanary { from, to, .. } => (canary(from), canary(to)),
            Change::TenantEdited { fields, .. } | Change::PoolEdited { fields, .. } => {
                (Value::Null, json!({ "changed": fields }))
            }
            Change::PoolAdded { name } => (Value::Null, json!(name)),
            Change::PoolRemoved { name } => (json!(name), Value::Null),
            Change::HostAdded { host, pool } => {
                (Value::Null, json!({ "host": host, "pool": pool }))
            }
            Change::HostRemoved { host, pool } => {
                (json!({ "host": host, "pool": pool }), Value::Null)
            }
            Change::HostMoved { host, from, to } => (
                json!({ "host": host, "pool": from }),
                json!({ "host": host, "pool": to }),
            ),
            Change::Setting { key, from, to, .. } => (json!({ *key: from }), json!({ *key: to })),
            Change::CertificateAdded { file, to } => (
                Value::Null,
                json!({ "cert": file, "certificate": to.to_json() }),
            ),
            Change::CertificateRemoved { file, from } => (
                json!({ "cert": file, "certificate": from.to_json() }),
                Value::Null,
            ),
            Change::CertificateReplaced { file, from, to } => (
                json!({ "cert": file, "certificate": from.to_json() }),
                json!({ "cert": file, "certificate": to.to_json() }),
            ),
        }
    }

    pub fn needs_restart(&self) -> bool {
        matches!(
            self,
            Change::Setting {
                needs_restart: true,
                ..
            }
        )
    }

    pub fn to_json(&self) -> Value {
        let (old, new) = self.values();
        json!({
            "action": self.action(),
            "tenant": self.tenant(),
            "old": old,
            "new": new,
            "needs_restart": self.needs_restart(),
            "summary": self.to_string(),
        })
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let canary = |c: &Option<CanaryConfig>| match c {
            Some(c) => format!("{}% to {}", c.percent, c.pool),
            None => "none".to_owned(),
        };
        match self {
            Change::TenantAdded { id, pool } => write!(f, "+ tenant {id} (pool {pool})"),
            Change::TenantRemoved { id, pool } => write!(f, "- tenant {id} (was on pool {pool})"),
            Change::TenantSuspended { id } => write!(f, "~ tenant {id}: suspended"),
            Change::TenantActivated { id } => write!(f, "~ tenant {id}: activated"),
            Change::TenantStatus { id, from, to } => write!(f, "~ tenant {id}: {from} -> {to}"),
            Change::TenantMaintenancePage { id, from, to } => {
                write!(f, "~ tenant {id}: maintenance answer {from} -> {to}")
            }
            Change::TenantMoved { id, from, to } => write!(f, "~ tenant {id}: pool {from} -> {to}"),
            Change::TenantCanary { id, from, to } => {
                write!(
                    f,
                    "~ tenant {id}: canary {} -> {}",
                    canary(from),
                    canary(to)
                )
            }
            Change::TenantEdited { id, fields } => {
                write!(f, "~ tenant {id}: {}", fields.join(", "))
            }
            Change::PoolAdded { name } => write!(f, "+ pool {name}"),
            Change::PoolRemoved { name } => write!(f, "- pool {name}"),
            Change::PoolEdited { name, fields } => {
                write!(f, "~ pool {name}: {}", fields.join(", "))
            }
            Change::HostAdded { host, pool } => write!(f, "+ host {host} (pool {pool})"),
            Change::HostRemoved { host, pool } => write!(f, "- host {host} (was on pool {pool})"),
            Change::HostMoved { host, from, to } => write!(f, "~ host {host}: pool {from} -> {to}"),
            Change::Setting {
                key,
                from,
                to,
                needs_restart,
            } => {
                write!(f, "~ {key}: {from} -> {to}")?;
                if *needs_restart {
                    f.write_str(
                        " (needs a restart or graceful upgrade: a reload cannot apply it)",
                    )?;
                }
                Ok(())
            }
            Change::CertificateAdded { file, to } => write!(
                f,
                "+ certificate {file} ({}; until {})",
                to.names.join(", "),
                to.not_after
            ),
            Change::CertificateRemoved { file, from } => {
                write!(f, "- certificate {file} (was {})", from.names.join(", "))
            }
            Change::CertificateReplaced { file, from, to } => write!(
                f,
                "~ certificate {file}: sha256 {}… until {} -> sha256 {}… until {}",
                from.fingerprint.get(..16).unwrap_or(&from.fingerprint),
                from.not_after,
                to.fingerprint.get(..16).unwrap_or(&to.fingerprint),
                to.not_after
            ),
        }
    }
}

/// Every change from `old` to `new`, settings first, then pools, hosts and tenants (in file order).
pub fn diff(old: &GatewayConfig, new: &GatewayConfig) -> Vec<Change> {
    let mut changes = Vec::new();
    settings(old, new, &mut changes);
    certificates(
        &old.routing.tls.certificates,
        &new.routing.tls.certificates,
        &mut changes,
    );
    pools(&old.routing.pools, &new.routing.pools, &mut changes);
    hosts(&old.routing.hosts, &new.routing.hosts, &mut changes);
    tenants(&old.routing.tenants, &new.routing.tenants, &mut changes);
    changes
}

fn settings(old: &GatewayConfig, new: &GatewayConfig, out: &mut Vec<Change>) {
    let mut setting = |key, from: String, to: String, needs_restart| {
        if from != to {
            out.push(Change::Setting {
                key,
                from,
                to,
                needs_restart,
            });
        }
    };
    let (o, n) = (&old.gateway, &new.gateway);
    setting(
        "gateway.http_listen",
        o.http_listen.to_string(),
        n.http_listen.to_string(),
        true,
    );
    setting(
        "gateway.threads",
        o.threads.to_string(),
        n.threads.to_string(),
        true,
    );
    setting(
        "gateway.work_stealing",
        o.work_stealing.to_string(),
        n.work_stealing.to_string(),
        true,
    );
    setting("gateway.h2c", o.h2c.to_string(), n.h2c.to_string(), true);
    let keepalive =
        |k: Option<usize>| k.map_or_else(|| "from the pools".to_owned(), |k| k.to_string());
    setting(
        "gateway.upstream_keepalive",
        keepalive(o.upstream_keepalive),
        keepalive(n.upstream_keepalive),
        true,
    );
    let listen =
        |a: Option<std::net::SocketAddr>| a.map_or_else(|| "none".to_owned(), |a| a.to_string());
    setting(
        "gateway.https_listen",
        listen(o.https_listen),
        listen(n.https_listen),
        true,
    );
    setting(
        "gateway.log_format",
        format!("{:?}", o.log_format),
        format!("{:?}", n.log_format),
        true,
    );
    setting(
        "admin.listen",
        old.admin.listen.to_string(),
        new.admin.listen.to_string(),
        true,
    );
    setting(
        "admin.watch_config",
        old.admin.watch_config.to_string(),
        new.admin.watch_config.to_string(),
        true,
    );
    setting(
        "admin.audit_log",
        old.admin.audit_log.display().to_string(),
        new.admin.audit_log.display().to_string(),
        true,
    );
    let scrape =
        |a: Option<std::net::SocketAddr>| a.map_or_else(|| "none".to_owned(), |a| a.to_string());
    setting(
        "metrics.listen",
        scrape(old.admin.metrics_listen),
        scrape(new.admin.metrics_listen),
        true,
    );
    let fleet = |f: &Option<super::model::FleetConfig>| {
        f.as_ref().map_or_else(
            || "none (limits are each instance's own)".to_owned(),
            |f| {
                format!(
                    "{} {} (sync {} ms, timeout {} ms, on_error {}, prefix {})",
                    f.mode.as_str(),
                    f.redacted_url(),
                    f.sync_interval.as_millis(),
                    f.timeout.as_millis(),
                    f.on_error.as_str(),
                    f.key_prefix
                )
            },
        )
    };
    setting(
        "limits.redis",
        fleet(&old.gateway.fleet),
        fleet(&new.gateway.fleet),
        true,
    );
    let store = |s: &Option<super::model::StoreConfig>| {
        s.as_ref().map_or_else(
            || "none (the routing table is this file)".to_owned(),
            |s| format!("{} as {}", s.label(), s.instance),
        )
    };
    setting(
        "store",
        store(&old.gateway.store),
        store(&new.gateway.store),
        true,
    );
    let acme = |a: &Option<super::model::AcmeSettings>| {
        a.as_ref().map_or_else(
            || "none (certificates come from files)".to_owned(),
            |a| {
                let challenges: Vec<&str> = a.challenges.iter().map(|c| c.as_str()).collect();
                format!(
                    "{} ({}), on_demand {}, renew {} days before expiry, at most {}/hour and {}/tenant/day, state in {}",
                    a.directory,
                    challenges.join(", "),
                    a.on_demand,
                    a.renew_before.as_secs() / 86_400,
                    a.max_per_hour,
                    a.max_per_tenant_per_day,
                    a.state_dir.display()
                )
            },
        )
    };
    setting(
        "acme",
        acme(&old.gateway.acme),
        acme(&new.gateway.acme),
        true,
    );
    let tracing = |t: &Option<super::model::TracingSettings>| {
        t.as_ref().map_or_else(
            || "none".to_owned(),
            |t| {
                format!(
                    "{} (sample ratio {}, service {})",
                    t.otlp_endpoint, t.sample_ratio, t.service_name
                )
            },
        )
    };
    setting(
        "tracing",
        tracing(&old.gateway.tracing),
        tracing(&new.gateway.tracing),
        true,
    );
    let (o, n) = (&old.routing, &new.routing);
    let series = |m: &super::model::MetricsConfig| {
        let listed: Vec<&str> = m.tenant_series.iter().map(|t| t.as_str()).collect();
        format!(
            "limit {}, always [{}]",
            m.tenant_series_limit,
            listed.join(", ")
        )
    };
    setting(
        "metrics.tenant_series",
        series(&o.metrics),
        series(&n.metrics),
        false,
    );
    let proxies = |l: &crate::traffic_policy::IpList| {
        let listed: Vec<String> = l.entries().map(|n| n.to_string()).collect();
        format!("[{}]", listed.join(", "))
    };
    setting(
        "gateway.trusted_proxies",
        proxies(&o.trusted_proxies),
        proxies(&n.trusted_proxies),
        false,
    );
    setting(
        "gateway.access_log",
        o.access_log.to_string(),
        n.access_log.to_string(),
        false,
    );
    setting(
        "gateway.base_domains",
        o.base_domains.join(", "),
        n.base_domains.join(", "),
        false,
    );
    setting(
        "gateway.tenant_header",
        o.tenant_header_spelling.to_owned(),
        n.tenant_header_spelling.to_owned(),
        false,
    );
    setting(
        "gateway.https_redirect",
        o.tls.https_redirect.to_string(),
        n.tls.https_redirect.to_string(),
        false,
    );
    let port = |p: Option<u16>| p.map_or_else(|| "none".to_owned(), |p| p.to_string());
    setting(
        "gateway.https_redirect_port",
        port(o.tls.redirect_port),
        port(n.tls.redirect_port),
        false,
    );
    let hsts = |h: &Option<super::model::HstsConfig>| {
        h.as_ref()
            .map_or_else(|| "off".to_owned(), |h| h.header_value())
    };
    setting("gateway.hsts", hsts(&o.tls.hsts), hsts(&n.tls.hsts), false);
    let (oi, ni) = (&o.identity, &n.identity);
    setting(
        "gateway.tenant_source",
        oi.tenant_source.as_str().to_owned(),
        ni.tenant_source.as_str().to_owned(),
        false,
    );
    let header =
        |h: &Option<http::HeaderName>| h.as_ref().map_or("none", |h| h.as_str()).to_owned();
    setting(
        "gateway.api_key_header",
        header(&oi.api_key_header),
        header(&ni.api_key_header),
        false,
    );
    setting(
        "gateway.switch_tenant_header",
        oi.switch_tenant_header.as_str().to_owned(),
        ni.switch_tenant_header.as_str().to_owned(),
        false,
    );
    setting("jwt", jwt_summary(&oi.jwt), jwt_summary(&ni.jwt), false);
    let rules = |r: &[super::model::RouteRule]| {
        let list: Vec<String> = r
            .iter()
            .map(|r| format!("{} needs {}", r.path_prefix, r.roles.join("|")))
            .collect();
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        }
    };
    setting(
        "route_rules",
        rules(&oi.route_rules),
        rules(&ni.route_rules),
        false,
    );
    let token = |t: &Option<super::model::AdminToken>| {
        t.as_ref().map_or_else(
            || "none".to_owned(),
            |t| {
                // Which token, without saying anything about it: a changed hash shows as a change.
                format!(
                    "{} ({})",
                    t.source,
                    &crate::identity::api_key::to_hex(&t.sha256)[..8]
                )
            },
        )
    };
    setting(
        "admin.token",
        token(&old.admin.token),
        token(&new.admin.token),
        false,
    );
    setting(
        "admin.metrics_require_token",
        old.admin.metrics_require_token.to_string(),
        new.admin.metrics_require_token.to_string(),
        false,
    );
}

/// `[jwt]` in one line: what it checks and which keys (by kid and algorithm) it trusts.
fn jwt_summary(jwt: &Option<super::model::JwtConfig>) -> String {
    let Some(j) = jwt else {
        return "none".to_owned();
    };
    let keys: Vec<String> = j
        .keys
        .iter()
        .map(|k| {
            format!(
                "{}:{:?}@{:08x}",
                k.kid.as_deref().unwrap_or("-"),
                k.alg,
                k.digest as u32
            )
        })
        .collect();
    format!(
        "iss={} aud={} tenant_claim={} tenants_claim={} roles_claim={} leeway={}s cache={} keys=[{}] jwks_url={}",
        j.issuer.as_deref().unwrap_or("-"),
        j.audience.join("|"),
        j.tenant_claim,
        j.tenants_claim.as_deref().unwrap_or("-"),
        j.roles_claim,
        j.leeway_seconds,
        j.cache_size,
        keys.join(" "),
        j.jwks_url.as_ref().map_or("-", |u| u.url.as_str()),
    )
}

fn certificates(old: &[CertificateConfig], new: &[CertificateConfig], out: &mut Vec<Change>) {
    let before: Index<&CertificateConfig> =
        old.iter().map(|c| (c.cert_label.as_str(), c)).collect();
    for c in new {
        match before.get(c.cert_label.as_str()) {
            None => out.push(Change::CertificateAdded {
                file: c.cert_label.clone(),
                to: CertificateSummary::of(c),
            }),
            Some(o) if *o != c => out.push(Change::CertificateReplaced {
                file: c.cert_label.clone(),
                from: CertificateSummary::of(o),
                to: CertificateSummary::of(c),
            }),
            Some(_) => {}
        }
    }
    let after: Index<()> = new.iter().map(|c| (c.cert_label.as_str(), ())).collect();
    for c in old
        .iter()
        .filter(|c| !after.contains_key(c.cert_label.as_str()))
    {
        out.push(Change::CertificateRemoved {
            file: c.cert_label.clone(),
            from: CertificateSummary::of(c),
        });
    }
}

fn pools(old: &[PoolConfig], new: &[PoolConfig], out: &mut Vec<Change>) {
    let before: Index<&PoolConfig> = old.iter().map(|p| (p.name.as_str(), p)).collect();
    for p in new {
        pool_changes(before.get(p.name.as_str()).copied(), Some(p), out);
    }
    let after: Index<()> = new.iter().map(|p| (p.name.as_str(), ())).collect();
    for p in old.iter().filter(|p| !after.contains_key(p.name.as_str())) {
        pool_changes(Some(p), None, out);
    }
}

/// What changed about one pool (`None`: it is not there on that side).
pub fn pool_changes(old: Option<&PoolConfig>, new: Option<&PoolConfig>, out: &mut Vec<Change>) {
    let (o, p) = match (old, new) {
        (None, None) => return,
        (None, Some(p)) => {
            out.push(Change::PoolAdded {
                name: p.name.clone(),
            });
            return;
        }
        (Some(o), None) => {
            out.push(Change::PoolRemoved {
                name: o.name.clone(),
            });
            return;
        }
        (Some(o), Some(p)) => (o, p),
    };
    let mut fields = Vec::new();
    if o.upstreams != p.upstreams {
        fields.push("upstreams");
    }
    if o.balancing != p.balancing {
        fields.push("load_balancing");
    }
    if o.health_check != p.health_check {
        fields.push("health_check");
    }
    if o.timeouts != p.timeouts {
        fields.push("timeouts");
    }
    if o.tls != p.tls {
        fields.push("tls");
    }
    if !fields.is_empty() {
        out.push(Change::PoolEdited {
            name: p.name.clone(),
            fields,
        });
    }
}

fn hosts(old: &[HostConfig], new: &[HostConfig], out: &mut Vec<Change>) {
    let before: Index<&HostConfig> = old.iter().map(|h| (h.host.as_str(), h)).collect();
    for h in new {
        host_changes(before.get(h.host.as_str()).copied(), Some(h), out);
    }
    let after: Index<()> = new.iter().map(|h| (h.host.as_str(), ())).collect();
    for h in old.iter().filter(|h| !after.contains_key(h.host.as_str())) {
        host_changes(Some(h), None, out);
    }
}

/// What changed about one reserved host.
pub fn host_changes(old: Option<&HostConfig>, new: Option<&HostConfig>, out: &mut Vec<Change>) {
    match (old, new) {
        (None, Some(h)) => out.push(Change::HostAdded {
            host: h.host.clone(),
            pool: h.route.label(),
        }),
        (Some(h), None) => out.push(Change::HostRemoved {
            host: h.host.clone(),
            pool: h.route.label(),
        }),
        (Some(o), Some(h)) if o.route != h.route => out.push(Change::HostMoved {
            host: h.host.clone(),
            from: o.route.label(),
            to: h.route.label(),
        }),
        _ => {}
    }
}

fn tenants(old: &TenantList, new: &TenantList, out: &mut Vec<Change>) {
    for t in new.iter() {
        tenant_changes(old.get(t.id.as_str()), Some(t), out);
    }
    for t in old.iter().filter(|t| new.get(t.id.as_str()).is_none()) {
        tenant_changes(Some(t), None, out);
    }
}

/// What changed about one tenant.
pub fn tenant_changes(
    old: Option<&TenantConfig>,
    new: Option<&TenantConfig>,
    out: &mut Vec<Change>,
) {
    let (o, t) = match (old, new) {
        (None, None) => return,
        (None, Some(t)) => {
            out.push(Change::TenantAdded {
                id: t.id.to_string(),
                pool: t.pool.clone(),
            });
            return;
        }
        (Some(o), None) => {
            out.push(Change::TenantRemoved {
                id: o.id.to_string(),
                pool: o.pool.clone(),
            });
            return;
        }
        (Some(o), Some(t)) => (o, t),
    };
    let id = || t.id.to_string();
    match (o.status, t.status) {
        (TenantStatus::Active, TenantStatus::Suspended) => {
            out.push(Change::TenantSuspended { id: id() })
        }
        (TenantStatus::Suspended, TenantStatus::Active) => {
            out.push(Change::TenantActivated { id: id() })
        }
        (from, to) if from != to => out.push(Change::TenantStatus { id: id(), from, to }),
        _ => {}
    }
    if o.maintenance != t.maintenance {
        out.push(Change::TenantMaintenancePage {
            id: id(),
            from: maintenance_summary(&o.maintenance),
            to: maintenance_summary(&t.maintenance),
        });
    }
    if o.pool != t.pool {
        out.push(Change::TenantMoved {
            id: id(),
            from: o.pool.clone(),
            to: t.pool.clone(),
        });
    }
    if o.canary != t.canary {
        out.push(Change::TenantCanary {
            id: id(),
            from: o.canary.clone(),
            to: t.canary.clone(),
        });
    }
    let mut fields = Vec::new();
    if o.name != t.name {
        fields.push("name");
    }
    if o.domains != t.domains {
        fields.push("domains");
    }
    if o.previous_pool != t.previous_pool {
        fields.push("previous_pool");
    }
    if o.https_redirect != t.https_redirect {
        fields.push("https_redirect");
    }
    if o.hsts != t.hsts {
        fields.push("hsts");
    }
    if o.acme != t.acme {
        fields.push("acme");
    }
    if o.tenant_source != t.tenant_source {
        fields.push("tenant_source");
    }
    if o.api_keys != t.api_keys {
        fields.push("api_keys");
    }
    if o.route_rules != t.route_rules {
        fields.push("route_rules");
    }
    if o.plan != t.plan {
        fields.push("plan");
    }
    if o.limits != t.limits {
        fields.push("limits");
    }
    if !fields.is_empty() {
        out.push(Change::TenantEdited { id: id(), fields });
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_str;

    fn config(text: &str) -> GatewayConfig {
        load_str(Path::new("g.toml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    const OLD: &str = r#"
[gateway]
base_domains = ["yourapp.test"]
[pools.shared]
upstreams = ["127.0.0.1:9001"]
[pools.acme-dedicated]
upstreams = ["127.0.0.1:9101"]
[pools.gone]
upstreams = ["127.0.0.1:9301"]
[tenants.acme]
pool = "shared"
[tenants.globex]
pool = "shared"
[tenants.initech]
pool = "shared"
status = "suspended"
[hosts."admin.yourapp.test"]
pool = "shared"
"#;

    const NEW: &str = r#"
[gateway]
http_listen = "0.0.0.0:8081"
base_domains = ["yourapp.test"]
access_log = false
[pools.shared]
upstreams = ["127.0.0.1:9001", "127.0.0.1:9002"]
[pools.acme-dedicated]
upstreams = ["127.0.0.1:9101"]
[pools.fresh]
upstreams = ["127.0.0.1:9401"]
[tenants.acme]
pool = "acme-dedicated"
previous_pool = "shared"
[tenants.initech]
pool = "shared"
canary = { pool = "fresh", percent = 10 }
[tenants.hooli]
pool = "fresh"
[hosts."admin.yourapp.test"]
pool = "fresh"
"#;

    #[test]
    fn reports_every_kind_of_change_in_operator_terms() {
        let lines: Vec<String> = diff(&config(OLD), &config(NEW))
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            lines,
            [
                "~ gateway.http_listen: 0.0.0.0:8080 -> 0.0.0.0:8081 (needs a restart or graceful upgrade: a reload cannot apply it)",
                "~ gateway.access_log: true -> false",
                "~ pool shared: upstreams",
                "+ pool fresh",
                "- pool gone",
                "~ host admin.yourapp.test: pool shared -> fresh",
                "~ tenant acme: pool shared -> acme-dedicated",
                "~ tenant acme: previous_pool",
                "~ tenant initech: activated",
                "~ tenant initech: canary none -> 10% to fresh",
                "+ tenant hooli (pool fresh)",
                "- tenant globex (was on pool shared)",
            ]
        );
    }

    #[test]
    fn identical_configs_have_no_changes_and_restart_needs_are_flagged() {
        assert!(diff(&config(OLD), &config(OLD)).is_empty());
        let changes = diff(&config(OLD), &config(NEW));
        let restart: Vec<_> = changes.iter().filter(|c| c.needs_restart()).collect();
        assert_eq!(restart.len(), 1);
        let moved = changes
            .iter()
            .find(|c| c.action() == "tenant.moved")
            .expect("moved");
        assert_eq!(moved.tenant(), Some("acme"));
        assert_eq!(moved.values(), (json!("shared"), json!("acme-dedicated")));
    }
}
