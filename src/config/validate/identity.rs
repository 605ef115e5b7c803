//! Checks of what proves a request's identity: `[jwt]` and its keys, API keys, tenant sources, route
//! rules, and the admin API's token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::{FastHash, Validator, RESERVED_HEADERS};
use crate::config::error::{ConfigError, KeyPath};
use crate::config::file::{
    AdminFile, ApiKeyFile, FileConfig, JwtFile, JwtKeyFile, RouteRuleFile, StringOrList,
    TenantSourceFile,
};
use crate::config::model::{
    AdminToken, ApiKeyConfig, IdentityConfig, JwksFile, JwksUrl, JwtConfig, JwtKey, RouteRule,
    TenantSource, DEFAULT_JWKS_REFRESH_SECONDS, DEFAULT_LEEWAY_SECONDS, DEFAULT_ROLES_CLAIM,
    DEFAULT_SWITCH_TENANT_HEADER, DEFAULT_TENANT_CLAIM, DEFAULT_TOKEN_CACHE_SIZE,
    MAX_TOKEN_CACHE_SIZE,
};
use crate::identity::api_key::from_hex;
use crate::identity::jwks::parse_jwks;
use crate::tls::certificate::file_digest;

/// HMAC secrets shorter than the hash are guessable offline from one token (RFC 7518 §3.2).
const MIN_HMAC_SECRET: usize = 32;
/// The JWKS refresh may not be set so low that the gateway hammers the issuer.
const MIN_JWKS_REFRESH_SECONDS: u64 = 10;

pub(super) fn tenant_source(s: Option<TenantSourceFile>) -> Option<TenantSource> {
    s.map(|s| match s {
        TenantSourceFile::Host => TenantSource::Host,
        TenantSourceFile::Claim => TenantSource::Claim,
        TenantSourceFile::HostAndClaim => TenantSource::HostAndClaim,
    })
}

pub(super) const ROUTE_RULES_WITHOUT_JWT: &str = "route rules check the roles of a token, but there is no [jwt] section to verify tokens with (API keys carry no roles)";

impl Validator {
    /// `[jwt]`, the gateway's identity settings and the global `[[route_rules]]`.
    pub(super) fn identity(&mut self, file: &FileConfig, folder: &Path) -> IdentityConfig {
        let at = KeyPath::root().key("gateway");
        let g = &file.gateway;
        let api_key_header = g
            .api_key_header
            .as_deref()
            .map(|name| self.identity_header(at.key("api_key_header"), name));
        let switch_tenant_header = match g.switch_tenant_header.as_deref() {
            Some(name) => self.identity_header(at.key("switch_tenant_header"), name),
            None => HeaderName::from_static(DEFAULT_SWITCH_TENANT_HEADER),
        };
        let jwt = file.jwt.as_ref().map(|j| self.jwt(j, folder));
        let rules_at = KeyPath::root().key("route_rules");
        let route_rules: Vec<RouteRule> = file
            .route_rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.route_rule(&rules_at.index(i), r.as_ref()?))
            .collect();
        let any_rules = !route_rules.is_empty()
            || file
                .tenants
                .iter()
                .any(|e| e.value.as_ref().is_some_and(|t| !t.route_rules.is_empty()));
        if any_rules && jwt.is_none() {
            self.errors.push(ConfigError::at_key(
                KeyPath::root().key("route_rules"),
                ROUTE_RULES_WITHOUT_JWT,
            ));
        }
        IdentityConfig {
            tenant_source: tenant_source(g.tenant_source).unwrap_or(TenantSource::Host),
            api_key_header,
            switch_tenant_header,
            jwt,
            route_rules,
        }
    }

    fn identity_header(&mut self, key: KeyPath, name: &str) -> HeaderName {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) if RESERVED_HEADERS.contains(&h.as_str()) || h == http::header::AUTHORIZATION => {
                self.errors.push(ConfigError::at_value(
                    key,
                    format!("{name:?} is a header the gateway sets or reads for itself; choose another name"),
                ));
                h
            }
            Ok(h) => h,
            Err(_) => {
                self.errors.push(ConfigError::at_value(
                    key,
                    format!("{name:?} is not a valid HTTP header name"),
                ));
                HeaderName::from_static("x-invalid")
            }
        }
    }

    fn jwt(&mut self, j: &JwtFile, folder: &Path) -> JwtConfig {
        let at = KeyPath::root().key("jwt");
        let mut keys = Vec::new();
        for (i, k) in j.keys.iter().enumerate() {
            if let Some(key) = self.jwt_key(&at.key("keys").index(i), k, folder) {
                keys.push(key);
            }
        }
        let jwks_file = j.jwks_file.as_ref().and_then(|label| {
            let path = folder.join(label);
            let key = at.key("jwks_file");
            match std::fs::read(&path) {
                Err(e) => {
                    self.errors.push(ConfigError::at_value(
                        key,
                        format!("cannot read {}: {e}", path.display()),
                    ));
                    None
                }
                Ok(bytes) => match parse_jwks(&bytes, "jwks_file") {
                    Err(e) => {
                        self.errors.push(ConfigError::at_value(
                            key,
                            format!("{}: {e}", path.display()),
                        ));
                        None
                    }
                    Ok(found) => {
                        keys.extend(found);
                        Some(JwksFile {
                            label: label.clone(),
                            path,
                            file_digest: file_digest(&bytes),
                        })
                    }
                },
            }
        });
        let jwks_url = j.jwks_url.as_ref().and_then(|url| {
            let key = at.key("jwks_url");
            match reqwest::Url::parse(url) {
                Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
                _ => {
                    self.errors.push(ConfigError::at_value(
                        key,
                        format!("{url:?} is not an http:// or https:// URL"),
                    ));
                    return None;
                }
            }
            let refresh = j
                .jwks_refresh_seconds
                .unwrap_or(DEFAULT_JWKS_REFRESH_SECONDS);
            if refresh < MIN_JWKS_REFRESH_SECONDS {
                self.errors.push(ConfigError::at_value(
                    at.key("jwks_refresh_seconds"),
                    format!("{refresh} s is too often; use at least {MIN_JWKS_REFRESH_SECONDS}"),
                ));
            }
            Some(JwksUrl {
                url: url.clone(),
                refresh: Duration::from_secs(refresh),
            })
        });
        if j.jwks_refresh_seconds.is_some() && j.jwks_url.is_none() {
            self.errors.push(ConfigError::at_key(
                at.key("jwks_refresh_seconds"),
                "only applies to jwks_url",
            ));
        }
        if keys.is_empty() && jwks_url.is_none() && j.jwks_file.is_none() && j.keys.is_empty() {
            self.errors.push(ConfigError::at_key(
                at.clone(),
                "has no keys: give jwks_file, jwks_url or [[jwt.keys]]",
            ));
        }
        // A token selects its key by kid: two keys with one kid would make that choice arbitrary.
        let mut seen: HashMap<&str, &str, FastHash> = HashMap::default();
        for key in &keys {
            match &key.kid {
                Some(kid) => {
                    if let Some(first) = seen.insert(kid, &key.origin) {
                        self.errors.push(ConfigError::at_key(
                            at.clone(),
                            format!("kid {kid:?} is used by {first} and by {}; each key needs its own kid", key.origin),
                        ));
                    }
                }
                None if keys.len() + usize::from(jwks_url.is_some()) > 1 => {
                    self.errors.push(ConfigError::at_key(
                        at.clone(),
                        format!("the key of {} has no kid; with more than one key, each needs a kid so tokens can name theirs", key.origin),
                    ));
                }
                None => {}
            }
        }
        let audience = match &j.audience {
            None => Vec::new(),
            Some(StringOrList::One(a)) => vec![a.clone()],
            Some(StringOrList::Many(list)) => list.clone(),
        };
        let name =
            |key: &str, value: Option<&String>, default: &str| -> Result<String, ConfigError> {
                match value {
                    Some(v) if v.trim().is_empty() => {
                        Err(ConfigError::at_value(at.key(key), "is empty"))
                    }
                    Some(v) => Ok(v.clone()),
                    None => Ok(default.to_owned()),
                }
            };
        let mut claim = |key: &str, value: Option<&String>, default: &str| {
            name(key, value, default).unwrap_or_else(|e| {
                self.errors.push(e);
                default.to_owned()
            })
        };
        let tenant_claim = claim(
            "tenant_claim",
            j.tenant_claim.as_ref(),
            DEFAULT_TENANT_CLAIM,
        );
        let roles_claim = claim("roles_claim", j.roles_claim.as_ref(), DEFAULT_ROLES_CLAIM);
        let tenants_claim = j
            .tenants_claim
            .as_ref()
            .map(|c| claim("tenants_claim", Some(c), "tenants"));
        let cache_size = match j.cache_size {
            None => DEFAULT_TOKEN_CACHE_SIZE,
            Some(n) if n <= MAX_TOKEN_CACHE_SIZE => n,
            Some(n) => {
                self.errors.push(ConfigError::at_value(
                    KeyPath::root().key("jwt").key("cache_size"),
                    format!("{n} cached tokens: use 0 (no cache) to {MAX_TOKEN_CACHE_SIZE}"),
                ));
                DEFAULT_TOKEN_CACHE_SIZE
            }
        };
        JwtConfig {
            issuer: j.issuer.clone(),
            audience,
            tenant_claim,
            tenants_claim,
            roles_claim,
            leeway_seconds: j.leeway_seconds.unwrap_or(DEFAULT_LEEWAY_SECONDS),
            cache_size,
            keys,
            jwks_file,
            jwks_url,
        }
    }

    fn jwt_key(&mut self, at: &KeyPath, k: &JwtKeyFile, folder: &Path) -> Option<JwtKey> {
        let Some(alg_name) = &k.alg else {
            self.errors.push(ConfigError::at_key(
                at.clone(),
                "needs alg (HS256, RS256, ES256, EdDSA, ...): a key verifies one algorithm only",
            ));
            return None;
        };
        let alg = match Algorithm::from_str(alg_name) {
            Ok(alg) => alg,
            Err(_) => {
                self.errors.push(ConfigError::at_value(
                    at.key("alg"),
                    format!("{alg_name:?} is not an algorithm the gateway verifies: HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"),
                ));
                return None;
            }
        };
        let env = |name: &str| std::env::var(name).map_err(|_| name.to_owned());
        let hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        let given: Vec<(&str, Result<Vec<u8>, String>)> = [
            (
                "secret",
                k.secret.as_ref().map(|s| Ok(s.as_bytes().to_vec())),
            ),
            (
                "secret_env",
                k.secret_env
                    .as_deref()
                    .map(|n| env(n).map(String::into_bytes)),
            ),
            (
                "public_key",
                k.public_key.as_ref().map(|s| Ok(s.as_bytes().to_vec())),
            ),
            (
                "public_key_file",
                k.public_key_file.as_ref().map(|f| {
                    let path = folder.join(f);
                    std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
                }),
            ),
            (
                "public_key_env",
                k.public_key_env
                    .as_deref()
                    .map(|n| env(n).map(String::into_bytes)),
            ),
        ]
        .into_iter()
        .filter_map(|(name, v)| Some((name, v?)))
        .collect();
        let [(source, material)] = given.as_slice() else {
            let wanted = if hmac {
                "secret or secret_env"
            } else {
                "public_key, public_key_file or public_key_env"
            };
            self.errors.push(ConfigError::at_key(
                at.clone(),
                format!("give exactly one of {wanted} for {alg_name}"),
            ));
            return None;
        };
        let material = match material {
            Ok(m) => m,
            Err(e) if source.ends_with("_env") => {
                self.errors.push(ConfigError::at_value(
                    at.key(source),
                    format!("environment variable {e} is not set (or not UTF-8)"),
                ));
                return None;
            }
            Err(e) => {
                self.errors
                    .push(ConfigError::at_value(at.key(source), e.clone()));
                return None;
            }
        };
        if hmac != source.starts_with("secret") {
            self.errors.push(ConfigError::at_key(
                at.key(source),
                format!(
                    "{alg_name} needs {}",
                    if hmac {
                        "a secret, not a public key"
                    } else {
                        "a public key, not a secret"
                    }
                ),
            ));
            return None;
        }
        let key = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                if material.len() < MIN_HMAC_SECRET {
                    self.errors.push(ConfigError::at_value(
                        at.key(source),
                        format!(
                            "the secret is {} bytes; use at least {MIN_HMAC_SECRET} random bytes",
                            material.len()
                        ),
                    ));
                    return None;
                }
                Ok(DecodingKey::from_secret(material))
            }
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(material),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(material),
            _ => DecodingKey::from_rsa_pem(material),
        };
        let key = match key {
            Ok(key) => key,
            Err(e) => {
                self.errors.push(ConfigError::at_value(
                    at.key(source),
                    format!("not a {alg_name} public key in PEM: {e}"),
                ));
                return None;
            }
        };
        Some(JwtKey {
            kid: k.kid.clone(),
            alg,
            origin: at.to_string(),
            digest: file_digest(material),
            key: Arc::new(key),
        })
    }

    pub(super) fn route_rule(&mut self, at: &KeyPath, r: &RouteRuleFile) -> Option<RouteRule> {
        let before = self.errors.len();
        let prefix = self.path_prefix(at, r.path_prefix.as_deref());
        if r.roles.is_empty() || r.roles.iter().any(|role| role.trim().is_empty()) {
            self.errors.push(ConfigError::at_key(
                at.key("roles"),
                "needs at least one role, none empty",
            ));
        }
        (self.errors.len() == before).then(|| RouteRule {
            path_prefix: prefix.unwrap_or_default(),
            roles: r.roles.clone(),
        })
    }

    /// A route rule's or route limit's `path_prefix`, without its trailing `/`.
    pub(super) fn path_prefix(&mut self, at: &KeyPath, prefix: Option<&str>) -> Option<String> {
        match prefix {
            None => {
                self.errors
                    .push(ConfigError::at_key(at.clone(), "needs path_prefix"));
                None
            }
            Some(p) if !p.starts_with('/') || crate::path::is_ambiguous(p) => {
                self.errors.push(ConfigError::at_value(
                    at.key("path_prefix"),
                    format!("{p:?} must start with '/' and contain no '//', '.' or '..' segments or encoded separators"),
                ));
                None
            }
            Some(p) if p.len() > 1 => Some(p.trim_end_matches('/').to_owned()),
            Some(p) => Some(p.to_owned()),
        }
    }

    pub(super) fn api_keys(&mut self, at: &KeyPath, keys: &[ApiKeyFile]) -> Vec<ApiKeyConfig> {
        let mut out = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let at = at.index(i);
            let before = self.errors.len();
            let id = match &k.id {
                Some(id) if !id.trim().is_empty() => id.clone(),
                _ => {
                    self.errors
                        .push(ConfigError::at_key(at.clone(), "needs an id"));
                    String::new()
                }
            };
            if out.iter().any(|o: &ApiKeyConfig| o.id == id) {
                self.errors.push(ConfigError::at_value(
                    at.key("id"),
                    format!("{id:?} is used by another key of this tenant"),
                ));
            }
            let sha256 = match k.sha256.as_deref().map(from_hex) {
                Some(Some(d)) => d,
                Some(None) => {
                    self.errors.push(ConfigError::at_value(
                        at.key("sha256"),
                        "must be 64 hexadecimal characters (the SHA-256 of the key)",
                    ));
                    [0; 32]
                }
                None => {
                    self.errors
                        .push(ConfigError::at_key(at.clone(), "needs sha256"));
                    [0; 32]
                }
            };
            let mut time = |key: &str, value: Option<&String>| -> Option<i64> {
                let text = value?;
                match chrono::DateTime::parse_from_rfc3339(text) {
                    Ok(t) => Some(t.timestamp()),
                    Err(e) => {
                        self.errors.push(ConfigError::at_value(
                            at.key(key),
                            format!("{text:?} is not an RFC 3339 time (2026-01-31T12:00:00Z): {e}"),
                        ));
                        None
                    }
                }
            };
            let created = time("created", k.created.as_ref());
            let expires = time("expires", k.expires.as_ref());
            let revoked = time("revoked", k.revoked.as_ref());
            if k.created.is_none() {
                self.errors
                    .push(ConfigError::at_key(at.clone(), "needs created"));
            }
            if self.errors.len() == before {
                out.push(ApiKeyConfig {
                    id,
                    sha256,
                    created: created.unwrap_or(0),
                    expires,
                    revoked,
                });
            }
        }
        out
    }

    /// The admin API's token; without one, the admin API may only listen on loopback.
    pub(super) fn admin_token(&mut self, a: &AdminFile, listen: SocketAddr) -> Option<AdminToken> {
        let at = KeyPath::root().key("admin");
        let token = match (&a.token_sha256, &a.token_env) {
            (Some(_), Some(_)) => {
                self.errors.push(ConfigError::at_key(
                    at.key("token_env"),
                    "give token_sha256 or token_env, not both",
                ));
                None
            }
            (Some(hex), None) => match from_hex(hex) {
                Some(sha256) => Some(AdminToken {
                    sha256,
                    source: "token_sha256".into(),
                }),
                None => {
                    self.errors.push(ConfigError::at_value(
                        at.key("token_sha256"),
                        "must be 64 hexadecimal characters: the SHA-256 of the token (`tenantgate admin-token` makes one)",
                    ));
                    None
                }
            },
            (None, Some(name)) => match std::env::var(name) {
                Ok(token) if token.len() >= 16 => Some(AdminToken {
                    sha256: crate::identity::api_key::sha256(&token),
                    source: format!("token_env = {name:?}"),
                }),
                Ok(_) => {
                    self.errors.push(ConfigError::at_value(
                        at.key("token_env"),
                        format!("the token in {name} is shorter than 16 characters"),
                    ));
                    None
                }
                Err(_) => {
                    self.errors.push(ConfigError::at_value(
                        at.key("token_env"),
                        format!("environment variable {name} is not set (or not UTF-8)"),
                    ));
                    None
                }
            },
            (None, None) => None,
        };
        let failed = a.token_sha256.is_some() || a.token_env.is_some();
        if token.is_none() && !failed && !listen.ip().is_loopback() {
            self.errors.push(ConfigError::at_value(
                at.key("listen"),
                format!("{listen} is reachable from other hosts, and the admin API has no token: set [admin] token_sha256 or token_env, or listen on 127.0.0.1"),
            ));
        }
        token
    }
}
