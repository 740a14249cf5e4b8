-- name: config-changes
-- description: Configuration versions changed in the period: who changed what and when, the policies touched and the diff.
-- format: csv
SELECT config_id, version, changed_at, changed_by, summary, policies, diff
FROM config_versions
ORDER BY changed_at, config_id, version
