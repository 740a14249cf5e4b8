-- name: export-activity
-- description: The export-activity audit trail: who created, cancelled, downloaded or linked which export, and every token or settings change, with its hash chain.
-- format: csv
SELECT seq, at, actor, action, target, details, prev_hash, hash
FROM audit_log
ORDER BY seq
