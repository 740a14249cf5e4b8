-- name: policy-violations
-- description: Violations (block, redact, escalate, flag) by policy, reason, decision and severity, with counts and their share of violations and of all decisions.
-- format: csv
WITH totals AS (
    SELECT count(*) AS decisions,
           count(*) FILTER (WHERE decision <> 'allow') AS violations
    FROM events
),
breakdown AS (
    SELECT policy, reason_code, decision, severity, count(*) AS events
    FROM events
    WHERE decision <> 'allow'
    GROUP BY policy, reason_code, decision, severity
)
SELECT b.policy,
       b.reason_code,
       b.decision,
       b.severity,
       b.events,
       round(100.0 * b.events / t.violations, 3) AS pct_of_violations,
       round(100.0 * b.events / t.decisions, 3) AS pct_of_decisions
FROM breakdown b
CROSS JOIN totals t
ORDER BY b.events DESC, b.policy, b.reason_code NULLS FIRST, b.decision, b.severity
