-- Continuations and workflows (docs/workflows.md). Only soniq/db.py executes these queries.

-- name: job_insert_dag
-- Jobs with parents, in one statement: the jobs $1..$8 (ids, tasks, queues, priorities, one
-- JSON array of arguments, max attempts, due times, step names), the workflow $9/$10 (or
-- NULL), the existing parents $11 and the edges $12 -> $13 with aliases $14. The existing
-- parents are locked and flagged (has_dependents) by this statement, so either it sees a
-- parent's final status (done: counted and its result copied; dead_letter/cancelled: the
-- child, and every new job below it, is cancelled at once) or the parent's trigger sees the
-- new edge. A missing parent writes nothing (ok is false). Wakes each queue with a due job.
WITH RECURSIVE ok AS (
    SELECT count(*) = cardinality($11::uuid[]) AS ok
    FROM {schema}.soniq_jobs WHERE id = ANY($11::uuid[])
), ext AS (
    UPDATE {schema}.soniq_jobs AS p SET has_dependents = true
    FROM ok WHERE ok.ok AND p.id = ANY($11::uuid[])
    RETURNING p.id, p.status, p.result, p.cancel_reason
), edges AS (
    SELECT e.parent, e.child, e.alias
    FROM unnest($12::uuid[], $13::uuid[], $14::text[]) AS e(parent, child, alias)
), doomed(id, reason) AS (
    SELECT e.child, CASE WHEN x.status = 'dead_letter' THEN 'parent_failed'
                         WHEN x.cancel_reason IN ('parent_failed', 'parent_cancelled')
                         THEN x.cancel_reason ELSE 'parent_cancelled' END
    FROM edges AS e JOIN ext AS x ON x.id = e.parent
    WHERE x.status IN ('dead_letter', 'cancelled')
    UNION
    SELECT e.child, d.reason FROM doomed AS d JOIN edges AS e ON e.parent = d.id
), counts AS (
    SELECT e.child AS id,
           count(*) FILTER (WHERE x.status IS DISTINCT FROM 'done') AS pending,
           jsonb_object_agg(e.alias, x.result) FILTER (WHERE x.status = 'done') AS results
    FROM edges AS e LEFT JOIN ext AS x ON x.id = e.parent
    GROUP BY e.child
), rows AS (
    SELECT t.id, t.job_name, t.queue, t.priority, t.args, t.max_attempts, t.scheduled_at, t.step,
           dm.reason, COALESCE(n.pending, 0) AS pending, n.results,
           t.id IN (SELECT parent FROM edges) AS has_dependents
    FROM ROWS FROM (unnest($1::text::uuid[]), unnest($2::text[]), unnest($3::text[]),
                    unnest($4::int[]), jsonb_array_elements($5::text::jsonb),
                    unnest($6::int[]), unnest($7::timestamptz[]), unnest($8::text[]))
         AS t(id, job_name, queue, priority, args, max_attempts, scheduled_at, step)
    LEFT JOIN counts AS n ON n.id = t.id
    LEFT JOIN (SELECT id, min(reason) AS reason FROM doomed GROUP BY id) AS dm ON dm.id = t.id
    WHERE (SELECT ok FROM ok)
), wf AS (
    INSERT INTO {schema}.soniq_workflows (id, name)
    SELECT $9, $10 WHERE $9::uuid IS NOT NULL AND (SELECT ok FROM ok)
), ins AS (
    INSERT INTO {schema}.soniq_jobs
        (id, job_name, queue, priority, args, max_attempts, scheduled_at, status,
         cancel_reason, finished_at, pending_parents, parent_results, has_dependents,
         workflow_id, step)
    SELECT id, job_name, queue, priority, args, max_attempts, COALESCE(scheduled_at, now()),
           CASE WHEN reason IS NOT NULL THEN 'cancelled'
                WHEN pending > 0 THEN 'waiting' ELSE 'queued' END,
           reason, CASE WHEN reason IS NOT NULL THEN now() END,
           CASE WHEN reason IS NULL THEN pending ELSE 0 END, results, has_dependents, $9, step
    FROM rows
    RETURNING id, queue, status, scheduled_at
), deps AS (
    INSERT INTO {schema}.soniq_job_deps (parent_id, child_id, alias)
    SELECT parent, child, alias FROM edges WHERE (SELECT ok FROM ok)
), wake AS (
    SELECT pg_notify($15, q.queue) FROM (
        SELECT DISTINCT queue FROM ins WHERE status = 'queued' AND scheduled_at <= now()
    ) AS q
)
SELECT (SELECT ok FROM ok) AS ok, (SELECT count(*) FROM wake) AS woken,
       (SELECT jsonb_object_agg(id::text, status) FROM ins) AS statuses

-- name: job_existing
-- Which of the ids $1 are jobs (the error message of a missing parent).
SELECT id::text FROM {schema}.soniq_jobs WHERE id = ANY($1::uuid[])

-- name: workflow_get
SELECT id, name, created_at FROM {schema}.soniq_workflows WHERE id = $1

-- name: workflow_steps
SELECT {_job_columns} FROM {schema}.soniq_jobs AS j WHERE j.workflow_id = $1 ORDER BY j.id

-- name: workflow_list
-- Workflows, newest first, with their step counts per status; $1 a status filter (or NULL)
-- applied to the derived status, $2 the limit.
SELECT * FROM (
    SELECT w.id, w.name, w.created_at, s.steps, s.counts, s.finished_at,
           CASE WHEN s.counts ? 'dead_letter' THEN 'failed'
                WHEN s.active > 0 THEN 'running'
                WHEN s.counts ? 'cancelled' THEN 'cancelled'
                ELSE 'done' END AS status
    FROM {schema}.soniq_workflows AS w
    CROSS JOIN LATERAL (
        SELECT COALESCE(sum(c.n), 0) AS steps, max(c.finished_at) AS finished_at,
               sum(c.n) FILTER (WHERE c.status IN ('waiting', 'queued', 'processing')) AS active,
               jsonb_object_agg(c.status, c.n) AS counts
        FROM (SELECT status, count(*) AS n, max(finished_at) AS finished_at
              FROM {schema}.soniq_jobs WHERE workflow_id = w.id GROUP BY status) AS c
    ) AS s
) AS x
WHERE $1::text IS NULL OR x.status = $1
ORDER BY x.created_at DESC, x.id DESC
LIMIT $2

-- name: workflow_cancel
-- Every waiting or queued step of workflow $1 ends cancelled (the trigger cascades), and
-- with $2 the running ones are asked to abort (job_abort's NOTIFY on channel $3). Returns the ids cancelled here.
WITH c AS (
    UPDATE {schema}.soniq_jobs SET status = 'cancelled', finished_at = now(),
        cancel_reason = 'cancelled'
    WHERE workflow_id = $1 AND status IN ('waiting', 'queued')
    RETURNING id
), a AS (
    UPDATE {schema}.soniq_jobs SET cancel_requested_at = COALESCE(cancel_requested_at, now())
    WHERE $2 AND workflow_id = $1 AND status = 'processing'
    RETURNING id, job_name
), n AS (  -- the abort NOTIFY of job_abort, on the workers' wake-up channel $3
    SELECT pg_notify($3, '!abort:' || id::text || ':' || job_name) FROM a
)
SELECT (SELECT count(*) FROM c) AS cancelled, (SELECT count(*) FROM n) AS aborted

-- name: workflow_count_cancelled
SELECT count(*) FROM {schema}.soniq_jobs WHERE workflow_id = $1 AND status = 'cancelled'
