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
