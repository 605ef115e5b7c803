//! The checks `tenantgate check` reports, exercised on TOML text.

use std::path::Path;
use std::time::Duration;

use super::model::{Balancing, Probe};
use super::{load_str, ConfigErrors, GatewayConfig};
use crate::tenant::TenantStatus;

const VALID: &str = r#"
[gateway]
http_listen  = "0.0.0.0:8080"
base_domains = ["yourapp.test"]
tenant_header = "X-Tenant-ID"
threads = 2
access_log = true

[admin]
listen = "127.0.0.1:9900"

[pools.shared]
upstreams = ["127.0.0.1:9001", "127.0.0.1:9002"]
health_check = { path = "/healthz", interval_ms = 1000 }

[pools.acme-dedicated]
upstreams = ["127.0.0.1:9101"]

[pools.admin]
upstreams = ["127.0.0.1:9201"]
load_balancing = "least_request"

[tenants.acme]
name   = "Acme Corp"
status = "active"
pool   = "shared"
domains = ["api-acme-corp.factory.test"]

[tenants.globex]
status = "suspended"
pool = "shared"

[hosts."admin.yourapp.test"]
pool = "admin"
"#;

fn ok(text: &str) -> GatewayConfig {
    match load_str(Path::new("gateway.toml"), text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    match load_str(Path::new("gateway.toml"), text) {
        Ok(_) => panic!("expected errors, the config was accepted"),
        Err(e) => lines(&e),
    }
}

fn lines(e: &ConfigErrors) -> Vec<String> {
    e.lines().collect()
}

#[test]
fn the_documented_example_is_valid_with_defaults_applied() {
    let c = ok(VALID);
    assert_eq!(c.gateway.http_listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.gateway.threads, 2);
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9900");
    assert_eq!(c.routing.tenant_header.as_str(), "x-tenant-id");
    assert_eq!(c.routing.base_domains, ["yourapp.test"]);

    let shared = &c.routing.pools[0];
    assert_eq!(shared.name, "shared");
    assert_eq!(shared.upstreams.len(), 2);
    assert_eq!(shared.balancing, Balancing::RoundRobin);
    let hc = shared.health_check.as_ref().expect("health check");
    assert_eq!(
        hc.probe,
        Probe::Http {
            path: "/healthz".into(),
            host: None
        }
    );
    assert_eq!(hc.interval, Duration::from_millis(1000));
    assert_eq!(c.routing.pools[2].balancing, Balancing::LeastRequest);

    let acme = c.routing.tenants.iter().next().expect("acme");
    assert_eq!(
        (acme.id.as_str(), acme.name.as_str()),
        ("acme", "Acme Corp")
    );
    assert_eq!(acme.domains, ["api-acme-corp.factory.test"]);
    let globex = c.routing.tenants.iter().nth(1).expect("globex");
    assert_eq!(
        (globex.name.as_str(), globex.status),
        ("globex", TenantStatus::Suspended)
    );
    assert_eq!(c.routing.hosts[0].host, "admin.yourapp.test");
}

#[test]
fn every_error_is_reported_at_once_with_line_column_and_key() {
    let text = r#"[gateway]
http_listen = "localhost"
base_domains = ["yourapp.test"]

[pools.shared]
upstreams = ["127.0.0.1:9001"]
helth_check = { path = "/healthz" }

[pools.empty]
upstreams = []

[tenants.acme]
pool = "sharde"
domains = ["shop.acme.test"]

[tenants.Bad_Id]
pool = "shared"

[tenants.globex]
pool = "shared"
domains = ["SHOP.acme.test"]
colour = "blue"
"#;
    assert_eq!(
        errors(text),
        [
            r#"gateway.toml:2:15: gateway.http_listen: bad address "localhost": expected IP:PORT, for example 0.0.0.0:8080 or [::]:8080"#,
            r#"gateway.toml:7:1: pools.shared.helth_check: unknown key (the README's configuration reference lists them)"#,
            r#"gateway.toml:10:13: pools.empty.upstreams: empty pool: list at least one upstream as "IP:PORT" or "HOST:PORT""#,
            r#"gateway.toml:13:8: tenants.acme.pool: unknown pool "sharde" (pools are: empty, shared)"#,
            r#"gateway.toml:16:10: tenants.Bad_Id: invalid tenant id "Bad_Id": may only contain lowercase letters, digits and '-'"#,
            r#"gateway.toml:21:12: tenants.globex.domains[0]: host "shop.acme.test" is already claimed by tenant "acme" at tenants.acme.domains[0]"#,
            r#"gateway.toml:22:1: tenants.globex.colour: unknown key (the README's configuration reference lists them)"#,
        ]
    );
}

#[test]
fn a_type_error_names_the_field_inside_the_entry_and_others_are_still_checked() {
    let text = r#"
[pools.shared]
upstreams = ["127.0.0.1:9001"]

[tenants.acme]
pool = "shared"
status = "actve"

[tenants.globex]
pool = "nope"
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("gateway.toml:7:10: tenants.acme.status: unknown variant `actve`"),
        "{}",
        errs[0]
    );
    assert!(errs[1].starts_with("gateway.toml:10:8: tenants.globex.pool: unknown pool \"nope\""));
}

#[test]
fn a_tenant_with_a_wrong_value_is_still_checked_for_its_claims() {
    let text = r#"
[pools.shared]
upstreams = ["127.0.0.1:9001"]

[tenants.acme]
pool = "shared"
domains = ["api.acme.test"]

[tenants.globex]
pool = 7
status = "sometimes"
domains = ["api.acme.test"]
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].contains("tenants.globex.pool: invalid type"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains("tenants.globex.status: unknown variant `sometimes`"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].contains("tenants.globex.domains[0]") && errs[2].contains("acme"),
        "{}",
        errs[2]
    );
}

#[test]
fn a_broken_pool_is_not_also_reported_as_unknown_by_its_tenants() {
    let text = r#"
[pools.shared]
upstreams = "127.0.0.1:9001"

[tenants.acme]
pool = "shared"
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("gateway.toml:3:13: pools.shared.upstreams: invalid type"),
        "{}",
        errs[0]
    );
}

#[test]
fn invalid_toml_is_one_error_at_its_position() {
    let errs = errors("[gateway]\nthreads = = 2\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("gateway.toml:2:"), "{}", errs[0]);
    assert!(errs[0].contains("invalid TOML"), "{}", errs[0]);
}

#[test]
fn unknown_sections_and_tenants_without_pools_are_refused() {
    let errs = errors("[tenant.acme]\npool = \"shared\"\n\n[tenants.globex]\nname = \"Globex\"\n");
    assert_eq!(
        errs,
        [
            r#"gateway.toml:1:2: tenant: unknown section "tenant"; sections are: gateway, admin, certificates, pools, tenants, hosts, jwt, route_rules, limits, plans, metrics, store, acme, tracing"#,
            r#"gateway.toml:4:10: tenants.globex: missing `pool`: every tenant is routed to a pool"#,
        ]
    );
}

#[test]
fn addresses_are_checked() {
    let text = r#"
[gateway]
http_listen = "127.0.0.1:8080"

[admin]
listen = "0.0.0.0:8080"
token_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[pools.p]
upstreams = ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", "localhost:9001", "127.0.0.1:9001"]
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(
        errs[0].contains("admin.listen: 0.0.0.0:8080 overlaps gateway.http_listen"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains("pools.p.upstreams[0]: bad address \"127.0.0.1\": missing port"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].contains("pools.p.upstreams[1]: bad address \"127.0.0.1:0\": port 0"),
        "{}",
        errs[2]
    );
    assert!(
        errs[3].contains("pools.p.upstreams[2]: bad address \"127.0.0.1:99999\": port \"99999\""),
        "{}",
        errs[3]
    );
    // localhost resolves to 127.0.0.1 (and maybe ::1), so the literal after it is a duplicate.
    assert!(
        errs[4].contains(
            "pools.p.upstreams[4]: \"127.0.0.1:9001\" (127.0.0.1:9001) is already in this pool"
        ),
        "{}",
        errs[4]
    );
}

#[test]
fn an_exact_host_may_not_take_another_tenants_subdomain() {
    let text = r#"
[gateway]
base_domains = ["yourapp.test"]

[pools.shared]
upstreams = ["127.0.0.1:9001"]

[tenants.acme]
pool = "shared"
domains = ["globex.yourapp.test", "acme.yourapp.test"]

[tenants.globex]
pool = "shared"

[hosts."acme.yourapp.test"]
pool = "shared"
"#;
    let errs = errors(text);
    assert_eq!(
        errs,
        [
            r#"gateway.toml:10:12: tenants.acme.domains[0]: "globex.yourapp.test" is the subdomain of tenant "globex"; routing it to tenant "acme" would take "globex"'s traffic"#,
            r#"gateway.toml:15:8: hosts."acme.yourapp.test": host "acme.yourapp.test" is already claimed by tenant "acme" at tenants.acme.domains[1]"#,
        ]
    );
}

#[test]
fn a_type_error_in_gateway_does_not_hide_the_rest_of_the_section() {
    let text = r#"[gateway]
threads = "2"
base_domains = ["yourapp.test"]
access_log = "yes"

[pools.shared]
upstreams = ["127.0.0.1:9001"]

[tenants.acme]
pool = "shared"
domains = ["globex.yourapp.test"]

[tenants.globex]
pool = "shared"
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with("gateway.toml:2:11: gateway.threads: invalid type"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("gateway.toml:4:14: gateway.access_log: invalid type"),
        "{}",
        errs[1]
    );
    // base_domains survived the bad values beside it, so the shadowing check still ran.
    assert!(errs[2].contains("tenants.acme.domains[0]: \"globex.yourapp.test\" is the subdomain of tenant \"globex\""), "{}", errs[2]);
}

#[test]
fn an_overlap_with_the_default_admin_address_points_at_http_listen() {
    let errs = errors("[gateway]\nhttp_listen = \"127.0.0.1:9900\"\n");
    assert_eq!(
        errs,
        [
            r#"gateway.toml:2:15: gateway.http_listen: 127.0.0.1:9900 overlaps the admin API's default address 127.0.0.1:9900; set [admin] listen or use another port"#
        ]
    );
}

#[test]
fn a_health_check_path_that_cannot_be_requested_is_refused() {
    let text =
        "[pools.p]\nupstreams = [\"127.0.0.1:9001\"]\nhealth_check = { path = \"/status<x>\" }\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].contains("pools.p.health_check.path: \"/status<x>\" is not a request path"),
        "{}",
        errs[0]
    );
}

#[test]
fn a_tenant_header_with_an_underscore_is_refused() {
    let errs = errors("[gateway]\ntenant_header = \"X_Tenant_ID\"\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0]
            .starts_with("gateway.toml:2:17: gateway.tenant_header: \"X_Tenant_ID\" contains '_'"),
        "{}",
        errs[0]
    );
}

#[test]
fn gateway_settings_are_range_checked() {
    let text = r#"
[gateway]
threads = 0
tenant_header = "X-Forwarded-For"
base_domains = ["*.yourapp.test", "yourapp.test", "YourApp.test."]

[pools.p]
upstreams = ["127.0.0.1:9001"]
connect_timeout_ms = 0
health_check = { path = "healthz", interval_ms = 10, unhealthy_threshold = 0 }
"#;
    let errs = errors(text);
    let keys: Vec<&str> = errs
        .iter()
        .map(|e| e.split(": ").next().unwrap_or(""))
        .collect();
    assert_eq!(errs.len(), 8, "{errs:#?}");
    for (e, want) in errs.iter().zip([
        "gateway.threads: 0 worker threads",
        "gateway.tenant_header: \"X-Forwarded-For\" is a header the gateway sets",
        "gateway.base_domains[0]: base domain \"*.yourapp.test\" wildcards are not supported",
        "gateway.base_domains[2]: \"yourapp.test\" is listed twice",
        "pools.p.connect_timeout_ms: 0 ms is too short; the least allowed is 1 ms",
        "pools.p.health_check.path: \"healthz\" is not a request path",
        "pools.p.health_check.interval_ms: 10 ms is too short; the least allowed is 100 ms",
        "pools.p.health_check.unhealthy_threshold: must be at least 1",
    ]) {
        assert!(
            e.contains(want),
            "{e}\n  should contain {want}\n  keys: {keys:?}"
        );
    }
}

mod tls {
    use super::*;
    use crate::tls::dev::{issue_leaf, write_pair, DevCa};

    /// Writes certificates for `names` into `dir` as `<stem>.pem` / `<stem>.key`.
    fn issue(ca: &DevCa, dir: &Path, stem: &str, names: &[&str]) {
        let pair = issue_leaf(ca, names).unwrap();
        write_pair(
            &pair,
            &dir.join(format!("{stem}.pem")),
            &dir.join(format!("{stem}.key")),
        )
        .unwrap();
    }

    fn load_in(dir: &Path, text: &str) -> Result<GatewayConfig, ConfigErrors> {
        load_str(&dir.join("gateway.toml"), text)
    }

    const BASE: &str = r#"
[gateway]
http_listen = "127.0.0.1:8080"
https_listen = "127.0.0.1:8443"
base_domains = ["yourapp.test"]

[pools.shared]
upstreams = ["127.0.0.1:9001"]

[tenants.acme]
pool = "shared"
domains = ["shop.acme.test"]
"#;

    #[test]
    fn certificates_load_relative_to_the_config_with_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test").unwrap();
        issue(&ca, dir.path(), "wild", &["*.yourapp.test"]);
        issue(
            &ca,
            dir.path(),
            "acme",
            &["shop.acme.test", "acme.yourapp.test"],
        );
        let text = format!(
            "{BASE}\n[[certificates]]\ncert = \"wild.pem\"\nkey = \"wild.key\"\ndefault = true\n\n\
             [[certificates]]\ncert = \"acme.pem\"\nkey = \"acme.key\"\ntenant = \"acme\"\n"
        );
        let config = load_in(dir.path(), &text).unwrap_or_else(|e| panic!("{e}"));
        let certs = &config.routing.tls.certificates;
        assert_eq!(certs.len(), 2);
        assert!(certs[0].default);
        assert_eq!(certs[0].cert, dir.path().join("wild.pem"));
        assert_eq!(certs[1].tenant.as_ref().map(|t| t.as_str()), Some("acme"));
        assert_eq!(
            certs[1].loaded.names,
            ["shop.acme.test", "acme.yourapp.test"]
        );
        assert_eq!(config.routing.tls.redirect_port, Some(8443));
    }

    #[test]
    fn every_tls_mistake_is_reported_at_once_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test").unwrap();
        issue(&ca, dir.path(), "wild", &["*.yourapp.test"]);
        issue(&ca, dir.path(), "wild2", &["*.yourapp.test"]);
        issue(
            &ca,
            dir.path(),
            "other",
            &["shop.acme.test", "www.globex.test"],
        );
        let text = format!(
            r#"{BASE}
[pools.secure]
upstreams = ["127.0.0.1:9443"]
tls = {{ ca = "missing-ca.pem" }}

[[certificates]]
cert = "wild.pem"
key = "wild.key"
default = true

[[certificates]]
cert = "wild2.pem"
key = "wild2.key"
default = true

[[certificates]]
cert = "other.pem"
key = "other.key"
tenant = "acme"

[[certificates]]
cert = "wild.pem"
key = "other.key"
"#
        )
        .replace(
            "https_listen = \"127.0.0.1:8443\"",
            "https_listen = \"127.0.0.1:8443\"\nhttps_redirect_port = 0\nhsts = { preload = true }",
        );
        let all = lines(&load_in(dir.path(), &text).unwrap_err()).join("\n");
        for expected in [
            "gateway.https_redirect_port: port 0",
            "gateway.hsts.preload: the preload list requires",
            "pools.secure.tls: missing `sni`",
            "pools.secure.tls.ca: cannot read",
            "certificates[1].cert: \"*.yourapp.test\" is already served by certificates[0]",
            "certificates[1].default: certificates[0] is the default already",
            "certificates[2].cert: the certificate of tenant \"acme\" also serves www.globex.test",
            "certificates[3].key:",
            "is not the private key of",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }

    #[test]
    fn an_https_listener_needs_certificates_and_certificates_need_a_listener() {
        let dir = tempfile::tempdir().unwrap();
        let all = lines(&load_in(dir.path(), BASE).unwrap_err()).join("\n");
        assert!(
            all.contains("gateway.https_listen: an HTTPS listener needs certificates"),
            "{all}"
        );

        let ca = DevCa::new("test").unwrap();
        issue(&ca, dir.path(), "wild", &["*.yourapp.test"]);
        let text = BASE.replace(
            "https_listen = \"127.0.0.1:8443\"\n",
            "https_redirect = true\n",
        ) + "\n[[certificates]]\ncert = \"wild.pem\"\nkey = \"wild.key\"\n";
        let all = lines(&load_in(dir.path(), &text).unwrap_err()).join("\n");
        assert!(
            all.contains("certificates: certificates are configured but nothing serves them"),
            "{all}"
        );
        assert!(all.contains("there is no https_listen"), "{all}");
    }
}

#[test]
fn identity_settings_are_checked_together() {
    let text = r#"
[gateway]
base_domains = ["yourapp.test"]
tenant_source = "host_and_claim"
api_key_header = "Authorization"

[admin]
listen = "0.0.0.0:9900"

[jwt]
leeway_seconds = 10
jwks_refresh_seconds = 60

[[jwt.keys]]
kid = "a"
alg = "HS256"
secret = "short"

[[jwt.keys]]
kid = "b"
alg = "RS256"
secret = "0123456789abcdef0123456789abcdef"

[[jwt.keys]]
kid = "c"
alg = "XS1"

[[route_rules]]
path_prefix = "admin"
roles = []

[pools.p]
upstreams = ["127.0.0.1:9001"]

[tenants.acme]
pool = "p"
[[tenants.acme.api_keys]]
id = "k1"
sha256 = "abc"
created = "yesterday"

[hosts."api.yourapp.test"]
tenant_source = "claim"
pool = "p"
"#;
    let errs = errors(text);
    let expect = [
        "gateway.api_key_header: \"Authorization\" is a header the gateway sets or reads",
        "admin.listen: 0.0.0.0:9900 is reachable from other hosts, and the admin API has no token",
        "jwt.jwks_refresh_seconds: only applies to jwks_url",
        "jwt.keys[0].secret: the secret is 5 bytes",
        "jwt.keys[1].secret: RS256 needs a public key, not a secret",
        "jwt.keys[2].alg: \"XS1\" is not an algorithm",
        "route_rules[0].path_prefix: \"admin\" must start with '/'",
        "route_rules[0].roles: needs at least one role",
        "tenants.acme.api_keys[0].sha256: must be 64 hexadecimal characters",
        "tenants.acme.api_keys[0].created: \"yesterday\" is not an RFC 3339 time",
        "hosts.\"api.yourapp.test\".pool: a host with tenant_source = \"claim\"",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|got| got.contains(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
}

#[test]
fn limits_layer_tenant_over_plan_over_defaults_and_routes_merge_by_prefix() {
    let c = ok(r#"
[limits]
rate_limit = { requests_per_second = 100, burst = 200 }
concurrency = { max_in_flight = 50 }
route_limits = [
  { path_prefix = "/search/", rate_limit = { requests_per_second = 5 } },
  { path_prefix = "/export", rate_limit = { requests_per_second = 1 } },
]

[limits.redis]
url = "redis://:secret@127.0.0.1:6379/0"
mode = "exact"
on_error = "deny"

[plans.free]
rate_limit = { requests_per_second = 10, burst = 20 }
credential_rate_limit = { requests_per_second = 2.5 }
route_limits = [{ path_prefix = "/export", rate_limit = { unlimited = true } }]

[metrics]
tenant_series_limit = 2
tenant_series = ["acme"]

[pools.shared]
upstreams = ["127.0.0.1:9001"]

[tenants.acme]
pool = "shared"
plan = "free"
rate_limit = { requests_per_second = 30 }
concurrency = { unlimited = true }

[tenants.globex]
pool = "shared"
"#);
    let acme = c.routing.tenant("acme").expect("acme");
    let rate = acme.limits.rate.expect("own rate");
    assert_eq!(
        (rate.per_second, rate.burst),
        (30.0, 30),
        "burst defaults to a second's worth"
    );
    let cred = acme.limits.credential_rate.expect("plan's credential rate");
    assert_eq!((cred.per_second, cred.burst), (2.5, 3));
    assert_eq!(acme.limits.concurrency, None, "lifted by the tenant");
    let routes: Vec<&str> = acme
        .limits
        .routes
        .iter()
        .map(|r| r.path_prefix.as_str())
        .collect();
    assert_eq!(
        routes,
        ["/search"],
        "the plan lifted /export; /search/ lost its slash"
    );
    let globex = c.routing.tenant("globex").expect("globex");
    assert_eq!(globex.limits.rate.map(|r| r.burst), Some(200));
    assert_eq!(globex.limits.concurrency.map(|c| c.max_in_flight), Some(50));
    assert_eq!(
        globex.limits.concurrency.map(|c| c.queue_timeout),
        Some(Duration::from_millis(100))
    );
    assert_eq!(globex.limits.routes.len(), 2);
    let fleet = c.gateway.fleet.expect("fleet");
    assert_eq!(fleet.redacted_url(), "redis://***@127.0.0.1:6379/0");
    assert!(!format!("{fleet:?}").contains("secret"));
    assert_eq!(fleet.sync_interval, Duration::from_millis(200));
    assert_eq!(c.routing.metrics.tenant_series_limit, 2);
    assert_eq!(c.routing.metrics.tenant_series.len(), 1);
}

#[test]
fn every_limit_error_is_reported_at_once() {
    let e = errors(
        r#"
[limits]
rate_limit = { requests_per_second = 0 }
concurrency = { max_in_flight = 0, queu = 3 }

[limits.redis]
url = "http://127.0.0.1:6379"
timeout_ms = 0

[plans.free]
rate_limit = { unlimited = true, burst = 3 }

[metrics]
tenant_series_limit = 1
tenant_series = ["acme", "ghost"]

[pools.shared]
upstreams = ["127.0.0.1:9001"]

[tenants.acme]
pool = "shared"
plan = "gold"
credential_rate_limit = { burst = 3 }
route_limits = [{ path_prefix = "/a/../b", rate_limit = { requests_per_second = 1 } }]
"#,
    );
    let expected = [
        "limits.concurrency.queu: unknown key",
        "limits.rate_limit.requests_per_second: 0 must be above 0",
        "limits.concurrency.max_in_flight: must be at least 1",
        "plans.free.rate_limit: unlimited = true takes no requests_per_second or burst",
        "tenants.acme.plan: unknown plan \"gold\"; plans are: free",
        "tenants.acme.credential_rate_limit: needs requests_per_second",
        "tenants.acme.route_limits[0].path_prefix: \"/a/../b\" must start with '/'",
        "limits.redis.url: must start with redis://",
        "limits.redis.timeout_ms: 0 ms: use 1 to 10000",
        "metrics.tenant_series: 2 tenants listed, but tenant_series_limit is 1",
        "metrics.tenant_series[1]: \"ghost\" is not a tenant",
    ];
    for wanted in expected {
        assert!(
            e.iter().any(|line| line.contains(wanted)),
            "missing {wanted:?} in:\n{}",
            e.join("\n")
        );
    }
}

#[test]
fn acme_defaults_to_lets_encrypt_and_both_challenges_with_https() {
    // No [[certificates]] needed: they come from the CA.
    let https = VALID.replace(
        "threads = 2",
        "threads = 2\nhttps_listen = \"0.0.0.0:8443\"",
    );
    let text = format!(
        "{https}\n[acme]\ncontact = \"mailto:ops@yourapp.test\"\n\n[tenants.initech]\npool = \"shared\"\ndomains = [\"www.initech.test\"]\nacme = false\n"
    );
    let c = ok(&text);
    let acme = c.gateway.acme.as_ref().expect("[acme]");
    assert_eq!(acme.directory, super::model::LETS_ENCRYPT_DIRECTORY);
    assert_eq!(acme.contact, ["mailto:ops@yourapp.test"]);
    assert_eq!(
        acme.challenges,
        [
            super::model::AcmeChallenge::Http01,
            super::model::AcmeChallenge::TlsAlpn01
        ]
    );
    assert_eq!(acme.renew_before, Duration::from_secs(30 * 86_400));
    assert!(!acme.on_demand);
    assert_eq!(acme.state_dir, Path::new("acme"));
    assert!(c.routing.tenant("acme").expect("acme").acme);
    assert!(!c.routing.tenant("initech").expect("initech").acme);
    assert!(ok(VALID).gateway.acme.is_none());
}

#[test]
fn every_acme_mistake_is_reported_at_once_with_its_key() {
    let text = format!(
        r#"{VALID}
[acme]
directory = "http://acme.example/directory"
directory_ca = "missing-ca.pem"
contact = ["ops@yourapp.test"]
challenges = ["http-01", "dns-01", "tls-alpn-01", "http-01"]
renew_before_days = 0
on_demand_wait_ms = 60000
max_per_hour = 0
retry_after_seconds = 0
colour = "blue"
"#
    );
    let errors = errors(&text);
    let expected = [
        "acme: ACME certificates are served on the HTTPS listener: set [gateway] https_listen",
        "acme.colour: unknown key",
        "acme.directory: \"http://acme.example/directory\": an ACME directory is an https:// URL",
        "acme.directory_ca: cannot read missing-ca.pem",
        "acme.contact[0]: \"ops@yourapp.test\": a contact is \"mailto:ops@example.com\"",
        "acme.challenges[1]: \"dns-01\": the challenges are \"http-01\" and \"tls-alpn-01\"",
        "acme.challenges[3]: \"http-01\" is listed twice",
        "acme.renew_before_days: 0: use 1 to 365",
        "acme.on_demand_wait_ms: 60000 ms: a handshake waits at most 30000 ms",
        "acme.max_per_hour: 0 would never order a certificate",
        "acme.retry_after_seconds: 0 would hammer the CA",
    ];
    for want in expected {
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "missing {want:?} in:\n{}",
            errors.join("\n")
        );
    }
    assert_eq!(errors.len(), expected.len(), "{}", errors.join("\n"));
}

#[test]
fn policy_and_maintenance_errors_are_reported_at_once_with_their_keys() {
    let text = r#"
[gateway]
trusted_proxies = ["10.0.0.0/8", "lb"]

[limits]
deny_ips = ["192.0.2.0/33"]

[pools.shared]
upstreams = ["127.0.0.1:9001"]

[tenants.acme]
pool = "shared"
allow_ips = ["192.0.2.0/24", "example.com"]
status = "maintenance"
maintenance = { body_file = "missing.html", redirect = "https://status.test/" }

[tenants.globex]
pool = "shared"
maintenance = { redirect = "/status", retry_after_seconds = 0, content_type = "text/html" }

[tenants.initech]
pool = "shared"
maintenance = { body_file = "nowhere/page.html" }
"#;
    let errs = errors(text);
    let keys: Vec<&str> = errs.iter().filter_map(|e| e.split(": ").nth(1)).collect();
    assert_eq!(
        keys,
        [
            "gateway.trusted_proxies[1]",
            "limits.deny_ips[0]",
            "tenants.acme.allow_ips[1]",
            "tenants.acme.maintenance.redirect",
            "tenants.globex.maintenance.redirect",
            "tenants.globex.maintenance.retry_after_seconds",
            "tenants.globex.maintenance.content_type",
            "tenants.initech.maintenance.body_file",
        ],
        "{errs:#?}"
    );
    assert!(errs[7].contains("cannot read"), "{}", errs[7]);
}

#[test]
fn policy_layers_like_limits_and_empty_lists_or_zero_lift_them() {
    let text = r#"
[limits]
allow_ips = ["10.0.0.0/8"]
max_request_body_bytes = 5000

[plans.open]
allow_ips = []
max_request_body_bytes = 0

[pools.shared]
upstreams = ["127.0.0.1:9001"]

[tenants.acme]
pool = "shared"

[tenants.globex]
pool = "shared"
plan = "open"

[tenants.initech]
pool = "shared"
plan = "open"
deny_ips = ["192.0.2.1"]
max_request_body_bytes = 10
"#;
    let c = ok(text);
    let limits = |id: &str| {
        c.routing
            .tenant(id)
            .map(|t| t.limits.clone())
            .expect("tenant")
    };
    let acme = limits("acme");
    assert!(acme
        .allow_ips
        .is_some_and(|l| l.contains("10.1.1.1".parse().expect("ip"))));
    assert_eq!(acme.max_request_body_bytes, Some(5000));
    let globex = limits("globex");
    assert!(globex.allow_ips.is_none());
    assert_eq!(globex.max_request_body_bytes, None);
    let initech = limits("initech");
    assert!(initech.allow_ips.is_none());
    assert!(initech.deny_ips.is_some());
    assert_eq!(initech.max_request_body_bytes, Some(10));
}

#[test]
fn weights_and_retries_are_checked_with_their_keys() {
    let text = r#"
[pools.shared]
upstreams = [{ addr = "127.0.0.1:9001", weight = 3 }, "127.0.0.1:9002", { addr = "127.0.0.1:9003", weight = 0 }]
retries = { attempts = 11, on = ["connect", "timeout"], methods = ["GET", "BAD METHOD"], budget_percent = 0 }

[tenants.acme]
pool = "shared"
"#;
    let errs = errors(text);
    let keys: Vec<&str> = errs.iter().filter_map(|e| e.split(": ").nth(1)).collect();
    assert_eq!(
        keys,
        [
            "pools.shared.upstreams[2].weight",
            "pools.shared.retries.attempts",
            "pools.shared.retries.on[1]",
            "pools.shared.retries.methods[1]",
            "pools.shared.retries.budget_percent",
        ],
        "{errs:#?}"
    );
    let typo = errors(
        "[pools.shared]\nupstreams = [{ addr = \"127.0.0.1:9001\", wieght = 2 }]\n\n[tenants.acme]\npool = \"shared\"\n",
    );
    assert_eq!(typo.len(), 1, "{typo:#?}");
    assert!(
        typo[0].contains("pools.shared.upstreams[0].wieght: unknown field `wieght`"),
        "{}",
        typo[0]
    );

    let c = ok(r#"
[pools.shared]
upstreams = [{ addr = "127.0.0.1:9001", weight = 3 }, "127.0.0.1:9002"]
retries = { on = ["5xx"], methods = ["get", "POST"] }

[tenants.acme]
pool = "shared"
"#);
    let pool = &c.routing.pools[0];
    assert_eq!(
        pool.upstreams.iter().map(|u| u.weight).collect::<Vec<_>>(),
        [3, 1]
    );
    let r = &pool.retries;
    assert_eq!((r.attempts, r.budget_percent), (Some(2), Some(20)));
    assert!(r.on_5xx && !r.on_connect && !r.on_reset);
    assert!(r.replays(&http::Method::POST) && !r.replays(&http::Method::PUT));
}

#[test]
fn an_http_2_pool_says_how_it_is_reached() {
    let errs = errors(
        r#"
[pools.clear]
upstreams = ["127.0.0.1:9001"]
protocol = "h2"

[pools.secure]
upstreams = ["127.0.0.1:9002"]
protocol = "h2c"
tls = { sni = "grpc.internal", verify = false }

[pools.checked]
upstreams = ["127.0.0.1:9003"]
protocol = "h2c"
health_check = { path = "/healthz" }

[tenants.acme]
pool = "clear"
"#,
    );
    let keys: Vec<&str> = errs.iter().filter_map(|e| e.split(": ").nth(1)).collect();
    assert_eq!(
        keys,
        [
            "pools.clear.protocol",
            "pools.secure.protocol",
            "pools.checked.health_check.path",
        ],
        "{errs:#?}"
    );
}

#[test]
fn tracing_needs_an_endpoint_and_a_ratio_within_0_and_1() {
    let errs = errors(
        r#"
[tracing]
sample_ratio = 1.5
service_name = ""

[pools.shared]
upstreams = ["127.0.0.1:9001"]

[tenants.acme]
pool = "shared"
"#,
    );
    let keys: Vec<&str> = errs.iter().filter_map(|e| e.split(": ").nth(1)).collect();
    assert_eq!(
        keys,
        ["tracing", "tracing.sample_ratio", "tracing.service_name"],
        "{errs:#?}"
    );
    let c = ok(r#"
[tracing]
otlp_endpoint = "http://127.0.0.1:4318/v1/traces"

[pools.shared]
upstreams = ["127.0.0.1:9001"]

[tenants.acme]
pool = "shared"
"#);
    let t = c.gateway.tracing.expect("tracing");
    assert_eq!(
        (t.sample_ratio, t.service_name.as_str()),
        (1.0, "tenantgate")
    );
}
