-- Administration: advisory locks and who holds them, the job table's health, VACUUM and
-- ANALYZE, databases, the schema and its migration versions, and the connection ping.
-- Only soniq/db.py executes these queries. "{schema}" is replaced by the schema name.

-- name: job_table_health
-- The job table's row counts from the statistics collector (cheap; they lag by up to a
-- second): dead and live row versions and rows changed since the last ANALYZE; and, from
-- pg_class (current at once), whether it was ever vacuumed or analysed.
SELECT COALESCE(s.n_dead_tup, 0) AS dead, COALESCE(s.n_live_tup, 0) AS live,
       COALESCE(s.n_mod_since_analyze, 0) AS modified, c.reltuples >= 0 AS analysed
FROM pg_class AS c
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.oid = to_regclass($1)

-- name: job_table_vacuum
-- {table} is the quoted, schema-qualified job table (DDL-like: not a bound parameter).
VACUUM (ANALYZE, SKIP_LOCKED) {table}

-- name: job_table_analyze
ANALYZE (SKIP_LOCKED) {table}

-- name: lock_try
SELECT pg_try_advisory_lock($1)

-- name: lock_release
SELECT pg_advisory_unlock($1)

-- name: lock_holder
-- The session holding advisory lock $1 (a bigint key) in this database, if any.
SELECT a.pid, a.application_name, a.client_addr::text AS client_addr, a.backend_start
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = ($1::bigint >> 32)::oid
  AND l.objid = ($1::bigint & 4294967295)::oid
LIMIT 1

-- name: database_exists
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)

-- name: database_create
-- {database} is the quoted name of the database to create (not a bound parameter: DDL).
CREATE DATABASE {database}

-- name: lock_try_xact
-- An advisory lock held until the end of the current transaction, if free now.
SELECT pg_try_advisory_xact_lock($1)

-- name: connection_ping
SELECT 1

-- name: schema_create
CREATE SCHEMA IF NOT EXISTS {schema}

-- name: migration_table_create
-- The applied schema versions (created before any migration runs).
CREATE TABLE IF NOT EXISTS {schema}.soniq_migrations (
    version integer PRIMARY KEY, name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())

-- name: migration_table_exists
-- $1 is the quoted, schema-qualified versions table.
SELECT to_regclass($1) IS NOT NULL

-- name: migration_lock
-- Serialises concurrent setups until the end of the transaction ($1: the migrate key).
SELECT pg_advisory_xact_lock($1)

-- name: migration_list
SELECT version, applied_at FROM {schema}.soniq_migrations

-- name: migration_insert
INSERT INTO {schema}.soniq_migrations (version, name) VALUES ($1, $2)
