//! A change that needs new listening sockets (or a new binary) goes through Pingora's graceful
//! upgrade: a new process takes the listening sockets over, the old one finishes what it has, and
//! no request fails.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::load::{failures, Load};
use support::{send, Gateway, Upstream, WAIT};

const CONFIG: &str = r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]
threads = 2

[admin]
listen = "{admin}"

[pools.shared]
upstreams = ["{one}", "{two}"]

[tenants.acme]
pool = "shared"

[tenants.globex]
pool = "shared"
"#;

#[tokio::test]
async fn a_graceful_upgrade_under_load_fails_no_request() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let mut old = Gateway::start(CONFIG, &[&one, &two]).await;
    let load = Load::start(&old, &["acme.yourapp.test", "globex.yourapp.test"], 4);
    load.wait_for(200).await;

    // The new process waits on the upgrade socket for the old one's listening sockets.
    let new = old.spawn_upgrade();
    let config = tenantgate::config::load(&old.config_path).expect("config");
    let socket = tenantgate::server::upgrade_socket(&config);
    let deadline = Instant::now() + WAIT;
    while !Path::new(&socket).exists() {
        assert!(
            Instant::now() < deadline,
            "the new process never opened {socket}:\n{}",
            new.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    old.signal("QUIT");

    // The old process hands over, drains and exits; the load goes on against the new one.
    load.wait_for_more(300).await;
    old.wait_exit().await;
    load.wait_for_more(300).await;
    let samples = load.stop().await;
    let failed = failures(&samples);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the upgrade: {:?}\nold:\n{}\nnew:\n{}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)],
        old.log(),
        new.log()
    );

    // Only the new process is left, on the same ports, admin API included.
    assert_eq!(send(new.get("acme.yourapp.test", "/")).await.status, 200);
    let status = new.admin_json("/status").await;
    assert_eq!(status["config"], old.config_path.display().to_string());
    assert!(new.log().contains("upgrade=true"), "{}", new.log());
    assert!(
        old.log()
            .contains("telling keep-alive clients to reconnect"),
        "{}",
        old.log()
    );
}
