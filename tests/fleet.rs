//! A fleet on one etcd: a real etcd and three real gateways on one prefix, under steady load.
//! Changes made through one instance reach every instance; conflicting ones get one winner; an
//! invalid file or value changes nothing; etcd stopping, restarting or compacting its history
//! fails no request; a stepped promotion outlives the instance that ran it; the audit log is the
//! fleet's.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::fleet::{wait_tenant, Fleet};
use support::load::{failures, Load};
use support::{send, Gateway, Upstream, WAIT};

const ROUTING: &str = r#"
# The fleet's routing table (shared sections only: each instance has its own file).
[gateway]
base_domains = ["yourapp.test"]

[pools.shared]
upstreams = ["{shared}"]

[pools.acme-dedicated]   # acme's own upstreams
upstreams = ["{dedicated}"]
health_check = { path = "/healthz", interval_ms = 200 }

[tenants.acme]
name = "Acme Corp"
pool = "shared"

[tenants.globex]
pool = "shared"

[tenants.initech]
pool = "shared"
"#;

struct Fixture {
    fleet: Fleet,
    shared: Upstream,
    dedicated: Upstream,
}

async fn fixture(instances: usize) -> Fixture {
    let shared = Upstream::start("shared").await;
    let dedicated = Upstream::start("dedicated").await;
    let fleet = Fleet::start(ROUTING, &[&shared, &dedicated], instances).await;
    Fixture {
        fleet,
        shared,
        dedicated,
    }
}

/// Which upstream answers a request for `host` on `gw`.
async fn upstream_of(gw: &Gateway, host: &str) -> String {
    let r = send(gw.get(host, "/")).await;
    r.body["upstream"].as_str().unwrap_or("-").to_owned()
}

/// Waits until `gw` sends `host` to `upstream`.
async fn wait_routed(gw: &Gateway, host: &str, upstream: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        if upstream_of(gw, host).await == upstream {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never sent {host} to {upstream}",
            gw.admin
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn on_every(fleet: &Fleet, hosts: &[&str]) -> Vec<Load> {
    fleet
        .gateways
        .iter()
        .map(|gw| Load::start(gw, hosts, 2))
        .collect()
}

async fn stop_all(loads: Vec<Load>) -> Vec<support::load::Sample> {
    let mut all = Vec::new();
    for load in loads {
        all.extend(load.stop().await);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_promotion_through_one_instance_and_a_rollback_through_another_reach_every_instance() {
    let f = fixture(3).await;
    let fleet = &f.fleet;
    let loads = on_every(fleet, &["acme.yourapp.test", "globex.yourapp.test"]);
    for load in &loads {
        load.wait_for(20).await;
    }

    let (status, body) = fleet.gateways[0]
        .admin_post(
            "/tenants/acme/promote",
            Some(json!({ "pool": "acme-dedicated" })),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    let revision = body["generation"].as_u64().expect("the store revision");
    fleet.wait_revision(revision).await;
    for gw in &fleet.gateways {
        wait_routed(gw, "acme.yourapp.test", "dedicated").await;
        let t = gw.admin_json("/tenants/acme").await;
        assert_eq!(t["pool"], "acme-dedicated");
        assert_eq!(t["previous_pool"], "shared");
    }
    for load in &loads {
        load.wait_for_more(20).await;
    }

    let (status, body) = fleet.gateways[2]
        .admin_post("/tenants/acme/rollback", None)
        .await;
    assert_eq!(status, 200, "{body:#}");
    for gw in &fleet.gateways {
        wait_routed(gw, "acme.yourapp.test", "shared").await;
    }
    for load in &loads {
        load.wait_for_more(20).await;
    }
    let samples = stop_all(loads).await;
    assert!(failures(&samples).is_empty(), "{:?}", failures(&samples));
    let misrouted: Vec<_> = samples
        .iter()
        .filter(|s| s.host == "globex.yourapp.test" && s.upstream != "shared")
        .collect();
    assert!(
        misrouted.is_empty(),
        "globex left the shared pool: {misrouted:?}"
    );
    assert!(samples
        .iter()
        .any(|s| s.host == "acme.yourapp.test" && s.upstream == "dedicated"));

    // The fleet's audit log has each change once, with who made it and through which instance.
    let (ok, out, err) = fleet.cli(&["audit", "--tenant", "acme", "--json"]).await;
    assert!(ok.success(), "{err}");
    let entries: Vec<Value> = serde_json::from_str(&out).expect("audit JSON");
    let moved: Vec<&Value> = entries
        .iter()
        .filter(|e| e["change"] == "tenant.moved")
        .collect();
    assert_eq!(moved.len(), 2, "{entries:#?}");
    assert_eq!(moved[0]["instance"], "gw-1");
    assert_eq!(moved[0]["action"], "tenant.promote");
    assert_eq!(moved[0]["new"], "acme-dedicated");
    assert_eq!(moved[1]["instance"], "gw-3");
    assert_eq!(moved[1]["action"], "tenant.rollback");
    assert!(moved[0]["actor"]
        .as_str()
        .is_some_and(|a| a.starts_with("admin-api")));
    assert!(moved[1]["revision"].as_i64() > moved[0]["revision"].as_i64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicting_changes_through_two_instances_get_one_winner() {
    let f = fixture(2).await;
    let fleet = &f.fleet;
    let (a, b) = (&fleet.gateways[0], &fleet.gateways[1]);
    let mut conflicts = 0;
    for round in 0..20 {
        let name = |who: &str| format!("{who} {round}");
        // Both read the tenant at the same revision, and each writes its own name.
        let rename = |gw: &Gateway, who: String| {
            let gw_admin = gw.admin;
            let client = gw.client.clone();
            async move {
                // A change of the tenant's name, pushed as a tenant file through this instance.
                let fragment = format!("[tenants.acme]\nname = \"{who}\"\npool = \"shared\"\n");
                let reply = client
                    .post(format!("http://{gw_admin}/tenants"))
                    .bearer_auth(support::ADMIN_TOKEN)
                    .json(&json!({ "fragment": fragment, "on_conflict": "overwrite" }))
                    .send()
                    .await
                    .expect("push");
                let status = reply.status().as_u16();
                (status, reply.json::<Value>().await.unwrap_or_default(), who)
            }
        };
        let (x, y) = tokio::join!(rename(a, name("a")), rename(b, name("b")));
        let statuses = (x.0, y.0);
        let winner = match statuses {
            (200, 409) => Some(&x.2),
            (409, 200) => Some(&y.2),
            (200, 200) => None,
            other => panic!("round {round}: {other:?}: {:#} {:#}", x.1, y.1),
        };
        let loser = if x.0 == 409 { &x.1 } else { &y.1 };
        if let Some(winner) = winner {
            conflicts += 1;
            assert_eq!(loser["error"], "conflict", "{loser:#}");
            // The store holds the winner's change whole, and every instance serves it.
            fleet
                .wait_tenant("acme", "took the winner's name", |t| {
                    t["name"] == winner.as_str()
                })
                .await;
            let stored = fleet
                .etcd
                .get(&format!("{}/tenants/acme", fleet.prefix))
                .await
                .expect("acme in the store");
            assert!(stored.contains(winner.as_str()), "{stored}");
        }
        if conflicts >= 2 {
            break;
        }
    }
    assert!(
        conflicts > 0,
        "no round of concurrent changes ever conflicted"
    );

    // Two new tenants claiming one domain through two instances at once: each push is valid
    // alone, so the second must not be written beside the first (the change fence), and the store
    // stays a valid table.
    for round in 0..10 {
        let claim = |gw: &Gateway, id: String| {
            let (admin, client) = (gw.admin, gw.client.clone());
            async move {
                let fragment = format!(
                    "[tenants.{id}]\npool = \"shared\"\ndomains = [\"shop-{round}.custom.test\"]\n"
                );
                client
                    .post(format!("http://{admin}/tenants"))
                    .bearer_auth(support::ADMIN_TOKEN)
                    .json(&json!({ "fragment": fragment }))
                    .send()
                    .await
                    .expect("push")
                    .status()
                    .as_u16()
            }
        };
        let (x, y) = tokio::join!(claim(a, format!("a{round}")), claim(b, format!("b{round}")));
        assert!(
            !(x == 200 && y == 200),
            "round {round}: both claims of one domain were written"
        );
        assert!(
            x == 200 || y == 200,
            "round {round}: neither was written ({x}, {y})"
        );
    }
    let (ok, exported, err) = fleet.cli(&["export"]).await;
    assert!(ok.success(), "{err}");
    let (ok, out, err) = fleet.apply(&exported, &["--dry-run"]).await;
    assert_eq!(
        ok.code(),
        Some(0),
        "the store holds a valid table: {out}{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_apply_changes_nothing_and_export_round_trips() {
    let f = fixture(2).await;
    let fleet = &f.fleet;
    let before = fleet.etcd.list(&fleet.prefix).await;
    let generation = fleet.gateways[0].admin_json("/status").await["generation"].clone();

    let broken = fleet.fill_upstreams(
        &format!("{ROUTING}\n[tenants.hooli]\npool = \"nowhere\"\n"),
        &[&f.shared, &f.dedicated],
    );
    let (ok, out, err) = fleet.apply(&broken, &[]).await;
    assert_eq!(ok.code(), Some(1), "{out}{err}");
    assert!(
        err.contains(": tenants.hooli.pool: unknown pool \"nowhere\""),
        "{err}"
    );
    let line = broken
        .lines()
        .position(|l| l.contains("nowhere"))
        .expect("the broken line")
        + 1;
    assert!(
        err.lines()
            .any(|l| l.contains(&format!(".toml:{line}:8: tenants.hooli.pool"))),
        "the error names the routing file's line and column: {err}"
    );
    assert_eq!(
        fleet.etcd.list(&fleet.prefix).await,
        before,
        "nothing was written"
    );
    for gw in &fleet.gateways {
        assert_eq!(gw.admin_json("/status").await["generation"], generation);
    }

    // Through an instance's admin API: refused the same way.
    let (status, body) = fleet.gateways[1]
        .admin_post(
            "/apply",
            Some(json!({ "config": broken, "source": "broken.toml" })),
        )
        .await;
    assert_eq!(status, 422, "{body:#}");
    assert!(
        body["errors"][0]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("broken.toml:{line}:8: tenants.hooli.pool"))),
        "{body:#}"
    );

    let (ok, exported, err) = fleet.cli(&["export"]).await;
    assert!(ok.success(), "{err}");
    assert!(exported.contains("[tenants.acme]") && exported.contains("[pools.shared]"));
    let (ok, out, err) = fleet.apply(&exported, &["--dry-run"]).await;
    assert_eq!(
        ok.code(),
        Some(0),
        "the export applies unchanged: {out}{err}"
    );
    assert!(out.contains("no changes"), "{out}");
    // The same through an instance.
    let from_gateway = fleet.gateways[0].admin_text("/export").await;
    let (ok, out, _) = fleet.apply(&from_gateway, &["--dry-run"]).await;
    assert_eq!(ok.code(), Some(0), "{out}");

    // A file without globex keeps it, unless pruned.
    let without = exported.replace("[tenants.globex]", "[tenants.hooli]");
    let (ok, out, err) = fleet.apply(&without, &["--dry-run"]).await;
    assert_eq!(ok.code(), Some(2), "changes to apply: {out}{err}");
    assert!(out.contains("+ tenant hooli"), "{out}");
    assert!(!out.contains("- tenant globex"), "{out}");
    let (ok, out, err) = fleet.apply(&without, &["--prune"]).await;
    assert!(ok.success(), "{out}{err}");
    assert!(
        out.contains("- tenant globex (was on pool shared)"),
        "{out}"
    );
    for gw in &fleet.gateways {
        wait_tenant(gw, "hooli", "was added", &|t| t["id"] == "hooli").await;
        let r = send(gw.get("globex.yourapp.test", "/")).await;
        let deadline = Instant::now() + WAIT;
        let mut status = r.status;
        while status != 404 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            status = send(gw.get("globex.yourapp.test", "/")).await.status;
        }
        assert_eq!(status, 404, "globex is gone from {}", gw.admin);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_etcd_stopped_every_instance_serves_refuses_changes_and_catches_up_after() {
    let mut f = fixture(2).await;
    let loads = on_every(&f.fleet, &["acme.yourapp.test", "globex.yourapp.test"]);
    for load in &loads {
        load.wait_for(20).await;
    }
    f.fleet.etcd.stop();
    for gw in &f.fleet.gateways {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = gw.admin_json("/status").await;
            if status["store"]["up"] == false {
                assert!(status["store"]["error"].is_string(), "{status:#}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the store still looks up: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let metrics = gw.admin_text("/metrics").await;
        assert!(metrics.contains("tenantgate_store_up 0"), "{metrics}");
        let (status, body) = gw.admin_post("/tenants/globex/suspend", None).await;
        assert_eq!(status, 503, "{body:#}");
        assert_eq!(body["error"], "store_unavailable");
    }
    for load in &loads {
        load.wait_for_more(50).await;
    }

    f.fleet.etcd.restart();
    let gw = &f.fleet.gateways[0];
    let deadline = Instant::now() + WAIT;
    let revision = loop {
        let (status, body) = gw.admin_post("/tenants/globex/suspend", None).await;
        if status == 200 {
            break body["generation"].as_u64().expect("revision");
        }
        assert!(
            Instant::now() < deadline,
            "changes are still refused: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    f.fleet.wait_revision(revision).await;
    for gw in &f.fleet.gateways {
        let status = gw.admin_json("/status").await;
        assert_eq!(status["store"]["up"], true, "{status:#}");
        let r = send(gw.get("globex.yourapp.test", "/")).await;
        assert_eq!(r.status, 403, "globex is suspended on {}", gw.admin);
    }
    let samples = stop_all(loads).await;
    let failed: Vec<_> = failures(&samples)
        .into_iter()
        .filter(|s| !(s.host == "globex.yourapp.test" && s.status == 403))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_whose_revision_was_compacted_away_reloads_the_store_whole() {
    let mut f = fixture(2).await;
    let behind = &f.fleet.gateways[1];
    behind.signal("STOP");
    // Its connection is gone when it wakes up, and what it missed is compacted.
    f.fleet.etcd.restart();
    let ahead = &f.fleet.gateways[0];
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = ahead.admin_post("/tenants/initech/suspend", None).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{body:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A second change: the compaction then reaches past the first revision the stopped instance
    // has not seen (etcd keeps the revision it compacts at).
    let (status, body) = ahead.admin_post("/tenants/globex/suspend", None).await;
    assert_eq!(status, 200, "{body:#}");
    let revision = body["generation"].as_u64().expect("revision");
    let compacted = f.fleet.etcd.compact().await;
    assert!(compacted >= i64::try_from(revision).unwrap_or(0));
    let behind = &f.fleet.gateways[1];
    behind.signal("CONT");
    f.fleet.wait_revision(revision).await;
    for host in ["initech.yourapp.test", "globex.yourapp.test"] {
        assert_eq!(send(behind.get(host, "/")).await.status, 403, "{host}");
    }
    assert!(
        behind.log().contains("compacted away"),
        "the instance said it read the store whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_value_in_the_store_is_refused_everywhere_and_the_last_table_serves() {
    let f = fixture(2).await;
    let fleet = &f.fleet;
    // Written past tenantgate, as with etcdctl.
    fleet
        .etcd
        .put(
            &format!("{}/tenants/acme", fleet.prefix),
            "name = \"Acme\"\npool = \"nowhere\"\n",
        )
        .await;
    for gw in &fleet.gateways {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = gw.admin_json("/status").await;
            let refused = &status["store"]["refused"];
            if refused.as_array().is_some_and(|r| !r.is_empty()) {
                assert_eq!(refused[0]["key"], format!("{}/tenants/acme", fleet.prefix));
                let error = refused[0]["errors"][0].as_str().unwrap_or_default();
                assert!(
                    error.starts_with(&format!(
                        "etcd:{}/tenants/acme:2:8: tenants.acme.pool: unknown pool \"nowhere\"",
                        fleet.prefix
                    )),
                    "{error}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "not refused: {status:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The last good table serves.
        assert_eq!(upstream_of(gw, "acme.yourapp.test").await, "shared");
    }
    // Other changes still apply; the fix applies too.
    let (status, body) = fleet.gateways[0]
        .admin_post("/tenants/globex/suspend", None)
        .await;
    assert_eq!(status, 200, "{body:#}");
    fleet
        .etcd
        .put(
            &format!("{}/tenants/acme", fleet.prefix),
            "name = \"Acme fixed\"\npool = \"acme-dedicated\"\n",
        )
        .await;
    for gw in &fleet.gateways {
        wait_routed(gw, "acme.yourapp.test", "dedicated").await;
        let status = gw.admin_json("/status").await;
        assert_eq!(status["store"]["refused"], json!([]), "{status:#}");
        assert_eq!(send(gw.get("globex.yourapp.test", "/")).await.status, 403);
    }

    // One entry still invalid does not hold back another that became valid: hooli names a pool
    // that arrives later, beside initech, which stays broken.
    let key = |k: &str| format!("{}/{k}", fleet.prefix);
    fleet.etcd.put(&key("tenants/initech"), "pool = 7\n").await;
    fleet
        .etcd
        .put(&key("tenants/hooli"), "pool = \"later\"\n")
        .await;
    for gw in &fleet.gateways {
        let deadline = Instant::now() + WAIT;
        while gw.admin_json("/status").await["store"]["refused"]
            .as_array()
            .map_or(0, Vec::len)
            < 2
        {
            assert!(Instant::now() < deadline, "both entries were not refused");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    fleet
        .etcd
        .put(
            &key("pools/later"),
            &format!("upstreams = [\"{}\"]\n", f.dedicated.addr),
        )
        .await;
    for gw in &fleet.gateways {
        wait_routed(gw, "hooli.yourapp.test", "dedicated").await;
        let status = gw.admin_json("/status").await;
        let refused = status["store"]["refused"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(refused.len(), 1, "{status:#}");
        assert_eq!(refused[0]["key"], key("tenants/initech"));
        // The broken entry keeps the table's value.
        assert_eq!(upstream_of(gw, "initech.yourapp.test").await, "shared");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stepped_promotion_resumes_on_another_instance_when_its_instance_dies() {
    let mut f = fixture(3).await;
    let (status, body) = f.fleet.gateways[0]
        .admin_post(
            "/tenants/acme/promote",
            Some(json!({ "pool": "acme-dedicated", "steps": [25, 100], "pause_ms": 4000 })),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    f.fleet
        .wait_tenant("acme", "got its canary", |t| t["canary"]["percent"] == 25)
        .await;
    let view = f.fleet.gateways[1].admin_json("/tenants/acme").await;
    assert_eq!(view["promotion"]["state"], "running", "{view:#}");
    assert_eq!(view["promotion"]["instance"], "gw-1");

    // The instance running it dies in the middle of its pause.
    let dead = f.fleet.gateways.remove(0);
    dead.signal("KILL");
    drop(dead);
    let survivor = &f.fleet.gateways[0];
    wait_tenant(
        survivor,
        "acme",
        "showed the promotion without a runner",
        &|t| t["promotion"]["state"] == "paused" || t["promotion"]["instance"] != "gw-1",
    )
    .await;
    // The lock expires with the dead instance's lease; another instance takes the promotion on
    // from the step the store records, and finishes it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = survivor.admin_json("/tenants/acme").await;
        if t["pool"] == "acme-dedicated" {
            assert_eq!(t["promotion"]["state"], "completed", "{t:#}");
            assert_ne!(t["promotion"]["instance"], "gw-1");
            break;
        }
        assert!(Instant::now() < deadline, "never completed: {t:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for gw in &f.fleet.gateways {
        wait_routed(gw, "acme.yourapp.test", "dedicated").await;
    }
    let (ok, out, err) = f.fleet.cli(&["audit", "--tenant", "acme", "--json"]).await;
    assert!(ok.success(), "{err}");
    let entries: Vec<Value> = serde_json::from_str(&out).expect("audit");
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "tenant.promotion_resumed"),
        "{entries:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_made_through_one_instance_work_on_every_instance() {
    let f = fixture(2).await;
    let fleet = &f.fleet;
    let admin = format!("http://{}", fleet.gateways[0].admin);
    let out = support::tenantgate(&["key", "create", "acme", "--admin", &admin, "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("key JSON");
    let key = created["key"].as_str().expect("key").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    fleet
        .wait_tenant("acme", "got its key", |t| {
            t["api_keys"].as_array().is_some_and(|k| k.len() == 1)
        })
        .await;
    let stored = fleet
        .etcd
        .get(&format!("{}/tenants/acme", fleet.prefix))
        .await
        .expect("acme");
    assert!(!stored.contains(&key), "only the key's hash is stored");
    let out = support::tenantgate(&["key", "revoke", "acme", &id, "--admin", &admin]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fleet
        .wait_tenant("acme", "had its key revoked", |t| {
            t["api_keys"][0]["state"] == "revoked"
        })
        .await;
}
