//! Tenant identity from tokens and API keys, over real requests to the real gateway: JWT checks,
//! tenant sources, switching, route rules, API keys made by the CLI, JWKS rotation, and identity
//! headers the client cannot forge.

mod support;

use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use support::tokens::{self, claims, hs256, rs256, sign};
use support::{send, tenantgate, Gateway, Reply, Upstream};

const CONFIG: &str = r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]
api_key_header = "X-API-Key"

[admin]
listen = "{admin}"

[jwt]
issuer = "https://auth.yourapp.test"
audience = "yourapp"
tenants_claim = "tenants"

[[jwt.keys]]
kid = "hs"
alg = "HS256"
secret = "test-secret-0123456789abcdef0123456789"

[[jwt.keys]]
kid = "rs"
alg = "RS256"
public_key = '''{rsa_public}'''

[[jwt.keys]]
kid = "es"
alg = "ES256"
public_key = '''{es_public}'''

[[jwt.keys]]
kid = "ed"
alg = "EdDSA"
public_key = '''{ed_public}'''

[[route_rules]]
path_prefix = "/admin"
roles = ["admin"]

[pools.shared]
upstreams = ["{shared}"]

[pools.globex-pool]
upstreams = ["{globex}"]

[tenants.acme]
pool = "shared"

[tenants.globex]
pool = "globex-pool"

[tenants.initech]
pool = "shared"
tenant_source = "host_and_claim"

[tenants.umbrella]
pool = "shared"
status = "suspended"

[hosts."api.yourapp.test"]
tenant_source = "claim"
"#;

struct Fixture {
    gw: Gateway,
    es: EncodingKey,
    ed: EncodingKey,
    _shared: Upstream,
    _globex: Upstream,
}

async fn start() -> Fixture {
    start_with(CONFIG).await
}

async fn start_with(config: &str) -> Fixture {
    let shared = Upstream::start("shared").await;
    let globex = Upstream::start("globex").await;
    let (es, ed) = (tokens::es256(), tokens::ed25519());
    let gw = Gateway::start_with(
        config,
        &[
            ("shared", shared.addr.to_string()),
            ("globex", globex.addr.to_string()),
            ("rsa_public", tokens::RSA_PUBLIC.to_owned()),
            ("es_public", es.public_pem),
            ("ed_public", ed.public_pem),
        ],
    )
    .await;
    Fixture {
        gw,
        es: EncodingKey::from_ec_der(&es.private_der),
        ed: EncodingKey::from_ed_der(&ed.private_der),
        _shared: shared,
        _globex: globex,
    }
}

async fn with_token(gw: &Gateway, host: &str, path: &str, token: &str) -> Reply {
    send(gw.get(host, path).bearer_auth(token)).await
}

fn refused(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(reply.body["error"], code, "{reply:?}");
}

#[tokio::test]
async fn tokens_of_every_algorithm_act_for_their_tenant_and_tell_the_upstream() {
    let f = start().await;
    let c = claims("globex", json!({"roles": ["admin", "billing"]}));
    let signed = [
        hs256("hs", &c),
        rs256("rs", &c),
        sign(Algorithm::ES256, "es", &f.es, &c),
        sign(Algorithm::EdDSA, "ed", &f.ed, &c),
    ];
    for token in signed {
        let reply = send(
            f.gw.get("api.yourapp.test", "/orders")
                .bearer_auth(&token)
                .header("X-Auth-Subject", "spoofed")
                .header("X_Auth_Roles", "spoofed")
                .header("X-Tenant-ID", "acme"),
        )
        .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body["upstream"], "globex");
        assert_eq!(reply.upstream_saw("x-tenant-id"), ["globex"]);
        assert_eq!(reply.upstream_saw("x-auth-subject"), ["user-1"]);
        assert_eq!(reply.upstream_saw("x-auth-roles"), ["admin,billing"]);
        assert_eq!(reply.upstream_saw("x-auth-method"), ["jwt"]);
        assert!(reply.upstream_saw("x_auth_roles").is_empty());
    }
}

#[tokio::test]
async fn bad_tokens_get_401_with_a_stable_code() {
    let f = start().await;
    let gw = &f.gw;
    let api = "api.yourapp.test";
    let good = hs256("hs", &claims("acme", json!({})));

    let (head, _) = good.rsplit_once('.').expect("jws");
    let forged = format!("{head}.{}", "A".repeat(43));
    refused(
        &with_token(gw, api, "/", &forged).await,
        401,
        "invalid_signature",
    );
    let expired = hs256("hs", &claims("acme", json!({"exp": tokens::now() - 300})));
    refused(
        &with_token(gw, api, "/", &expired).await,
        401,
        "token_expired",
    );
    let early = hs256("hs", &claims("acme", json!({"nbf": tokens::now() + 300})));
    refused(
        &with_token(gw, api, "/", &early).await,
        401,
        "token_not_yet_valid",
    );
    let issuer = hs256("hs", &claims("acme", json!({"iss": "https://evil.test"})));
    refused(
        &with_token(gw, api, "/", &issuer).await,
        401,
        "wrong_issuer",
    );
    let audience = hs256("hs", &claims("acme", json!({"aud": "other"})));
    refused(
        &with_token(gw, api, "/", &audience).await,
        401,
        "wrong_audience",
    );
    refused(
        &with_token(gw, api, "/", &hs256("nope", &claims("acme", json!({})))).await,
        401,
        "unknown_kid",
    );
    refused(
        &with_token(gw, api, "/", "a.b.c").await,
        401,
        "malformed_token",
    );

    // `alg: none`, unsigned.
    use base64::Engine;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "hs"})),
        b64(claims("acme", json!({})))
    );
    refused(
        &with_token(gw, api, "/", &none).await,
        401,
        "unsupported_algorithm",
    );

    // Algorithm confusion: HS256 "signed" with the RSA public key, naming the RSA key.
    let confused = sign(
        Algorithm::HS256,
        "rs",
        &EncodingKey::from_secret(tokens::RSA_PUBLIC.as_bytes()),
        &claims("acme", json!({})),
    );
    let reply = with_token(gw, api, "/", &confused).await;
    refused(&reply, 401, "algorithm_mismatch");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="tenantgate", error="invalid_token""#)
    );

    let reply = send(gw.get(api, "/")).await;
    refused(&reply, 401, "missing_credentials");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="tenantgate""#)
    );
    // A token for a tenant that does not exist, and one for a suspended tenant.
    let ghost = hs256("hs", &claims("ghost", json!({})));
    refused(
        &with_token(gw, api, "/", &ghost).await,
        404,
        "unknown_tenant",
    );
    let suspended = hs256("hs", &claims("umbrella", json!({})));
    refused(
        &with_token(gw, api, "/", &suspended).await,
        403,
        "tenant_suspended",
    );
}

#[tokio::test]
async fn host_and_claim_must_agree_and_switching_stays_in_the_list() {
    let f = start().await;
    let gw = &f.gw;
    let initech = "initech.yourapp.test";
    let own = hs256("hs", &claims("initech", json!({})));
    assert_eq!(with_token(gw, initech, "/", &own).await.status, 200);
    let other = hs256("hs", &claims("acme", json!({})));
    refused(
        &with_token(gw, initech, "/", &other).await,
        403,
        "tenant_mismatch",
    );
    // Once the token has been verified (and cached) on the shared API host, it still opens no
    // other tenant's: the cache holds who the token is, never where it may go.
    assert_eq!(
        with_token(gw, "api.yourapp.test", "/", &other).await.status,
        200
    );
    refused(
        &with_token(gw, initech, "/", &other).await,
        403,
        "tenant_mismatch",
    );
    refused(
        &send(gw.get(initech, "/")).await,
        401,
        "missing_credentials",
    );

    // A user of acme who also belongs to globex.
    let member = hs256(
        "hs",
        &claims("acme", json!({"tenants": ["acme", "globex"]})),
    );
    let api = "api.yourapp.test";
    let switched = send(
        gw.get(api, "/")
            .bearer_auth(&member)
            .header("X-Switch-Tenant", "globex"),
    )
    .await;
    assert_eq!(switched.status, 200, "{switched:?}");
    assert_eq!(switched.upstream_saw("x-tenant-id"), ["globex"]);
    assert!(switched.upstream_saw("x-switch-tenant").is_empty());
    let forbidden = send(
        gw.get(api, "/")
            .bearer_auth(&member)
            .header("X-Switch-Tenant", "initech"),
    )
    .await;
    refused(&forbidden, 403, "tenant_switch_forbidden");
    let home = with_token(gw, api, "/", &member).await;
    assert_eq!(home.upstream_saw("x-tenant-id"), ["acme"]);
}

#[tokio::test]
async fn route_rules_need_the_role_of_the_hosts_own_tenant() {
    let f = start().await;
    let gw = &f.gw;
    let acme = "acme.yourapp.test";
    // Host-sourced tenants need no credential, except where a rule applies.
    assert_eq!(send(gw.get(acme, "/public")).await.status, 200);
    refused(
        &send(gw.get(acme, "/admin/users")).await,
        401,
        "missing_credentials",
    );
    let member = hs256("hs", &claims("acme", json!({})));
    refused(
        &with_token(gw, acme, "/admin", &member).await,
        403,
        "missing_role",
    );
    let admin = hs256("hs", &claims("acme", json!({"roles": ["admin"]})));
    let reply = with_token(gw, acme, "/admin/users", &admin).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.upstream_saw("x-auth-roles"), ["admin"]);
    assert_eq!(
        with_token(gw, acme, "/administrator", &member).await.status,
        200
    );
    // An admin of another tenant does not get acme's admin paths.
    let globex_admin = hs256("hs", &claims("globex", json!({"roles": ["admin"]})));
    refused(
        &with_token(gw, acme, "/admin", &globex_admin).await,
        403,
        "tenant_mismatch",
    );
    // Paths a backend could read as /admin (reqwest would resolve `..` itself: sent raw).
    for path in ["//admin", "/%61dmin", "/admin;x=1"] {
        let reply = send(gw.get(acme, path)).await;
        refused(&reply, 400, "ambiguous_path");
    }
    let raw = support::raw_request(
        gw.http,
        b"GET /x/../admin HTTP/1.1\r\nHost: acme.yourapp.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert_eq!(support::raw_body(&raw)["error"], "ambiguous_path");
}

#[tokio::test]
async fn api_keys_made_by_the_cli_act_for_their_tenant_until_revoked() {
    let f = start().await;
    let gw = &f.gw;
    let config = gw.config_path.to_str().expect("utf-8 path");
    let made = tenantgate(&["key", "create", "acme", "--config", config, "--json"]).await;
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).expect("json");
    let key = made["key"].as_str().expect("key").to_owned();
    let id = made["id"].as_str().expect("id").to_owned();
    assert!(
        key.starts_with("acme_") && key.len() == "acme_".len() + 32,
        "{key}"
    );
    let file = gw.read_config();
    assert!(!file.contains(&key), "the key itself is never written");
    assert!(file.contains(&id));

    // The watcher reloads the file; the key then works (Authorization or X-API-Key).
    let api = "api.yourapp.test";
    let deadline = std::time::Instant::now() + support::WAIT;
    let reply = loop {
        let reply = send(gw.get(api, "/").header("X-API-Key", &key)).await;
        if reply.status == 200 || std::time::Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(reply.status, 200, "{reply:?}\n{}", gw.log());
    assert_eq!(reply.upstream_saw("x-tenant-id"), ["acme"]);
    assert_eq!(reply.upstream_saw("x-auth-method"), ["api_key"]);
    assert_eq!(reply.upstream_saw("x-auth-key-id"), [id.as_str()]);
    assert_eq!(with_token(gw, api, "/", &key).await.status, 200);
    // acme's key on initech's host_and_claim host, and a switch to another tenant.
    refused(
        &with_token(gw, "initech.yourapp.test", "/", &key).await,
        403,
        "tenant_mismatch",
    );
    let switch = send(
        gw.get(api, "/")
            .bearer_auth(&key)
            .header("X-Switch-Tenant", "globex"),
    )
    .await;
    refused(&switch, 403, "tenant_switch_forbidden");
    // A made-up key with acme's prefix, and one of an unknown tenant.
    let fake = format!("acme_{}", "x".repeat(32));
    refused(
        &with_token(gw, api, "/", &fake).await,
        401,
        "invalid_api_key",
    );
    refused(
        &with_token(gw, api, "/", "nobody_key").await,
        401,
        "invalid_api_key",
    );

    let listed = tenantgate(&["key", "list", "acme", "--config", config, "--json"]).await;
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed[0]["state"], "valid");

    let revoked = tenantgate(&["key", "revoke", "acme", &id, "--config", config]).await;
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let deadline = std::time::Instant::now() + support::WAIT;
    let reply = loop {
        let reply = with_token(gw, api, "/", &key).await;
        if reply.status != 200 || std::time::Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    refused(&reply, 401, "api_key_revoked");

    // An expired key, and a key of a suspended tenant, written as operators would.
    let expired = "acme_EXPIREDexpiredEXPIREDexpired0000";
    let suspended = "umbrella_SUSPENDEDsuspendedSUSPENDED00000";
    let sha =
        |k: &str| tenantgate::identity::api_key::to_hex(&tenantgate::identity::api_key::sha256(k));
    let text = gw.read_config()
        + &format!(
            "\n[[tenants.acme.api_keys]]\nid = \"old\"\nsha256 = \"{}\"\ncreated = \"2020-01-01T00:00:00Z\"\nexpires = \"2021-01-01T00:00:00Z\"\n",
            sha(expired)
        );
    let text = text.replace(
        "[tenants.umbrella]\npool = \"shared\"\nstatus = \"suspended\"\n",
        &format!("[tenants.umbrella]\npool = \"shared\"\nstatus = \"suspended\"\napi_keys = [{{ id = \"u1\", sha256 = \"{}\", created = \"2026-01-01T00:00:00Z\" }}]\n", sha(suspended)),
    );
    gw.write_config(&text);
    let (status, body) = gw.admin_post("/reload", None).await;
    assert_eq!(status, 200, "{body}");
    refused(
        &with_token(gw, api, "/", expired).await,
        401,
        "api_key_expired",
    );
    refused(
        &with_token(gw, api, "/", suspended).await,
        403,
        "tenant_suspended",
    );
}

/// Serves one document at any path; the test swaps it to rotate keys.
async fn jwks_server(doc: Arc<Mutex<String>>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let doc = doc.lock().expect("doc").clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{doc}",
                    doc.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

const JWKS_CONFIG: &str = r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]

[admin]
listen = "{admin}"

[jwt]
JWKS

[pools.shared]
upstreams = ["{shared}"]

[tenants.acme]
pool = "shared"

[hosts."api.yourapp.test"]
tenant_source = "claim"
"#;

async fn until_status(gw: &Gateway, token: &str, want: u16) -> Reply {
    let deadline = std::time::Instant::now() + support::WAIT;
    loop {
        let reply = with_token(gw, "api.yourapp.test", "/", token).await;
        if reply.status == want || std::time::Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn oct_token(kid: &str, secret: &str) -> String {
    sign(
        Algorithm::HS256,
        kid,
        &EncodingKey::from_secret(secret.as_bytes()),
        &json!({"tid": "acme", "exp": tokens::now() + 600}),
    )
}

#[tokio::test]
async fn jwks_keys_rotate_without_restart_from_a_file_and_from_a_url() {
    const ONE: &str = "first-secret-0123456789abcdef0123456789";
    const TWO: &str = "second-secret-0123456789abcdef012345678";

    // A file: rewritten in place, picked up by the watcher.
    let shared = Upstream::start("shared").await;
    let config = JWKS_CONFIG.replace("JWKS", "jwks_file = \"jwks.json\"");
    // The file must exist before the gateway starts.
    let pre = tempfile::tempdir().expect("dir");
    std::fs::write(pre.path().join("jwks.json"), tokens::jwks_oct("k1", ONE)).expect("write");
    let config = config.replace(
        "jwks.json",
        &pre.path().join("jwks.json").display().to_string(),
    );
    let gw = Gateway::start(&config, &[&shared]).await;
    assert_eq!(
        until_status(&gw, &oct_token("k1", ONE), 200).await.status,
        200
    );
    std::fs::write(pre.path().join("jwks.json"), tokens::jwks_oct("k2", TWO)).expect("write");
    let reply = until_status(&gw, &oct_token("k2", TWO), 200).await;
    assert_eq!(reply.status, 200, "{reply:?}\n{}", gw.log());
    refused(
        &with_token(&gw, "api.yourapp.test", "/", &oct_token("k1", ONE)).await,
        401,
        "unknown_kid",
    );
    drop(gw);

    // A URL: an unknown kid makes the gateway fetch again (at most every 5 s).
    let doc = Arc::new(Mutex::new(tokens::jwks_oct("k1", ONE)));
    let addr = jwks_server(Arc::clone(&doc)).await;
    let config = JWKS_CONFIG.replace("JWKS", &format!("jwks_url = \"http://{addr}/jwks.json\""));
    let gw = Gateway::start(&config, &[&shared]).await;
    assert_eq!(
        until_status(&gw, &oct_token("k1", ONE), 200).await.status,
        200
    );
    *doc.lock().expect("doc") = tokens::jwks_oct("k2", TWO);
    let reply = until_status(&gw, &oct_token("k2", TWO), 200).await;
    assert_eq!(reply.status, 200, "{reply:?}\n{}", gw.log());
}

const ADMIN_CONFIG: &str = r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]

[admin]
listen = "{admin}"
TOKEN

[pools.shared]
upstreams = ["{shared}"]

[tenants.acme]
pool = "shared"
"#;

#[tokio::test]
async fn the_admin_api_asks_for_its_token() {
    let shared = Upstream::start("shared").await;
    let config = ADMIN_CONFIG.replace(
        "TOKEN",
        &format!("token_env = \"{}\"", support::ADMIN_TOKEN_ENV),
    );
    let gw = Gateway::start(&config, &[&shared]).await;
    let admin = |path: &str, token: Option<&str>| {
        let req = gw.client.get(format!("http://{}{path}", gw.admin));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    };
    let none = send(admin("/status", None)).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.body["error"], "unauthorized");
    assert_eq!(
        none.header("www-authenticate"),
        Some(r#"Bearer realm="tenantgate-admin""#)
    );
    assert_eq!(
        send(admin("/status", Some("wrong-token-0123456789")))
            .await
            .status,
        401
    );
    let ok = send(admin("/status", Some(support::ADMIN_TOKEN))).await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.body["admin_token"],
        format!("token_env = \"{}\"", support::ADMIN_TOKEN_ENV)
    );
    assert_eq!(send(admin("/healthz", None)).await.status, 200);
    assert_eq!(send(admin("/metrics", None)).await.status, 200);
    let post = gw.client.post(format!("http://{}/reload", gw.admin));
    assert_eq!(send(post).await.status, 401);
    // The CLI sends the token from its environment.
    let cli = tokio::process::Command::new(support::BIN)
        .args(["reload", "--admin", &format!("http://{}", gw.admin)])
        .env("TENANTGATE_ADMIN_TOKEN", support::ADMIN_TOKEN)
        .output()
        .await
        .expect("cli");
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let log = gw.log();
    assert!(log.contains("admin API request refused"), "{log}");
    assert!(!log.contains("wrong-token-0123456789") && !log.contains(support::ADMIN_TOKEN));

    // By hash, with /metrics protected too.
    let sha = tenantgate::identity::api_key::to_hex(&tenantgate::identity::api_key::sha256(
        "another-token-0123456789",
    ));
    let config = ADMIN_CONFIG.replace(
        "TOKEN",
        &format!("token_sha256 = \"{sha}\"\nmetrics_require_token = true"),
    );
    let gw = Gateway::start(&config, &[&shared]).await;
    let metrics = |token: Option<&str>| {
        let req = gw.client.get(format!("http://{}/metrics", gw.admin));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    };
    assert_eq!(send(metrics(None)).await.status, 401);
    assert_eq!(
        send(metrics(Some("another-token-0123456789"))).await.status,
        200
    );
}
