-- Worker rows: registration, heartbeats, listing, pruning; and the jobs each worker holds.
-- Only soniq/db.py executes these queries. "{schema}" is replaced by the schema name.

-- name: worker_register
INSERT INTO {schema}.soniq_workers (id, hostname, pid, queues, concurrency)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE
SET heartbeat_at = now(), stopped_at = NULL

-- name: worker_heartbeat
UPDATE {schema}.soniq_workers SET heartbeat_at = now(), in_flight = $2
WHERE id = $1 AND stopped_at IS NULL
RETURNING id

-- name: worker_stop
UPDATE {schema}.soniq_workers SET stopped_at = now(), in_flight = 0 WHERE id = $1

-- name: worker_list
SELECT id, hostname, pid, queues, concurrency, in_flight, started_at, heartbeat_at, stopped_at,
       stopped_at IS NULL AND heartbeat_at >= now() - make_interval(secs => $1) AS alive
FROM {schema}.soniq_workers
ORDER BY started_at DESC

-- name: worker_prune
-- Worker rows that stopped, or went silent, more than $1 seconds ago and hold no job.
DELETE FROM {schema}.soniq_workers AS w
WHERE COALESCE(w.stopped_at, w.heartbeat_at) < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM {schema}.soniq_jobs AS j
                  WHERE j.status = 'processing' AND j.worker_id = w.id)
RETURNING w.id

-- name: worker_jobs_held
-- How many jobs each worker holds right now.
SELECT worker_id, count(*) AS n FROM {schema}.soniq_jobs
WHERE status = 'processing'
GROUP BY worker_id
