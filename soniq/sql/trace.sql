-- Enqueue with a stored W3C trace context (soniq.otel): used only while a tracer provider is
-- configured, so the untraced enqueue keeps its own statements. Only soniq/db.py runs these.

-- name: job_insert_traced
-- job_insert (dedup key $8 or NULL) that also stores the trace context $10 (JSON text).
WITH ins AS (
    INSERT INTO {schema}.soniq_jobs
        (id, job_name, queue, priority, args, max_attempts, scheduled_at, dedup_key,
         trace_context)
    VALUES ($1, $2, $3, $4, $5::jsonb, $6, COALESCE($7, now()), $8, $10::text::jsonb)
    ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('queued', 'processing')
    DO NOTHING
    RETURNING id, queue, scheduled_at
)
SELECT id, CASE WHEN scheduled_at <= now() THEN pg_notify($9, queue) END AS notified FROM ins

-- name: job_insert_many_traced
-- job_insert_many whose jobs all carry the trace context $9 (JSON text).
WITH wake AS (
    SELECT CASE WHEN COALESCE($7, now()) <= now() THEN pg_notify($8, $3) END
)
INSERT INTO {schema}.soniq_jobs
    (id, job_name, queue, priority, args, max_attempts, scheduled_at, trace_context)
SELECT t.id, $2, $3, $4, t.args, $6, COALESCE($7, now()), $9::text::jsonb
FROM ROWS FROM (unnest($1::text::uuid[]), jsonb_array_elements($5::text::jsonb)) AS t(id, args),
     wake
