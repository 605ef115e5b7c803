//! Upstream failures: a dead upstream is routed around without a client-visible error, a pool with no
//! available upstream answers `no_healthy_upstream`, and health checks take upstreams out and back.

mod support;

use std::time::{Duration, Instant};

use support::load::{failures, Load};
use support::{send, Gateway, Upstream};

fn config(health_check: &str) -> String {
    format!(
        r#"
[gateway]
http_listen = "{{http}}"
base_domains = ["yourapp.test"]
threads = 2

[admin]
listen = "{{admin}}"

[pools.shared]
upstreams = ["{{one}}", "{{two}}"]
{health_check}
read_timeout_ms = 500

[tenants.acme]
pool = "shared"
"#
    )
}

const ACTIVE_CHECKS: &str = r#"health_check = { path = "/healthz", interval_ms = 100, healthy_threshold = 1, unhealthy_threshold = 2 }"#;

#[tokio::test]
async fn an_upstream_killed_under_load_is_routed_around_without_errors() {
    let mut one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let gw = Gateway::start(&config(ACTIVE_CHECKS), &[&one, &two]).await;

    let load = Load::start(&gw, &["acme.yourapp.test"], 4);
    load.wait_for(100).await;
    one.kill().await;
    load.wait_for_more(200).await;
    let samples = load.stop().await;

    let failed = failures(&samples);
    assert!(
        failed.is_empty(),
        "{} requests failed: {failed:?}",
        failed.len()
    );
    // Both served before the kill; only `two` at the end.
    assert!(samples[..90].iter().any(|s| s.upstream == "one"));
    assert!(samples[samples.len() - 50..]
        .iter()
        .all(|s| s.upstream == "two"));
    gw.wait_upstream_health(one.addr, false).await;
}

#[tokio::test]
async fn without_active_checks_a_refused_connection_is_retried_elsewhere() {
    let mut one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let gw = Gateway::start(&config(""), &[&one, &two]).await;

    let load = Load::start(&gw, &["acme.yourapp.test"], 4);
    load.wait_for(60).await;
    one.kill().await;
    load.wait_for_more(140).await;
    let samples = load.stop().await;

    assert!(failures(&samples).is_empty(), "{:?}", failures(&samples));
    let metrics = gw.admin_text("/metrics").await;
    let series = format!(
        "tenantgate_upstream_ejections_total{{pool=\"shared\",upstream=\"{}\"}} ",
        one.addr
    );
    let ejections: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        ejections >= 1,
        "no ejection of {} counted:\n{metrics}",
        one.addr
    );
}

#[tokio::test]
async fn an_idempotent_request_whose_upstream_drops_it_is_retried_elsewhere_and_a_post_is_not() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let gw = Gateway::start(&config(""), &[&one, &two]).await;
    one.set_dropping(true);
    for _ in 0..10 {
        let reply = send(gw.get("acme.yourapp.test", "/")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body["upstream"], "two");
    }
    assert!(
        one.hits() >= 1,
        "round robin sent requests to the dropping upstream first"
    );
    // A POST may have had its effect before the connection dropped: it is not sent again.
    let mut dropped = 0;
    for _ in 0..10 {
        let post = gw
            .client
            .post(format!("http://{}/", gw.http))
            .header(reqwest::header::HOST, "acme.yourapp.test")
            .body("x");
        if send(post).await.status == 502 {
            dropped += 1;
        }
    }
    assert!(dropped >= 1, "no POST reached the dropping upstream");
}

#[tokio::test]
async fn all_upstreams_down_gives_503_no_healthy_upstream_until_one_returns() {
    let mut one = Upstream::start("one").await;
    let mut two = Upstream::start("two").await;
    let gw = Gateway::start(&config(ACTIVE_CHECKS), &[&one, &two]).await;
    assert_eq!(send(gw.get("acme.yourapp.test", "/")).await.status, 200);

    let one_addr = one.addr;
    one.kill().await;
    two.kill().await;
    for _ in 0..5 {
        let r = send(
            gw.get("acme.yourapp.test", "/")
                .header("X-Request-ID", "outage-1"),
        )
        .await;
        assert_eq!(r.status, 503);
        assert_eq!(r.body["error"], "no_healthy_upstream");
        assert_eq!(r.body["request_id"], "outage-1");
    }

    // The first upstream comes back on its port; the health check puts it back in rotation.
    let one = Upstream::start_on("one", one_addr).await;
    gw.wait_upstream_health(one_addr, true).await;
    let deadline = Instant::now() + support::WAIT;
    loop {
        let r = send(gw.get("acme.yourapp.test", "/")).await;
        if r.status == 200 {
            assert_eq!(r.body["upstream"], "one");
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(one.hits() >= 1);
}

#[tokio::test]
async fn a_failing_health_check_takes_an_upstream_out_and_a_passing_one_puts_it_back() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let gw = Gateway::start(&config(ACTIVE_CHECKS), &[&one, &two]).await;

    one.set_healthy(false);
    gw.wait_upstream_health(one.addr, false).await;
    let before = one.hits();
    for _ in 0..10 {
        let r = send(gw.get("acme.yourapp.test", "/")).await;
        assert_eq!((r.status, r.body["upstream"].as_str()), (200, Some("two")));
    }
    assert_eq!(one.hits(), before);

    one.set_healthy(true);
    gw.wait_upstream_health(one.addr, true).await;
    let mut answered_by_one = 0;
    for _ in 0..10 {
        let r = send(gw.get("acme.yourapp.test", "/")).await;
        if r.body["upstream"] == "one" {
            answered_by_one += 1;
        }
    }
    assert_eq!(answered_by_one, 5);
}

#[tokio::test]
async fn a_slow_upstream_gives_504_upstream_timeout() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let gw = Gateway::start(&config(""), &[&one, &two]).await;
    let r = send(gw.get("acme.yourapp.test", "/slow?sleep_ms=2000")).await;
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.body["error"], "upstream_timeout");
    // A timeout is not a refused connection: nothing was ejected, both still serve.
    let status = gw.admin_json("/status").await;
    for u in status["pools"][0]["upstreams"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(u["available"], true, "{status}");
    }
}

#[tokio::test]
async fn a_single_upstream_pool_serves_again_as_soon_as_its_upstream_is_back() {
    let mut only = Upstream::start("only").await;
    let config = r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]
[admin]
listen = "{admin}"
[pools.solo]
upstreams = ["{only}"]
fail_timeout_ms = 60000
[tenants.acme]
pool = "solo"
"#;
    let gw = Gateway::start(config, &[&only]).await;
    assert_eq!(send(gw.get("acme.yourapp.test", "/")).await.status, 200);

    // A restart: one request finds nothing listening and is refused with 503.
    let addr = only.addr;
    only.kill().await;
    let r = send(gw.get("acme.yourapp.test", "/")).await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (503, Some("no_healthy_upstream"))
    );

    // Back on its port long before fail_timeout ends: the very next request is served.
    let only = Upstream::start_on("only", addr).await;
    let r = send(gw.get("acme.yourapp.test", "/")).await;
    assert_eq!(
        (r.status, r.body["upstream"].as_str()),
        (200, Some("only")),
        "{r:?}"
    );
    assert_eq!(only.hits(), 1);
}

const RETRYING: &str = r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]
threads = 1

[admin]
listen = "{admin}"

[pools.weighted]
upstreams = [{ addr = "{one}", weight = 3 }, "{two}"]

[pools.retrying]
upstreams = ["{three}", "{four}"]
# Every request may be retried once: the budget is no bound here.
retries = { attempts = 2, on = ["connect", "5xx"], budget_percent = 100 }

[pools.budgeted]
upstreams = ["{five}", "{six}", "{seven}"]
retries = { attempts = 3, on = ["5xx"], budget_percent = 10 }

[tenants.acme]
pool = "weighted"

[tenants.globex]
pool = "retrying"

[tenants.initech]
pool = "budgeted"
"#;

#[tokio::test]
async fn weights_share_requests_and_5xx_retries_stay_within_attempts_and_the_budget() {
    let names = ["one", "two", "three", "four", "five", "six", "seven"];
    let mut upstreams = Vec::new();
    for name in names {
        upstreams.push(Upstream::start(name).await);
    }
    let refs: Vec<&Upstream> = upstreams.iter().collect();
    let gw = Gateway::start(RETRYING, &refs).await;
    let hits = |i: usize| upstreams[i].hits();

    // Weighted round robin: exactly 3 to 1 over whole turns.
    for _ in 0..400 {
        assert_eq!(send(gw.get("acme.yourapp.test", "/")).await.status, 200);
    }
    assert_eq!((hits(0), hits(1)), (300, 100));

    // A 5xx goes to the other upstream for an idempotent request; a POST keeps its 5xx.
    upstreams[2].set_failing(true);
    for _ in 0..20 {
        let r = send(gw.get("globex.yourapp.test", "/")).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["upstream"], "four");
    }
    let mut posted = Vec::new();
    for _ in 0..4 {
        let r = send(
            gw.client
                .post(format!("http://{}/", gw.http))
                .header("Host", "globex.yourapp.test"),
        )
        .await;
        posted.push(r.status);
    }
    assert!(posted.contains(&500), "{posted:?}");
    // Both upstreams failing: the last attempt's 5xx is the answer, after exactly `attempts`.
    upstreams[3].set_failing(true);
    let before = hits(2) + hits(3);
    let r = send(gw.get("globex.yourapp.test", "/")).await;
    assert_eq!(r.status, 500);
    assert_eq!(hits(2) + hits(3) - before, 2);

    // Every upstream failing: retries stop at the budget (10 % of requests, at least 10 a window),
    // so an outage costs the upstreams about 1.1 times the traffic, not `attempts` times.
    for u in &upstreams[4..7] {
        u.set_failing(true);
    }
    let requests = 200;
    for _ in 0..requests {
        assert_eq!(send(gw.get("initech.yourapp.test", "/")).await.status, 500);
    }
    let sent = hits(4) + hits(5) + hits(6);
    assert!(sent >= requests + 10, "{sent}: retries were made");
    assert!(
        sent <= requests + 10 + requests / 10 + 2,
        "{sent}: over the budget"
    );
    let m = support::metrics::scrape(&gw).await;
    let refused = m.value(
        tenantgate::metrics::names::UPSTREAM_RETRIES_REFUSED_TOTAL,
        &[("pool", "budgeted"), ("reason", "budget")],
    );
    assert!(refused > 0.0, "{}", m.text);
}
