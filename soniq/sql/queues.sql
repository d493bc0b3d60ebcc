-- Per-queue counts behind `soniq status`, the CLI and the metrics sampler.
-- Only soniq/db.py executes these queries. "{schema}" is replaced by the schema name.

-- name: _oldest_queued_age
-- Fragment: the age in seconds of a queue's oldest due job (NULL when none is due).
EXTRACT(EPOCH FROM now() - min(scheduled_at)
        FILTER (WHERE status = 'queued' AND scheduled_at <= now()))::float8 AS oldest_queued_age

-- name: queue_stats
SELECT queue,
       count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'processing') AS processing,
       count(*) FILTER (WHERE status = 'done') AS done,
       count(*) FILTER (WHERE status = 'dead_letter') AS dead_letter,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       {_oldest_queued_age}
FROM {schema}.soniq_jobs
GROUP BY queue
ORDER BY queue

-- name: queue_depth
-- Metrics sampler, one statement: per queue, jobs waiting (due or not), running and
-- dead-lettered, and the age of the oldest due job. Reads only rows the partial indexes cover.
SELECT queue,
       count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'processing') AS processing,
       count(*) FILTER (WHERE status = 'dead_letter') AS dead_letter,
       {_oldest_queued_age}
FROM {schema}.soniq_jobs
WHERE status IN ('queued', 'processing', 'dead_letter')
GROUP BY queue
ORDER BY queue

-- name: queue_throughput
-- Per queue, jobs that ended in the last $1 seconds.
SELECT queue,
       count(*) FILTER (WHERE status = 'done') AS succeeded,
       count(*) FILTER (WHERE status = 'dead_letter') AS dead_lettered,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled
FROM {schema}.soniq_jobs
WHERE (status IN ('done', 'cancelled') AND finished_at >= now() - make_interval(secs => $1))
   OR (status = 'dead_letter' AND dead_lettered_at >= now() - make_interval(secs => $1))
GROUP BY queue
ORDER BY queue
