//! ACME against a real CA: Let's Encrypt's pebble, which really validates (HTTP-01 on the
//! gateway's plain listener, TLS-ALPN-01 on its HTTPS listener, names resolved to 127.0.0.1 by
//! pebble-challtestsrv). Certificates at start, on demand, renewed under load, a CA that is down,
//! and a fleet that orders once.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fleet::{Fleet, Instance, INSTANCE};
use support::pebble::{Pebble, PebbleSetup};
use support::pki::{served_certificate, CertFiles, Pki};
use support::{send, tenantgate, Gateway, Reply, Upstream, WAIT};

/// How long an order may take on a busy machine (pebble validates at once, 3 times).
const ISSUE_WAIT: Duration = Duration::from_secs(60);

const ACME: &str = r#"
[acme]
directory = "{directory}"
directory_ca = "{directory_ca}"
contact = "mailto:ops@yourapp.test"
challenges = [{challenges}]
on_demand = {on_demand}
on_demand_wait_ms = 15000
retry_after_seconds = 1

[[certificates]]
cert = "{fallback_cert}"
key = "{fallback_key}"
default = true
"#;

const ROUTING: &str = r#"
[pools.shared]
upstreams = ["{shared}"]

[tenants.acme]
pool = "shared"
domains = ["shop.acme.test"]

[tenants.globex]
pool = "shared"
status = "suspended"
domains = ["shop.globex.test"]

[tenants.initech]
pool = "shared"
domains = ["www.initech.test"]
acme = false

[metrics]
tenant_series = ["acme"]
"#;

const GATEWAY: &str = r#"
[gateway]
http_listen = "{http}"
https_listen = "{https}"
base_domains = ["yourapp.test"]
threads = 1

[admin]
listen = "{admin}"
"#;

/// Names every client here resolves to the gateway.
const NAMES: &[&str] = &[
    "shop.acme.test",
    "acme.yourapp.test",
    "nobody.yourapp.test",
    "globex.yourapp.test",
    "shop.globex.test",
    "www.initech.test",
    "random.example",
];

struct Fixture {
    gw: Gateway,
    pebble: Pebble,
    /// The root pebble's certificates chain to, PEM.
    root: String,
    fallback: CertFiles,
    _upstream: Upstream,
    _pki: Pki,
}

/// Pebble validating at the listeners the gateway will have, then the gateway.
async fn fixture(challenges: &str, on_demand: bool, validity: Option<Duration>) -> Fixture {
    let (pebble, (http, https)) = pebble_for_new_listeners(validity);
    let pki = Pki::new("fallback CA");
    let fallback = pki.issue("fallback", &["fallback.test"]);
    let upstream = Upstream::start("shared").await;
    let template = format!("{GATEWAY}{ACME}{ROUTING}");
    let vars = acme_vars(&pebble, &fallback, challenges, on_demand, &upstream);
    let gw = Gateway::start_on(&template, &vars, Some((http, https))).await;
    let root = pebble.issuing_root().await;
    Fixture {
        gw,
        pebble,
        root,
        fallback,
        _upstream: upstream,
        _pki: pki,
    }
}

/// Pebble, validating at two loopback addresses kept bound while it starts (so that it cannot
/// take one of them for itself), then released for the gateway.
fn pebble_for_new_listeners(
    validity: Option<Duration>,
) -> (Pebble, (std::net::SocketAddr, std::net::SocketAddr)) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let (http, https) = (bind(), bind());
    let addrs = (
        http.local_addr().expect("address"),
        https.local_addr().expect("address"),
    );
    let pebble = Pebble::start(&PebbleSetup {
        http: addrs.0,
        https: addrs.1,
        validity,
    });
    (pebble, addrs)
}

fn acme_vars(
    pebble: &Pebble,
    fallback: &CertFiles,
    challenges: &str,
    on_demand: bool,
    upstream: &Upstream,
) -> Vec<(&'static str, String)> {
    let path = |p: &std::path::Path| p.display().to_string();
    vec![
        ("directory", pebble.directory()),
        ("directory_ca", path(&pebble.api_ca())),
        ("challenges", challenges.to_owned()),
        ("on_demand", on_demand.to_string()),
        ("fallback_cert", path(&fallback.cert)),
        ("fallback_key", path(&fallback.key)),
        ("shared", upstream.addr.to_string()),
    ]
}

/// A client that trusts only pebble's root, and makes its own handshake.
fn verifying(root: &str, https: std::net::SocketAddr) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).expect("root"))
        .tls_info(true);
    for name in NAMES {
        builder = builder.resolve(name, https);
    }
    builder.build().expect("client")
}

/// A client that takes any certificate, to see which one is served.
fn looking(https: std::net::SocketAddr) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .danger_accept_invalid_certs(true)
        .tls_info(true);
    for name in NAMES {
        builder = builder.resolve(name, https);
    }
    builder.build().expect("client")
}

fn url(gw: &Gateway, name: &str) -> String {
    format!("https://{name}:{}/hello", gw.https.port())
}

/// The leaf certificate served for `name`, whatever it is.
async fn served(gw: &Gateway, name: &str) -> Vec<u8> {
    let resp = looking(gw.https)
        .get(url(gw, name))
        .send()
        .await
        .expect("HTTPS request");
    served_certificate(&resp)
}

/// The `/certs` entry of an ACME name.
async fn acme_entry(gw: &Gateway, name: &str) -> Option<Value> {
    let certs = gw.admin_json("/certs").await;
    certs["certificates"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name && c["source"] == "acme")
        .cloned()
}

/// Waits until `name` has an ACME certificate that `check` accepts.
async fn wait_entry(gw: &Gateway, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + ISSUE_WAIT;
    loop {
        let entry = acme_entry(gw, name).await;
        if let Some(e) = entry.as_ref().filter(|e| check(e)) {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {what} not reached; last entry {entry:?}\ngateway log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_issued(gw: &Gateway, name: &str) -> Value {
    wait_entry(gw, name, "a valid certificate", |e| {
        e["renewal"] == "valid" && e["sha256"].is_string()
    })
    .await
}

/// Asks `gw` for an HTTP-01 `token` of shop.acme.test until `check` accepts the reply.
async fn wait_challenge(
    gw: &Gateway,
    token: &str,
    what: &str,
    check: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = Instant::now() + WAIT;
    loop {
        let path = format!("/.well-known/acme-challenge/{token}");
        let reply = send(gw.get("shop.acme.test", &path)).await;
        if check(&reply) {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "{token} not {what}: {} {}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn audit_actions(gw: &Gateway) -> Vec<String> {
    let audit = gw.admin_json("/audit?limit=100").await;
    audit["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["actor"] == "acme")
        .filter_map(|e| e["action"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_custom_domain_gets_a_certificate_at_start_over_http_01_and_keeps_it_across_restarts() {
    let f = fixture("\"http-01\"", false, None).await;
    let entry = wait_issued(&f.gw, "shop.acme.test").await;
    assert_eq!(entry["tenant"], "acme");
    assert!(
        entry["issuer"]
            .as_str()
            .is_some_and(|i| i.contains("Pebble")),
        "{entry}"
    );

    // The handshake verifies against pebble's root, and the request reaches acme's upstream.
    let client = verifying(&f.root, f.gw.https);
    let reply = send(client.get(url(&f.gw, "shop.acme.test"))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.upstream_saw("x-tenant-id"), ["acme"]);

    // Only the active tenant's name that opted in was ordered: not the suspended globex's, not
    // initech's (acme = false), and nothing for names of no tenant.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(f.pebble.orders(), 1, "{}", f.pebble.log());
    assert!(acme_entry(&f.gw, "shop.globex.test").await.is_none());
    assert!(acme_entry(&f.gw, "www.initech.test").await.is_none());

    // Kept beside the config, keys for the owner only; never shown by the admin API.
    let state = f.gw.config_path.parent().unwrap().join("acme");
    for file in [
        "account.json",
        "certs/shop.acme.test.key",
        "certs/shop.acme.test.pem",
    ] {
        let mode = std::fs::metadata(state.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    for path in ["/status", "/certs"] {
        let text = f.gw.admin_text(path).await;
        assert!(!text.contains("PRIVATE KEY"), "{path} shows a key");
    }
    let status = f.gw.admin_json("/status").await;
    assert_eq!(status["acme"]["by_state"]["valid"], 1, "{status}");

    let metrics = f.gw.admin_text("/metrics").await;
    assert!(
        metrics.contains("tenantgate_acme_orders_total{outcome=\"issued\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tenantgate_certificate_expiry_timestamp_seconds{cert=\"acme\",name=\"shop.acme.test\"}"
        ),
        "{metrics}"
    );
    assert_eq!(audit_actions(&f.gw).await, ["certificate_issued"]);

    let admin = format!("http://{}", f.gw.admin);
    let out = tenantgate(&["certs", "list", "--admin", &admin]).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    let row = listed
        .lines()
        .find(|l| l.starts_with("shop.acme.test"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains("acme") && row.contains("valid"), "{row}");
    assert!(listed.contains("fallback.test"), "{listed}");

    // A restart serves the kept certificate without a new order.
    let fingerprint = entry["sha256"].clone();
    let gw = f.gw.restart().await;
    let again = wait_issued(&gw, "shop.acme.test").await;
    assert_eq!(again["sha256"], fingerprint);
    let reply = send(verifying(&f.root, gw.https).get(url(&gw, "shop.acme.test"))).await;
    assert_eq!(reply.status, 200);
    assert_eq!(f.pebble.orders(), 1);
}

#[tokio::test]
async fn tls_alpn_01_alone_gets_the_certificate_in_the_handshake() {
    let f = fixture("\"tls-alpn-01\"", false, None).await;
    wait_issued(&f.gw, "shop.acme.test").await;
    let reply = send(verifying(&f.root, f.gw.https).get(url(&f.gw, "shop.acme.test"))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Pebble validated over TLS-ALPN-01: the gateway answered acme-tls/1 handshakes, and
    // nothing asked for an HTTP-01 token.
    let log = f.gw.log();
    assert!(
        log.contains("TLS-ALPN-01 challenge for shop.acme.test answered"),
        "{log}"
    );
    assert!(!log.contains("/.well-known/acme-challenge/"), "{log}");
}

#[tokio::test]
async fn on_demand_orders_in_the_first_handshake_only_for_names_of_active_tenants() {
    let f = fixture("\"http-01\", \"tls-alpn-01\"", true, None).await;
    wait_issued(&f.gw, "shop.acme.test").await;
    assert_eq!(f.pebble.orders(), 1);

    // acme.yourapp.test has no certificate (no wildcard file): the first handshake orders one
    // and waits for it, so this very request verifies.
    let reply = send(verifying(&f.root, f.gw.https).get(url(&f.gw, "acme.yourapp.test"))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.upstream_saw("x-tenant-id"), ["acme"]);
    assert_eq!(f.pebble.orders(), 2);
    let entry = wait_issued(&f.gw, "acme.yourapp.test").await;
    assert_eq!(entry["on_demand"], true);

    // Names of no tenant, of a suspended tenant, of one that opted out: the default
    // certificate, and never an order, however many handshakes ask.
    let fallback = f.fallback.leaf_der();
    let refused = [
        "nobody.yourapp.test",
        "random.example",
        "globex.yourapp.test",
        "shop.globex.test",
        "www.initech.test",
    ];
    for _ in 0..3 {
        for name in refused {
            assert_eq!(served(&f.gw, name).await, fallback, "{name}");
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(f.pebble.orders(), 2, "{}", f.pebble.log());
    for name in refused {
        assert!(acme_entry(&f.gw, name).await.is_none(), "{name}");
    }
}

#[tokio::test]
async fn renewal_under_load_fails_no_request_and_a_ca_that_is_down_leaves_the_old_one_serving() {
    // Certificates valid 16 s: the 30-day window is longer than their life, so each is renewed
    // half-way through it.
    let f = fixture("\"http-01\"", false, Some(Duration::from_secs(16))).await;
    let first = wait_issued(&f.gw, "shop.acme.test").await["sha256"].clone();

    // New connections (each its own handshake) until the renewed certificate is served.
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let renewed_seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut load = tokio::task::JoinSet::new();
    let first_der = served(&f.gw, "shop.acme.test").await;
    for _ in 0..4 {
        let (failures, done, renewed_seen) = (failures.clone(), done.clone(), renewed_seen.clone());
        let (root, https, target) = (f.root.clone(), f.gw.https, url(&f.gw, "shop.acme.test"));
        let first_der = first_der.clone();
        load.spawn(async move {
            for _ in 0..2000 {
                if Instant::now() > deadline || renewed_seen.load(Ordering::Relaxed) {
                    break;
                }
                match verifying(&root, https).get(&target).send().await {
                    Ok(resp) if resp.status() == 200 => {
                        if served_certificate(&resp) != first_der {
                            renewed_seen.store(true, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while load.join_next().await.is_some() {}
    assert!(
        renewed_seen.load(Ordering::Relaxed),
        "no renewal within 40 s\n{}",
        f.gw.log()
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "of {} requests",
        done.load(Ordering::Relaxed)
    );
    assert!(done.load(Ordering::Relaxed) > 10);
    let renewed = wait_issued(&f.gw, "shop.acme.test").await;
    assert_ne!(renewed["sha256"], first);
    assert!(audit_actions(&f.gw)
        .await
        .contains(&"certificate_renewed".to_owned()));

    // The CA goes away; a forced renewal fails, backs off, and the renewed certificate serves on.
    let mut pebble = f.pebble;
    pebble.stop();
    let serving = served(&f.gw, "shop.acme.test").await;
    let (status, body) = f.gw.admin_post("/certs/shop.acme.test/renew", None).await;
    assert_eq!(status, 202, "{body}");
    let failing = wait_entry(&f.gw, "shop.acme.test", "a failed renewal", |e| {
        e["failures"].as_u64().is_some_and(|n| n >= 1)
    })
    .await;
    assert!(failing["error"].is_string(), "{failing}");
    assert_eq!(failing["sha256"], renewed["sha256"]);
    assert_eq!(served(&f.gw, "shop.acme.test").await, serving);
    let status = f.gw.admin_json("/status").await;
    assert_eq!(
        status["acme"]["failing"][0]["name"], "shop.acme.test",
        "{status}"
    );
    assert!(audit_actions(&f.gw)
        .await
        .contains(&"certificate_order_failed".to_owned()));
    let metrics = f.gw.admin_text("/metrics").await;
    assert!(metrics.contains("tenantgate_acme_orders_total{outcome=\"failed\"}"));

    let (status, body) = f.gw.admin_post("/certs/nobody.example/renew", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_an_acme_name"))
    );
}

#[tokio::test]
async fn in_a_fleet_two_gateways_order_one_certificate_and_both_serve_it() {
    // Pebble validates at the first instance's listeners only: when the second orders, the first
    // answers from the challenge the second put in the store.
    let (pebble, (http, https)) = pebble_for_new_listeners(None);
    let pki = Pki::new("fallback CA");
    let fallback = pki.issue("fallback", &["fallback.test"]);
    let upstream = Upstream::start("shared").await;
    let vars = acme_vars(&pebble, &fallback, "\"http-01\"", false, &upstream);
    // Each instance file: the fleet's, with HTTPS, [acme] and a default certificate.
    let instance =
        INSTANCE.replace("[gateway]\n", "[gateway]\nhttps_listen = \"{https}\"\n") + ACME;
    let routing = format!("[gateway]\nbase_domains = [\"yourapp.test\"]\n{ROUTING}");
    let instances = vec![
        Instance {
            listeners: Some((http, https)),
            vars: vars.clone(),
        },
        Instance {
            listeners: None,
            vars,
        },
    ];
    let fleet = Fleet::start_instances(&routing, &[&upstream], &instance, instances).await;
    let root = pebble.issuing_root().await;
    let (a, b) = (&fleet.gateways[0], &fleet.gateways[1]);
    let on_a = wait_issued(a, "shop.acme.test").await;
    let on_b = wait_issued(b, "shop.acme.test").await;
    assert_eq!(on_a["sha256"], on_b["sha256"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    for gw in [a, b] {
        let reply = send(verifying(&root, gw.https).get(url(gw, "shop.acme.test"))).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let prefix = &fleet.prefix;
    assert!(fleet
        .etcd
        .get(&format!("{prefix}/acme/account"))
        .await
        .is_some());
    assert!(fleet
        .etcd
        .get(&format!("{prefix}/acme/certs/shop.acme.test"))
        .await
        .is_some_and(|v| v.contains("PRIVATE KEY")));

    // A challenge in the store is answered by every instance, and only while it is there.
    let key = format!("{prefix}/acme/http-01/tok-from-store");
    fleet.etcd.put(&key, "tok-from-store.thumbprint").await;
    for gw in [a, b] {
        // The tenant's upstream answers 200 too until the watch delivers the token, so wait for
        // the key authorization itself.
        let reply = wait_challenge(gw, "tok-from-store", "answered", |r| {
            r.body == "tok-from-store.thumbprint"
        })
        .await;
        assert_eq!(reply.status, 200);
    }
    let mut client = fleet.etcd.connect().await;
    client.delete(key.as_str(), None).await.expect("delete");
    for gw in [a, b] {
        wait_challenge(gw, "tok-from-store", "left to the tenant", |r| {
            r.upstream_saw("x-tenant-id") == ["acme"]
        })
        .await;
    }
}
