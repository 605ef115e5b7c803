//! The floor: the least a Pingora reverse proxy does for `../shared/bench/compare.sh`'s workload
//! (check the Host, proxy to one upstream over a kept-alive connection), with tenantgate's
//! allocator, profile and Pingora settings (no downstream modules, one thread, no work stealing).
//! Whatever tenantgate costs above this is its own. Not part of the shipped binary:
//!
//! ```text
//! cargo build --release --example floor_proxy
//! CANDIDATE2_CMD="exec target/release/examples/floor_proxy" CANDIDATE2_NAME=floor \
//!   ../shared/bench/compare.sh
//! ```
//!
//! It reads what compare-proxies.sh exports: `CANDIDATE_PORT` (to listen on), `UPSTREAM_ADDR`,
//! `BENCH_HOST` (anything else gets 404).

use async_trait::async_trait;
use pingora::http::ResponseHeader;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use pingora::Result;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    host: String,
    upstream: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        let host = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        if host.is_some_and(|h| h.eq_ignore_ascii_case(&self.host)) {
            return Ok(false);
        }
        let mut resp = ResponseHeader::build(404, Some(1))?;
        resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.upstream.clone()))
    }
}

fn main() {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let listen = format!("127.0.0.1:{}", env("CANDIDATE_PORT", "18086"));
    let upstream = env("UPSTREAM_ADDR", "127.0.0.1:18080");
    let floor = Floor {
        host: env("BENCH_HOST", "bench.example.test"),
        upstream: HttpPeer::new(upstream, false, String::new()),
    };
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(Opt::default()), conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, floor);
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever();
}
