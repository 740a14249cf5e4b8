//! Schedules and their runs: one row per (schedule, period), inserted in the same
//! transaction that queues the period's export, so each period runs exactly once
//! whatever number of processes share the database.

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use super::db::{Row, args};
use super::{Principal, Store};

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleRow {
    /// `sch_` + 16 hex digits.
    pub id: String,
    /// The schedule as given (see `schedules::ScheduleSpec`).
    pub spec: Value,
    /// Who created it.
    pub created_by: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
    /// Periods ending at or before this instant (ms) are never run: the creation
    /// time, moved forward past every run period when the schedule is edited.
    pub run_after: i64,
}

/// One run of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleRun {
    /// The period's label (`2026-Q1`).
    pub period: String,
    /// Start of the period (ms, inclusive).
    pub period_start: i64,
    /// End of the period (ms, exclusive).
    pub period_end: i64,
    /// The export.
    pub job_id: String,
    /// The export's status.
    pub status: String,
    /// The export's manifest hash, once completed.
    pub manifest_sha256: Option<String>,
}

/// A run to queue: the period and the export job.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// The schedule.
    pub schedule_id: &'a str,
    /// The period label.
    pub period: &'a str,
    /// Start (ms).
    pub period_start: i64,
    /// End (ms).
    pub period_end: i64,
    /// New job id.
    pub job_id: &'a str,
    /// Job name.
    pub name: &'a str,
    /// Job description.
    pub description: &'a str,
    /// Job parameters.
    pub params: &'a Value,
    /// Who the job is made for (the schedule's creator).
    pub created_by: &'a str,
}

fn schedule_row(r: &Row) -> Result<ScheduleRow> {
    let spec: String = r.get(1)?;
    Ok(ScheduleRow {
        id: r.get(0)?,
        spec: serde_json::from_str(&spec).unwrap_or(Value::Null),
        created_by: r.get(2)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
        run_after: r.get(5)?,
    })
}

const COLUMNS: &str = "id, spec, created_by, created_at, updated_at, run_after";

impl Store {
    /// Stores a new schedule.
    pub fn insert_schedule(
        &self,
        id: &str,
        spec: &Value,
        by: &Principal,
        now_ms: i64,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO schedules(id, spec, created_by, created_at, updated_at, run_after)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?4)",
                args![id, spec.to_string(), by.actor(), now_ms],
            )
        })?;
        Ok(())
    }

    /// Replaces a schedule's spec; periods ending before its last run's end are never
    /// run again (whatever the new cadence). `false` if there is no such schedule.
    pub fn update_schedule(&self, id: &str, spec: &Value, now_ms: i64) -> Result<bool> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE schedules SET spec = ?2, updated_at = ?3,
                    run_after = CASE WHEN run_after > coalesce(
                        (SELECT max(period_end) FROM schedule_runs WHERE schedule_id = ?1), 0)
                      THEN run_after
                      ELSE coalesce(
                        (SELECT max(period_end) FROM schedule_runs WHERE schedule_id = ?1), 0) END
                 WHERE id = ?1 AND deleted_at IS NULL",
                args![id, spec.to_string(), now_ms],
            )
        })?;
        Ok(n == 1)
    }

    /// Deletes a schedule (its runs and exports stay). `false` if there was none.
    pub fn delete_schedule(&self, id: &str, now_ms: i64) -> Result<bool> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE schedules SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
                args![id, now_ms],
            )
        })?;
        Ok(n == 1)
    }

    /// Every live schedule, oldest first.
    pub fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        self.with(|c| {
            c.query(
                &format!(
                    "SELECT {COLUMNS} FROM schedules WHERE deleted_at IS NULL ORDER BY created_at, id"
                ),
                &[],
            )?
            .iter()
            .map(schedule_row)
            .collect()
        })
    }

    /// One live schedule.
    pub fn schedule(&self, id: &str) -> Result<Option<ScheduleRow>> {
        self.with(|c| {
            c.query_opt(
                &format!("SELECT {COLUMNS} FROM schedules WHERE id = ?1 AND deleted_at IS NULL"),
                args![id],
            )?
            .as_ref()
            .map(schedule_row)
            .transpose()
        })
    }

    /// The end (ms) of the latest period a schedule has run.
    pub fn last_period_end(&self, schedule_id: &str) -> Result<Option<i64>> {
        self.with(|c| {
            c.query_one(
                "SELECT max(period_end) FROM schedule_runs WHERE schedule_id = ?1",
                args![schedule_id],
            )?
            .get(0)
        })
    }

    /// A schedule's runs, newest period first, with their exports' status.
    pub fn schedule_runs(&self, schedule_id: &str, limit: i64) -> Result<Vec<ScheduleRun>> {
        self.with(|c| {
            let rows = c.query(
                "SELECT r.period, r.period_start, r.period_end, r.job_id, j.status, j.artifact
                 FROM schedule_runs r JOIN jobs j ON j.id = r.job_id
                 WHERE r.schedule_id = ?1 ORDER BY r.period_start DESC LIMIT ?2",
                args![schedule_id, limit],
            )?;
            rows.iter()
                .map(|r| {
                    let artifact: Option<String> = r.get(5)?;
                    Ok(ScheduleRun {
                        period: r.get(0)?,
                        period_start: r.get(1)?,
                        period_end: r.get(2)?,
                        job_id: r.get(3)?,
                        status: r.get(4)?,
                        manifest_sha256: artifact
                            .and_then(|a| serde_json::from_str::<Value>(&a).ok())
                            .and_then(|a| a["manifest_sha256"].as_str().map(str::to_string)),
                    })
                })
                .collect()
        })
    }

    /// The run of `job_id` and the completed run of the same schedule just before
    /// it, if any: `(run, previous)`.
    pub fn run_and_previous(
        &self,
        job_id: &str,
    ) -> Result<Option<(ScheduleRun, Option<ScheduleRun>)>> {
        let run: Option<(String, i64)> = self.with(|c| {
            c.query_opt(
                "SELECT schedule_id, period_start FROM schedule_runs WHERE job_id = ?1",
                args![job_id],
            )?
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .transpose()
        })?;
        let Some((schedule_id, start)) = run else {
            return Ok(None);
        };
        let runs = self.schedule_runs(&schedule_id, i64::MAX)?;
        let this = runs.iter().find(|r| r.job_id == job_id).cloned();
        // Expired runs count: their artifact is gone but its manifest hash is kept.
        let previous = runs.into_iter().find(|r| {
            r.period_start < start
                && matches!(r.status.as_str(), "completed" | "expired")
                && r.manifest_sha256.is_some()
        });
        Ok(this.map(|t| (t, previous)))
    }

    /// Queues a period's export: inserts the (schedule, period) row and the job in
    /// one transaction. `None` when the period already has a run (any process).
    pub fn queue_scheduled_run(&self, run: &NewRun<'_>, now_ms: i64) -> Result<Option<String>> {
        self.tx(|c| {
            let n = c.execute(
                "INSERT INTO schedule_runs(schedule_id, period, period_start, period_end,
                                           job_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                args![
                    run.schedule_id,
                    run.period,
                    run.period_start,
                    run.period_end,
                    run.job_id,
                    now_ms
                ],
            )?;
            if n == 0 {
                return Ok(None);
            }
            // Crash tests: the period row is written, its job not yet (both roll back).
            fail::fail_point!("schedule.after_period");
            c.execute(
                "INSERT INTO jobs(id, name, description, params, status, created_by, created_at,
                                  schedule_id)
                 VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7)",
                args![
                    run.job_id,
                    run.name,
                    run.description,
                    run.params.to_string(),
                    run.created_by,
                    now_ms,
                    run.schedule_id
                ],
            )?;
            Store::announce_job(c)?;
            Ok(Some(run.job_id.to_string()))
        })
        .inspect(|queued| {
            if queued.is_some() {
                self.jobs.bump();
            }
        })
    }

    /// The job that ran `period` of a schedule.
    pub fn run_of_period(&self, schedule_id: &str, period: &str) -> Result<Option<String>> {
        self.with(|c| {
            c.query_opt(
                "SELECT job_id FROM schedule_runs WHERE schedule_id = ?1 AND period = ?2",
                args![schedule_id, period],
            )?
            .map(|r| r.get(0))
            .transpose()
        })
    }
}
