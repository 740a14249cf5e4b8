//! The metadata store's contract: every operation behaves the same on SQLite (the
//! embedded default) and on PostgreSQL (the scale-out store). Each check runs on
//! both: SQLite in a temporary directory, PostgreSQL in a fresh database of the
//! server `$TEST_POSTGRES_URL` names (scripts/test.sh starts one on loopback).
//!
//! Checks that involve several nodes open two handles on the same database (two
//! connections, as two processes would) and race them from threads.

use std::collections::HashSet;
use std::sync::Arc;

use evidex_server::store::{
    Dialect, NewRun, Principal, Role, Store, TokenRefusal, Webhook, WebhookAttempt,
    latest_schema_version,
};
use serde_json::json;

/// One database to check: how to open another handle on it, and its name.
struct Db {
    name: &'static str,
    open: Box<dyn Fn() -> Store>,
    /// Opens another handle, or says why not.
    try_open: Box<dyn Fn() -> anyhow::Result<Store>>,
    /// Runs a statement outside the store (to tamper, or to fake a newer schema).
    raw: Box<dyn Fn(&str)>,
    _dir: Option<tempfile::TempDir>,
}

fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let raw_path = path.join(evidex_server::store::DB_FILE);
    Db {
        name: "SQLite",
        open: Box::new({
            let path = path.clone();
            move || Store::open(&path).unwrap()
        }),
        try_open: Box::new(move || Store::open(&path)),
        raw: Box::new(move |sql| {
            let c = rusqlite::Connection::open(&raw_path).unwrap();
            c.execute_batch(sql).unwrap();
        }),
        _dir: Some(dir),
    }
}

fn postgres_admin(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to $TEST_POSTGRES_URL: {e}"));
        tokio::spawn(conn);
        client.batch_execute(sql).await.unwrap();
    });
}

fn postgres() -> Db {
    let admin = std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_POSTGRES_URL is not set: run ./scripts/test.sh, which starts PostgreSQL \
             and sets it"
        )
    });
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    let name = format!("contract_{}", hex::encode(b));
    postgres_admin(&admin, &format!("CREATE DATABASE {name}"));
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database name");
    let url = format!("{base}/{name}");
    let raw_url = url.clone();
    Db {
        name: "PostgreSQL",
        open: Box::new({
            let url = url.clone();
            move || Store::connect_postgres(&url).unwrap()
        }),
        try_open: Box::new(move || Store::connect_postgres(&url)),
        raw: Box::new(move |sql| postgres_admin(&raw_url, sql)),
        _dir: None,
    }
}

/// Runs `check` on SQLite, then on PostgreSQL.
fn each(check: impl Fn(&Db)) {
    for db in [sqlite(), postgres()] {
        eprintln!("-- {}", db.name);
        check(&db);
    }
}

fn principal(store: &Store, name: &str, role: Role) -> Principal {
    let (id, token) = store.create_token(name, role, 1_000).unwrap();
    let p = store.authenticate(&token, 1_000).unwrap().unwrap();
    assert_eq!(p.token_id, id);
    p
}

fn job(store: &Store, by: &Principal, id: &str, at: i64) {
    store
        .create_job(id, id, "", &json!({"format": "csv"}), by, None, at)
        .unwrap();
}

#[test]
fn migrations_are_versioned_applied_once_and_a_newer_schema_is_refused() {
    each(|db| {
        let store = (db.open)();
        assert_eq!(store.schema_version().unwrap(), latest_schema_version());
        // Opening again (another node starting) applies nothing.
        assert!(store.migrate().unwrap().is_empty());
        let again = (db.open)();
        assert_eq!(again.schema_version().unwrap(), latest_schema_version());
        let expected = if db.name == "SQLite" {
            Dialect::Sqlite
        } else {
            Dialect::Postgres
        };
        assert_eq!(store.dialect(), expected);
        // A database a newer evidex migrated is refused, not misread.
        (db.raw)(&format!(
            "INSERT INTO schema_migrations(version, name, applied_at) VALUES ({}, 'future', 0)",
            latest_schema_version() + 1
        ));
        let Err(err) = (db.try_open)() else {
            panic!("{}: a newer schema must be refused", db.name);
        };
        assert!(
            format!("{err:#}").contains("newer than this evidex"),
            "{}: {err:#}",
            db.name
        );
        let err = store.migrate().unwrap_err();
        assert!(
            format!("{err:#}").contains("newer than this evidex"),
            "{err:#}"
        );
    });
}

#[test]
fn tokens_are_stored_hashed_authenticate_by_role_expire_and_are_revoked_everywhere() {
    each(|db| {
        let store = (db.open)();
        let (id, token) = store.create_token("ci", Role::Compliance, 5).unwrap();
        assert!(token.starts_with("evx_") && id.starts_with("tok_"));
        let p = store.authenticate(&token, 10).unwrap().unwrap();
        assert_eq!((p.name.as_str(), p.role), ("ci", Role::Compliance));
        assert_eq!(store.principal(&id, 10).unwrap().unwrap(), p);
        assert!(store.authenticate("evx_wrong", 10).unwrap().is_none());
        assert_eq!(
            store.check_token("evx_wrong", 10).unwrap().unwrap_err(),
            TokenRefusal::Unknown
        );
        assert!(store.principal("tok_none", 10).unwrap().is_none());
        let err = store.create_token(" ", Role::Admin, 5).unwrap_err();
        assert!(err.to_string().contains("name: a token name"), "{err}");
        // A second handle (another node) sees the token.
        let other = (db.open)();
        assert_eq!(other.authenticate(&token, 11).unwrap().unwrap(), p);
        // Last use is recorded, at most once a minute.
        assert_eq!(store.token(&id).unwrap().unwrap().last_used_at, Some(10));
        store.authenticate(&token, 30_000).unwrap().unwrap();
        assert_eq!(store.token(&id).unwrap().unwrap().last_used_at, Some(10));
        store.authenticate(&token, 70_000).unwrap().unwrap();
        assert_eq!(
            store.token(&id).unwrap().unwrap().last_used_at,
            Some(70_000)
        );

        // Expiry: valid until, refused from, the expiry instant.
        let (eid, etoken) = store
            .issue_token("temp", Role::Viewer, 100, Some(1_000), "token:ops (admin)")
            .unwrap();
        assert!(store.authenticate(&etoken, 999).unwrap().is_some());
        assert_eq!(
            store.check_token(&etoken, 1_000).unwrap().unwrap_err(),
            TokenRefusal::Expired(1_000)
        );
        assert!(store.principal(&eid, 1_000).unwrap().is_none());
        let err = store
            .issue_token("late", Role::Viewer, 100, Some(100), "cli")
            .unwrap_err();
        assert!(err.to_string().contains("not in the future"), "{err}");
        let info = store.token(&eid).unwrap().unwrap();
        assert_eq!(
            (
                info.status(999),
                info.status(1_000),
                info.created_by.as_deref()
            ),
            ("active", "expired", Some("token:ops (admin)"))
        );

        // Revocation: refused at once through every handle, sessions end.
        let (sid, _) = store.create_session(&id, 80_000).unwrap();
        assert!(other.session(&sid, 80_001).unwrap().is_some());
        assert!(other.revoke_token(&id, 90_000).unwrap());
        assert!(!store.revoke_token(&id, 90_001).unwrap(), "already revoked");
        assert!(!store.revoke_token("tok_none", 90_001).unwrap());
        assert_eq!(
            store.check_token(&token, 90_002).unwrap().unwrap_err(),
            TokenRefusal::Revoked(90_000)
        );
        assert!(store.principal(&id, 90_002).unwrap().is_none());
        assert!(store.session(&sid, 90_002).unwrap().is_none());
        let listed: Vec<(String, &str)> = store
            .tokens()
            .unwrap()
            .iter()
            .map(|t| (t.name.clone(), t.status(90_002)))
            .collect();
        assert_eq!(
            listed,
            [
                ("temp".to_string(), "expired"),
                ("ci".to_string(), "revoked")
            ]
        );
    });
}

#[test]
fn the_audit_chain_stays_whole_under_concurrent_writers_and_tampering_is_found() {
    each(|db| {
        let handles: Vec<Store> = (0..3).map(|_| (db.open)()).collect();
        std::thread::scope(|s| {
            for (t, store) in handles.iter().enumerate() {
                s.spawn(move || {
                    for i in 0..15 {
                        store
                            .audit(
                                i,
                                &format!("node-{t}"),
                                "export.created",
                                Some("exp_1"),
                                Some(&json!({"i": i})),
                            )
                            .unwrap();
                    }
                });
            }
        });
        let store = &handles[0];
        assert_eq!(store.verify_audit_chain().unwrap(), Ok(45), "{}", db.name);
        let entries = store.audit_entries(0, 1000).unwrap();
        let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=45).collect::<Vec<_>>());
        assert_eq!(store.audit_entries(40, 3).unwrap().len(), 3);
        (db.raw)("UPDATE audit_log SET details = '{\"i\": 99}' WHERE seq = 7");
        let broken = store.verify_audit_chain().unwrap().unwrap_err();
        assert!(broken.contains("entry 7 was changed"), "{broken}");
    });
}

#[test]
fn jobs_idempotency_listing_counts_and_cancel() {
    each(|db| {
        let store = (db.open)();
        let by = principal(&store, "ci", Role::Compliance);
        let (a, created) = store
            .create_job("exp_a", "A", "d", &json!({"x": 1}), &by, Some("k1"), 10)
            .unwrap();
        assert!(created);
        assert_eq!(
            (a.status.as_str(), a.params["x"].as_i64()),
            ("queued", Some(1))
        );
        assert_eq!(a.created_at, "1970-01-01T00:00:00.010Z");
        let (again, created) = store
            .create_job("exp_b", "B", "d", &json!({}), &by, Some("k1"), 11)
            .unwrap();
        assert!(!created);
        assert_eq!(again.id, "exp_a");
        job(&store, &by, "exp_c", 12);
        job(&store, &by, "exp_d", 13);
        let ids =
            |v: Vec<evidex_server::store::Job>| v.into_iter().map(|j| j.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.jobs(None, 10, None).unwrap()),
            ["exp_d", "exp_c", "exp_a"]
        );
        assert_eq!(ids(store.jobs(None, 1, Some("exp_d")).unwrap()), ["exp_c"]);
        assert_eq!(
            store.cancel("exp_c", 20).unwrap().as_deref(),
            Some("cancelled")
        );
        assert_eq!(
            store.cancel("exp_c", 21).unwrap().as_deref(),
            Some("cancelled")
        );
        assert_eq!(store.cancel("exp_none", 21).unwrap(), None);
        assert_eq!(
            ids(store.jobs(Some("cancelled"), 10, None).unwrap()),
            ["exp_c"]
        );
        let mut counts = store.job_counts().unwrap();
        counts.sort();
        assert_eq!(
            counts,
            [("cancelled".to_string(), 1), ("queued".to_string(), 2)]
        );
        assert_eq!(store.rows_exported().unwrap(), 0);
        assert!(store.job("exp_none").unwrap().is_none());
    });
}

#[test]
fn concurrent_claims_take_each_job_once() {
    each(|db| {
        let store = (db.open)();
        let by = principal(&store, "ci", Role::Compliance);
        for i in 0..24 {
            job(&store, &by, &format!("exp_{i:02}"), 100 + i);
        }
        let handles: Vec<Store> = (0..4).map(|_| (db.open)()).collect();
        let claimed = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for (w, store) in handles.iter().enumerate() {
                let claimed = &claimed;
                s.spawn(move || {
                    while let Some(j) = store.claim(&format!("w{w}"), 1_000, 60_000).unwrap() {
                        assert_eq!((j.status.as_str(), j.attempts), ("processing", 1));
                        claimed.lock().unwrap().push(j.id);
                    }
                });
            }
        });
        let claimed = claimed.into_inner().unwrap();
        let unique: HashSet<&String> = claimed.iter().collect();
        assert_eq!((claimed.len(), unique.len()), (24, 24), "{}", db.name);
    });
}

#[test]
fn a_stale_attempt_cannot_overwrite_the_attempt_that_replaced_it() {
    each(|db| {
        let store = (db.open)();
        let by = principal(&store, "ci", Role::Compliance);
        job(&store, &by, "exp_1", 1);
        let first = store.claim("node-a", 1_000, 10_000).unwrap().unwrap();
        assert_eq!(first.attempts, 1);
        store.set_total("exp_1", "node-a", 1, 500).unwrap();
        assert_eq!(
            store
                .heartbeat("exp_1", "node-a", 1, 5_000, 10_000, 100)
                .unwrap()
                .as_deref(),
            Some("processing")
        );
        // node-a pauses past its lease; node-b claims the job: attempt 2.
        let second = store.claim("node-b", 16_000, 10_000).unwrap().unwrap();
        assert_eq!((second.id.as_str(), second.attempts), ("exp_1", 2));
        assert_eq!(second.rows_total, Some(500));
        // node-a wakes up: its heartbeat, total and result are refused.
        assert_eq!(
            store
                .heartbeat("exp_1", "node-a", 1, 17_000, 10_000, 900)
                .unwrap(),
            None
        );
        store.set_total("exp_1", "node-a", 1, 1).unwrap();
        assert!(
            !store
                .complete(
                    "exp_1",
                    "node-a",
                    1,
                    18_000,
                    900,
                    &json!({"attempt": 1}),
                    false
                )
                .unwrap()
        );
        assert_eq!(
            store
                .fail("exp_1", "node-a", 1, 18_000, "late", true)
                .unwrap(),
            "processing"
        );
        // The same owner with a stale attempt number is refused too.
        assert!(
            !store
                .complete(
                    "exp_1",
                    "node-b",
                    1,
                    18_000,
                    900,
                    &json!({"attempt": 1}),
                    false
                )
                .unwrap()
        );
        assert!(
            store
                .complete(
                    "exp_1",
                    "node-b",
                    2,
                    19_000,
                    700,
                    &json!({"attempt": 2}),
                    false
                )
                .unwrap()
        );
        let done = store.job("exp_1").unwrap().unwrap();
        assert_eq!(done.status, "completed");
        assert_eq!(done.rows_written, 700);
        assert_eq!(done.rows_total, Some(500));
        assert_eq!(done.artifact.unwrap()["attempt"], 2);
        assert_eq!(store.rows_exported().unwrap(), 700);
        // A late completion after the job is done changes nothing either.
        assert!(
            !store
                .complete(
                    "exp_1",
                    "node-a",
                    1,
                    20_000,
                    1,
                    &json!({"attempt": 1}),
                    false
                )
                .unwrap()
        );
    });
}

#[test]
fn a_released_job_is_queued_again_and_its_old_attempt_is_fenced() {
    each(|db| {
        let store = (db.open)();
        let by = principal(&store, "ci", Role::Compliance);
        job(&store, &by, "exp_1", 1);
        job(&store, &by, "exp_2", 2);
        let a = store.claim("node-a", 1_000, 10_000).unwrap().unwrap();
        let b = store.claim("node-b", 1_000, 10_000).unwrap().unwrap();
        assert_eq!((a.id.as_str(), b.id.as_str()), ("exp_1", "exp_2"));
        // node-a shuts down past its grace: only its job is given back, at once.
        assert_eq!(store.release("node-a").unwrap(), 1);
        assert_eq!(store.release("node-a").unwrap(), 0);
        let again = store.claim("node-c", 1_001, 10_000).unwrap().unwrap();
        assert_eq!((again.id.as_str(), again.attempts), ("exp_1", 2));
        assert!(store.claim("node-c", 1_002, 10_000).unwrap().is_none());
        // The released attempt can neither renew nor finish.
        assert_eq!(
            store
                .heartbeat("exp_1", "node-a", 1, 2_000, 10_000, 5)
                .unwrap(),
            None
        );
        assert!(
            !store
                .complete(
                    "exp_1",
                    "node-a",
                    1,
                    2_000,
                    5,
                    &json!({"attempt": 1}),
                    false
                )
                .unwrap()
        );
        assert!(
            store
                .complete(
                    "exp_1",
                    "node-c",
                    2,
                    3_000,
                    7,
                    &json!({"attempt": 2}),
                    false
                )
                .unwrap()
        );
        assert_eq!(store.job("exp_1").unwrap().unwrap().status, "completed");
        // node-b's job was never touched.
        assert_eq!(store.job("exp_2").unwrap().unwrap().status, "processing");
    });
}

#[test]
fn failures_retry_until_the_last_attempt_and_an_abandoned_job_is_given_up() {
    each(|db| {
        let store = (db.open)();
        let by = principal(&store, "ci", Role::Compliance);
        job(&store, &by, "exp_r", 1);
        for attempt in 1..=3 {
            let j = store.claim("w", 1_000 * attempt, 10_000).unwrap().unwrap();
            assert_eq!(j.attempts, attempt);
            let status = store
                .fail("exp_r", "w", attempt, 1_000 * attempt, "disk full", false)
                .unwrap();
            assert_eq!(status, if attempt < 3 { "queued" } else { "failed" });
        }
        let j = store.job("exp_r").unwrap().unwrap();
        assert_eq!(
            (j.status.as_str(), j.error.as_deref()),
            ("failed", Some("disk full"))
        );
        assert!(j.finished_at.is_some());
        // A permanent error fails at once.
        job(&store, &by, "exp_p", 2);
        store.claim("w", 5_000, 10_000).unwrap().unwrap();
        assert_eq!(
            store.fail("exp_p", "w", 1, 5_000, "bad SQL", true).unwrap(),
            "failed"
        );
        // A job whose worker died on its last attempt is failed by the next claim.
        job(&store, &by, "exp_d", 3);
        for attempt in 1..=3i64 {
            let at = 100_000 * attempt;
            let j = store.claim("w", at, 10_000).unwrap().unwrap();
            assert_eq!((j.id.as_str(), j.attempts), ("exp_d", attempt));
        }
        assert!(store.claim("w", 400_000, 10_000).unwrap().is_none());
        let j = store.job("exp_d").unwrap().unwrap();
        assert_eq!(j.status, "failed");
        assert_eq!(
            j.error.as_deref(),
            Some("the worker stopped responding (gave up after 3 attempts)")
        );
    });
}

#[test]
fn schedules_run_each_period_once_across_nodes_and_in_order() {
    each(|db| {
        let store = (db.open)();
        let by = principal(&store, "ops", Role::Admin);
        store
            .insert_schedule("sch_1", &json!({"cadence": "monthly"}), &by, 50)
            .unwrap();
        assert_eq!(store.schedules().unwrap().len(), 1);
        assert_eq!(store.schedule("sch_1").unwrap().unwrap().run_after, 50);
        assert_eq!(store.last_period_end("sch_1").unwrap(), None);
        // Two serve nodes fire the same period at the same moment: one run.
        let nodes: Vec<Store> = (0..2).map(|_| (db.open)()).collect();
        let params = json!({"format": "csv"});
        let won: Vec<Option<String>> = std::thread::scope(|s| {
            let hs: Vec<_> = nodes
                .iter()
                .enumerate()
                .map(|(n, node)| {
                    let params = &params;
                    s.spawn(move || {
                        let job_id = format!("exp_jan_{n}");
                        let run = NewRun {
                            schedule_id: "sch_1",
                            period: "2026-01",
                            period_start: 100,
                            period_end: 200,
                            job_id: &job_id,
                            name: "January",
                            description: "",
                            params,
                            created_by: "token:ops (admin)",
                        };
                        node.queue_scheduled_run(&run, 300).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<&String> = won.iter().flatten().collect();
        assert_eq!(winners.len(), 1, "{}: {won:?}", db.name);
        let jan = winners[0].clone();
        assert_eq!(
            store.run_of_period("sch_1", "2026-01").unwrap(),
            Some(jan.clone())
        );
        let feb = NewRun {
            schedule_id: "sch_1",
            period: "2026-02",
            period_start: 200,
            period_end: 300,
            job_id: "exp_feb",
            name: "February",
            description: "",
            params: &params,
            created_by: "token:ops (admin)",
        };
        assert_eq!(
            store.queue_scheduled_run(&feb, 310).unwrap().as_deref(),
            Some("exp_feb")
        );
        assert_eq!(
            store.job("exp_feb").unwrap().unwrap().period.as_deref(),
            Some("2026-02")
        );
        assert_eq!(store.last_period_end("sch_1").unwrap(), Some(300));
        // February waits for January: the claim takes January first, then nothing.
        let first = store.claim("w", 1_000, 10_000).unwrap().unwrap();
        assert_eq!(first.id, jan);
        assert!(store.claim("w", 1_000, 10_000).unwrap().is_none());
        let artifact = json!({"manifest_sha256": "aa"});
        assert!(
            store
                .complete(&jan, "w", 1, 2_000, 1, &artifact, false)
                .unwrap()
        );
        assert_eq!(
            store.claim("w", 2_000, 10_000).unwrap().unwrap().id,
            "exp_feb"
        );
        let runs = store.schedule_runs("sch_1", 10).unwrap();
        assert_eq!(
            runs.iter().map(|r| r.period.as_str()).collect::<Vec<_>>(),
            ["2026-02", "2026-01"]
        );
        assert_eq!(runs[1].manifest_sha256.as_deref(), Some("aa"));
        let (this, previous) = store.run_and_previous("exp_feb").unwrap().unwrap();
        assert_eq!(this.period, "2026-02");
        assert_eq!(previous.unwrap().job_id, jan);
        // Editing moves run_after past every period already run.
        assert!(
            store
                .update_schedule("sch_1", &json!({"cadence": "weekly"}), 400)
                .unwrap()
        );
        let row = store.schedule("sch_1").unwrap().unwrap();
        assert_eq!((row.run_after, row.updated_at), (300, 400));
        assert_eq!(row.spec["cadence"], "weekly");
        assert!(store.delete_schedule("sch_1", 500).unwrap());
        assert!(!store.delete_schedule("sch_1", 500).unwrap());
        assert!(!store.update_schedule("sch_1", &json!({}), 600).unwrap());
        assert!(store.schedule("sch_1").unwrap().is_none());
    });
}

#[test]
fn deliveries_are_queued_with_completion_claimed_once_and_retried() {
    each(|db| {
        let store = (db.open)();
        let by = principal(&store, "ci", Role::Compliance);
        for id in ["exp_1", "exp_2", "exp_3"] {
            job(&store, &by, id, 1);
        }
        assert!(
            !store.queue_delivery("exp_1", 5).unwrap(),
            "not completed yet"
        );
        for attempt_of in ["exp_1", "exp_2", "exp_3"] {
            let j = store.claim("w", 10, 10_000).unwrap().unwrap();
            assert_eq!(j.id, attempt_of);
            assert!(
                store
                    .complete(&j.id, "w", 1, 20, 5, &json!({}), true)
                    .unwrap()
            );
        }
        assert_eq!(
            store.job("exp_1").unwrap().unwrap().delivery,
            Some(json!({"status": "pending", "key": null, "attempts": 0, "last_error": null}))
        );
        // Two nodes' dispatchers claim at once: each delivery goes to one.
        let nodes: Vec<Store> = (0..2).map(|_| (db.open)()).collect();
        let got: Vec<Vec<String>> = std::thread::scope(|s| {
            let hs: Vec<_> = nodes
                .iter()
                .enumerate()
                .map(|(n, node)| {
                    s.spawn(move || {
                        node.claim_deliveries(&format!("d{n}"), 30, 60_000, 10)
                            .unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: Vec<&String> = got.iter().flatten().collect();
        let unique: HashSet<&&String> = all.iter().collect();
        assert_eq!((all.len(), unique.len()), (3, 3), "{}: {got:?}", db.name);
        let owner_of = |id: &str| {
            if got[0].iter().any(|g| g == id) {
                "d0"
            } else {
                "d1"
            }
        };
        assert!(
            store
                .claim_deliveries("d9", 40, 60_000, 10)
                .unwrap()
                .is_empty()
        );
        store
            .renew_delivery_lease("exp_1", owner_of("exp_1"), 50, 60_000)
            .unwrap();
        // exp_1: delivered.
        assert!(
            store
                .delivery_done("exp_1", owner_of("exp_1"), "evidence/exp_1.zip", 60)
                .unwrap()
        );
        assert!(
            !store
                .delivery_done("exp_1", owner_of("exp_1"), "x", 61)
                .unwrap()
        );
        assert_eq!(
            store.delivery("exp_1").unwrap().unwrap(),
            json!({"status": "delivered", "key": "evidence/exp_1.zip", "attempts": 1, "last_error": null})
        );
        // exp_2: fails, retried at 1000, then given up.
        let status = store
            .delivery_failed("exp_2", owner_of("exp_2"), "503", 70, |n, first| {
                assert_eq!((n, first), (1, 30));
                Some(1_000)
            })
            .unwrap();
        assert_eq!(status, "pending");
        assert!(
            store
                .claim_deliveries("d0", 999, 60_000, 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.claim_deliveries("d0", 1_000, 60_000, 10).unwrap(),
            ["exp_2"]
        );
        let status = store
            .delivery_failed("exp_2", "d0", "503 again", 1_100, |n, _| {
                assert_eq!(n, 2);
                None
            })
            .unwrap();
        assert_eq!(status, "failed");
        assert_eq!(
            store.delivery("exp_2").unwrap().unwrap()["last_error"],
            "503 again"
        );
        // A dispatcher that lost its lease records nothing.
        assert_eq!(
            store
                .delivery_failed("exp_3", "someone-else", "x", 80, |_, _| Some(1))
                .unwrap(),
            "pending"
        );
        // Re-queuing starts the count again.
        assert!(store.queue_delivery("exp_2", 2_000).unwrap());
        assert_eq!(store.delivery("exp_2").unwrap().unwrap()["attempts"], 0);
        assert_eq!(store.delivery("exp_none").unwrap(), None);
    });
}

fn hook(id: &str, events: &[&str], created_at: i64) -> Webhook {
    Webhook {
        id: id.to_string(),
        url: "https://siem.example.com/hook".to_string(),
        events: events.iter().map(|e| e.to_string()).collect(),
        description: "d".to_string(),
        created_by: "token:ops (admin)".to_string(),
        created_at,
        secret_sealed: "sealed".to_string(),
    }
}

#[test]
fn webhooks_queue_each_event_once_claim_messages_once_and_keep_every_attempt() {
    each(|db| {
        let store = (db.open)();
        let by = principal(&store, "ci", Role::Compliance);
        store
            .insert_webhook(&hook("wh_a", &["export.completed", "export.failed"], 10))
            .unwrap();
        store
            .insert_webhook(&hook("wh_b", &["export.failed"], 10))
            .unwrap();
        store
            .insert_webhook(&hook("wh_late", &["export.completed"], 999))
            .unwrap();
        assert_eq!(store.webhooks().unwrap().len(), 3);
        let (w, deleted) = store.webhook("wh_a").unwrap().unwrap();
        assert_eq!(
            (w.events.len(), deleted, w.secret_sealed.as_str()),
            (2, false, "sealed")
        );
        // A completed job: wh_a hears of it; wh_late was created after it happened.
        job(&store, &by, "exp_1", 1);
        store.claim("w", 20, 10_000).unwrap().unwrap();
        assert!(
            store
                .complete("exp_1", "w", 1, 30, 1, &json!({}), false)
                .unwrap()
        );
        assert_eq!(
            store.missing_webhook_events(0).unwrap(),
            [("exp_1".to_string(), "export.completed".to_string(), 30)]
        );
        let n = store
            .enqueue_webhook_event("export.completed", "exp_1", "{}", 40, 30)
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            store
                .enqueue_webhook_event("export.completed", "exp_1", "{}", 41, 30)
                .unwrap(),
            0,
            "an event is queued once per webhook"
        );
        assert!(store.missing_webhook_events(0).unwrap().is_empty());
        // Two nodes' dispatchers: each message is sent by one.
        let nodes: Vec<Store> = (0..2).map(|_| (db.open)()).collect();
        let got: Vec<usize> = std::thread::scope(|s| {
            let hs: Vec<_> = nodes
                .iter()
                .map(|node| {
                    s.spawn(move || node.claim_webhook_messages(50, 30_000, 10).unwrap().len())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(got.iter().sum::<usize>(), 1, "{}: {got:?}", db.name);
        let (msg, _) = store.webhook_messages("wh_a", 10).unwrap().remove(0);
        assert!(msg.id.starts_with("msg_"));
        let failed = WebhookAttempt {
            n: 1,
            at: 60,
            status_code: Some(503),
            latency_ms: 12,
            error: Some("503 Service Unavailable".to_string()),
        };
        store
            .record_webhook_attempt(&msg.id, &failed, false, Some(5_000))
            .unwrap();
        assert!(
            store
                .claim_webhook_messages(4_999, 30_000, 10)
                .unwrap()
                .is_empty()
        );
        let due = store.claim_webhook_messages(5_000, 30_000, 10).unwrap();
        assert_eq!((due.len(), due[0].attempts), (1, 1));
        let ok = WebhookAttempt {
            n: 2,
            at: 5_001,
            status_code: Some(204),
            latency_ms: 9,
            error: None,
        };
        store
            .record_webhook_attempt(&msg.id, &ok, true, None)
            .unwrap();
        // Recording an attempt again replaces it (a retried write).
        store
            .record_webhook_attempt(&msg.id, &ok, true, None)
            .unwrap();
        let (msg, attempts) = store.webhook_messages("wh_a", 10).unwrap().remove(0);
        assert_eq!(
            (msg.status.as_str(), msg.attempts, msg.finished_at),
            ("delivered", 2, Some(5_010))
        );
        assert_eq!(attempts, [failed, ok]);
        // Deleting a webhook drops its pending messages.
        job(&store, &by, "exp_2", 2);
        store.claim("w", 6_000, 10_000).unwrap().unwrap();
        store.fail("exp_2", "w", 1, 6_100, "bad", true).unwrap();
        assert_eq!(
            store
                .enqueue_webhook_event("export.failed", "exp_2", "{}", 6_200, 6_100)
                .unwrap(),
            2
        );
        assert!(store.delete_webhook("wh_b", 6_300).unwrap());
        assert!(!store.delete_webhook("wh_b", 6_300).unwrap());
        let (m, _) = store.webhook_messages("wh_b", 10).unwrap().remove(0);
        assert_eq!(
            (m.status.as_str(), m.last_error.as_deref()),
            ("failed", Some("the webhook was deleted"))
        );
        assert!(store.webhook("wh_b").unwrap().unwrap().1);
        assert_eq!(store.webhooks().unwrap().len(), 2);
    });
}

#[test]
fn presets_settings_sessions_and_secrets() {
    each(|db| {
        let store = (db.open)();
        let a = store
            .insert_preset("weekly", "d", "csv", "SELECT 1", "token:a", 10)
            .unwrap()
            .unwrap();
        assert!(a.id.starts_with("pre_"));
        assert!(
            store
                .insert_preset("weekly", "d", "csv", "SELECT 2", "token:a", 11)
                .unwrap()
                .is_none(),
            "a taken name"
        );
        let b = store
            .insert_preset("daily", "d", "json", "SELECT 3", "token:a", 12)
            .unwrap()
            .unwrap();
        assert_eq!(store.saved_preset("weekly").unwrap().unwrap(), a);
        assert_eq!(store.saved_preset(&b.id).unwrap().unwrap(), b);
        assert!(
            !store
                .update_preset(&b.id, "weekly", "d", "json", "SELECT 3", 13)
                .unwrap()
        );
        assert!(
            store
                .update_preset(&b.id, "nightly", "x", "ndjson", "SELECT 4", 14)
                .unwrap()
        );
        let names: Vec<String> = store
            .saved_presets()
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["nightly", "weekly"]);
        assert!(store.delete_preset(&a.id).unwrap());
        assert!(!store.delete_preset(&a.id).unwrap());

        assert_eq!(store.setting("redaction").unwrap(), None);
        store
            .set_setting("redaction", "{\"a\":1}", "token:a", 1)
            .unwrap();
        store
            .set_setting("redaction", "{\"a\":2}", "token:b", 2)
            .unwrap();
        assert_eq!(
            store.setting("redaction").unwrap().as_deref(),
            Some("{\"a\":2}")
        );

        let p = principal(&store, "console", Role::Viewer);
        let (sid, csrf) = store.create_session(&p.token_id, 1_000).unwrap();
        let (who, c) = store.session(&sid, 2_000).unwrap().unwrap();
        assert_eq!((who, c.as_str()), (p.clone(), csrf.as_str()));
        let idle = evidex_server::store::SESSION_IDLE_MS;
        assert!(store.session(&sid, 2_000 + idle + 1).unwrap().is_none());
        let (sid2, _) = store.create_session(&p.token_id, 10_000).unwrap();
        store.delete_session(&sid2).unwrap();
        assert!(store.session(&sid2, 10_001).unwrap().is_none());

        let s1 = store.secret("link").unwrap();
        assert_eq!(s1.len(), 32);
        assert_eq!((db.open)().secret("link").unwrap(), s1);
        assert_ne!(store.secret("other").unwrap(), s1);
    });
}

#[test]
fn expired_artifacts_are_found_by_their_expiry_time() {
    each(|db| {
        let store = Arc::new((db.open)());
        let by = principal(&store, "ci", Role::Compliance);
        for (id, expires) in [
            ("exp_old", "2026-01-01T00:00:00.000Z"),
            ("exp_new", "2027-01-01T00:00:00.000Z"),
        ] {
            job(&store, &by, id, 1);
            let j = store.claim("w", 10, 10_000).unwrap().unwrap();
            assert!(
                store
                    .complete(&j.id, "w", 1, 20, 3, &json!({"expires_at": expires}), false)
                    .unwrap()
            );
        }
        let now = 1_780_000_000_000; // 2026-05-28
        assert_eq!(store.expired_artifacts(now).unwrap(), ["exp_old"]);
        store.mark_expired("exp_old").unwrap();
        assert!(store.expired_artifacts(now).unwrap().is_empty());
        assert_eq!(store.job("exp_old").unwrap().unwrap().status, "expired");
        // Expired exports still count as exported rows.
        assert_eq!(store.rows_exported().unwrap(), 6);
    });
}

/// TLS to PostgreSQL (the second cluster scripts/test.sh starts, with a
/// certificate from a test CA): with the CA in `database_ca_file` the store's
/// connections are encrypted (the server's own `pg_stat_ssl` says so); without it,
/// or with a file that is no certificate, the error names the problem and the fix.
#[test]
fn tls_to_postgresql_verifies_the_server_certificate() {
    let (Ok(url), Ok(ca)) = (
        std::env::var("TEST_POSTGRES_TLS_URL"),
        std::env::var("TEST_POSTGRES_CA"),
    ) else {
        panic!("TEST_POSTGRES_TLS_URL is not set: run ./scripts/test.sh, which starts it");
    };
    let required = format!("{url}?sslmode=require");
    let store = Store::connect_postgres_with(&required, Some(std::path::Path::new(&ca))).unwrap();
    store.job_counts().unwrap();
    // Seen from the server: evidex's connections use TLS.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let encrypted: i64 = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(
            &format!("{url}?sslmode=disable&application_name=check"),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                 WHERE ssl AND application_name = 'evidex'",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    });
    assert!(encrypted >= 1, "no TLS connection from evidex");
    drop(store);

    // The default (sslmode=prefer) uses TLS when offered, and verifies it too.
    for url in [required.clone(), url.clone()] {
        let err = Store::connect_postgres_with(&url, None).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("certificate"), "{msg}");
        assert!(msg.contains("database_ca_file"), "{msg}");
    }
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.crt");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    // From inside a runtime, as `evidex serve` and the CLI call it (an error must
    // not drop the pool's own runtime there: that panics).
    let err = rt
        .block_on(async { Store::connect_postgres_with(&required, Some(&not_pem)) })
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("database_ca_file") && msg.contains("no PEM certificate"),
        "{msg}"
    );
    let err =
        Store::connect_postgres_with(&required, Some(&dir.path().join("missing.crt"))).unwrap_err();
    assert!(
        format!("{err:#}").contains("database_ca_file: cannot read"),
        "{err:#}"
    );
}

#[test]
fn a_wrong_database_url_is_named_without_its_password() {
    let err = Store::connect_postgres("postgres://evidex:hunter2@127.0.0.1:1/evidex").unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("cannot connect to the metadata database postgres://127.0.0.1/evidex"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
    let err = Store::connect_postgres("postgres://evidex:hunter2@db:notaport/evidex").unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("database_url: not a PostgreSQL connection URL"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
    // A login the server refuses names the server's reason.
    if let Ok(admin) = std::env::var("TEST_POSTGRES_URL") {
        let (base, _) = admin.rsplit_once('/').unwrap();
        let err = Store::connect_postgres(&format!("{base}/no_such_database")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("no_such_database") && msg.contains("does not exist"),
            "{msg}"
        );
    }
}

/// A database made by an evidex from before versioned migrations (tables created
/// with `IF NOT EXISTS`, no `schema_migrations`, tokens without lifecycle columns)
/// is migrated in place at start: its tokens keep working.
#[test]
fn a_database_from_before_migrations_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let token = "evx_0123456789abcdef0123456789abcdef0123456789abcdef";
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    {
        let c = rusqlite::Connection::open(dir.path().join(evidex_server::store::DB_FILE)).unwrap();
        c.execute_batch(
            "CREATE TABLE tokens (id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
                                  hash TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL);",
        )
        .unwrap();
        c.execute(
            "INSERT INTO tokens VALUES ('tok_old', 'legacy', 'admin', ?1, 7)",
            [&hash],
        )
        .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), latest_schema_version());
    let p = store.authenticate(token, 100).unwrap().unwrap();
    assert_eq!((p.token_id.as_str(), p.role), ("tok_old", Role::Admin));
    let info = store.token("tok_old").unwrap().unwrap();
    assert_eq!((info.created_by, info.last_used_at), (None, Some(100)));
    assert!(store.revoke_token("tok_old", 200).unwrap());
}
