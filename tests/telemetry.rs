//! OpenTelemetry through the gateway: W3C trace context continued (or started) and passed to the
//! upstream, and one span per request with tenant, pool, upstream, status and the gateway's error
//! code, received as real OTLP/HTTP protobuf by a receiver in the harness; a collector that is
//! gone holds no request up.

mod support;

use support::otlp::OtlpReceiver;
use support::{send, Gateway, Upstream};

const CONFIG: &str = r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]
threads = 2

[admin]
listen = "{admin}"

[tracing]
otlp_endpoint = "{otlp}"
sample_ratio = {ratio}
service_name = "edge-gateway"

[pools.shared]
upstreams = ["{one}"]

[tenants.acme]
pool = "shared"
"#;

async fn start(otlp: &str, ratio: &str, one: &Upstream) -> Gateway {
    Gateway::start_with(
        CONFIG,
        &[
            ("otlp", otlp.to_owned()),
            ("ratio", ratio.to_owned()),
            ("one", one.addr.to_string()),
        ],
    )
    .await
}

/// `00-<trace>-<span>-<flags>` split in its parts.
fn parts(traceparent: &str) -> (String, String, String) {
    let p: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(p.len(), 4, "{traceparent}");
    assert_eq!(p[0], "00", "{traceparent}");
    (p[1].to_owned(), p[2].to_owned(), p[3].to_owned())
}

#[tokio::test]
async fn a_trace_is_continued_or_started_and_each_request_is_one_exported_span() {
    let receiver = OtlpReceiver::start().await;
    let one = Upstream::start("one").await;
    let gw = start(&receiver.endpoint(), "1.0", &one).await;

    // Continued: same trace, the gateway's span as the upstream's parent, tracestate kept.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let r = send(
        gw.get("acme.yourapp.test", "/orders/7")
            .header("traceparent", format!("00-{trace}-{client_span}-01"))
            .header("tracestate", "vendor=abc"),
    )
    .await;
    assert_eq!(r.status, 200);
    let sent = r.upstream_saw("traceparent");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (upstream_trace, gateway_span, flags) = parts(&sent[0]);
    assert_eq!((upstream_trace.as_str(), flags.as_str()), (trace, "01"));
    assert_ne!(gateway_span, client_span);
    assert_eq!(r.upstream_saw("tracestate"), ["vendor=abc"]);
    let span = receiver.wait_for(|s| s.span_id() == gateway_span).await;
    assert_eq!(span.trace_id(), trace);
    assert_eq!(span.parent_span_id(), client_span);
    assert_eq!(span.service.as_deref(), Some("edge-gateway"));
    assert_eq!(span.span.name, "GET");
    assert_eq!(span.attribute("tenantgate.tenant").as_deref(), Some("acme"));
    assert_eq!(span.attribute("tenantgate.pool").as_deref(), Some("shared"));
    assert_eq!(
        span.attribute("tenantgate.upstream"),
        Some(one.addr.to_string())
    );
    assert_eq!(
        span.attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(span.attribute("url.path").as_deref(), Some("/orders/7"));
    assert!(span.span.end_time_unix_nano > span.span.start_time_unix_nano);

    // Started: no traceparent (or a malformed one) begins a trace of the gateway's own.
    for incoming in [None, Some("00-zz-00f067aa0ba902b7-01")] {
        let mut request = gw.get("acme.yourapp.test", "/");
        if let Some(bad) = incoming {
            request = request.header("traceparent", bad);
        }
        let r = send(request).await;
        let (new_trace, new_span, flags) = parts(&r.upstream_saw("traceparent")[0]);
        assert_eq!(flags, "01");
        let span = receiver.wait_for(|s| s.span_id() == new_span).await;
        assert_eq!(span.trace_id(), new_trace);
        assert!(span.span.parent_span_id.is_empty(), "{span:?}");
    }

    // A refusal is a span too, with the gateway's code and an error status.
    let refused = send(
        gw.get("nobody.yourapp.test", "/")
            .header("traceparent", format!("00-{trace}-{client_span}-01")),
    )
    .await;
    assert_eq!(refused.status, 404);
    let span = receiver
        .wait_for(|s| s.attribute("tenantgate.error").as_deref() == Some("unknown_tenant"))
        .await;
    assert_eq!(span.trace_id(), trace);
    assert_eq!(
        span.attribute("http.response.status_code").as_deref(),
        Some("404")
    );
    assert_eq!(span.attribute("tenantgate.tenant"), None);
}

#[tokio::test]
async fn sampling_follows_the_ratio_and_the_parent_and_a_gone_collector_blocks_nothing() {
    let receiver = OtlpReceiver::start().await;
    let one = Upstream::start("one").await;
    let gw = start(&receiver.endpoint(), "0.0", &one).await;
    // Ratio 0: the gateway's own traces are passed on unsampled and not exported...
    let r = send(gw.get("acme.yourapp.test", "/")).await;
    let (_, unsampled, flags) = parts(&r.upstream_saw("traceparent")[0]);
    assert_eq!(flags, "00");
    // ...but a sampled parent's trace is recorded: the client asked for it.
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let r = send(
        gw.get("acme.yourapp.test", "/")
            .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01")),
    )
    .await;
    let (_, sampled, flags) = parts(&r.upstream_saw("traceparent")[0]);
    assert_eq!(flags, "01");
    receiver.wait_for(|s| s.span_id() == sampled).await;
    assert!(receiver.spans().iter().all(|s| s.span_id() != unsampled));

    // A collector that is not there: every request is answered as before.
    let gone = support::free_addr();
    let gw = start(&format!("http://{gone}/v1/traces"), "1.0", &one).await;
    for _ in 0..100 {
        assert_eq!(send(gw.get("acme.yourapp.test", "/")).await.status, 200);
    }
}
