//! The `tenantgate` CLI as one operator runs it: a home of its own (contexts file, key file), so a
//! test never reads or writes the real user's contexts, nor another test's.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::{Gateway, ADMIN_TOKEN, BIN};

pub struct Operator {
    home: tempfile::TempDir,
}

/// What a command printed, and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    /// Panics with both streams unless the command exited with `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(self.code, Some(code), "{self:#?}");
        self
    }
}

impl Operator {
    pub fn new() -> Operator {
        Operator {
            home: tempfile::tempdir().expect("home"),
        }
    }

    pub fn contexts_file(&self) -> PathBuf {
        self.home.path().join(".config/tenantgate/contexts.toml")
    }

    pub fn key_file(&self) -> PathBuf {
        self.home
            .path()
            .join(".local/share/tenantgate/contexts.key")
    }

    /// A scratch folder in this operator's home (for pulled files).
    pub fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None, &[]).await
    }

    /// Runs a command with `stdin` piped in (or nothing) and extra environment variables.
    pub async fn run_with(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(args)
            .env("HOME", self.home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("TENANTGATE_ADMIN_TOKEN")
            .env("USER", "operator")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("run tenantgate");
        if let Some(mut pipe) = child.stdin.take() {
            if let Some(text) = stdin {
                pipe.write_all(text.as_bytes()).await.expect("stdin");
            }
        }
        let out = child.wait_with_output().await.expect("tenantgate output");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `context add NAME` for a gateway the harness started, its token typed in (piped).
    pub async fn add_context(&self, name: &str, gw: &Gateway) -> Run {
        let url = format!("http://{}", gw.admin);
        self.run_with(
            &["context", "add", name, "--admin-url", &url],
            Some(&format!("{ADMIN_TOKEN}\n")),
            &[],
        )
        .await
    }
}
