//! gRPC through the gateway with real peers (grpcio): unary and server-streaming calls over h2c
//! from the client, to pools that speak `h2c` and `h2` (TLS), with the tenant header and trailers
//! passed; a refused call gets a gRPC status, not a JSON body.

mod support;

use support::grpc::{call, GrpcServer};
use support::pki::Pki;
use support::Gateway;

const CONFIG: &str = r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]
threads = 2
h2c = true

[admin]
listen = "{admin}"

[pools.grpc]
upstreams = ["{one}", "{two}"]
protocol = "h2c"
health_check = { interval_ms = 500 }

[pools.grpc-tls]
upstreams = ["{secure}"]
protocol = "h2"
tls = { sni = "grpc.internal", ca = "{ca}" }

[tenants.acme]
pool = "grpc"

[tenants.globex]
pool = "grpc"
status = "suspended"

[tenants.initech]
pool = "grpc-tls"
"#;

#[tokio::test]
async fn unary_and_streaming_calls_pass_with_the_tenant_and_refusals_are_grpc_statuses() {
    let one = GrpcServer::start("one").await;
    let two = GrpcServer::start("two").await;
    let pki = Pki::new("grpc upstreams");
    let secure = GrpcServer::start_tls("secure", &pki.issue("grpc", &["grpc.internal"])).await;
    let gw = Gateway::start_with(
        CONFIG,
        &[
            ("one", one.addr.to_string()),
            ("two", two.addr.to_string()),
            ("secure", secure.addr.to_string()),
            ("ca", pki.ca_path.display().to_string()),
        ],
    )
    .await;

    let mut seen = Vec::new();
    for _ in 0..4 {
        let reply = call(
            gw.http,
            "acme.yourapp.test",
            "/echo.Echo/Say",
            &[("x-tenant-id", "globex")],
        )
        .await;
        assert_eq!(reply["code"], "OK", "{reply}");
        let answer = &reply["responses"][0];
        assert_eq!(answer["request"], "hello");
        // The gateway's tenant header, never the client's copy.
        assert_eq!(answer["metadata"]["x-tenant-id"], "acme", "{reply}");
        assert!(answer["metadata"]["x-request-id"].is_string(), "{reply}");
        // Trailers come through.
        assert_eq!(reply["trailing"]["echo-trailer"], "yes", "{reply}");
        seen.push(answer["upstream"].as_str().unwrap_or("").to_owned());
    }
    assert!(
        seen.contains(&"one".into()) && seen.contains(&"two".into()),
        "{seen:?}"
    );

    let stream = call(gw.http, "acme.yourapp.test", "/echo.Echo/Count", &[]).await;
    assert_eq!(stream["code"], "OK", "{stream}");
    let numbers: Vec<i64> = stream["responses"]
        .as_array()
        .expect("responses")
        .iter()
        .filter_map(|r| r["n"].as_i64())
        .collect();
    assert_eq!(numbers, [0, 1, 2], "{stream}");
    assert_eq!(stream["trailing"]["echo-trailer"], "yes");

    // An h2 pool: HTTP/2 over TLS, verified against its CA, agreed by ALPN.
    let secure = call(gw.http, "initech.yourapp.test", "/echo.Echo/Count", &[]).await;
    assert_eq!(secure["code"], "OK", "{secure}");
    assert_eq!(secure["responses"][2]["upstream"], "secure", "{secure}");
    assert_eq!(secure["responses"][2]["metadata"]["x-tenant-id"], "initech");

    // Refusals: what a gRPC client acts on, with the gateway's code beside it.
    for (authority, code, error) in [
        (
            "globex.yourapp.test",
            "PERMISSION_DENIED",
            "tenant_suspended",
        ),
        ("nobody.yourapp.test", "NOT_FOUND", "unknown_tenant"),
    ] {
        let refused = call(gw.http, authority, "/echo.Echo/Say", &[]).await;
        assert_eq!(refused["code"], code, "{refused}");
        assert!(
            !refused["details"].as_str().unwrap_or("").is_empty(),
            "{refused}"
        );
        let header = |name: &str| {
            refused["trailing"][name]
                .as_str()
                .or(refused["initial"][name].as_str())
                .map(str::to_owned)
        };
        assert_eq!(
            header("tenantgate-error").as_deref(),
            Some(error),
            "{refused}"
        );
    }
}
