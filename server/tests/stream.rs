//! The SIEM event stream: following cursors returns every ingested event exactly
//! once while events arrive out of order from concurrent clients, servers restart,
//! two server processes share the lake and the table is compacted; tampered,
//! mismatched and expired cursors; bad parameters; `evidex stream --cursor-file`
//! across restarts; profiles validated against the ECS and OCSF definitions.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{Client, Resp, Server, evidex, python, run, text, token};

/// A small deterministic generator (SplitMix64), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const DECISIONS: [&str; 5] = ["allow", "block", "redact", "escalate", "flag"];
const SEVERITIES: [&str; 5] = ["info", "low", "medium", "high", "critical"];

/// One decision event; `late_secs` before 2026-11-20T12:00:00Z.
fn event(id: &str, late_secs: i64, rng: &mut Rng) -> Value {
    let t = chrono::DateTime::parse_from_rfc3339("2026-11-20T12:00:00Z").unwrap()
        - chrono::Duration::seconds(late_secs);
    json!({
        "id": id,
        "timestamp": t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "decision": DECISIONS[rng.below(5) as usize],
        "severity": SEVERITIES[rng.below(5) as usize],
        "policy": format!("policy-{}", rng.below(4)),
        "gateway_id": format!("gw-{}", rng.below(3)),
        "consumer_group": format!("team-{}", rng.below(3)),
        "input": format!("mail me at person{}@example.com", rng.below(1000)),
    })
}

fn ndjson(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.extend_from_slice(e.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

fn cursor_of(r: &Resp) -> String {
    r.headers
        .get("evidex-cursor")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn ids_of(body: &[u8]) -> Vec<String> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Value = serde_json::from_slice(l).unwrap();
            v["id"].as_str().unwrap().to_string()
        })
        .collect()
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Posts a batch until a server answers it (a batch in flight when a server is
/// killed may or may not be stored; re-sending it is a retry evidex deduplicates).
async fn ingest_until_accepted(bases: &Arc<Mutex<Vec<String>>>, tok: &str, body: Vec<u8>) {
    let http = reqwest::Client::new();
    let mut attempt = 0u64;
    loop {
        let list = bases.lock().unwrap().clone();
        let base = &list[(attempt as usize) % list.len()];
        attempt += 1;
        let r = http
            .post(format!("{base}/v1/ingest/events"))
            .bearer_auth(tok)
            .body(body.clone())
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        if let Ok(r) = r
            && r.status().is_success()
        {
            let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            assert_eq!(v["rejected"], 0, "{v}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn following_the_cursor_returns_every_event_once_across_restarts_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let ingest_tok = token(&data, "ingest");
    let siem = token(&data, "siem");
    let envs = [
        ("EVIDEX_SERVER__INGEST_LINGER_MS", "20"),
        ("EVIDEX_INGEST__COMPACT_MIN_FILES", "6"),
    ];
    let mut a = Server::start(&data, 0, &envs);
    let b = Server::start(&data, 0, &envs);
    let bases = Arc::new(Mutex::new(vec![a.base.clone(), b.base.clone()]));

    // Four clients, 30 batches of 1 to 20 events each, timestamps late by seconds
    // to six days, in no order; every fifth batch re-sends an earlier one.
    const CLIENTS: u64 = 4;
    const BATCHES: u64 = 30;
    let sent: Arc<Mutex<HashSet<String>>> = Arc::default();
    let writers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (bases, tok, sent) = (bases.clone(), ingest_tok.clone(), sent.clone());
            tokio::spawn(async move {
                let mut rng = Rng(c + 1);
                let mut earlier: Vec<Vec<u8>> = Vec::new();
                for b in 0..BATCHES {
                    if b % 5 == 4 {
                        let again = earlier[rng.below(earlier.len() as u64) as usize].clone();
                        ingest_until_accepted(&bases, &tok, again).await;
                        continue;
                    }
                    let n = 1 + rng.below(20);
                    let events: Vec<Value> = (0..n)
                        .map(|i| {
                            let late = match rng.below(4) {
                                0 => rng.below(60),
                                1 => rng.below(6 * 3600),
                                _ => rng.below(6 * 86_400),
                            } as i64;
                            event(&format!("c{c}-b{b}-{i}"), late, &mut rng)
                        })
                        .collect();
                    for e in &events {
                        sent.lock()
                            .unwrap()
                            .insert(e["id"].as_str().unwrap().to_string());
                    }
                    let body = ndjson(&events);
                    earlier.push(body.clone());
                    ingest_until_accepted(&bases, &tok, body).await;
                    tokio::time::sleep(Duration::from_millis(rng.below(60))).await;
                }
            })
        })
        .collect();

    // One reader, small pages, alternating between the servers.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (bases, seen, done, siem) = (bases.clone(), seen.clone(), done.clone(), siem.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut cursor = String::new();
            let mut i = 0usize;
            let mut quiet_at_end = 0;
            loop {
                let list = bases.lock().unwrap().clone();
                let base = &list[i % list.len()];
                i += 1;
                let limit = 1 + i % 9;
                let url = format!(
                    "{base}/v1/events/stream?limit={limit}&wait=1&cursor={}",
                    urlencode(&cursor)
                );
                let Ok(r) = http.get(url).bearer_auth(&siem).send().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if r.status().is_server_error() {
                    continue;
                }
                assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
                let next = r.headers()["evidex-cursor"].to_str().unwrap().to_string();
                let at_end = r.headers()["evidex-at-end"] == "true";
                let body = r.bytes().await.unwrap();
                let ids = ids_of(&body);
                assert!(ids.len() <= limit, "{} > {limit}", ids.len());
                let empty = ids.is_empty();
                seen.lock().unwrap().extend(ids);
                cursor = next;
                if done.load(std::sync::atomic::Ordering::SeqCst) && at_end && empty {
                    quiet_at_end += 1;
                    if quiet_at_end >= 3 {
                        return;
                    }
                }
            }
        })
    };

    // Meanwhile: kill a server and start it again, compact the table from the CLI.
    let rewrote = |out: std::process::Output| {
        let t = text(&out);
        let n: u64 = t
            .lines()
            .find(|l| l.starts_with("events: rewrote "))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{t}"));
        n
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill();
    bases.lock().unwrap().retain(|x| *x != a.base);
    let mut compacted = rewrote(evidex(&data, &[], &["compact", "--min-files", "2"]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    a = Server::start(&data, 0, &envs);
    bases.lock().unwrap().push(a.base.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    compacted += rewrote(evidex(&data, &[], &["compact", "--min-files", "2"]));

    for w in writers {
        w.await.unwrap();
    }
    compacted += rewrote(evidex(&data, &[], &["compact", "--min-files", "2"]));
    assert!(
        compacted > 0,
        "the table was compacted while the reader followed it"
    );
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("the reader reaches the end")
        .unwrap();

    let seen = seen.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "an event came twice");
    let missing: Vec<_> = sent.difference(&unique).collect();
    let extra: Vec<_> = unique.difference(&sent).collect();
    assert!(missing.is_empty(), "never streamed: {missing:?}");
    assert!(extra.is_empty(), "streamed but never sent: {extra:?}");
    assert!(sent.len() > 300, "{}", sent.len());

    // A second walk from no cursor with one big page per request gives the same
    // set, in the same order as the first walk.
    let c = Client::new(&b.base);
    let mut again = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = c
            .get(
                &format!(
                    "/v1/events/stream?limit=10000&cursor={}",
                    urlencode(&cursor)
                ),
                &siem,
            )
            .await;
        assert_eq!(r.status, 200);
        again.extend(ids_of(&r.body));
        cursor = cursor_of(&r);
        if r.headers["evidex-at-end"] == "true" {
            break;
        }
    }
    assert_eq!(again, seen, "ingest order is the same on every walk");
}

/// Ingests `events` in one request and waits for the answer.
async fn ingest(c: &Client, tok: &str, events: &[Value]) {
    let r = c
        .call(
            "POST",
            "/v1/ingest/events",
            Some(tok),
            Some(ndjson(events)),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_are_signed_bound_to_filters_and_expire_after_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let ingest_tok = token(&data, "ingest");
    let siem = token(&data, "siem");
    let viewer = token(&data, "viewer");
    let server = Server::start(&data, 0, &[("EVIDEX_INGEST__COMPACT_MIN_FILES", "1000")]);
    let c = Client::new(&server.base);
    let mut rng = Rng(9);

    // Nothing ingested yet: an empty page, no error.
    let r = c.get("/v1/events/stream", &siem).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    // Two commits with a file for every decision on the same day each, so a
    // compaction replaces every file of the first.
    let batch = |prefix: &str, rng: &mut Rng| -> Vec<Value> {
        (0..10)
            .map(|i| {
                let mut e = event(&format!("{prefix}{i}"), i * 7, rng);
                e["decision"] = json!(DECISIONS[i as usize % 5]);
                e
            })
            .collect()
    };
    ingest(&c, &ingest_tok, &batch("a", &mut rng)).await;
    ingest(&c, &ingest_tok, &batch("b", &mut rng)).await;

    // Redaction applies as in exports.
    let r = c.get("/v1/events/stream?limit=3", &siem).await;
    assert_eq!(r.status, 200);
    assert_eq!(ids_of(&r.body).len(), 3);
    assert!(String::from_utf8_lossy(&r.body).contains("[REDACTED:EMAIL]"));
    assert!(!String::from_utf8_lossy(&r.body).contains("@example.com"));
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    let early = cursor_of(&r);

    // A changed cursor: 400.
    let mut chars: Vec<char> = early.chars().collect();
    let k = chars.len() / 2;
    chars[k] = if chars[k] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let r = c
        .get(&format!("/v1/events/stream?cursor={tampered}"), &siem)
        .await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("signature"), "{}", r.message());
    let r = c.get("/v1/events/stream?cursor=hello", &siem).await;
    assert_eq!(r.status, 400);
    // The same cursor with other filters: 400.
    let r = c
        .get(
            &format!("/v1/events/stream?cursor={early}&decision=block"),
            &siem,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("other filters"), "{}", r.message());

    // Bad parameters name themselves.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("wait=61", "wait"),
        ("profile=cef", "profile"),
        ("since=yesterday", "since"),
        ("colour=red", "colour"),
        ("decision=maybe", "decision"),
        ("min_severity=huge", "min_severity"),
        ("limit=1&limit=2", "limit"),
        ("since=2026-01-01T00:00:00Z&cursor=abc", "since"),
    ] {
        let r = c.get(&format!("/v1/events/stream?{query}"), &siem).await;
        assert_eq!(r.status, 400, "{query}");
        assert!(r.message().starts_with(field), "{query}: {}", r.message());
    }
    // Roles: viewers may not read the stream.
    assert_eq!(c.get("/v1/events/stream", &viewer).await.status, 403);
    // gzip when asked for.
    let r = c
        .call(
            "GET",
            "/v1/events/stream?limit=10000",
            Some(&siem),
            None,
            &[("accept-encoding", "gzip")],
        )
        .await;
    assert_eq!(r.headers["content-encoding"], "gzip");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut plain).unwrap();
    assert_eq!(ids_of(&plain).len(), 20);
    // The limit is capped, and the response says so.
    let r = c.get("/v1/events/stream?limit=50000", &siem).await;
    assert_eq!(r.headers["evidex-limit"], "10000");
    assert_eq!(ids_of(&r.body).len(), 20);

    // Filters: the same events as the filtered walk of everything.
    let all: Vec<Value> = String::from_utf8(r.body.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let blocked: Vec<&str> = all
        .iter()
        .filter(|e| e["decision"] == "block" || e["decision"] == "flag")
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let r = c
        .get(
            "/v1/events/stream?decision=block&decision=flag&limit=1",
            &siem,
        )
        .await;
    let mut got = ids_of(&r.body);
    let mut cursor = cursor_of(&r);
    loop {
        let r = c
            .get(
                &format!("/v1/events/stream?decision=flag&decision=block&limit=1&cursor={cursor}"),
                &siem,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.message());
        got.extend(ids_of(&r.body));
        cursor = cursor_of(&r);
        if r.headers["evidex-at-end"] == "true" && r.body.is_empty() {
            break;
        }
    }
    assert_eq!(got, blocked);

    // since: from the first commit at or after an ingest time.
    let r = c
        .get(
            "/v1/events/stream?since=2000-01-01T00:00:00Z&limit=10000",
            &siem,
        )
        .await;
    assert_eq!(ids_of(&r.body).len(), 20);
    let r = c
        .get("/v1/events/stream?since=2999-01-01T00:00:00Z", &siem)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.headers["evidex-at-end"], "true");

    // wait: a long poll that ends when an event arrives.
    let at_end = cursor_of(&c.get("/v1/events/stream?limit=10000", &siem).await);
    let waiter = {
        let (base, siem, at_end) = (server.base.clone(), siem.clone(), at_end.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let r = Client::new(&base)
                .get(&format!("/v1/events/stream?wait=20&cursor={at_end}"), &siem)
                .await;
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    ingest(&c, &ingest_tok, &[event("late-one", 30 * 86_400, &mut rng)]).await;
    let (r, took) = waiter.await.unwrap();
    assert_eq!(ids_of(&r.body), ["late-one"]);
    assert!(took < Duration::from_secs(15), "{took:?}");

    // Compaction replaces the files of those commits; the early cursor still
    // works (the replaced files are kept until a vacuum)...
    evidex(&data, &[], &["compact", "--min-files", "2"]);
    let r = c
        .get(
            &format!("/v1/events/stream?cursor={early}&limit=10000"),
            &siem,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        ids_of(&r.body).len(),
        18,
        "the rest after the first 3, once"
    );

    // ...until a vacuum deletes them: then 410, naming the oldest position.
    let out = run(&data, &["vacuum", "--retain-hours", "0"]);
    assert!(
        !out.status.success(),
        "below the table's retention needs --force"
    );
    assert!(text(&out).contains("retention"), "{}", text(&out));
    evidex(&data, &[], &["vacuum", "--retain-hours", "0", "--force"]);
    let r = c
        .get(&format!("/v1/events/stream?cursor={early}"), &siem)
        .await;
    assert_eq!(r.status, 410, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["error"]["code"], "cursor_expired");
    let oldest = body["error"]["oldest_cursor"].as_str().unwrap().to_string();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("commit {}", body["error"]["oldest_version"])),
        "{body}"
    );
    // A since that falls before the oldest position: 410 as well, never a jump.
    let r = c
        .get("/v1/events/stream?since=2000-01-01T00:00:00Z", &siem)
        .await;
    assert_eq!(r.status, 410, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.message().starts_with("since: "), "{}", r.message());
    // The oldest position works, and so does a fresh start (which begins there).
    let r = c
        .get(
            &format!("/v1/events/stream?cursor={oldest}&limit=10000"),
            &siem,
        )
        .await;
    assert_eq!(r.status, 200);
    let from_oldest = ids_of(&r.body);
    let r = c.get("/v1/events/stream?limit=10000", &siem).await;
    assert_eq!(ids_of(&r.body), from_oldest);
    assert!(from_oldest.contains(&"late-one".to_string()));

    // The CLI says the same, with exit code 3.
    let out = run(&data, &["stream", "--cursor", &early]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("oldest cursor: "), "{}", text(&out));
}

/// Runs `evidex stream ARGS` and returns stdout.
fn cli_stream(data: &Path, args: &[&str]) -> String {
    let mut all = vec!["stream"];
    all.extend_from_slice(args);
    String::from_utf8(evidex(data, &[], &all).stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_stream_resumes_from_its_cursor_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let src = dir.path().join("src.ndjson");
    let cursor_file = dir.path().join("cursor");
    let mut rng = Rng(3);
    let mut all = Vec::new();
    let mut out = String::new();
    for round in 0..5 {
        let events: Vec<Value> = (0..37)
            .map(|i| {
                event(
                    &format!("r{round}-{i}"),
                    rng.below(5 * 86_400) as i64,
                    &mut rng,
                )
            })
            .collect();
        all.extend(events.iter().map(|e| e["id"].as_str().unwrap().to_string()));
        std::fs::write(&src, ndjson(&events)).unwrap();
        evidex(&data, &[], &["ingest", src.to_str().unwrap()]);
        // Two runs per round, each stopping at the end of what is stored.
        for _ in 0..2 {
            out.push_str(&cli_stream(
                &data,
                &[
                    "--limit",
                    "10",
                    "--cursor-file",
                    cursor_file.to_str().unwrap(),
                ],
            ));
        }
        if round == 2 {
            evidex(&data, &[], &["compact", "--min-files", "2"]);
        }
    }
    // Every event once, each round after the one before (within a commit, events
    // come in file order: by day and decision, then time).
    let got = ids_of(out.as_bytes());
    let rounds: Vec<&str> = got.iter().map(|id| id.split('-').next().unwrap()).collect();
    assert!(rounds.windows(2).all(|w| w[0] <= w[1]), "{got:?}");
    let (mut a, mut b) = (got.clone(), all.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b);

    // --follow: stopped with SIGTERM between pages, resumed from the file.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_evidex"))
        .arg("--data")
        .arg(&data)
        .args(["stream", "--follow", "--limit", "5", "--cursor-file"])
        .arg(&cursor_file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let events: Vec<Value> = (0..23)
        .map(|i| event(&format!("f{i}"), 5, &mut rng))
        .collect();
    std::fs::write(&src, ndjson(&events)).unwrap();
    evidex(&data, &[], &["ingest", src.to_str().unwrap()]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let followed = child.wait_with_output().unwrap();
    assert!(followed.status.success(), "{followed:?}");
    let more: Vec<Value> = (0..4)
        .map(|i| event(&format!("g{i}"), 5, &mut rng))
        .collect();
    std::fs::write(&src, ndjson(&more)).unwrap();
    evidex(&data, &[], &["ingest", src.to_str().unwrap()]);
    let rest = cli_stream(&data, &["--cursor-file", cursor_file.to_str().unwrap()]);
    let mut tail = ids_of(&followed.stdout);
    tail.extend(ids_of(rest.as_bytes()));
    let want: Vec<String> = events
        .iter()
        .chain(&more)
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let mut want = want;
    want.sort();
    tail.sort();
    assert_eq!(tail, want);

    // The cursor printed is the one after what was written: after --max-events,
    // and when the reader closes the pipe early.
    let everything = ids_of(cli_stream(&data, &["--limit", "10000"]).as_bytes());
    let first = evidex(
        &data,
        &[],
        &["stream", "--limit", "40", "--max-events", "150"],
    );
    let printed = |out: &std::process::Output| -> (usize, String) {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let line = err
            .lines()
            .find(|l| l.contains("events written"))
            .unwrap()
            .to_string();
        let n = line.split_whitespace().next().unwrap().parse().unwrap();
        let cursor = line
            .split_once("next cursor: ")
            .map(|(_, c)| c.to_string())
            .unwrap_or_default();
        (n, cursor)
    };
    let (n, cursor) = printed(&first);
    assert_eq!(n, 150);
    assert_eq!(ids_of(&first.stdout), everything[..150]);
    let rest = cli_stream(&data, &["--cursor", &cursor]);
    assert_eq!(ids_of(rest.as_bytes()), everything[150..]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_evidex"))
        .arg("--data")
        .arg(&data)
        .args(["stream", "--limit", "7"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // The pipe closes here, long before the end.
    }
    let closed = child.wait_with_output().unwrap();
    assert!(closed.status.success(), "{}", text(&closed));
    let (n, cursor) = printed(&closed);
    assert!(n < everything.len(), "{n}");
    // (When the reader left inside the first page, no page was written whole.)
    let rest = if cursor.is_empty() {
        cli_stream(&data, &[])
    } else {
        cli_stream(&data, &["--cursor", &cursor])
    };
    assert_eq!(
        ids_of(rest.as_bytes()),
        everything[n..],
        "resumes after what was written"
    );

    // A cursor file and --since together: refused, the file untouched.
    let before = std::fs::read_to_string(&cursor_file).unwrap();
    let out = run(
        &data,
        &[
            "stream",
            "--since",
            "2026-01-01T00:00:00Z",
            "--cursor-file",
            cursor_file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--since"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&cursor_file).unwrap(), before);
}

/// Checks `file` with the validator written from the reference schemas.
fn validate(profile: &str, file: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/validate_profiles.py");
    let out = std::process::Command::new(python())
        .arg(script)
        .arg(profile)
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{profile}: {}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_follow_ecs_ocsf_and_splunk_hec() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let src = dir.path().join("src.ndjson");
    // Realistic data, and events with every optional field absent, every decision
    // and severity, numbers with many digits in metadata, line separators in text.
    evidex(
        &data,
        &[],
        &[
            "generate",
            "--rows",
            "3000",
            "--days",
            "3",
            "--end",
            "2026-11-20",
            "--seed",
            "4",
        ],
    );
    let mut odd = Vec::new();
    for (i, d) in DECISIONS.iter().enumerate() {
        for (j, s) in SEVERITIES.iter().enumerate() {
            odd.push(json!({
                "id": format!("odd-{i}-{j}"),
                "timestamp": "2026-11-19T10:00:00.123456Z",
                "decision": d, "severity": s, "policy": "p", "gateway_id": "g",
                "consumer_group": "cg",
            }));
        }
    }
    let mut lines = ndjson(&odd);
    // Written as text: its metadata number has more digits than a u64.
    lines.extend_from_slice(
        br#"{"id":"full","timestamp":"2026-11-19T10:00:00Z","decision":"redacted","severity":"high","policy":"pii","gateway_id":"gw","consumer_group":"cg","reason_code":"pii_detected","consumer":"bot","user_id":"u1","request_id":"r1","config_version":12,"provider":"openai","model":"gpt","input_tokens":10,"output_tokens":0,"cost_usd":1.5777777777770001,"latency_ms":31,"input":"a\u2028b call +1 415 555 0100","output":"","policies_evaluated":[{"name":"pii","result":"redact","latency_ms":3,"entities_found":1}],"metadata":{"big":98000000000000000000001,"note":"x"},"extra_field":{"kept":true}}"#,
    );
    lines.push(b'\n');
    std::fs::write(&src, lines).unwrap();
    evidex(&data, &[], &["ingest", src.to_str().unwrap()]);
    let native = cli_stream(&data, &["--limit", "10000"]);
    let native: HashMap<String, Value> = native
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["id"].as_str().unwrap().to_string(), v)
        })
        .collect();
    assert_eq!(native.len(), 3026);

    let siem = token(&data, "siem");
    let server = Server::start(&data, 1, &[]);
    let c = Client::new(&server.base);
    for profile in ["ecs", "ocsf", "splunk_hec"] {
        let r = c
            .get(
                &format!("/v1/events/stream?profile={profile}&limit=10000"),
                &siem,
            )
            .await;
        assert_eq!(r.status, 200);
        let file = dir.path().join(format!("{profile}.ndjson"));
        std::fs::write(&file, &r.body).unwrap();
        validate(profile, &file);
        let records: Vec<Value> = String::from_utf8(r.body.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), native.len(), "{profile}");
        if profile == "splunk_hec" {
            for line in String::from_utf8_lossy(&r.body).lines() {
                let time = line
                    .strip_prefix("{\"time\":")
                    .and_then(|t| t.split(',').next())
                    .unwrap();
                assert_eq!(time.split_once('.').unwrap().1.len(), 6, "{time}");
            }
        }
        // The line separator in `input` is escaped: one record per line.
        assert!(!String::from_utf8_lossy(&r.body).contains('\u{2028}'));
        for rec in &records {
            let id = match profile {
                "ecs" => &rec["event"]["id"],
                "ocsf" => &rec["metadata"]["uid"],
                _ => &rec["event"]["id"],
            };
            let orig = &native[id.as_str().unwrap()];
            check_mapping(profile, rec, orig);
        }
        // The same records from an ndjson export with the profile.
        let export = dir.path().join(format!("export-{profile}.ndjson"));
        evidex(
            &data,
            &[],
            &[
                "export",
                "--from",
                "2026-11-01",
                "--to",
                "2026-11-30",
                "--format",
                "ndjson",
                "--profile",
                profile,
                "--output",
                export.to_str().unwrap(),
            ],
        );
        validate(profile, &export);
        let exported = std::fs::read_to_string(&export).unwrap();
        assert_eq!(exported.lines().count(), native.len());
        let mut a: Vec<&str> = exported.lines().collect();
        let body = String::from_utf8(r.body.clone()).unwrap();
        let mut b: Vec<&str> = body.lines().collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "{profile}: export and stream write the same records");
    }
    // Through the API, as one JSON array: the same records, the profile in the
    // manifest.
    let compliance = token(&data, "compliance");
    let job = c
        .post(
            "/v1/exports",
            &compliance,
            &json!({"name": "ocsf-array", "from": "2026-11-01", "to": "2026-11-30",
                    "format": "json", "profile": "ocsf"}),
        )
        .await;
    assert_eq!(job.status, 201, "{}", String::from_utf8_lossy(&job.body));
    let id = job.json()["id"].as_str().unwrap().to_string();
    let done = c.wait(&id, &compliance, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let r = c
        .get(&format!("/v1/exports/{id}/download"), &compliance)
        .await;
    let array: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(array.len(), native.len());
    let file = dir.path().join("array.ndjson");
    let lines: Vec<String> = array.iter().map(|v| v.to_string()).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    validate("ocsf", &file);
    let manifest = c
        .get(&format!("/v1/exports/{id}/manifest"), &compliance)
        .await
        .json();
    assert_eq!(manifest["parameters"]["profile"], "ocsf", "{manifest}");
    let r = c
        .post(
            "/v1/exports",
            &compliance,
            &json!({"name": "p", "from": "2026-11-01", "to": "2026-11-30", "format": "parquet", "profile": "ecs"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.message().starts_with("profile:"), "{}", r.message());

    // A profile needs a JSON format, and event columns.
    let out = run(
        &data,
        &[
            "export",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-30",
            "--format",
            "csv",
            "--profile",
            "ecs",
            "--output",
            "-",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("profile: "), "{}", text(&out));
}

/// Every mapping of `profile` (from the engine's table) holds the native value at
/// its target: nothing is dropped or changed on the way.
fn check_mapping(profile: &str, rec: &Value, orig: &Value) {
    use evidex_engine::export::encode::{Profile, Rule};
    let p = Profile::parse(profile).unwrap();
    for m in p.mapping() {
        let mut at = rec;
        for part in m.target.split('.') {
            at = &at[part];
        }
        if m.source == "*" {
            assert_eq!(at, orig, "{profile} {}", m.target);
            continue;
        }
        if m.source.is_empty() {
            continue;
        }
        let src = &orig[m.source];
        if src.is_null() {
            if let Rule::CopyOr(l) = m.rule {
                assert_eq!(*at, serde_json::from_str::<Value>(l).unwrap());
            } else {
                assert!(at.is_null(), "{profile} {} from null: {at}", m.target);
            }
            continue;
        }
        match m.rule {
            Rule::Copy | Rule::CopyOr(_) => assert_eq!(at, src, "{profile} {}", m.target),
            Rule::Text => {
                let want = match src {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert_eq!(at.as_str(), Some(want.as_str()), "{profile} {}", m.target);
            }
            Rule::EpochMillis | Rule::EpochSeconds => {
                let t = chrono::DateTime::parse_from_rfc3339(src.as_str().unwrap()).unwrap();
                let micros = t.timestamp_micros();
                if m.rule == Rule::EpochMillis {
                    assert_eq!(at.as_i64(), Some(micros.div_euclid(1000)));
                } else {
                    // A double holds about 16 digits: microseconds of an epoch time
                    // survive to within a few (the text has all six, checked below).
                    let secs = at.as_f64().unwrap();
                    assert!((secs - micros as f64 / 1e6).abs() < 5e-6, "{secs} {micros}");
                }
            }
            Rule::MillisToNanos => {
                assert_eq!(at.as_i64(), Some(src.as_i64().unwrap() * 1_000_000));
            }
            Rule::Map(table, default) => {
                let lit = table
                    .iter()
                    .find(|(k, _)| Some(*k) == src.as_str())
                    .map(|(_, v)| *v)
                    .unwrap_or(default);
                if lit.is_empty() {
                    assert!(at.is_null());
                } else {
                    assert_eq!(*at, serde_json::from_str::<Value>(lit).unwrap());
                }
            }
            Rule::Constant(_) | Rule::NativeRecord => {}
        }
    }
}

/// The mapping tables in docs/siem-profiles.md are the engine's tables: every row
/// (target, source, rule) in the same order, for every profile.
#[test]
fn documented_mappings_are_the_code() {
    use evidex_engine::export::encode::Profile;
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/siem-profiles.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let mut expected_all = String::new();
    let mut mismatch = false;
    for p in Profile::ALL {
        if p == Profile::Native {
            continue;
        }
        let mut expected = String::from("| target field | source column | rule |\n|---|---|---|\n");
        for m in p.mapping() {
            let source = match m.source {
                "" => "—".to_string(),
                "*" => "all".to_string(),
                s => format!("`{s}`"),
            };
            expected.push_str(&format!(
                "| `{}` | {} | {} |\n",
                m.target,
                source,
                m.rule.describe().replace('|', "\\|")
            ));
        }
        // The table that follows the profile's marker comment.
        let marker = format!("<!-- mapping: {} -->\n", p.as_str());
        let found = doc
            .split_once(&marker)
            .map(|(_, rest)| {
                rest.lines()
                    .take_while(|l| l.starts_with('|'))
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            })
            .unwrap_or_default();
        if found != expected {
            mismatch = true;
        }
        expected_all.push_str(&format!("{marker}{expected}\n"));
    }
    assert!(
        !mismatch,
        "docs/siem-profiles.md does not match the code; the tables should read:\n\n{expected_all}"
    );
}
