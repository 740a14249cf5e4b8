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

mod s3_front;

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

/// Headless chromium driven over WebDriver (a `chromedriver` of our own on a free
/// loopback port), for the console's end-to-end tests. Chromium, chromedriver and
/// axe-core are installed by scripts/test.sh, which also sets `$CHROMEDRIVER` and
/// `$AXE_CORE_JS`. Dropping it ends the browser session and kills chromedriver.
pub struct Browser {
    pub client: fantoccini::Client,
    /// The server's `http://127.0.0.1:PORT`, which [`Browser::goto`] paths are joined to.
    pub base: String,
    session: Option<String>,
    // Declared last so that it is dropped after the session is ended.
    driver: Chromedriver,
}

/// The chromedriver process; killed when dropped, also when [`Browser::start`] fails
/// halfway.
struct Chromedriver {
    child: Child,
    port: u16,
    /// chromedriver's and chromium's `TMPDIR` (profile, singleton socket), removed
    /// after the process is killed: chromium leaves its `org.chromium.Chromium.*`
    /// folders behind in `/tmp` otherwise, a few dozen per test run.
    _tmp: tempfile::TempDir,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long [`Browser::find`] and friends wait for an element before failing.
pub const BROWSER_WAIT: Duration = Duration::from_secs(10);

impl Browser {
    /// Starts chromedriver and a headless chromium whose page is 1280×800.
    pub async fn start(base: &str) -> Browser {
        let chromedriver =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_string());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let tmp = tempfile::tempdir().expect("a temporary folder for chromium");
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{chromedriver} does not start ({e}): run ./scripts/test.sh, which installs chromium-driver"
                )
            });
        let mut driver = Chromedriver {
            child,
            port,
            _tmp: tmp,
        };
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("{chromedriver} exited at start: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{chromedriver} is not listening on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
        ];
        // The browser's own first-run and background work only adds noise and time.
        args.extend(["--no-first-run", "--disable-extensions", "--mute-audio"]);
        let mut chrome = serde_json::json!({ "args": args });
        if Path::new("/usr/bin/chromium").exists() {
            chrome["binary"] = "/usr/bin/chromium".into();
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".to_string(), chrome);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("no chromium session from {chromedriver}: {e}"));
        let session = client.session_id().await.ok().flatten();
        let browser = Browser {
            client,
            base: base.trim_end_matches('/').to_string(),
            session,
            driver,
        };
        browser.set_size(1280, 800).await;
        browser
    }

    /// `path` joined to the server's address; absolute URLs (`http:`, `data:`,
    /// `about:`) are used as they are.
    pub fn url(&self, path: &str) -> String {
        if path.contains(':') && !path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// Opens a page and waits for it to load.
    pub async fn goto(&self, path: &str) {
        let url = self.url(path);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The current page's path and query (`/exports?status=failed`), or the whole URL
    /// when it is not on the server.
    pub async fn location(&self) -> String {
        let url = self.client.current_url().await.expect("current URL");
        let s = url.as_str();
        match s.strip_prefix(&self.base) {
            Some(rest) => rest.to_string(),
            None => s.to_string(),
        }
    }

    /// Waits until the current location (see [`Browser::location`]) satisfies `check`.
    pub async fn wait_for_location(&self, check: impl Fn(&str) -> bool, timeout: Duration) {
        let start = Instant::now();
        loop {
            let here = self.location().await;
            if check(&here) {
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "still at {here} after {timeout:?}:\n{}",
                    self.body_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The first element matching `css`, waiting up to [`BROWSER_WAIT`] for it.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.wait_for(css, BROWSER_WAIT).await
    }

    /// The first element matching `css` now, if there is one.
    pub async fn try_find(&self, css: &str) -> Option<fantoccini::elements::Element> {
        self.client.find(fantoccini::Locator::Css(css)).await.ok()
    }

    /// Every element matching `css` now.
    pub async fn find_all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.client
            .find_all(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find_all({css}): {e}"))
    }

    /// Waits until an element matches `css` and returns it; fails the test, naming the
    /// page, when none does within `timeout`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> fantoccini::elements::Element {
        let start = Instant::now();
        loop {
            if let Some(e) = self.try_find(css).await {
                return e;
            }
            if start.elapsed() > timeout {
                panic!(
                    "no element matches {css:?} after {timeout:?} on {}:\n{}",
                    self.location().await,
                    self.body_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of the element matching `css` satisfies `check`, and
    /// returns that text; fails the test with the last text seen otherwise.
    pub async fn wait_for_text(
        &self,
        css: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        let mut last = None;
        loop {
            if let Some(e) = self.try_find(css).await
                && let Ok(t) = e.text().await
            {
                if check(&t) {
                    return t;
                }
                last = Some(t);
            }
            if start.elapsed() > timeout {
                panic!(
                    "the text of {css:?} on {} is still {last:?} after {timeout:?}",
                    self.location().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The visible text of the first element matching `css` (waiting for it).
    pub async fn text(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }

    /// The visible text of the whole page (empty when there is no body).
    pub async fn body_text(&self) -> String {
        match self.try_find("body").await {
            Some(b) => b.text().await.unwrap_or_default(),
            None => String::new(),
        }
    }

    /// The current `value` of a form control.
    pub async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .unwrap_or_else(|e| panic!("value of {css}: {e}"))
            .unwrap_or_default()
    }

    /// An attribute of the first element matching `css`.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.find(css)
            .await
            .attr(name)
            .await
            .unwrap_or_else(|e| panic!("{name} of {css}: {e}"))
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Replaces the text of an input by typing, as a person would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        e.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Sets a control's value and fires `input` and `change` as the browser does
    /// after user input. Used for date inputs (typing into them depends on the
    /// browser's locale) and for selects; for a `<select multiple>`, `values` are the
    /// options to select, every other option is deselected.
    pub async fn set_value(&self, css: &str, values: &[&str]) {
        let e = self.find(css).await;
        let arg = serde_json::to_value(&e).expect("element reference");
        let script = r#"
            const [el, values] = arguments;
            if (el.tagName === 'SELECT') {
                for (const o of el.options) o.selected = values.includes(o.value);
                const missing = values.filter(v => ![...el.options].some(o => o.value === v));
                if (missing.length) return 'no option ' + missing.join(', ');
            } else {
                el.value = values[0] ?? '';
            }
            el.dispatchEvent(new Event('input', { bubbles: true }));
            el.dispatchEvent(new Event('change', { bubbles: true }));
            return null;
        "#;
        let r = self
            .client
            .execute(script, vec![arg, serde_json::json!(values)])
            .await
            .unwrap_or_else(|e| panic!("set {css}: {e}"));
        assert!(r.is_null(), "set {css} to {values:?}: {r}");
    }

    /// Makes the page's viewport exactly `width`×`height` CSS pixels (the window is
    /// grown by whatever the browser keeps for itself), so screenshots have that size.
    pub async fn set_size(&self, width: u32, height: u32) {
        let mut w = width;
        let mut h = height;
        for _ in 0..3 {
            self.client
                .set_window_size(w, h)
                .await
                .unwrap_or_else(|e| panic!("set window size {w}x{h}: {e}"));
            let inner = self
                .client
                .execute("return [window.innerWidth, window.innerHeight];", vec![])
                .await
                .expect("viewport size");
            let (iw, ih) = (
                inner[0].as_u64().unwrap_or(0) as i64,
                inner[1].as_u64().unwrap_or(0) as i64,
            );
            if iw == i64::from(width) && ih == i64::from(height) {
                return;
            }
            w = (i64::from(w) + i64::from(width) - iw).max(1) as u32;
            h = (i64::from(h) + i64::from(height) - ih).max(1) as u32;
        }
    }

    /// Saves a PNG of the viewport as `docs/screenshots/{name}.png` (the README shows
    /// them) and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/screenshots"));
        let path = dir.join(format!("{name}.png"));
        self.screenshot_to(&path).await;
        path
    }

    /// Saves a PNG of the viewport at `path`.
    pub async fn screenshot_to(&self, path: &Path) {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Runs axe-core (the file at `$AXE_CORE_JS`) on the current page and returns its
    /// serious and critical violations, one line each: rule, what to fix, first element.
    pub async fn axe(&self) -> Vec<String> {
        let path = std::env::var("AXE_CORE_JS").unwrap_or_else(|_| {
            panic!("AXE_CORE_JS is not set: run ./scripts/test.sh, which installs axe-core")
        });
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read axe-core at {path}: {e}"));
        // WebDriver runs scripts outside the page's Content-Security-Policy, so the
        // console's strict policy does not keep axe out.
        self.client
            .execute(&source, vec![])
            .await
            .unwrap_or_else(|e| panic!("inject axe-core: {e}"));
        let script = r#"
            const done = arguments[arguments.length - 1];
            axe.run(document, { resultTypes: ['violations'] })
                .then(r => done({ violations: r.violations.map(v => ({
                    id: v.id, impact: v.impact, help: v.help,
                    target: v.nodes.length ? String(v.nodes[0].target) : '',
                    nodes: v.nodes.length })) }))
                .catch(e => done({ error: String(e) }));
        "#;
        let r = self
            .client
            .execute_async(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("axe.run: {e}"));
        assert!(r["error"].is_null(), "axe.run failed: {}", r["error"]);
        r["violations"]
            .as_array()
            .expect("axe violations")
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .map(|v| {
                format!(
                    "{} ({}): {} — {} ({} element(s))",
                    v["id"].as_str().unwrap_or(""),
                    v["impact"].as_str().unwrap_or(""),
                    v["help"].as_str().unwrap_or(""),
                    v["target"].as_str().unwrap_or(""),
                    v["nodes"]
                )
            })
            .collect()
    }

    /// The browser's cookies for the current page as a `Cookie` header value, so a
    /// test can fetch what the signed-in browser would.
    pub async fn cookie_header(&self) -> String {
        self.client
            .get_all_cookies()
            .await
            .expect("cookies")
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session makes chromedriver quit chromium; killing chromedriver
        // alone would leave the browser running. Drop cannot await, so this is a plain
        // blocking `DELETE /session/{id}`; chromedriver itself is killed after it.
        let port = self.driver.port;
        if let Some(id) = &self.session
            && let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port))
        {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            // chromedriver answers once chromium has quit (and keeps the connection
            // open after that): the first bytes of the answer are enough.
            let _ = std::io::Read::read(&mut s, &mut [0; 512]);
        }
    }
}

/// Dialogs and checkboxes, for the console's settings and schedule pages.
impl Browser {
    /// Waits for a dialog (`confirm`, `alert`) to open, accepts it and returns its
    /// text; fails the test when none opens within `timeout`.
    pub async fn accept_dialog(&self, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            match self.client.get_alert_text().await {
                Ok(text) => {
                    self.client
                        .accept_alert()
                        .await
                        .unwrap_or_else(|e| panic!("accept the dialog {text:?}: {e}"));
                    return text;
                }
                Err(e) if start.elapsed() > timeout => {
                    panic!(
                        "no dialog opened on {} within {timeout:?}: {e}",
                        self.location().await
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Scrolls the page until the element matching `css` is at the bottom of the
    /// viewport (or as far as the page goes), so a screenshot shows it and what is
    /// above it.
    pub async fn scroll_to(&self, css: &str) {
        let e = self.find(css).await;
        let arg = serde_json::to_value(&e).expect("element reference");
        self.client
            .execute("arguments[0].scrollIntoView({ block: 'end' });", vec![arg])
            .await
            .unwrap_or_else(|e| panic!("scroll to {css}: {e}"));
    }

    /// Whether the checkbox matching `css` is checked.
    pub async fn is_checked(&self, css: &str) -> bool {
        self.find(css)
            .await
            .prop("checked")
            .await
            .unwrap_or_else(|e| panic!("checked of {css}: {e}"))
            .as_deref()
            == Some("true")
    }

    /// Checks or unchecks the checkbox matching `css` by clicking it, as a person would.
    pub async fn set_checked(&self, css: &str, checked: bool) {
        if self.is_checked(css).await != checked {
            self.click(css).await;
        }
        assert_eq!(self.is_checked(css).await, checked, "{css} did not toggle");
    }
}

/// An `s3s-fs` server on a free loopback port: S3 over a directory (each
/// subdirectory a bucket) that checks SigV4 signatures, so a wrong secret fails as it
/// would on AWS. Reached through [`s3_front`], which makes its conditional writes
/// atomic as on AWS. Killed when dropped.
pub struct S3sFs {
    child: Child,
    /// The front's port, the one clients use.
    pub port: u16,
    stop_front: Option<tokio::sync::oneshot::Sender<()>>,
}

impl S3sFs {
    /// The access key id every `S3sFs` accepts.
    pub const ACCESS_KEY: &'static str = "evidex-console-ak";
    /// The secret access key every `S3sFs` accepts.
    pub const SECRET_KEY: &'static str = "evidex-console-secret-key-1";

    /// Serves `root`, creating a directory for each of `buckets` first.
    pub fn start(root: &Path, buckets: &[&str]) -> S3sFs {
        for b in buckets {
            std::fs::create_dir_all(root.join(b)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", Self::ACCESS_KEY])
            .args(["--secret-key", Self::SECRET_KEY])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs is installed (./scripts/test.sh installs it)");
        let mut s3 = S3sFs {
            child,
            port,
            stop_front: None,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "s3s-fs is not listening on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let (front, stop) = s3_front::start(port);
        s3.port = front;
        s3.stop_front = Some(stop);
        s3
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_front.take() {
            let _ = stop.send(());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Files under `dir` (recursively) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_containing(&p, needle));
        } else if let Ok(b) = std::fs::read(&p)
            && b.windows(needle.len()).any(|w| w == needle)
        {
            out.push(p);
        }
    }
    out
}
