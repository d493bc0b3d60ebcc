-- Jobs: enqueue, the worker's report-and-claim, returns and rescue, management, dead letters
-- and pruning. Only soniq/db.py executes these queries.
-- "{schema}" is replaced by the configured (validated, quoted) schema name.
-- Names are entity first, then verb; a name starting with "_" is a fragment that any query
-- (in any file of this folder) includes as "{_name}".

-- name: job_insert
-- One round trip: insert (or find the active duplicate by dedup key) and wake workers.
WITH ins AS (
    INSERT INTO {schema}.soniq_jobs
        (id, job_name, queue, priority, args, max_attempts, scheduled_at, dedup_key)
    VALUES ($1, $2, $3, $4, $5::jsonb, $6, COALESCE($7, now()), $8)
    ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('queued', 'processing')
    DO NOTHING
    RETURNING id, queue, scheduled_at
)
SELECT id, CASE WHEN scheduled_at <= now() THEN pg_notify($9, queue) END AS notified FROM ins

-- name: job_insert_plain
-- Same as job_insert, without a dedup key (its hot path).
WITH ins AS (
    INSERT INTO {schema}.soniq_jobs
        (id, job_name, queue, priority, args, max_attempts, scheduled_at)
    VALUES ($1, $2, $3, $4, $5::jsonb, $6, COALESCE($7, now()))
    RETURNING queue, scheduled_at
)
SELECT CASE WHEN scheduled_at <= now() THEN pg_notify($8, queue) END FROM ins

-- name: job_insert_quiet
-- job_insert_plain for a due job whose NOTIFY another enqueue carries: a bare INSERT.
INSERT INTO {schema}.soniq_jobs (id, job_name, queue, priority, args, max_attempts)
VALUES ($1, $2, $3, $4, $5::jsonb, $6)

-- name: job_insert_wake
-- A NOTIFY on its own, owed to jobs that committed without one.
SELECT pg_notify($1, $2)

-- name: job_get_active_by_dedup_key
SELECT id FROM {schema}.soniq_jobs
WHERE dedup_key = $1 AND status IN ('queued', 'processing')

-- name: job_insert_many
-- Many jobs of one task in one statement: the ids (array text $1) zipped in order with the
-- elements of one JSON array of arguments $5; one NOTIFY for them all if due.
WITH wake AS (
    SELECT CASE WHEN COALESCE($7, now()) <= now() THEN pg_notify($8, $3) END
)
INSERT INTO {schema}.soniq_jobs
    (id, job_name, queue, priority, args, max_attempts, scheduled_at)
SELECT t.id, $2, $3, $4, t.args, $6, COALESCE($7, now())
FROM ROWS FROM (unnest($1::text::uuid[]), jsonb_array_elements($5::text::jsonb)) AS t(id, args),
     wake

-- name: _job_report
-- Fragment: record finished jobs of worker $1 through one guard ("still processing by me"):
-- done ids $2 with results $3, and every other outcome (retry, snooze or dead letter) as
-- the columns $4..$10 of soniq.outcomes.OutcomeRow: id, status, delay, refund, error, reason,
-- traceback. Only a failed attempt (error not null) appends to the job's errors.
-- A job whose abort was asked (cancel_requested_at) ends cancelled ("aborted") whatever its
-- outcome: the CASEs are re-evaluated on the row as locked, so an abort that commits while
-- this statement waits is still honoured, and there is no second statement to race. Both
-- return the flow-control rows of each job they take out of `processing` (NULL but for
-- limited jobs), which job_report_and_claim_gated gives back itself.
WITH done AS (
    UPDATE {schema}.soniq_jobs AS j
    SET status = CASE WHEN j.cancel_requested_at IS NULL THEN 'done' ELSE 'cancelled' END,
        finished_at = now(), result = r.result, {_job_abort_reason}
    FROM unnest($2::uuid[], $3::jsonb[]) AS r(id, result)
    WHERE j.id = r.id AND j.status = 'processing' AND j.worker_id = $1
    RETURNING j.id, j.queue, j.limit_scope, j.limit_key, j.limit_more
), other AS (
    UPDATE {schema}.soniq_jobs AS j
    SET status = CASE WHEN j.cancel_requested_at IS NULL THEN r.status ELSE 'cancelled' END,
        {_job_abort_reason},
        scheduled_at = CASE WHEN r.status = 'queued'
                            THEN now() + make_interval(secs => r.delay) ELSE j.scheduled_at END,
        attempts = j.attempts - CASE WHEN r.refund THEN 1 ELSE 0 END,
        finished_at = CASE WHEN r.status = 'queued' AND j.cancel_requested_at IS NULL
                           THEN NULL ELSE now() END,
        last_error = COALESCE(r.error, j.last_error),
        errors = CASE WHEN r.error IS NULL THEN j.errors
                      ELSE COALESCE(j.errors, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                          'attempt', j.attempts, 'error', r.error, 'at', now(), 'worker_id', $1,
                          'traceback', r.traceback))
                 END,
        dead_reason = CASE WHEN j.cancel_requested_at IS NULL THEN r.reason END,
        dead_lettered_at = CASE WHEN r.status = 'dead_letter' AND j.cancel_requested_at IS NULL
                                THEN now() END
    FROM unnest($4::uuid[], $5::text[], $6::float8[], $7::boolean[], $8::text[], $9::text[],
                $10::text[])
         AS r(id, status, delay, refund, error, reason, traceback)
    WHERE j.id = r.id AND j.status = 'processing' AND j.worker_id = $1
    RETURNING j.id, j.queue, j.limit_scope, j.limit_key, j.limit_more
)

-- name: _job_abort_reason
-- Fragment: the cancel_reason of a job ending now (its abort, if one was asked).
cancel_reason = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'aborted' END

-- name: _job_claim_set
-- Fragment: mark the rows of CTE "due" as claimed by worker $1 and return them. A job past
-- its expires_at is not started: it ends cancelled ("expired") and comes back with that
-- status for the worker to skip (expires_at is NULL for jobs without expiry: no cost).
-- It ends with its RETURNING list, which job_report_and_claim_gated extends.
UPDATE {schema}.soniq_jobs AS j
SET status = CASE WHEN j.expires_at <= now() THEN 'cancelled' ELSE 'processing' END,
    attempts = j.attempts + CASE WHEN j.expires_at <= now() THEN 0 ELSE 1 END,
    started_at = now(), worker_id = $1,
    cancel_reason = CASE WHEN j.expires_at <= now() THEN 'expired' END,
    finished_at = CASE WHEN j.expires_at <= now() THEN now() END
FROM due WHERE j.id = due.id
RETURNING j.id, j.job_name, j.queue, j.priority, j.args, j.attempts, j.max_attempts,
          j.created_at, j.scheduled_at, j.trace_context, j.status, j.parent_results

-- name: job_report
-- Record outcomes on their own (see _job_report); returns how many were taken.
{_job_report}
SELECT (SELECT count(*) FROM done) + (SELECT count(*) FROM other) AS recorded

-- name: job_report_and_claim
-- The worker's one round trip per cycle: record outcomes (see _job_report) and claim up to
-- {limit} due jobs of any queue, in claim order, on the claim index. {limit} is an integer
-- literal, not a parameter: a generic plan for "LIMIT $n" guesses thousands of rows and
-- hash-joins the whole table; with the literal the plan stays an index walk whatever the
-- backlog. The claim does not see rows re-queued by this same statement. Jobs of tasks with
-- flow-control limits (limit_scope set) are claimed by job_report_and_claim_gated
-- (sql/flow.sql).
{_job_report}, due AS (
    SELECT id FROM {schema}.soniq_jobs
    WHERE status = 'queued' AND scheduled_at <= now() AND limit_scope IS NULL
    ORDER BY priority, scheduled_at, id
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
)
{_job_claim_set}

-- name: job_report_and_claim_queues
-- As job_report_and_claim, for the queues $11 only; each queue walks its own index range.
{_job_report}, due AS (
    SELECT c.id FROM unnest($11::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT id, priority, scheduled_at FROM {schema}.soniq_jobs
        WHERE status = 'queued' AND queue = q.name AND scheduled_at <= now()
          AND limit_scope IS NULL
        ORDER BY priority, scheduled_at, id
        LIMIT {limit}
        FOR UPDATE SKIP LOCKED
    ) AS c
    ORDER BY c.priority, c.scheduled_at, c.id
    LIMIT {limit}
)
{_job_claim_set}

-- name: _job_return
-- Fragment: give jobs of worker $1 back to the queue without spending the attempt; one
-- whose abort was asked ends cancelled ("aborted") instead.
UPDATE {schema}.soniq_jobs AS j
SET status = CASE WHEN j.cancel_requested_at IS NULL THEN 'queued' ELSE 'cancelled' END,
    attempts = GREATEST(j.attempts - 1, 0), scheduled_at = now(),
    started_at = NULL,
    finished_at = CASE WHEN j.cancel_requested_at IS NOT NULL THEN now() END,
    {_job_abort_reason}
WHERE j.status = 'processing' AND j.worker_id = $1

-- name: job_return_many
-- Shutdown: the jobs $2 this worker holds and did not finish go back to the queue.
{_job_return} AND j.id = ANY($2::uuid[])
RETURNING j.id

-- name: job_return_orphans
-- Jobs the database says this worker holds but the worker is not running (a claim whose
-- answer was lost with the connection): every job of worker $1 but those in $2.
{_job_return} AND NOT (j.id = ANY($2::uuid[]))
RETURNING j.id

-- name: job_rescue_stale
-- Jobs whose worker's heartbeat is older than $1 seconds (or gone): back to the queue,
-- or dead-lettered when that was their last attempt; cancelled when an abort was asked.
UPDATE {schema}.soniq_jobs AS j
SET status = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                  WHEN j.attempts >= j.max_attempts THEN 'dead_letter' ELSE 'queued' END,
    scheduled_at = now(),
    finished_at = CASE WHEN j.attempts >= j.max_attempts OR j.cancel_requested_at IS NOT NULL
                       THEN now() END,
    {_job_abort_reason},
    dead_reason = CASE WHEN j.attempts >= j.max_attempts AND j.cancel_requested_at IS NULL
                       THEN 'max_retries_exceeded' END,
    dead_lettered_at = CASE WHEN j.attempts >= j.max_attempts
                                 AND j.cancel_requested_at IS NULL THEN now() END,
    last_error = 'worker ' || j.worker_id || ' stopped heartbeating while running attempt '
                 || j.attempts || ' (process killed or lost its database)',
    errors = COALESCE(j.errors, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
        'attempt', j.attempts, 'error', 'worker lost: ' || j.worker_id, 'at', now(),
        'traceback', NULL))
WHERE j.status = 'processing'
  AND NOT EXISTS (
      SELECT 1 FROM {schema}.soniq_workers AS w
      WHERE w.id = j.worker_id AND w.stopped_at IS NULL
        AND w.heartbeat_at >= now() - make_interval(secs => $1))
RETURNING j.id, j.status, j.worker_id

-- name: _job_columns
-- Fragment: a job as get_job returns it, from soniq_jobs AS j.
j.id, j.job_name, j.queue, j.priority, j.args, j.status, j.attempts, j.max_attempts,
j.created_at, j.scheduled_at, j.started_at, j.finished_at, j.last_error, j.worker_id,
j.dedup_key, j.errors, j.dead_reason, j.dead_lettered_at, j.resurrection_count,
j.progress, j.progress_message, j.tags, j.cancel_reason, j.expires_at,
j.workflow_id, j.step, ARRAY(SELECT d.parent_id::text FROM {schema}.soniq_job_deps AS d
                             WHERE d.child_id = j.id ORDER BY d.parent_id) AS after

-- name: _job_list_columns
-- Fragment: a job as list_jobs returns it.
id, job_name, queue, priority, args, status, attempts, max_attempts, created_at,
scheduled_at, started_at, finished_at, last_error, worker_id, dedup_key,
dead_reason, dead_lettered_at, resurrection_count, progress, progress_message, tags,
cancel_reason, expires_at, workflow_id, step

-- name: job_get
SELECT {_job_columns} FROM {schema}.soniq_jobs AS j WHERE j.id = $1

-- name: job_get_result
SELECT status, result FROM {schema}.soniq_jobs WHERE id = $1

-- name: job_list
SELECT {_job_list_columns}
FROM {schema}.soniq_jobs
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR queue = $2)
  AND ($3::text IS NULL OR job_name = $3)
ORDER BY id DESC
LIMIT $4 OFFSET $5

-- name: job_cancel
UPDATE {schema}.soniq_jobs SET status = 'cancelled', finished_at = now(),
    cancel_reason = 'cancelled'
WHERE id = $1 AND status IN ('queued', 'waiting')
RETURNING id

-- name: job_cancel_matching
-- Bulk cancel: every queued or waiting job of queue $1 (if given), task $2 (if given) and
-- carrying every tag of the JSON object $3 (if given; on the tags index).
UPDATE {schema}.soniq_jobs SET status = 'cancelled', finished_at = now(), cancel_reason = 'cancelled'
WHERE status IN ('queued', 'waiting')
  AND ($1::text IS NULL OR queue = $1)
  AND ($2::text IS NULL OR job_name = $2)
  AND ($3::text IS NULL OR tags @> $3::jsonb)

-- name: job_delete
-- A processing job is not deleted: its worker's outcome would be dropped (abort it first).
DELETE FROM {schema}.soniq_jobs WHERE id = $1 AND status <> 'processing' RETURNING id

-- name: job_retry_dead
-- A dead-lettered job back to queued under its own id, with one more attempt allowed.
WITH upd AS (
    UPDATE {schema}.soniq_jobs
    SET status = 'queued', scheduled_at = now(), finished_at = NULL,
        max_attempts = GREATEST(max_attempts, attempts + 1),
        dead_reason = NULL, dead_lettered_at = NULL, worker_id = NULL
    WHERE id = $1 AND status = 'dead_letter'
    RETURNING id, queue
)
SELECT id, pg_notify($2, queue) FROM upd

-- name: job_count_by_status
SELECT status, count(*) AS n FROM {schema}.soniq_jobs GROUP BY status

-- name: dead_letter_list
SELECT id, job_name, queue, args, attempts, last_error, dead_reason, resurrection_count,
       dead_lettered_at
FROM {schema}.soniq_jobs
WHERE status = 'dead_letter' AND ($3::text IS NULL OR job_name = $3)
ORDER BY dead_lettered_at DESC, id DESC
LIMIT $1 OFFSET $2

-- name: dead_letter_get
SELECT id, job_name, queue, args, attempts, last_error, dead_reason, resurrection_count,
       dead_lettered_at, priority, max_attempts, errors
FROM {schema}.soniq_jobs
WHERE id = $1 AND status = 'dead_letter'

-- name: dead_letter_mark_replayed
UPDATE {schema}.soniq_jobs SET resurrection_count = resurrection_count + 1
WHERE id = $1 AND status = 'dead_letter'
RETURNING resurrection_count

-- name: dead_letter_delete
DELETE FROM {schema}.soniq_jobs WHERE id = $1 AND status = 'dead_letter' RETURNING id

-- name: dead_letter_stats
SELECT COALESCE(dead_reason, 'max_retries_exceeded') AS reason, count(*) AS n
FROM {schema}.soniq_jobs WHERE status = 'dead_letter' GROUP BY 1

-- name: job_prune_finished
-- Finished jobs older than $1 seconds, at most $2 per call, and the edges to their parents
-- (soniq_job_deps, on its child index; a job without parents has none).
WITH gone AS (
    DELETE FROM {schema}.soniq_jobs
    WHERE id IN (SELECT id FROM {schema}.soniq_jobs
                 WHERE status IN ('done', 'cancelled')
                   AND finished_at < now() - make_interval(secs => $1)
                 ORDER BY finished_at
                 LIMIT $2)
    RETURNING id
), edges AS (
    DELETE FROM {schema}.soniq_job_deps WHERE child_id IN (SELECT id FROM gone)
)
SELECT id FROM gone
