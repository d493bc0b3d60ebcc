-- Webhooks (docs/webhooks.md): subscriptions, delivery attempts, and the function that turns a
-- job's state change into delivery jobs. The trigger that calls the function is created by
-- `app.webhooks.add` and dropped with the last subscription (sql/webhooks.sql), so a database
-- without subscriptions runs no webhook code at all.

CREATE TABLE IF NOT EXISTS {schema}.soniq_webhooks (
    id              uuid PRIMARY KEY,
    url             text        NOT NULL,
    events          text[]      NOT NULL,
    tasks           text[],
    queues          text[],
    secret          text        NOT NULL,
    prev_secret     text,
    prev_expires_at timestamptz,
    max_attempts    integer     NOT NULL CHECK (max_attempts >= 1),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per delivery attempt (app.webhooks.deliveries).
CREATE TABLE IF NOT EXISTS {schema}.soniq_webhook_deliveries (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id  uuid        NOT NULL REFERENCES {schema}.soniq_webhooks (id) ON DELETE CASCADE,
    message_id  uuid        NOT NULL,  -- the delivery job's id, sent as `webhook-id`
    job_id      uuid,                  -- the job the event is about
    event       text        NOT NULL,
    attempt     integer     NOT NULL,
    status_code integer,
    error       text,
    duration    double precision NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS soniq_webhook_deliveries_webhook_idx
    ON {schema}.soniq_webhook_deliveries (webhook_id, id);

-- Statement trigger function: one delivery job per (event, matching subscription), written by
-- the statement that changed the jobs, in its transaction. The transition tables pair each
-- updated job's old and new row; only transitions that produce an event are kept:
-- done -> job.succeeded, cancelled -> job.cancelled, dead_letter -> job.dead_lettered, and
-- processing -> queued with the attempt spent (a retry after an error, or a rescue) ->
-- job.failed (a snooze or a shutdown return refunds the attempt: no event). Delivery jobs
-- (queue soniq.webhooks) produce none. One set-based INSERT per statement costs about half
-- what a row trigger's INSERT per row does (docs/webhooks.md, "Cost").
CREATE OR REPLACE FUNCTION {schema}.soniq_webhook_events() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    at_text text := to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    -- Wake workers only when no delivery is already due: a NOTIFY per outcome batch halved
    -- the drain (each one serialises a commit and wakes the worker for a claim of its own).
    -- Due deliveries mean workers are at it or will claim on their next cycle; in the race
    -- where one just took the last of them, a worker's poll (poll_interval) picks these up.
    wake boolean := NOT EXISTS (
        SELECT 1 FROM {schema}.soniq_jobs
        WHERE status = 'queued' AND queue = 'soniq.webhooks' AND scheduled_at <= now());
    n integer;
BEGIN
    INSERT INTO {schema}.soniq_jobs (id, job_name, queue, args, max_attempts)
    SELECT
        -- a time-ordered (version 7) UUID, like the ids soniq gives jobs
        encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
            substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
            FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid,
        'soniq.webhooks.deliver', 'soniq.webhooks',
        jsonb_build_object('webhook', w.id, 'event', e.event, 'at', at_text,
                           'job', to_jsonb(e.job) - 'result'),
        w.max_attempts
    FROM (
        SELECT nr AS job, nr.job_name, nr.queue, CASE nr.status
            WHEN 'done' THEN 'job.succeeded'
            WHEN 'cancelled' THEN 'job.cancelled'
            WHEN 'dead_letter' THEN 'job.dead_lettered'
            ELSE 'job.failed' END AS event
        FROM soniq_new AS nr JOIN soniq_old AS o ON o.id = nr.id
        WHERE o.status IS DISTINCT FROM nr.status
          AND nr.queue <> 'soniq.webhooks'
          AND (nr.status IN ('done', 'cancelled', 'dead_letter')
               OR (o.status = 'processing' AND nr.status = 'queued'
                   AND nr.attempts = o.attempts))
        ORDER BY nr.id
    ) AS e
    JOIN {schema}.soniq_webhooks AS w
      ON e.event = ANY (w.events)
     AND (w.tasks IS NULL OR e.job_name = ANY (w.tasks))
     AND (w.queues IS NULL OR e.queue = ANY (w.queues));
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 AND wake THEN
        -- the wake-up an enqueue sends (channel soniq_<schema>, payload the queue)
        PERFORM pg_notify('soniq_' || TG_TABLE_SCHEMA, 'soniq.webhooks');
    END IF;
    RETURN NULL;
END
$$;
