-- name: decision-events
-- description: Every decision event in scope with its full record (redacted), in time order.
-- format: csv
SELECT *
FROM events
ORDER BY timestamp, id
