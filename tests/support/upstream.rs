//! Real HTTP/1.1 upstreams on loopback: each answers with JSON naming itself and echoing the request
//! headers it received, serves `/healthz` (switchable), and can be killed mid-test (listener and every
//! open connection closed at once, as when a backend process dies).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

struct State {
    name: String,
    healthy: AtomicBool,
    failing: AtomicBool,
    dropping: AtomicBool,
    hits: AtomicUsize,
}

pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts an upstream on a free loopback port.
    pub async fn start(name: &str) -> Upstream {
        Upstream::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts an upstream on `addr` (a killed upstream can come back on its old port).
    pub async fn start_on(name: &str, addr: SocketAddr) -> Upstream {
        Upstream::serve(name, addr, None).await
    }

    /// Starts an upstream that speaks HTTPS only, with `tls`'s certificate.
    pub async fn start_tls(name: &str, tls: TlsAcceptor) -> Upstream {
        Upstream::serve(name, SocketAddr::from(([127, 0, 0, 1], 0)), Some(tls)).await
    }

    async fn serve(name: &str, addr: SocketAddr, tls: Option<TlsAcceptor>) -> Upstream {
        let listener = bind_retrying(addr).await;
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            name: name.to_owned(),
            healthy: AtomicBool::new(true),
            failing: AtomicBool::new(false),
            dropping: AtomicBool::new(false),
            hits: AtomicUsize::new(0),
        });
        let (stop, mut stopped) = watch::channel(false);
        let serving = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let state = Arc::clone(&serving);
                        let tls = tls.clone();
                        connections.spawn(async move {
                            let service = service_fn(move |req| respond(Arc::clone(&state), req));
                            let http = http1::Builder::new();
                            match tls {
                                None => {
                                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                                }
                                // A failed handshake (an untrusting client) just ends the connection.
                                Some(tls) => {
                                    if let Ok(stream) = tls.accept(stream).await {
                                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                                    }
                                }
                            }
                        });
                    }
                    _ = stopped.changed() => break,
                }
            }
            // Dropping the listener and every connection task closes their sockets.
            connections.abort_all();
        });
        Upstream {
            name: name.to_owned(),
            addr,
            state,
            stop,
            task: Some(task),
        }
    }

    /// Makes `/healthz` answer 200 (healthy) or 503.
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Makes every request other than `/healthz` answer 500 (a broken release behind a healthy
    /// health check).
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Makes every request other than `/healthz` end with its connection closed and no response
    /// (a backend crashing mid-request).
    pub fn set_dropping(&self, dropping: bool) {
        self.state.dropping.store(dropping, Ordering::SeqCst);
    }

    /// Requests served, other than health checks.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Stops the upstream: its port refuses connections and open connections are closed.
    pub async fn kill(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn bind_retrying(addr: SocketAddr) -> TcpListener {
    // A port just released by a killed upstream can take a moment to be free again.
    for _ in 0..50 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot bind upstream on {addr}");
}

async fn respond(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    if req.uri().path() == "/healthz" {
        let healthy = state.healthy.load(Ordering::SeqCst);
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return Ok(response(status, Bytes::from_static(b"ok\n")));
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    if state.dropping.load(Ordering::SeqCst) {
        // hyper closes the connection without answering.
        return Err(std::io::Error::other("dropped on purpose"));
    }
    if let Some(ms) = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("sleep_ms="))
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let status = if state.failing.load(Ordering::SeqCst) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let received = http_body_util::BodyExt::collect(req.into_body())
        .await
        .map_err(std::io::Error::other)?
        .to_bytes()
        .len();
    let body = serde_json::json!({
        "upstream": state.name,
        "method": method,
        "path": path,
        "headers": headers,
        "body_bytes": received,
    });
    Ok(response(status, Bytes::from(body.to_string())))
}

fn response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    resp
}
