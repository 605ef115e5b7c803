//! Verifying bearer tokens (JWS-signed JWTs) against the configured keys.
//!
//! Every key is bound to one algorithm. The token's header only selects a key (by `kid`); when the
//! algorithm it names is not that key's, the token is refused before any signature check, so a
//! token "signed" with HS256 and an RSA public key as the secret never verifies.

use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::jwks::RemoteKeys;
use super::token_cache::{digest, TokenCache, Verified};
use super::{AuthMethod, Principal};
use crate::config::model::{JwtConfig, JwtKey};
use crate::gateway_error::GatewayError;

/// Longest token looked at: a header line this long is an attack or a mistake, not a JWT.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

pub struct JwtVerifier {
    /// What it was built from: a reload with the same settings keeps this verifier and its cache.
    config: JwtConfig,
    keys: Box<[JwtKey]>,
    remote: Option<Arc<RemoteKeys>>,
    /// One per algorithm a key uses, built once: `Validation` holds sets that cost allocations.
    validations: Box<[(Algorithm, Validation)]>,
    tenant_claim: Box<str>,
    tenants_claim: Option<Box<str>>,
    roles_claim: Box<str>,
    leeway: i64,
    cache: TokenCache,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys)
            .field("remote", &self.remote.as_ref().map(|r| r.url()))
            .finish_non_exhaustive()
    }
}

/// A verified token's `exp` and `nbf`, in Unix seconds.
type TokenTimes = (i64, Option<i64>);

/// The JOSE header fields the gateway reads; the rest (`typ`, `cty`) are the token issuer's.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
}

impl JwtVerifier {
    /// `remote` holds the keys fetched from `jwks_url`, shared with the refresher.
    pub fn new(config: &JwtConfig, remote: Option<Arc<RemoteKeys>>) -> JwtVerifier {
        let validations = ALGORITHMS
            .iter()
            .map(|&alg| (alg, validation(config, alg)))
            .collect();
        super::crypto::install();
        JwtVerifier {
            config: config.clone(),
            keys: config.keys.clone().into_boxed_slice(),
            remote,
            validations,
            tenant_claim: config.tenant_claim.as_str().into(),
            tenants_claim: config.tenants_claim.as_deref().map(Box::from),
            roles_claim: config.roles_claim.as_str().into(),
            leeway: i64::try_from(config.leeway_seconds).unwrap_or(i64::MAX),
            cache: TokenCache::new(config.cache_size),
        }
    }

    /// Whether this verifier checks tokens as one built from `config` with `remote` would.
    pub fn is_built_from(&self, config: &JwtConfig, remote: Option<&Arc<RemoteKeys>>) -> bool {
        let same_remote = match (&self.remote, remote) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_remote && self.config == *config
    }

    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    pub fn remote(&self) -> Option<&Arc<RemoteKeys>> {
        self.remote.as_ref()
    }

    /// Checks `token`'s signature, algorithm, times, issuer and audience, and reads the identity
    /// claims; a token verified before and still valid at `now` (Unix seconds) is answered from the
    /// cache. Each refusal has its own code; none says more than which check failed.
    pub fn verify(&self, token: &str, now: i64) -> Result<Arc<Principal>, GatewayError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(GatewayError::MalformedToken);
        }
        if self.cache.capacity() == 0 {
            return self.verify_uncached(token, now).map(|(p, _)| Arc::new(p));
        }
        let digest = digest(token);
        // Read before the keys are: an entry is never newer than the keys that verified it.
        let keys_generation = self.remote.as_ref().map_or(0, |r| r.generation());
        if let Some(principal) = self.cache.get(&digest, now, keys_generation) {
            return Ok(principal);
        }
        let (principal, (expires, not_before)) = self.verify_uncached(token, now)?;
        let principal = Arc::new(principal);
        let valid_from = not_before.map_or(i64::MIN, |t| t.saturating_sub(self.leeway));
        let entry = Verified {
            digest,
            expires,
            valid_from,
            keys_generation,
            principal: Arc::clone(&principal),
        };
        self.cache.insert(entry, now);
        Ok(principal)
    }

    /// The full check at `now`, with the token's `exp` and `nbf`.
    fn verify_uncached(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(Principal, TokenTimes), GatewayError> {
        let header = read_header(token)?;
        let alg = match header.alg.as_deref() {
            None => return Err(GatewayError::MalformedToken),
            Some(name) => {
                Algorithm::from_str(name).map_err(|_| GatewayError::UnsupportedAlgorithm)?
            }
        };
        let (key_alg, key) = self.find_key(header.kid.as_deref())?;
        if key_alg != alg {
            return Err(GatewayError::AlgorithmMismatch);
        }
        let validation = self
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or(GatewayError::UnsupportedAlgorithm)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, validation)
            .map_err(|e| refusal(e.kind()))?;
        // jsonwebtoken reads the system clock; the gateway checks the times against the `now` the
        // cache judges with, by jsonwebtoken's rules (whole seconds, the leeway both ways).
        let seconds = |name: &str| match data.claims.get(name) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .and_then(|s| i64::try_from(s).ok())
                .map(Some)
                .ok_or(GatewayError::MalformedToken),
        };
        let expires = seconds("exp")?.ok_or(GatewayError::MalformedToken)?;
        let not_before = seconds("nbf")?;
        if expires < now.saturating_sub(self.leeway) {
            return Err(GatewayError::TokenExpired);
        }
        if not_before.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err(GatewayError::TokenNotYetValid);
        }
        Ok((self.principal(data.claims), (expires, not_before)))
    }

    /// The key `kid` names (its algorithm, and the key as a shared handle: no copy per request),
    /// local keys first; without a `kid`, the only key there is.
    fn find_key(&self, kid: Option<&str>) -> Result<(Algorithm, Arc<DecodingKey>), GatewayError> {
        let remote = self.remote.as_ref().map(|r| r.keys());
        let remote_keys = remote.as_deref().map_or(&[][..], |k| &k[..]);
        let mut all = self.keys.iter().chain(remote_keys);
        let found = match kid {
            Some(kid) => all.find(|k| k.kid.as_deref() == Some(kid)),
            None => match (all.next(), all.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            },
        };
        match found {
            Some(key) => Ok((key.alg, Arc::clone(&key.key))),
            None => {
                if let (Some(remote), Some(_)) = (&self.remote, kid) {
                    // Perhaps the issuer rotated its keys: fetch them again soon.
                    remote.want_refresh();
                }
                Err(GatewayError::UnknownKeyId)
            }
        }
    }

    fn principal(&self, mut claims: Map<String, Value>) -> Principal {
        let string = |v: Option<Value>| match v {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let list = |v: Option<Value>| -> Vec<String> {
            match v {
                Some(Value::Array(items)) => items
                    .into_iter()
                    .filter_map(|i| match i {
                        Value::String(s) => Some(s),
                        _ => None,
                    })
                    .collect(),
                // OAuth's `scope` style: one space-separated string.
                Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
                _ => Vec::new(),
            }
        };
        Principal {
            method: AuthMethod::Jwt,
            tenant: string(claims.remove(&*self.tenant_claim)),
            tenants: self
                .tenants_claim
                .as_deref()
                .map_or_else(Vec::new, |c| list(claims.remove(c))),
            subject: string(claims.remove("sub")),
            roles: list(claims.remove(&*self.roles_claim)),
            key_id: None,
        }
    }
}

/// Every algorithm a key may be bound to.
pub const ALGORITHMS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn validation(config: &JwtConfig, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = config.leeway_seconds;
    // Checked by `verify_uncached` against the request's clock.
    v.validate_exp = false;
    v.validate_nbf = false;
    let mut required = vec!["exp"];
    if let Some(issuer) = &config.issuer {
        v.set_issuer(&[issuer]);
        required.push("iss");
    }
    if config.audience.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(&config.audience);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

/// The JOSE header, read without trusting it.
fn read_header(token: &str) -> Result<RawHeader, GatewayError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(GatewayError::MalformedToken);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| GatewayError::MalformedToken)?;
    serde_json::from_slice(&json).map_err(|_| GatewayError::MalformedToken)
}

fn refusal(kind: &ErrorKind) -> GatewayError {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => GatewayError::InvalidSignature,
        ErrorKind::ExpiredSignature => GatewayError::TokenExpired,
        ErrorKind::ImmatureSignature => GatewayError::TokenNotYetValid,
        ErrorKind::InvalidIssuer => GatewayError::WrongIssuer,
        ErrorKind::InvalidAudience => GatewayError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => GatewayError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => GatewayError::WrongAudience,
        ErrorKind::InvalidAlgorithm => GatewayError::AlgorithmMismatch,
        _ => GatewayError::MalformedToken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, DecodingKey, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn key(kid: &str, alg: Algorithm, key: DecodingKey) -> JwtKey {
        JwtKey {
            kid: Some(kid.into()),
            alg,
            origin: "test".into(),
            digest: 0,
            key: Arc::new(key),
        }
    }

    fn config(keys: Vec<JwtKey>) -> JwtConfig {
        JwtConfig {
            issuer: Some("https://auth.yourapp.test".into()),
            audience: vec!["yourapp".into()],
            tenant_claim: "tid".into(),
            tenants_claim: Some("tenants".into()),
            roles_claim: "roles".into(),
            leeway_seconds: 30,
            cache_size: 64,
            keys,
            jwks_file: None,
            jwks_url: None,
        }
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn claims(extra: Value) -> Value {
        let mut c = json!({
            "sub": "user-1", "tid": "acme", "tenants": ["acme", "globex"], "roles": ["admin"],
            "iss": "https://auth.yourapp.test", "aud": "yourapp", "exp": now() + 600,
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn hs256(kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.into());
        encode(&header, claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(
            &config(vec![key(
                "k1",
                Algorithm::HS256,
                DecodingKey::from_secret(SECRET),
            )]),
            None,
        )
    }

    #[test]
    fn a_good_token_gives_its_identity() {
        let p = verifier()
            .verify(&hs256("k1", &claims(json!({}))), now())
            .unwrap();
        assert_eq!(p.tenant.as_deref(), Some("acme"));
        assert_eq!(p.tenants, ["acme", "globex"]);
        assert_eq!(p.subject.as_deref(), Some("user-1"));
        assert_eq!(p.roles, ["admin"]);
        // `scope`-style roles.
        let p = verifier()
            .verify(&hs256("k1", &claims(json!({"roles": "read write"}))), now())
            .unwrap();
        assert_eq!(p.roles, ["read", "write"]);
    }

    #[test]
    fn each_failed_check_has_its_code() {
        let v = verifier();
        let check = |extra: Value| v.verify(&hs256("k1", &claims(extra)), now());
        assert_eq!(
            check(json!({"exp": now() - 120})),
            Err(GatewayError::TokenExpired)
        );
        // Within the leeway.
        assert!(check(json!({"exp": now() - 5})).is_ok());
        assert_eq!(
            check(json!({"nbf": now() + 120})),
            Err(GatewayError::TokenNotYetValid)
        );
        assert_eq!(
            check(json!({"iss": "https://evil"})),
            Err(GatewayError::WrongIssuer)
        );
        assert_eq!(
            check(json!({"aud": "other"})),
            Err(GatewayError::WrongAudience)
        );
        assert_eq!(
            v.verify(&hs256("k2", &claims(json!({}))), now()),
            Err(GatewayError::UnknownKeyId)
        );
        assert_eq!(
            v.verify("not a token", now()),
            Err(GatewayError::MalformedToken)
        );
        assert_eq!(v.verify("a.b.c", now()), Err(GatewayError::MalformedToken));
        let good = hs256("k1", &claims(json!({})));
        let (head, _) = good.rsplit_once('.').unwrap();
        assert_eq!(
            v.verify(&format!("{head}.AAAA"), now()),
            Err(GatewayError::InvalidSignature)
        );
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(v.verify(&long, now()), Err(GatewayError::MalformedToken));
    }

    #[test]
    fn a_token_is_verified_once_and_refused_once_it_expires() {
        let v = verifier();
        let t = now();
        let token = hs256("k1", &claims(json!({"exp": t + 60})));
        let first = v.verify(&token, t).unwrap();
        let again = v.verify(&token, t + 1).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second answer is the cached one"
        );
        // Past `exp` the cache no longer answers; within the leeway the full check still accepts.
        let late = v.verify(&token, t + 70).unwrap();
        assert!(!Arc::ptr_eq(&first, &late));
        assert_eq!(v.verify(&token, t + 91), Err(GatewayError::TokenExpired));
        let early = hs256("k1", &claims(json!({"nbf": t + 100})));
        assert_eq!(v.verify(&early, t), Err(GatewayError::TokenNotYetValid));
        assert!(v.verify(&early, t + 80).is_ok());
        assert_eq!(
            v.verify(&hs256("k1", &claims(json!({"exp": "soon"}))), t),
            Err(GatewayError::MalformedToken)
        );
    }

    #[test]
    fn a_cached_token_whose_key_left_the_jwks_is_refused() {
        let remote = Arc::new(RemoteKeys::new(
            "https://auth.yourapp.test/jwks",
            std::time::Duration::from_secs(300),
        ));
        let hs = |kid: &str| key(kid, Algorithm::HS256, DecodingKey::from_secret(SECRET));
        remote.replace_keys(vec![hs("k1")]);
        let v = JwtVerifier::new(&config(Vec::new()), Some(Arc::clone(&remote)));
        let token = hs256("k1", &claims(json!({})));
        assert!(v.verify(&token, now()).is_ok());
        assert!(v.verify(&token, now()).is_ok());
        remote.replace_keys(vec![hs("k1")]);
        assert_eq!(v.cache().len(), 1);
        assert!(
            v.verify(&token, now()).is_ok(),
            "the same keys again keep it"
        );
        remote.replace_keys(vec![hs("k2")]);
        assert_eq!(v.verify(&token, now()), Err(GatewayError::UnknownKeyId));
    }

    #[test]
    fn the_cache_keeps_its_bound_and_can_be_off() {
        let v = verifier();
        for i in 0..500 {
            let token = hs256("k1", &claims(json!({ "sub": format!("user-{i}") })));
            assert!(v.verify(&token, now()).is_ok());
        }
        assert_eq!(v.cache().len(), 64);
        let mut off = config(vec![key(
            "k1",
            Algorithm::HS256,
            DecodingKey::from_secret(SECRET),
        )]);
        off.cache_size = 0;
        let off = JwtVerifier::new(&off, None);
        let token = hs256("k1", &claims(json!({})));
        let (a, b) = (
            off.verify(&token, now()).unwrap(),
            off.verify(&token, now()).unwrap(),
        );
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(off.cache().is_empty());
    }

    #[test]
    fn alg_none_and_algorithm_confusion_are_refused() {
        let v = verifier();
        let b64 = |v: Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
        let body = b64(claims(json!({})));
        let none = format!("{}.{body}.", b64(json!({"alg": "none", "kid": "k1"})));
        assert_eq!(
            v.verify(&none, now()),
            Err(GatewayError::UnsupportedAlgorithm)
        );
        // The header names HS384 for a key bound to HS256.
        let mut header = Header::new(Algorithm::HS384);
        header.kid = Some("k1".into());
        let token = encode(
            &header,
            &claims(json!({})),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            v.verify(&token, now()),
            Err(GatewayError::AlgorithmMismatch)
        );
    }
}
