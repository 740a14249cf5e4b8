//! Schedules: an export made for every period of a cadence (`weekly`, `monthly`,
//! `quarterly`, or a `cron` expression) in an IANA timezone, named from a template
//! (`{name}-{period}` gives `SOC2-2026-Q1`), optionally delivered, after an optional
//! delay for late data.
//!
//! The scheduler ([`tick`]) runs on every `serve` process every
//! `scheduler.tick_secs`: for each schedule it queues every period that is due and
//! has not run (periods missed while everything was down included, oldest first, at
//! most `scheduler.catch_up_cap` per tick). Each (schedule, period) row is inserted in
//! the transaction that queues its export, under a unique key, so a period runs once
//! however many processes share the database. A scheduled export waits for the same
//! schedule's earlier runs, and its manifest records the SHA-256 of the previous
//! run's manifest (the manifest chain, `evidex verify --chain`).

pub mod period;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use evidex_engine::export;
use evidex_engine::integrity::ManifestSchedule;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::service::{Catalog, Service, export_from_params};
use crate::store::{NewRun, ScheduleRow};
use period::{Cadence, Period};

/// A schedule as created and edited through the API (`POST /v1/schedules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ScheduleRequest)]
pub struct ScheduleSpec {
    /// What `{name}` in the template stands for (`SOC2`).
    pub name: String,
    /// `weekly`, `monthly`, `quarterly` or `cron`.
    pub kind: String,
    /// The cron expression for `kind: cron` (5 fields, or 6/7 with seconds/year),
    /// in local wall-clock time of `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// IANA timezone whose calendar cuts the periods (`Europe/Berlin`).
    pub timezone: String,
    /// Export name template: `{name}` and `{period}`.
    #[serde(default = "default_template")]
    pub name_template: String,
    /// Minutes to wait after a period ends before exporting it (late data).
    #[serde(default)]
    pub delay_minutes: u32,
    /// Deliver each run to the bucket (default: the delivery settings' `enabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver: Option<bool>,
    /// Paused schedules queue nothing (periods that end meanwhile are run when it is
    /// enabled again, like an outage).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The export's parameters, as `POST /v1/exports` takes them, without `name`,
    /// `from`, `to` and `timezone` (the schedule sets those): `format`, `filters`,
    /// `include`, `preset` or `sql`, `include_payloads`, ...
    #[serde(default)]
    #[schema(value_type = Object)]
    pub export: Map<String, Value>,
}

fn default_template() -> String {
    "{name}-{period}".to_string()
}

fn yes() -> bool {
    true
}

impl ScheduleSpec {
    /// The cadence and timezone; errors name the field.
    pub fn cadence(&self) -> std::result::Result<(Cadence, Tz), String> {
        let cadence =
            Cadence::parse(&self.kind, self.cron.as_deref()).map_err(|e| e.to_string())?;
        let tz: Tz = self
            .timezone
            .parse()
            .map_err(|_| format!("timezone: '{}' is not an IANA timezone", self.timezone))?;
        Ok((cadence, tz))
    }

    /// The delay after a period's end.
    pub fn delay(&self) -> chrono::Duration {
        chrono::Duration::minutes(i64::from(self.delay_minutes))
    }

    /// The export parameters of one period's run.
    pub fn params_for(&self, period: &Period) -> std::result::Result<Value, String> {
        let name = period::render_name(&self.name_template, &self.name, period)
            .map_err(|e| format!("name_template: {e}"))?;
        let mut p = self.export.clone();
        p.insert("name".into(), json!(name));
        p.insert("from".into(), json!(rfc3339(period.start)));
        p.insert("to".into(), json!(rfc3339(period.end)));
        p.insert("timezone".into(), json!(self.timezone));
        if !self.description.is_empty() && !p.contains_key("description") {
            p.insert("description".into(), json!(self.description));
        }
        if let Some(d) = self.deliver {
            p.insert("deliver".into(), json!(d));
        }
        Ok(Value::Object(p))
    }

    /// Checks the whole schedule as a run would use it: the cadence, the timezone,
    /// the template, and the export parameters (with the latest period), exactly as
    /// `POST /v1/exports` checks them. Errors name the field.
    pub fn validate(
        &self,
        service: &Service,
        catalog: &Catalog,
        now: DateTime<Utc>,
    ) -> std::result::Result<(), String> {
        if self.name.trim().is_empty() || self.name.len() > 120 {
            return Err("name: required, at most 120 bytes".to_string());
        }
        if self.delay_minutes > 60 * 24 * 31 {
            return Err("delay_minutes: at most 44640 (31 days)".to_string());
        }
        for k in ["name", "from", "to", "timezone"] {
            if self.export.contains_key(k) {
                return Err(format!(
                    "export.{k}: set by the schedule for each run (the name from name_template, from/to from the period, timezone from the schedule); leave it out"
                ));
            }
        }
        let (cadence, tz) = self.cadence()?;
        let sample = period::period_ending_at_or_before(&cadence, tz, now)
            .or_else(|| {
                period::periods_due(
                    &cadence,
                    tz,
                    chrono::Duration::zero(),
                    now,
                    DateTime::<Utc>::MAX_UTC,
                    1,
                )
                .into_iter()
                .next()
            })
            .ok_or_else(|| "cron: the expression never fires".to_string())?;
        let params = self.params_for(&sample)?;
        let checked = serde_json::to_vec(&params).map_err(|e| e.to_string())?;
        crate::service::parse_export(&checked, &service.config, catalog).map_err(|e| {
            let m = e.to_string();
            match m.strip_prefix("body: ") {
                Some(rest) => format!("export: {rest}"),
                None => format!("export.{m}"),
            }
        })?;
        Ok(())
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn ms(t: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The stored spec of a schedule row.
pub fn spec_of(row: &ScheduleRow) -> std::result::Result<ScheduleSpec, String> {
    serde_json::from_value(row.spec.clone()).map_err(|e| format!("stored schedule {}: {e}", row.id))
}

/// Queues the run of `period` for the schedule `row`; `None` if that period already
/// ran (here or in another process).
pub fn queue_period(
    service: &Service,
    row: &ScheduleRow,
    spec: &ScheduleSpec,
    period: &Period,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    let raw = spec.params_for(period).map_err(anyhow::Error::msg)?;
    // Normalised like an API request (preset SQL and redaction pinned); parameters
    // that no longer validate (a deleted preset) are queued as they are, and the run
    // fails with the reason, visible in the schedule's history.
    let (params, name, description) = match export_from_params(&raw, &service.config, catalog) {
        Ok(v) => (v.params, v.request.name, v.description),
        Err(_) => (
            raw.clone(),
            raw["name"].as_str().unwrap_or_default().to_string(),
            spec.description.clone(),
        ),
    };
    let job_id = export::new_export_id(now);
    let queued = service.store.queue_scheduled_run(
        &NewRun {
            schedule_id: &row.id,
            period: &period.label,
            period_start: period.start.timestamp_millis(),
            period_end: period.end.timestamp_millis(),
            job_id: &job_id,
            name: &name,
            description: &description,
            params: &params,
            created_by: &format!("schedule:{} ({})", row.id, row.created_by),
        },
        now.timestamp_millis(),
    )?;
    if let Some(id) = &queued {
        service.store.audit(
            now.timestamp_millis(),
            "evidex",
            "schedule.run_queued",
            Some(id),
            Some(&json!({"schedule_id": row.id, "period": period.label})),
        )?;
        tracing::info!(schedule = %row.id, period = %period.label, export = %id, "scheduled run queued");
    }
    Ok(queued)
}

/// Queues every due period of every enabled schedule as of `now` (the injected
/// clock); returns the export ids queued by this call. A schedule that cannot be
/// run (a stored spec that no longer parses, a template that fails for a period) is
/// logged and skipped; the others still run.
pub fn tick(service: &Service, now: DateTime<Utc>) -> Result<Vec<String>> {
    let catalog = Catalog::load(&service.config, &service.store)?;
    let mut queued = Vec::new();
    for row in service.store.schedules()? {
        match tick_one(service, &row, &catalog, now) {
            Ok(ids) => queued.extend(ids),
            Err(e) => tracing::warn!(schedule = %row.id, "scheduler: {e:#}"),
        }
    }
    Ok(queued)
}

fn tick_one(
    service: &Service,
    row: &ScheduleRow,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    let spec = spec_of(row).map_err(anyhow::Error::msg)?;
    if !spec.enabled {
        return Ok(Vec::new());
    }
    let (cadence, tz) = spec.cadence().map_err(anyhow::Error::msg)?;
    let after = row
        .run_after
        .max(service.store.last_period_end(&row.id)?.unwrap_or(i64::MIN));
    let due = period::periods_due(
        &cadence,
        tz,
        spec.delay(),
        ms(after),
        now,
        service.config.scheduler.catch_up_cap,
    );
    queue_periods(service, row, &spec, &due, catalog, now)
}

/// Queues `periods` (oldest first) a millisecond apart, so the runs' export ids
/// (ULIDs) sort by period; returns the ids of those not already run.
fn queue_periods(
    service: &Service,
    row: &ScheduleRow,
    spec: &ScheduleSpec,
    periods: &[Period],
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    let mut queued = Vec::new();
    for (i, p) in periods.iter().enumerate() {
        let at = now + chrono::Duration::milliseconds(i as i64);
        if let Some(id) = queue_period(service, row, spec, p, catalog, at)? {
            queued.push(id);
        }
    }
    Ok(queued)
}

/// What "run now" did.
#[derive(Debug)]
pub enum RunNow {
    /// Queued these exports, oldest period first (the last is the latest period).
    Queued(Vec<String>),
    /// The latest ended period already ran, as this export.
    AlreadyRan {
        /// Its label.
        period: String,
        /// The export that ran it.
        export_id: String,
    },
    /// No period has ended yet.
    NoPeriod,
}

/// "Run now": the latest period that has ended, ignoring the delay, and every
/// earlier period not yet run since the last run (so the series has no gap and the
/// chain stays in order); a schedule that never ran gets its latest period only.
pub fn run_now(service: &Service, row: &ScheduleRow, now: DateTime<Utc>) -> Result<RunNow> {
    let spec = spec_of(row).map_err(anyhow::Error::msg)?;
    let (cadence, tz) = spec.cadence().map_err(anyhow::Error::msg)?;
    let Some(latest) = period::period_ending_at_or_before(&cadence, tz, now) else {
        return Ok(RunNow::NoPeriod);
    };
    let periods = match service.store.last_period_end(&row.id)? {
        None => vec![latest.clone()],
        Some(end) => period::periods_due(
            &cadence,
            tz,
            chrono::Duration::zero(),
            ms(end.max(row.run_after)),
            now,
            service.config.scheduler.catch_up_cap,
        ),
    };
    let catalog = Catalog::load(&service.config, &service.store)?;
    let queued = queue_periods(service, row, &spec, &periods, &catalog, now)?;
    if queued.is_empty() {
        return Ok(RunNow::AlreadyRan {
            export_id: service
                .store
                .run_of_period(&row.id, &latest.label)?
                .unwrap_or_default(),
            period: latest.label,
        });
    }
    Ok(RunNow::Queued(queued))
}

/// One sentence saying when a schedule runs and what each run exports.
pub fn explain(spec: &ScheduleSpec) -> String {
    let when = match spec.kind.as_str() {
        "weekly" => "Every Monday at 00:00, exports the previous Monday–Sunday week".to_string(),
        "monthly" => {
            "On the 1st of every month at 00:00, exports the previous calendar month".to_string()
        }
        "quarterly" => {
            "On 1 January, April, July and October at 00:00, exports the previous quarter"
                .to_string()
        }
        _ => format!(
            "At each local time of the cron expression {} (a time skipped by a clock change runs when the gap ends, a repeated one once), exports the time since the previous run",
            spec.cron.as_deref().unwrap_or("")
        ),
    };
    let delay = match spec.delay_minutes {
        0 => String::new(),
        m => format!(", {m} minutes later for late data"),
    };
    format!(
        "{when}{delay}, in {}; runs are named {}.",
        spec.timezone, spec.name_template
    )
}

/// Runs [`tick`] every `scheduler.tick_secs` until the process ends.
pub async fn scheduler(service: Arc<Service>) {
    loop {
        let now = service.clock.now();
        if let Err(e) = tick(&service, now) {
            tracing::warn!("scheduler: {e:#}");
        }
        tokio::time::sleep(Duration::from_secs(service.config.scheduler.tick_secs)).await;
    }
}

/// A schedule as the API shows it: its spec (the fields of [`ScheduleSpec`]), id,
/// next three run times in its timezone, and its history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Schedule)]
pub struct ScheduleView {
    /// `sch_` + 16 hex digits.
    pub id: String,
    /// What `{name}` in the template stands for.
    pub name: String,
    /// `weekly`, `monthly`, `quarterly` or `cron`.
    pub kind: String,
    /// The cron expression, for `kind: cron`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// IANA timezone whose calendar cuts the periods.
    pub timezone: String,
    /// Export name template: `{name}` and `{period}`.
    pub name_template: String,
    /// Minutes waited after a period ends before exporting it.
    pub delay_minutes: u32,
    /// Deliver each run to the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver: Option<bool>,
    /// Paused schedules queue nothing.
    pub enabled: bool,
    /// Free text.
    pub description: String,
    /// The export's parameters (as `POST /v1/exports` takes them).
    #[schema(value_type = Object)]
    pub export: Map<String, Value>,
    /// Who created it.
    pub created_by: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
    /// The next three runs, RFC 3339 in the schedule's timezone (none while paused).
    pub next_runs: Vec<String>,
    /// The latest 100 periods queued, newest first.
    pub history: Vec<ScheduleRunView>,
}

/// One period a schedule queued.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ScheduleRun)]
pub struct ScheduleRunView {
    /// The period's label (`2026-Q1`, `2026-W09`, ...).
    pub period: String,
    /// The export that runs it.
    pub export_id: String,
    /// That export's status.
    pub status: String,
    /// The period's start, RFC 3339, UTC.
    pub period_start: String,
    /// The period's end (exclusive), RFC 3339, UTC.
    pub period_end: String,
}

/// The API view of a schedule as JSON (the CLI and the console read it so).
pub fn view(service: &Service, row: &ScheduleRow, now: DateTime<Utc>) -> Result<Value> {
    Ok(serde_json::to_value(typed_view(service, row, now)?)?)
}

/// The API view of a schedule: its spec, id, next three run times in its timezone,
/// and its history of (period, export, status).
///
/// # Errors
/// A stored spec that no longer parses, or a metadata store error.
pub fn typed_view(
    service: &Service,
    row: &ScheduleRow,
    now: DateTime<Utc>,
) -> Result<ScheduleView> {
    let spec = spec_of(row).map_err(anyhow::Error::msg)?;
    let next: Vec<String> = match spec.cadence() {
        Ok((cadence, tz)) if spec.enabled => {
            let from = now.max(ms(row.run_after));
            period::next_runs(&cadence, tz, spec.delay(), from, 3)
                .iter()
                .map(|t| t.to_rfc3339())
                .collect()
        }
        _ => Vec::new(),
    };
    let history = service
        .store
        .schedule_runs(&row.id, 100)?
        .into_iter()
        .map(|r| ScheduleRunView {
            period: r.period,
            export_id: r.job_id,
            status: r.status,
            period_start: crate::store::rfc3339(r.period_start),
            period_end: crate::store::rfc3339(r.period_end),
        })
        .collect();
    Ok(ScheduleView {
        id: row.id.clone(),
        name: spec.name,
        kind: spec.kind,
        cron: spec.cron,
        timezone: spec.timezone,
        name_template: spec.name_template,
        delay_minutes: spec.delay_minutes,
        deliver: spec.deliver,
        enabled: spec.enabled,
        description: spec.description,
        export: spec.export,
        created_by: row.created_by.clone(),
        created_at: crate::store::rfc3339(row.created_at),
        updated_at: crate::store::rfc3339(row.updated_at),
        next_runs: next,
        history,
    })
}

/// The manifest chain entry of a scheduled export, and the hash of the schedule's
/// previous completed run's manifest: `(None, None)` for an unscheduled export.
pub fn chain_of(
    service: &Service,
    job_id: &str,
) -> Result<(Option<ManifestSchedule>, Option<String>)> {
    let Some((run, previous)) = service.store.run_and_previous(job_id)? else {
        return Ok((None, None));
    };
    let Some(job) = service.store.job(job_id)? else {
        return Ok((None, None));
    };
    let schedule_id = job.schedule_id.clone().unwrap_or_default();
    let schedule_name = service
        .store
        .schedule(&schedule_id)?
        .and_then(|r| spec_of(&r).ok())
        .map(|s| s.name)
        .unwrap_or_default();
    let entry = ManifestSchedule::new(
        schedule_id,
        schedule_name,
        run.period.clone(),
        ms(run.period_start),
        ms(run.period_end),
        previous.as_ref().map(|p| p.period.clone()),
    );
    Ok((Some(entry), previous.and_then(|p| p.manifest_sha256)))
}
