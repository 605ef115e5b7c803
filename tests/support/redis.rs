//! Real Redis servers for the fleet rate-limit tests: each on its own free loopback port, with no
//! persistence, started and stopped by PID. `make test` finds (or installs) the binary and names it
//! in `TENANTGATE_REDIS_SERVER`; otherwise `redis-server` must be on PATH.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_addr, WAIT};

pub struct Redis {
    pub addr: SocketAddr,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

fn binary() -> String {
    std::env::var("TENANTGATE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

impl Redis {
    pub fn start() -> Redis {
        let mut redis = Redis {
            addr: free_addr(),
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        redis.spawn();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("redis log");
        let child = Command::new(binary())
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); `make test` installs redis (scripts/ensure-redis.sh)",
                    binary()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.command("PING").is_some_and(|r| r.starts_with("+PONG")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis on {} did not start", self.addr);
    }

    /// Sends one inline command and returns the first reply line, or `None` when Redis is not there.
    pub fn command(&self, command: &str) -> Option<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Stops the server (by its PID): its port refuses connections until [`Redis::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: it keeps nothing).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
