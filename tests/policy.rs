//! Per-tenant traffic policy over real sockets: address lists (also behind trusted proxies), size
//! limits on headers and bodies (declared and streamed), and maintenance mode with its page,
//! redirect and `Retry-After`, switched by the admin API without a restart.

mod support;

use support::metrics::scrape;
use support::{raw_request, send, Gateway, Upstream};

const CONFIG: &str = r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]
threads = 1
trusted_proxies = ["127.0.0.2"]

[admin]
listen = "{admin}"

[limits]
max_request_header_bytes = 4096

[plans.small]
max_request_body_bytes = 1000

[pools.shared]
upstreams = ["{one}"]

[tenants.acme]
pool = "shared"
allow_ips = ["127.0.0.0/8"]
plan = "small"

[tenants.globex]
pool = "shared"
allow_ips = ["10.0.0.0/8", "203.0.113.0/24"]

[tenants.initech]
pool = "shared"
deny_ips = ["127.0.0.1"]
# Lifts [limits]' header limit.
max_request_header_bytes = 0

[tenants.hooli]
pool = "shared"
status = "maintenance"
maintenance = { body_file = "maintenance.html", retry_after_seconds = 60 }

[tenants.umbrella]
pool = "shared"
status = "maintenance"
maintenance = { redirect = "https://status.umbrella.test/" }
"#;

const PAGE: &str = "<h1>Back soon</h1>\n";

/// The gateway, its upstream, and the folder of its maintenance page (re-read on every reload).
async fn start() -> (Gateway, Upstream, tempfile::TempDir) {
    let one = Upstream::start("one").await;
    // The page lives beside the config: write the config's folder first, then start.
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("maintenance.html");
    std::fs::write(&page, PAGE).expect("write page");
    let config = CONFIG.replace("maintenance.html", &page.display().to_string());
    let gw = Gateway::start(&config, &[&one]).await;
    (gw, one, dir)
}

#[tokio::test]
async fn address_lists_refuse_with_ip_not_allowed_and_trusted_proxies_name_the_client() {
    let (gw, _one, _page) = start().await;
    assert_eq!(send(gw.get("acme.yourapp.test", "/")).await.status, 200);
    for tenant in ["globex", "initech"] {
        let r = send(gw.get(&format!("{tenant}.yourapp.test"), "/")).await;
        assert_eq!(r.status, 403, "{tenant}: {:?}", r.body);
        assert_eq!(r.body["error"], "ip_not_allowed", "{tenant}");
    }
    // From an untrusted peer, X-Forwarded-For is the client's own claim: not believed.
    let forged = send(
        gw.get("globex.yourapp.test", "/")
            .header("X-Forwarded-For", "203.0.113.5"),
    )
    .await;
    assert_eq!(forged.status, 403);

    // From the trusted proxy (127.0.0.2), the address it forwards for is the client.
    let via_proxy = |forwarded_for: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost: globex.yourapp.test\r\nX-Forwarded-For: {forwarded_for}\r\nConnection: close\r\n\r\n"
        )
    };
    let from_proxy = |request: String| {
        let http = gw.http;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind("127.0.0.2:0".parse().expect("addr"))
                .expect("bind 127.0.0.2");
            let mut stream = socket.connect(http).await.expect("connect");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut out = Vec::new();
            let _ = tokio::time::timeout(support::WAIT, stream.read_to_end(&mut out)).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let allowed = from_proxy(via_proxy("203.0.113.5")).await;
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    let refused = from_proxy(via_proxy("198.51.100.1")).await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("ip_not_allowed"), "{refused}");
    // A forged hop before the real one is not the client: the proxy appended 198.51.100.1.
    let forged = from_proxy(via_proxy("203.0.113.5, 198.51.100.1")).await;
    assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");

    let m = scrape(&gw).await;
    assert_eq!(
        m.value(
            tenantgate::metrics::names::GATEWAY_ERRORS_TOTAL,
            &[("error", "ip_not_allowed")]
        ),
        5.0,
        "{}",
        m.text
    );
}

#[tokio::test]
async fn size_limits_refuse_large_headers_and_bodies_declared_or_streamed() {
    let (gw, one, _page) = start().await;
    let big = "x".repeat(5000);
    let r = send(gw.get("acme.yourapp.test", "/").header("X-Big", &big)).await;
    assert_eq!(r.status, 431);
    assert_eq!(r.body["error"], "request_headers_too_large");
    // initech lifts [limits]' header limit.
    let r = send(gw.get("initech.yourapp.test", "/").header("X-Big", &big)).await;
    assert_ne!(r.status, 431);

    let post = |len: usize| {
        gw.client
            .post(format!("http://{}/upload", gw.http))
            .header("Host", "acme.yourapp.test")
            .body(vec![b'a'; len])
    };
    let fits = send(post(1000)).await;
    assert_eq!(fits.status, 200, "{:?}", fits.body);
    assert_eq!(fits.body["body_bytes"], 1000);
    let hits = one.hits();
    let too_large = send(post(1001)).await;
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.body["error"], "request_too_large");
    assert_eq!(
        one.hits(),
        hits,
        "a declared length over the limit never reaches the upstream"
    );

    // Chunked: no length to check first, so the body is counted as it streams.
    let chunked = |chunks: &[usize]| {
        let mut request = b"POST /upload HTTP/1.1\r\nHost: acme.yourapp.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        for &n in chunks {
            request.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            request.extend(std::iter::repeat_n(b'b', n));
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        request
    };
    let small = raw_request(gw.http, &chunked(&[400, 400])).await;
    assert!(small.starts_with("HTTP/1.1 200"), "{small}");
    assert!(small.contains("\"body_bytes\":800"), "{small}");
    let large = raw_request(gw.http, &chunked(&[600, 600, 600])).await;
    assert!(large.starts_with("HTTP/1.1 413"), "{large}");
    assert!(large.contains("request_too_large"), "{large}");
}

#[tokio::test]
async fn maintenance_answers_503_with_retry_after_and_the_tenants_page_until_activated() {
    let (gw, _one, _page) = start().await;
    let page = send(gw.get("hooli.yourapp.test", "/anything")).await;
    assert_eq!(page.status, 503);
    assert_eq!(page.header("retry-after"), Some("60"));
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.body, serde_json::Value::String(PAGE.to_owned()));

    let moved = send(gw.get("umbrella.yourapp.test", "/x")).await;
    assert_eq!(moved.status, 302);
    assert_eq!(
        moved.header("location"),
        Some("https://status.umbrella.test/")
    );
    assert_eq!(moved.header("retry-after"), Some("120"));

    // An operator puts acme in maintenance and back, with no restart.
    let (status, body) = gw.admin_post("/tenants/acme/maintenance", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"]["status"], "maintenance");
    let down = send(gw.get("acme.yourapp.test", "/")).await;
    assert_eq!(down.status, 503);
    assert_eq!(down.body["error"], "tenant_maintenance");
    assert_eq!(down.header("retry-after"), Some("120"));
    let status = gw.admin_json("/status").await;
    assert_eq!(status["tenants"]["maintenance"], 3);
    assert!(gw.read_config().contains("status = \"maintenance\""));
    let m = scrape(&gw).await;
    assert_eq!(
        m.value(
            tenantgate::metrics::names::TENANTS,
            &[("status", "maintenance")]
        ),
        3.0,
        "{}",
        m.text
    );
    let (status, body) = gw.admin_post("/tenants/acme/activate", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(send(gw.get("acme.yourapp.test", "/")).await.status, 200);
    // A suspension stays what it was: 403, no Retry-After.
    gw.admin_post("/tenants/globex/suspend", None).await;
    let suspended = send(gw.get("globex.yourapp.test", "/")).await;
    assert_eq!(suspended.status, 403);
    assert_eq!(suspended.body["error"], "tenant_suspended");
    assert_eq!(suspended.header("retry-after"), None);
}
