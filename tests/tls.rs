//! HTTPS over real TLS handshakes with a real client: certificates chosen by SNI, HTTP/2 and
//! HTTP/1.1 by ALPN, certificates replaced on disk, misdirected requests, redirects and HSTS, and
//! TLS to upstreams verified against a pool's CA.

mod support;

use std::time::Instant;

use support::pki::{served_certificate, CertFiles, Pki};
use support::{send, Gateway, Upstream, WAIT};

const CONFIG: &str = r#"
[gateway]
http_listen = "{http}"
https_listen = "{https}"
base_domains = ["yourapp.test"]
threads = 1
hsts = { max_age_seconds = 600 }

[admin]
listen = "{admin}"

[[certificates]]
cert = "{wildcard_cert}"
key = "{wildcard_key}"
default = {default}

[[certificates]]
cert = "{acme_cert}"
key = "{acme_key}"
tenant = "acme"

[pools.shared]
upstreams = ["{shared}"]

[pools.secure]
upstreams = ["{secure}"]
tls = { sni = "backend.internal", ca = "{ca}" }

[pools.untrusted]
upstreams = ["{untrusted}"]
tls = { sni = "backend.internal", ca = "{ca}" }

[tenants.acme]
pool = "shared"
domains = ["shop.acme.test"]
https_redirect = true

[tenants.initech]
pool = "shared"
hsts = false

[tenants.vault]
pool = "secure"

[tenants.leaky]
pool = "untrusted"

[tenants.umbrella]
pool = "shared"
status = "suspended"
"#;

const NAMES: &[&str] = &[
    "acme.yourapp.test",
    "initech.yourapp.test",
    "vault.yourapp.test",
    "leaky.yourapp.test",
    "umbrella.yourapp.test",
    "shop.acme.test",
    "other.test",
];

struct Fixture {
    gw: Gateway,
    pki: Pki,
    wildcard: CertFiles,
    acme: CertFiles,
    shared: Upstream,
    secure: Upstream,
    untrusted: Upstream,
}

async fn fixture(default: bool) -> Fixture {
    let pki = Pki::new("tenantgate test CA");
    let wildcard = pki.issue("wildcard", &["*.yourapp.test", "yourapp.test"]);
    let acme = pki.issue("acme", &["shop.acme.test", "acme.yourapp.test"]);
    let backend = pki.issue("backend", &["backend.internal"]);
    // The same name, signed by a CA the pool does not trust.
    let stranger = Pki::new("someone else's CA");
    let impostor = stranger.issue("impostor", &["backend.internal"]);

    let shared = Upstream::start("shared").await;
    let secure = Upstream::start_tls("secure", Pki::acceptor(&backend)).await;
    let untrusted = Upstream::start_tls("untrusted", Pki::acceptor(&impostor)).await;
    let path = |p: &std::path::Path| p.display().to_string();
    let vars = [
        ("wildcard_cert", path(&wildcard.cert)),
        ("wildcard_key", path(&wildcard.key)),
        ("acme_cert", path(&acme.cert)),
        ("acme_key", path(&acme.key)),
        ("ca", path(&pki.ca_path)),
        ("default", default.to_string()),
        ("shared", shared.addr.to_string()),
        ("secure", secure.addr.to_string()),
        ("untrusted", untrusted.addr.to_string()),
    ];
    let gw = Gateway::start_with(CONFIG, &vars).await;
    Fixture {
        gw,
        pki,
        wildcard,
        acme,
        shared,
        secure,
        untrusted,
    }
}

impl Fixture {
    /// A new client, so every request below makes its own handshake.
    fn https(&self) -> reqwest::Client {
        self.pki
            .client(self.gw.https, NAMES)
            .build()
            .expect("client")
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.gw.https.port())
    }

    async fn served(&self, host: &str) -> Vec<u8> {
        let resp = self
            .https()
            .get(self.url(host, "/"))
            .send()
            .await
            .expect("HTTPS request");
        served_certificate(&resp)
    }
}

#[tokio::test]
async fn sni_chooses_the_exact_name_then_the_wildcard_then_the_default() {
    let f = fixture(true).await;
    assert_eq!(
        f.served("shop.acme.test").await,
        f.acme.leaf_der(),
        "custom domain"
    );
    assert_eq!(
        f.served("acme.yourapp.test").await,
        f.acme.leaf_der(),
        "exact beats wildcard"
    );
    assert_eq!(
        f.served("initech.yourapp.test").await,
        f.wildcard.leaf_der(),
        "wildcard"
    );

    // An IP address sends no SNI: the default certificate (which does not name the address, so
    // this client skips verification to see which one it is).
    // HTTP/1.1: over HTTP/2 the URL's authority would be the address, not the Host below.
    let no_sni = reqwest::Client::builder()
        .http1_only()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .no_proxy()
        .build()
        .expect("client");
    let resp = no_sni
        .get(format!("https://{}/", f.gw.https))
        .header("Host", "initech.yourapp.test")
        .send()
        .await
        .expect("request without SNI");
    assert_eq!(served_certificate(&resp), f.wildcard.leaf_der());
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn without_a_default_an_unknown_name_fails_the_handshake() {
    let f = fixture(false).await;
    let err = f
        .https()
        .get(f.url("other.test", "/"))
        .send()
        .await
        .expect_err("no certificate for other.test");
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(
        f.served("initech.yourapp.test").await,
        f.wildcard.leaf_der()
    );
}

#[tokio::test]
async fn http2_and_http11_are_both_offered() {
    let f = fixture(true).await;
    let h2 = f
        .https()
        .get(f.url("initech.yourapp.test", "/"))
        .send()
        .await
        .expect("h2 request");
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    let reply = support::Reply::from(h2).await;
    assert_eq!(reply.body["upstream"], "shared");
    assert_eq!(reply.upstream_saw("x-tenant-id"), ["initech"]);
    assert_eq!(reply.upstream_saw("x-forwarded-proto"), ["https"]);

    let h1 = f
        .pki
        .client(f.gw.https, NAMES)
        .http1_only()
        .build()
        .expect("client")
        .get(f.url("initech.yourapp.test", "/"))
        .send()
        .await
        .expect("http/1.1 request");
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(h1.status(), 200);
}

#[tokio::test]
async fn a_host_of_another_tenant_than_the_sni_is_misdirected() {
    let f = fixture(true).await;
    let client = f
        .pki
        .client(f.gw.https, NAMES)
        .http1_only()
        .build()
        .expect("client");
    // A connection opened for initech carries a request for acme.
    let reply = send(
        client
            .get(f.url("initech.yourapp.test", "/"))
            .header("Host", "acme.yourapp.test"),
    )
    .await;
    assert_eq!(reply.status, 421);
    assert_eq!(reply.body["error"], "misdirected_request");
    assert_eq!(f.shared.hits(), 0, "nothing reached an upstream");
    // The connection is checked before the tenant: initech's connection learns nothing of a
    // suspended tenant's status.
    let reply = send(
        client
            .get(f.url("initech.yourapp.test", "/"))
            .header("Host", "umbrella.yourapp.test"),
    )
    .await;
    assert_eq!(reply.status, 421);
    assert_eq!(reply.body["error"], "misdirected_request");

    // acme's custom domain and its subdomain are the same tenant.
    let reply = send(
        client
            .get(f.url("shop.acme.test", "/"))
            .header("Host", "acme.yourapp.test"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_saw("x-tenant-id"), ["acme"]);
}

#[tokio::test]
async fn plain_http_is_redirected_where_asked_and_https_carries_hsts() {
    let f = fixture(true).await;
    let port = f.gw.https.port();
    let reply = send(f.gw.get("acme.yourapp.test", "/cart?item=1")).await;
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.header("location").unwrap_or_default(),
        format!("https://acme.yourapp.test:{port}/cart?item=1")
    );
    // Certificate authorities fetch HTTP-01 challenges over plain HTTP.
    let challenge = send(f.gw.get("acme.yourapp.test", "/.well-known/acme-challenge/t0ken")).await;
    assert_eq!(challenge.status, 200);
    // initech did not ask for redirects.
    let plain = send(f.gw.get("initech.yourapp.test", "/")).await;
    assert_eq!(plain.status, 200);
    assert!(
        plain.header("strict-transport-security").is_none(),
        "never over plain HTTP"
    );

    let secure = send(f.https().get(f.url("acme.yourapp.test", "/"))).await;
    assert_eq!(secure.status, 200);
    assert_eq!(
        secure.header("strict-transport-security"),
        Some("max-age=600")
    );
    let opted_out = send(f.https().get(f.url("initech.yourapp.test", "/"))).await;
    assert!(opted_out.header("strict-transport-security").is_none());
}

#[tokio::test]
async fn upstream_tls_is_verified_against_the_pools_ca() {
    let f = fixture(true).await;
    let reply = send(f.https().get(f.url("vault.yourapp.test", "/"))).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["upstream"], "secure");
    assert_eq!(f.secure.hits(), 1);

    let reply = send(f.https().get(f.url("leaky.yourapp.test", "/"))).await;
    // A handshake that fails verification is a failed connection: the upstream is ejected and,
    // with no other upstream in the pool, the request gets no_healthy_upstream.
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.body["error"], "no_healthy_upstream");
    assert_eq!(
        f.untrusted.hits(),
        0,
        "no request went to an upstream that failed verification"
    );
}

#[tokio::test]
async fn certificates_replaced_on_disk_are_served_without_restart_and_broken_ones_refused() {
    let f = fixture(true).await;
    let before = f.served("shop.acme.test").await;
    assert_eq!(before, f.acme.leaf_der());

    // A broken certificate: refused whole, with the file and key named; the old one still served.
    std::fs::write(&f.acme.cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").expect("write");
    let status = wait_for_last_change(&f.gw, "refused").await;
    let errors = status["last_change"]["errors"].to_string();
    assert!(errors.contains("certificates[1].cert"), "{errors}");
    assert_eq!(
        f.served("shop.acme.test").await,
        before,
        "the old certificate is kept"
    );

    // A renewed certificate, written over the old files: new handshakes get it.
    let renewed = f
        .pki
        .issue("acme", &["shop.acme.test", "acme.yourapp.test"]);
    let deadline = Instant::now() + WAIT;
    loop {
        let served = f.served("shop.acme.test").await;
        if served == renewed.leaf_der() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The table is swapped before the change is audited and recorded in /status, so a handshake
    // can see the new certificate a moment before /status does.
    wait_for_last_change(&f.gw, "applied").await;
    let audit = std::fs::read_to_string(f.gw.config_path.with_file_name("gateway.audit.jsonl"))
        .expect("audit log");
    assert!(audit.contains("certificate.replaced"), "{audit}");
    // The other certificate was not touched.
    assert_eq!(
        f.served("initech.yourapp.test").await,
        f.wildcard.leaf_der()
    );
}

#[tokio::test]
async fn a_key_that_is_not_the_certificates_is_refused_at_check_with_its_place() {
    let f = fixture(true).await;
    let text = std::fs::read_to_string(&f.gw.config_path).expect("config");
    let swapped = text.replace(
        &f.acme.key.display().to_string(),
        &f.wildcard.key.display().to_string(),
    );
    let path = f.pki.dir().join("swapped.toml");
    std::fs::write(&path, swapped).expect("write");
    let out = support::tenantgate(&["check", "--config", path.to_str().expect("utf-8")]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificates[1].key"), "{stderr}");
    assert!(stderr.contains("is not the private key of"), "{stderr}");
    assert!(stderr.contains("swapped.toml:"), "{stderr}");
}

async fn wait_for_last_change(gw: &Gateway, result: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = gw.admin_json("/status").await;
        if status["last_change"]["result"] == result {
            return status;
        }
        assert!(Instant::now() < deadline, "no {result} change: {status}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
