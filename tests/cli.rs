//! The `tenantgate` binary as operators use it: `check` on good and bad files, and `run` refusing to
//! start on a config or address it cannot use.

mod support;

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::BIN;

fn tenantgate(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run tenantgate")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The shipped config, copied with the folder layout it expects (`config/`, `../certs/`) into a
/// temp folder, with the development certificates `certs dev` makes for it.
fn shipped_config_with_dev_certificates() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("config")).expect("mkdir");
    let config = dir.path().join("config/gateway.toml");
    std::fs::copy("config/gateway.toml", &config).expect("copy the shipped config");
    let config = config.display().to_string();
    let out = tenantgate(&["certs", "dev", "--config", &config]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("made development CA"), "{stdout}");
    assert!(
        stdout.contains("wildcard.yourapp.test.pem for *.yourapp.test, yourapp.test"),
        "{stdout}"
    );
    assert!(
        stdout.contains("acme.pem for acme.yourapp.test, api-acme-corp.factory.test"),
        "{stdout}"
    );
    let again = text(&tenantgate(&["certs", "dev", "--config", &config]).stdout);
    assert!(again.contains("exists already"), "{again}");
    (dir, config)
}

#[test]
fn the_shipped_config_is_valid_and_summarised() {
    let (_dir, config) = shipped_config_with_dev_certificates();
    let out = tenantgate(&["check", "--config", &config]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.starts_with(&format!("{config}: valid\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "../certs/acme.pem (tenant acme): acme.yourapp.test, api-acme-corp.factory.test"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("tenants  3 (2 active, 1 suspended)"),
        "{stdout}"
    );
    assert!(stdout.contains("on shared: 3 (1 suspended)"), "{stdout}");
    assert!(
        stdout.contains("shared          2 upstreams  round_robin  GET /healthz every 1000 ms"),
        "{stdout}"
    );
    assert!(
        stdout.contains("admin.yourapp.test -> pool admin"),
        "{stdout}"
    );
    assert!(
        stdout.lines().count() <= 24,
        "more than one screen:\n{stdout}"
    );
}

#[test]
fn check_lists_every_error_with_file_line_column_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[gateway]
http_listen = "0.0.0.0:80800"
base_domains = ["yourapp.test"]

[pools.shared]
upstreams = ["127.0.0.1:9001"]
retry = 3

[pools.empty]
upstreams = []

[tenants.acme]
pool = "shard"
domains = ["acme.example"]

[tenants.Globex]
pool = "shared"
domains = ["acme.example"]
"#,
    )
    .expect("write");
    let out = tenantgate(&["check", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    let p = path.display();
    for expected in [
        format!("error: {p}:7:1: pools.shared.retry: unknown key"),
        format!("error: {p}:2:15: gateway.http_listen: bad address \"0.0.0.0:80800\""),
        format!("error: {p}:10:13: pools.empty.upstreams: empty pool"),
        format!("error: {p}:13:8: tenants.acme.pool: unknown pool \"shard\" (pools are: empty, shared)"),
        format!("error: {p}:16:10: tenants.Globex: invalid tenant id \"Globex\""),
        format!("error: {p}:18:12: tenants.Globex.domains[0]: host \"acme.example\" is already claimed by tenant \"acme\""),
        format!("{p}: 6 errors; the file is not valid"),
    ] {
        assert!(stderr.contains(&expected), "missing `{expected}` in:\n{stderr}");
    }
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = tenantgate(&["check", "--config", "/nonexistent/gateway.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read config file /nonexistent/gateway.toml"));
}

#[test]
fn run_refuses_an_invalid_config_without_starting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, "[tenants.acme]\npool = \"nowhere\"\n").expect("write");
    let out = tenantgate(&["run", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("tenants.acme.pool: unknown pool \"nowhere\" (no pools are defined)"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was loaded"), "{stderr}");
}

#[test]
fn run_fails_fast_and_names_the_setting_when_its_port_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nhttp_listen = \"{addr}\"\n[admin]\nlisten = \"{}\"\n",
            support::free_addr()
        ),
    )
    .expect("write");
    let started = Instant::now();
    let out = tenantgate(&["run", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    // Pingora alone would retry for 30 s and then panic.
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (gateway.http_listen)")),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(tenantgate(&["frobnicate"]).status.code(), Some(2));
}
