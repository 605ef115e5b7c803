//! A real WebSocket upstream (tokio-tungstenite) and client for the WebSocket tests. The upstream
//! echoes text messages, answers `headers` with the upgrade request's headers as JSON, and answers
//! `push N` with N messages of its own (the server-to-client direction).

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub struct WsUpstream {
    pub name: String,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl WsUpstream {
    pub async fn start(name: &str) -> WsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream));
            }
        });
        WsUpstream {
            name: name.to_owned(),
            addr,
            task,
        }
    }
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// tungstenite's callback type returns its whole error response by value.
#[allow(clippy::result_large_err)]
async fn serve(stream: TcpStream) {
    let mut seen = serde_json::Map::new();
    let record = |req: &Request, resp: Response| {
        for (name, value) in req.headers() {
            seen.insert(
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into(),
            );
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
        return;
    };
    let headers = serde_json::Value::Object(seen).to_string();
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let replies: Vec<String> = match text.as_str() {
            "headers" => vec![headers.clone()],
            push if push.starts_with("push ") => {
                let n: usize = push[5..].parse().unwrap_or(0);
                (0..n).map(|i| format!("pushed {i}")).collect()
            }
            other => vec![other.to_owned()],
        };
        for reply in replies {
            if ws.send(Message::text(reply)).await.is_err() {
                return;
            }
        }
    }
}

pub type Client = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `host` through the gateway at `gateway`; the refusal's status otherwise.
pub async fn connect(
    gateway: SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
) -> Result<Client, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{host}/chat")
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    let stream = TcpStream::connect(gateway).await.expect("connect");
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("WebSocket handshake failed: {e}"),
    }
}

/// Sends `text` and returns the next `n` text messages, or `None` when the connection ends first.
pub async fn exchange(ws: &mut Client, text: &str, n: usize) -> Option<Vec<String>> {
    ws.send(Message::text(text)).await.ok()?;
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(super::WAIT, ws.next()).await.ok()??;
        match next.ok()? {
            Message::Text(t) => out.push(t.as_str().to_owned()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
    Some(out)
}

/// Waits until the connection ends (a close, an error or EOF), at most `within`.
pub async fn ended_within(ws: &mut Client, within: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}
