//! The responses the gateway makes itself, instead of an upstream: each has a stable `error` code that
//! clients and dashboards can rely on, and a small JSON body that carries the request id.

use bytes::Bytes;
use http::StatusCode;

/// Why the gateway answered a request itself. The `code()` strings are a public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GatewayError {
    /// The request could not be parsed as HTTP.
    BadRequest,
    /// The Host header (or HTTP/2 authority) is missing, repeated, or not a host name.
    BadHost,
    /// The host maps to no tenant and no reserved host.
    UnknownTenant,
    /// The host maps to a tenant that is suspended.
    TenantSuspended,
    /// The request came on a TLS connection opened for another tenant's name (SNI): the client
    /// should open a connection for this host (browsers do so by themselves on 421).
    MisdirectedRequest,
    /// Every upstream of the pool is unhealthy, ejected, or was already tried.
    NoHealthyUpstream,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The upstream connection broke or answered with something that is not HTTP.
    UpstreamError,
    /// A bug or resource exhaustion in the gateway.
    InternalError,
}

impl GatewayError {
    pub const ALL: [GatewayError; 9] = [
        GatewayError::BadRequest,
        GatewayError::BadHost,
        GatewayError::UnknownTenant,
        GatewayError::TenantSuspended,
        GatewayError::MisdirectedRequest,
        GatewayError::NoHealthyUpstream,
        GatewayError::UpstreamTimeout,
        GatewayError::UpstreamError,
        GatewayError::InternalError,
    ];

    pub fn code(self) -> &'static str {
        match self {
            GatewayError::BadRequest => "bad_request",
            GatewayError::BadHost => "bad_host",
            GatewayError::UnknownTenant => "unknown_tenant",
            GatewayError::TenantSuspended => "tenant_suspended",
            GatewayError::MisdirectedRequest => "misdirected_request",
            GatewayError::NoHealthyUpstream => "no_healthy_upstream",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::UpstreamError => "upstream_error",
            GatewayError::InternalError => "internal_error",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            GatewayError::BadRequest | GatewayError::BadHost => StatusCode::BAD_REQUEST,
            GatewayError::UnknownTenant => StatusCode::NOT_FOUND,
            GatewayError::TenantSuspended => StatusCode::FORBIDDEN,
            GatewayError::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            GatewayError::NoHealthyUpstream => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamError => StatusCode::BAD_GATEWAY,
            GatewayError::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A fixed sentence: error bodies never echo what the client sent.
    pub fn message(self) -> &'static str {
        match self {
            GatewayError::BadRequest => "the request is not valid HTTP",
            GatewayError::BadHost => "the request has no valid Host header",
            GatewayError::UnknownTenant => "no tenant is served at this host",
            GatewayError::TenantSuspended => "this tenant is suspended",
            GatewayError::MisdirectedRequest => {
                "this connection was opened for another host; open one for this host"
            }
            GatewayError::NoHealthyUpstream => "no healthy upstream is available for this request",
            GatewayError::UpstreamTimeout => "the upstream did not answer in time",
            GatewayError::UpstreamError => "the upstream failed to answer",
            GatewayError::InternalError => "the gateway failed to handle the request",
        }
    }

    /// `{"error": code, "message": ..., "request_id": ...}`.
    pub fn body(self, request_id: &str) -> Bytes {
        let body = serde_json::json!({
            "error": self.code(),
            "message": self.message(),
            "request_id": request_id,
        });
        Bytes::from(body.to_string())
    }

    /// Position in `ALL` (declaration order), for per-code counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_with_the_code_and_request_id() {
        let body = GatewayError::UnknownTenant.body("req-1");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"], "unknown_tenant");
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["message"], "no tenant is served at this host");
    }

    #[test]
    fn codes_are_unique_and_indexed() {
        for (i, e) in GatewayError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(
                GatewayError::ALL
                    .iter()
                    .filter(|o| o.code() == e.code())
                    .count(),
                1
            );
        }
    }
}
