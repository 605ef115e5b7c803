//! The operators' CLI against real gateways: saved contexts, tenant commands, and moving a tenant
//! from one gateway (prod) to another (dev) with `tenants pull` and `tenants push`.

mod support;

use std::os::unix::fs::PermissionsExt;

use support::cli::Operator;
use support::{send, Gateway, Upstream, ADMIN_TOKEN};

const HEAD: &str = r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]

[admin]
listen = "{admin}"
token_env = "TENANTGATE_TEST_ADMIN_TOKEN"
"#;

const PROD: &str = r#"
[pools.shared]
upstreams = ["{shared}"]

[pools.acme-dedicated]
upstreams = ["{dedicated}"]   # acme's own backends

[plans.free]
rate_limit = { requests_per_second = 1000 }

[tenants.acme]
name = "Acme"
pool = "acme-dedicated"
previous_pool = "shared"
plan = "free"
domains = ["shop.acme.test"]

[[tenants.acme.api_keys]]
id = "k1"
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
created = "2026-01-01T00:00:00Z"

[tenants.initech]
pool = "shared"
"#;

const DEV: &str = r#"
# dev: one shared pool.
[pools.shared]
upstreams = ["{shared}"]

[tenants.globex]
pool = "shared"
"#;

struct Fleet {
    shared: Upstream,
    dedicated: Upstream,
    prod: Gateway,
    dev: Gateway,
    ops: Operator,
}

async fn fleet() -> Fleet {
    let shared = Upstream::start("shared").await;
    let dedicated = Upstream::start("dedicated").await;
    let prod = Gateway::start(&format!("{HEAD}{PROD}"), &[&shared, &dedicated]).await;
    let dev = Gateway::start(&format!("{HEAD}{DEV}"), &[&shared, &dedicated]).await;
    let ops = Operator::new();
    ops.add_context("prod", &prod).await.expect_code(0);
    ops.add_context("dev", &dev).await.expect_code(0);
    Fleet {
        shared,
        dedicated,
        prod,
        dev,
        ops,
    }
}

/// The upstream that answered a request for `host`, or the error code.
async fn routed(gw: &Gateway, host: &str) -> String {
    let reply = send(gw.get(host, "/")).await;
    match reply.status {
        200 => reply.body["upstream"].as_str().unwrap_or("?").to_owned(),
        status => format!("{status} {}", reply.body["error"].as_str().unwrap_or("?")),
    }
}

/// `tenants push FILE --context dev`, with `extra` arguments.
async fn push_to_dev(ops: &Operator, file: &str, extra: &[&str]) -> support::cli::Run {
    let mut args = vec!["tenants", "push", file, "--context", "dev"];
    args.extend_from_slice(extra);
    ops.run(&args).await
}

/// `tenants pull acme` from prod into `file`.
async fn pull(ops: &Operator, file: &std::path::Path, with_keys: bool) -> support::cli::Run {
    let mut args = vec!["tenants", "pull", "acme", "--context", "prod"];
    if with_keys {
        args.push("--with-keys");
    }
    let out = ops.run(&args).await.expect_code(0);
    std::fs::write(file, &out.stdout).expect("write the tenant file");
    out
}

async fn generation(gw: &Gateway) -> u64 {
    gw.admin_json("/status").await["generation"]
        .as_u64()
        .expect("generation")
}

#[tokio::test]
async fn contexts_are_private_their_tokens_sealed_and_checked_before_saving() {
    let f = fleet().await;
    let ops = &f.ops;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&ops.contexts_file()), 0o600);
    assert_eq!(mode(&ops.key_file()), 0o600);
    let text = std::fs::read_to_string(ops.contexts_file()).expect("contexts file");
    assert!(!text.contains(ADMIN_TOKEN), "a plain token in {text}");
    assert!(text.contains("sealed:v1:"), "{text}");

    // Listed without tokens; nothing is current until the operator says so.
    let list = ops.run(&["context", "list", "--json"]).await.expect_code(0);
    assert!(!list.stdout.contains(ADMIN_TOKEN));
    let list = list.json();
    assert_eq!(list["current"], serde_json::Value::Null);
    assert_eq!(list["contexts"][0]["name"], "dev");
    assert_eq!(list["contexts"][1]["name"], "prod");
    assert_eq!(list["contexts"][1]["token"], "sealed");
    let table = ops.run(&["context", "list"]).await.expect_code(0).stdout;
    assert!(
        table.contains(&format!("http://{}", f.prod.admin)),
        "{table}"
    );

    // A wrong token and an unreachable gateway are refused, and nothing is saved.
    let url = format!("http://{}", f.dev.admin);
    let wrong = ops
        .run_with(
            &["context", "add", "wrong", "--admin-url", &url],
            Some("not-the-token-0123456789\n"),
            &[],
        )
        .await
        .expect_code(5);
    assert!(wrong.stderr.contains("refused the token"), "{wrong:?}");
    let closed = format!("http://{}", support::free_addr());
    let gone = ops
        .run_with(
            &["context", "add", "gone", "--admin-url", &closed],
            Some(&format!("{ADMIN_TOKEN}\n")),
            &[],
        )
        .await
        .expect_code(1);
    assert!(gone.stderr.contains("cannot reach"), "{gone:?}");
    let names = ops.run(&["context", "list", "--json"]).await.json()["contexts"]
        .as_array()
        .map(|l| l.len());
    assert_eq!(names, Some(2));
    // An existing name is not replaced by accident.
    ops.add_context("dev", &f.dev).await.expect_code(1);

    // A token kept in an environment variable: only the variable's name is saved.
    let by_env = ops
        .run_with(
            &[
                "context",
                "add",
                "ci",
                "--admin-url",
                &url,
                "--token-env",
                "CI_TOKEN",
            ],
            None,
            &[("CI_TOKEN", ADMIN_TOKEN)],
        )
        .await
        .expect_code(0);
    assert!(by_env.stdout.contains("$CI_TOKEN"), "{by_env:?}");
    let text = std::fs::read_to_string(ops.contexts_file()).expect("contexts file");
    assert!(text.contains("token_env = \"CI_TOKEN\""), "{text}");
    let listed = ops
        .run_with(
            &["tenants", "list", "--context", "ci", "--json"],
            None,
            &[("CI_TOKEN", ADMIN_TOKEN)],
        )
        .await
        .expect_code(0)
        .json();
    assert_eq!(listed["tenants"][0]["id"], "globex");
    ops.run(&["tenants", "list", "--context", "ci"])
        .await
        .expect_code(1);

    // use, last used, remove.
    ops.run(&["context", "use", "prod"]).await.expect_code(0);
    let list = ops.run(&["tenants", "list"]).await.expect_code(0).stdout;
    assert!(
        list.contains("acme") && list.contains("initech"),
        "the current context: {list}"
    );
    let contexts = ops.run(&["context", "list", "--json"]).await.json();
    assert_eq!(contexts["current"], "prod");
    let prod = &contexts["contexts"][2];
    assert_eq!(prod["name"], "prod");
    assert!(prod["last_used"].as_str().is_some(), "{contexts}");
    ops.run(&["context", "remove", "prod"]).await.expect_code(0);
    let contexts = ops.run(&["context", "list", "--json"]).await.json();
    assert_eq!(contexts["current"], serde_json::Value::Null);
    assert_eq!(contexts["contexts"].as_array().map(Vec::len), Some(2));
    ops.run(&["context", "use", "prod"]).await.expect_code(1);
}

#[tokio::test]
async fn a_tenant_pulled_from_prod_is_pushed_to_dev_under_each_conflict_policy() {
    let f = fleet().await;
    let ops = &f.ops;
    let file = ops.path("acme.toml");
    let file_arg = file.to_str().expect("utf-8");
    let pulled = pull(ops, &file, false).await;
    assert!(pulled.stdout.contains("[tenants.acme]"), "{pulled:?}");
    assert!(pulled.stdout.contains("[pools.acme-dedicated]"));
    assert!(
        !pulled.stdout.contains("sha256"),
        "keys only with --with-keys"
    );
    assert!(pulled.stderr.contains("pulled tenant acme"));
    assert_eq!(
        routed(&f.dev, "acme.yourapp.test").await,
        "404 unknown_tenant"
    );

    // A dry run prints the plan and changes nothing.
    let before = (f.dev.read_config(), generation(&f.dev).await);
    let dry = push_to_dev(ops, file_arg, &["--dry-run"])
        .await
        .expect_code(0);
    assert!(dry.stdout.contains("+ create tenant acme"), "{dry:?}");
    assert!(
        dry.stdout.contains("+ create pool acme-dedicated"),
        "{dry:?}"
    );
    assert!(dry.stdout.contains("+ create plan free"), "{dry:?}");
    assert!(
        dry.stdout.contains("dry run: nothing was changed"),
        "{dry:?}"
    );
    assert_eq!((f.dev.read_config(), generation(&f.dev).await), before);

    // Pushed for real: persisted, audited, routed at once.
    let pushed = push_to_dev(ops, file_arg, &[]).await.expect_code(0);
    assert!(
        pushed.stdout.contains("applied: generation 2"),
        "{pushed:?}"
    );
    assert_eq!(routed(&f.dev, "acme.yourapp.test").await, "dedicated");
    assert_eq!(routed(&f.dev, "shop.acme.test").await, "dedicated");
    let written = f.dev.read_config();
    assert!(
        written.contains("# dev: one shared pool."),
        "the operator's text is kept"
    );
    assert!(written.contains("# acme's own backends"), "{written}");
    assert!(!written.contains("sha256"), "{written}");
    let audit = std::fs::read_to_string(f.dev.config_path.with_file_name("gateway.audit.jsonl"))
        .expect("audit log");
    assert!(
        audit.contains("cli:operator") && audit.contains("\"tenant\":\"acme\""),
        "{audit}"
    );
    // Pushing it again changes nothing.
    let again = push_to_dev(ops, file_arg, &[]).await.expect_code(0);
    assert!(again.stdout.contains("nothing to push"), "{again:?}");

    // Prod changes acme (suspends it); the pulled file now conflicts with dev's acme.
    ops.run(&["tenants", "suspend", "acme", "--context", "prod"])
        .await
        .expect_code(0);
    pull(ops, &file, true).await;
    // With keys, into a file of its own: readable by its owner only.
    let private = ops.path("acme-with-keys.toml");
    let private_arg = private.to_str().expect("utf-8");
    ops.run(&[
        "tenants",
        "pull",
        "acme",
        "--context",
        "prod",
        "--with-keys",
        "--output",
        private_arg,
    ])
    .await
    .expect_code(0);
    let mode = std::fs::metadata(&private)
        .expect("pulled file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(std::fs::read_to_string(&private)
        .expect("read")
        .contains("sha256"));
    let before = (f.dev.read_config(), generation(&f.dev).await);
    let fail = push_to_dev(ops, file_arg, &["--json"]).await.expect_code(3);
    assert_eq!(fail.json()["conflicts"], 1, "{fail:?}");
    let fail = push_to_dev(ops, file_arg, &[]).await.expect_code(3);
    assert!(
        fail.stdout
            .contains("! conflict tenant acme exists with other contents (status)"),
        "{fail:?}"
    );
    assert!(fail.stderr.contains("nothing pushed"), "{fail:?}");
    let skip = push_to_dev(ops, file_arg, &["--on-conflict", "skip"])
        .await
        .expect_code(0);
    assert!(skip.stdout.contains("- skip tenant acme"), "{skip:?}");
    assert_eq!((f.dev.read_config(), generation(&f.dev).await), before);
    assert_eq!(routed(&f.dev, "acme.yourapp.test").await, "dedicated");

    let overwrite = push_to_dev(
        ops,
        file_arg,
        &["--on-conflict", "overwrite", "--with-keys"],
    )
    .await
    .expect_code(0);
    assert!(
        overwrite.stdout.contains("~ overwrite tenant acme"),
        "{overwrite:?}"
    );
    assert_eq!(
        routed(&f.dev, "acme.yourapp.test").await,
        "403 tenant_suspended"
    );
    let acme = f.dev.admin_json("/tenants/acme").await;
    assert_eq!(acme["status"], "suspended");
    assert_eq!(
        acme["api_keys"][0]["id"], "k1",
        "carried with --with-keys: {acme}"
    );

    let rename = ops
        .run(&["tenants", "activate", "acme", "--context", "dev"])
        .await;
    rename.expect_code(0);
    let rename = push_to_dev(ops, file_arg, &["--on-conflict", "rename"])
        .await
        .expect_code(0);
    assert!(
        rename
            .stdout
            .contains("create tenant acme-2 (renamed from acme)"),
        "{rename:?}"
    );
    assert!(
        rename.stdout.contains("shop.acme.test"),
        "the domain left out is named: {rename:?}"
    );
    assert_eq!(
        routed(&f.dev, "acme-2.yourapp.test").await,
        "403 tenant_suspended"
    );
    assert_eq!(routed(&f.dev, "acme.yourapp.test").await, "dedicated");
    assert_eq!(
        routed(&f.dev, "shop.acme.test").await,
        "dedicated",
        "still the original's"
    );
    let _ = (&f.shared, &f.dedicated);
}

#[tokio::test]
async fn a_push_with_a_wrong_token_or_no_destination_changes_nothing() {
    let f = fleet().await;
    let ops = &f.ops;
    let file = ops.path("acme.toml");
    let out = ops
        .run(&["tenants", "pull", "acme", "--context", "prod"])
        .await
        .expect_code(0);
    std::fs::write(&file, out.stdout).expect("write");
    let file_arg = file.to_str().expect("utf-8");
    let before = (f.dev.read_config(), generation(&f.dev).await);

    // No --context and no current context: refused before anything is sent.
    let nowhere = ops.run(&["tenants", "push", file_arg]).await.expect_code(1);
    assert!(nowhere.stderr.contains("no destination"), "{nowhere:?}");

    // A context whose token is wrong.
    let url = format!("http://{}", f.dev.admin);
    ops.run_with(
        &[
            "context",
            "add",
            "dev-env",
            "--admin-url",
            &url,
            "--token-env",
            "DEV_TOKEN",
        ],
        None,
        &[("DEV_TOKEN", ADMIN_TOKEN)],
    )
    .await
    .expect_code(0);
    let wrong = ops
        .run_with(
            &["tenants", "push", file_arg, "--context", "dev-env"],
            None,
            &[("DEV_TOKEN", "a-wrong-token-0123456789")],
        )
        .await
        .expect_code(5);
    assert!(wrong.stderr.contains("refused the token"), "{wrong:?}");
    assert!(
        !wrong.stderr.contains("a-wrong-token"),
        "tokens are never printed"
    );
    assert_eq!((f.dev.read_config(), generation(&f.dev).await), before);
    assert_eq!(
        routed(&f.dev, "acme.yourapp.test").await,
        "404 unknown_tenant"
    );
}

#[tokio::test]
async fn show_list_and_check_report_a_tenant_and_the_health_of_its_pools() {
    let mut f = fleet().await;
    let ops = &f.ops;
    for _ in 0..20 {
        assert_eq!(routed(&f.prod, "acme.yourapp.test").await, "dedicated");
    }
    ops.run(&["context", "use", "prod"]).await.expect_code(0);
    ops.run(&["tenants", "suspend", "initech"])
        .await
        .expect_code(0);

    let list = ops
        .run(&["tenants", "list", "--status", "suspended", "--json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(list["total"], 1);
    assert_eq!(list["tenants"][0]["id"], "initech");
    ops.run(&["tenants", "list", "--status", "sleeping"])
        .await
        .expect_code(2);

    // The rate is sampled once a second: wait for the samples that hold the requests above.
    let deadline = std::time::Instant::now() + support::WAIT;
    let show = loop {
        let show = ops
            .run(&["tenants", "show", "acme", "--json"])
            .await
            .expect_code(0)
            .json();
        if show["traffic"]["requests_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
        {
            break show;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no request rate: {show}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(show["plan"], "free");
    assert_eq!(show["limits"]["rate_limit"]["requests_per_second"], 1000.0);
    assert_eq!(show["api_keys"][0]["id"], "k1");
    assert_eq!(show["api_keys"][0]["state"], "valid");
    assert!(
        !show.to_string().contains("9f86d081"),
        "no key hash is shown"
    );
    let text = ops
        .run(&["tenants", "show", "initech"])
        .await
        .expect_code(0)
        .stdout;
    let recent = text
        .split_once("recent changes")
        .map(|(_, after)| after)
        .unwrap_or_else(|| panic!("no recent changes: {text}"));
    assert!(
        recent.contains("tenant.suspended  applied  by admin-api"),
        "{text}"
    );
    assert!(recent.contains("(cli:operator)"), "{text}");

    let check = ops.run(&["tenants", "check"]).await.expect_code(0);
    assert!(check.stdout.contains("acme-dedicated 1/1"), "{check:?}");
    let one = ops
        .run(&["tenants", "check", "acme", "--json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(one["tenants"][0]["healthy"], true);
    assert_eq!(one["tenants"][0]["pools"][1]["role"], "rollback");

    // acme's own backend goes away: acme is down, initech (on shared) is not.
    f.dedicated.kill().await;
    let check = ops.run(&["tenants", "check"]).await.expect_code(4);
    assert!(check.stdout.contains("DOWN"), "{check:?}");
    let report = ops
        .run(&["tenants", "check", "--json"])
        .await
        .expect_code(4)
        .json();
    assert_eq!(report["unhealthy"], 1);
    let acme = report["tenants"]
        .as_array()
        .and_then(|l| l.iter().find(|t| t["tenant"] == "acme"))
        .expect("acme");
    assert_eq!(acme["healthy"], false);
    assert_eq!(acme["pools"][0]["reachable"], 0);
    assert!(
        acme["pools"][0]["details"][0]["error"].as_str().is_some(),
        "{acme}"
    );
    let _ = &f.shared;
}
