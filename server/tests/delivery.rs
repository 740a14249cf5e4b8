//! S3 delivery end to end against real S3-compatible servers on loopback: `s3s-fs`
//! (checks SigV4, so wrong keys fail like on AWS) and moto's S3 server (Object Lock,
//! conditional writes). What was delivered is read back with boto3 (AWS's SDK, not
//! evidex's client) and passed through `evidex verify`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{Client, Receiver, Server, files_containing, token};

const AK: &str = "evidex-delivery-ak";
const SK: &str = "evidex-delivery-secret-key-1";

fn python() -> String {
    std::env::var("TEST_PYTHON")
        .or_else(|_| std::env::var("STANDARDWEBHOOKS_PYTHON"))
        .unwrap_or_else(|_| "python3".to_string())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A test S3 server process; killed when dropped.
struct S3 {
    child: Child,
    port: u16,
}

impl S3 {
    /// `s3s-fs` serving `root` (each directory a bucket) on `port`.
    fn s3s(root: &Path, port: u16) -> S3 {
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", AK, "--secret-key", SK])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs is installed (./scripts/test.sh installs it)");
        wait_port(port, "s3s-fs");
        S3 { child, port }
    }

    /// moto's S3 server (in memory).
    fn moto() -> S3 {
        let port = free_port();
        let child = Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto is installed (./scripts/test.sh installs it)");
        wait_port(port, "moto");
        S3 { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// boto3 against this server.
    fn tool(&self, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/s3_tool.py");
        let out = Command::new(python())
            .arg(script)
            .args([&self.endpoint(), AK, SK])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "s3_tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn keys(&self, bucket: &str) -> Vec<String> {
        serde_json::from_str(&self.tool(&["list", bucket])).unwrap()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ingest(data: &Path, dir: &Path) {
    let lines: Vec<String> = (0..30)
        .map(|i| {
            format!(
                r#"{{"id":"d-{i}","timestamp":"2026-03-02T10:00:{i:02}Z","decision":"block","severity":"high","policy":"p","gateway_id":"g","consumer_group":"c","input":"text {i}"}}"#
            )
        })
        .collect();
    let f = dir.join("in.ndjson");
    std::fs::write(&f, lines.join("\n")).unwrap();
    common::evidex(data, &[], &["ingest", f.to_str().unwrap()]);
}

fn settings(endpoint: &str, bucket: &str, extra: Value) -> Value {
    let mut s = json!({
        "bucket": bucket, "region": "us-east-1", "endpoint": endpoint, "path_style": true,
        "prefix": "evidence/", "access_key_id": AK, "secret_access_key": SK,
    });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

async fn put(c: &Client, path: &str, token: &str, body: &Value) -> common::Resp {
    c.call(
        "PUT",
        path,
        Some(token),
        Some(body.to_string().into_bytes()),
        &[],
    )
    .await
}

/// Polls an export until its delivery leaves `pending`.
async fn wait_delivery(c: &Client, id: &str, token: &str, timeout: Duration) -> Value {
    let start = Instant::now();
    loop {
        let j = c.get(&format!("/v1/exports/{id}"), token).await.json();
        if j["delivery"]["status"]
            .as_str()
            .is_some_and(|s| s != "pending")
        {
            return j;
        }
        assert!(
            start.elapsed() < timeout,
            "delivery of {id} still pending: {}",
            j["delivery"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn export(c: &Client, token: &str, name: &str, format: &str) -> Value {
    let mut body =
        json!({"name": name, "from": "2026-03-01", "to": "2026-03-03", "format": format});
    if format == "zip" {
        // Two datasets make a ZIP package.
        body["format"] = json!("csv");
        body["include"] = json!(["escalations"]);
    }
    let r = c.post("/v1/exports", token, &body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_str().unwrap().to_string();
    let j = c.wait(&id, token, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "completed", "{j}");
    j
}

/// Downloads every object under `prefix` into `dir` and runs `evidex verify` on the
/// artifact `main`.
fn fetch_and_verify(s3: &S3, bucket: &str, prefix: &str, main: &str, dir: &Path, data: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let keys: Vec<String> = s3
        .keys(bucket)
        .into_iter()
        .filter(|k| k.starts_with(prefix) && !k[prefix.len()..].contains('/'))
        .collect();
    assert!(keys.iter().any(|k| k.ends_with(main)), "{keys:?}");
    for k in &keys {
        let name = &k[prefix.len()..];
        s3.tool(&["get", bucket, k, dir.join(name).to_str().unwrap()]);
    }
    let out = common::run(data, &["verify", dir.join(main).to_str().unwrap()]);
    assert!(
        out.status.success(),
        "verify {main}: {}",
        common::text(&out)
    );
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {report}"))
}

const ALLOW: &[(&str, &str)] = &[("EVIDEX_NETWORK__ALLOW_PRIVATE_TARGETS", "true")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_test_connection_against_real_servers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(dir.path().join("s3root/evidence-bucket")).unwrap();
    let s3 = S3::s3s(&dir.path().join("s3root"), free_port());
    let moto = S3::moto();
    moto.tool(&["create-bucket", "plain-bucket"]);
    moto.tool(&["create-bucket", "locked-bucket", "lock"]);
    let admin = token(&data, "admin");
    let compliance = token(&data, "compliance");

    // Without the flag, an endpoint on this machine is refused before any request.
    {
        let server = Server::start(&data, 0, &[]);
        let c = Client::new(&server.base);
        let r = c
            .post(
                "/v1/settings/delivery/test",
                &admin,
                &settings(
                    &format!("http://localhost:{}", s3.port),
                    "evidence-bucket",
                    json!({}),
                ),
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let rep = r.json();
        assert_eq!(rep["ok"], false);
        assert_eq!(step(&rep, "resolve")["kind"], "refused_address", "{rep}");
        assert!(
            step(&rep, "resolve")["detail"]
                .as_str()
                .unwrap()
                .contains("allow_private_targets")
        );
        assert_eq!(step(&rep, "write")["status"], "skipped");
    }

    let server = Server::start(&data, 0, ALLOW);
    let c = Client::new(&server.base);
    let good = settings(&s3.endpoint(), "evidence-bucket", json!({}));

    // Roles: only admins see or change delivery settings.
    assert_eq!(
        c.get("/v1/settings/delivery", &compliance).await.status,
        403
    );
    assert_eq!(
        put(&c, "/v1/settings/delivery", &compliance, &good)
            .await
            .status,
        403
    );
    assert_eq!(
        c.get("/v1/settings/delivery", &admin).await.json()["configured"],
        false
    );

    // A test before saving: every step passes on s3s-fs.
    let rep = c
        .post("/v1/settings/delivery/test", &admin, &good)
        .await
        .json();
    assert_eq!(rep["ok"], true, "{rep}");
    for s in [
        "resolve",
        "connect",
        "bucket",
        "write",
        "read",
        "conditional_create",
        "delete",
    ] {
        assert_eq!(step(&rep, s)["status"], "ok", "{s}: {rep}");
    }
    assert!(rep["supports"]["conditional_create"].is_boolean(), "{rep}");
    assert!(
        s3.keys("evidence-bucket").is_empty(),
        "the probe is deleted"
    );

    // Each failure kind is named, at its step.
    let cases = [
        (
            settings(
                &s3.endpoint(),
                "evidence-bucket",
                json!({"secret_access_key": "wrong-secret"}),
            ),
            "bucket",
            "credentials",
        ),
        (
            settings(&s3.endpoint(), "no-such-bucket", json!({})),
            "bucket",
            "bucket_missing",
        ),
        (
            settings(
                &format!("http://127.0.0.1:{}", free_port()),
                "evidence-bucket",
                json!({}),
            ),
            "connect",
            "connection",
        ),
        (
            settings(
                "http://evidex-no-such-host.invalid:9000",
                "evidence-bucket",
                json!({}),
            ),
            "resolve",
            "name_resolution",
        ),
        // TLS to a server that speaks plain HTTP: the handshake fails.
        (
            settings(
                &format!("https://127.0.0.1:{}", s3.port),
                "evidence-bucket",
                json!({}),
            ),
            "tls",
            "tls",
        ),
        (
            settings(
                &moto.endpoint(),
                "plain-bucket",
                json!({"object_lock": {"mode": "COMPLIANCE", "days": 30}}),
            ),
            "object_lock",
            "object_lock_disabled",
        ),
    ];
    for (body, at, kind) in cases {
        let started = Instant::now();
        let rep = c
            .post("/v1/settings/delivery/test", &admin, &body)
            .await
            .json();
        assert_eq!(rep["ok"], false, "{kind}: {rep}");
        assert_eq!(step(&rep, at)["status"], "failed", "{kind}: {rep}");
        assert_eq!(step(&rep, at)["kind"], kind, "{rep}");
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{kind} took {:?}",
            started.elapsed()
        );
        assert!(!rep.to_string().contains("wrong-secret"), "{rep}");
    }
    // Object Lock enabled on the bucket: reported, and the step passes.
    let rep = c
        .post(
            "/v1/settings/delivery/test",
            &admin,
            &settings(
                &moto.endpoint(),
                "locked-bucket",
                json!({"object_lock": {"mode": "GOVERNANCE", "days": 1}}),
            ),
        )
        .await
        .json();
    assert_eq!(rep["ok"], true, "{rep}");
    assert_eq!(rep["supports"]["object_lock"], true);
    assert_eq!(
        rep["supports"]["conditional_create"], true,
        "moto honours If-None-Match"
    );

    // Bad settings are refused naming the field; nothing is stored.
    for (extra, want) in [
        (json!({"bucket": "Not_A_Bucket"}), "bucket:"),
        (json!({"prefix": "/abs"}), "prefix:"),
        (json!({"endpoint": "ftp://x"}), "endpoint:"),
        (json!({"colour": "red"}), "colour"),
        (json!({"path_style": "yes"}), "path_style"),
        (json!({"path_style": false}), "set path_style: true"),
        (
            json!({"object_lock": {"mode": "GOVERNANCE", "days": -1}}),
            "object_lock.days",
        ),
        (json!({"access_key_id": "AK\nX"}), "access_key_id"),
        (json!({"prefix": "a/*/"}), "prefix:"),
        (json!({"prefix": "a/../"}), "prefix:"),
        (json!({"endpoint": "http://127.0.0.1:9000/#x"}), "endpoint"),
        (
            json!({"object_lock": {"mode": "FOREVER", "days": 1}}),
            "object_lock.mode",
        ),
    ] {
        let r = put(
            &c,
            "/v1/settings/delivery",
            &admin,
            &settings(&s3.endpoint(), "evidence-bucket", extra.clone()),
        )
        .await;
        assert_eq!(r.status, 400, "{extra}");
        assert!(r.message().contains(want), "{extra}: {}", r.message());
    }
    let mut no_secret = good.clone();
    no_secret
        .as_object_mut()
        .unwrap()
        .remove("secret_access_key");
    let r = put(&c, "/v1/settings/delivery", &admin, &no_secret).await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("secret_access_key"), "{}", r.message());
    assert_eq!(
        c.get("/v1/settings/delivery", &admin).await.json()["configured"],
        false
    );

    // Round trip: the secret is never echoed, a PUT without it keeps it.
    let r = put(&c, "/v1/settings/delivery", &admin, &good).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let shown = c.get("/v1/settings/delivery", &admin).await.json();
    assert_eq!(shown["bucket"], "evidence-bucket");
    assert_eq!(shown["secret_access_key_set"], true);
    assert!(shown.get("secret_access_key").is_none(), "{shown}");
    let mut changed = no_secret.clone();
    changed["prefix"] = json!("evidence/2026/");
    let r = put(&c, "/v1/settings/delivery", &admin, &changed).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["prefix"], "evidence/2026/");
    let rep = c
        .call(
            "POST",
            "/v1/settings/delivery/test",
            Some(&admin),
            None,
            &[],
        )
        .await
        .json();
    assert_eq!(rep["ok"], true, "the kept secret still works: {rep}");
    let log = c.get("/v1/audit-log", &admin).await;
    assert!(String::from_utf8_lossy(&log.body).contains("settings.delivery.updated"));
    drop(server);
    // The secret is nowhere in clear: not in the database, logs, keys or data.
    assert!(files_containing(&data, SK.as_bytes()).is_empty());
    assert!(files_containing(&data, b"wrong-secret").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_are_delivered_verified_and_never_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ingest(&data, dir.path());
    let moto = S3::moto();
    moto.tool(&["create-bucket", "locked-bucket", "lock"]);
    let admin = token(&data, "admin");
    let compliance = token(&data, "compliance");
    // An object already has the name the CSV export will get.
    let squatter = dir.path().join("squatter.csv");
    std::fs::write(&squatter, "not evidex's\n").unwrap();
    moto.tool(&[
        "put",
        "locked-bucket",
        "evidence/Taken.csv",
        squatter.to_str().unwrap(),
    ]);

    let server = Server::start(&data, 1, ALLOW);
    let c = Client::new(&server.base);
    let s = settings(
        &moto.endpoint(),
        "locked-bucket",
        json!({"object_lock": {"mode": "GOVERNANCE", "days": 2}}),
    );
    assert_eq!(
        put(&c, "/v1/settings/delivery", &admin, &s).await.status,
        200
    );

    // Other systems hear of each delivery (signature checked by the reference library).
    let receiver = Receiver::start(dir.path(), 0);
    let r = c
        .post(
            "/v1/webhooks",
            &admin,
            &json!({"url": format!("http://localhost:{}/hook", receiver.port), "events": ["export.delivered"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    std::fs::write(&receiver.secret_file, r.json()["secret"].as_str().unwrap()).unwrap();
    for (name, format, main) in [
        ("Evidence-CSV", "csv", "Evidence-CSV.csv"),
        ("Evidence-PDF", "pdf", "Evidence-PDF.pdf"),
        ("Evidence-ZIP", "zip", "Evidence-ZIP.zip"),
    ] {
        let j = export(&c, &compliance, name, format).await;
        let id = j["id"].as_str().unwrap();
        let j = wait_delivery(&c, id, &compliance, Duration::from_secs(60)).await;
        assert_eq!(j["delivery"]["status"], "delivered", "{j}");
        assert_eq!(j["delivery"]["key"], format!("evidence/{main}"));
        assert_eq!(j["artifact"]["file_name"], main);
        fetch_and_verify(
            &moto,
            "locked-bucket",
            "evidence/",
            main,
            &dir.path().join(format),
            &data,
        );
        let head: Value = serde_json::from_str(&moto.tool(&[
            "head",
            "locked-bucket",
            &format!("evidence/{main}"),
        ]))
        .unwrap();
        assert_eq!(head["ObjectLockMode"], "GOVERNANCE", "{head}");
        assert_eq!(
            head["Metadata"]["evidex-sha256"], j["artifact"]["sha256"],
            "{head}"
        );
    }

    let start = Instant::now();
    while receiver.requests().len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            receiver.requests()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for req in receiver.requests() {
        assert_eq!(req["verified"], true, "{req}");
        let body = &req["payload"];
        assert_eq!(body["type"], "export.delivered", "{req}");
        let key = body["data"]["delivery_key"].as_str().unwrap();
        assert!(key.starts_with("evidence/Evidence-"), "{body}");
        assert!(body["data"]["artifact"]["sha256"].is_string(), "{body}");
    }

    // The name is taken: the artifact goes under the job id; the other object stays.
    let j = export(&c, &compliance, "Taken", "csv").await;
    let id = j["id"].as_str().unwrap().to_string();
    let j = wait_delivery(&c, &id, &compliance, Duration::from_secs(60)).await;
    assert_eq!(j["delivery"]["status"], "delivered", "{j}");
    assert_eq!(j["delivery"]["key"], format!("evidence/{id}/Taken.csv"));
    let back = dir.path().join("squatter-back.csv");
    moto.tool(&[
        "get",
        "locked-bucket",
        "evidence/Taken.csv",
        back.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&back).unwrap(), b"not evidex's\n");
    fetch_and_verify(
        &moto,
        "locked-bucket",
        &format!("evidence/{id}/"),
        "Taken.csv",
        &dir.path().join("taken"),
        &data,
    );

    // Delivering again by hand finds its own object: delivered, same key, nothing new.
    let before = moto.keys("locked-bucket");
    let r = c
        .post(
            &format!("/v1/exports/{id}/deliver"),
            &compliance,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let j = wait_delivery(&c, &id, &compliance, Duration::from_secs(60)).await;
    assert_eq!(j["delivery"]["status"], "delivered");
    assert_eq!(j["delivery"]["key"], format!("evidence/{id}/Taken.csv"));
    assert_eq!(moto.keys("locked-bucket"), before);
    // Only completed exports can be delivered; viewers may not ask.
    let viewer = token(&data, "viewer");
    assert_eq!(
        c.post(&format!("/v1/exports/{id}/deliver"), &viewer, &json!({}))
            .await
            .status,
        403
    );
    assert_eq!(
        c.post("/v1/exports/exp_01NOPE/deliver", &compliance, &json!({}))
            .await
            .status,
        404
    );
    let audit = String::from_utf8_lossy(&c.get("/v1/audit-log", &admin).await.body).to_string();
    assert!(audit.contains("export.delivered"), "{audit}");
    assert!(!audit.contains(SK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_gets_the_delivery_once_it_is_up_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ingest(&data, dir.path());
    let root = dir.path().join("s3root");
    std::fs::create_dir_all(root.join("evidence-bucket")).unwrap();
    let port = free_port();
    let admin = token(&data, "admin");
    let compliance = token(&data, "compliance");

    let mut server = Server::start(&data, 1, ALLOW);
    let c = Client::new(&server.base);
    let s = settings(
        &format!("http://127.0.0.1:{port}"),
        "evidence-bucket",
        json!({}),
    );
    // Saved while the store is down: saving does not need the store.
    assert_eq!(
        put(&c, "/v1/settings/delivery", &admin, &s).await.status,
        200
    );
    let j = export(&c, &compliance, "Down-Then-Up", "csv").await;
    let id = j["id"].as_str().unwrap().to_string();
    // Attempts fail while nothing listens; the job says so.
    let start = Instant::now();
    loop {
        let j = c
            .get(&format!("/v1/exports/{id}"), &compliance)
            .await
            .json();
        if j["delivery"]["attempts"].as_i64().unwrap_or(0) >= 2 {
            assert_eq!(j["delivery"]["status"], "pending", "{j}");
            assert!(
                j["delivery"]["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("connect"),
                "{j}"
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The server goes away with the delivery pending, the store comes up, a new
    // server process finishes it.
    server.kill();
    let s3 = S3::s3s(&root, port);
    let server = Server::start(&data, 0, ALLOW);
    let c = Client::new(&server.base);
    let j = wait_delivery(&c, &id, &compliance, Duration::from_secs(90)).await;
    assert_eq!(j["delivery"]["status"], "delivered", "{j}");
    assert_eq!(j["delivery"]["key"], "evidence/Down-Then-Up.csv");
    let keys = s3.keys("evidence-bucket");
    assert_eq!(
        keys.iter()
            .filter(|k| k.as_str() == "evidence/Down-Then-Up.csv")
            .count(),
        1,
        "{keys:?}"
    );
    fetch_and_verify(
        &s3,
        "evidence-bucket",
        "evidence/",
        "Down-Then-Up.csv",
        &dir.path().join("got"),
        &data,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_artifacts_go_up_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::evidex(
        &data,
        &[],
        &[
            "generate",
            "--rows",
            "30000",
            "--days",
            "2",
            "--end",
            "2026-03-02",
            "--seed",
            "9",
        ],
    );
    let moto = S3::moto();
    moto.tool(&["create-bucket", "big-bucket"]);
    let admin = token(&data, "admin");
    let compliance = token(&data, "compliance");
    let server = Server::start(
        &data,
        1,
        &[
            ("EVIDEX_NETWORK__ALLOW_PRIVATE_TARGETS", "true"),
            ("EVIDEX_DELIVERY__MULTIPART_THRESHOLD_BYTES", "5242880"),
        ],
    );
    let c = Client::new(&server.base);
    let s = settings(&moto.endpoint(), "big-bucket", json!({"prefix": ""}));
    assert_eq!(
        put(&c, "/v1/settings/delivery", &admin, &s).await.status,
        200
    );
    let j = export(&c, &compliance, "Big", "ndjson").await;
    assert!(j["artifact"]["bytes"].as_u64().unwrap() > 6 << 20, "{j}");
    let id = j["id"].as_str().unwrap();
    let j = wait_delivery(&c, id, &compliance, Duration::from_secs(120)).await;
    assert_eq!(j["delivery"]["status"], "delivered", "{j}");
    assert_eq!(j["delivery"]["key"], "Big.ndjson");
    fetch_and_verify(
        &moto,
        "big-bucket",
        "",
        "Big.ndjson",
        &dir.path().join("got"),
        &data,
    );
}

/// The multipart completion is conditional: an object that appears under the key
/// while the parts go up (here: before the upload starts, so the check before it
/// would not see it happen) is never overwritten, and the upload is aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_never_overwrites_an_object_that_appeared_meanwhile() {
    use evidex_server::delivery::multipart::{MultipartError, upload};
    use evidex_server::delivery::{DeliverySettings, s3::Bucket};
    let dir = tempfile::tempdir().unwrap();
    let moto = S3::moto();
    moto.tool(&["create-bucket", "race-bucket"]);
    let settings = DeliverySettings {
        bucket: "race-bucket".into(),
        endpoint: Some(moto.endpoint()),
        path_style: true,
        access_key_id: AK.into(),
        ..DeliverySettings::default()
    };
    let bucket = Bucket::connect(&settings, SK, true, Duration::from_secs(10))
        .await
        .unwrap();
    let big = dir.path().join("big.bin");
    let bytes: Vec<u8> = (0..(11u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &bytes).unwrap();
    // A free key: three parts (5 + 5 + 1 MiB), read back whole by boto3.
    upload(&bucket, "fresh.bin", &big, Default::default(), 5 << 20)
        .await
        .unwrap();
    let back = dir.path().join("back.bin");
    moto.tool(&["get", "race-bucket", "fresh.bin", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == bytes);
    // A taken key: refused at the completion, the other object unchanged.
    let other = dir.path().join("other.txt");
    std::fs::write(&other, "someone else's\n").unwrap();
    moto.tool(&["put", "race-bucket", "taken.bin", other.to_str().unwrap()]);
    match upload(&bucket, "taken.bin", &big, Default::default(), 5 << 20).await {
        Err(MultipartError::Exists(k)) => assert_eq!(k, "taken.bin"),
        other => panic!("{other:?}"),
    }
    moto.tool(&["get", "race-bucket", "taken.bin", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), b"someone else's\n");
}
