-- Job control: abort, wait/watch, progress, completing in the handler's transaction,
-- expiry, idempotency keys and tags. Only soniq/db.py executes these queries.
-- "{schema}" is replaced by the configured (validated, quoted) schema name.

-- name: job_insert_ext
-- An enqueue that uses tags, expiry or an idempotency key (the plain enqueue keeps its own
-- statements). $10 is the idempotency key (or NULL) with request hash $11 and ttl $12 s:
-- the key row is inserted, or (when another enqueue holds it and it has not expired) locked
-- and returned as it is, so concurrent enqueues of one key wait for the first and see its
-- job. The job is inserted only when the key now names it.
WITH k AS (
    INSERT INTO {schema}.soniq_idempotency AS i (key, request_hash, job_id, expires_at)
    SELECT $10, $11, $1, now() + make_interval(secs => $12)
    WHERE $10::text IS NOT NULL
    ON CONFLICT (key) DO UPDATE
    SET request_hash = CASE WHEN i.expires_at <= now() THEN EXCLUDED.request_hash
                            ELSE i.request_hash END,
        job_id = CASE WHEN i.expires_at <= now() THEN EXCLUDED.job_id ELSE i.job_id END,
        created_at = CASE WHEN i.expires_at <= now() THEN now() ELSE i.created_at END,
        expires_at = CASE WHEN i.expires_at <= now() THEN EXCLUDED.expires_at
                          ELSE i.expires_at END
    RETURNING i.job_id, i.request_hash
), ins AS (
    INSERT INTO {schema}.soniq_jobs
        (id, job_name, queue, priority, args, max_attempts, scheduled_at, dedup_key, tags,
         expires_at)
    SELECT $1, $2, $3, $4, $5::jsonb, $6, COALESCE($7, now()), $8, $13::jsonb, $14
    WHERE $10::text IS NULL OR EXISTS (SELECT 1 FROM k WHERE k.job_id = $1::uuid)
    ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('queued', 'processing')
    DO NOTHING
    RETURNING id, queue, scheduled_at
)
SELECT (SELECT id FROM ins) AS id,
       (SELECT job_id FROM k) AS key_job_id,
       (SELECT request_hash FROM k) AS key_hash,
       (SELECT CASE WHEN scheduled_at <= now() THEN pg_notify($9, queue) END FROM ins)
           AS notified

-- name: job_abort
-- Ask the worker running job $1 to stop: a durable flag, and a NOTIFY on the workers'
-- wake-up channel $2 (payload "!abort:<id>", never a queue name). Returns the worker id.
WITH upd AS (
    UPDATE {schema}.soniq_jobs
    SET cancel_requested_at = COALESCE(cancel_requested_at, now())
    WHERE id = $1 AND status = 'processing'
    RETURNING id, worker_id, job_name
)
SELECT worker_id, pg_notify($2, '!abort:' || id::text || ':' || job_name) FROM upd

-- name: job_abort_pending
-- The heartbeat's fallback: jobs of worker $1 whose abort was asked.
SELECT id, job_name FROM {schema}.soniq_jobs
WHERE worker_id = $1 AND status = 'processing' AND cancel_requested_at IS NOT NULL

-- name: job_watch
-- A waiter's first read: mark the job watched (its changes are NOTIFYed from now on) and
-- return it as job_get does. A worker's claim skips the row while this update holds its
-- lock (SKIP LOCKED), so a due queued job gets a wake-up on channel $2 at this commit.
WITH w AS (
    UPDATE {schema}.soniq_jobs AS j SET watched = true
    WHERE j.id = $1
    RETURNING {_job_columns}
)
SELECT w.*, CASE WHEN w.status = 'queued' AND w.scheduled_at <= now()
                 THEN pg_notify($2, w.queue) END AS woke
FROM w

-- name: job_get_many
SELECT {_job_columns} FROM {schema}.soniq_jobs AS j WHERE j.id = ANY($1::uuid[])

-- name: job_progress
-- A running job's progress, written only while worker $2 still runs attempt $3.
UPDATE {schema}.soniq_jobs
SET progress = $4, progress_message = $5
WHERE id = $1 AND status = 'processing' AND worker_id = $2 AND attempts = $3

-- name: job_complete
-- ctx.complete: job $1 done with result $4, on the caller's connection (so in its
-- transaction), only while worker $2 still owns attempt $3 and no abort was asked.
UPDATE {schema}.soniq_jobs
SET status = 'done', finished_at = now(), result = $4::jsonb
WHERE id = $1 AND status = 'processing' AND worker_id = $2 AND attempts = $3
  AND cancel_requested_at IS NULL
RETURNING id

-- name: job_expire_queued
-- Maintenance: queued jobs past their expiry end cancelled ("expired"), at most $1.
UPDATE {schema}.soniq_jobs
SET status = 'cancelled', cancel_reason = 'expired', finished_at = now()
WHERE id IN (SELECT id FROM {schema}.soniq_jobs
             WHERE status = 'queued' AND expires_at IS NOT NULL AND expires_at <= now()
             LIMIT $1
             FOR UPDATE SKIP LOCKED)
RETURNING id

-- name: idempotency_prune
-- Maintenance: idempotency keys whose ttl ended more than $1 seconds ago, at most $2.
DELETE FROM {schema}.soniq_idempotency
WHERE key IN (SELECT key FROM {schema}.soniq_idempotency
              WHERE expires_at < now() - make_interval(secs => $1)
              ORDER BY expires_at
              LIMIT $2)
RETURNING key

-- name: job_list_tagged
-- list_jobs with a tag filter $6 (jsonb containment, on the tags index).
SELECT {_job_list_columns}
FROM {schema}.soniq_jobs
WHERE tags @> $6::jsonb
  AND ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR queue = $2)
  AND ($3::text IS NULL OR job_name = $3)
ORDER BY id DESC
LIMIT $4 OFFSET $5
