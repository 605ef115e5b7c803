//! Real gRPC peers for the gRPC tests: `grpc_peer.py` (grpcio, Google's gRPC for Python) as an
//! upstream server and as a client, run by the Python `scripts/ensure-grpcio.sh` prints (`make
//! test` passes it as `TENANTGATE_GRPC_PYTHON`).

use std::net::SocketAddr;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const INSTALL: &str =
    "set TENANTGATE_GRPC_PYTHON to a Python with grpcio (`make test` does: scripts/ensure-grpcio.sh)";

fn python() -> String {
    std::env::var("TENANTGATE_GRPC_PYTHON").unwrap_or_else(|_| panic!("{INSTALL}"))
}

fn script() -> String {
    format!("{}/tests/support/grpc_peer.py", env!("CARGO_MANIFEST_DIR"))
}

/// A gRPC server on a free loopback port; it stops when dropped (stdin closes, and it is killed).
pub struct GrpcServer {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
}

impl GrpcServer {
    pub async fn start(name: &str) -> GrpcServer {
        GrpcServer::serve(name, &[]).await
    }

    /// A server that speaks TLS only, with `files`' certificate (ALPN h2, as gRPC requires).
    pub async fn start_tls(name: &str, files: &super::pki::CertFiles) -> GrpcServer {
        let paths = [
            files.cert.display().to_string(),
            files.key.display().to_string(),
        ];
        GrpcServer::serve(name, &paths).await
    }

    async fn serve(name: &str, tls: &[String]) -> GrpcServer {
        let mut child = Command::new(python())
            .arg(script())
            .args(["serve", name])
            .args(tls)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the gRPC server ({INSTALL}): {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let read =
            tokio::time::timeout(super::WAIT, BufReader::new(stdout).read_line(&mut line)).await;
        let port: u16 = match read {
            Ok(Ok(_)) => line.trim().parse().unwrap_or_else(|_| {
                panic!("the gRPC server printed {line:?}, not its port ({INSTALL})")
            }),
            _ => panic!("the gRPC server did not print its port ({INSTALL})"),
        };
        GrpcServer {
            name: name.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// One gRPC call by a real client over h2c: `{code, details, responses, trailing, initial}`.
pub async fn call(
    target: SocketAddr,
    authority: &str,
    method: &str,
    metadata: &[(&str, &str)],
) -> Value {
    let pairs: Vec<String> = metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let out = Command::new(python())
        .arg(script())
        .args(["call", &target.to_string(), authority, method])
        .args(&pairs)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run the gRPC client ({INSTALL}): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!(
            "the gRPC client printed {text:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
