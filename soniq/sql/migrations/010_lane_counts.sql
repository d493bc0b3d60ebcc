-- Flow control, part 3 (soniq/limits.py explains the design and why it is correct): a
-- "simple" lane (a task whose only limit is max_concurrency or max_concurrency_per_key; its
-- jobs have limit_more NULL) keeps no counter. What runs in it is the number of its jobs in
-- `processing`, read through the index below by a claim that holds the lane's
-- transaction-level advisory lock; a job leaving `processing` frees its slot by that alone,
-- so a job of a simple lane costs no counter write at all (it used to cost four: lock and
-- raise at the claim, lock and lower at the release). Lanes of other tasks, and the rows of
-- limit_more, keep their counters as in 009.

-- The running jobs of each lane (limited jobs only: plain jobs never enter it).
CREATE INDEX IF NOT EXISTS soniq_jobs_lane_busy_idx
    ON {schema}.soniq_jobs (limit_scope, limit_key)
    WHERE status = 'processing' AND limit_scope IS NOT NULL;

-- Release: only jobs with limit_more took counter slots (their lane's and those rows'); a
-- job of a simple lane frees its slot by leaving `processing`. Both wake the workers.
CREATE OR REPLACE FUNCTION {schema}.soniq_limit_release() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('soniq.slots_given_back', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF OLD.limit_more IS NOT NULL THEN
        UPDATE {schema}.soniq_limits SET running = GREATEST(running - 1, 0)
        WHERE scope = OLD.limit_scope AND key = OLD.limit_key;
        UPDATE {schema}.soniq_limits AS l SET running = GREATEST(l.running - 1, 0)
        FROM jsonb_array_elements(OLD.limit_more) AS g(v)
        WHERE l.scope = g.v->>0 AND l.key = g.v->>1 AND l.window_ms IS NULL;
    END IF;
    -- a slot is free: wake the workers now rather than at their next poll
    PERFORM pg_notify('soniq_' || TG_TABLE_SCHEMA, OLD.queue);
    RETURN NULL;
END
$$;

-- The counter rows (scope, key) that the jobs of p_freed ([queue, lane scope, lane key,
-- limit_more] each) took a slot in: for a job with limit_more, its lane and the rows of
-- limit_more without a window (rate rows keep their starts). Jobs of simple lanes took
-- none. A row appears once per job.
CREATE OR REPLACE FUNCTION {schema}.soniq_freed_rows(p_freed jsonb)
RETURNS TABLE (scope text, key text)
LANGUAGE sql IMMUTABLE AS $$
    SELECT f.v->>1, f.v->>2 FROM jsonb_array_elements(p_freed) AS f(v)
    WHERE jsonb_typeof(f.v->3) = 'array'
    UNION ALL
    SELECT m.v->>0, m.v->>1
    FROM jsonb_array_elements(p_freed) AS f(v),
         jsonb_array_elements(CASE jsonb_typeof(f.v->3) WHEN 'array' THEN f.v->3
                                   ELSE '[]'::jsonb END) AS m(v)
    WHERE m.v->3 = 'null'::jsonb
$$;

-- First give back the counter slots of p_freed, the limited jobs the calling statement
-- takes out of `processing` ([queue, lane scope, lane key, limit_more] each; p_gone:
-- their ids, NULL from a worker of the previous version): rows
-- locked in (scope, key) order, so two workers giving back never deadlock, and before any
-- claim lock is taken (claims only take locks that do not wait). Then admit up to p_n due
-- jobs of the lanes p_scopes (queues p_queues, NULL: all; minus the paused p_paused).
--
-- Simple lanes (p_ring: their scopes, in the calling worker's round-robin order, starting
-- after key p_after of the first scope): visited in that order; a lane with a due job and,
-- by the statement's snapshot, room is locked with pg_try_advisory_xact_lock (taken: the
-- lane is this claimer's until it commits; not taken: another claimer has it, skip it), up
-- to p_n lanes. Then, in a new statement (a new snapshot, taken after every lock: it sees
-- every job admitted by whoever held a lane before), each locked lane's room is its max
-- less its jobs in `processing`, and its due jobs are taken in claim order up to that room.
--
-- Other lanes keep counter rows: visited least busy, then least recently served first; each
-- one with a due job is locked FOR NO KEY UPDATE SKIP LOCKED, each job must also get a slot
-- in every row of its limit_more (soniq_gate_take; the first job refused ends the lane's
-- turn: order within a lane is kept), and the lane's `running` is raised by the jobs taken.
--
-- The last simple lane visited is left in the transaction's setting soniq.lane_cursor
-- (["scope", "key"]) for the claim's RETURNING. If a lane or row it gave back, or a lane it
-- held, has room and a due job it did not take, it wakes the workers on p_channel. Returns
-- the ids; the caller's statement moves them to `processing` in the same transaction.
-- Expired jobs are left to the expiry sweep.
DROP FUNCTION IF EXISTS {schema}.soniq_gate_claim(
    text[], text[], text[], text[], integer, jsonb, text);
DROP FUNCTION IF EXISTS {schema}.soniq_gate_claim(
    text[], text[], text[], text[], integer, jsonb, text, text);
CREATE OR REPLACE FUNCTION {schema}.soniq_gate_claim(
    p_scopes text[], p_ring text[], p_queues text[], p_paused text[], p_n integer,
    p_freed jsonb, p_channel text, p_after text, p_gone uuid[]
) RETURNS SETOF uuid
LANGUAGE plpgsql ROWS 10 AS $$  -- a claim's batch: the planner joins its ids by primary key
DECLARE
    gone uuid[] := COALESCE(p_gone, '{}');
    counters boolean;  -- some job of p_freed took counter slots
    ignored text;
    l_scope text[];
    l_key text[];
    l_max integer[];
    l_free integer[];
    picked uuid[] := '{}';
    picked_lane bigint[];
    left_room boolean;  -- a lane it locked still has room after its picks
    wake boolean := false;
    one uuid;
    cand record;
    lane record;
    job record;
    taken integer := 0;
    admitted integer;
    refused boolean;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- the simple-lane count below must see what commits after this statement began
        RAISE EXCEPTION 'soniq claims run under READ COMMITTED, not %',
            current_setting('transaction_isolation')
            USING HINT = 'leave default_transaction_isolation at read committed for soniq''s '
                         'worker connections';
    END IF;
    -- (plain expressions where possible: PL/pgSQL evaluates them without a query)
    counters := COALESCE(
        jsonb_path_exists(p_freed, 'strict $[*] ? (@[3].type() == "array")'), false);
    IF p_freed IS NOT NULL THEN
        -- this transaction only: the release trigger leaves these jobs to this function
        ignored := set_config('soniq.slots_given_back', 'on', true);
    END IF;
    IF counters THEN
        -- lock the counter rows in (scope, key) order first, then lower them all in one
        -- statement (jobs of simple lanes took no counter slot: nothing to lock for them)
        PERFORM FROM (SELECT DISTINCT r.scope, r.key
                      FROM {schema}.soniq_freed_rows(p_freed) AS r
                      ORDER BY r.scope, r.key OFFSET 0) AS f
        CROSS JOIN LATERAL (
            SELECT FROM {schema}.soniq_limits AS l
            WHERE l.scope = f.scope AND l.key = f.key
            FOR NO KEY UPDATE
        ) AS x;
        UPDATE {schema}.soniq_limits AS l SET running = GREATEST(l.running - r.n, 0)
        FROM (SELECT f.scope, f.key, count(*)::integer AS n
              FROM {schema}.soniq_freed_rows(p_freed) AS f GROUP BY f.scope, f.key) AS r
        WHERE l.scope = r.scope AND l.key = r.key;
    END IF;
    IF p_ring <> '{}' THEN
        -- 1. lock up to p_n simple lanes with a due job and room, in round-robin order (the
        -- CASE makes the lock the last test: only lanes that pass the others are locked; the
        -- aggregates take the lanes in the order they were visited)
        SELECT array_agg(v.scope), array_agg(v.key), array_agg(v.max)
        INTO l_scope, l_key, l_max
        FROM (
            SELECT c.scope, c.key, c.max FROM (
                (SELECT c.scope, c.key, c.max FROM {schema}.soniq_limits AS c
                 WHERE c.scope = p_ring[1] AND c.key > p_after  -- (an index range)
                 ORDER BY c.key)
                UNION ALL
                (SELECT c.scope, c.key, c.max
                 FROM unnest(p_ring[2:]) WITH ORDINALITY AS s(scope, i)
                 CROSS JOIN LATERAL (
                     SELECT c.scope, c.key, c.max FROM {schema}.soniq_limits AS c
                     WHERE c.scope = s.scope ORDER BY c.key
                 ) AS c)
                UNION ALL
                (SELECT c.scope, c.key, c.max FROM {schema}.soniq_limits AS c
                 WHERE c.scope = p_ring[1] AND (p_after IS NULL OR c.key <= p_after)
                 ORDER BY c.key)
            ) AS c
            WHERE CASE
                WHEN NOT COALESCE((  -- the lane's next due job, in a queue this claim serves
                    SELECT (p_queues IS NULL OR q.queue = ANY(p_queues))
                           AND NOT (q.queue = ANY(p_paused))
                    FROM {schema}.soniq_jobs AS q
                    WHERE q.limit_scope = c.scope AND q.limit_key = c.key
                      AND q.status = 'queued' AND q.scheduled_at <= now()
                    ORDER BY q.priority, q.scheduled_at, q.id
                    LIMIT 1), false)
                THEN false
                WHEN c.max < 2147483647 AND (  -- busy, by this snapshot
                    SELECT count(*) FROM (
                        SELECT FROM {schema}.soniq_jobs AS p
                        WHERE p.limit_scope = c.scope AND p.limit_key = c.key
                          AND p.status = 'processing' AND NOT (p.id = ANY(gone))
                        LIMIT c.max) AS z) >= c.max
                THEN false
                ELSE pg_try_advisory_xact_lock(hashtext('{schema} lanes'),
                                               hashtext(c.scope || '/' || c.key))
            END
            LIMIT p_n
        ) AS v;
        -- 2. a new snapshot: each locked lane's room, and its due jobs up to that room
        IF l_scope IS NOT NULL THEN
            -- the calling worker's next claim goes on after the last lane visited
            ignored := set_config('soniq.lane_cursor', jsonb_build_array(
                l_scope[cardinality(l_scope)], l_key[cardinality(l_key)])::text, true);
            WITH lanes AS MATERIALIZED (
                -- room: max less the lane's jobs in `processing` (none counted for a lane
                -- without a maximum: a task held by an execution window only)
                SELECT u.i, u.scope, u.key, u.max - (
                    SELECT count(*) FROM (
                        SELECT FROM {schema}.soniq_jobs AS p
                        WHERE u.max < 2147483647
                          AND p.limit_scope = u.scope AND p.limit_key = u.key
                          AND p.status = 'processing' AND NOT (p.id = ANY(gone))
                        LIMIT u.max) AS z) AS free
                FROM unnest(l_scope, l_key, l_max) WITH ORDINALITY AS u(scope, key, max, i)
            ), picked AS (
                SELECT c.id, c.priority, c.scheduled_at, lanes.i
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
                WHERE lanes.free > 0
            ), chosen AS (
                SELECT * FROM picked ORDER BY priority, scheduled_at, id LIMIT p_n
            )
            SELECT COALESCE((SELECT array_agg(chosen.id) FROM chosen), '{}'),
                   (SELECT array_agg(chosen.i) FROM chosen),
                   (SELECT array_agg(lanes.free ORDER BY lanes.i) FROM lanes),
                   EXISTS (SELECT FROM lanes WHERE lanes.free > (
                       SELECT count(*) FROM chosen WHERE chosen.i = lanes.i))
            INTO picked, picked_lane, l_free, left_room;
            taken := cardinality(picked);
            FOREACH one IN ARRAY picked LOOP
                RETURN NEXT one;
            END LOOP;
            IF left_room THEN
                -- a lane it held with room left and a due job it did not take (its batch
                -- was full): a claimer that met the lane locked skipped it, so wake them
                PERFORM pg_notify(p_channel, x.queue)
                FROM unnest(l_scope, l_key, l_free) WITH ORDINALITY AS u(scope, key, free, i)
                CROSS JOIN LATERAL (
                    SELECT q.queue FROM {schema}.soniq_jobs AS q
                    WHERE q.limit_scope = u.scope AND q.limit_key = u.key
                      AND q.status = 'queued' AND q.scheduled_at <= now()
                      AND NOT (q.id = ANY(picked))
                    LIMIT 1
                ) AS x
                WHERE u.free > (SELECT count(*) FROM unnest(picked_lane) AS t(i)
                                WHERE t.i = u.i);
            END IF;
        END IF;
    END IF;
    IF NOT (p_scopes <@ p_ring) THEN  -- lanes that keep counters
        FOR cand IN  -- the other lanes: job by job, each taking its slots in limit_more
            SELECT l.scope, l.key FROM {schema}.soniq_limits AS l
            WHERE l.scope = ANY(p_scopes) AND NOT (l.scope = ANY(p_ring)) AND l.running < l.max
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
    END IF;
    -- wake the other workers if a counter row it gave back still has room after this claim,
    -- or a simple lane it freed and did not take again has a due job (a lane it took again
    -- woke them above if it left room in it); each query only when it can find something
    IF counters THEN
        wake := EXISTS (
            SELECT FROM (SELECT DISTINCT r.scope, r.key
                         FROM {schema}.soniq_freed_rows(p_freed) AS r) AS f
            CROSS JOIN LATERAL (
                SELECT FROM {schema}.soniq_limits AS l
                WHERE l.scope = f.scope AND l.key = f.key AND l.running < l.max
            ) AS x);
    END IF;
    IF NOT wake AND jsonb_path_exists(p_freed, 'strict $[*] ? (@[3].type() != "array")') THEN
        wake := EXISTS (
            SELECT FROM (SELECT DISTINCT f.v->>1 AS scope, f.v->>2 AS key
                         FROM jsonb_array_elements(p_freed) AS f(v)
                         WHERE jsonb_typeof(f.v->3) IS DISTINCT FROM 'array') AS f
            CROSS JOIN LATERAL (  -- (LIMIT: probe the lane's index, never join the queue)
                SELECT FROM {schema}.soniq_jobs AS q
                WHERE q.limit_scope = f.scope AND q.limit_key = f.key
                  AND q.status = 'queued' AND q.scheduled_at <= now()
                LIMIT 1
            ) AS x
            WHERE (f.scope, f.key) NOT IN (SELECT * FROM unnest(l_scope, l_key)));
    END IF;
    IF wake THEN
        PERFORM pg_notify(p_channel, q.queue)
        FROM (SELECT DISTINCT f.v->>0 AS queue FROM jsonb_array_elements(p_freed) AS f(v)) AS q;
    END IF;
END
$$;

-- Workers of the previous version call the seven-argument form: the same claim, from the
-- start of their ring, so both versions admit by the same rules during a rolling upgrade.
CREATE OR REPLACE FUNCTION {schema}.soniq_gate_claim(
    p_scopes text[], p_ring text[], p_queues text[], p_paused text[], p_n integer,
    p_freed jsonb, p_channel text
) RETURNS SETOF uuid
LANGUAGE sql ROWS 10 AS $$
    SELECT {schema}.soniq_gate_claim(p_scopes, p_ring, p_queues, p_paused, p_n, p_freed,
                                     p_channel, NULL::text, NULL::uuid[])
$$;

-- Counters as this version keeps them: a concurrency row counts the running jobs that took a
-- counter slot in it (jobs with limit_more: in their lane and in their limit_more rows);
-- running jobs of simple lanes no longer count there. Claims of the previous version wait on
-- the table lock, so the count is exact when it commits.
LOCK TABLE {schema}.soniq_limits IN SHARE ROW EXCLUSIVE MODE;
UPDATE {schema}.soniq_limits AS l SET running = n.running
FROM (
    SELECT c.scope, c.key, count(j.id)::integer AS running
    FROM {schema}.soniq_limits AS c
    LEFT JOIN (
        SELECT j.id, j.limit_scope AS scope, j.limit_key AS key
        FROM {schema}.soniq_jobs AS j
        WHERE j.status = 'processing' AND j.limit_more IS NOT NULL
        UNION ALL
        SELECT j.id, g.v->>0, g.v->>1
        FROM {schema}.soniq_jobs AS j, jsonb_array_elements(j.limit_more) AS g(v)
        WHERE j.status = 'processing' AND j.limit_more IS NOT NULL
    ) AS j ON j.scope = c.scope AND j.key = c.key
    WHERE c.window_ms IS NULL
    GROUP BY c.scope, c.key
) AS n
WHERE l.scope = n.scope AND l.key = n.key AND l.running <> n.running;
