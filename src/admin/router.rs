//! Which endpoint a method and path name. Every path has one set of methods; a path the API has
//! with a method it does not take is a `405` that names them in `Allow` (RFC 9110, 15.5.6).

use http::Method;

/// An admin endpoint, with the path segments it carries (as sent, not percent-decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route<'a> {
    Healthz,
    Metrics,
    Status,
    Config,
    Certs,
    RenewCert(&'a str),
    Tenants,
    PushTenant,
    Tenant(&'a str),
    TenantExport(&'a str),
    TenantAction(&'a str, TenantAction),
    AddKey(&'a str),
    RevokeKey(&'a str, &'a str),
    PoolHealth,
    Export,
    Audit,
    Apply,
    Reload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TenantAction {
    Promote,
    Rollback,
    Suspend,
    Maintenance,
    Activate,
}

impl TenantAction {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "promote" => TenantAction::Promote,
            "rollback" => TenantAction::Rollback,
            "suspend" => TenantAction::Suspend,
            "maintenance" => TenantAction::Maintenance,
            "activate" => TenantAction::Activate,
            _ => return None,
        })
    }
}

/// Why a request reaches no endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unrouted {
    NotFound,
    /// The path exists; `allow` is the value of the `Allow` header.
    MethodNotAllowed {
        allow: &'static str,
    },
}

/// The endpoints of one path: what `GET` (and `HEAD`) reach, and what `POST` reaches.
struct Resource<'a> {
    read: Option<Route<'a>>,
    write: Option<Route<'a>>,
}

impl<'a> Resource<'a> {
    fn read(route: Route<'a>) -> Self {
        Resource {
            read: Some(route),
            write: None,
        }
    }

    fn write(route: Route<'a>) -> Self {
        Resource {
            read: None,
            write: Some(route),
        }
    }

    fn allow(&self) -> &'static str {
        match (self.read.is_some(), self.write.is_some()) {
            (true, true) => "GET, HEAD, POST",
            (true, false) => "GET, HEAD",
            (false, _) => "POST",
        }
    }
}

fn resource<'a>(segments: &[&'a str]) -> Option<Resource<'a>> {
    Some(match *segments {
        ["healthz"] => Resource::read(Route::Healthz),
        ["metrics"] => Resource::read(Route::Metrics),
        ["status"] => Resource::read(Route::Status),
        ["config"] => Resource::read(Route::Config),
        ["certs"] => Resource::read(Route::Certs),
        ["certs", name, "renew"] => Resource::write(Route::RenewCert(name)),
        ["tenants"] => Resource {
            read: Some(Route::Tenants),
            write: Some(Route::PushTenant),
        },
        ["tenants", id] => Resource::read(Route::Tenant(id)),
        ["tenants", id, "export"] => Resource::read(Route::TenantExport(id)),
        ["tenants", id, "keys"] => Resource::write(Route::AddKey(id)),
        ["tenants", id, "keys", key, "revoke"] => Resource::write(Route::RevokeKey(id, key)),
        ["tenants", id, action] => {
            Resource::write(Route::TenantAction(id, TenantAction::parse(action)?))
        }
        ["pools", "health"] => Resource::read(Route::PoolHealth),
        ["export"] => Resource::read(Route::Export),
        ["audit"] => Resource::read(Route::Audit),
        ["apply"] => Resource::write(Route::Apply),
        ["reload"] => Resource::write(Route::Reload),
        _ => return None,
    })
}

/// The endpoint `method path` names. Slashes around the path are ignored; an empty segment inside
/// it (`/tenants//export`) names nothing.
pub(super) fn route<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, Unrouted> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(Unrouted::NotFound);
    }
    let resource = resource(&segments).ok_or(Unrouted::NotFound)?;
    let chosen = match *method {
        Method::GET | Method::HEAD => resource.read,
        Method::POST => resource.write,
        _ => None,
    };
    chosen.ok_or(Unrouted::MethodNotAllowed {
        allow: resource.allow(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_reach_their_endpoints() {
        assert_eq!(route(&Method::GET, "/healthz"), Ok(Route::Healthz));
        assert_eq!(route(&Method::HEAD, "/status"), Ok(Route::Status));
        assert_eq!(route(&Method::GET, "/status/"), Ok(Route::Status));
        assert_eq!(route(&Method::GET, "/tenants"), Ok(Route::Tenants));
        assert_eq!(route(&Method::POST, "/tenants"), Ok(Route::PushTenant));
        assert_eq!(
            route(&Method::GET, "/tenants/acme"),
            Ok(Route::Tenant("acme"))
        );
        assert_eq!(
            route(&Method::GET, "/tenants/acme/export"),
            Ok(Route::TenantExport("acme"))
        );
        assert_eq!(
            route(&Method::POST, "/tenants/acme/suspend"),
            Ok(Route::TenantAction("acme", TenantAction::Suspend))
        );
        assert_eq!(
            route(&Method::POST, "/tenants/acme/keys/k1/revoke"),
            Ok(Route::RevokeKey("acme", "k1"))
        );
        assert_eq!(
            route(&Method::POST, "/certs/shop.test/renew"),
            Ok(Route::RenewCert("shop.test"))
        );
    }

    #[test]
    fn a_known_path_with_another_method_names_its_methods() {
        let allow = |method: Method, path: &str| match route(&method, path) {
            Err(Unrouted::MethodNotAllowed { allow }) => Some(allow),
            _ => None,
        };
        assert_eq!(allow(Method::DELETE, "/tenants"), Some("GET, HEAD, POST"));
        assert_eq!(allow(Method::POST, "/status"), Some("GET, HEAD"));
        assert_eq!(allow(Method::GET, "/reload"), Some("POST"));
        assert_eq!(allow(Method::PUT, "/tenants/acme"), Some("GET, HEAD"));
        assert_eq!(allow(Method::GET, "/tenants/acme/promote"), Some("POST"));
        assert_eq!(allow(Method::GET, "/tenants/acme/keys"), Some("POST"));
        assert_eq!(allow(Method::OPTIONS, "/certs/x/renew"), Some("POST"));
        // `export` is the tenant file, not an action: it is read.
        assert_eq!(
            allow(Method::POST, "/tenants/acme/export"),
            Some("GET, HEAD")
        );
    }

    #[test]
    fn unknown_paths_and_actions_are_not_found() {
        for path in [
            "/",
            "/nope",
            "/tenants/acme/explode",
            "/tenants//export",
            "/pools",
            "/tenants/acme/keys/k1",
        ] {
            assert_eq!(
                route(&Method::POST, path),
                Err(Unrouted::NotFound),
                "{path}"
            );
            assert_eq!(route(&Method::GET, path), Err(Unrouted::NotFound), "{path}");
        }
    }
}
