//! `[metrics] listen`: `/metrics` alone on a listener of its own, so that Prometheus can scrape a
//! gateway in a container without the admin API being reachable there. The admin token is asked
//! for only where `metrics_require_token` asks for it on the admin listener too.

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use super::views::json_error;
use super::{guards, metrics_response, peer_label};
use crate::control::ControlPlane;

pub struct ScrapeEndpoint {
    control: Arc<ControlPlane>,
}

impl ScrapeEndpoint {
    pub fn new(control: Arc<ControlPlane>) -> Self {
        ScrapeEndpoint { control }
    }
}

#[async_trait]
impl ServeHttp for ScrapeEndpoint {
    /// `GET /metrics`; any other path is a 404, any other method a 405.
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request = session.req_header();
        if request.uri.path() != "/metrics" {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "this listener serves /metrics only",
            );
        }
        if request.method != Method::GET && request.method != Method::HEAD {
            let mut answer = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "/metrics takes GET, HEAD",
            );
            answer
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            return answer;
        }
        let peer = peer_label(session);
        let admin = &self.control.applied().config.admin;
        if let Some(refusal) = guards::unauthorized(&request.headers, &peer, admin, "/metrics") {
            return refusal;
        }
        metrics_response(&self.control)
    }
}
