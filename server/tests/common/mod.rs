//! Shared by the integration tests: run the real `evidex` binary, start `evidex
//! serve` on a loopback port, and drive it over HTTP.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn evidex(data: &Path, envs: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evidex"));
    cmd.arg("--data")
        .arg(data)
        .args(args)
        .env_remove("EVIDEX_DATA");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("evidex runs");
    assert!(
        out.status.success(),
        "evidex {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `evidex --data DATA ARGS...` and returns its output, whatever its exit code.
pub fn run(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_evidex"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("EVIDEX_DATA")
        .output()
        .expect("evidex runs")
}

/// A command's stdout and stderr, as text.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn token(data: &Path, role: &str) -> String {
    let out = evidex(
        data,
        &[],
        &["token", "create", "--role", role, "--name", role],
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A running `evidex serve`; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    pub fn start(data: &Path, workers: usize, envs: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_evidex"));
        cmd.arg("--data")
            .arg(data)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--workers",
                &workers.to_string(),
            ])
            .env_remove("EVIDEX_DATA")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("evidex serve starts");
        let mut line = String::new();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        stderr.read_line(&mut line).unwrap();
        // Keep reading what the server logs (to the test's output when it is asked
        // for with SERVE_LOG=1): a closed pipe would make its writes fail.
        std::thread::spawn(move || {
            let show = std::env::var_os("SERVE_LOG").is_some();
            let mut l = String::new();
            while stderr.read_line(&mut l).is_ok_and(|n| n > 0) {
                if show {
                    eprint!("[serve] {l}");
                }
                l.clear();
            }
        });
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim_end_matches('/')
            .to_string();
        Server { child, base }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: base.to_string(),
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.send().await.expect("request is answered");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap().to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call("GET", path, Some(token), None, &[]).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.call(
            "POST",
            path,
            Some(token),
            Some(body.to_string().into_bytes()),
            &[],
        )
        .await
    }

    /// Polls a job until it leaves queued/processing.
    pub async fn wait(&self, id: &str, token: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let j = self.get(&format!("/v1/exports/{id}"), token).await.json();
            if !matches!(j["status"].as_str(), Some("queued" | "processing")) {
                return j;
            }
            assert!(start.elapsed() < timeout, "job {id} still {}", j["status"]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub src: PathBuf,
}

/// Generates source files (not ingested: the tests ingest over HTTP).
pub fn env(rows: u64, days: u32) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let src = dir.path().join("src.ndjson");
    evidex(
        &data,
        &[],
        &[
            "generate",
            "--rows",
            &rows.to_string(),
            "--days",
            &days.to_string(),
            "--end",
            "2026-03-04",
            "--seed",
            "5",
            "--output",
            src.to_str().unwrap(),
        ],
    );
    Env { dir, data, src }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The Python that has `standardwebhooks` (scripts/test.sh makes a venv with it).
pub fn python() -> String {
    let py = std::env::var("STANDARDWEBHOOKS_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let ok = Command::new(&py)
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{py} lacks the standardwebhooks package: run ./scripts/test.sh, which installs it into a virtual environment"
    );
    py
}

/// A local webhook receiver (tests/support/webhook_receiver.py) that verifies every
/// signature with the Standard Webhooks reference library.
pub struct Receiver {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub secret_file: PathBuf,
}

impl Receiver {
    pub fn start(dir: &Path, fail_first: u32) -> Receiver {
        let log = dir.join("received.ndjson");
        let secret_file = dir.join("secret");
        std::fs::write(&secret_file, "whsec_AAAA").unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/webhook_receiver.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(&secret_file)
            .arg(&log)
            .arg(fail_first.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Receiver {
            child,
            port: line.trim().parse().unwrap(),
            log,
            secret_file,
        }
    }

    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
