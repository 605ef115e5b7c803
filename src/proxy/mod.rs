//! The data plane: Pingora's `ProxyHttp` phases, each a few lines that call the routing, upstream and
//! header modules.
//!
//! ```text
//!  request ──► request_filter ──► upstream_peer ──► upstream_request_filter ──► upstream
//!              (request id,        (pick upstream;    (tenant and identity
//!               resolve tenant,     retry elsewhere    headers, X-Forwarded-*,
//!               verify credential)  after a failed     X-Request-ID)
//!                  │                connection) ◄── fail_to_connect (eject, retry)
//!                  │                    ▲ ◄──────────── error_while_proxy (a lost connection
//!                  │                    │                before any response: retry idempotent)
//!                  ▼                    │
//!           JSON error ◄──── fail_to_proxy (no healthy upstream, timeouts, ...)
//!                                                                 response ◄── response_filter
//!  logging: metrics and one access-log line for every request, however it ended.  (X-Request-ID)
//! ```

pub mod headers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER, STRICT_TRANSPORT_SECURITY,
    WWW_AUTHENTICATE,
};
use http::{HeaderValue, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::acme::Acme;
use crate::admission::{admit, Admission, Connection, Refusal, Request};
use crate::config::model::{MaintenanceAnswer, MaintenancePage};
use crate::gateway_error::GatewayError;
use crate::host::{normalize_host, HostBuf, MAX_HOST_LEN};
use crate::identity::Principal;
use crate::limits::concurrency::Permit;
use crate::limits::fleet::Fleet;
use crate::limits::gcra::Quota;
use crate::limits::Limited;
use crate::metrics::tenant::{OpenConnection, RequestRecord};
use crate::metrics::Metrics;
use crate::snapshot::{Route, RoutingTable, TableHandle};
use crate::telemetry::{Finished, RequestSpan, Tracing};
use crate::tls::ClientServerName;
use crate::upstream::{InFlight, Tried};
use headers::{forward_headers, request_host, Forwarded, X_REQUEST_ID_WIRE};

/// The tenant-aware proxy. One instance serves every request of the data-plane listener.
pub struct Gateway {
    table: Arc<TableHandle>,
    /// Set while the process drains before a shutdown or upgrade: every response then closes its
    /// connection, so clients reconnect elsewhere.
    draining: Arc<AtomicBool>,
    metrics: &'static Metrics,
    /// Where fleet-wide rate limits are counted (`None`: each instance limits alone).
    fleet: Option<Arc<Fleet>>,
    /// With `[acme]`: its pending HTTP-01 challenges are answered before tenant routing.
    acme: Option<Arc<Acme>>,
    /// With `[tracing]`: a span per request, and `traceparent` to the upstream.
    tracing: Option<Arc<Tracing>>,
}

impl Gateway {
    pub fn new(
        table: Arc<TableHandle>,
        draining: Arc<AtomicBool>,
        fleet: Option<Arc<Fleet>>,
        acme: Option<Arc<Acme>>,
    ) -> Self {
        Gateway {
            table,
            draining,
            metrics: Metrics::get(),
            fleet,
            acme,
            tracing: None,
        }
    }

    pub fn with_tracing(self, tracing: Option<Arc<Tracing>>) -> Self {
        Gateway { tracing, ..self }
    }
}

/// W3C Trace Context's header, as the gateway sends it upstream.
const TRACEPARENT: &str = "traceparent";

/// Per-request state, carried from phase to phase.
pub struct RequestCtx {
    started: Instant,
    /// The snapshot this request was routed with, from start to end, whatever reloads happen.
    table: Arc<RoutingTable>,
    request_id: HeaderValue,
    route: Option<Route>,
    /// The tenant the host belongs to, also when it is refused (suspended).
    tenant: Option<usize>,
    /// The upstream of the current (or last) attempt.
    upstream: Option<usize>,
    /// Upstreams that refused a connection for this request; a retry goes elsewhere.
    refused: Tried,
    attempts: u32,
    in_flight: Option<InFlight>,
    /// Set when the gateway answers the request itself.
    error: Option<GatewayError>,
    /// The verified credential, when the request needed one.
    principal: Option<Arc<Principal>>,
    /// The request's place in its tenant's in-flight count, released when the request ends.
    permit: Option<Permit>,
    /// What the request left of its tightest rate limit, for the `RateLimit-*` headers.
    quota: Option<Quota>,
    /// The rate limit the request did not fit.
    limited: Option<Limited>,
    /// When the first upstream was chosen.
    upstream_started: Option<Instant>,
    upstream_seconds: Option<f64>,
    upstream_errors: u32,
    /// The tenant's `max_request_body_bytes`, counted against the body as it streams.
    body_limit: Option<u64>,
    body_bytes: u64,
    /// `upstream_response_filter` refused a 5xx so that another upstream gets the request.
    retrying_status: bool,
    /// The connection was upgraded (WebSocket): counted open until the session ends.
    upgraded: Option<OpenConnection>,
    /// With `[tracing]`: the request's span, ended in `logging`.
    span: Option<RequestSpan>,
    /// The connection's peer address, read once (`None` on a Unix socket).
    peer: Option<std::net::IpAddr>,
}

/// What went wrong with an attempt, as a pool's `retries.on` names it.
#[derive(Debug, Clone, Copy)]
enum RetryCause {
    /// No connection: nothing was sent.
    Connect,
    /// The connection broke before a response.
    Reset,
    /// The upstream answered 5xx.
    Status,
}

impl RequestCtx {
    fn pool(&self) -> Option<&crate::upstream::Pool> {
        self.table.pool(self.route?.pool).map(|p| &**p)
    }

    /// Whether the request may go to another upstream after `cause`: the pool's `retries` name
    /// the cause, the method may be sent again when something was sent, and the request's
    /// attempts and the pool's budget have room. After a response (a 5xx), another upstream must
    /// also be there to take it, or the client would get `no_healthy_upstream` for a response it
    /// could have had; after a failed connection, that is the right answer.
    fn may_retry(&self, cause: RetryCause, method: &http::Method) -> bool {
        let Some(pool) = self.pool() else {
            return false;
        };
        let policy = &pool.config.retries;
        let wanted = match cause {
            RetryCause::Connect => policy.on_connect,
            RetryCause::Reset => policy.on_reset && policy.replays(method),
            RetryCause::Status => {
                let mut tried = self.refused;
                if let Some(current) = self.upstream {
                    tried.insert(current);
                }
                policy.on_5xx && policy.replays(method) && pool.has_untried(tried)
            }
        };
        wanted && pool.allow_retry(self.attempts).is_ok()
    }

    /// Chooses an available upstream of the route's pool that has not refused this request, and
    /// counts the request on it; false when there is none.
    fn choose_upstream(&mut self) -> bool {
        let Some(pool) = self.route.and_then(|r| self.table.pool(r.pool)) else {
            return false;
        };
        let Some(index) = pool.select(self.refused) else {
            return false;
        };
        self.in_flight = pool.begin_request(index);
        self.upstream = Some(index);
        true
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    /// No downstream modules: Pingora's default adds a (disabled) compression module that still runs
    /// on every response.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// Lets an HTTP/1.1 client pipeline: the requests it sends before reading a response are each
    /// answered, in order (RFC 9112 §9.3.2), each routed on its own. Never fails.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        session.set_pipelining_enabled(true);
        Ok(())
    }

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            table: self.table.load(),
            request_id: HeaderValue::from_static(""),
            route: None,
            tenant: None,
            upstream: None,
            refused: Tried::default(),
            attempts: 0,
            in_flight: None,
            error: None,
            principal: None,
            permit: None,
            quota: None,
            limited: None,
            upstream_started: None,
            upstream_seconds: None,
            upstream_errors: 0,
            body_limit: None,
            body_bytes: 0,
            retrying_status: false,
            upgraded: None,
            span: None,
            peer: None,
        }
    }

    /// Picks the request id, runs admission (host, connection, credential, limits: see
    /// `admission`) and chooses the first upstream. `Ok(true)`: the gateway has answered (a refusal
    /// or a redirect to HTTPS) and the request ends here, with the client connection still usable.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if self.draining.load(Ordering::Relaxed) {
            session.set_keepalive(None);
        }
        let req = session.req_header();
        ctx.request_id = headers::request_id(&req.headers);
        ctx.span = self
            .tracing
            .as_ref()
            .map(|t| t.start(req.method.as_str(), &req.headers));
        if let Some(answer) = self
            .acme
            .as_ref()
            .and_then(|acme| acme.challenges().http_answer(req.uri.path()))
        {
            respond_with_challenge(session, answer, &ctx.request_id).await?;
            return Ok(true);
        }
        ctx.peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let mut buf: HostBuf = [0; MAX_HOST_LEN];
        let request = Request {
            host: request_host(&req.headers, &req.uri)
                .and_then(|raw| normalize_host(raw, &mut buf))
                .ok(),
            method: req.method.as_str(),
            peer: ctx.peer,
            headers: &req.headers,
            uri: &req.uri,
            connection: connection_of(session),
            roll: fastrand::u8(..100),
            now: unix_now(),
        };
        let refusal = match admit(&ctx.table, self.fleet.as_deref(), &request).await {
            Admission::Proxy(admitted) => {
                ctx.route = Some(admitted.route);
                ctx.tenant = admitted.route.tenant;
                ctx.principal = admitted.principal;
                ctx.quota = admitted.quota;
                ctx.permit = admitted.permit;
                ctx.body_limit = ctx
                    .tenant
                    .and_then(|i| ctx.table.tenant(i))
                    .and_then(|t| t.limits.max_request_body_bytes);
                match ctx.choose_upstream() {
                    true => {
                        if let Some(pool) = ctx.pool() {
                            pool.note_request();
                        }
                        return Ok(false);
                    }
                    false => Refusal {
                        error: GatewayError::NoHealthyUpstream,
                        tenant: ctx.tenant,
                        limited: None,
                    },
                }
            }
            Admission::Redirect { location, tenant } => {
                ctx.tenant = tenant;
                respond_with_redirect(session, location, &ctx.request_id).await?;
                return Ok(true);
            }
            Admission::Refuse(refusal) => refusal,
        };
        ctx.tenant = refusal.tenant;
        ctx.error = Some(refusal.error);
        ctx.limited = refusal.limited;
        let maintenance = match refusal.error {
            GatewayError::TenantMaintenance => ctx
                .tenant
                .and_then(|i| ctx.table.tenant(i))
                .map(|t| Arc::clone(&t.maintenance)),
            _ => None,
        };
        match maintenance {
            Some(page) => respond_in_maintenance(session, &page, &ctx.request_id).await?,
            None => {
                respond_with_error(session, refusal.error, &ctx.request_id, ctx.limited).await?
            }
        }
        Ok(true)
    }

    /// Counts a streaming body against the tenant's `max_request_body_bytes` (a declared
    /// `Content-Length` was checked in admission); on an upgraded connection, ends it when an
    /// operator closed the tenant's connections. `Err` ends the request: `fail_to_proxy` answers
    /// 413 `request_too_large` unless the upstream has already answered.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(upgraded) = &ctx.upgraded {
            return close_if_asked(upgraded);
        }
        let Some(limit) = ctx.body_limit else {
            return Ok(());
        };
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.body_bytes > limit {
            ctx.error = Some(GatewayError::RequestTooLarge);
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                "request body over the tenant's limit",
            );
        }
        Ok(())
    }

    /// Hands Pingora the chosen upstream; on a retry, first chooses another (not one that refused
    /// this request a connection). `Err` when there is none: `fail_to_proxy` answers
    /// `no_healthy_upstream`.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        if ctx.attempts > 0 {
            self.metrics.observe_retry();
            if !ctx.choose_upstream() {
                ctx.error = Some(GatewayError::NoHealthyUpstream);
                return Error::e_explain(ErrorType::HTTPStatus(503), "no healthy upstream in pool");
            }
        }
        ctx.attempts += 1;
        ctx.upstream_started.get_or_insert_with(Instant::now);
        match ctx
            .pool()
            .zip(ctx.upstream)
            .and_then(|(p, i)| p.upstream(i))
        {
            Some(upstream) => Ok(Box::new(upstream.peer.clone())),
            None => {
                ctx.error = Some(GatewayError::InternalError);
                Error::e_explain(ErrorType::InternalError, "request has no chosen upstream")
            }
        }
    }

    /// Ejects the upstream (passive health) and marks the error retryable, so `upstream_peer` runs
    /// again and picks another. The returned error decides the retry.
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(pool), Some(index)) = (ctx.pool(), ctx.upstream) {
            // Logged once per ejection (the upstream is then skipped for fail_timeout): a refused
            // connection, a timeout or a failed TLS verification must be visible to operators.
            if let Some(upstream) = pool.upstream(index) {
                if !upstream.state.is_ejected() {
                    tracing::warn!(pool = pool.name(), upstream = %upstream.label, error = %e, "cannot connect to upstream; ejected");
                }
            }
            pool.eject(index);
            ctx.refused.insert(index);
        }
        // Nothing was sent yet, so another upstream may take the request whatever its method.
        let retry = ctx.may_retry(RetryCause::Connect, &session.req_header().method);
        ctx.in_flight = None;
        ctx.upstream_errors += 1;
        e.set_retry(retry);
        e
    }

    /// Retries on another upstream an idempotent request whose upstream connection failed before
    /// any of the response reached the client (an upstream stopping under it, a keep-alive
    /// connection closed as it was reused), as nginx's `proxy_next_upstream error` does. Timeouts
    /// are not retried: a slow upstream would only get the request twice. The returned error
    /// decides the retry.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if std::mem::take(&mut ctx.retrying_status) {
            // A 5xx this gateway turned into an error so that another upstream gets the request.
            e.set_retry(true);
            return e;
        }
        let replayable =
            !session.as_ref().retry_buffer_truncated() && session.response_written().is_none();
        let lost_connection = matches!(
            e.etype,
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        );
        let method = &session.req_header().method;
        match (replayable, lost_connection) {
            (true, true) if ctx.may_retry(RetryCause::Reset, method) => {
                if let Some(index) = ctx.upstream {
                    ctx.refused.insert(index);
                }
                ctx.in_flight = None;
                ctx.upstream_errors += 1;
                e.set_retry(true);
            }
            (true, false) if method.is_idempotent() => e.retry.decide_reuse(client_reused),
            _ => e.set_retry(false),
        }
        e
    }

    /// Sets what the backend trusts (tenant header, `X-Forwarded-*`, `X-Request-ID`) after removing
    /// any client-sent copies. `Err` fails the request.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let tenant = ctx.tenant.and_then(|i| ctx.table.tenant(i));
        let forwarded = Forwarded {
            tenant_header: ctx.table.tenant_header(),
            tenant_header_spelling: ctx.table.tenant_header_spelling(),
            tenant: tenant.map(|t| &t.header_value),
            client_ip: ctx.peer,
            proto: if is_tls(session) { "https" } else { "http" },
            request_id: &ctx.request_id,
            identity: ctx.principal.as_deref(),
            switch_tenant_header: &ctx.table.identity().switch_tenant_header,
        };
        forward_headers(upstream_request, &forwarded)?;
        if let Some(span) = &ctx.span {
            upstream_request.insert_header(TRACEPARENT, span.traceparent().clone())?;
        }
        Ok(())
    }

    /// Notes when the upstream's response header arrived, for the upstream-time metric; a 5xx of a
    /// pool that retries on `5xx` goes to another upstream instead. `Err` fails the attempt (a
    /// retryable one for that 5xx).
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_seconds = ctx.upstream_started.map(|t| t.elapsed().as_secs_f64());
        let status = upstream_response.status.as_u16();
        if status >= 500
            && !session.as_ref().retry_buffer_truncated()
            && ctx.may_retry(RetryCause::Status, &session.req_header().method)
        {
            if let Some(index) = ctx.upstream {
                ctx.refused.insert(index);
            }
            ctx.in_flight = None;
            ctx.upstream_errors += 1;
            ctx.retrying_status = true;
            return Error::e_explain(
                ErrorType::HTTPStatus(status),
                "the upstream answered 5xx; another upstream gets the request",
            );
        }
        Ok(())
    }

    /// On an upgraded connection (WebSocket), ends it when an operator closed the tenant's
    /// connections since it opened. `Err` ends the connection.
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        match &ctx.upgraded {
            Some(upgraded) => close_if_asked(upgraded).map(|()| None),
            None => Ok(None),
        }
    }

    /// Returns the request id to the client with the upstream's response, the `RateLimit-*` headers
    /// of a rate-limited tenant, and over HTTPS the tenant's `Strict-Transport-Security`; a `101`
    /// counts the tenant's upgraded connection open. `Err` fails the request.
    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if upstream_response.status == StatusCode::SWITCHING_PROTOCOLS {
            ctx.upgraded = ctx
                .tenant
                .and_then(|i| ctx.table.tenant(i))
                .map(|t| t.stats.connection_upgraded());
        }
        upstream_response.insert_header(X_REQUEST_ID_WIRE, ctx.request_id.clone())?;
        if let Some(quota) = ctx.quota {
            for (name, value) in
                headers::rate_limit_headers(quota.limit, quota.remaining, quota.reset)
            {
                upstream_response.insert_header(name, value)?;
            }
        }
        if let Some(hsts) = ctx.table.hsts(ctx.tenant) {
            if is_tls(session) {
                upstream_response.insert_header(STRICT_TRANSPORT_SECURITY, hsts.clone())?;
            }
        }
        Ok(())
    }

    /// Answers a request that could not be proxied with the gateway's JSON error (and
    /// `Connection: close`), unless a response has already started or the client is gone. Returns the
    /// status for logging (0: none sent).
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if let Some(sent) = session.response_written() {
            return FailToProxy {
                error_code: sent.status.as_u16(),
                can_reuse_downstream: false,
            };
        }
        let Some(error) = ctx.error.or_else(|| classify(e)) else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        ctx.error = Some(error);
        if matches!(
            error,
            GatewayError::UpstreamError | GatewayError::UpstreamTimeout
        ) {
            ctx.upstream_errors += 1;
        }
        // Pingora closes the client connection after a failure in the proxy loop; say so
        // (`Connection: close`), or a keep-alive client sends its next request into a closing socket.
        session.set_keepalive(None);
        let sent = respond_with_error(session, error, &ctx.request_id, None)
            .await
            .is_ok();
        FailToProxy {
            error_code: if sent { error.status().as_u16() } else { 0 },
            can_reuse_downstream: false,
        }
    }

    /// Pingora's own error line is redundant for answers the gateway chose (they are in the access
    /// log and metrics); other failures keep it.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
        matches!(
            ctx.error,
            Some(GatewayError::NoHealthyUpstream | GatewayError::RequestTooLarge)
        )
    }

    /// Counts the request and writes its access-log line, however the request ended.
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        ctx.in_flight = None;
        ctx.permit = None;
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        // Per-tenant counts go last: a scrape that sees a request's duration sees all of it.
        if let Some(error) = ctx.error {
            self.metrics.observe_gateway_error(error);
        }
        let record = RequestRecord {
            status,
            seconds: elapsed.as_secs_f64(),
            upstream_seconds: ctx.upstream_seconds,
            bytes_in: u64::try_from(session.body_bytes_read()).unwrap_or(u64::MAX),
            bytes_out: u64::try_from(session.body_bytes_sent()).unwrap_or(u64::MAX),
            limited: ctx.limited.map(|l| l.scope),
            overloaded: ctx.error == Some(GatewayError::TenantOverloaded),
            upstream_errors: ctx.upstream_errors,
            websocket: ctx.upgraded.is_some(),
        };
        let tenant = ctx.tenant.and_then(|i| ctx.table.tenant(i));
        self.metrics
            .observe_request(tenant.map(|t| &*t.stats), &record);
        if ctx.route.is_some_and(|r| r.canary) {
            let canary = ctx
                .tenant
                .and_then(|i| ctx.table.tenant(i))
                .and_then(|t| t.canary.as_ref());
            if let Some(canary) = canary {
                // What the promotion's error-rate gate judges: 5xx, the gateway's own included.
                canary.stats.observe(status >= 500);
            }
        }
        if let Some(span) = ctx.span.take() {
            let req = session.req_header();
            let pool = ctx.pool();
            span.finish(&Finished {
                host: req.uri.host().or_else(|| {
                    req.headers
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                }),
                path: req.uri.path(),
                status,
                tenant: tenant.map(|t| t.id.as_str()),
                pool: pool.map(|p| p.name()),
                upstream: pool
                    .zip(ctx.upstream)
                    .and_then(|(p, i)| p.upstream(i))
                    .map(|u| u.label.as_str()),
                error: ctx.error.map(GatewayError::code),
                attempts: ctx.attempts,
            });
        }
        if ctx.table.access_log() {
            log_access(session, ctx, status, elapsed);
        }
    }
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

fn connection_of(session: &Session) -> Connection<'_> {
    match session.digest().and_then(|d| d.ssl_digest.as_ref()) {
        None => Connection::Plain,
        Some(tls) => Connection::Tls {
            server_name: tls.extension.get::<ClientServerName>().map(|n| &*n.0),
        },
    }
}

/// Maps a Pingora failure to the gateway's error code; `None` when the client is gone.
fn classify(e: &Error) -> Option<GatewayError> {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, HTTPStatus(503)) => Some(GatewayError::NoHealthyUpstream),
        (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => None,
        (ErrorSource::Downstream, _) => Some(GatewayError::BadRequest),
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout | ConnectTimedout) => {
            Some(GatewayError::UpstreamTimeout)
        }
        (ErrorSource::Upstream, _) => Some(GatewayError::UpstreamError),
        (ErrorSource::Internal | ErrorSource::Unset, _) => Some(GatewayError::InternalError),
    }
}

/// `308 Permanent Redirect` (the method and body are kept, unlike 301) to HTTPS.
async fn respond_with_redirect(
    session: &mut Session,
    location: HeaderValue,
    request_id: &HeaderValue,
) -> Result<()> {
    let mut resp = ResponseHeader::build(StatusCode::PERMANENT_REDIRECT, Some(4))?;
    resp.insert_header(LOCATION, location)?;
    resp.insert_header(CONTENT_LENGTH, 0)?;
    resp.insert_header(X_REQUEST_ID_WIRE, request_id.clone())?;
    session.write_response_header(Box::new(resp), true).await
}

/// An ACME HTTP-01 validation: the key authorization, as RFC 8555 §8.3 says.
async fn respond_with_challenge(
    session: &mut Session,
    key_authorization: Arc<str>,
    request_id: &HeaderValue,
) -> Result<()> {
    let body = Bytes::copy_from_slice(key_authorization.as_bytes());
    let mut resp = ResponseHeader::build(StatusCode::OK, Some(4))?;
    resp.insert_header(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    )?;
    resp.insert_header(CONTENT_LENGTH, body.len())?;
    resp.insert_header(CACHE_CONTROL, HeaderValue::from_static("no-store"))?;
    resp.insert_header(X_REQUEST_ID_WIRE, request_id.clone())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// A gRPC request (`content-type: application/grpc...`): its refusals are gRPC statuses.
fn is_grpc(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A refusal as gRPC says it: `200` and `content-type: application/grpc`, then `grpc-status`
/// and `grpc-message` as trailers (Pingora ends an HTTP/2 stream after its headers with an empty
/// DATA frame, so headers alone would not be a "trailers-only" answer that gRPC clients read).
async fn respond_with_grpc_status(
    session: &mut Session,
    error: GatewayError,
    request_id: &HeaderValue,
) -> Result<()> {
    let status = HeaderValue::from(u16::from(error.grpc_status()));
    // Percent-encoding is not needed: the messages are plain ASCII without `%`.
    let message = HeaderValue::from_static(error.message());
    let mut resp = ResponseHeader::build(StatusCode::OK, Some(5))?;
    resp.insert_header(CONTENT_TYPE, HeaderValue::from_static("application/grpc"))?;
    resp.insert_header("tenantgate-error", HeaderValue::from_static(error.code()))?;
    resp.insert_header(X_REQUEST_ID_WIRE, request_id.clone())?;
    if !session.as_ref().is_http2() {
        // gRPC over HTTP/1 (gRPC-Web bridges): the status in the headers is all there is.
        resp.insert_header("grpc-status", status)?;
        resp.insert_header("grpc-message", message)?;
        return session.write_response_header(Box::new(resp), true).await;
    }
    session.write_response_header(Box::new(resp), false).await?;
    let mut trailers = http::HeaderMap::with_capacity(2);
    trailers.insert("grpc-status", status);
    trailers.insert("grpc-message", message);
    session.as_mut().write_response_trailers(trailers).await
}

async fn respond_with_error(
    session: &mut Session,
    error: GatewayError,
    request_id: &HeaderValue,
    limited: Option<Limited>,
) -> Result<()> {
    if is_grpc(session) {
        return respond_with_grpc_status(session, error, request_id).await;
    }
    let body: Bytes = error.body(request_id.to_str().unwrap_or(""));
    let mut resp = ResponseHeader::build(error.status(), Some(4))?;
    resp.insert_header(CONTENT_TYPE, HeaderValue::from_static("application/json"))?;
    resp.insert_header(CONTENT_LENGTH, body.len())?;
    resp.insert_header(CACHE_CONTROL, HeaderValue::from_static("no-store"))?;
    resp.insert_header(X_REQUEST_ID_WIRE, request_id.clone())?;
    if error.is_unauthenticated() {
        resp.insert_header(WWW_AUTHENTICATE, bearer_challenge(error))?;
    }
    match (error, limited) {
        (GatewayError::RateLimited, Some(l)) => {
            resp.insert_header(RETRY_AFTER, headers::whole_seconds(l.exceeded.retry_after))?;
            for (name, value) in headers::rate_limit_headers(l.exceeded.limit, 0, l.exceeded.reset)
            {
                resp.insert_header(name, value)?;
            }
        }
        (GatewayError::TenantOverloaded | GatewayError::RateLimiterUnavailable, _) => {
            resp.insert_header(RETRY_AFTER, HeaderValue::from_static("1"))?;
        }
        _ => {}
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Ends an upgraded connection whose tenant's connections an operator closed.
fn close_if_asked(upgraded: &OpenConnection) -> Result<()> {
    match upgraded.must_close() {
        true => Error::e_explain(
            ErrorType::ConnectionClosed,
            "the tenant's connections were closed by an operator",
        ),
        false => Ok(()),
    }
}

/// A tenant in maintenance: 503 with `Retry-After` and its page, or a `302` to where it points.
async fn respond_in_maintenance(
    session: &mut Session,
    page: &MaintenancePage,
    request_id: &HeaderValue,
) -> Result<()> {
    let (status, content_type, body) = match &page.answer {
        MaintenanceAnswer::Json => (
            GatewayError::TenantMaintenance.status(),
            HeaderValue::from_static("application/json"),
            GatewayError::TenantMaintenance.body(request_id.to_str().unwrap_or("")),
        ),
        MaintenanceAnswer::Page {
            body, content_type, ..
        } => (
            GatewayError::TenantMaintenance.status(),
            content_type.clone(),
            body.clone(),
        ),
        MaintenanceAnswer::Redirect(_) => (
            StatusCode::FOUND,
            HeaderValue::from_static("text/plain; charset=utf-8"),
            Bytes::new(),
        ),
    };
    let mut resp = ResponseHeader::build(status, Some(6))?;
    resp.insert_header(CONTENT_TYPE, content_type)?;
    resp.insert_header(CONTENT_LENGTH, body.len())?;
    resp.insert_header(CACHE_CONTROL, HeaderValue::from_static("no-store"))?;
    resp.insert_header(RETRY_AFTER, page.retry_after_seconds)?;
    resp.insert_header(X_REQUEST_ID_WIRE, request_id.clone())?;
    if let MaintenanceAnswer::Redirect(location) = &page.answer {
        resp.insert_header(LOCATION, location.clone())?;
    }
    let head_only = body.is_empty();
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// RFC 6750's challenge: `invalid_token` for a credential that failed, none when there was none.
fn bearer_challenge(error: GatewayError) -> HeaderValue {
    match error {
        GatewayError::MissingCredentials => HeaderValue::from_static("Bearer realm=\"tenantgate\""),
        _ => HeaderValue::from_static("Bearer realm=\"tenantgate\", error=\"invalid_token\""),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn log_access(session: &Session, ctx: &RequestCtx, status: u16, elapsed: std::time::Duration) {
    let req = session.req_header();
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("-");
    let tenant = ctx
        .tenant
        .and_then(|i| ctx.table.tenant(i))
        .map_or("-", |t| t.id.as_str());
    let pool = ctx.pool();
    let upstream = pool
        .zip(ctx.upstream)
        .and_then(|(p, i)| p.upstream(i))
        .map_or("-", |u| u.label.as_str());
    tracing::info!(
        target: "tenantgate::access",
        request_id = ctx.request_id.to_str().unwrap_or("-"),
        tenant,
        host,
        method = req.method.as_str(),
        path = req.uri.path(),
        status,
        error = ctx.error.map_or("-", GatewayError::code),
        pool = pool.map_or("-", |p| p.name()),
        upstream,
        attempts = ctx.attempts,
        auth = ctx.principal.as_ref().map_or("-", |p| p.method.as_str()),
        subject = ctx
            .principal
            .as_ref()
            .and_then(|p| p.subject.as_deref().or(p.key_id.as_deref()))
            .unwrap_or("-"),
        // From whole microseconds, so it prints as 1.155 rather than 1.1549189999999998.
        duration_ms = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX) as f64 / 1000.0,
        "request"
    );
}
