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
       count(*) FILTER (WHERE status = 'waiting') AS waiting,
       {_oldest_queued_age}
FROM {schema}.soniq_jobs
GROUP BY queue
ORDER BY queue

-- name: queue_depth
-- Metrics sampler and the dashboard, one statement: per queue, jobs waiting (due or not),
-- running and dead-lettered, and the age of the oldest due job. One branch per status, so
-- each reads only its partial index (an IN list of three statuses matches none of them and
-- sends the planner to a sequential scan of the whole history).
WITH per AS (
    SELECT queue, 'queued' AS status, count(*) AS n,
           EXTRACT(EPOCH FROM now() - min(scheduled_at)
                   FILTER (WHERE scheduled_at <= now()))::float8 AS age
    FROM {schema}.soniq_jobs WHERE status = 'queued' GROUP BY queue
    UNION ALL
    SELECT queue, 'processing', count(*), NULL
    FROM {schema}.soniq_jobs WHERE status = 'processing' GROUP BY queue
    UNION ALL
    SELECT queue, 'dead_letter', count(*), NULL
    FROM {schema}.soniq_jobs WHERE status = 'dead_letter' GROUP BY queue
)
SELECT queue,
       COALESCE(sum(n) FILTER (WHERE status = 'queued'), 0)::bigint AS queued,
       COALESCE(sum(n) FILTER (WHERE status = 'processing'), 0)::bigint AS processing,
       COALESCE(sum(n) FILTER (WHERE status = 'dead_letter'), 0)::bigint AS dead_letter,
       max(age) AS oldest_queued_age
FROM per
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
