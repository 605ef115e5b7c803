//! WebSocket through the gateway, over real sockets with a real WebSocket peer on each side: the
//! upgrade request is admitted like any other (tenant header, suspension, limits), messages flow
//! both ways, upgraded connections count in the tenant's metrics, a suspension leaves them open
//! unless the operator asks, and a graceful drain ends them at its deadline.

mod support;

use std::time::Duration;

use support::metrics::scrape;
use support::websocket::{connect, ended_within, exchange, WsUpstream};
use support::Gateway;
use tenantgate::metrics::names;

const CONFIG: &str = r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]
threads = 2

[admin]
listen = "{admin}"

[pools.ws]
upstreams = ["{ws}"]

[tenants.acme]
pool = "ws"

[tenants.globex]
pool = "ws"
status = "suspended"

[tenants.initech]
pool = "ws"
rate_limit = { requests_per_second = 0.01, burst = 1 }
"#;

async fn start() -> (Gateway, WsUpstream) {
    let upstream = WsUpstream::start("ws").await;
    let gw = Gateway::start_with(CONFIG, &[("ws", upstream.addr.to_string())]).await;
    (gw, upstream)
}

async fn open_connections(gw: &Gateway, tenant: &str) -> f64 {
    scrape(gw)
        .await
        .value(names::WEBSOCKET_CONNECTIONS, &[("tenant", tenant)])
}

#[tokio::test]
async fn upgrades_carry_the_tenant_both_ways_within_its_limits_and_count_in_its_metrics() {
    let (gw, _upstream) = start().await;
    let mut ws = connect(gw.http, "acme.yourapp.test", &[("X-Tenant-ID", "globex")])
        .await
        .expect("upgrade");
    let headers = exchange(&mut ws, "headers", 1).await.expect("headers");
    let seen: serde_json::Value = serde_json::from_str(&headers[0]).expect("json");
    assert_eq!(seen["x-tenant-id"], "acme", "{seen}");
    assert!(seen["x-request-id"].is_string(), "{seen}");
    // Client to server and back, and the server's own messages.
    for i in 0..20 {
        let text = format!("message {i}");
        assert_eq!(exchange(&mut ws, &text, 1).await, Some(vec![text]));
    }
    let pushed = exchange(&mut ws, "push 3", 3).await.expect("pushed");
    assert_eq!(pushed, ["pushed 0", "pushed 1", "pushed 2"]);
    assert_eq!(open_connections(&gw, "acme").await, 1.0);

    // The upgrade request is refused like any request.
    assert_eq!(
        connect(gw.http, "globex.yourapp.test", &[]).await.err(),
        Some(403)
    );
    assert_eq!(
        connect(gw.http, "nobody.yourapp.test", &[]).await.err(),
        Some(404)
    );
    let _first = connect(gw.http, "initech.yourapp.test", &[])
        .await
        .expect("within the burst");
    assert_eq!(
        connect(gw.http, "initech.yourapp.test", &[]).await.err(),
        Some(429)
    );

    drop(ws);
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while open_connections(&gw, "acme").await != 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed connection is still counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = scrape(&gw).await;
    let bytes = |direction| {
        m.value(
            names::WEBSOCKET_BYTES_TOTAL,
            &[("tenant", "acme"), ("direction", direction)],
        )
    };
    assert!(bytes("in") > 20.0 * 9.0, "{}", m.text);
    assert!(bytes("out") > bytes("in"), "{}", m.text);
}

#[tokio::test]
async fn a_suspension_leaves_open_connections_unless_asked_and_a_drain_ends_them() {
    let (mut gw, _upstream) = start().await;
    let mut ws = connect(gw.http, "acme.yourapp.test", &[])
        .await
        .expect("upgrade");
    let (status, body) = gw.admin_post("/tenants/acme/suspend", None).await;
    assert_eq!(status, 200, "{body}");
    // New upgrades are refused; the open connection goes on.
    assert_eq!(
        connect(gw.http, "acme.yourapp.test", &[]).await.err(),
        Some(403)
    );
    assert_eq!(
        exchange(&mut ws, "still here", 1).await,
        Some(vec!["still here".into()])
    );

    let (status, body) = gw.admin_post("/tenants/acme/activate", None).await;
    assert_eq!(status, 200, "{body}");
    let mut other = connect(gw.http, "acme.yourapp.test", &[])
        .await
        .expect("upgrade");
    let (status, body) = gw
        .admin_post("/tenants/acme/suspend?close_connections=true", None)
        .await;
    assert_eq!(status, 200, "{body}");
    // Each ends at its next frame, whichever side sends it.
    assert_eq!(exchange(&mut ws, "closed?", 1).await, None);
    assert_eq!(exchange(&mut other, "push 1", 1).await, None);

    // A graceful drain (SIGTERM) ends an open connection at its deadline, and the process exits.
    let (status, _) = gw.admin_post("/tenants/acme/activate", None).await;
    assert_eq!(status, 200);
    let mut draining = connect(gw.http, "acme.yourapp.test", &[])
        .await
        .expect("upgrade");
    assert_eq!(
        exchange(&mut draining, "before", 1).await,
        Some(vec!["before".into()])
    );
    gw.signal("TERM");
    assert!(
        ended_within(&mut draining, Duration::from_secs(15)).await,
        "the drain did not end the WebSocket; log:\n{}",
        gw.log()
    );
    gw.wait_exit().await;
}
