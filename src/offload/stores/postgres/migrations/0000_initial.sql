-- Layout version 0: the offload tables. {schema} is the schema named in the store's URL
-- (public by default), quoted; the runner (schema.py) creates it first when it is missing.
-- Times are timestamptz, so that the jobs table reads and filters like any other table of
-- the application; JSON columns are json (kept as written, queryable with -> and ->>). A
-- result is text: the JSON the task's return value encoded to, stored as the worker sent it
-- (result::json reads it as JSON).

-- The jobs, one row each: the public status table (docs/postgresql.md describes it).
CREATE TABLE {schema}.offload_jobs (
    id               uuid PRIMARY KEY,
    task             text NOT NULL,
    queue            text NOT NULL,
    state            text NOT NULL
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         integer NOT NULL,
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    run_at           timestamptz NOT NULL,
    enqueued_at      timestamptz NOT NULL,
    timeout          double precision,
    started_at       timestamptz,
    finished_at      timestamptz,
    lease_until      timestamptz,
    worker_id        text,
    key              text,
    args             json NOT NULL,
    kwargs           json NOT NULL,
    result           text,
    error            json,
    progress         json,
    meta             json NOT NULL DEFAULT '{}',
    cancel_requested boolean NOT NULL DEFAULT false
);

-- Idempotency: a key is unique per task name while the job is on record.
CREATE UNIQUE INDEX offload_jobs_key ON {schema}.offload_jobs (task, key)
    WHERE key IS NOT NULL;

-- Claim order, over every queue and within one; partial, so that finished rows (most of
-- the table, kept for the retention period) cost the claims nothing.
CREATE INDEX offload_jobs_claim ON {schema}.offload_jobs (priority DESC, run_at, id)
    WHERE state = 'queued';
CREATE INDEX offload_jobs_claim_queue ON {schema}.offload_jobs (queue, priority DESC, run_at, id)
    WHERE state = 'queued';

-- The reaper looks only at running rows; the purge only at finished ones.
CREATE INDEX offload_jobs_lease ON {schema}.offload_jobs (lease_until)
    WHERE state = 'running';
CREATE INDEX offload_jobs_finished ON {schema}.offload_jobs (finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');

-- One row per schedule that a scheduler has seen or an operator paused. fired_until: every
-- slot at or before it was enqueued or passed over.
CREATE TABLE {schema}.offload_schedules (
    name        text PRIMARY KEY,
    paused      boolean NOT NULL DEFAULT false,
    fired_until timestamptz
);
