-- soniq schema, version 8: continuations and workflows (docs/workflows.md).
-- A job enqueued with after= is `waiting` (never seen by the claim, which reads only
-- `queued`) with `pending_parents` counting its parents not yet done. The edges live in
-- soniq_job_deps (no foreign key: pruning stays cheap). When a parent with dependents
-- (`has_dependents`) reaches a final status, a row trigger gated by WHEN releases or cancels
-- its waiting children in the same transaction; jobs without dependents pay nothing (an AFTER
-- trigger's WHEN is checked before any event is queued). Cancels recurse through the same
-- trigger, down every chain. Only nullable columns or constant defaults: no table rewrite.

ALTER TABLE {schema}.soniq_jobs
    ADD COLUMN IF NOT EXISTS pending_parents integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS has_dependents  boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS parent_results  jsonb,
    ADD COLUMN IF NOT EXISTS workflow_id     uuid,
    ADD COLUMN IF NOT EXISTS step            text;

ALTER TABLE {schema}.soniq_jobs DROP CONSTRAINT IF EXISTS soniq_jobs_status_check;
ALTER TABLE {schema}.soniq_jobs ADD CONSTRAINT soniq_jobs_status_check
    CHECK (status IN ('queued', 'processing', 'done', 'cancelled', 'dead_letter', 'waiting'));

CREATE INDEX IF NOT EXISTS soniq_jobs_workflow_idx
    ON {schema}.soniq_jobs (workflow_id) WHERE workflow_id IS NOT NULL;

-- parent -> child; alias is the key of the parent's result in the child's parent_results
-- (the parent's step name in a workflow, else its id).
CREATE TABLE IF NOT EXISTS {schema}.soniq_job_deps (
    parent_id uuid NOT NULL,
    child_id  uuid NOT NULL,
    alias     text NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX IF NOT EXISTS soniq_job_deps_child_idx ON {schema}.soniq_job_deps (child_id);

-- status/finished_at are written once, when the workflow's last step ends (the trigger
-- below); get_workflow derives the live status from the steps.
CREATE TABLE IF NOT EXISTS {schema}.soniq_workflows (
    id          uuid PRIMARY KEY,
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    status      text,
    finished_at timestamptz
);

-- A parent reached a final status: `done` counts it for each waiting child (the last one
-- queues the child, copies the results in and wakes workers); `dead_letter`/`cancelled`
-- cancels the waiting children, which fires this trigger on them in turn. Two parents ending
-- at once in two transactions serialise on the child's row lock, and the second UPDATE
-- re-reads the child as the first left it, so the counter moves once per parent.
CREATE OR REPLACE FUNCTION {schema}.soniq_release_children() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    q text;
    reason text;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status = 'done' THEN
        FOR q IN
            WITH upd AS (
                UPDATE {schema}.soniq_jobs AS c
                SET pending_parents = c.pending_parents - 1,
                    parent_results = COALESCE(c.parent_results, '{}'::jsonb)
                                     || jsonb_build_object(d.alias, NEW.result),
                    status = CASE WHEN c.pending_parents <= 1 THEN 'queued' ELSE 'waiting' END,
                    scheduled_at = CASE WHEN c.pending_parents <= 1
                                        THEN greatest(c.scheduled_at, now())
                                        ELSE c.scheduled_at END
                FROM {schema}.soniq_job_deps AS d
                WHERE d.parent_id = NEW.id AND c.id = d.child_id AND c.status = 'waiting'
                RETURNING c.queue, c.status, c.scheduled_at
            )
            SELECT DISTINCT queue FROM upd WHERE status = 'queued' AND scheduled_at <= now()
        LOOP
            PERFORM pg_notify('soniq_' || TG_TABLE_SCHEMA, q);
        END LOOP;
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        reason := 'parent_cancelled';
        NEW := OLD;
    ELSIF NEW.status = 'dead_letter' THEN
        reason := 'parent_failed';
    ELSIF NEW.cancel_reason IN ('parent_failed', 'parent_cancelled') THEN
        reason := NEW.cancel_reason;  -- one cascade carries the reason that started it
    ELSE
        reason := 'parent_cancelled';
    END IF;
    UPDATE {schema}.soniq_jobs AS c
    SET status = 'cancelled', cancel_reason = reason, finished_at = now()
    FROM {schema}.soniq_job_deps AS d
    WHERE d.parent_id = NEW.id AND c.id = d.child_id AND c.status = 'waiting';
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS soniq_jobs_release_children ON {schema}.soniq_jobs;
CREATE TRIGGER soniq_jobs_release_children
    AFTER UPDATE ON {schema}.soniq_jobs
    FOR EACH ROW
    WHEN (NEW.has_dependents AND OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('done', 'dead_letter', 'cancelled'))
    EXECUTE FUNCTION {schema}.soniq_release_children();

-- A parent deleted before it ended (delete_job of a queued one) cancels its waiting children
-- instead of stranding them.
DROP TRIGGER IF EXISTS soniq_jobs_release_children_deleted ON {schema}.soniq_jobs;
CREATE TRIGGER soniq_jobs_release_children_deleted
    AFTER DELETE ON {schema}.soniq_jobs
    FOR EACH ROW
    WHEN (OLD.has_dependents AND OLD.status NOT IN ('done', 'dead_letter', 'cancelled'))
    EXECUTE FUNCTION {schema}.soniq_release_children();

-- The one place where a workflow's end is detected: a step reached a final status. The
-- workflow's row is locked first, and the look for unfinished steps runs after the lock (a
-- fresh snapshot per statement), so of two last steps ending at once in two transactions the
-- second sees the first's commit: the end is recorded, and its webhook event
-- (workflow.succeeded / workflow.failed) written, exactly once. Jobs outside workflows pay
-- nothing (WHEN). Events go to subscriptions without task/queue filters, as delivery jobs
-- like the job events of migration 006.
CREATE OR REPLACE FUNCTION {schema}.soniq_workflow_end() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    st text;
    ev text;
    wf record;
    n integer;
BEGIN
    PERFORM 1 FROM {schema}.soniq_workflows
    WHERE id = NEW.workflow_id AND finished_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM {schema}.soniq_jobs WHERE workflow_id = NEW.workflow_id
               AND status IN ('waiting', 'queued', 'processing')) THEN
        RETURN NULL;
    END IF;
    SELECT CASE WHEN bool_or(status = 'dead_letter') THEN 'failed'
                WHEN bool_or(status = 'cancelled') THEN 'cancelled' ELSE 'done' END
    INTO st FROM {schema}.soniq_jobs WHERE workflow_id = NEW.workflow_id;
    UPDATE {schema}.soniq_workflows SET status = st, finished_at = now()
    WHERE id = NEW.workflow_id RETURNING * INTO wf;
    ev := CASE st WHEN 'done' THEN 'workflow.succeeded' WHEN 'failed' THEN 'workflow.failed' END;
    IF ev IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO {schema}.soniq_jobs (id, job_name, queue, args, max_attempts)
    SELECT
        encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
            substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
            FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid,
        'soniq.webhooks.deliver', 'soniq.webhooks',
        jsonb_build_object(
            'webhook', w.id, 'event', ev,
            'at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'job', jsonb_build_object('id', wf.id, 'name', wf.name, 'status', wf.status,
                                      'created_at', wf.created_at,
                                      'finished_at', wf.finished_at)),
        w.max_attempts
    FROM {schema}.soniq_webhooks AS w
    WHERE ev = ANY (w.events) AND w.tasks IS NULL AND w.queues IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('soniq_' || TG_TABLE_SCHEMA, 'soniq.webhooks');
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS soniq_jobs_workflow_end ON {schema}.soniq_jobs;
CREATE TRIGGER soniq_jobs_workflow_end
    AFTER UPDATE ON {schema}.soniq_jobs
    FOR EACH ROW
    WHEN (NEW.workflow_id IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('done', 'dead_letter', 'cancelled'))
    EXECUTE FUNCTION {schema}.soniq_workflow_end();
