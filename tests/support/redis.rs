//! Real Redis servers for the fleet rate-limit tests: each on its own free loopback port, with no
//! persistence, started and stopped by PID. `make test` finds (or installs) the binary and names it
//! in `TENANTGATE_REDIS_SERVER`; otherwise `redis-server` must be on PATH.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use super::free_addr;
use super::process::ServerProcess;

pub struct Redis {
    pub addr: SocketAddr,
    /// Declared before `dir`: the server stops before its folder goes.
    process: ServerProcess,
    dir: tempfile::TempDir,
}

fn binary() -> String {
    std::env::var("TENANTGATE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let process = ServerProcess::new(
            "redis",
            "`make test` installs redis (scripts/ensure-redis.sh)",
            dir.path().join("redis.log"),
        );
        let mut redis = Redis {
            addr: free_addr(),
            process,
            dir,
        };
        redis.spawn();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    fn spawn(&mut self) {
        let mut command = Command::new(binary());
        command
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        let addr = self.addr;
        self.process.spawn(command, || {
            send_command(addr, "PING").is_some_and(|r| r.starts_with("+PONG"))
        });
    }

    /// Sends one inline command and returns the first reply line, or `None` when Redis is not there.
    pub fn command(&self, command: &str) -> Option<String> {
        send_command(self.addr, command)
    }

    /// Stops the server (by its PID): its port refuses connections until [`Redis::restart`].
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts it again on the same port (empty: it keeps nothing).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

fn send_command(addr: SocketAddr, command: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}
