-- Reads behind the dashboard (and the CLI): keyset pages, per-minute counts, running jobs.
-- Only soniq/db.py executes these queries. "{schema}" is replaced by the schema name.
-- Keyset pages walk the primary key downwards from a cursor id (job ids are monotonic
-- ULIDs, so newest first); never OFFSET, never count(*) over history.

-- name: job_page
SELECT id, job_name, queue, priority, args, status, attempts, max_attempts, created_at,
       scheduled_at, started_at, finished_at, last_error, worker_id, dead_reason,
       dead_lettered_at, resurrection_count, tags
FROM {schema}.soniq_jobs
WHERE ($1::uuid IS NULL OR id < $1)
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR queue = $3)
  AND ($4::text IS NULL OR job_name = $4)
  AND ($6::text IS NULL OR tags @> $6::jsonb)
ORDER BY id DESC
LIMIT $5

-- name: dead_letter_page
SELECT id, job_name, queue, args, attempts, last_error, dead_reason, resurrection_count,
       dead_lettered_at
FROM {schema}.soniq_jobs
WHERE status = 'dead_letter' AND ($1::uuid IS NULL OR id < $1)
  AND ($2::text IS NULL OR job_name = $2)
ORDER BY id DESC
LIMIT $3

-- name: job_minutes
-- Jobs that succeeded and that failed (dead-lettered) per minute over the last $1 minutes,
-- from the two partial indexes on the end times.
SELECT date_trunc('minute', at) AS minute,
       count(*) FILTER (WHERE kind = 'done') AS finished,
       count(*) FILTER (WHERE kind = 'dead_letter') AS failed
FROM (
    SELECT finished_at AS at, status AS kind FROM {schema}.soniq_jobs
    WHERE status = 'done'
      AND finished_at >= date_trunc('minute', now()) - make_interval(mins => $1 - 1)
    UNION ALL
    SELECT dead_lettered_at, status FROM {schema}.soniq_jobs
    WHERE status = 'dead_letter'
      AND dead_lettered_at >= date_trunc('minute', now()) - make_interval(mins => $1 - 1)
) AS ended
GROUP BY 1
ORDER BY 1

-- name: job_running
-- Jobs being run right now, with their worker, newest first.
SELECT id, job_name, queue, attempts, started_at, worker_id
FROM {schema}.soniq_jobs
WHERE status = 'processing'
ORDER BY id DESC
LIMIT $1

-- name: job_statuses
-- The status of each of the given jobs (live updates).
SELECT id, status, attempts, finished_at FROM {schema}.soniq_jobs WHERE id = ANY($1::uuid[])

-- name: plan_custom_local
-- Plan the next statements of this transaction for their actual parameter values, so a
-- status filter can use the partial index of that status (a generic plan cannot).
SET LOCAL plan_cache_mode = force_custom_plan
