//! The report's numbers: DataFusion aggregations over a scope's scoped, redacted
//! views, gathered into the JSON document the template reads as `data.json`.

use std::sync::Arc;

use chrono::TimeZone;
use deltalake::arrow::array::{Array, Float64Array};
use deltalake::arrow::datatypes::{DataType, SchemaRef};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::dataframe::DataFrame;
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::prelude::SessionContext;
use serde_json::Value;

use crate::error::{EngineError, Result};

/// Rows of a small query result as JSON objects.
async fn rows(df: DataFrame) -> Result<Vec<Value>> {
    json_rows(&df.collect().await?)
}

fn json_rows(batches: &[RecordBatch]) -> Result<Vec<Value>> {
    let mut w = deltalake::arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    let bytes = w.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| EngineError::Io(std::io::Error::other(e)))
}

/// A session holding `batches` as table `name`, for re-aggregating a small result.
fn memory_session(
    name: &str,
    batches: Vec<RecordBatch>,
    schema: SchemaRef,
) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    let table = MemTable::try_new(schema, vec![batches])?;
    ctx.register_table(name, Arc::new(table))?;
    Ok(ctx)
}

async fn sql_rows(ctx: &SessionContext, sql: &str) -> Result<Vec<Value>> {
    rows(ctx.sql(sql).await?).await
}

/// Decisions shown in the summary, in order.
const DECISIONS: [(&str, &str); 5] = [
    ("allow", "Allowed"),
    ("block", "Blocked"),
    ("redact", "Redacted"),
    ("escalate", "Escalated"),
    ("flag", "Flagged"),
];

/// Counts per decision from rows with `decision` and `n`.
fn decision_counts(rows: &[Value]) -> serde_json::Map<String, Value> {
    let mut counts = serde_json::Map::new();
    for row in rows {
        if let (Some(d), Some(n)) = (row["decision"].as_str(), row["n"].as_u64()) {
            counts.insert(d.to_string(), Value::from(n));
        }
    }
    counts
}

/// The report's numbers for `q`'s scope, each from a DataFusion aggregation over the
/// same scoped, redacted views a CSV export of the scope reads. One aggregation by
/// day, decision, policy and severity (its size bounded by those few values, not by
/// the events) feeds the summary, breakdown, daily chart and sample picks, which
/// re-aggregate it in memory; consumer groups get their own pass. `previous` is the same scope over the
/// preceding period of equal length; the appendix samples up to
/// `samples_per_decision` events of each decision.
pub async fn collect(
    q: &crate::views::ScopedQueries,
    previous: &crate::views::ScopedQueries,
    samples_per_decision: usize,
) -> Result<Value> {
    let fine = q
        .query(
            "SELECT local_date(timestamp) AS day, decision, policy, severity, \
             count(*) AS events, min(id) AS first_id FROM events \
             GROUP BY local_date(timestamp), decision, policy, severity",
            false,
        )
        .await?;
    let schema: SchemaRef = Arc::new(fine.schema().as_arrow().clone());
    let fine = memory_session("fine", fine.collect().await?, schema)?;
    let now = decision_counts(
        &sql_rows(
            &fine,
            "SELECT decision, sum(events) AS n FROM fine GROUP BY decision",
        )
        .await?,
    );
    let before = decision_counts(
        &rows(
            previous
                .query(
                    "SELECT decision, count(*) AS n FROM events GROUP BY decision",
                    false,
                )
                .await?,
        )
        .await?,
    );
    let total: u64 = now.values().filter_map(Value::as_u64).sum();
    let prev_total: u64 = before.values().filter_map(Value::as_u64).sum();
    let summary: Vec<Value> = DECISIONS
        .iter()
        .map(|(key, label)| {
            let n = now.get(*key).and_then(Value::as_u64).unwrap_or(0);
            let p = before.get(*key).and_then(Value::as_u64).unwrap_or(0);
            let rate = if total == 0 {
                0.0
            } else {
                100.0 * n as f64 / total as f64
            };
            let change = if p == 0 {
                Value::Null
            } else {
                Value::from(((n as f64 - p as f64) / p as f64 * 1000.0).round() / 10.0)
            };
            serde_json::json!({"decision": key, "label": label, "count": n,
                               "rate": format!("{rate:.2}%"), "previous": p, "change_pct": change})
        })
        .collect();
    let breakdown = sql_rows(
        &fine,
        "SELECT policy, decision, severity, sum(events) AS events FROM fine \
         WHERE decision <> 'allow' GROUP BY policy, decision, severity \
         ORDER BY events DESC, policy, decision, severity",
    )
    .await?;
    let daily = sql_rows(
        &fine,
        "SELECT day, decision, sum(events) AS events FROM fine \
         GROUP BY day, decision ORDER BY day, decision",
    )
    .await?;
    // Its own pass: consumer groups can be many, and crossing them with the days,
    // policies and severities above would multiply the groups held in memory.
    let top_groups = rows(
        q.definition(
            "SELECT consumer_group, count(*) AS violations FROM events WHERE decision <> 'allow' \
             GROUP BY consumer_group ORDER BY violations DESC, consumer_group LIMIT 10",
        )
        .await?,
    )
    .await?;
    let escalations = escalation_stats(q).await?;
    let config = rows(
        q.definition(
            "SELECT config_id, version, changed_at, changed_by, summary FROM config_versions \
             ORDER BY changed_at, config_id, version",
        )
        .await?,
    )
    .await?;
    let samples = sample_events(q, &fine, samples_per_decision).await?;
    Ok(serde_json::json!({
        "totals": {"decisions": total, "previous_decisions": prev_total},
        "summary": summary,
        "breakdown": breakdown,
        "daily": daily,
        "top_consumer_groups": top_groups,
        "escalations": escalations,
        "config_changes": config,
        "samples": samples,
    }))
}

/// Escalation status: each escalated event's latest status, when it was opened and
/// closed (resolved or dismissed), from one aggregation of the scope's escalation
/// updates; counts by status, median and 90th percentile hours to close (nearest
/// rank), the ten oldest still open.
async fn escalation_stats(q: &crate::views::ScopedQueries) -> Result<Value> {
    let per_event = q
        .query(
            "SELECT event_id, last_value(status ORDER BY at, id) AS status, \
             min(at) FILTER (WHERE status = 'open') AS opened_at, \
             max(at) FILTER (WHERE status IN ('resolved', 'dismissed')) AS closed_at \
             FROM escalations GROUP BY event_id",
            false,
        )
        .await?;
    let schema: SchemaRef = Arc::new(per_event.schema().as_arrow().clone());
    let ctx = memory_session("per_event", per_event.collect().await?, schema)?;
    let by_status = sql_rows(
        &ctx,
        "SELECT status AS decision, count(*) AS n FROM per_event GROUP BY status",
    )
    .await?;
    let by_status = decision_counts(&by_status);
    let total: u64 = by_status.values().filter_map(Value::as_u64).sum();
    let hours = ctx
        .sql(
            "SELECT (extract(epoch FROM closed_at) - extract(epoch FROM opened_at)) / 3600.0 AS h \
             FROM per_event WHERE closed_at IS NOT NULL AND opened_at IS NOT NULL ORDER BY h",
        )
        .await?
        .collect()
        .await?;
    let mut durations: Vec<f64> = Vec::new();
    for b in &hours {
        let col = deltalake::arrow::compute::cast(b.column(0), &DataType::Float64)?;
        let col = col
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("cast to Float64");
        durations.extend(col.iter().flatten());
    }
    let quantile = |p: f64| -> Value {
        if durations.is_empty() {
            return Value::Null;
        }
        let i = ((durations.len() - 1) as f64 * p).round() as usize;
        Value::from((durations[i] * 100.0).round() / 100.0)
    };
    let oldest_open = sql_rows(
        &ctx,
        "SELECT event_id, status, opened_at FROM per_event WHERE status IN ('open', 'claimed') \
         ORDER BY opened_at NULLS LAST, event_id LIMIT 10",
    )
    .await?;
    Ok(serde_json::json!({
        "by_status": by_status,
        "total": total,
        "median_hours_to_close": quantile(0.5),
        "p90_hours_to_close": quantile(0.9),
        "oldest_open": oldest_open,
    }))
}

/// A bounded, redacted sample of the scope's events for the appendix: for each
/// decision, the first event (smallest id) of up to `per_decision` days spread evenly
/// over the days that decision occurs, so the same scope gives the same sample; in
/// time order. The picks come from the events aggregation; the redacted texts are
/// read for the picked ids alone, each within its day.
async fn sample_events(
    q: &crate::views::ScopedQueries,
    fine: &SessionContext,
    per_decision: usize,
) -> Result<Vec<Value>> {
    let firsts = sql_rows(
        fine,
        "SELECT decision, day, min(first_id) AS id FROM fine GROUP BY decision, day \
         ORDER BY decision, day",
    )
    .await?;
    let mut by_decision: std::collections::BTreeMap<&str, Vec<(&str, &str)>> = Default::default();
    for r in &firsts {
        if let (Some(d), Some(day), Some(id)) =
            (r["decision"].as_str(), r["day"].as_str(), r["id"].as_str())
        {
            by_decision.entry(d).or_default().push((day, id));
        }
    }
    let tz = q.scope().timezone;
    let mut picks = Vec::new();
    for days in by_decision.values() {
        let n = days.len().min(per_decision);
        for k in 0..n {
            // Evenly spaced, first and last day included.
            let i = if n == 1 {
                0
            } else {
                k * (days.len() - 1) / (n - 1)
            };
            picks.push(days[i]);
        }
    }
    if picks.is_empty() {
        return Ok(Vec::new());
    }
    let day_range = |day: &str| -> Option<(String, String)> {
        let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
        let start = |d: chrono::NaiveDate| {
            tz.from_local_datetime(&d.and_hms_opt(0, 0, 0)?)
                .earliest()
                .map(|t| {
                    t.with_timezone(&chrono::Utc)
                        .format("%Y-%m-%dT%H:%M:%SZ")
                        .to_string()
                })
        };
        Some((start(d)?, start(d.succ_opt()?)?))
    };
    let wanted: Vec<String> = picks
        .iter()
        .map(|(day, id)| {
            let id = format!("'{}'", id.replace('\'', "''"));
            match day_range(day) {
                // The day bounds let the scan skip every other day's files.
                Some((from, to)) => {
                    format!("(timestamp >= '{from}' AND timestamp < '{to}' AND id = {id})")
                }
                None => format!("(id = {id})"),
            }
        })
        .collect();
    let sql = format!(
        "SELECT id, timestamp, decision, severity, policy, \
         substr(coalesce(input, ''), 1, 600) AS text FROM events \
         WHERE {} ORDER BY timestamp, id",
        wanted.join(" OR ")
    );
    rows(q.definition(&sql).await?).await
}
