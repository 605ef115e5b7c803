//! Who a request acts for, proven by a credential: a signed token (JWT) or a tenant's API key.
//!
//! Nothing here knows about TOML or the request path. The routing table holds a `JwtVerifier` built
//! from the validated config; `admission` combines what it proves with the request's host. One piece
//! is a Pingora background service: `jwks::JwksRefresher`, which fetches remote keys.

pub mod api_key;
pub mod crypto;
pub mod jwks;
pub mod jwt;
pub mod token_cache;

use http::header::{HeaderMap, HeaderName, AUTHORIZATION};

use crate::gateway_error::GatewayError;

/// What a request presented to prove whom it acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// A bearer token with the three dot-separated parts of a JWS.
    Jwt(&'a str),
    /// A bearer value without dots, or the configured API-key header's value.
    ApiKey(&'a str),
}

/// The request's credential, if it has one. The API-key header wins over `Authorization`; an
/// `Authorization` of another scheme (Basic, say) is the backend's business, not a credential here.
/// Repeated or non-text credentials are refused rather than guessed between.
pub fn credential<'a>(
    headers: &'a HeaderMap,
    api_key_header: Option<&HeaderName>,
) -> Result<Option<Credential<'a>>, GatewayError> {
    let malformed = GatewayError::MalformedToken;
    if let Some(name) = api_key_header {
        if let Some(value) = single_header(headers, name, malformed)? {
            return Ok(Some(Credential::ApiKey(value.trim())));
        }
    }
    let Some(value) = single_header(headers, &AUTHORIZATION, malformed)? else {
        return Ok(None);
    };
    let Some(token) = bearer_token(value) else {
        return Ok(None);
    };
    if token.is_empty() {
        return Err(malformed);
    }
    Ok(Some(match token.contains('.') {
        true => Credential::Jwt(token),
        false => Credential::ApiKey(token),
    }))
}

/// The token of an `Authorization: Bearer <token>` value (trimmed; possibly empty); `None` for
/// another scheme. The admin API reads its own token with it too.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The one value of header `name`, as text; `error` when it is repeated or not text (the gateway
/// does not guess which of two credentials or switch targets was meant).
pub fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    error: GatewayError,
) -> Result<Option<&'a str>, GatewayError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(error);
    }
    first.to_str().map(Some).map_err(|_| error)
}

/// How the request proved its identity, as the upstream is told (`X-Auth-Method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Jwt,
    ApiKey,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api_key",
        }
    }
}

/// A verified credential: whom it speaks for, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub method: AuthMethod,
    /// The tenant the credential names (a token's tenant claim, an API key's tenant).
    pub tenant: Option<String>,
    /// Tenants a token's subject may switch to (besides `tenant`).
    pub tenants: Vec<String>,
    /// A token's `sub`.
    pub subject: Option<String>,
    pub roles: Vec<String>,
    /// The API key's id.
    pub key_id: Option<String>,
}

impl Principal {
    /// The tenant this request acts for: the one `switch_to` asks for if the credential lists it,
    /// else the credential's own.
    pub fn acting_tenant<'a>(
        &'a self,
        switch_to: Option<&'a str>,
    ) -> Result<&'a str, GatewayError> {
        match switch_to {
            Some(wanted) => {
                let allowed = self.tenant.as_deref() == Some(wanted)
                    || (self.method == AuthMethod::Jwt && self.tenants.iter().any(|t| t == wanted));
                match allowed {
                    true => Ok(wanted),
                    false => Err(GatewayError::TenantSwitchForbidden),
                }
            }
            None => self.tenant.as_deref().ok_or(GatewayError::NoTenantClaim),
        }
    }

    pub fn has_any_role(&self, wanted: &[String]) -> bool {
        wanted.iter().any(|w| self.roles.contains(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn bearer_values_are_told_apart_by_shape() {
        let h = headers(&[("authorization", "Bearer a.b.c")]);
        assert_eq!(credential(&h, None), Ok(Some(Credential::Jwt("a.b.c"))));
        let h = headers(&[("authorization", "bearer  acme_abc ")]);
        assert_eq!(
            credential(&h, None),
            Ok(Some(Credential::ApiKey("acme_abc")))
        );
        let h = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(credential(&h, None), Ok(None));
        let h = headers(&[("authorization", "Bearer ")]);
        assert_eq!(credential(&h, None), Ok(None));
        let h = headers(&[
            ("authorization", "Bearer a.b.c"),
            ("authorization", "Bearer x"),
        ]);
        assert_eq!(credential(&h, None), Err(GatewayError::MalformedToken));
    }

    #[test]
    fn the_api_key_header_wins() {
        let name = HeaderName::from_static("x-api-key");
        let h = headers(&[("authorization", "Bearer a.b.c"), ("x-api-key", "acme_k")]);
        assert_eq!(
            credential(&h, Some(&name)),
            Ok(Some(Credential::ApiKey("acme_k")))
        );
    }

    fn principal(method: AuthMethod, tenant: Option<&str>, tenants: &[&str]) -> Principal {
        Principal {
            method,
            tenant: tenant.map(str::to_owned),
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
            subject: None,
            roles: vec!["admin".into()],
            key_id: None,
        }
    }

    #[test]
    fn switching_stays_within_the_listed_tenants() {
        let p = principal(AuthMethod::Jwt, Some("acme"), &["acme", "globex"]);
        assert_eq!(p.acting_tenant(None), Ok("acme"));
        assert_eq!(p.acting_tenant(Some("globex")), Ok("globex"));
        assert_eq!(
            p.acting_tenant(Some("initech")),
            Err(GatewayError::TenantSwitchForbidden)
        );
        let no_home = principal(AuthMethod::Jwt, None, &["globex"]);
        assert_eq!(
            no_home.acting_tenant(None),
            Err(GatewayError::NoTenantClaim)
        );
        assert_eq!(no_home.acting_tenant(Some("globex")), Ok("globex"));
        // A key belongs to one tenant: it cannot switch even to a tenant it happens to list.
        let key = principal(AuthMethod::ApiKey, Some("acme"), &["globex"]);
        assert_eq!(
            key.acting_tenant(Some("globex")),
            Err(GatewayError::TenantSwitchForbidden)
        );
        assert!(key.has_any_role(&["x".into(), "admin".into()]));
        assert!(!key.has_any_role(&["x".into()]));
    }
}
