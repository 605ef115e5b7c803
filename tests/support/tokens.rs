//! Signing test tokens: HS256 with a shared secret, RS256 with the test-only RSA key in
//! `tests/fixtures/jwt/`, ES256 and EdDSA with keys made per run.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};
use serde_json::{json, Value};

pub const HS_SECRET: &str = "test-secret-0123456789abcdef0123456789";
pub const RSA_PRIVATE: &str = include_str!("../fixtures/jwt/rs256-test-only.key");
pub const RSA_PUBLIC: &str = include_str!("../fixtures/jwt/rs256-test-only.pub.pem");
pub const ISSUER: &str = "https://auth.yourapp.test";
pub const AUDIENCE: &str = "yourapp";

/// A key pair made for this run, as the config (public PEM) and the signer (PKCS#8) need it.
pub struct Pair {
    pub public_pem: String,
    pub private_der: Vec<u8>,
}

pub fn es256() -> Pair {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    Pair {
        public_pem: key.public_key_pem(),
        private_der: key.serialize_der(),
    }
}

pub fn ed25519() -> Pair {
    let key = KeyPair::generate_for(&PKCS_ED25519).expect("Ed25519 key");
    Pair {
        public_pem: key.public_key_pem(),
        private_der: key.serialize_der(),
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a valid token for `tenant`, with `extra` added or replacing.
pub fn claims(tenant: &str, extra: Value) -> Value {
    let mut c = json!({
        "sub": "user-1", "tid": tenant, "roles": ["member"],
        "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "iat": now(),
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

pub fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    encode(&header, claims, key).expect("sign")
}

pub fn hs256(kid: &str, claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        kid,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        claims,
    )
}

pub fn rs256(kid: &str, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("RSA key");
    sign(Algorithm::RS256, kid, &key, claims)
}

/// A JWKS document with one shared-secret key.
pub fn jwks_oct(kid: &str, secret: &str) -> String {
    use base64::Engine;
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    json!({"keys": [{"kty": "oct", "kid": kid, "alg": "HS256", "k": k}]}).to_string()
}
