-- Flow control, part 4: the simple-lane claim of 010 (soniq/limits.py explains the design
-- and why it is correct), with less work per claim and the same rules:
-- * statement 2 takes the locked lanes' jobs in lane order, without sorting them again (it
--   locked at most one lane per job it may take), and tells whether a lane was left with room;
-- * a freed simple lane it does not take again wakes the workers of its queue at once,
--   without first probing the lane for a due job;
-- * the claim statement turns soniq.slots_given_back on before it records its outcomes, and
--   the release trigger no longer fires in that transaction (it returned at once there): the
--   claim gives those slots back itself.

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
-- less its jobs in `processing`, and its due jobs are taken in claim order up to that room,
-- lane after lane in the visiting order, up to p_n in all.
--
-- Other lanes keep counter rows: visited least busy, then least recently served first; each
-- one with a due job is locked FOR NO KEY UPDATE SKIP LOCKED, each job must also get a slot
-- in every row of its limit_more (soniq_gate_take; the first job refused ends the lane's
-- turn: order within a lane is kept), and the lane's `running` is raised by the jobs taken.
--
-- The last simple lane visited is left in the transaction's setting soniq.lane_cursor
-- (["scope", "key"]) for the claim's RETURNING. It wakes the workers on p_channel if a
-- counter row it gave back has room, if it freed a simple lane and did not take it again, or
-- if a lane it held has room and a due job it did not take. Returns
-- the ids; the caller's statement moves them to `processing` in the same transaction.
-- Expired jobs are left to the expiry sweep.
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
                WHEN c.max < 2147483647 AND EXISTS (  -- full, by this snapshot
                    SELECT FROM {schema}.soniq_jobs AS p
                    WHERE p.limit_scope = c.scope AND p.limit_key = c.key
                      AND p.status = 'processing' AND NOT (p.id = ANY(gone))
                    OFFSET c.max - 1)
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
            ), got AS (
                SELECT c.id, lanes.i
                FROM lanes CROSS JOIN LATERAL (
                    SELECT q.id FROM {schema}.soniq_jobs AS q
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
                LIMIT p_n
            )
            SELECT COALESCE(g.ids, '{}'), g.lanes, l.frees,
                   l.room > COALESCE(cardinality(g.ids), 0)
            FROM (SELECT array_agg(got.id) AS ids, array_agg(got.i) AS lanes FROM got) AS g,
                 (SELECT array_agg(lanes.free ORDER BY lanes.i) AS frees,
                         sum(GREATEST(lanes.free, 0)) AS room FROM lanes) AS l
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
    -- or it freed a simple lane and did not take it again (a lane it took again woke them
    -- above if it left room in it)
    IF counters THEN
        wake := EXISTS (
            SELECT FROM (SELECT DISTINCT r.scope, r.key
                         FROM {schema}.soniq_freed_rows(p_freed) AS r) AS f
            CROSS JOIN LATERAL (
                SELECT FROM {schema}.soniq_limits AS l
                WHERE l.scope = f.scope AND l.key = f.key AND l.running < l.max
            ) AS x);
    END IF;
    IF wake THEN
        PERFORM pg_notify(p_channel, q.queue)
        FROM (SELECT DISTINCT f.v->>0 AS queue FROM jsonb_array_elements(p_freed) AS f(v)) AS q;
    ELSIF jsonb_path_exists(p_freed, 'strict $[*] ? (@[3].type() != "array")') THEN
        -- a simple lane it freed and did not take again (it may have passed it by, or met it
        -- held by a claimer whose count did not see the slot free yet): wake the workers of
        -- its queue, whether or not a job waits there (probing for one cost more than the
        -- wake-up it saves)
        PERFORM pg_notify(p_channel, q.queue)
        FROM (SELECT DISTINCT f.v->>0 AS queue FROM jsonb_array_elements(p_freed) AS f(v)
              WHERE jsonb_typeof(f.v->3) IS DISTINCT FROM 'array'
                AND (f.v->>1, f.v->>2) NOT IN (SELECT * FROM unnest(l_scope, l_key))) AS q;
    END IF;
END
$$;

-- The release trigger, not fired at all where the claim gives the slots back itself (it
-- returned at once there): the claim statement turns the setting on before its outcomes.
DROP TRIGGER IF EXISTS soniq_limit_release ON {schema}.soniq_jobs;
CREATE TRIGGER soniq_limit_release
    AFTER UPDATE OF status ON {schema}.soniq_jobs FOR EACH ROW
    WHEN (OLD.status = 'processing' AND NEW.status <> 'processing'
          AND OLD.limit_scope IS NOT NULL
          AND current_setting('soniq.slots_given_back', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION {schema}.soniq_limit_release();
