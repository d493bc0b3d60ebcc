-- Flow control, part 2 (soniq/limits.py explains the design and why it is correct): rate
-- limits, execution windows and limits combined on one task.
--
-- A limited job's lane (limit_scope, limit_key) is the counter row its claim is found by, as
-- in 007; limit_more lists the other rows it must also take a slot in, each as
-- [scope, key, max, window_ms]: a task-wide max_concurrency next to a per-key lane, and the
-- job's rate limits. A counter row with window_ms set is a rate limit: its starts (admissions)
-- are rows of soniq_rate_starts, `running` counts them (some may have left the window: they
-- are deleted, and the count lowered, when the count reaches `max`), and full_until tells
-- when a full row next has room.

ALTER TABLE {schema}.soniq_jobs ADD COLUMN IF NOT EXISTS limit_more jsonb;

ALTER TABLE {schema}.soniq_limits ADD COLUMN IF NOT EXISTS window_ms bigint
    CHECK (window_ms IS NULL OR window_ms >= 1);
ALTER TABLE {schema}.soniq_limits ADD COLUMN IF NOT EXISTS full_until timestamptz;
ALTER TABLE {schema}.soniq_limits ADD COLUMN IF NOT EXISTS used_at timestamptz NOT NULL
    DEFAULT now();

-- One row per admission counted by a rate row (written and deleted only by a claim holding
-- that row's lock): an exact sliding window whose cost per admission does not grow with
-- `max` or the window.
CREATE TABLE IF NOT EXISTS {schema}.soniq_rate_starts (
    scope text        NOT NULL,
    key   text        NOT NULL,
    at    timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS soniq_rate_starts_idx ON {schema}.soniq_rate_starts (scope, key, at);

-- Release: every concurrency row the job took a slot in (its lane, and the rows of
-- limit_more without a window) gives the slot back, in the statement that takes the job out
-- of `processing`. Rate rows keep their starts: a start stays in the window. A worker's
-- report-and-claim statement gives back its own jobs' slots itself (soniq_gate_claim, in
-- lock order, before it claims) and marks its transaction so that this trigger skips them.
CREATE OR REPLACE FUNCTION {schema}.soniq_limit_release() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('soniq.slots_given_back', true) = 'on' THEN
        RETURN NULL;
    END IF;
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

-- How long a rate start counts: the window, plus a guard of a tenth of it (at most 50 ms) so
-- that the starts seen by handlers, which begin a few milliseconds after their admission and
-- not all equally late, still never put more than `max` in any window.
CREATE OR REPLACE FUNCTION {schema}.soniq_rate_span(p_window_ms bigint) RETURNS interval
LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_window_ms + LEAST(50, p_window_ms / 10)) * interval '1 millisecond'
$$;

-- Take one slot in each row of p_more, all or none: lock each row FOR NO KEY UPDATE SKIP
-- LOCKED (a row held by another claimer means "not now"), check room on the newest version
-- (what a row lock returns), then raise `running` and, for a rate row, record the start. A
-- rate row whose count reached `max` (or another 256) first deletes its starts that left the
-- window; if it is still full, it records when its oldest start leaves (full_until). A row pruned since the
-- job was enqueued is created again (empty: it has room). Only the claim calls this.
CREATE OR REPLACE FUNCTION {schema}.soniq_gate_take(p_more jsonb) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    g jsonb;
    r record;
    t timestamptz;
    span interval;
    gone integer;
BEGIN
    FOR g IN SELECT v FROM jsonb_array_elements(p_more) AS e(v) LOOP
        SELECT l.max, l.running, l.window_ms INTO r FROM {schema}.soniq_limits AS l
        WHERE l.scope = g->>0 AND l.key = g->>1
        FOR NO KEY UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            INSERT INTO {schema}.soniq_limits (scope, key, max, window_ms)
            VALUES (g->>0, g->>1, (g->>2)::integer, (g->>3)::bigint)
            ON CONFLICT (scope, key) DO NOTHING;
            IF NOT FOUND THEN
                RETURN false;  -- it exists: another claimer holds it this instant
            END IF;
        ELSIF r.window_ms IS NOT NULL AND (r.running >= r.max OR r.running % 256 = 255) THEN
            -- full, or every 256 starts (so a limit that is never reached keeps few rows)
            span := {schema}.soniq_rate_span(r.window_ms);
            DELETE FROM {schema}.soniq_rate_starts
            WHERE scope = g->>0 AND key = g->>1 AND at <= clock_timestamp() - span;
            GET DIAGNOSTICS gone = ROW_COUNT;
            IF r.running - gone >= r.max THEN  -- full: note when its oldest start leaves
                UPDATE {schema}.soniq_limits
                SET running = running - gone,
                    full_until = (SELECT min(s.at) FROM {schema}.soniq_rate_starts AS s
                                  WHERE s.scope = g->>0 AND s.key = g->>1) + span
                WHERE scope = g->>0 AND key = g->>1;
                RETURN false;
            END IF;
            UPDATE {schema}.soniq_limits SET running = running - gone, full_until = NULL
            WHERE scope = g->>0 AND key = g->>1;
        ELSIF r.running >= r.max THEN
            RETURN false;
        END IF;
    END LOOP;
    FOR g IN SELECT v FROM jsonb_array_elements(p_more) AS e(v) LOOP
        UPDATE {schema}.soniq_limits SET running = running + 1, used_at = now()
        WHERE scope = g->>0 AND key = g->>1  -- locked by this transaction above
        RETURNING max, running, window_ms INTO r;
        IF r.window_ms IS NOT NULL THEN
            t := clock_timestamp();
            INSERT INTO {schema}.soniq_rate_starts (scope, key, at) VALUES (g->>0, g->>1, t);
            IF r.running >= r.max THEN  -- now full: wake-up time for the workers
                UPDATE {schema}.soniq_limits
                SET full_until = (SELECT min(s.at) FROM {schema}.soniq_rate_starts AS s
                                  WHERE s.scope = g->>0 AND s.key = g->>1)
                                 + {schema}.soniq_rate_span(r.window_ms)
                WHERE scope = g->>0 AND key = g->>1;
            END IF;
        END IF;
    END LOOP;
    RETURN true;
END
$$;

-- The concurrency rows (scope, key) that the jobs of p_freed ([queue, lane scope, lane key,
-- limit_more] each) took a slot in: each lane, and the rows of limit_more without a window
-- (rate rows keep their starts). A row appears once per job.
CREATE OR REPLACE FUNCTION {schema}.soniq_freed_rows(p_freed jsonb)
RETURNS TABLE (scope text, key text)
LANGUAGE sql IMMUTABLE AS $$
    SELECT f.v->>1, f.v->>2 FROM jsonb_array_elements(p_freed) AS f(v)
    UNION ALL
    SELECT m.v->>0, m.v->>1
    FROM jsonb_array_elements(p_freed) AS f(v),
         jsonb_array_elements(CASE jsonb_typeof(f.v->3) WHEN 'array' THEN f.v->3
                                   ELSE '[]'::jsonb END) AS m(v)
    WHERE m.v->3 = 'null'::jsonb
$$;

-- First give back the slots of p_freed, the limited jobs the calling statement takes out of
-- `processing` ([queue, lane scope, lane key, limit_more] each): rows locked in (scope, key)
-- order, so two workers giving back never deadlock, and before any claim lock is
-- taken (claims only lock with SKIP LOCKED: nothing waits while holding one). Then admit up to p_n due jobs of the lanes p_scopes (queues
-- p_queues, NULL: all; minus the paused p_paused). Lanes are visited least busy, then least
-- recently served first; each one with a due job is locked FOR NO KEY UPDATE SKIP LOCKED (a
-- lane another claimer holds is skipped), its due jobs are taken in claim order while it has
-- room, and its `running` is raised. The lanes p_simple (tasks with no other limit) are done
-- in one statement; in the others each job must also get a slot in every row of its
-- limit_more (soniq_gate_take; the first job refused ends the lane's turn: order within a
-- lane is kept, and the lane goes to the back). If a row it gave back still has room, it
-- wakes the workers on p_channel. Returns the ids; the caller's statement
-- moves them to `processing` in the same transaction. Expired jobs are left to the expiry
-- sweep.
DROP FUNCTION IF EXISTS {schema}.soniq_gate_claim(text[], text[], text[], integer);
CREATE OR REPLACE FUNCTION {schema}.soniq_gate_claim(
    p_scopes text[], p_simple text[], p_queues text[], p_paused text[], p_n integer,
    p_freed jsonb, p_channel text
) RETURNS SETOF uuid
LANGUAGE plpgsql ROWS 10 AS $$  -- a claim's batch: the planner joins its ids by primary key
DECLARE
    cand record;
    lane record;
    job record;
    taken integer := 0;
    admitted integer;
    refused boolean;
BEGIN
    IF p_freed IS NOT NULL THEN
        PERFORM set_config('soniq.slots_given_back', 'on', true);  -- this transaction only
        -- lock the rows in (scope, key) order first, then lower them all in one statement
        PERFORM FROM {schema}.soniq_limits AS l
        WHERE (l.scope, l.key) IN (SELECT r.scope, r.key
                                   FROM {schema}.soniq_freed_rows(p_freed) AS r)
        ORDER BY l.scope, l.key
        FOR NO KEY UPDATE;
        UPDATE {schema}.soniq_limits AS l SET running = GREATEST(l.running - r.n, 0)
        FROM (SELECT f.scope, f.key, count(*)::integer AS n
              FROM {schema}.soniq_freed_rows(p_freed) AS f GROUP BY f.scope, f.key) AS r
        WHERE l.scope = r.scope AND l.key = r.key;
    END IF;
    IF p_simple <> '{}' THEN  -- lanes of tasks with no other limit: one statement for all
        RETURN QUERY
        WITH lanes AS (
            -- in order, lazily: a lane is probed (and locked if it has a due job) only until
            -- p_n are found; the OFFSET keeps the order from being planned away
            SELECT x.scope, x.key, x.free FROM (
                SELECT c.scope, c.key FROM {schema}.soniq_limits AS c
                WHERE c.scope = ANY(p_scopes) AND c.scope = ANY(p_simple) AND c.running < c.max
                ORDER BY c.running, c.used_at, c.scope, c.key
                OFFSET 0
            ) AS o CROSS JOIN LATERAL (
                SELECT l.scope, l.key, l.max - l.running AS free FROM {schema}.soniq_limits AS l
                WHERE l.scope = o.scope AND l.key = o.key AND l.running < l.max
                  AND (SELECT true FROM {schema}.soniq_jobs AS q  -- idle lanes stay unlocked
                       WHERE q.limit_scope = l.scope AND q.limit_key = l.key
                         AND q.status = 'queued' AND q.scheduled_at <= now()
                       LIMIT 1)
                FOR NO KEY UPDATE SKIP LOCKED
            ) AS x
            LIMIT p_n
        ), picked AS (
            SELECT c.id, c.priority, c.scheduled_at, lanes.scope, lanes.key
            FROM lanes CROSS JOIN LATERAL (
                SELECT q.id, q.priority, q.scheduled_at FROM {schema}.soniq_jobs AS q
                WHERE q.limit_scope = lanes.scope AND q.limit_key = lanes.key
                  AND q.status = 'queued' AND q.scheduled_at <= now()
                  AND (q.expires_at IS NULL OR q.expires_at > now())
                  AND (p_queues IS NULL OR q.queue = ANY(p_queues))
                  AND NOT (q.queue = ANY(p_paused))
                ORDER BY q.priority, q.scheduled_at, q.id
                LIMIT lanes.free
                FOR UPDATE SKIP LOCKED
            ) AS c
        ), chosen AS (
            SELECT * FROM picked ORDER BY priority, scheduled_at, id LIMIT p_n
        ), bump AS (
            UPDATE {schema}.soniq_limits AS l SET running = l.running + n.admitted, used_at = now()
            FROM (SELECT chosen.scope, chosen.key, count(*)::integer AS admitted FROM chosen
                  GROUP BY chosen.scope, chosen.key) AS n
            WHERE l.scope = n.scope AND l.key = n.key
        )
        SELECT chosen.id FROM chosen;
        GET DIAGNOSTICS taken = ROW_COUNT;
    END IF;
    FOR cand IN  -- the other lanes: job by job, each taking its slots in limit_more
        SELECT l.scope, l.key FROM {schema}.soniq_limits AS l
        WHERE NOT (p_scopes <@ p_simple)  -- (none: no scan)
          AND l.scope = ANY(p_scopes) AND NOT (l.scope = ANY(p_simple)) AND l.running < l.max
        ORDER BY l.running, l.used_at, l.scope, l.key
    LOOP
        EXIT WHEN taken >= p_n;
        SELECT l.max - l.running AS free INTO lane FROM {schema}.soniq_limits AS l
        WHERE l.scope = cand.scope AND l.key = cand.key AND l.running < l.max
          AND (SELECT true FROM {schema}.soniq_jobs AS q
               WHERE q.limit_scope = cand.scope AND q.limit_key = cand.key
                 AND q.status = 'queued' AND q.scheduled_at <= now()
               LIMIT 1)
        FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;  -- idle, full by now, or another claimer holds it
        admitted := 0;
        refused := false;
        FOR job IN
            SELECT q.id, q.limit_more FROM {schema}.soniq_jobs AS q
            WHERE q.limit_scope = cand.scope AND q.limit_key = cand.key AND q.status = 'queued'
              AND q.scheduled_at <= now() AND (q.expires_at IS NULL OR q.expires_at > now())
              AND (p_queues IS NULL OR q.queue = ANY(p_queues))
              AND NOT (q.queue = ANY(p_paused))
            ORDER BY q.priority, q.scheduled_at, q.id
            LIMIT LEAST(lane.free, p_n - taken)
            FOR UPDATE SKIP LOCKED
        LOOP
            IF job.limit_more IS NOT NULL AND NOT {schema}.soniq_gate_take(job.limit_more) THEN
                refused := true;
                EXIT;
            END IF;
            admitted := admitted + 1;
            RETURN NEXT job.id;
        END LOOP;
        IF admitted > 0 OR refused THEN
            UPDATE {schema}.soniq_limits
            SET running = running + admitted, used_at = now()
            WHERE scope = cand.scope AND key = cand.key;
            taken := taken + admitted;
        END IF;
    END LOOP;
    IF p_freed IS NOT NULL AND EXISTS (
        SELECT FROM {schema}.soniq_limits AS l
        WHERE (l.scope, l.key) IN (SELECT r.scope, r.key
                                   FROM {schema}.soniq_freed_rows(p_freed) AS r)
          AND l.running < l.max
    ) THEN
        -- a row it gave back still has room after this claim: wake the other workers
        PERFORM pg_notify(p_channel, q.queue)
        FROM (SELECT DISTINCT f.v->>0 AS queue FROM jsonb_array_elements(p_freed) AS f(v)) AS q;
    END IF;
END
$$;
