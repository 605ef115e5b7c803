//! The admin listener: liveness, Prometheus metrics that match the traffic sent, and status.

mod support;

use support::{send, Gateway, Upstream};

const CONFIG: &str = r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]
threads = 1

[admin]
listen = "{admin}"

[pools.shared]
upstreams = ["{one}"]
load_balancing = "least_request"
health_check = { path = "/healthz", interval_ms = 200 }

[tenants.acme]
pool = "shared"

[tenants.globex]
pool = "shared"
status = "suspended"
"#;

/// The value of one exposition line (`name{labels} value`), or 0 when the series is absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_the_traffic_sent() {
    let one = Upstream::start("one").await;
    let gw = Gateway::start(CONFIG, &[&one]).await;
    for _ in 0..3 {
        assert_eq!(send(gw.get("acme.yourapp.test", "/")).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(send(gw.get("nobody.yourapp.test", "/")).await.status, 404);
    }
    assert_eq!(send(gw.get("globex.yourapp.test", "/")).await.status, 403);

    // A request is counted in its logging phase, just after its response is sent: wait (bounded)
    // until all six are in, then check every number.
    let deadline = std::time::Instant::now() + support::WAIT;
    let mut m = gw.admin_text("/metrics").await;
    while sample(&m, "tenantgate_request_duration_seconds_count") < 6.0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        m = gw.admin_text("/metrics").await;
    }
    assert_eq!(
        sample(&m, r#"tenantgate_requests_total{status_class="2xx"}"#),
        3.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, r#"tenantgate_requests_total{status_class="4xx"}"#),
        3.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            r#"tenantgate_gateway_errors_total{error="unknown_tenant"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            r#"tenantgate_gateway_errors_total{error="tenant_suspended"}"#
        ),
        1.0
    );
    assert_eq!(sample(&m, "tenantgate_request_duration_seconds_count"), 6.0);
    assert_eq!(sample(&m, "tenantgate_config_generation"), 1.0);
    assert_eq!(sample(&m, r#"tenantgate_tenants{status="active"}"#), 1.0);
    assert_eq!(sample(&m, r#"tenantgate_tenants{status="suspended"}"#), 1.0);
    let healthy = format!(
        r#"tenantgate_upstream_healthy{{pool="shared",upstream="{}"}}"#,
        one.addr
    );
    assert_eq!(sample(&m, &healthy), 1.0, "{m}\n{}", gw.log());

    // Every sample line is `name{labels} number` and every family has HELP and TYPE.
    for line in m.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap_or_default();
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            m.contains(&format!("# TYPE {family} ")),
            "no TYPE for {name}"
        );
        assert!(
            m.contains(&format!("# HELP {family} ")),
            "no HELP for {name}"
        );
    }
}

#[tokio::test]
async fn status_and_health_describe_the_running_table() {
    let one = Upstream::start("one").await;
    let gw = Gateway::start(CONFIG, &[&one]).await;
    assert_eq!(gw.admin_text("/healthz").await, "ok\n");

    let status = gw.admin_json("/status").await;
    assert_eq!(status["generation"], 1);
    assert_eq!(status["tenants"]["total"], 2);
    assert_eq!(status["tenants"]["suspended"], 1);
    let pool = &status["pools"][0];
    assert_eq!(pool["name"], "shared");
    assert_eq!(pool["load_balancing"], "least_request");
    assert_eq!(pool["upstreams"][0]["resolved"], one.addr.to_string());
    assert_eq!(pool["upstreams"][0]["healthy"], true);

    let missing = gw
        .client
        .get(format!("http://{}/nope", gw.admin))
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), 404);
    let posted = gw
        .client
        .post(format!("http://{}/status", gw.admin))
        .send()
        .await
        .expect("request");
    assert_eq!(posted.status(), 405);
}

#[tokio::test]
async fn browsers_and_rebound_host_names_are_refused() {
    let one = Upstream::start("one").await;
    let gw = Gateway::start(CONFIG, &[&one]).await;
    let url = format!("http://{}/tenants/globex/activate", gw.admin);
    // A web page posting to the admin API: browsers always send Origin with a POST.
    let r = gw
        .client
        .post(&url)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "browser_refused");
    // A name rebound to this address: its Host is the attacker's name.
    let r = gw
        .client
        .get(format!("http://{}/config", gw.admin))
        .header("Host", "evil.example")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 403);
    // IP addresses and localhost are what the admin API answers to.
    let r = gw
        .client
        .get(format!("http://{}/status", gw.admin))
        .header("Host", format!("localhost:{}", gw.admin.port()))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    // Nothing changed.
    assert_eq!(send(gw.get("globex.yourapp.test", "/")).await.status, 403);
}
