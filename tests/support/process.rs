//! A server the tests start themselves (Redis, etcd): its output appended to a log file in the
//! test's folder, ready once it answers, stopped by its PID.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::WAIT;

pub struct ServerProcess {
    name: &'static str,
    /// How a missing binary is got, for the panic that says it is missing.
    install: &'static str,
    log: PathBuf,
    child: Option<Child>,
}

impl ServerProcess {
    pub fn new(name: &'static str, install: &'static str, log: PathBuf) -> ServerProcess {
        ServerProcess {
            name,
            install,
            log,
            child: None,
        }
    }

    /// Runs `command` and waits (up to `WAIT`) until `ready` says the server answers.
    pub fn spawn(&mut self, mut command: Command, ready: impl Fn() -> bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {:?} ({e}); {}",
                    command.get_program(),
                    self.install
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} did not start; log:\n{}", self.name, self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the server by its PID and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log());
        }
    }
}
