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

CREATE TABLE IF NOT EXISTS {schema}.soniq_workflows (
    id         uuid PRIMARY KEY,
    name       text,
    created_at timestamptz NOT NULL DEFAULT now()
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
