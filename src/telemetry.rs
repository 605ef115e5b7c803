//! `[tracing]`: W3C trace context and one OpenTelemetry span per request, exported over
//! OTLP/HTTP. The request thread only starts and ends a span: ended spans go to the SDK's batch
//! processor, a thread of its own with a bounded queue that drops spans when the collector is
//! slow or gone, so a collector can never hold a request up.
//!
//! A request that arrives with a valid `traceparent` continues that trace (and its sampled flag);
//! any other starts one, sampled by `sample_ratio`. Either way the upstream gets a `traceparent`
//! naming the gateway's span as its parent; `tracestate` passes through as sent.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;

use crate::config::model::TracingSettings;

/// How long ended spans wait to be sent together.
const EXPORT_DELAY: Duration = Duration::from_secs(1);
/// Spans waiting to be sent; more are dropped (and the SDK counts them), never waited for.
const QUEUE: usize = 8192;

#[derive(Debug, thiserror::Error)]
#[error("cannot set up OTLP export to {endpoint}: {reason}")]
pub struct TracingError {
    endpoint: String,
    reason: String,
}

/// The gateway's tracer: made once at start, shared by every request.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: opentelemetry_sdk::trace::SdkTracer,
}

/// A request's span, from `request_filter` to `logging`.
pub struct RequestSpan {
    span: opentelemetry_sdk::trace::Span,
    /// What the upstream gets: this trace, with the gateway's span as the parent.
    traceparent: HeaderValue,
}

/// What a finished request leaves on its span.
#[derive(Debug, Clone, Copy)]
pub struct Finished<'a> {
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub status: u16,
    pub tenant: Option<&'a str>,
    pub pool: Option<&'a str>,
    pub upstream: Option<&'a str>,
    /// The gateway's error code, when it answered itself.
    pub error: Option<&'static str>,
    pub attempts: u32,
}

impl Tracing {
    pub fn new(settings: &TracingSettings) -> Result<Tracing, TracingError> {
        let fail = |reason: String| TracingError {
            endpoint: settings.otlp_endpoint.clone(),
            reason,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.otlp_endpoint.clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_DELAY)
                    .with_max_queue_size(QUEUE)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("tenantgate");
        Ok(Tracing { provider, tracer })
    }

    /// Starts the span of a request, continuing the trace its `traceparent` names.
    pub fn start(&self, method: &str, headers: &HeaderMap) -> RequestSpan {
        let parent = match remote_parent(headers) {
            Some(remote) => Context::new().with_remote_span_context(remote),
            None => Context::new(),
        };
        let name: Cow<'static, str> = match method {
            "GET" => "GET".into(),
            "POST" => "POST".into(),
            other => other.to_owned().into(),
        };
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        let traceparent = traceparent_of(opentelemetry::trace::Span::span_context(&span));
        RequestSpan { span, traceparent }
    }

    /// Sends what is queued (at shutdown); bounded by the exporter's timeout.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "spans not sent at shutdown");
        }
    }
}

impl RequestSpan {
    pub fn traceparent(&self) -> &HeaderValue {
        &self.traceparent
    }

    /// Ends the span with the request's outcome; a span that is not sampled records nothing.
    pub fn finish(mut self, done: &Finished<'_>) {
        use opentelemetry::trace::Span as _;
        if self.span.is_recording() {
            let mut attributes = vec![
                KeyValue::new("url.path", done.path.to_owned()),
                KeyValue::new("http.response.status_code", i64::from(done.status)),
                KeyValue::new("tenantgate.attempts", i64::from(done.attempts)),
            ];
            let text = [
                ("server.address", done.host),
                ("tenantgate.tenant", done.tenant),
                ("tenantgate.pool", done.pool),
                ("tenantgate.upstream", done.upstream),
                ("tenantgate.error", done.error),
            ];
            for (key, value) in text {
                if let Some(value) = value {
                    attributes.push(KeyValue::new(key, value.to_owned()));
                }
            }
            self.span.set_attributes(attributes);
            if done.status >= 500 || done.status == 0 {
                let why = done.error.unwrap_or("the upstream failed");
                self.span.set_status(Status::error(why));
            }
        }
        self.span.end_with_timestamp(SystemTime::now());
    }
}

/// The `traceparent` (and `tracestate`) a request arrived with, when it is valid (W3C Trace
/// Context, version 00); a malformed one is ignored and a new trace started.
fn remote_parent(headers: &HeaderMap) -> Option<SpanContext> {
    let mut values = headers.get_all("traceparent").iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (trace_id, parent_id, flags) = parse_traceparent(value)?;
    let state = headers
        .get("tracestate")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    Some(SpanContext::new(
        trace_id,
        parent_id,
        TraceFlags::new(flags),
        true,
        state,
    ))
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`; all-zero ids are invalid.
fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId, u8)> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if version != "00"
        || parts.next().is_some()
        || !lower_hex(trace, 32)
        || !lower_hex(parent, 16)
        || !lower_hex(flags, 2)
    {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let parent_id = SpanId::from_hex(parent).ok()?;
    if trace_id == TraceId::INVALID || parent_id == SpanId::INVALID {
        return None;
    }
    Some((trace_id, parent_id, u8::from_str_radix(flags, 16).ok()?))
}

fn traceparent_of(context: &SpanContext) -> HeaderValue {
    let flags = context.trace_flags().to_u8() & 1;
    let text = format!(
        "00-{}-{}-{flags:02x}",
        context.trace_id(),
        context.span_id()
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_version_00_with_lowercase_ids_that_are_not_zero() {
        let (trace, parent, flags) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .expect("valid");
        assert_eq!(trace.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.to_string(), "00f067aa0ba902b7");
        assert_eq!(flags, 1);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_remote_parent_carries_its_state_and_a_repeated_header_is_ignored() {
        let mut headers = HeaderMap::new();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", HeaderValue::from_static(parent));
        headers.insert("tracestate", HeaderValue::from_static("vendor=abc,other=1"));
        let remote = remote_parent(&headers).expect("parent");
        assert!(remote.is_remote() && remote.is_sampled());
        assert_eq!(remote.trace_state().get("vendor"), Some("abc"));
        headers.append("traceparent", HeaderValue::from_static(parent));
        assert!(remote_parent(&headers).is_none());
    }

    #[test]
    fn the_upstream_traceparent_names_the_trace_and_the_span() {
        let context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
            SpanId::from_hex("b7ad6b7169203331").expect("hex"),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        assert_eq!(
            traceparent_of(&context),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01"
        );
    }
}
