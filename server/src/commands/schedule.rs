//! `evidex schedule list|show|create|update|delete|run`: the schedules of this
//! installation, as `/v1/schedules` manages them (same JSON, same checks, same
//! audit entries). Schedules run in `evidex serve`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use evidex_engine::clock::Clock;
use evidex_engine::lake::Lake;
use evidex_server::config::Config;
use evidex_server::schedules::{self, ScheduleSpec};
use evidex_server::service::Catalog;

/// `evidex schedule ...`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Every schedule with its next run (`show` gives three and the history).
    List,
    /// One schedule with its next runs and history.
    Show {
        /// `sch_...`.
        id: String,
    },
    /// Create a schedule from a JSON file (the body of `POST /v1/schedules`).
    Create {
        /// The JSON file (`-` for standard input).
        file: String,
    },
    /// Replace a schedule from a JSON file; periods it already ran are never run again.
    Update {
        /// `sch_...`.
        id: String,
        /// The JSON file (`-` for standard input).
        file: String,
    },
    /// Delete a schedule (its exports stay).
    Delete {
        /// `sch_...`.
        id: String,
    },
    /// Queue the latest period that has ended, now.
    Run {
        /// `sch_...`.
        id: String,
    },
}

fn read_spec(file: &str) -> Result<ScheduleSpec> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("{file}: not a schedule"))
}

/// Runs `evidex schedule ...`.
pub(super) async fn run_schedule(
    lake: Lake,
    config: Config,
    clock: Arc<dyn Clock>,
    cmd: &ScheduleCommand,
) -> Result<ExitCode> {
    let service = evidex_server::build_service(config, lake, clock, false)?;
    let now = service.clock.now();
    let show = |id: &str| -> Result<()> {
        let row = service
            .store
            .schedule(id)?
            .with_context(|| format!("no schedule {id}"))?;
        println!(
            "{}",
            serde_json::to_string_pretty(&schedules::view(&service, &row, now)?)?
        );
        Ok(())
    };
    let check = |spec: &ScheduleSpec| -> Result<serde_json::Value> {
        let catalog = Catalog::load(&service.config, &service.store)?;
        if let Err(e) = spec.validate(&service, &catalog, now) {
            bail!("{e}");
        }
        Ok(serde_json::to_value(spec)?)
    };
    match cmd {
        ScheduleCommand::List => {
            for row in service.store.schedules()? {
                let v = schedules::view(&service, &row, now)?;
                println!(
                    "{}  {:<24} {:<10} {:<20} next: {}",
                    row.id,
                    v["name"].as_str().unwrap_or(""),
                    v["kind"].as_str().unwrap_or(""),
                    v["timezone"].as_str().unwrap_or(""),
                    v["next_runs"][0].as_str().unwrap_or("-")
                );
            }
        }
        ScheduleCommand::Show { id } => show(id)?,
        ScheduleCommand::Create { file } => {
            let value = check(&read_spec(file)?)?;
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).expect("the OS provides randomness");
            let id = format!("sch_{}", hex::encode(b));
            let cli = evidex_server::store::Principal {
                token_id: "cli".into(),
                name: "cli".into(),
                role: evidex_server::store::Role::Admin,
            };
            service
                .store
                .insert_schedule(&id, &value, &cli, now.timestamp_millis())?;
            service.store.audit(
                now.timestamp_millis(),
                "cli",
                "schedule.created",
                Some(&id),
                Some(&value),
            )?;
            show(&id)?;
        }
        ScheduleCommand::Update { id, file } => {
            let value = check(&read_spec(file)?)?;
            if !service
                .store
                .update_schedule(id, &value, now.timestamp_millis())?
            {
                bail!("no schedule {id}");
            }
            service.store.audit(
                now.timestamp_millis(),
                "cli",
                "schedule.updated",
                Some(id),
                Some(&value),
            )?;
            show(id)?;
        }
        ScheduleCommand::Delete { id } => {
            if !service.store.delete_schedule(id, now.timestamp_millis())? {
                bail!("no schedule {id}");
            }
            service.store.audit(
                now.timestamp_millis(),
                "cli",
                "schedule.deleted",
                Some(id),
                None,
            )?;
            eprintln!("deleted {id}");
        }
        ScheduleCommand::Run { id } => {
            let row = service
                .store
                .schedule(id)?
                .with_context(|| format!("no schedule {id}"))?;
            match schedules::run_now(&service, &row, now)? {
                schedules::RunNow::Queued(ids) => {
                    for id in ids {
                        println!("{id}\tqueued (evidex serve runs it)");
                    }
                }
                schedules::RunNow::AlreadyRan { period, export_id } => {
                    bail!("period {period} already ran as export {export_id}")
                }
                schedules::RunNow::NoPeriod => bail!("no period of schedule {id} has ended yet"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
