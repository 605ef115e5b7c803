//! Hot reload: the routing table changes while traffic flows, from a file edit, SIGHUP or the admin
//! API, and not one request fails; an invalid file changes nothing.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::load::{failures, Load};
use support::{send, Gateway, Upstream, WAIT};

/// Placeholders beyond the ports: `{access_log}`, `{extra}` (more tenants), `{acme_pool}`.
const TEMPLATE: &str = r#"
# tenantgate under test: comments must survive the API's edits.
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]
threads = 2
access_log = {access_log}

[admin]
listen = "{admin}"
watch_config = {watch}

[pools.shared]
upstreams = ["{shared1}", "{shared2}"]
health_check = { path = "/healthz", interval_ms = 200 }

[pools.acme-dedicated]
upstreams = ["{dedicated}"]
health_check = { path = "/healthz", interval_ms = 200 }

[tenants.acme]
pool = "{acme_pool}"   # the tenant under test

[tenants.globex]
pool = "shared"
{extra}
"#;

struct Fixture {
    gw: Gateway,
    shared1: Upstream,
    shared2: Upstream,
    dedicated: Upstream,
}

fn config(gw_or_template: &str, access_log: bool, extra: &str, acme_pool: &str) -> String {
    gw_or_template
        .replace("{access_log}", &access_log.to_string())
        .replace("{watch}", "true")
        .replace("{extra}", extra)
        .replace("{acme_pool}", acme_pool)
}

async fn fixture() -> Fixture {
    fixture_with(TEMPLATE).await
}

/// A gateway that does not watch its file: only SIGHUP and the API reload it, so a test of those
/// cannot pass by the watcher's doing.
async fn unwatched_fixture() -> Fixture {
    fixture_with(&unwatched(TEMPLATE)).await
}

fn unwatched(template: &str) -> String {
    template.replace("{watch}", "false")
}

async fn fixture_with(template: &str) -> Fixture {
    let shared1 = Upstream::start("shared1").await;
    let shared2 = Upstream::start("shared2").await;
    let dedicated = Upstream::start("dedicated").await;
    let gw = Gateway::start(
        &config(template, false, "", "shared"),
        &[&shared1, &shared2, &dedicated],
    )
    .await;
    Fixture {
        gw,
        shared1,
        shared2,
        dedicated,
    }
}

impl Fixture {
    fn write(&self, access_log: bool, extra: &str, acme_pool: &str) {
        self.gw.write_config(
            &self
                .gw
                .render(&config(TEMPLATE, access_log, extra, acme_pool)),
        );
    }
}

#[tokio::test]
async fn fifty_reloads_under_load_fail_no_request() {
    let f = fixture().await;
    let gw = &f.gw;
    let load = Load::start(gw, &["acme.yourapp.test", "globex.yourapp.test"], 4);
    load.wait_for(50).await;
    let mut generation = 1;
    let mut invalid = 0;
    for round in 0..50 {
        let extra = format!("[tenants.t{round}]\npool = \"shared\"\n");
        match round % 10 {
            // An invalid file: refused whole, the running table untouched.
            3 | 7 => {
                gw.write_config(&gw.render(&config(
                    TEMPLATE,
                    false,
                    "[tenants.broken]\npool = \"nowhere\"\n",
                    "shared",
                )));
                let (status, body) = gw.admin_post("/reload", None).await;
                assert_eq!(
                    (status, body["error"].as_str()),
                    (422, Some("invalid_config")),
                    "{body}"
                );
                assert!(
                    body["errors"][0].as_str().is_some_and(
                        |e| e.contains("tenants.broken.pool: unknown pool \"nowhere\"")
                    ),
                    "{body}"
                );
                invalid += 1;
            }
            // A new listen address cannot be swapped in.
            5 => {
                let moved = gw
                    .render(&config(TEMPLATE, false, "", "shared"))
                    .replace(&gw.http.to_string(), "127.0.0.1:1");
                gw.write_config(&moved);
                let (status, body) = gw.admin_post("/reload", None).await;
                assert_eq!(
                    (status, body["error"].as_str()),
                    (409, Some("needs_restart")),
                    "{body}"
                );
                assert_eq!(body["changes"][0]["action"], "setting.changed");
            }
            // Promote acme to its dedicated pool through the API, then roll back.
            9 if round == 19 => {
                f.write(false, "", "shared");
                let (status, _) = gw.admin_post("/reload", None).await;
                assert_eq!(status, 200);
                let (status, body) = gw
                    .admin_post(
                        "/tenants/acme/promote",
                        Some(json!({ "pool": "acme-dedicated" })),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
                generation = body["generation"].as_u64().expect("generation");
                // After the cutover: acme reaches the dedicated upstream, globex never does.
                load.wait_for_more(40).await;
                let before = f.dedicated.hits();
                for _ in 0..10 {
                    let r = send(gw.get("acme.yourapp.test", "/")).await;
                    assert_eq!(r.body["upstream"], "dedicated");
                    let r = send(gw.get("globex.yourapp.test", "/")).await;
                    assert_ne!(r.body["upstream"], "dedicated");
                }
                assert!(f.dedicated.hits() >= before + 10);
                let (status, body) = gw.admin_post("/tenants/acme/rollback", None).await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["tenant"]["pool"], "shared");
                continue;
            }
            // A plain change: a tenant added, access logging switched, by file (and the API call).
            _ => {
                f.write(round % 2 == 0, &extra, "shared");
                let (status, body) = gw.admin_post("/reload", None).await;
                assert_eq!(status, 200, "{body}");
            }
        }
        let status = gw.admin_json("/status").await;
        let now = status["generation"].as_u64().expect("generation");
        assert!(
            now >= generation,
            "generation went back from {generation} to {now}"
        );
        generation = now;
        load.wait_for_more(10).await;
    }
    let samples = load.stop().await;
    let failed = failures(&samples);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        samples.len() > 500,
        "only {} requests under load",
        samples.len()
    );
    assert_eq!(invalid, 10);
    // globex was never moved: every one of its requests went to the shared pool.
    assert!(samples
        .iter()
        .filter(|s| s.host.starts_with("globex"))
        .all(|s| s.upstream.starts_with("shared")));
    assert!(f.shared1.hits() > 0 && f.shared2.hits() > 0);

    // Counted once per attempt; the watcher may also have tried a file before the API call did.
    let metrics = gw.admin_text("/metrics").await;
    let count = |result: &str| -> u64 {
        let series = format!("tenantgate_reloads_total{{result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!((10..=20).contains(&count("invalid_config")), "{metrics}");
    assert!((5..=10).contains(&count("needs_restart")), "{metrics}");
    assert!(count("applied") >= 30, "{metrics}");
}

#[tokio::test]
async fn an_invalid_file_leaves_the_old_routing_working_and_says_why() {
    let f = fixture().await;
    let gw = &f.gw;
    gw.write_config(&gw.render(&config(TEMPLATE, false, "", "missing-pool")));
    let (status, body) = gw.admin_post("/reload", None).await;
    assert_eq!(status, 422);
    let error = body["errors"][0].as_str().expect("an error line");
    let path = gw.config_path.display().to_string();
    assert!(error.starts_with(&format!("{path}:")), "{error}");
    assert!(
        error.contains(": tenants.acme.pool: unknown pool \"missing-pool\""),
        "{error}"
    );

    let r = send(gw.get("acme.yourapp.test", "/")).await;
    assert_eq!(r.status, 200);
    assert!(r.body["upstream"]
        .as_str()
        .is_some_and(|u| u.starts_with("shared")));

    let status = gw.admin_json("/status").await;
    assert_eq!(status["generation"], 1);
    assert_eq!(status["last_change"]["result"], "refused");
    assert_eq!(status["last_change"]["errors"][0], error);

    // An API change on top of an unloaded (here invalid) file is refused: it would apply the
    // operator's half-done edit behind their back.
    let (status, body) = gw.admin_post("/tenants/globex/suspend", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("config_diverged")),
        "{body}"
    );
}

/// Polls until `host` is served by an upstream whose name starts with `upstream` (bounded).
async fn wait_routed(gw: &Gateway, host: &str, upstream: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = send(gw.get(host, "/")).await;
        if r.status == 200
            && r.body["upstream"]
                .as_str()
                .is_some_and(|u| u.starts_with(upstream))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host} never reached {upstream}: {r:?}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_file_saved_by_renaming_a_temporary_file_is_picked_up() {
    let f = fixture().await;
    let gw = &f.gw;
    // What vim and most IDEs do: write a new file beside the old one, rename it over.
    let temp = gw.config_path.with_file_name(".gateway.toml.swp");
    std::fs::write(
        &temp,
        gw.render(&config(TEMPLATE, false, "", "acme-dedicated")),
    )
    .expect("write");
    std::fs::rename(&temp, &gw.config_path).expect("rename");
    wait_routed(gw, "acme.yourapp.test", "dedicated").await;
    // And again, to show the watch survived the inode change.
    std::fs::write(&temp, gw.render(&config(TEMPLATE, false, "", "shared"))).expect("write");
    std::fs::rename(&temp, &gw.config_path).expect("rename");
    wait_routed(gw, "acme.yourapp.test", "shared").await;
    let status = gw.admin_json("/status").await;
    assert_eq!(status["last_change"]["actor"], "file-watch");
}

#[tokio::test]
async fn sighup_reloads_the_file() {
    let f = unwatched_fixture().await;
    let gw = &f.gw;
    gw.write_config(&gw.render(&config(&unwatched(TEMPLATE), false, "", "acme-dedicated")));
    // Not watched: nothing changes until the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = send(gw.get("acme.yourapp.test", "/")).await;
    assert!(
        r.body["upstream"]
            .as_str()
            .is_some_and(|u| u.starts_with("shared")),
        "{r:?}"
    );
    gw.signal("HUP");
    wait_routed(gw, "acme.yourapp.test", "dedicated").await;
    let r = send(gw.get("acme.yourapp.test", "/")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn the_cli_reloads_and_plans_against_the_running_gateway() {
    let f = unwatched_fixture().await;
    let gw = &f.gw;
    let config_arg = gw.config_path.to_str().expect("utf-8");
    let run = support::tenantgate;

    let out = run(&["plan", "--config", config_arg]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no changes against the running gateway"));

    // A new file, beside the running one: plan says what would change, against the gateway or a file.
    let next = gw.config_path.with_file_name("next.toml");
    let text = gw.render(&config(
        &unwatched(TEMPLATE),
        true,
        "[tenants.hooli]\npool = \"acme-dedicated\"\n",
        "acme-dedicated",
    ));
    std::fs::write(&next, &text).expect("write");
    let next_arg = next.to_str().expect("utf-8");
    let out = run(&["plan", "--config", next_arg]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "~ gateway.access_log: false -> true",
        "~ tenant acme: pool shared -> acme-dedicated",
        "+ tenant hooli (pool acme-dedicated)",
        "3 changes; a reload would apply them",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    let out = run(&["plan", "--config", next_arg, "--against", config_arg]).await;
    assert_eq!(out.status.code(), Some(2));
    std::fs::write(&next, "[tenants.x]\npool = 1\n").expect("write");
    assert_eq!(
        run(&["plan", "--config", next_arg]).await.status.code(),
        Some(1)
    );

    // `tenantgate reload` applies the file the gateway runs (which it does not watch).
    std::fs::write(&gw.config_path, &text).expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(send(gw.get("hooli.yourapp.test", "/")).await.status, 404);
    let out = run(&["reload", "--config", config_arg]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("applied:"), "{stdout}");
    let r = send(gw.get("hooli.yourapp.test", "/")).await;
    assert_eq!(r.body["upstream"], "dedicated");
}

#[tokio::test]
async fn a_pool_whose_health_check_is_removed_gets_its_unhealthy_upstreams_back() {
    let f = fixture().await;
    let gw = &f.gw;
    f.shared1.set_healthy(false);
    gw.wait_upstream_health(f.shared1.addr, false).await;
    // The operator drops the flapping check: no probe would ever mark shared1 healthy again, so
    // the reload must not carry its verdict over.
    let unchecked = config(TEMPLATE, false, "", "shared").replacen(
        "health_check = { path = \"/healthz\", interval_ms = 200 }\n",
        "",
        1,
    );
    gw.write_config(&gw.render(&unchecked));
    let (status, body) = gw.admin_post("/reload", None).await;
    assert_eq!(status, 200, "{body}");
    gw.wait_upstream_health(f.shared1.addr, true).await;
    let served: Vec<String> = {
        let mut all = Vec::new();
        for _ in 0..6 {
            all.push(send(gw.get("globex.yourapp.test", "/")).await.body["upstream"].to_string());
        }
        all
    };
    assert!(served.iter().any(|u| u.contains("shared1")), "{served:?}");
}

#[tokio::test]
async fn the_watcher_refuses_a_broken_file_once_not_on_every_save() {
    let f = fixture().await;
    let gw = &f.gw;
    let broken = gw.render(&config(TEMPLATE, false, "", "no-such-pool"));
    gw.write_config(&broken);
    let deadline = Instant::now() + WAIT;
    while gw.admin_json("/status").await["last_change"]["result"] != "refused" {
        assert!(
            Instant::now() < deadline,
            "the watcher never looked:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same broken text saved again (editors save repeatedly): no new refusal.
    for _ in 0..3 {
        gw.write_config(&broken);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let audit_path = gw.config_path.with_file_name("gateway.audit.jsonl");
    let refusals = || {
        std::fs::read_to_string(&audit_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"action\":\"reload\"") && l.contains("\"result\":\"refused\""))
            .count()
    };
    assert_eq!(refusals(), 1);
    // An operator who asks still gets the answer, and it is recorded.
    let (status, _) = gw.admin_post("/reload", None).await;
    assert_eq!(status, 422);
    assert_eq!(refusals(), 2);
}
