//! Several evidex nodes on one lake: the same events posted to two `evidex serve`
//! processes at the same moment (a gateway retrying through a load balancer) are
//! stored once each. Each node has its own state directory (its own key index and
//! metadata), as separate machines would; they share only the data location.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::{S3sFs, Server, evidex};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_events_sent_to_two_nodes_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    two_nodes_store_once(&data, &[], dir.path()).await;
}

/// The same on S3 (`s3s-fs`): commits are created only if absent (conditional put).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_events_sent_to_two_nodes_are_stored_once_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3sFs::start(&dir.path().join("s3"), &["lake"]);
    let endpoint = s3.endpoint();
    let envs = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", S3sFs::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3sFs::SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
    ];
    two_nodes_store_once(Path::new("s3://lake/events-lake"), &envs, dir.path()).await;
}

/// The S3 test server, as the tests reach it, creates a key once however many clients
/// race to create it: the guarantee AWS S3 gives and Delta commits rely on (each
/// version's log entry is created only if absent). Bare s3s-fs does not give it
/// (see `common/s3_front.rs`); this keeps the test above meaningful.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_test_s3_creates_a_key_once_when_clients_race() {
    use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
    use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3sFs::start(dir.path(), &["lake"]);
    let store = std::sync::Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(s3.endpoint())
            .with_bucket_name("lake")
            .with_region("us-east-1")
            .with_access_key_id(S3sFs::ACCESS_KEY)
            .with_secret_access_key(S3sFs::SECRET_KEY)
            .with_allow_http(true)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .build()
            .unwrap(),
    );
    for round in 0..25 {
        let key = object_store::path::Path::from(format!("_delta_log/{round:020}.json"));
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    let body = PutPayload::from(format!("writer {w}"));
                    store.put_opts(&key, body, PutMode::Create.into()).await
                })
            })
            .collect();
        let mut won = Vec::new();
        for (w, writer) in writers.into_iter().enumerate() {
            match writer.await.unwrap() {
                Ok(_) => won.push(w),
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => panic!("writer {w} of round {round}: {e}"),
            }
        }
        assert_eq!(
            won.len(),
            1,
            "round {round}: writers {won:?} were all told created"
        );
        let stored = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(
            stored,
            format!("writer {}", won[0]).as_bytes(),
            "round {round}"
        );
    }
}

/// A set of keys from `evidex keys init`, as (variable, value) pairs.
fn shared_keys(data: &Path) -> Vec<(String, String)> {
    let out = evidex(data, &[], &["keys", "init"]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

async fn two_nodes_store_once(data: &Path, base: &[(&str, &str)], dir: &Path) {
    let data = data.to_path_buf();
    let state_a = dir.join("state-a");
    let state_b = dir.join("state-b");
    let keys = shared_keys(dir);
    let mut env_a = base.to_vec();
    env_a.extend(keys.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut env_b = env_a.clone();
    env_a.push(("EVIDEX_STATE_DIR", state_a.to_str().unwrap()));
    env_b.push(("EVIDEX_STATE_DIR", state_b.to_str().unwrap()));
    let tok = |envs: &[(&str, &str)]| {
        let out = evidex(&data, envs, &["token", "create", "--role", "ingest"]);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (tok_a, tok_b) = (tok(&env_a), tok(&env_b));
    let a = Server::start(&data, 0, &env_a);
    let b = Server::start(&data, 0, &env_b);

    // 10,000 events in 20 batches; each batch goes to both nodes at once.
    let batches: Vec<Vec<u8>> = (0..20)
        .map(|b| {
            let mut body = Vec::new();
            for i in 0..500 {
                let decision = ["allow", "block", "flag"][i % 3];
                let e = json!({
                    "id": format!("evt-{b}-{i}"),
                    "timestamp": format!("2026-11-{:02}T10:{:02}:00Z", 1 + (i % 28), i % 60),
                    "decision": decision,
                    "severity": "low", "policy": "p", "gateway_id": "g", "consumer_group": "c",
                });
                body.extend_from_slice(e.to_string().as_bytes());
                body.push(b'\n');
            }
            body
        })
        .collect();
    let http = reqwest::Client::new();
    let post = |base: String, tok: String, body: Vec<u8>| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("{base}/v1/ingest/events"))
                .bearer_auth(tok)
                .body(body)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            assert_eq!(v["rejected"], 0, "{v}");
            v["accepted"].as_u64().unwrap() - v["duplicates"].as_u64().unwrap()
        }
    };
    let mut new_total = 0;
    let mut tasks = Vec::new();
    for body in &batches {
        let ta = tokio::spawn(post(a.base.clone(), tok_a.clone(), body.clone()));
        let tb = tokio::spawn(post(b.base.clone(), tok_b.clone(), body.clone()));
        tasks.push(ta);
        tasks.push(tb);
    }
    for t in tasks {
        new_total += t.await.unwrap();
    }
    assert_eq!(new_total, 10_000, "each event is new on exactly one node");

    // The lake holds each id once: walk the stream from the data directory.
    let out = evidex(&data, &env_a, &["stream", "--limit", "10000"]);
    let ids: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), 10_000, "stored rows");
    assert_eq!(unique.len(), 10_000);
    let tables = String::from_utf8(evidex(&data, &env_b, &["tables"]).stdout).unwrap();
    assert!(tables.contains("10000 rows"), "{tables}");
}

/// Nodes that share a lake must share keys: a second node that would create its own
/// refuses to start and says how to fix it; nodes given the keys `evidex keys init`
/// printed sign with one key, and a stream cursor from one node works on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_one_lake_share_keys_or_refuse_to_start() {
    fn borrow(e: &[(String, String)]) -> Vec<(&str, &str)> {
        e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }
    let dir = tempfile::tempdir().unwrap();
    let state = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let run_serve = |data: &Path, envs: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_evidex"));
        cmd.arg("--data")
            .arg(data)
            .args(["serve", "--listen", "127.0.0.1:0", "--workers", "0"]);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };

    // Without configured keys: the first node records its own; a second node with
    // a state directory of its own refuses rather than create different keys.
    let data = dir.path().join("data-1");
    std::fs::create_dir_all(&data).unwrap();
    let (sa, sb) = (state("s1a"), state("s1b"));
    let a = Server::start(&data, 0, &[("EVIDEX_STATE_DIR", &sa)]);
    let refused = run_serve(&data, &[("EVIDEX_STATE_DIR", &sb)]);
    assert!(!refused.status.success());
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(msg.contains("_evidex/keys.json"), "{msg}");
    assert!(msg.contains("evidex keys init"), "{msg}");
    assert!(
        !Path::new(&sb).join("signing-key.ed25519").exists(),
        "no second key was created"
    );
    drop(a);

    // With one set of keys given to both nodes.
    let out = evidex(&data, &[], &["keys", "init"]);
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let fingerprint = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| {
            l.strip_prefix("signing key fingerprint: ")
                .map(str::to_string)
        })
        .unwrap();
    let mut keys: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(keys.len(), 3, "{lines:?}");
    let data = dir.path().join("data-2");
    std::fs::create_dir_all(&data).unwrap();
    let envs = |state_dir: &str, keys: &[(String, String)]| -> Vec<(String, String)> {
        let mut e = keys.to_vec();
        e.push(("EVIDEX_STATE_DIR".into(), state_dir.to_string()));
        e
    };
    let (ea, eb) = (envs(&state("s2a"), &keys), envs(&state("s2b"), &keys));
    let a = Server::start(&data, 0, &borrow(&ea));
    let b = Server::start(&data, 0, &borrow(&eb));
    let tok = |e: &Vec<(String, String)>, role: &str| {
        let out = evidex(&data, &borrow(e), &["token", "create", "--role", role]);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (ta, tb) = (tok(&ea, "admin"), tok(&eb, "admin"));
    let ca = common::Client::new(&a.base);
    let cb = common::Client::new(&b.base);
    let fa = ca.get("/v1/signing-key", &ta).await.json()["fingerprint"].clone();
    let fb = cb.get("/v1/signing-key", &tb).await.json()["fingerprint"].clone();
    assert_eq!(fa, fb);
    assert_eq!(fa.as_str().unwrap(), fingerprint);
    // A cursor from node A goes on on node B.
    let events: String = (0..3)
        .map(|i| {
            format!(
                "{}\n",
                json!({"id": format!("k{i}"), "timestamp": "2026-11-20T10:00:00Z",
                       "decision": "allow", "severity": "low", "policy": "p",
                       "gateway_id": "g", "consumer_group": "c"})
            )
        })
        .collect();
    let r = ca
        .call(
            "POST",
            "/v1/ingest/events",
            Some(&ta),
            Some(events.into_bytes()),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let first = ca.get("/v1/events/stream?limit=1", &ta).await;
    let cursor = first.headers["evidex-cursor"].to_str().unwrap().to_string();
    let rest = cb
        .get(&format!("/v1/events/stream?cursor={cursor}"), &tb)
        .await;
    assert_eq!(rest.status, 200, "{}", String::from_utf8_lossy(&rest.body));
    assert_eq!(String::from_utf8_lossy(&rest.body).lines().count(), 2);

    // The same signing and master keys with another link key: refused too (links
    // made on one node must open on every other).
    let other_link: Vec<(String, String)> = keys
        .iter()
        .map(|(k, v)| {
            if k == "EVIDEX_SECRETS__LINK_KEY" {
                (k.clone(), "ab".repeat(32))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    let ed = envs(&state("s2d"), &other_link);
    let refused = run_serve(&data, &borrow(&ed));
    assert!(!refused.status.success());
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(msg.contains("download-link key"), "{msg}");

    // A node with other keys: refused, naming the key that differs.
    let other = evidex(&data, &[], &["keys", "init"]);
    keys = String::from_utf8(other.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    let ec = envs(&state("s2c"), &keys);
    let refused = run_serve(&data, &borrow(&ec));
    assert!(!refused.status.success());
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(msg.contains("signing key (fingerprint"), "{msg}");
}

/// A fresh database on the PostgreSQL server `$TEST_POSTGRES_URL` names (started by
/// scripts/test.sh); returns its URL.
fn fresh_postgres_database() -> String {
    let admin = std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("TEST_POSTGRES_URL is not set: run ./scripts/test.sh, which starts PostgreSQL")
    });
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    let name = format!("nodes_{}", hex::encode(b));
    // On a thread of its own: the caller is an async test, where a runtime can be
    // neither started nor dropped.
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap();
            })
        });
    });
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

fn as_refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Waits until job `id` runs and has counted its rows.
async fn running(c: &common::Client, id: &str, tok: &str) {
    let start = std::time::Instant::now();
    loop {
        let j = c.get(&format!("/v1/exports/{id}"), tok).await.json();
        if j["status"] == "processing" && j["progress"]["rows_total"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// The scale-out deployment: two `serve` nodes without workers of their own and
/// worker_export processes, each with its own empty state directory, sharing only
/// PostgreSQL (metadata) and S3 (the lake and the artifacts). Jobs created on one
/// node are run by the workers and downloaded from the other (whole and by range,
/// with the package files); workers paused past their lease (SIGSTOP) and resumed
/// after another worker finished the job cannot replace the winner's result; a
/// worker killed with SIGKILL hands its job to another; a schedule fires each
/// period once across both nodes; retention deletes the artifacts from the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_nodes_and_workers_share_only_postgres_and_s3() {
    let e = common::env(40_000, 3);
    let s3_root = e.dir.path().join("s3");
    let s3 = S3sFs::start(&s3_root, &["lake"]);
    let endpoint = s3.endpoint();
    let url = fresh_postgres_database();
    let keys = shared_keys(e.dir.path());
    let mut base: Vec<(String, String)> = vec![
        ("AWS_ENDPOINT_URL".into(), endpoint.clone()),
        ("AWS_ACCESS_KEY_ID".into(), S3sFs::ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), S3sFs::SECRET_KEY.into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
        ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST".into(), "false".into()),
        ("EVIDEX_DATABASE_URL".into(), url.clone()),
        ("EVIDEX_ARTIFACTS".into(), "s3://lake/artifacts".into()),
        // Short retention, so the test sees artifacts deleted from the bucket.
        ("EVIDEX_SERVER__RETENTION_SECS".into(), "90".into()),
        ("EVIDEX_SCHEDULER__TICK_SECS".into(), "1".into()),
    ];
    base.extend(keys);
    let node = |name: &str| -> Vec<(String, String)> {
        let mut v = base.clone();
        v.push((
            "EVIDEX_STATE_DIR".into(),
            e.dir.path().join(name).to_string_lossy().into_owned(),
        ));
        v
    };
    let borrow = |v: &[(String, String)]| -> Vec<(String, String)> { v.to_vec() };
    let data = Path::new("s3://lake/events");
    let cli = node("state-cli");
    evidex(data, &as_refs(&cli), &["ingest", e.src.to_str().unwrap()]);
    let out = evidex(
        data,
        &as_refs(&cli),
        &["token", "create", "--role", "compliance", "--name", "ci"],
    );
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (mut env_a, env_b) = (node("state-a"), node("state-b"));
    // Node A sends downloads to the bucket with presigned URLs; node B streams them.
    env_a.push(("EVIDEX_ARTIFACTS_REDIRECT_SECS".into(), "600".into()));
    env_a.push(("EVIDEX_SERVER__LINK_TTL_SECS".into(), "120".into()));
    let a = Server::start(data, 0, &as_refs(&env_a));
    let b = Server::start(data, 0, &as_refs(&env_b));
    let (ca, cb) = (common::Client::new(&a.base), common::Client::new(&b.base));
    let worker_envs: Vec<Vec<(String, String)>> =
        (0..4).map(|i| node(&format!("state-w{i}"))).collect();
    let spawn_worker = |i: usize| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_worker_export"));
        cmd.arg("--data")
            .arg(data)
            .env_remove("EVIDEX_DATA")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in borrow(&worker_envs[i]) {
            cmd.env(k, v);
        }
        cmd.spawn().expect("worker_export starts")
    };
    let mut w0 = spawn_worker(0);
    let mut w1 = spawn_worker(1);

    let mut ids = Vec::new();
    for (i, format) in ["csv", "json", "parquet", "zip"].iter().enumerate() {
        let (format, extra) = match *format {
            "zip" => ("csv", json!({"include": ["summary", "audit_log"]})),
            f => (f, json!({})),
        };
        let mut body = json!({"name": format!("job {i}"), "from": "2026-03-02", "to": "2026-03-03", "format": format});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = ca.post("/v1/exports", &tok, &body).await;
        assert_eq!(r.status, 201, "{}", r.message());
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let j = cb.wait(id, &tok, Duration::from_secs(120)).await;
        assert_eq!(j["status"], "completed", "{j}");
        assert_eq!(j["attempts"], 1, "{j}");
        let dl = cb.get(&format!("/v1/exports/{id}/download"), &tok).await;
        assert_eq!(dl.status, 200);
        assert_eq!(
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&dl.body)),
            j["artifact"]["sha256"].as_str().unwrap()
        );
        let part = cb
            .call(
                "GET",
                &format!("/v1/exports/{id}/download"),
                Some(&tok),
                None,
                &[("range", "bytes=10-109")],
            )
            .await;
        assert_eq!(part.status, 206);
        assert!(
            part.body == dl.body[10..110],
            "the range is the file's bytes 10-109"
        );
        // Node A answers 307 to a presigned URL of the object, which serves the
        // same bytes (and ranges) to a client holding no credentials.
        let no_follow = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = no_follow
            .get(format!("{}/v1/exports/{id}/download", a.base))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 307);
        assert_eq!(r.headers()["cache-control"], "no-store");
        let location = r.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with(&endpoint), "{location}");
        assert!(location.contains("X-Amz-Expires=600"), "{location}");
        assert!(location.contains("X-Amz-Signature="), "{location}");
        let direct = reqwest::get(&location).await.unwrap();
        assert_eq!(direct.status(), 200);
        let disposition = direct
            .headers()
            .get("content-disposition")
            .map(|v| v.to_str().unwrap().to_string());
        assert!(direct.bytes().await.unwrap() == dl.body);
        if let Some(d) = disposition {
            let name = j["artifact"]["file_name"].as_str().unwrap();
            assert!(d.contains(name), "{d}");
        }
        let tampered = location.replace("X-Amz-Expires=600", "X-Amz-Expires=6000");
        assert_eq!(reqwest::get(&tampered).await.unwrap().status(), 403);
        // A client that follows redirects gets the range from the bucket.
        let part_a = ca
            .call(
                "GET",
                &format!("/v1/exports/{id}/download"),
                Some(&tok),
                None,
                &[("range", "bytes=10-109")],
            )
            .await;
        assert_eq!(part_a.status, 206);
        assert!(part_a.body == dl.body[10..110]);
        // A link's presigned URL ends no later than the link (120 s here).
        let link = ca
            .call(
                "POST",
                &format!("/v1/exports/{id}/link"),
                Some(&tok),
                None,
                &[],
            )
            .await
            .json();
        let r = no_follow
            .get(link["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 307);
        let location = r.headers()["location"].to_str().unwrap();
        let expires: u64 = location
            .split("X-Amz-Expires=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=120).contains(&expires), "{location}");
        let manifest = ca.get(&format!("/v1/exports/{id}/manifest"), &tok).await;
        assert_eq!(manifest.status, 200, "{}", manifest.message());
        let m: Value = serde_json::from_slice(&manifest.body).unwrap();
        assert!(m.is_object(), "{m}");
        let sig = cb
            .get(&format!("/v1/exports/{id}/package/manifest.sig"), &tok)
            .await;
        assert_eq!(sig.status, 200, "{}", sig.message());
        // The ZIP package, as downloaded from the other node, passes evidex verify.
        if j["artifact"]["content_type"] == "application/zip" {
            let path = e.dir.path().join("package.zip");
            std::fs::write(&path, &dl.body).unwrap();
            let out = evidex(data, &as_refs(&cli), &["verify", path.to_str().unwrap()]);
            let said = common::text(&out);
            assert!(said.contains("ok"), "{said}");
        }
    }
    // Nothing is kept on any node's disk, and there is no SQLite file anywhere.
    for name in ["state-a", "state-b", "state-w0", "state-w1", "state-cli"] {
        let files = files_under(&e.dir.path().join(name));
        assert!(
            files
                .iter()
                .all(|f| !f.contains("/artifacts/") && !f.ends_with(".sqlite")),
            "{name}: {files:?}"
        );
    }
    let objects = files_under(&s3_root.join("lake/artifacts"));
    assert!(
        ids.iter().all(|id| objects.iter().any(|o| o.contains(id))),
        "{objects:?}"
    );

    // Pause both workers while one of them runs a job; a third takes it over.
    let body =
        json!({"name": "paused", "from": "2026-03-02", "to": "2026-03-04", "format": "json"});
    let id = ca.post("/v1/exports", &tok, &body).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    running(&ca, &id, &tok).await;
    let signal = |sig: &str, pid: u32| {
        std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
    };
    signal("-STOP", w0.id());
    signal("-STOP", w1.id());
    let mut w2 = spawn_worker(2);
    let j = cb.wait(&id, &tok, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["attempts"], 2, "{j}");
    let won = cb
        .get(&format!("/v1/exports/{id}/download"), &tok)
        .await
        .body;
    signal("-CONT", w0.id());
    signal("-CONT", w1.id());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = ca.get(&format!("/v1/exports/{id}"), &tok).await.json();
    assert_eq!(after["attempts"], 2, "{after}");
    assert_eq!(
        after["artifact"], j["artifact"],
        "the job record is the winner's"
    );
    let again = ca.get(&format!("/v1/exports/{id}/download"), &tok).await;
    assert_eq!(again.status, 200);
    assert!(again.body == won, "the artifact is the winner's");
    let attempt_1: Vec<String> = files_under(&s3_root.join("lake/artifacts").join(&id))
        .into_iter()
        .filter(|f| f.contains("attempt-1"))
        .collect();
    assert!(
        attempt_1.is_empty(),
        "the losing attempt left {attempt_1:?}"
    );

    // SIGKILL the only worker left while it runs a job: another one finishes it.
    for w in [&mut w0, &mut w1] {
        let _ = w.kill();
        let _ = w.wait();
    }
    let id = ca.post("/v1/exports", &tok, &body).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    running(&cb, &id, &tok).await;
    w2.kill().unwrap();
    w2.wait().unwrap();
    let mut w3 = spawn_worker(3);
    let j = ca.wait(&id, &tok, Duration::from_secs(120)).await;
    assert_eq!(
        (j["status"].as_str(), j["attempts"].as_i64()),
        (Some("completed"), Some(2)),
        "{j}"
    );
    assert_eq!(
        cb.get(&format!("/v1/exports/{id}/download"), &tok)
            .await
            .status,
        200
    );

    // The audit chain written by both nodes, the workers and the CLI is whole.
    let out = evidex(data, &as_refs(&cli), &["verify", "--audit-log"]);
    assert!(
        common::text(&out).starts_with("ok"),
        "{}",
        common::text(&out)
    );

    // Both serve nodes run the scheduler, without a leader: a schedule due every
    // two seconds queues each period once across the two.
    let r = ca
        .post(
            "/v1/schedules",
            &tok,
            &json!({"name": "Race", "kind": "cron", "cron": "*/2 * * * * *", "timezone": "UTC",
                    "export": {"format": "csv"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.message());
    let schedule = r.json()["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(9)).await;
    let deleted = cb
        .call(
            "DELETE",
            &format!("/v1/schedules/{schedule}"),
            Some(&tok),
            None,
            &[],
        )
        .await;
    assert!(deleted.status < 300, "{}", deleted.message());
    let jobs = cb.get("/v1/exports?limit=500", &tok).await.json();
    let mut per_period = std::collections::BTreeMap::new();
    for j in jobs["items"].as_array().unwrap() {
        if j["schedule_id"] == schedule.as_str() {
            *per_period
                .entry(j["period"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    assert!(per_period.len() >= 3, "{per_period:?}");
    assert!(
        per_period.values().all(|n| *n == 1),
        "a period queued twice: {per_period:?}"
    );

    // Retention (90 s here) deletes the artifacts from the bucket on expiry.
    let first = ids[0].clone();
    let start = std::time::Instant::now();
    loop {
        let j = cb.get(&format!("/v1/exports/{first}"), &tok).await.json();
        if j["status"] == "expired" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(150), "{j}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        cb.get(&format!("/v1/exports/{first}/download"), &tok)
            .await
            .status,
        410
    );
    let left = files_under(&s3_root.join("lake/artifacts").join(&first));
    assert!(left.is_empty(), "{left:?}");
    let _ = w3.kill();
    let _ = w3.wait();
    drop((a, b, s3));
}
