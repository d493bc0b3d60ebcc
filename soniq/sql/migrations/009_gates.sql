-- Flow control, part 2 (soniq/limits.py explains the design and why it is correct): rate
-- limits, execution windows and limits combined on one task.
--
-- A limited job's lane (limit_scope, limit_key) is the counter row its claim is found by, as
-- in 007; limit_more lists the other rows it must also take a slot in, each as
-- [scope, key, max, window_ms]: a task-wide max_concurrency next to a per-key lane, and the
-- job's rate limits. A counter row with window_ms set is a rate limit: `starts` holds the
-- admissions of the last window (at most `max` of them), full_until when it next has room.

ALTER TABLE {schema}.soniq_jobs ADD COLUMN IF NOT EXISTS limit_more jsonb;

ALTER TABLE {schema}.soniq_limits ADD COLUMN IF NOT EXISTS window_ms bigint
    CHECK (window_ms IS NULL OR window_ms >= 1);
ALTER TABLE {schema}.soniq_limits ADD COLUMN IF NOT EXISTS starts timestamptz[] NOT NULL
    DEFAULT '{}';
ALTER TABLE {schema}.soniq_limits ADD COLUMN IF NOT EXISTS full_until timestamptz;
ALTER TABLE {schema}.soniq_limits ADD COLUMN IF NOT EXISTS used_at timestamptz NOT NULL
    DEFAULT now();

-- Release: every concurrency row the job took a slot in (its lane, and the rows of
-- limit_more without a window) gives the slot back, in the statement that takes the job out
-- of `processing`. Rate rows keep their starts: a start stays in the window.
CREATE OR REPLACE FUNCTION {schema}.soniq_limit_release() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {schema}.soniq_limits SET running = GREATEST(running - 1, 0)
    WHERE scope = OLD.limit_scope AND key = OLD.limit_key;
    IF OLD.limit_more IS NOT NULL THEN
        UPDATE {schema}.soniq_limits AS l SET running = GREATEST(l.running - 1, 0)
        FROM jsonb_array_elements(OLD.limit_more) AS g(v)
        WHERE l.scope = g.v->>0 AND l.key = g.v->>1 AND l.window_ms IS NULL;
    END IF;
    -- a slot is free: wake the workers now rather than at their next poll
    PERFORM pg_notify('soniq_' || TG_TABLE_SCHEMA, OLD.queue);
    RETURN NULL;
END
$$;

-- Take one slot in each row of p_more, all or none: lock each row FOR NO KEY UPDATE SKIP
-- LOCKED (a row held by another claimer means "not now"), check room on the newest version
-- (what a row lock returns), then raise `running` or record the start. A row pruned since the
-- job was enqueued is created again (empty: it has room). Only the claim calls this.
CREATE OR REPLACE FUNCTION {schema}.soniq_gate_take(p_more jsonb) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    g jsonb;
    r record;
    t timestamptz;
    span interval;
    live timestamptz[];
BEGIN
    FOR g IN SELECT v FROM jsonb_array_elements(p_more) AS e(v) LOOP
        SELECT l.max, l.running, l.window_ms, l.starts INTO r FROM {schema}.soniq_limits AS l
        WHERE l.scope = g->>0 AND l.key = g->>1
        FOR NO KEY UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            INSERT INTO {schema}.soniq_limits (scope, key, max, window_ms)
            VALUES (g->>0, g->>1, (g->>2)::integer, (g->>3)::bigint)
            ON CONFLICT (scope, key) DO NOTHING;
            IF NOT FOUND THEN
                RETURN false;  -- it exists: another claimer holds it this instant
            END IF;
        ELSIF r.window_ms IS NULL THEN
            IF r.running >= r.max THEN
                RETURN false;
            END IF;
        ELSIF (SELECT count(*) FROM unnest(r.starts) AS s(at)
               WHERE s.at > clock_timestamp() - r.window_ms * interval '1 millisecond')
              >= r.max THEN
            RETURN false;
        END IF;
    END LOOP;
    FOR g IN SELECT v FROM jsonb_array_elements(p_more) AS e(v) LOOP
        SELECT l.max, l.window_ms, l.starts INTO r FROM {schema}.soniq_limits AS l
        WHERE l.scope = g->>0 AND l.key = g->>1;  -- locked by this transaction above
        IF r.window_ms IS NULL THEN
            UPDATE {schema}.soniq_limits SET running = running + 1, used_at = now()
            WHERE scope = g->>0 AND key = g->>1;
        ELSE
            t := clock_timestamp();
            span := r.window_ms * interval '1 millisecond';
            live := ARRAY(SELECT s.at FROM unnest(r.starts || t) AS s(at)
                          WHERE s.at > t - span ORDER BY s.at);
            UPDATE {schema}.soniq_limits
            SET starts = live, used_at = now(),
                full_until = CASE WHEN cardinality(live) >= r.max
                                  THEN live[cardinality(live) - r.max + 1] + span END
            WHERE scope = g->>0 AND key = g->>1;
        END IF;
    END LOOP;
    RETURN true;
END
$$;

-- Admit up to p_n due jobs of the lanes p_scopes (queues p_queues, NULL: all; minus the
-- paused p_paused): lock each lane with room and a due job FOR NO KEY UPDATE SKIP LOCKED, take
-- its due jobs in claim order while the lane has room and every row of the job's limit_more
-- gives a slot (the first job refused ends the lane's turn: order within a lane is kept),
-- raise the lane's `running`, and return the ids. The caller's statement moves them to
-- `processing` in the same transaction. Expired jobs are left to the expiry sweep.
CREATE OR REPLACE FUNCTION {schema}.soniq_gate_claim(
    p_scopes text[], p_queues text[], p_paused text[], p_n integer
) RETURNS SETOF uuid
LANGUAGE plpgsql AS $$
DECLARE
    lane record;
    job record;
    taken integer := 0;
    admitted integer;
BEGIN
    FOR lane IN
        SELECT l.scope, l.key, l.max - l.running AS free FROM {schema}.soniq_limits AS l
        WHERE l.scope = ANY(p_scopes) AND l.running < l.max
          AND EXISTS (
              SELECT 1 FROM {schema}.soniq_jobs AS q
              WHERE q.limit_scope = l.scope AND q.limit_key = l.key AND q.status = 'queued'
                AND q.scheduled_at <= now())
        ORDER BY l.running, l.used_at, l.scope, l.key
        FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        admitted := 0;
        FOR job IN
            SELECT q.id, q.limit_more FROM {schema}.soniq_jobs AS q
            WHERE q.limit_scope = lane.scope AND q.limit_key = lane.key AND q.status = 'queued'
              AND q.scheduled_at <= now() AND (q.expires_at IS NULL OR q.expires_at > now())
              AND (p_queues IS NULL OR q.queue = ANY(p_queues))
              AND NOT (q.queue = ANY(p_paused))
            ORDER BY q.priority, q.scheduled_at, q.id
            LIMIT LEAST(lane.free, p_n - taken)
            FOR UPDATE SKIP LOCKED
        LOOP
            IF job.limit_more IS NOT NULL AND NOT {schema}.soniq_gate_take(job.limit_more) THEN
                EXIT;
            END IF;
            admitted := admitted + 1;
            RETURN NEXT job.id;
        END LOOP;
        IF admitted > 0 THEN
            UPDATE {schema}.soniq_limits
            SET running = running + admitted, used_at = now()
            WHERE scope = lane.scope AND key = lane.key;
            taken := taken + admitted;
            EXIT WHEN taken >= p_n;
        END IF;
    END LOOP;
END
$$;
