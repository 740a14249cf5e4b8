-- name: daily-summary
-- description: One row per day (in the export's timezone): decisions by outcome, high and critical counts, violation rate and escalated events.
-- format: csv
SELECT local_date(timestamp) AS day,
       count(*) AS decisions,
       count(*) FILTER (WHERE decision = 'allow') AS allowed,
       count(*) FILTER (WHERE decision = 'block') AS blocked,
       count(*) FILTER (WHERE decision = 'redact') AS redacted,
       count(*) FILTER (WHERE decision = 'escalate') AS escalated,
       count(*) FILTER (WHERE decision = 'flag') AS flagged,
       count(*) FILTER (WHERE severity IN ('high', 'critical')) AS high_or_critical,
       round(100.0 * count(*) FILTER (WHERE decision <> 'allow') / count(*), 3)
           AS violation_rate_pct,
       count(DISTINCT policy) AS policies_triggered
FROM events
GROUP BY local_date(timestamp)
ORDER BY day
