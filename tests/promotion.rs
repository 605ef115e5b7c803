//! Promoting a tenant from the shared pool to its dedicated pool, and back: checks, weighted steps,
//! the error-rate gate, write-back to the file, audit, and a restart that keeps the result.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::load::{failures, Load};
use support::{send, Gateway, Upstream, WAIT};

const CONFIG: &str = r#"
# Routing for the promotion tests.
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]

[admin]
listen = "{admin}"

[pools.shared]
upstreams = ["{shared}"]

[pools.acme-dedicated]   # acme's own upstreams
upstreams = ["{dedicated}"]
health_check = { path = "/healthz", interval_ms = 200 }

[tenants.acme]
name = "Acme Corp"
pool = "shared"          # moves to acme-dedicated when promoted

[tenants.globex]
pool = "shared"
"#;

struct Fixture {
    gw: Gateway,
    shared: Upstream,
    dedicated: Upstream,
}

async fn fixture() -> Fixture {
    let shared = Upstream::start("shared").await;
    let dedicated = Upstream::start("dedicated").await;
    let gw = Gateway::start(CONFIG, &[&shared, &dedicated]).await;
    Fixture {
        gw,
        shared,
        dedicated,
    }
}

/// Polls `GET /tenants/{id}` until `done` holds (bounded).
async fn wait_tenant(gw: &Gateway, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let t = gw.admin_json(&format!("/tenants/{id}")).await;
        if done(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "tenant {id} never got there: {t}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn audit(gw: &Gateway) -> Vec<Value> {
    let path = gw.config_path.with_file_name("gateway.audit.jsonl");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn a_promotion_at_once_moves_only_that_tenant_and_is_written_to_the_file() {
    let f = fixture().await;
    let gw = &f.gw;
    let (status, body) = gw
        .admin_post(
            "/tenants/acme/promote",
            Some(json!({ "pool": "acme-dedicated" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "applied");
    let tenant = &body["tenant"];
    assert_eq!(tenant["pool"], "acme-dedicated");
    assert_eq!(tenant["isolation"], "dedicated");
    assert_eq!(tenant["previous_pool"], "shared");
    assert_eq!(tenant["promotion"]["state"], "completed");

    for _ in 0..5 {
        assert_eq!(
            send(gw.get("acme.yourapp.test", "/")).await.body["upstream"],
            "dedicated"
        );
        assert_eq!(
            send(gw.get("globex.yourapp.test", "/")).await.body["upstream"],
            "shared"
        );
    }

    // Written back with the operator's comments and layout.
    let file = gw.read_config();
    assert!(
        file.contains("# Routing for the promotion tests."),
        "{file}"
    );
    assert!(
        file.contains("pool = \"acme-dedicated\"          # moves to acme-dedicated when promoted"),
        "{file}"
    );
    assert!(file.contains("previous_pool = \"shared\""), "{file}");
    assert!(
        file.contains("[pools.acme-dedicated]   # acme's own upstreams"),
        "{file}"
    );

    let entries = audit(gw);
    let moved = entries
        .iter()
        .find(|e| e["action"] == "tenant.moved")
        .expect("audited");
    assert_eq!(
        (
            moved["tenant"].as_str(),
            moved["old"].as_str(),
            moved["new"].as_str()
        ),
        (Some("acme"), Some("shared"), Some("acme-dedicated"))
    );
    assert!(moved["actor"]
        .as_str()
        .is_some_and(|a| a.starts_with("admin-api 127.0.0.1:")));
    assert_eq!(moved["generation"], 2);

    let list = gw.admin_json("/tenants?pool=acme-dedicated").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["tenants"][0]["id"], "acme");
}

#[tokio::test]
async fn a_restart_after_a_promotion_serves_from_the_promoted_pool() {
    let f = fixture().await;
    let (status, _) =
        f.gw.admin_post(
            "/tenants/acme/promote",
            Some(json!({ "pool": "acme-dedicated" })),
        )
        .await;
    assert_eq!(status, 200);
    let gw = f.gw.restart().await;
    let r = send(gw.get("acme.yourapp.test", "/")).await;
    assert_eq!(
        (r.status, r.body["upstream"].as_str()),
        (200, Some("dedicated"))
    );
    let t = gw.admin_json("/tenants/acme").await;
    assert_eq!(
        (t["pool"].as_str(), t["previous_pool"].as_str()),
        (Some("acme-dedicated"), Some("shared"))
    );

    // Rollback after the restart still knows where the tenant came from.
    let (status, body) = gw.admin_post("/tenants/acme/rollback", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        send(gw.get("acme.yourapp.test", "/")).await.body["upstream"],
        "shared"
    );
    assert!(!gw.read_config().contains("previous_pool"));
    drop((f.shared, f.dedicated));
}

#[tokio::test]
async fn a_stepped_promotion_sends_a_share_then_everything_under_load_without_errors() {
    let f = fixture().await;
    let gw = &f.gw;
    let load = Load::start(gw, &["acme.yourapp.test", "globex.yourapp.test"], 4);
    load.wait_for(40).await;
    let (status, body) = gw
        .admin_post(
            "/tenants/acme/promote",
            Some(json!({ "pool": "acme-dedicated", "steps": [30, 100], "pause_ms": 600 })),
        )
        .await;
    let canary_started = Instant::now();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"]["promotion"]["state"], "running");
    assert_eq!(body["tenant"]["canary"]["percent"], 30);
    assert!(gw
        .read_config()
        .contains("canary = { pool = \"acme-dedicated\", percent = 30 }"));

    // The canary share holds for the pause (600 ms); judge only requests well inside it.
    let canary_seen = canary_started + Duration::from_millis(450);
    let t = wait_tenant(gw, "acme", |t| t["promotion"]["state"] == "completed").await;
    assert_eq!(t["pool"], "acme-dedicated");
    assert!(t["canary"].is_null());
    load.wait_for_more(100).await;
    let samples = load.stop().await;
    assert!(failures(&samples).is_empty(), "{:?}", failures(&samples));

    // During the canary both pools served acme, about 30/70; at the end only the dedicated one;
    // globex never moved.
    let acme: Vec<_> = samples
        .iter()
        .filter(|s| s.host.starts_with("acme"))
        .collect();
    let during: Vec<_> = acme
        .iter()
        .filter(|s| s.at > canary_started && s.at < canary_seen)
        .collect();
    let on_canary = during.iter().filter(|s| s.upstream == "dedicated").count();
    assert!(
        during.len() >= 20,
        "only {} acme requests during the canary",
        during.len()
    );
    assert!(
        on_canary > 0 && on_canary < during.len(),
        "{on_canary} of {} canary-time requests went to the canary pool",
        during.len()
    );
    assert!(acme[acme.len() - 20..]
        .iter()
        .all(|s| s.upstream == "dedicated"));
    assert!(samples
        .iter()
        .filter(|s| s.host.starts_with("globex"))
        .all(|s| s.upstream == "shared"));
    assert!(audit(gw)
        .iter()
        .any(|e| e["action"] == "tenant.promotion_completed"));
    drop(f.shared);
}

#[tokio::test]
async fn a_failing_canary_trips_the_gate_and_rolls_back_by_itself() {
    let f = fixture().await;
    let gw = &f.gw;
    f.dedicated.set_failing(true);
    let load = Load::start(gw, &["acme.yourapp.test"], 2);
    load.wait_for(20).await;
    let (status, body) = gw
        .admin_post(
            "/tenants/acme/promote",
            Some(json!({ "pool": "acme-dedicated", "steps": [50, 100], "pause_ms": 500, "max_error_rate": 0.1 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let t = wait_tenant(gw, "acme", |t| t["promotion"]["state"] == "rolled_back").await;
    load.wait_for_more(30).await;
    let samples = load.stop().await;

    assert_eq!(t["pool"], "shared");
    assert!(t["canary"].is_null());
    assert!(
        t["promotion"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("error-rate gate tripped")),
        "{t}"
    );
    assert!(!gw.read_config().contains("canary"));
    // After the rollback, acme is served by the shared pool again.
    assert!(samples[samples.len() - 20..]
        .iter()
        .all(|s| s.upstream == "shared" && s.ok()));
    let rolled_back = audit(gw)
        .into_iter()
        .find(|e| e["action"] == "tenant.promotion_rolled_back")
        .expect("audited");
    assert!(rolled_back["reason"]
        .as_str()
        .is_some_and(|r| r.contains("canary requests failed")));
    drop(f.shared);
}

#[tokio::test]
async fn a_rollback_during_a_stepped_promotion_stops_it() {
    let f = fixture().await;
    let gw = &f.gw;
    let (status, _) = gw
        .admin_post(
            "/tenants/acme/promote",
            Some(json!({ "pool": "acme-dedicated", "steps": [10, 50, 100], "pause_ms": 400 })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = gw.admin_post("/tenants/acme/rollback", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"]["promotion"]["state"], "rolled_back");
    // The runner must not put the canary back on its next step.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let t = gw.admin_json("/tenants/acme").await;
    assert_eq!(
        (t["pool"].as_str(), t["canary"].is_null()),
        (Some("shared"), true),
        "{t}"
    );
    drop((f.shared, f.dedicated));
}

#[tokio::test]
async fn promotions_are_checked_first_and_refusals_are_audited() {
    let mut f = fixture().await;
    let gw = &f.gw;
    let promote = |id: &'static str, body: Value| async move {
        gw.admin_post(&format!("/tenants/{id}/promote"), Some(body))
            .await
    };

    let (status, body) = promote("nobody", json!({ "pool": "acme-dedicated" })).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_tenant"))
    );
    let (status, body) = promote("acme", json!({ "pool": "nowhere" })).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_pool"))
    );
    let (status, body) = promote("acme", json!({ "pool": "shared" })).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")));
    let (status, body) = promote(
        "acme",
        json!({ "pool": "acme-dedicated", "steps": [50, 10] }),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (422, Some("bad_request")));
    let (status, body) =
        promote("acme", json!({ "pool": "acme-dedicated", "colour": "red" })).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("bad_request")));

    let (status, _) = gw.admin_post("/tenants/globex/suspend", None).await;
    assert_eq!(status, 200);
    let (status, body) = promote("globex", json!({ "pool": "acme-dedicated" })).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    assert_eq!(send(gw.get("globex.yourapp.test", "/")).await.status, 403);
    let (status, _) = gw.admin_post("/tenants/globex/activate", None).await;
    assert_eq!(status, 200);
    assert_eq!(send(gw.get("globex.yourapp.test", "/")).await.status, 200);

    // The target pool must pass its health check now.
    f.dedicated.kill().await;
    let (status, body) = promote("acme", json!({ "pool": "acme-dedicated" })).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("pool_unhealthy")),
        "{body}"
    );
    assert_eq!(
        send(gw.get("acme.yourapp.test", "/")).await.body["upstream"],
        "shared"
    );
    let (status, body) = gw.admin_post("/tenants/acme/rollback", None).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")));

    let refused: Vec<Value> = audit(gw)
        .into_iter()
        .filter(|e| e["result"] == "refused")
        .collect();
    assert!(refused.len() >= 7, "{refused:#?}");
    assert!(refused.iter().any(|e| e["action"] == "tenant.promote"
        && e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("does not pass its health check"))));
    assert!(!gw.read_config().contains("previous_pool"));
    drop(f.shared);
}

#[tokio::test]
async fn the_cli_promotes_and_rolls_back() {
    let f = fixture().await;
    let gw = &f.gw;
    let config = gw.config_path.to_str().expect("utf-8");
    let run = |args: &'static [&'static str]| async move {
        let mut all = vec!["tenants", "--config", config];
        all.extend_from_slice(args);
        support::tenantgate(&all).await
    };
    let out = run(&["promote", "acme", "--pool", "acme-dedicated"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("~ tenant acme: pool shared -> acme-dedicated"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pool       acme-dedicated (dedicated)"),
        "{stdout}"
    );

    let out = run(&["list"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("acme ")
            && l.contains("acme-dedicated")
            && l.contains("dedicated")),
        "{stdout}"
    );
    let out = run(&["show", "acme", "--json"]).await;
    let shown: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(shown["previous_pool"], "shared");

    let out = run(&["rollback", "acme"]).await;
    assert!(out.status.success());
    let out = run(&["rollback", "acme"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has nothing to roll back"));
    drop((f.shared, f.dedicated));
}

#[tokio::test]
async fn two_promotions_of_one_tenant_cannot_both_run() {
    let f = fixture().await;
    let gw = &f.gw;
    let body = json!({ "pool": "acme-dedicated", "steps": [10, 100], "pause_ms": 400 });
    let (a, b) = tokio::join!(
        gw.admin_post("/tenants/acme/promote", Some(body.clone())),
        gw.admin_post("/tenants/acme/promote", Some(body.clone())),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{} / {}", a.1, b.1);
    let t = wait_tenant(gw, "acme", |t| t["promotion"]["state"] == "completed").await;
    assert_eq!(t["pool"], "acme-dedicated");
    let completed = audit(gw)
        .iter()
        .filter(|e| e["action"] == "tenant.promotion_completed")
        .count();
    assert_eq!(completed, 1);
    drop((f.shared, f.dedicated));
}

#[tokio::test]
async fn a_rollback_racing_the_first_step_wins_for_good() {
    let f = fixture().await;
    let gw = &f.gw;
    let body = json!({ "pool": "acme-dedicated", "steps": [10, 100], "pause_ms": 300 });
    // Sent together: whichever the writer lock serves first, the tenant ends on its old pool.
    let ((promoted, _), (rolled, rolled_body)) =
        tokio::join!(gw.admin_post("/tenants/acme/promote", Some(body)), async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            gw.admin_post("/tenants/acme/rollback", None).await
        },);
    assert!(
        promoted == 200 || promoted == 409,
        "promote answered {promoted}"
    );
    if rolled == 200 {
        // Past the promotion's pause: the runner must not have gone on.
        tokio::time::sleep(Duration::from_millis(900)).await;
        let t = gw.admin_json("/tenants/acme").await;
        assert_eq!(
            (t["pool"].as_str(), t["canary"].is_null()),
            (Some("shared"), true),
            "{t}"
        );
        assert_eq!(t["promotion"]["state"], "rolled_back", "{t}");
    } else {
        // The rollback came before the promotion registered: nothing to roll back then, and the
        // promotion then runs to its end.
        assert_eq!(rolled, 409, "{rolled_body}");
        wait_tenant(gw, "acme", |t| t["promotion"]["state"] == "completed").await;
    }
    drop((f.shared, f.dedicated));
}
