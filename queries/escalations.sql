-- name: escalations
-- description: One row per escalated event: current status and resolution, when it was opened, claimed and closed, hours to resolution, and the timeline of every update.
-- format: csv
WITH newest AS (
    SELECT event_id, status, resolution, severity, actor, note,
           row_number() OVER (PARTITION BY event_id ORDER BY at DESC, id DESC) AS n
    FROM escalations
),
timeline AS (
    SELECT event_id,
           min(at) FILTER (WHERE status = 'open') AS opened_at,
           min(at) FILTER (WHERE status = 'claimed') AS claimed_at,
           max(at) FILTER (WHERE status IN ('resolved', 'dismissed', 'expired')) AS closed_at,
           count(*) AS updates,
           string_agg(
               concat(to_char(at, '%Y-%m-%dT%H:%M:%SZ'), ' ', status, ' by ', actor),
               '; ' ORDER BY at, id
           ) AS timeline
    FROM escalations
    GROUP BY event_id
)
SELECT t.event_id,
       e.policy,
       e.reason_code,
       n.severity,
       n.status AS current_status,
       n.resolution,
       n.actor AS last_actor,
       t.opened_at,
       t.claimed_at,
       t.closed_at,
       round((extract(epoch FROM t.closed_at) - extract(epoch FROM t.opened_at)) / 3600.0, 2)
           AS hours_to_resolution,
       t.updates,
       t.timeline,
       n.note AS last_note
FROM timeline t
JOIN newest n ON n.event_id = t.event_id AND n.n = 1
LEFT JOIN events e ON e.id = t.event_id
ORDER BY t.opened_at NULLS FIRST, t.event_id
