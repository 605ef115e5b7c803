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
    /// The tenant is down for maintenance (`status = "maintenance"`): unlike a suspension, it
    /// comes back, and the answer says when to retry.
    TenantMaintenance,
    /// The request came on a TLS connection opened for another tenant's name (SNI): the client
    /// should open a connection for this host (browsers do so by themselves on 421).
    MisdirectedRequest,
    /// The path could be read as another path (`//`, `.` or `..` segments, encoded separators) where
    /// route rules or route limits apply.
    AmbiguousPath,
    /// A token or API key is needed here and the request has none.
    MissingCredentials,
    /// The credential is not a well-formed token (or is repeated).
    MalformedToken,
    /// The token's algorithm is `none` or one the gateway does not verify.
    UnsupportedAlgorithm,
    /// The token names another algorithm than its key is bound to (algorithm confusion).
    AlgorithmMismatch,
    /// The token's `kid` names no known key.
    UnknownKeyId,
    /// The token's signature does not verify.
    InvalidSignature,
    /// The token's `exp` has passed.
    TokenExpired,
    /// The token's `nbf` is still ahead.
    TokenNotYetValid,
    /// The token's `iss` is missing or not the configured issuer.
    WrongIssuer,
    /// The token's `aud` is missing or not the configured audience.
    WrongAudience,
    /// The API key is not one the gateway knows.
    InvalidApiKey,
    /// The API key was revoked.
    ApiKeyRevoked,
    /// The API key's expiry has passed.
    ApiKeyExpired,
    /// A valid token that names no tenant, where one is needed.
    NoTenantClaim,
    /// The credential's tenant is not the host's.
    TenantMismatch,
    /// The switch-tenant header names a tenant the credential does not list.
    TenantSwitchForbidden,
    /// The path needs a role the token does not carry.
    MissingRole,
    /// The client's address is not in the tenant's `allow_ips`, or is in its `deny_ips`.
    IpNotAllowed,
    /// The request body is over the tenant's `max_request_body_bytes`.
    RequestTooLarge,
    /// The request line and headers are over the tenant's `max_request_header_bytes`.
    RequestHeadersTooLarge,
    /// The request does not fit one of its tenant's rate limits (tenant, credential or route).
    RateLimited,
    /// The tenant has as many requests in flight as its concurrency cap allows (and its queue, if
    /// any, is full or timed out).
    TenantOverloaded,
    /// The fleet's rate-limit store (Redis) cannot be reached and `on_error = "deny"`.
    RateLimiterUnavailable,
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
    pub const ALL: [GatewayError; 34] = [
        GatewayError::BadRequest,
        GatewayError::BadHost,
        GatewayError::UnknownTenant,
        GatewayError::TenantSuspended,
        GatewayError::TenantMaintenance,
        GatewayError::MisdirectedRequest,
        GatewayError::AmbiguousPath,
        GatewayError::MissingCredentials,
        GatewayError::MalformedToken,
        GatewayError::UnsupportedAlgorithm,
        GatewayError::AlgorithmMismatch,
        GatewayError::UnknownKeyId,
        GatewayError::InvalidSignature,
        GatewayError::TokenExpired,
        GatewayError::TokenNotYetValid,
        GatewayError::WrongIssuer,
        GatewayError::WrongAudience,
        GatewayError::InvalidApiKey,
        GatewayError::ApiKeyRevoked,
        GatewayError::ApiKeyExpired,
        GatewayError::NoTenantClaim,
        GatewayError::TenantMismatch,
        GatewayError::TenantSwitchForbidden,
        GatewayError::MissingRole,
        GatewayError::IpNotAllowed,
        GatewayError::RequestTooLarge,
        GatewayError::RequestHeadersTooLarge,
        GatewayError::RateLimited,
        GatewayError::TenantOverloaded,
        GatewayError::RateLimiterUnavailable,
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
            GatewayError::TenantMaintenance => "tenant_maintenance",
            GatewayError::MisdirectedRequest => "misdirected_request",
            GatewayError::AmbiguousPath => "ambiguous_path",
            GatewayError::MissingCredentials => "missing_credentials",
            GatewayError::MalformedToken => "malformed_token",
            GatewayError::UnsupportedAlgorithm => "unsupported_algorithm",
            GatewayError::AlgorithmMismatch => "algorithm_mismatch",
            GatewayError::UnknownKeyId => "unknown_kid",
            GatewayError::InvalidSignature => "invalid_signature",
            GatewayError::TokenExpired => "token_expired",
            GatewayError::TokenNotYetValid => "token_not_yet_valid",
            GatewayError::WrongIssuer => "wrong_issuer",
            GatewayError::WrongAudience => "wrong_audience",
            GatewayError::InvalidApiKey => "invalid_api_key",
            GatewayError::ApiKeyRevoked => "api_key_revoked",
            GatewayError::ApiKeyExpired => "api_key_expired",
            GatewayError::NoTenantClaim => "no_tenant_claim",
            GatewayError::TenantMismatch => "tenant_mismatch",
            GatewayError::TenantSwitchForbidden => "tenant_switch_forbidden",
            GatewayError::MissingRole => "missing_role",
            GatewayError::IpNotAllowed => "ip_not_allowed",
            GatewayError::RequestTooLarge => "request_too_large",
            GatewayError::RequestHeadersTooLarge => "request_headers_too_large",
            GatewayError::RateLimited => "rate_limited",
            GatewayError::TenantOverloaded => "tenant_overloaded",
            GatewayError::RateLimiterUnavailable => "rate_limiter_unavailable",
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
            GatewayError::TenantMaintenance => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            GatewayError::AmbiguousPath => StatusCode::BAD_REQUEST,
            GatewayError::MissingCredentials => StatusCode::UNAUTHORIZED,
            GatewayError::MalformedToken => StatusCode::UNAUTHORIZED,
            GatewayError::UnsupportedAlgorithm => StatusCode::UNAUTHORIZED,
            GatewayError::AlgorithmMismatch => StatusCode::UNAUTHORIZED,
            GatewayError::UnknownKeyId => StatusCode::UNAUTHORIZED,
            GatewayError::InvalidSignature => StatusCode::UNAUTHORIZED,
            GatewayError::TokenExpired => StatusCode::UNAUTHORIZED,
            GatewayError::TokenNotYetValid => StatusCode::UNAUTHORIZED,
            GatewayError::WrongIssuer => StatusCode::UNAUTHORIZED,
            GatewayError::WrongAudience => StatusCode::UNAUTHORIZED,
            GatewayError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            GatewayError::ApiKeyRevoked => StatusCode::UNAUTHORIZED,
            GatewayError::ApiKeyExpired => StatusCode::UNAUTHORIZED,
            GatewayError::NoTenantClaim => StatusCode::FORBIDDEN,
            GatewayError::TenantMismatch => StatusCode::FORBIDDEN,
            GatewayError::TenantSwitchForbidden => StatusCode::FORBIDDEN,
            GatewayError::MissingRole => StatusCode::FORBIDDEN,
            GatewayError::IpNotAllowed => StatusCode::FORBIDDEN,
            GatewayError::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::RequestHeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::TenantOverloaded => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::RateLimiterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
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
            GatewayError::TenantMaintenance => {
                "this tenant is down for maintenance; retry after the Retry-After seconds"
            }
            GatewayError::MisdirectedRequest => {
                "this connection was opened for another host; open one for this host"
            }
            GatewayError::AmbiguousPath => {
                "the request path is ambiguous where route rules or route limits apply; normalize it"
            }
            GatewayError::MissingCredentials => "this request needs a bearer token or an API key",
            GatewayError::MalformedToken => "the credential is not a well-formed token",
            GatewayError::UnsupportedAlgorithm => "the token's algorithm is not accepted",
            GatewayError::AlgorithmMismatch => "the token's algorithm is not its key's",
            GatewayError::UnknownKeyId => "the token's key id is not known",
            GatewayError::InvalidSignature => "the token's signature is not valid",
            GatewayError::TokenExpired => "the token has expired",
            GatewayError::TokenNotYetValid => "the token is not valid yet",
            GatewayError::WrongIssuer => "the token was not issued by the expected issuer",
            GatewayError::WrongAudience => "the token is not meant for this audience",
            GatewayError::InvalidApiKey => "the API key is not valid",
            GatewayError::ApiKeyRevoked => "the API key has been revoked",
            GatewayError::ApiKeyExpired => "the API key has expired",
            GatewayError::NoTenantClaim => "the token names no tenant",
            GatewayError::TenantMismatch => {
                "the credential belongs to another tenant than this host"
            }
            GatewayError::TenantSwitchForbidden => {
                "the credential may not act for the requested tenant"
            }
            GatewayError::MissingRole => "this path needs a role the credential does not carry",
            GatewayError::IpNotAllowed => "this tenant does not accept requests from this address",
            GatewayError::RequestTooLarge => "the request body is larger than this tenant accepts",
            GatewayError::RequestHeadersTooLarge => {
                "the request headers are larger than this tenant accepts"
            }
            GatewayError::RateLimited => "too many requests; retry after the Retry-After seconds",
            GatewayError::TenantOverloaded => {
                "this tenant has too many requests in flight; retry shortly"
            }
            GatewayError::RateLimiterUnavailable => {
                "the rate limiter is unavailable and refuses requests meanwhile; retry shortly"
            }
            GatewayError::NoHealthyUpstream => "no healthy upstream is available for this request",
            GatewayError::UpstreamTimeout => "the upstream did not answer in time",
            GatewayError::UpstreamError => "the upstream failed to answer",
            GatewayError::InternalError => "the gateway failed to handle the request",
        }
    }

    /// The gRPC status a gRPC client gets instead of the JSON body (the codes of
    /// `grpc/status.proto`): what the refusal means, as a gRPC client would act on it.
    pub fn grpc_status(self) -> u8 {
        use GatewayError::*;
        match self {
            BadRequest | BadHost | AmbiguousPath => 3, // INVALID_ARGUMENT
            UnknownTenant => 5,                        // NOT_FOUND
            TenantSuspended
            | NoTenantClaim
            | TenantMismatch
            | TenantSwitchForbidden
            | MissingRole
            | IpNotAllowed => 7, // PERMISSION_DENIED
            MissingCredentials | MalformedToken | UnsupportedAlgorithm | AlgorithmMismatch
            | UnknownKeyId | InvalidSignature | TokenExpired | TokenNotYetValid | WrongIssuer
            | WrongAudience | InvalidApiKey | ApiKeyRevoked | ApiKeyExpired => 16, // UNAUTHENTICATED
            RateLimited | TenantOverloaded | RequestTooLarge | RequestHeadersTooLarge => 8, // RESOURCE_EXHAUSTED
            TenantMaintenance
            | MisdirectedRequest
            | RateLimiterUnavailable
            | NoHealthyUpstream
            | UpstreamError => 14, // UNAVAILABLE
            UpstreamTimeout => 4, // DEADLINE_EXCEEDED
            InternalError => 13,  // INTERNAL
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

    /// Answers a client should retry with other credentials: they carry `WWW-Authenticate`.
    pub fn is_unauthenticated(self) -> bool {
        self.status() == StatusCode::UNAUTHORIZED
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
    fn grpc_clients_get_the_status_they_would_act_on() {
        assert_eq!(GatewayError::UnknownTenant.grpc_status(), 5);
        assert_eq!(GatewayError::TokenExpired.grpc_status(), 16);
        assert_eq!(GatewayError::TenantMismatch.grpc_status(), 7);
        assert_eq!(GatewayError::RateLimited.grpc_status(), 8);
        assert_eq!(GatewayError::NoHealthyUpstream.grpc_status(), 14);
        assert_eq!(GatewayError::UpstreamTimeout.grpc_status(), 4);
        // Every 401 is UNAUTHENTICATED, and no refusal is OK (0).
        for e in GatewayError::ALL {
            assert_ne!(e.grpc_status(), 0, "{e}");
            assert_eq!(e.is_unauthenticated(), e.grpc_status() == 16, "{e}");
        }
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
