-- Webhooks: subscriptions, their trigger, delivery attempts. Run by soniq/webhooks/store.py.
-- "{schema}" is replaced by the configured (validated, quoted) schema name.

-- name: webhook_lock
-- Serialises add/remove, so the trigger exists exactly while a subscription does.
SELECT pg_advisory_xact_lock($1)

-- name: webhook_insert
INSERT INTO {schema}.soniq_webhooks (id, url, events, tasks, queues, secret, max_attempts)
VALUES ($1, $2, $3, $4, $5, $6, $7)

-- name: webhook_trigger_exists
SELECT EXISTS (
    SELECT 1 FROM pg_trigger
    WHERE tgname = 'soniq_webhook_events' AND tgrelid = '{schema}.soniq_jobs'::regclass
)

-- name: webhook_trigger_create
-- One call per UPDATE statement of soniq_jobs, with its old and new rows (see the function in
-- migrations/006_webhooks.sql); it exists only while a subscription does.
CREATE TRIGGER soniq_webhook_events
AFTER UPDATE ON {schema}.soniq_jobs
REFERENCING OLD TABLE AS soniq_old NEW TABLE AS soniq_new
FOR EACH STATEMENT
EXECUTE FUNCTION {schema}.soniq_webhook_events()

-- name: webhook_trigger_drop
DROP TRIGGER IF EXISTS soniq_webhook_events ON {schema}.soniq_jobs

-- name: webhook_count
SELECT count(*) FROM {schema}.soniq_webhooks

-- name: webhook_list
SELECT id, url, events, tasks, queues, created_at,
       prev_expires_at > now() AS rotating, CASE WHEN prev_expires_at > now()
                                                 THEN prev_expires_at END AS grace_until
FROM {schema}.soniq_webhooks ORDER BY created_at, id

-- name: webhook_delete
DELETE FROM {schema}.soniq_webhooks WHERE id = $1 RETURNING id

-- name: webhook_rotate
-- The current secret becomes the previous one, valid for $3 more seconds.
UPDATE {schema}.soniq_webhooks
SET prev_secret = secret, prev_expires_at = now() + make_interval(secs => $3), secret = $2
WHERE id = $1
RETURNING id

-- name: webhook_get_for_delivery
-- The URL and the secrets to sign with now: the current one, and the previous one while its
-- grace window lasts.
SELECT url, secret, CASE WHEN prev_expires_at > now() THEN prev_secret END AS prev_secret
FROM {schema}.soniq_webhooks WHERE id = $1

-- name: webhook_delivery_insert
INSERT INTO {schema}.soniq_webhook_deliveries
    (webhook_id, message_id, job_id, event, attempt, status_code, error, duration)
SELECT $1, $2, $3, $4, $5, $6, $7, $8
WHERE EXISTS (SELECT 1 FROM {schema}.soniq_webhooks WHERE id = $1)

-- name: webhook_delivery_list
SELECT webhook_id, message_id, job_id, event, attempt, status_code, error, duration, at
FROM {schema}.soniq_webhook_deliveries
WHERE ($1::uuid IS NULL OR webhook_id = $1)
ORDER BY id DESC
LIMIT $2
