//! The admin listener: liveness, Prometheus metrics that match the traffic sent, and status.

mod support;

use support::metrics::{scrape, Exposition};
use support::{send, Gateway, Upstream};
use tenantgate::metrics::names;

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

/// Scrapes until `done` holds (requests are counted in their logging phase, just after the response
/// is sent), bounded by the harness's wait.
async fn scrape_until(gw: &Gateway, done: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = std::time::Instant::now() + support::WAIT;
    loop {
        let m = scrape(gw).await;
        if done(&m) || std::time::Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_count_the_traffic_sent_per_tenant() {
    let one = Upstream::start("one").await;
    let gw = Gateway::start(CONFIG, &[&one]).await;
    for _ in 0..3 {
        assert_eq!(send(gw.get("acme.yourapp.test", "/")).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(send(gw.get("nobody.yourapp.test", "/")).await.status, 404);
    }
    assert_eq!(send(gw.get("globex.yourapp.test", "/")).await.status, 403);

    let m = scrape_until(&gw, |m| {
        m.value(names::REQUEST_DURATION_SECONDS, &[]) >= 6.0
    })
    .await;
    let requests = |tenant, class| {
        m.value(
            names::REQUESTS_TOTAL,
            &[("tenant", tenant), ("status_class", class)],
        )
    };
    assert_eq!(requests("acme", "2xx"), 3.0, "{}", m.text);
    assert_eq!(requests(names::NO_TENANT, "4xx"), 2.0, "{}", m.text);
    assert_eq!(requests("globex", "4xx"), 1.0, "{}", m.text);
    assert_eq!(m.value(names::REQUESTS_TOTAL, &[]), 6.0);
    let by_tenant = |metric, tenant| m.value(metric, &[("tenant", tenant)]);
    assert_eq!(by_tenant(names::REQUEST_DURATION_SECONDS, "acme"), 3.0);
    assert_eq!(by_tenant(names::UPSTREAM_RESPONSE_SECONDS, "acme"), 3.0);
    assert_eq!(by_tenant(names::UPSTREAM_RESPONSE_SECONDS, "globex"), 0.0);
    assert!(by_tenant(names::RESPONSE_BYTES_TOTAL, "acme") > 0.0);
    assert_eq!(by_tenant(names::IN_FLIGHT_REQUESTS, "acme"), 0.0);
    assert_eq!(by_tenant(names::UPSTREAM_ERRORS_TOTAL, "acme"), 0.0);
    assert_eq!(
        m.value(names::GATEWAY_ERRORS_TOTAL, &[("error", "unknown_tenant")]),
        2.0
    );
    assert_eq!(
        m.value(
            names::GATEWAY_ERRORS_TOTAL,
            &[("error", "tenant_suspended")]
        ),
        1.0
    );
    assert_eq!(m.value(names::CONFIG_GENERATION, &[]), 1.0);
    assert_eq!(m.value(names::TENANT_SERIES, &[]), 2.0);
    let tenants = |status| m.value(names::TENANTS, &[("status", status), ("pool", "shared")]);
    assert_eq!((tenants("active"), tenants("suspended")), (1.0, 1.0));
    let upstream = one.addr.to_string();
    assert_eq!(
        m.value(
            names::UPSTREAM_HEALTHY,
            &[("pool", "shared"), ("upstream", upstream.as_str())]
        ),
        1.0,
        "{}\n{}",
        m.text,
        gw.log()
    );
}

#[tokio::test]
async fn beyond_the_series_limit_tenants_are_summed_as_other_and_the_busiest_get_their_own() {
    let one = Upstream::start("one").await;
    let gw = Gateway::start(
        r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]

[admin]
listen = "{admin}"

[metrics]
tenant_series_limit = 2
tenant_series = ["initech"]

[pools.shared]
upstreams = ["{one}"]

[tenants.acme]
pool = "shared"

[tenants.globex]
pool = "shared"

[tenants.initech]
pool = "shared"

[tenants.umbrella]
pool = "shared"
"#,
        &[&one],
    )
    .await;
    // At start: the allow-listed initech, and acme (first in the file) in the free slot.
    let m = scrape(&gw).await;
    let own = |m: &Exposition, tenant| m.has(names::REQUESTS_TOTAL, &[("tenant", tenant)]);
    assert!(own(&m, "initech") && own(&m, "acme"), "{}", m.text);
    assert!(!own(&m, "globex") && !own(&m, "umbrella"));

    for _ in 0..4 {
        assert_eq!(send(gw.get("globex.yourapp.test", "/")).await.status, 200);
    }
    assert_eq!(send(gw.get("umbrella.yourapp.test", "/")).await.status, 200);
    // globex, busier than idle acme, takes acme's place at a scrape; whatever it sent before that
    // is in _other with umbrella's one, so the two add up to the five sent.
    let ok = |m: &Exposition, tenant| {
        m.value(
            names::REQUESTS_TOTAL,
            &[("tenant", tenant), ("status_class", "2xx")],
        )
    };
    let m = scrape_until(&gw, |m| {
        ok(m, "globex") + ok(m, names::OTHER_TENANTS) >= 5.0
    })
    .await;
    assert_eq!(
        ok(&m, "globex") + ok(&m, names::OTHER_TENANTS),
        5.0,
        "{}",
        m.text
    );
    let m = scrape(&gw).await;
    assert!(own(&m, "globex") && own(&m, "initech"), "{}", m.text);
    assert!(!own(&m, "acme") && !own(&m, "umbrella"), "{}", m.text);
    assert_eq!(m.value(names::TENANT_SERIES, &[]), 2.0);
    // Two tenants' label values, plus _other and _none, whatever the number of tenants.
    let labelled: std::collections::BTreeSet<String> = m
        .text
        .lines()
        .filter(|l| l.starts_with(names::REQUESTS_TOTAL))
        .filter_map(|l| {
            l.split("tenant=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        labelled.into_iter().collect::<Vec<_>>(),
        ["_none", "_other", "globex", "initech"]
    );
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

#[tokio::test]
async fn a_wrong_method_names_the_right_ones_and_a_query_outside_the_document_is_refused() {
    let one = Upstream::start("one").await;
    let gw = Gateway::start(CONFIG, &[&one]).await;
    let ask = |method: reqwest::Method, path: &str| {
        gw.client
            .request(method, format!("http://{}{path}", gw.admin))
            .send()
    };
    for (method, path, allow) in [
        (reqwest::Method::DELETE, "/tenants", "GET, HEAD, POST"),
        (reqwest::Method::POST, "/status", "GET, HEAD"),
        (reqwest::Method::GET, "/reload", "POST"),
        (reqwest::Method::PUT, "/tenants/acme", "GET, HEAD"),
        (reqwest::Method::GET, "/tenants/acme/suspend", "POST"),
        (reqwest::Method::PATCH, "/certs/x/renew", "POST"),
    ] {
        let r = ask(method.clone(), path).await.expect("request");
        assert_eq!(r.status(), 405, "{method} {path}");
        let allowed = r.headers().get("allow").and_then(|v| v.to_str().ok());
        assert_eq!(allowed, Some(allow), "{method} {path}");
    }
    for path in [
        "/tenants?offset=-1",
        "/tenants?limit=ten",
        "/tenants?status=sometimes",
        "/tenants/acme/export?with_keys=1",
        "/audit?since=yesterday",
        "/audit?limit=-5",
    ] {
        let r = ask(reqwest::Method::GET, path).await.expect("request");
        assert_eq!(r.status(), 400, "{path}");
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["error"], "bad_query", "{path}");
    }
    let page = gw
        .admin_json("/tenants?status=suspended&offset=0&limit=5")
        .await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["tenants"][0]["id"], "globex");
    // An unknown action is no endpoint at all.
    let r = ask(reqwest::Method::POST, "/tenants/acme/explode")
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn metrics_listen_serves_metrics_alone() {
    let one = Upstream::start("one").await;
    let scrape_at = support::free_addr();
    let config = CONFIG.replace(
        "[pools.shared]",
        "[metrics]\nlisten = \"{scrape}\"\n\n[pools.shared]",
    );
    let gw = Gateway::start_with(
        &config,
        &[
            ("one", one.addr.to_string()),
            ("scrape", scrape_at.to_string()),
        ],
    )
    .await;
    assert_eq!(send(gw.get("acme.yourapp.test", "/")).await.status, 200);
    let status = gw.admin_json("/status").await;
    assert_eq!(status["listen"]["metrics"], scrape_at.to_string());
    let url = |path: &str| format!("http://{scrape_at}{path}");
    // Containers reach it by any name: the admin API's Host rule is not this listener's.
    let text = gw
        .client
        .get(url("/metrics"))
        .header("Host", "gateway-7:9464")
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    assert!(text.contains(names::REQUESTS_TOTAL), "{text}");
    for path in ["/status", "/config", "/tenants", "/healthz"] {
        let r = gw.client.get(url(path)).send().await.expect("request");
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = gw.client.post(url("/metrics")).send().await.expect("post");
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, HEAD")
    );
}
