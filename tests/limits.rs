//! Per-tenant limits through the real gateway: rate limits with their headers, nesting (credential
//! and route within the tenant), a change by reload, the concurrency cap and its queue, and fleet
//! limits shared by two instances through a real Redis, including Redis going away and coming back.

mod support;

use std::time::Duration;

use serde_json::json;
use support::metrics::scrape;
use support::redis::Redis;
use support::{send, tokens, Gateway, Reply, Upstream, WAIT};
use tenantgate::metrics::names;

const BASE: &str = r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]
threads = 2

[admin]
listen = "{admin}"

[jwt]
issuer = "https://auth.yourapp.test"
audience = "yourapp"

[[jwt.keys]]
kid = "hs"
alg = "HS256"
secret = "test-secret-0123456789abcdef0123456789"

[pools.shared]
upstreams = ["{shared}"]
"#;

fn config(rest: &str) -> String {
    format!("{BASE}{rest}")
}

fn header_u64(reply: &Reply, name: &str) -> u64 {
    reply
        .header(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing or not a number: {:?}", reply.header(name)))
}

async fn statuses(gw: &Gateway, host: &str, path: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(send(gw.get(host, path)).await.status);
    }
    out
}

#[tokio::test]
async fn a_tenant_over_its_rate_gets_429_with_headers_and_other_tenants_are_untouched() {
    let shared = Upstream::start("shared").await;
    let gw = Gateway::start(
        &config(
            r#"
[tenants.acme]
pool = "shared"
rate_limit = { requests_per_second = 0.1, burst = 3 }

[tenants.globex]
pool = "shared"
"#,
        ),
        &[&shared],
    )
    .await;
    for remaining in [2, 1, 0] {
        let r = send(gw.get("acme.yourapp.test", "/")).await;
        assert_eq!(r.status, 200);
        assert_eq!(header_u64(&r, "ratelimit-limit"), 3);
        assert_eq!(header_u64(&r, "ratelimit-remaining"), remaining);
        assert!(header_u64(&r, "ratelimit-reset") >= 10);
    }
    let r = send(gw.get("acme.yourapp.test", "/")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["error"], "rate_limited");
    assert!(r.body["request_id"].is_string());
    // One request's worth comes back after 1 / 0.1 s.
    assert!(
        (9..=10).contains(&header_u64(&r, "retry-after")),
        "{:?}",
        r.header("retry-after")
    );
    assert_eq!(header_u64(&r, "ratelimit-remaining"), 0);
    assert_eq!(header_u64(&r, "ratelimit-limit"), 3);
    assert_eq!(
        shared.hits(),
        3,
        "the refused request never reached the upstream"
    );

    let globex = send(gw.get("globex.yourapp.test", "/")).await;
    assert_eq!(globex.status, 200);
    assert_eq!(
        globex.header("ratelimit-limit"),
        None,
        "no limit, no headers"
    );
    assert_eq!(
        statuses(&gw, "globex.yourapp.test", "/", 20).await,
        [200; 20]
    );
}

#[tokio::test]
async fn credential_and_route_limits_nest_within_the_tenant_limit() {
    let shared = Upstream::start("shared").await;
    // Per-credential limits count verified credentials: acme's requests must carry a token.
    let gw = Gateway::start(
        &config(
            r#"
[limits]
route_limits = [{ path_prefix = "/search", rate_limit = { requests_per_second = 0.1, burst = 2 } }]

[plans.team]
rate_limit = { requests_per_second = 0.1, burst = 6 }
credential_rate_limit = { requests_per_second = 0.1, burst = 2 }

[tenants.acme]
pool = "shared"
plan = "team"
tenant_source = "host_and_claim"
"#,
        ),
        &[&shared],
    )
    .await;
    let token = |sub: &str| tokens::hs256("hs", &tokens::claims("acme", json!({ "sub": sub })));
    let status = |sub: &str, path: &str| {
        let req = gw.get("acme.yourapp.test", path).bearer_auth(token(sub));
        async move { send(req).await }
    };
    // Alice's own limit: two.
    assert_eq!(status("alice", "/a").await.status, 200);
    assert_eq!(status("alice", "/a").await.status, 200);
    let r = status("alice", "/a").await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (429, Some("rate_limited"))
    );
    // The route limit, two per tenant under /search, whoever asks.
    assert_eq!(status("bob", "/search/x").await.status, 200);
    assert_eq!(status("carol", "/search").await.status, 200);
    assert_eq!(status("dave", "/search").await.status, 429);
    // An ambiguous spelling of a limited route is refused, not counted elsewhere.
    let raw = support::raw_request(
        gw.http,
        format!(
            "GET /x/../search HTTP/1.1\r\nHost: acme.yourapp.test\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            token("dave")
        )
        .as_bytes(),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert_eq!(support::raw_body(&raw)["error"], "ambiguous_path");
    // The tenant's six: four taken so far (refusals gave theirs back); two more fit, then the
    // tenant is out, also for erin, whose own limit has room.
    assert_eq!(status("dave", "/b").await.status, 200);
    assert_eq!(status("erin", "/b").await.status, 200);
    let r = status("erin", "/b").await;
    assert_eq!(r.status, 429);
    assert_eq!(shared.hits(), 6);

    let m = scrape(&gw).await;
    for scope in ["credential", "route", "tenant"] {
        let labels = [("tenant", "acme"), ("scope", scope)];
        assert_eq!(
            m.value(names::RATE_LIMITED_TOTAL, &labels),
            1.0,
            "{scope}:\n{}",
            m.text
        );
    }
}

#[tokio::test]
async fn a_reload_changes_a_limit_for_the_next_request_and_keeps_unchanged_counts() {
    let shared = Upstream::start("shared").await;
    let tenants = |acme_burst: u32| {
        config(&format!(
            r#"
[tenants.acme]
pool = "shared"
rate_limit = {{ requests_per_second = 0.1, burst = {acme_burst} }}

[tenants.globex]
pool = "shared"
rate_limit = {{ requests_per_second = 0.1, burst = 2 }}
"#
        ))
    };
    let gw = Gateway::start(&tenants(2), &[&shared]).await;
    let pid = gw.pid();
    for host in ["acme.yourapp.test", "globex.yourapp.test"] {
        assert_eq!(statuses(&gw, host, "/", 3).await, [200, 200, 429]);
    }
    gw.write_config(&gw.render(&tenants(5)));
    let (status, body) = gw.admin_post("/reload", None).await;
    assert_eq!(status, 200, "{body}");
    let r = send(gw.get("acme.yourapp.test", "/")).await;
    assert_eq!(r.status, 200, "acme's new limit applies at once");
    assert_eq!(header_u64(&r, "ratelimit-limit"), 5);
    assert_eq!(
        statuses(&gw, "globex.yourapp.test", "/", 1).await,
        [429],
        "globex's limit did not change, nor did its count"
    );
    assert_eq!(gw.pid(), pid, "no restart");
}

#[tokio::test]
async fn a_tenant_at_its_concurrency_cap_is_refused_at_once_or_queued_and_others_are_served() {
    let shared = Upstream::start("shared").await;
    let gw = Gateway::start(
        &config(
            r#"
[tenants.acme]
pool = "shared"
concurrency = { max_in_flight = 2 }

[tenants.globex]
pool = "shared"
concurrency = { max_in_flight = 1, queue = 1, queue_timeout_ms = 10000 }

[tenants.initech]
pool = "shared"
"#,
        ),
        &[&shared],
    )
    .await;
    let slow = |host: &'static str| {
        let req = gw.get(host, "/?sleep_ms=1500");
        tokio::spawn(async move { send(req).await.status })
    };
    let held = [slow("acme.yourapp.test"), slow("acme.yourapp.test")];
    wait_for_hits(&shared, 2).await;
    let r = send(gw.get("acme.yourapp.test", "/")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["error"], "tenant_overloaded");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "refused while both slow requests were still in flight, without waiting for them"
    );
    assert_eq!(
        statuses(&gw, "initech.yourapp.test", "/", 3).await,
        [200; 3]
    );
    for h in held {
        assert_eq!(h.await.ok(), Some(200));
    }
    assert_eq!(send(gw.get("acme.yourapp.test", "/")).await.status, 200);

    // globex: one in flight, one waits its turn and is served; a third finds the queue full.
    let before = shared.hits();
    let first = slow("globex.yourapp.test");
    wait_for_hits(&shared, before + 1).await;
    let queued = {
        let req = gw.get("globex.yourapp.test", "/");
        tokio::spawn(async move { send(req).await.status })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = send(gw.get("globex.yourapp.test", "/")).await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (503, Some("tenant_overloaded"))
    );
    assert_eq!(first.await.ok(), Some(200));
    assert_eq!(
        queued.await.ok(),
        Some(200),
        "the queued request was served"
    );

    let m = scrape(&gw).await;
    for (metric, tenant, value) in [
        (names::OVERLOADED_TOTAL, "acme", 1.0),
        (names::OVERLOADED_TOTAL, "globex", 1.0),
        (names::IN_FLIGHT_REQUESTS, "acme", 0.0),
    ] {
        let labels = [("tenant", tenant)];
        assert!(
            m.has(metric, &labels),
            "no {metric} of {tenant}:\n{}",
            m.text
        );
        assert_eq!(
            m.value(metric, &labels),
            value,
            "{metric} of {tenant}:\n{}",
            m.text
        );
    }
}

async fn wait_for_hits(upstream: &Upstream, n: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    while upstream.hits() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "upstream never saw {n} requests"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Instances with the same `prefix` share their limits.
fn fleet_config(redis: &Redis, mode: &str, on_error: &str, prefix: &str) -> String {
    config(&format!(
        r#"
[limits.redis]
url = "{url}"
mode = "{mode}"
sync_interval_ms = 50
timeout_ms = 100
on_error = "{on_error}"
key_prefix = "{prefix}"

[tenants.acme]
pool = "shared"
rate_limit = {{ requests_per_second = 0.2, burst = 10 }}
"#,
        url = redis.url(),
    ))
}

/// Sends `rounds` pairs of requests, one to each instance, pausing `pause` after each pair; returns
/// how many were admitted.
async fn admitted_across(a: &Gateway, b: &Gateway, rounds: usize, pause: Duration) -> usize {
    let mut admitted = 0;
    for _ in 0..rounds {
        for gw in [a, b] {
            let status = send(gw.get("acme.yourapp.test", "/")).await.status;
            assert!(status == 200 || status == 429, "unexpected {status}");
            admitted += usize::from(status == 200);
        }
        tokio::time::sleep(pause).await;
    }
    admitted
}

#[tokio::test]
async fn two_instances_share_one_limit_through_redis_in_sync_and_exact_mode() {
    let shared = Upstream::start("shared").await;
    let redis = Redis::start();
    for mode in ["sync", "exact"] {
        let text = fleet_config(&redis, mode, "local", mode);
        let a = Gateway::start(&text, &[&shared]).await;
        let b = Gateway::start(&text, &[&shared]).await;
        // 15 rounds of two requests, a sync interval or two apart: alone, each instance would admit
        // its whole burst of 10; together they admit the one shared burst (plus what 0.2/s refills
        // over the ~2.5 s, and at most one round of sync lag).
        let admitted = admitted_across(&a, &b, 15, Duration::from_millis(120)).await;
        assert!(
            (10..=13).contains(&admitted),
            "{mode}: {admitted} admitted by two instances sharing a burst of 10"
        );
        assert!(redis_up(&a, mode, 1.0).await, "{mode}: Redis not seen up");
    }
}

#[tokio::test]
async fn when_redis_stops_the_policy_applies_and_the_gateway_recovers_by_itself() {
    let shared = Upstream::start("shared").await;
    let mut redis = Redis::start();
    let deny = Gateway::start(&fleet_config(&redis, "exact", "deny", "deny"), &[&shared]).await;
    let local = Gateway::start(&fleet_config(&redis, "sync", "local", "local"), &[&shared]).await;
    assert_eq!(send(deny.get("acme.yourapp.test", "/")).await.status, 200);
    assert_eq!(send(local.get("acme.yourapp.test", "/")).await.status, 200);

    redis.stop();
    // exact + deny: refused at once with its own code, counted.
    let r = send(deny.get("acme.yourapp.test", "/")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["error"], "rate_limiter_unavailable");
    assert_eq!(r.header("retry-after"), Some("1"));
    // sync + local: this instance's own limiter decides; its burst of 10 (one spent) runs out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let statuses = statuses(&local, "acme.yourapp.test", "/", 10).await;
    assert_eq!(statuses[..9], [200; 9], "{statuses:?}");
    assert_eq!(statuses[9], 429, "{statuses:?}");
    for (gw, mode, policy) in [(&deny, "exact", "deny"), (&local, "sync", "local")] {
        assert!(redis_up(gw, mode, 0.0).await, "{mode}: Redis not seen down");
        let m = scrape(gw).await;
        for (metric, labels) in [
            (names::LIMITER_FALLBACKS_TOTAL, [("policy", policy)]),
            (names::LIMITER_REDIS_ERRORS_TOTAL, [("mode", mode)]),
        ] {
            let count = m.value(metric, &labels);
            assert!(count >= 1.0, "{metric} is {count}:\n{}", m.text);
        }
    }

    redis.restart();
    // Recovery: no restart of the gateways, only time (exact mode rests Redis one second after a
    // failure; sync mode tries at every interval).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let ok = send(deny.get("acme.yourapp.test", "/")).await.status == 200;
        let up = redis_up(&local, "sync", 1.0).await;
        if ok && up {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the gateway's `tenantgate_limiter_redis_up{mode}` series exists and reads `value`.
async fn redis_up(gw: &Gateway, mode: &str, value: f64) -> bool {
    let m = scrape(gw).await;
    let labels = [("mode", mode)];
    m.has(names::LIMITER_REDIS_UP, &labels) && m.value(names::LIMITER_REDIS_UP, &labels) == value
}
