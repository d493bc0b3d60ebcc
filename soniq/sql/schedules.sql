-- Periodic schedules: the scheduler's session, the schedules' state rows and the tick
-- insert that happens at most once.
-- Only soniq/db.py executes these queries. "{schema}" is replaced by the schema name.

-- name: scheduler_session_setup
-- The scheduler's own session: a name in pg_stat_activity, and TCP keepalives so the server
-- drops (and unlocks) the session of a leader whose host vanished within about 20 seconds.
SELECT set_config('application_name', $1, false),
       set_config('tcp_keepalives_idle', '10', false),
       set_config('tcp_keepalives_interval', '5', false),
       set_config('tcp_keepalives_count', '2', false)

-- name: scheduler_ping
-- Proves the session is alive; the database clock is the clock every scheduler shares.
SELECT clock_timestamp()

-- name: schedule_upsert
-- Record a registered schedule; keep its next run unless what fires it has changed.
INSERT INTO {schema}.soniq_schedules AS s (name, job_name, spec, timezone, next_run_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO UPDATE
SET job_name = EXCLUDED.job_name,
    spec = EXCLUDED.spec,
    timezone = EXCLUDED.timezone,
    next_run_at = CASE WHEN s.spec = EXCLUDED.spec AND s.timezone = EXCLUDED.timezone
                            AND s.next_run_at IS NOT NULL
                       THEN s.next_run_at ELSE EXCLUDED.next_run_at END,
    updated_at = now()
RETURNING next_run_at, last_tick

-- name: schedule_tick_enqueue
-- Tick $2 of schedule $1, at most once ever: the tick row's primary key (and the schedule's
-- last tick, for pruned rows) decide; the job is inserted only if the tick row was. With a
-- dedup key $9 the job is skipped while the previous one is still active. Moves the
-- schedule's next run to $10. One statement, so two leaders still make one job. $12: the
-- task's expires_after (seconds from now), or NULL. $13-$17: the job's flow-control rows
-- (scopes, keys, maxes, windows: the lane first; created if missing) and limit_more; NULL
-- for a task without limits.
WITH lim AS (
    INSERT INTO {schema}.soniq_limits (scope, key, max, window_ms)
    SELECT * FROM unnest($13::text[], $14::text[], $15::int[], $16::bigint[])
    ON CONFLICT (scope, key) DO NOTHING
), tick AS (
    INSERT INTO {schema}.soniq_periodic_ticks (schedule_name, tick, job_id)
    SELECT $1, $2, $3
    WHERE NOT EXISTS (SELECT 1 FROM {schema}.soniq_schedules
                      WHERE name = $1 AND last_tick >= $2)
    ON CONFLICT DO NOTHING
    RETURNING job_id
), job AS (
    INSERT INTO {schema}.soniq_jobs
        (id, job_name, queue, priority, args, max_attempts, scheduled_at, dedup_key, expires_at,
         limit_scope, limit_key, limit_more)
    SELECT job_id, $4, $5, $6, $7::jsonb, $8, LEAST($2, now()), $9,
           now() + make_interval(secs => $12::float8), ($13::text[])[1], ($14::text[])[1],
           $17::jsonb
    FROM tick
    ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('queued', 'processing')
    DO NOTHING
    RETURNING id, queue
), schedule AS (
    UPDATE {schema}.soniq_schedules
    SET last_tick = GREATEST(last_tick, $2),
        last_enqueued_at = CASE WHEN EXISTS (SELECT 1 FROM job) THEN now()
                                ELSE last_enqueued_at END,
        next_run_at = CASE WHEN last_tick IS NULL OR $2 >= last_tick THEN $10
                           ELSE next_run_at END,
        updated_at = now()
    WHERE name = $1
)
SELECT (SELECT count(*) FROM tick) AS claimed, j.id,
       CASE WHEN j.id IS NOT NULL THEN pg_notify($11, j.queue) END AS notified
FROM (SELECT 1) AS one LEFT JOIN job AS j ON true

-- name: schedule_list
SELECT name, job_name, spec, timezone, last_tick, last_enqueued_at, next_run_at, updated_at
FROM {schema}.soniq_schedules
ORDER BY name

-- name: periodic_tick_prune
-- Tick rows older than $1 seconds, at most $2 per call (the schedule's last_tick still
-- stops an old tick from firing again).
DELETE FROM {schema}.soniq_periodic_ticks
WHERE (schedule_name, tick) IN (
    SELECT schedule_name, tick FROM {schema}.soniq_periodic_ticks
    WHERE tick < now() - make_interval(secs => $1)
    ORDER BY tick
    LIMIT $2)
RETURNING tick
