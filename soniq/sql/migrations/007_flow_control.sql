-- Flow control (docs/flow-control.md): one row per paused queue. Workers read the (usually
-- empty) set and leave its queues out of their claim; a NOTIFY on the wake-up channel tells
-- them to re-read it, and the heartbeat re-reads it as the fallback.

CREATE TABLE IF NOT EXISTS {schema}.soniq_paused_queues (
    queue     text        PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);
