//! Admission: from a request's host, credential and path to the tenant it acts for and its route,
//! or the reason it is refused.
//!
//! The rules, in the order they are applied:
//! - a reserved host with its own pool needs nothing;
//! - a suspended host tenant is refused before any credential is read;
//! - a credential is verified when the tenant source is `claim` or `host_and_claim`, or when a
//!   route rule covers the path. Whenever one is verified on a tenant's host, it must be that
//!   tenant's (`tenant_mismatch`): a token of one tenant never opens another tenant's paths;
//! - the credential's tenant may be switched (`X-Switch-Tenant`) to one its token lists;
//! - route rules (global, then the tenant's) each need one of their roles.

use std::sync::Arc;

use http::HeaderMap;

use super::table::{Refused, Route, RoutingTable, Target};
use crate::config::model::{RouteRule, TenantSource};
use crate::gateway_error::GatewayError;
use crate::identity::rules::{covers, is_ambiguous};
use crate::identity::{api_key, credential, single_header, AuthMethod, Credential, Principal};
use crate::tenant::TenantStatus;

/// A request the gateway will proxy.
#[derive(Debug)]
pub struct Admitted {
    pub route: Route,
    /// The verified credential, when one was needed.
    pub principal: Option<Arc<Principal>>,
}

impl RoutingTable {
    /// Decides whom a request for `host` (canonical) acts for. `now` is Unix seconds (API key
    /// expiry), `roll` the request's canary roll (0 to 99).
    pub fn admit_request(
        &self,
        host: &str,
        headers: &HeaderMap,
        path: &str,
        roll: u8,
        now: i64,
    ) -> Result<Admitted, Refused> {
        let (host_tenant, source) = match self.target(host)? {
            Target::Reserved(i) => {
                return Ok(Admitted {
                    route: self.route_reserved(i)?,
                    principal: None,
                });
            }
            Target::Tenant(i) => {
                let tenant = self.tenant(i).ok_or_else(Refused::unknown)?;
                if tenant.status == TenantStatus::Suspended {
                    return Err(refuse(GatewayError::TenantSuspended, Some(i)));
                }
                (Some(i), tenant.tenant_source)
            }
            Target::Shared => (None, TenantSource::Claim),
        };
        let host_rules = match host_tenant {
            Some(i) => self.rules_apply(i, path).map_err(|e| refuse(e, Some(i)))?,
            None => false,
        };
        if source == TenantSource::Host && !host_rules {
            let route = self.route_tenant(host_tenant.ok_or_else(Refused::unknown)?, roll)?;
            return Ok(Admitted {
                route,
                principal: None,
            });
        }

        let principal = self
            .authenticate(headers, now)
            .map_err(|e| refuse(e, host_tenant))?;
        let switch_to = single_header(
            headers,
            &self.identity().switch_tenant_header,
            GatewayError::TenantSwitchForbidden,
        )
        .map_err(|e| refuse(e, host_tenant))?
        .map(str::trim);
        let acting = principal
            .acting_tenant(switch_to)
            .map_err(|e| refuse(e, host_tenant))?;
        let tenant = match host_tenant {
            Some(i) => {
                let same = self.tenant(i).is_some_and(|t| t.id.as_str() == acting);
                if !same {
                    return Err(refuse(GatewayError::TenantMismatch, Some(i)));
                }
                i
            }
            None => self
                .tenant_index(acting)
                .ok_or_else(|| refuse(GatewayError::UnknownTenant, None))?,
        };
        if host_tenant.is_none() {
            self.rules_apply(tenant, path)
                .map_err(|e| refuse(e, Some(tenant)))?;
        }
        self.check_roles(tenant, path, &principal)
            .map_err(|e| refuse(e, Some(tenant)))?;
        let route = self.route_tenant(tenant, roll)?;
        Ok(Admitted {
            route,
            principal: Some(principal),
        })
    }

    /// The global route rules, then tenant `i`'s.
    fn route_rules(&self, i: usize) -> impl Iterator<Item = &RouteRule> {
        let own = self.tenant(i).map_or(&[][..], |t| &t.route_rules[..]);
        self.identity().route_rules.iter().chain(own)
    }

    /// Whether a route rule covers `path` for tenant `i`. Where any rule exists, an ambiguous path is
    /// refused rather than matched.
    fn rules_apply(&self, i: usize, path: &str) -> Result<bool, GatewayError> {
        let mut rules = self.route_rules(i).peekable();
        if rules.peek().is_none() {
            return Ok(false);
        }
        if is_ambiguous(path) {
            return Err(GatewayError::AmbiguousPath);
        }
        Ok(rules.any(|r| covers(r, path)))
    }

    fn check_roles(&self, i: usize, path: &str, principal: &Principal) -> Result<(), GatewayError> {
        let missing = self
            .route_rules(i)
            .any(|r| covers(r, path) && !principal.has_any_role(&r.roles));
        match missing {
            true => Err(GatewayError::MissingRole),
            false => Ok(()),
        }
    }

    /// Verifies the request's token or API key.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<Arc<Principal>, GatewayError> {
        let identity = self.identity();
        match credential(headers, identity.api_key_header.as_ref())? {
            None => Err(GatewayError::MissingCredentials),
            Some(Credential::Jwt(token)) => match &identity.jwt {
                Some(verifier) => verifier.verify(token, now),
                // No [jwt]: no key can verify it.
                None => Err(GatewayError::UnknownKeyId),
            },
            Some(Credential::ApiKey(key)) => {
                let id = api_key::tenant_prefix(key).ok_or(GatewayError::InvalidApiKey)?;
                let tenant = self
                    .tenant_index(id)
                    .and_then(|i| self.tenant(i))
                    .ok_or(GatewayError::InvalidApiKey)?;
                let key_id = tenant.api_keys.check(key, now)?;
                Ok(Arc::new(Principal {
                    method: AuthMethod::ApiKey,
                    tenant: Some(id.to_owned()),
                    tenants: Vec::new(),
                    subject: None,
                    roles: Vec::new(),
                    key_id: Some(key_id.to_owned()),
                }))
            }
        }
    }
}

fn refuse(error: GatewayError, tenant: Option<usize>) -> Refused {
    Refused { error, tenant }
}
