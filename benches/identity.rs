//! What verifying a credential adds to a request: `admission::identify` for a tenant's host
//! with no credential (the baseline), and on a shared API host with an HS256 token, an RS256 token
//! and an API key. The difference to the baseline is the added cost per request.
//!
//! A client sends the same token on every request, so `jwt_*` measure the cached answer; the
//! `*_first_sight` cases verify every time (`cache_size = 0`): what a token costs the first time it
//! is seen.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Uri};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use tenantgate::admission::{identify, Admission, Connection, Request};
use tenantgate::config::load_str;
use tenantgate::identity::api_key::{generate, sha256, to_hex};
use tenantgate::snapshot::RoutingTable;

const RSA_PRIVATE: &str = include_str!("../tests/fixtures/jwt/rs256-test-only.key");
const RSA_PUBLIC: &str = include_str!("../tests/fixtures/jwt/rs256-test-only.pub.pem");
const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

fn config(key_sha: &str, cache_size: usize) -> String {
    format!(
        r#"
[gateway]
base_domains = ["yourapp.test"]
[jwt]
issuer = "https://auth.yourapp.test"
audience = "yourapp"
cache_size = {cache_size}
[[jwt.keys]]
kid = "hs"
alg = "HS256"
secret = "{SECRET}"
[[jwt.keys]]
kid = "rs"
alg = "RS256"
public_key = '''{RSA_PUBLIC}'''
[pools.shared]
upstreams = ["127.0.0.1:9001"]
[tenants.acme]
pool = "shared"
[[tenants.acme.api_keys]]
id = "k1"
sha256 = "{key_sha}"
created = "2026-01-01T00:00:00Z"
[hosts."api.yourapp.test"]
tenant_source = "claim"
"#
    )
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    h
}

fn token(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let claims = serde_json::json!({
        "sub": "user-1", "tid": "acme", "roles": ["member"],
        "iss": "https://auth.yourapp.test", "aud": "yourapp",
        "exp": chrono::Utc::now().timestamp() + 3600,
    });
    encode(&header, &claims, key).expect("sign")
}

fn admit(c: &mut Criterion) {
    let key = generate("acme").expect("random");
    let table = |cache_size| {
        let text = config(&to_hex(&sha256(&key)), cache_size);
        let parsed = load_str(Path::new("bench.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
        RoutingTable::build(&parsed.routing, 1, None)
    };
    let (cached, uncached) = (table(1024), table(0));
    let now = chrono::Utc::now().timestamp();
    let hs = bearer(&token(
        Algorithm::HS256,
        "hs",
        &EncodingKey::from_secret(SECRET.as_bytes()),
    ));
    let rs = bearer(&token(
        Algorithm::RS256,
        "rs",
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa"),
    ));
    let api_key = bearer(&key);
    let none = HeaderMap::new();

    let mut group = c.benchmark_group("admit");
    let cases = [
        ("host_only", "acme.yourapp.test", &none, &cached),
        ("jwt_hs256", "api.yourapp.test", &hs, &cached),
        ("jwt_rs256", "api.yourapp.test", &rs, &cached),
        ("api_key", "api.yourapp.test", &api_key, &cached),
        ("jwt_hs256_first_sight", "api.yourapp.test", &hs, &uncached),
        ("jwt_rs256_first_sight", "api.yourapp.test", &rs, &uncached),
    ];
    let uri: Uri = "/orders".parse().expect("uri");
    for (name, host, headers, table) in cases {
        let request = Request {
            host: Some(host),
            method: "GET",
            peer: None,
            headers,
            uri: &uri,
            connection: Connection::Tls { server_name: None },
            roll: 50,
            now,
        };
        let admitted = identify(table, &request);
        assert!(
            matches!(admitted, Admission::Proxy(_)),
            "{name}: {admitted:?}"
        );
        group.bench_function(name, |b| {
            b.iter(|| black_box(identify(table, black_box(&request))))
        });
    }
    group.finish();
}

criterion_group!(benches, admit);
criterion_main!(benches);
