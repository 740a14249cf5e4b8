//! Schedules: the scheduler driven by an injected clock through month, quarter and
//! year ends and both DST changes in America/New_York and Europe/Berlin, a five-week
//! outage, edits; two `evidex serve` processes on one database queue one job per
//! (schedule, period); scheduled runs executed by real workers form a manifest chain
//! that `evidex verify --chain` checks and that names a missing period.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use evidex_engine::clock::{Clock, FixedClock};
use evidex_server::config::Config;
use evidex_server::schedules;
use evidex_server::service::Service;
use evidex_server::store::{Principal, Role};
use serde_json::{Value, json};

mod common;
use common::{Client, Server, token};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn service(data: &Path, cap: usize) -> Arc<Service> {
    let mut config = Config {
        data: data.to_str().unwrap().to_string(),
        ..Config::default()
    };
    config.scheduler.catch_up_cap = cap;
    let clock: Arc<dyn Clock> = Arc::new(FixedClock(t("2026-01-01T00:00:00Z")));
    let lake = evidex_server::open_lake(&config, &HashMap::new(), clock.clone()).unwrap();
    evidex_server::build_service(config, lake, clock, false).unwrap()
}

fn admin() -> Principal {
    Principal {
        token_id: "test".into(),
        name: "test".into(),
        role: Role::Admin,
    }
}

fn create(s: &Service, id: &str, spec: Value, created: &str) {
    s.store
        .insert_schedule(id, &spec, &admin(), t(created).timestamp_millis())
        .unwrap();
}

/// The scheduled jobs of `schedule` as (period, from, to, name), oldest first.
fn runs(s: &Service, schedule: &str) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = s
        .store
        .jobs(None, 10_000, None)
        .unwrap()
        .into_iter()
        .filter(|j| j.schedule_id.as_deref() == Some(schedule))
        .map(|j| {
            (
                j.period.clone().unwrap(),
                j.params["from"].as_str().unwrap().to_string(),
                j.params["to"].as_str().unwrap().to_string(),
                j.name.clone(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    v
}

fn spec(name: &str, kind: &str, cron: Option<&str>, tz: &str) -> Value {
    let mut v = json!({"name": name, "kind": kind, "timezone": tz, "export": {"format": "csv"}});
    if let Some(c) = cron {
        v["cron"] = json!(c);
    }
    v
}

#[test]
fn calendar_periods_through_month_quarter_and_year_ends_and_dst() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(&dir.path().join("data"), 60);
    create(
        &s,
        "sch_ny_monthly",
        spec("Access-Review", "monthly", None, "America/New_York"),
        "2026-01-15T12:00:00Z",
    );
    create(
        &s,
        "sch_be_quarterly",
        spec("SOC2", "quarterly", None, "Europe/Berlin"),
        "2026-09-15T12:00:00Z",
    );

    // Not before local midnight of the 1st (EST: 05:00Z), then once.
    assert!(
        schedules::tick(&s, t("2026-02-01T04:59:59Z"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        schedules::tick(&s, t("2026-02-01T05:00:00Z"))
            .unwrap()
            .len(),
        1
    );
    assert!(
        schedules::tick(&s, t("2026-02-01T05:00:00Z"))
            .unwrap()
            .is_empty()
    );
    // March has the spring change: it starts at EST midnight and ends at EDT midnight.
    schedules::tick(&s, t("2026-04-01T04:00:00Z")).unwrap();
    // November has the autumn change; December runs on 1 January.
    schedules::tick(&s, t("2026-12-01T05:00:00Z")).unwrap();
    schedules::tick(&s, t("2027-01-01T05:00:00Z")).unwrap();
    let ny = runs(&s, "sch_ny_monthly");
    let labels: Vec<&str> = ny.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        labels,
        [
            "2026-01", "2026-02", "2026-03", "2026-04", "2026-05", "2026-06", "2026-07", "2026-08",
            "2026-09", "2026-10", "2026-11", "2026-12"
        ]
    );
    assert_eq!(ny[0].1, "2026-01-01T05:00:00Z");
    assert_eq!(ny[0].3, "Access-Review-2026-01");
    assert_eq!(
        (ny[2].1.as_str(), ny[2].2.as_str()),
        ("2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z")
    );
    assert_eq!(
        (ny[10].1.as_str(), ny[10].2.as_str()),
        ("2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z")
    );
    assert_eq!(
        (ny[11].1.as_str(), ny[11].2.as_str()),
        ("2026-12-01T05:00:00Z", "2027-01-01T05:00:00Z")
    );
    // Consecutive periods tile time: each starts where the previous ended.
    for w in ny.windows(2) {
        assert_eq!(w[0].2, w[1].1);
    }
    let jobs = s.store.jobs(None, 100, None).unwrap();
    let j = jobs
        .iter()
        .find(|j| j.name == "Access-Review-2026-03")
        .unwrap();
    assert_eq!(j.to_json()["period"], "2026-03");
    assert_eq!(j.to_json()["schedule_id"], "sch_ny_monthly");
    assert_eq!(j.params["timezone"], "America/New_York");

    // Berlin quarters: Q3 (created in September) and Q4 across the year end.
    // (The ticks above reached 1 January, past the end of Q4 in Berlin.)
    let be = runs(&s, "sch_be_quarterly");
    assert_eq!(be.len(), 2, "{be:?}");
    assert_eq!(be[0].0, "2026-Q3");
    assert_eq!(
        (be[0].1.as_str(), be[0].2.as_str()),
        ("2026-06-30T22:00:00Z", "2026-09-30T22:00:00Z")
    );
    schedules::tick(&s, t("2027-03-31T21:59:59Z")).unwrap();
    assert_eq!(runs(&s, "sch_be_quarterly").len(), 2, "Q1 is not due yet");
    schedules::tick(&s, t("2027-04-01T00:00:00Z")).unwrap();
    let be = runs(&s, "sch_be_quarterly");
    let labels: Vec<&str> = be.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(labels, ["2026-Q3", "2026-Q4", "2027-Q1"]);
    assert_eq!(be[1].2, "2026-12-31T23:00:00Z");
    assert_eq!(be[2].2, "2027-03-31T22:00:00Z", "Q1 ends at CEST midnight");
    assert_eq!(be[2].3, "SOC2-2027-Q1");
}

#[test]
fn cron_schedules_fire_once_across_both_dst_changes() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(&dir.path().join("data"), 1000);
    create(
        &s,
        "sch_ny_0130",
        spec("NY-0130", "cron", Some("30 1 * * *"), "America/New_York"),
        "2026-10-30T00:00:00Z",
    );
    create(
        &s,
        "sch_ny_0230",
        spec("NY-0230", "cron", Some("30 2 * * *"), "America/New_York"),
        "2026-03-06T00:00:00Z",
    );
    create(
        &s,
        "sch_be_0230",
        spec("BE-0230", "cron", Some("30 2 * * *"), "Europe/Berlin"),
        "2026-03-27T00:00:00Z",
    );
    // Tick every 10 minutes through both changes, as a running server would.
    let mut now = t("2026-03-06T00:00:00Z");
    while now < t("2026-11-03T00:00:00Z") {
        schedules::tick(&s, now).unwrap();
        now += chrono::Duration::minutes(10);
        // Jump over the quiet months.
        if now == t("2026-04-02T00:00:00Z") {
            now = t("2026-10-20T00:00:00Z");
        }
    }
    let count = |runs: &[(String, String, String, String)], label: &str| {
        runs.iter().filter(|r| r.0 == label).count()
    };
    // Autumn, New York: 01:30 happens twice on 1 November; one run, at the first.
    let ny = runs(&s, "sch_ny_0130");
    assert_eq!(count(&ny, "2026-11-01T01:30"), 1, "{ny:?}");
    let r = ny.iter().find(|r| r.0 == "2026-11-01T01:30").unwrap();
    assert_eq!(r.2, "2026-11-01T05:30:00Z");
    let days: Vec<&str> = ny.iter().map(|r| &r.0[..10]).collect();
    let mut dedup = days.clone();
    dedup.dedup();
    assert_eq!(days, dedup, "one run a day: {ny:?}");
    // Spring, New York: 02:30 does not exist on 8 March; it runs once at 03:00 EDT.
    let ny = runs(&s, "sch_ny_0230");
    assert_eq!(count(&ny, "2026-03-08T02:30"), 1, "{ny:?}");
    assert_eq!(
        ny.iter().find(|r| r.0 == "2026-03-08T02:30").unwrap().2,
        "2026-03-08T07:00:00Z"
    );
    // Berlin: skipped on 29 March (runs at 03:00 CEST), repeated on 25 October (once).
    let be = runs(&s, "sch_be_0230");
    assert_eq!(
        be.iter().find(|r| r.0 == "2026-03-29T02:30").unwrap().2,
        "2026-03-29T01:00:00Z"
    );
    assert_eq!(count(&be, "2026-10-25T02:30"), 1, "{be:?}");
    assert_eq!(
        be.iter().find(|r| r.0 == "2026-10-25T02:30").unwrap().2,
        "2026-10-25T00:30:00Z"
    );
    for w in be.windows(2) {
        assert_eq!(w[0].2, w[1].1, "periods tile time");
    }
}

#[test]
fn an_outage_of_five_weeks_runs_each_missed_week_once_oldest_first_and_edits_never_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(&dir.path().join("data"), 3);
    create(
        &s,
        "sch_weekly",
        spec("Weekly", "weekly", None, "Europe/Berlin"),
        "2026-03-02T12:00:00Z",
    );
    // Down from 2 March to 8 April: weeks 10 to 14 were missed. The cap is 3 a tick.
    let first = schedules::tick(&s, t("2026-04-08T09:00:00Z")).unwrap();
    assert_eq!(first.len(), 3);
    let second = schedules::tick(&s, t("2026-04-08T09:00:30Z")).unwrap();
    assert_eq!(second.len(), 2);
    assert!(
        schedules::tick(&s, t("2026-04-08T09:01:00Z"))
            .unwrap()
            .is_empty()
    );
    let w = runs(&s, "sch_weekly");
    let labels: Vec<&str> = w.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        labels,
        ["2026-W10", "2026-W11", "2026-W12", "2026-W13", "2026-W14"]
    );
    assert_eq!(w[3].3, "Weekly-2026-W13");
    // W14 spans the spring change in Berlin (29 March is in W13).
    assert_eq!(
        (w[3].1.as_str(), w[3].2.as_str()),
        ("2026-03-22T23:00:00Z", "2026-03-29T22:00:00Z")
    );
    // Oldest first: the job ids (ULIDs) follow the periods.
    let mut ids: Vec<String> = first.iter().chain(&second).cloned().collect();
    let sorted = {
        let mut x = ids.clone();
        x.sort();
        x
    };
    assert_eq!(ids, sorted);
    ids.clear();
    // An edit (another template, another cadence) never re-runs a period.
    let mut edited = spec("Weekly", "weekly", None, "Europe/Berlin");
    edited["name_template"] = json!("{period}-{name}");
    assert!(
        s.store
            .update_schedule(
                "sch_weekly",
                &edited,
                t("2026-04-08T10:00:00Z").timestamp_millis()
            )
            .unwrap()
    );
    assert!(
        schedules::tick(&s, t("2026-04-08T10:00:00Z"))
            .unwrap()
            .is_empty()
    );
    let monthly = spec("Weekly", "monthly", None, "Europe/Berlin");
    assert!(
        s.store
            .update_schedule(
                "sch_weekly",
                &monthly,
                t("2026-04-08T10:00:00Z").timestamp_millis()
            )
            .unwrap()
    );
    // March ended before the last run week did: it is not run.
    assert!(
        schedules::tick(&s, t("2026-04-08T10:00:00Z"))
            .unwrap()
            .is_empty()
    );
    // April is, on 1 May.
    let may = schedules::tick(&s, t("2026-04-30T22:00:00Z")).unwrap();
    assert_eq!(may.len(), 1);
    assert_eq!(runs(&s, "sch_weekly").last().unwrap().0, "2026-04");
    // A paused schedule queues nothing; periods that end meanwhile run when enabled.
    let mut paused = monthly.clone();
    paused["enabled"] = json!(false);
    s.store.update_schedule("sch_weekly", &paused, 0).unwrap();
    assert!(
        schedules::tick(&s, t("2026-06-05T00:00:00Z"))
            .unwrap()
            .is_empty()
    );
    s.store.update_schedule("sch_weekly", &monthly, 0).unwrap();
    assert_eq!(
        schedules::tick(&s, t("2026-06-05T00:00:00Z"))
            .unwrap()
            .len(),
        1,
        "May"
    );
}

fn ingest_months(data: &Path, dir: &Path) {
    // Events on the 10th of August, September and October 2026.
    let mut lines = Vec::new();
    for (m, n) in [(8, 3), (9, 4), (10, 5)] {
        for i in 0..n {
            lines.push(format!(
                r#"{{"id":"s-{m}-{i}","timestamp":"2026-{m:02}-10T10:00:{i:02}Z","decision":"block","severity":"high","policy":"p","gateway_id":"g","consumer_group":"c","input":"t"}}"#
            ));
        }
    }
    let f = dir.join("in.ndjson");
    std::fs::write(&f, lines.join("\n")).unwrap();
    common::evidex(data, &[], &["ingest", f.to_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_runs_form_a_manifest_chain_that_verify_checks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ingest_months(&data, dir.path());
    let compliance = token(&data, "compliance");
    // A monthly schedule created in mid-July (through the library, as if long ago):
    // the server finds July, August, September and October due and runs them.
    {
        let s = service(&data, 60);
        create(
            &s,
            "sch_chain",
            spec("Chain", "monthly", None, "UTC"),
            "2026-07-15T00:00:00Z",
        );
    }
    // The server runs on the wall clock: every month from July to the last one that
    // has ended is due.
    #[allow(
        clippy::disallowed_methods,
        reason = "the server under test reads the wall clock"
    )]
    let today = chrono::Utc::now().date_naive();
    let mut months = Vec::new();
    let mut m = chrono::NaiveDate::from_ymd_opt(2026, 7, 1).unwrap();
    let this_month = chrono::NaiveDate::from_ymd_opt(
        chrono::Datelike::year(&today),
        chrono::Datelike::month(&today),
        1,
    )
    .unwrap();
    while m < this_month {
        months.push(m.format("%Y-%m").to_string());
        m = m.checked_add_months(chrono::Months::new(1)).unwrap();
    }
    let next_run = this_month
        .checked_add_months(chrono::Months::new(1))
        .unwrap()
        .format("%Y-%m-%dT00:00:00")
        .to_string();
    let server = Server::start(&data, 2, &[("EVIDEX_SCHEDULER__TICK_SECS", "1")]);
    let c = Client::new(&server.base);
    let start = Instant::now();
    let sched = loop {
        let v = c.get("/v1/schedules/sch_chain", &compliance).await.json();
        let h = v["history"].as_array().unwrap();
        if h.len() >= months.len() && h.iter().all(|r| r["status"] == "completed") {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(sched["next_runs"].as_array().unwrap().len(), 3, "{sched}");
    assert!(
        sched["next_runs"][0]
            .as_str()
            .unwrap()
            .starts_with(&next_run),
        "{sched}"
    );
    // Each run's artifact, copied out of the state directory.
    let out = dir.path().join("series");
    std::fs::create_dir_all(&out).unwrap();
    let mut by_period = BTreeMap::new();
    for r in sched["history"].as_array().unwrap() {
        let id = r["export_id"].as_str().unwrap();
        let j = c
            .get(&format!("/v1/exports/{id}"), &compliance)
            .await
            .json();
        assert_eq!(j["period"], r["period"]);
        assert_eq!(j["schedule_id"], "sch_chain");
        let adir = data
            .join("_state/artifacts")
            .join(id)
            .join(format!("attempt-{}", j["artifact"]["attempt"]));
        for e in std::fs::read_dir(&adir).unwrap().flatten() {
            std::fs::copy(e.path(), out.join(e.file_name())).unwrap();
        }
        by_period.insert(
            r["period"].as_str().unwrap().to_string(),
            j["artifact"]["file_name"].as_str().unwrap().to_string(),
        );
    }
    assert_eq!(by_period.keys().cloned().collect::<Vec<_>>(), months);
    let ok = common::run(&data, &["verify", "--chain", out.to_str().unwrap()]);
    let text = common::text(&ok);
    assert!(ok.status.success(), "{text}");
    assert!(text.contains("2026-08 → 2026-09"), "{text}");
    // The manifest records the previous run's manifest hash.
    let m: Value = serde_json::from_slice(
        &std::fs::read(out.join(format!("{}.manifest.json", by_period["2026-09"]))).unwrap(),
    )
    .unwrap();
    assert_eq!(m["schedule"]["period"], "2026-09");
    assert_eq!(m["schedule"]["previous_period"], "2026-08");
    assert_eq!(m["total_rows"], 4);
    // A period taken out of the series is named.
    let gone = &by_period["2026-08"];
    for e in std::fs::read_dir(&out).unwrap().flatten() {
        if e.file_name().to_str().unwrap().starts_with(gone.as_str()) {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let bad = common::run(&data, &["verify", "--chain", out.to_str().unwrap()]);
    let text = common::text(&bad);
    assert!(!bad.status.success(), "{text}");
    assert!(text.contains("2026-08 is missing"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_queue_one_job_per_period() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let compliance = token(&data, "compliance");
    let fast = [("EVIDEX_SCHEDULER__TICK_SECS", "1")];
    let a = Server::start(&data, 0, &fast);
    let b = Server::start(&data, 0, &fast);
    let ca = Client::new(&a.base);
    let cb = Client::new(&b.base);
    // Every two seconds, so both processes race for every period.
    let r = ca
        .post(
            "/v1/schedules",
            &compliance,
            &json!({"name": "Race", "kind": "cron", "cron": "*/2 * * * * *", "timezone": "UTC",
                    "export": {"format": "csv"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(9)).await;
    let v = cb
        .get(&format!("/v1/schedules/{id}"), &compliance)
        .await
        .json();
    let periods: Vec<String> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["period"].as_str().unwrap().to_string())
        .collect();
    assert!(periods.len() >= 3, "{v}");
    let jobs = ca.get("/v1/exports?limit=500", &compliance).await.json();
    let mut seen = BTreeMap::new();
    for j in jobs["items"].as_array().unwrap() {
        if j["schedule_id"] == id.as_str() {
            *seen
                .entry(j["period"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    assert!(seen.len() >= periods.len(), "{seen:?} {periods:?}");
    assert!(
        seen.values().all(|n| *n == 1),
        "a period queued twice: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_api_checks_input_and_roles_and_runs_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let compliance = token(&data, "compliance");
    let viewer = token(&data, "viewer");
    let server = Server::start(&data, 0, &[]);
    let c = Client::new(&server.base);
    let good = json!({"name": "SOC2", "kind": "quarterly", "timezone": "Europe/Berlin",
                      "delay_minutes": 60, "export": {"format": "csv", "filters": {"decision": ["block"]}}});
    for (patch, want) in [
        (
            json!({"kind": "daily"}),
            "weekly, monthly, quarterly or cron",
        ),
        (json!({"timezone": "Mars/Olympus"}), "timezone:"),
        (json!({"name_template": "{name}-{quarter}"}), "quarter"),
        (json!({"kind": "cron", "cron": "61 * * * *"}), "cron"),
        (json!({"export": {"format": "xlsx"}}), "export"),
        (
            json!({"export": {"format": "csv", "fitlers": {}}}),
            "unknown field `fitlers`",
        ),
        (
            json!({"export": {"format": "csv", "from": "2026-01-01"}}),
            "export.from",
        ),
        (json!({"colour": "red"}), "colour"),
        (json!({"delay_minutes": -5}), "delay_minutes:"),
        (json!({"kind": "cron", "cron": "61 25 * * *"}), "at most 59"),
    ] {
        let mut body = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = c.post("/v1/schedules", &compliance, &body).await;
        assert_eq!(
            r.status,
            400,
            "{patch}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.message().contains(want), "{patch}: {}", r.message());
        assert!(!r.message().contains('\n'), "one line: {}", r.message());
        assert!(!r.message().contains("_preset_sql"), "{}", r.message());
    }
    assert_eq!(c.post("/v1/schedules", &viewer, &good).await.status, 403);
    let r = c.post("/v1/schedules", &compliance, &good).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let id = v["id"].as_str().unwrap();
    // The server runs on the wall clock: the quarter that ended last, and the next
    // quarter starts (at 01:00 local: 60 minutes' delay), in Berlin time.
    #[allow(
        clippy::disallowed_methods,
        reason = "the server under test reads the wall clock"
    )]
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Berlin)
        .date_naive();
    let (y, q) = (
        chrono::Datelike::year(&today),
        (chrono::Datelike::month(&today) - 1) / 3,
    );
    let last = if q == 0 {
        format!("{}-Q4", y - 1)
    } else {
        format!("{y}-Q{q}")
    };
    let next_start = if q == 3 {
        format!("{}-01-01", y + 1)
    } else {
        format!("{y}-{:02}-01", q * 3 + 4)
    };
    let runs: Vec<&str> = v["next_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(runs.len(), 3, "{v}");
    assert!(
        runs[0].starts_with(&format!("{next_start}T01:00:00+0")),
        "{v}"
    );
    for r in &runs {
        assert!(r.contains("-01T01:00:00+0"), "{v}");
    }
    assert_eq!(
        c.get("/v1/schedules", &viewer).await.json()["schedules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Run now: the latest quarter that ended; a second request is refused, naming the run.
    let r = c
        .post(&format!("/v1/schedules/{id}/run"), &compliance, &json!({}))
        .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let job = r.json();
    assert_eq!(job["period"], last.as_str());
    assert_eq!(job["name"], format!("SOC2-{last}"));
    let r = c
        .post(&format!("/v1/schedules/{id}/run"), &compliance, &json!({}))
        .await;
    assert_eq!(r.status, 409);
    assert!(
        r.message().contains(job["id"].as_str().unwrap()),
        "{}",
        r.message()
    );
    let v = c.get(&format!("/v1/schedules/{id}"), &viewer).await.json();
    assert_eq!(v["history"][0]["period"], last.as_str());
    let r = c
        .call(
            "DELETE",
            &format!("/v1/schedules/{id}"),
            Some(&compliance),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        c.get(&format!("/v1/schedules/{id}"), &viewer).await.status,
        404
    );
    let audit =
        String::from_utf8_lossy(&c.get("/v1/audit-log", &compliance).await.body).to_string();
    for a in [
        "schedule.created",
        "schedule.run_requested",
        "schedule.deleted",
    ] {
        assert!(audit.contains(a), "{a}");
    }
}

#[test]
fn run_now_fills_the_gap_since_the_last_run_and_the_chain_survives_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(&dir.path().join("data"), 60);
    create(
        &s,
        "sch_gap",
        spec("Gap", "weekly", None, "UTC"),
        "2026-03-02T00:00:00Z",
    );
    assert_eq!(
        schedules::tick(&s, t("2026-03-09T00:00:00Z"))
            .unwrap()
            .len(),
        1
    );
    let row = s.store.schedule("sch_gap").unwrap().unwrap();
    // Weeks 11 to 14 ended since; "run now" queues all of them, oldest first.
    let schedules::RunNow::Queued(ids) =
        schedules::run_now(&s, &row, t("2026-04-08T00:00:00Z")).unwrap()
    else {
        panic!("nothing queued");
    };
    assert_eq!(ids.len(), 4);
    let labels: Vec<String> = runs(&s, "sch_gap").into_iter().map(|r| r.0).collect();
    assert_eq!(
        labels,
        ["2026-W10", "2026-W11", "2026-W12", "2026-W13", "2026-W14"]
    );
    assert_eq!(
        s.store
            .job(ids.last().unwrap())
            .unwrap()
            .unwrap()
            .period
            .as_deref(),
        Some("2026-W14")
    );
    match schedules::run_now(&s, &row, t("2026-04-08T00:00:00Z")).unwrap() {
        schedules::RunNow::AlreadyRan { period, export_id } => {
            assert_eq!(period, "2026-W14");
            assert_eq!(&export_id, ids.last().unwrap());
        }
        other => panic!("{other:?}"),
    }
    // A completed run whose artifact later expired still anchors the chain.
    let first = s
        .store
        .run_of_period("sch_gap", "2026-W10")
        .unwrap()
        .unwrap();
    let claimed = s.store.claim("w", 0, 60_000).unwrap().unwrap();
    assert_eq!(claimed.id, first, "the oldest period runs first");
    assert!(
        s.store.claim("w2", 0, 60_000).unwrap().is_none(),
        "a later run of the schedule waits for the earlier one"
    );
    s.store
        .complete(
            &first,
            "w",
            claimed.attempts,
            1,
            0,
            &json!({"file_name": "a.csv", "manifest_sha256": "ab".repeat(32)}),
            false,
        )
        .unwrap();
    s.store.mark_expired(&first).unwrap();
    let (schedule, previous) = schedules::chain_of(&s, &ids[0]).unwrap();
    assert_eq!(previous.as_deref(), Some("ab".repeat(32).as_str()));
    let schedule = schedule.unwrap();
    assert_eq!(schedule.period, "2026-W11");
    assert_eq!(schedule.previous_period.as_deref(), Some("2026-W10"));
}
