-- The W3C trace context (traceparent, tracestate) of the span that enqueued a job, stored
-- only when OpenTelemetry tracing is on (soniq.otel); NULL otherwise. Adding a nullable
-- column without a default rewrites nothing, so this is instant on a full table.
ALTER TABLE {schema}.soniq_jobs ADD COLUMN IF NOT EXISTS trace_context jsonb;
